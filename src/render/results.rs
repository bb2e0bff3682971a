//! Benchmark metrics files and the figures drawn from them: RH-AUC curves, accuracy against
//! reasoning length, and reasoning against perception across models.
//!
//! A metrics file is CSV (header row) or JSON (an array of rows, an object with a `rows` array,
//! or JSON lines) with the columns `model, setting, setting_value, reasoning, perception,
//! hallucination, mean_think_tokens, n_reasoning, n_perception, scorer`; accuracies are
//! fractions in [0, 1]. `setting` is a key such as `budget=100`: rows of one model whose keys
//! share the part before `=` form one sweep (one RH-AUC).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::charts::{Annotation, ChartFigure, ChartPanel, Fill, Series, SeriesKind};
use super::draw::{LegendEntry, Swatch};
use super::figure::Named;
use super::pchip::Pchip;
use super::style::{series_color, MUTED};
use super::RenderOptions;
pub use crate::bench::metrics::trapezoid;
use crate::bench::metrics::{self, RhAucError};

/// One row of a metrics file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    pub model: String,
    pub setting: String,
    #[serde(default)]
    pub setting_value: Option<f64>,
    #[serde(default)]
    pub reasoning: Option<f64>,
    #[serde(default)]
    pub perception: Option<f64>,
    #[serde(default)]
    pub hallucination: Option<f64>,
    #[serde(default)]
    pub mean_think_tokens: Option<f64>,
    #[serde(default)]
    pub n_reasoning: Option<u64>,
    #[serde(default)]
    pub n_perception: Option<u64>,
    #[serde(default)]
    pub scorer: Option<String>,
}

impl MetricsRow {
    /// The sweep a row belongs to: the part of `setting` before `=` (`budget` in `budget=100`).
    pub fn setting_kind(&self) -> &str {
        self.setting.split('=').next().unwrap_or("").trim()
    }
}

/// Reads a metrics file (CSV by extension `.csv`, otherwise JSON / JSON lines).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read metrics file {}", path.display()))?;
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let rows = if is_csv {
        parse_metrics_csv(&text)
    } else {
        parse_metrics_json(&text)
    }
    .with_context(|| format!("{}", path.display()))?;
    for (i, r) in rows.iter().enumerate() {
        for (name, v) in [
            ("reasoning", r.reasoning),
            ("perception", r.perception),
            ("hallucination", r.hallucination),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    bail!(
                        "{}: row {} ({} {}): {name} accuracy {v} is outside 0–1 (accuracies are fractions)",
                        path.display(),
                        i + 1,
                        r.model,
                        r.setting
                    );
                }
            }
        }
    }
    Ok(rows)
}

/// Parses the JSON forms of a metrics file.
pub fn parse_metrics_json(text: &str) -> Result<Vec<MetricsRow>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(text).context("not a JSON array of metrics rows");
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        if let Some(rows) = v.get("rows") {
            return serde_json::from_value(rows.clone()).context("invalid `rows` array");
        }
        if v.is_object() {
            return serde_json::from_value(v)
                .map(|r| vec![r])
                .context("not a metrics row");
        }
    }
    // JSON lines.
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("line {}: not a metrics row", i + 1))
        })
        .collect()
}

/// Splits CSV text into records (RFC 4180: quoted fields, doubled quotes, CRLF).
pub fn split_csv(text: &str) -> Result<Vec<Vec<String>>> {
    crate::bench::parse_csv(text).map_err(|e| anyhow::anyhow!(e))
}

