//! Synthetic traces and images for the trace-format and figure tests.
#![allow(dead_code)]

use std::path::Path;

use image::{Rgb, RgbImage};
use ndarray::{Array2, Array3, Array4};
use rhlens::formats::trace::{
    EventKind, ImageInfo, ModelInfo, RoleSpan, TraceArrays, TraceEvent, TraceMeta, TraceWriter,
};

/// Shape of a synthetic trace.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Original image size.
    pub width: u32,
    pub height: u32,
    /// Resized size (multiples of 28).
    pub resized_width: u32,
    pub resized_height: u32,
    pub layers: Vec<usize>,
    pub num_layers: usize,
    pub heads: usize,
    pub steps: usize,
    pub think_end: usize,
    pub window: Option<usize>,
    pub with_heads: bool,
    pub with_vision: bool,
    pub with_prompt: bool,
    pub image_path: String,
}

impl Spec {
    /// 640×480 photo → 644×476 (smart_resize) → 46×34 patches → 23×17 merged tokens.
    pub fn small() -> Spec {
        Spec {
            width: 640,
            height: 480,
            resized_width: 644,
            resized_height: 476,
            layers: (0..6).collect(),
            num_layers: 6,
            heads: 4,
            steps: 40,
            think_end: 28,
            window: Some(16),
            with_heads: true,
            with_vision: true,
            with_prompt: true,
            image_path: String::new(),
        }
    }

    pub fn merged(&self) -> (usize, usize) {
        (
            self.resized_height as usize / 28,
            self.resized_width as usize / 28,
        )
    }
}

const PROMPT_TOKENS: usize = 30;

/// Metadata consistent with `spec` (roles system, visual, instruction, reasoning, answer).
pub fn meta(spec: &Spec) -> TraceMeta {
    let (mh, mw) = spec.merged();
    let vt = mh * mw;
    let sys = 5;
    let prompt_tokens = sys + vt + PROMPT_TOKENS;
    let total = prompt_tokens + spec.steps;
    let think_pos = prompt_tokens + spec.think_end.min(spec.steps);
    let mut events = vec![TraceEvent {
        step: 0,
        kind: EventKind::ThinkStart,
        text: "<think>".into(),
    }];
    if spec.steps > 10 {
        events.push(TraceEvent {
            step: spec.steps / 3,
            kind: EventKind::Wait,
            text: "Wait".into(),
        });
    }
    if spec.think_end < spec.steps {
        events.push(TraceEvent {
            step: spec.think_end,
            kind: EventKind::ThinkEnd,
            text: "</think>".into(),
        });
        events.push(TraceEvent {
            step: spec.think_end + 1,
            kind: EventKind::AnswerStart,
            text: String::new(),
        });
    }
    let mut settings = serde_json::Map::new();
    settings.insert("seed".into(), serde_json::json!(7));
    TraceMeta {
        model: ModelInfo {
            name: "demo-vl".into(),
            path: "checkpoints/demo-vl".into(),
            model_type: "qwen2_5_vl".into(),
            dtype: "f32".into(),
            device: "cpu".into(),
            random_weights: true,
            num_layers: spec.num_layers,
            num_heads: spec.heads,
        },
        image: ImageInfo {
            path: spec.image_path.clone(),
            relative_path: None,
            width: spec.width,
            height: spec.height,
            resized_width: spec.resized_width,
            resized_height: spec.resized_height,
            grid_thw: [1, mh * 2, mw * 2],
            merged_grid: [mh, mw],
        },
        prompt: "What colour is the car?".into(),
        rendered_prompt: "<|im_start|>system ... What colour is the car?".into(),
        spans: vec![
            RoleSpan {
                role: "system".into(),
                start: 0,
                end: sys,
            },
            RoleSpan {
                role: "visual".into(),
                start: sys,
                end: sys + vt,
            },
            RoleSpan {
                role: "instruction".into(),
                start: sys + vt,
                end: prompt_tokens,
            },
            RoleSpan {
                role: "reasoning".into(),
                start: prompt_tokens,
                end: think_pos,
            },
            RoleSpan {
                role: "answer".into(),
                start: think_pos,
                end: total,
            },
        ],
        prompt_tokens,
        layers: spec.layers.clone(),
        window: spec.window,
        steps: spec.steps,
        generated_ids: (0..spec.steps as u32).map(|i| 1000 + i).collect(),
        text: "<think>thinking</think>red".into(),
        thinking: "thinking".into(),
        answer: "red".into(),
        think_tokens: spec.think_end.min(spec.steps),
        answer_tokens: spec.steps.saturating_sub(spec.think_end),
        stop_reason: "eos".into(),
        events,
        settings,
        ..TraceMeta::default()
    }
}

