//! Benchmark data: RH-Bench as released, or a generic JSON / JSONL file with the same fields.
//!
//! RH-Bench layout (a directory): `reason_data.json` + `reason_images/` (reasoning split) and/or
//! `halu_data.json` + `per_images/` (perception split). Each file is a JSON array of records
//! `{id, question, image, answer, question_type}`; `question_type` is `multi_choice` or
//! `free_form` (the release also spells it `free_from`). Perception multiple-choice records may
//! carry `options` (a list of option texts, lettered A, B, ... in order); reasoning
//! multiple-choice questions list their choices after "Choices:" in the question text.
//!
//! Generic layout: a JSON array (or `{"samples": [...]}`), a JSONL file, or a directory with
//! `bench.jsonl` / `bench.json`; the same fields plus `split` (`perception` | `reasoning`).
//!
//! Image paths are relative to the data file's directory; for RH-Bench files the split's image
//! folder is tried as well. Every record is validated; bad records are skipped and returned as
//! [`RecordProblem`]s, never a crash.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which half of RH-Bench a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Perception,
    Reasoning,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Perception => "perception",
            Split::Reasoning => "reasoning",
        }
    }

    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "perception" => Some(Split::Perception),
            "reasoning" => Some(Split::Reasoning),
            _ => None,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `multi_choice` or `free_form` (`free_from` and `multiple_choice` are accepted on input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuestionType {
    #[serde(rename = "multi_choice", alias = "multiple_choice")]
    MultiChoice,
    #[serde(rename = "free_form", alias = "free_from")]
    FreeForm,
}

impl QuestionType {
    pub fn as_str(self) -> &'static str {
        match self {
            QuestionType::MultiChoice => "multi_choice",
            QuestionType::FreeForm => "free_form",
        }
    }

    pub fn parse(s: &str) -> Option<QuestionType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "multi_choice" | "multiple_choice" => Some(QuestionType::MultiChoice),
            "free_form" | "free_from" => Some(QuestionType::FreeForm),
            _ => None,
        }
    }
}

impl fmt::Display for QuestionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated benchmark question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unique within its split (RH-Bench numbers both files independently).
    pub id: String,
    pub split: Split,
    /// The question as given to the model (for reasoning MC it includes the "Choices:" list).
    pub question: String,
    /// Resolved image path (exists at load time).
    pub image: PathBuf,
    /// Gold answer as text (numbers and booleans in the file are converted to text).
    pub answer: String,
    pub qtype: QuestionType,
    /// Options as (letter, text), letters `A`, `B`, ...; empty for free-form questions and for
    /// multiple-choice questions whose options could not be found.
    pub options: Vec<(String, String)>,
    /// Evidence boxes (`bbox`: `[x0, y0, x1, y1]` or a list, original-image pixels); `eval`
    /// reports the share of visual attention inside each.
    pub bboxes: Vec<crate::formats::spatial::PixelBox>,
}

impl Sample {
    /// `split/id`, unique within a bench.
    pub fn key(&self) -> String {
        format!("{}/{}", self.split, self.id)
    }
}

/// A record that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordProblem {
    pub file: PathBuf,
    /// 0-based record index in the file (line index for JSONL).
    pub index: usize,
    pub id: Option<String>,
    pub reason: String,
}

impl fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.file.display().to_string());
        match &self.id {
            Some(id) => write!(f, "{name} record {} (id {id}): {}", self.index, self.reason),
            None => write!(f, "{name} record {}: {}", self.index, self.reason),
        }
    }
}

/// How the bench was laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchFormat {
    RhBench,
    Generic,
}

/// A loaded benchmark: valid samples in file order (reasoning file first) and skipped records.
#[derive(Debug, Clone)]
pub struct Bench {
    pub path: PathBuf,
    pub format: BenchFormat,
    pub samples: Vec<Sample>,
    pub problems: Vec<RecordProblem>,
}

impl Bench {
    pub fn count(&self, split: Split) -> usize {
        self.samples.iter().filter(|s| s.split == split).count()
    }

    /// Keep only `split` (if given), then the first `limit` samples of each split (if given).
    pub fn select(&self, split: Option<Split>, limit_per_split: Option<usize>) -> Vec<Sample> {
        let mut taken: HashMap<Split, usize> = HashMap::new();
        let mut out = Vec::new();
        for s in &self.samples {
            if split.is_some_and(|want| want != s.split) {
                continue;
            }
            let n = taken.entry(s.split).or_insert(0);
            if limit_per_split.is_some_and(|lim| *n >= lim) {
                continue;
            }
            *n += 1;
            out.push(s.clone());
        }
        out
    }
}

