//! The results store: `RUN_DIR/results.jsonl`, one JSON line per (sample, setting, sample index),
//! appended and fsynced line by line so that a run killed at any moment loses at most the line
//! being written; `RUN_DIR/manifest.json` records what the run is expected to produce.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::data::{QuestionType, Sample, Split};
use super::shard::Shard;
use super::text::repair_jsonl_tail;
use crate::formats::diff::first_difference;

pub const RESULTS_FILE: &str = "results.jsonl";
pub const MANIFEST_FILE: &str = "manifest.json";

/// One point of the length-control sweep: a string key (e.g. `budget=100`, `steer=-0.05`) and
/// the number it stands for (the x value of accuracy-vs-length plots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub key: String,
    pub value: f64,
}

impl Setting {
    pub fn new(key: impl Into<String>, value: f64) -> Self {
        Setting {
            key: key.into(),
            value,
        }
    }
}

/// Identity of a result line. Unique within a run directory (a run holds one model).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordKey {
    pub split: Split,
    pub sample_id: String,
    pub setting: String,
    pub sample_index: u32,
}

impl RecordKey {
    pub fn new(sample: &Sample, setting: &Setting, sample_index: u32) -> Self {
        RecordKey::of(sample.split, &sample.id, &setting.key, sample_index)
    }

    /// The key of a line that names its sample and setting (a result or a score).
    pub fn of(split: Split, sample_id: &str, setting: &str, sample_index: u32) -> Self {
        RecordKey {
            split,
            sample_id: sample_id.to_string(),
            setting: setting.to_string(),
            sample_index,
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} [{}] #{}",
            self.split, self.sample_id, self.setting, self.sample_index
        )
    }
}

/// One model answer for one (sample, setting, sample index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub sample_id: String,
    pub split: Split,
    /// Setting key, e.g. `budget=100`.
    pub setting: String,
    pub setting_value: f64,
    /// 0-based index when several samples are drawn per setting.
    #[serde(default)]
    pub sample_index: u32,
    /// Model name (`--name`; default the checkpoint folder's name or the hub id), never a path.
    pub model: String,
    /// The question as asked (kept so that scoring needs nothing but this file).
    #[serde(default)]
    pub question: String,
    /// The prompt the model was given (the question with its options listed), so that the
    /// generation can be replayed (`rhlens direction --generations`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt: String,
    /// The image, relative to the run directory when it can be.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// The system prompt given (`None`: the chat template's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub question_type: QuestionType,
    /// Gold answer.
    pub gold: String,
    /// Options as (letter, text); empty for free-form questions.
    #[serde(default)]
    pub options: Vec<(String, String)>,
    /// Text after the thinking (the answer part of the generation).
    pub answer_text: String,
    /// Text inside `<think>`.
    #[serde(default)]
    pub thinking_text: String,
    #[serde(default)]
    pub think_tokens: u64,
    #[serde(default)]
    pub answer_tokens: u64,
    /// `eos`, `max_new_tokens`, ... as reported by the generator.
    #[serde(default)]
    pub stop_reason: String,
    /// An answer already extracted by the runner, if any (scoring re-extracts from
    /// `answer_text` when absent).
    #[serde(default)]
    pub extracted: Option<String>,
    #[serde(default)]
    pub seed: u64,
    /// Optional per-role attention summary (visual / instruction / ... shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_summary: Option<Value>,
    #[serde(default)]
    pub elapsed_s: f64,
}

impl ResultRecord {
    /// A record with the identity and the question filled in from the work item; the caller sets
    /// the generation fields (`answer_text`, `thinking_text`, token counts, `stop_reason`, ...).
    pub fn for_item(sample: &Sample, setting: &Setting, sample_index: u32, model: &str) -> Self {
        ResultRecord {
            sample_id: sample.id.clone(),
            split: sample.split,
            setting: setting.key.clone(),
            setting_value: setting.value,
            sample_index,
            model: model.to_string(),
            question: sample.question.clone(),
            prompt: String::new(),
            image: String::new(),
            system: None,
            question_type: sample.qtype,
            gold: sample.answer.clone(),
            options: sample.options.clone(),
            answer_text: String::new(),
            thinking_text: String::new(),
            think_tokens: 0,
            answer_tokens: 0,
            stop_reason: String::new(),
            extracted: None,
            seed: 0,
            role_summary: None,
            elapsed_s: 0.0,
        }
    }

