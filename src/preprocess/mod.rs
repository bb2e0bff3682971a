//! Image preprocessing for Qwen2.5-VL, identical to Hugging Face transformers' PIL backend
//! (`Qwen2VLImageProcessorPil`, transformers 5.17).
//!
//! The pipeline, step by step as the reference runs it:
//! 1. [`load_image`]: decode (JPEG and WebP with the C decoders Pillow uses), apply the EXIF
//!    orientation and convert to RGB the way `transformers.image_utils.load_image` does
//!    (`ImageOps.exif_transpose` + `convert("RGB")`).
//! 2. [`smart_resize`] picks a size whose sides are multiples of `patch_size * merge_size`
//!    with a pixel count inside `[min_pixels, max_pixels]`.
//! 3. [`resize_bicubic`] (or another Pillow filter named by the config): Pillow's resampling,
//!    byte for byte, 8-bit in and out.
//! 4. Rescale as `(u8 as f64 * rescale_factor) as f32`, normalise in `f32` as
//!    `(x - mean) / std` (numpy's order of operations).
//! 5. Patchify: rows ordered (block_row, block_col, in_row, in_col) so that every
//!    `merge_size²` consecutive rows form one merged token; columns ordered
//!    (channel, frame, py, px), the layout of the vision tower's Conv3d weight. A still image
//!    is repeated over the `temporal_patch_size` frames, and its grid has `t = 1`.

mod decode;
mod jpeg;
mod pillow_resize;
mod webp;

pub use decode::{
    decode_bytes, load_image, load_image_limited, DEFAULT_MAX_IMAGE_PIXELS, PILLOW_MAX_IMAGE_PIXELS,
};
pub use pillow_resize::{resize, resize_bicubic, Filter};

use anyhow::{anyhow, bail, Context, Result};
use image::RgbImage;
use serde_json::{Map, Value};
use std::path::Path;

/// CLIP normalisation constants (`OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD` in transformers).
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// See [`CLIP_MEAN`].
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// `min_pixels` of the Hub Qwen2.5-VL checkpoints (and of the transformers class).
pub const HUB_MIN_PIXELS: usize = 56 * 56;
/// `max_pixels` of the Hub Qwen2.5-VL checkpoints' `preprocessor_config.json`.
pub const HUB_MAX_PIXELS: usize = 28 * 28 * 16384;
/// transformers' class default `max_pixels`, used when a config file does not set one.
pub const CLASS_DEFAULT_MAX_PIXELS: usize = 28 * 28 * 1280;

/// Settings of the image processor, as read from a checkpoint's `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Lower bound on the resized pixel count (`size.shortest_edge` in transformers 5).
    pub min_pixels: usize,
    /// Upper bound on the resized pixel count (`size.longest_edge` in transformers 5).
    pub max_pixels: usize,
    /// Side of a vision patch in pixels (14).
    pub patch_size: usize,
    /// Frames per temporal patch (2); a still image is repeated this many times.
    pub temporal_patch_size: usize,
    /// Side of the block of patches merged into one language-model token (2).
    pub merge_size: usize,
    /// Per-channel mean, in `f32` as numpy holds it.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation, in `f32` as numpy holds it.
    pub image_std: [f32; 3],
    /// Resize with [`smart_resize`] + Pillow; without it the image sides must already be
    /// multiples of `patch_size * merge_size`.
    pub do_resize: bool,
    /// Pillow filter for the resize (`resample` in the config; BICUBIC for Qwen).
    pub resample: Filter,
    /// Multiply by `rescale_factor` (in `f64`, then cast to `f32`).
    pub do_rescale: bool,
    /// Usually `1/255`.
    pub rescale_factor: f64,
    /// Apply `(x - mean) / std`.
    pub do_normalize: bool,
    /// Kept for completeness: inputs here are always RGB already (see [`load_image`]).
    pub do_convert_rgb: bool,
    /// Images whose header claims more pixels are refused before decoding (not a key of the
    /// config file: Pillow's decompression-bomb limit, [`DEFAULT_MAX_IMAGE_PIXELS`]).
    pub max_image_pixels: u64,
}

