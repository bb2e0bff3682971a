//! Figures of the evidence metrics (`formats::evidence`), drawn from saved files only: image
//! dependence against step beside the visual share, spatial spread per layer and window, the
//! visual share with and without attention sinks, the sink-masked maps, the heads heatmap, the
//! attention inside evidence boxes, and a sweep's evidence per setting.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::charts::{
    ChartFigure, ChartPanel, MatrixFigure, MatrixPanel, Series, SeriesKind, VLine,
};
use super::draw::Swatch;
use super::figure::{AnyFigure, Named};
use super::maps::{MapFigure, MapGroup, MapPanel};
use super::output::{save, Canvas};
use super::style::{role_color, series_color, MUTED};
use super::traces::TraceView;
use super::{ColorScale, Colormap, RenderOptions, Upsample};
use crate::formats::evidence::{Dependence, Evidence, HeadKind, HeadRow, SweepEvidenceRow};
use crate::formats::spatial::mask_tokens;
use crate::formats::trace::Trace;
use crate::formats::Role;

/// What the figures of one trace are drawn from.
pub struct EvidenceSource<'a> {
    pub trace: &'a Trace,
    pub evidence: &'a Evidence,
    pub heads: Option<&'a [HeadRow]>,
    pub dependence: Option<&'a Dependence>,
}

/// Draws every evidence figure of one trace into `out`; returns the files written.
pub fn render_evidence(
    src: &EvidenceSource<'_>,
    out: &Path,
    canvas: &Canvas,
) -> Result<Vec<PathBuf>> {
    let mut notes = Vec::new();
    let view = TraceView::new(src.trace, "trace", &RenderOptions::default(), &mut notes)?;
    let mut figures: Vec<Named> = vec![spread_figure(src, &view), sinks_figure(src, &view)];
    figures.extend(spread_windows_figure(src, &view));
    figures.extend(dependence_figure(src, &view));
    figures.extend(heads_figure(src, &view));
    figures.extend(boxes_figure(src, &view));
    figures.extend(sink_free_maps(src, &view));
    save_all(&figures, out, canvas)
}

fn save_all(figures: &[Named], out: &Path, canvas: &Canvas) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut files = Vec::new();
    for f in figures {
        files.extend(save(&f.figure, &out.join(&f.stem), canvas)?);
    }
    Ok(files)
}

fn layers_x(src: &EvidenceSource<'_>) -> Vec<f64> {
    src.evidence.layers.iter().map(|&l| l as f64).collect()
}

fn points(x: &[f64], y: impl IntoIterator<Item = Option<f64>>) -> Vec<(f64, f64)> {
    x.iter()
        .zip(y)
        .filter_map(|(&x, y)| y.map(|y| (x, y)))
        .collect()
}

fn chart(title: &str, subtitles: Vec<String>, panels: Vec<ChartPanel>) -> ChartFigure {
    ChartFigure {
        title: title.into(),
        subtitles,
        panels,
        cols: None,
        panel_size: (520.0, 320.0),
        extra_legend: Vec::new(),
    }
}

fn panel(title: &str, x_label: &str, y_label: &str, series: Vec<Series>) -> ChartPanel {
    ChartPanel {
        title: title.into(),
        x_label: x_label.into(),
        y_label: y_label.into(),
        series,
        x_integer: true,
        ..Default::default()
    }
}

/// Normalised entropy and centre of mass per layer; entropy per window of steps.
fn spread_figure(src: &EvidenceSource<'_>, view: &TraceView<'_>) -> Named {
    let x = layers_x(src);
    let sp = &src.evidence.spread;
    let by_layer = |f: fn(&crate::formats::evidence::Spread) -> Option<f64>| {
        points(&x, sp.by_layer.iter().map(f))
    };
    let panels = vec![
        panel(
            "Normalised entropy of each layer's map",
            "Layer",
            "entropy (0 one token, 1 uniform)",
            vec![
                Series::new("entropy", series_color(0), by_layer(|s| s.entropy))
                    .kind(SeriesKind::LineMarkers),
            ],
        ),
        panel(
            "Centre of mass",
            "Layer",
            "fraction of width / height",
            vec![
                Series::new("x (0 left)", series_color(5), by_layer(|s| s.centre_x))
                    .kind(SeriesKind::LineMarkers),
                Series::new("y (0 top)", series_color(3), by_layer(|s| s.centre_y))
                    .kind(SeriesKind::LineMarkers),
            ],
        ),
    ];
    Named::new(
        "spread",
        chart(
            "Spatial spread of visual attention",
            view.subtitles(),
            panels,
        ),
    )
}