/// Parses a CSV metrics file with a header row (column order free; unknown columns ignored).
pub fn parse_metrics_csv(text: &str) -> Result<Vec<MetricsRow>> {
    let records = split_csv(text)?;
    let Some((header, body)) = records.split_first() else {
        bail!("empty CSV file");
    };
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(model_c), Some(setting_c)) = (col("model"), col("setting")) else {
        bail!("CSV header must name at least the columns `model` and `setting`");
    };
    let mut rows = Vec::new();
    for (i, rec) in body.iter().enumerate() {
        let line = i + 2;
        let get = |c: Option<usize>| -> Option<&str> {
            c.and_then(|c| rec.get(c))
                .map(|s| s.trim())
                .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("null") && *s != "NaN")
        };
        let num = |name: &str| -> Result<Option<f64>> {
            get(col(name))
                .map(|s| {
                    s.parse::<f64>().with_context(|| {
                        format!("line {line}: column {name}: {s:?} is not a number")
                    })
                })
                .transpose()
        };
        let int = |name: &str| -> Result<Option<u64>> {
            get(col(name))
                .map(|s| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| *v >= 0.0 && v.fract() == 0.0)
                        .map(|v| v as u64)
                        .with_context(|| {
                            format!("line {line}: column {name}: {s:?} is not a count")
                        })
                })
                .transpose()
        };
        let model = get(Some(model_c))
            .with_context(|| format!("line {line}: empty model"))?
            .to_string();
        rows.push(MetricsRow {
            model,
            setting: get(Some(setting_c)).unwrap_or("").to_string(),
            setting_value: num("setting_value")?,
            reasoning: num("reasoning")?,
            perception: num("perception")?,
            hallucination: num("hallucination")?,
            mean_think_tokens: num("mean_think_tokens")?,
            n_reasoning: int("n_reasoning")?,
            n_perception: int("n_perception")?,
            scorer: get(col("scorer")).map(|s| s.to_string()),
        });
    }
    Ok(rows)
}

/// Why RH-AUC has no value, in the short words of figure titles and notes (the reasons of
/// [`metrics::RhAucError`], which computes it).
#[derive(Debug, Clone, PartialEq)]
pub enum RhAucUndefined {
    /// Fewer than two settings with both accuracies.
    TooFewSettings(usize),
    /// Every reasoning accuracy is the same (nothing to integrate over).
    ConstantReasoning,
    /// Every perception accuracy is the same (min–max normalisation undefined).
    ConstantPerception,
    /// An accuracy is NaN or infinite.
    NotFinite,
}

impl From<RhAucError> for RhAucUndefined {
    fn from(e: RhAucError) -> Self {
        match e {
            RhAucError::TooFewPoints(n) => RhAucUndefined::TooFewSettings(n),
            RhAucError::FlatReasoning(_) => RhAucUndefined::ConstantReasoning,
            RhAucError::FlatPerception(_) => RhAucUndefined::ConstantPerception,
            RhAucError::NotFinite(_) => RhAucUndefined::NotFinite,
        }
    }
}

impl fmt::Display for RhAucUndefined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RhAucUndefined::TooFewSettings(n) => {
                write!(f, "needs at least two settings, got {n}")
            }
            RhAucUndefined::ConstantReasoning => f.write_str("all reasoning accuracies are equal"),
            RhAucUndefined::ConstantPerception => {
                f.write_str("all perception accuracies are equal")
            }
            RhAucUndefined::NotFinite => f.write_str("an accuracy is not a finite number"),
        }
    }
}

/// Min–max normalised (reasoning, perception) points sorted by reasoning (ties by perception):
/// [`metrics::normalized_curve`].
pub fn normalised_points(points: &[(f64, f64)]) -> Result<Vec<(f64, f64)>, RhAucUndefined> {
    metrics::normalized_curve(points).map_err(RhAucUndefined::from)
}

/// RH-AUC of (reasoning accuracy, perception accuracy) points, one per setting:
/// [`metrics::rh_auc`].
pub fn rh_auc(points: &[(f64, f64)]) -> Result<f64, RhAucUndefined> {
    metrics::rh_auc(points)
        .map(|v| v.rh_auc)
        .map_err(RhAucUndefined::from)
}