impl Default for ImageProcessorConfig {
    /// The values of the Hub Qwen2.5-VL checkpoints' `preprocessor_config.json`.
    fn default() -> Self {
        ImageProcessorConfig {
            min_pixels: HUB_MIN_PIXELS,
            max_pixels: HUB_MAX_PIXELS,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: CLIP_MEAN.map(|v| v as f32),
            image_std: CLIP_STD.map(|v| v as f32),
            do_resize: true,
            resample: Filter::Bicubic,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            do_convert_rgb: true,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

impl ImageProcessorConfig {
    /// Reads a checkpoint's `preprocessor_config.json`.
    ///
    /// Accepts the Hub layout (top-level `min_pixels` / `max_pixels`) and the transformers-5
    /// layout (`size: {shortest_edge, longest_edge}`); when both are present the top-level keys
    /// win, as in transformers. Keys a file leaves out take transformers' class defaults (note:
    /// `max_pixels` then defaults to `28*28*1280`, not the Hub value).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        Self::from_json_str(&text).map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    /// Parses the text of a `preprocessor_config.json` (see [`Self::from_file`]).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("invalid JSON")?;
        let obj = value
            .as_object()
            .ok_or_else(|| anyhow!("expected a JSON object"))?;
        let mut cfg = ImageProcessorConfig {
            max_pixels: CLASS_DEFAULT_MAX_PIXELS,
            ..Default::default()
        };

        // Pixel budget. transformers: `size` from the file (or the class default when absent),
        // then `min_pixels` / `max_pixels` from the file overwrite its two entries.
        let size = get(obj, "size");
        let (mut min_px, mut max_px) = match size {
            None => (Some(HUB_MIN_PIXELS), Some(CLASS_DEFAULT_MAX_PIXELS)),
            Some(Value::Object(s)) => (
                // `min_pixels`/`max_pixels` inside `size` is how transformers 4.4x saved them;
                // transformers 5 ignores them there, rhlens accepts them as a fallback.
                opt_usize(s, "shortest_edge", "size.shortest_edge")?.or(opt_usize(
                    s,
                    "min_pixels",
                    "size.min_pixels",
                )?),
                opt_usize(s, "longest_edge", "size.longest_edge")?.or(opt_usize(
                    s,
                    "max_pixels",
                    "size.max_pixels",
                )?),
            ),
            Some(other) => bail!("`size` must be an object, got {other}"),
        };
        if let Some(v) = opt_usize(obj, "min_pixels", "min_pixels")? {
            min_px = Some(v);
        }
        if let Some(v) = opt_usize(obj, "max_pixels", "max_pixels")? {
            max_px = Some(v);
        }

        if let Some(v) = opt_bool(obj, "do_resize")? {
            cfg.do_resize = v;
        }
        match (min_px, max_px) {
            (Some(mn), Some(mx)) => {
                cfg.min_pixels = mn;
                cfg.max_pixels = mx;
            }
            _ if cfg.do_resize => bail!(
                "the pixel budget needs both `size.shortest_edge` and `size.longest_edge` \
                 (or `min_pixels` and `max_pixels`)"
            ),
            _ => {
                cfg.min_pixels = min_px.unwrap_or(HUB_MIN_PIXELS);
                cfg.max_pixels = max_px.unwrap_or(CLASS_DEFAULT_MAX_PIXELS);
            }
        }

        if let Some(v) = opt_usize(obj, "patch_size", "patch_size")? {
            cfg.patch_size = v;
        }
        if let Some(v) = opt_usize(obj, "temporal_patch_size", "temporal_patch_size")? {
            cfg.temporal_patch_size = v;
        }
        if let Some(v) = opt_usize(obj, "merge_size", "merge_size")? {
            cfg.merge_size = v;
        }
        if let Some(v) = opt_channels(obj, "image_mean")? {
            cfg.image_mean = v;
        }
        if let Some(v) = opt_channels(obj, "image_std")? {
            cfg.image_std = v;
        }
        if let Some(code) = get(obj, "resample") {
            let code = code
                .as_i64()
                .ok_or_else(|| anyhow!("`resample` must be an integer, got {code}"))?;
            cfg.resample = Filter::from_pil_code(code).ok_or_else(|| {
                anyhow!(
                    "`resample` {code} is not supported (use 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, \
                     4 BOX or 5 HAMMING)"
                )
            })?;
        }
        if let Some(v) = opt_bool(obj, "do_rescale")? {
            cfg.do_rescale = v;
        }
        if let Some(v) = get(obj, "rescale_factor") {
            cfg.rescale_factor = v
                .as_f64()
                .ok_or_else(|| anyhow!("`rescale_factor` must be a number, got {v}"))?;
        }
        if let Some(v) = opt_bool(obj, "do_normalize")? {
            cfg.do_normalize = v;
        }
        if let Some(v) = opt_bool(obj, "do_convert_rgb")? {
            cfg.do_convert_rgb = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Side multiple of resized images: `patch_size * merge_size` (28).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Checks the settings the pipeline divides by or reshapes with.
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || self.merge_size == 0 || self.temporal_patch_size == 0 {
            bail!(
                "patch_size ({}), merge_size ({}) and temporal_patch_size ({}) must be positive",
                self.patch_size,
                self.merge_size,
                self.temporal_patch_size
            );
        }
        if self.max_image_pixels == 0 {
            return crate::error::invalid("max_image_pixels", "must be at least 1");
        }
        if self.do_resize && (self.min_pixels == 0 || self.max_pixels == 0) {
            bail!(
                "min_pixels ({}) and max_pixels ({}) must be positive",
                self.min_pixels,
                self.max_pixels
            );
        }
        Ok(())
    }
}

fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn opt_usize(obj: &Map<String, Value>, key: &str, label: &str) -> Result<Option<usize>> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| anyhow!("`{label}` must be a non-negative integer, got {v}")),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| anyhow!("`{key}` must be true or false, got {v}")),
    }
}

