//! Evidence beyond the raw visual share, model-free: the spatial spread of each visual map,
//! attention sinks among the image tokens, a per-head table with a perception / reasoning split,
//! attention inside evidence boxes (all reduced from a saved trace through [`super::spatial`]),
//! and the schema of the image-dependence file that a teacher-forced ablated pass writes
//! (`probe::dependence`). Both files live beside the trace in its folder:
//! [`EVIDENCE_JSON`] (+ [`HEADS_CSV`]) and [`DEPENDENCE_JSON`].
//!
//! Phases. Attention at step `s` is the row of one query: `s = 0` is the last prompt position
//! (phase `prompt`), `s ≥ 1` the position of generated token `s − 1`, whose role (`reasoning` or
//! `answer`) gives the phase `thinking` or `answer` ([`query_phase`]). Image dependence at step
//! `s` is about the prediction of generated token `s`, so its phase is that token's role
//! ([`token_phase`]).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, Array4};
use serde::{Deserialize, Serialize};

use super::roles::Role;
use super::spatial::{self, PixelBox};
use super::trace::{Trace, TraceMeta};
use crate::fsutil::write_atomic;

/// The evidence metrics of one trace, in its folder.
pub const EVIDENCE_JSON: &str = "evidence.json";
/// The per-head table of one trace, in its folder.
pub const HEADS_CSV: &str = "heads.csv";
/// Image dependence per generated token, in the trace's folder.
pub const DEPENDENCE_JSON: &str = "dependence.json";
/// Value of the `format` field of [`DEPENDENCE_JSON`].
pub const DEPENDENCE_FORMAT: &str = "rhlens-dependence";
/// Value of the `format` field of [`EVIDENCE_JSON`].
pub const EVIDENCE_FORMAT: &str = "rhlens-evidence";
/// Version of both formats.
pub const EVIDENCE_VERSION: u32 = 1;

/// Where in the generation a step's query (or predicted token) lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Prompt,
    Thinking,
    Answer,
}

/// Role of generated token `i` (from the trace's spans), `None` outside every span.
fn generated_role(meta: &TraceMeta, i: usize) -> Option<Role> {
    let pos = meta.prompt_tokens + i;
    meta.spans
        .iter()
        .find(|s| s.start <= pos && pos < s.end)
        .and_then(|s| Role::from_name(&s.role))
}

fn phase_of(role: Option<Role>) -> Option<Phase> {
    match role? {
        Role::Reasoning => Some(Phase::Thinking),
        Role::Answer => Some(Phase::Answer),
        _ => None,
    }
}

/// The phase of step `s`'s query: the prompt for step 0, else the role of generated token `s − 1`.
pub fn query_phase(meta: &TraceMeta, step: usize) -> Option<Phase> {
    match step {
        0 => Some(Phase::Prompt),
        s => phase_of(generated_role(meta, s - 1)),
    }
}

/// The phase of the token step `s` predicts (generated token `s`).
pub fn token_phase(meta: &TraceMeta, step: usize) -> Option<Phase> {
    phase_of(generated_role(meta, step))
}

// ---------------------------------------------------------------------------------------------
// Spatial spread

/// Normalised entropy and centre of mass of one visual map ([`spatial::normalized_entropy`],
/// [`spatial::centre_of_mass`]); `None` where the map has no mass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub entropy: Option<f64>,
    pub centre_x: Option<f64>,
    pub centre_y: Option<f64>,
}

impl Spread {
    pub fn of(map: &[f32], rows: usize, cols: usize) -> Spread {
        let centre = spatial::centre_of_mass(map, rows, cols);
        Spread {
            entropy: spatial::normalized_entropy(map),
            centre_x: centre.map(|c| c.0),
            centre_y: centre.map(|c| c.1),
        }
    }
}

/// Spread per layer of the whole-run maps, and per window of steps and layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpreadTable {
    /// One per captured layer (`visual_attention`).
    pub by_layer: Vec<Spread>,
    /// Steps per window (None: the trace saved no windows).
    pub window: Option<usize>,
    /// `[windows][layers]` (`visual_attention_windows`).
    pub by_window: Vec<Vec<Spread>>,
}

