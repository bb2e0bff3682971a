//! Traces as figure sources: a [`TraceView`] (one trace with its label, selected layers and
//! photograph), [`Traces`] (traces drawn together; one trace is a comparison of one) and the
//! small reductions and pieces the trace and sweep figures share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use image::RgbImage;
use ndarray::{Array2, ArrayView2};
use plotters::style::RGBColor;

use super::charts::{Series, StackFigure, StackPanel, VLine};
use super::draw::Swatch;
use super::maps::{MapFigure, MapGroup};
use super::style::{ellipsize, role_color, role_label, role_order, MUTED};
use super::RenderOptions;
use crate::formats::shares::{self, LayerGroup};
use crate::formats::trace::{EventKind, Trace, TraceMeta};
use crate::formats::Role;

/// Colorbar label of every visual-attention map.
const ATTN_LABEL: &str = "attention (head mean)";

/// A trace with what the figures need: its label, the selected layer positions and the photo.
pub struct TraceView<'a> {
    pub trace: &'a Trace,
    pub label: String,
    /// Positions (along the arrays' layer axis) of the selected layers.
    pub positions: Vec<usize>,
    pub photo: Option<Arc<RgbImage>>,
}

impl<'a> TraceView<'a> {
    /// Resolves the layer selection and loads the photograph (a missing or mismatched image is
    /// a note, not an error: the maps are then drawn without it).
    pub fn new(
        trace: &'a Trace,
        label: &str,
        opts: &RenderOptions,
        notes: &mut Vec<String>,
    ) -> Result<TraceView<'a>> {
        let positions = match &opts.layers {
            Some(sel) => sel.positions(&trace.meta, &trace.dir)?,
            None => (0..trace.meta.layers.len()).collect(),
        };
        let photo = load_photo(trace, opts.image.as_deref(), notes);
        Ok(TraceView {
            trace,
            label: label.to_string(),
            positions,
            photo,
        })
    }

    pub fn meta(&self) -> &TraceMeta {
        &self.trace.meta
    }

    /// Model layer index at array position `p`.
    pub fn layer(&self, p: usize) -> usize {
        self.meta().layers[p]
    }

    pub fn grid(&self) -> (usize, usize) {
        let [r, c] = self.meta().image.merged_grid;
        (r, c)
    }

    /// Model and run description lines for subtitles.
    pub fn subtitles(&self) -> Vec<String> {
        let m = self.meta();
        let name = model_name(&m.model);
        let mut first = format!(
            "{name} · {} · {} on {}",
            m.model.model_type, m.model.dtype, m.model.device
        );
        if m.model.random_weights {
            first.push_str(" · RANDOM WEIGHTS (demo checkpoint, not a trained model)");
        }
        let mut second = format!("Q: \"{}\"", ellipsize(m.prompt.trim(), 90));
        if m.steps > 0 {
            second.push_str(&format!(
                " · {} thinking tokens · answer: \"{}\" · stop: {}",
                m.think_tokens,
                ellipsize(m.answer.trim(), 40),
                m.stop_reason
            ));
        }
        vec![first, second]
    }

    pub fn layer_span(&self, positions: &[usize]) -> String {
        layer_list(&positions.iter().map(|&p| self.layer(p)).collect::<Vec<_>>())
    }

    /// Model layer indices of the selected positions, as x coordinates.
    pub fn layers_x(&self) -> Vec<f64> {
        self.positions
            .iter()
            .map(|&p| self.layer(p) as f64)
            .collect()
    }

    /// How the maps of this trace were averaged over steps.
    pub fn steps_note(&self) -> String {
        if self.meta().steps > 0 {
            format!("mean over {} generated steps", self.meta().steps)
        } else {
            "prompt only".to_string()
        }
    }

    /// Depth groups of the selected positions ([`shares::layer_groups`]).
    pub fn layer_groups(&self) -> Vec<(LayerGroup, Vec<usize>)> {
        shares::layer_groups(self.positions.len())
            .into_iter()
            .map(|(g, range)| (g, self.positions[range].to_vec()))
            .collect()
    }

    /// Per-layer role shares during generation `[positions, roles]`.
    pub fn generation_shares(&self, positions: &[usize]) -> Array2<f64> {
        shares::generation_shares(&self.trace.arrays.role_attention, positions)
    }

    /// Per-layer role shares of the last prompt token `[positions, roles]`, when recorded.
    pub fn prompt_shares(&self) -> Option<Array2<f64>> {
        let mass = self.trace.arrays.prompt_role_attention.as_ref()?;
        Some(shares::layer_shares(mass, &self.positions))
    }

    /// Share of role index `role` along the chain over depth group `g` (the trace's last group
    /// when it has fewer), as a rolling mean; with that group's layer positions.
    pub fn shift_curve(&self, role: usize, g: usize, window: Option<usize>) -> ShiftCurve {
        let mut groups = self.layer_groups();
        let (_, positions) = groups.swap_remove(g.min(groups.len() - 1));
        let shares = shares::step_role_shares(&self.trace.arrays.role_attention, &positions);
        let smooth = rolling_mean(
            &shares.column(role).to_vec(),
            auto_window(self.meta().steps, window),
        );
        ShiftCurve {
            positions,
            points: smooth
                .iter()
                .enumerate()
                .map(|(s, &y)| (s as f64, y))
                .collect(),
        }
    }

    /// Steps where thinking ended (closed by the model or forced).
    pub fn think_ends(&self) -> impl Iterator<Item = f64> + '_ {
        self.meta()
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ThinkEnd | EventKind::ForcedThinkEnd))
            .map(|e| e.step as f64)
    }
}

