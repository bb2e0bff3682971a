//! The trace: the saved record of one generation, read back by `rhlens figures` and by Python.
//!
//! A trace is a directory holding two files:
//! - `trace.json`: [`TraceMeta`], the metadata (model, image geometry, prompt, token role spans,
//!   generated ids and text, events, settings);
//! - `attention.safetensors`: [`TraceArrays`], float32 arrays of attention mass (see the field
//!   docs for shapes), but `visual_attention_steps`, stored as float16 to stay compact.
//!
//! [`TraceWriter`] writes `trace.json` with `"complete": false` as soon as a run starts and
//! replaces both files atomically (temporary file + rename) when it ends, so a directory whose
//! `trace.json` says `complete: false` is recognisably the remains of an interrupted run.
//! [`Trace::read`] checks the format, the version and that every array's shape agrees with the
//! metadata, and refuses partial traces unless asked ([`Trace::read_allow_partial`]).
//!
//! Python: `json.load(open(dir + "/trace.json"))` and
//! `safetensors.numpy.load_file(dir + "/attention.safetensors")`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3, Array4, ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

pub use super::roles::RoleSpan;
use super::roles::{Role, ROLE_NAMES};

/// Value of `trace.json`'s `format` field.
pub const TRACE_FORMAT: &str = "rhlens-trace";
/// The trace format version this build writes and reads.
pub const TRACE_FORMAT_VERSION: u32 = 1;
/// Metadata file name inside a trace directory.
pub const TRACE_JSON: &str = "trace.json";
/// Array file name inside a trace directory.
pub const ATTENTION_FILE: &str = "attention.safetensors";
/// How long the run took, inside a trace directory (the one file that differs between two
/// identical runs, hence not part of trace.json).
pub const TIMING_FILE: &str = "timing.json";

/// Array names inside `attention.safetensors`.
pub mod names {
    pub const ROLE_ATTENTION: &str = "role_attention";
    pub const ROLE_ATTENTION_HEADS: &str = "role_attention_heads";
    pub const VISUAL_ATTENTION: &str = "visual_attention";
    pub const VISUAL_ATTENTION_WINDOWS: &str = "visual_attention_windows";
    pub const VISUAL_ATTENTION_STEPS: &str = "visual_attention_steps";
    pub const VISUAL_ATTENTION_HEADS: &str = "visual_attention_heads";
    pub const VISION_ATTENTION: &str = "vision_attention";
    pub const PROMPT_ROLE_ATTENTION: &str = "prompt_role_attention";
}

/// Errors reading or writing a trace. Every message names the directory or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} is not a trace directory: {file} is missing")]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("{path}: invalid trace metadata: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: format is {found:?}, expected {TRACE_FORMAT:?}")]
    Format { path: PathBuf, found: String },
    #[error(
        "{path}: trace format version {found} is not supported (this rhlens reads version {TRACE_FORMAT_VERSION})"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("{dir} is a partial trace: the run that wrote it did not finish (rerun it, or allow partial traces to use what it saved)")]
    Partial { dir: PathBuf },
    #[error("{dir} is a partial trace and holds no attention arrays yet")]
    PartialWithoutArrays { dir: PathBuf },
    #[error(
        "{dir} already exists and is not empty; choose another directory or force overwriting"
    )]
    Exists { dir: PathBuf },
    #[error("{path}: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("{path}: required array `{name}` is missing")]
    MissingArray { path: PathBuf, name: &'static str },
    #[error("{dir}: inconsistent trace: {msg}")]
    Shape { dir: PathBuf, msg: String },
}

/// The model that produced the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelInfo {
    /// How the model is named in results and legends (`--name`; default the checkpoint folder's
    /// name or the hub id), never a machine path.
    #[serde(default)]
    pub name: String,
    /// The same as `name` (kept for readers of traces written before `name` existed, which held
    /// the checkpoint directory here).
    pub path: String,
    /// `model_type` from the checkpoint's config (e.g. `qwen2_5_vl`).
    pub model_type: String,
    /// Compute dtype: `f32`, `bf16` or `f16`.
    pub dtype: String,
    /// Device the model ran on (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// True for the bundled demo checkpoint (random weights): every figure says so.
    pub random_weights: bool,
    /// Decoder layers of the model (captured or not).
    pub num_layers: usize,
    /// Query heads per decoder layer.
    pub num_heads: usize,
}

