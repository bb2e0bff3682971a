//! `rhlens sweep`: diagnose overthinking on one image across budgets, waits or steering weights.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::common::{
    generate_config, BudgetProtocolArgs, InputArgs, LengthArgs, ModelArgs, NameArg, SamplingArgs,
    SweepArgs,
};
use super::progress::bar;
use super::trace::ProbeArgs;
use crate::render::{render_sweep, RenderOptions};
use crate::sweep::{run_sweep, SweepRequest};

#[derive(Args, Debug)]
pub struct SweepCmd {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub name: NameArg,
    #[command(flatten)]
    pub input: InputArgs,
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
    /// Generations per setting (distinct seeds; needs sampling flags for spread)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub samples: usize,
    /// Sweep directory: summary.json, summary.csv, traces/<setting>/; an existing one is resumed
    /// (finished settings are kept, when made with the same options)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Do not draw figures
    #[arg(long)]
    pub no_figures: bool,
    /// No progress bar, table or figure list (the one-line summary and warnings still print on
    /// stderr)
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: SweepCmd) -> Result<()> {
    let (_, settings) = args.sweep.plan()?;
    let mut cfg = generate_config(&args.sampling, &args.length);
    args.protocol
        .sampling(&args.sampling, &args.model, &mut cfg)?;
    cfg.validate()?;
    let protocol = args.protocol.protocol()?;
    protocol.check_plan(&args.sweep.sweep_plan()?, &cfg, args.samples)?;
    let probe = args.probe.config()?;
    if args.samples == 0 {
        anyhow::bail!("--samples must be at least 1");
    }
    let sweeps_thinking = args.sweep.varies_thinking();
    args.length.check_thinking(sweeps_thinking)?;
    let rt = args.model.load_named(&args.name)?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    let question = args.input.question();
    let texts = [args.input.system.as_deref(), Some(question.as_str())];
    args.length
        .settle_thinking(&rt, &mut cfg, &texts, sweeps_thinking)?;
    let sweep = protocol.relabel(args.sweep.resolve(&rt)?);
    let image = args.input.image_path();
    let req = SweepRequest {
        image: &image,
        prompt: &args.input.prompt,
        prompt_style: args.input.style.prompt_style,
        protocol,
        system: args.input.system.as_deref(),
        base: cfg,
        probe,
        samples: args.samples,
        out: &args.out,
    };
    let pb = bar(settings.len() * args.samples, args.quiet);
    let t0 = std::time::Instant::now();
    let summary = run_sweep(&rt, &sweep, &req, &mut |done, _total, label| {
        pb.set_position(done as u64);
        pb.set_message(label.to_string());
    })?;
    pb.finish_and_clear();
    if !args.quiet {
        println!(
            "{:<16} {:>6} {:>8} {:>8} {:>8} {:>8}  answer",
            "setting", "sample", "think", "vis%", "instr%", "reas%"
        );
        for r in &summary.rows {
            let mut answer: String = r.answer.chars().take(40).collect();
            answer = answer.replace('\n', " ");
            println!(
                "{:<16} {:>6} {:>8} {:>7.1}% {:>7.1}% {:>7.1}%  {}",
                r.setting,
                r.sample.map(|s| s.to_string()).unwrap_or_default(),
                r.think_tokens.map(|t| t.to_string()).unwrap_or_default(),
                100.0 * r.visual_share,
                100.0 * r.instruction_share,
                100.0 * r.reasoning_share,
                answer
            );
        }
    }
    eprintln!(
        "sweep: {} settings x {} samples in {:.1}s -> {}",
        settings.len(),
        args.samples,
        t0.elapsed().as_secs_f64(),
        args.out.join("summary.csv").display()
    );
    if !args.no_figures {
        let figures = args.out.join("figures");
        let drawn = render_sweep(&args.out, &figures, &RenderOptions::default(), false)?;
        super::figures::report(&drawn, &figures, args.quiet);
    }
    Ok(())
}
