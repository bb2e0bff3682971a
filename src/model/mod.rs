//! The Qwen-VL families on libtorch (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; the table that maps a
//! `model_type` to its parts is [`family`]): the vision tower, the decoder with multimodal RoPE,
//! and the glue that scatters image features into the prompt's embeddings (and, for Qwen3-VL,
//! adds DeepStack features after the first layers). Knows tensors and weights only; roles,
//! figures and benchmarks live elsewhere. Values inside a forward pass are observed at named
//! [`sites`].
pub mod layers;
pub mod moe;
/// The family table lives with the config it parses; re-exported here, where it is used.
pub use crate::checkpoint::family;
pub mod rope;
pub mod sites;
pub mod stage;
pub mod text;
pub mod vision;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{ModelConfig, Weights};
use crate::error::invalid;
use layers::Placement;
pub use rope::RopeIndex;
pub use sites::{
    AttentionInputs, Captured, Collector, HuggingFaceOutputs, Observer, Site, SiteError,
    SitePattern,
};
pub use stage::{guarded, Stage, TorchFailure};
pub use text::{DeepStack, ForwardOptions, KvCache};
pub use vision::VisionOutput;

/// How attention is computed for the model's own output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnImpl {
    /// libtorch's fused scaled-dot-product attention (no probabilities; fast).
    Sdpa,
    /// Explicit `softmax(q kᵀ · scale) v`, as Hugging Face's eager path (probabilities available).
    Eager,
}

/// One image ready for the vision tower.
pub struct ImageInput<'a> {
    /// `[patches, C*T*P*P]` float32.
    pub pixel_values: &'a Tensor,
    pub grid_thw: [i64; 3],
}

/// A loaded vision-language model of any supported family (the name is historical: it runs every
/// family in [`family::FAMILIES`]).
pub struct Qwen2_5Vl {
    pub config: ModelConfig,
    pub vision: vision::VisionTower,
    pub text: text::TextModel,
    /// `None` when the output head is tied to the input embeddings.
    lm_head: Option<Tensor>,
    pub kind: Kind,
    pub device: Device,
    pub attn_impl: AttnImpl,
}

/// The state of one sequence being decoded.
pub struct Sequence {
    pub cache: KvCache,
    pub rope_delta: i64,
}

impl Sequence {
    /// Number of positions in the cache.
    pub fn len(&self) -> i64 {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// One prompt of a batch: its ids (image tokens included) and its images.
pub struct BatchPrompt<'a> {
    pub input_ids: &'a [i64],
    pub images: &'a [ImageInput<'a>],
}

/// The state of several sequences decoded together, left-padded to a common length. Row `b`'s
/// real tokens are cache positions `pads[b]..`.
pub struct BatchSequence {
    pub cache: KvCache,
    pub rope_deltas: Vec<i64>,
    pub pads: Vec<i64>,
}