/// The input image and its geometry through preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageInfo {
    /// Image file as given on the command line (figures resolve a relative path against the
    /// working directory, then against the trace directory).
    pub path: String,
    /// The image file relative to the trace directory, so that figures find it from any working
    /// directory and after the trace and its images move together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_path: Option<String>,
    /// Original width in pixels.
    pub width: u32,
    /// Original height in pixels.
    pub height: u32,
    /// Width after smart_resize (a multiple of 28 for Qwen2.5-VL).
    pub resized_width: u32,
    /// Height after smart_resize.
    pub resized_height: u32,
    /// `image_grid_thw`: temporal, height and width in 14-pixel patches (before merging).
    pub grid_thw: [usize; 3],
    /// Merged-token grid `[rows, cols]` = `[grid_h / 2, grid_w / 2]`; `rows × cols` image tokens.
    pub merged_grid: [usize; 2],
}

/// What happened at a generation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The thinking block opened.
    ThinkStart,
    /// The model closed the thinking block itself.
    ThinkEnd,
    /// Length control closed the thinking block (budget reached).
    ForcedThinkEnd,
    /// Length control inserted a "Wait" continuation.
    Wait,
    /// The answer began.
    AnswerStart,
}

impl EventKind {
    /// Words for legends.
    pub fn describe(self) -> &'static str {
        match self {
            EventKind::ThinkStart => "thinking starts",
            EventKind::ThinkEnd => "thinking ends",
            EventKind::ForcedThinkEnd => "thinking cut (budget)",
            EventKind::Wait => "\"Wait\" inserted",
            EventKind::AnswerStart => "answer starts",
        }
    }
}

/// One event of the generation, at step `step` (the query that produced generated token `step`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub step: usize,
    pub kind: EventKind,
    /// The text concerned (the inserted "Wait" text, the tag, ...).
    #[serde(default)]
    pub text: String,
}

/// `trace.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceMeta {
    /// Always [`TRACE_FORMAT`].
    pub format: String,
    /// Always [`TRACE_FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// False while the run is in progress or if it was interrupted.
    pub complete: bool,
    pub model: ModelInfo,
    pub image: ImageInfo,
    /// The user's prompt text.
    pub prompt: String,
    /// The prompt after the chat template (what the model saw).
    pub rendered_prompt: String,
    /// Role names in array order (the last axis of `role_attention`).
    pub roles: Vec<String>,
    /// Role of every token position, as half-open ranges.
    pub spans: Vec<RoleSpan>,
    /// Number of prompt positions.
    pub prompt_tokens: usize,
    /// Decoder layer indices captured, in array order (the `layers` axis of the arrays).
    pub layers: Vec<usize>,
    /// Steps per window of `visual_attention_windows` (None when no windows were saved).
    pub window: Option<usize>,
    /// Generation steps captured (the first axis of `role_attention`); at most the number of
    /// generated tokens.
    pub steps: usize,
    /// Generated token ids, in order.
    pub generated_ids: Vec<u32>,
    /// The text of each generated token alone (special tokens included), in the order of
    /// `generated_ids`; empty in traces written before it was recorded.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Decoded generated text.
    pub text: String,
    /// The thinking part of `text`.
    pub thinking: String,
    /// The answer part of `text`.
    pub answer: String,
    /// Tokens inside the thinking block.
    pub think_tokens: usize,
    /// Tokens after the thinking block.
    pub answer_tokens: usize,
    /// Why generation stopped (`eos`, `max_new_tokens`, ...).
    pub stop_reason: String,
    /// Thinking boundaries and length-control insertions, in step order.
    pub events: Vec<TraceEvent>,
    /// Free-form settings: sampling, seed, length control.
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl Default for TraceMeta {
    fn default() -> Self {
        TraceMeta {
            format: TRACE_FORMAT.to_string(),
            format_version: TRACE_FORMAT_VERSION,
            complete: false,
            model: ModelInfo::default(),
            image: ImageInfo::default(),
            prompt: String::new(),
            rendered_prompt: String::new(),
            roles: ROLE_NAMES.iter().map(|s| s.to_string()).collect(),
            spans: Vec::new(),
            prompt_tokens: 0,
            layers: Vec::new(),
            window: None,
            steps: 0,
            generated_ids: Vec::new(),
            tokens: Vec::new(),
            text: String::new(),
            thinking: String::new(),
            answer: String::new(),
            think_tokens: 0,
            answer_tokens: 0,
            stop_reason: String::new(),
            events: Vec::new(),
            settings: serde_json::Map::new(),
        }
    }
}

