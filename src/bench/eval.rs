//! The evaluation workflow: answer every benchmark sample at every setting of a sweep, resumable
//! and shardable, keeping the probe's per-role summary of each answer (and, on request, the whole
//! trace). This is the one bench module that runs the model (through [`crate::probe`]); the rest
//! read and write files.
//!
//! Two steps, so that a bad benchmark is refused before a model is loaded:
//! [`EvalPlan::new`] checks the request and loads the benchmark; [`run`] takes the loaded model
//! and the sweep resolved against it and fills `out/results.jsonl`.
//!
//! ```no_run
//! # fn demo(rt: &rhlens::runtime::Runtime, sweep: &rhlens::settings::Sweep,
//! #         request: rhlens::bench::eval::EvalRequest) -> anyhow::Result<()> {
//! use rhlens::bench::{eval, runner::NoProgress};
//! let plan = eval::EvalPlan::new(request, &mut |p| eprintln!("skipped: {p}"))?;
//! let summary = eval::run(rt, &plan, sweep, &mut NoProgress)?;
//! println!("{} answered, results in {}", summary.run.completed, summary.results.display());
//! # Ok(()) }
//! ```
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::data::{load_bench, RecordProblem, Sample, Split};
use super::results::{Manifest, ResultRecord, ResultsWriter, Setting, RESULTS_FILE};
use super::runner::{run_resumable_batched, RunOptions, RunProgress, RunSummary, WorkItem};
use super::shard::Shard;
use crate::budget::{paper_generation, BudgetProtocol, PaperStage1};
use crate::formats::evidence::box_mass_mean;
use crate::formats::shares::role_shares;
use crate::fsutil::RunLock;
use crate::generate::GenerateConfig;
use crate::probe::run::{batchable, traced_generation_batch};
use crate::probe::{traced_generation, ProbeConfig, TraceRequest, TracedRun};
use crate::prompt::PromptStyle;
use crate::runtime::Runtime;
use crate::settings::{Sweep, SweepSetting};

/// Everything an evaluation needs besides the model and the sweep.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// An RH-Bench directory (reason_data.json + reason_images/, halu_data.json + per_images/)
    /// or a JSON/JSONL file with a `split` field.
    pub bench: PathBuf,
    /// The model's name in the manifest and in every result.
    pub model_name: String,
    /// Generation settings shared by every setting of the sweep (which then changes them).
    pub generate: GenerateConfig,
    pub probe: ProbeConfig,
    /// System prompt (`None`: the chat template's own).
    pub system: Option<String>,
    /// Preset appended to every question.
    pub prompt_style: PromptStyle,
    /// How the sweep's budgets are imposed.
    pub protocol: BudgetProtocol,
    /// Run directory: manifest.json, results.jsonl (appended and synced per answer).
    pub out: PathBuf,
    /// Run only this shard of the work.
    pub shard: Option<Shard>,
    /// Answers per sample and setting (distinct seeds).
    pub samples_per_setting: u32,
    /// Only the first N samples of each split.
    pub limit: Option<usize>,
    /// Only this split.
    pub split: Option<Split>,
    /// Also save a full trace per answer under `out/traces/`.
    pub traces: bool,
    /// Record failures and go on instead of stopping (a rerun retries them).
    pub keep_going: bool,
    /// Decode up to this many samples of the same setting together (left-padded batch); groups
    /// that cannot run as a batch run one at a time.
    pub batch_size: usize,
}

/// A checked request with its benchmark loaded.
#[derive(Debug)]
pub struct EvalPlan {
    request: EvalRequest,
    samples: Vec<Sample>,
    /// the run folder's lock, from the check to the end of the run: two processes writing one
    /// folder would answer every key twice
    _lock: RunLock,
}

