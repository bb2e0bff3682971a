//! A sweep run (`rhlens sweep`): its summary (schema in [`crate::formats::sweep`]) with one
//! trace per setting, and [`SWEEP_FIGURES`], the figures drawn over all its traces.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use plotters::style::RGBColor;

use super::charts::{
    ChartFigure, ChartPanel, MatrixFigure, MatrixPanel, Series, SeriesKind, VLine,
};
use super::colormap::Colormap;
use super::draw::{LegendEntry, Swatch};
use super::figure::Named;
use super::maps::{MapGroup, MapPanel};
use super::style::{ellipsize, series_color, MUTED};
use super::traces::{common_group_count, layer_list, map_figure, mean_rows, TraceView};
use super::RenderOptions;
use crate::formats::shares::LayerGroup;
use crate::formats::sweep::SweepSummary;
use crate::formats::trace::Trace;
use crate::formats::Role;

/// A sweep directory read from disk: rows sorted by value, each with its trace.
pub struct SweepRun {
    pub dir: PathBuf,
    /// The summary, limited to the rows whose trace could be read.
    pub summary: SweepSummary,
    /// The trace of every row of `summary`.
    pub traces: Vec<Trace>,
    /// Rows left out, with the reason (an unfinished or missing trace).
    pub skipped: Vec<String>,
}

/// One setting of a sweep and its rows (one per sample).
pub struct Setting {
    pub key: String,
    pub value: f64,
    /// Indices of the setting's rows.
    pub rows: Vec<usize>,
}

impl SweepRun {
    /// Reads the summary and every trace it lists. A trace that cannot be read (a setting
    /// whose run failed or was interrupted) is skipped with a note; none readable is an error.
    pub fn read(dir: &Path, allow_partial: bool) -> Result<SweepRun> {
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
        Ok(SweepRun {
            dir: dir.to_path_buf(),
            summary,
            traces,
            skipped,
        })
    }

