//! A sweep directory (`rhlens sweep`): `summary.json` listing one trace per setting, and the
//! figures drawn over all its traces.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::style::RGBColor;
use serde::{Deserialize, Serialize};

use super::charts::{ChartFigure, ChartPanel, MatrixFigure, Series, SeriesKind, VLine};
use super::colormap::Colormap;
use super::draw::{LegendEntry, Swatch};
use super::maps::{MapFigure, MapGroup, MapPanel};
use super::output::save;
use super::style::{ellipsize, series_color, MUTED};
use super::traces::{
    auto_window, generation_shares, layer_groups, layer_list, mean_rows, rolling_mean,
    step_role_shares, TraceView,
};
use super::{RenderOptions, Rendered};
use crate::formats::trace::{EventKind, Trace};
use crate::formats::Role;

/// File name of a sweep's summary.
pub const SUMMARY_FILE: &str = "summary.json";

/// `summary.json` of a sweep directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// `budgets`, `waits` or `steer`.
    pub kind: String,
    pub rows: Vec<SweepRow>,
}

/// One setting of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// Setting key, e.g. `budget=100`.
    pub setting: String,
    /// The number it stands for (budget, waits, steering weight).
    pub value: f64,
    /// Sample index when several generations were drawn per setting.
    #[serde(default)]
    pub sample: Option<usize>,
    /// Trace directory, relative to the sweep directory.
    pub trace: String,
    #[serde(default)]
    pub think_tokens: Option<usize>,
    #[serde(default)]
    pub answer: String,
    #[serde(default)]
    pub stop_reason: String,
    /// Other fields, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl SweepSummary {
    pub fn read(dir: &Path) -> Result<SweepSummary> {
        let path = dir.join(SUMMARY_FILE);
        if !path.is_file() {
            bail!(
                "{} is not a sweep directory: {SUMMARY_FILE} is missing",
                dir.display()
            );
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let s: SweepSummary = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid sweep summary", path.display()))?;
        if s.rows.is_empty() {
            bail!("{}: the sweep lists no settings", path.display());
        }
        Ok(s)
    }

    /// Words for the swept quantity (axis labels).
    pub fn value_label(&self) -> String {
        match self.kind.as_str() {
            "budgets" | "budget" => "Thinking budget (tokens)".into(),
            "waits" | "wait" => "\"Wait\" insertions".into(),
            "steer" | "steering" => "Steering weight".into(),
            other => format!("Setting value ({other})"),
        }
    }
}

/// A sweep read from disk: rows sorted by value, each with its trace.
pub struct Sweep {
    pub dir: PathBuf,
    /// The summary, limited to the rows whose trace could be read.
    pub summary: SweepSummary,
    /// The trace of every row of `summary`.
    pub traces: Vec<Trace>,
    /// Rows left out, with the reason (an unfinished or missing trace).
    pub skipped: Vec<String>,
}

impl Sweep {
    /// Reads the summary and every trace it lists. A trace that cannot be read (a setting
    /// whose run failed or was interrupted) is skipped with a note; none readable is an error.
    pub fn read(dir: &Path, allow_partial: bool) -> Result<Sweep> {
        let mut summary = SweepSummary::read(dir)?;
        summary
            .rows
            .sort_by(|a, b| a.value.total_cmp(&b.value).then(a.sample.cmp(&b.sample)));
        let mut traces = Vec::new();
        let mut rows = Vec::new();
        let mut skipped = Vec::new();
        for row in summary.rows {
            let tdir = dir.join(&row.trace);
            let t = if allow_partial {
                Trace::read_allow_partial(&tdir)
            } else {
                Trace::read(&tdir)
            };
            match t {
                Ok(t) => {
                    traces.push(t);
                    rows.push(row);
                }
                Err(e) => skipped.push(format!("sweep setting {} left out: {e}", row.setting)),
            }
        }
        if rows.is_empty() {
            bail!(
                "{}: no trace of the sweep could be read ({})",
                dir.display(),
                skipped.join("; ")
            );
        }
        summary.rows = rows;
        Ok(Sweep {
            dir: dir.to_path_buf(),
            summary,
            traces,
            skipped,
        })
    }
}

