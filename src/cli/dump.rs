//! `rhlens dump`: the prefill's tensors, for comparing against another implementation.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tch::{Kind, Tensor};

use super::common::{InputArgs, ModelArgs};
use crate::model::{AttnImpl, ForwardOptions};

#[derive(Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Output safetensors file: input_ids, pixel_values, image_grid_thw, position_ids, logits,
    /// attentions.{layer} (and hidden_states.{i}, image_embeds)
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: DumpArgs) -> Result<()> {
    let mut rt = args.model.load()?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    rt.model.attn_impl = AttnImpl::Eager;
    let prompt = rt.prepare(
        &args.input.image_path(),
        &args.input.prompt,
        args.input.system.as_deref(),
    )?;
    let _guard = tch::no_grad_guard();
    let images = [prompt.image.input()];
    let index = rt.model.rope_index(&prompt.input_ids, &images)?;
    let image_embeds = rt.model.image_features(&images, None)?;
    let (hidden, extras, _) = rt.model.prefill(
        &prompt.input_ids,
        &images,
        0,
        ForwardOptions {
            keep_probs: true,
            keep_hidden: true,
            ..Default::default()
        },
        None,
    )?;
    let logits = rt.model.logits(&hidden.squeeze_dim(0));
    let f32 = |t: &Tensor| t.to_kind(Kind::Float).to_device(tch::Device::Cpu);
    let mut named: Vec<(String, Tensor)> = vec![
        ("input_ids".into(), Tensor::from_slice(&prompt.input_ids)),
        ("pixel_values".into(), f32(&prompt.image.pixel_values)),
        (
            "image_grid_thw".into(),
            Tensor::from_slice(&prompt.image.grid_thw()).view([1, 3]),
        ),
        (
            "position_ids".into(),
            index.to_tensor(tch::Device::Cpu).squeeze_dim(1),
        ),
        (
            "rope_deltas".into(),
            Tensor::from_slice(&[index.rope_delta]),
        ),
        ("logits".into(), f32(&logits)),
        ("image_embeds".into(), f32(&image_embeds)),
    ];
    for (l, p) in extras.probs.iter().enumerate() {
        named.push((format!("attentions.{l}"), f32(&p.squeeze_dim(0))));
    }
    for (i, h) in extras.hidden.iter().enumerate() {
        named.push((format!("hidden_states.{i}"), f32(h)));
    }
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Tensor::write_safetensors(&named, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} tokens, {} image tokens, {} layers)",
        args.out.display(),
        prompt.input_ids.len(),
        prompt.spans.visual.1 - prompt.spans.visual.0,
        extras.probs.len()
    );
    Ok(())
}