/// Normalised entropy per window of steps, one line per layer.
fn spread_windows_figure(src: &EvidenceSource<'_>, view: &TraceView<'_>) -> Option<Named> {
    let sp = &src.evidence.spread;
    let w = sp.window.filter(|_| !sp.by_window.is_empty())?;
    let series = src
        .evidence
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let pts = sp
                .by_window
                .iter()
                .enumerate()
                .filter_map(|(i, row)| row[l].entropy.map(|e| ((i * w) as f64, e)));
            Series::new(format!("layer {layer}"), series_color(l), pts.collect())
                .kind(SeriesKind::LineMarkers)
        })
        .collect();
    let p = panel(
        &format!("Per window of {w} steps"),
        "First step of the window",
        "normalised entropy",
        series,
    );
    Some(Named::new(
        "spread_windows",
        chart("Spatial spread along the chain", view.subtitles(), vec![p]),
    ))
}

/// Visual share per layer with and without the sink tokens.
fn sinks_figure(src: &EvidenceSource<'_>, view: &TraceView<'_>) -> Named {
    let x = layers_x(src);
    let s = &src.evidence.sinks;
    let series = vec![
        Series::new(
            "visual share",
            role_color(Some(Role::Visual)),
            points(&x, s.visual_share_by_layer.iter().map(|&v| Some(v))),
        )
        .kind(SeriesKind::LineMarkers),
        Series::new(
            "without sink tokens",
            series_color(3),
            points(&x, s.sink_free_share_by_layer.iter().map(|&v| Some(v))),
        )
        .kind(SeriesKind::Dashed),
    ];
    let mut subtitles = view.subtitles();
    subtitles.push(format!(
        "sinks: {} of {} image tokens (≥ {}× the uniform share in more than {:.0}% of layers): {}",
        s.tokens.len(),
        view.meta().visual_tokens(),
        s.rule.ratio,
        s.rule.layer_fraction * 100.0,
        token_list(&s.tokens)
    ));
    Named::new(
        "sink_free_share",
        chart(
            "Visual share with and without attention sinks",
            subtitles,
            vec![panel(
                "Mean over steps",
                "Layer",
                "attention mass on the image",
                series,
            )],
        ),
    )
}

fn token_list(tokens: &[usize]) -> String {
    if tokens.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = tokens.iter().take(12).map(|t| t.to_string()).collect();
    let more = tokens.len().saturating_sub(12);
    match more {
        0 => shown.join(", "),
        n => format!("{} and {n} more", shown.join(", ")),
    }
}

