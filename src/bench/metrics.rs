//! Metrics per (model, setting) and RH-AUC.
//!
//! RH-AUC (Liu et al., "More Thinking, Less Seeing?"): for settings T with reasoning accuracy
//! R_T and perception accuracy H_T, min-max normalise R and H separately to [0, 1], sort the
//! points by R and integrate H over R with the trapezoid rule:
//! `sum_i (R_{i+1} - R_i) (H_{i+1} + H_i) / 2`. Points with equal R are ordered by H (ascending),
//! so the result does not depend on input order; the reference code kept input order for ties.
//! The un-normalised variant is `(trapezoid of raw H over raw R) / (max R - min R)`, with both
//! accuracies on the 0-1 scale. Fewer than two points or a zero range in R or H is an error, not
//! NaN.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::data::Split;
use super::scores::{by_model, ScoreRecord};
use super::text::csv_field;

pub const METRICS_JSON: &str = "metrics.json";
pub const METRICS_CSV: &str = "metrics.csv";
pub const RHAUC_JSON: &str = "rhauc.json";

/// Column order of `metrics.csv` (and keys of each `metrics.json` row).
pub const METRICS_COLUMNS: [&str; 10] = [
    "model",
    "setting",
    "setting_value",
    "reasoning",
    "perception",
    "hallucination",
    "mean_think_tokens",
    "n_reasoning",
    "n_perception",
    "scorer",
];

/// Accuracies of one model at one setting (0-1; `None` when the split has no records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingMetrics {
    pub model: String,
    pub setting: String,
    pub setting_value: f64,
    pub reasoning: Option<f64>,
    pub perception: Option<f64>,
    /// 1 - perception.
    pub hallucination: Option<f64>,
    /// Mean thinking tokens over all records of both splits.
    pub mean_think_tokens: Option<f64>,
    pub n_reasoning: usize,
    pub n_perception: usize,
    /// The scorer(s) behind these numbers, `+`-joined when mixed.
    pub scorer: String,
}

/// Accuracies per (model, setting), ordered by model (first seen), setting value, setting key.
/// Each record counts once (several samples per setting all count).
pub fn compute_metrics(scores: &[ScoreRecord]) -> Vec<SettingMetrics> {
    #[derive(Default)]
    struct Acc {
        value: f64,
        r: (usize, usize),
        p: (usize, usize),
        think: u64,
        scorers: BTreeSet<String>,
    }
    let mut out = Vec::new();
    for (model, recs) in by_model(scores) {
        let mut cells: BTreeMap<String, Acc> = BTreeMap::new();
        for s in recs {
            let a = cells.entry(s.setting.clone()).or_default();
            a.value = s.setting_value;
            let c = match s.split {
                Split::Reasoning => &mut a.r,
                Split::Perception => &mut a.p,
            };
            c.0 += s.correct as usize;
            c.1 += 1;
            a.think += s.think_tokens;
            a.scorers.insert(s.scorer.clone());
        }
        let mut rows: Vec<SettingMetrics> = cells
            .into_iter()
            .map(|(setting, a)| {
                let acc = |(k, n): (usize, usize)| (n > 0).then(|| k as f64 / n as f64);
                let total = a.r.1 + a.p.1;
                let perception = acc(a.p);
                SettingMetrics {
                    model: model.clone(),
                    setting,
                    setting_value: a.value,
                    reasoning: acc(a.r),
                    perception,
                    hallucination: perception.map(|p| 1.0 - p),
                    mean_think_tokens: (total > 0).then(|| a.think as f64 / total as f64),
                    n_reasoning: a.r.1,
                    n_perception: a.p.1,
                    scorer: a.scorers.into_iter().collect::<Vec<_>>().join("+"),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            a.setting_value
                .total_cmp(&b.setting_value)
                .then_with(|| a.setting.cmp(&b.setting))
        });
        out.extend(rows);
    }
    out
}

/// Why RH-AUC is undefined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RhAucError {
    #[error(
        "RH-AUC needs at least two settings with both reasoning and perception accuracy; got {0}"
    )]
    TooFewPoints(usize),
    #[error("RH-AUC is undefined: reasoning accuracy is the same ({0}) at every setting, so it cannot be normalised")]
    FlatReasoning(f64),
    #[error("RH-AUC is undefined: perception accuracy is the same ({0}) at every setting, so it cannot be normalised")]
    FlatPerception(f64),
    #[error("RH-AUC input point {0} is not a finite number")]
    NotFinite(usize),
}

