//! The decode loop: one KV cache from prompt to answer, stop ids, streaming text, the thinking /
//! answer structure, and length control (token-exact budget forcing, a minimum thinking length,
//! test-time scaling with "Wait", latent steering) applied inside the same cache.
//!
//! Each sequence is a [`Row`] (the per-sequence state machine: what to emit next, when thinking
//! ends, when to stop); the loops here only run the model, feed it the rows' tokens and cut the
//! cache back when a row rolls back. One prompt is a batch of one row.
mod config;
mod observe;
mod output;
mod row;
mod stream;
#[cfg(test)]
mod tests;

use std::time::Instant;

use anyhow::{bail, Result};
use tch::Tensor;

pub use config::{
    split_generation, split_thinking, thinking_named_by, GenerateConfig, LengthControl, ThinkTags,
};
pub use observe::{Hooks, StepObserver};
pub use output::{Event, EventKind, Generation, StopReason, Timing};
pub use row::{Accepted, Choice, Next, Row};

use crate::checkpoint::TextTokenizer;
use crate::error::invalid;
use crate::model::{guarded, BatchPrompt, ImageInput, Qwen2_5Vl, Stage};
use observe::{batch_options, reborrow, single_options, RowObservers};
use stream::TextStream;

/// Cache positions reserved past the prompt before decoding starts; the cache doubles when a
/// generation runs longer, so a large `max_new_tokens` reserves nothing it does not use.
const RESERVE_AHEAD: usize = 1024;

/// Cache positions to reserve for a prompt of `prompt_len` tokens under `cfg`.
fn reserve(prompt_len: usize, cfg: &GenerateConfig) -> i64 {
    (prompt_len + cfg.max_new_tokens.min(RESERVE_AHEAD) + 8) as i64
}

/// Runs generations for one loaded model.
pub struct Generator<'a> {
    pub model: &'a Qwen2_5Vl,
    pub tokenizer: &'a TextTokenizer,
    pub eos_ids: Vec<i64>,
}

impl<'a> Generator<'a> {
    pub fn new(model: &'a Qwen2_5Vl, tokenizer: &'a TextTokenizer) -> Self {
        Self {
            model,
            tokenizer,
            eos_ids: model.config.eos_token_ids.clone(),
        }
    }

    /// Prompt ids with the open tag appended when `open_think` asks for it.
    pub fn prompt_ids(&self, ids: &[i64], cfg: &GenerateConfig) -> Result<Vec<i64>> {
        let mut v = ids.to_vec();
        if cfg.length.open_think {
            self.refuse_nested_open(ids, &cfg.tags.open)?;
            v.extend(self.tokenizer.encode(&cfg.tags.open)?);
        }
        Ok(v)
    }

    /// A template that opens thinking in its generation prompt (Qwen3-VL Thinking, MiMo-VL)
    /// already ends the prompt with the open tag; adding it again would nest two blocks, and the
    /// model would think inside a block it never saw in training.
    fn refuse_nested_open(&self, ids: &[i64], open: &str) -> Result<()> {
        let tail = &ids[ids.len().saturating_sub(8)..];
        if self
            .tokenizer
            .decode(tail, false)?
            .trim_end()
            .ends_with(open)
        {
            return invalid(
                "open_think",
                format!(
                    "is not needed: the chat template already opens `{open}` in its generation \
                     prompt"
                ),
            );
        }
        Ok(())
    }

    /// The decoding state for one prompt under `cfg`.
    pub fn row<'r>(&'r self, prompt_ids: &[i64], cfg: &'r GenerateConfig) -> Row<'r> {
        Row::new(self.tokenizer, cfg, &self.eos_ids, prompt_ids)
    }

