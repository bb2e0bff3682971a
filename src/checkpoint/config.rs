//! `config.json` (+ `generation_config.json`) of a checkpoint of one of the families in
//! [`super::family`] (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).
//!
//! Two layouts exist in the wild and both are read:
//! * the flat Hub layout: text fields at the top level, `rope_scaling {"type": "mrope",
//!   "mrope_section": [..]}`, `rope_theta` at the top level, and a `vision_config` object;
//! * the nested transformers-5 layout: a `text_config` object with `rope_parameters {rope_type,
//!   rope_theta, mrope_section}`, a `vision_config` object, token ids at the top level (or in
//!   `text_config`).
//!
//! Defaults for omitted fields follow transformers' `Qwen2_5_VLConfig` (5.17): for example
//! `num_key_value_heads` 8 (or `num_attention_heads` when explicitly null), `rms_norm_eps` 1e-5,
//! `rope_theta` 1e6, `mrope_section` [16, 24, 24], and the vision defaults of
//! `Qwen2_5_VLVisionConfig`. The sizes that define the text model's weights (`hidden_size`,
//! `num_hidden_layers`, `num_attention_heads`, `intermediate_size`, `vocab_size`) are required:
//! defaulting them to a 72B-sized model would only produce confusing shape errors later.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{ensure_dir, read_json, CheckpointError, Result};

use super::family::{family, Family, VisionKind};

/// `model_type` values this loader accepts: the family table's, in its order.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"];

/// Decoder `hidden_act` values rhlens implements (the feed-forward layers are SwiGLU;
/// transformers names the same function both ways). Any other activation would run silently
/// wrong. The vision tower's activation is fixed per family ([`Family::vision_act`]).
pub const SUPPORTED_ACTIVATIONS: &[&str] = &["silu", "swish"];

/// The largest `min_pixels` / `max_pixels` an image preprocessor may ask for: 2^28 pixels
/// (16384 x 16384), far above any published Qwen2.5-VL setting (12845056), and about 3 GiB of
/// float32 patches, so a mistyped value is refused before anything is allocated.
pub const PIXEL_SETTING_LIMIT: usize = 1 << 28;

/// The Qwen2 text decoder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Per-head size: the explicit `head_dim` field if present, else `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    pub intermediate_size: usize,
    /// Rows of the embedding matrix (may exceed the tokenizer's vocabulary).
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// M-RoPE split of `head_dim / 2` rotary frequencies into (temporal, height, width).
    pub mrope_section: Vec<usize>,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    /// Frequencies cycle t, h, w instead of forming three chunks (Qwen3-VL).
    pub mrope_interleaved: bool,
    /// Routed experts (Qwen3-VL-MoE); `None` for dense decoders.
    pub moe: Option<MoeConfig>,
}

/// Qwen3-VL-MoE's expert routing (transformers' `Qwen3VLMoeTextConfig` fields and defaults).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub decoder_sparse_step: usize,
    pub mlp_only_layers: Vec<usize>,
}

impl MoeConfig {
    /// Whether decoder layer `layer` routes to experts (else it has a dense MLP).
    pub fn is_sparse(&self, layer: usize) -> bool {
        !self.mlp_only_layers.contains(&layer)
            && self.num_experts > 0
            && (layer + 1) % self.decoder_sparse_step.max(1) == 0
    }
}

fn parse_moe(t: Obj<'_>) -> FieldResult<MoeConfig> {
    let moe = MoeConfig {
        num_experts: t.usize_or("num_experts", 60)?,
        num_experts_per_tok: t.usize_or("num_experts_per_tok", 4)?,
        moe_intermediate_size: t.usize_or("moe_intermediate_size", 1408)?,
        decoder_sparse_step: t.usize_or("decoder_sparse_step", 1)?,
        mlp_only_layers: t.usize_list_opt("mlp_only_layers")?.unwrap_or_default(),
    };
    if moe.num_experts_per_tok == 0 || moe.num_experts_per_tok > moe.num_experts {
        return Err(format!(
            "`{}` ({}) must be between 1 and `{}` ({})",
            t.name("num_experts_per_tok"),
            moe.num_experts_per_tok,
            t.name("num_experts"),
            moe.num_experts
        ));
    }
    Ok(moe)
}

