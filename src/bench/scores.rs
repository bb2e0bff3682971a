//! `RUN_DIR/scores.jsonl`: one [`ScoreRecord`] per scored answer.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::data::{QuestionType, Split};
use super::results::{RecordKey, ResultRecord};
use super::rule::Verdict;

pub const SCORES_FILE: &str = "scores.jsonl";

/// One line of `scores.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub split: Split,
    pub sample_id: String,
    pub setting: String,
    pub setting_value: f64,
    pub sample_index: u32,
    pub model: String,
    pub question_type: QuestionType,
    pub think_tokens: u64,
    pub correct: bool,
    /// `rule` or `judge:MODEL`.
    pub scorer: String,
    pub extracted: Option<String>,
    /// Judge's 0-5 hallucination score (perception free-form only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hallucination_score: Option<f64>,
    pub details: String,
}

impl ScoreRecord {
    pub fn key(&self) -> RecordKey {
        let Self {
            split,
            sample_id,
            setting,
            sample_index,
            ..
        } = self;
        RecordKey::of(*split, sample_id, setting, *sample_index)
    }

    pub(super) fn from_result(
        rec: &ResultRecord,
        scorer: String,
        v: Verdict,
        score: Option<f64>,
    ) -> Self {
        ScoreRecord {
            split: rec.split,
            sample_id: rec.sample_id.clone(),
            setting: rec.setting.clone(),
            setting_value: rec.setting_value,
            sample_index: rec.sample_index,
            model: rec.model.clone(),
            question_type: rec.question_type,
            think_tokens: rec.think_tokens,
            correct: v.correct,
            scorer,
            extracted: v.extracted,
            hallucination_score: score,
            details: v.details,
        }
    }
}

/// Read `scores.jsonl`.
pub fn read_scores(path: &Path) -> Result<Vec<ScoreRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a score record", path.display(), i + 1))
        })
        .collect()
}

/// Write `scores.jsonl` (through a temporary file, so a reader never sees half of it).
pub fn write_scores(path: &Path, scores: &[ScoreRecord]) -> Result<()> {
    crate::fsutil::replace_with(path, |tmp| {
        let mut w = BufWriter::new(File::create(tmp)?);
        for s in scores {
            serde_json::to_writer(&mut w, s)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    })
    .with_context(|| format!("cannot write {}", path.display()))
}

/// Group score records by model (in first-seen order).
pub fn by_model(scores: &[ScoreRecord]) -> Vec<(String, Vec<&ScoreRecord>)> {
    let mut order: Vec<String> = Vec::new();
    let mut map: HashMap<String, Vec<&ScoreRecord>> = HashMap::new();
    for s in scores {
        if !map.contains_key(&s.model) {
            order.push(s.model.clone());
        }
        map.entry(s.model.clone()).or_default().push(s);
    }
    order
        .into_iter()
        .map(|m| {
            let v = map.remove(&m).unwrap_or_default();
            (m, v)
        })
        .collect()
}