    /// Refuse a prompt of `prompt_len` tokens plus `max_new_tokens` that does not fit the
    /// model's context (`max_position_embeddings`): positions past it were never trained, and a
    /// prompt that long would take minutes of quadratic attention before failing. Refused rather
    /// than clamped so that a recorded `max_new_tokens` is always the one that ran.
    pub fn check_context(&self, prompt_len: usize, cfg: &GenerateConfig) -> Result<()> {
        let context = self.model.config.text.max_position_embeddings;
        if prompt_len >= context {
            return invalid(
                "prompt",
                format!(
                    "is {prompt_len} tokens long (image included), but the model's context \
                     (max_position_embeddings in config.json) holds {context}: shorten it or use \
                     a smaller image"
                ),
            );
        }
        if prompt_len + cfg.max_new_tokens > context {
            return invalid(
                "max_new_tokens",
                format!(
                    "{} does not fit: the prompt's {prompt_len} tokens plus {} new ones exceed \
                     the model's context of {context} positions (max_position_embeddings in \
                     config.json); at most {} new tokens fit",
                    cfg.max_new_tokens,
                    cfg.max_new_tokens,
                    context - prompt_len
                ),
            );
        }
        Ok(())
    }

    /// Generate after `prompt_ids` (already including the image tokens) for `images`.
    /// `on_text` receives streamed text.
    pub fn run(
        &self,
        prompt_ids: &[i64],
        images: &[ImageInput<'_>],
        cfg: &GenerateConfig,
        hooks: Hooks<'_>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let Hooks {
            mut observer,
            steering,
        } = hooks;
        cfg.validate()?;
        self.check_context(prompt_ids.len(), cfg)?;
        cfg.sampling.apply_seed();
        let model = self.model;
        let reserve = reserve(prompt_ids.len(), cfg);
        let t0 = Instant::now();
        let opts = single_options(&mut observer, steering);
        let (hidden, mut seq) = model.prefill(prompt_ids, images, reserve, opts)?;
        let mut logits = model.logits(&hidden.select(1, hidden.size()[1] - 1).squeeze_dim(0));
        // timing needs the device to have finished
        let mut timing = Timing {
            prefill_ms: sync_elapsed_ms(&logits, t0),
            ..Default::default()
        };
        let t_decode = Instant::now();
        let mut row = self.row(prompt_ids, cfg);
        let mut stream = TextStream::new();
        loop {
            let (token, next) = advance(&mut row, &logits, reborrow(&mut observer))?;
            if let Next::RollBack { keep } = next {
                // the cache keeps prompt + the kept tokens (the newest token was never fed, so it
                // may already be that short)
                seq.cache.truncate((prompt_ids.len() + keep) as i64);
                if let Some(o) = reborrow(&mut observer) {
                    o.rollback(keep + 1);
                }
                // the next token is forced, so the logits in hand are not read again
                continue;
            }
            let piece = stream.push(self.tokenizer, row.ids())?;
            if !piece.is_empty() {
                on_text(&piece);
            }
            if let Next::Stop(_) = next {
                break;
            }
            timing.decode_steps += 1;
            logits = guarded(Stage::Decode(timing.decode_steps), || {
                let opts = single_options(&mut observer, steering);
                Ok(model.logits(&model.step(&mut seq, token, opts)?.view([-1])))
            })?;
        }
        if timing.decode_steps > 0 {
            timing.decode_ms = sync_elapsed_ms(&logits, t_decode);
        }
        let mut g = row.finish()?;
        g.timing = timing;
        Ok(g)
    }

    /// Whether [`Generator::run_batch`] can run `cfg`: length control that rolls the cache back
    /// (a minimum thinking length, waits) runs one prompt at a time.
    pub fn batchable(cfg: &GenerateConfig) -> bool {
        !cfg.length.rolls_back()
    }

