//! Figures of one trace, of traces compared side by side, and of a sweep's traces.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use image::RgbImage;
use ndarray::{Array2, ArrayView2};
use plotters::style::RGBColor;

use super::charts::{
    ChartFigure, ChartPanel, MatrixFigure, Series, SeriesKind, StackFigure, StackPanel, VLine,
};
use super::draw::{LegendEntry, Swatch};
use super::maps::{MapFigure, MapGroup, MapPanel};
use super::output::save;
use super::style::{ellipsize, role_color, role_label, role_order, series_color, MUTED};
use super::{RenderOptions, Rendered};
use crate::formats::trace::{normalise_rows, EventKind, Trace, TraceMeta};
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

    fn meta(&self) -> &TraceMeta {
        &self.trace.meta
    }

    /// Model layer index at array position `p`.
    fn layer(&self, p: usize) -> usize {
        self.meta().layers[p]
    }

    fn grid(&self) -> (usize, usize) {
        let [r, c] = self.meta().image.merged_grid;
        (r, c)
    }

    /// Model and run description lines for subtitles.
    pub fn subtitles(&self) -> Vec<String> {
        let m = self.meta();
        let name = Path::new(&m.model.path)
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| m.model.path.clone());
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

    fn layer_span(&self, positions: &[usize]) -> String {
        layer_list(&positions.iter().map(|&p| self.layer(p)).collect::<Vec<_>>())
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
            let mut c = vec![p.clone()];
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
            "{}: image {:?} not found; maps are drawn without the photograph (pass --image)",
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

/// Early / middle / late thirds of the selected positions (fewer groups for fewer layers).
pub fn layer_groups(positions: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
    let n = positions.len();
    if n < 3 {
        return vec![("selected", positions.to_vec())];
    }
    let a = n.div_ceil(3);
    let b = a + (n - a).div_ceil(2);
    vec![
        ("early", positions[..a].to_vec()),
        ("middle", positions[a..b].to_vec()),
        ("late", positions[b..].to_vec()),
    ]
}

/// Per-step role shares averaged over the given layers: `[steps, roles]`, each layer's row
/// renormalised to sum to one before averaging.
pub fn step_role_shares(trace: &Trace, positions: &[usize]) -> Array2<f64> {
    let ra = &trace.arrays.role_attention;
    let (steps, _, roles) = ra.dim();
    let mut out = Array2::<f64>::zeros((steps, roles));
    for s in 0..steps {
        for &p in positions {
            let total: f64 = (0..roles).map(|r| ra[[s, p, r]] as f64).sum();
            if total > 0.0 {
                for r in 0..roles {
                    out[[s, r]] += ra[[s, p, r]] as f64 / total;
                }
            }
        }
    }
    out.mapv_inplace(|v| v / positions.len().max(1) as f64);
    out
}

/// Per-layer role shares: generation (mean over steps) `[positions, roles]`, renormalised.
pub fn generation_shares(trace: &Trace, positions: &[usize]) -> Array2<f64> {
    let ra = &trace.arrays.role_attention;
    let (steps, _, roles) = ra.dim();
    let mut out = Array2::<f64>::zeros((positions.len(), roles));
    for (i, &p) in positions.iter().enumerate() {
        for s in 0..steps {
            for r in 0..roles {
                out[[i, r]] += ra[[s, p, r]] as f64;
            }
        }
    }
    normalise_rows(&mut out);
    out
}

/// Per-layer role shares of the last prompt token `[positions, roles]`, renormalised.
pub fn prompt_shares(trace: &Trace, positions: &[usize]) -> Option<Array2<f64>> {
    let pa = trace.arrays.prompt_role_attention.as_ref()?;
    let roles = pa.ncols();
    let mut out = Array2::<f64>::zeros((positions.len(), roles));
    for (i, &p) in positions.iter().enumerate() {
        for r in 0..roles {
            out[[i, r]] = pa[[p, r]] as f64;
        }
    }
    normalise_rows(&mut out);
    Some(out)
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

fn event_lines(meta: &TraceMeta) -> Vec<VLine> {
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

/// Roles drawn in shift curves: visual, instruction, reasoning, answer (those present with mass).
fn shift_roles(meta: &TraceMeta, shares: &Array2<f64>) -> Vec<usize> {
    ["visual", "instruction", "reasoning", "answer"]
        .iter()
        .filter_map(|r| meta.role_index_by_name(r))
        .filter(|&r| shares.column(r).iter().any(|&v| v > 0.0))
        .collect()
}

fn y_top(series: &[Series]) -> (f64, f64) {
    let m = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    (0.0, if m > 0.0 { (m * 1.12).min(1.0) } else { 1.0 })
}

fn map_figure(
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

/// Every figure one trace allows, into `out` (the trace's own directory of figures).
pub fn render_one(
    view: &TraceView,
    out: &Path,
    opts: &RenderOptions,
    done: &mut Rendered,
) -> Result<()> {
    let meta = view.meta();
    let arrays = &view.trace.arrays;
    let (rows, cols) = view.grid();
    let subs = view.subtitles();
    let canvas = &opts.canvas;
    let steps_note = if meta.steps > 0 {
        format!("mean over {} generated steps", meta.steps)
    } else {
        "prompt only".to_string()
    };
    let layer_panels = |photo: bool| -> Vec<MapGroup> {
        vec![MapGroup {
            heading: None,
            panels: view
                .positions
                .iter()
                .map(|&p| MapPanel {
                    title: format!("Layer {}", view.layer(p)),
                    values: arrays.visual_attention.row(p).to_vec(),
                    rows,
                    cols,
                })
                .collect(),
            photo: if photo { view.photo.clone() } else { None },
        }]
    };
    // 2. every layer's map in one figure
    let fig = map_figure(
        format!("Visual attention per layer — {}", view.label),
        subs.clone(),
        layer_panels(false),
        opts,
        170.0,
    );
    done.files
        .extend(save(&fig, &out.join("layers_grid"), canvas)?);
    if view.photo.is_some() {
        let fig = map_figure(
            format!("Visual attention per layer on the image — {}", view.label),
            subs.clone(),
            layer_panels(true),
            opts,
            200.0,
        );
        done.files
            .extend(save(&fig, &out.join("layers_grid_overlay"), canvas)?);
    }
    // 1. single maps: mean of the selection, each layer
    let single = |title: String, values: Vec<f32>, extra: String| -> MapFigure {
        let mut s = subs.clone();
        s.push(extra);
        map_figure(
            title,
            s,
            vec![MapGroup {
                heading: None,
                panels: vec![MapPanel {
                    title: String::new(),
                    values,
                    rows,
                    cols,
                }],
                photo: view.photo.clone(),
            }],
            opts,
            720.0,
        )
    };
    let fig = single(
        format!(
            "Visual attention, layers {} (mean) — {}",
            view.layer_span(&view.positions),
            view.label
        ),
        mean_rows(arrays.visual_attention.view(), &view.positions),
        format!("head-mean attention on each image token, {steps_note}"),
    );
    done.files
        .extend(save(&fig, &out.join("maps").join("mean"), canvas)?);
    for &p in &view.positions {
        let fig = single(
            format!("Visual attention, layer {} — {}", view.layer(p), view.label),
            arrays.visual_attention.row(p).to_vec(),
            format!("head-mean attention on each image token, {steps_note}"),
        );
        done.files.extend(save(
            &fig,
            &out.join("maps").join(format!("layer_{:02}", view.layer(p))),
            canvas,
        )?);
    }
    // layer ranges: early / middle / late thirds
    let groups = layer_groups(&view.positions);
    if groups.len() > 1 {
        let panels = groups
            .iter()
            .map(|(name, ps)| MapPanel {
                title: format!("{} layers {} (mean)", capitalise(name), view.layer_span(ps)),
                values: mean_rows(arrays.visual_attention.view(), ps),
                rows,
                cols,
            })
            .collect();
        let fig = map_figure(
            format!("Visual attention by depth — {}", view.label),
            subs.clone(),
            vec![MapGroup {
                heading: None,
                panels,
                photo: view.photo.clone(),
            }],
            opts,
            340.0,
        );
        done.files
            .extend(save(&fig, &out.join("layer_ranges"), canvas)?);
    }
    // windows of steps
    if let (Some(win), Some(w)) = (
        arrays
            .visual_attention_windows
            .as_ref()
            .filter(|a| a.shape()[0] > 0),
        meta.window,
    ) {
        let panels = (0..win.shape()[0])
            .map(|k| {
                let a = k * w;
                let b = ((k + 1) * w).min(meta.steps).max(a + 1) - 1;
                MapPanel {
                    title: format!("Steps {a}–{b}"),
                    values: mean_rows(win.index_axis(ndarray::Axis(0), k), &view.positions),
                    rows,
                    cols,
                }
            })
            .collect();
        let fig = map_figure(
            format!("Visual attention per window of {w} steps — {}", view.label),
            {
                let mut s = subs.clone();
                s.push(format!(
                    "mean over layers {}",
                    view.layer_span(&view.positions)
                ));
                s
            },
            vec![MapGroup {
                heading: None,
                panels,
                photo: view.photo.clone(),
            }],
            opts,
            220.0,
        );
        done.files.extend(save(&fig, &out.join("windows"), canvas)?);
    }
    // per head
    if let Some(heads) = &arrays.visual_attention_heads {
        for &p in &view.positions {
            let layer = heads.index_axis(ndarray::Axis(0), p);
            let panels = (0..layer.nrows())
                .map(|h| MapPanel {
                    title: format!("Head {h}"),
                    values: layer.row(h).to_vec(),
                    rows,
                    cols,
                })
                .collect();
            let mut fig = map_figure(
                format!(
                    "Visual attention per head, layer {} — {}",
                    view.layer(p),
                    view.label
                ),
                subs.clone(),
                vec![MapGroup {
                    heading: None,
                    panels,
                    photo: view.photo.clone(),
                }],
                opts,
                170.0,
            );
            fig.colorbar_label = "attention of the head".into();
            done.files.extend(save(
                &fig,
                &out.join("maps")
                    .join(format!("heads_layer_{:02}", view.layer(p))),
                canvas,
            )?);
        }
    }
    // vision tower
    if let Some(va) = &arrays.vision_attention {
        let [_, gh, gw] = meta.image.grid_thw;
        let panels = (0..va.nrows())
            .map(|b| MapPanel {
                title: format!("Block {b}"),
                values: va.row(b).to_vec(),
                rows: gh,
                cols: gw,
            })
            .collect();
        let mut fig = map_figure(
            format!(
                "Vision tower: attention received per patch — {}",
                view.label
            ),
            subs.clone(),
            vec![MapGroup {
                heading: None,
                panels,
                photo: view.photo.clone(),
            }],
            opts,
            170.0,
        );
        fig.colorbar_label = "attention received (head mean)".into();
        done.files
            .extend(save(&fig, &out.join("vision_blocks"), canvas)?);
    }
    // 3. allocation bars
    let layers_x: Vec<f64> = view
        .positions
        .iter()
        .map(|&p| view.layer(p) as f64)
        .collect();
    if let Some(ps) = prompt_shares(view.trace, &view.positions) {
        let fig = stack_figure(
            format!(
                "Attention allocation of the last prompt token — {}",
                view.label
            ),
            subs.clone(),
            vec![stack_panel(String::new(), meta, &layers_x, &ps)],
        );
        done.files
            .extend(save(&fig, &out.join("allocation_prompt"), canvas)?);
    }
    if meta.steps > 0 {
        let gs = generation_shares(view.trace, &view.positions);
        let fig = stack_figure(
            format!(
                "Attention allocation during generation — {} ({steps_note})",
                view.label
            ),
            subs.clone(),
            vec![stack_panel(String::new(), meta, &layers_x, &gs)],
        );
        done.files
            .extend(save(&fig, &out.join("allocation_generation"), canvas)?);
    }
    // 4a. visual share by layer
    if let Some(vi) = meta.role_index(Role::Visual) {
        let mut series = Vec::new();
        if meta.steps > 0 {
            let gs = generation_shares(view.trace, &view.positions);
            series.push(
                Series::new(
                    "during generation (mean over steps)",
                    series_color(0),
                    layers_x
                        .iter()
                        .zip(gs.column(vi).iter())
                        .map(|(&x, &y)| (x, y))
                        .collect(),
                )
                .kind(SeriesKind::LineMarkers),
            );
        }
        if let Some(ps) = prompt_shares(view.trace, &view.positions) {
            series.push(
                Series::new(
                    "last prompt token",
                    series_color(1),
                    layers_x
                        .iter()
                        .zip(ps.column(vi).iter())
                        .map(|(&x, &y)| (x, y))
                        .collect(),
                )
                .kind(SeriesKind::LineMarkers),
            );
        }
        if !series.is_empty() {
            let y = y_top(&series);
            let fig = ChartFigure {
                title: format!("Share of attention on the image by layer — {}", view.label),
                subtitles: subs.clone(),
                panels: vec![ChartPanel {
                    x_label: "Layer".into(),
                    y_label: "Visual share".into(),
                    series,
                    y_range: Some(y),
                    x_integer: true,
                    ..Default::default()
                }],
                cols: Some(1),
                panel_size: (760.0, 420.0),
                extra_legend: Vec::new(),
            };
            done.files
                .extend(save(&fig, &out.join("visual_share_by_layer"), canvas)?);
        }
    }
    // 4b. shift along the chain
    if meta.steps >= 2 {
        let window = auto_window(meta.steps, opts.window);
        let mut panels = Vec::new();
        for (name, ps) in &groups {
            let shares = step_role_shares(view.trace, ps);
            let roles = shift_roles(meta, &shares);
            let series: Vec<Series> = roles
                .iter()
                .map(|&r| {
                    let v: Vec<f64> = shares.column(r).to_vec();
                    let sm = rolling_mean(&v, window);
                    Series::new(
                        role_label(&meta.roles[r]),
                        role_color(&meta.roles[r]),
                        sm.iter().enumerate().map(|(s, &y)| (s as f64, y)).collect(),
                    )
                })
                .collect();
            let y = y_top(&series);
            panels.push(ChartPanel {
                title: format!("{} layers {}", capitalise(name), view.layer_span(ps)),
                x_label: "Generation step (token)".into(),
                y_label: "Share of attention".into(),
                series,
                vlines: event_lines(meta),
                x_range: Some((0.0, (meta.steps - 1) as f64)),
                y_range: Some(y),
                x_integer: true,
                ..Default::default()
            });
        }
        let mut s = subs.clone();
        s.push(format!(
            "per-layer shares averaged over each layer group; rolling mean over {window} steps; system prompt share not shown"
        ));
        let fig = ChartFigure {
            title: format!("Attention shift along the reasoning chain — {}", view.label),
            subtitles: s,
            cols: Some(1),
            panel_size: (900.0, 300.0),
            panels,
            extra_legend: Vec::new(),
        };
        done.files
            .extend(save(&fig, &out.join("shift_steps"), canvas)?);
    }
    // heads × layers visual share
    if let (Some(rah), Some(vi)) = (&arrays.role_attention_heads, meta.role_index(Role::Visual)) {
        let (steps, _, heads, roles) = rah.dim();
        if steps > 0 {
            let mut values = vec![vec![0.0; view.positions.len()]; heads];
            for (c, &p) in view.positions.iter().enumerate() {
                for (h, row) in values.iter_mut().enumerate() {
                    let mut vis = 0.0;
                    let mut tot = 0.0;
                    for s in 0..steps {
                        for r in 0..roles {
                            let v = rah[[s, p, h, r]] as f64;
                            tot += v;
                            if r == vi {
                                vis += v;
                            }
                        }
                    }
                    row[c] = if tot > 0.0 { vis / tot } else { 0.0 };
                }
            }
            let fig = MatrixFigure {
                title: format!("Visual share per head and layer — {}", view.label),
                subtitles: {
                    let mut s = subs.clone();
                    s.push(format!(
                        "share of each head's attention on image tokens, {steps_note}"
                    ));
                    s
                },
                x_label: "Layer".into(),
                y_label: "Head".into(),
                x: layers_x.clone(),
                row_labels: (0..heads).map(|h| h.to_string()).collect(),
                values,
                colormap: opts.colormap,
                colorbar_label: "visual share".into(),
            };
            done.files
                .extend(save(&fig, &out.join("heads_visual_share"), canvas)?);
        }
    }
    Ok(())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn stack_panel(title: String, meta: &TraceMeta, x: &[f64], shares: &Array2<f64>) -> StackPanel {
    let stacks = role_order(&meta.roles)
        .into_iter()
        .filter(|&r| shares.column(r).iter().any(|&v| v > 0.0))
        .map(|r| {
            (
                role_label(&meta.roles[r]),
                role_color(&meta.roles[r]),
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

fn stack_figure(title: String, subtitles: Vec<String>, panels: Vec<StackPanel>) -> StackFigure {
    let n = panels.len().max(1) as f64;
    StackFigure {
        title,
        subtitles,
        panels,
        panel_size: ((900.0 / n).max(520.0), 440.0),
    }
}

/// Figures comparing several traces (e.g. a reasoning model and its base), into `out`.
pub fn render_compare(
    views: &[TraceView],
    out: &Path,
    opts: &RenderOptions,
    done: &mut Rendered,
) -> Result<()> {
    let canvas = &opts.canvas;
    let labels: Vec<String> = views.iter().map(|v| v.label.clone()).collect();
    let who = labels.join(" vs ");
    let subs: Vec<String> = views
        .iter()
        .map(|v| format!("{}: {}", v.label, v.subtitles()[0]))
        .collect();
    let group = |v: &TraceView, photo: bool| MapGroup {
        heading: Some(v.label.clone()),
        panels: v
            .positions
            .iter()
            .map(|&p| MapPanel {
                title: format!("Layer {}", v.layer(p)),
                values: v.trace.arrays.visual_attention.row(p).to_vec(),
                rows: v.grid().0,
                cols: v.grid().1,
            })
            .collect(),
        photo: if photo { v.photo.clone() } else { None },
    };
    let fig = map_figure(
        format!("Visual attention per layer — {who}"),
        subs.clone(),
        views.iter().map(|v| group(v, false)).collect(),
        opts,
        150.0,
    );
    done.files
        .extend(save(&fig, &out.join("compare_layers_grid"), canvas)?);
    if views.iter().all(|v| v.photo.is_some()) {
        let fig = map_figure(
            format!("Visual attention per layer on the image — {who}"),
            subs.clone(),
            views.iter().map(|v| group(v, true)).collect(),
            opts,
            170.0,
        );
        done.files.extend(save(
            &fig,
            &out.join("compare_layers_grid_overlay"),
            canvas,
        )?);
    }
    let fig = map_figure(
        format!("Visual attention, mean of the selected layers — {who}"),
        subs.clone(),
        views
            .iter()
            .map(|v| MapGroup {
                heading: Some(v.label.clone()),
                panels: vec![MapPanel {
                    title: format!("layers {}", v.layer_span(&v.positions)),
                    values: mean_rows(v.trace.arrays.visual_attention.view(), &v.positions),
                    rows: v.grid().0,
                    cols: v.grid().1,
                }],
                photo: v.photo.clone(),
            })
            .collect(),
        opts,
        460.0,
    );
    done.files
        .extend(save(&fig, &out.join("compare_mean"), canvas)?);
    // allocation bars side by side
    let panels: Option<Vec<StackPanel>> = views
        .iter()
        .map(|v| {
            let x: Vec<f64> = v.positions.iter().map(|&p| v.layer(p) as f64).collect();
            prompt_shares(v.trace, &v.positions)
                .map(|s| stack_panel(v.label.clone(), v.meta(), &x, &s))
        })
        .collect();
    if let Some(panels) = panels {
        let fig = stack_figure(
            format!("Attention allocation of the last prompt token — {who}"),
            subs.clone(),
            panels,
        );
        done.files
            .extend(save(&fig, &out.join("compare_allocation_prompt"), canvas)?);
    }
    if views.iter().all(|v| v.meta().steps > 0) {
        let panels = views
            .iter()
            .map(|v| {
                let x: Vec<f64> = v.positions.iter().map(|&p| v.layer(p) as f64).collect();
                stack_panel(
                    v.label.clone(),
                    v.meta(),
                    &x,
                    &generation_shares(v.trace, &v.positions),
                )
            })
            .collect();
        let fig = stack_figure(
            format!("Attention allocation during generation — {who}"),
            subs.clone(),
            panels,
        );
        done.files.extend(save(
            &fig,
            &out.join("compare_allocation_generation"),
            canvas,
        )?);
    }
    // visual share by layer, one line per trace
    let mut series = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let Some(vi) = v.meta().role_index(Role::Visual) else {
            continue;
        };
        let x: Vec<f64> = v.positions.iter().map(|&p| v.layer(p) as f64).collect();
        if v.meta().steps > 0 {
            let gs = generation_shares(v.trace, &v.positions);
            series.push(
                Series::new(
                    format!("{} (generation)", v.label),
                    series_color(i),
                    x.iter()
                        .zip(gs.column(vi).iter())
                        .map(|(&a, &b)| (a, b))
                        .collect(),
                )
                .kind(SeriesKind::LineMarkers),
            );
        }
        if let Some(ps) = prompt_shares(v.trace, &v.positions) {
            series.push(
                Series::new(
                    format!("{} (last prompt token)", v.label),
                    series_color(i),
                    x.iter()
                        .zip(ps.column(vi).iter())
                        .map(|(&a, &b)| (a, b))
                        .collect(),
                )
                .kind(SeriesKind::Dashed),
            );
        }
    }
    if !series.is_empty() {
        let y = y_top(&series);
        let fig = ChartFigure {
            title: format!("Share of attention on the image by layer — {who}"),
            subtitles: subs.clone(),
            panels: vec![ChartPanel {
                x_label: "Layer".into(),
                y_label: "Visual share".into(),
                series,
                y_range: Some(y),
                x_integer: true,
                ..Default::default()
            }],
            cols: Some(1),
            panel_size: (820.0, 440.0),
            extra_legend: Vec::new(),
        };
        done.files.extend(save(
            &fig,
            &out.join("compare_visual_share_by_layer"),
            canvas,
        )?);
    }
    // visual share along the chain, one line per trace, panels by relative depth
    let with_steps: Vec<(usize, &TraceView)> = views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.meta().steps >= 2 && v.meta().role_index(Role::Visual).is_some())
        .collect();
    if !with_steps.is_empty() {
        let depth_names = ["early", "middle", "late"];
        let n_groups = with_steps
            .iter()
            .map(|(_, v)| layer_groups(&v.positions).len())
            .min()
            .unwrap_or(1);
        let mut panels = Vec::new();
        for g in 0..n_groups {
            let mut series = Vec::new();
            let mut vlines = Vec::new();
            for &(i, v) in &with_steps {
                let groups = layer_groups(&v.positions);
                let (_, ps) = &groups[g.min(groups.len() - 1)];
                let vi = v.meta().role_index(Role::Visual).expect("filtered");
                let shares = step_role_shares(v.trace, ps);
                let window = auto_window(v.meta().steps, opts.window);
                let sm = rolling_mean(&shares.column(vi).to_vec(), window);
                series.push(
                    Series::new(
                        format!("{} (layers {})", v.label, v.layer_span(ps)),
                        series_color(i),
                        sm.iter().enumerate().map(|(s, &y)| (s as f64, y)).collect(),
                    )
                    .hidden(),
                );
                for e in
                    v.meta().events.iter().filter(|e| {
                        matches!(e.kind, EventKind::ThinkEnd | EventKind::ForcedThinkEnd)
                    })
                {
                    vlines.push(VLine {
                        x: e.step as f64,
                        color: series_color(i),
                        swatch: Swatch::Dashed,
                        label: format!("{}: end of thinking", v.label),
                    });
                }
            }
            let y = y_top(&series);
            let title = if n_groups == 1 {
                "Selected layers".to_string()
            } else {
                format!("{} layers", capitalise(depth_names[g]))
            };
            panels.push(ChartPanel {
                title,
                x_label: "Generation step (token)".into(),
                y_label: "Visual share".into(),
                series,
                vlines,
                y_range: Some(y),
                x_integer: true,
                ..Default::default()
            });
        }
        let fig = ChartFigure {
            title: format!("Visual share along the reasoning chain — {who}"),
            subtitles: {
                let mut s = subs.clone();
                s.push(
                    "depth groups are thirds of each model's selected layers; rolling mean".into(),
                );
                s
            },
            panels,
            cols: Some(1),
            panel_size: (900.0, 280.0),
            extra_legend: with_steps
                .iter()
                .map(|&(i, v)| LegendEntry::new(v.label.clone(), series_color(i), Swatch::Line))
                .collect(),
        };
        done.files
            .extend(save(&fig, &out.join("compare_shift_steps"), canvas)?);
    }
    Ok(())
}