/// A per-channel constant: a list of 3 numbers, or one number for all channels.
fn opt_channels(obj: &Map<String, Value>, key: &str) -> Result<Option<[f32; 3]>> {
    let Some(v) = get(obj, key) else {
        return Ok(None);
    };
    let bad = || anyhow!("`{key}` must be a number or a list of 3 numbers, got {v}");
    if let Some(x) = v.as_f64() {
        return Ok(Some([x as f32; 3]));
    }
    let list = v.as_array().ok_or_else(bad)?;
    if list.len() != 3 {
        return Err(bad());
    }
    let mut out = [0f32; 3];
    for (o, x) in out.iter_mut().zip(list) {
        // numpy: Python float (f64) -> float32, round to nearest
        *o = x.as_f64().ok_or_else(bad)? as f32;
    }
    Ok(Some(out))
}

/// transformers' `smart_resize`: returns `(height, width)`, both multiples of `factor`.
///
/// Same arithmetic as the Python (f64 true division, `round` with ties to even, `floor`/`ceil`),
/// so results agree for every size. Errors, each one line: an empty side, an aspect ratio above
/// 200 (transformers 5.17 checks only this; tiny images are upscaled to `min_pixels`), or a
/// zero `factor` / pixel bound.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 {
        bail!("image size {width}x{height} is empty");
    }
    if factor == 0 || min_pixels == 0 || max_pixels == 0 {
        bail!(
            "smart_resize needs positive factor, min_pixels and max_pixels \
             (got {factor}, {min_pixels}, {max_pixels})"
        );
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > 200.0 {
        bail!(
            "image {width}x{height} has aspect ratio {ratio}, above the limit of 200 \
             for Qwen2.5-VL preprocessing"
        );
    }
    let area = height as u128 * width as u128;
    let mut h_bar = (h / f).round_ties_even() as u128 * factor as u128;
    let mut w_bar = (w / f).round_ties_even() as u128 * factor as u128;
    if h_bar * w_bar > max_pixels as u128 {
        let beta = (area as f64 / max_pixels as f64).sqrt();
        h_bar = ((h / beta / f).floor() as u128 * factor as u128).max(factor as u128);
        w_bar = ((w / beta / f).floor() as u128 * factor as u128).max(factor as u128);
    } else if h_bar * w_bar < (min_pixels as u128) {
        let beta = (min_pixels as f64 / area as f64).sqrt();
        h_bar = (h * beta / f).ceil() as u128 * factor as u128;
        w_bar = (w * beta / f).ceil() as u128 * factor as u128;
    }
    let to_usize = |v: u128| {
        usize::try_from(v).map_err(|_| anyhow!("smart_resize of {width}x{height} overflows"))
    };
    Ok((to_usize(h_bar)?, to_usize(w_bar)?))
}

/// Model input for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessedImage {
    /// Row-major `[n_patches, patch_dim]`; see the module docs for the row and column order.
    pub pixel_values: Vec<f32>,
    /// `grid_thw[0] * grid_thw[1] * grid_thw[2]`.
    pub n_patches: usize,
    /// `3 * temporal_patch_size * patch_size²` (1176).
    pub patch_dim: usize,
    /// `[t, h, w]` in patches before merging (`image_grid_thw`); `t` is 1 for an image.
    pub grid_thw: [usize; 3],
    /// Merge size the rows are grouped by.
    pub merge_size: usize,
    /// Input `(width, height)`.
    pub original_size: (usize, usize),
    /// `(width, height)` after [`smart_resize`].
    pub resized_size: (usize, usize),
}