/// Errors that stop loading altogether (a bad record never does).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench path {0} does not exist")]
    NotFound(PathBuf),
    #[error("{0} has no reason_data.json, halu_data.json, bench.jsonl or bench.json")]
    UnknownLayout(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON or JSONL: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Load a bench from a directory (RH-Bench or generic layout) or a single JSON / JSONL file.
pub fn load_bench(path: &Path) -> Result<Bench, BenchError> {
    if !path.exists() {
        return Err(BenchError::NotFound(path.to_path_buf()));
    }
    let mut loader = Loader::default();
    let format;
    if path.is_dir() {
        let reason = path.join("reason_data.json");
        let halu = path.join("halu_data.json");
        if reason.is_file() || halu.is_file() {
            format = BenchFormat::RhBench;
            if reason.is_file() {
                loader.load_file(&reason, Some(Split::Reasoning))?;
            }
            if halu.is_file() {
                loader.load_file(&halu, Some(Split::Perception))?;
            }
        } else if path.join("bench.jsonl").is_file() {
            format = BenchFormat::Generic;
            loader.load_file(&path.join("bench.jsonl"), None)?;
        } else if path.join("bench.json").is_file() {
            format = BenchFormat::Generic;
            loader.load_file(&path.join("bench.json"), None)?;
        } else {
            return Err(BenchError::UnknownLayout(path.to_path_buf()));
        }
    } else {
        let split = rh_bench_split_of(path);
        format = if split.is_some() {
            BenchFormat::RhBench
        } else {
            BenchFormat::Generic
        };
        loader.load_file(path, split)?;
    }
    Ok(Bench {
        path: path.to_path_buf(),
        format,
        samples: loader.samples,
        problems: loader.problems,
    })
}

/// The split implied by an RH-Bench file name.
fn rh_bench_split_of(path: &Path) -> Option<Split> {
    match path.file_name()?.to_str()? {
        "reason_data.json" => Some(Split::Reasoning),
        "halu_data.json" => Some(Split::Perception),
        _ => None,
    }
}

/// The image folders RH-Bench uses for each split.
fn image_dirs(split: Split) -> &'static [&'static str] {
    match split {
        Split::Reasoning => &["reason_images", "per_images"],
        Split::Perception => &["per_images", "reason_images"],
    }
}

#[derive(Default)]
struct Loader {
    samples: Vec<Sample>,
    problems: Vec<RecordProblem>,
    /// (split, id) -> (file, index) of the first occurrence.
    seen: HashMap<(Split, String), (PathBuf, usize)>,
}

