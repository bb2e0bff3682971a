//! `rhlens layers`: the prompt-only attention allocation (the reference layer analysis): per layer,
//! the last prompt token's head-mean attention on system / visual / instruction tokens, averaged
//! over a question set and renormalised per layer.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use ndarray::{Array2, Array3, Axis};
use serde::Deserialize;

use super::common::ModelArgs;
use super::progress::bar;
use crate::formats::shares::normalise_rows;
use crate::formats::ROLE_NAMES;
use crate::fsutil::write_atomic;
use crate::probe::prompt_allocation;

#[derive(Args, Debug)]
pub struct LayersArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Questions: a JSON array or JSONL of {"image": ..., "question": ...} (or "prompt"; "id" optional)
    #[arg(long)]
    pub questions: PathBuf,
    /// Directory the image paths are relative to (default: the questions file's directory)
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output directory: allocation.csv, allocation.json, allocation.safetensors
    #[arg(long)]
    pub out: PathBuf,
    /// Use at most N questions (the reference analysis uses 50) [default: all]
    #[arg(long)]
    pub limit: Option<usize>,
    /// System prompt (default: the chat template's own)
    #[arg(long)]
    pub system: Option<String>,
    /// No progress bar or table (the one-line summary still prints on stderr)
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default, alias = "prompt")]
    question: Option<String>,
}

/// Parse a JSON array or JSONL; bad records come back as (index, reason).
fn read_questions(path: &Path) -> Result<(Vec<(String, String, String)>, Vec<(String, String)>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<serde_json::Value> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array", path.display()))?
    } else {
        let mut v = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            v.push(serde_json::from_str(line).unwrap_or_else(
                |e| serde_json::json!({"__error": format!("line {}: {e}", i + 1)}),
            ));
        }
        v
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        if let Some(e) = v.get("__error").and_then(|e| e.as_str()) {
            bad.push((format!("record {i}"), format!("not JSON ({e})")));
            continue;
        }
        let r: Record = match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => {
                bad.push((format!("record {i}"), format!("not a question record: {e}")));
                continue;
            }
        };
        let id =
            r.id.map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_else(|| i.to_string());
        match (r.image, r.question) {
            (Some(img), Some(q)) if !q.trim().is_empty() => good.push((id, img, q)),
            (None, _) => bad.push((format!("record {i}"), "no `image`".into())),
            _ => bad.push((format!("record {i}"), "no `question`".into())),
        }
    }
    Ok((good, bad))
}

pub fn run(args: LayersArgs) -> Result<()> {
    let (records, mut bad) = read_questions(&args.questions)?;
    let base = args.images.clone().unwrap_or_else(|| {
        args.questions
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    let records: Vec<_> = records
        .into_iter()
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();
    if records.is_empty() {
        bail!(
            "{} has no usable question records",
            args.questions.display()
        );
    }
    if args.out.exists() && !args.out.is_dir() {
        bail!("{} exists and is not a directory", args.out.display());
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let rt = args.model.load()?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    let pb = bar(records.len(), args.quiet);
    let mut rows: Vec<Array2<f32>> = Vec::new();
    let mut used = Vec::new();
    for (id, img, q) in records.iter() {
        let path = base.join(img);
        match prompt_allocation(&rt, &path, q, args.system.as_deref()) {
            Ok(a) => {
                rows.push(a.slice(ndarray::s![.., 0..3]).to_owned());
                used.push(id.clone());
            }
            Err(e) => bad.push((format!("record {id}"), format!("{e:#}"))),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    for (which, why) in &bad {
        eprintln!("skipped {which}: {why}");
    }
    if rows.is_empty() {
        bail!(
            "every record of {} failed; nothing to average",
            args.questions.display()
        );
    }
    let n = rows.len();
    let layers = rows[0].nrows();
    let views: Vec<_> = rows.iter().map(|a| a.view()).collect();
    let per_sample: Array3<f32> = ndarray::stack(Axis(0), &views)?;
    let mut mean = per_sample.mean_axis(Axis(0)).context("empty")?;
    normalise_rows(&mut mean);
    // table
    let mut csv = String::from("layer,system,visual,instruction\n");
    for l in 0..layers {
        csv.push_str(&format!(
            "{l},{:.6},{:.6},{:.6}\n",
            mean[[l, 0]],
            mean[[l, 1]],
            mean[[l, 2]]
        ));
    }
    write_atomic(&args.out.join("allocation.csv"), csv.as_bytes())?;
    let json = serde_json::json!({
        "model": rt.name,
        "random_weights": rt.config.random_weights,
        "roles": &ROLE_NAMES[..3],
        "samples": n,
        "sample_ids": used,
        "skipped": bad.iter().map(|(i, w)| serde_json::json!({"record": i, "reason": w})).collect::<Vec<_>>(),
        "allocation": mean.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
    });
    write_atomic(
        &args.out.join("allocation.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let t_mean =
        tch::Tensor::from_slice(mean.as_slice().context("layout")?).view([layers as i64, 3]);
    let t_all = tch::Tensor::from_slice(per_sample.as_slice().context("layout")?).view([
        n as i64,
        layers as i64,
        3,
    ]);
    tch::Tensor::write_safetensors(
        &[("prompt_role_attention", &t_mean), ("per_sample", &t_all)],
        args.out.join("allocation.safetensors"),
    )?;
    if !args.quiet {
        println!(
            "{:>5} {:>8} {:>8} {:>12}",
            "layer", "system", "visual", "instruction"
        );
        for l in 0..layers {
            println!(
                "{l:>5} {:>7.1}% {:>7.1}% {:>11.1}%",
                100.0 * mean[[l, 0]],
                100.0 * mean[[l, 1]],
                100.0 * mean[[l, 2]]
            );
        }
    }
    eprintln!(
        "layers: {n} samples ({} skipped) -> {}",
        bad.len(),
        args.out.join("allocation.csv").display()
    );
    Ok(())
}
