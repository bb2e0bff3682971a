//! The figures of traces: [`TRACE_FIGURES`] for one trace (into the trace's own directory) and
//! [`COMPARISON_FIGURES`] for several side by side. A figure both tables list is one builder:
//! one trace is a comparison of one.

use ndarray::Axis;

use super::charts::{
    ChartFigure, ChartPanel, MatrixFigure, MatrixPanel, Series, SeriesKind, VLine,
};
use super::draw::{LegendEntry, Swatch};
use super::figure::Named;
use super::maps::{MapFigure, MapGroup, MapPanel};
use super::style::{role_color, role_label, series_color};
use super::traces::{
    auto_window, capitalise, common_group_count, event_lines, map_figure, mean_rows, rolling_mean,
    stack_figure, stack_panel, y_top, TraceView, Traces,
};
use super::RenderOptions;
use crate::formats::shares::step_role_shares;
use crate::formats::trace::TraceMeta;
use crate::formats::Role;

/// A builder of trace figures.
pub type TraceBuilder = for<'a> fn(&Traces<'a>, &RenderOptions) -> Vec<Named>;

/// Every figure of one trace, in the order they are written.
pub const TRACE_FIGURES: &[TraceBuilder] = &[
    layers_grid,
    layers_grid_overlay,
    mean_map,
    layer_maps,
    layer_ranges,
    step_windows,
    head_maps,
    vision_blocks,
    allocation_prompt,
    allocation_generation,
    visual_share_by_layer,
    shift_steps,
    heads_visual_share,
];

/// Figures of several traces side by side (`compare_*`).
pub const COMPARISON_FIGURES: &[TraceBuilder] = &[
    layers_grid,
    layers_grid_overlay,
    mean_map,
    allocation_prompt,
    allocation_generation,
    visual_share_by_layer,
    shift_steps,
];

/// Every selected layer's map of one trace, as one group.
fn layer_group(v: &TraceView, heading: Option<String>, photo: bool) -> MapGroup {
    let (rows, cols) = v.grid();
    MapGroup {
        heading,
        panels: v
            .positions
            .iter()
            .map(|&p| MapPanel {
                title: format!("Layer {}", v.layer(p)),
                values: v.trace.arrays.visual_attention.row(p).to_vec(),
                rows,
                cols,
            })
            .collect(),
        photo: if photo { v.photo.clone() } else { None },
    }
}

/// Every layer's map, one group per trace; `photo`: over the photograph.
fn layer_grid_figure(c: &Traces, opts: &RenderOptions, photo: bool) -> Named {
    let on = if photo { " on the image" } else { "" };
    let (groups, width) = match c.single() {
        Some(v) => (
            vec![layer_group(v, None, photo)],
            if photo { 200.0 } else { 170.0 },
        ),
        None => (
            c.views
                .iter()
                .map(|v| layer_group(v, Some(v.label.clone()), photo))
                .collect(),
            if photo { 170.0 } else { 150.0 },
        ),
    };
    let title = format!("Visual attention per layer{on} — {}", c.who());
    let fig = map_figure(title, c.subtitles(), groups, opts, width);
    let base = if photo {
        "layers_grid_overlay"
    } else {
        "layers_grid"
    };
    Named::new(c.stem(base), fig)
}

fn layers_grid(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    vec![layer_grid_figure(c, opts, false)]
}

fn layers_grid_overlay(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    if c.views.iter().all(|v| v.photo.is_some()) {
        vec![layer_grid_figure(c, opts, true)]
    } else {
        Vec::new()
    }
}

/// One large map of one trace over its photograph.
fn single_map(v: &TraceView, opts: &RenderOptions, title: String, values: Vec<f32>) -> MapFigure {
    let (rows, cols) = v.grid();
    let mut subtitles = v.subtitles();
    subtitles.push(format!(
        "head-mean attention on each image token, {}",
        v.steps_note()
    ));
    let group = MapGroup {
        heading: None,
        panels: vec![MapPanel {
            title: String::new(),
            values,
            rows,
            cols,
        }],
        photo: v.photo.clone(),
    };
    map_figure(title, subtitles, vec![group], opts, 720.0)
}

