//! How a thinking budget is imposed: rhlens's token-exact forcing, or the paper's two-stage
//! character-truncation protocol.
//!
//! - **token-exact** (the default): one generation in one KV cache; after N thinking tokens the
//!   close tag is forced and the model answers (`think_budget`).
//! - **paper**: as the paper's length-control script does it. Stage 1 generates freely (up to
//!   `max_new_tokens`); its text (special tokens dropped) is cut to the part inside
//!   `<think>…</think>` (the whole text when there is none), before any `**Answer:**`, and
//!   truncated to N *characters*. Stage 2 asks again, from a fresh prompt whose user text is the
//!   question (without the prompt preset), a line break, `<think>\n{thinking}\n</think>\n\n` and
//!   ` So the Final Answer is:`, and generates up to `answer_tokens`. The two stages share the
//!   sampling settings (the paper's: [`paper_sampling`]); stage 2 is the one traced.
//!
//! Budgets of the two protocols count different things, so settings are keyed differently
//! (`budget=100` tokens, `think_chars=100` characters) and every result records its protocol.
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::invalid;
use crate::generate::{GenerateConfig, Generator, Hooks};
use crate::probe::{traced_generation, TraceRequest, TracedRun};
use crate::runtime::Runtime;
use crate::sampling::{Sampling, SamplingConfig};
use crate::settings::{check_settings, Sweep, SweepKind, SweepPlan, SweepSetting};

/// The paper's stage-2 answer limit (`final_answer_tokens`).
pub const PAPER_ANSWER_TOKENS: usize = 1024;
/// The paper's stage-1 limit (`max_tokens_thinking`).
pub const PAPER_THINK_TOKENS: usize = 5000;
/// What the paper's stage-2 prompt ends with, after the thinking block.
pub const PAPER_ANSWER_CUE: &str = " So the Final Answer is:";
/// Setting-key prefix of a paper-protocol budget (characters).
pub const THINK_CHARS_KEY: &str = "think_chars";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "protocol")]
pub enum BudgetProtocol {
    /// rhlens's: N thinking tokens, then the close tag is forced, in one KV cache
    #[default]
    TokenExact,
    /// the paper's two-stage character truncation; stage 2 generates up to `answer_tokens`
    Paper { answer_tokens: usize },
}

impl BudgetProtocol {
    /// The protocol called `name` (`token-exact` or `paper`); `answer_tokens` only with `paper`
    /// (default [`PAPER_ANSWER_TOKENS`]).
    pub fn new(name: &str, answer_tokens: Option<usize>) -> Result<BudgetProtocol> {
        match (name, answer_tokens) {
            ("token-exact", None) => Ok(BudgetProtocol::TokenExact),
            ("token-exact", Some(n)) => invalid(
                "answer_tokens",
                format!("{n} has no effect: it limits stage 2 of `budget_protocol` paper"),
            ),
            ("paper", Some(0)) => invalid("answer_tokens", "must be at least 1"),
            ("paper", n) => Ok(BudgetProtocol::Paper {
                answer_tokens: n.unwrap_or(PAPER_ANSWER_TOKENS),
            }),
            (other, _) => invalid(
                "budget_protocol",
                format!("`{other}` is not a protocol (token-exact or paper)"),
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            BudgetProtocol::TokenExact => "token-exact",
            BudgetProtocol::Paper { .. } => "paper",
        }
    }

    pub fn is_paper(&self) -> bool {
        matches!(self, BudgetProtocol::Paper { .. })
    }

    /// What results record about the protocol.
    pub fn record(&self) -> serde_json::Value {
        match self {
            BudgetProtocol::TokenExact => serde_json::json!({
                "budget_protocol": self.name(), "budget_unit": "tokens"}),
            BudgetProtocol::Paper { answer_tokens } => serde_json::json!({
                "budget_protocol": self.name(), "budget_unit": "characters",
                "answer_tokens": answer_tokens}),
        }
    }

    /// Refuse settings that would do nothing or mean nothing under this protocol: the paper's
    /// protocol varies only a budget and generates both stages without length control.
    pub fn check(
        &self,
        kind: SweepKind,
        settings: &[SweepSetting],
        base: &GenerateConfig,
        samples: usize,
    ) -> Result<()> {
        if !self.is_paper() {
            return check_settings(kind, settings, base, samples);
        }
        if kind != SweepKind::Budgets {
            return invalid(
                "budget_protocol",
                format!(
                    "paper sets thinking budgets in characters: it needs `budgets`, not a {} sweep",
                    kind.as_str()
                ),
            );
        }
        if let Some(s) = settings
            .iter()
            .find(|s| !s.key.starts_with(THINK_CHARS_KEY))
        {
            return invalid(
                "budget_protocol",
                format!(
                    "paper counts characters, but setting {} is keyed as tokens: relabel the \
                     sweep first",
                    s.key
                ),
            );
        }
        let l = &base.length;
        let forced = [
            ("min_think", l.min_think.is_some()),
            ("open_think", l.open_think),
            ("answer_cue", !l.answer_cue.is_empty()),
        ];
        if let Some((name, _)) = forced.iter().find(|(_, on)| *on) {
            return invalid(
                name,
                "has no effect with `budget_protocol` paper: its two stages generate without \
                 length control",
            );
        }
        check_settings(kind, &[], base, samples)
    }

    /// [`BudgetProtocol::check`] of a plan (no model needed).
    pub fn check_plan(
        &self,
        plan: &SweepPlan,
        base: &GenerateConfig,
        samples: usize,
    ) -> Result<()> {
        let (kind, mut settings) = plan.plan()?;
        self.relabel_settings(&mut settings);
        self.check(kind, &settings, base, samples)
    }

    /// The sweep as this protocol runs it: paper budgets are keyed `think_chars=N`.
    pub fn relabel(&self, mut sweep: Sweep) -> Sweep {
        self.relabel_settings(&mut sweep.settings);
        sweep
    }

    fn relabel_settings(&self, settings: &mut [SweepSetting]) {
        if self.is_paper() {
            for s in settings {
                s.key = format!("{THINK_CHARS_KEY}={}", s.value as usize);
            }
        }
    }

    /// The sweep kind as summaries name it (`think_chars` for the paper's budgets).
    pub fn kind_name(&self, kind: SweepKind) -> &'static str {
        if self.is_paper() {
            THINK_CHARS_KEY
        } else {
            kind.as_str()
        }
    }