fn spread_rows(maps: &Array2<f32>, grid: [usize; 2]) -> Vec<Spread> {
    maps.rows()
        .into_iter()
        .map(|r| Spread::of(&r.to_vec(), grid[0], grid[1]))
        .collect()
}

pub fn spread_table(trace: &Trace) -> SpreadTable {
    let grid = trace.meta.image.merged_grid;
    let by_window = match &trace.arrays.visual_attention_windows {
        Some(w) => w
            .outer_iter()
            .map(|m| spread_rows(&m.to_owned(), grid))
            .collect(),
        None => Vec::new(),
    };
    SpreadTable {
        by_layer: spread_rows(&trace.arrays.visual_attention, grid),
        window: trace.meta.window,
        by_window,
    }
}

// ---------------------------------------------------------------------------------------------
// Attention sinks

/// The sink rule: image token `k` is a sink when, in more than `layer_fraction` of the captured
/// layers, it receives at least `ratio / N` of the layer's visual attention (`N` image tokens,
/// maps averaged over all steps): `ratio` times its uniform share. Sinks take a large share
/// whatever the query, so the whole-run map is where they show.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SinkRule {
    pub ratio: f64,
    pub layer_fraction: f64,
}

impl Default for SinkRule {
    fn default() -> Self {
        SinkRule {
            ratio: 20.0,
            layer_fraction: 0.5,
        }
    }
}

/// Image tokens that are sinks by `rule` in `maps` (`[layers, tokens]`), ascending.
pub fn find_sinks(maps: &Array2<f32>, rule: &SinkRule) -> Vec<usize> {
    let (layers, tokens) = maps.dim();
    if layers == 0 || tokens == 0 {
        return Vec::new();
    }
    let threshold = rule.ratio / tokens as f64;
    let mut hits = vec![0usize; tokens];
    for row in maps.rows() {
        let total: f64 = row.iter().map(|&v| f64::from(v.max(0.0))).sum();
        if total <= 0.0 {
            continue;
        }
        for (k, &v) in row.iter().enumerate() {
            if f64::from(v.max(0.0)) / total >= threshold {
                hits[k] += 1;
            }
        }
    }
    (0..tokens)
        .filter(|&k| hits[k] as f64 > rule.layer_fraction * layers as f64)
        .collect()
}

/// Sinks and what the visual share is without them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    pub rule: SinkRule,
    /// Sink image tokens (raster order of the merged grid).
    pub tokens: Vec<usize>,
    /// Mean visual attention mass over all steps, per captured layer.
    pub visual_share_by_layer: Vec<f64>,
    /// The same without the mass on sink tokens.
    pub sink_free_share_by_layer: Vec<f64>,
    /// Means of the two over layers.
    pub visual_share: f64,
    pub sink_free_visual_share: f64,
}

/// The sink report of a trace. The mean visual mass of a layer equals the sum of its whole-run
/// map (both are means over the same steps), so the sink-free share is that mean minus the sink
/// tokens' entries of the map: exact, not an estimate.
pub fn sink_report(trace: &Trace, rule: &SinkRule) -> SinkReport {
    let maps = &trace.arrays.visual_attention;
    let tokens = find_sinks(maps, rule);
    let ra = &trace.arrays.role_attention;
    let steps = ra.dim().0;
    let visual = trace.meta.role_index(Role::Visual);
    let by_layer: Vec<f64> = (0..maps.nrows())
        .map(|l| match (visual, steps) {
            (Some(v), n) if n > 0 => {
                (0..n).map(|s| f64::from(ra[[s, l, v]])).sum::<f64>() / n as f64
            }
            _ => 0.0,
        })
        .collect();
    let free: Vec<f64> = by_layer
        .iter()
        .enumerate()
        .map(|(l, &v)| {
            let sunk: f64 = tokens.iter().map(|&k| f64::from(maps[[l, k]])).sum();
            (v - sunk).max(0.0)
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    SinkReport {
        rule: *rule,
        visual_share: mean(&by_layer),
        sink_free_visual_share: mean(&free),
        tokens,
        visual_share_by_layer: by_layer,
        sink_free_share_by_layer: free,
    }
}

// ---------------------------------------------------------------------------------------------
// Heads

/// What a head is by the split rule ([`heads_table`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    Perception,
    Reasoning,
}

/// One row of the heads table: a head's visual share (its attention on image tokens over all its
/// attention, summed over the phase's steps) per phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadRow {
    /// Decoder layer (the model's index).
    pub layer: usize,
    pub head: usize,
    pub prompt: Option<f64>,
    pub thinking: Option<f64>,
    pub answer: Option<f64>,
    /// 1 = the largest thinking visual share.
    pub rank: usize,
    pub kind: HeadKind,
}

