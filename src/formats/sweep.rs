//! A sweep directory's summary: `summary.json` (the [`SweepSummary`]) and `summary.csv` (one
//! line per [`SweepRow`], columns [`CSV_COLUMNS`]), written by `rhlens sweep` and read back by
//! `rhlens figures --sweep`.
//!
//! Reading is lenient: a summary written by hand needs only `kind` and, per row, `setting`,
//! `value` and `trace`; the other fields take their defaults.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// File name of a sweep's summary.
pub const SUMMARY_FILE: &str = "summary.json";
/// File name of the summary as a table.
pub const SUMMARY_CSV: &str = "summary.csv";

/// Columns of `summary.csv`, in order.
pub const CSV_COLUMNS: [&str; 16] = [
    "setting",
    "value",
    "sample",
    "seed",
    "think_tokens",
    "answer_tokens",
    "generated_tokens",
    "stop_reason",
    "visual_share",
    "visual_share_early",
    "visual_share_middle",
    "visual_share_late",
    "instruction_share",
    "reasoning_share",
    "answer",
    "trace",
];

/// One setting (and sample) of a sweep: one row of `summary.json` / `summary.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// Setting key, e.g. `budget=100`.
    pub setting: String,
    /// The number it stands for (budget, waits, steering weight).
    pub value: f64,
    /// Sample index when several generations were drawn per setting.
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Trace directory, relative to the sweep directory.
    pub trace: String,
    #[serde(default)]
    pub think_tokens: Option<usize>,
    #[serde(default)]
    pub answer_tokens: usize,
    #[serde(default)]
    pub generated_tokens: usize,
    #[serde(default)]
    pub answer: String,
    #[serde(default)]
    pub stop_reason: String,
    /// Mean attention mass on the image over all steps, per group of layers (early / middle /
    /// late, see [`super::shares::layer_groups`]).
    #[serde(default)]
    pub visual_share_early: f64,
    #[serde(default)]
    pub visual_share_middle: f64,
    #[serde(default)]
    pub visual_share_late: f64,
    /// Mean attention mass per role over all steps and layers.
    #[serde(default)]
    pub visual_share: f64,
    #[serde(default)]
    pub instruction_share: f64,
    #[serde(default)]
    pub reasoning_share: f64,
    #[serde(default)]
    pub elapsed_s: f64,
}

/// `summary.json` of a sweep directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// `budgets`, `waits` or `steer`.
    pub kind: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub random_weights: bool,
    #[serde(default)]
    pub samples: usize,
    pub rows: Vec<SweepRow>,
}

impl SweepSummary {
    /// Reads `dir/summary.json`; a missing file, a malformed one or one without rows is an error.
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

    /// Writes `summary.json` and `summary.csv` into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        write_atomic(&dir.join(SUMMARY_FILE), json.as_bytes())?;
        write_atomic(&dir.join(SUMMARY_CSV), &self.csv()?)?;
        Ok(())
    }

    /// `summary.csv`: a header of [`CSV_COLUMNS`] and one line per row (shares to six decimals).
    pub fn csv(&self) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_COLUMNS)?;
        let opt = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in &self.rows {
            w.write_record([
                r.setting.clone(),
                r.value.to_string(),
                opt(r.sample),
                r.seed.map(|s| s.to_string()).unwrap_or_default(),
                opt(r.think_tokens),
                r.answer_tokens.to_string(),
                r.generated_tokens.to_string(),
                r.stop_reason.clone(),
                format!("{:.6}", r.visual_share),
                format!("{:.6}", r.visual_share_early),
                format!("{:.6}", r.visual_share_middle),
                format!("{:.6}", r.visual_share_late),
                format!("{:.6}", r.instruction_share),
                format!("{:.6}", r.reasoning_share),
                r.answer.clone(),
                r.trace.clone(),
            ])?;
        }
        w.into_inner()
            .map_err(|e| anyhow::anyhow!("writing {SUMMARY_CSV}: {e}"))
    }
}
