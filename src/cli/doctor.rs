//! `rhlens doctor`: what libtorch this binary runs on and which devices it sees; with `--model`,
//! what a checkpoint is (family, image geometry, sizes, template habits) without loading its
//! weights — what to check before a long run.
use anyhow::Result;
use clap::Args;

use crate::checkpoint::{resolve_model, ChatTemplate, ModelConfig};
use crate::preprocess::ImageProcessorConfig;

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Checkpoint directory or hub id to describe (family, geometry, layers, template); no
    /// checkpoint is read when omitted
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(args: DoctorArgs) -> Result<()> {
    println!("rhlens {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch: {}", crate::libtorch_version());
    let cuda = tch::Cuda::is_available();
    println!("cuda available: {cuda}");
    if cuda {
        let n = tch::Cuda::device_count();
        println!("cuda devices: {n}");
        for i in 0..n {
            println!(
                "  cuda:{i}: {}",
                crate::cuda_device_name(i).unwrap_or_else(|| "?".into())
            );
        }
    }
    println!("cpu threads: {}", tch::get_num_threads());
    println!(
        "demo checkpoint: {}",
        crate::runtime::demo_model_dir().display()
    );
    match args.model {
        Some(spec) => describe_model(&spec),
        None => Ok(()),
    }
}

/// Print what a checkpoint is, from its config, preprocessor and chat template.
fn describe_model(spec: &str) -> Result<()> {
    let dir = resolve_model(spec)?;
    let config = ModelConfig::from_dir(&dir)?;
    let fam = config.family();
    let (t, v) = (&config.text, &config.vision);
    let pp = dir.join("preprocessor_config.json");
    let image = match pp.exists() {
        true => ImageProcessorConfig::from_file(&pp)?,
        false => crate::runtime::default_image_config(&config),
    };
    println!("model: {}", dir.display());
    println!("family: {} (model_type {})", fam.name, config.model_type);
    println!(
        "geometry: patch {} px, merge {}, {} px per image token (cells of {0}x{0} merged {}x{})",
        v.patch_size,
        v.spatial_merge_size,
        config.px_per_token(),
        v.spatial_merge_size,
        v.spatial_merge_size,
    );
    println!(
        "image processor: {}..{} pixels, mean {:?}, std {:?}",
        image.min_pixels, image.max_pixels, image.image_mean, image.image_std
    );
    println!(
        "decoder: {} layers, {} heads ({} key/value), head_dim {}, hidden {}, {:?} attention, \
         {} M-RoPE {:?}, rope_theta {}",
        t.num_hidden_layers,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.head_dim,
        t.hidden_size,
        fam.decoder,
        if t.mrope_interleaved {
            "interleaved"
        } else {
            "chunked"
        },
        t.mrope_section,
        t.rope_theta
    );
    if let Some(m) = &t.moe {
        let routed: Vec<usize> = (0..t.num_hidden_layers)
            .filter(|&l| m.is_sparse(l))
            .collect();
        println!(
            "experts: {} per routed layer, top {}, routed layers {routed:?} (router site \
             blocks.{{l}}.mlp.router)",
            m.num_experts, m.num_experts_per_tok
        );
    }
    println!(
        "vision: {} blocks, {} heads, hidden {}, {:?} tower, deepstack blocks {:?}",
        v.depth, v.num_heads, v.hidden_size, fam.vision, v.deepstack_visual_indexes
    );
    if config.random_weights {
        println!("weights: random (rhlens test/demo checkpoint)");
    }
    let template = ChatTemplate::from_dir(&dir)?;
    let gen = template.generation_prompt("Describe the image.")?;
    let opens = template.opens_think("Describe the image.", "<think>", "</think>")?;
    println!("template: {}", template.origin());
    println!("  generation prompt: {gen:?}");
    println!(
        "  opens <think> itself: {}",
        if opens {
            "yes (no --open-think needed)"
        } else {
            "no"
        }
    );
    let src = template.source();
    let named: Vec<&str> = ["<think>", "</think>", "<answer>", "</answer>", "/no_think"]
        .into_iter()
        .filter(|tag| src.contains(tag))
        .collect();
    println!(
        "  tags named: {}",
        if named.is_empty() {
            "none".to_string()
        } else {
            named.join(" ")
        }
    );
    Ok(())
}