impl TextConfig {
    /// Query heads per key/value head.
    pub fn num_kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
    /// Whether `id` is a row of the embedding matrix (`0..vocab_size`).
    pub fn has_token(&self, id: i64) -> bool {
        usize::try_from(id).is_ok_and(|u| u < self.vocab_size)
    }
    /// Output width of `k_proj` / `v_proj`.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

/// The vision tower (`visual.*`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub window_size: usize,
    /// Blocks that attend over the whole image instead of within windows.
    pub fullatt_block_indexes: Vec<usize>,
    pub out_hidden_size: usize,
    pub in_channels: usize,
    pub tokens_per_second: usize,
    pub hidden_act: String,
    /// Rows of the learned position table (a square grid), 0 when the tower has none (Qwen3-VL).
    pub num_position_embeddings: usize,
    /// Vision blocks whose merged output is added to the decoder's visual positions after the
    /// first decoder layers (Qwen3-VL's DeepStack); empty when the tower has none.
    pub deepstack_visual_indexes: Vec<usize>,
}

impl VisionConfig {
    /// Per-head size of the vision attention.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Length of one flattened patch: `in_channels * temporal_patch_size * patch_size²`.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Patches merged into one language-model token (`spatial_merge_size²`).
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }
}

/// How an image preprocessor cuts and sizes images (its `preprocessor_config.json`), as far as
/// it must agree with the vision tower that reads its patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGeometry {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    /// Whether images are resized into `[min_pixels, max_pixels]` at all.
    pub resizes: bool,
}

impl VisionConfig {
    /// Why an image preprocessor with geometry `g` cannot feed this tower, if it cannot: its
    /// patches must be the ones the weights were made for (a mismatch fails inside libtorch or,
    /// for the merge size, silently scrambles the image features; transformers refuses it too),
    /// and its pixel bounds must be ordered, hold one merged patch and stay below
    /// [`PIXEL_SETTING_LIMIT`].
    pub fn check_preprocessor(&self, g: &PatchGeometry) -> std::result::Result<(), String> {
        for (key, theirs, ours) in [
            ("patch_size", g.patch_size, self.patch_size),
            (
                "temporal_patch_size",
                g.temporal_patch_size,
                self.temporal_patch_size,
            ),
            ("merge_size", g.merge_size, self.spatial_merge_size),
        ] {
            if theirs != ours {
                let field = if key == "merge_size" {
                    "spatial_merge_size"
                } else {
                    key
                };
                return Err(format!(
                    "`{key}` {theirs} does not match the vision tower's `vision_config.{field}` \
                     {ours} in config.json: the preprocessor must cut the patches the weights \
                     were made for"
                ));
            }
        }
        if !g.resizes {
            return Ok(());
        }
        let merged = (g.patch_size * g.merge_size).pow(2);
        if g.min_pixels > g.max_pixels {
            return Err(format!(
                "`min_pixels` {} is larger than `max_pixels` {}",
                g.min_pixels, g.max_pixels
            ));
        }
        if g.min_pixels < merged {
            return Err(format!(
                "`min_pixels` {} is smaller than one merged patch ({merged} pixels: \
                 (patch_size * merge_size)²)",
                g.min_pixels
            ));
        }
        if g.max_pixels > PIXEL_SETTING_LIMIT {
            return Err(format!(
                "`max_pixels` {} is above rhlens' limit of {PIXEL_SETTING_LIMIT} pixels \
                 (16384 x 16384); published Qwen2.5-VL checkpoints use at most 12845056",
                g.max_pixels
            ));
        }
        Ok(())
    }
}

/// Everything rhlens needs from `config.json` and `generation_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub model_type: String,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub vision_start_token_id: i64,
    pub vision_end_token_id: i64,
    /// Stop ids: `generation_config.json`'s `eos_token_id` if present, else config.json's.
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    /// The checkpoint declares random (untrained) weights (`"rhlens_random_weights": true`).
    pub random_weights: bool,
    /// The dtype the checkpoint was saved in (`torch_dtype` / `dtype`), e.g. "bfloat16".
    pub torch_dtype: Option<String>,
}