    pub fn key(&self) -> RecordKey {
        RecordKey::of(
            self.split,
            &self.sample_id,
            &self.setting,
            self.sample_index,
        )
    }
}

/// A line of a results file that could not be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineProblem {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
    /// The last line, without its newline: an interrupted write.
    pub torn: bool,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.torn {
            write!(
                f,
                "line {}: incomplete last line (interrupted write), ignored",
                self.line
            )
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

/// Read a results file. Lines that do not parse are reported, not fatal; a torn last line is
/// reported with `torn: true`.
pub fn read_results(path: &Path) -> Result<(Vec<ResultRecord>, Vec<LineProblem>)> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let ends_with_newline = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ResultRecord>(line) {
            Ok(r) => records.push(r),
            Err(e) => problems.push(LineProblem {
                line: i + 1,
                reason: e.to_string(),
                torn: i + 1 == lines.len() && !ends_with_newline,
            }),
        }
    }
    Ok((records, problems))
}

/// What [`repair_torn_tail`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailRepair {
    /// The file was empty or ended with a newline.
    Clean,
    /// The last line was complete JSON without its newline; the newline was added.
    NewlineAdded,
    /// The last line was a partial write; this many bytes were cut off.
    Truncated(u64),
}

/// Make a JSONL file end at a line boundary: a partial last line (a kill -9 mid-write) is cut
/// off; a complete record missing only its newline gets one.
pub fn repair_torn_tail(path: &Path) -> Result<TailRepair> {
    let cut = repair_jsonl_tail(path, |line| {
        serde_json::from_str::<ResultRecord>(line).is_ok()
    })?;
    Ok(match cut {
        None => TailRepair::Clean,
        Some(0) => TailRepair::NewlineAdded,
        Some(n) => TailRepair::Truncated(n),
    })
}

/// Appends result lines to `RUN_DIR/results.jsonl`, one fsync per line.
pub struct ResultsWriter {
    path: PathBuf,
    file: File,
    done: HashSet<RecordKey>,
    repair: TailRepair,
    problems: Vec<LineProblem>,
}

impl ResultsWriter {
    /// Open (or create) `run_dir/results.jsonl`: repair a torn last line, then load the keys
    /// already done. Lines that do not parse are kept in the file but their work is redone.
    pub fn open(run_dir: &Path) -> Result<ResultsWriter> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
        let path = run_dir.join(RESULTS_FILE);
        let repair = if path.exists() {
            repair_torn_tail(&path)?
        } else {
            TailRepair::Clean
        };
        let (done, problems) = if path.exists() {
            let (records, problems) = read_results(&path)?;
            (records.iter().map(|r| r.key()).collect(), problems)
        } else {
            (HashSet::new(), Vec::new())
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        Ok(ResultsWriter {
            path,
            file,
            done,
            repair,
            problems,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keys already in the file.
    pub fn done(&self) -> &HashSet<RecordKey> {
        &self.done
    }

    pub fn is_done(&self, key: &RecordKey) -> bool {
        self.done.contains(key)
    }

    /// What opening did to the file's tail.
    pub fn repair(&self) -> TailRepair {
        self.repair
    }

    /// Unparseable lines found on open.
    pub fn problems(&self) -> &[LineProblem] {
        &self.problems
    }

    /// Append one record as a single line and fsync it.
    pub fn append(&mut self, rec: &ResultRecord) -> Result<()> {
        let mut line = serde_json::to_string(rec).context("cannot serialise result record")?;
        line.push('\n');
        // a failed append (a full disk) is cut back, so the file still ends with a whole line
        crate::fsutil::append_whole(&mut self.file, line.as_bytes())
            .with_context(|| format!("cannot write to {}", self.path.display()))?;
        self.done.insert(rec.key());
        Ok(())
    }
}

/// A sample named in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SampleRef {
    pub split: Split,
    pub id: String,
}

/// What a run is expected to produce; written to `RUN_DIR/manifest.json` at run start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// Bench path as given.
    pub bench: String,
    pub model: String,
    pub settings: Vec<Setting>,
    pub samples_per_setting: u32,
    pub samples: Vec<SampleRef>,
    /// The shard this directory holds, if the run is sharded.
    #[serde(default)]
    pub shard: Option<Shard>,
    /// Free-form generation configuration (sampling, seeds, length control).
    #[serde(default)]
    pub config: Value,
}

impl Manifest {
    pub fn new(
        bench: &Path,
        model: &str,
        settings: &[Setting],
        samples_per_setting: u32,
        samples: &[Sample],
        shard: Option<Shard>,
        config: Value,
    ) -> Manifest {
        Manifest {
            format_version: 1,
            bench: bench.display().to_string(),
            model: model.to_string(),
            settings: settings.to_vec(),
            samples_per_setting,
            samples: samples
                .iter()
                .map(|s| SampleRef {
                    split: s.split,
                    id: s.id.clone(),
                })
                .collect(),
            shard,
            config,
        }
    }