/// KL, Δ log p and the mean residual distance against step, beside the visual share.
fn dependence_figure(src: &EvidenceSource<'_>, view: &TraceView<'_>) -> Option<Named> {
    let dep = src.dependence?;
    let step_series = |f: &dyn Fn(&crate::formats::evidence::DependenceVariant) -> Vec<f64>| {
        dep.variants
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let pts = f(v).into_iter().enumerate().map(|(s, y)| (s as f64, y));
                Series::new(v.ablation.name(), series_color(i + 1), pts.collect())
            })
            .collect::<Vec<_>>()
    };
    let mean_distance = |v: &crate::formats::evidence::DependenceVariant| -> Vec<f64> {
        let layers = v.resid_cosine_distance.len().max(1) as f64;
        (0..dep.steps)
            .map(|s| v.resid_cosine_distance.iter().map(|l| l[s]).sum::<f64>() / layers)
            .collect()
    };
    let visual = visual_share_by_step(src.trace);
    let ends: Vec<VLine> = view
        .think_ends()
        .map(|x| VLine {
            x,
            color: MUTED,
            swatch: Swatch::Dashed,
            label: "end of thinking".into(),
        })
        .collect();
    let mut panels = vec![
        panel(
            "KL(with image ‖ without)",
            "Step",
            "nats",
            step_series(&|v| v.kl.clone()),
        ),
        panel(
            "Δ log p of the chosen token",
            "Step",
            "log p with − without",
            step_series(&|v| v.delta_logp.clone()),
        ),
        panel(
            "Residual cosine distance (mean over layers)",
            "Step",
            "1 − cos",
            step_series(&mean_distance),
        ),
        panel(
            "Visual share (mean over layers)",
            "Step",
            "attention mass on the image",
            vec![Series::new(
                "visual share",
                role_color(Some(Role::Visual)),
                visual,
            )],
        ),
    ];
    for p in panels.iter_mut() {
        p.vlines = ends.clone();
    }
    Some(Named::new(
        "dependence_steps",
        chart(
            "Image dependence per generated token",
            view.subtitles(),
            panels,
        ),
    ))
}

/// Mean over layers of the visual mass at each step.
fn visual_share_by_step(trace: &Trace) -> Vec<(f64, f64)> {
    let Some(v) = trace.meta.role_index(Role::Visual) else {
        return Vec::new();
    };
    let ra = &trace.arrays.role_attention;
    let (steps, layers, _) = ra.dim();
    (0..steps)
        .map(|s| {
            let m = (0..layers).map(|l| f64::from(ra[[s, l, v]])).sum::<f64>();
            (s as f64, m / layers.max(1) as f64)
        })
        .collect()
}

/// Layers × heads heatmap of the visual share during thinking; perception heads listed.
fn heads_figure(src: &EvidenceSource<'_>, view: &TraceView<'_>) -> Option<Named> {
    let rows = src.heads?;
    let heads = rows.iter().map(|r| r.head + 1).max()?;
    let layers = &src.evidence.layers;
    let mut values = vec![vec![0.0; layers.len()]; heads];
    for r in rows {
        if let Some(c) = layers.iter().position(|&l| l == r.layer) {
            values[r.head][c] = r.thinking.or(r.answer).unwrap_or(0.0);
        }
    }
    let perception: Vec<String> = rows
        .iter()
        .filter(|r| r.kind == HeadKind::Perception)
        .take(8)
        .map(|r| format!("L{}H{}", r.layer, r.head))
        .collect();
    let mut subtitles = view.subtitles();
    subtitles.push(format!(
        "perception heads (≥ mean + {} sd): {}",
        src.evidence.perception_z,
        if perception.is_empty() {
            "none".into()
        } else {
            perception.join(", ")
        }
    ));
    let fig = MatrixFigure {
        title: "Visual share per head during thinking".into(),
        subtitles,
        x_label: "Layer".into(),
        y_label: "Head".into(),
        panels: MatrixFigure::single(MatrixPanel {
            x: layers_x(src),
            row_labels: (0..heads).map(|h| h.to_string()).collect(),
            values,
            ..Default::default()
        }),
        colormap: Colormap::Viridis,
        colorbar_label: "visual share".into(),
        row_height: 26.0,
    };
    Some(Named::new("heads_thinking", AnyFigure::from(fig)))
}