impl TraceMeta {
    /// Position of `role` in [`TraceMeta::roles`].
    pub fn role_index(&self, role: Role) -> Option<usize> {
        self.role_index_by_name(role.name())
    }

    /// Position of the role named `name` (a trace may list roles this build does not know).
    pub fn role_index_by_name(&self, name: &str) -> Option<usize> {
        self.roles.iter().position(|r| r == name)
    }

    /// Where the image file may be, most likely first: relative to the trace directory `dir`
    /// (works from any working directory), as given, as given under `dir`, by name in `dir`.
    pub fn image_candidates(&self, dir: &Path) -> Vec<PathBuf> {
        let given = PathBuf::from(&self.image.path);
        let mut out: Vec<PathBuf> = self
            .image
            .relative_path
            .iter()
            .map(|r| dir.join(r))
            .collect();
        out.push(given.clone());
        if given.is_relative() {
            out.push(dir.join(&given));
        }
        if let Some(name) = given.file_name() {
            out.push(dir.join(name));
        }
        out
    }

    /// Number of image tokens (`merged_grid` rows × cols).
    pub fn visual_tokens(&self) -> usize {
        self.image.merged_grid[0] * self.image.merged_grid[1]
    }

    /// Reads and checks `DIR/trace.json` alone (format and version; not the arrays).
    pub fn read(dir: &Path) -> Result<TraceMeta, TraceError> {
        let path = dir.join(TRACE_JSON);
        if !path.is_file() {
            return Err(TraceError::MissingFile {
                dir: dir.to_path_buf(),
                file: TRACE_JSON,
            });
        }
        let text = fs::read_to_string(&path).map_err(|source| TraceError::Io {
            path: path.clone(),
            source,
        })?;
        // Check the header before the full structure so that a wrong file says so plainly.
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| TraceError::Json {
                path: path.clone(),
                source,
            })?;
        let format = value.get("format").and_then(|v| v.as_str()).unwrap_or("");
        if format != TRACE_FORMAT {
            return Err(TraceError::Format {
                path,
                found: format.to_string(),
            });
        }
        let version = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if version != TRACE_FORMAT_VERSION as u64 {
            return Err(TraceError::Version {
                path,
                found: version.min(u32::MAX as u64) as u32,
            });
        }
        serde_json::from_value(value).map_err(|source| TraceError::Json { path, source })
    }
}

/// The arrays of `attention.safetensors` (all float32). "Head-mean" means the mean over the
/// model's query heads of the attention probabilities; role masses are sums over the role's
/// key positions.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceArrays {
    /// `[steps, layers, roles]`: attention mass per role at each generated step.
    pub role_attention: Array3<f32>,
    /// `[steps, layers, heads, roles]`: the same per head (optional).
    pub role_attention_heads: Option<Array4<f32>>,
    /// `[layers, visual_tokens]`: attention on each image token, mean over all steps, in raster
    /// order of the merged grid (`merged_grid[0] × merged_grid[1]`).
    pub visual_attention: Array2<f32>,
    /// `[windows, layers, visual_tokens]`: the same per window of `window` steps (optional).
    pub visual_attention_windows: Option<Array3<f32>>,
    /// `[steps, layers, visual_tokens]`: the head-mean map of every step (optional; absent in
    /// traces written before it existed or with per-step maps turned off). Stored as float16
    /// (1,000 steps x 28 layers x 256 tokens: 14.3 MB; x 1,024 tokens: 57.3 MB); read back as
    /// float32, so values hold float16 precision.
    pub visual_attention_steps: Option<Array3<f32>>,
    /// `[layers, heads, visual_tokens]`: `visual_attention` per head (optional).
    pub visual_attention_heads: Option<Array3<f32>>,
    /// `[blocks, patches]`: vision-tower attention received by each patch, in raster order of
    /// the pre-merge patch grid (`grid_thw[1] × grid_thw[2]`) (optional).
    pub vision_attention: Option<Array2<f32>>,
    /// `[layers, roles]`: the last prompt token's attention mass per role (prompt-only
    /// allocation analysis) (optional).
    pub prompt_role_attention: Option<Array2<f32>>,
}