    /// The generation config and steering of one setting: the paper's budget is not a token
    /// budget, so its config is `base` unchanged.
    pub fn apply(
        &self,
        sweep: &Sweep,
        setting: &SweepSetting,
        base: &GenerateConfig,
    ) -> (GenerateConfig, Option<Tensor>) {
        if self.is_paper() {
            (base.clone(), None)
        } else {
            sweep.apply(setting, base)
        }
    }
}

/// The sampling of the paper's scripts: `do_sample=True` with the checkpoint's
/// `generation_config.json` (Hugging Face's defaults where it is silent: temperature 1, top-k 50,
/// top-p 1, repetition penalty 1). A repetition penalty other than 1 in `given` wins over the
/// file's; the seed is kept.
pub fn paper_sampling(model_dir: &Path, given: &SamplingConfig) -> Result<SamplingConfig> {
    let path = model_dir.join("generation_config.json");
    let file: serde_json::Value = if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    } else {
        serde_json::Value::Null
    };
    let number =
        |key: &str, default: f64| file.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
    let repetition_penalty = if given.repetition_penalty != 1.0 {
        given.repetition_penalty
    } else {
        number("repetition_penalty", 1.0)
    };
    Ok(SamplingConfig {
        mode: Sampling::Sample {
            temperature: number("temperature", 1.0),
            top_k: number("top_k", 50.0) as usize,
            top_p: number("top_p", 1.0),
        },
        repetition_penalty,
        seed: given.seed,
    })
}

/// What the paper's stage 1 left for stage 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperStage1 {
    /// stage 1's text, special tokens dropped
    pub text: String,
    pub tokens: usize,
    /// the thinking kept: cleaned and cut to the budget's characters
    pub thinking: String,
}

/// Whitespace as Python's `str.strip()` sees it.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The paper's cleaning of stage 1's text: the first `<think>…</think>` block (the whole text
/// when there is none), stripped, before any `**Answer:**`, stripped.
pub fn paper_thinking(text: &str) -> String {
    let inside = text.find("<think>").and_then(|i| {
        let rest = &text[i + "<think>".len()..];
        rest.find("</think>").map(|j| &rest[..j])
    });
    let think = inside.unwrap_or(text).trim_matches(py_space);
    let before = think.split("**Answer:**").next().unwrap_or("");
    before.trim_matches(py_space).to_string()
}

