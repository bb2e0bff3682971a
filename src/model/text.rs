//! The decoders of the Qwen-VL families: RMSNorm, GQA attention (Qwen2: biases on q/k/v; Qwen3:
//! no biases, RMSNorm over each head of q and k), multimodal RoPE (chunked or interleaved), SwiGLU
//! MLP, a preallocated key/value cache written in place, and Qwen3-VL's DeepStack (vision
//! features added to the visual positions after the first layers).
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::layers::{GatedMlp, Linear, Placement, RmsNorm};
use super::moe::SparseMoe;
use super::rope::{apply_rotary, TextRope};
use super::sites::{
    eager_probs, reborrow, repeat_kv, report, AttentionInputs, Captured, Observer, Site,
};
use super::AttnImpl;
use crate::checkpoint::{DecoderKind, TextConfig, Weights};

/// Per-layer key/value cache. Storage grows by doubling; the valid part is `[.., ..len, ..]`.
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: i64,
    capacity: i64,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self {
            keys: Vec::with_capacity(layers),
            values: Vec::with_capacity(layers),
            len: 0,
            capacity: 0,
        }
    }

    /// Number of positions held.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reserve room for `total` positions (avoids regrowth during a generation of known length).
    pub fn reserve(&mut self, total: i64) {
        if total > self.capacity && !self.keys.is_empty() {
            self.grow_to(total);
        } else if self.keys.is_empty() {
            self.capacity = self.capacity.max(total);
        }
    }

    fn grow_to(&mut self, cap: i64) {
        for store in [&mut self.keys, &mut self.values] {
            for t in store.iter_mut() {
                let mut s = t.size();
                s[2] = cap;
                let bigger = Tensor::zeros(s.as_slice(), (t.kind(), t.device()));
                let _ = bigger
                    .narrow(2, 0, self.len)
                    .copy_(&t.narrow(2, 0, self.len));
                *t = bigger;
            }
        }
        self.capacity = cap;
    }

    /// Append `k`, `v` (`[1, kv_heads, n, head_dim]`) for `layer` and return views of the whole cache.
    /// The length advances once every layer has been written (`commit`).
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let n = k.size()[2];
        if layer == self.keys.len() {
            let mut s = k.size();
            s[2] = self.capacity.max(self.len + n).max(16);
            self.keys
                .push(Tensor::zeros(s.as_slice(), (k.kind(), k.device())));
            self.values
                .push(Tensor::zeros(s.as_slice(), (v.kind(), v.device())));
            self.capacity = s[2];
        }
        if self.len + n > self.capacity {
            self.grow_to((self.len + n).max(self.capacity * 2));
        }
        let _ = self.keys[layer].narrow(2, self.len, n).copy_(k);
        let _ = self.values[layer].narrow(2, self.len, n).copy_(v);
        (
            self.keys[layer].narrow(2, 0, self.len + n),
            self.values[layer].narrow(2, 0, self.len + n),
        )
    }

    fn commit(&mut self, n: i64) {
        self.len += n;
    }

    /// Forget positions from `len` on (keeps the storage).
    pub fn truncate(&mut self, len: i64) {
        self.len = self.len.min(len);
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Qwen3: RMSNorm over each head of q and of k, before the rotary embedding
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

/// Qwen3-VL's DeepStack input for one prefill: the flat indices (`b * len + position`) of the
/// visual positions, in the order the image features fill them, and one feature map per early
/// decoder layer, added to those positions' hidden states after that layer.
pub struct DeepStack {
    pub rows: Tensor,
    pub features: Vec<Tensor>,
}

impl DeepStack {
    /// `x [B, L, hidden]` with layer `layer`'s features added at the visual positions.
    fn add(&self, x: &Tensor, layer: usize) -> Tensor {
        let Some(f) = self.features.get(layer) else {
            return x.shallow_clone();
        };
        let size = x.size();
        let flat = x.reshape([-1, size[2]]);
        let sum = flat.index_select(0, &self.rows) + f.to_kind(x.kind());
        flat.index_copy(0, &self.rows, &sum).view(size.as_slice())
    }
}

/// A decoder layer's feed-forward: dense SwiGLU, or routed experts (Qwen3-VL-MoE).
enum FeedForward {
    Dense(GatedMlp),
    Sparse(SparseMoe),
}

impl FeedForward {
    /// The output, and the router probabilities `[b, positions, experts]` of a sparse layer.
    fn forward(&self, x: &Tensor) -> (Tensor, Option<Tensor>) {
        match self {
            FeedForward::Dense(m) => (m.forward(x), None),
            FeedForward::Sparse(m) => {
                let (out, probs) = m.forward(x);
                let s = x.size();
                (out, Some(probs.view([s[0], s[1], -1])))
            }
        }
    }
}

struct DecoderLayer {
    input_norm: RmsNorm,
    post_norm: RmsNorm,
    attn: Attention,
    mlp: FeedForward,
}

/// What a forward pass should do besides computing hidden states.
#[derive(Default)]
pub struct ForwardOptions<'a> {
    /// sees the sites it wants (see [`Site`])
    pub observer: Option<&'a mut dyn Observer>,
    /// `[layers, hidden]` in model dtype, already scaled by the steering weight: added to every
    /// layer's attention output (an intervention, not an observation)
    pub steering: Option<&'a Tensor>,
}

