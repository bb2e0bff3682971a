//! What a generation is asked to do: token limits, sampling, the thinking tags and length control.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::error::invalid;
use crate::sampling::SamplingConfig;

/// Tags that delimit the thinking block and the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkTags {
    pub open: String,
    pub close: String,
    pub answer_open: String,
    pub answer_close: String,
}

impl Default for ThinkTags {
    fn default() -> Self {
        Self {
            open: "<think>".into(),
            close: "</think>".into(),
            answer_open: "<answer>".into(),
            answer_close: "</answer>".into(),
        }
    }
}

impl ThinkTags {
    pub fn validate(&self) -> Result<()> {
        if self.close.is_empty() {
            bail!("the thinking close tag cannot be empty");
        }
        if self.open == self.close {
            bail!(
                "the thinking open and close tags must differ (both `{}`)",
                self.open
            );
        }
        if !self.answer_open.is_empty() && self.answer_open == self.close {
            bail!("the answer tag must differ from the thinking close tag");
        }
        Ok(())
    }
}

/// How long the model may think.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LengthControl {
    /// Close the thinking block after this many thinking tokens (0: answer at once).
    pub think_budget: Option<usize>,
    /// Do not let thinking end before this many thinking tokens: the close tag is removed and
    /// `continuation` inserted instead.
    pub min_think: Option<usize>,
    /// Times to reopen thinking with `wait_text` when it ends (test-time scaling).
    pub waits: usize,
    /// Inserted when thinking is extended by `waits`.
    pub wait_text: String,
    /// Inserted when thinking is extended to reach `min_think`.
    pub continuation: String,
    /// Text forced after the close tag when the budget closes thinking.
    pub answer_cue: String,
    /// Start the assistant turn with the open tag.
    pub open_think: bool,
}

impl LengthControl {
    pub fn new() -> Self {
        Self {
            wait_text: "Wait, but I'm not sure if I'm missing anything.".into(),
            continuation: "Wait".into(),
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if let (Some(b), Some(m)) = (self.think_budget, self.min_think) {
            if m > b {
                return invalid(
                    "min_think",
                    format!("{m} is larger than `think_budget` {b}"),
                );
            }
        }
        Ok(())
    }

    /// Whether generation may have to roll back (a minimum thinking length or waits): such
    /// length control runs one prompt at a time.
    pub fn rolls_back(&self) -> bool {
        self.min_think.is_some() || self.waits > 0
    }

    /// The first setting that acts on a thinking block, if any is set.
    pub fn thinking_setting(&self) -> Option<&'static str> {
        if self.think_budget.is_some() {
            Some("think_budget")
        } else if self.min_think.is_some() {
            Some("min_think")
        } else if self.waits > 0 {
            Some("waits")
        } else if self.open_think {
            Some("open_think")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    /// end-of-sequence is suppressed until this many tokens were generated
    pub min_new_tokens: usize,
    pub sampling: SamplingConfig,
    pub tags: ThinkTags,
    pub length: LengthControl,
    /// The model does not think (a base or instruct model): everything it generates is the answer,
    /// and no thinking block is looked for. Left out of saved settings when false, so runs saved
    /// before the field existed compare equal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_think: bool,
}

impl GenerateConfig {
    /// Check sampling, tags, length control and the token limit together.
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        self.tags.validate()?;
        self.length.validate()?;
        if self.no_think {
            if let Some(setting) = self.length.thinking_setting() {
                // length control acts on a thinking block this generation does not have
                return invalid(
                    setting,
                    "controls thinking, but `no_think` counts the whole output as answer",
                );
            }
        }
        if self.max_new_tokens == 0 {
            return invalid("max_new_tokens", "must be at least 1");
        }
        if let Some(b) = self
            .length
            .think_budget
            .filter(|&b| b >= self.max_new_tokens)
        {
            // the budget would never close thinking: the token limit ends generation first
            return invalid(
                "think_budget",
                format!(
                    "{b} is never reached: generation stops at `max_new_tokens` {}; raise it \
                     above the budget plus room for the answer",
                    self.max_new_tokens
                ),
            );
        }
        Ok(())
    }
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            min_new_tokens: 0,
            sampling: SamplingConfig::default(),
            tags: ThinkTags::default(),
            length: LengthControl::new(),
            no_think: false,
        }
    }
}

