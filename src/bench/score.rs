//! `score_run`: turns `RUN_DIR/results.jsonl` into `scores.jsonl`, `metrics.json`,
//! `metrics.csv` and `rhauc.json`, with the rule-based scorer ([`super::rule`]) or an LLM judge
//! ([`super::judge`]).

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};

use super::judge::{Judge, JudgeConfig, JudgeSource};
use super::metrics::{self, ModelRhAuc, SettingMetrics, RHAUC_JSON};
use super::results::{read_results, LineProblem, ResultRecord, RESULTS_FILE};
use super::rule::{score_rule, Verdict, RULE_SCORER};
use super::scores::{write_scores, ScoreRecord, SCORES_FILE};

pub const JUDGE_CACHE_FILE: &str = "judge_cache.jsonl";

#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Use an LLM judge instead of the rule-based scorer.
    pub judge: Option<JudgeConfig>,
    /// Bootstrap resamples for the RH-AUC interval (0 = none).
    pub bootstrap: usize,
    pub seed: u64,
    pub progress: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            judge: None,
            bootstrap: 1000,
            seed: 0,
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ScoreSummary {
    pub records: usize,
    /// Later lines with a key already seen (ignored).
    pub duplicates: usize,
    pub line_problems: Vec<LineProblem>,
    /// Judge requests answered over HTTP / from the cache.
    pub judge_http: usize,
    pub judge_cached: usize,
    /// Records scored by the rule-based scorer because the judge's reply could not be parsed.
    pub judge_fallbacks: usize,
    pub metrics: Vec<SettingMetrics>,
    pub rhauc: Vec<ModelRhAuc>,
}

/// Score every record of `run_dir/results.jsonl`; write `scores.jsonl`, `metrics.json`,
/// `metrics.csv` and `rhauc.json` into `run_dir`.
pub fn score_run(run_dir: &Path, opts: &ScoreOptions) -> Result<ScoreSummary> {
    let results_path = run_dir.join(RESULTS_FILE);
    if !results_path.exists() {
        anyhow::bail!(
            "{} not found: is {} a run directory?",
            results_path.display(),
            run_dir.display()
        );
    }
    let (records, line_problems) = read_results(&results_path)?;
    let mut seen = HashSet::new();
    let mut summary = ScoreSummary {
        line_problems,
        ..Default::default()
    };
    let unique: Vec<&ResultRecord> = records
        .iter()
        .filter(|r| {
            let fresh = seen.insert((r.model.clone(), r.key()));
            if !fresh {
                summary.duplicates += 1;
            }
            fresh
        })
        .collect();
    summary.records = unique.len();
    if unique.is_empty() {
        anyhow::bail!("{} holds no usable results", results_path.display());
    }

    let mut judge = match &opts.judge {
        Some(cfg) => Some(Judge::new(cfg.clone(), &run_dir.join(JUDGE_CACHE_FILE))?),
        None => None,
    };
    let bar = if opts.progress && judge.is_some() {
        indicatif::ProgressBar::new(unique.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut scores = Vec::with_capacity(unique.len());
    for rec in &unique {
        let scored = match judge.as_mut() {
            None => ScoreRecord::from_result(rec, RULE_SCORER.into(), score_rule(rec), None),
            Some(j) => judge_one(j, rec, &mut summary)?,
        };
        scores.push(scored);
        bar.inc(1);
    }
    bar.finish_and_clear();

    write_scores(&run_dir.join(SCORES_FILE), &scores)?;
    summary.metrics = metrics::compute_metrics(&scores);
    summary.rhauc = metrics::rhauc_per_model(&scores, &summary.metrics, opts.bootstrap, opts.seed);
    metrics::write_metrics(run_dir, &summary.metrics)?;
    metrics::write_rhauc_json(&run_dir.join(RHAUC_JSON), &summary.rhauc)?;
    Ok(summary)
}

/// Score one record with the judge, counting where its answer came from; a reply that cannot be
/// parsed falls back to the rule-based scorer.
fn judge_one(j: &mut Judge, rec: &ResultRecord, summary: &mut ScoreSummary) -> Result<ScoreRecord> {
    let outcome = j.judge(rec).with_context(|| {
        format!(
            "judging {} (judge answers so far are cached; rerun to continue)",
            rec.key()
        )
    })?;
    match outcome.source {
        JudgeSource::Http => summary.judge_http += 1,
        JudgeSource::Cache => summary.judge_cached += 1,
        JudgeSource::NoAnswer => {}
    }
    Ok(match outcome.verdict {
        Some(v) => ScoreRecord::from_result(
            rec,
            j.scorer_name(),
            Verdict {
                correct: v.correct,
                extracted: Some(outcome.judged_answer.clone()),
                details: v.reason.unwrap_or_default(),
            },
            v.hallucination_score,
        ),
        None => {
            summary.judge_fallbacks += 1;
            let mut v = score_rule(rec);
            v.details = format!("judge reply unparseable; {}", v.details);
            ScoreRecord::from_result(rec, RULE_SCORER.into(), v, None)
        }
    })
}