impl Sweep {
    /// Distinct settings in value order, each with the indices of its rows (its samples).
    pub fn settings(&self) -> Vec<(String, f64, Vec<usize>)> {
        let mut out: Vec<(String, f64, Vec<usize>)> = Vec::new();
        for (i, r) in self.summary.rows.iter().enumerate() {
            match out.iter_mut().find(|s| s.0 == r.setting) {
                Some(s) => s.2.push(i),
                None => out.push((r.setting.clone(), r.value, vec![i])),
            }
        }
        out
    }

    /// A unique name per row: the setting, plus the sample when a setting has several.
    pub fn row_labels(&self) -> Vec<String> {
        let rows = &self.summary.rows;
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                if rows.iter().filter(|x| x.setting == r.setting).count() > 1 {
                    format!("{} sample {}", r.setting, r.sample.unwrap_or(i))
                } else {
                    r.setting.clone()
                }
            })
            .collect()
    }
}

/// Colours for ordered settings: the sequential colormap from dark to light, stopping short of
/// the lightest end so that lines stay visible on white.
pub fn ordered_colors(cmap: Colormap, n: usize) -> Vec<RGBColor> {
    (0..n)
        .map(|i| {
            let t = if n <= 1 {
                0.0
            } else {
                0.85 * i as f64 / (n - 1) as f64
            };
            let [r, g, b] = cmap.rgb(t);
            RGBColor(r, g, b)
        })
        .collect()
}

/// File-name-safe form of a setting key.
pub fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "setting".into()
    } else {
        out
    }
}