/// Share of each layer's visual attention inside each box, against the box's area share.
fn boxes_figure(src: &EvidenceSource<'_>, view: &TraceView<'_>) -> Option<Named> {
    if src.evidence.boxes.is_empty() {
        return None;
    }
    let x = layers_x(src);
    let mut series = Vec::new();
    for (i, b) in src.evidence.boxes.iter().enumerate() {
        let label = format!("box {},{},{},{}", b.bx.x0, b.bx.y0, b.bx.x1, b.bx.y1);
        series.push(
            Series::new(
                label.clone(),
                series_color(i),
                points(&x, b.by_layer.iter().copied()),
            )
            .kind(SeriesKind::LineMarkers),
        );
        let flat = x.iter().map(|&l| (l, b.area_share)).collect();
        series.push(
            Series::new(format!("{label}: area share"), series_color(i), flat)
                .kind(SeriesKind::Dashed),
        );
    }
    Some(Named::new(
        "box_mass",
        chart(
            "Visual attention inside the evidence boxes",
            view.subtitles(),
            vec![panel(
                "Mean over steps",
                "Layer",
                "share of visual attention",
                series,
            )],
        ),
    ))
}

/// Each layer's map with the sink tokens masked (renormalised), when there are sinks.
fn sink_free_maps(src: &EvidenceSource<'_>, view: &TraceView<'_>) -> Option<Named> {
    let sinks = &src.evidence.sinks.tokens;
    if sinks.is_empty() {
        return None;
    }
    let [rows, cols] = src.evidence.merged_grid;
    let panels = src
        .trace
        .arrays
        .visual_attention
        .rows()
        .into_iter()
        .zip(&src.evidence.layers)
        .map(|(m, l)| MapPanel {
            title: format!("layer {l}"),
            values: mask_tokens(&m.to_vec(), sinks),
            rows,
            cols,
        })
        .collect();
    let fig = MapFigure {
        title: "Visual attention per layer, attention sinks masked".into(),
        subtitles: view.subtitles(),
        groups: vec![MapGroup {
            heading: None,
            panels,
            photo: view.photo.clone(),
        }],
        cols: None,
        colormap: Colormap::Viridis,
        upsample: Upsample::default(),
        alpha: 0.6,
        scale: ColorScale::Panel,
        colorbar_label: "attention, sinks masked".into(),
        panel_width: 220.0,
    };
    Some(Named::new("maps_sink_free", fig))
}

/// A sweep's evidence per setting: dependence and sink-free visual share against the value.
pub fn render_sweep_evidence(
    rows: &[SweepEvidenceRow],
    kind: &str,
    subtitles: Vec<String>,
    out: &Path,
    canvas: &Canvas,
) -> Result<Vec<PathBuf>> {
    let x: Vec<f64> = rows.iter().map(|r| r.value).collect();
    let share = vec![
        Series::new(
            "visual share",
            role_color(Some(Role::Visual)),
            points(&x, rows.iter().map(|r| Some(r.visual_share))),
        )
        .kind(SeriesKind::LineMarkers),
        Series::new(
            "without sinks",
            series_color(3),
            points(&x, rows.iter().map(|r| Some(r.sink_free_visual_share))),
        )
        .kind(SeriesKind::Dashed),
    ];
    let mut kl = Vec::new();
    let ablations: Vec<_> = rows
        .iter()
        .flat_map(|r| r.dependence.iter().map(|d| d.0))
        .collect();
    for (i, a) in crate::formats::evidence::ABLATIONS.iter().enumerate() {
        if !ablations.contains(a) {
            continue;
        }
        for (phase, style, pick) in [
            ("thinking", SeriesKind::LineMarkers, 0usize),
            ("answer", SeriesKind::Dashed, 1),
        ] {
            let ys = rows.iter().map(|r| r.kl(*a, pick));
            kl.push(
                Series::new(
                    format!("{} · {phase}", a.name()),
                    series_color(i + 1),
                    points(&x, ys),
                )
                .kind(style),
            );
        }
    }
    let mut panels = vec![panel(
        "Visual share (mean over steps and layers)",
        "Setting",
        "attention mass on the image",
        share,
    )];
    if !kl.is_empty() {
        panels.push(panel(
            "Image dependence: mean KL per token",
            "Setting",
            "nats",
            kl,
        ));
    }
    for p in panels.iter_mut() {
        p.x_integer = false;
        p.x_label = super::sweep::value_label(kind);
    }
    let fig = chart("Evidence per setting", subtitles, panels);
    save_all(&[Named::new("sweep_evidence", fig)], out, canvas)
}