impl ModelConfig {
    /// The family this checkpoint's `model_type` names (checked when the config was parsed).
    pub fn family(&self) -> &'static Family {
        family(&self.model_type).unwrap_or(&super::family::FAMILIES[1])
    }

    /// Pixels on each side of the square one merged image token covers:
    /// `patch_size × spatial_merge_size` (28 for Qwen2.5-VL, 32 for Qwen3-VL).
    pub fn px_per_token(&self) -> usize {
        self.vision.patch_size * self.vision.spatial_merge_size
    }

    /// Why the special-token ids cannot be used with this vocabulary, if they cannot: each must
    /// index a row of the embedding matrix (`vocab_size` rows), or the first prompt that uses it
    /// fails inside libtorch. transformers reads such a config without complaint, so this is
    /// checked when a model is loaded, not when the file is parsed.
    pub fn check_special_tokens(&self) -> std::result::Result<(), String> {
        let mut special = vec![
            ("image_token_id", self.image_token_id),
            ("video_token_id", self.video_token_id),
            ("vision_start_token_id", self.vision_start_token_id),
            ("vision_end_token_id", self.vision_end_token_id),
        ];
        special.extend(self.eos_token_ids.iter().map(|&id| ("eos_token_id", id)));
        special.extend(self.pad_token_id.map(|id| ("pad_token_id", id)));
        match special.iter().find(|(_, id)| !self.text.has_token(*id)) {
            Some((key, id)) => Err(format!(
                "`{key}` {id} is outside the vocabulary: `vocab_size` is {}, so ids run from 0 \
                 to {}",
                self.text.vocab_size,
                self.text.vocab_size - 1
            )),
            None => Ok(()),
        }
    }

    /// Read `config.json` (and `generation_config.json` when present) from a checkpoint directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<ModelConfig> {
        let dir = dir.as_ref();
        ensure_dir(dir)?;
        let path = dir.join("config.json");
        let config = read_json(
            &path,
            "every Hugging Face checkpoint directory has one; is this the right directory?",
        )?;
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.is_file() {
            Some(read_json(&gen_path, "")?)
        } else {
            None
        };
        parse(&config, generation.as_ref(), &path, &gen_path)
    }

    /// Parse config.json text (and optionally generation_config.json text); for tests and tools.
    pub fn from_json_str(config: &str, generation_config: Option<&str>) -> Result<ModelConfig> {
        let path = Path::new("config.json");
        let gen_path = Path::new("generation_config.json");
        let config: Value =
            serde_json::from_str(config).map_err(|source| CheckpointError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        let generation = match generation_config {
            Some(text) => Some(serde_json::from_str::<Value>(text).map_err(|source| {
                CheckpointError::Json {
                    path: gen_path.to_path_buf(),
                    source,
                }
            })?),
            None => None,
        };
        parse(&config, generation.as_ref(), path, gen_path)
    }
}

/// A JSON object plus the dotted prefix used to name its fields in error messages.
#[derive(Clone, Copy)]
struct Obj<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
}

/// Field-level problem, turned into a [`CheckpointError::Config`] by the caller.
type FieldResult<T> = std::result::Result<T, String>;

impl<'a> Obj<'a> {
    fn name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// The value of `key`, treating an explicit JSON null like an absent key.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str) -> FieldResult<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_usize(v).map(Some).ok_or_else(|| {
                format!(
                    "`{}` must be a non-negative integer, found {v}",
                    self.name(key)
                )
            }),
        }
    }

    fn usize_req(&self, key: &str) -> FieldResult<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| format!("missing field `{}`", self.name(key)))
    }

    fn usize_or(&self, key: &str, default: usize) -> FieldResult<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }

    fn i64_opt(&self, key: &str) -> FieldResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_i64(v)
                .map(Some)
                .ok_or_else(|| format!("`{}` must be an integer, found {v}", self.name(key))),
        }
    }

    fn f64_opt(&self, key: &str) -> FieldResult<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("`{}` must be a number, found {v}", self.name(key))),
        }
    }

    fn bool_opt(&self, key: &str) -> FieldResult<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| format!("`{}` must be true or false, found {v}", self.name(key))),
        }
    }

    fn str_opt(&self, key: &str) -> FieldResult<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| format!("`{}` must be a string, found {v}", self.name(key))),
        }
    }

    fn usize_list_opt(&self, key: &str) -> FieldResult<Option<Vec<usize>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(as_usize)
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "`{}` must be a list of non-negative integers",
                        self.name(key)
                    )
                }),
            Some(v) => Err(format!("`{}` must be a list, found {v}", self.name(key))),
        }
    }

    fn map_opt(&self, key: &str) -> FieldResult<Option<&'a Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(v) => Err(format!("`{}` must be an object, found {v}", self.name(key))),
        }
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    if let Some(u) = v.as_u64() {
        return usize::try_from(u).ok();
    }
    // Some tools write integral values as floats (e.g. 1280.0).
    let f = v.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64).then_some(f as usize)
}

fn as_i64(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f.abs() <= i32::MAX as f64).then_some(f as i64)
}

