//! What the page knows of one trace, as JSON: metadata, token chips, role curves and the visual
//! maps (per step when the trace has them, else per window of steps, else the all-step mean).
use serde_json::{json, Value};

use super::encode::{base64, f32_base64, quantise_rows};
use crate::formats::trace::{EventKind, Trace};
use crate::formats::Role;

/// The page's record of `trace`, shown as `label`; `image` indexes the page's image list.
pub fn trace_json(trace: &Trace, label: &str, image: Option<usize>) -> Value {
    let (meta, arrays) = (&trace.meta, &trace.arrays);
    let [rows, cols] = meta.image.merged_grid;
    json!({
        "label": label,
        "complete": meta.complete,
        "model": meta.model,
        "image": {
            "index": image,
            "width": meta.image.width,
            "height": meta.image.height,
            "resized": [meta.image.resized_width, meta.image.resized_height],
            "rows": rows,
            "cols": cols,
        },
        "prompt": meta.prompt,
        "layers": meta.layers,
        "roles": meta.roles,
        "steps": meta.steps,
        "tokens": token_texts(trace),
        "answer": answer_steps(trace),
        "forced": forced_steps(trace),
        "events": meta.events,
        "think_tokens": meta.think_tokens,
        "answer_tokens": meta.answer_tokens,
        "stop_reason": meta.stop_reason,
        "settings": meta.settings,
        "role_attention": f32_base64(arrays.role_attention.iter().copied()),
        "prompt_role_attention": arrays
            .prompt_role_attention
            .as_ref()
            .map(|a| f32_base64(a.iter().copied())),
        "maps": maps_json(trace),
        "heads": arrays.visual_attention_heads.as_ref().map(|a| {
            let (bytes, scales) = quantise_rows(&standard(a), rows * cols);
            json!({ "heads": a.shape()[1], "data": base64(&bytes), "scale": f32_base64(scales) })
        }),
    })
}

/// The visual maps the page steps through: `kind` says what one map covers.
fn maps_json(trace: &Trace) -> Value {
    let (meta, a) = (&trace.meta, &trace.arrays);
    let vt = meta.visual_tokens();
    let (kind, values, window): (&str, Vec<f32>, usize) = if let Some(s) = &a.visual_attention_steps
    {
        ("steps", s.iter().copied().collect(), 1)
    } else if let (Some(w), Some(win)) = (&a.visual_attention_windows, meta.window) {
        ("windows", w.iter().copied().collect(), win)
    } else {
        ("mean", a.visual_attention.iter().copied().collect(), 0)
    };
    let (bytes, scales) = quantise_rows(&values, vt);
    json!({
        "kind": kind,
        "window": window,
        "count": values.len() / (vt * meta.layers.len()).max(1),
        "data": base64(&bytes),
        "scale": f32_base64(scales),
    })
}

/// The values in row-major order, borrowed when the array is laid out so (as read from disk).
fn standard<D: ndarray::Dimension>(a: &ndarray::Array<f32, D>) -> std::borrow::Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// Each generated token's text (its id where the trace predates token texts).
fn token_texts(trace: &Trace) -> Vec<String> {
    let meta = &trace.meta;
    if meta.tokens.len() == meta.generated_ids.len() {
        return meta.tokens.clone();
    }
    meta.generated_ids
        .iter()
        .map(|id| format!("#{id}"))
        .collect()
}

/// Steps whose token is part of the answer (the rest are reasoning), as `[start, end)` ranges.
fn answer_steps(trace: &Trace) -> Vec<[usize; 2]> {
    let meta = &trace.meta;
    let p = meta.prompt_tokens;
    meta.spans
        .iter()
        .filter(|s| s.role == Role::Answer.name() && s.end > p)
        .map(|s| [s.start.max(p) - p, s.end - p])
        .collect()
}

/// Steps whose token length control inserted ("Wait" text, a forced close tag and answer cue):
/// from each such event's step, the tokens that spell its text.
fn forced_steps(trace: &Trace) -> Vec<usize> {
    let meta = &trace.meta;
    let texts = token_texts(trace);
    let mut out = Vec::new();
    for e in &meta.events {
        if !matches!(e.kind, EventKind::Wait | EventKind::ForcedThinkEnd) {
            continue;
        }
        let want = e.text.trim().chars().count();
        let mut have = 0;
        for (s, t) in texts.iter().enumerate().skip(e.step) {
            if have >= want.max(1) {
                break;
            }
            out.push(s);
            have += t.trim().chars().count();
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