impl EvalPlan {
    /// Check the request, load the benchmark (no model needed) and lock the run folder. Each
    /// benchmark record that cannot be used goes to `skipped`; a benchmark with no usable sample
    /// left (after the split and the limit) is an error.
    pub fn new(request: EvalRequest, skipped: &mut dyn FnMut(&RecordProblem)) -> Result<EvalPlan> {
        request.generate.validate()?;
        if request.batch_size == 0 {
            return crate::error::invalid("batch_size", "must be at least 1");
        }
        let bench = load_bench(&request.bench)?;
        bench.problems.iter().for_each(|p| skipped(p));
        let samples = bench.select(request.split, request.limit);
        if samples.is_empty() {
            bail!("{} has no usable samples", request.bench.display());
        }
        let _lock = RunLock::acquire(&request.out)?;
        Ok(EvalPlan {
            request,
            samples,
            _lock,
        })
    }

    pub fn request(&self) -> &EvalRequest {
        &self.request
    }

    /// Count every generated token as answer (a model found not to think once it is loaded).
    pub fn count_output_as_answer(&mut self) {
        self.request.generate.no_think = true;
    }

    /// The samples to answer, in run order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
}

/// What [`run`] did.
#[derive(Debug, Clone)]
pub struct EvalSummary {
    pub run: RunSummary,
    /// The results file.
    pub results: PathBuf,
}

/// Answer every pending (sample, setting, sample index) of `plan` with `rt` at the settings of
/// `sweep`, appending each answer to `out/results.jsonl`. Writes `out/manifest.json` on a fresh
/// directory and refuses to resume one written with other options.
pub fn run(
    rt: &Runtime,
    plan: &EvalPlan,
    sweep: &Sweep,
    progress: &mut dyn RunProgress,
) -> Result<EvalSummary> {
    let req = &plan.request;
    req.protocol.check(
        sweep.kind,
        &sweep.settings,
        &req.generate,
        req.samples_per_setting as usize,
    )?;
    let settings: Vec<Setting> = sweep
        .settings
        .iter()
        .map(|s| Setting::new(&s.key, s.value))
        .collect();
    manifest(plan, sweep, &settings).write_or_check(&req.out)?;
    let mut writer = ResultsWriter::open(&req.out)?;
    let opts = RunOptions {
        shard: req.shard,
        samples_per_setting: req.samples_per_setting,
        keep_going: req.keep_going,
    };
    let answerer = Answerer { rt, plan, sweep };
    let summary = run_resumable_batched(
        &mut writer,
        &plan.samples,
        &settings,
        &opts,
        req.batch_size,
        progress,
        |group| answerer.answer_group(group),
    )?;
    Ok(EvalSummary {
        run: summary,
        results: req.out.join(RESULTS_FILE),
    })
}

/// The manifest of this run: what it will produce and with which settings.
fn manifest(plan: &EvalPlan, sweep: &Sweep, settings: &[Setting]) -> Manifest {
    let req = &plan.request;
    let mut config = serde_json::json!({
        "sweep": req.protocol.kind_name(sweep.kind),
        "generate": req.generate,
        "system": req.system,
    });
    // recorded when not the default, so that runs made before these options resume
    if req.prompt_style != PromptStyle::Plain {
        config["prompt_style"] = req.prompt_style.name().into();
    }
    if req.protocol.is_paper() {
        config["budget_protocol"] = req.protocol.record();
    }
    Manifest::new(
        &req.bench,
        &req.model_name,
        settings,
        req.samples_per_setting,
        &plan.samples,
        req.shard,
        config,
    )
}

/// The question as the model sees it: multiple-choice options listed when the text lacks them.
pub fn question_text(s: &Sample) -> String {
    if s.options.is_empty() || s.question.contains("Choices:") || s.question.contains("Options:") {
        return s.question.clone();
    }
    let mut q = s.question.clone();
    q.push_str("\nOptions:");
    for (letter, text) in &s.options {
        q.push_str(&format!("\n{letter}. {text}"));
    }
    q
}

