//! Figures, drawn from saved files only (traces, sweep summaries, metrics files); nothing here
//! loads a model, so every figure can be redrawn later from what a run saved.
//!
//! Entry points: [`render_traces`] (each trace's figures, plus comparisons when several are
//! given), [`render_sweep`] and [`render_results`]. Each returns the files written and notes
//! for the user (for example an image that could not be found).
//!
//! Every figure is a named builder listed in its source's table:
//! [`trace_figures::TRACE_FIGURES`], [`trace_figures::COMPARISON_FIGURES`],
//! [`sweep::SWEEP_FIGURES`] and [`results::RESULTS_FIGURES`]; [`figure::draw_table`] saves them.
//!
//! Layout of the output directory:
//! - `LABEL/…` for each trace: `layers_grid`, `layers_grid_overlay`, `layer_ranges`, `windows`,
//!   `vision_blocks`, `allocation_prompt`, `allocation_generation`, `visual_share_by_layer`,
//!   `shift_steps`, `heads_visual_share`, and `maps/` (`mean`, `layer_NN`, `heads_layer_NN`);
//! - `compare_*` when several traces are given;
//! - `sweep_*` and one directory per setting for a sweep;
//! - `rhauc`, `accuracy_vs_length`, `reasoning_vs_perception` for metrics files.
//! - `aggregate.json` and `aggregate_*`, `decay_map` (and `decay_map_settings` by setting) for
//!   many traces ([`render_aggregate`]);
//! - `allocation_layers`, `allocation_layers_bars` for `layers` outputs ([`render_allocations`]).
//!
//! With `Canvas::paper`, titles and subtitles are dropped, figures are sized for a two-column
//! paper and a PDF is written beside each PNG ([`pdf`]).

pub mod aggregate;
pub mod aggregate_figures;
pub mod charts;
pub mod colormap;
pub mod draw;
pub mod evidence;
pub mod figure;
pub mod maps;
pub mod output;
pub mod overlay;
pub mod pchip;
pub mod pdf;
pub mod results;
pub mod stats;
pub mod style;
pub mod sweep;
pub mod trace_figures;
pub mod traces;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::formats::trace::{Trace, TraceMeta};
pub use colormap::Colormap;
use figure::draw_table;
pub use maps::ColorScale;
pub use output::Canvas;
pub use overlay::Upsample;
pub use results::{rh_auc, LengthAxis, MetricsRow, RhAucUndefined};
use trace_figures::{COMPARISON_FIGURES, TRACE_FIGURES};
use traces::{TraceView, Traces};

/// A set of decoder layers, e.g. `0,4,8-12` (ranges inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSelection(pub Vec<usize>);

impl FromStr for LayerSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("invalid layer selection {part:?} (expected e.g. 0,4,8-12)");
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: usize = a.trim().parse().map_err(|_| bad())?;
                    let b: usize = b.trim().parse().map_err(|_| bad())?;
                    if b < a {
                        return Err(bad());
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(part.parse::<usize>().map_err(|_| bad())?);
                }
            }
        }
        if set.is_empty() {
            return Err("empty layer selection".into());
        }
        Ok(LayerSelection(set.into_iter().collect()))
    }
}

impl fmt::Display for LayerSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&traces::layer_list(&self.0))
    }
}

impl LayerSelection {
    /// Positions along a trace's layer axis; every selected layer must have been captured.
    pub fn positions(&self, meta: &TraceMeta, dir: &Path) -> Result<Vec<usize>> {
        self.0
            .iter()
            .map(|l| {
                meta.layers.iter().position(|x| x == l).with_context(|| {
                    format!(
                        "{}: layer {l} was not captured (captured: {})",
                        dir.display(),
                        traces::layer_list(&meta.layers)
                    )
                })
            })
            .collect()
    }
}

/// Everything that changes how figures look.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Size, scale and formats.
    pub canvas: Canvas,
    /// Colormap of heatmaps (and of ordered series such as sweep settings).
    pub colormap: Colormap,
    /// Opacity of heatmaps over the photograph, 0–1.
    pub alpha: f64,
    /// Spreading of the token grid over image pixels.
    pub upsample: Upsample,
    /// Shared colour scale across panels, or one per panel.
    pub color_scale: ColorScale,
    /// Layers to draw (None: every captured layer).
    pub layers: Option<LayerSelection>,
    /// Rolling-mean window in steps for curves along the chain (None: about steps/40).
    pub window: Option<usize>,
    /// x axis of accuracy-vs-length.
    pub length_axis: LengthAxis,
    /// Image to draw under the maps instead of the one named in the trace.
    pub image: Option<PathBuf>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            canvas: Canvas::default(),
            colormap: Colormap::Viridis,
            alpha: 0.5,
            upsample: Upsample::Smooth,
            color_scale: ColorScale::Shared,
            layers: None,
            window: None,
            length_axis: LengthAxis::Auto,
            image: None,
        }
    }
}

impl RenderOptions {
    fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            bail!("alpha must lie in 0–1, got {}", self.alpha);
        }
        if !(self.canvas.scale > 0.0 && self.canvas.scale <= 16.0) {
            bail!("scale must lie in (0, 16], got {}", self.canvas.scale);
        }
        if self.window == Some(0) {
            bail!("the rolling window must be at least one step");
        }
        for (name, v) in [("width", self.canvas.width), ("height", self.canvas.height)] {
            if let Some(v) = v {
                if !(64..=20000).contains(&v) {
                    bail!("{name} must lie in 64–20000 pixels, got {v}");
                }
            }
        }
        Ok(())
    }
}