pub struct TextModel {
    pub cfg: TextConfig,
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rope: TextRope,
    placement: Placement,
}

impl TextModel {
    pub fn load(w: &Weights, p: Placement, cfg: &TextConfig, decoder: DecoderKind) -> Result<Self> {
        let d = cfg.hidden_size as i64;
        let heads = cfg.num_attention_heads as i64;
        let kv_heads = cfg.num_key_value_heads as i64;
        let head_dim = cfg.head_dim as i64;
        if heads % kv_heads != 0 {
            bail!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            );
        }
        let embed = p.load(w, "model.embed_tokens.weight", &[cfg.vocab_size as i64, d])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let pre = format!("model.layers.{i}");
            let lin = |name: &str, i_dim, o_dim, bias| {
                Linear::load(w, p, &format!("{pre}.self_attn.{name}"), i_dim, o_dim, bias)
            };
            let qkv_bias = decoder == DecoderKind::Qwen2;
            let head_norm = |name: &str| -> Result<Option<RmsNorm>> {
                match decoder {
                    DecoderKind::Qwen2 => Ok(None),
                    DecoderKind::Qwen3 => Ok(Some(RmsNorm::load(
                        w,
                        p,
                        &format!("{pre}.self_attn.{name}"),
                        head_dim,
                        cfg.rms_norm_eps,
                    )?)),
                }
            };
            layers.push(DecoderLayer {
                input_norm: RmsNorm::load(
                    w,
                    p,
                    &format!("{pre}.input_layernorm"),
                    d,
                    cfg.rms_norm_eps,
                )?,
                post_norm: RmsNorm::load(
                    w,
                    p,
                    &format!("{pre}.post_attention_layernorm"),
                    d,
                    cfg.rms_norm_eps,
                )?,
                attn: Attention {
                    q: lin("q_proj", d, heads * head_dim, qkv_bias)?,
                    k: lin("k_proj", d, kv_heads * head_dim, qkv_bias)?,
                    v: lin("v_proj", d, kv_heads * head_dim, qkv_bias)?,
                    o: lin("o_proj", heads * head_dim, d, false)?,
                    q_norm: head_norm("q_norm")?,
                    k_norm: head_norm("k_norm")?,
                    heads,
                    kv_heads,
                    head_dim,
                },
                mlp: match cfg.moe.as_ref().filter(|m| m.is_sparse(i)) {
                    Some(moe) => {
                        FeedForward::Sparse(SparseMoe::load(w, p, &format!("{pre}.mlp"), d, moe)?)
                    }
                    None => FeedForward::Dense(GatedMlp::load(
                        w,
                        p,
                        &format!("{pre}.mlp"),
                        d,
                        cfg.intermediate_size as i64,
                        false,
                    )?),
                },
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: RmsNorm::load(w, p, "model.norm", d, cfg.rms_norm_eps)?,
            rope: TextRope::new(
                cfg.rope_theta,
                head_dim,
                &cfg.mrope_section,
                cfg.mrope_interleaved,
                p.device,
            ),
            placement: p,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn embed_weight(&self) -> &Tensor {
        &self.embed
    }

    /// Token embeddings `[1, n, hidden]`.
    pub fn embed(&self, ids: &[i64]) -> Tensor {
        let ids = Tensor::from_slice(ids)
            .to_device(self.placement.device)
            .unsqueeze(0);
        Tensor::embedding(&self.embed, &ids, -1, false, false)
    }

    /// Run the decoder over `embeds` `[1, n, hidden]` at `positions` `[3, 1, n]`, appending to the
    /// cache. With an empty cache the pass is causal over the `n` positions; with a non-empty cache
    /// `n` must be 1 (forced text is fed one token at a time). Returns the final-norm hidden states.
    pub fn forward(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        cache: &mut KvCache,
        attn_impl: AttnImpl,
        opts: ForwardOptions<'_>,
    ) -> Result<Tensor> {
        self.forward_masked(embeds, positions, cache, attn_impl, opts, None, None)
    }

    /// [`TextModel::forward`] for a batch `[B, n, hidden]` (positions `[3, B, n]`) with a boolean
    /// `mask` `[B, 1, n, kv]` (true = may attend; causality already folded in) that keeps each row
    /// off its padding, and Qwen3-VL's DeepStack features added after the first layers (prefill
    /// only). Without a mask or DeepStack this is exactly `forward`. `blocks.{l}.resid_post` is
    /// the layer's output before the DeepStack addition (what Hugging Face returns as that layer's
    /// hidden state); the next layer reads the sum.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_masked(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        cache: &mut KvCache,
        attn_impl: AttnImpl,
        opts: ForwardOptions<'_>,
        mask: Option<&Tensor>,
        deepstack: Option<&DeepStack>,
    ) -> Result<Tensor> {
        let ForwardOptions {
            mut observer,
            steering,
        } = opts;
        let n = embeds.size()[1];
        if !cache.is_empty() && n != 1 {
            bail!("decoding on a non-empty cache takes one token at a time (got {n})");
        }
        let (cos, sin) = self.rope.cos_sin(positions, self.placement.kind);
        let mut x = embeds.shallow_clone();
        report(&mut observer, Site::Embed, &x);
        let eager = attn_impl == AttnImpl::Eager;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_norm.forward(&x);
            let mut a = layer.attn.forward(
                &h,
                &cos,
                &sin,
                cache,
                i,
                eager,
                mask,
                reborrow(&mut observer),
            );
            if let Some(s) = steering {
                a = a + s.get(i as i64);
            }
            x = x + a;
            report(&mut observer, Site::ResidPostAttn(i), &x);
            let (m, router) = layer.mlp.forward(&layer.post_norm.forward(&x));
            if let Some(r) = router {
                report(&mut observer, Site::MlpRouter(i), &r);
            }
            x = &x + m;
            report(&mut observer, Site::ResidPost(i), &x);
            if let Some(ds) = deepstack {
                x = ds.add(&x, i);
            }
        }
        cache.commit(n);
        let out = self.norm.forward(&x);
        report(&mut observer, Site::LnFinal, &out);
        Ok(out)
    }
}