/// `patch_size` may be written as an int or (rarely) as a list of equal ints.
fn usize_or_square(obj: Obj<'_>, key: &str, default: usize) -> FieldResult<usize> {
    match obj.get(key) {
        None => Ok(default),
        Some(Value::Array(items)) => {
            let vals: Option<Vec<usize>> = items.iter().map(as_usize).collect();
            match vals.as_deref() {
                Some([first, rest @ ..]) if rest.iter().all(|x| x == first) => Ok(*first),
                _ => Err(format!(
                    "`{}` must be an integer (non-square sizes are not supported)",
                    obj.name(key)
                )),
            }
        }
        Some(_) => obj.usize_req(key),
    }
}

/// `hidden_act` (default silu), refused unless rhlens implements it.
fn activation(obj: Obj<'_>) -> FieldResult<String> {
    let act = obj.str_opt("hidden_act")?.unwrap_or("silu");
    if !SUPPORTED_ACTIVATIONS.contains(&act) {
        return Err(format!(
            "`{}` `{act}` is not supported; rhlens implements: {}",
            obj.name("hidden_act"),
            SUPPORTED_ACTIVATIONS.join(", ")
        ));
    }
    Ok(act.to_string())
}

/// eos_token_id: an int or a list of ints.
fn id_list(v: &Value, name: &str) -> FieldResult<Vec<i64>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(as_i64)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("`{name}` must be an integer or a list of integers")),
        other => as_i64(other).map(|i| vec![i]).ok_or_else(|| {
            format!("`{name}` must be an integer or a list of integers, found {other}")
        }),
    }
}

fn parse(
    config: &Value,
    generation: Option<&Value>,
    path: &Path,
    gen_path: &Path,
) -> Result<ModelConfig> {
    let err = |msg: String| CheckpointError::Config {
        path: path.to_path_buf(),
        msg,
    };
    let root = Obj {
        map: json_object(config).map_err(err)?,
        prefix: "",
    };
    let model_type = supported_model_type(root).map_err(err)?;
    let fam = family(model_type).map_err(err)?;
    let text_obj = text_section(root).map_err(err)?;
    let mut text = parse_text(text_obj, fam).map_err(err)?;
    let vision = vision_section(root, &text, fam).map_err(err)?;

    // Token ids: top level first (where transformers keeps them), then text_config, then the
    // class defaults.
    let token_id = |key: &str, default: i64| -> Result<i64> {
        match root.i64_opt(key).map_err(err)? {
            Some(v) => Ok(v),
            None => Ok(text_obj.i64_opt(key).map_err(err)?.unwrap_or(default)),
        }
    };
    let image_token_id = token_id("image_token_id", 151655)?;
    let video_token_id = token_id("video_token_id", 151656)?;
    let vision_start_token_id = token_id("vision_start_token_id", 151652)?;
    let vision_end_token_id = token_id("vision_end_token_id", 151653)?;

    let (mut eos_token_ids, mut pad_token_id) = config_stop_tokens(root, text_obj).map_err(err)?;
    if let Some(gen) = generation {
        let gen_err = |msg: String| CheckpointError::Config {
            path: gen_path.to_path_buf(),
            msg,
        };
        apply_generation_stop_tokens(gen, &mut eos_token_ids, &mut pad_token_id)
            .map_err(gen_err)?;
    }

    let random_weights = root
        .bool_opt("rhlens_random_weights")
        .map_err(err)?
        .unwrap_or(false);
    let torch_dtype = saved_dtype(root, text_obj).map_err(err)?;
    text.tie_word_embeddings = tie_word_embeddings(root, text_obj).map_err(err)?;

    Ok(ModelConfig {
        model_type: model_type.to_string(),
        text,
        vision,
        image_token_id,
        video_token_id,
        vision_start_token_id,
        vision_end_token_id,
        eos_token_ids,
        pad_token_id,
        random_weights,
        torch_dtype,
    })
}

fn json_object(value: &Value) -> FieldResult<&Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| "must be a JSON object".to_string())
}

/// `model_type`, refused unless it is one this loader reads.
fn supported_model_type<'a>(root: Obj<'a>) -> FieldResult<&'a str> {
    let model_type = root.str_opt("model_type")?.ok_or_else(|| {
        format!(
            "missing field `model_type` (expected one of {})",
            SUPPORTED_MODEL_TYPES.join(", ")
        )
    })?;
    family(model_type)?;
    Ok(model_type)
}