impl BatchSequence {
    /// Number of positions in the cache (padding included).
    pub fn len(&self) -> i64 {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    pub fn batch_size(&self) -> usize {
        self.pads.len()
    }
}

/// Token fed at padding positions (its embedding never reaches a real row).
const PAD_ID: i64 = 0;

impl Qwen2_5Vl {
    pub fn load(
        config: &ModelConfig,
        weights: &Weights,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let p = Placement { kind, device };
        let _guard = tch::no_grad_guard();
        let fam = config.family();
        let vision = vision::VisionTower::load(weights, p, &config.vision, fam.vision)
            .context("loading the vision tower")?;
        let text = text::TextModel::load(weights, p, &config.text, fam.decoder)
            .context("loading the decoder")?;
        if config.vision.out_hidden_size != config.text.hidden_size {
            bail!(
                "vision out_hidden_size {} differs from the decoder hidden_size {}",
                config.vision.out_hidden_size,
                config.text.hidden_size
            );
        }
        let lm_head = if config.text.tie_word_embeddings && !weights.contains("lm_head.weight") {
            None
        } else {
            Some(p.load(
                weights,
                "lm_head.weight",
                &[
                    config.text.vocab_size as i64,
                    config.text.hidden_size as i64,
                ],
            )?)
        };
        Ok(Self {
            config: config.clone(),
            vision,
            text,
            lm_head,
            kind,
            device,
            attn_impl: AttnImpl::Sdpa,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.text.num_layers()
    }

    pub fn num_heads(&self) -> usize {
        self.config.text.num_attention_heads
    }

    /// Logits (float32) for hidden states `[.., hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let w = self.lm_head.as_ref().unwrap_or(self.text.embed_weight());
        hidden.linear(w, None::<Tensor>).to_kind(Kind::Float)
    }

    /// Merged image features for each image, concatenated: `[Σ tokens, hidden]`.
    pub fn image_features(
        &self,
        images: &[ImageInput<'_>],
        observer: Option<&mut dyn Observer>,
    ) -> Result<Tensor> {
        Ok(self.vision_output(images, observer)?.merged)
    }

    /// The vision tower's whole output for `images`: merged features and DeepStack features.
    pub fn vision_output(
        &self,
        images: &[ImageInput<'_>],
        observer: Option<&mut dyn Observer>,
    ) -> Result<VisionOutput> {
        if images.is_empty() {
            bail!("no image given");
        }
        let pv = Tensor::cat(
            &images
                .iter()
                .map(|i| i.pixel_values.shallow_clone())
                .collect::<Vec<_>>(),
            0,
        );
        let grids: Vec<[i64; 3]> = images.iter().map(|i| i.grid_thw).collect();
        guarded(Stage::VisionTower, || {
            self.vision.forward(&pv, &grids, self.attn_impl, observer)
        })
    }

    /// Refuse a prompt longer than the model's context or with ids outside its vocabulary.
    fn check_prompt(&self, ids: &[i64]) -> Result<()> {
        let context = self.config.text.max_position_embeddings;
        if ids.len() > context {
            bail!(
                "the prompt is {} tokens long, but the model's context (max_position_embeddings) \
                 holds {context}",
                ids.len()
            );
        }
        self.check_ids(ids)
    }

    /// Refuse token ids that index no row of the embedding matrix (libtorch would fail on them).
    pub fn check_ids(&self, ids: &[i64]) -> Result<()> {
        let vocab = self.config.text.vocab_size;
        match ids
            .iter()
            .enumerate()
            .find(|(_, &id)| !self.config.text.has_token(id))
        {
            Some((at, id)) => bail!(
                "token id {id} (position {at}) is outside the vocabulary: the model has \
                 {vocab} tokens, ids 0 to {}",
                vocab - 1
            ),
            None => Ok(()),
        }
    }

    /// Prompt embeddings with the image features scattered over the image-token positions.
    pub fn prompt_embeddings(
        &self,
        input_ids: &[i64],
        image_features: Option<&Tensor>,
    ) -> Result<Tensor> {
        let embeds = self.text.embed(input_ids);
        let n_img = input_ids
            .iter()
            .filter(|&&t| t == self.config.image_token_id)
            .count() as i64;
        match image_features {
            None if n_img > 0 => {
                bail!("the prompt has {n_img} image tokens but no image was given")
            }
            None => Ok(embeds),
            Some(f) => {
                let rows = f.size()[0];
                if rows != n_img {
                    bail!("image features and image tokens do not match: {n_img} tokens, {rows} features");
                }
                let mask = Tensor::from_slice(
                    &input_ids
                        .iter()
                        .map(|&t| t == self.config.image_token_id)
                        .collect::<Vec<bool>>(),
                )
                .to_device(self.device)
                .view([1, -1, 1])
                .expand_as(&embeds);
                Ok(embeds.masked_scatter(&mask, &f.to_kind(embeds.kind())))
            }
        }
    }

    /// DeepStack input for prompts left-padded to `longest` (0: unpadded, one prompt): the flat
    /// indices of every image token, row by row, and the tower's DeepStack features. `None` when
    /// the family has no DeepStack or no image was given.
    fn deepstack(
        &self,
        prompts: &[&[i64]],
        longest: i64,
        vision: Option<VisionOutput>,
    ) -> Result<Option<DeepStack>> {
        let Some(vision) = vision.filter(|v| !v.deepstack.is_empty()) else {
            return Ok(None);
        };
        let mut rows = Vec::new();
        for (b, ids) in prompts.iter().enumerate() {
            let len = ids.len() as i64;
            let (width, pad) = match longest {
                0 => (len, 0),
                l => (l, l - len),
            };
            rows.extend(
                ids.iter()
                    .enumerate()
                    .filter(|(_, &t)| t == self.config.image_token_id)
                    .map(|(i, _)| b as i64 * width + pad + i as i64),
            );
        }
        if rows.len() as i64 != vision.merged.size()[0] {
            bail!("image features and image tokens do not match across the batch");
        }
        Ok(Some(DeepStack {
            rows: Tensor::from_slice(&rows).to_device(self.device),
            features: vision.deepstack,
        }))
    }

    /// 3-D positions of a prompt.
    pub fn rope_index(&self, input_ids: &[i64], images: &[ImageInput<'_>]) -> Result<RopeIndex> {
        let grids: Vec<[i64; 3]> = images.iter().map(|i| i.grid_thw).collect();
        rope::rope_index(
            input_ids,
            self.config.image_token_id,
            &grids,
            self.config.vision.spatial_merge_size as i64,
        )
    }

    /// Run the whole prompt; returns the final hidden states `[1, L, hidden]` and the new sequence
    /// state. The observer sees the vision tower's sites too.
    pub fn prefill(
        &self,
        input_ids: &[i64],
        images: &[ImageInput<'_>],
        reserve: i64,
        mut opts: ForwardOptions<'_>,
    ) -> Result<(Tensor, Sequence)> {
        let _guard = tch::no_grad_guard();
        if input_ids.is_empty() {
            bail!("empty prompt");
        }
        self.check_prompt(input_ids)?;
        let vision = if images.is_empty() {
            None
        } else {
            Some(self.vision_output(images, sites::reborrow(&mut opts.observer))?)
        };
        let embeds = self.prompt_embeddings(input_ids, vision.as_ref().map(|v| &v.merged))?;
        let deepstack = self.deepstack(&[input_ids], 0, vision)?;
        let index = self.rope_index(input_ids, images)?;
        let mut cache = KvCache::new(self.num_layers());
        cache.reserve(reserve.max(input_ids.len() as i64));
        let hidden = guarded(Stage::Prefill, || {
            self.text.forward_masked(
                &embeds,
                &index.to_tensor(self.device),
                &mut cache,
                self.attn_impl,
                opts,
                None,
                deepstack.as_ref(),
            )
        })?;
        Ok((
            hidden,
            Sequence {
                cache,
                rope_delta: index.rope_delta,
            },
        ))
    }

    /// Run several prompts at once, left-padded to the longest: each row gets its own M-RoPE
    /// positions (padding at position 1) and a mask that keeps it off its padding. The images of
    /// all rows go through the vision tower together. Returns the final hidden states
    /// `[B, L, hidden]` (the last position is every row's last prompt token) and the batch state.
    pub fn prefill_batch(
        &self,
        prompts: &[BatchPrompt<'_>],
        reserve: i64,
        mut opts: ForwardOptions<'_>,
    ) -> Result<(Tensor, BatchSequence)> {
        let _guard = tch::no_grad_guard();
        if prompts.is_empty() {
            bail!("empty batch");
        }
        if prompts.iter().any(|p| p.input_ids.is_empty()) {
            bail!("empty prompt");
        }
        for p in prompts {
            self.check_prompt(p.input_ids)?;
        }
        let b = prompts.len() as i64;
        let longest = prompts.iter().map(|p| p.input_ids.len()).max().unwrap_or(0) as i64;
        let all_images: Vec<ImageInput<'_>> = prompts
            .iter()
            .flat_map(|p| p.images.iter())
            .map(|i| ImageInput {
                pixel_values: i.pixel_values,
                grid_thw: i.grid_thw,
            })
            .collect();
        let vision = if all_images.is_empty() {
            None
        } else {
            Some(self.vision_output(&all_images, sites::reborrow(&mut opts.observer))?)
        };
        let features = vision.as_ref().map(|v| v.merged.shallow_clone());
        let mut offset = 0i64;
        let mut rows = Vec::with_capacity(prompts.len());
        let mut flat: [Vec<i64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut rope_deltas = Vec::with_capacity(prompts.len());
        let mut pads = Vec::with_capacity(prompts.len());
        for p in prompts {
            let n_img = p
                .input_ids
                .iter()
                .filter(|&&t| t == self.config.image_token_id)
                .count() as i64;
            let row_features = match &features {
                Some(f) if !p.images.is_empty() => {
                    if offset + n_img > f.size()[0] {
                        bail!("image features and image tokens do not match across the batch");
                    }
                    let r = f.narrow(0, offset, n_img);
                    offset += n_img;
                    Some(r)
                }
                _ => None,
            };
            let embeds = self.prompt_embeddings(p.input_ids, row_features.as_ref())?;
            let pad = longest - p.input_ids.len() as i64;
            let embeds = if pad > 0 {
                let pad_embeds = self.text.embed(&vec![PAD_ID; pad as usize]);
                Tensor::cat(&[pad_embeds, embeds], 1)
            } else {
                embeds
            };
            rows.push(embeds);
            let index = self.rope_index(p.input_ids, p.images)?;
            for (plane, own) in flat.iter_mut().zip(index.planes.iter()) {
                plane.extend(std::iter::repeat(1).take(pad as usize));
                plane.extend(own);
            }
            rope_deltas.push(index.rope_delta);
            pads.push(pad);
        }
        if let Some(f) = &features {
            if offset != f.size()[0] {
                bail!("image features and image tokens do not match across the batch");
            }
        }
        let embeds = Tensor::cat(&rows, 0);
        let positions = Tensor::from_slice(&flat.concat())
            .view([3, b, longest])
            .to_device(self.device);
        // causal, and off the padding; a padding query sees itself so no row is fully masked
        let i = Tensor::arange(longest, (Kind::Int64, self.device)).view([1, 1, longest, 1]);
        let j = Tensor::arange(longest, (Kind::Int64, self.device)).view([1, 1, 1, longest]);
        let pad_t = Tensor::from_slice(&pads)
            .to_device(self.device)
            .view([b, 1, 1, 1]);
        let mask = j
            .le_tensor(&i)
            .logical_and(&j.ge_tensor(&pad_t).logical_or(&j.eq_tensor(&i)));
        let mut cache = KvCache::new(self.num_layers());
        cache.reserve(reserve.max(longest));
        let ids: Vec<&[i64]> = prompts.iter().map(|p| p.input_ids).collect();
        let deepstack = self.deepstack(&ids, longest, vision)?;
        let hidden = guarded(Stage::Prefill, || {
            self.text.forward_masked(
                &embeds,
                &positions,
                &mut cache,
                self.attn_impl,
                opts,
                Some(&mask),
                deepstack.as_ref(),
            )
        })?;
        Ok((
            hidden,
            BatchSequence {
                cache,
                rope_deltas,
                pads,
            },
        ))
    }

    /// Feed one token per row of a batch; returns the final hidden states `[B, 1, hidden]`.
    /// Row `b`'s position is its number of real tokens so far plus its `rope_delta`.
    pub fn step_batch(
        &self,
        seq: &mut BatchSequence,
        tokens: &[i64],
        opts: ForwardOptions<'_>,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let b = seq.batch_size();
        if tokens.len() != b {
            bail!("{} tokens for a batch of {b}", tokens.len());
        }
        self.check_ids(tokens)?;
        let len = seq.len();
        let pos: Vec<i64> = seq
            .pads
            .iter()
            .zip(&seq.rope_deltas)
            .map(|(pad, delta)| len - pad + delta)
            .collect();
        let positions = Tensor::from_slice(&[pos.clone(), pos.clone(), pos].concat())
            .view([3, b as i64, 1])
            .to_device(self.device);
        let embeds = self.text.embed(tokens).view([b as i64, 1, -1]);
        let j = Tensor::arange(len + 1, (Kind::Int64, self.device)).view([1, 1, 1, len + 1]);
        let pad_t = Tensor::from_slice(&seq.pads)
            .to_device(self.device)
            .view([b as i64, 1, 1, 1]);
        let mask = j.ge_tensor(&pad_t);
        let hidden = self.text.forward_masked(
            &embeds,
            &positions,
            &mut seq.cache,
            self.attn_impl,
            opts,
            Some(&mask),
            None,
        )?;
        Ok(hidden)
    }

    /// Feed one token; returns the final hidden state `[1, 1, hidden]`.
    pub fn step(&self, seq: &mut Sequence, token: i64, opts: ForwardOptions<'_>) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        self.check_ids(&[token])?;
        let pos = seq.len() + seq.rope_delta;
        let positions = Tensor::from_slice(&[pos, pos, pos])
            .view([3, 1, 1])
            .to_device(self.device);
        let embeds = self.text.embed(&[token]);
        self.text
            .forward(&embeds, &positions, &mut seq.cache, self.attn_impl, opts)
    }
}

/// The dtypes rhlens runs in and the names each answers to; the first name is the canonical one.
pub const DTYPES: [(Kind, &[&str]); 3] = [
    (Kind::Float, &["f32", "float32", "fp32"]),
    (Kind::BFloat16, &["bf16", "bfloat16"]),
    (Kind::Half, &["f16", "float16", "fp16"]),
];

/// Parse a dtype name.
pub fn parse_kind(s: &str) -> Result<Kind> {
    match DTYPES.iter().find(|(_, names)| names.contains(&s)) {
        Some((kind, _)) => Ok(*kind),
        None => bail!("unknown dtype `{s}` (use f32, bf16 or f16)"),
    }
}

pub fn kind_name(k: Kind) -> &'static str {
    match DTYPES.iter().find(|(kind, _)| *kind == k) {
        Some((_, names)) => names[0],
        None => "f32",
    }
}

/// A device as asked for, before it is checked against what libtorch sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Cpu,
    /// CUDA when visible, else the CPU
    Auto,
    /// the first CUDA device
    Cuda,
    CudaOrdinal(usize),
}

impl std::str::FromStr for DeviceRequest {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => match other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse::<usize>().ok())
            {
                Some(i) => Ok(Self::CudaOrdinal(i)),
                None => bail!("unknown device `{other}` (use cpu, cuda, cuda:N or auto)"),
            },
        }
    }
}

impl DeviceRequest {
    /// The device to run on; CUDA must be visible when asked for by name.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => Ok(Device::cuda_if_available()),
            Self::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            Self::Cuda => invalid(
                "device",
                "cuda was asked for but libtorch sees no CUDA device (try `device` cpu)",
            ),
            Self::CudaOrdinal(i) if (i as i64) < tch::Cuda::device_count() => Ok(Device::Cuda(i)),
            Self::CudaOrdinal(i) => invalid(
                "device",
                format!(
                    "cuda:{i}: libtorch sees {} CUDA device(s)",
                    tch::Cuda::device_count()
                ),
            ),
        }
    }
}

/// Parse a device name; `auto` picks CUDA when visible.
pub fn parse_device(s: &str) -> Result<Device> {
    s.parse::<DeviceRequest>()?.resolve()
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    }
}