/// One role's share along the chain for one depth group.
pub struct ShiftCurve {
    /// Layer positions of the group.
    pub positions: Vec<usize>,
    /// (step, share) points.
    pub points: Vec<(f64, f64)>,
}

/// The fewest depth groups among `views` (so that every view has each panel's group).
pub fn common_group_count<'v, 'a: 'v>(views: impl Iterator<Item = &'v TraceView<'a>>) -> usize {
    views.map(|v| v.layer_groups().len()).min().unwrap_or(1)
}

/// Traces drawn together: one trace (its own figures) or several (compared side by side).
pub struct Traces<'a> {
    pub views: &'a [TraceView<'a>],
}

impl<'a> Traces<'a> {
    /// The one trace of a comparison of one.
    pub fn single(&self) -> Option<&'a TraceView<'a>> {
        match self.views {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The first trace (the only one for the figures of one trace).
    pub fn first(&self) -> &'a TraceView<'a> {
        &self.views[0]
    }

    /// "A vs B vs C" (the label alone for one trace).
    pub fn who(&self) -> String {
        let labels: Vec<&str> = self.views.iter().map(|v| v.label.as_str()).collect();
        labels.join(" vs ")
    }

    /// Subtitles: the trace's run description, or one line per trace when compared.
    pub fn subtitles(&self) -> Vec<String> {
        match self.single() {
            Some(v) => v.subtitles(),
            None => self
                .views
                .iter()
                .map(|v| format!("{}: {}", v.label, v.subtitles()[0]))
                .collect(),
        }
    }

    /// File stem of a figure: `base` for one trace, `compare_base` for several.
    pub fn stem(&self, base: &str) -> String {
        match self.single() {
            Some(_) => base.to_string(),
            None => format!("compare_{base}"),
        }
    }
}

/// "3", "0–27" or "0, 4, 9" for a sorted list of layer indices.
pub fn layer_list(layers: &[usize]) -> String {
    match layers {
        [] => String::new(),
        [one] => one.to_string(),
        _ if layers.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("{}–{}", layers[0], layers[layers.len() - 1])
        }
        _ if layers.len() <= 6 => layers
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        _ => format!(
            "{} layers {}…{}",
            layers.len(),
            layers[0],
            layers[layers.len() - 1]
        ),
    }
}

/// The end of the note about a trace's image that cannot be found (the caller may say how to
/// point at it).
pub const IMAGE_NOT_FOUND: &str = "not found; maps are drawn without the photograph";

/// How legends and subtitles name the model of a trace: its name, or for traces written before
/// names were recorded, the last part of the checkpoint path.
pub fn model_name(model: &crate::formats::trace::ModelInfo) -> String {
    if !model.name.is_empty() {
        return model.name.clone();
    }
    Path::new(&model.path)
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| model.path.clone())
}

fn load_photo(
    trace: &Trace,
    override_path: Option<&Path>,
    notes: &mut Vec<String>,
) -> Option<Arc<RgbImage>> {
    let meta = &trace.meta;
    let candidates: Vec<PathBuf> = match override_path {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let p = PathBuf::from(&meta.image.path);
            // relative to the trace first: that works from any working directory
            let mut c: Vec<PathBuf> = meta
                .image
                .relative_path
                .iter()
                .map(|r| trace.dir.join(r))
                .collect();
            c.push(p.clone());
            if p.is_relative() {
                c.push(trace.dir.join(&p));
            }
            if let Some(name) = p.file_name() {
                c.push(trace.dir.join(name));
            }
            c
        }
    };
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        notes.push(format!(
            "{}: image {:?} {IMAGE_NOT_FOUND}",
            trace.dir.display(),
            meta.image.path
        ));
        return None;
    };
    let img = match image::open(path) {
        Ok(i) => i.to_rgb8(),
        Err(e) => {
            notes.push(format!(
                "{}: cannot read image {}: {e}; maps are drawn without it",
                trace.dir.display(),
                path.display()
            ));
            return None;
        }
    };
    let want = meta.image.width as f64 / meta.image.height.max(1) as f64;
    let got = img.width() as f64 / img.height().max(1) as f64;
    if (got / want - 1.0).abs() > 0.01 {
        notes.push(format!(
            "{}: image {} is {}x{} but the trace was made from a {}x{} image; maps are drawn without it",
            trace.dir.display(),
            path.display(),
            img.width(),
            img.height(),
            meta.image.width,
            meta.image.height
        ));
        return None;
    }
    Some(Arc::new(img))
}

