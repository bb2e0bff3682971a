//! The Qwen2.5-VL vision tower: Conv3d patch embedding, 2-D rotary positions, window attention
//! with a few full-attention blocks, RMSNorm + SwiGLU blocks, and the 2x2 patch merger.
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::layers::{inv_freq, rotate_half, GatedMlp, Linear, Placement, RmsNorm};
use super::rope::{vision_full_seqlens, vision_positions, vision_window_index};
use super::sites::{reborrow, report, Captured, Observer, Site};
use super::AttnImpl;
use crate::checkpoint::{VisionConfig, Weights};

struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
    head_dim: i64,
}

struct VisionBlock {
    norm1: RmsNorm,
    norm2: RmsNorm,
    attn: VisionAttention,
    mlp: GatedMlp,
}

pub struct VisionTower {
    cfg: VisionConfig,
    patch_weight: Tensor,
    blocks: Vec<VisionBlock>,
    merger_norm: RmsNorm,
    merger_fc1: Linear,
    merger_fc2: Linear,
    inv_freq: Tensor,
    placement: Placement,
}

impl VisionTower {
    pub fn load(w: &Weights, p: Placement, cfg: &VisionConfig) -> Result<Self> {
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
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let pre = format!("visual.blocks.{i}");
            blocks.push(VisionBlock {
                norm1: RmsNorm::load(w, p, &format!("{pre}.norm1"), d, 1e-6)?,
                norm2: RmsNorm::load(w, p, &format!("{pre}.norm2"), d, 1e-6)?,
                attn: VisionAttention {
                    qkv: Linear::load(w, p, &format!("{pre}.attn.qkv"), d, 3 * d, true)?,
                    proj: Linear::load(w, p, &format!("{pre}.attn.proj"), d, d, true)?,
                    heads,
                    head_dim,
                },
                mlp: GatedMlp::load(
                    w,
                    p,
                    &format!("{pre}.mlp"),
                    d,
                    cfg.intermediate_size as i64,
                    true,
                )?,
            });
        }
        let unit = (cfg.spatial_merge_size * cfg.spatial_merge_size) as i64;
        let merged = d * unit;
        Ok(Self {
            cfg: cfg.clone(),
            patch_weight,
            blocks,
            merger_norm: RmsNorm::load(w, p, "visual.merger.ln_q", d, 1e-6)?,
            merger_fc1: Linear::load(w, p, "visual.merger.mlp.0", merged, merged, true)?,
            merger_fc2: Linear::load(
                w,
                p,
                "visual.merger.mlp.2",
                merged,
                cfg.out_hidden_size as i64,
                true,
            )?,
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

    /// `pixel_values [patches, C*T*P*P]` → merged image features `[patches / merge², out_hidden]`
    /// in raster order of the merged grid.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grids_thw: &[[i64; 3]],
        attn_impl: AttnImpl,
        mut observer: Option<&mut dyn Observer>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let p = self.placement;
        let d = cfg.hidden_size as i64;
        let merge = self.merge_size();
        let unit = merge * merge;
        let n_expected: i64 = grids_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let n = pixel_values.size()[0];
        if n != n_expected {
            bail!("pixel_values has {n} patches but image_grid_thw implies {n_expected}");
        }
        let x = pixel_values
            .to_device(p.device)
            .view([
                -1,
                cfg.in_channels as i64,
                cfg.temporal_patch_size as i64,
                cfg.patch_size as i64,
                cfg.patch_size as i64,
            ])
            .to_kind(p.kind);
        let stride = [
            cfg.temporal_patch_size as i64,
            cfg.patch_size as i64,
            cfg.patch_size as i64,
        ];
        let x = x
            .conv3d(
                &self.patch_weight,
                None::<Tensor>,
                stride,
                [0, 0, 0],
                [1, 1, 1],
                1,
            )
            .view([-1, d]);

        let (window_index, cu_window) = vision_window_index(
            grids_thw,
            merge,
            cfg.window_size as i64,
            cfg.patch_size as i64,
        );
        let cu_full = vision_full_seqlens(grids_thw);
        let window_index_t = Tensor::from_slice(&window_index).to_device(p.device);
        let permute = |t: &Tensor| {
            t.reshape([n / unit, unit, -1])
                .index_select(0, &window_index_t)
                .reshape([n, -1])
        };
        let mut x = permute(&x);

        // rotary angles per patch: [n, 2, dim/4] → cat(h, w) → cat(twice) → [n, head_dim]
        let pos: Vec<i64> = vision_positions(grids_thw, merge)
            .into_iter()
            .flatten()
            .collect();
        let pos = Tensor::from_slice(&pos)
            .view([n, 2, 1])
            .to_device(p.device)
            .to_kind(Kind::Float);
        let freqs = pos * &self.inv_freq;
        let recompose = |f: Tensor| {
            let hw = Tensor::cat(&[f.select(1, 0), f.select(1, 1)], -1);
            Tensor::cat(&[&hw, &hw], -1)
        };
        let cos = permute(&recompose(freqs.cos())).unsqueeze(-2);
        let sin = permute(&recompose(freqs.sin())).unsqueeze(-2);

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
        }

        let merged = self.merger_norm.forward(&x).view([-1, d * unit]);
        let merged = self
            .merger_fc2
            .forward(&self.merger_fc1.forward(&merged).gelu("none"));
        let reverse = window_index_t.argsort(0, false);
        let merged = merged.index_select(0, &reverse);
        report(&mut observer, Site::VisionMerged, &merged);
        Ok(merged)
    }
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