fn min_max(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// Rows of one model's sweep.
#[derive(Debug, Clone)]
pub struct MetricsGroup {
    pub model: String,
    /// The setting kind (`budget`, `steer`, ...), empty when the keys have none.
    pub kind: String,
    pub rows: Vec<MetricsRow>,
    /// Shown in titles: the model, plus the kind when the model has several sweeps.
    pub label: String,
    /// Colour index of the model.
    pub color: usize,
}

/// Groups rows by model (in first-seen order) and setting kind. A kind with a single row is
/// folded into the model's other rows only when the model has no sweep of its own.
pub fn group_metrics(rows: &[MetricsRow]) -> Vec<MetricsGroup> {
    let mut models: Vec<String> = Vec::new();
    let mut by: BTreeMap<(usize, String), Vec<MetricsRow>> = BTreeMap::new();
    for r in rows {
        let mi = match models.iter().position(|m| *m == r.model) {
            Some(i) => i,
            None => {
                models.push(r.model.clone());
                models.len() - 1
            }
        };
        by.entry((mi, r.setting_kind().to_string()))
            .or_default()
            .push(r.clone());
    }
    let mut out = Vec::new();
    for (mi, model) in models.iter().enumerate() {
        let kinds: Vec<(&String, &Vec<MetricsRow>)> = by
            .iter()
            .filter(|((m, _), _)| *m == mi)
            .map(|((_, k), v)| (k, v))
            .collect();
        let multi: Vec<_> = kinds.iter().filter(|(_, v)| v.len() >= 2).collect();
        if multi.is_empty() {
            // No sweep: one group of everything the model has.
            let rows: Vec<MetricsRow> = kinds.iter().flat_map(|(_, v)| v.iter().cloned()).collect();
            let kind = if kinds.len() == 1 {
                kinds[0].0.clone()
            } else {
                String::new()
            };
            out.push(MetricsGroup {
                model: model.clone(),
                kind,
                rows,
                label: model.clone(),
                color: mi,
            });
        } else {
            for (k, v) in &multi {
                let label = if multi.len() > 1 && !k.is_empty() {
                    format!("{model} ({k})")
                } else {
                    model.clone()
                };
                out.push(MetricsGroup {
                    model: model.clone(),
                    kind: (*k).clone(),
                    rows: (*v).clone(),
                    label,
                    color: mi,
                });
            }
        }
    }
    out
}

/// (reasoning, perception) points of a group's rows that have both.
pub fn group_points(g: &MetricsGroup) -> Vec<(f64, f64)> {
    g.rows
        .iter()
        .filter_map(|r| Some((r.reasoning?, r.perception?)))
        .collect()
}

/// What the x axis of accuracy-vs-length shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LengthAxis {
    /// Mean thinking tokens when every row has them, else the setting value.
    #[default]
    Auto,
    ThinkTokens,
    SettingValue,
}

fn short_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A builder of figures from metrics rows grouped by model sweep.
pub type ResultsBuilder = fn(&[MetricsGroup], &RenderOptions) -> Vec<Named>;

/// Figures of metrics files, in the order they are written.
pub const RESULTS_FIGURES: &[ResultsBuilder] = &[
    |g, _| vec![Named::new("rhauc", rhauc_figure(g))],
    |g, opts| {
        let fig = accuracy_vs_length_figure(g, opts.length_axis);
        vec![Named::new("accuracy_vs_length", fig)]
    },
    |g, _| {
        vec![Named::new(
            "reasoning_vs_perception",
            reasoning_vs_perception_figure(g),
        )]
    },
];

/// RH-AUC panels, one per model sweep.
pub fn rhauc_figure(groups: &[MetricsGroup]) -> ChartFigure {
    let panels = groups.iter().map(rhauc_panel).collect();
    let n_models = groups.len();
    ChartFigure {
        title: "RH-AUC: perception vs reasoning across reasoning lengths".into(),
        subtitles: vec![
            "points: settings (labelled with their value); solid: straight lines between them, whose shaded area is RH-AUC; dashed: PCHIP, a guide only".into(),
        ],
        panels,
        cols: Some(if n_models == 4 { 2 } else { n_models.clamp(1, 3) }),
        panel_size: (420.0, 400.0),
        extra_legend: vec![
            LegendEntry::new("settings (trapezoid edge)", MUTED, Swatch::LineMarker),
            LegendEntry::new("area = RH-AUC", MUTED, Swatch::Box),
            LegendEntry::new("PCHIP curve (guide, not the area)", MUTED, Swatch::Dashed),
        ],
    }
}

