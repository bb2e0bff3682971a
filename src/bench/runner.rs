//! The resumable, shardable evaluation loop. The caller supplies the answer function (the model);
//! the loop skips work already in `results.jsonl`, appends each new record as soon as it exists,
//! shows progress with an ETA, and takes only its shard's share of the work.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::data::Sample;
use super::results::{RecordKey, ResultRecord, ResultsWriter, Setting};

/// Shard `index` of `count` (0-based): work item `i` (in the canonical order: samples, then
/// settings, then sample index) belongs to shard `i % count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            bail!("shard count must be at least 1");
        }
        if index >= count {
            bail!("shard index {index} is out of range for {count} shards (indices are 0-based: 0..{count})");
        }
        Ok(Shard { index, count })
    }

    pub fn owns(&self, item_index: usize) -> bool {
        item_index % self.count == self.index
    }

    /// The shard from a SLURM job array: `SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN` (min 0 when
    /// unset) of `SLURM_ARRAY_TASK_COUNT`. `None` when not running in an array.
    pub fn from_slurm_env() -> Result<Option<Shard>> {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (Some(id), Some(count)) = (get("SLURM_ARRAY_TASK_ID"), get("SLURM_ARRAY_TASK_COUNT"))
        else {
            return Ok(None);
        };
        let parse = |name: &str, v: &str| -> Result<usize> {
            v.trim()
                .parse::<usize>()
                .map_err(|_| anyhow!("{name}={v} is not a non-negative integer"))
        };
        let id = parse("SLURM_ARRAY_TASK_ID", &id)?;
        let count = parse("SLURM_ARRAY_TASK_COUNT", &count)?;
        let min = match get("SLURM_ARRAY_TASK_MIN") {
            Some(m) => parse("SLURM_ARRAY_TASK_MIN", &m)?,
            None => 0,
        };
        let index = id.checked_sub(min).ok_or_else(|| {
            anyhow!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}")
        })?;
        Shard::new(index, count)
            .map(Some)
            .context("shard from the SLURM job array environment")
    }

    /// `--shard` if given, else the SLURM array environment, else no sharding.
    pub fn resolve(cli: Option<Shard>) -> Result<Option<Shard>> {
        match cli {
            Some(s) => Ok(Some(s)),
            None => Shard::from_slurm_env(),
        }
    }

    /// Conventional directory name for this shard's output: `shard-I-of-N`.
    pub fn dir_name(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = anyhow::Error;

    /// `I/N`, 0-based: `0/4` .. `3/4`.
    fn from_str(s: &str) -> Result<Shard> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("shard `{s}` is not of the form I/N (e.g. 0/4)"))?;
        let i = i
            .trim()
            .parse::<usize>()
            .map_err(|_| anyhow!("shard `{s}`: `{i}` is not a non-negative integer"))?;
        let n = n
            .trim()
            .parse::<usize>()
            .map_err(|_| anyhow!("shard `{s}`: `{n}` is not a non-negative integer"))?;
        Shard::new(i, n)
    }
}

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
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// On an answer-function error, record it and go on (the item stays undone, so a rerun
    /// retries it) instead of stopping.
    pub keep_going: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            shard: None,
            samples_per_setting: 1,
            progress: true,
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
    run_resumable_batched(writer, samples, settings, opts, 1, |items| {
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
/// [`run_resumable`].
pub fn run_resumable_batched<F>(
    writer: &mut ResultsWriter,
    samples: &[Sample],
    settings: &[Setting],
    opts: &RunOptions,
    batch_size: usize,
    mut answer: F,
) -> Result<RunSummary>
where
    F: FnMut(&[WorkItem<'_>]) -> Vec<Result<ResultRecord>>,
{
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
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
    // groups: each starts at the first unassigned item and takes the next ones that share its
    // setting and sample index
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

    let bar = ProgressBar::with_draw_target(
        Some(todo.len() as u64),
        if opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ({per_sec}, ETA {eta}) {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if opts.progress {
        bar.enable_steady_tick(Duration::from_millis(500));
    }

    for group in groups {
        bar.set_message(group[0].key().to_string());
        let results = answer(&group);
        if results.len() != group.len() {
            bar.abandon();
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
                        bar.abandon();
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
                        bar.abandon();
                        return Err(e.context(format!(
                            "failed on {key} ({} results saved; rerun to resume)",
                            summary.already_done + summary.completed
                        )));
                    }
                    bar.println(format!("failed on {key}: {e:#}"));
                    summary.failed.push((key, format!("{e:#}")));
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}
