//! LLM judge through an OpenAI-compatible `/v1/chat/completions` endpoint, with RH-Bench's rubric:
//! - reasoning questions and perception multiple-choice questions: `is_correct`;
//! - perception free-form questions: a hallucination score 0-5 (5 = none), correct iff >= 3.
//!
//! Requests use temperature 0. Replies are parsed leniently (code fences, prose around the JSON,
//! string booleans). Every successful reply is cached in `RUN_DIR/judge_cache.jsonl` keyed by a
//! hash of the judge model and the full prompt, so re-scoring costs no requests. Transport
//! errors, timeouts, 429 and 5xx are retried with exponential backoff.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::data::{QuestionType, Split};
use super::results::ResultRecord;
use super::rule::extract_answer;
use super::text::{repair_jsonl_tail, stable_hash};

#[derive(Debug, Clone)]
pub struct JudgeConfig {
    /// Base URL (`http://host:8000`, `.../v1`) or the full `.../chat/completions` URL.
    pub url: String,
    /// Judge model name sent in the request (the paper used `gpt-4o`).
    pub model: String,
    /// Bearer token, if the endpoint needs one.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubled after each failed attempt (capped at 60 s).
    pub backoff: Duration,
}

impl JudgeConfig {
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        JudgeConfig {
            url: url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            max_retries: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

/// The chat-completions URL for a user-supplied base URL.
pub fn endpoint_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    if u.ends_with("/chat/completions") {
        u.to_string()
    } else if u.ends_with("/v1") {
        format!("{u}/chat/completions")
    } else {
        format!("{u}/v1/chat/completions")
    }
}

/// What the judge is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeTask {
    /// `{"is_correct": bool}`.
    Correctness,
    /// `{"hallucination_score": 0-5}`; correct iff >= 3.
    Hallucination,
}