/// One model sweep's RH-AUC panel: the normalised points, their PCHIP curve and the area, or
/// why RH-AUC is undefined.
fn rhauc_panel(g: &MetricsGroup) -> ChartPanel {
    let color = series_color(g.color);
    let raw: Vec<(f64, f64, Option<f64>)> = g
        .rows
        .iter()
        .filter_map(|r| Some((r.reasoning?, r.perception?, r.setting_value)))
        .collect();
    let pts: Vec<(f64, f64)> = raw.iter().map(|p| (p.0, p.1)).collect();
    let mut panel = ChartPanel {
        x_label: "Reasoning accuracy (min–max normalised)".into(),
        y_label: "Perception accuracy (normalised)".into(),
        x_range: Some((-0.05, 1.08)),
        y_range: Some((-0.05, 1.1)),
        ..Default::default()
    };
    match normalised_points(&pts) {
        Ok(norm) => {
            let auc = trapezoid(&norm);
            panel.title = format!("{} — RH-AUC {:.3}", g.label, auc);
            panel.fills.push(Fill {
                points: norm.clone(),
                baseline: 0.0,
                color,
                alpha: 0.3,
                label: String::new(),
            });
            // PCHIP needs increasing x: average perception over equal reasoning values.
            let mut xs: Vec<f64> = Vec::new();
            let mut ys: Vec<Vec<f64>> = Vec::new();
            for &(x, y) in &norm {
                if xs.last() == Some(&x) {
                    ys.last_mut().expect("pushed with xs").push(y);
                } else {
                    xs.push(x);
                    ys.push(vec![y]);
                }
            }
            let ym: Vec<f64> = ys
                .iter()
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
                .collect();
            if let Ok(p) = Pchip::new(&xs, &ym) {
                panel.series.push(
                    Series::new("", color, p.sample(150))
                        .kind(SeriesKind::Dashed)
                        .hidden(),
                );
            }
            // the trapezoid's edge: the curve whose area is the reported value
            panel.series.push(
                Series::new("", color, norm.clone())
                    .kind(SeriesKind::LineMarkers)
                    .hidden(),
            );
            // Label each point with its setting value.
            let (rmin, rmax) = min_max(pts.iter().map(|p| p.0));
            let (hmin, hmax) = min_max(pts.iter().map(|p| p.1));
            for &(r, h, v) in &raw {
                if let Some(v) = v {
                    panel.annotations.push(Annotation {
                        x: (r - rmin) / (rmax - rmin),
                        y: (h - hmin) / (hmax - hmin),
                        text: short_value(v),
                        color: MUTED,
                    });
                }
            }
        }
        Err(why) => {
            panel.title = format!("{} — RH-AUC undefined", g.label);
            panel.empty_note = Some(format!("RH-AUC undefined: {why}"));
        }
    }
    panel
}