/// The mean map of the selected layers (`maps/mean` of one trace, `compare_mean`).
fn mean_map(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    let mean = |v: &TraceView| mean_rows(v.trace.arrays.visual_attention.view(), &v.positions);
    if let Some(v) = c.single() {
        let title = format!(
            "Visual attention, layers {} (mean) — {}",
            v.layer_span(&v.positions),
            v.label
        );
        return vec![Named::new("maps/mean", single_map(v, opts, title, mean(v)))];
    }
    let groups = c
        .views
        .iter()
        .map(|v| MapGroup {
            heading: Some(v.label.clone()),
            panels: vec![MapPanel {
                title: format!("layers {}", v.layer_span(&v.positions)),
                values: mean(v),
                rows: v.grid().0,
                cols: v.grid().1,
            }],
            photo: v.photo.clone(),
        })
        .collect();
    let title = format!(
        "Visual attention, mean of the selected layers — {}",
        c.who()
    );
    let fig = map_figure(title, c.subtitles(), groups, opts, 460.0);
    vec![Named::new("compare_mean", fig)]
}

/// `maps/layer_NN`: each selected layer's map over the photograph.
fn layer_maps(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    let v = c.first();
    v.positions
        .iter()
        .map(|&p| {
            let title = format!("Visual attention, layer {} — {}", v.layer(p), v.label);
            let values = v.trace.arrays.visual_attention.row(p).to_vec();
            let stem = format!("maps/layer_{:02}", v.layer(p));
            Named::new(stem, single_map(v, opts, title, values))
        })
        .collect()
}

/// One map group over the trace's photograph.
fn photo_group(v: &TraceView, panels: Vec<MapPanel>) -> Vec<MapGroup> {
    vec![MapGroup {
        heading: None,
        panels,
        photo: v.photo.clone(),
    }]
}

/// Mean maps of the early, middle and late layers.
fn layer_ranges(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    let v = c.first();
    let groups = v.layer_groups();
    if groups.len() < 2 {
        return Vec::new();
    }
    let (rows, cols) = v.grid();
    let panels = groups
        .iter()
        .map(|(group, ps)| MapPanel {
            title: format!(
                "{} layers {} (mean)",
                capitalise(group.name()),
                v.layer_span(ps)
            ),
            values: mean_rows(v.trace.arrays.visual_attention.view(), ps),
            rows,
            cols,
        })
        .collect();
    let title = format!("Visual attention by depth — {}", v.label);
    let fig = map_figure(title, v.subtitles(), photo_group(v, panels), opts, 340.0);
    vec![Named::new("layer_ranges", fig)]
}

/// `windows`: the mean map of each window of steps.
fn step_windows(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    let v = c.first();
    let meta = v.meta();
    let windows = v.trace.arrays.visual_attention_windows.as_ref();
    let (Some(win), Some(w)) = (windows.filter(|a| a.shape()[0] > 0), meta.window) else {
        return Vec::new();
    };
    let (rows, cols) = v.grid();
    let panels = (0..win.shape()[0])
        .map(|k| {
            let a = k * w;
            let b = ((k + 1) * w).min(meta.steps).max(a + 1) - 1;
            MapPanel {
                title: format!("Steps {a}–{b}"),
                values: mean_rows(win.index_axis(Axis(0), k), &v.positions),
                rows,
                cols,
            }
        })
        .collect();
    let mut subtitles = v.subtitles();
    subtitles.push(format!("mean over layers {}", v.layer_span(&v.positions)));
    let title = format!("Visual attention per window of {w} steps — {}", v.label);
    let fig = map_figure(title, subtitles, photo_group(v, panels), opts, 220.0);
    vec![Named::new("windows", fig)]
}

