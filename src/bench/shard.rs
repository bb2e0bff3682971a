//! Splitting a run over several processes: shard `I` of `N` takes every `N`-th work item.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

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

    /// The shard the caller chose if any, else the SLURM array environment, else no sharding.
    pub fn resolve(given: Option<Shard>) -> Result<Option<Shard>> {
        match given {
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
