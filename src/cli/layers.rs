//! `rhlens layers`: the prompt-only attention allocation (the paper's layer analysis): per layer,
//! one prompt row's head-mean attention on system / visual / instruction tokens, per question and
//! averaged over a question set, renormalised per layer.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::common::{ModelArgs, PromptStyleArg};
use super::progress::bar;
use crate::bench::data::load_questions;
use crate::probe::layers::{analyse, LayerQuestion, QueryRow};

/// `--query`: which prompt row the analysis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryArg {
    /// the paper's: template without the assistant header, the user turn's last token
    UserEnd,
    /// template with the assistant header, its last token (the row that answers)
    AssistantStart,
}

impl QueryArg {
    fn row(self) -> QueryRow {
        match self {
            QueryArg::UserEnd => QueryRow::UserEnd,
            QueryArg::AssistantStart => QueryRow::AssistantStart,
        }
    }
}

#[derive(Args, Debug)]
pub struct LayersArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Questions: JSON array or JSONL of {"id", "image", "question"} or the paper's
    /// {"question_id", "image", "text"} (RH-Bench's "image_src" too; ids optional)
    #[arg(long)]
    pub questions: PathBuf,
    /// Directory the image paths are relative to (default: the questions file's directory)
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output directory: allocation.csv (mean and std per layer), allocation_samples.csv (per
    /// question), allocation.json, allocation.safetensors; an existing directory is refused unless
    /// --force
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace the files of an existing output directory
    #[arg(long)]
    pub force: bool,
    /// Use at most N questions (the paper's analysis uses 50) [default: all]
    #[arg(long)]
    pub limit: Option<usize>,
    /// System prompt (default: the chat template's own)
    #[arg(long)]
    pub system: Option<String>,
    /// The prompt row read: user-end (the paper's) or assistant-start (the row that produces
    /// the first answer token; shares differ, by up to 0.18 on a random checkpoint)
    #[arg(long, value_enum, default_value_t = QueryArg::UserEnd)]
    pub query: QueryArg,
    #[command(flatten)]
    pub style: PromptStyleArg,
    /// No progress bar or table (the one-line summary still prints on stderr)
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: LayersArgs) -> Result<()> {
    let (mut questions, problems) = load_questions(&args.questions, args.images.as_deref())?;
    let mut skipped: Vec<(String, String)> = problems
        .into_iter()
        .map(|p| (p.id.unwrap_or_else(|| p.index.to_string()), p.reason))
        .collect();
    questions.truncate(args.limit.unwrap_or(usize::MAX));
    for (which, why) in &skipped {
        eprintln!("skipped record {which}: {why}");
    }
    if questions.is_empty() {
        bail!(
            "every record of {} was skipped: no usable question records",
            args.questions.display()
        );
    }
    if args.out.exists() && !args.out.is_dir() {
        bail!("{} exists and is not a directory", args.out.display());
    }
    super::flags::refuse_existing(&args.out, args.force)?;
    let style = args.style.prompt_style;
    let asked: Vec<String> = questions.iter().map(|q| style.apply(&q.question)).collect();
    let items: Vec<LayerQuestion<'_>> = questions
        .iter()
        .zip(&asked)
        .map(|(q, asked)| LayerQuestion {
            id: &q.id,
            image: &q.image,
            question: asked,
        })
        .collect();
    let rt = args.model.load()?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    let pb = bar(items.len(), args.quiet);
    let analysis = analyse(
        &rt,
        &items,
        args.system.as_deref(),
        args.query.row(),
        &mut || pb.inc(1),
    );
    pb.finish_and_clear();
    let analysis =
        analysis.with_context(|| format!("every record of {}", args.questions.display()))?;
    for (which, why) in &analysis.failed {
        eprintln!("skipped record {which}: {why}");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let header = serde_json::json!({
        "model": rt.name,
        "random_weights": rt.config.random_weights,
        "prompt_style": style.name(),
    });
    analysis.write(&args.out, header, &skipped)?;
    skipped.extend(analysis.failed.iter().cloned());
    if !args.quiet {
        print_table(&analysis.mean, &analysis.std);
    }
    eprintln!(
        "layers: {} samples ({} skipped), query {} -> {}",
        analysis.samples(),
        skipped.len(),
        args.query.row().name(),
        args.out.join("allocation.csv").display()
    );
    Ok(())
}

fn print_table(mean: &ndarray::Array2<f32>, std: &ndarray::Array2<f32>) {
    println!(
        "{:>5} {:>15} {:>15} {:>15}",
        "layer", "system", "visual", "instruction"
    );
    for l in 0..mean.nrows() {
        let cell = |k: usize| format!("{:.1}% ±{:.1}", 100.0 * mean[[l, k]], 100.0 * std[[l, k]]);
        println!("{l:>5} {:>15} {:>15} {:>15}", cell(0), cell(1), cell(2));
    }
}
