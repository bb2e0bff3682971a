//! `rhlens eval`: answer every benchmark sample at every setting, resumable and shardable, with
//! the probe's per-role summary kept for each answer.
use std::path::PathBuf;

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::common::{
    generate_config, BudgetProtocolArgs, LengthArgs, ModelArgs, NameArg, PromptStyleArg,
    SamplingArgs, SweepArgs,
};
use super::trace::ProbeArgs;
use crate::bench::eval::{self, EvalPlan, EvalRequest, EvalSummary};
use crate::bench::results::RecordKey;
use crate::bench::runner::RunProgress;
use crate::bench::{Shard, Split};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub name: NameArg,
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
    #[command(flatten)]
    pub protocol: BudgetProtocolArgs,
    #[command(flatten)]
    pub style: PromptStyleArg,
    /// Run directory: manifest.json, results.jsonl (appended and synced per answer); an existing
    /// one is resumed (answers already there are kept, when made with the same options)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Run only shard I of N (0-based), e.g. 0/4; also read from SLURM_ARRAY_TASK_ID/COUNT
    /// [default: all the work]
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Answers per sample and setting (distinct seeds)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub samples: u32,
    /// Only the first N samples of each split [default: all]
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only this split (perception or reasoning) [default: both]
    #[arg(long, value_parser = parse_split)]
    pub split: Option<Split>,
    /// Also save a full trace per answer under RUN_DIR/traces/
    #[arg(long)]
    pub traces: bool,
    /// Record failures and go on instead of stopping (a rerun retries them)
    #[arg(long)]
    pub keep_going: bool,
    /// System prompt [default: the chat template's own]
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// No progress bar (the summary line, failures and warnings still print on stderr)
    #[arg(long)]
    pub quiet: bool,
    /// Decode up to N samples of the same setting together (left-padded batch). Greedy answers
    /// equal those of batch size 1; seeded sampling draws differently; settings with a minimum
    /// thinking length or waits always run one at a time
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
}

fn parse_split(s: &str) -> Result<Split, String> {
    Split::parse(s).ok_or_else(|| format!("unknown split `{s}` (perception or reasoning)"))
}

pub fn run(args: EvalArgs) -> Result<()> {
    // checks in the order a user meets them: flags, the benchmark, then the model
    let mut generate = generate_config(&args.sampling, &args.length);
    args.protocol
        .sampling(&args.sampling, &args.model, &mut generate)?;
    generate.validate()?;
    let protocol = args.protocol.protocol()?;
    let sweeps_thinking = args.sweep.varies_thinking();
    args.length.check_thinking(sweeps_thinking)?;
    protocol.check_plan(&args.sweep.sweep_plan()?, &generate, args.samples as usize)?;
    let request = EvalRequest {
        bench: args.bench.clone(),
        model_name: args.name.resolve(&args.model),
        generate,
        probe: args.probe.config()?,
        system: args.system.clone(),
        prompt_style: args.style.prompt_style,
        protocol,
        out: args.out.clone(),
        shard: Shard::resolve(args.shard)?,
        samples_per_setting: args.samples,
        limit: args.limit,
        split: args.split,
        traces: args.traces,
        keep_going: args.keep_going,
        batch_size: args.batch_size as usize,
    };
    let mut plan = EvalPlan::new(request, &mut |p| eprintln!("skipped: {p}"))?;
    let rt = args.model.load_named(&args.name)?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    let mut generate = plan.request().generate.clone();
    let texts = [args.system.as_deref()];
    args.length
        .settle_thinking(&rt, &mut generate, &texts, sweeps_thinking)?;
    if generate.no_think {
        plan.count_output_as_answer();
    }
    let sweep = protocol.relabel(args.sweep.resolve(&rt)?);
    let summary = eval::run(&rt, &plan, &sweep, &mut Bar::new(!args.quiet))?;
    print_summary(&summary);
    Ok(())
}

fn print_summary(summary: &EvalSummary) {
    let run = &summary.run;
    eprintln!(
        "eval: {} items in this run ({} done before, {} answered now, {} failed) -> {}",
        run.items,
        run.already_done,
        run.completed,
        run.failed.len(),
        summary.results.display()
    );
    for (key, err) in &run.failed {
        eprintln!("failed: {key:?}: {err}");
    }
}

/// The eval progress bar on stderr, with the item being answered and an ETA.
struct Bar {
    bar: ProgressBar,
    shown: bool,
}

impl Bar {
    fn new(shown: bool) -> Bar {
        let target = if shown {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ({per_sec}, ETA {eta}) {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar { bar, shown }
    }
}

impl RunProgress for Bar {
    fn start(&mut self, pending: usize) {
        self.bar.set_length(pending as u64);
        if self.shown {
            self.bar.enable_steady_tick(Duration::from_millis(500));
        }
    }

    fn group_started(&mut self, first: &RecordKey) {
        self.bar.set_message(first.to_string());
    }

    fn item_failed(&mut self, key: &RecordKey, error: &str) {
        self.bar.println(format!("failed on {key}: {error}"));
    }

    fn item_done(&mut self) {
        self.bar.inc(1);
    }

    fn finish(&mut self, completed: bool) {
        if completed {
            self.bar.finish_and_clear();
        } else {
            self.bar.abandon();
        }
    }
}
