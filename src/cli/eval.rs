//! `rhlens eval`: answer every benchmark sample at every setting, resumable and shardable, with
//! the probe's per-role summary kept for each answer.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::common::{generate_config, LengthArgs, ModelArgs, SamplingArgs, SweepArgs};
use super::trace::ProbeArgs;
use crate::bench::runner::run_resumable_batched;
use crate::bench::{
    load_bench, run_resumable, Manifest, ResultRecord, ResultsWriter, RunOptions, Sample, Setting,
    Shard, Split,
};
use crate::probe::run::{batchable, traced_generation_batch};
use crate::probe::{traced_generation, TraceRequest, TracedRun};
use crate::sweep::role_shares;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Benchmark: an RH-Bench directory (reason_data.json + reason_images/, halu_data.json +
    /// per_images/) or a JSON/JSONL file with a `split` field
    #[arg(long)]
    pub bench: PathBuf,
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub length: LengthArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Run directory: manifest.json, results.jsonl (appended and synced per answer)
    #[arg(long)]
    pub out: PathBuf,
    /// Run only shard I of N (0-based), e.g. 0/4; also read from SLURM_ARRAY_TASK_ID/COUNT
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Answers per sample and setting (distinct seeds)
    #[arg(long, default_value_t = 1)]
    pub samples: u32,
    /// Only the first N samples of each split
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only this split (perception or reasoning)
    #[arg(long, value_parser = parse_split)]
    pub split: Option<Split>,
    /// Also save a full trace per answer under RUN_DIR/traces/
    #[arg(long)]
    pub traces: bool,
    /// Record failures and go on instead of stopping (a rerun retries them)
    #[arg(long)]
    pub keep_going: bool,
    /// System prompt (default: the chat template's own)
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long)]
    pub quiet: bool,
    /// Decode up to N samples of the same setting together (left-padded batch). Greedy answers
    /// equal those of batch size 1; seeded sampling draws differently; settings with a minimum
    /// thinking length or waits always run one at a time
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
}

