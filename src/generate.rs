//! The decode loop: one KV cache from prompt to answer, stop ids, streaming text, the thinking /
//! answer structure, and length control (token-exact budget forcing, a minimum thinking length,
//! test-time scaling with "Wait", latent steering) applied inside the same cache.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::checkpoint::TextTokenizer;
use crate::model::{
    AttentionInputs, BatchPrompt, Captured, ForwardOptions, ImageInput, Observer, Qwen2_5Vl,
    Sequence, Site,
};
use crate::sampling::{select, SamplingConfig};

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
                bail!("--min-think {m} is larger than --think-budget {b}");
            }
        }
        Ok(())
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
}

impl GenerateConfig {
    /// Check sampling, tags and length control together.
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        self.tags.validate()?;
        self.length.validate()
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
        }
    }
}

/// Something that happened at a generated position (the same record traces keep).
pub type Event = crate::formats::trace::TraceEvent;
use crate::formats::trace::EventKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    MaxNewTokens,
}

impl StopReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxNewTokens => "max_new_tokens",
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

/// Hooks a probe uses to follow steps. Step s is the query that produced generated token s.
pub trait StepObserver: Observer {
    /// Generation was rolled back: keep only steps `0..steps`.
    fn rollback(&mut self, _steps: usize) {}
    /// The thinking block closed: generated tokens from `index` on are the answer.
    fn set_answer_start(&mut self, _index: usize) {}
}

/// Stream text to a callback as tokens arrive, holding back incomplete UTF-8 sequences.
struct TextStream {
    pending_from: usize,
    emitted_len: usize,
}

impl TextStream {
    fn new() -> Self {
        Self {
            pending_from: 0,
            emitted_len: 0,
        }
    }

    fn push(&mut self, tok: &TextTokenizer, ids: &[i64]) -> Result<String> {
        let text = tok.decode(&ids[self.pending_from..], true)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted_len {
            return Ok(String::new());
        }
        let new = text[self.emitted_len..].to_string();
        if text.ends_with(char::is_whitespace) {
            self.pending_from = ids.len();
            self.emitted_len = 0;
        } else {
            self.emitted_len = text.len();
        }
        Ok(new)
    }
}

/// Optional attachments to a generation.
#[derive(Default)]
pub struct Hooks<'h> {
    /// sees the sites it wants at every step (the vision tower's during prefill)
    pub observer: Option<&'h mut dyn StepObserver>,
    /// `[layers, hidden]`, already scaled: added to every layer's attention output
    pub steering: Option<&'h Tensor>,
}

/// Runs generations for one loaded model.
pub struct Generator<'a> {
    pub model: &'a Qwen2_5Vl,
    pub tokenizer: &'a TextTokenizer,
    pub eos_ids: Vec<i64>,
}

