//! One sequence being decoded, as a small state machine: [`Row::choose`] picks the next token
//! (queued forced text, then the close tag at the thinking budget, else the model's choice) and
//! [`Row::accept`] takes it and says what the decode loop does next (feed it, roll the cache back,
//! or stop). The row knows ids and a tokenizer only, never the model, so the thinking structure
//! and length control can be followed without one.
use std::collections::VecDeque;

use anyhow::{bail, Result};
use tch::Tensor;

use super::config::{split_generation, GenerateConfig};
use super::output::{Event, EventKind, Generation, StopReason, Timing};
use crate::checkpoint::TextTokenizer;
use crate::sampling::select;

/// A chosen token and whether length control inserted it (rather than the model choosing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub token: i64,
    pub forced: bool,
}

/// What the decode loop does after [`Row::accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Feed the token to the model and choose again from the new logits.
    Continue,
    /// Thinking ended too early: the row kept only its first `keep` generated tokens and queued
    /// the text that continues thinking. The cache must be cut to the prompt plus those `keep`
    /// tokens; the logits in hand are not used again (the next choice is forced).
    RollBack { keep: usize },
    /// Generation ended (the last token is kept).
    Stop(StopReason),
}

/// The outcome of one [`Row::accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub next: Next,
    /// Set when this token closed the thinking block: generated tokens from here on are the answer.
    pub answer_start: Option<usize>,
}

/// The decoding state of one sequence.
pub struct Row<'g> {
    tokenizer: &'g TextTokenizer,
    cfg: &'g GenerateConfig,
    eos_ids: &'g [i64],
    ids: Vec<i64>,
    forced: Vec<bool>,
    /// forced tokens still to emit (close tag and answer cue, or inserted thinking text)
    queue: VecDeque<i64>,
    /// prompt and generated ids, for the repetition penalty
    history: Vec<i64>,
    /// index after the token that completed the close tag
    closed_at: Option<usize>,
    /// index of the token where the close tag starts (thinking tokens are counted before it)
    tag_start: Option<usize>,
    waits_left: usize,
    events: Vec<Event>,
    stop: Option<StopReason>,
}

impl<'g> Row<'g> {
    /// A row that generates after `prompt` (the whole prompt, for the repetition penalty).
    pub fn new(
        tokenizer: &'g TextTokenizer,
        cfg: &'g GenerateConfig,
        eos_ids: &'g [i64],
        prompt: &[i64],
    ) -> Self {
        Self {
            tokenizer,
            cfg,
            eos_ids,
            ids: Vec::new(),
            forced: Vec::new(),
            queue: VecDeque::new(),
            history: prompt.to_vec(),
            // without thinking the answer starts at the first generated token
            closed_at: cfg.no_think.then_some(0),
            tag_start: cfg.no_think.then_some(0),
            waits_left: cfg.length.waits,
            events: Vec::new(),
            stop: None,
        }
    }

    /// The generated ids so far.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Why the row stopped, once it has.
    pub fn stopped(&self) -> Option<StopReason> {
        self.stop
    }

    /// The next token: [`Row::forced_next`] when length control has one, else the model's
    /// choice from `logits` `[V]` (end of sequence banned below `min_new_tokens`).
    pub fn choose(&mut self, logits: &Tensor) -> Result<Choice> {
        if let Some(token) = self.forced_next()? {
            return Ok(Choice {
                token,
                forced: true,
            });
        }
        let banned: &[i64] = if self.ids.len() < self.cfg.min_new_tokens {
            self.eos_ids
        } else {
            &[]
        };
        let token = select(logits, &self.history, banned, &self.cfg.sampling);
        Ok(Choice {
            token,
            forced: false,
        })
    }

    /// The next token when length control decides it: queued forced text first, then the close
    /// tag (and answer cue) once thinking reached the budget. `None`: the model chooses.
    pub fn forced_next(&mut self) -> Result<Option<i64>> {
        if let Some(t) = self.queue.pop_front() {
            return Ok(Some(t));
        }
        let budget_reached = self.closed_at.is_none()
            && (self.cfg.length.think_budget).is_some_and(|b| self.think_count() >= b);
        if !budget_reached {
            return Ok(None);
        }
        let text = format!("{}{}", self.cfg.tags.close, self.cfg.length.answer_cue);
        self.events.push(Event {
            step: self.ids.len(),
            kind: EventKind::ForcedThinkEnd,
            text: text.clone(),
        });
        self.queue.extend(self.tokenizer.encode(&text)?);
        Ok(Some(self.queue.pop_front().unwrap_or_default()))
    }

    /// Take the chosen token: follow the thinking structure (did the block just close, must it go
    /// on?) and decide whether generation continues.
    pub fn accept(&mut self, choice: Choice) -> Result<Accepted> {
        if self.stop.is_some() {
            bail!("a token was given to a row that already stopped");
        }
        let Choice { token, forced } = choice;
        self.ids.push(token);
        self.forced.push(forced);
        self.history.push(token);
        let is_eos = !forced && self.eos_ids.contains(&token);
        // without thinking, the first token tells the observer that the answer starts at 0
        let mut answer_start = (self.cfg.no_think && self.ids.len() == 1).then_some(0);
        if self.closed_at.is_none() {
            // thinking ends at a close tag (or answer tag), or at an end of sequence
            let tag_at = self.find_close()?;
            let end = tag_at.or(is_eos.then(|| self.ids.len() - 1));
            if let Some(end) = end.filter(|&e| !forced && self.must_go_on(e)) {
                let keep = self.reopen_thinking(end)?;
                return Ok(Accepted {
                    next: Next::RollBack { keep },
                    answer_start: None,
                });
            }
            answer_start = tag_at.map(|at| self.close_thinking(at, forced));
        }
        let next = if is_eos {
            Next::Stop(StopReason::Eos)
        } else if self.ids.len() >= self.cfg.max_new_tokens {
            Next::Stop(StopReason::MaxNewTokens)
        } else {
            Next::Continue
        };
        if let Next::Stop(reason) = next {
            self.stop = Some(reason);
        }
        Ok(Accepted { next, answer_start })
    }

