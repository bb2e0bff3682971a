//! A loaded checkpoint ready to run: config, tokenizer, chat template, image preprocessor settings
//! and the model on its device, plus prompt preparation (template rendering, image-pad expansion,
//! role spans of the prompt).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{
    resolve_model, ChatTemplate, CheckpointError, ModelConfig, PatchGeometry, TextTokenizer,
    Weights,
};
use crate::error::invalid;
use crate::model::{ImageInput, Qwen2_5Vl};
use crate::preprocess::{self, ImageProcessorConfig, PreprocessedImage};

/// The demo checkpoint bundled with rhlens (a tiny model trained on synthetic scenes).
pub fn demo_model_dir() -> PathBuf {
    // next to the binary's source tree: assets/demo-model
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("demo-model")
}

/// The demo image bundled with rhlens.
pub fn demo_image() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("demo.png")
}

/// The preprocessor settings (read from `path`, or the defaults when it is absent) checked
/// against the vision tower before anything is allocated.
fn check_image_config(
    config: &ModelConfig,
    image: &ImageProcessorConfig,
    path: &Path,
) -> Result<()> {
    let geometry = PatchGeometry {
        patch_size: image.patch_size,
        temporal_patch_size: image.temporal_patch_size,
        merge_size: image.merge_size,
        min_pixels: image.min_pixels,
        max_pixels: image.max_pixels,
        resizes: image.do_resize,
    };
    config.vision.check_preprocessor(&geometry).map_err(|msg| {
        let msg = match path.exists() {
            true => msg,
            false => format!("absent, so the default image settings apply, but {msg}"),
        };
        CheckpointError::Config {
            path: path.to_path_buf(),
            msg,
        }
        .into()
    })
}

/// The image settings of a checkpoint without `preprocessor_config.json`: transformers' class
/// defaults, with the family's patch geometry (from config.json) and normalisation (mean = std =
/// 0.5 for Qwen3-VL).
pub fn default_image_config(config: &ModelConfig) -> ImageProcessorConfig {
    let v = &config.vision;
    let mut image = ImageProcessorConfig {
        patch_size: v.patch_size,
        temporal_patch_size: v.temporal_patch_size,
        merge_size: v.spatial_merge_size,
        ..ImageProcessorConfig::default()
    };
    if config.family().half_mean_std {
        image.image_mean = [0.5; 3];
        image.image_std = [0.5; 3];
    }
    image
}

/// The default name of a model: the checkpoint folder's name for a directory, the hub id as
/// given otherwise; never a whole path, so that results read the same on every machine.
pub fn model_name(spec: &str, dir: &Path) -> String {
    if !Path::new(spec).is_dir() {
        return spec.to_string();
    }
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.to_string())
}

pub struct Runtime {
    pub dir: PathBuf,
    /// How results, legends and file names call the model: [`model_name`] of the spec unless the
    /// caller names it.
    pub name: String,
    pub config: ModelConfig,
    pub tokenizer: TextTokenizer,
    pub template: ChatTemplate,
    pub image_config: ImageProcessorConfig,
    pub model: Qwen2_5Vl,
}

/// Half-open token ranges of the prompt's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptSpans {
    /// everything before the first image token
    pub system: (usize, usize),
    /// the image tokens
    pub visual: (usize, usize),
    /// everything after the image up to and including the assistant header
    pub instruction: (usize, usize),
}

pub struct PreparedImage {
    pub path: PathBuf,
    pub pixel_values: Tensor,
    pub info: PreprocessedImage,
}

impl PreparedImage {
    pub fn grid_thw(&self) -> [i64; 3] {
        let g = self.info.grid_thw;
        [g[0] as i64, g[1] as i64, g[2] as i64]
    }

    pub fn input(&self) -> ImageInput<'_> {
        ImageInput {
            pixel_values: &self.pixel_values,
            grid_thw: self.grid_thw(),
        }
    }
}

pub struct Prompt {
    pub user_text: String,
    /// the chat template's output, before image-pad expansion
    pub rendered: String,
    pub input_ids: Vec<i64>,
    pub image: PreparedImage,
    pub spans: PromptSpans,
}