/// `s` with every character but ASCII letters, digits, `-`, `.` and `=` replaced by `_`.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '=' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The trace directory of one answer: `traces/SPLIT-ID-SETTING-sK`.
fn trace_dir(out: &Path, sample: &Sample, setting: &Setting, k: u32) -> PathBuf {
    out.join("traces").join(format!(
        "{}-{}-{}-s{k}",
        sample.split.as_str(),
        safe_name(&sample.id),
        safe_name(&setting.key)
    ))
}

/// What one answer needs before generating: its config, steering, question and trace dir.
struct Item {
    cfg: GenerateConfig,
    steering: Option<Tensor>,
    seed: u64,
    /// the question as asked (preset applied)
    question: String,
    /// the question without the preset (the paper's stage 2 repeats it)
    bare_question: String,
    trace_dir: Option<PathBuf>,
}

/// Answers work items with the model: one at a time, or a group as one batch when it can.
struct Answerer<'a> {
    rt: &'a Runtime,
    plan: &'a EvalPlan,
    sweep: &'a Sweep,
}

impl Answerer<'_> {
    /// Answer sample index `k` is seeded `seed + k` (or `k` when several samples are drawn
    /// without a seed), then the sweep applies its setting.
    fn prepare(&self, sample: &Sample, setting: &Setting, k: u32) -> Result<Item> {
        let req = &self.plan.request;
        let point: &SweepSetting = self
            .sweep
            .settings
            .iter()
            .find(|p| p.key == setting.key)
            .context("setting not in the plan")?;
        let mut cfg = req.generate.clone();
        if let Some(s) = cfg.sampling.seed {
            cfg.sampling.seed = Some(s + k as u64);
        } else if req.samples_per_setting > 1 && !cfg.sampling.is_greedy() {
            cfg.sampling.seed = Some(k as u64);
        }
        let (cfg, steering) = req.protocol.apply(self.sweep, point, &cfg);
        let seed = cfg.sampling.seed.unwrap_or(0);
        Ok(Item {
            cfg,
            steering,
            seed,
            question: req.prompt_style.apply(&question_text(sample)),
            bare_question: question_text(sample),
            trace_dir: req.traces.then(|| trace_dir(&req.out, sample, setting, k)),
        })
    }

    fn request<'r>(
        &'r self,
        item: &'r Item,
        sample: &'r Sample,
        setting: &Setting,
    ) -> TraceRequest<'r> {
        let req = &self.plan.request;
        TraceRequest {
            image: &sample.image,
            prompt: &item.question,
            system: req.system.as_deref(),
            generate: item.cfg.clone(),
            probe: req.probe.clone(),
            vision: false,
            steering: item.steering.as_ref(),
            out: item.trace_dir.as_deref(),
            force: true,
            settings: serde_json::json!({
                "sample": sample.id,
                "setting": setting.key,
                "prompt_style": req.prompt_style.name(),
                "budget_protocol": req.protocol.record(),
            }),
        }
    }

    fn record(
        &self,
        w: &WorkItem<'_>,
        item: &Item,
        run: &TracedRun,
        elapsed_s: f64,
    ) -> ResultRecord {
        let (groups, overall) = role_shares(&run.meta, &run.arrays);
        let g = &run.generation;
        let model = &self.plan.request.model_name;
        let mut rec = ResultRecord::for_item(w.sample, w.setting, w.sample_index, model);
        let req = &self.plan.request;
        rec.prompt = item.question.clone();
        rec.image = crate::probe::record::relative_to(&w.sample.image, &req.out)
            .unwrap_or_else(|| w.sample.image.to_string_lossy().into_owned());
        rec.system = req.system.clone();
        rec.answer_text = g.text.clone();
        rec.thinking_text = g.thinking.clone();
        rec.think_tokens = g.think_tokens as u64;
        rec.answer_tokens = g.answer_tokens as u64;
        rec.stop_reason = g.stop_reason.as_str().to_string();
        rec.extracted = (!g.answer.is_empty()).then(|| g.answer.clone());
        rec.seed = item.seed;
        rec.role_summary = Some(serde_json::json!({
            "roles": run.meta.roles,
            "mean_share": overall,
            "visual_share_by_layer_group": groups,
            "steps": run.meta.steps,
            "trace": item.trace_dir.as_ref().map(|d| d.to_string_lossy().into_owned()),
        }));
        if let (Some(summary), false) = (&mut rec.role_summary, w.sample.bboxes.is_empty()) {
            let maps = &run.arrays.visual_attention;
            let inside = w.sample.bboxes.iter();
            let mass: Vec<_> = inside.map(|b| box_mass_mean(&run.meta, maps, b)).collect();
            summary["box_mass"] = serde_json::json!(mass);
        }
        rec.elapsed_s = elapsed_s;
        rec
    }

    fn answer_one(&self, w: &WorkItem<'_>) -> Result<ResultRecord> {
        let t0 = Instant::now();
        let item = self.prepare(w.sample, w.setting, w.sample_index)?;
        let req = self.request(&item, w.sample, w.setting);
        let (run, stage1) = match self.plan.request.protocol {
            BudgetProtocol::TokenExact => (traced_generation(self.rt, &req, &mut |_| {}), None),
            BudgetProtocol::Paper { answer_tokens } => {
                let chars = w.setting.value as usize;
                match paper_generation(self.rt, &req, &item.bare_question, chars, answer_tokens) {
                    Ok((run, stage1)) => (Ok(run), Some(stage1)),
                    Err(e) => (Err(e), None),
                }
            }
        };
        let run = run.with_context(|| format!("sample {} at {}", w.sample.id, w.setting.key))?;
        let mut rec = self.record(w, &item, &run, t0.elapsed().as_secs_f64());
        if let Some(stage1) = stage1 {
            paper_thinking_into(&mut rec, &stage1, self.rt)?;
        }
        Ok(rec)
    }

    fn one_by_one(&self, group: &[WorkItem<'_>]) -> Vec<Result<ResultRecord>> {
        group.iter().map(|w| self.answer_one(w)).collect()
    }

    /// A group of two or more as one batch when the probe can batch it; otherwise, or when the
    /// batch fails, one at a time so that each item gets its own error.
    fn answer_group(&self, group: &[WorkItem<'_>]) -> Vec<Result<ResultRecord>> {
        // the paper's two stages run one question at a time
        if group.len() < 2 || self.plan.request.protocol.is_paper() {
            return self.one_by_one(group);
        }
        let t0 = Instant::now();
        let Ok(items) = group
            .iter()
            .map(|w| self.prepare(w.sample, w.setting, w.sample_index))
            .collect::<Result<Vec<_>>>()
        else {
            return self.one_by_one(group);
        };
        let reqs: Vec<TraceRequest<'_>> = items
            .iter()
            .zip(group)
            .map(|(item, w)| self.request(item, w.sample, w.setting))
            .collect();
        if !batchable(&reqs) {
            return self.one_by_one(group);
        }
        match traced_generation_batch(self.rt, &reqs) {
            // the batch's wall time is shared out evenly over its answers
            Ok(runs) => {
                let each = t0.elapsed().as_secs_f64() / runs.len() as f64;
                group
                    .iter()
                    .zip(&items)
                    .zip(&runs)
                    .map(|((w, item), run)| Ok(self.record(w, item, run, each)))
                    .collect()
            }
            Err(_) => self.one_by_one(group),
        }
    }
}

/// Under the paper's protocol the thinking a record reports is stage 1's, as cut to the budget
/// (stage 2 answers after it).
fn paper_thinking_into(rec: &mut ResultRecord, stage1: &PaperStage1, rt: &Runtime) -> Result<()> {
    rec.thinking_text = stage1.thinking.clone();
    rec.think_tokens = rt.tokenizer.encode(&stage1.thinking)?.len() as u64;
    Ok(())
}
