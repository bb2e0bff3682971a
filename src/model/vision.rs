//! The vision towers of the Qwen-VL families: Conv3d patch embedding, 2-D rotary positions and
//! the 2x2 patch merger, with each family's blocks: Qwen2.5-VL's window attention with a few
//! full-attention blocks and RMSNorm + SwiGLU; Qwen2-VL's full attention with LayerNorm +
//! QuickGELU; Qwen3-VL's learned position embedding (bilinearly interpolated to the grid),
//! LayerNorm + tanh-GELU and DeepStack mergers on intermediate blocks.
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::layers::{
    inv_freq, rotate_half, Activation, GatedMlp, Linear, Norm, Placement, PlainMlp,
};
use super::rope::{vision_full_seqlens, vision_positions, vision_window_index};
use super::sites::{reborrow, report, Captured, Observer, Site};
use super::AttnImpl;
use crate::checkpoint::{VisionConfig, VisionKind, Weights};

struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
    head_dim: i64,
}

/// A vision block's feed-forward: SwiGLU (Qwen2.5-VL) or `fc2(act(fc1))` (Qwen2-VL, Qwen3-VL).
enum VisionMlp {
    Gated(GatedMlp),
    Plain(PlainMlp),
}

impl VisionMlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            VisionMlp::Gated(m) => m.forward(x),
            VisionMlp::Plain(m) => m.forward(x),
        }
    }
}

struct VisionBlock {
    norm1: Norm,
    norm2: Norm,
    attn: VisionAttention,
    mlp: VisionMlp,
}

/// Patch merger: `merge²` neighbouring patches → one decoder token. The norm runs per patch
/// before the shuffle (`ln_q` / `norm`), or over the shuffled row (Qwen3-VL's DeepStack mergers).
struct Merger {
    norm: Norm,
    post_shuffle: bool,
    fc1: Linear,
    fc2: Linear,
}

impl Merger {
    fn load(
        w: &Weights,
        p: Placement,
        prefix: &str,
        kind: VisionKind,
        dims: [i64; 3],
    ) -> Result<Self> {
        let [d, merged, out] = dims;
        let (norm, fc1, fc2) = match kind {
            VisionKind::Qwen3 => ("norm", "linear_fc1", "linear_fc2"),
            _ => ("ln_q", "mlp.0", "mlp.2"),
        };
        let post_shuffle = prefix.contains("deepstack");
        let norm_dim = if post_shuffle { merged } else { d };
        let layer_norm = kind != VisionKind::Qwen2_5;
        Ok(Self {
            norm: Norm::load(w, p, &format!("{prefix}.{norm}"), norm_dim, layer_norm)?,
            post_shuffle,
            fc1: Linear::load(w, p, &format!("{prefix}.{fc1}"), merged, merged, true)?,
            fc2: Linear::load(w, p, &format!("{prefix}.{fc2}"), merged, out, true)?,
        })
    }

    /// `x [patches, d]` in merge-block order → `[patches / merge², out]`; the activation is the
    /// exact (erf) GELU.
    fn forward(&self, x: &Tensor, merged: i64) -> Tensor {
        let rows = match self.post_shuffle {
            true => self.norm.forward(&x.view([-1, merged])),
            false => self.norm.forward(x).view([-1, merged]),
        };
        self.fc2.forward(&self.fc1.forward(&rows).gelu("none"))
    }
}

/// What the vision tower hands the decoder: the merged features in raster order of the merged
/// grid, and (Qwen3-VL) one DeepStack feature map per `deepstack_visual_indexes` entry, same rows.
pub struct VisionOutput {
    pub merged: Tensor,
    pub deepstack: Vec<Tensor>,
}

pub struct VisionTower {
    cfg: VisionConfig,
    kind: VisionKind,
    patch_weight: Tensor,
    patch_bias: Option<Tensor>,
    /// Qwen3-VL's learned position table `[num_position_embeddings, hidden]`.
    pos_embed: Option<Tensor>,
    blocks: Vec<VisionBlock>,
    merger: Merger,
    deepstack: Vec<Merger>,
    inv_freq: Tensor,
    placement: Placement,
}