/// Visual share of head `h` of layer position `l` over `steps`.
fn head_visual_share(
    per_head: &Array4<f32>,
    steps: &[usize],
    l: usize,
    h: usize,
    visual: usize,
) -> Option<f64> {
    let (mut part, mut total) = (0.0f64, 0.0f64);
    for &s in steps {
        let row = per_head.slice(ndarray::s![s, l, h, ..]);
        total += row.iter().map(|&v| f64::from(v)).sum::<f64>();
        part += f64::from(row[visual]);
    }
    (total > 0.0).then(|| part / total)
}

/// The per-head table, ranked by visual share during thinking (the answer phase when nothing
/// was thought). Split rule: a head is a perception head when its ranking share is at least
/// `z` standard deviations above the mean over all heads of all captured layers; every other
/// head is a reasoning head. `None` without per-head arrays.
pub fn heads_table(trace: &Trace, z: f64) -> Option<Vec<HeadRow>> {
    let per_head = trace.arrays.role_attention_heads.as_ref()?;
    let visual = trace.meta.role_index(Role::Visual)?;
    let (steps, layers, heads, _) = per_head.dim();
    let of_phase = |p: Phase| -> Vec<usize> {
        (0..steps)
            .filter(|&s| query_phase(&trace.meta, s) == Some(p))
            .collect()
    };
    let phases = [
        of_phase(Phase::Prompt),
        of_phase(Phase::Thinking),
        of_phase(Phase::Answer),
    ];
    let mut rows = Vec::with_capacity(layers * heads);
    for l in 0..layers {
        for h in 0..heads {
            let share = |p: &[usize]| head_visual_share(per_head, p, l, h, visual);
            rows.push(HeadRow {
                layer: trace.meta.layers[l],
                head: h,
                prompt: share(&phases[0]),
                thinking: share(&phases[1]),
                answer: share(&phases[2]),
                rank: 0,
                kind: HeadKind::Reasoning,
            });
        }
    }
    let key = |r: &HeadRow| r.thinking.or(r.answer).unwrap_or(0.0);
    let keys: Vec<f64> = rows.iter().map(key).collect();
    let n = keys.len().max(1) as f64;
    let mean = keys.iter().sum::<f64>() / n;
    let sd = (keys.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / n).sqrt();
    for r in rows.iter_mut() {
        if sd > 0.0 && key(r) >= mean + z * sd {
            r.kind = HeadKind::Perception;
        }
    }
    rows.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then((a.layer, a.head).cmp(&(b.layer, b.head)))
    });
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    Some(rows)
}