/// Where the text fields live: `text_config` in the nested layout, the top level in the flat one.
fn text_section<'a>(root: Obj<'a>) -> FieldResult<Obj<'a>> {
    Ok(match root.map_opt("text_config")? {
        Some(map) => Obj {
            map,
            prefix: "text_config.",
        },
        None => root,
    })
}

/// Whether `text` is a `text_config` object rather than the top level itself.
fn is_nested(root: Obj<'_>, text: Obj<'_>) -> bool {
    !std::ptr::eq(text.map, root.map)
}

/// The required `vision_config`, whose output must fit the text model it feeds.
fn vision_section(root: Obj<'_>, text: &TextConfig, fam: &Family) -> FieldResult<VisionConfig> {
    let vision_obj = match root.map_opt("vision_config")? {
        Some(map) => Obj {
            map,
            prefix: "vision_config.",
        },
        None => return Err("missing field `vision_config`".into()),
    };
    let vision = parse_vision(vision_obj, fam)?;
    if vision.out_hidden_size != text.hidden_size {
        return Err(format!(
            "`vision_config.out_hidden_size` ({}) must equal the text hidden size ({}): image \
             features are written into the text embeddings",
            vision.out_hidden_size, text.hidden_size
        ));
    }
    Ok(vision)
}

/// config.json's `eos_token_id` and `pad_token_id`, top level first, then text_config.
fn config_stop_tokens(root: Obj<'_>, text: Obj<'_>) -> FieldResult<(Vec<i64>, Option<i64>)> {
    let eos = match root
        .get("eos_token_id")
        .or_else(|| text.get("eos_token_id"))
    {
        Some(v) => id_list(v, "eos_token_id")?,
        None => vec![151645],
    };
    let pad = match root.i64_opt("pad_token_id")? {
        Some(p) => Some(p),
        None => text.i64_opt("pad_token_id")?,
    };
    Ok((eos, pad))
}

/// generation_config.json's `eos_token_id` / `pad_token_id` replace config.json's: it is the
/// file generation reads its stop tokens from.
fn apply_generation_stop_tokens(
    generation: &Value,
    eos_token_ids: &mut Vec<i64>,
    pad_token_id: &mut Option<i64>,
) -> FieldResult<()> {
    let gen = Obj {
        map: json_object(generation)?,
        prefix: "",
    };
    if let Some(v) = gen.get("eos_token_id") {
        *eos_token_ids = id_list(v, "eos_token_id")?;
    }
    if let Some(p) = gen.i64_opt("pad_token_id")? {
        *pad_token_id = Some(p);
    }
    Ok(())
}

/// The dtype the weights were saved in: `torch_dtype` or (transformers 5) `dtype`, top level
/// first.
fn saved_dtype(root: Obj<'_>, text: Obj<'_>) -> FieldResult<Option<String>> {
    Ok([root, text]
        .iter()
        .flat_map(|o| ["torch_dtype", "dtype"].map(|k| o.str_opt(k)))
        .collect::<FieldResult<Vec<_>>>()?
        .into_iter()
        .flatten()
        .next()
        .map(str::to_string))
}

/// transformers keeps `tie_word_embeddings` on the outer config (default false); pre-v5
/// nested saves put it in text_config, and a true there wins.
fn tie_word_embeddings(root: Obj<'_>, text: Obj<'_>) -> FieldResult<bool> {
    let root_tie = root.bool_opt("tie_word_embeddings")?;
    let text_tie = if is_nested(root, text) {
        text.bool_opt("tie_word_embeddings")?
    } else {
        None
    };
    Ok(root_tie.unwrap_or(false) || text_tie.unwrap_or(false))
}

fn parse_text(t: Obj<'_>, fam: &Family) -> FieldResult<TextConfig> {
    let sizes = text_sizes(t, fam)?;
    let (rope_theta, mrope_section, mrope_interleaved) = rope(t, sizes.head_dim, fam)?;
    let rms_norm_eps = t.f64_opt("rms_norm_eps")?.unwrap_or(1e-5);
    let max_position_embeddings = t.usize_or("max_position_embeddings", 32768)?;
    let hidden_act = activation(t)?;
    check_no_sliding_window(t, sizes.num_hidden_layers)?;

    Ok(TextConfig {
        hidden_size: sizes.hidden_size,
        num_hidden_layers: sizes.num_hidden_layers,
        num_attention_heads: sizes.num_attention_heads,
        num_key_value_heads: sizes.num_key_value_heads,
        head_dim: sizes.head_dim,
        intermediate_size: sizes.intermediate_size,
        vocab_size: sizes.vocab_size,
        rms_norm_eps,
        rope_theta,
        mrope_section,
        tie_word_embeddings: false, // set by the caller, which sees both layouts
        max_position_embeddings,
        hidden_act,
        mrope_interleaved,
        moe: match fam.moe {
            true => Some(parse_moe(t)?),
            false => None,
        },
    })
}