/// Accuracy against reasoning length, per task, one line per model sweep.
pub fn accuracy_vs_length_figure(groups: &[MetricsGroup], axis: LengthAxis) -> ChartFigure {
    let all_tokens = groups
        .iter()
        .flat_map(|g| g.rows.iter())
        .all(|r| r.mean_think_tokens.is_some());
    let use_tokens = match axis {
        LengthAxis::ThinkTokens => true,
        LengthAxis::SettingValue => false,
        LengthAxis::Auto => all_tokens,
    };
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = groups
            .iter()
            .map(|g| g.kind.as_str())
            .filter(|k| !k.is_empty())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let x_label = if use_tokens {
        "Mean thinking tokens".to_string()
    } else if kinds.len() == 1 && !kinds[0].is_empty() {
        format!("Setting value ({})", kinds[0])
    } else {
        "Setting value".to_string()
    };
    let mut panels = Vec::new();
    for (task, get) in [
        (
            "Reasoning",
            (|r: &MetricsRow| r.reasoning) as fn(&MetricsRow) -> Option<f64>,
        ),
        ("Perception", |r: &MetricsRow| r.perception),
    ] {
        let mut panel = ChartPanel {
            title: format!("{task} accuracy"),
            x_label: x_label.clone(),
            y_label: "Accuracy".into(),
            ..Default::default()
        };
        for g in groups {
            let mut pts: Vec<(f64, f64)> = g
                .rows
                .iter()
                .filter_map(|r| {
                    let x = if use_tokens {
                        r.mean_think_tokens
                    } else {
                        r.setting_value
                    }?;
                    Some((x, get(r)?))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !pts.is_empty() {
                panel.series.push(
                    Series::new(g.label.clone(), series_color(g.color), pts)
                        .kind(SeriesKind::LineMarkers),
                );
            }
        }
        if panel.series.is_empty() {
            panel.empty_note = Some(format!(
                "no rows with a {} accuracy and a length",
                task.to_lowercase()
            ));
        }
        panel.y_range = accuracy_axis(&panel);
        panels.push(panel);
    }
    ChartFigure {
        title: "Accuracy vs reasoning length".into(),
        // what is drawn, never what it should show: the data decides that
        subtitles: vec![if use_tokens {
            "one point per setting at its mean thinking tokens; one line per model sweep".into()
        } else {
            "one point per setting at its setting value; one line per model sweep".into()
        }],
        panels,
        cols: Some(2),
        panel_size: (520.0, 400.0),
        extra_legend: Vec::new(),
    }
}

/// A model's name, colour index and (reasoning, perception) points.
type ModelPoints = (String, usize, Vec<(f64, f64)>);

/// The smallest span of an accuracy axis in the scatter of models.
const MIN_ACCURACY_SPAN: f64 = 0.1;

/// An accuracy axis range (around data from `lo_data` to `hi_data`) grown to at least
/// [`MIN_ACCURACY_SPAN`]: accuracies are proportions, and a narrower axis blows rounding noise (or a
/// single point) up into thousandths. A grown window stays inside [0, 1] but for a sliver of room
/// for the markers, so that no axis shows negative accuracies.
fn widened((lo_data, hi_data): (f64, f64), (lo, hi): (f64, f64)) -> (f64, f64) {
    const EDGE: f64 = 0.01;
    let pad = ((MIN_ACCURACY_SPAN - (hi - lo)) / 2.0).max(0.0);
    let (lo, hi) = (lo - pad, hi + pad);
    if pad == 0.0 || lo_data < 0.0 || hi_data > 1.0 {
        return (lo, hi);
    }
    let shift = (-EDGE - lo).max(0.0) - (hi - 1.0 - EDGE).max(0.0);
    (lo + shift, hi + shift)
}

/// The y range of a panel of accuracies: the data's, padded a little and [`widened`].
fn accuracy_axis(panel: &ChartPanel) -> Option<(f64, f64)> {
    let ys = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let (y0, y1) = min_max(ys);
    if !(y0.is_finite() && y1.is_finite()) {
        return None;
    }
    let pad = 0.08 * (y1 - y0).max(0.02);
    Some(widened((y0, y1), (y0 - pad, y1 + pad)))
}

/// Reasoning against perception accuracy, one labelled point per model (mean over its rows).
pub fn reasoning_vs_perception_figure(groups: &[MetricsGroup]) -> ChartFigure {
    let mut models: Vec<ModelPoints> = Vec::new();
    for g in groups {
        let pts = group_points(g);
        match models.iter_mut().find(|m| m.0 == g.model) {
            Some(m) => m.2.extend(pts),
            None => models.push((g.model.clone(), g.color, pts)),
        }
    }
    let mut panel = ChartPanel {
        x_label: "Reasoning accuracy".into(),
        y_label: "Perception accuracy".into(),
        ..Default::default()
    };
    let mut averaged = false;
    for (model, color, pts) in &models {
        if pts.is_empty() {
            continue;
        }
        averaged |= pts.len() > 1;
        let n = pts.len() as f64;
        let r = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let h = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let auc = groups
            .iter()
            .filter(|g| &g.model == model)
            .find_map(|g| rh_auc(&group_points(g)).ok());
        let text = match auc {
            Some(a) => format!("{model} ({a:.2})"),
            None => model.clone(),
        };
        panel.series.push(
            Series::new(model.clone(), series_color(*color), vec![(r, h)])
                .kind(SeriesKind::Markers)
                .hidden(),
        );
        panel.annotations.push(Annotation {
            x: r,
            y: h,
            text,
            color: series_color(*color),
        });
    }
    if panel.series.is_empty() {
        panel.empty_note = Some("no rows with both accuracies".into());
    }
    // Room on the right for the labels.
    let xs: Vec<f64> = panel.series.iter().map(|s| s.points[0].0).collect();
    let ys: Vec<f64> = panel.series.iter().map(|s| s.points[0].1).collect();
    if !xs.is_empty() {
        let (x0, x1) = min_max(xs.into_iter());
        let (y0, y1) = min_max(ys.into_iter());
        let dx = (x1 - x0).max(0.02);
        let dy = (y1 - y0).max(0.02);
        panel.x_range = Some(widened((x0, x1), (x0 - 0.1 * dx, x1 + 0.45 * dx)));
        panel.y_range = Some(widened((y0, y1), (y0 - 0.12 * dy, y1 + 0.18 * dy)));
    }
    let mut subtitles = vec!["label: model (RH-AUC where defined)".to_string()];
    if averaged {
        subtitles[0] =
            "one point per model: mean over its settings; label: model (RH-AUC where defined)"
                .into();
    }
    ChartFigure {
        title: "Reasoning vs perception across models".into(),
        subtitles,
        panels: vec![panel],
        cols: Some(1),
        panel_size: (720.0, 520.0),
        extra_legend: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A figure says what it draws, never a conclusion the data may contradict.
    #[test]
    fn accuracy_vs_length_states_no_conclusion() {
        let csv = "model,setting,setting_value,reasoning,perception,mean_think_tokens\n\
                   m,budget=0,0,0.5,0.5,3\nm,budget=8,8,0.9,0.9,8\n";
        let groups = group_metrics(&parse_metrics_csv(csv).unwrap());
        let fig = accuracy_vs_length_figure(&groups, LengthAxis::Auto);
        let said = fig.subtitles.join(" ");
        assert!(said.contains("mean thinking tokens"), "{said}");
        for claim in ["rise", "fall", "degrade"] {
            assert!(!said.contains(claim), "{said}");
        }
        // the axis follows the data (0.5 to 0.9) and never reaches below 0
        let (lo, hi) = fig.panels[0].y_range.unwrap();
        assert!(lo > 0.4 && lo < 0.5 && hi > 0.9 && hi < 1.0, "{lo} {hi}");
    }

    /// The solid curve is the trapezoid's edge (its area is the value in the title); PCHIP is
    /// drawn dashed, as a guide.
    #[test]
    fn rhauc_draws_the_area_it_reports_and_pchip_as_a_guide() {
        let csv = "model,setting,setting_value,reasoning,perception\n\
                   m,budget=0,0,0.2,0.9\nm,budget=1,1,0.5,0.3\nm,budget=2,2,0.9,0.6\n";
        let groups = group_metrics(&parse_metrics_csv(csv).unwrap());
        let panel = &rhauc_figure(&groups).panels[0];
        let solid: Vec<_> = panel
            .series
            .iter()
            .filter(|s| s.kind == SeriesKind::LineMarkers)
            .collect();
        assert_eq!(solid.len(), 1);
        assert_eq!(solid[0].points, panel.fills[0].points);
        let auc = trapezoid(&solid[0].points);
        assert!(
            panel.title.contains(&format!("{auc:.3}")),
            "{}",
            panel.title
        );
        assert!(panel.series.iter().any(|s| s.kind == SeriesKind::Dashed));
        assert!(!panel.series.iter().any(|s| s.kind == SeriesKind::Line));
    }

    #[test]
    fn a_model_at_zero_accuracy_gets_readable_axes() {
        let csv = "model,setting,setting_value,reasoning,perception\nm,budget=0,0,0,0\n";
        let groups = group_metrics(&parse_metrics_csv(csv).unwrap());
        let fig = reasoning_vs_perception_figure(&groups);
        let span = |r: Option<(f64, f64)>| r.map(|(a, b)| b - a).unwrap();
        for range in [fig.panels[0].x_range, fig.panels[0].y_range] {
            assert!(span(range) >= MIN_ACCURACY_SPAN, "{range:?}");
            assert!(
                range.unwrap().0 > -0.011,
                "no negative accuracies: {range:?}"
            );
        }
    }
}