/// `maps/heads_layer_NN`: each head's map of each selected layer.
fn head_maps(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    let v = c.first();
    let Some(heads) = &v.trace.arrays.visual_attention_heads else {
        return Vec::new();
    };
    let (rows, cols) = v.grid();
    v.positions
        .iter()
        .map(|&p| {
            let layer = heads.index_axis(Axis(0), p);
            let panels = (0..layer.nrows())
                .map(|h| MapPanel {
                    title: format!("Head {h}"),
                    values: layer.row(h).to_vec(),
                    rows,
                    cols,
                })
                .collect();
            let title = format!(
                "Visual attention per head, layer {} — {}",
                v.layer(p),
                v.label
            );
            let mut fig = map_figure(title, v.subtitles(), photo_group(v, panels), opts, 170.0);
            fig.colorbar_label = "attention of the head".into();
            Named::new(format!("maps/heads_layer_{:02}", v.layer(p)), fig)
        })
        .collect()
}

/// `vision_blocks`: attention each patch receives in each vision-tower block.
fn vision_blocks(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    let v = c.first();
    let Some(va) = &v.trace.arrays.vision_attention else {
        return Vec::new();
    };
    let [_, gh, gw] = v.meta().image.grid_thw;
    let panels = (0..va.nrows())
        .map(|b| MapPanel {
            title: format!("Block {b}"),
            values: va.row(b).to_vec(),
            rows: gh,
            cols: gw,
        })
        .collect();
    let title = format!("Vision tower: attention received per patch — {}", v.label);
    let mut fig = map_figure(title, v.subtitles(), photo_group(v, panels), opts, 170.0);
    fig.colorbar_label = "attention received (head mean)".into();
    vec![Named::new("vision_blocks", fig)]
}

/// Stacked role shares per layer, one panel per trace (untitled for one trace).
fn allocation_panels(
    c: &Traces,
    shares: impl Fn(&TraceView) -> Option<ndarray::Array2<f64>>,
) -> Option<Vec<super::charts::StackPanel>> {
    c.views
        .iter()
        .map(|v| {
            let title = match c.single() {
                Some(_) => String::new(),
                None => v.label.clone(),
            };
            shares(v).map(|s| stack_panel(title, v.meta(), &v.layers_x(), &s))
        })
        .collect()
}

/// Role shares of the last prompt token per layer.
fn allocation_prompt(c: &Traces, _: &RenderOptions) -> Vec<Named> {
    let Some(panels) = allocation_panels(c, |v| v.prompt_shares()) else {
        return Vec::new();
    };
    let title = format!(
        "Attention allocation of the last prompt token — {}",
        c.who()
    );
    let fig = stack_figure(title, c.subtitles(), panels);
    vec![Named::new(c.stem("allocation_prompt"), fig)]
}

/// Role shares during generation per layer (traces that generated).
fn allocation_generation(c: &Traces, _: &RenderOptions) -> Vec<Named> {
    let generated = |v: &TraceView| v.meta().steps > 0;
    let Some(panels) = allocation_panels(c, |v| {
        generated(v).then(|| v.generation_shares(&v.positions))
    }) else {
        return Vec::new();
    };
    let title = match c.single() {
        Some(v) => format!(
            "Attention allocation during generation — {} ({})",
            v.label,
            v.steps_note()
        ),
        None => format!("Attention allocation during generation — {}", c.who()),
    };
    let fig = stack_figure(title, c.subtitles(), panels);
    vec![Named::new(c.stem("allocation_generation"), fig)]
}