/// A trace read from disk.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The directory it was read from.
    pub dir: PathBuf,
    pub meta: TraceMeta,
    pub arrays: TraceArrays,
}

impl Trace {
    /// Reads a complete trace; a partial one (interrupted run) is an error.
    pub fn read(dir: &Path) -> Result<Trace, TraceError> {
        Self::read_impl(dir, false)
    }

    /// Reads a trace even if its run did not finish, provided it holds arrays (a checkpoint).
    pub fn read_allow_partial(dir: &Path) -> Result<Trace, TraceError> {
        Self::read_impl(dir, true)
    }

    fn read_impl(dir: &Path, allow_partial: bool) -> Result<Trace, TraceError> {
        let meta = TraceMeta::read(dir)?;
        let array_path = dir.join(ATTENTION_FILE);
        if !meta.complete {
            if !allow_partial {
                return Err(TraceError::Partial {
                    dir: dir.to_path_buf(),
                });
            }
            if !array_path.is_file() {
                return Err(TraceError::PartialWithoutArrays {
                    dir: dir.to_path_buf(),
                });
            }
        }
        if !array_path.is_file() {
            return Err(TraceError::MissingFile {
                dir: dir.to_path_buf(),
                file: ATTENTION_FILE,
            });
        }
        let arrays = read_arrays(&array_path)?;
        validate(&meta, &arrays).map_err(|msg| TraceError::Shape {
            dir: dir.to_path_buf(),
            msg,
        })?;
        Ok(Trace {
            dir: dir.to_path_buf(),
            meta,
            arrays,
        })
    }
}

/// Checks that metadata and arrays agree. Returns a message naming the first disagreement.
pub fn validate(meta: &TraceMeta, arrays: &TraceArrays) -> Result<(), String> {
    check_roles_and_layers(meta)?;
    check_image(meta)?;
    check_steps_spans_events(meta)?;
    check_array_shapes(meta, arrays)
}

fn check_roles_and_layers(meta: &TraceMeta) -> Result<(), String> {
    if meta.roles.is_empty() {
        return Err("`roles` is empty".into());
    }
    let mut seen = HashSet::new();
    for r in &meta.roles {
        if !seen.insert(r.as_str()) {
            return Err(format!("role {r:?} is listed twice in `roles`"));
        }
    }
    if meta.layers.is_empty() {
        return Err("`layers` is empty".into());
    }
    for w in meta.layers.windows(2) {
        if w[1] <= w[0] {
            return Err(format!(
                "`layers` must be strictly increasing, found {} after {}",
                w[1], w[0]
            ));
        }
    }
    if meta.model.num_layers > 0 {
        if let Some(&l) = meta.layers.iter().find(|&&l| l >= meta.model.num_layers) {
            return Err(format!(
                "captured layer {l} does not exist (the model has {} layers)",
                meta.model.num_layers
            ));
        }
    }
    Ok(())
}