impl Loader {
    fn load_file(&mut self, file: &Path, default_split: Option<Split>) -> Result<(), BenchError> {
        let text = std::fs::read_to_string(file).map_err(|source| BenchError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        for (index, rec) in parse_records(file, &text)? {
            match rec {
                Ok(value) => self.add_record(file, &base, index, &value, default_split),
                Err(reason) => self.problems.push(RecordProblem {
                    file: file.to_path_buf(),
                    index,
                    id: None,
                    reason,
                }),
            }
        }
        Ok(())
    }

    fn add_record(
        &mut self,
        file: &Path,
        base: &Path,
        index: usize,
        value: &Value,
        default_split: Option<Split>,
    ) {
        let id = value
            .as_object()
            .and_then(|o| any_field(o, ID_FIELDS).ok())
            .and_then(scalar_text);
        match validate_record(base, value, default_split) {
            Ok(sample) => {
                let key = (sample.split, sample.id.clone());
                if let Some((first_file, first_index)) = self.seen.get(&key) {
                    let where_ = if first_file == file {
                        format!("record {first_index}")
                    } else {
                        format!("{} record {first_index}", first_file.display())
                    };
                    self.problems.push(RecordProblem {
                        file: file.to_path_buf(),
                        index,
                        id,
                        reason: format!(
                            "duplicate id `{}` in split {} (first seen at {where_})",
                            sample.id, sample.split
                        ),
                    });
                    return;
                }
                self.seen.insert(key, (file.to_path_buf(), index));
                self.samples.push(sample);
            }
            Err(reason) => self.problems.push(RecordProblem {
                file: file.to_path_buf(),
                index,
                id,
                reason,
            }),
        }
    }
}

/// Split a data file into records: a JSON array, `{"samples"|"data": [...]}`, or JSONL.
/// A JSONL line that does not parse becomes a per-record problem.
#[allow(clippy::type_complexity)]
fn parse_records(
    file: &Path,
    text: &str,
) -> Result<Vec<(usize, Result<Value, String>)>, BenchError> {
    let is_jsonl = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    if !is_jsonl {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => return Ok(items.into_iter().map(Ok).enumerate().collect()),
            Ok(Value::Object(mut map)) => {
                for key in ["samples", "data", "records"] {
                    if let Some(Value::Array(items)) = map.remove(key) {
                        return Ok(items.into_iter().map(Ok).enumerate().collect());
                    }
                }
                // A single JSON object: treat the file as JSONL with one line.
            }
            Ok(_) => {
                return Err(BenchError::Parse {
                    path: file.to_path_buf(),
                    message: "expected an array of records".into(),
                })
            }
            Err(e) => {
                // Not one JSON document; fall back to JSONL if the first line parses on its own.
                let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                if serde_json::from_str::<Value>(first).is_err() {
                    return Err(BenchError::Parse {
                        path: file.to_path_buf(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push((
            index,
            serde_json::from_str::<Value>(line).map_err(|e| format!("invalid JSON line: {e}")),
        ));
    }
    Ok(out)
}

/// Text of a string, number or boolean JSON value.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "yes".into() } else { "no".into() }),
        _ => None,
    }
}

/// The names a field goes by: rhlens's first, then those of the paper's files (its layer
/// analysis reads `{"question_id", "image", "text"}`; its length-control scripts read RH-Bench
/// records by `image_src`).
const ID_FIELDS: &[&str] = &["id", "question_id"];
const QUESTION_FIELDS: &[&str] = &["question", "text", "prompt"];
const IMAGE_FIELDS: &[&str] = &["image", "image_src"];

/// The first of `names` present and not null in `obj`.
fn any_field<'v>(
    obj: &'v serde_json::Map<String, Value>,
    names: &[&str],
) -> Result<&'v Value, String> {
    names
        .iter()
        .find_map(|n| obj.get(*n).filter(|v| !v.is_null()))
        .ok_or_else(|| {
            let alt: Vec<String> = names[1..].iter().map(|n| format!("`{n}`")).collect();
            if alt.is_empty() {
                format!("missing field `{}`", names[0])
            } else {
                format!("missing field `{}` (or {})", names[0], alt.join(", "))
            }
        })
}

/// The record's id (`id` or `question_id`), question and image name, as text.
fn question_fields(
    obj: &serde_json::Map<String, Value>,
) -> Result<(String, String, String), String> {
    let id =
        scalar_text(any_field(obj, ID_FIELDS)?).ok_or("field `id` is not a string or number")?;
    let id = id.trim().to_string();
    if id.is_empty() {
        return Err("empty `id`".into());
    }
    let question = any_field(obj, QUESTION_FIELDS)?
        .as_str()
        .ok_or("field `question` is not a string")?
        .to_string();
    if question.trim().is_empty() {
        return Err("empty question".into());
    }
    let image = any_field(obj, IMAGE_FIELDS)?
        .as_str()
        .ok_or("field `image` is not a string")?
        .trim()
        .to_string();
    if image.is_empty() {
        return Err("empty `image`".into());
    }
    Ok((id, question, image))
}

fn validate_record(
    base: &Path,
    value: &Value,
    default_split: Option<Split>,
) -> Result<Sample, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| "record is not a JSON object".to_string())?;
    let field = |name: &str| -> Result<&Value, String> { any_field(obj, &[name]) };
    let (id, question, image_name) = question_fields(obj)?;
    let answer = scalar_text(field("answer")?)
        .ok_or("field `answer` is not a string or number")?
        .trim()
        .to_string();
    if answer.is_empty() {
        return Err("empty answer".into());
    }
    let qt_text = field("question_type")?
        .as_str()
        .ok_or("field `question_type` is not a string")?;
    let qtype = QuestionType::parse(qt_text).ok_or_else(|| {
        format!("unknown question_type `{qt_text}` (expected multi_choice or free_form)")
    })?;
    let split = match obj.get("split") {
        None | Some(Value::Null) => default_split.ok_or("missing field `split`")?,
        Some(v) => {
            let s = v.as_str().ok_or("field `split` is not a string")?;
            Split::parse(s)
                .ok_or_else(|| format!("unknown split `{s}` (expected perception or reasoning)"))?
        }
    };
    let image = resolve_image(base, &image_name, image_dirs(split)).ok_or_else(|| {
        format!(
            "image `{image_name}` not found (looked in {} and its {} folders)",
            base.display(),
            image_dirs(split).join("/")
        )
    })?;
    let options = match obj.get("options") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse_options_value(v)?,
    };
    let options = if options.is_empty() && qtype == QuestionType::MultiChoice {
        options_from_question(&question)
    } else {
        options
    };
    let bboxes = match obj.get("bbox") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => crate::formats::evidence::parse_bboxes(v)?,
    };
    Ok(Sample {
        id,
        split,
        question,
        image,
        answer,
        qtype,
        options,
        bboxes,
    })
}