/// The heads table as CSV, in rank order.
pub fn heads_csv(rows: &[HeadRow]) -> String {
    let cell = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let mut out = String::from("rank,layer,head,prompt,thinking,answer,kind\n");
    for r in rows {
        let kind = match r.kind {
            HeadKind::Perception => "perception",
            HeadKind::Reasoning => "reasoning",
        };
        out.push_str(&format!(
            "{},{},{},{},{},{},{kind}\n",
            r.rank,
            r.layer,
            r.head,
            cell(r.prompt),
            cell(r.thinking),
            cell(r.answer)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Evidence boxes

/// Attention inside one box of the original image ([`spatial::box_mass`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxReport {
    #[serde(rename = "box")]
    pub bx: PixelBox,
    /// Share of the image's area inside the box: what a uniform map would put there.
    pub area_share: f64,
    /// Share of each layer's visual attention inside the box (whole-run maps).
    pub by_layer: Vec<Option<f64>>,
    /// Mean of `by_layer` over layers with mass.
    pub mean: Option<f64>,
    /// `[windows][layers]`, from the per-window maps.
    pub by_window: Vec<Vec<Option<f64>>>,
}

fn box_rows(maps: &Array2<f32>, meta: &TraceMeta, bx: &PixelBox) -> Vec<Option<f64>> {
    let [rows, cols] = meta.image.merged_grid;
    let (w, h) = (meta.image.width, meta.image.height);
    maps.rows()
        .into_iter()
        .map(|m| spatial::box_mass(&m.to_vec(), rows, cols, w, h, bx))
        .collect()
}

/// The mean of the values present.
pub fn mean_present(values: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Mean over layers of the share of `maps` (`[layers, tokens]`, the trace's whole-run maps)
/// inside `bx`: the one number per box of a benchmark record. `None` when no layer has mass.
pub fn box_mass_mean(meta: &TraceMeta, maps: &Array2<f32>, bx: &PixelBox) -> Option<f64> {
    mean_present(&box_rows(maps, meta, bx))
}

/// Evidence boxes of a benchmark record's `bbox` field: one `[x0, y0, x1, y1]` or a list of
/// them, in original-image pixels.
pub fn parse_bboxes(value: &serde_json::Value) -> Result<Vec<PixelBox>, String> {
    let four = |v: &serde_json::Value| -> Option<PixelBox> {
        let a: Vec<f64> = v
            .as_array()?
            .iter()
            .map(|x| x.as_f64())
            .collect::<Option<_>>()?;
        let [x0, y0, x1, y1] = a[..] else { return None };
        (x0 < x1 && y0 < y1).then_some(PixelBox { x0, y0, x1, y1 })
    };
    let bad = || {
        format!(
            "field `bbox` is not [x0, y0, x1, y1] (x0 < x1, y0 < y1) or a list of them: {value}"
        )
    };
    if let Some(b) = four(value) {
        return Ok(vec![b]);
    }
    let list = value.as_array().ok_or_else(bad)?;
    list.iter().map(|v| four(v).ok_or_else(bad)).collect()
}

/// Box reports of a trace; a box that does not overlap the image is refused.
pub fn box_reports(trace: &Trace, boxes: &[PixelBox]) -> Result<Vec<BoxReport>> {
    let meta = &trace.meta;
    boxes
        .iter()
        .map(|bx| {
            if let Err(msg) = bx.check(meta.image.width, meta.image.height) {
                bail!("{msg}");
            }
            let by_layer = box_rows(&trace.arrays.visual_attention, meta, bx);
            let by_window = match &trace.arrays.visual_attention_windows {
                Some(w) => w
                    .outer_iter()
                    .map(|m| box_rows(&m.to_owned(), meta, bx))
                    .collect(),
                None => Vec::new(),
            };
            Ok(BoxReport {
                bx: *bx,
                area_share: bx.area_share(meta.image.width, meta.image.height),
                mean: mean_present(&by_layer),
                by_layer,
                by_window,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// evidence.json

/// `evidence.json`: every attention-based evidence metric of one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub format: String,
    pub format_version: u32,
    /// Captured decoder layers, in the order of every per-layer list.
    pub layers: Vec<usize>,
    pub merged_grid: [usize; 2],
    pub spread: SpreadTable,
    pub sinks: SinkReport,
    /// Perception heads by the split rule, as `[layer, head]`, in rank order (empty without
    /// per-head arrays); the whole table is in [`HEADS_CSV`].
    pub perception_heads: Vec<[usize; 2]>,
    /// The split rule's threshold, in standard deviations above the mean head.
    pub perception_z: f64,
    pub boxes: Vec<BoxReport>,
}

/// What [`evidence`] computes with.
#[derive(Debug, Clone, Default)]
pub struct EvidenceOptions {
    pub sinks: SinkRule,
    pub perception_z: f64,
    pub boxes: Vec<PixelBox>,
}

/// The evidence of a trace and its heads table (None without per-head arrays).
pub fn evidence(trace: &Trace, opts: &EvidenceOptions) -> Result<(Evidence, Option<Vec<HeadRow>>)> {
    let heads = heads_table(trace, opts.perception_z);
    let perception_heads = heads
        .iter()
        .flatten()
        .filter(|r| r.kind == HeadKind::Perception)
        .map(|r| [r.layer, r.head])
        .collect();
    let ev = Evidence {
        format: EVIDENCE_FORMAT.into(),
        format_version: EVIDENCE_VERSION,
        layers: trace.meta.layers.clone(),
        merged_grid: trace.meta.image.merged_grid,
        spread: spread_table(trace),
        sinks: sink_report(trace, &opts.sinks),
        perception_heads,
        perception_z: opts.perception_z,
        boxes: box_reports(trace, &opts.boxes)?,
    };
    Ok((ev, heads))
}

// ---------------------------------------------------------------------------------------------
// dependence.json

/// How the image is taken away in the ablated pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ablation {
    /// The image filled with its mean colour: same size, same grid, positions unchanged.
    Blank,
    /// The image tokens removed from the prompt; positions recomputed.
    Drop,
}

impl Ablation {
    pub fn name(self) -> &'static str {
        match self {
            Ablation::Blank => "blank",
            Ablation::Drop => "drop",
        }
    }
}

/// Means of the per-token measures over one phase's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DependenceMean {
    pub tokens: usize,
    pub kl: f64,
    pub delta_logp: f64,
}

/// Means over thinking tokens, answer tokens and all generated tokens (None: no such token).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DependenceSummary {
    pub thinking: Option<DependenceMean>,
    pub answer: Option<DependenceMean>,
    pub all: Option<DependenceMean>,
}

/// One ablation's measures, per generated token `s` (the prediction of `generated_ids[s]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependenceVariant {
    pub ablation: Ablation,
    /// The fill colour of a blank image (RGB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill_rgb: Option<[u8; 3]>,
    /// Prompt positions of the ablated prompt.
    pub prompt_tokens: usize,
    /// KL(p_with ‖ p_without) in nats, per step.
    pub kl: Vec<f64>,
    /// log p_with(token) − log p_without(token), per step.
    pub delta_logp: Vec<f64>,
    /// `[layers][steps]`: 1 − cos of layer l's output (`blocks.{l}.resid_post`) at the step's
    /// query position, with and without the image.
    pub resid_cosine_distance: Vec<Vec<f64>>,
    pub summary: DependenceSummary,
}

/// `dependence.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependence {
    pub format: String,
    pub format_version: u32,
    /// Generated tokens measured (all of the trace's).
    pub steps: usize,
    /// Phase of each step's predicted token (`thinking`, `answer`, or null).
    pub phases: Vec<Option<Phase>>,
    /// Decoder layers of `resid_cosine_distance` (every layer of the model).
    pub layers: Vec<usize>,
    pub variants: Vec<DependenceVariant>,
}

/// The means of `kl` and `delta_logp` over each phase of `phases`.
pub fn summarise_dependence(
    phases: &[Option<Phase>],
    kl: &[f64],
    delta_logp: &[f64],
) -> DependenceSummary {
    let mean = |keep: &dyn Fn(Option<Phase>) -> bool| {
        let idx: Vec<usize> = (0..kl.len()).filter(|&s| keep(phases[s])).collect();
        let n = idx.len();
        (n > 0).then(|| DependenceMean {
            tokens: n,
            kl: idx.iter().map(|&s| kl[s]).sum::<f64>() / n as f64,
            delta_logp: idx.iter().map(|&s| delta_logp[s]).sum::<f64>() / n as f64,
        })
    };
    DependenceSummary {
        thinking: mean(&|p| p == Some(Phase::Thinking)),
        answer: mean(&|p| p == Some(Phase::Answer)),
        all: mean(&|_| true),
    }
}

impl Dependence {
    /// Reads `DIR/dependence.json`; `None` when the trace has none.
    pub fn read(dir: &Path) -> Result<Option<Dependence>> {
        let path = dir.join(DEPENDENCE_JSON);
        if !path.is_file() {
            return Ok(None);
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let d: Dependence = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an image-dependence file", path.display()))?;
        if d.format != DEPENDENCE_FORMAT || d.format_version != EVIDENCE_VERSION {
            bail!(
                "{}: format {} version {} (this rhlens reads {DEPENDENCE_FORMAT} version {EVIDENCE_VERSION})",
                path.display(),
                d.format,
                d.format_version
            );
        }
        Ok(Some(d))
    }

    /// The variant of `ablation`, if measured.
    pub fn variant(&self, ablation: Ablation) -> Option<&DependenceVariant> {
        self.variants.iter().find(|v| v.ablation == ablation)
    }
}

/// Every ablation, in the order files and tables list them.
pub const ABLATIONS: [Ablation; 2] = [Ablation::Blank, Ablation::Drop];

/// A sweep's evidence, in the sweep folder: one row per setting (and sample).
pub const SWEEP_EVIDENCE_CSV: &str = "evidence_summary.csv";

/// One setting of a sweep: the sink-free visual share and the image dependence per phase.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepEvidenceRow {
    pub setting: String,
    pub value: f64,
    pub sample: Option<usize>,
    pub visual_share: f64,
    pub sink_free_visual_share: f64,
    pub sinks: usize,
    /// Mean normalised entropy over layers.
    pub entropy: Option<f64>,
    /// Mean share inside the first box over layers.
    pub box_mass: Option<f64>,
    pub dependence: Vec<(Ablation, DependenceSummary)>,
}

impl SweepEvidenceRow {
    /// Mean KL of `ablation` over thinking (`phase` 0) or answer (1) tokens.
    pub fn kl(&self, ablation: Ablation, phase: usize) -> Option<f64> {
        self.phase_mean(ablation, phase).map(|m| m.kl)
    }

    fn phase_mean(&self, ablation: Ablation, phase: usize) -> Option<DependenceMean> {
        let (_, s) = self.dependence.iter().find(|d| d.0 == ablation)?;
        [s.thinking, s.answer][phase.min(1)]
    }
}

/// The rows as CSV: fixed columns, then for each ablation measured in any row its KL and Δ log p
/// over thinking and answer tokens (empty where not measured).
pub fn sweep_evidence_csv(rows: &[SweepEvidenceRow]) -> String {
    let measured: Vec<Ablation> = ABLATIONS
        .into_iter()
        .filter(|a| rows.iter().any(|r| r.dependence.iter().any(|d| d.0 == *a)))
        .collect();
    let mut out = String::from(
        "setting,value,sample,visual_share,sink_free_visual_share,sinks,entropy,box_mass",
    );
    for a in &measured {
        for col in [
            "kl_thinking",
            "kl_answer",
            "delta_logp_thinking",
            "delta_logp_answer",
        ] {
            out.push_str(&format!(",{}_{col}", a.name()));
        }
    }
    out.push('\n');
    let cell = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{:.6},{:.6},{},{},{}",
            r.setting,
            r.value,
            r.sample.map(|s| s.to_string()).unwrap_or_default(),
            r.visual_share,
            r.sink_free_visual_share,
            r.sinks,
            cell(r.entropy),
            cell(r.box_mass)
        ));
        for a in &measured {
            let m = |p| r.phase_mean(*a, p);
            for v in [m(0).map(|m| m.kl), m(1).map(|m| m.kl)] {
                out.push_str(&format!(",{}", cell(v)));
            }
            for v in [m(0).map(|m| m.delta_logp), m(1).map(|m| m.delta_logp)] {
                out.push_str(&format!(",{}", cell(v)));
            }
        }
        out.push('\n');
    }
    out
}