fn load_block(
    w: &Weights,
    p: Placement,
    i: usize,
    kind: VisionKind,
    cfg: &VisionConfig,
) -> Result<VisionBlock> {
    let d = cfg.hidden_size as i64;
    let inter = cfg.intermediate_size as i64;
    let pre = format!("visual.blocks.{i}");
    let layer_norm = kind != VisionKind::Qwen2_5;
    let mlp = match kind {
        VisionKind::Qwen2_5 => {
            VisionMlp::Gated(GatedMlp::load(w, p, &format!("{pre}.mlp"), d, inter, true)?)
        }
        VisionKind::Qwen2 => VisionMlp::Plain(PlainMlp::load(
            w,
            p,
            &format!("{pre}.mlp"),
            ["fc1", "fc2"],
            [d, inter],
            Activation::QuickGelu,
        )?),
        VisionKind::Qwen3 => VisionMlp::Plain(PlainMlp::load(
            w,
            p,
            &format!("{pre}.mlp"),
            ["linear_fc1", "linear_fc2"],
            [d, inter],
            Activation::GeluTanh,
        )?),
    };
    Ok(VisionBlock {
        norm1: Norm::load(w, p, &format!("{pre}.norm1"), d, layer_norm)?,
        norm2: Norm::load(w, p, &format!("{pre}.norm2"), d, layer_norm)?,
        attn: VisionAttention {
            qkv: Linear::load(w, p, &format!("{pre}.attn.qkv"), d, 3 * d, true)?,
            proj: Linear::load(w, p, &format!("{pre}.attn.proj"), d, d, true)?,
            heads: cfg.num_heads as i64,
            head_dim: d / cfg.num_heads as i64,
        },
        mlp,
    })
}

impl VisionTower {
    pub fn load(w: &Weights, p: Placement, cfg: &VisionConfig, kind: VisionKind) -> Result<Self> {
        let d = cfg.hidden_size as i64;
        let heads = cfg.num_heads as i64;
        if d % heads != 0 {
            bail!("vision hidden_size {d} is not divisible by num_heads {heads}");
        }
        let head_dim = d / heads;
        let patch_weight = p.load(
            w,
            "visual.patch_embed.proj.weight",
            &[
                d,
                cfg.in_channels as i64,
                cfg.temporal_patch_size as i64,
                cfg.patch_size as i64,
                cfg.patch_size as i64,
            ],
        )?;
        let qwen3 = kind == VisionKind::Qwen3;
        let patch_bias = match qwen3 {
            true => Some(p.load(w, "visual.patch_embed.proj.bias", &[d])?),
            false => None,
        };
        let pos_embed = match qwen3 {
            true => Some(p.load(
                w,
                "visual.pos_embed.weight",
                &[cfg.num_position_embeddings as i64, d],
            )?),
            false => None,
        };
        let blocks = (0..cfg.depth)
            .map(|i| load_block(w, p, i, kind, cfg))
            .collect::<Result<Vec<_>>>()?;
        let unit = (cfg.spatial_merge_size * cfg.spatial_merge_size) as i64;
        let dims = [d, d * unit, cfg.out_hidden_size as i64];
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|j| {
                Merger::load(
                    w,
                    p,
                    &format!("visual.deepstack_merger_list.{j}"),
                    kind,
                    dims,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            kind,
            patch_weight,
            patch_bias,
            pos_embed,
            blocks,
            merger: Merger::load(w, p, "visual.merger", kind, dims)?,
            deepstack,
            // 2-D rotary: half the head dim per axis, theta 10000.
            inv_freq: inv_freq(10000.0, head_dim / 2).to_device(p.device),
            placement: p,
        })
    }