/// Which of `sources` (`(what, text)`: a chat template, a prompt) names a thinking tag, if any:
/// a model that was never shown the tags is not expected to write them.
pub fn thinking_named_by<'s>(tags: &ThinkTags, sources: &[(&'s str, &str)]) -> Option<&'s str> {
    let tags = [tags.open.as_str(), tags.close.as_str()];
    sources
        .iter()
        .find(|(_, text)| tags.iter().any(|t| !t.is_empty() && text.contains(t)))
        .map(|(what, _)| *what)
}

/// Split generated text into the thinking and the answer as `cfg` expects it: without thinking
/// (`no_think`) all of it is the answer (still taken from inside answer tags when present).
pub fn split_generation(text: &str, cfg: &GenerateConfig) -> (String, String) {
    if cfg.no_think {
        let (_, answer) = split_thinking(&format!("{}{text}", cfg.tags.close), &cfg.tags);
        return (String::new(), answer);
    }
    split_thinking(text, &cfg.tags)
}

/// Split generated text into the thinking and the answer. Without a close tag everything is
/// thinking unless an answer tag appears; the answer is the `<answer>` content when present.
pub fn split_thinking(text: &str, tags: &ThinkTags) -> (String, String) {
    let (think, rest) = match text.find(tags.close.as_str()) {
        Some(i) => (&text[..i], &text[i + tags.close.len()..]),
        None => match (!tags.answer_open.is_empty())
            .then(|| text.find(tags.answer_open.as_str()))
            .flatten()
        {
            Some(i) => (&text[..i], &text[i..]),
            None => (text, ""),
        },
    };
    let think = think
        .trim_start()
        .strip_prefix(tags.open.as_str())
        .unwrap_or(think.trim_start());
    let answer = if !tags.answer_open.is_empty() {
        match rest.find(tags.answer_open.as_str()) {
            Some(i) => {
                let a = &rest[i + tags.answer_open.len()..];
                match (!tags.answer_close.is_empty())
                    .then(|| a.find(tags.answer_close.as_str()))
                    .flatten()
                {
                    Some(j) => &a[..j],
                    None => a,
                }
            }
            None => rest,
        }
    } else {
        rest
    };
    (think.trim().to_string(), answer.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_handles_tags_and_missing_tags() {
        let t = ThinkTags::default();
        let (a, b) = split_thinking("<think> look </think>\n<answer>B</answer>", &t);
        assert_eq!((a.as_str(), b.as_str()), ("look", "B"));
        let (a, b) = split_thinking("just text", &t);
        assert_eq!((a.as_str(), b.as_str()), ("just text", ""));
        let (a, b) = split_thinking("reason <answer> 3 </answer>", &t);
        assert_eq!((a.as_str(), b.as_str()), ("reason", "3"));
        let (a, b) = split_thinking("x</think>final", &t);
        assert_eq!((a.as_str(), b.as_str()), ("x", "final"));
    }

    #[test]
    fn limits_are_named_by_field() {
        let mut c = GenerateConfig {
            max_new_tokens: 0,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert_eq!(e, "max_new_tokens must be at least 1");
        c.max_new_tokens = 8;
        c.length.think_budget = Some(5);
        c.length.min_think = Some(10);
        let e = c.validate().unwrap_err();
        let e = e.downcast_ref::<crate::error::InvalidSetting>().unwrap();
        assert_eq!(e.setting, "min_think");
        assert_eq!(e.reason, "10 is larger than `think_budget` 5");
    }
}