/// The merged grid must tile both the patch grid and the resized image with square tokens.
fn check_image(meta: &TraceMeta) -> Result<(), String> {
    let [mh, mw] = meta.image.merged_grid;
    if mh == 0 || mw == 0 {
        return Err(format!("merged grid {mh}x{mw} is empty"));
    }
    let [_, gh, gw] = meta.image.grid_thw;
    if gh % mh != 0 || gw % mw != 0 || gh / mh != gw / mw {
        return Err(format!(
            "merged grid {mh}x{mw} does not divide the patch grid {gh}x{gw} evenly"
        ));
    }
    let (rw, rh) = (
        meta.image.resized_width as usize,
        meta.image.resized_height as usize,
    );
    if rh % mh != 0 || rw % mw != 0 || rh / mh != rw / mw {
        return Err(format!(
            "resized image {rw}x{rh} is not covered by square tokens of the merged grid {mh}x{mw}"
        ));
    }
    if meta.image.width == 0 || meta.image.height == 0 {
        return Err("image width/height is zero".into());
    }
    Ok(())
}

fn check_steps_spans_events(meta: &TraceMeta) -> Result<(), String> {
    let generated = meta.generated_ids.len();
    // Step s is the query that produced generated token s, so there are at most as many steps
    // as generated tokens (fewer when capture was capped).
    if meta.steps > generated {
        return Err(format!(
            "`steps` is {} but only {generated} generated ids are listed",
            meta.steps
        ));
    }
    if !meta.tokens.is_empty() && meta.tokens.len() != generated {
        return Err(format!(
            "{} token strings listed for {generated} generated ids",
            meta.tokens.len()
        ));
    }
    let positions = meta.prompt_tokens + generated;
    for s in &meta.spans {
        if meta.role_index_by_name(&s.role).is_none() {
            return Err(format!("span role {:?} is not in `roles`", s.role));
        }
        if s.start > s.end || s.end > positions {
            return Err(format!(
                "span {:?} [{}, {}) lies outside the {positions} token positions",
                s.role, s.start, s.end
            ));
        }
    }
    if let Some(e) = meta.events.iter().find(|e| e.step > generated) {
        return Err(format!(
            "event {:?} at step {} is after the last generated token ({generated})",
            e.kind, e.step
        ));
    }
    Ok(())
}

fn check_array_shapes(meta: &TraceMeta, arrays: &TraceArrays) -> Result<(), String> {
    let (steps, n_layers, n_roles) = (meta.steps, meta.layers.len(), meta.roles.len());
    let (heads, vt) = (meta.model.num_heads, meta.visual_tokens());
    check_shape(
        names::ROLE_ATTENTION,
        arrays.role_attention.shape(),
        &[steps, n_layers, n_roles],
        "[steps, layers, roles]",
    )?;
    if let Some(a) = &arrays.role_attention_heads {
        check_shape(
            names::ROLE_ATTENTION_HEADS,
            a.shape(),
            &[steps, n_layers, heads, n_roles],
            "[steps, layers, heads, roles]",
        )?;
    }
    check_shape(
        names::VISUAL_ATTENTION,
        arrays.visual_attention.shape(),
        &[n_layers, vt],
        "[layers, merged_grid rows*cols]",
    )?;
    if let Some(a) = &arrays.visual_attention_windows {
        let Some(w) = meta.window.filter(|&w| w > 0) else {
            return Err(format!(
                "`{}` is present but `window` is not set",
                names::VISUAL_ATTENTION_WINDOWS
            ));
        };
        let windows = steps.div_ceil(w);
        check_shape(
            names::VISUAL_ATTENTION_WINDOWS,
            a.shape(),
            &[windows, n_layers, vt],
            "[ceil(steps/window), layers, visual_tokens]",
        )?;
    }
    if let Some(a) = &arrays.visual_attention_steps {
        check_shape(
            names::VISUAL_ATTENTION_STEPS,
            a.shape(),
            &[steps, n_layers, vt],
            "[steps, layers, visual_tokens]",
        )?;
    }
    if let Some(a) = &arrays.visual_attention_heads {
        check_shape(
            names::VISUAL_ATTENTION_HEADS,
            a.shape(),
            &[n_layers, heads, vt],
            "[layers, heads, visual_tokens]",
        )?;
    }
    if let Some(a) = &arrays.vision_attention {
        let patches = meta.image.grid_thw.iter().product::<usize>();
        let [_, gh, gw] = meta.image.grid_thw;
        if a.shape()[1] != patches || gh * gw != patches {
            return Err(format!(
                "`{}` has shape {:?}: expected [blocks, {patches}] for a single-frame patch grid {gh}x{gw}",
                names::VISION_ATTENTION,
                a.shape()
            ));
        }
    }
    if let Some(a) = &arrays.prompt_role_attention {
        check_shape(
            names::PROMPT_ROLE_ATTENTION,
            a.shape(),
            &[n_layers, n_roles],
            "[layers, roles]",
        )?;
    }
    Ok(())
}

