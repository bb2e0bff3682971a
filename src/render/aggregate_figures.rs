//! Figures of many traces ([`AGGREGATE_FIGURES`], drawn from an [`AggregateSummary`]) and of
//! the `layers` command's output ([`ALLOCATION_FIGURES`], the paper's layer-allocation figure,
//! one line per model).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::aggregate::{AggregateSummary, GroupBy, GroupSummary};
use super::charts::{Band, ChartFigure, ChartPanel, MatrixFigure, MatrixPanel, Series, SeriesKind};
use super::figure::Named;
use super::stats::Stat;
use super::style::{role_label, series_color};
use super::traces::{capitalise, stack_figure, stack_panel};
use super::RenderOptions;
use crate::formats::trace::TraceMeta;
use crate::formats::Role;

/// A builder of aggregate figures.
pub type AggregateBuilder = fn(&AggregateSummary, &RenderOptions) -> Vec<Named>;

/// Figures of an aggregate summary, in the order they are written.
pub const AGGREGATE_FIGURES: &[AggregateBuilder] = &[
    layer_shares,
    visual_by_position,
    visual_by_step,
    spatial_spread,
    decay_map,
    decay_map_settings,
];

/// Most columns of a decay map; longer chains are drawn in bins of steps.
const MAX_DECAY_COLUMNS: usize = 300;

/// What every aggregate figure says under its title.
fn subtitles(a: &AggregateSummary) -> Vec<String> {
    let traces: usize = a.groups.iter().map(|g| g.traces.len()).sum();
    let mut first = format!(
        "{traces} traces in {} groups by {} · line: mean across traces · shaded: 95% interval of the mean",
        a.groups.len(),
        a.group_by.name()
    );
    if a.groups.iter().any(|g| g.random_weights) {
        first.push_str(" · RANDOM WEIGHTS (demo checkpoint)");
    }
    vec![first]
}

/// Legend name of a group: its label and trace count.
fn group_name(g: &GroupSummary) -> String {
    format!("{} (n={})", g.label, g.traces.len())
}

/// A group's mean as a line and its interval as a band (split where it is undefined), at `xs`.
fn stat_series(g: &GroupSummary, color: usize, xs: &[f64], stat: &Stat, panel: &mut ChartPanel) {
    let color = series_color(color);
    let points: Vec<(f64, f64)> = xs
        .iter()
        .zip(&stat.mean)
        .filter_map(|(&x, m)| Some((x, (*m)?)))
        .collect();
    let mut stretch = Vec::new();
    for ((&x, lo), hi) in xs.iter().zip(&stat.lo).zip(&stat.hi) {
        match (lo, hi) {
            (Some(lo), Some(hi)) => stretch.push((x, *lo, *hi)),
            _ if !stretch.is_empty() => panel.bands.push(Band {
                points: std::mem::take(&mut stretch),
                color,
                alpha: 0.2,
            }),
            _ => {}
        }
    }
    if !stretch.is_empty() {
        panel.bands.push(Band {
            points: stretch,
            color,
            alpha: 0.2,
        });
    }
    let kind = if points.len() <= 40 {
        SeriesKind::LineMarkers
    } else {
        SeriesKind::Line
    };
    panel
        .series
        .push(Series::new(group_name(g), color, points).kind(kind));
}

fn layers_x(g: &GroupSummary) -> Vec<f64> {
    g.layers.iter().map(|&l| l as f64).collect()
}

fn chart(title: &str, a: &AggregateSummary, panels: Vec<ChartPanel>, cols: usize) -> ChartFigure {
    let size = if panels.len() == 1 {
        (820.0, 460.0)
    } else {
        (520.0, 380.0)
    };
    ChartFigure {
        title: title.into(),
        subtitles: subtitles(a),
        panels,
        cols: Some(cols),
        panel_size: size,
        extra_legend: Vec::new(),
    }
}

/// Each role's share per layer: one panel per role, one line per group.
fn layer_shares(a: &AggregateSummary, _: &RenderOptions) -> Vec<Named> {
    let roles = [
        Role::Visual,
        Role::Instruction,
        Role::System,
        Role::Reasoning,
    ];
    let panels: Vec<ChartPanel> = roles
        .iter()
        .map(|role| {
            let mut panel = layer_share_panel(*role);
            for (i, g) in a.groups.iter().enumerate() {
                if let Some(stat) = g.layer_shares.get(role.name()) {
                    stat_series(g, i, &layers_x(g), stat, &mut panel);
                }
            }
            panel.y_range = Some(share_range(&panel));
            panel
        })
        .collect();
    let fig = chart(
        "Attention per layer and token role, across traces",
        a,
        panels,
        2,
    );
    vec![Named::new("aggregate_layer_shares", fig)]
}