impl JudgeTask {
    pub fn for_record(rec: &ResultRecord) -> JudgeTask {
        if rec.split == Split::Perception && rec.question_type == QuestionType::FreeForm {
            JudgeTask::Hallucination
        } else {
            JudgeTask::Correctness
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JudgePrompt {
    pub task: JudgeTask,
    pub system: String,
    pub user: String,
}

const SYSTEM: &str = "You grade answers to benchmark questions strictly by the given criteria. \
Reply with a single JSON object and nothing else.";

/// Build the rubric prompt for a record, with `answer` as the model's (extracted) answer.
pub fn judge_prompt(rec: &ResultRecord, answer: &str) -> JudgePrompt {
    let task = JudgeTask::for_record(rec);
    let user = match task {
        JudgeTask::Hallucination => format!(
            "Rate how much a multimodal model's answer to a question about an image hallucinates, \
that is, states things that are not in the image. You do not see the image: use the question and \
the human-written reference answer. The reference may leave details out, so judge false claims, \
not omissions; reasoning that agrees with the reference is fine.\n\n\
Question:\n{q}\n\nReference answer:\n{g}\n\nModel's answer:\n{a}\n\n\
Scale:\n\
5: no hallucination, fully consistent with the image.\n\
4: a negligible false detail (e.g. a slightly wrong colour or background).\n\
3: a small unsupported detail that does not matter for the answer.\n\
2: a clear false claim that affects the answer (e.g. a wrong count).\n\
1: false claims about the key objects, attributes or actions.\n\
0: the answer is largely unrelated to the image, with several false claims.\n\n\
Reply with JSON only: {{\"hallucination_score\": <integer 0-5>, \"reason\": \"<one sentence>\"}}",
            q = rec.question.trim(),
            g = rec.gold.trim(),
            a = answer.trim(),
        ),
        JudgeTask::Correctness => {
            let options = if rec.options.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = rec
                    .options
                    .iter()
                    .map(|(l, t)| format!("{l}. {t}"))
                    .collect();
                format!("Options:\n{}\n\n", list.join("\n"))
            };
            let rule = match rec.question_type {
                QuestionType::MultiChoice => {
                    "The answer is correct when it selects the same option as the reference answer: \
the same option letter, or the text or value of the reference option."
                }
                QuestionType::FreeForm => {
                    "The answer is correct when it matches the reference answer exactly or, for \
numbers, is numerically equivalent (e.g. 0.5 and 1/2, 3 and 3.0)."
                }
            };
            format!(
                "Decide whether a model's answer to the question below is correct.\n\n\
Question:\n{q}\n\n{options}Reference answer: {g}\n\nModel's answer:\n{a}\n\n{rule} \
If the model gives no answer or several conflicting answers, it is incorrect.\n\n\
Reply with JSON only: {{\"is_correct\": true or false, \"reason\": \"<one sentence>\"}}",
                q = rec.question.trim(),
                g = rec.gold.trim(),
                a = answer.trim(),
            )
        }
    };
    JudgePrompt {
        task,
        system: SYSTEM.to_string(),
        user,
    }
}

/// A parsed judge reply.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeReply {
    pub correct: bool,
    pub hallucination_score: Option<f64>,
    pub reason: Option<String>,
}

/// Parse a judge reply for `task`; `None` when it carries no usable verdict.
pub fn parse_judge_reply(content: &str, task: JudgeTask) -> Option<JudgeReply> {
    let obj = find_json_object(content);
    let reason = obj
        .as_ref()
        .and_then(|o| o.get("reason"))
        .and_then(Value::as_str)
        .map(str::to_string);
    match task {
        JudgeTask::Correctness => {
            let v = obj
                .as_ref()
                .and_then(|o| o.get("is_correct"))
                .and_then(value_bool)
                .or_else(|| scan_field(content, "is_correct").and_then(|t| text_bool(&t)))?;
            Some(JudgeReply {
                correct: v,
                hallucination_score: None,
                reason,
            })
        }
        JudgeTask::Hallucination => {
            let s = obj
                .as_ref()
                .and_then(|o| o.get("hallucination_score"))
                .and_then(value_number)
                .or_else(|| {
                    scan_field(content, "hallucination_score")
                        .and_then(|t| t.trim_matches('"').trim().parse::<f64>().ok())
                })?;
            if !(0.0..=5.0).contains(&s) {
                return None;
            }
            Some(JudgeReply {
                correct: s >= 3.0,
                hallucination_score: Some(s),
                reason,
            })
        }
    }
}

/// The JSON object in a reply: the whole text, a fenced block, or the outermost `{...}`.
fn find_json_object(content: &str) -> Option<serde_json::Map<String, Value>> {
    let t = content.trim();
    let unfenced = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.rsplit_once("```").map(|(body, _)| body))
        .unwrap_or(t);
    if let Ok(Value::Object(m)) = serde_json::from_str(unfenced.trim()) {
        return Some(m);
    }
    let start = t.find('{')?;
    let end = t.rfind('}')?;
    if end <= start {
        return None;
    }
    match serde_json::from_str(&t[start..=end]) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// The raw token after `"field":` in malformed JSON.
fn scan_field(content: &str, field: &str) -> Option<String> {
    let p = content.find(field)?;
    let rest = &content[p + field.len()..];
    let rest = rest.trim_start_matches(['"', '\'', ' ']);
    let rest = rest.strip_prefix(':')?.trim_start();
    let token: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '"'))
        .collect();
    (!token.is_empty()).then_some(token)
}

fn value_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => text_bool(s),
        Value::Number(n) => n.as_i64().and_then(|i| match i {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        }),
        _ => None,
    }
}

fn text_bool(s: &str) -> Option<bool> {
    match s.trim().trim_matches('"').to_ascii_lowercase().as_str() {
        "true" | "yes" | "correct" | "1" => Some(true),
        "false" | "no" | "incorrect" | "0" => Some(false),
        _ => None,
    }
}

fn value_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Where a judged verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeSource {
    Http,
    Cache,
    /// Nothing to judge (empty answer): incorrect without a request.
    NoAnswer,
}

#[derive(Debug, Clone)]
pub struct JudgeOutcome {
    /// `None` when the reply could not be parsed (the reply is then not cached).
    pub verdict: Option<JudgeReply>,
    pub source: JudgeSource,
    /// The answer text shown to the judge.
    pub judged_answer: String,
    pub raw_reply: String,
}

#[derive(Serialize, Deserialize)]
struct CacheLine {
    key: String,
    model: String,
    content: String,
}

/// The judge client with its on-disk cache.
pub struct Judge {
    cfg: JudgeConfig,
    endpoint: String,
    agent: ureq::Agent,
    cache: HashMap<String, String>,
    cache_path: PathBuf,
    cache_file: File,
    http_requests: usize,
}