    pub fn merge_size(&self) -> i64 {
        self.cfg.spatial_merge_size as i64
    }

    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// Conv3d patch embedding (`[patches, hidden]`, the processor's patch order), plus the
    /// interpolated learned positions where the family has them.
    fn embed_patches(&self, pixel_values: &Tensor, grids_thw: &[[i64; 3]]) -> Tensor {
        let cfg = &self.cfg;
        let p = self.placement;
        let (t, ps) = (cfg.temporal_patch_size as i64, cfg.patch_size as i64);
        let x = pixel_values
            .to_device(p.device)
            .view([-1, cfg.in_channels as i64, t, ps, ps])
            .to_kind(p.kind);
        let x = x
            .conv3d(
                &self.patch_weight,
                self.patch_bias.as_ref(),
                [t, ps, ps],
                [0, 0, 0],
                [1, 1, 1],
                1,
            )
            .view([-1, cfg.hidden_size as i64]);
        match &self.pos_embed {
            Some(table) => {
                let pos = learned_positions(table, grids_thw, self.merge_size());
                x + pos.to_kind(p.kind)
            }
            None => x,
        }
    }

    /// Rotary cos/sin per patch `[n, 1, head_dim]` (angles in block order, then `permute`d).
    fn rotary(
        &self,
        grids_thw: &[[i64; 3]],
        permute: &dyn Fn(&Tensor) -> Tensor,
    ) -> (Tensor, Tensor) {
        let n: i64 = grids_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let pos: Vec<i64> = vision_positions(grids_thw, self.merge_size())
            .into_iter()
            .flatten()
            .collect();
        let pos = Tensor::from_slice(&pos)
            .view([n, 2, 1])
            .to_device(self.placement.device)
            .to_kind(Kind::Float);
        // [n, 2, dim/4] → cat(h, w) → cat(twice) → [n, head_dim]
        let freqs = pos * &self.inv_freq;
        let recompose = |f: Tensor| {
            let hw = Tensor::cat(&[f.select(1, 0), f.select(1, 1)], -1);
            Tensor::cat(&[&hw, &hw], -1)
        };
        let cos = permute(&recompose(freqs.cos())).unsqueeze(-2);
        let sin = permute(&recompose(freqs.sin())).unsqueeze(-2);
        (cos, sin)
    }

    /// `pixel_values [patches, C*T*P*P]` → merged image features `[patches / merge², out_hidden]`
    /// in raster order of the merged grid, and the DeepStack features (same rows).
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grids_thw: &[[i64; 3]],
        attn_impl: AttnImpl,
        mut observer: Option<&mut dyn Observer>,
    ) -> Result<VisionOutput> {
        let cfg = &self.cfg;
        let p = self.placement;
        let merge = self.merge_size();
        let unit = merge * merge;
        let merged_dim = cfg.hidden_size as i64 * unit;
        let n_expected: i64 = grids_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let n = pixel_values.size()[0];
        if n != n_expected {
            bail!("pixel_values has {n} patches but image_grid_thw implies {n_expected}");
        }
        let x = self.embed_patches(pixel_values, grids_thw);
        let cu_full = vision_full_seqlens(grids_thw);
        // only Qwen2.5-VL reorders patches into windows; the others keep the processor's order
        let (window_index, cu_window) = match self.kind {
            VisionKind::Qwen2_5 => vision_window_index(
                grids_thw,
                merge,
                cfg.window_size as i64,
                cfg.patch_size as i64,
            ),
            _ => ((0..n / unit).collect(), cu_full.clone()),
        };
        let window_index_t = Tensor::from_slice(&window_index).to_device(p.device);
        let windowed = self.kind == VisionKind::Qwen2_5;
        let permute = |t: &Tensor| match windowed {
            true => t
                .reshape([n / unit, unit, -1])
                .index_select(0, &window_index_t)
                .reshape([n, -1]),
            false => t.shallow_clone(),
        };
        let mut x = permute(&x);
        let (cos, sin) = self.rotary(grids_thw, &permute);

        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let cu = if cfg.fullatt_block_indexes.contains(&i) {
                &cu_full
            } else {
                &cu_window
            };
            let h = block.norm1.forward(&x);
            let a = block.attn.forward(
                &h,
                &cos,
                &sin,
                cu,
                attn_impl,
                i,
                reborrow(&mut observer),
                &window_index,
                unit,
            );
            x = x + a;
            x = &x + block.mlp.forward(&block.norm2.forward(&x));
            if let Some(j) = cfg.deepstack_visual_indexes.iter().position(|&b| b == i) {
                deepstack.push(self.deepstack[j].forward(&x, merged_dim));
            }
        }

        let merged = self.merger.forward(&x, merged_dim);
        let merged = match windowed {
            true => merged.index_select(0, &window_index_t.argsort(0, false)),
            false => merged,
        };
        report(&mut observer, Site::VisionMerged, &merged);
        Ok(VisionOutput { merged, deepstack })
    }
}