    /// Generate for several prompts at once (left-padded, one shared cache) with the same config.
    /// Under greedy decoding every row's tokens are those of [`Generator::run`] on that prompt
    /// alone. Seeded sampling draws from one generator for the whole batch, so its draws differ
    /// from one-at-a-time runs. `observers` (empty, or one per prompt) each see exactly what they
    /// would see at batch size 1. Configs that are not [`Generator::batchable`] are refused.
    pub fn run_batch(
        &self,
        prompts: &[BatchPrompt<'_>],
        cfg: &GenerateConfig,
        observers: Vec<Option<&mut dyn StepObserver>>,
        steering: Option<&Tensor>,
    ) -> Result<Vec<Generation>> {
        let nb = prompts.len();
        let mut observers = check_batch(cfg, nb, observers)?;
        cfg.sampling.apply_seed();
        let model = self.model;
        let longest = prompts.iter().map(|p| p.input_ids.len()).max().unwrap_or(0);
        self.check_context(longest, cfg)?;
        let reserve = reserve(longest, cfg);
        let pads: Vec<i64> = prompts
            .iter()
            .map(|p| (longest - p.input_ids.len()) as i64)
            .collect();
        let mut active = vec![true; nb];
        let t0 = Instant::now();
        let (hidden, mut seq) = {
            let mut split = RowObservers {
                rows: &mut observers,
                pads: &pads,
                active: &active,
            };
            model.prefill_batch(prompts, reserve, batch_options(&mut split, steering))?
        };
        let mut logits = model.logits(&hidden.select(1, hidden.size()[1] - 1));
        let prefill_ms = sync_elapsed_ms(&logits, t0);
        let t_decode = Instant::now();
        let mut rows: Vec<Row<'_>> = prompts.iter().map(|p| self.row(p.input_ids, cfg)).collect();
        // finished rows keep feeding a token whose results nobody reads; their observers are not
        // called
        let pad_tok = self.eos_ids.first().copied().unwrap_or(0);
        let mut decode_steps = 0usize;
        loop {
            let mut tokens = vec![pad_tok; nb];
            for (b, row) in rows.iter_mut().enumerate() {
                if row.stopped().is_some() {
                    continue;
                }
                let row_logits = logits.get(b as i64);
                match advance(row, &row_logits, reborrow(&mut observers[b]))? {
                    (_, Next::RollBack { .. }) => bail!("a batched row cannot roll back"),
                    (_, Next::Stop(_)) => active[b] = false,
                    (token, Next::Continue) => tokens[b] = token,
                }
            }
            if !active.contains(&true) {
                break;
            }
            decode_steps += 1;
            logits = guarded(Stage::Decode(decode_steps), || {
                let mut split = RowObservers {
                    rows: &mut observers,
                    pads: &pads,
                    active: &active,
                };
                let opts = batch_options(&mut split, steering);
                let hidden = model.step_batch(&mut seq, &tokens, opts)?;
                Ok(model.logits(&hidden.view([nb as i64, -1])))
            })?;
        }
        let decode_ms = if decode_steps > 0 {
            sync_elapsed_ms(&logits, t_decode)
        } else {
            0.0
        };
        rows.into_iter()
            .map(|row| {
                let steps = row.ids().len().saturating_sub(1);
                let mut g = row.finish()?;
                g.timing = Timing {
                    prefill_ms,
                    decode_ms,
                    decode_steps: steps,
                };
                Ok(g)
            })
            .collect()
    }
}

/// `observers` for a batch of `nb` under `cfg` (none when empty), or why the batch cannot run.
fn check_batch<'o>(
    cfg: &GenerateConfig,
    nb: usize,
    observers: Vec<Option<&'o mut dyn StepObserver>>,
) -> Result<Vec<Option<&'o mut dyn StepObserver>>> {
    cfg.validate()?;
    if !Generator::batchable(cfg) {
        bail!("a minimum thinking length or waits roll generation back: run these one at a time");
    }
    if nb == 0 {
        bail!("empty batch");
    }
    if observers.is_empty() {
        return Ok((0..nb).map(|_| None).collect());
    }
    if observers.len() != nb {
        bail!("{} observers for a batch of {nb}", observers.len());
    }
    Ok(observers)
}

/// Choose and accept `row`'s next token, telling its observer when the answer starts.
fn advance(
    row: &mut Row<'_>,
    logits: &Tensor,
    observer: Option<&mut dyn StepObserver>,
) -> Result<(i64, Next)> {
    let choice = row.choose(logits)?;
    let accepted = row.accept(choice)?;
    if let Some(o) = observer {
        if let Some(at) = accepted.answer_start {
            o.set_answer_start(at);
        }
        if accepted.next == Next::Continue {
            o.on_token(row)?;
        }
    }
    Ok((choice.token, accepted.next))
}

/// Milliseconds since `t0`, after waiting for `t`'s device to finish its queued work.
fn sync_elapsed_ms(t: &Tensor, t0: Instant) -> f64 {
    if let tch::Device::Cuda(i) = t.device() {
        tch::Cuda::synchronize(i as i64);
    }
    t0.elapsed().as_secs_f64() * 1000.0
}