/// RH-AUC of a set of (reasoning, perception) points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RhAuc {
    /// Area under the min-max normalised curve, in [0, 1].
    pub rh_auc: f64,
    /// Raw-accuracy area divided by the reasoning range.
    pub unnormalized: f64,
    pub n_points: usize,
}

/// Points sorted by (R, H); ties in R ordered by H.
fn sorted_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut v = points.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    v
}

/// (min, max) of a coordinate.
type Range = (f64, f64);

/// Validate points; returns the ranges of R and H.
fn check_points(points: &[(f64, f64)]) -> Result<(Range, Range), RhAucError> {
    if points.len() < 2 {
        return Err(RhAucError::TooFewPoints(points.len()));
    }
    if let Some(i) = points
        .iter()
        .position(|(r, h)| !r.is_finite() || !h.is_finite())
    {
        return Err(RhAucError::NotFinite(i));
    }
    let range = |f: fn(&(f64, f64)) -> f64| {
        points
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            })
    };
    let r = range(|p| p.0);
    let h = range(|p| p.1);
    if r.1 - r.0 == 0.0 {
        return Err(RhAucError::FlatReasoning(r.0));
    }
    if h.1 - h.0 == 0.0 {
        return Err(RhAucError::FlatPerception(h.0));
    }
    Ok((r, h))
}

/// RH-AUC of (reasoning, perception) accuracy points (any consistent scale; the un-normalised
/// variant is in the input's units).
pub fn rh_auc(points: &[(f64, f64)]) -> Result<RhAuc, RhAucError> {
    let ((rmin, rmax), _) = check_points(points)?;
    let norm = normalized_curve(points)?;
    let raw = sorted_points(points);
    Ok(RhAuc {
        rh_auc: trapezoid(&norm),
        unnormalized: trapezoid(&raw) / (rmax - rmin),
        n_points: points.len(),
    })
}

/// Trapezoid-rule area under points sorted by x (points with equal x add no area).
pub fn trapezoid(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum::<f64>()
}

/// The min-max normalised points in integration order (for drawing the RH-AUC curve).
pub fn normalized_curve(points: &[(f64, f64)]) -> Result<Vec<(f64, f64)>, RhAucError> {
    let ((rmin, rmax), (hmin, hmax)) = check_points(points)?;
    Ok(sorted_points(points)
        .into_iter()
        .map(|(r, h)| ((r - rmin) / (rmax - rmin), (h - hmin) / (hmax - hmin)))
        .collect())
}

/// SplitMix64: a small, seedable generator (deterministic across platforms).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Percentile with linear interpolation between order statistics (numpy's default) of sorted
/// values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Percentile bootstrap interval of RH-AUC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub resamples: usize,
    /// Resamples where RH-AUC was undefined (too few points, flat R or H); left out.
    pub undefined: usize,
    pub seed: u64,
    pub level: f64,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

/// Bootstrap the RH-AUC of one model's scores: resample samples with replacement within each
/// split (the same draw for every setting, since a sample is answered at every setting),
/// recompute per-setting accuracies (each record of a drawn sample counts, as in
/// [`compute_metrics`]) and RH-AUC; 95% percentile interval.
pub fn bootstrap_rh_auc(scores: &[&ScoreRecord], resamples: usize, seed: u64) -> Bootstrap {
    // Settings in value order.
    let mut setting_index: HashMap<&str, usize> = HashMap::new();
    let mut settings: Vec<(&str, f64)> = Vec::new();
    for s in scores {
        if !setting_index.contains_key(s.setting.as_str()) {
            setting_index.insert(&s.setting, settings.len());
            settings.push((&s.setting, s.setting_value));
        }
    }
    let n_set = settings.len();
    // Per split: per sample, per setting (correct, count).
    let mut tables: [Vec<Vec<(u32, u32)>>; 2] = [Vec::new(), Vec::new()];
    let mut sample_index: HashMap<(Split, &str), usize> = HashMap::new();
    for s in scores {
        let t = split_slot(s.split);
        let next = tables[t].len();
        let i = *sample_index
            .entry((s.split, s.sample_id.as_str()))
            .or_insert(next);
        if i == tables[t].len() {
            tables[t].push(vec![(0, 0); n_set]);
        }
        let cell = &mut tables[t][i][setting_index[s.setting.as_str()]];
        cell.0 += s.correct as u32;
        cell.1 += 1;
    }

    let mut rng = SplitMix64::new(seed);
    let mut values = Vec::with_capacity(resamples);
    let mut undefined = 0;
    for _ in 0..resamples {
        let mut acc = [vec![(0u64, 0u64); n_set], vec![(0u64, 0u64); n_set]];
        for (t, table) in tables.iter().enumerate() {
            for _ in 0..table.len() {
                let row = &table[rng.below(table.len())];
                for (k, (c, n)) in row.iter().enumerate() {
                    acc[t][k].0 += *c as u64;
                    acc[t][k].1 += *n as u64;
                }
            }
        }
        let r_slot = split_slot(Split::Reasoning);
        let p_slot = split_slot(Split::Perception);
        let points: Vec<(f64, f64)> = (0..n_set)
            .filter(|&k| acc[r_slot][k].1 > 0 && acc[p_slot][k].1 > 0)
            .map(|k| {
                (
                    acc[r_slot][k].0 as f64 / acc[r_slot][k].1 as f64,
                    acc[p_slot][k].0 as f64 / acc[p_slot][k].1 as f64,
                )
            })
            .collect();
        match rh_auc(&points) {
            Ok(v) => values.push(v.rh_auc),
            Err(_) => undefined += 1,
        }
    }
    values.sort_by(f64::total_cmp);
    Bootstrap {
        resamples,
        undefined,
        seed,
        level: 0.95,
        lo: percentile(&values, 0.025),
        hi: percentile(&values, 0.975),
    }
}