/// A share axis from 0 to a little above the highest value drawn (intervals included).
fn share_range(p: &ChartPanel) -> (f64, f64) {
    let top = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.1))
        .chain(p.bands.iter().flat_map(|b| b.points.iter().map(|q| q.2)))
        .fold(0.0, f64::max);
    (
        0.0,
        if top > 0.0 {
            (top * 1.08).min(1.0)
        } else {
            1.0
        },
    )
}

/// Visual share against the normalised position in the generation.
fn visual_by_position(a: &AggregateSummary, _: &RenderOptions) -> Vec<Named> {
    let bins = a.position_bins.max(1);
    let xs: Vec<f64> = (0..bins).map(|b| (b as f64 + 0.5) / bins as f64).collect();
    let mut panel = ChartPanel {
        x_label: "Position in the generation (0 = first step, 1 = last)".into(),
        y_label: "Visual share (mean over layers)".into(),
        x_range: Some((0.0, 1.0)),
        ..Default::default()
    };
    for (i, g) in a.groups.iter().enumerate() {
        stat_series(g, i, &xs, &g.visual_by_position, &mut panel);
    }
    panel.y_range = Some(share_range(&panel));
    let mut fig = chart(
        "Visual share along the chain (normalised length)",
        a,
        vec![panel],
        1,
    );
    fig.subtitles.push(format!(
        "each trace's steps in {bins} equal bins of its length"
    ));
    vec![Named::new("aggregate_visual_by_position", fig)]
}

/// Visual share against the absolute step.
fn visual_by_step(a: &AggregateSummary, _: &RenderOptions) -> Vec<Named> {
    let mut panel = ChartPanel {
        x_label: "Generation step (token)".into(),
        y_label: "Visual share (mean over layers)".into(),
        x_integer: true,
        ..Default::default()
    };
    for (i, g) in a.groups.iter().enumerate() {
        let xs: Vec<f64> = (0..g.visual_by_step.mean.len()).map(|s| s as f64).collect();
        stat_series(g, i, &xs, &g.visual_by_step, &mut panel);
    }
    panel.y_range = Some(share_range(&panel));
    let mut fig = chart(
        "Visual share along the chain (absolute steps)",
        a,
        vec![panel],
        1,
    );
    fig.subtitles
        .push("at each step, the traces that reach it (fewer towards the end)".into());
    vec![Named::new("aggregate_visual_by_step", fig)]
}

/// How spread out each layer's map on the image is: entropy and top-k mass per layer.
fn spatial_spread(a: &AggregateSummary, _: &RenderOptions) -> Vec<Named> {
    let pct = (a.top_k_fraction * 100.0).round();
    let mut panels = vec![
        ChartPanel {
            title: "Spatial entropy of the map (1 = uniform)".into(),
            y_label: "Normalised entropy".into(),
            ..Default::default()
        },
        ChartPanel {
            title: format!("Mass on the top {pct}% of image tokens"),
            y_label: "Top-k mass".into(),
            ..Default::default()
        },
    ];
    for (i, g) in a.groups.iter().enumerate() {
        let xs = layers_x(g);
        stat_series(g, i, &xs, &g.spatial_entropy, &mut panels[0]);
        stat_series(g, i, &xs, &g.top_k_mass, &mut panels[1]);
    }
    for p in &mut panels {
        p.x_label = "Layer".into();
        p.x_integer = true;
    }
    let mut fig = chart("How focused each layer's map on the image is", a, panels, 2);
    fig.subtitles.push(
        "maps of different images are not averaged; their spread is (mean over all steps)".into(),
    );
    vec![Named::new("aggregate_spatial", fig)]
}

/// The columns of a decay map of `steps` steps: (x, steps averaged) in bins of at most
/// [`MAX_DECAY_COLUMNS`] columns.
fn decay_columns(steps: usize) -> Vec<(f64, std::ops::Range<usize>)> {
    let width = steps.div_ceil(MAX_DECAY_COLUMNS).max(1);
    (0..steps.div_ceil(width))
        .map(|c| {
            let r = c * width..((c + 1) * width).min(steps);
            ((r.start + r.end - 1) as f64 / 2.0, r)
        })
        .collect()
}