fn parse_split(s: &str) -> Result<Split, String> {
    Split::parse(s).ok_or_else(|| format!("unknown split `{s}` (perception or reasoning)"))
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

pub fn run(args: EvalArgs) -> Result<()> {
    let (_, plan) = args.sweep.plan()?;
    let base = generate_config(&args.sampling, &args.length);
    base.validate()?;
    let probe = args.probe.config()?;
    let shard = Shard::resolve(args.shard)?;
    let bench = load_bench(&args.bench)?;
    for p in &bench.problems {
        eprintln!("skipped: {p}");
    }
    let samples = bench.select(args.split, args.limit);
    if samples.is_empty() {
        bail!("{} has no usable samples", args.bench.display());
    }
    let rt = args.model.load()?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    let sweep = args.sweep.resolve(&rt)?;
    let settings: Vec<Setting> = plan.iter().map(|s| Setting::new(&s.key, s.value)).collect();
    let model_name = args.model.label();
    let manifest = Manifest::new(
        &args.bench,
        &model_name,
        &settings,
        args.samples,
        &samples,
        shard,
        serde_json::json!({
            "sweep": sweep.kind.as_str(),
            "generate": base,
            "system": args.system,
        }),
    );
    manifest.write_or_check(&args.out)?;
    let mut writer = ResultsWriter::open(&args.out)?;
    let opts = RunOptions {
        shard,
        samples_per_setting: args.samples,
        progress: !args.quiet,
        keep_going: args.keep_going,
    };
    // what one item needs before generating: its config, steering, question and trace dir
    struct Item {
        cfg: crate::generate::GenerateConfig,
        steering: Option<tch::Tensor>,
        seed: u64,
        question: String,
        trace_dir: Option<PathBuf>,
    }
    let prepare = |sample: &Sample, setting: &Setting, k: u32| -> Result<Item> {
        let point = plan
            .iter()
            .find(|p| p.key == setting.key)
            .context("setting not in the plan")?;
        let mut cfg = base.clone();
        if let Some(s) = cfg.sampling.seed {
            cfg.sampling.seed = Some(s + k as u64);
        } else if args.samples > 1 && !cfg.sampling.greedy {
            cfg.sampling.seed = Some(k as u64);
        }
        let (cfg, steering) = sweep.apply(point, &cfg);
        let seed = cfg.sampling.seed.unwrap_or(0);
        let trace_dir = args.traces.then(|| {
            args.out.join("traces").join(format!(
                "{}-{}-{}-s{k}",
                sample.split.as_str(),
                safe_name(&sample.id),
                safe_name(&setting.key)
            ))
        });
        Ok(Item {
            cfg,
            steering,
            seed,
            question: question_text(sample),
            trace_dir,
        })
    };
    fn request<'a>(
        item: &'a Item,
        sample: &'a Sample,
        setting: &Setting,
        system: Option<&'a str>,
        probe: &crate::probe::ProbeConfig,
    ) -> TraceRequest<'a> {
        TraceRequest {
            image: &sample.image,
            prompt: &item.question,
            system,
            generate: item.cfg.clone(),
            probe: probe.clone(),
            vision: false,
            steering: item.steering.as_ref(),
            out: item.trace_dir.as_deref(),
            force: true,
            settings: serde_json::json!({ "sample": sample.id, "setting": setting.key }),
        }
    }
    let record = |sample: &Sample,
                  setting: &Setting,
                  k: u32,
                  item: &Item,
                  run: &TracedRun,
                  elapsed_s: f64| {
        let (groups, overall) = role_shares(&run.meta, &run.arrays);
        let g = &run.generation;
        let mut rec = ResultRecord::for_item(sample, setting, k, &model_name);
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
        rec.elapsed_s = elapsed_s;
        rec
    };
    let answer_one = |sample: &Sample, setting: &Setting, k: u32| -> Result<ResultRecord> {
        let t0 = std::time::Instant::now();
        let item = prepare(sample, setting, k)?;
        let req = request(&item, sample, setting, args.system.as_deref(), &probe);
        let run = traced_generation(&rt, &req, &mut |_| {})
            .with_context(|| format!("sample {} at {}", sample.id, setting.key))?;
        Ok(record(
            sample,
            setting,
            k,
            &item,
            &run,
            t0.elapsed().as_secs_f64(),
        ))
    };
    let summary = if args.batch_size <= 1 {
        run_resumable(&mut writer, &samples, &settings, &opts, answer_one)?
    } else {
        run_resumable_batched(
            &mut writer,
            &samples,
            &settings,
            &opts,
            args.batch_size as usize,
            |group| {
                let one_by_one = |group: &[crate::bench::runner::WorkItem<'_>]| {
                    group
                        .iter()
                        .map(|w| answer_one(w.sample, w.setting, w.sample_index))
                        .collect::<Vec<_>>()
                };
                if group.len() < 2 {
                    return one_by_one(group);
                }
                let t0 = std::time::Instant::now();
                let items = match group
                    .iter()
                    .map(|w| prepare(w.sample, w.setting, w.sample_index))
                    .collect::<Result<Vec<_>>>()
                {
                    Ok(items) => items,
                    Err(_) => return one_by_one(group),
                };
                let reqs: Vec<TraceRequest<'_>> = items
                    .iter()
                    .zip(group)
                    .map(|(item, w)| {
                        request(item, w.sample, w.setting, args.system.as_deref(), &probe)
                    })
                    .collect();
                if !batchable(&reqs) {
                    return one_by_one(group);
                }
                match traced_generation_batch(&rt, &reqs) {
                    // the batch's wall time is shared out evenly over its answers
                    Ok(runs) => {
                        let each = t0.elapsed().as_secs_f64() / runs.len() as f64;
                        group
                            .iter()
                            .zip(&items)
                            .zip(&runs)
                            .map(|((w, item), run)| {
                                Ok(record(w.sample, w.setting, w.sample_index, item, run, each))
                            })
                            .collect()
                    }
                    // a failing batch is retried one at a time so each item gets its own error
                    Err(_) => one_by_one(group),
                }
            },
        )?
    };
    eprintln!(
        "eval: {} items in this run ({} done before, {} answered now, {} failed) -> {}",
        summary.items,
        summary.already_done,
        summary.completed,
        summary.failed.len(),
        args.out.join("results.jsonl").display()
    );
    for (key, err) in &summary.failed {
        eprintln!("failed: {key:?}: {err}");
    }
    Ok(())
}
