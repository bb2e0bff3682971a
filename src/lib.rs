//! rhlens: measure how multimodal reasoning models stop looking at the image as they think longer.
//!
//! Layers (see the README): [`checkpoint`] and [`preprocess`] read what a checkpoint ships,
//! [`model`] runs Qwen2.5-VL on libtorch, [`generate`] drives decoding and length control,
//! [`probe`] turns observed attention into per-role traces, [`render`] draws figures from saved
//! files, and [`bench`] runs and scores benchmarks.
pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod error;
pub mod formats;
pub mod fsutil;
pub mod generate;
pub mod model;
pub mod preprocess;
pub mod probe;
pub mod prompt;
pub mod render;
pub mod report;
pub mod runtime;
pub mod sampling;
pub mod settings;
pub mod steer;
pub mod sweep;
pub mod system;

pub use system::{cuda_device_name, libtorch_version, peak_rss_mib};