impl PreprocessedImage {
    /// Grid of merged tokens `(rows, cols)` = `(grid_h / merge, grid_w / merge)`.
    pub fn merged_grid(&self) -> (usize, usize) {
        (
            self.grid_thw[1] / self.merge_size,
            self.grid_thw[2] / self.merge_size,
        )
    }

    /// Number of image tokens in the prompt: `t * h * w / merge²`.
    pub fn n_merged_tokens(&self) -> usize {
        self.n_patches / (self.merge_size * self.merge_size)
    }

    /// One row of `pixel_values`.
    pub fn patch(&self, row: usize) -> &[f32] {
        &self.pixel_values[row * self.patch_dim..(row + 1) * self.patch_dim]
    }
}

/// Runs the Qwen2-VL image processor (PIL backend) on one RGB image.
pub fn preprocess(img: &RgbImage, cfg: &ImageProcessorConfig) -> Result<PreprocessedImage> {
    cfg.validate()?;
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    if w0 == 0 || h0 == 0 {
        bail!("image size {w0}x{h0} is empty");
    }
    let resized;
    let img = if cfg.do_resize {
        let (h, w) = smart_resize(h0, w0, cfg.factor(), cfg.min_pixels, cfg.max_pixels)?;
        let (w32, h32) = (u32::try_from(w), u32::try_from(h));
        let (Ok(w32), Ok(h32)) = (w32, h32) else {
            bail!("resized size {w}x{h} of a {w0}x{h0} image is too large");
        };
        resized = resize(img, w32, h32, cfg.resample);
        &resized
    } else {
        img
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (p, m, t) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    if h % (p * m) != 0 || w % (p * m) != 0 {
        bail!(
            "image size {w}x{h} is not a multiple of patch_size * merge_size = {} \
             (enable do_resize or resize the image first)",
            p * m
        );
    }

    // Every output value depends only on (channel, byte), so a 3x256 table reproduces the
    // element-wise numpy ops exactly: f64 rescale cast to f32, then f32 normalisation.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (byte, out) in table.iter_mut().enumerate() {
            let mut v = if cfg.do_rescale {
                (byte as f64 * cfg.rescale_factor) as f32
            } else {
                byte as f32
            };
            if cfg.do_normalize {
                v = (v - cfg.image_mean[c]) / cfg.image_std[c];
            }
            *out = v;
        }
    }

    let (gh, gw) = (h / p, w / p);
    let n_patches = gh * gw;
    let patch_dim = 3 * t * p * p;
    let mut pixel_values = Vec::with_capacity(n_patches * patch_dim);
    let raw = img.as_raw();
    let mut frame = vec![0f32; p * p];
    for br in 0..gh / m {
        for bc in 0..gw / m {
            for mr in 0..m {
                for mc in 0..m {
                    let (y0, x0) = ((br * m + mr) * p, (bc * m + mc) * p);
                    for (c, table) in lut.iter().enumerate() {
                        for py in 0..p {
                            let row = &raw[((y0 + py) * w + x0) * 3..((y0 + py) * w + x0 + p) * 3];
                            for (dst, px) in frame[py * p..(py + 1) * p]
                                .iter_mut()
                                .zip(row.chunks_exact(3))
                            {
                                *dst = table[px[c] as usize];
                            }
                        }
                        // the same frame for each temporal slot
                        for _ in 0..t {
                            pixel_values.extend_from_slice(&frame);
                        }
                    }
                }
            }
        }
    }
    debug_assert_eq!(pixel_values.len(), n_patches * patch_dim);
    Ok(PreprocessedImage {
        pixel_values,
        n_patches,
        patch_dim,
        grid_thw: [1, gh, gw],
        merge_size: m,
        original_size: (w0, h0),
        resized_size: (w, h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_rescale_factor_parses_to_one_over_255() {
        let cfg = ImageProcessorConfig::from_json_str(
            r#"{"rescale_factor": 0.00392156862745098, "min_pixels": 1, "max_pixels": 2}"#,
        )
        .unwrap();
        assert_eq!(cfg.rescale_factor, 1.0 / 255.0);
    }

    #[test]
    fn merged_grid_of_640x480() {
        // 640x480 -> 644x476 -> 46x34 patches -> 23x17 merged tokens (391).
        let img = RgbImage::new(640, 480);
        let out = preprocess(&img, &ImageProcessorConfig::default()).unwrap();
        assert_eq!(out.resized_size, (644, 476));
        assert_eq!(out.grid_thw, [1, 34, 46]);
        assert_eq!(out.merged_grid(), (17, 23));
        assert_eq!(out.n_merged_tokens(), 391);
    }
}
