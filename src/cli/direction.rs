//! `rhlens direction`: the long-minus-short thinking direction for latent steering.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::common::ModelArgs;
use super::progress::bar;
use crate::bench::results::RESULTS_FILE;
use crate::steer::{compute_direction, read_generations, read_records, save, GenerationRecord};

#[derive(Args, Debug)]
pub struct DirectionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Generations rhlens wrote, one or more of: a JSONL file (lines of `generate --json`, an
    /// evaluation's results.jsonl), an evaluation run directory, a trace directory, or a directory
    /// of traces (a sweep, an evaluation's traces/)
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    pub generations: Vec<PathBuf>,
    /// Examples with more thinking tokens than this are "long"
    #[arg(long, value_name = "TOKENS", default_value_t = 350)]
    pub long_min: usize,
    /// Examples with fewer thinking tokens than this are "short"
    #[arg(long, value_name = "TOKENS", default_value_t = 150)]
    pub short_max: usize,
    /// Output safetensors file: direction [layers, hidden], counts [n_long, n_short]; an existing
    /// file is refused unless --force
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
    /// No progress bar (the one-line summary still prints on stderr)
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: DirectionArgs) -> Result<()> {
    if args.short_max > args.long_min {
        anyhow::bail!(
            "--short-max {} must not exceed --long-min {}",
            args.short_max,
            args.long_min
        );
    }
    super::flags::refuse_existing(&args.out, args.force)?;
    let mut records = Vec::new();
    for path in &args.generations {
        records.extend(read_path(path)?);
    }
    let rt = args.model.load()?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    let pb = bar(0, args.quiet);
    let d = compute_direction(
        &rt,
        &records,
        args.long_min,
        args.short_max,
        &mut |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    save(&d, &args.out)?;
    let norms = d.direction.norm_scalaropt_dim(2, [1i64].as_slice(), false);
    let norms: Vec<f32> = Vec::<f32>::try_from(norms)?;
    eprintln!(
        "direction: {} long and {} short examples; per-layer norm {:.3}..{:.3} -> {}",
        d.n_long,
        d.n_short,
        norms.iter().cloned().fold(f32::INFINITY, f32::min),
        norms.iter().cloned().fold(0f32, f32::max),
        args.out.display()
    );
    Ok(())
}

/// The generations at `path`; an evaluation run directory stands for its results file.
fn read_path(path: &std::path::Path) -> Result<Vec<GenerationRecord>> {
    let results = path.join(RESULTS_FILE);
    if path.is_dir() && results.is_file() {
        return read_records(&results);
    }
    read_generations(path)
}
