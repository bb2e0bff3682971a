//! `rhlens dump`: the prefill's tensors, for comparing against another implementation.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::{Kind, Tensor};

use super::common::{InputArgs, ModelArgs};
use crate::model::{AttnImpl, Collector, ForwardOptions, Site, SitePattern};
use crate::runtime::Runtime;

#[derive(Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Capture sites to dump, by name or pattern (`blocks.*.attn.pattern`,
    /// `blocks.3-5.resid_post_attn`, `vision.*`), saved under their site names; repeat the flag
    /// or separate patterns with commas [default: what Hugging Face returns (attentions.{layer},
    /// hidden_states.{i}, image_embeds)]
    #[arg(long, value_delimiter = ',', value_name = "SITES")]
    pub capture: Vec<SitePattern>,
    /// Output safetensors file: input_ids, pixel_values, image_grid_thw, position_ids,
    /// rope_deltas, logits, and the captured tensors; an existing file is refused unless --force
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: DumpArgs) -> Result<()> {
    super::flags::refuse_existing(&args.out, args.force)?;
    let mut rt = args.model.load()?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    check_patterns(&args.capture, &rt)?;
    rt.model.attn_impl = AttnImpl::Eager;
    let prompt = rt.prepare(
        &args.input.image_path(),
        &args.input.question(),
        args.input.system.as_deref(),
    )?;
    let _guard = tch::no_grad_guard();
    let images = [prompt.image.input()];
    let index = rt.model.rope_index(&prompt.input_ids, &images)?;
    let mut collector = if args.capture.is_empty() {
        Collector::hugging_face()
    } else {
        Collector::new(args.capture.clone())
    };
    let opts = ForwardOptions {
        observer: Some(&mut collector),
        ..Default::default()
    };
    let (hidden, _) = rt.model.prefill(&prompt.input_ids, &images, 0, opts)?;
    let logits = rt.model.logits(&hidden.squeeze_dim(0));
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
    ];
    let captured = if args.capture.is_empty() {
        let layers = rt.model.num_layers();
        named.extend(hugging_face_named(&collector, layers)?);
        format!("{layers} layers")
    } else {
        let before = named.len();
        named.extend(site_named(collector));
        format!("{} captured tensors", named.len() - before)
    };
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // a temporary file renamed into place: a killed or failed dump leaves no truncated file
    crate::fsutil::replace_with(&args.out, |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(std::io::Error::other)
    })
    .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} tokens, {} image tokens, {captured})",
        args.out.display(),
        prompt.input_ids.len(),
        prompt.spans.visual.1 - prompt.spans.visual.0,
    );
    Ok(())
}

/// Every pattern must select a site of this model (a layer past the last is a mistake).
fn check_patterns(patterns: &[SitePattern], rt: &Runtime) -> Result<()> {
    let (layers, blocks) = (rt.model.num_layers(), rt.model.vision.depth());
    let sites = Site::all(layers, blocks);
    for p in patterns {
        if !sites.iter().any(|s| p.matches(*s)) {
            bail!(
                "--capture `{p}` selects no site of this model: it has {layers} decoder layers \
                 (blocks.0 to blocks.{}) and {blocks} vision blocks",
                layers.saturating_sub(1)
            );
        }
    }
    Ok(())
}

/// float32 on the CPU, as the file stores every float tensor.
fn f32(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float).to_device(tch::Device::Cpu)
}

/// The default dump: Hugging Face's names for image features, attentions and hidden states.
fn hugging_face_named(collector: &Collector, layers: usize) -> Result<Vec<(String, Tensor)>> {
    let hf = collector.hugging_face_outputs(layers)?;
    let mut named = Vec::new();
    if let Some(e) = &hf.image_embeds {
        named.push(("image_embeds".into(), f32(e)));
    }
    for (l, p) in hf.probs.iter().enumerate() {
        named.push((format!("attentions.{l}"), f32(&p.squeeze_dim(0))));
    }
    for (i, h) in hf.hidden.iter().enumerate() {
        named.push((format!("hidden_states.{i}"), f32(h)));
    }
    Ok(named)
}

/// Captured sites under their names, without the batch axis of the decoder's sites.
fn site_named(collector: Collector) -> Vec<(String, Tensor)> {
    collector
        .into_values()
        .into_iter()
        .map(|(site, t)| {
            let t = if site.is_vision() {
                t
            } else {
                t.squeeze_dim(0)
            };
            (site.to_string(), f32(&t))
        })
        .collect()
}