impl Attention {
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut KvCache,
        layer: usize,
        eager: bool,
        mask: Option<&Tensor>,
        observer: Option<&mut dyn Observer>,
    ) -> Tensor {
        let (b, n) = (x.size()[0], x.size()[1]);
        let heads = |proj: &Linear, norm: &Option<RmsNorm>| {
            let h = proj.forward(x).view([b, n, -1, self.head_dim]);
            match norm {
                Some(norm) => norm.forward(&h).transpose(1, 2),
                None => h.transpose(1, 2),
            }
        };
        let q = heads(&self.q, &self.q_norm);
        let k = heads(&self.k, &self.k_norm);
        let v = self
            .v
            .forward(x)
            .view([b, n, -1, self.head_dim])
            .transpose(1, 2);
        let q = apply_rotary(&q, cos, sin);
        let k = apply_rotary(&k, cos, sin);
        let fresh = cache.is_empty();
        let (keys, values) = cache.update(layer, &k, &v);
        let scaling = (self.head_dim as f64).powf(-0.5);
        let groups = self.heads / self.kv_heads;
        let (out, probs) = if n == 1 && mask.is_none() && !fresh {
            // single-token decode: explicit attention, what Hugging Face's eager path computes, with
            // the query heads grouped per key/value head (no repeated keys); its probabilities also
            // serve the observer, so capturing them reads the key cache only once
            let kv = keys.size()[2];
            let qg = q.reshape([b, self.kv_heads, groups, self.head_dim]);
            let w = qg.matmul(&keys.transpose(2, 3)) * scaling;
            let probs = w.softmax(-1, Kind::Float).to_kind(q.kind());
            let out = probs
                .matmul(&values)
                .reshape([b, self.heads, 1, self.head_dim]);
            (out, Some(probs.reshape([b, self.heads, 1, kv])))
        } else if eager {
            let probs = eager_probs(&q, &keys, scaling, mask);
            (probs.matmul(&repeat_kv(&values, groups)), Some(probs))
        } else {
            // causal within a fresh multi-token prompt; a mask (batches) already holds causality
            let out = Tensor::scaled_dot_product_attention(
                &q,
                &keys,
                &values,
                mask,
                0.0,
                mask.is_none() && fresh && n > 1,
                scaling,
                groups > 1,
            );
            (out, None)
        };
        let site = Site::AttnPattern(layer);
        if let Some(obs) = observer.filter(|o| o.wants(site)) {
            let inputs = AttentionInputs {
                query: &q,
                keys: &keys,
                scaling,
                probs: probs.as_ref(),
                mask,
            };
            obs.on_capture(site, Captured::Attention(inputs));
        }
        let out = out.transpose(1, 2).contiguous().reshape([b, n, -1]);
        self.o.forward(&out)
    }
}
