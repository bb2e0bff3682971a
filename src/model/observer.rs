//! The one seam through which attention is observed. The model calls these hooks from its own
//! attention code; with no observer attached nothing extra is computed.
use tch::Tensor;

/// Sees each decoder layer's queries and the full key cache, so an observer can compute the
/// attention probabilities of exactly the query rows it needs (libtorch's fused attention returns
/// none), and optionally the residual stream right after attention.
pub trait AttentionObserver {
    /// Whether `on_attention` should be called for this layer.
    fn wants_layer(&self, layer: usize) -> bool;

    /// `query`: `[1, heads, q_len, head_dim]` after RoPE; `keys`: `[1, kv_heads, kv_len, head_dim]`,
    /// the whole cache including this forward's keys; `scaling`: the softmax scale. The query rows are
    /// the last `q_len` positions of the cache. `probs`: when the model computed the probabilities
    /// itself (single-token decode), `[1, heads, 1, kv_len]` in the model's dtype, so an observer
    /// need not read the keys again.
    fn on_attention(
        &mut self,
        layer: usize,
        query: &Tensor,
        keys: &Tensor,
        scaling: f64,
        probs: Option<&Tensor>,
    );

    /// Whether `on_residual` should be called at all.
    fn wants_residual(&self) -> bool {
        false
    }

    /// The residual stream right after the attention block of `layer`: `[1, q_len, hidden]`.
    fn on_residual(&mut self, _layer: usize, _hidden: &Tensor) {}
}

/// Sees the vision tower's attention per block.
pub trait VisionObserver {
    fn wants_block(&self, block: usize) -> bool;
    /// `received`: `[patches]` float32, the head-mean attention each patch receives from the queries
    /// of its window (or of the whole image in full-attention blocks), averaged over those queries,
    /// in the processor's patch order (2x2 merge blocks).
    fn on_block_attention(&mut self, block: usize, received: &Tensor);
    /// Output of each vision block (in the tower's window order).
    fn on_block_output(&mut self, _block: usize, _hidden: &Tensor) {}
}

/// Reborrow an optional observer for one call (coercions do not reach inside `Option`).
pub fn reborrow<'s>(
    o: &'s mut Option<&mut dyn AttentionObserver>,
) -> Option<&'s mut dyn AttentionObserver> {
    match o {
        Some(x) => Some(&mut **x),
        None => None,
    }
}

/// [`reborrow`] for vision observers.
pub fn reborrow_vision<'s>(
    o: &'s mut Option<&mut dyn VisionObserver>,
) -> Option<&'s mut dyn VisionObserver> {
    match o {
        Some(x) => Some(&mut **x),
        None => None,
    }
}