/// The sizes that fix the shapes of the text model's weights.
struct TextSizes {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    intermediate_size: usize,
    vocab_size: usize,
}

/// Read the text sizes and check that the attention heads split `hidden_size` evenly.
fn text_sizes(t: Obj<'_>, fam: &Family) -> FieldResult<TextSizes> {
    let hidden_size = t.usize_req("hidden_size")?;
    let num_hidden_layers = t.usize_req("num_hidden_layers")?;
    let num_attention_heads = t.usize_req("num_attention_heads")?;
    let intermediate_size = t.usize_req("intermediate_size")?;
    let vocab_size = t.usize_req("vocab_size")?;
    // transformers: absent → 8 (class default); explicit null → num_attention_heads.
    let num_key_value_heads = match t.map.get("num_key_value_heads") {
        Some(Value::Null) => num_attention_heads,
        _ => t.usize_or("num_key_value_heads", 8)?,
    };
    for (key, v) in [
        ("hidden_size", hidden_size),
        ("num_hidden_layers", num_hidden_layers),
        ("num_attention_heads", num_attention_heads),
        ("num_key_value_heads", num_key_value_heads),
        ("intermediate_size", intermediate_size),
        ("vocab_size", vocab_size),
    ] {
        if v == 0 {
            return Err(format!("`{}` must be positive", t.name(key)));
        }
    }
    if hidden_size % num_attention_heads != 0 {
        return Err(format!(
            "`{}` ({hidden_size}) is not divisible by `{}` ({num_attention_heads})",
            t.name("hidden_size"),
            t.name("num_attention_heads")
        ));
    }
    if num_attention_heads % num_key_value_heads != 0 {
        return Err(format!(
            "`{}` ({num_attention_heads}) is not a multiple of `{}` ({num_key_value_heads})",
            t.name("num_attention_heads"),
            t.name("num_key_value_heads")
        ));
    }
    let implied_head_dim = hidden_size / num_attention_heads;
    let head_dim = t.usize_or("head_dim", implied_head_dim)?;
    if head_dim != implied_head_dim && !fam.free_head_dim {
        // transformers' Qwen2.5-VL attention always uses hidden_size / num_heads.
        return Err(format!(
            "`{}` ({head_dim}) differs from hidden_size / num_attention_heads ({implied_head_dim}); \
             Qwen2.5-VL requires them to agree",
            t.name("head_dim")
        ));
    }
    Ok(TextSizes {
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        intermediate_size,
        vocab_size,
    })
}

/// `rope_theta` and `mrope_section`, from `rope_scaling` / `rope_parameters` (either layout) or
/// the defaults, checked against `head_dim`.
fn rope(t: Obj<'_>, head_dim: usize, fam: &Family) -> FieldResult<(f64, Vec<usize>, bool)> {
    // transformers gives `rope_scaling` precedence over `rope_parameters`.
    let (rope_key, rope_map) = match t.map_opt("rope_scaling")? {
        Some(m) => ("rope_scaling", Some(m)),
        None => ("rope_parameters", t.map_opt("rope_parameters")?),
    };
    let rope_name = t.name(rope_key);
    let rope_prefix = format!("{rope_name}.");
    let mut rope_theta = t.f64_opt("rope_theta")?;
    let mut mrope_section = None;
    let mut interleaved = None;
    if let Some(map) = rope_map {
        let r = Obj {
            map,
            prefix: &rope_prefix,
        };
        check_rope_type(r, &rope_name)?;
        if let Some(theta) = r.f64_opt("rope_theta")? {
            rope_theta = Some(theta);
        }
        mrope_section = r.usize_list_opt("mrope_section")?;
        interleaved = r.bool_opt("mrope_interleaved")?;
    }
    let rope_theta = rope_theta.unwrap_or(fam.default_rope_theta);
    if !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(format!(
            "rope_theta must be a positive number, found {rope_theta}"
        ));
    }
    let section_name = match mrope_section {
        Some(_) => format!("`{rope_prefix}mrope_section`"),
        None => "the default mrope_section".to_string(),
    };
    let mrope_section = mrope_section.unwrap_or_else(|| fam.default_mrope_section.to_vec());
    let section_sum: usize = mrope_section.iter().sum();
    if mrope_section.len() != 3 || section_sum * 2 != head_dim {
        return Err(format!(
            "{section_name} {mrope_section:?} must have 3 entries summing to head_dim / 2 = {} \
             (head_dim {head_dim}), but they sum to {section_sum}",
            head_dim / 2
        ));
    }
    // transformers' Qwen3-VL always interleaves (the flag is informational); earlier families
    // never do
    let family_interleaves = fam.rope == super::family::RopeLayout::Interleaved;
    if interleaved.is_some_and(|i| i != family_interleaves) {
        return Err(format!(
            "`{rope_prefix}mrope_interleaved` is {}, but {} always {} its M-RoPE frequencies",
            !family_interleaves,
            fam.name,
            if family_interleaves {
                "interleaves"
            } else {
                "chunks"
            }
        ));
    }
    Ok((rope_theta, mrope_section, family_interleaves))
}

