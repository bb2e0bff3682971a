//! The resumable, shardable evaluation loop. The caller supplies the answer function (the model);
//! the loop skips work already in `results.jsonl`, appends each new record as soon as it exists,
//! reports progress to the caller, and takes only its shard's share of the work.

use anyhow::{bail, Result};

use super::data::Sample;
use super::results::{RecordKey, ResultRecord, ResultsWriter, Setting};
use super::shard::Shard;

/// One unit of work.
#[derive(Debug, Clone, Copy)]
pub struct WorkItem<'a> {
    /// Position in the canonical order over all shards.
    pub index: usize,
    pub sample: &'a Sample,
    pub setting: &'a Setting,
    pub sample_index: u32,
}

impl WorkItem<'_> {
    pub fn key(&self) -> RecordKey {
        RecordKey::new(self.sample, self.setting, self.sample_index)
    }
}

/// All work items in canonical order (samples, then settings, then sample index), unsharded.
pub fn work_items<'a>(
    samples: &'a [Sample],
    settings: &'a [Setting],
    samples_per_setting: u32,
) -> Vec<WorkItem<'a>> {
    let mut out = Vec::with_capacity(samples.len() * settings.len() * samples_per_setting as usize);
    for sample in samples {
        for setting in settings {
            for sample_index in 0..samples_per_setting {
                out.push(WorkItem {
                    index: out.len(),
                    sample,
                    setting,
                    sample_index,
                });
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub shard: Option<Shard>,
    /// Answers per (sample, setting); at least 1.
    pub samples_per_setting: u32,
    /// On an answer-function error, record it and go on (the item stays undone, so a rerun
    /// retries it) instead of stopping.
    pub keep_going: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            shard: None,
            samples_per_setting: 1,
            keep_going: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Items in this shard.
    pub items: usize,
    /// Items skipped because their result was already in the file.
    pub already_done: usize,
    /// Items answered and written in this call.
    pub completed: usize,
    /// Items whose answer function failed (only with `keep_going`).
    pub failed: Vec<(RecordKey, String)>,
}

/// What the runner reports while it works, for the caller to show (a progress bar, a log).
/// Every method does nothing unless implemented.
pub trait RunProgress {
    /// `pending` items are to be answered (those already in the results file are not counted).
    fn start(&mut self, _pending: usize) {}
    /// The group whose first item is `first` goes to the answer function.
    fn group_started(&mut self, _first: &RecordKey) {}
    /// `key` failed and the run goes on without it (`keep_going`); `error` is the whole chain.
    fn item_failed(&mut self, _key: &RecordKey, _error: &str) {}
    /// One more item is finished (written, or failed under `keep_going`).
    fn item_done(&mut self) {}
    /// The run ends: `completed` is false when it stopped on an error.
    fn finish(&mut self, _completed: bool) {}
}

/// Reports nothing.
pub struct NoProgress;

impl RunProgress for NoProgress {}

/// Run `answer(sample, setting, sample_index)` for every work item of this shard that is not
/// already in `writer`, appending each record as soon as it is returned. The returned record's
/// key must match the item (start from [`ResultRecord::for_item`]).
pub fn run_resumable<F>(
    writer: &mut ResultsWriter,
    samples: &[Sample],
    settings: &[Setting],
    opts: &RunOptions,
    mut answer: F,
) -> Result<RunSummary>
where
    F: FnMut(&Sample, &Setting, u32) -> Result<ResultRecord>,
{
    // one item per group: the batched runner then visits items in canonical order, one at a time
    let mut progress = NoProgress;
    run_resumable_batched(writer, samples, settings, opts, 1, &mut progress, |items| {
        items
            .iter()
            .map(|it| answer(it.sample, it.setting, it.sample_index))
            .collect()
    })
}

/// [`run_resumable`] answering up to `batch_size` items at once: pending items of this shard with
/// the same setting and sample index are grouped (in canonical order) and passed together to
/// `answer`, which returns one result per item in the same order. Each record is appended as soon
/// as its group returns; skipping of finished work, sharding and `keep_going` are as in
/// [`run_resumable`]. Progress goes to `progress`.
pub fn run_resumable_batched<F>(
    writer: &mut ResultsWriter,
    samples: &[Sample],
    settings: &[Setting],
    opts: &RunOptions,
    batch_size: usize,
    progress: &mut dyn RunProgress,
    mut answer: F,
) -> Result<RunSummary>
where
    F: FnMut(&[WorkItem<'_>]) -> Vec<Result<ResultRecord>>,
{
    if batch_size == 0 {
        return crate::error::invalid("batch_size", "must be at least 1");
    }
    if opts.samples_per_setting == 0 {
        bail!("samples per setting must be at least 1");
    }
    if settings.is_empty() {
        bail!("no settings to run");
    }
    let all = work_items(samples, settings, opts.samples_per_setting);
    let mine: Vec<&WorkItem> = all
        .iter()
        .filter(|it| opts.shard.is_none_or(|s| s.owns(it.index)))
        .collect();
    let todo: Vec<&WorkItem> = mine
        .iter()
        .copied()
        .filter(|it| !writer.is_done(&it.key()))
        .collect();
    let mut summary = RunSummary {
        items: mine.len(),
        already_done: mine.len() - todo.len(),
        ..Default::default()
    };
    progress.start(todo.len());
    for group in group_pending(&todo, batch_size) {
        progress.group_started(&group[0].key());
        let results = answer(&group);
        if let Err(e) = keep_results(writer, &group, results, opts, &mut summary, progress) {
            progress.finish(false);
            return Err(e);
        }
    }
    progress.finish(true);
    Ok(summary)
}

/// Groups of pending items: each starts at the first unassigned item and takes the next ones
/// that share its setting and sample index, up to `batch_size`.
fn group_pending<'a>(todo: &[&WorkItem<'a>], batch_size: usize) -> Vec<Vec<WorkItem<'a>>> {
    let mut taken = vec![false; todo.len()];
    let mut groups: Vec<Vec<WorkItem>> = Vec::new();
    for i in 0..todo.len() {
        if taken[i] {
            continue;
        }
        let mut group = Vec::with_capacity(batch_size);
        for j in i..todo.len() {
            if group.len() == batch_size {
                break;
            }
            if !taken[j]
                && todo[j].setting.key == todo[i].setting.key
                && todo[j].sample_index == todo[i].sample_index
            {
                taken[j] = true;
                group.push(*todo[j]);
            }
        }
        groups.push(group);
    }
    groups
}

/// Append a group's records; a failed item stops the run, or with `keep_going` is noted and
/// left undone.
fn keep_results(
    writer: &mut ResultsWriter,
    group: &[WorkItem<'_>],
    results: Vec<Result<ResultRecord>>,
    opts: &RunOptions,
    summary: &mut RunSummary,
    progress: &mut dyn RunProgress,
) -> Result<()> {
    if results.len() != group.len() {
        bail!(
            "the answer function returned {} results for {} items",
            results.len(),
            group.len()
        );
    }
    for (item, result) in group.iter().zip(results) {
        let key = item.key();
        match result {
            Ok(rec) => {
                if rec.key() != key {
                    bail!(
                        "the answer function returned a record for {} while running {key}",
                        rec.key()
                    );
                }
                writer.append(&rec)?;
                summary.completed += 1;
            }
            Err(e) => {
                if !opts.keep_going {
                    return Err(e.context(format!(
                        "failed on {key} ({} results saved; rerun to resume)",
                        summary.already_done + summary.completed
                    )));
                }
                let error = format!("{e:#}");
                progress.item_failed(&key, &error);
                summary.failed.push((key, error));
            }
        }
        progress.item_done();
    }
    Ok(())
}
