//! Scoring: answer extraction, the rule-based scorer, and `score_run`, which turns
//! `RUN_DIR/results.jsonl` into `scores.jsonl`, `metrics.json`, `metrics.csv` and `rhauc.json`.
//!
//! Extraction follows RH-Bench's evaluation: the final answer if the model marked one
//! (`<answer>...</answer>`, else `\boxed{...}`), else for multiple choice `Answer: X`, else the
//! whole answer text. The rule-based scorer then compares:
//! - multiple choice: the chosen option letter (a lone letter, `Answer: X`, the option's text or
//!   value, or a single `(X)` mention) against the gold letter (or the option whose text is the
//!   gold answer);
//! - free form: yes/no when the gold answer is yes/no; numeric equivalence when the gold answer
//!   is a number (`3.0` = `3`, `1/2` = `0.5`, `1,234` = `1234`, units ignored); otherwise
//!   normalised text equality or containment of the gold phrase. Long free-form perception
//!   answers (descriptions) are what the LLM judge is for.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::data::{QuestionType, Split};
use super::judge::{Judge, JudgeConfig, JudgeSource};
use super::metrics::{self, ModelRhAuc, SettingMetrics};
use super::results::{read_results, LineProblem, RecordKey, ResultRecord, RESULTS_FILE};
use super::text::{
    contains_phrase, normalize_text, numbers_in, numbers_match, parse_number, word_numbers, yes_no,
    NumberToken,
};

pub const SCORES_FILE: &str = "scores.jsonl";
pub const METRICS_JSON: &str = "metrics.json";
pub const METRICS_CSV: &str = "metrics.csv";
pub const RHAUC_JSON: &str = "rhauc.json";
pub const JUDGE_CACHE_FILE: &str = "judge_cache.jsonl";

/// Name of the rule-based scorer in every output.
pub const RULE_SCORER: &str = "rule";

/// The answer string taken from a generation, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extraction {
    pub text: String,
    /// `answer_tag`, `boxed`, `answer_letter` or `whole`.
    pub method: &'static str,
}

/// Extract the final answer from the text after thinking (anything up to a `</think>` is
/// dropped first).
pub fn extract_answer(answer_text: &str, qtype: QuestionType) -> Extraction {
    let text = match answer_text.rfind("</think>") {
        Some(p) => &answer_text[p + "</think>".len()..],
        None => answer_text,
    };
    if let Some(inner) = answer_tag(text) {
        return Extraction {
            text: inner,
            method: "answer_tag",
        };
    }
    if let Some(inner) = last_boxed(text) {
        return Extraction {
            text: inner,
            method: "boxed",
        };
    }
    if qtype == QuestionType::MultiChoice {
        if let Some(letter) = answer_colon_letter(text) {
            return Extraction {
                text: letter.to_string(),
                method: "answer_letter",
            };
        }
    }
    Extraction {
        text: text.trim().to_string(),
        method: "whole",
    }
}