/// Writes `value` as pretty JSON to `dir/name`, atomically.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(&dir.join(name), text.as_bytes())
        .with_context(|| format!("writing {}", dir.join(name).display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn a_sink_takes_its_share_in_more_than_half_of_the_layers() {
        // 40 tokens: the threshold is 20/40 = 0.5 of a layer's visual mass.
        let mut maps = Array2::<f32>::from_elem((3, 40), 0.25);
        maps[[0, 7]] = 39.0 * 0.25; // exactly half of layer 0's mass
        maps[[1, 7]] = 39.0 * 0.25;
        maps[[2, 3]] = 100.0; // one layer only: not a sink
        assert_eq!(find_sinks(&maps, &SinkRule::default()), vec![7]);
        // a stricter layer fraction drops it (2 of 3 layers is not more than 3/4)
        let strict = SinkRule {
            ratio: 20.0,
            layer_fraction: 0.75,
        };
        assert!(find_sinks(&maps, &strict).is_empty());
    }

    #[test]
    fn grids_too_small_for_the_ratio_have_no_sinks() {
        let maps = array![[1.0f32, 0.0, 0.0, 0.0]];
        assert!(find_sinks(&maps, &SinkRule::default()).is_empty());
        let loose = SinkRule {
            ratio: 2.0,
            layer_fraction: 0.5,
        };
        assert_eq!(find_sinks(&maps, &loose), vec![0]);
    }

    /// A trace of 3 generated tokens (2 reasoning, 1 answer) after a 4-position prompt, over a
    /// `rows × cols` grid on a `28·cols × 28·rows` image, with the given maps.
    fn trace(rows: usize, cols: usize, maps: Array2<f32>, visual: [f32; 3]) -> Trace {
        use crate::formats::roles::RoleSpan;
        use crate::formats::trace::{ImageInfo, TraceArrays};
        let layers = maps.nrows();
        let mut role_attention = ndarray::Array3::<f32>::zeros((3, layers, 5));
        for s in 0..3 {
            for l in 0..layers {
                role_attention[[s, l, 1]] = visual[s];
            }
        }
        let meta = TraceMeta {
            layers: (0..layers).collect(),
            prompt_tokens: 4,
            steps: 3,
            generated_ids: vec![1, 2, 3],
            spans: vec![
                RoleSpan::new(Role::Reasoning, 4, 6),
                RoleSpan::new(Role::Answer, 6, 7),
            ],
            image: ImageInfo {
                width: 28 * cols as u32,
                height: 28 * rows as u32,
                merged_grid: [rows, cols],
                ..Default::default()
            },
            ..Default::default()
        };
        let arrays = TraceArrays {
            role_attention,
            role_attention_heads: None,
            visual_attention: maps,
            visual_attention_windows: None,
            visual_attention_steps: None,
            visual_attention_heads: None,
            vision_attention: None,
            prompt_role_attention: None,
        };
        Trace {
            dir: std::path::PathBuf::new(),
            meta,
            arrays,
        }
    }

    #[test]
    fn phases_follow_the_query_and_the_predicted_token() {
        let t = trace(1, 2, Array2::zeros((1, 2)), [0.0; 3]);
        let q: Vec<_> = (0..3).map(|s| query_phase(&t.meta, s)).collect();
        assert_eq!(
            q,
            [
                Some(Phase::Prompt),
                Some(Phase::Thinking),
                Some(Phase::Thinking)
            ]
        );
        let p: Vec<_> = (0..3).map(|s| token_phase(&t.meta, s)).collect();
        assert_eq!(
            p,
            [
                Some(Phase::Thinking),
                Some(Phase::Thinking),
                Some(Phase::Answer)
            ]
        );
    }

    #[test]
    fn sink_free_share_removes_the_sinks_mass_from_the_mean_visual_share() {
        // 40 tokens, token 7 holds 0.25625 of a layer's 0.5 visual mass (over half of it);
        // the visual share per step is 0.25, 0.75, 0.5: mean 0.5.
        let mut maps = Array2::<f32>::from_elem((2, 40), 0.00625);
        maps[[0, 7]] = 0.25625;
        maps[[1, 7]] = 0.25625;
        let t = trace(5, 8, maps, [0.25, 0.75, 0.5]);
        let r = sink_report(&t, &SinkRule::default());
        assert_eq!(r.tokens, vec![7]);
        assert!((r.visual_share - 0.5).abs() < 1e-7);
        assert!((r.sink_free_visual_share - 0.24375).abs() < 1e-7);
        assert_eq!(r.sink_free_share_by_layer.len(), 2);
    }

    #[test]
    fn heads_split_by_thinking_share_and_rank() {
        let mut t = trace(1, 2, Array2::zeros((1, 2)), [0.0; 3]);
        // [steps, layers, heads, roles]: head 0 looks at the image 0.5, 0.25, 0.75 of the time
        // at steps 0, 1, 2 (thinking: steps 1 and 2, mean 0.5); head 1 never does.
        let mut h = Array4::<f32>::zeros((3, 1, 2, 5));
        for (s, v) in [0.5f32, 0.25, 0.75].into_iter().enumerate() {
            h[[s, 0, 0, 1]] = v;
            h[[s, 0, 0, 3]] = 1.0 - v;
            h[[s, 0, 1, 0]] = 1.0;
        }
        t.arrays.role_attention_heads = Some(h);
        let rows = heads_table(&t, 1.0).unwrap();
        // shares 0.5 and 0: mean 0.25, sd 0.25, so head 0 sits exactly at mean + 1 sd
        assert_eq!((rows[0].head, rows[0].rank), (0, 1));
        assert_eq!(rows[0].kind, HeadKind::Perception);
        assert_eq!(rows[0].prompt, Some(0.5));
        assert_eq!(rows[0].thinking, Some(0.5));
        assert_eq!(rows[0].answer, None);
        assert_eq!((rows[1].head, rows[1].kind), (1, HeadKind::Reasoning));
        assert_eq!(rows[1].thinking, Some(0.0));
        assert!(heads_csv(&rows).starts_with(
            "rank,layer,head,prompt,thinking,answer,kind\n1,0,0,0.500000,0.500000,,perception\n"
        ));
    }

    #[test]
    fn box_reports_per_layer_and_refusals() {
        // 2 × 2 grid on a 56 × 56 image; layer 0 has half its mass top-left, layer 1 none there.
        let maps = array![[0.5f32, 0.25, 0.125, 0.125], [0.0, 1.0, 0.0, 0.0]];
        let t = trace(2, 2, maps, [0.0; 3]);
        let top_left = PixelBox {
            x0: 0.0,
            y0: 0.0,
            x1: 28.0,
            y1: 28.0,
        };
        let r = box_reports(&t, &[top_left]).unwrap();
        assert_eq!(r[0].by_layer, vec![Some(0.5), Some(0.0)]);
        assert_eq!(r[0].mean, Some(0.25));
        assert_eq!(r[0].area_share, 0.25);
        let outside = PixelBox {
            x0: 60.0,
            y0: 0.0,
            x1: 70.0,
            y1: 5.0,
        };
        assert!(box_reports(&t, &[outside]).is_err());
    }

    #[test]
    fn bbox_fields_are_one_box_or_a_list() {
        use serde_json::json;
        let one = parse_bboxes(&json!([1, 2, 3.5, 4])).unwrap();
        assert_eq!(
            one,
            vec![PixelBox {
                x0: 1.0,
                y0: 2.0,
                x1: 3.5,
                y1: 4.0
            }]
        );
        assert_eq!(
            parse_bboxes(&json!([[0, 0, 1, 1], [2, 2, 3, 3]]))
                .unwrap()
                .len(),
            2
        );
        assert!(parse_bboxes(&json!([3, 0, 1, 1])).is_err());
        assert!(parse_bboxes(&json!("0,0,1,1")).is_err());
        assert!(parse_bboxes(&json!([[0, 0, 1]])).is_err());
    }

    #[test]
    fn dependence_means_split_by_phase() {
        let phases = [
            Some(Phase::Thinking),
            Some(Phase::Thinking),
            Some(Phase::Answer),
            None,
        ];
        let s = summarise_dependence(&phases, &[1.0, 3.0, 0.5, 7.5], &[0.0, 1.0, -1.0, 4.0]);
        assert_eq!(s.thinking.unwrap().kl, 2.0);
        assert_eq!(s.thinking.unwrap().delta_logp, 0.5);
        assert_eq!(s.answer.unwrap().tokens, 1);
        assert_eq!(s.all.unwrap().kl, 3.0);
        let none = summarise_dependence(&[], &[], &[]);
        assert!(none.all.is_none() && none.thinking.is_none());
    }
}
