//! Small building blocks shared by the vision tower and the decoder, written op for op like the
//! Hugging Face modules they mirror (so that float32 results agree to the last bits that matter).
use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::Weights;

/// Where and in what precision weights are materialised.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub kind: Kind,
    pub device: Device,
}

impl Placement {
    pub fn load(&self, w: &Weights, name: &str, shape: &[i64]) -> Result<Tensor> {
        Ok(w.tensor(name, shape, self.kind, self.device)?)
    }
}

/// `nn.Linear`: `x @ W^T + b`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(
        w: &Weights,
        p: Placement,
        prefix: &str,
        in_dim: i64,
        out_dim: i64,
        bias: bool,
    ) -> Result<Self> {
        let weight = p.load(w, &format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(p.load(w, &format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `Qwen2RMSNorm`: normalise in float32, cast back to the input dtype, then scale by the weight.
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn load(w: &Weights, p: Placement, prefix: &str, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.load(w, &format!("{prefix}.weight"), &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let input_kind = x.kind();
        let h = x.to_kind(Kind::Float);
        let variance = h.pow_tensor_scalar(2).mean_dim(-1, true, None::<Kind>);
        let h = h * (variance + self.eps).rsqrt();
        &self.weight * h.to_kind(input_kind)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
pub struct GatedMlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl GatedMlp {
    pub fn load(
        w: &Weights,
        p: Placement,
        prefix: &str,
        hidden: i64,
        intermediate: i64,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            gate: Linear::load(
                w,
                p,
                &format!("{prefix}.gate_proj"),
                hidden,
                intermediate,
                bias,
            )?,
            up: Linear::load(
                w,
                p,
                &format!("{prefix}.up_proj"),
                hidden,
                intermediate,
                bias,
            )?,
            down: Linear::load(
                w,
                p,
                &format!("{prefix}.down_proj"),
                intermediate,
                hidden,
                bias,
            )?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down
            .forward(&(self.gate.forward(x).silu() * self.up.forward(x)))
    }
}

/// `rotate_half`: `cat(-x2, x1)` over the last dimension.
pub fn rotate_half(x: &Tensor) -> Tensor {
    let d = x.size().last().copied().unwrap_or(0);
    let x1 = x.narrow(-1, 0, d / 2);
    let x2 = x.narrow(-1, d / 2, d - d / 2);
    Tensor::cat(&[-x2, x1], -1)
}

/// Inverse RoPE frequencies `1 / base^(arange(0, dim, 2) / dim)`, computed with libtorch ops so the
/// bits equal those of the Python reference.
pub fn inv_freq(base: f64, dim: i64) -> Tensor {
    let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Float, Device::Cpu)) / (dim as f64);
    Tensor::pow_scalar(base, &exponents).reciprocal()
}

/// `nn.LayerNorm` with weight and bias (eps fixed by the caller; Qwen vision towers use 1e-6).
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, p: Placement, prefix: &str, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.load(w, &format!("{prefix}.weight"), &[dim])?,
            bias: p.load(w, &format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let d = self.weight.size()[0];
        x.layer_norm([d], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

/// The normalisation a vision tower uses: RMSNorm (Qwen2.5-VL) or LayerNorm (Qwen2-VL, Qwen3-VL).
pub enum Norm {
    Rms(RmsNorm),
    Layer(LayerNorm),
}

impl Norm {
    /// RMSNorm (weight only) or LayerNorm (weight and bias) at `prefix`, eps 1e-6.
    pub fn load(w: &Weights, p: Placement, prefix: &str, dim: i64, layer: bool) -> Result<Self> {
        Ok(match layer {
            true => Norm::Layer(LayerNorm::load(w, p, prefix, dim, 1e-6)?),
            false => Norm::Rms(RmsNorm::load(w, p, prefix, dim, 1e-6)?),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Norm::Rms(n) => n.forward(x),
            Norm::Layer(n) => n.forward(x),
        }
    }
}

/// The activations of the non-gated vision MLPs, as transformers' `ACT2FN` computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `gelu_pytorch_tanh`: `gelu(x, approximate="tanh")`.
    GeluTanh,
}

impl Activation {
    pub fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
            Activation::GeluTanh => x.gelu("tanh"),
        }
    }
}

/// `fc2(act(fc1(x)))`, both with bias (the Qwen2-VL / Qwen3-VL vision MLP).
pub struct PlainMlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl PlainMlp {
    /// `names` are the two layers' names under `prefix` (`fc1`/`fc2` or `linear_fc1`/`linear_fc2`).
    pub fn load(
        w: &Weights,
        p: Placement,
        prefix: &str,
        names: [&str; 2],
        dims: [i64; 2],
        act: Activation,
    ) -> Result<Self> {
        let [hidden, inter] = dims;
        Ok(Self {
            fc1: Linear::load(w, p, &format!("{prefix}.{}", names[0]), hidden, inter, true)?,
            fc2: Linear::load(w, p, &format!("{prefix}.{}", names[1]), inter, hidden, true)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)))
    }
}