/// Refuse rope types other than M-RoPE (`rope_type`, or the older `type`): any other scaling
/// would place positions differently from the weights' training.
fn check_rope_type(rope: Obj<'_>, rope_name: &str) -> FieldResult<()> {
    let kind = match rope.str_opt("rope_type")? {
        Some(k) => Some(k),
        None => rope.str_opt("type")?,
    };
    match kind {
        Some(kind) if kind != "mrope" && kind != "default" => Err(format!(
            "`{rope_name}` has rope type `{kind}`; rhlens supports only Qwen2.5-VL's M-RoPE \
             (`mrope` / `default`)"
        )),
        _ => Ok(()),
    }
}

/// Sliding-window layers are not implemented; published Qwen2.5-VL configs disable them.
fn check_no_sliding_window(t: Obj<'_>, num_hidden_layers: usize) -> FieldResult<()> {
    if !t.bool_opt("use_sliding_window")?.unwrap_or(false) {
        return Ok(());
    }
    let sliding = match t.get("layer_types") {
        Some(Value::Array(types)) => types
            .iter()
            .any(|x| x.as_str() == Some("sliding_attention")),
        _ => t.usize_or("max_window_layers", 80)? < num_hidden_layers,
    };
    if sliding {
        return Err(format!(
            "`{}` is true and some layers would use sliding-window attention, which rhlens \
             does not implement",
            t.name("use_sliding_window")
        ));
    }
    Ok(())
}

/// The vision sizes that fix the tower's weight shapes, under each family's field names and
/// defaults (transformers 5.17's vision config classes).
struct VisionSizes {
    depth: usize,
    hidden_size: usize,
    intermediate_size: usize,
    out_hidden_size: usize,
}

fn vision_sizes(v: Obj<'_>, fam: &Family) -> FieldResult<VisionSizes> {
    Ok(match fam.vision {
        VisionKind::Qwen2 => {
            // Qwen2VLVisionConfig: `embed_dim` is the tower's width, `hidden_size` its output
            let embed_dim = v.usize_or("embed_dim", 1280)?;
            VisionSizes {
                depth: v.usize_or("depth", 32)?,
                hidden_size: embed_dim,
                intermediate_size: embed_dim * v.usize_or("mlp_ratio", 4)?,
                out_hidden_size: v.usize_or("hidden_size", 3584)?,
            }
        }
        VisionKind::Qwen2_5 => VisionSizes {
            depth: v.usize_or("depth", 32)?,
            hidden_size: v.usize_or("hidden_size", 3584)?,
            intermediate_size: v.usize_or("intermediate_size", 3420)?,
            out_hidden_size: v.usize_or("out_hidden_size", 3584)?,
        },
        VisionKind::Qwen3 => VisionSizes {
            depth: v.usize_or("depth", 27)?,
            hidden_size: v.usize_or("hidden_size", 1152)?,
            intermediate_size: v.usize_or("intermediate_size", 4304)?,
            out_hidden_size: v.usize_or("out_hidden_size", 3584)?,
        },
    })
}

/// The vision `hidden_act`, which must be the one the family's weights were trained with.
fn vision_activation(v: Obj<'_>, fam: &Family) -> FieldResult<String> {
    let act = v.str_opt("hidden_act")?.unwrap_or(fam.vision_act);
    let same = act == fam.vision_act || (fam.vision_act == "silu" && act == "swish");
    if !same {
        return Err(format!(
            "`{}` `{act}` is not supported; {} vision towers use `{}`",
            v.name("hidden_act"),
            fam.name,
            fam.vision_act
        ));
    }
    Ok(act.to_string())
}