fn check_shape(name: &str, found: &[usize], expected: &[usize], dims: &str) -> Result<(), String> {
    if found != expected {
        return Err(format!(
            "`{name}` has shape {found:?}, the metadata implies {expected:?} {dims}"
        ));
    }
    Ok(())
}

fn read_arrays(path: &Path) -> Result<TraceArrays, TraceError> {
    let bytes = fs::read(path).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| TraceError::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let get = |name: &'static str| -> Result<Option<ArrayD<f32>>, TraceError> {
        let view = match st.tensor(name) {
            Ok(v) => v,
            Err(safetensors::SafeTensorError::TensorNotFound(_)) => return Ok(None),
            Err(e) => {
                return Err(TraceError::Safetensors {
                    path: path.to_path_buf(),
                    msg: format!("array `{name}`: {e}"),
                })
            }
        };
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(TraceError::Safetensors {
                    path: path.to_path_buf(),
                    msg: format!("array `{name}` is {other:?}, expected F32 or F16"),
                })
            }
        };
        ArrayD::from_shape_vec(IxDyn(view.shape()), data)
            .map(Some)
            .map_err(|e| TraceError::Safetensors {
                path: path.to_path_buf(),
                msg: format!("array `{name}`: {e}"),
            })
    };
    fn dim<D: ndarray::Dimension>(
        path: &Path,
        name: &str,
        a: Option<ArrayD<f32>>,
    ) -> Result<Option<ndarray::Array<f32, D>>, TraceError> {
        a.map(|a| {
            let nd = a.ndim();
            a.into_dimensionality::<D>()
                .map_err(|_| TraceError::Safetensors {
                    path: path.to_path_buf(),
                    msg: format!(
                        "array `{name}` has {nd} dimensions, expected {}",
                        D::NDIM.unwrap_or(0)
                    ),
                })
        })
        .transpose()
    }
    let required = |name: &'static str| -> Result<ArrayD<f32>, TraceError> {
        get(name)?.ok_or(TraceError::MissingArray {
            path: path.to_path_buf(),
            name,
        })
    };
    use names::*;
    Ok(TraceArrays {
        role_attention: dim(path, ROLE_ATTENTION, Some(required(ROLE_ATTENTION)?))?
            .expect("present"),
        role_attention_heads: dim(path, ROLE_ATTENTION_HEADS, get(ROLE_ATTENTION_HEADS)?)?,
        visual_attention: dim(path, VISUAL_ATTENTION, Some(required(VISUAL_ATTENTION)?))?
            .expect("present"),
        visual_attention_windows: dim(
            path,
            VISUAL_ATTENTION_WINDOWS,
            get(VISUAL_ATTENTION_WINDOWS)?,
        )?,
        visual_attention_steps: dim(path, VISUAL_ATTENTION_STEPS, get(VISUAL_ATTENTION_STEPS)?)?,
        visual_attention_heads: dim(path, VISUAL_ATTENTION_HEADS, get(VISUAL_ATTENTION_HEADS)?)?,
        vision_attention: dim(path, VISION_ATTENTION, get(VISION_ATTENTION)?)?,
        prompt_role_attention: dim(path, PROMPT_ROLE_ATTENTION, get(PROMPT_ROLE_ATTENTION)?)?,
    })
}