    /// Read `run_dir/manifest.json` if it exists.
    pub fn read(run_dir: &Path) -> Result<Option<Manifest>> {
        let path = run_dir.join(MANIFEST_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let m = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid manifest", path.display()))?;
        Ok(Some(m))
    }

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
        let path = run_dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self)?;
        crate::fsutil::write_atomic(&path, (text + "\n").as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Write the manifest for a new run, or check that a resumed run was started with the same
    /// model, settings, samples, shard and configuration.
    pub fn write_or_check(&self, run_dir: &Path) -> Result<()> {
        match Manifest::read(run_dir)? {
            None => self.write(run_dir),
            Some(old) => {
                let Some(what) = self.difference(&old) else {
                    return Ok(());
                };
                // name the option when it is one of the generation settings
                if let Some((name, before, now)) = first_difference(&old.config, &self.config) {
                    return crate::error::invalid(
                        "out",
                        format!(
                            "{} holds a run made with another `{name}` ({before} there, {now} \
                             now); resume with the same options or use a new directory",
                            run_dir.display()
                        ),
                    );
                }
                bail!(
                    "{} holds a run with different {what}; resume with the same options or use a new output directory",
                    run_dir.display()
                )
            }
        }
    }

    /// The first field (by name) in which two manifests differ, ignoring the bench path and the
    /// shard.
    pub fn difference_ignoring_shard(&self, other: &Manifest) -> Option<&'static str> {
        if self.model != other.model {
            Some("model")
        } else if self.settings != other.settings {
            Some("settings")
        } else if self.samples_per_setting != other.samples_per_setting {
            Some("samples per setting")
        } else if self.samples != other.samples {
            Some("samples")
        } else if self.config != other.config {
            Some("generation configuration")
        } else {
            None
        }
    }

    fn difference(&self, other: &Manifest) -> Option<&'static str> {
        self.difference_ignoring_shard(other).or_else(|| {
            if self.shard != other.shard {
                Some("shard")
            } else {
                None
            }
        })
    }

    /// Every key the whole run (all shards) should produce.
    pub fn expected_keys(&self) -> Vec<RecordKey> {
        let mut out = Vec::with_capacity(
            self.samples.len() * self.settings.len() * self.samples_per_setting as usize,
        );
        for s in &self.samples {
            for setting in &self.settings {
                for k in 0..self.samples_per_setting {
                    out.push(RecordKey {
                        split: s.split,
                        sample_id: s.id.clone(),
                        setting: setting.key.clone(),
                        sample_index: k,
                    });
                }
            }
        }
        out
    }
}