struct State {
    ids: Vec<i64>,
    forced: Vec<bool>,
    /// index after the token that completed the close tag
    closed_at: Option<usize>,
    /// index of the token where the close tag starts (thinking tokens are counted before it)
    tag_start: Option<usize>,
    waits_left: usize,
    events: Vec<Event>,
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
            v.extend(self.tokenizer.encode(&cfg.tags.open)?);
        }
        Ok(v)
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
        if cfg.max_new_tokens == 0 {
            bail!("--max-new-tokens must be at least 1");
        }
        cfg.sampling.apply_seed();
        let model = self.model;
        fn opts<'o>(
            obs: &'o mut Option<&mut dyn StepObserver>,
            steering: Option<&'o Tensor>,
        ) -> ForwardOptions<'o> {
            ForwardOptions {
                observer: match obs {
                    Some(o) => Some(&mut **o as &mut dyn Observer),
                    None => None,
                },
                steering,
            }
        }
        let reserve = (prompt_ids.len() + cfg.max_new_tokens + 8) as i64;
        let t0 = std::time::Instant::now();
        let (hidden, mut seq) =
            model.prefill(prompt_ids, images, reserve, opts(&mut observer, steering))?;
        let mut logits = model.logits(&hidden.select(1, hidden.size()[1] - 1).squeeze_dim(0));
        // timing needs the device to have finished
        let mut timing = Timing {
            prefill_ms: sync_elapsed_ms(&logits, t0),
            ..Default::default()
        };
        let t_decode = std::time::Instant::now();
        let prompt_len = prompt_ids.len();
        let mut st = State {
            ids: Vec::new(),
            forced: Vec::new(),
            closed_at: None,
            tag_start: None,
            waits_left: cfg.length.waits,
            events: Vec::new(),
        };
        let mut history = prompt_ids.to_vec();
        let mut queue: std::collections::VecDeque<i64> = Default::default();
        let mut stream = TextStream::new();
        let stop_reason;
        loop {
            // choose the next token: forced text first, then budget forcing, then the model
            let (tok, forced) = self.next_token(&mut st, &mut queue, &logits, &history, cfg)?;
            st.ids.push(tok);
            st.forced.push(forced);
            history.push(tok);
            let is_eos = !forced && self.eos_ids.contains(&tok);

            // thinking structure: did the block just end (close tag, answer tag, or eos)?
            if st.closed_at.is_none() {
                if let Some((tag_tok, _)) = self.find_close(&st, &cfg.tags)? {
                    if !forced && self.should_extend(&st, cfg, tag_tok) {
                        // remove the tokens that closed the block and continue thinking
                        self.extend_thinking(
                            &mut st,
                            &mut seq,
                            &mut history,
                            &mut queue,
                            tag_tok,
                            prompt_len,
                            cfg,
                            reborrow_step(&mut observer),
                        )?;
                        // the last kept position's query already predicts the first forced token
                        continue;
                    }
                    st.closed_at = Some(st.ids.len());
                    st.tag_start = Some(tag_tok);
                    if let Some(o) = reborrow_step(&mut observer) {
                        o.set_answer_start(st.ids.len());
                    }
                    if !forced {
                        // a forced close was already recorded as `forced_think_end`
                        st.events.push(Event {
                            step: tag_tok,
                            kind: EventKind::ThinkEnd,
                            text: cfg.tags.close.clone(),
                        });
                    }
                } else if is_eos && self.should_extend(&st, cfg, st.ids.len() - 1) {
                    let at = st.ids.len() - 1;
                    self.extend_thinking(
                        &mut st,
                        &mut seq,
                        &mut history,
                        &mut queue,
                        at,
                        prompt_len,
                        cfg,
                        reborrow_step(&mut observer),
                    )?;
                    continue;
                }
            }
            let piece = stream.push(self.tokenizer, &st.ids)?;
            if !piece.is_empty() {
                on_text(&piece);
            }
            if is_eos {
                stop_reason = StopReason::Eos;
                break;
            }
            if st.ids.len() >= cfg.max_new_tokens {
                stop_reason = StopReason::MaxNewTokens;
                break;
            }
            let hidden = model.step(&mut seq, tok, opts(&mut observer, steering))?;
            logits = model.logits(&hidden.view([-1]));
            timing.decode_steps += 1;
        }
        if timing.decode_steps > 0 {
            timing.decode_ms = sync_elapsed_ms(&logits, t_decode);
        }
        let mut g = self.finish(st, stop_reason, cfg)?;
        g.timing = timing;
        Ok(g)
    }

    /// Whether [`Generator::run_batch`] can run `cfg`: length control that rolls the cache back
    /// (a minimum thinking length, waits) runs one prompt at a time.
    pub fn batchable(cfg: &GenerateConfig) -> bool {
        cfg.length.min_think.is_none() && cfg.length.waits == 0
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
        mut observers: Vec<Option<&mut dyn StepObserver>>,
        steering: Option<&Tensor>,
    ) -> Result<Vec<Generation>> {
        cfg.validate()?;
        if cfg.max_new_tokens == 0 {
            bail!("--max-new-tokens must be at least 1");
        }
        if !Self::batchable(cfg) {
            bail!(
                "a minimum thinking length or waits roll generation back: run these one at a time"
            );
        }
        let nb = prompts.len();
        if nb == 0 {
            bail!("empty batch");
        }
        if observers.is_empty() {
            observers = (0..nb).map(|_| None).collect();
        }
        if observers.len() != nb {
            bail!("{} observers for a batch of {nb}", observers.len());
        }
        cfg.sampling.apply_seed();
        let model = self.model;
        let longest = prompts.iter().map(|p| p.input_ids.len()).max().unwrap_or(0);
        let reserve = (longest + cfg.max_new_tokens + 8) as i64;
        let pads: Vec<i64> = prompts
            .iter()
            .map(|p| (longest - p.input_ids.len()) as i64)
            .collect();
        let any_observer = observers.iter().any(Option::is_some);
        let mut active = vec![true; nb];
        let t0 = std::time::Instant::now();
        let (hidden, mut seq) = {
            let mut rows = RowObservers {
                rows: &mut observers,
                pads: &pads,
                active: &active,
            };
            let opts = ForwardOptions {
                observer: any_observer.then_some(&mut rows as &mut dyn Observer),
                steering,
            };
            model.prefill_batch(prompts, reserve, opts)?
        };
        let mut logits = model.logits(&hidden.select(1, hidden.size()[1] - 1));
        let prefill_ms = sync_elapsed_ms(&logits, t0);
        let t_decode = std::time::Instant::now();
        let mut states: Vec<State> = (0..nb)
            .map(|_| State {
                ids: Vec::new(),
                forced: Vec::new(),
                closed_at: None,
                tag_start: None,
                waits_left: 0,
                events: Vec::new(),
            })
            .collect();
        let mut histories: Vec<Vec<i64>> = prompts.iter().map(|p| p.input_ids.to_vec()).collect();
        let mut queues: Vec<std::collections::VecDeque<i64>> = vec![Default::default(); nb];
        let mut stops: Vec<Option<StopReason>> = vec![None; nb];
        let mut decode_steps = 0usize;
        loop {
            for b in 0..nb {
                if stops[b].is_some() {
                    continue;
                }
                let st = &mut states[b];
                let queue = &mut queues[b];
                let row = logits.get(b as i64);
                let (tok, forced) = self.next_token(st, queue, &row, &histories[b], cfg)?;
                st.ids.push(tok);
                st.forced.push(forced);
                histories[b].push(tok);
                let is_eos = !forced && self.eos_ids.contains(&tok);
                if st.closed_at.is_none() {
                    if let Some((tag_tok, _)) = self.find_close(st, &cfg.tags)? {
                        st.closed_at = Some(st.ids.len());
                        st.tag_start = Some(tag_tok);
                        if let Some(o) = observers[b].as_deref_mut() {
                            o.set_answer_start(st.ids.len());
                        }
                        if !forced {
                            st.events.push(Event {
                                step: tag_tok,
                                kind: EventKind::ThinkEnd,
                                text: cfg.tags.close.clone(),
                            });
                        }
                    }
                }
                if is_eos {
                    stops[b] = Some(StopReason::Eos);
                } else if st.ids.len() >= cfg.max_new_tokens {
                    stops[b] = Some(StopReason::MaxNewTokens);
                }
            }
            if stops.iter().all(Option::is_some) {
                break;
            }
            // finished rows keep feeding a token whose results nobody reads; their observers
            // are not called
            let pad_tok = self.eos_ids.first().copied().unwrap_or(0);
            let tokens: Vec<i64> = (0..nb)
                .map(|b| match stops[b] {
                    Some(_) => pad_tok,
                    None => *states[b].ids.last().expect("a token was just chosen"),
                })
                .collect();
            for (a, s) in active.iter_mut().zip(&stops) {
                *a = s.is_none();
            }
            let hidden = {
                let mut rows = RowObservers {
                    rows: &mut observers,
                    pads: &pads,
                    active: &active,
                };
                let opts = ForwardOptions {
                    observer: any_observer.then_some(&mut rows as &mut dyn Observer),
                    steering,
                };
                model.step_batch(&mut seq, &tokens, opts)?
            };
            logits = model.logits(&hidden.view([nb as i64, -1]));
            decode_steps += 1;
        }
        let decode_ms = if decode_steps > 0 {
            sync_elapsed_ms(&logits, t_decode)
        } else {
            0.0
        };
        let mut out = Vec::with_capacity(nb);
        for (st, stop) in states.into_iter().zip(stops) {
            let steps = st.ids.len().saturating_sub(1);
            let mut g = self.finish(st, stop.expect("every row stopped"), cfg)?;
            g.timing = Timing {
                prefill_ms,
                decode_ms,
                decode_steps: steps,
            };
            out.push(g);
        }
        Ok(out)
    }

    /// The next token: queued forced text first, then the close tag when the thinking budget is
    /// reached, else the model's choice from `logits` (end of sequence banned below the minimum).
    /// Returns the token and whether it was forced.
    fn next_token(
        &self,
        st: &mut State,
        queue: &mut std::collections::VecDeque<i64>,
        logits: &Tensor,
        history: &[i64],
        cfg: &GenerateConfig,
    ) -> Result<(i64, bool)> {
        if let Some(t) = queue.pop_front() {
            return Ok((t, true));
        }
        if st.closed_at.is_none()
            && cfg
                .length
                .think_budget
                .is_some_and(|b| self.think_count(st) >= b)
        {
            let text = format!("{}{}", cfg.tags.close, cfg.length.answer_cue);
            st.events.push(Event {
                step: st.ids.len(),
                kind: EventKind::ForcedThinkEnd,
                text: text.clone(),
            });
            queue.extend(self.tokenizer.encode(&text)?);
            return Ok((queue.pop_front().unwrap_or_default(), true));
        }
        let mut banned = Vec::new();
        if st.ids.len() < cfg.min_new_tokens {
            banned.extend(&self.eos_ids);
        }
        Ok((select(logits, history, &banned, &cfg.sampling), false))
    }

    /// Thinking tokens so far: model-chosen tokens before the close tag.
    fn think_count(&self, st: &State) -> usize {
        Self::model_tokens_before(st, st.tag_start.unwrap_or(st.ids.len()))
    }

    fn model_tokens_before(st: &State, end: usize) -> usize {
        st.forced[..end].iter().filter(|f| !**f).count()
    }

    /// Whether thinking that ends at token `end` must go on (minimum length or waits left).
    fn should_extend(&self, st: &State, cfg: &GenerateConfig, end: usize) -> bool {
        let below_min = cfg
            .length
            .min_think
            .is_some_and(|m| Self::model_tokens_before(st, end) < m);
        below_min || st.waits_left > 0
    }

    /// If the decoded text now contains the close tag (or the answer tag), the index of the token
    /// where the tag starts.
    fn find_close(&self, st: &State, tags: &ThinkTags) -> Result<Option<(usize, usize)>> {
        // look at a short tail only: the tag can only be completed by the newest token
        let tail_from = st.ids.len().saturating_sub(16);
        let tail = self.tokenizer.decode(&st.ids[tail_from..], false)?;
        let mut hit = None;
        for tag in [&tags.close, &tags.answer_open] {
            if tag.is_empty() {
                continue;
            }
            if let Some(pos) = tail.find(tag.as_str()) {
                // completed only now: without the newest token the tail must not contain it
                let before = self
                    .tokenizer
                    .decode(&st.ids[tail_from..st.ids.len() - 1], false)?;
                if !before.contains(tag.as_str()) {
                    hit = Some(pos);
                    break;
                }
            }
        }
        let Some(pos) = hit else { return Ok(None) };
        // token whose text contains the tag's first char
        let mut at = st.ids.len() - 1;
        for i in tail_from..st.ids.len() {
            let upto = self.tokenizer.decode(&st.ids[tail_from..=i], false)?;
            if upto.len() > pos {
                at = i;
                break;
            }
        }
        Ok(Some((at, pos)))
    }

    #[allow(clippy::too_many_arguments)]
    fn extend_thinking(
        &self,
        st: &mut State,
        seq: &mut Sequence,
        history: &mut Vec<i64>,
        queue: &mut std::collections::VecDeque<i64>,
        keep: usize,
        prompt_len: usize,
        cfg: &GenerateConfig,
        observer: Option<&mut dyn StepObserver>,
    ) -> Result<()> {
        let below_min = cfg
            .length
            .min_think
            .is_some_and(|m| Self::model_tokens_before(st, keep) < m);
        let text = if below_min {
            cfg.length.continuation.clone()
        } else {
            st.waits_left -= 1;
            cfg.length.wait_text.clone()
        };
        // drop tokens from `keep` on; the cache then holds prompt + ids[..keep]
        st.ids.truncate(keep);
        st.forced.truncate(keep);
        history.truncate(prompt_len + keep);
        let cache_len = (prompt_len + keep) as i64;
        // (the newest token was never fed, so the cache may already be that short)
        seq.cache.truncate(cache_len);
        if let Some(o) = observer {
            o.rollback(keep + 1);
        }
        st.events.push(Event {
            step: keep,
            kind: EventKind::Wait,
            text: text.clone(),
        });
        let ids = self.tokenizer.encode(&format!(" {}", text.trim_start()))?;
        if ids.is_empty() {
            bail!("the continuation text is empty: nothing to insert when thinking ends early");
        }
        queue.extend(ids);
        Ok(())
    }

    fn finish(
        &self,
        st: State,
        stop_reason: StopReason,
        cfg: &GenerateConfig,
    ) -> Result<Generation> {
        let text = self.tokenizer.decode(&st.ids, true)?;
        let answer_start = st.closed_at.unwrap_or(st.ids.len());
        let (thinking, answer) = split_thinking(&text, &cfg.tags);
        let think_tokens = self.think_count(&st);
        let answer_tokens = st.ids[answer_start..]
            .iter()
            .zip(&st.forced[answer_start..])
            .filter(|(t, f)| !**f && !self.eos_ids.contains(t))
            .count();
        Ok(Generation {
            generated_ids: st.ids,
            forced: st.forced,
            text,
            thinking,
            answer,
            think_tokens,
            answer_tokens,
            answer_start,
            stop_reason,
            events: st.events,
            timing: Timing::default(),
        })
    }
}