/// One group's decay map panel: rows deepest layer first, columns steps (binned when long).
pub fn decay_panel(g: &GroupSummary, title: String) -> MatrixPanel {
    let steps = g.decay_map.first().map_or(0, Vec::len);
    let cols = decay_columns(steps);
    let values = g
        .decay_map
        .iter()
        .rev()
        .map(|row| {
            cols.iter()
                .map(|(_, r)| row[r.clone()].iter().sum::<f64>() / r.len() as f64)
                .collect()
        })
        .collect();
    MatrixPanel {
        title,
        x: cols.iter().map(|c| c.0).collect(),
        x_labels: None,
        row_labels: g.layers.iter().rev().map(|l| l.to_string()).collect(),
        values,
    }
}

/// Layer × step heatmaps of the visual share, one panel per group on one colour scale.
fn decay_map(a: &AggregateSummary, opts: &RenderOptions) -> Vec<Named> {
    let panels: Vec<MatrixPanel> = a
        .groups
        .iter()
        .filter(|g| g.decay_map.first().is_some_and(|r| !r.is_empty()))
        .map(|g| {
            decay_panel(
                g,
                if a.groups.len() > 1 {
                    group_name(g)
                } else {
                    String::new()
                },
            )
        })
        .collect();
    if panels.is_empty() {
        return Vec::new();
    }
    let longest = a
        .groups
        .iter()
        .map(|g| g.decay_map.first().map_or(0, Vec::len))
        .max();
    let mut subs = subtitles(a);
    subs[0] = subs[0].replace(
        " · line: mean across traces · shaded: 95% interval of the mean",
        " · each cell: mean over the traces that reach the step",
    );
    if longest.unwrap_or(0) > MAX_DECAY_COLUMNS {
        subs.push(format!(
            "steps averaged in bins to at most {MAX_DECAY_COLUMNS} columns"
        ));
    }
    let fig = MatrixFigure {
        title: "Visual share by layer and generation step".into(),
        subtitles: subs,
        x_label: "Generation step (token)".into(),
        y_label: "Layer".into(),
        panels,
        colormap: opts.colormap,
        colorbar_label: "visual share of attention".into(),
        row_height: 9.0,
    };
    vec![Named::new("decay_map", fig)]
}

/// Layer × setting heatmap of the visual share (groups by setting: a budget sweep's decay).
fn decay_map_settings(a: &AggregateSummary, opts: &RenderOptions) -> Vec<Named> {
    let Some(visual) = settings_matrix(a) else {
        return Vec::new();
    };
    let (labels, values, layers) = visual;
    let n = labels.len();
    let fig = MatrixFigure {
        title: "Visual share by layer and setting".into(),
        subtitles: subtitles(a)
            .into_iter()
            .map(|s| {
                s.replace(
                    " · line: mean across traces · shaded: 95% interval of the mean",
                    " · each cell: mean across the setting's traces",
                )
            })
            .collect(),
        x_label: "Setting".into(),
        y_label: "Layer".into(),
        panels: MatrixFigure::single(MatrixPanel {
            x: (0..n).map(|i| i as f64).collect(),
            x_labels: Some(labels),
            row_labels: layers.iter().rev().map(|l| l.to_string()).collect(),
            values,
            ..Default::default()
        }),
        colormap: opts.colormap,
        colorbar_label: "visual share of attention".into(),
        row_height: 12.0,
    };
    vec![Named::new("decay_map_settings", fig)]
}

/// Setting labels, `[layers (deepest first)][settings]` visual shares and the layers, when the
/// summary is grouped by setting into at least two groups over the same layers.
fn settings_matrix(a: &AggregateSummary) -> Option<(Vec<String>, Vec<Vec<f64>>, Vec<usize>)> {
    let first = a.groups.first()?;
    if a.group_by != GroupBy::Setting || a.groups.len() < 2 {
        return None;
    }
    if a.groups.iter().any(|g| g.layers != first.layers) {
        return None;
    }
    let visual: Vec<&Stat> = a
        .groups
        .iter()
        .map(|g| g.layer_shares.get(Role::Visual.name()))
        .collect::<Option<_>>()?;
    let rows = (0..first.layers.len())
        .rev()
        .map(|l| visual.iter().map(|s| s.mean[l].unwrap_or(0.0)).collect())
        .collect();
    let labels = a.groups.iter().map(|g| g.label.clone()).collect();
    Some((labels, rows, first.layers.clone()))
}

/// The parts of a `layers` output (`allocation.json`) the figures read.
#[derive(Debug, Clone, Deserialize)]
pub struct Allocation {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub random_weights: bool,
    pub roles: Vec<String>,
    pub samples: usize,
    /// `[layers][roles]`: mean share over questions, renormalised per layer.
    pub allocation: Vec<Vec<f64>>,
    /// `[layers][roles]`: population standard deviation over questions.
    #[serde(default)]
    pub std: Vec<Vec<f64>>,
}

