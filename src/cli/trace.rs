//! `rhlens trace`: generate with the attention probe and save the trace directory.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;

use super::common::{
    generate_config, InputArgs, LengthArgs, ModelArgs, NameArg, SamplingArgs, WaitsArg,
};
use super::flags::AttnPrecision;
use crate::fsutil::lock::holder_of;
use crate::probe::run::{
    traced_generation_with, Checkpoints, Interrupted, DEFAULT_CHECKPOINT_EVERY,
};
use crate::probe::{ProbeConfig, TraceRequest};
use crate::render::LayerSelection;

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Keep per-head role mass (role_attention_heads) and per-head visual maps
    #[arg(long)]
    pub per_head: bool,
    /// Also save visual maps averaged per window of N generation steps [default: none]
    #[arg(long, value_name = "STEPS")]
    pub map_window: Option<usize>,
    /// Capture these decoder layers only, e.g. 0,4,8-12 [default: every layer]
    #[arg(long, value_name = "LIST")]
    pub layers: Option<LayerSelection>,
    /// Precision of the captured probabilities: `model` (as the model computes them, like Hugging
    /// Face's eager path) or `f32` (float32 even when the model runs in bf16/f16)
    #[arg(long, default_value = "model", hide_possible_values = true)]
    pub attn_precision: AttnPrecision,
    /// Also capture the vision tower's attention (per block, per patch)
    #[arg(long)]
    pub vision_attention: bool,
    /// Do not save every step's visual map (visual_attention_steps, float16: about 14 MB per
    /// 1,000 steps x 28 layers x 256 image tokens), which `rhlens report` shows token by token
    #[arg(long)]
    pub no_step_maps: bool,
}

impl ProbeArgs {
    pub fn config(&self) -> Result<ProbeConfig> {
        Ok(ProbeConfig {
            layers: self.layers.clone().map(|l| l.0).unwrap_or_default(),
            per_head: self.per_head,
            window: self.map_window,
            f32_probs: self.attn_precision.f32_probs(),
            visual_heads: self.per_head,
            step_maps: !self.no_step_maps,
        })
    }
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub name: NameArg,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub length: LengthArgs,
    #[command(flatten)]
    pub waits: WaitsArg,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Steering direction file (from `rhlens direction`), with --steer-weight [default: no
    /// steering]
    #[arg(long, value_name = "FILE", requires = "steer_weight")]
    pub steer: Option<PathBuf>,
    /// Weight of the steering direction (0 is exactly no steering); required with --steer, since
    /// a direction without a weight would silently change nothing [default: none]
    #[arg(long, requires = "steer", allow_hyphen_values = true)]
    pub steer_weight: Option<f64>,
    /// Trace directory to write (trace.json + attention.safetensors); an existing one is refused
    /// unless --force
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace an existing trace directory
    #[arg(long)]
    pub force: bool,
    /// Save the trace so far every N generated steps (complete: false until the end), so that a
    /// killed run leaves a partial trace; 0 saves only at the end. SIGINT or SIGTERM (a job's
    /// time limit) saves what was captured and exits with status 1
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHECKPOINT_EVERY)]
    pub checkpoint_every: usize,
    /// No streamed text (the one-line summary and warnings still print on stderr)
    #[arg(long)]
    pub quiet: bool,
    /// Also write DIR/report.html, the page `rhlens report` makes (explore the trace token by
    /// token in a browser)
    #[arg(long)]
    pub report: bool,
}

pub fn run(args: TraceArgs) -> Result<()> {
    let mut cfg = generate_config(&args.sampling, &args.length);
    cfg.length.waits = args.waits.waits;
    cfg.validate()?;
    let probe = args.probe.config()?;
    check_out(&args.out, args.force)?;
    if let Some(p) = &args.steer {
        crate::steer::check_file(p)?;
    }
    let rt = args.model.load_named(&args.name)?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    let texts = [
        args.input.system.as_deref(),
        Some(args.input.prompt.as_str()),
    ];
    args.length.settle_thinking(&rt, &mut cfg, &texts, false)?;
    let steering = match &args.steer {
        Some(p) => crate::steer::load_scaled(p, &rt, args.steer_weight.unwrap_or(0.0))?,
        None => None,
    };
    let image = args.input.image_path();
    let req = TraceRequest {
        image: &image,
        prompt: &args.input.question(),
        system: args.input.system.as_deref(),
        generate: cfg,
        probe,
        vision: args.probe.vision_attention,
        steering: steering.as_ref(),
        out: Some(&args.out),
        force: args.force,
        settings: serde_json::json!({
            "steer": args.steer.as_ref().map(|p| p.to_string_lossy().into_owned()),
            "steer_weight": args.steer_weight.unwrap_or(0.0),
            "prompt_style": args.input.style.prompt_style.name(),
        }),
    };
    let quiet = args.quiet;
    let mut out = std::io::stdout();
    let mut on_text = |s: &str| {
        if !quiet {
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }
    };
    let stop = stop_on_signals()?;
    let checkpoints = Checkpoints {
        every: args.checkpoint_every,
        stop: Some(&stop),
    };
    let run = traced_generation_with(&rt, &req, checkpoints, &mut on_text).map_err(|e| {
        let hint = e.downcast_ref::<Interrupted>().map(|i| {
            format!(
                "{i}; draw it with `rhlens figures --trace {} --allow-partial`",
                i.dir.display()
            )
        });
        match hint {
            Some(hint) => e.context(hint),
            None => e,
        }
    })?;
    if !quiet {
        println!();
    }
    let g = &run.generation;
    if let Some(w) = g.unmet_waits(&req.generate) {
        super::flags::warn(&w);
    }
    eprintln!(
        "trace: {} ({} steps x {} layers; {} thinking + {} answer tokens; stopped by {})",
        args.out.display(),
        run.meta.steps,
        run.meta.layers.len(),
        g.think_tokens,
        g.answer_tokens,
        g.stop_reason.as_str()
    );
    if args.report {
        write_report(&args.out)?;
    }
    Ok(())
}

/// `trace --report`: the page of the trace just written, inside its directory.
fn write_report(dir: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let trace = crate::report::read_trace(dir, false)?;
    super::report::write_and_say(
        &[crate::report::ReportTrace::new(trace)],
        crate::report::Layout::SideBySide,
        &dir.join(REPORT_FILE),
        started,
    )
}

/// The page `trace --report` writes inside the trace directory.
const REPORT_FILE: &str = "report.html";

/// An output directory in use by another process is refused naming it; an existing one is
/// refused without --force.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if let Some(pid) = holder_of(out) {
        bail!(
            "{} is being written by another rhlens process (pid {pid}); wait for it to finish, \
             stop it, or choose another --out",
            out.display()
        );
    }
    super::flags::refuse_existing(out, force)
}

/// A flag raised by SIGINT or SIGTERM (what Slurm sends at its time limit), so that the trace is
/// saved and the run ends; a second signal while the flag is up ends the process at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // registered first, so it sees the flag as the first signal left it
        flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))?;
        flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}