fn split_slot(s: Split) -> usize {
    match s {
        Split::Reasoning => 0,
        Split::Perception => 1,
    }
}

/// One point of an RH-AUC curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RhPoint {
    pub setting: String,
    pub setting_value: Option<f64>,
    pub reasoning: f64,
    pub perception: f64,
}

/// RH-AUC of one model, or why it is undefined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRhAuc {
    pub model: String,
    pub scorer: Option<String>,
    pub n_points: usize,
    pub rh_auc: Option<f64>,
    pub rh_auc_unnormalized: Option<f64>,
    pub error: Option<String>,
    pub points: Vec<RhPoint>,
    pub bootstrap: Option<Bootstrap>,
}

impl ModelRhAuc {
    /// RH-AUC of the given points (0-1 accuracies).
    pub fn from_points(model: &str, scorer: Option<String>, points: Vec<RhPoint>) -> Self {
        let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.reasoning, p.perception)).collect();
        let (rh, raw, error) = match rh_auc(&xy) {
            Ok(v) => (Some(v.rh_auc), Some(v.unnormalized), None),
            Err(e) => (None, None, Some(e.to_string())),
        };
        ModelRhAuc {
            model: model.to_string(),
            scorer,
            n_points: points.len(),
            rh_auc: rh,
            rh_auc_unnormalized: raw,
            error,
            points,
            bootstrap: None,
        }
    }

    /// Mean reasoning and perception accuracy over the points.
    pub fn mean_accuracies(&self) -> Option<(f64, f64)> {
        if self.points.is_empty() {
            return None;
        }
        let n = self.points.len() as f64;
        Some((
            self.points.iter().map(|p| p.reasoning).sum::<f64>() / n,
            self.points.iter().map(|p| p.perception).sum::<f64>() / n,
        ))
    }
}

/// RH-AUC per model from the metrics rows (settings with both accuracies), with a bootstrap
/// interval over the score records when `resamples > 0`.
pub fn rhauc_per_model(
    scores: &[ScoreRecord],
    metrics: &[SettingMetrics],
    resamples: usize,
    seed: u64,
) -> Vec<ModelRhAuc> {
    let groups = by_model(scores);
    let mut out = Vec::new();
    for (model, recs) in &groups {
        let rows: Vec<&SettingMetrics> = metrics.iter().filter(|m| &m.model == model).collect();
        let points: Vec<RhPoint> = rows
            .iter()
            .filter_map(|m| {
                Some(RhPoint {
                    setting: m.setting.clone(),
                    setting_value: Some(m.setting_value),
                    reasoning: m.reasoning?,
                    perception: m.perception?,
                })
            })
            .collect();
        let scorers: BTreeSet<&str> = rows
            .iter()
            .flat_map(|m| m.scorer.split('+'))
            .filter(|s| !s.is_empty())
            .collect();
        let scorer =
            (!scorers.is_empty()).then(|| scorers.into_iter().collect::<Vec<_>>().join("+"));
        let mut m = ModelRhAuc::from_points(model, scorer, points);
        if resamples > 0 {
            m.bootstrap = Some(bootstrap_rh_auc(recs, resamples, seed));
        }
        out.push(m);
    }
    out
}