/// Splits a batched forward's attention inputs over one observer per row, each seeing exactly
/// what it sees at batch size 1: its own query rows and its keys without the left padding. Only
/// attention patterns are split; other sites are not reported to the rows.
struct RowObservers<'o, 'h> {
    rows: &'o mut [Option<&'h mut dyn StepObserver>],
    pads: &'o [i64],
    active: &'o [bool],
}

impl Observer for RowObservers<'_, '_> {
    fn wants(&self, site: Site) -> bool {
        matches!(site, Site::AttnPattern(_))
            && self
                .rows
                .iter()
                .zip(self.active)
                .any(|(o, a)| *a && o.as_ref().is_some_and(|o| o.wants(site)))
    }

    fn on_capture(&mut self, site: Site, value: Captured<'_>) {
        let Captured::Attention(attn) = value else {
            return;
        };
        // each row's probe recomputes from its own unpadded query rows and keys
        let (n, kv) = (attn.query.size()[2], attn.keys.size()[2]);
        for (b, o) in self.rows.iter_mut().enumerate() {
            if !self.active[b] {
                continue;
            }
            let Some(o) = o.as_deref_mut() else { continue };
            if !o.wants(site) {
                continue;
            }
            let pad = self.pads[b];
            // a prefill's padding query rows come first; a decode step has one real row
            let skip = if n > 1 { pad } else { 0 };
            let q = attn.query.narrow(0, b as i64, 1).narrow(2, skip, n - skip);
            let k = attn.keys.narrow(0, b as i64, 1).narrow(2, pad, kv - pad);
            let row = AttentionInputs {
                query: &q,
                keys: &k,
                scaling: attn.scaling,
                probs: None,
                mask: None,
            };
            o.on_capture(site, Captured::Attention(row));
        }
    }
}

/// Milliseconds since `t0`, after waiting for `t`'s device to finish its queued work.
fn sync_elapsed_ms(t: &Tensor, t0: std::time::Instant) -> f64 {
    if let tch::Device::Cuda(i) = t.device() {
        tch::Cuda::synchronize(i as i64);
    }
    t0.elapsed().as_secs_f64() * 1000.0
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
}

fn reborrow_step<'s>(o: &'s mut Option<&mut dyn StepObserver>) -> Option<&'s mut dyn StepObserver> {
    match o {
        Some(x) => Some(&mut **x),
        None => None,
    }
}