/// `s` cut to its first `n` characters (Unicode scalar values, as Python counts them).
pub fn first_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The paper's stage-2 user text.
pub fn paper_stage2_prompt(question: &str, thinking: &str) -> String {
    format!("{question}\n<think>\n{thinking}\n</think>\n\n{PAPER_ANSWER_CUE}")
}

/// The paper's two-stage protocol for one question. `req.prompt` is stage 1's prompt (the
/// question with its preset); `question` the bare question stage 2 repeats; `req.generate` the
/// shared settings (stage 1 stops at its `max_new_tokens`). Stage 2 is traced as `req` says,
/// with the protocol's details added to the trace's settings.
pub fn paper_generation(
    rt: &Runtime,
    req: &TraceRequest<'_>,
    question: &str,
    max_chars: usize,
    answer_tokens: usize,
) -> Result<(TracedRun, PaperStage1)> {
    let stage1 = paper_stage1(rt, req, max_chars).context("stage 1 (free thinking)")?;
    let prompt = paper_stage2_prompt(question, &stage1.thinking);
    let mut settings = req.settings.clone();
    if let serde_json::Value::Object(m) = &mut settings {
        m.insert("stage1_prompt".into(), req.prompt.into());
        m.insert(
            "stage1_max_new_tokens".into(),
            req.generate.max_new_tokens.into(),
        );
        m.insert("think_chars".into(), max_chars.into());
        m.insert("stage1".into(), serde_json::to_value(&stage1)?);
    }
    let mut generate = req.generate.clone();
    generate.max_new_tokens = answer_tokens;
    let stage2 = TraceRequest {
        image: req.image,
        prompt: &prompt,
        system: req.system,
        generate,
        probe: req.probe.clone(),
        vision: req.vision,
        steering: req.steering,
        out: req.out,
        force: req.force,
        settings,
    };
    let run = traced_generation(rt, &stage2, &mut |_| {}).context("stage 2 (the answer)")?;
    Ok((run, stage1))
}

fn paper_stage1(rt: &Runtime, req: &TraceRequest<'_>, max_chars: usize) -> Result<PaperStage1> {
    let prompt = rt.prepare(req.image, req.prompt, req.system)?;
    let generator = Generator::new(&rt.model, &rt.tokenizer);
    let ids = generator.prompt_ids(&prompt.input_ids, &req.generate)?;
    let hooks = Hooks {
        observer: None,
        steering: req.steering,
    };
    let g = generator.run(
        &ids,
        &[prompt.image.input()],
        &req.generate,
        hooks,
        &mut |_| {},
    )?;
    let text = rt.tokenizer.decode(&g.generated_ids, true)?;
    let thinking = first_chars(&paper_thinking(&text), max_chars);
    Ok(PaperStage1 {
        text,
        tokens: g.generated_ids.len(),
        thinking,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_is_cleaned_and_cut_as_the_paper_does() {
        assert_eq!(
            paper_thinking("x <think>\n a b **Answer:** c</think> d"),
            "a b"
        );
        assert_eq!(paper_thinking("  no tags\n"), "no tags");
        assert_eq!(paper_thinking("<think> open only"), "<think> open only");
        assert_eq!(first_chars("héllo", 2), "hé");
        assert_eq!(
            paper_stage2_prompt("Q?", "t"),
            "Q?\n<think>\nt\n</think>\n\n So the Final Answer is:"
        );
    }

    #[test]
    fn protocols_refuse_what_they_would_ignore() {
        assert!(BudgetProtocol::new("token-exact", Some(5)).is_err());
        assert!(BudgetProtocol::new("tokens", None).is_err());
        let paper = BudgetProtocol::new("paper", None).unwrap();
        assert_eq!(
            paper,
            BudgetProtocol::Paper {
                answer_tokens: 1024
            }
        );
        let base = GenerateConfig::default();
        assert!(paper.check(SweepKind::Waits, &[], &base, 1).is_err());
        let mut forced = base.clone();
        forced.length.min_think = Some(3);
        assert!(paper.check(SweepKind::Budgets, &[], &forced, 1).is_err());
        assert!(paper.check(SweepKind::Budgets, &[], &base, 1).is_ok());
        let tokens = SweepSetting {
            key: "budget=10".into(),
            value: 10.0,
        };
        assert!(paper
            .check(SweepKind::Budgets, &[tokens], &base, 1)
            .is_err());
        let plan = SweepPlan::budgets(vec![10]);
        assert!(paper.check_plan(&plan, &base, 1).is_ok());
    }
}