/// Figures over all traces of a sweep, into `out`. `views[i]` is the trace of row `i`.
pub fn render_sweep_figures(
    sweep: &Sweep,
    views: &[TraceView],
    out: &Path,
    opts: &RenderOptions,
    done: &mut Rendered,
) -> Result<()> {
    let canvas = &opts.canvas;
    let rows = &sweep.summary.rows;
    let settings = sweep.settings();
    let palette = ordered_colors(opts.colormap, settings.len());
    // Colour of every row: that of its setting.
    let mut colors = vec![palette[0]; rows.len()];
    for (k, (_, _, idx)) in settings.iter().enumerate() {
        for &i in idx {
            colors[i] = palette[k];
        }
    }
    let labels = sweep.row_labels();
    let first = &views[0];
    let samples = settings.iter().map(|s| s.2.len()).max().unwrap_or(1);
    let subs = vec![
        first.subtitles()[0].clone(),
        format!(
            "sweep over {} ({} settings{}) · Q: \"{}\"",
            sweep.summary.kind,
            settings.len(),
            if samples > 1 {
                format!(", up to {samples} samples each")
            } else {
                String::new()
            },
            ellipsize(first.trace.meta.prompt.trim(), 80)
        ),
    ];
    let value_label = sweep.summary.value_label();
    // per-row maps (mean of the selected layers)
    let same_image = views.iter().all(|v| {
        v.trace.meta.image.path == first.trace.meta.image.path
            && v.trace.meta.image.merged_grid == first.trace.meta.image.merged_grid
    });
    let panels = views
        .iter()
        .zip(&labels)
        .map(|(v, label)| {
            let [gr, gc] = v.trace.meta.image.merged_grid;
            MapPanel {
                title: format!(
                    "{label} · {} think · \"{}\"",
                    v.trace.meta.think_tokens,
                    ellipsize(v.trace.meta.answer.trim(), 12)
                ),
                values: mean_rows(v.trace.arrays.visual_attention.view(), &v.positions),
                rows: gr,
                cols: gc,
            }
        })
        .collect();
    let fig = MapFigure {
        title: "Visual attention per setting (mean of the selected layers)".into(),
        subtitles: subs.clone(),
        groups: vec![MapGroup {
            heading: None,
            panels,
            photo: if same_image {
                first.photo.clone()
            } else {
                None
            },
        }],
        cols: None,
        colormap: opts.colormap,
        upsample: opts.upsample,
        alpha: opts.alpha,
        scale: opts.color_scale,
        colorbar_label: "attention (head mean)".into(),
        panel_width: 260.0,
    };
    done.files
        .extend(save(&fig, &out.join("sweep_maps"), canvas)?);

    let Some(vi) = first.trace.meta.role_index(Role::Visual) else {
        return Ok(());
    };
    let layer_x = |v: &TraceView| -> Vec<f64> {
        v.positions
            .iter()
            .map(|&p| v.trace.meta.layers[p] as f64)
            .collect()
    };
    // visual share by layer: one line per row, coloured by setting
    let mut series = Vec::new();
    for (i, v) in views.iter().enumerate() {
        if v.trace.meta.steps == 0 {
            continue;
        }
        let gs = generation_shares(v.trace, &v.positions);
        series.push(
            Series::new(
                rows[i].setting.clone(),
                colors[i],
                layer_x(v)
                    .into_iter()
                    .zip(gs.column(vi).iter().copied())
                    .collect(),
            )
            .kind(SeriesKind::LineMarkers),
        );
    }
    if !series.is_empty() {
        let top = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let fig = ChartFigure {
            title: "Share of attention on the image by layer, per setting".into(),
            subtitles: subs.clone(),
            panels: vec![ChartPanel {
                x_label: "Layer".into(),
                y_label: "Visual share (mean over steps)".into(),
                series,
                y_range: Some((0.0, (top * 1.12).clamp(1e-6, 1.0))),
                x_integer: true,
                ..Default::default()
            }],
            cols: Some(1),
            panel_size: (860.0, 460.0),
            extra_legend: Vec::new(),
        };
        done.files.extend(save(
            &fig,
            &out.join("sweep_visual_share_by_layer"),
            canvas,
        )?);
    }
    // layer × setting matrix, samples averaged (rows whose layers differ from the first are left out)
    let x_layers = layer_x(first);
    let mut matrix: Vec<(String, Vec<f64>)> = Vec::new();
    for (setting, _, idx) in &settings {
        let usable: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| views[i].trace.meta.steps > 0 && layer_x(&views[i]) == x_layers)
            .collect();
        if usable.is_empty() {
            continue;
        }
        let mut acc = vec![0.0; x_layers.len()];
        for &i in &usable {
            let gs = generation_shares(views[i].trace, &views[i].positions);
            for (a, v) in acc.iter_mut().zip(gs.column(vi).iter()) {
                *a += v / usable.len() as f64;
            }
        }
        matrix.push((setting.clone(), acc));
    }
    if !matrix.is_empty() {
        let fig = MatrixFigure {
            title: "Visual share per layer and setting".into(),
            subtitles: subs.clone(),
            x_label: "Layer".into(),
            y_label: value_label.clone(),
            x: x_layers,
            row_labels: matrix.iter().map(|m| m.0.clone()).collect(),
            values: matrix.into_iter().map(|m| m.1).collect(),
            colormap: opts.colormap,
            colorbar_label: if samples > 1 {
                "visual share (mean over samples)".into()
            } else {
                "visual share".into()
            },
        };
        done.files
            .extend(save(&fig, &out.join("sweep_visual_share_matrix"), canvas)?);
    }
    // visual share along the chain, one line per row, panels by depth
    let stepped: Vec<usize> = (0..views.len())
        .filter(|&i| views[i].trace.meta.steps >= 2)
        .collect();
    if !stepped.is_empty() {
        let n_groups = stepped
            .iter()
            .map(|&i| layer_groups(&views[i].positions).len())
            .min()
            .unwrap_or(1);
        let depth = ["Early", "Middle", "Late"];
        let mut panels = Vec::new();
        for g in 0..n_groups {
            let mut series = Vec::new();
            let mut vlines = Vec::new();
            let mut span = String::new();
            for &i in &stepped {
                let v = &views[i];
                let groups = layer_groups(&v.positions);
                let ps = &groups[g.min(groups.len() - 1)].1;
                span = layer_list(
                    &ps.iter()
                        .map(|&p| v.trace.meta.layers[p])
                        .collect::<Vec<_>>(),
                );
                let shares = step_role_shares(v.trace, ps);
                let sm = rolling_mean(
                    &shares.column(vi).to_vec(),
                    auto_window(v.trace.meta.steps, opts.window),
                );
                series.push(Series::new(
                    rows[i].setting.clone(),
                    colors[i],
                    sm.iter().enumerate().map(|(s, &y)| (s as f64, y)).collect(),
                ));
                for e in
                    v.trace.meta.events.iter().filter(|e| {
                        matches!(e.kind, EventKind::ThinkEnd | EventKind::ForcedThinkEnd)
                    })
                {
                    vlines.push(VLine {
                        x: e.step as f64,
                        color: colors[i],
                        swatch: Swatch::Dotted,
                        label: String::new(),
                    });
                }
            }
            let top = series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .fold(0.0, f64::max);
            panels.push(ChartPanel {
                title: if n_groups == 1 {
                    format!("Layers {span}")
                } else {
                    format!("{} layers ({span})", depth[g])
                },
                x_label: "Generation step (token)".into(),
                y_label: "Visual share".into(),
                series,
                vlines,
                y_range: Some((0.0, (top * 1.12).clamp(1e-6, 1.0))),
                x_integer: true,
                ..Default::default()
            });
        }
        let fig = ChartFigure {
            title: "Visual share along the reasoning chain, per setting".into(),
            subtitles: {
                let mut s = subs.clone();
                s.push(
                    "rolling mean; dotted lines: end of thinking in the setting's colour".into(),
                );
                s
            },
            panels,
            cols: Some(1),
            panel_size: (900.0, 280.0),
            extra_legend: Vec::new(),
        };
        done.files
            .extend(save(&fig, &out.join("sweep_shift_steps"), canvas)?);
    }
    // summary: thinking length and visual share by depth against the setting value
    let think_all: Vec<(f64, f64)> = views
        .iter()
        .zip(rows)
        .map(|(v, r)| {
            (
                r.value,
                r.think_tokens.unwrap_or(v.trace.meta.think_tokens) as f64,
            )
        })
        .collect();
    let think_mean: Vec<(f64, f64)> = settings
        .iter()
        .map(|(_, value, idx)| {
            let m = idx.iter().map(|&i| think_all[i].1).sum::<f64>() / idx.len() as f64;
            (*value, m)
        })
        .collect();
    let n_groups = views
        .iter()
        .map(|v| layer_groups(&v.positions).len())
        .min()
        .unwrap_or(1);
    let mut share_series = Vec::new();
    for g in 0..n_groups {
        let mut pts = Vec::new();
        for (_, value, idx) in &settings {
            let vals: Vec<f64> = idx
                .iter()
                .filter(|&&i| views[i].trace.meta.steps > 0)
                .map(|&i| {
                    let v = &views[i];
                    let groups = layer_groups(&v.positions);
                    let ps = &groups[g.min(groups.len() - 1)].1;
                    let gs = generation_shares(v.trace, ps);
                    gs.column(vi).iter().sum::<f64>() / ps.len().max(1) as f64
                })
                .collect();
            if !vals.is_empty() {
                pts.push((*value, vals.iter().sum::<f64>() / vals.len() as f64));
            }
        }
        let name = if n_groups == 1 {
            "selected layers".to_string()
        } else {
            format!("{} layers", ["early", "middle", "late"][g])
        };
        share_series.push(Series::new(name, series_color(g), pts).kind(SeriesKind::LineMarkers));
    }
    let mut think_series = vec![Series::new("thinking tokens", MUTED, think_mean)
        .kind(SeriesKind::LineMarkers)
        .hidden()];
    if samples > 1 {
        think_series.push(
            Series::new("samples", MUTED, think_all)
                .kind(SeriesKind::Markers)
                .hidden(),
        );
    }
    let integer_values = settings.iter().all(|s| s.1.fract() == 0.0);
    let fig = ChartFigure {
        title: "Thinking length and visual attention across the sweep".into(),
        subtitles: subs,
        panels: vec![
            ChartPanel {
                title: "Thinking tokens".into(),
                x_label: value_label.clone(),
                y_label: "Thinking tokens".into(),
                series: think_series,
                x_integer: integer_values,
                ..Default::default()
            },
            ChartPanel {
                title: "Visual share (mean over steps and layers)".into(),
                x_label: value_label,
                y_label: "Visual share".into(),
                series: share_series,
                x_integer: integer_values,
                ..Default::default()
            },
        ],
        cols: Some(2),
        panel_size: (520.0, 400.0),
        extra_legend: vec![LegendEntry::new(
            if samples > 1 {
                "thinking tokens (mean over samples)"
            } else {
                "thinking tokens"
            },
            MUTED,
            Swatch::LineMarker,
        )],
    };
    done.files
        .extend(save(&fig, &out.join("sweep_summary"), canvas)?);
    Ok(())
}
