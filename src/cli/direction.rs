//! `rhlens direction`: the long-minus-short thinking direction for latent steering.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::common::ModelArgs;
use super::progress::bar;
use crate::steer::{compute_direction, read_records, save};

#[derive(Args, Debug)]
pub struct DirectionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL of generations rhlens wrote (image, prompt, generated_ids or thinking, think_tokens)
    #[arg(long)]
    pub generations: PathBuf,
    /// Examples with more thinking tokens than this are "long"
    #[arg(long, default_value_t = 350)]
    pub long_min: usize,
    /// Examples with fewer thinking tokens than this are "short"
    #[arg(long, default_value_t = 150)]
    pub short_max: usize,
    /// Output safetensors file: direction [layers, hidden], counts [n_long, n_short]
    #[arg(long)]
    pub out: PathBuf,
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
    let records = read_records(&args.generations)?;
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