/// Role masses that look like the paper's finding: the visual share falls with depth and with
/// the step, the reasoning share grows.
fn role_row(s: usize, l: usize, nl: usize, think_end: usize) -> [f32; 5] {
    let depth = l as f32 / nl.max(1) as f32;
    let visual = 0.05 + 0.3 * (-(s as f32) / 25.0).exp() * (1.0 - 0.7 * depth);
    let instruction = 0.12 + 0.05 * depth;
    let reasoning = if s == 0 {
        0.0
    } else {
        0.25 * (1.0 - (-(s as f32) / 15.0).exp())
    };
    let answer = if s > think_end { 0.08 } else { 0.0 };
    let system = 1.0 - visual - instruction - reasoning - answer;
    [system, visual, instruction, reasoning, answer]
}

/// A blob centred on token (ci, cj).
fn blob(mh: usize, mw: usize, ci: f32, cj: f32, scale: f32) -> Vec<f32> {
    (0..mh * mw)
        .map(|k| {
            let (i, j) = ((k / mw) as f32, (k % mw) as f32);
            scale * (-((i - ci).powi(2) + (j - cj).powi(2)) / 6.0).exp() + 1e-4
        })
        .collect()
}

/// Arrays consistent with `spec`.
pub fn arrays(spec: &Spec) -> TraceArrays {
    let (mh, mw) = spec.merged();
    let vt = mh * mw;
    let nl = spec.layers.len();
    let mut ra = Array3::<f32>::zeros((spec.steps, nl, 5));
    for s in 0..spec.steps {
        for l in 0..nl {
            let row = role_row(s, l, nl, spec.think_end);
            for r in 0..5 {
                ra[[s, l, r]] = row[r];
            }
        }
    }
    let mut va = Array2::<f32>::zeros((nl, vt));
    for l in 0..nl {
        let b = blob(
            mh,
            mw,
            mh as f32 * 0.3 + l as f32 * 0.5,
            mw as f32 * 0.6,
            0.01 * (nl - l) as f32,
        );
        for k in 0..vt {
            va[[l, k]] = b[k];
        }
    }
    let windows = spec.window.map(|w| {
        let n = spec.steps.div_ceil(w);
        let mut a = Array3::<f32>::zeros((n, nl, vt));
        for k in 0..n {
            for l in 0..nl {
                for t in 0..vt {
                    a[[k, l, t]] = va[[l, t]] / (1.0 + k as f32);
                }
            }
        }
        a
    });
    let heads = spec.with_heads.then(|| {
        let mut a = Array3::<f32>::zeros((nl, spec.heads, vt));
        let mut rah = Array4::<f32>::zeros((spec.steps, nl, spec.heads, 5));
        for l in 0..nl {
            for h in 0..spec.heads {
                let b = blob(mh, mw, (h * 3 % mh) as f32, (h * 5 % mw) as f32, 0.01);
                for t in 0..vt {
                    a[[l, h, t]] = b[t];
                }
                for s in 0..spec.steps {
                    let row = role_row(s, l, nl, spec.think_end);
                    for r in 0..5 {
                        rah[[s, l, h, r]] =
                            row[r] * if r == 1 { 1.0 + h as f32 * 0.2 } else { 1.0 };
                    }
                }
            }
        }
        (a, rah)
    });
    let vision = spec.with_vision.then(|| {
        let (gh, gw) = (mh * 2, mw * 2);
        let mut a = Array2::<f32>::zeros((3, gh * gw));
        for b in 0..3 {
            let m = blob(gh, gw, gh as f32 / 2.0, (b * gw / 3) as f32, 1.0);
            for k in 0..gh * gw {
                a[[b, k]] = m[k];
            }
        }
        a
    });
    let prompt = spec.with_prompt.then(|| {
        let mut a = Array2::<f32>::zeros((nl, 5));
        for l in 0..nl {
            let row = role_row(0, l, nl, spec.think_end);
            for r in 0..3 {
                a[[l, r]] = row[r];
            }
        }
        a
    });
    let (vah, rah) = match heads {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    TraceArrays {
        role_attention: ra,
        role_attention_heads: rah,
        visual_attention: va,
        visual_attention_windows: windows,
        visual_attention_steps: None,
        visual_attention_heads: vah,
        vision_attention: vision,
        prompt_role_attention: prompt,
    }
}

/// Writes a complete trace.
pub fn write_trace(dir: &Path, meta: &TraceMeta, arrays: &TraceArrays) {
    let w = TraceWriter::create(dir, meta, false).expect("create trace");
    w.finish(meta, arrays).expect("finish trace");
}

/// A photo: a smooth colour gradient.
pub fn gradient_photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (40 + x * 150 / w.max(1)) as u8,
            (60 + y * 120 / h.max(1)) as u8,
            140,
        ])
    })
}

/// A photo of one flat colour.
pub fn flat_photo(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(c))
}

/// Does the image hold pixels of text colour (dark, nearly grey) in the given rectangle?
pub fn has_dark_pixels(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    let mut n = 0;
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            let p = img.get_pixel(x, y).0;
            if p.iter().all(|&c| c < 90) {
                n += 1;
            }
        }
    }
    n
}

/// Fraction of pixels that are not white.
pub fn ink_fraction(img: &RgbImage) -> f64 {
    let n = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    n as f64 / (img.width() * img.height()) as f64
}