fn parse_vision(v: Obj<'_>, fam: &Family) -> FieldResult<VisionConfig> {
    let VisionSizes {
        depth,
        hidden_size,
        intermediate_size,
        out_hidden_size,
    } = vision_sizes(v, fam)?;
    let num_heads = match v.usize_opt("num_heads")? {
        Some(n) => n,
        None => v.usize_or("num_attention_heads", 16)?,
    };
    let patch_size = usize_or_square(v, "patch_size", fam.default_patch_size)?;
    let temporal_patch_size = usize_or_square(v, "temporal_patch_size", 2)?;
    let spatial_merge_size = v.usize_or("spatial_merge_size", 2)?;
    let windowed = fam.vision == VisionKind::Qwen2_5;
    let window_size = v.usize_or("window_size", 112)?;
    let fullatt_block_indexes = match windowed {
        true => v
            .usize_list_opt("fullatt_block_indexes")?
            .unwrap_or_else(|| vec![7, 15, 23, 31]),
        false => (0..depth).collect(),
    };
    let (num_position_embeddings, deepstack_visual_indexes) = match fam.vision {
        VisionKind::Qwen3 => (
            v.usize_or("num_position_embeddings", 2304)?,
            v.usize_list_opt("deepstack_visual_indexes")?
                .unwrap_or_else(|| vec![8, 16, 24]),
        ),
        _ => (0, Vec::new()),
    };
    // Hub configs write `in_chans`; transformers' field is `in_channels`.
    let in_channels = match v.usize_opt("in_channels")? {
        Some(n) => n,
        None => v.usize_or("in_chans", 3)?,
    };
    let tokens_per_second = v.usize_or("tokens_per_second", 4)?;
    let hidden_act = vision_activation(v, fam)?;

    for (key, val) in [
        ("depth", depth),
        ("hidden_size", hidden_size),
        ("num_heads", num_heads),
        ("intermediate_size", intermediate_size),
        ("patch_size", patch_size),
        ("temporal_patch_size", temporal_patch_size),
        ("spatial_merge_size", spatial_merge_size),
        ("out_hidden_size", out_hidden_size),
        ("in_channels", in_channels),
    ] {
        if val == 0 {
            return Err(format!("`{}` must be positive", v.name(key)));
        }
    }
    if hidden_size % num_heads != 0 {
        return Err(format!(
            "`{}` ({hidden_size}) is not divisible by `{}` ({num_heads})",
            v.name("hidden_size"),
            v.name("num_heads")
        ));
    }
    let head_dim = hidden_size / num_heads;
    if head_dim % 4 != 0 {
        return Err(format!(
            "vision head size {} / {} = {head_dim} must be a multiple of 4 (the 2-D rotary \
             embedding splits it into height and width halves)",
            v.name("hidden_size"),
            v.name("num_heads")
        ));
    }
    if windowed && window_size < spatial_merge_size * patch_size {
        return Err(format!(
            "`{}` ({window_size}) must be at least spatial_merge_size * patch_size ({})",
            v.name("window_size"),
            spatial_merge_size * patch_size
        ));
    }
    for (key, list) in [
        ("fullatt_block_indexes", &fullatt_block_indexes),
        ("deepstack_visual_indexes", &deepstack_visual_indexes),
    ] {
        if let Some(bad) = list.iter().find(|&&i| i >= depth) {
            return Err(format!(
                "`{}` contains {bad}, but the vision tower has only {depth} blocks",
                v.name(key)
            ));
        }
    }
    let side = (num_position_embeddings as f64).sqrt() as usize;
    if num_position_embeddings > 0 && side * side != num_position_embeddings {
        return Err(format!(
            "`{}` ({num_position_embeddings}) must be a square number (a square grid of \
             learned positions)",
            v.name("num_position_embeddings")
        ));
    }

    Ok(VisionConfig {
        depth,
        hidden_size,
        num_heads,
        intermediate_size,
        patch_size,
        temporal_patch_size,
        spatial_merge_size,
        window_size,
        fullatt_block_indexes,
        out_hidden_size,
        in_channels,
        tokens_per_second,
        hidden_act,
        num_position_embeddings,
        deepstack_visual_indexes,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn supported_model_types_are_the_family_table() {
        assert_eq!(
            super::SUPPORTED_MODEL_TYPES,
            super::super::family::supported_model_types().as_slice()
        );
    }
}