/// `name` under `base` or one of its `dirs`; a path that is not there (an absolute path of
/// another machine, as RH-Bench's `image_src` holds) is looked up by its file name, as the
/// paper's scripts do.
fn resolve_image(base: &Path, name: &str, dirs: &[&str]) -> Option<PathBuf> {
    let rel = Path::new(name);
    let mut candidates = vec![base.join(rel)];
    for dir in dirs {
        if !rel.is_absolute() {
            candidates.push(base.join(dir).join(rel));
        }
    }
    if let Some(file_name) = rel.file_name() {
        candidates.push(base.join(file_name));
        for dir in dirs {
            candidates.push(base.join(dir).join(file_name));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// A question without a gold answer, for analyses that only ask (the layer analysis).
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub question: String,
    /// Resolved image path (exists at load time).
    pub image: PathBuf,
}

/// Read questions from a JSON array, `{"samples"|"data"|"records": [...]}` or JSONL file, in
/// rhlens's schema (`id`, `image`, `question`) or the paper's (`question_id`, `image`, `text`;
/// RH-Bench's `image_src`). A record without an id is numbered by its index. Images are looked
/// up under `images` (default: the file's directory) by path, then by file name. Bad records
/// come back as problems.
pub fn load_questions(
    path: &Path,
    images: Option<&Path>,
) -> Result<(Vec<Question>, Vec<RecordProblem>), BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = images
        .map(Path::to_path_buf)
        .unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_path_buf());
    let mut questions = Vec::new();
    let mut problems = Vec::new();
    for (index, rec) in parse_records(path, &text)? {
        let mut problem = |id: Option<String>, reason: String| {
            problems.push(RecordProblem {
                file: path.to_path_buf(),
                index,
                id,
                reason,
            })
        };
        let value = match rec {
            Ok(v) => v,
            Err(reason) => {
                problem(None, reason);
                continue;
            }
        };
        let Some(obj) = value.as_object() else {
            problem(None, "record is not a JSON object".into());
            continue;
        };
        let mut obj = obj.clone();
        let given_id = any_field(&obj, ID_FIELDS).ok().and_then(scalar_text);
        if given_id.is_none() {
            obj.insert("id".into(), Value::from(index.to_string()));
        }
        match question_fields(&obj) {
            Ok((id, question, name)) => match resolve_image(&base, &name, &[]) {
                Some(image) => questions.push(Question {
                    id,
                    question,
                    image,
                }),
                None => problem(
                    given_id,
                    format!("image `{name}` not found in {}", base.display()),
                ),
            },
            Err(reason) => problem(given_id, reason),
        }
    }
    Ok((questions, problems))
}

