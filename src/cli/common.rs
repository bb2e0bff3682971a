//! Flags shared by the commands that run a model.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use super::flags::Dtype;
use crate::budget::BudgetProtocol;
use crate::generate::{GenerateConfig, LengthControl, ThinkTags};
use crate::model::DeviceRequest;
use crate::prompt::{PromptStyle, PROMPT_STYLES};
use crate::runtime::{demo_image, demo_model_dir, Runtime};
use crate::sampling::{Sampling, SamplingConfig};
use crate::settings::{Sweep, SweepKind, SweepPlan, SweepSetting};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint directory or hub id (owner/name[@revision]); the bundled demo checkpoint
    /// (a tiny model trained on synthetic scenes) when omitted
    #[arg(long)]
    pub model: Option<String>,
    /// Weights and activations dtype: f32, bf16 or f16
    #[arg(long, default_value = "f32", hide_possible_values = true)]
    pub dtype: Dtype,
    /// cpu, cuda, cuda:N or auto (CUDA when visible)
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// CPU threads for libtorch (default: libtorch's choice)
    #[arg(long)]
    pub threads: Option<i32>,
    /// Resize images to at most N pixels (default: the checkpoint's max_pixels); a smaller image
    /// needs less memory
    #[arg(long)]
    pub max_pixels: Option<usize>,
    /// Refuse image files whose header claims more pixels than this, before decoding (default:
    /// 178956970, where Pillow refuses an image as a decompression bomb)
    #[arg(long)]
    pub max_image_pixels: Option<u64>,
}

impl ModelArgs {
    pub fn model_spec(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| demo_model_dir().to_string_lossy().into_owned())
    }

    /// Load the model, named `name` when given (else by the checkpoint folder or hub id).
    pub fn load_named(&self, name: &NameArg) -> Result<Runtime> {
        let mut rt = self.load()?;
        if let Some(n) = &name.name {
            rt.name = n.clone();
        }
        Ok(rt)
    }

    pub fn load(&self) -> Result<Runtime> {
        let device = self.device.resolve()?;
        if let Some(n) = self.threads {
            let (threads, warning) = crate::system::cpu_threads(n)?;
            if let Some(w) = warning {
                super::flags::warn(&w);
            }
            tch::set_num_threads(threads);
        }
        let mut rt = Runtime::load(&self.model_spec(), self.dtype.0, device)?;
        if let Some(n) = self.max_pixels {
            let min = rt.image_config.min_pixels;
            if n < min {
                anyhow::bail!("--max-pixels {n} is below the checkpoint's min_pixels {min}");
            }
            rt.image_config.max_pixels = n;
        }
        if let Some(n) = self.max_image_pixels {
            rt.image_config.max_image_pixels = n;
            rt.image_config.validate()?;
        }
        super::exit::test_only_torch_failure();
        Ok(rt)
    }
}

/// `--name`: how results, legends and file names call the model.
#[derive(Args, Debug, Clone, Default)]
pub struct NameArg {
    /// Name of the model in results, legends and file names [default: the checkpoint folder's
    /// name, or the hub id]
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Option<String>,
}

impl NameArg {
    /// The name results will carry for `model`, known before loading it.
    pub fn resolve(&self, model: &ModelArgs) -> String {
        self.name.clone().unwrap_or_else(|| {
            let spec = model.model_spec();
            crate::runtime::model_name(&spec, std::path::Path::new(&spec))
        })
    }
}

/// A model name: not empty, one line, no path separators (names become file names).
fn parse_name(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the name is empty".into());
    }
    if s.contains(['/', '\\']) || s.chars().any(char::is_control) {
        return Err(format!(
            "`{s}` has a path separator or a control character; a name is one word or phrase"
        ));
    }
    Ok(s.to_string())
}

#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Image file (PNG, JPEG, WebP, GIF, BMP or TIFF); the bundled demo image when omitted
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// The user's question, placed after the image in the checkpoint's chat template
    #[arg(long)]
    pub prompt: String,
    /// System prompt (default: the chat template's own)
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub style: PromptStyleArg,
}

