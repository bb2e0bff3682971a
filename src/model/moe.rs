//! Qwen3-VL-MoE's sparse feed-forward: a softmax router picks the top-k experts per token, their
//! weights renormalised to sum to one; each expert is a SwiGLU MLP stored as stacked tensors
//! (`gate_up_proj [experts, 2·inter, hidden]`, `down_proj [experts, hidden, inter]`). Written op
//! for op like transformers' `Qwen3VLMoeTextSparseMoeBlock` (experts visited in index order and
//! summed with `index_add`), so float32 results agree with it.
use anyhow::Result;
use tch::{Kind, Tensor};

use super::layers::Placement;
use crate::checkpoint::{MoeConfig, Weights};

/// Stacked expert weights in transformers' runtime layout `shape`; the published checkpoints
/// store the last two axes swapped, and (as transformers does on load) a stored shape that is
/// not the runtime one is read transposed.
fn experts(w: &Weights, p: Placement, name: &str, shape: [i64; 3]) -> Result<Tensor> {
    let stored = w.shape(name);
    let swapped = [shape[0], shape[2], shape[1]];
    if stored.as_deref() == Some(swapped.as_slice()) && shape[1] != shape[2] {
        return Ok(p.load(w, name, &swapped)?.transpose(1, 2).contiguous());
    }
    p.load(w, name, &shape)
}

pub struct SparseMoe {
    router: Tensor,
    gate_up: Tensor,
    down: Tensor,
    top_k: i64,
    inter: i64,
}

impl SparseMoe {
    pub fn load(
        w: &Weights,
        p: Placement,
        prefix: &str,
        hidden: i64,
        cfg: &MoeConfig,
    ) -> Result<Self> {
        let (e, inter) = (cfg.num_experts as i64, cfg.moe_intermediate_size as i64);
        Ok(Self {
            router: p.load(w, &format!("{prefix}.gate.weight"), &[e, hidden])?,
            gate_up: experts(
                w,
                p,
                &format!("{prefix}.experts.gate_up_proj"),
                [e, 2 * inter, hidden],
            )?,
            down: experts(
                w,
                p,
                &format!("{prefix}.experts.down_proj"),
                [e, hidden, inter],
            )?,
            top_k: cfg.num_experts_per_tok as i64,
            inter,
        })
    }

    /// `x [B, L, hidden]` → (output `[B, L, hidden]`, router probabilities `[B·L, experts]`
    /// float32, before the top-k choice).
    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let size = x.size();
        let flat = x.view([-1, size[2]]);
        let logits = flat.linear(&self.router, None::<Tensor>);
        let probs = logits.softmax(-1, Kind::Float);
        let (top, index) = probs.topk(self.top_k, -1, true, true);
        let top = (&top / top.sum_dim_intlist(-1, true, None::<Kind>)).to_kind(logits.kind());
        let mut out = flat.zeros_like();
        let experts = self.router.size()[0];
        let chosen: Vec<i64> = Vec::<i64>::try_from(index.flatten(0, -1)).unwrap_or_default();
        let k = self.top_k as usize;
        for e in 0..experts {
            // (top-k slot, token) pairs that chose expert e, slot-major as torch.where gives them
            let mut slots = Vec::new();
            let mut tokens = Vec::new();
            for slot in 0..k {
                for (t, row) in chosen.chunks(k).enumerate() {
                    if row[slot] == e {
                        slots.push(slot as i64);
                        tokens.push(t as i64);
                    }
                }
            }
            if tokens.is_empty() {
                continue;
            }
            let device = x.device();
            let token_t = Tensor::from_slice(&tokens).to_device(device);
            let slot_t = Tensor::from_slice(&slots).to_device(device);
            let state = flat.index_select(0, &token_t);
            let gate_up = state.linear(&self.gate_up.get(e), None::<Tensor>);
            let gate = gate_up.narrow(-1, 0, self.inter);
            let up = gate_up.narrow(-1, self.inter, self.inter);
            let h = (gate.silu() * up).linear(&self.down.get(e), None::<Tensor>);
            let weight = top
                .index_select(0, &token_t)
                .gather(1, &slot_t.unsqueeze(1), false);
            let _ = out.index_add_(0, &token_t, &(h * weight).to_kind(out.kind()));
        }
        (out.view(size.as_slice()), probs)
    }
}