/// Mean over the given layer positions of a `[layers, n]` array.
pub fn mean_rows(a: ArrayView2<f32>, positions: &[usize]) -> Vec<f32> {
    let n = a.ncols();
    let mut out = vec![0f64; n];
    for &p in positions {
        for (o, v) in out.iter_mut().zip(a.row(p).iter()) {
            *o += *v as f64;
        }
    }
    let k = positions.len().max(1) as f64;
    out.into_iter().map(|v| (v / k) as f32).collect()
}

/// Centred rolling mean over `window` points (shorter at the ends).
pub fn rolling_mean(v: &[f64], window: usize) -> Vec<f64> {
    let w = window.max(1);
    let before = (w - 1) / 2;
    let after = w - 1 - before;
    (0..v.len())
        .map(|i| {
            let a = i.saturating_sub(before);
            let b = (i + after + 1).min(v.len());
            v[a..b].iter().sum::<f64>() / (b - a) as f64
        })
        .collect()
}

/// The rolling window for `steps` steps: the user's, else about 1/40 of the run.
pub fn auto_window(steps: usize, user: Option<usize>) -> usize {
    user.unwrap_or(((steps as f64 / 40.0).round() as usize).clamp(1, 64))
        .max(1)
}

fn event_style(kind: EventKind) -> (RGBColor, Swatch) {
    match kind {
        EventKind::ThinkStart => (MUTED, Swatch::Dotted),
        EventKind::ThinkEnd => (RGBColor(0, 0, 0), Swatch::Dashed),
        EventKind::ForcedThinkEnd => (RGBColor(0, 0, 0), Swatch::Line),
        EventKind::Wait => (RGBColor(0xCC, 0x79, 0xA7), Swatch::Dotted),
        EventKind::AnswerStart => (MUTED, Swatch::Dashed),
    }
}

pub fn event_lines(meta: &TraceMeta) -> Vec<VLine> {
    meta.events
        .iter()
        .filter(|e| !(e.kind == EventKind::ThinkStart && e.step == 0))
        .map(|e| {
            let (color, swatch) = event_style(e.kind);
            VLine {
                x: e.step as f64,
                color,
                swatch,
                label: e.kind.describe().to_string(),
            }
        })
        .collect()
}

pub fn y_top(series: &[Series]) -> (f64, f64) {
    let m = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    (0.0, if m > 0.0 { (m * 1.12).min(1.0) } else { 1.0 })
}

pub fn map_figure(
    title: String,
    subtitles: Vec<String>,
    groups: Vec<MapGroup>,
    opts: &RenderOptions,
    panel_width: f64,
) -> MapFigure {
    MapFigure {
        title,
        subtitles,
        groups,
        cols: None,
        colormap: opts.colormap,
        upsample: opts.upsample,
        alpha: opts.alpha,
        scale: opts.color_scale,
        colorbar_label: ATTN_LABEL.into(),
        panel_width,
    }
}

pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub fn stack_panel(title: String, meta: &TraceMeta, x: &[f64], shares: &Array2<f64>) -> StackPanel {
    let stacks = role_order(&meta.roles)
        .into_iter()
        .filter(|&r| shares.column(r).iter().any(|&v| v > 0.0))
        .map(|r| {
            (
                role_label(&meta.roles[r]),
                role_color(Role::from_name(&meta.roles[r])),
                shares.column(r).to_vec(),
            )
        })
        .collect();
    StackPanel {
        title,
        x_label: "Layer".into(),
        y_label: "Share of attention".into(),
        x: x.to_vec(),
        stacks,
    }
}

pub fn stack_figure(title: String, subtitles: Vec<String>, panels: Vec<StackPanel>) -> StackFigure {
    let n = panels.len().max(1) as f64;
    StackFigure {
        title,
        subtitles,
        panels,
        panel_size: ((900.0 / n).max(520.0), 440.0),
    }
}