impl Allocation {
    /// Reads `DIR/allocation.json` (or the file itself).
    pub fn read(path: &Path) -> Result<Allocation> {
        let file = if path.is_dir() {
            path.join("allocation.json")
        } else {
            path.to_path_buf()
        };
        let text = fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read {} (an output of `rhlens layers`)",
                file.display()
            )
        })?;
        let a: Allocation = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not an allocation.json of `rhlens layers`",
                file.display()
            )
        })?;
        if a.allocation.iter().any(|r| r.len() != a.roles.len()) {
            bail!(
                "{}: every row of `allocation` must have one share per role",
                file.display()
            );
        }
        Ok(a)
    }
}

/// Figures of `layers` outputs, one line (or stacked bar panel) per model.
pub const ALLOCATION_FIGURES: &[fn(&[(String, Allocation)], &RenderOptions) -> Vec<Named>] =
    &[allocation_lines, allocation_bars];

fn allocation_subtitles(models: &[(String, Allocation)]) -> Vec<String> {
    let counts: Vec<String> = models
        .iter()
        .map(|(l, a)| format!("{l}: {} questions", a.samples))
        .collect();
    let mut line = format!(
        "prompt only, the user turn's last token · {} · shaded: ±1 standard deviation over questions",
        counts.join(", ")
    );
    if models.iter().any(|m| m.1.random_weights) {
        line.push_str(" · RANDOM WEIGHTS (demo checkpoint)");
    }
    vec![line]
}

/// The paper's layer-allocation figure as lines: one panel per role, one line per model.
fn allocation_lines(models: &[(String, Allocation)], _: &RenderOptions) -> Vec<Named> {
    let roles = [Role::Visual, Role::Instruction, Role::System];
    let panels = roles
        .iter()
        .map(|role| {
            let mut panel = layer_share_panel(*role);
            for (i, (label, a)) in models.iter().enumerate() {
                let Some(r) = a.roles.iter().position(|x| x == role.name()) else {
                    continue;
                };
                let color = series_color(i);
                let pts: Vec<(f64, f64)> = a
                    .allocation
                    .iter()
                    .enumerate()
                    .map(|(l, row)| (l as f64, row[r]))
                    .collect();
                if a.std.len() == a.allocation.len() {
                    let band = pts
                        .iter()
                        .zip(&a.std)
                        .map(|(&(x, y), s)| (x, y - s[r], y + s[r]));
                    panel.bands.push(Band {
                        points: band.collect(),
                        color,
                        alpha: 0.2,
                    });
                }
                panel
                    .series
                    .push(Series::new(label.clone(), color, pts).kind(SeriesKind::LineMarkers));
            }
            panel.y_range = Some(share_range(&panel));
            panel
        })
        .collect();
    let fig = ChartFigure {
        title: "Attention allocation per layer (prompt only)".into(),
        subtitles: allocation_subtitles(models),
        panels,
        cols: Some(3),
        panel_size: (460.0, 380.0),
        extra_legend: Vec::new(),
    };
    vec![Named::new("allocation_layers", fig)]
}

/// The paper's bars: stacked shares per layer, one panel per model.
fn allocation_bars(models: &[(String, Allocation)], _: &RenderOptions) -> Vec<Named> {
    let panels = models
        .iter()
        .map(|(label, a)| {
            let meta = TraceMeta {
                roles: a.roles.clone(),
                ..Default::default()
            };
            let x: Vec<f64> = (0..a.allocation.len()).map(|l| l as f64).collect();
            let shares =
                ndarray::Array2::from_shape_fn((a.allocation.len(), a.roles.len()), |(l, r)| {
                    a.allocation[l][r]
                });
            stack_panel(capitalise(label), &meta, &x, &shares)
        })
        .collect();
    let mut subs = allocation_subtitles(models);
    subs[0] = subs[0].replace(" · shaded: ±1 standard deviation over questions", "");
    let fig = stack_figure(
        "Attention allocation per layer (prompt only)".into(),
        subs,
        panels,
    );
    vec![Named::new("allocation_layers_bars", fig)]
}

/// An empty panel of one role's share of attention against layer.
fn layer_share_panel(role: Role) -> ChartPanel {
    ChartPanel {
        title: role_label(role.name()),
        x_label: "Layer".into(),
        y_label: "Share of attention".into(),
        x_integer: true,
        ..Default::default()
    }
}