/// Serialises the arrays to safetensors bytes (little-endian, standard layout; float32 but
/// `visual_attention_steps`, float16).
pub fn arrays_to_bytes(arrays: &TraceArrays) -> Result<Vec<u8>, String> {
    type Buffer = (Dtype, Vec<usize>, Vec<u8>);
    fn encode<D: ndarray::Dimension, const N: usize>(
        a: &ndarray::Array<f32, D>,
        dtype: Dtype,
        value: fn(f32) -> [u8; N],
    ) -> Buffer {
        let mut out = Vec::with_capacity(a.len() * N);
        // iter() walks in logical (row-major) order whatever the memory layout.
        for v in a.iter() {
            out.extend_from_slice(&value(*v));
        }
        (dtype, a.shape().to_vec(), out)
    }
    fn le_bytes<D: ndarray::Dimension>(a: &ndarray::Array<f32, D>) -> Buffer {
        encode(a, Dtype::F32, f32::to_le_bytes)
    }
    fn f16_bytes(a: &Array3<f32>) -> Buffer {
        encode(a, Dtype::F16, |v| half::f16::from_f32(v).to_le_bytes())
    }
    use names::*;
    let mut buffers: Vec<(&str, Buffer)> = Vec::new();
    let mut push = |name: &'static str, buffer: Buffer| buffers.push((name, buffer));
    push(ROLE_ATTENTION, le_bytes(&arrays.role_attention));
    if let Some(a) = &arrays.role_attention_heads {
        push(ROLE_ATTENTION_HEADS, le_bytes(a));
    }
    push(VISUAL_ATTENTION, le_bytes(&arrays.visual_attention));
    if let Some(a) = &arrays.visual_attention_windows {
        push(VISUAL_ATTENTION_WINDOWS, le_bytes(a));
    }
    if let Some(a) = &arrays.visual_attention_steps {
        push(VISUAL_ATTENTION_STEPS, f16_bytes(a));
    }
    if let Some(a) = &arrays.visual_attention_heads {
        push(VISUAL_ATTENTION_HEADS, le_bytes(a));
    }
    if let Some(a) = &arrays.vision_attention {
        push(VISION_ATTENTION, le_bytes(a));
    }
    if let Some(a) = &arrays.prompt_role_attention {
        push(PROMPT_ROLE_ATTENTION, le_bytes(a));
    }
    let mut views = Vec::new();
    for (name, (dtype, shape, data)) in &buffers {
        let view =
            TensorView::new(*dtype, shape.clone(), data).map_err(|e| format!("{name}: {e}"))?;
        views.push((name.to_string(), view));
    }
    let metadata = BTreeMap::from([
        ("format".to_string(), TRACE_FORMAT.to_string()),
        (
            "format_version".to_string(),
            TRACE_FORMAT_VERSION.to_string(),
        ),
    ]);
    serialize_ordered(views, &metadata)
}

/// safetensors bytes whose header lists `metadata` in key order. The safetensors crate keeps
/// metadata in a `HashMap`, whose order changes from run to run, so two identical runs would
/// write different bytes; its tensors come out in a fixed order (by dtype, then name), so the
/// header is rebuilt from a metadata-free serialisation with the metadata put first.
pub fn serialize_ordered<'a>(
    views: Vec<(String, TensorView<'a>)>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let plain = safetensors::serialize(views, &None).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(plain[..8].try_into().map_err(|_| "short header")?) as usize;
    let header = std::str::from_utf8(&plain[8..8 + n])
        .map_err(|e| e.to_string())?
        .trim_end();
    let tensors = &header[1..header.len() - 1];
    let mut out_header = format!(
        "{{\"__metadata__\":{}",
        serde_json::to_string(metadata).map_err(|e| e.to_string())?
    );
    if !tensors.is_empty() {
        out_header.push(',');
        out_header.push_str(tensors);
    }
    out_header.push('}');
    // the data must start 8-byte aligned, as the safetensors crate pads
    while out_header.len() % 8 != 0 {
        out_header.push(' ');
    }
    let mut out = Vec::with_capacity(plain.len() + out_header.len());
    out.extend_from_slice(&(out_header.len() as u64).to_le_bytes());
    out.extend_from_slice(out_header.as_bytes());
    out.extend_from_slice(&plain[8 + n..]);
    Ok(out)
}

/// Writes a trace directory: [`TraceWriter::create`] when the run starts, then
/// [`TraceWriter::checkpoint`] as often as wanted and [`TraceWriter::finish`] at the end.
#[derive(Debug)]
pub struct TraceWriter {
    dir: PathBuf,
}

