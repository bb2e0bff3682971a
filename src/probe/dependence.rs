//! Image dependence per generated token: how much each token of a saved generation needed the
//! image. The trace's prompt and generated ids are run again teacher-forced, once as they were
//! and once per ablation ([`Ablation::Blank`]: the image filled with its mean colour, same grid
//! and positions; [`Ablation::Drop`]: the image tokens removed, positions recomputed), each in
//! ONE prefill over prompt + chain (no second generation). Both sides are computed the same way,
//! so a difference is the image's doing, not a difference between decoding and prefill.
//!
//! Per step s (the prediction of generated token s, made at query position `P − 1 + s` of a
//! prompt of `P` positions), with p = softmax of the output logits (no sampling processors):
//! `KL(p_with ‖ p_without)`, `log p_with(t_s) − log p_without(t_s)`, and per layer
//! `1 − cos(h_with, h_without)` of the layer's output (`blocks.{l}.resid_post`).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::formats::evidence::{
    summarise_dependence, token_phase, Ablation, Dependence, DependenceVariant, DEPENDENCE_FORMAT,
    EVIDENCE_VERSION,
};
use crate::formats::trace::TraceMeta;
use crate::model::{Captured, ForwardOptions, ImageInput, Observer, Site};
use crate::preprocess::{self, PreprocessedImage};
use crate::runtime::{PreparedImage, Runtime};

/// Steps whose logits are reduced together (bounds the `[steps, vocab]` buffers).
const CHUNK: i64 = 256;

/// The image a trace's generation saw: through its path relative to the trace folder when that
/// file exists (the trace moved with its image), else as recorded.
pub fn trace_image(dir: &Path, meta: &TraceMeta) -> PathBuf {
    let beside = meta.image.relative_path.as_deref().map(|r| dir.join(r));
    match beside {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from(&meta.image.path),
    }
}

/// Keeps each layer's output at the step positions (float32), or, given a reference, compares
/// with it at once and keeps only the cosine distances.
struct StepResiduals<'r> {
    first: i64,
    steps: i64,
    kept: Vec<Option<Tensor>>,
    reference: Option<&'r [Tensor]>,
}

impl Observer for StepResiduals<'_> {
    fn wants(&self, site: Site) -> bool {
        matches!(site, Site::ResidPost(_))
    }

    fn on_capture(&mut self, site: Site, value: Captured<'_>) {
        let (Site::ResidPost(l), Captured::Tensor(h)) = (site, value) else {
            return;
        };
        let h = h
            .squeeze_dim(0)
            .narrow(0, self.first, self.steps)
            .to_kind(Kind::Float);
        self.kept[l] = Some(match self.reference {
            Some(r) => cosine_distance(&h, &r[l]),
            None => h,
        });
    }
}

/// `1 − a·b / (‖a‖ ‖b‖)` per row of two `[steps, hidden]` tensors, in float64 (0 where a row
/// is all zero).
fn cosine_distance(a: &Tensor, b: &Tensor) -> Tensor {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    let dim = [-1i64];
    let dot = (&a * &b).sum_dim_intlist(dim.as_slice(), false, Kind::Double);
    let norms = a.norm_scalaropt_dim(2, dim.as_slice(), false)
        * b.norm_scalaropt_dim(2, dim.as_slice(), false);
    1.0 - dot / norms.clamp_min(1e-30)
}

/// One teacher-forced pass: the final hidden states at the step positions and, per layer, the
/// residuals there (or their cosine distances to `reference`).
struct Pass {
    hidden: Tensor,
    layers: Vec<Tensor>,
}

fn teacher_forced(
    rt: &Runtime,
    ids: &[i64],
    images: &[ImageInput<'_>],
    steps: usize,
    steering: Option<&Tensor>,
    reference: Option<&[Tensor]>,
) -> Result<Pass> {
    // the prediction of generated token s is made at position (prompt length − 1 + s)
    let first = (ids.len() + 1 - steps) as i64 - 1;
    let mut obs = StepResiduals {
        first,
        steps: steps as i64,
        kept: (0..rt.model.num_layers()).map(|_| None).collect(),
        reference,
    };
    let opts = ForwardOptions {
        observer: Some(&mut obs),
        steering,
    };
    let (hidden, _) = rt.model.prefill(ids, images, 0, opts)?;
    let hidden = hidden.squeeze_dim(0).narrow(0, first, steps as i64);
    let layers = obs
        .kept
        .into_iter()
        .enumerate()
        .map(|(l, t)| t.with_context(|| format!("layer {l} reported no output")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Pass { hidden, layers })
}

/// KL(p_with ‖ p_without) and Δ log p of the chosen tokens, per step, in chunks.
fn compare_logits(
    rt: &Runtime,
    with: &Tensor,
    without: &Tensor,
    chosen: &[i64],
) -> (Vec<f64>, Vec<f64>) {
    let (mut kl, mut delta) = (Vec::new(), Vec::new());
    let n = chosen.len() as i64;
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        let logp = |h: &Tensor| {
            rt.model
                .logits(&h.narrow(0, start, len))
                .to_kind(Kind::Double)
                .log_softmax(-1, Kind::Double)
        };
        let (lw, lo) = (logp(with), logp(without));
        let k = (lw.exp() * (&lw - &lo)).sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
        let idx = Tensor::from_slice(&chosen[start as usize..(start + len) as usize])
            .to_device(lw.device())
            .view([-1, 1]);
        let d = (lw.gather(1, &idx, false) - lo.gather(1, &idx, false)).view([-1]);
        kl.extend(to_vec(&k));
        delta.extend(to_vec(&d));
        start += len;
    }
    (kl, delta)
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu)).unwrap_or_default()
}