/// `options` as a list of texts (optionally already labelled "A. ...") or a letter -> text map.
fn parse_options_value(v: &Value) -> Result<Vec<(String, String)>, String> {
    match v {
        Value::Array(items) => {
            let texts = items
                .iter()
                .map(|it| scalar_text(it).ok_or("`options` holds a non-text item".to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            // Labelled only when every item carries the expected letter in order.
            let labelled: Option<Vec<(String, String)>> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let letter = letter_at(i)?;
                    strip_label(t, letter).map(|rest| (letter.to_string(), rest))
                })
                .collect();
            Ok(match labelled {
                Some(l) if !l.is_empty() => l,
                _ => texts
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| {
                        letter_at(i)
                            .map(|l| (l.to_string(), t.trim().to_string()))
                            .ok_or("more than 26 options".to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            })
        }
        Value::Object(map) => {
            let mut out: Vec<(String, String)> = map
                .iter()
                .map(|(k, v)| {
                    let text = scalar_text(v).ok_or("`options` holds a non-text value")?;
                    let key = k.trim().to_ascii_uppercase();
                    if key.len() != 1 || !key.chars().all(|c| c.is_ascii_uppercase()) {
                        return Err(format!("`options` key `{k}` is not a letter"));
                    }
                    Ok((key, text.trim().to_string()))
                })
                .collect::<Result<Vec<_>, String>>()?;
            out.sort();
            Ok(out)
        }
        _ => Err("`options` is neither a list nor a letter -> text map".into()),
    }
}

fn letter_at(i: usize) -> Option<char> {
    (i < 26).then(|| (b'A' + i as u8) as char)
}

/// "A. x", "A) x", "(A) x", "A: x" -> "x" when the label is `letter`.
fn strip_label(text: &str, letter: char) -> Option<String> {
    let t = text.trim_start();
    let rest = if let Some(r) = t.strip_prefix('(') {
        r.strip_prefix(letter)?.strip_prefix(')')?
    } else {
        let r = t.strip_prefix(letter)?;
        r.strip_prefix(['.', ')', ':'])?
    };
    Some(rest.trim().to_string())
}

/// Options listed in the question text after "Choices:" (or "Options:"), e.g.
/// "Choices:\n(A) 2\n(B) 3" or "Choices: A. 2 B. 3". Empty when fewer than two are found.
pub fn options_from_question(question: &str) -> Vec<(String, String)> {
    let lower = question.to_ascii_lowercase();
    let start = ["choices:", "options:"]
        .iter()
        .filter_map(|m| lower.rfind(m).map(|p| p + m.len()))
        .max();
    let Some(start) = start else {
        return Vec::new();
    };
    parse_choice_list(&question[start..])
}

/// Parse a lettered choice list. Lines that start with the next expected letter's marker are
/// preferred (so "Mr. B. Smith" inside a choice does not split it); otherwise markers are
/// looked for inline after whitespace.
pub fn parse_choice_list(text: &str) -> Vec<(String, String)> {
    for lowercase in [false, true] {
        let by_lines = choices_by_lines(text, lowercase);
        if by_lines.len() >= 2 {
            return by_lines;
        }
        let inline = choices_inline(text, lowercase);
        if inline.len() >= 2 {
            return inline;
        }
    }
    Vec::new()
}

/// Length of a choice marker for `letter` at the start of `s`, if any. Lowercase letters are
/// only accepted in parentheses ("(a)"), since "a." is ordinary prose.
fn marker_len(s: &str, letter: char, lowercase: bool) -> Option<usize> {
    let l = if lowercase {
        letter.to_ascii_lowercase()
    } else {
        letter
    };
    let b = s.as_bytes();
    if b.len() >= 3 && b[0] == b'(' && b[1] == l as u8 && b[2] == b')' {
        return Some(3);
    }
    if !lowercase && b.len() >= 2 && b[0] == l as u8 && matches!(b[1], b'.' | b')' | b':') {
        // "A." must be followed by whitespace or the end, so "A.5" is not a marker.
        if b.len() == 2 || b[2].is_ascii_whitespace() {
            return Some(2);
        }
    }
    None
}

fn choices_by_lines(text: &str, lowercase: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        let next = letter_at(out.len());
        if let Some(len) = next.and_then(|l| marker_len(t, l, lowercase)) {
            let letter = next.map(String::from).unwrap_or_default();
            out.push((letter, t[len..].trim().to_string()));
        } else if let Some(last) = out.last_mut() {
            if !t.is_empty() {
                if !last.1.is_empty() {
                    last.1.push(' ');
                }
                last.1.push_str(t);
            }
        }
    }
    out
}

fn choices_inline(text: &str, lowercase: bool) -> Vec<(String, String)> {
    // (letter, marker start, text start)
    let mut marks: Vec<(char, usize, usize)> = Vec::new();
    let mut prev_ws = true;
    for (pos, ch) in text.char_indices() {
        if prev_ws {
            if let Some(letter) = letter_at(marks.len()) {
                if let Some(len) = marker_len(&text[pos..], letter, lowercase) {
                    marks.push((letter, pos, pos + len));
                }
            }
        }
        prev_ws = ch.is_whitespace();
    }
    let mut out = Vec::new();
    for (i, (letter, _, text_start)) in marks.iter().enumerate() {
        let end = marks.get(i + 1).map(|m| m.1).unwrap_or(text.len());
        let body = text[*text_start..end]
            .trim()
            .trim_end_matches([',', ';'])
            .trim();
        out.push((letter.to_string(), body.to_string()));
    }
    out
}
