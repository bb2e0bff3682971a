//! What may watch or steer a generation's forward passes, and how a batch shares them out.
use tch::Tensor;

use super::row::Row;
use crate::model::{AttentionInputs, Captured, ForwardOptions, Observer, Site};

/// Hooks a probe uses to follow steps. Step s is the query that produced generated token s.
pub trait StepObserver: Observer {
    /// Generation was rolled back: keep only steps `0..steps`.
    fn rollback(&mut self, _steps: usize) {}
    /// The thinking block closed: generated tokens from `index` on are the answer.
    fn set_answer_start(&mut self, _index: usize) {}
    /// `row` accepted a token and decoding goes on (so the steps observed so far are exactly
    /// its generated tokens). An error stops the generation with that error (a trace saves
    /// here, and stops when asked to).
    fn on_token(&mut self, _row: &Row<'_>) -> anyhow::Result<()> {
        Ok(())
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

/// Forward options for one sequence: its observer (if any) and steering.
pub(crate) fn single_options<'o>(
    observer: &'o mut Option<&mut dyn StepObserver>,
    steering: Option<&'o Tensor>,
) -> ForwardOptions<'o> {
    ForwardOptions {
        observer: match observer {
            Some(o) => Some(&mut **o as &mut dyn Observer),
            None => None,
        },
        steering,
    }
}

/// Forward options for a batch: `rows` receives the attention inputs when any row observes.
pub(crate) fn batch_options<'o>(
    rows: &'o mut RowObservers<'_, '_>,
    steering: Option<&'o Tensor>,
) -> ForwardOptions<'o> {
    let any = rows.rows.iter().any(Option::is_some);
    ForwardOptions {
        observer: any.then_some(rows as &mut dyn Observer),
        steering,
    }
}

/// Splits a batched forward's attention inputs over one observer per row, each seeing exactly
/// what it sees at batch size 1: its own query rows and its keys without the left padding. Only
/// attention patterns are split; other sites are not reported to the rows.
pub(crate) struct RowObservers<'o, 'h> {
    pub(crate) rows: &'o mut [Option<&'h mut dyn StepObserver>],
    pub(crate) pads: &'o [i64],
    pub(crate) active: &'o [bool],
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

/// A shorter borrow of an optional observer (for one call).
pub(crate) fn reborrow<'s>(
    observer: &'s mut Option<&mut dyn StepObserver>,
) -> Option<&'s mut dyn StepObserver> {
    match observer {
        Some(o) => Some(&mut **o),
        None => None,
    }
}
