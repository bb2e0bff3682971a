//! The rule-based scorer: answer extraction and comparison with the gold answer.
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

use std::collections::BTreeSet;

use super::data::QuestionType;
use super::results::ResultRecord;
use super::text::{
    contains_phrase, normalize_text, numbers_in, numbers_match, parse_number, word_numbers, yes_no,
    NumberToken,
};

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
