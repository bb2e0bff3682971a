//! Turning one probed generation into a trace (metadata + arrays) in the saved format.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ndarray::{Array2, Array3, Array4};

use super::capture::ProbeArrays;
use super::roles::role_spans;
use crate::formats::trace::{EventKind, ImageInfo, ModelInfo, TraceArrays, TraceEvent, TraceMeta};
use crate::formats::ROLE_NAMES;
use crate::generate::{self, Generation};
use crate::model::{device_name, kind_name};
use crate::runtime::{Prompt, Runtime};

/// Metadata known before generation starts (written first, marked incomplete); `out` is the
/// trace directory, against which the image's path is also recorded.
pub fn trace_meta(
    rt: &Runtime,
    prompt: &Prompt,
    layers: &[usize],
    window: Option<usize>,
    settings: serde_json::Value,
    out: Option<&Path>,
) -> TraceMeta {
    let info = &prompt.image.info;
    let merge = rt.config.vision.spatial_merge_size;
    let spans = role_spans(&prompt.spans, prompt.input_ids.len(), 0, 0);
    TraceMeta {
        model: ModelInfo {
            name: rt.name.clone(),
            path: rt.name.clone(),
            model_type: rt.config.model_type.clone(),
            dtype: kind_name(rt.model.kind).to_string(),
            device: device_name(rt.model.device),
            random_weights: rt.config.random_weights,
            num_layers: rt.model.num_layers(),
            num_heads: rt.model.num_heads(),
        },
        image: ImageInfo {
            path: prompt.image.path.to_string_lossy().into_owned(),
            relative_path: out.and_then(|dir| relative_to(&prompt.image.path, dir)),
            width: info.original_size.0 as u32,
            height: info.original_size.1 as u32,
            resized_width: info.resized_size.0 as u32,
            resized_height: info.resized_size.1 as u32,
            grid_thw: info.grid_thw,
            merged_grid: [info.grid_thw[1] / merge, info.grid_thw[2] / merge],
        },
        prompt: prompt.user_text.clone(),
        rendered_prompt: prompt.rendered.clone(),
        roles: ROLE_NAMES.iter().map(|s| s.to_string()).collect(),
        spans,
        prompt_tokens: prompt.input_ids.len(),
        layers: layers.to_vec(),
        window,
        settings: match settings {
            serde_json::Value::Object(m) => m,
            _ => Default::default(),
        },
        ..Default::default()
    }
}

/// `file` as a path relative to directory `dir` (`../../images/cat.png`), when both resolve.
pub fn relative_to(file: &Path, dir: &Path) -> Option<String> {
    let file = file.canonicalize().ok()?;
    // the trace directory may not exist yet: resolve its nearest existing ancestor
    let dir = std::path::absolute(dir).ok()?;
    let existing = dir.ancestors().find(|a| a.exists())?;
    let dir = existing
        .canonicalize()
        .ok()?
        .join(dir.strip_prefix(existing).ok()?);
    let file_parts: Vec<_> = file.components().collect();
    let dir_parts: Vec<_> = dir.components().collect();
    let common = file_parts
        .iter()
        .zip(&dir_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in common..dir_parts.len() {
        rel.push("..");
    }
    rel.extend(&file_parts[common..]);
    Some(rel.to_string_lossy().into_owned())
}

/// Fill in what the generation produced.
pub fn finish_meta(
    meta: &mut TraceMeta,
    prompt_len: usize,
    prompt: &Prompt,
    g: &Generation,
    steps: usize,
) {
    meta.spans = role_spans(
        &prompt.spans,
        prompt_len,
        g.generated_ids.len(),
        g.answer_start,
    );
    meta.prompt_tokens = prompt_len;
    meta.steps = steps;
    meta.generated_ids = g.generated_ids.iter().map(|&i| i as u32).collect();
    meta.text = g.text.clone();
    meta.thinking = g.thinking.clone();
    meta.answer = g.answer.clone();
    meta.think_tokens = g.think_tokens;
    meta.answer_tokens = g.answer_tokens;
    meta.stop_reason = g.stop_reason.as_str().to_string();
    meta.events = g.events.iter().map(trace_event).collect();
    meta.complete = true;
}

/// A generation event as traces record it.
pub fn trace_event(e: &generate::Event) -> TraceEvent {
    let kind = match e.kind {
        generate::EventKind::ThinkEnd => EventKind::ThinkEnd,
        generate::EventKind::ForcedThinkEnd => EventKind::ForcedThinkEnd,
        generate::EventKind::Wait => EventKind::Wait,
    };
    TraceEvent {
        step: e.step,
        kind,
        text: e.text.clone(),
    }
}

/// Probe arrays → trace arrays.
pub fn trace_arrays(
    p: &ProbeArrays,
    grid_thw: [usize; 3],
    prompt_role: Option<Array2<f32>>,
) -> Result<TraceArrays> {
    let nl = p.layers.len();
    let nr = ROLE_NAMES.len();
    let nv = p.visual_tokens;
    let role_attention = Array3::from_shape_vec((p.steps, nl, nr), p.role_attention.clone())
        .context("role_attention shape")?;
    let role_attention_heads = p
        .role_attention_heads
        .as_ref()
        .map(|v| Array4::from_shape_vec((p.steps, nl, p.heads, nr), v.clone()))
        .transpose()
        .context("role_attention_heads shape")?;
    let visual_attention = Array2::from_shape_vec((nl, nv), p.visual_attention.clone())
        .context("visual_attention shape")?;
    let visual_attention_heads = p
        .visual_attention_heads
        .as_ref()
        .map(|v| Array3::from_shape_vec((nl, p.heads, nv), v.clone()))
        .transpose()
        .context("visual_attention_heads shape")?;
    let visual_attention_windows = p
        .visual_attention_windows
        .as_ref()
        .map(|v| Array3::from_shape_vec((v.len() / (nl * nv).max(1), nl, nv), v.clone()))
        .transpose()
        .context("visual_attention_windows shape")?;
    let visual_attention_steps = p
        .visual_attention_steps
        .as_ref()
        .map(|v| Array3::from_shape_vec((p.steps, nl, nv), v.clone()))
        .transpose()
        .context("visual_attention_steps shape")?;
    let patches = grid_thw[0] * grid_thw[1] * grid_thw[2];
    let vision_attention = p
        .vision_attention
        .as_ref()
        .map(|v| Array2::from_shape_vec((v.len() / patches.max(1), patches), v.clone()))
        .transpose()
        .context("vision_attention shape")?;
    Ok(TraceArrays {
        role_attention,
        role_attention_heads,
        visual_attention,
        visual_attention_windows,
        visual_attention_steps,
        visual_attention_heads,
        vision_attention,
        prompt_role_attention: prompt_role,
    })
}