impl InputArgs {
    /// `--prompt` with the `--prompt-style` preset applied: what the model is asked.
    pub fn question(&self) -> String {
        self.style.prompt_style.apply(&self.prompt)
    }

    pub fn image_path(&self) -> PathBuf {
        self.image.clone().unwrap_or_else(demo_image)
    }
}

/// `--prompt-style`: a named preset appended to every question (the table in [`crate::prompt`]).
#[derive(Args, Debug, Clone, Default)]
pub struct PromptStyleArg {
    /// Text appended to every question, by preset name (recorded in traces and results)
    #[arg(long, value_enum, default_value_t = PromptStyle::Plain)]
    pub prompt_style: PromptStyle,
}

impl ValueEnum for PromptStyle {
    fn value_variants<'a>() -> &'a [Self] {
        &[PromptStyle::Plain, PromptStyle::R1, PromptStyle::R1Heatmap]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let (_, name, help) = PROMPT_STYLES.iter().find(|(s, _, _)| s == self)?;
        Some(PossibleValue::new(*name).help(*help))
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Maximum generated tokens, forced text included
    #[arg(long, value_name = "TOKENS", default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Suppress end-of-sequence until this many generated tokens
    #[arg(long, value_name = "TOKENS", default_value_t = 0)]
    pub min_new_tokens: usize,
    /// Always take the most likely token (the default unless --temperature/--top-p/--top-k is given)
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub greedy: bool,
    /// Sampling temperature (> 0) [default: 1.0 once sampling]
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass, 0-1 [default:
    /// 1.0 = off]
    #[arg(long, value_name = "P")]
    pub top_p: Option<f64>,
    /// Keep only the K most likely tokens [default: 0 = off]
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Seed for sampling (libtorch's generator) [default: libtorch's own]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Hugging Face's repetition penalty over prompt and generated ids (1.0 = off)
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
}

impl SamplingArgs {
    /// Whether any flag chose how to decode (`--greedy`, `--temperature`, `--top-p`, `--top-k`).
    pub fn chosen(&self) -> bool {
        self.greedy || self.temperature.is_some() || self.top_p.is_some() || self.top_k.is_some()
    }

    pub fn config(&self) -> SamplingConfig {
        let sampled = !self.greedy
            && (self.temperature.is_some() || self.top_p.is_some() || self.top_k.is_some());
        let mode = if sampled {
            Sampling::Sample {
                temperature: self.temperature.unwrap_or(1.0),
                top_k: self.top_k.unwrap_or(0),
                top_p: self.top_p.unwrap_or(1.0),
            }
        } else {
            Sampling::Greedy
        };
        SamplingConfig {
            mode,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct LengthArgs {
    /// Close thinking after N thinking tokens (0: answer at once), in the same KV cache
    /// [default: no budget]
    #[arg(long, value_name = "TOKENS")]
    pub think_budget: Option<usize>,
    /// Keep thinking for at least N tokens: an early close tag is replaced by --continuation
    /// [default: no minimum]
    #[arg(long, value_name = "TOKENS")]
    pub min_think: Option<usize>,
    /// Text inserted each time thinking is reopened by --waits (test-time scaling)
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "Wait, but I'm not sure if I'm missing anything."
    )]
    pub wait_text: String,
    /// Text inserted to reach --min-think
    #[arg(long, value_name = "TEXT", default_value = "Wait")]
    pub continuation: String,
    /// Text forced after the close tag when the budget ends thinking
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub answer_cue: String,
    /// Start the assistant turn with the open tag
    #[arg(long)]
    pub open_think: bool,
    /// Tag that opens the thinking block
    #[arg(long, value_name = "TAG", default_value = "<think>")]
    pub think_open: String,
    /// Tag that closes the thinking block
    #[arg(long, value_name = "TAG", default_value = "</think>")]
    pub think_close: String,
    /// Tag that opens the answer (also ends thinking when no close tag came first)
    #[arg(long, value_name = "TAG", default_value = "<answer>")]
    pub answer_open: String,
    /// Tag that closes the answer
    #[arg(long, value_name = "TAG", default_value = "</answer>")]
    pub answer_close: String,
    /// The model does not think (a base or instruct model): its whole output is the answer
    /// (answer tokens, answer role in traces, the answer scored). Default: see --think
    #[arg(long, conflicts_with = "think")]
    pub no_think: bool,
    /// The model thinks: text before the close tag is thinking. Default (neither flag): a model
    /// thinks when its chat template, its tokenizer or the prompt names the close tag, or when
    /// length control asks for thinking; otherwise its output is counted as answer, with a warning
    #[arg(long)]
    pub think: bool,
}

impl LengthArgs {
    pub fn apply(&self, cfg: &mut GenerateConfig) {
        cfg.tags = ThinkTags {
            open: self.think_open.clone(),
            close: self.think_close.clone(),
            answer_open: self.answer_open.clone(),
            answer_close: self.answer_close.clone(),
        };
        cfg.length = LengthControl {
            think_budget: self.think_budget,
            min_think: self.min_think,
            waits: 0,
            wait_text: self.wait_text.clone(),
            continuation: self.continuation.clone(),
            answer_cue: self.answer_cue.clone(),
            open_think: self.open_think,
        };
        cfg.no_think = self.no_think;
    }

    /// Refuse `--no-think` with a sweep that varies thinking (before any model is loaded).
    pub fn check_thinking(&self, sweeps_thinking: bool) -> Result<()> {
        if self.no_think && sweeps_thinking {
            bail!("--no-think: a sweep over thinking budgets or waits needs a model that thinks");
        }
        Ok(())
    }

    /// Settle whether the model thinks (`cfg.no_think`) once the model is loaded: `--think` and
    /// `--no-think` say so; otherwise the rule in `--think`'s help decides, with a warning when it
    /// decides that the model does not think. `texts` are the system prompt and prompt given;
    /// `sweeps_thinking` says that a sweep varies a thinking budget or waits.
    pub fn settle_thinking(
        &self,
        rt: &Runtime,
        cfg: &mut GenerateConfig,
        texts: &[Option<&str>],
        sweeps_thinking: bool,
    ) -> Result<()> {
        self.check_thinking(sweeps_thinking)?;
        if self.think || self.no_think {
            return Ok(());
        }
        let asked = sweeps_thinking || cfg.length.thinking_setting().is_some();
        let mut sources = vec![("its chat template", rt.template.source())];
        sources.extend(texts.iter().flatten().map(|t| ("the prompt", *t)));
        let named = crate::generate::thinking_named_by(&cfg.tags, &sources).or_else(|| {
            rt.tokenizer
                .token_to_id(&cfg.tags.close)
                .map(|_| "its tokenizer")
        });
        if named.is_none() && !asked {
            cfg.no_think = true;
            eprintln!(
                "warning: neither {}'s chat template, its tokenizer nor the prompt names the \
                 thinking tag `{}`: counting the whole output as the answer, as for a base model \
                 (pass --think if this model thinks, --no-think to say that it does not)",
                rt.name, cfg.tags.close
            );
        }
        Ok(())
    }
}

/// `--waits K` for single generations (sweeps take a list instead).
#[derive(Args, Debug, Clone)]
pub struct WaitsArg {
    /// Reopen thinking K times when it ends, with the --wait text (test-time scaling)
    #[arg(long, default_value_t = 0)]
    pub waits: usize,
}

pub fn generate_config(s: &SamplingArgs, l: &LengthArgs) -> GenerateConfig {
    let mut cfg = GenerateConfig {
        max_new_tokens: s.max_new_tokens,
        min_new_tokens: s.min_new_tokens,
        sampling: s.config(),
        ..Default::default()
    };
    l.apply(&mut cfg);
    cfg
}

/// `--budget-protocol`: how a sweep's or an evaluation's `--budgets` are imposed.
#[derive(Args, Debug, Clone, Default)]
pub struct BudgetProtocolArgs {
    /// token-exact (N thinking tokens, then the close tag, in one KV cache) or paper (the
    /// paper's two stages: generate up to --max-new-tokens, cut the thinking to N characters,
    /// ask again with it; the paper used --max-new-tokens 5000). paper samples as the paper's
    /// scripts (the checkpoint's generation_config.json) unless --greedy or a sampling flag is given
    #[arg(long, default_value = "token-exact", value_parser = ["token-exact", "paper"])]
    pub budget_protocol: String,
    /// Stage 2's token limit under --budget-protocol paper [default: 1024, the paper's]
    #[arg(long)]
    pub answer_tokens: Option<usize>,
}

impl BudgetProtocolArgs {
    pub fn protocol(&self) -> Result<BudgetProtocol> {
        BudgetProtocol::new(&self.budget_protocol, self.answer_tokens)
    }

    /// The paper's protocol samples as its scripts did unless a flag chose how to decode.
    pub fn sampling(
        &self,
        sampling: &SamplingArgs,
        model: &ModelArgs,
        cfg: &mut GenerateConfig,
    ) -> Result<()> {
        if self.protocol()?.is_paper() && !sampling.chosen() {
            let dir = crate::checkpoint::resolve_model(&model.model_spec())?;
            cfg.sampling = crate::budget::paper_sampling(&dir, &cfg.sampling)?;
        }
        Ok(())
    }
}

/// What a sweep or a benchmark run varies: one of --budgets, --waits, or --steer with --weights.
#[derive(Args, Debug, Clone, Default)]
pub struct SweepArgs {
    /// Thinking budgets in tokens, e.g. 0,100,200,300,400,500,600 [default: none; give one of
    /// --budgets, --waits, --steer]
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["waits", "weights"])]
    pub budgets: Vec<usize>,
    /// Numbers of forced "Wait" continuations, e.g. 0,1,2,3 [default: none]
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["budgets", "weights"])]
    pub waits: Vec<usize>,
    /// Steering direction file (from `rhlens direction`), with --weights [default: none]
    #[arg(long, conflicts_with_all = ["budgets", "waits"])]
    pub steer: Option<PathBuf>,
    /// Steering weights, e.g. -0.1,-0.05,0,0.05,0.1 [default: none]
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        requires = "steer"
    )]
    pub weights: Vec<f64>,
}