/// The image as given, filled with its mean colour (each channel's mean over all pixels, rounded
/// half up), preprocessed exactly as the image itself: same size, same grid.
pub fn blank_image(rt: &Runtime, path: &Path) -> Result<(PreparedImage, [u8; 3])> {
    let img = preprocess::load_image_limited(path, rt.image_config.max_image_pixels)?;
    let n = u64::from(img.width()) * u64::from(img.height());
    let mut sums = [0u64; 3];
    for p in img.pixels() {
        for c in 0..3 {
            sums[c] += u64::from(p.0[c]);
        }
    }
    let fill = sums.map(|s| ((s + n / 2) / n.max(1)) as u8);
    let blank = image::RgbImage::from_pixel(img.width(), img.height(), image::Rgb(fill));
    let info: PreprocessedImage = preprocess::preprocess(&blank, &rt.image_config)
        .with_context(|| format!("preprocessing the blank of {}", path.display()))?;
    let pixel_values =
        Tensor::from_slice(&info.pixel_values).view([info.n_patches as i64, info.patch_dim as i64]);
    let prepared = PreparedImage {
        path: path.to_path_buf(),
        pixel_values,
        info,
    };
    Ok((prepared, fill))
}

/// The trace's prompt ids rebuilt with this model, checked against what the trace recorded.
fn prompt_ids(rt: &Runtime, dir: &Path, meta: &TraceMeta) -> Result<(Vec<i64>, PreparedImage)> {
    let system = meta.settings.get("system").and_then(|s| s.as_str());
    let image = trace_image(dir, meta);
    let prompt = rt.prepare(&image, &meta.prompt, system)?;
    let mut ids = prompt.input_ids.clone();
    let open_think = meta
        .settings
        .get("length_control")
        .and_then(|l| l.get("open_think"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if open_think {
        let tag = meta
            .settings
            .get("tags")
            .and_then(|t| t.get("open"))
            .and_then(|o| o.as_str())
            .unwrap_or("<think>");
        ids.extend(rt.tokenizer.encode(tag)?);
    }
    let info = &prompt.image.info;
    let same_image = (info.resized_size.0 as u32, info.resized_size.1 as u32)
        == (meta.image.resized_width, meta.image.resized_height);
    if prompt.rendered != meta.rendered_prompt || ids.len() != meta.prompt_tokens || !same_image {
        bail!(
            "{}: this model and image do not rebuild the trace's prompt ({} positions, image \
             {}x{} here; the trace has {} positions, image {}x{}): use the trace's model and its \
             `max_pixels`",
            dir.display(),
            ids.len(),
            info.resized_size.0,
            info.resized_size.1,
            meta.prompt_tokens,
            meta.image.resized_width,
            meta.image.resized_height
        );
    }
    Ok((ids, prompt.image))
}

/// Measures image dependence for every generated token of the trace in `dir`, for each of
/// `ablations`. `steering` is the trace's own (scaled) steering, when it was steered.
pub fn measure(
    rt: &Runtime,
    dir: &Path,
    ablations: &[Ablation],
    steering: Option<&Tensor>,
) -> Result<Dependence> {
    let _guard = tch::no_grad_guard();
    let meta = TraceMeta::read(dir)?;
    if !meta.complete {
        bail!(
            "{}: the trace is partial (its run did not finish)",
            dir.display()
        );
    }
    let generated: Vec<i64> = meta.generated_ids.iter().map(|&i| i64::from(i)).collect();
    if generated.is_empty() {
        bail!("{}: the trace generated no tokens", dir.display());
    }
    rt.model.check_ids(&generated)?;
    let (prompt, image) = prompt_ids(rt, dir, &meta)?;
    let steps = generated.len();
    let chain = &generated[..steps - 1];
    let full = [prompt.as_slice(), chain].concat();
    let with = teacher_forced(rt, &full, &[image.input()], steps, steering, None)?;
    let phases: Vec<_> = (0..steps).map(|s| token_phase(&meta, s)).collect();
    let mut variants = Vec::new();
    for &ablation in ablations {
        let (pass, fill, prompt_tokens) = match ablation {
            Ablation::Blank => {
                let (blank, fill) = blank_image(rt, &image.path)?;
                let p = teacher_forced(
                    rt,
                    &full,
                    &[blank.input()],
                    steps,
                    steering,
                    Some(&with.layers),
                )?;
                (p, Some(fill), prompt.len())
            }
            Ablation::Drop => {
                let image_id = rt.config.image_token_id;
                let kept: Vec<i64> = prompt.iter().copied().filter(|&t| t != image_id).collect();
                let ids = [kept.as_slice(), chain].concat();
                let p = teacher_forced(rt, &ids, &[], steps, steering, Some(&with.layers))?;
                (p, None, kept.len())
            }
        };
        let (kl, delta_logp) = compare_logits(rt, &with.hidden, &pass.hidden, &generated);
        variants.push(DependenceVariant {
            ablation,
            fill_rgb: fill,
            prompt_tokens,
            summary: summarise_dependence(&phases, &kl, &delta_logp),
            resid_cosine_distance: pass.layers.iter().map(to_vec).collect(),
            kl,
            delta_logp,
        });
    }
    Ok(Dependence {
        format: DEPENDENCE_FORMAT.into(),
        format_version: EVIDENCE_VERSION,
        steps,
        phases,
        layers: (0..rt.model.num_layers()).collect(),
        variants,
    })
}