impl Judge {
    /// Open the judge with its cache file (created if missing; a torn last line is cut).
    pub fn new(cfg: JudgeConfig, cache_path: &Path) -> Result<Judge> {
        if cfg.model.trim().is_empty() {
            bail!("the judge model name is empty");
        }
        if let Some(dir) = cache_path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut cache = HashMap::new();
        if cache_path.exists() {
            repair_jsonl_tail(cache_path, |l| serde_json::from_str::<CacheLine>(l).is_ok())?;
            let text = std::fs::read_to_string(cache_path)
                .with_context(|| format!("cannot read {}", cache_path.display()))?;
            for line in text.lines() {
                if let Ok(c) = serde_json::from_str::<CacheLine>(line) {
                    cache.insert(c.key, c.content);
                }
            }
        }
        let cache_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(cache_path)
            .with_context(|| format!("cannot open {}", cache_path.display()))?;
        let agent = ureq::AgentBuilder::new().timeout(cfg.timeout).build();
        Ok(Judge {
            endpoint: endpoint_url(&cfg.url),
            cfg,
            agent,
            cache,
            cache_path: cache_path.to_path_buf(),
            cache_file,
            http_requests: 0,
        })
    }

    /// `judge:MODEL`, the scorer label of every number this judge produces.
    pub fn scorer_name(&self) -> String {
        format!("judge:{}", self.cfg.model)
    }

    /// HTTP requests sent so far (retries included).
    pub fn http_requests(&self) -> usize {
        self.http_requests
    }

    /// Judge one record.
    pub fn judge(&mut self, rec: &ResultRecord) -> Result<JudgeOutcome> {
        let answer = match &rec.extracted {
            Some(e) if !e.trim().is_empty() => e.trim().to_string(),
            _ => extract_answer(&rec.answer_text, rec.question_type).text,
        };
        if answer.trim().is_empty() {
            return Ok(JudgeOutcome {
                verdict: Some(JudgeReply {
                    correct: false,
                    hallucination_score: None,
                    reason: Some("empty answer".into()),
                }),
                source: JudgeSource::NoAnswer,
                judged_answer: answer,
                raw_reply: String::new(),
            });
        }
        let prompt = judge_prompt(rec, &answer);
        let key = stable_hash(&[&self.cfg.model, &prompt.system, &prompt.user]);
        if let Some(content) = self.cache.get(&key) {
            return Ok(JudgeOutcome {
                verdict: parse_judge_reply(content, prompt.task),
                source: JudgeSource::Cache,
                judged_answer: answer,
                raw_reply: content.clone(),
            });
        }
        let content = self.request(&prompt)?;
        let verdict = parse_judge_reply(&content, prompt.task);
        if verdict.is_some() {
            self.store(&key, &content)?;
        }
        Ok(JudgeOutcome {
            verdict,
            source: JudgeSource::Http,
            judged_answer: answer,
            raw_reply: content,
        })
    }

    fn store(&mut self, key: &str, content: &str) -> Result<()> {
        let line = serde_json::to_string(&CacheLine {
            key: key.to_string(),
            model: self.cfg.model.clone(),
            content: content.to_string(),
        })? + "\n";
        self.cache_file
            .write_all(line.as_bytes())
            .and_then(|_| self.cache_file.sync_data())
            .with_context(|| format!("cannot write {}", self.cache_path.display()))?;
        self.cache.insert(key.to_string(), content.to_string());
        Ok(())
    }

    /// One chat completion, retried on transport errors, timeouts, 429 and 5xx.
    fn request(&mut self, prompt: &JudgePrompt) -> Result<String> {
        let body = json!({
            "model": self.cfg.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
        });
        let mut delay = self.cfg.backoff;
        let mut last_error = String::new();
        for attempt in 0..=self.cfg.max_retries {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            self.http_requests += 1;
            let mut req = self
                .agent
                .post(&self.endpoint)
                .set("Content-Type", "application/json");
            if let Some(k) = &self.cfg.api_key {
                req = req.set("Authorization", &format!("Bearer {k}"));
            }
            match req.send_json(&body) {
                Ok(resp) => {
                    let v: Value = resp.into_json().with_context(|| {
                        format!("judge endpoint {} returned a non-JSON body", self.endpoint)
                    })?;
                    return v
                        .pointer("/choices/0/message/content")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            anyhow!(
                                "judge reply from {} has no choices[0].message.content",
                                self.endpoint
                            )
                        });
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    let snippet: String = text.chars().take(200).collect();
                    if code == 429 || code >= 500 {
                        last_error = format!("HTTP {code}: {snippet}");
                        continue;
                    }
                    bail!(
                        "judge endpoint {} answered HTTP {code}: {snippet}",
                        self.endpoint
                    );
                }
                Err(ureq::Error::Transport(t)) => {
                    last_error = t.to_string();
                }
            }
        }
        bail!(
            "judge endpoint {} failed after {} attempts; last error: {last_error}",
            self.endpoint,
            self.cfg.max_retries + 1
        )
    }
}