impl SweepArgs {
    /// Whether a setting controls thinking: any budget, or a wait count above 0 (`--waits 0` is a
    /// single plain run, the way to evaluate a model that does not think).
    pub fn varies_thinking(&self) -> bool {
        !self.budgets.is_empty() || self.waits.iter().any(|&w| w > 0)
    }

    /// The library's plan for these flags.
    pub fn sweep_plan(&self) -> Result<SweepPlan> {
        Ok(if !self.budgets.is_empty() {
            SweepPlan::budgets(self.budgets.clone())
        } else if !self.waits.is_empty() {
            SweepPlan::waits(self.waits.clone())
        } else if let Some(file) = &self.steer {
            SweepPlan::steer(file.clone(), self.weights.clone())
        } else {
            bail!(
                "say what to sweep: --budgets LIST, --waits LIST, or --steer FILE --weights LIST"
            );
        })
    }

    /// Check the flags and list the settings (no model needed).
    pub fn plan(&self) -> Result<(SweepKind, Vec<SweepSetting>)> {
        self.sweep_plan()?.plan()
    }

    /// Resolve against a loaded model (reads the steering direction).
    pub fn resolve(&self, rt: &Runtime) -> Result<Sweep> {
        self.sweep_plan()?.resolve(rt)
    }
}
