//! Join the run directories of several shards into one run directory.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::results::{read_results, LineProblem, Manifest, RecordKey, RESULTS_FILE};

#[derive(Debug, Clone, Default)]
pub struct MergeReport {
    /// Records written to the merged `results.jsonl`.
    pub written: usize,
    /// Records read from each shard directory.
    pub per_shard: Vec<(PathBuf, usize)>,
    /// Keys seen more than once (the first occurrence is kept), one entry per extra copy.
    pub duplicates: Vec<RecordKey>,
    /// Expected by the manifest but in no shard.
    pub missing: Vec<RecordKey>,
    /// In a shard but not expected by the manifest.
    pub unexpected: Vec<RecordKey>,
    /// Unusable lines per shard file.
    pub line_problems: Vec<(PathBuf, LineProblem)>,
    /// Whether a manifest was found (without one, missing keys cannot be known).
    pub has_manifest: bool,
    /// Shard directories that had no manifest.
    pub without_manifest: Vec<PathBuf>,
}

impl MergeReport {
    pub fn is_complete(&self) -> bool {
        self.has_manifest && self.missing.is_empty()
    }
}

/// Merge `shard_dirs/*/results.jsonl` into `out/results.jsonl` (keeping the first copy of a
/// key) and write `out/manifest.json` (the shards' common manifest, unsharded). Missing keys
/// are those the manifest expects that no shard holds.
pub fn merge_runs(out: &Path, shard_dirs: &[PathBuf]) -> Result<MergeReport> {
    if shard_dirs.is_empty() {
        bail!("no shard directories to merge");
    }
    let out_results = out.join(RESULTS_FILE);
    if out_results.metadata().is_ok_and(|m| m.len() > 0) {
        bail!(
            "{} already exists; merge into a new directory",
            out_results.display()
        );
    }
    let mut report = MergeReport::default();
    let mut manifest: Option<Manifest> = None;
    for dir in shard_dirs {
        if !dir.join(RESULTS_FILE).is_file() {
            bail!("{} has no {RESULTS_FILE}", dir.display());
        }
        match Manifest::read(dir)? {
            None => report.without_manifest.push(dir.clone()),
            Some(m) => match &manifest {
                None => manifest = Some(m),
                Some(first) => {
                    if let Some(what) = first.difference_ignoring_shard(&m) {
                        bail!(
                            "{} belongs to a different run (its manifest differs in {what})",
                            dir.display()
                        );
                    }
                }
            },
        }
    }

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let tmp = out.join(format!("{RESULTS_FILE}.tmp"));
    let mut seen: HashSet<RecordKey> = HashSet::new();
    {
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = BufWriter::new(file);
        for dir in shard_dirs {
            let path = dir.join(RESULTS_FILE);
            let (records, problems) = read_results(&path)?;
            report.per_shard.push((dir.clone(), records.len()));
            report
                .line_problems
                .extend(problems.into_iter().map(|p| (path.clone(), p)));
            for rec in records {
                let key = rec.key();
                if !seen.insert(key.clone()) {
                    report.duplicates.push(key);
                    continue;
                }
                serde_json::to_writer(&mut w, &rec)?;
                w.write_all(b"\n")?;
                report.written += 1;
            }
        }
        w.flush()?;
        w.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, &out_results)
        .with_context(|| format!("cannot write {}", out_results.display()))?;

    if let Some(mut m) = manifest {
        report.has_manifest = true;
        let expected = m.expected_keys();
        let expected_set: HashSet<&RecordKey> = expected.iter().collect();
        report.missing = expected
            .iter()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        let mut unexpected: Vec<RecordKey> = seen
            .iter()
            .filter(|k| !expected_set.contains(k))
            .cloned()
            .collect();
        unexpected.sort();
        report.unexpected = unexpected;
        m.shard = None;
        m.write(out)?;
    }
    Ok(report)
}