/// Files written and notes for the user.
#[derive(Debug, Default, Clone)]
pub struct Rendered {
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

impl Rendered {
    /// Drops repeated notes (several traces of a sweep share one image), keeping the order.
    fn dedup_notes(mut self) -> Rendered {
        let mut seen = BTreeSet::new();
        self.notes.retain(|n| seen.insert(n.clone()));
        self
    }
}

/// Names of traces in titles, legends and directory names: `given` (one per trace), else the
/// model names when the traces come from different models (base and reasoning side by side),
/// else the trace directory names; repeats get `-2`, `-3`.
pub fn trace_labels(traces: &[(PathBuf, Trace)], given: &[String]) -> Result<Vec<String>> {
    if !given.is_empty() && given.len() != traces.len() {
        bail!(
            "{} labels given for {} traces; give one label per trace",
            given.len(),
            traces.len()
        );
    }
    let models: BTreeSet<String> = traces
        .iter()
        .map(|(_, t)| traces::model_name(&t.meta.model))
        .collect();
    let by_model = models.len() > 1;
    let mut out: Vec<String> = Vec::new();
    for (i, (d, t)) in traces.iter().enumerate() {
        let base = match given.get(i) {
            Some(l) => l.clone(),
            None if by_model => traces::model_name(&t.meta.model),
            None => d
                .canonicalize()
                .unwrap_or_else(|_| d.clone())
                .file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| format!("trace{}", i + 1)),
        };
        let mut label = base.clone();
        let mut k = 2;
        while out.contains(&label) {
            label = format!("{base}-{k}");
            k += 1;
        }
        out.push(label);
    }
    Ok(out)
}

/// Each trace's figures into `out/LABEL/`, and comparison figures into `out/` when there are
/// several traces.
pub fn render_traces(
    traces: &[(String, Trace)],
    out: &Path,
    opts: &RenderOptions,
) -> Result<Rendered> {
    opts.check()?;
    let mut done = Rendered::default();
    let mut views = Vec::new();
    for (label, t) in traces {
        views.push(TraceView::new(t, label, opts, &mut done.notes)?);
    }
    draw_each_trace(&views, out, opts, &mut done)?;
    if views.len() > 1 {
        let all = Traces { views: &views };
        draw_table(COMPARISON_FIGURES, &all, out, opts, &mut done)?;
    }
    Ok(done.dedup_notes())
}

/// Each trace's own figures (a comparison of one) into `out/LABEL/`.
fn draw_each_trace(
    views: &[TraceView],
    out: &Path,
    opts: &RenderOptions,
    done: &mut Rendered,
) -> Result<()> {
    for v in views {
        let one = Traces {
            views: std::slice::from_ref(v),
        };
        let dir = out.join(sweep::slug(&v.label));
        draw_table(TRACE_FIGURES, &one, &dir, opts, done)?;
    }
    Ok(())
}

/// A sweep's figures into `out/` and each setting's trace figures into `out/SETTING/`.
pub fn render_sweep(
    dir: &Path,
    out: &Path,
    opts: &RenderOptions,
    allow_partial: bool,
) -> Result<Rendered> {
    opts.check()?;
    let run = sweep::SweepRun::read(dir, allow_partial)?;
    let mut done = Rendered {
        notes: run.skipped.clone(),
        ..Default::default()
    };
    let mut views = Vec::new();
    for (label, t) in run.row_labels().iter().zip(&run.traces) {
        views.push(TraceView::new(t, label, opts, &mut done.notes)?);
    }
    let figures = sweep::SweepFigures::new(&run, &views, opts);
    draw_table(sweep::SWEEP_FIGURES, &figures, out, opts, &mut done)?;
    draw_each_trace(&views, out, opts, &mut done)?;
    Ok(done.dedup_notes())
}

/// Figures from metrics rows (several files concatenated) into `out/`.
pub fn render_results(rows: &[MetricsRow], out: &Path, opts: &RenderOptions) -> Result<Rendered> {
    opts.check()?;
    if rows.is_empty() {
        bail!("the metrics files hold no rows");
    }
    let groups = results::group_metrics(rows);
    let mut done = Rendered::default();
    draw_table(results::RESULTS_FIGURES, &groups[..], out, opts, &mut done)?;
    for g in &groups {
        if let Err(why) = rh_auc(&results::group_points(g)) {
            done.notes
                .push(format!("{}: RH-AUC undefined: {why}", g.label));
        }
    }
    Ok(done)
}

/// Figures of an aggregate summary (`aggregate.json`) into `out/`.
pub fn render_aggregate(
    summary: &aggregate::AggregateSummary,
    out: &Path,
    opts: &RenderOptions,
) -> Result<Rendered> {
    opts.check()?;
    let mut done = Rendered {
        notes: summary
            .skipped
            .iter()
            .map(|s| format!("left out: {s}"))
            .collect(),
        ..Default::default()
    };
    draw_table(
        aggregate_figures::AGGREGATE_FIGURES,
        summary,
        out,
        opts,
        &mut done,
    )?;
    Ok(done)
}

/// The layer-allocation figures of `layers` outputs (label, allocation) into `out/`.
pub fn render_allocations(
    models: &[(String, aggregate_figures::Allocation)],
    out: &Path,
    opts: &RenderOptions,
) -> Result<Rendered> {
    opts.check()?;
    let mut done = Rendered::default();
    draw_table(
        aggregate_figures::ALLOCATION_FIGURES,
        models,
        out,
        opts,
        &mut done,
    )?;
    Ok(done)
}
