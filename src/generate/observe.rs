//! What may watch or steer a generation's forward passes, and how a batch shares them out.
use tch::Tensor;

use crate::model::{AttentionObserver, ForwardOptions, VisionObserver};

/// Hooks a probe uses to follow steps. Step s is the query that produced generated token s.
pub trait StepObserver: AttentionObserver {
    /// Generation was rolled back: keep only steps `0..steps`.
    fn rollback(&mut self, _steps: usize) {}
    /// The thinking block closed: generated tokens from `index` on are the answer.
    fn set_answer_start(&mut self, _index: usize) {}
}

/// Optional attachments to a generation.
#[derive(Default)]
pub struct Hooks<'h> {
    /// sees every decoder layer's attention inputs at every step
    pub observer: Option<&'h mut dyn StepObserver>,
    /// sees the vision tower's attention during prefill
    pub vision: Option<&'h mut dyn VisionObserver>,
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
            Some(o) => Some(&mut **o as &mut dyn AttentionObserver),
            None => None,
        },
        steering,
        ..Default::default()
    }
}

/// Forward options for a batch: `rows` receives the attention inputs when any row observes.
pub(crate) fn batch_options<'o>(
    rows: &'o mut RowObservers<'_, '_>,
    steering: Option<&'o Tensor>,
) -> ForwardOptions<'o> {
    let any = rows.rows.iter().any(Option::is_some);
    ForwardOptions {
        observer: any.then_some(rows as &mut dyn AttentionObserver),
        steering,
        ..Default::default()
    }
}

/// Splits a batched forward's attention inputs over one observer per row, each seeing exactly
/// what it sees at batch size 1: its own query rows and its keys without the left padding.
pub(crate) struct RowObservers<'o, 'h> {
    pub(crate) rows: &'o mut [Option<&'h mut dyn StepObserver>],
    pub(crate) pads: &'o [i64],
    pub(crate) active: &'o [bool],
}

impl AttentionObserver for RowObservers<'_, '_> {
    fn wants_layer(&self, layer: usize) -> bool {
        self.rows
            .iter()
            .zip(self.active)
            .any(|(o, a)| *a && o.as_ref().is_some_and(|o| o.wants_layer(layer)))
    }

    fn on_attention(
        &mut self,
        layer: usize,
        query: &Tensor,
        keys: &Tensor,
        scaling: f64,
        _probs: Option<&Tensor>,
    ) {
        // each row's probe recomputes from its own unpadded keys
        let kv = keys.size()[2];
        for (b, o) in self.rows.iter_mut().enumerate() {
            if !self.active[b] {
                continue;
            }
            let Some(o) = o.as_deref_mut() else { continue };
            if !o.wants_layer(layer) {
                continue;
            }
            let pad = self.pads[b];
            let q = query.narrow(0, b as i64, 1);
            let k = keys.narrow(0, b as i64, 1).narrow(2, pad, kv - pad);
            o.on_attention(layer, &q, &k, scaling, None);
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
