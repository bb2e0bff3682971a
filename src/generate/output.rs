//! What a generation produces: the ids, the thinking / answer split, what length control did,
//! why it stopped, and how long it took.
use serde::{Deserialize, Serialize};

use super::config::GenerateConfig;
use crate::error::InvalidSetting;

/// What happened at a generated position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The model closed the thinking block itself.
    ThinkEnd,
    /// Length control closed the thinking block (budget reached).
    ForcedThinkEnd,
    /// Length control reopened thinking with inserted text (minimum length or a wait).
    Wait,
}

/// One event of the generation at step `step` (the query that produced generated token `step`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub step: usize,
    pub kind: EventKind,
    /// The text concerned: the close tag, or the inserted text.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    MaxNewTokens,
    /// The run was stopped before it ended (a signal); what it generated so far is kept.
    Interrupted,
}

impl StopReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxNewTokens => "max_new_tokens",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// The result of one generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generation {
    pub generated_ids: Vec<i64>,
    /// true where the token was inserted by length control rather than chosen by the model
    pub forced: Vec<bool>,
    pub text: String,
    pub thinking: String,
    pub answer: String,
    pub think_tokens: usize,
    pub answer_tokens: usize,
    /// index of the first generated token after the thinking block (= len when it never closed)
    pub answer_start: usize,
    pub stop_reason: StopReason,
    pub events: Vec<Event>,
    pub timing: Timing,
}

impl Generation {
    /// "Wait" reopenings that `cfg` asked for but that never happened because thinking did not
    /// end again within the token limit: the run then looks like one with fewer waits.
    pub fn unmet_waits(&self, cfg: &GenerateConfig) -> Option<InvalidSetting> {
        let asked = cfg.length.waits;
        let inserted = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Wait && e.text == cfg.length.wait_text)
            .count();
        (inserted < asked).then(|| {
            InvalidSetting::new(
                "waits",
                format!(
                    "{asked} asked, but thinking ended only {inserted} time(s) within \
                     `max_new_tokens` {}: {} wait(s) never inserted",
                    cfg.max_new_tokens,
                    asked - inserted
                ),
            )
        })
    }
}

/// Wall-clock timing of one generation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Timing {
    /// prompt forward (vision tower included) to the first token's logits
    pub prefill_ms: f64,
    /// all single-token decode steps
    pub decode_ms: f64,
    pub decode_steps: usize,
}

impl Timing {
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.decode_ms > 0.0 {
            self.decode_steps as f64 * 1000.0 / self.decode_ms
        } else {
            0.0
        }
    }
}
