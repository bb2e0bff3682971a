//! Reading (reasoning, perception) accuracy points for `rhlens rhauc --points FILE`.
//!
//! Accepted: CSV with a header, a JSON array of objects, or `{"points": [...]}` (also `rows`).
//! Columns (case-insensitive): `setting`, `reasoning`, `perception`; optional `model` (one
//! RH-AUC per model) and `setting_value`; any other columns are kept as labels (e.g. `training`
//! for `--group-by training`). `metrics.csv` / `metrics.json` written by `rhlens score` qualify;
//! their rows with an empty accuracy are skipped.
//!
//! Scale: accuracies in 0-1 or in percent. With [`Scale::Auto`], any value above 1 (or a `%`
//! sign) means percent for the whole file, otherwise 0-1; the choice is reported.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::metrics::{ModelRhAuc, ModelRow, RhPoint};
use super::text::{numbers_in, parse_csv};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Auto,
    /// Accuracies in 0-1.
    Unit,
    /// Accuracies in 0-100.
    Percent,
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scale::Auto => "auto",
            Scale::Unit => "unit",
            Scale::Percent => "percent",
        })
    }
}

impl FromStr for Scale {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Scale> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Scale::Auto),
            "unit" | "fraction" | "0-1" => Ok(Scale::Unit),
            "percent" | "pct" | "%" => Ok(Scale::Percent),
            _ => bail!("unknown scale `{s}` (expected auto, unit or percent)"),
        }
    }
}

/// One input point (accuracies converted to 0-1).
#[derive(Debug, Clone, PartialEq)]
pub struct PointRow {
    pub model: Option<String>,
    pub setting: String,
    pub setting_value: Option<f64>,
    pub reasoning: f64,
    pub perception: f64,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Points {
    pub rows: Vec<PointRow>,
    /// The scale the input was read in (`Unit` or `Percent`).
    pub scale: Scale,
    /// Whether the scale was detected (`--scale auto`) rather than given.
    pub scale_detected: bool,
    /// Input rows left out, with the reason.
    pub skipped: Vec<String>,
}

/// A raw row before scale conversion: text cells by lower-cased column name.
type RawRow = BTreeMap<String, String>;

/// Read a points file.
pub fn read_points(path: &Path, scale: Scale) -> Result<Points> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with(['[', '{']);
    let raw = if is_json {
        json_rows(&text)
            .with_context(|| format!("{} is not a valid points file", path.display()))?
    } else {
        csv_rows(&text).with_context(|| format!("{} is not a valid points CSV", path.display()))?
    };
    points_from_rows(raw, scale).with_context(|| format!("in {}", path.display()))
}

fn json_rows(text: &str) -> Result<Vec<RawRow>> {
    let v: Value = serde_json::from_str(text)?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(mut m) => match ["points", "rows"].iter().find_map(|k| m.remove(*k)) {
            Some(Value::Array(a)) => a,
            _ => bail!("expected an array of points or an object with a `points` array"),
        },
        _ => bail!("expected an array of points"),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let obj = item
                .as_object()
                .ok_or_else(|| anyhow!("point {i} is not an object"))?;
            Ok(obj
                .iter()
                .filter_map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => String::new(),
                        _ => return None,
                    };
                    Some((k.trim().to_ascii_lowercase(), text))
                })
                .collect())
        })
        .collect()
}

fn csv_rows(text: &str) -> Result<Vec<RawRow>> {
    let rows = parse_csv(text).map_err(|e| anyhow!(e))?;
    let mut it = rows.into_iter();
    let header: Vec<String> = it
        .next()
        .ok_or_else(|| anyhow!("empty file"))?
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    it.enumerate()
        .map(|(i, row)| {
            if row.len() != header.len() {
                bail!(
                    "row {} has {} fields but the header has {}",
                    i + 2,
                    row.len(),
                    header.len()
                );
            }
            Ok(header.iter().cloned().zip(row).collect())
        })
        .collect()
}

/// The scale the accuracies are on (and whether it was detected rather than given): percent
/// when asked, or when detecting and a value has a `%` sign or exceeds 1.
fn settle_scale(scale: Scale, any_percent_sign: bool, max_value: f64) -> Result<(Scale, bool)> {
    let (used, detected) = match scale {
        Scale::Auto if any_percent_sign || max_value > 1.0 => (Scale::Percent, true),
        Scale::Auto => (Scale::Unit, true),
        s => (s, false),
    };
    let limit = if used == Scale::Percent { 100.0 } else { 1.0 };
    if max_value > limit {
        return crate::error::invalid(
            "units",
            format!(
                "{used} cannot hold an accuracy of {max_value} (0-{limit}); give percent for 0-100 \
                 values"
            ),
        );
    }
    Ok((used, detected))
}