/// The RH-AUC report: `rh_auc` is a bare number (or null) when there is one model and an object
/// keyed by model otherwise; `models` holds the details. Extra fields (e.g. the points scale)
/// go between the two.
#[derive(Debug, Clone, Serialize)]
pub struct RhAucReport<'a> {
    pub rh_auc: Value,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
    pub models: &'a [ModelRhAuc],
}

impl<'a> RhAucReport<'a> {
    pub fn new(models: &'a [ModelRhAuc]) -> Self {
        let rh_auc = if models.len() == 1 {
            json!(models[0].rh_auc)
        } else {
            Value::Object(
                models
                    .iter()
                    .map(|m| (m.model.clone(), json!(m.rh_auc)))
                    .collect(),
            )
        };
        RhAucReport {
            rh_auc,
            extra: serde_json::Map::new(),
            models,
        }
    }
}

/// [`RhAucReport`] as a JSON value.
pub fn rhauc_json(models: &[ModelRhAuc]) -> Value {
    serde_json::to_value(RhAucReport::new(models)).unwrap_or(Value::Null)
}

pub fn write_rhauc_json(path: &Path, models: &[ModelRhAuc]) -> Result<()> {
    let text = serde_json::to_string_pretty(&RhAucReport::new(models))?;
    crate::fsutil::write_atomic(path, (text + "\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn opt_num(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// `metrics.csv` text with [`METRICS_COLUMNS`].
pub fn metrics_csv(rows: &[SettingMetrics]) -> String {
    let mut s = METRICS_COLUMNS.join(",");
    s.push('\n');
    for r in rows {
        let fields = [
            csv_field(&r.model),
            csv_field(&r.setting),
            r.setting_value.to_string(),
            opt_num(r.reasoning),
            opt_num(r.perception),
            opt_num(r.hallucination),
            opt_num(r.mean_think_tokens),
            r.n_reasoning.to_string(),
            r.n_perception.to_string(),
            csv_field(&r.scorer),
        ];
        s.push_str(&fields.join(","));
        s.push('\n');
    }
    s
}

/// Write `metrics.json` (an array of row objects) and `metrics.csv` into `run_dir`.
pub fn write_metrics(run_dir: &Path, rows: &[SettingMetrics]) -> Result<()> {
    let json_path = run_dir.join(METRICS_JSON);
    crate::fsutil::write_atomic(
        &json_path,
        (serde_json::to_string_pretty(rows)? + "\n").as_bytes(),
    )
    .with_context(|| format!("cannot write {}", json_path.display()))?;
    let csv_path = run_dir.join(METRICS_CSV);
    crate::fsutil::write_atomic(&csv_path, metrics_csv(rows).as_bytes())
        .with_context(|| format!("cannot write {}", csv_path.display()))
}

/// A per-model summary row (e.g. one row of the paper's Table 1), with grouping labels such as
/// `size` or `training`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    pub model: String,
    pub perception: f64,
    pub reasoning: f64,
    pub rh_auc: Option<f64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Column means over a set of model rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMean {
    pub group: String,
    pub n: usize,
    pub perception: f64,
    pub reasoning: f64,
    /// Mean over the rows whose RH-AUC is defined; `None` when none is.
    pub rh_auc: Option<f64>,
    pub n_rh_auc: usize,
}

/// Means of all rows (`group` names the set).
pub fn column_means(group: &str, rows: &[&ModelRow]) -> Option<GroupMean> {
    if rows.is_empty() {
        return None;
    }
    let n = rows.len() as f64;
    let defined: Vec<f64> = rows.iter().filter_map(|r| r.rh_auc).collect();
    Some(GroupMean {
        group: group.to_string(),
        n: rows.len(),
        perception: rows.iter().map(|r| r.perception).sum::<f64>() / n,
        reasoning: rows.iter().map(|r| r.reasoning).sum::<f64>() / n,
        rh_auc: (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64),
        n_rh_auc: defined.len(),
    })
}

/// Means per value of label `label` (rows without it are left out), ordered by value.
pub fn group_means(rows: &[ModelRow], label: &str) -> Vec<GroupMean> {
    let mut groups: BTreeMap<&str, Vec<&ModelRow>> = BTreeMap::new();
    for r in rows {
        if let Some(v) = r.labels.get(label) {
            groups.entry(v.as_str()).or_default().push(r);
        }
    }
    groups
        .into_iter()
        .filter_map(|(g, rs)| column_means(g, &rs))
        .collect()
}
