//! Prompt presets: fixed text appended to every question, named so that runs record which one
//! they used. `plain` sends the question as given; the `r1` presets append the instruction the
//! paper's reference scripts add to every question.
use serde::{Deserialize, Serialize};

use crate::error::invalid;

/// The R1 instruction of the paper's length-control script, appended to the question with no
/// separator (the script writes `f"{question}You FIRST ..."`).
pub const R1_INSTRUCTION: &str = "You FIRST think about the reasoning process as an internal \
monologue and then provide the final answer. The reasoning process MUST BE enclosed within \
<think> </think> tags. The final answer MUST BE in <answer> </answer> tags.";

/// The variant of the paper's heatmap script: after one space, ending ", Let's think more.".
pub const R1_HEATMAP_INSTRUCTION: &str = " You FIRST think about the reasoning process as an \
internal monologue and then provide the final answer. The reasoning process MUST BE enclosed \
within <think> </think> tags. The final answer MUST BE in <answer> </answer> tags, Let's think more.";

/// A named prompt preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    /// the question as given
    #[default]
    Plain,
    /// the question followed directly by the paper's R1 instruction (length-control scripts)
    R1,
    /// the question, a space and the R1 instruction ending ", Let's think more." (heatmap script)
    R1Heatmap,
}

/// Every preset: (name, what it appends). The one table `--help` and the README list.
pub const PROMPT_STYLES: [(PromptStyle, &str, &str); 3] = [
    (
        PromptStyle::Plain,
        "plain",
        "nothing: the question as given",
    ),
    (
        PromptStyle::R1,
        "r1",
        "the paper's R1 instruction, right after the question (its length-control scripts)",
    ),
    (
        PromptStyle::R1Heatmap,
        "r1-heatmap",
        "a space and the R1 instruction ending \", Let's think more.\" (its heatmap script)",
    ),
];

impl PromptStyle {
    pub fn name(self) -> &'static str {
        PROMPT_STYLES
            .iter()
            .find(|(s, _, _)| *s == self)
            .map(|(_, n, _)| *n)
            .unwrap_or("plain")
    }

    /// The preset called `name`.
    pub fn parse(name: &str) -> anyhow::Result<PromptStyle> {
        match PROMPT_STYLES.iter().find(|(_, n, _)| *n == name.trim()) {
            Some((s, _, _)) => Ok(*s),
            None => invalid(
                "prompt_style",
                format!(
                    "`{name}` is not a preset (one of {})",
                    PROMPT_STYLES
                        .iter()
                        .map(|(_, n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }

    /// The text appended to every question.
    pub fn suffix(self) -> &'static str {
        match self {
            PromptStyle::Plain => "",
            PromptStyle::R1 => R1_INSTRUCTION,
            PromptStyle::R1Heatmap => R1_HEATMAP_INSTRUCTION,
        }
    }

    /// `question` as the model is asked it.
    pub fn apply(self, question: &str) -> String {
        format!("{question}{}", self.suffix())
    }
}

impl std::fmt::Display for PromptStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_by_its_name() {
        for (style, name, _) in PROMPT_STYLES {
            assert_eq!(PromptStyle::parse(name).unwrap(), style);
            assert_eq!(style.name(), name);
        }
        assert!(PromptStyle::parse("r2").is_err());
    }
}