fn points_from_rows(raw: Vec<RawRow>, scale: Scale) -> Result<Points> {
    if raw.is_empty() {
        bail!("no points");
    }
    for col in ["setting", "reasoning", "perception"] {
        if !raw.iter().any(|r| r.contains_key(col)) {
            let found: Vec<&String> = raw[0].keys().collect();
            bail!("missing column `{col}` (columns found: {found:?}; need setting, reasoning, perception, optional model)");
        }
    }
    // Parse numbers first to settle the scale.
    let mut parsed = Vec::new();
    let mut skipped = Vec::new();
    let mut any_percent_sign = false;
    let mut max_value: f64 = 0.0;
    for (i, r) in raw.into_iter().enumerate() {
        let cell = |k: &str| r.get(k).map(|s| s.trim()).unwrap_or("");
        let setting = cell("setting").to_string();
        let (rs, ps) = (cell("reasoning"), cell("perception"));
        if rs.is_empty() || ps.is_empty() {
            skipped.push(format!(
                "row {} (setting {setting}): no {} accuracy",
                i + 1,
                if rs.is_empty() {
                    "reasoning"
                } else {
                    "perception"
                }
            ));
            continue;
        }
        let num = |name: &str, s: &str| -> Result<f64> {
            let v: f64 = s
                .trim_end_matches('%')
                .trim()
                .parse()
                .map_err(|_| anyhow!("row {}: {name} `{s}` is not a number", i + 1))?;
            if !v.is_finite() || v < 0.0 {
                bail!("row {}: {name} {s} is not an accuracy", i + 1);
            }
            Ok(v)
        };
        let (rv, pv) = (num("reasoning", rs)?, num("perception", ps)?);
        any_percent_sign |= rs.ends_with('%') || ps.ends_with('%');
        max_value = max_value.max(rv).max(pv);
        let setting_value = match cell("setting_value") {
            "" => numbers_in(&setting).last().map(|t| t.value),
            s => Some(
                s.parse::<f64>()
                    .map_err(|_| anyhow!("row {}: setting_value `{s}` is not a number", i + 1))?,
            ),
        };
        let model = Some(cell("model").to_string()).filter(|m| !m.is_empty());
        let labels = r
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "model" | "setting" | "setting_value" | "reasoning" | "perception"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        parsed.push(PointRow {
            model,
            setting,
            setting_value,
            reasoning: rv,
            perception: pv,
            labels,
        });
    }
    let (used, detected) = settle_scale(scale, any_percent_sign, max_value)?;
    if used == Scale::Percent {
        for p in &mut parsed {
            p.reasoning /= 100.0;
            p.perception /= 100.0;
        }
    }
    Ok(Points {
        rows: parsed,
        scale: used,
        scale_detected: detected,
        skipped,
    })
}

impl Points {
    /// RH-AUC per model (rows without a model form one group named ""), models in first-seen
    /// order.
    pub fn rhauc_per_model(&self) -> Vec<ModelRhAuc> {
        let mut order: Vec<String> = Vec::new();
        let mut groups: BTreeMap<String, Vec<&PointRow>> = BTreeMap::new();
        for r in &self.rows {
            let m = r.model.clone().unwrap_or_default();
            if !groups.contains_key(&m) {
                order.push(m.clone());
            }
            groups.entry(m).or_default().push(r);
        }
        order
            .iter()
            .map(|m| {
                let rows = &groups[m];
                let scorer = rows
                    .iter()
                    .find_map(|r| r.labels.get("scorer").filter(|s| !s.is_empty()).cloned());
                let points = rows
                    .iter()
                    .map(|r| RhPoint {
                        setting: r.setting.clone(),
                        setting_value: r.setting_value,
                        reasoning: r.reasoning,
                        perception: r.perception,
                    })
                    .collect();
                ModelRhAuc::from_points(m, scorer, points)
            })
            .collect()
    }

    /// One summary row per model: mean accuracies over its points, its RH-AUC, and the labels
    /// of its first point (for grouping).
    pub fn model_rows(&self, per_model: &[ModelRhAuc]) -> Vec<ModelRow> {
        per_model
            .iter()
            .filter_map(|m| {
                let (r, p) = m.mean_accuracies()?;
                let labels = self
                    .rows
                    .iter()
                    .find(|row| row.model.clone().unwrap_or_default() == m.model)
                    .map(|row| row.labels.clone())
                    .unwrap_or_default();
                Some(ModelRow {
                    model: m.model.clone(),
                    perception: p,
                    reasoning: r,
                    rh_auc: m.rh_auc,
                    labels,
                })
            })
            .collect()
    }
}
