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
