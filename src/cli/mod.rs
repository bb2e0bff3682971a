//! The command line: argument parsing, progress and errors only; the work is in the library.
pub mod bench_cmds;
pub mod common;
pub mod direction;
pub mod doctor;
pub mod dump;
pub mod eval;
pub mod evidence;
pub mod exit;
pub mod figures;
pub mod flags;
pub mod generate;
pub mod layers;
pub mod progress;
pub mod report;
pub mod sweep;
pub mod trace;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "rhlens",
    version,
    about = "See where a multimodal reasoning model looks as it thinks: per-layer attention on the \
             image, the instruction and its own reasoning; length control; RH-Bench and RH-AUC."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate an answer for one image and prompt
    Generate(generate::GenerateArgs),
    /// Generate with the attention probe on and save a trace (per-layer role attention per step,
    /// visual maps)
    Trace(trace::TraceArgs),
    /// Save the prefill's tensors (ids, pixels, positions, logits, attention) to a safetensors file
    Dump(dump::DumpArgs),
    /// Prompt-only attention allocation per layer over a question set (the paper's layer analysis)
    Layers(layers::LayersArgs),
    /// One traced generation per reasoning budget, "Wait" count or steering weight on one image
    Sweep(sweep::SweepCmd),
    /// Compute a latent steering direction (long minus short thinking) from recorded generations
    Direction(direction::DirectionArgs),
    /// Answer a benchmark (RH-Bench layout) at every setting; resumable and shardable
    Eval(eval::EvalArgs),
    /// Evidence beyond the visual share for saved traces or a sweep: spatial spread, attention
    /// sinks, heads, evidence boxes, and image dependence per token (an ablated teacher-forced pass)
    Evidence(evidence::EvidenceArgs),
    /// Draw figures from traces, a sweep, or results files (no model needed)
    Figures(figures::FiguresArgs),
    /// Write one self-contained HTML page to explore traces token by token (no model needed)
    Report(report::ReportArgs),
    /// Score a run's answers (rule-based, or an OpenAI-compatible judge) and write metrics
    Score(bench_cmds::ScoreArgs),
    /// RH-AUC from accuracy points (CSV/JSON) or a scored run, with a bootstrap interval
    Rhauc(bench_cmds::RhaucArgs),
    /// Join the result shards of a split run and report anything missing or duplicated
    Merge(bench_cmds::MergeArgs),
    /// Print the libtorch version and the devices rhlens can use; with --model, the checkpoint's
    /// family, image geometry, sizes and template habits
    Doctor(doctor::DoctorArgs),
}

impl Cli {
    /// Parse the process's arguments; also returns the subcommand's name, for messages.
    pub fn parse_args() -> Result<(Cli, String), clap::Error> {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(std::env::args_os())?;
        let name = matches.subcommand_name().unwrap_or("rhlens").to_string();
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        Ok((cli, name))
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Dump(a) => dump::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Layers(a) => layers::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Direction(a) => direction::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Figures(a) => figures::run(a),
        Command::Report(a) => report::run(a),
        Command::Evidence(a) => evidence::run(a),
        Command::Score(a) => bench_cmds::run_score(a),
        Command::Rhauc(a) => bench_cmds::run_rhauc(a),
        Command::Merge(a) => bench_cmds::run_merge(a),
        Command::Doctor(a) => doctor::run(a),
    }
}