impl Runtime {
    /// Load `model` (a directory or a hub id) in `kind` on `device`.
    pub fn load(spec: &str, kind: Kind, device: Device) -> Result<Self> {
        let dir = resolve_model(spec)?;
        if !dir.is_dir() {
            bail!("model directory {} does not exist", dir.display());
        }
        let config = ModelConfig::from_dir(&dir)?;
        config
            .check_special_tokens()
            .map_err(|msg| CheckpointError::Config {
                path: dir.join("config.json"),
                msg,
            })?;
        let tokenizer = TextTokenizer::from_dir(&dir)?;
        let template = ChatTemplate::from_dir(&dir)?;
        let pp = dir.join("preprocessor_config.json");
        let image_config = if pp.exists() {
            ImageProcessorConfig::from_file(&pp)?
        } else {
            default_image_config(&config)
        };
        check_image_config(&config, &image_config, &pp)?;
        let weights = Weights::open(&dir)?;
        let model = Qwen2_5Vl::load(&config, &weights, kind, device)
            .with_context(|| format!("loading {}", dir.display()))?;
        Ok(Self {
            name: model_name(spec, &dir),
            dir,
            config,
            tokenizer,
            template,
            image_config,
            model,
        })
    }

    /// Load and preprocess an image as the checkpoint's processor would.
    pub fn prepare_image(&self, path: &Path) -> Result<PreparedImage> {
        let img = preprocess::load_image_limited(path, self.image_config.max_image_pixels)?;
        let (w, h) = img.dimensions();
        let factor = self.image_config.factor() as u32;
        if w < factor || h < factor {
            // Hugging Face 5.x would upscale it; a picture this small carries no usable detail
            bail!(
                "{} is {w}x{h} px: both sides must be at least {factor} px (one {factor}-px merged patch)",
                path.display()
            );
        }
        let info = preprocess::preprocess(&img, &self.image_config)
            .with_context(|| format!("preprocessing {}", path.display()))?;
        let pixel_values = Tensor::from_slice(&info.pixel_values)
            .view([info.n_patches as i64, info.patch_dim as i64]);
        Ok(PreparedImage {
            path: path.to_path_buf(),
            pixel_values,
            info,
        })
    }

    /// Render the chat template for one image + `prompt`, expand the image placeholder to one token
    /// per merged patch, tokenize, and label the prompt's spans.
    pub fn prepare(&self, image: &Path, prompt: &str, system: Option<&str>) -> Result<Prompt> {
        self.prepare_turn(image, prompt, system, true)
    }

    /// [`Runtime::prepare`], ending with the assistant header only when `add_generation_prompt`.
    pub fn prepare_turn(
        &self,
        image: &Path,
        prompt: &str,
        system: Option<&str>,
        add_generation_prompt: bool,
    ) -> Result<Prompt> {
        if prompt.trim().is_empty() {
            return invalid("prompt", "is empty: there is no question to answer");
        }
        let image = self.prepare_image(image)?;
        let rendered = self
            .template
            .render_turn(system, prompt, add_generation_prompt)?;
        let pad = self
            .tokenizer
            .id_to_token(self.config.image_token_id)
            .with_context(|| {
                format!(
                    "the tokenizer has no token for image_token_id {}",
                    self.config.image_token_id
                )
            })?;
        let parts: Vec<&str> = rendered.split(pad.as_str()).collect();
        if parts.len() != 2 {
            bail!(
                "the chat template rendered {} image placeholders `{pad}` for one image",
                parts.len() - 1
            );
        }
        let merge = self.config.vision.spatial_merge_size;
        let g = image.info.grid_thw;
        let n_image = g[0] * g[1] * g[2] / (merge * merge);
        let mut input_ids = self.tokenizer.encode(parts[0])?;
        let start = input_ids.len();
        input_ids.extend(std::iter::repeat(self.config.image_token_id).take(n_image));
        let end = input_ids.len();
        input_ids.extend(self.tokenizer.encode(parts[1])?);
        let spans = PromptSpans {
            system: (0, start),
            visual: (start, end),
            instruction: (end, input_ids.len()),
        };
        Ok(Prompt {
            user_text: prompt.to_string(),
            rendered,
            input_ids,
            image,
            spans,
        })
    }

    /// The note every output made with random weights carries.
    pub fn random_weights_note(&self) -> Option<&'static str> {
        self.config
            .random_weights
            .then_some("note: this checkpoint has random weights (rhlens demo/test model): its text is meaningless")
    }
}