/// The visual-share lines of trace `i`: during generation and at the last prompt token.
fn visual_share_series(c: &Traces, i: usize, v: &TraceView, vi: usize) -> Vec<Series> {
    use SeriesKind::{Dashed, LineMarkers};
    // (label, colour, kind) of the generation line and of the prompt line
    let (generation, prompt) = match c.single() {
        Some(_) => (
            (
                "during generation (mean over steps)".into(),
                series_color(0),
                LineMarkers,
            ),
            ("last prompt token".into(), series_color(1), LineMarkers),
        ),
        None => (
            (
                format!("{} (generation)", v.label),
                series_color(i),
                LineMarkers,
            ),
            (
                format!("{} (last prompt token)", v.label),
                series_color(i),
                Dashed,
            ),
        ),
    };
    let x = v.layers_x();
    let line = |(label, color, kind): (String, _, _), shares: ndarray::Array2<f64>| {
        let points = x.iter().zip(shares.column(vi)).map(|(&a, &b)| (a, b));
        Series::new(label, color, points.collect()).kind(kind)
    };
    let mut series = Vec::new();
    if v.meta().steps > 0 {
        series.push(line(generation, v.generation_shares(&v.positions)));
    }
    if let Some(ps) = v.prompt_shares() {
        series.push(line(prompt, ps));
    }
    series
}

/// Share of attention on the image by layer, one line (or two) per trace.
fn visual_share_by_layer(c: &Traces, _: &RenderOptions) -> Vec<Named> {
    let series: Vec<Series> = c
        .views
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((i, v, v.meta().role_index(Role::Visual)?)))
        .flat_map(|(i, v, vi)| visual_share_series(c, i, v, vi))
        .collect();
    if series.is_empty() {
        return Vec::new();
    }
    let y = y_top(&series);
    let fig = ChartFigure {
        title: format!("Share of attention on the image by layer — {}", c.who()),
        subtitles: c.subtitles(),
        panels: vec![ChartPanel {
            x_label: "Layer".into(),
            y_label: "Visual share".into(),
            series,
            y_range: Some(y),
            x_integer: true,
            ..Default::default()
        }],
        cols: Some(1),
        panel_size: match c.single() {
            Some(_) => (760.0, 420.0),
            None => (820.0, 440.0),
        },
        extra_legend: Vec::new(),
    };
    vec![Named::new(c.stem("visual_share_by_layer"), fig)]
}

/// Attention along the reasoning chain: every role per depth group for one trace; the visual
/// share of each trace per depth group for several.
fn shift_steps(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    let fig = match c.single() {
        Some(v) if v.meta().steps >= 2 => role_shift_figure(v, opts),
        Some(_) => None,
        None => visual_shift_figure(c, opts),
    };
    fig.map(|f| Named::new(c.stem("shift_steps"), f))
        .into_iter()
        .collect()
}

/// Roles drawn in shift curves: visual, instruction, reasoning, answer (those present with mass).
fn shift_roles(meta: &TraceMeta, shares: &ndarray::Array2<f64>) -> Vec<usize> {
    [
        Role::Visual,
        Role::Instruction,
        Role::Reasoning,
        Role::Answer,
    ]
    .into_iter()
    .filter_map(|r| meta.role_index(r))
    .filter(|&r| shares.column(r).iter().any(|&v| v > 0.0))
    .collect()
}