/// Content of the last `<answer>...</answer>` (or of an unclosed last `<answer>`).
fn answer_tag(text: &str) -> Option<String> {
    let open = text.rfind("<answer>")?;
    let body = &text[open + "<answer>".len()..];
    let body = match body.find("</answer>") {
        Some(close) => &body[..close],
        None => body,
    };
    let t = body.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Content of the last `\boxed{...}` with balanced braces.
fn last_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let t = text[start..start + i].trim();
                    return (!t.is_empty()).then(|| t.to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// RH-Bench's `Answer:\s*([A-Da-d])`, widened to any letter A-Z but requiring that the letter
/// ends a word ("Answer: The cat" is not "T"), upper-cased. The last match wins.
pub fn answer_colon_letter(text: &str) -> Option<char> {
    let mut found = None;
    let mut rest = text;
    let mut offset = 0;
    while let Some(p) = rest.find("Answer:") {
        let after = &text[offset + p + "Answer:".len()..];
        let t = after.trim_start();
        let t = t.strip_prefix('(').unwrap_or(t);
        let mut chars = t.chars();
        if let Some(c) = chars.next() {
            let next = chars.next();
            if c.is_ascii_alphabetic() && next.is_none_or(|n| !n.is_alphanumeric()) {
                // A lowercase letter followed by a space is more likely the article "a".
                let lower_ok = c.is_ascii_uppercase()
                    || next.is_none_or(|n| matches!(n, ')' | '.' | ',' | '\n'));
                if lower_ok {
                    found = Some(c.to_ascii_uppercase());
                }
            }
        }
        offset += p + "Answer:".len();
        rest = &text[offset..];
    }
    found
}

/// A lone option letter: "C", "(C)", "C.", "C)", "Option C", "C. <text of C>".
fn lone_letter(candidate: &str, options: &[(String, String)]) -> Option<String> {
    let t = candidate.trim().trim_end_matches(['.', '!']).trim();
    let t = strip_prefix_ci(t, "option").map(str::trim).unwrap_or(t);
    let t = strip_prefix_ci(t, "choice").map(str::trim).unwrap_or(t);
    let inner = t
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(t)
        .trim_end_matches([')', ':', '.'])
        .trim();
    let mut chars = inner.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if c.is_ascii_alphabetic() {
            let upper = c.to_ascii_uppercase().to_string();
            // A lowercase lone letter counts only when it names an option.
            if c.is_ascii_uppercase() || options.iter().any(|(l, _)| *l == upper) {
                return Some(upper);
            }
        }
    }
    // "C. text" / "(C) text" where text is option C's text.
    for (letter, opt_text) in options {
        let l = letter.chars().next()?;
        for form in [
            format!("({l})"),
            format!("{l}."),
            format!("{l})"),
            format!("{l}:"),
        ] {
            if let Some(rest) = t.strip_prefix(&form) {
                let rest = normalize_text(rest);
                if rest.is_empty() || rest == normalize_text(opt_text) {
                    return Some(letter.clone());
                }
            }
        }
    }
    None
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The option whose text (or numeric value) the candidate is or contains.
fn option_by_text(candidate: &str, options: &[(String, String)]) -> Option<String> {
    let cand = normalize_text(candidate);
    if cand.is_empty() {
        return None;
    }
    if let Some((l, _)) = options.iter().find(|(_, t)| normalize_text(t) == cand) {
        return Some(l.clone());
    }
    if let Some(p) = parse_number(candidate) {
        let hits: Vec<&String> = options
            .iter()
            .filter(|(_, t)| parse_number(t).is_some_and(|g| numbers_match(&p, &g)))
            .map(|(l, _)| l)
            .collect();
        if hits.len() == 1 {
            return Some(hits[0].clone());
        }
    }
    // Containment: the options whose text occurs in the candidate; if one contains all others
    // (e.g. "dark red" vs "red"), it wins.
    let hits: Vec<(&String, String)> = options
        .iter()
        .map(|(l, t)| (l, normalize_text(t)))
        .filter(|(_, t)| contains_phrase(&cand, t))
        .collect();
    let longest = hits.iter().max_by_key(|(_, t)| t.len())?;
    hits.iter()
        .all(|(_, t)| contains_phrase(&longest.1, t))
        .then(|| longest.0.clone())
}

/// Letters mentioned as "(X)" or "option X"; the letter if exactly one distinct is mentioned.
fn single_letter_mention(candidate: &str, options: &[(String, String)]) -> Option<String> {
    let letters: Vec<String> = if options.is_empty() {
        ["A", "B", "C", "D", "E"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        options.iter().map(|(l, _)| l.clone()).collect()
    };
    let lower = candidate.to_lowercase();
    let found: BTreeSet<&String> = letters
        .iter()
        .filter(|l| {
            let ll = l.to_lowercase();
            candidate.contains(&format!("({l})"))
                || lower.contains(&format!("option {ll} "))
                || lower.ends_with(&format!("option {ll}"))
                || lower.contains(&format!("option {ll}."))
                || lower.contains(&format!("option {ll},"))
        })
        .collect();
    (found.len() == 1).then(|| found.into_iter().next().cloned())?
}

/// The option letter a multiple-choice candidate answer picks.
pub fn choose_option(
    candidate: &str,
    options: &[(String, String)],
) -> Option<(String, &'static str)> {
    if let Some(l) = lone_letter(candidate, options) {
        return Some((l, "letter"));
    }
    if let Some(c) = answer_colon_letter(candidate) {
        return Some((c.to_string(), "answer_letter"));
    }
    if let Some(l) = option_by_text(candidate, options) {
        return Some((l, "option_text"));
    }
    single_letter_mention(candidate, options).map(|l| (l, "letter_mention"))
}

/// The gold option letter: the gold answer as a letter, or the option whose text it is.
pub fn gold_option(gold: &str, options: &[(String, String)]) -> Option<String> {
    let t = gold.trim();
    let inner = t
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(t)
        .trim_end_matches(['.', ')']);
    let mut chars = inner.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if c.is_ascii_alphabetic() {
            let upper = c.to_ascii_uppercase().to_string();
            if options.is_empty() || options.iter().any(|(l, _)| *l == upper) {
                return Some(upper);
            }
        }
    }
    let g = normalize_text(t);
    if let Some((l, _)) = options.iter().find(|(_, o)| normalize_text(o) == g) {
        return Some(l.clone());
    }
    let gnum = parse_number(t)?;
    let hits: Vec<&String> = options
        .iter()
        .filter(|(_, o)| parse_number(o).is_some_and(|n| numbers_match(&n, &gnum)))
        .map(|(l, _)| l)
        .collect();
    (hits.len() == 1).then(|| hits[0].clone())
}

/// Outcome of scoring one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub correct: bool,
    /// The normalised answer compared (a letter, a number, yes/no, or text).
    pub extracted: Option<String>,
    pub details: String,
}

/// Free-form comparison of a candidate answer with the gold answer.
pub fn free_form_match(candidate: &str, gold: &str) -> Verdict {
    if let Some(g) = yes_no_gold(gold) {
        let p = yes_no(candidate);
        let yn = |b: bool| if b { "yes" } else { "no" };
        return Verdict {
            correct: p == Some(g),
            extracted: p.map(|b| yn(b).to_string()),
            details: format!("yes/no; gold {}", yn(g)),
        };
    }
    if let Some(g) = parse_number(gold) {
        let toks = numbers_in(candidate);
        // The answer's own number if it is one; else the last number it states in digits;
        // else the last number word ("three").
        let p = parse_number(candidate)
            .or_else(|| toks.last().copied())
            .or_else(|| {
                word_numbers(candidate).last().map(|&value| NumberToken {
                    value,
                    start: 0,
                    end: 0,
                    percent: false,
                    decimals: 0,
                })
            });
        return Verdict {
            correct: p.is_some_and(|p| numbers_match(&p, &g)),
            extracted: p.map(|p| format_number(p.value)),
            details: format!("numeric; gold {}", format_number(g.value)),
        };
    }
    let c = normalize_text(candidate);
    let g = normalize_text(gold);
    let correct = !g.is_empty() && (c == g || contains_phrase(&c, &g));
    Verdict {
        correct,
        extracted: (!c.is_empty()).then_some(c),
        details: "text match (normalised equality or containment)".into(),
    }
}

/// yes/no only when the gold answer is plainly one ("Yes", "no.", "Yes, there is ...").
fn yes_no_gold(gold: &str) -> Option<bool> {
    let norm = normalize_text(gold);
    match norm.split_whitespace().next()? {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The rule-based scorer.
pub fn score_rule(rec: &ResultRecord) -> Verdict {
    let (candidate, method) = match &rec.extracted {
        Some(e) if !e.trim().is_empty() => (e.trim().to_string(), "runner"),
        _ => {
            let e = extract_answer(&rec.answer_text, rec.question_type);
            (e.text, e.method)
        }
    };
    if candidate.is_empty() {
        return Verdict {
            correct: false,
            extracted: None,
            details: "empty answer".into(),
        };
    }
    match rec.question_type {
        QuestionType::MultiChoice => {
            let gold = gold_option(&rec.gold, &rec.options);
            let chosen = choose_option(&candidate, &rec.options);
            match (gold, chosen) {
                (Some(g), Some((p, how))) => Verdict {
                    correct: g == p,
                    extracted: Some(p),
                    details: format!("option letter via {method}/{how}; gold {g}"),
                },
                (Some(g), None) => Verdict {
                    correct: false,
                    extracted: None,
                    details: format!("no option found in answer ({method}); gold {g}"),
                },
                (None, chosen) => {
                    // The gold answer is neither a letter nor an option: compare values, using the
                    // chosen option's text when there is one.
                    let text = chosen
                        .as_ref()
                        .and_then(|(l, _)| rec.options.iter().find(|(o, _)| o == l))
                        .map(|(_, t)| t.clone())
                        .unwrap_or(candidate);
                    let mut v = free_form_match(&text, &rec.gold);
                    v.details = format!("gold is not an option letter; {}", v.details);
                    v
                }
            }
        }
        QuestionType::FreeForm => {
            let mut v = free_form_match(&candidate, &rec.gold);
            v.details = format!("{} ({method})", v.details);
            v
        }
    }
}

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
        RecordKey {
            split: self.split,
            sample_id: self.sample_id.clone(),
            setting: self.setting.clone(),
            sample_index: self.sample_index,
        }
    }

    fn from_result(rec: &ResultRecord, scorer: String, v: Verdict, score: Option<f64>) -> Self {
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
            Some(j) => {
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
                match outcome.verdict {
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
                }
            }
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

fn write_scores(path: &Path, scores: &[ScoreRecord]) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = BufWriter::new(f);
        for s in scores {
            serde_json::to_writer(&mut w, s)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
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