/// Qwen3-VL's learned positions for every patch (merge-block order): the square table of
/// `side × side` rows resampled to each image's `h × w` patch grid, bilinearly with aligned
/// corners, as transformers' `get_vision_interpolation_indices_and_weights` computes it (float32
/// source coordinates, 4 taps, weights from the hat kernel) and its weighted embedding sum.
fn learned_positions(table: &Tensor, grids_thw: &[[i64; 3]], merge: i64) -> Tensor {
    let device = table.device();
    let side = (table.size()[0] as f64).sqrt() as i64;
    let rows_cols = vision_positions(grids_thw, merge);
    let sizes: Vec<[i64; 2]> = grids_thw
        .iter()
        .flat_map(|&[t, h, w]| std::iter::repeat([h, w]).take((t * h * w) as usize))
        .collect();
    let axis = |k: usize| {
        let index: Vec<i64> = rows_cols.iter().map(|rc| rc[k]).collect();
        let size: Vec<i64> = sizes.iter().map(|s| (s[k] - 1).max(1)).collect();
        let index = Tensor::from_slice(&index)
            .to_device(device)
            .to_kind(Kind::Float);
        let size = Tensor::from_slice(&size).to_device(device);
        let src = index * ((side - 1) as f64) / size;
        let floor = src.floor();
        let offsets = Tensor::arange(2, (Kind::Int64, device));
        let taps = (floor.to_kind(Kind::Int64).unsqueeze(1) + &offsets).clamp(0, side - 1);
        let distance = (src.unsqueeze(1) - floor.unsqueeze(1) - offsets).abs();
        let weights = (-distance + 1.0).clamp_min(0.0);
        (taps, weights)
    };
    let (h_taps, h_weights) = axis(0);
    let (w_taps, w_weights) = axis(1);
    let indices = (h_taps.unsqueeze(2) * side + w_taps.unsqueeze(1)).reshape([-1, 4]);
    let weights = (h_weights.unsqueeze(2) * w_weights.unsqueeze(1)).reshape([-1, 4]);
    let gathered = Tensor::embedding(&table.to_kind(Kind::Float), &indices, -1, false, false);
    (gathered * weights.unsqueeze(-1)).sum_dim_intlist(1, false, None::<Kind>)
}