fn role_shift_figure(v: &TraceView, opts: &RenderOptions) -> Option<ChartFigure> {
    let meta = v.meta();
    let window = auto_window(meta.steps, opts.window);
    let mut panels = Vec::new();
    for (group, ps) in &v.layer_groups() {
        let shares = step_role_shares(&v.trace.arrays.role_attention, ps);
        let series: Vec<Series> = shift_roles(meta, &shares)
            .into_iter()
            .map(|r| {
                let smooth = rolling_mean(&shares.column(r).to_vec(), window);
                Series::new(
                    role_label(&meta.roles[r]),
                    role_color(Role::from_name(&meta.roles[r])),
                    smooth
                        .iter()
                        .enumerate()
                        .map(|(s, &y)| (s as f64, y))
                        .collect(),
                )
            })
            .collect();
        let y = y_top(&series);
        panels.push(ChartPanel {
            title: format!("{} layers {}", capitalise(group.name()), v.layer_span(ps)),
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
    let mut subtitles = v.subtitles();
    let smoothing = if window > 1 {
        format!("rolling mean over {window} steps")
    } else {
        "no smoothing".to_string()
    };
    subtitles.push(format!(
        "per-layer shares averaged over each layer group; {smoothing}; system prompt share not shown"
    ));
    Some(ChartFigure {
        title: format!("Attention shift along the reasoning chain — {}", v.label),
        subtitles,
        cols: Some(1),
        panel_size: (900.0, 300.0),
        panels,
        extra_legend: Vec::new(),
    })
}

fn visual_shift_figure(c: &Traces, opts: &RenderOptions) -> Option<ChartFigure> {
    let with_steps: Vec<(usize, &TraceView, usize)> = c
        .views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.meta().steps >= 2)
        .filter_map(|(i, v)| Some((i, v, v.meta().role_index(Role::Visual)?)))
        .collect();
    if with_steps.is_empty() {
        return None;
    }
    let n_groups = common_group_count(with_steps.iter().map(|e| e.1));
    let groups = with_steps[0].1.layer_groups();
    let mut panels = Vec::new();
    for g in 0..n_groups {
        let mut series = Vec::new();
        let mut vlines = Vec::new();
        for &(i, v, vi) in &with_steps {
            let curve = v.shift_curve(vi, g, opts.window);
            let label = format!("{} (layers {})", v.label, v.layer_span(&curve.positions));
            series.push(Series::new(label, series_color(i), curve.points).hidden());
            vlines.extend(v.think_ends().map(|x| VLine {
                x,
                color: series_color(i),
                swatch: Swatch::Dashed,
                label: format!("{}: end of thinking", v.label),
            }));
        }
        let y = y_top(&series);
        let title = match n_groups {
            1 => "Selected layers".to_string(),
            _ => format!("{} layers", capitalise(groups[g].0.name())),
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
    let mut subtitles = c.subtitles();
    subtitles.push("depth groups are thirds of each model's selected layers; rolling mean".into());
    Some(ChartFigure {
        title: format!("Visual share along the reasoning chain — {}", c.who()),
        subtitles,
        panels,
        cols: Some(1),
        panel_size: (900.0, 280.0),
        extra_legend: with_steps
            .iter()
            .map(|&(i, v, _)| LegendEntry::new(v.label.clone(), series_color(i), Swatch::Line))
            .collect(),
    })
}

/// `heads_visual_share`: the visual share of every head of every selected layer.
fn heads_visual_share(c: &Traces, opts: &RenderOptions) -> Vec<Named> {
    let v = c.first();
    let meta = v.meta();
    let (Some(per_head), Some(vi)) = (
        &v.trace.arrays.role_attention_heads,
        meta.role_index(Role::Visual),
    ) else {
        return Vec::new();
    };
    let (steps, _, heads, _) = per_head.dim();
    if steps == 0 {
        return Vec::new();
    }
    let mut subtitles = v.subtitles();
    subtitles.push(format!(
        "share of each head's attention on image tokens, {}",
        v.steps_note()
    ));
    let fig = MatrixFigure {
        title: format!("Visual share per head and layer — {}", v.label),
        subtitles,
        x_label: "Layer".into(),
        y_label: "Head".into(),
        panels: MatrixFigure::single(MatrixPanel {
            x: v.layers_x(),
            row_labels: (0..heads).map(|h| h.to_string()).collect(),
            values: crate::formats::shares::head_shares(per_head, &v.positions, vi),
            ..Default::default()
        }),
        colormap: opts.colormap,
        colorbar_label: "visual share".into(),
        row_height: 26.0,
    };
    vec![Named::new("heads_visual_share", fig)]
}