    /// The close tag starting at token `tag_at` ended thinking; returns where the answer starts.
    fn close_thinking(&mut self, tag_at: usize, forced: bool) -> usize {
        self.closed_at = Some(self.ids.len());
        self.tag_start = Some(tag_at);
        if !forced {
            // a forced close was already recorded as `forced_think_end`
            self.events.push(Event {
                step: tag_at,
                kind: EventKind::ThinkEnd,
                text: self.cfg.tags.close.clone(),
            });
        }
        self.ids.len()
    }

    /// Thinking tokens so far: model-chosen tokens before the close tag.
    fn think_count(&self) -> usize {
        self.model_tokens_before(self.tag_start.unwrap_or(self.ids.len()))
    }

    fn model_tokens_before(&self, end: usize) -> usize {
        self.forced[..end].iter().filter(|f| !**f).count()
    }

    fn below_min_think(&self, end: usize) -> bool {
        (self.cfg.length.min_think).is_some_and(|m| self.model_tokens_before(end) < m)
    }

    /// Whether thinking that ends at token `end` must go on (minimum length or waits left).
    fn must_go_on(&self, end: usize) -> bool {
        self.below_min_think(end) || self.waits_left > 0
    }

    /// Drop the tokens from `keep` on and queue the text that continues thinking (the
    /// continuation below the minimum, else a wait). Returns `keep`.
    fn reopen_thinking(&mut self, keep: usize) -> Result<usize> {
        let text = if self.below_min_think(keep) {
            self.cfg.length.continuation.clone()
        } else {
            self.waits_left -= 1;
            self.cfg.length.wait_text.clone()
        };
        let prompt_len = self.history.len() - self.ids.len();
        self.ids.truncate(keep);
        self.forced.truncate(keep);
        self.history.truncate(prompt_len + keep);
        self.events.push(Event {
            step: keep,
            kind: EventKind::Wait,
            text: text.clone(),
        });
        let ids = self.tokenizer.encode(&format!(" {}", text.trim_start()))?;
        if ids.is_empty() {
            bail!("the continuation text is empty: nothing to insert when thinking ends early");
        }
        self.queue.extend(ids);
        Ok(keep)
    }

    /// If the decoded text now contains the close tag (or the answer tag), the index of the token
    /// where the tag starts.
    fn find_close(&self) -> Result<Option<usize>> {
        let tok = self.tokenizer;
        let tags = &self.cfg.tags;
        let ids = &self.ids;
        // look at a short tail only: the tag can only be completed by the newest token
        let tail_from = ids.len().saturating_sub(16);
        let tail = tok.decode(&ids[tail_from..], false)?;
        let mut hit = None;
        for tag in [&tags.close, &tags.answer_open] {
            if tag.is_empty() {
                continue;
            }
            if let Some(pos) = tail.find(tag.as_str()) {
                // completed only now: without the newest token the tail must not contain it
                let before = tok.decode(&ids[tail_from..ids.len() - 1], false)?;
                if !before.contains(tag.as_str()) {
                    hit = Some(pos);
                    break;
                }
            }
        }
        let Some(pos) = hit else { return Ok(None) };
        // token whose text contains the tag's first char
        for i in tail_from..ids.len() {
            let upto = tok.decode(&ids[tail_from..=i], false)?;
            if upto.len() > pos {
                return Ok(Some(i));
            }
        }
        Ok(Some(ids.len() - 1))
    }

    /// The finished generation (timing left at zero for the caller to fill in).
    pub fn finish(self) -> Result<Generation> {
        let Some(stop_reason) = self.stop else {
            bail!("the generation has not stopped");
        };
        self.generation(stop_reason)
    }

    /// The generation so far, for saving an unfinished run: stopped as `interrupted` unless it
    /// has already stopped.
    pub fn so_far(&self) -> Result<Generation> {
        self.generation(self.stop.unwrap_or(StopReason::Interrupted))
    }

    fn generation(&self, stop_reason: StopReason) -> Result<Generation> {
        let text = self.tokenizer.decode(&self.ids, true)?;
        let answer_start = self.closed_at.unwrap_or(self.ids.len());
        let (thinking, answer) = split_generation(&text, self.cfg);
        let think_tokens = self.think_count();
        let answer_tokens = self.ids[answer_start..]
            .iter()
            .zip(&self.forced[answer_start..])
            .filter(|(t, f)| !**f && !self.eos_ids.contains(t))
            .count();
        Ok(Generation {
            generated_ids: self.ids.clone(),
            forced: self.forced.clone(),
            text,
            thinking,
            answer,
            think_tokens,
            answer_tokens,
            answer_start,
            stop_reason,
            events: self.events.clone(),
            timing: Timing::default(),
        })
    }
}
