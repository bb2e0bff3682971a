//! Loading a checkpoint directory of a supported family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; the
//! table is [`family`]) as published on the Hugging Face Hub.
//!
//! * [`ModelConfig`]: `config.json` (flat Hub layout or nested transformers-5 layout) and
//!   `generation_config.json`;
//! * [`Weights`]: memory-mapped safetensors (single file or shards) under canonical Hub names;
//! * [`TextTokenizer`]: `tokenizer.json`, with a streaming [`DecodeStream`];
//! * [`ChatTemplate`]: the checkpoint's chat template, rendered as Hugging Face renders it;
//! * [`resolve_model`]: a directory, or an `owner/name[@revision]` Hub id via the local
//!   Hugging Face cache (downloading when allowed).
//!
//! The image preprocessor configuration is read elsewhere. Every failure a user can cause is a
//! [`CheckpointError`] whose message is one line naming the file or field at fault.

pub mod chat_template;
pub mod config;
pub mod error;
pub mod family;
pub mod hub;
pub mod tokenizer;
pub mod weights;

pub use chat_template::ChatTemplate;
pub use config::{
    ModelConfig, MoeConfig, PatchGeometry, TextConfig, VisionConfig, PIXEL_SETTING_LIMIT,
    SUPPORTED_ACTIVATIONS, SUPPORTED_MODEL_TYPES,
};
pub use error::{CheckpointError, Result};
pub use family::{family, DecoderKind, Family, RopeLayout, VisionKind, FAMILIES};
pub use hub::{resolve_model, resolve_model_with, HubId, HubOptions};
pub use tokenizer::{DecodeStream, TextTokenizer};
pub use weights::{canonical_name, Weights};