impl TraceWriter {
    /// Creates `dir` (and its parents) and writes `trace.json` from `meta` with
    /// `complete: false`. An existing non-empty `dir` is refused unless `force`, in which case
    /// the trace files inside it are removed first (other files are left alone).
    pub fn create(dir: &Path, meta: &TraceMeta, force: bool) -> Result<TraceWriter, TraceError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TraceError::Io { path, source }
        };
        if dir.exists() {
            if !dir.is_dir() {
                return Err(TraceError::Io {
                    path: dir.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "exists and is not a directory",
                    ),
                });
            }
            // the run's own lock file does not count
            let non_empty = fs::read_dir(dir)
                .map_err(io(dir))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name() != crate::fsutil::LOCK_FILE);
            if non_empty && !force {
                return Err(TraceError::Exists {
                    dir: dir.to_path_buf(),
                });
            }
            for name in [TRACE_JSON, ATTENTION_FILE, TIMING_FILE] {
                let p = dir.join(name);
                if p.exists() {
                    fs::remove_file(&p).map_err(io(&p))?;
                }
            }
        } else {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let writer = TraceWriter {
            dir: dir.to_path_buf(),
        };
        writer.write_meta(meta, false)?;
        Ok(writer)
    }

    /// The trace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves the state so far as a partial trace (`complete: false`), readable with
    /// [`Trace::read_allow_partial`]. Checks shapes first.
    pub fn checkpoint(&self, meta: &TraceMeta, arrays: &TraceArrays) -> Result<(), TraceError> {
        self.write_all(meta, arrays, false)
    }

    /// Writes the arrays, then `trace.json` with `complete: true` (each atomically), after
    /// checking that they agree. Returns the trace directory.
    pub fn finish(self, meta: &TraceMeta, arrays: &TraceArrays) -> Result<PathBuf, TraceError> {
        self.write_all(meta, arrays, true)?;
        Ok(self.dir)
    }

    fn write_all(
        &self,
        meta: &TraceMeta,
        arrays: &TraceArrays,
        complete: bool,
    ) -> Result<(), TraceError> {
        let mut m = meta.clone();
        m.format = TRACE_FORMAT.to_string();
        m.format_version = TRACE_FORMAT_VERSION;
        validate(&m, arrays).map_err(|msg| TraceError::Shape {
            dir: self.dir.clone(),
            msg,
        })?;
        let path = self.dir.join(ATTENTION_FILE);
        let bytes = arrays_to_bytes(arrays).map_err(|msg| TraceError::Safetensors {
            path: path.clone(),
            msg,
        })?;
        // Arrays first: trace.json only says complete once the arrays are in place.
        write_atomic(&self.dir, ATTENTION_FILE, &bytes)?;
        self.write_meta(&m, complete)
    }

    /// Writes `timing.json` (prefill and decode times, memory), before [`TraceWriter::finish`].
    pub fn write_timing(&self, timing: &serde_json::Value) -> Result<(), TraceError> {
        let path = self.dir.join(TIMING_FILE);
        let mut text = serde_json::to_string_pretty(timing)
            .map_err(|source| TraceError::Json { path, source })?;
        text.push('\n');
        write_atomic(&self.dir, TIMING_FILE, text.as_bytes())
    }

    fn write_meta(&self, meta: &TraceMeta, complete: bool) -> Result<(), TraceError> {
        let mut m = meta.clone();
        m.format = TRACE_FORMAT.to_string();
        m.format_version = TRACE_FORMAT_VERSION;
        m.complete = complete;
        let path = self.dir.join(TRACE_JSON);
        let mut text = serde_json::to_string_pretty(&m).map_err(|source| TraceError::Json {
            path: path.clone(),
            source,
        })?;
        text.push('\n');
        write_atomic(&self.dir, TRACE_JSON, text.as_bytes())
    }
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TraceError> {
    crate::fsutil::write_atomic(&dir.join(name), bytes).map_err(|e| TraceError::Io {
        path: e.path,
        source: e.source,
    })
}