    /// Distinct settings in value order, each with the indices of its rows (its samples).
    pub fn settings(&self) -> Vec<Setting> {
        let mut out: Vec<Setting> = Vec::new();
        for (i, r) in self.summary.rows.iter().enumerate() {
            match out.iter_mut().find(|s| s.key == r.setting) {
                Some(s) => s.rows.push(i),
                None => out.push(Setting {
                    key: r.setting.clone(),
                    value: r.value,
                    rows: vec![i],
                }),
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

/// Words for the swept quantity (axis labels) of a sweep kind.
pub fn value_label(kind: &str) -> String {
    match kind {
        "budgets" | "budget" => "Thinking budget (tokens)".into(),
        "think_chars" => "Thinking budget (characters, paper protocol)".into(),
        "waits" | "wait" => "\"Wait\" insertions".into(),
        "steer" | "steering" => "Steering weight".into(),
        other => format!("Setting value ({other})"),
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

/// A sweep as a figure source: its traces (`views[i]` is the trace of row `i`) and what every
/// sweep figure shares.
pub struct SweepFigures<'a> {
    pub run: &'a SweepRun,
    pub views: &'a [TraceView<'a>],
    pub settings: Vec<Setting>,
    /// Colour of every row: that of its setting.
    pub colors: Vec<RGBColor>,
    /// Most samples of any setting.
    pub samples: usize,
    pub subtitles: Vec<String>,
    /// Index of the visual role in the first trace.
    pub visual: Option<usize>,
}

impl<'a> SweepFigures<'a> {
    pub fn new(run: &'a SweepRun, views: &'a [TraceView<'a>], opts: &RenderOptions) -> Self {
        let settings = run.settings();
        let palette = ordered_colors(opts.colormap, settings.len());
        let mut colors = vec![palette[0]; run.summary.rows.len()];
        for (k, s) in settings.iter().enumerate() {
            for &i in &s.rows {
                colors[i] = palette[k];
            }
        }
        let first = &views[0];
        let samples = settings.iter().map(|s| s.rows.len()).max().unwrap_or(1);
        let subtitles = vec![
            first.subtitles()[0].clone(),
            format!(
                "sweep over {} ({} settings{}) · Q: \"{}\"",
                run.summary.kind,
                settings.len(),
                if samples > 1 {
                    format!(", up to {samples} samples each")
                } else {
                    String::new()
                },
                ellipsize(first.trace.meta.prompt.trim(), 80)
            ),
        ];
        SweepFigures {
            run,
            views,
            settings,
            colors,
            samples,
            subtitles,
            visual: first.trace.meta.role_index(Role::Visual),
        }
    }

    /// The setting key of row `i`.
    fn setting(&self, i: usize) -> String {
        self.run.summary.rows[i].setting.clone()
    }
}

/// A builder of sweep figures.
pub type SweepBuilder = for<'a> fn(&SweepFigures<'a>, &RenderOptions) -> Vec<Named>;

/// Figures over all traces of a sweep, in the order they are written.
pub const SWEEP_FIGURES: &[SweepBuilder] = &[
    sweep_maps,
    sweep_visual_share_by_layer,
    sweep_visual_share_matrix,
    sweep_shift_steps,
    sweep_summary,
];

/// y range from 0 to a little above the highest point.
fn y_range_to_top(series: &[Series]) -> (f64, f64) {
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    (0.0, (top * 1.12).clamp(1e-6, 1.0))
}

/// Each row's mean map of the selected layers.
fn sweep_maps(s: &SweepFigures, opts: &RenderOptions) -> Vec<Named> {
    let first = &s.views[0];
    let same_image = s.views.iter().all(|v| {
        v.trace.meta.image.path == first.trace.meta.image.path
            && v.trace.meta.image.merged_grid == first.trace.meta.image.merged_grid
    });
    let panels = s
        .views
        .iter()
        .zip(s.run.row_labels())
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
    let group = MapGroup {
        heading: None,
        panels,
        photo: if same_image {
            first.photo.clone()
        } else {
            None
        },
    };
    let title = "Visual attention per setting (mean of the selected layers)".to_string();
    let fig = map_figure(title, s.subtitles.clone(), vec![group], opts, 260.0);
    vec![Named::new("sweep_maps", fig)]
}

/// Visual share by layer: one line per row, coloured by setting.
fn sweep_visual_share_by_layer(s: &SweepFigures, _: &RenderOptions) -> Vec<Named> {
    let Some(vi) = s.visual else {
        return Vec::new();
    };
    let series: Vec<Series> = s
        .views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.trace.meta.steps > 0)
        .map(|(i, v)| {
            let gs = v.generation_shares(&v.positions);
            let column = gs.column(vi);
            let points = v.layers_x().into_iter().zip(column.iter().copied());
            let series = Series::new(s.setting(i), s.colors[i], points.collect());
            series.kind(SeriesKind::LineMarkers)
        })
        .collect();
    if series.is_empty() {
        return Vec::new();
    }
    let fig = ChartFigure {
        title: "Share of attention on the image by layer, per setting".into(),
        subtitles: s.subtitles.clone(),
        panels: vec![ChartPanel {
            x_label: "Layer".into(),
            y_label: "Visual share (mean over steps)".into(),
            y_range: Some(y_range_to_top(&series)),
            series,
            x_integer: true,
            ..Default::default()
        }],
        cols: Some(1),
        panel_size: (860.0, 460.0),
        extra_legend: Vec::new(),
    };
    vec![Named::new("sweep_visual_share_by_layer", fig)]
}

/// Layer × setting matrix of the visual share, samples averaged (rows whose layers differ from
/// the first row's are left out).
fn sweep_visual_share_matrix(s: &SweepFigures, opts: &RenderOptions) -> Vec<Named> {
    let Some(vi) = s.visual else {
        return Vec::new();
    };
    let x_layers = s.views[0].layers_x();
    let mut matrix: Vec<(String, Vec<f64>)> = Vec::new();
    for setting in &s.settings {
        let usable: Vec<&TraceView> = setting
            .rows
            .iter()
            .map(|&i| &s.views[i])
            .filter(|v| v.trace.meta.steps > 0 && v.layers_x() == x_layers)
            .collect();
        if usable.is_empty() {
            continue;
        }
        let mut acc = vec![0.0; x_layers.len()];
        for v in &usable {
            let gs = v.generation_shares(&v.positions);
            for (a, share) in acc.iter_mut().zip(gs.column(vi).iter()) {
                *a += share / usable.len() as f64;
            }
        }
        matrix.push((setting.key.clone(), acc));
    }
    if matrix.is_empty() {
        return Vec::new();
    }
    let fig = MatrixFigure {
        title: "Visual share per layer and setting".into(),
        subtitles: s.subtitles.clone(),
        x_label: "Layer".into(),
        y_label: value_label(&s.run.summary.kind),
        panels: MatrixFigure::single(MatrixPanel {
            x: x_layers,
            row_labels: matrix.iter().map(|m| m.0.clone()).collect(),
            values: matrix.into_iter().map(|m| m.1).collect(),
            ..Default::default()
        }),
        row_height: 26.0,
        colormap: opts.colormap,
        colorbar_label: if s.samples > 1 {
            "visual share (mean over samples)".into()
        } else {
            "visual share".into()
        },
    };
    vec![Named::new("sweep_visual_share_matrix", fig)]
}

/// Visual share along the chain, one line per row, one panel per depth group.
fn sweep_shift_steps(s: &SweepFigures, opts: &RenderOptions) -> Vec<Named> {
    let Some(vi) = s.visual else {
        return Vec::new();
    };
    let stepped: Vec<usize> = (0..s.views.len())
        .filter(|&i| s.views[i].trace.meta.steps >= 2)
        .collect();
    if stepped.is_empty() {
        return Vec::new();
    }
    let n_groups = common_group_count(stepped.iter().map(|&i| &s.views[i]));
    let depth = [LayerGroup::Early, LayerGroup::Middle, LayerGroup::Late];
    let mut panels = Vec::new();
    for g in 0..n_groups {
        let mut series = Vec::new();
        let mut vlines = Vec::new();
        let mut span = String::new();
        for &i in &stepped {
            let v = &s.views[i];
            let curve = v.shift_curve(vi, g, opts.window);
            span = layer_list(
                &curve
                    .positions
                    .iter()
                    .map(|&p| v.layer(p))
                    .collect::<Vec<_>>(),
            );
            series.push(Series::new(s.setting(i), s.colors[i], curve.points));
            vlines.extend(v.think_ends().map(|x| VLine {
                x,
                color: s.colors[i],
                swatch: Swatch::Dotted,
                label: String::new(),
            }));
        }
        panels.push(ChartPanel {
            title: if n_groups == 1 {
                format!("Layers {span}")
            } else {
                format!("{} layers ({span})", capitalised(depth[g]))
            },
            x_label: "Generation step (token)".into(),
            y_label: "Visual share".into(),
            y_range: Some(y_range_to_top(&series)),
            series,
            vlines,
            x_integer: true,
            ..Default::default()
        });
    }
    let mut subtitles = s.subtitles.clone();
    subtitles.push("rolling mean; dotted lines: end of thinking in the setting's colour".into());
    let fig = ChartFigure {
        title: "Visual share along the reasoning chain, per setting".into(),
        subtitles,
        panels,
        cols: Some(1),
        panel_size: (900.0, 280.0),
        extra_legend: Vec::new(),
    };
    vec![Named::new("sweep_shift_steps", fig)]
}

fn capitalised(g: LayerGroup) -> String {
    super::traces::capitalise(g.name())
}

/// Mean visual share (over steps and the group's layers) per setting, one series per depth
/// group.
fn visual_share_by_depth(s: &SweepFigures, vi: usize) -> Vec<Series> {
    let n_groups = common_group_count(s.views.iter());
    let depth = [LayerGroup::Early, LayerGroup::Middle, LayerGroup::Late];
    (0..n_groups)
        .map(|g| {
            let mut pts = Vec::new();
            for setting in &s.settings {
                let vals: Vec<f64> = setting
                    .rows
                    .iter()
                    .map(|&i| &s.views[i])
                    .filter(|v| v.trace.meta.steps > 0)
                    .map(|v| {
                        let groups = v.layer_groups();
                        let ps = &groups[g.min(groups.len() - 1)].1;
                        let gs = v.generation_shares(ps);
                        gs.column(vi).iter().sum::<f64>() / ps.len().max(1) as f64
                    })
                    .collect();
                if !vals.is_empty() {
                    pts.push((setting.value, vals.iter().sum::<f64>() / vals.len() as f64));
                }
            }
            let name = if n_groups == 1 {
                "selected layers".to_string()
            } else {
                format!("{} layers", depth[g].name())
            };
            Series::new(name, series_color(g), pts).kind(SeriesKind::LineMarkers)
        })
        .collect()
}

/// Thinking length and visual share by depth against the setting value.
fn sweep_summary(s: &SweepFigures, _: &RenderOptions) -> Vec<Named> {
    let Some(vi) = s.visual else {
        return Vec::new();
    };
    let rows = &s.run.summary.rows;
    let think_all: Vec<(f64, f64)> = s
        .views
        .iter()
        .zip(rows)
        .map(|(v, r)| {
            let think = r.think_tokens.unwrap_or(v.trace.meta.think_tokens);
            (r.value, think as f64)
        })
        .collect();
    let think_mean: Vec<(f64, f64)> = s
        .settings
        .iter()
        .map(|st| {
            let sum = st.rows.iter().map(|&i| think_all[i].1).sum::<f64>();
            (st.value, sum / st.rows.len() as f64)
        })
        .collect();
    let mut think_series = vec![Series::new("thinking tokens", MUTED, think_mean)
        .kind(SeriesKind::LineMarkers)
        .hidden()];
    if s.samples > 1 {
        think_series.push(
            Series::new("samples", MUTED, think_all)
                .kind(SeriesKind::Markers)
                .hidden(),
        );
    }
    let integer_values = s.settings.iter().all(|st| st.value.fract() == 0.0);
    let x_label = value_label(&s.run.summary.kind);
    let panel = |title: &str, y_label: &str, series| ChartPanel {
        title: title.into(),
        x_label: x_label.clone(),
        y_label: y_label.into(),
        series,
        x_integer: integer_values,
        ..Default::default()
    };
    let fig = ChartFigure {
        title: "Thinking length and visual attention across the sweep".into(),
        subtitles: s.subtitles.clone(),
        panels: vec![
            panel("Thinking tokens", "Thinking tokens", think_series),
            panel(
                "Visual share (mean over steps and layers)",
                "Visual share",
                visual_share_by_depth(s, vi),
            ),
        ],
        cols: Some(2),
        panel_size: (520.0, 400.0),
        extra_legend: vec![LegendEntry::new(
            if s.samples > 1 {
                "thinking tokens (mean over samples)"
            } else {
                "thinking tokens"
            },
            MUTED,
            Swatch::LineMarker,
        )],
    };
    vec![Named::new("sweep_summary", fig)]
}