impl VisionAttention {
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cu_seqlens: &[i64],
        attn_impl: AttnImpl,
        block: usize,
        observer: Option<&mut dyn Observer>,
        window_index: &[i64],
        unit: i64,
    ) -> Tensor {
        let n = x.size()[0];
        let qkv = self
            .qkv
            .forward(x)
            .reshape([n, 3, self.heads, -1])
            .permute([1, 0, 2, 3]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        // rotary in float32, cast back (as apply_rotary_pos_emb_vision)
        let kind = q.kind();
        let rot = |t: &Tensor| {
            let t = t.to_kind(Kind::Float);
            (&t * cos + rotate_half(&t) * sin).to_kind(kind)
        };
        let q = rot(&q).transpose(0, 1).unsqueeze(0);
        let k = rot(&k).transpose(0, 1).unsqueeze(0);
        let v = v.transpose(0, 1).unsqueeze(0);
        let lengths: Vec<i64> = cu_seqlens.windows(2).map(|w| w[1] - w[0]).collect();
        let scaling = (self.head_dim as f64).powf(-0.5);
        let site = Site::VisionAttnReceived(block);
        let want_probs = observer.as_ref().is_some_and(|o| o.wants(site));
        if attn_impl == AttnImpl::Sdpa && !want_probs && lengths.len() > 1 {
            // all windows in one fused call: pad each to the longest, mask the padding keys
            let out = padded_window_attention(&q, &k, &v, &lengths, scaling);
            return self.proj.forward(&out.reshape([n, -1]));
        }
        let qs = q.split_with_sizes(lengths.as_slice(), 2);
        let ks = k.split_with_sizes(lengths.as_slice(), 2);
        let vs = v.split_with_sizes(lengths.as_slice(), 2);
        let mut received = if want_probs {
            Some(Tensor::zeros([n], (Kind::Float, x.device())))
        } else {
            None
        };
        let mut outs = Vec::with_capacity(lengths.len());
        let mut start = 0i64;
        for ((q, k), v) in qs.iter().zip(&ks).zip(&vs) {
            let len = q.size()[2];
            let out = if attn_impl == AttnImpl::Eager || want_probs {
                let w = q.matmul(&k.transpose(2, 3)) * scaling;
                let probs = w.softmax(-1, Kind::Float).to_kind(q.kind());
                if let Some(r) = received.as_mut() {
                    // attention each patch receives, head-mean, averaged over the queries of its chunk
                    let got = probs
                        .to_kind(Kind::Float)
                        .mean_dim([1i64, 2].as_slice(), false, None::<Kind>)
                        .squeeze_dim(0);
                    let _ = r.narrow(0, start, len).copy_(&got);
                }
                probs.matmul(v)
            } else {
                Tensor::scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    None::<Tensor>,
                    0.0,
                    false,
                    scaling,
                    false,
                )
            };
            outs.push(out.transpose(1, 2));
            start += len;
        }
        if let (Some(obs), Some(r)) = (observer, received) {
            // undo the window reordering: back to the processor's patch order (2x2 blocks)
            let order = Tensor::from_slice(window_index).to_device(r.device());
            let r = r.view([n / unit, unit]);
            let raster = Tensor::zeros_like(&r).index_copy(0, &order, &r).view([n]);
            obs.on_capture(site, Captured::Tensor(&raster));
        }
        let out = Tensor::cat(&outs, 1).reshape([n, -1]);
        self.proj.forward(&out)
    }
}

/// Attention within each chunk (`lengths` consecutive runs of the sequence) as one batched call:
/// `q`, `k`, `v` are `[1, heads, n, head_dim]`; returns `[n, heads, head_dim]` in sequence order.
/// Same result as one call per chunk (padding keys are masked out; padding queries are dropped).
fn padded_window_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lengths: &[i64],
    scaling: f64,
) -> Tensor {
    let (heads, d) = (q.size()[1], q.size()[3]);
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let windows = lengths.len() as i64;
    let mut gather = Vec::with_capacity((windows * longest) as usize);
    let mut valid = Vec::with_capacity((windows * longest) as usize);
    let mut keep = Vec::new();
    let mut start = 0i64;
    for (w, &len) in lengths.iter().enumerate() {
        for i in 0..longest {
            gather.push(if i < len { start + i } else { start });
            valid.push(i < len);
            if i < len {
                keep.push(w as i64 * longest + i);
            }
        }
        start += len;
    }
    let device = q.device();
    let gather = Tensor::from_slice(&gather).to_device(device);
    let batch = |t: &Tensor| {
        t.squeeze_dim(0)
            .index_select(1, &gather)
            .view([heads, windows, longest, d])
            .transpose(0, 1)
    };
    let mask = Tensor::from_slice(&valid)
        .to_device(device)
        .view([windows, 1, 1, longest]);
    let out = Tensor::scaled_dot_product_attention(
        &batch(q),
        &batch(k),
        &batch(v),
        Some(mask),
        0.0,
        false,
        scaling,
        false,
    );
    let keep = Tensor::from_slice(&keep).to_device(device);
    // [windows, heads, longest, d] → [windows * longest, heads, d] → the real rows, in order
    out.transpose(1, 2)
        .reshape([windows * longest, heads, d])
        .index_select(0, &keep)
}
