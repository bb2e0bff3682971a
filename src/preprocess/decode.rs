//! Image files to RGB pixels exactly as transformers' `load_image` gets them from Pillow:
//! `Image.open`, `ImageOps.exif_transpose`, `convert("RGB")`.
//!
//! JPEG and WebP go through the C decoders Pillow itself uses (see [`super::jpeg`] and
//! [`super::webp`]); PNG, GIF, BMP and TIFF through the image crate, whose output for them
//! is compared with Pillow's in the tests. The image's size is read from its header and
//! checked against a pixel limit before any pixel buffer is allocated.
use anyhow::{anyhow, bail, Result};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::path::Path;

use crate::error::InvalidSetting;

/// Pillow's `Image.MAX_IMAGE_PIXELS` (89,478,485: a 32-bit RGBA buffer of 1/4 GiB, as
/// `int(1024 * 1024 * 1024 // 4 // 3)`).
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 1024 * 1024 * 1024 / 4 / 3;

/// Default for `max_image_pixels`: twice [`PILLOW_MAX_IMAGE_PIXELS`], where Pillow stops
/// warning and refuses the file (`DecompressionBombError`). Every image a Python pipeline opens
/// therefore opens here, and a header claiming more is refused before decoding.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 2 * PILLOW_MAX_IMAGE_PIXELS;

/// A decoded image before its EXIF orientation is applied.
pub(super) struct Decoded {
    pub image: RgbImage,
    /// The EXIF block (TIFF header first), when the file carries one outside its image data.
    pub exif: Option<Vec<u8>>,
}

/// The header said more pixels than allowed; the caller names the file and the setting.
#[derive(Debug)]
pub(super) struct TooManyPixels {
    width: u64,
    height: u64,
}

impl std::fmt::Display for TooManyPixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} pixels", self.width, self.height)
    }
}

impl std::error::Error for TooManyPixels {}

/// Refuses a `width x height` image above `max_pixels` (and an empty one).
pub(super) fn check_pixels(width: u64, height: u64, max_pixels: u64) -> Result<()> {
    if width == 0 || height == 0 {
        bail!("image size {width}x{height} is empty");
    }
    if width.saturating_mul(height) > max_pixels {
        return Err(TooManyPixels { width, height }.into());
    }
    Ok(())
}

/// Loads an image file as RGB, like transformers' `load_image`, refusing images above
/// [`DEFAULT_MAX_IMAGE_PIXELS`]. See [`load_image_limited`].
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    load_image_limited(path, DEFAULT_MAX_IMAGE_PIXELS)
}

/// Loads a PNG, JPEG, WebP, GIF, BMP or TIFF file as RGB, pixel for pixel what
/// `ImageOps.exif_transpose(Image.open(path)).convert("RGB")` gives: the EXIF orientation is
/// applied; alpha is dropped (no compositing); grey is replicated; palettes are looked up (a
/// transparent index keeps its palette colour); 16-bit colour keeps the high byte and 16-bit grey
/// is clamped to 255 (Pillow's `I;16` to `RGB`).
///
/// An image whose header claims more than `max_image_pixels` pixels is refused before it is
/// decoded, naming the setting (an [`InvalidSetting`]). Every other failure is one line naming
/// the file.
pub fn load_image_limited(path: impl AsRef<Path>, max_image_pixels: u64) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes =
        std::fs::read(path).map_err(|e| anyhow!("cannot read image {}: {e}", path.display()))?;
    decode_bytes(&bytes, max_image_pixels).map_err(|e| match e.downcast_ref::<TooManyPixels>() {
        Some(size) => InvalidSetting::new(
            "max_image_pixels",
            format!(
                "is {max_image_pixels}, below the {} of image {}; raise it to decode this image",
                size,
                path.display()
            ),
        )
        .into(),
        None => anyhow!("cannot decode image {}: {}", path.display(), one_line(&e)),
    })
}

/// Decodes the bytes of an image file (see [`load_image_limited`]).
pub fn decode_bytes(bytes: &[u8], max_image_pixels: u64) -> Result<RgbImage> {
    let format = sniff(bytes)
        .ok_or_else(|| anyhow!("not a supported image file (PNG, JPEG, WebP, GIF, BMP or TIFF)"))?;
    let decoded = match format {
        ImageFormat::Jpeg => super::jpeg::decode(bytes, max_image_pixels)?,
        ImageFormat::WebP => super::webp::decode(bytes, max_image_pixels)?,
        other => return decode_with_image_crate(bytes, other, max_image_pixels),
    };
    let orientation = decoded
        .exif
        .as_deref()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    Ok(oriented(decoded.image, orientation))
}

/// The format from the file's first bytes (the extension is not trusted, as in Pillow).
fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    let format = match bytes {
        [0xFF, 0xD8, 0xFF, ..] => ImageFormat::Jpeg,
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => ImageFormat::WebP,
        [0x89, b'P', b'N', b'G', ..] => ImageFormat::Png,
        [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => ImageFormat::Gif,
        [b'B', b'M', ..] => ImageFormat::Bmp,
        [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => ImageFormat::Tiff,
        _ => return None,
    };
    Some(format)
}

fn decode_with_image_crate(bytes: &[u8], format: ImageFormat, max_pixels: u64) -> Result<RgbImage> {
    if format == ImageFormat::Tiff && matches!(tiff_compression(bytes), Some(6 | 7)) {
        // The image crate decodes its JPEG strips with another JPEG decoder than Pillow's.
        bail!("JPEG-compressed TIFF is not supported (convert the image to PNG or JPEG)");
    }
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    // The pixel limit below replaces the crate's own allocation limit.
    reader.no_limits();
    let mut decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    check_pixels(u64::from(w), u64::from(h), max_pixels)?;
    // An unreadable EXIF block leaves the image as stored (Pillow ignores it too).
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let decoded = DynamicImage::from_decoder(decoder)?;
    Ok(oriented(to_rgb_like_pillow(decoded), orientation))
}

/// The Compression tag (259) of a TIFF file's first image, when it can be read.
fn tiff_compression(bytes: &[u8]) -> Option<u16> {
    let big_endian = bytes.starts_with(b"MM");
    // an unsigned integer of `len` bytes at `at`, in the file's byte order
    let read = |at: usize, len: usize| -> Option<u32> {
        let field = bytes.get(at..at + len)?;
        let push = |acc: u32, byte: &u8| (acc << 8) | u32::from(*byte);
        Some(match big_endian {
            true => field.iter().fold(0, push),
            false => field.iter().rev().fold(0, push),
        })
    };
    let ifd = read(4, 4)? as usize;
    let entries = read(ifd, 2)? as usize;
    (0..entries)
        .map(|i| ifd + 2 + 12 * i)
        .find(|&entry| read(entry, 2) == Some(259))
        .and_then(|entry| read(entry + 8, 2))
        .map(|value| value as u16)
}

fn oriented(image: RgbImage, orientation: Orientation) -> RgbImage {
    let mut image = DynamicImage::ImageRgb8(image);
    image.apply_orientation(orientation);
    image.into_rgb8()
}

/// Decoder messages can span lines; errors here are one line.
fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pillow's `convert("RGB")` for the layouts the image crate decodes to.
fn to_rgb_like_pillow(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let map16 = |raw: &[u16], channels: usize, f: &dyn Fn(&[u16]) -> [u8; 3]| {
        let buf: Vec<u8> = raw.chunks_exact(channels).flat_map(f).collect();
        // Exact length by construction.
        RgbImage::from_raw(w, h, buf).expect("converted buffer matches its dimensions")
    };
    let hi = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(i) => i,
        // RGBA, LA, L (8-bit): drop alpha / replicate grey, as the image crate does too.
        DynamicImage::ImageRgba8(_)
        | DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_) => img.to_rgb8(),
        // Pillow reads 16-bit PNG colour (and grey + alpha, as RGBA) with its `;16B` rawmodes,
        // which keep the most significant byte.
        DynamicImage::ImageRgb16(i) => map16(i.as_raw(), 3, &|p| [hi(p[0]), hi(p[1]), hi(p[2])]),
        DynamicImage::ImageRgba16(i) => map16(i.as_raw(), 4, &|p| [hi(p[0]), hi(p[1]), hi(p[2])]),
        DynamicImage::ImageLumaA16(i) => map16(i.as_raw(), 2, &|p| [hi(p[0]); 3]),
        // 16-bit grey opens as `I;16`, whose conversion to RGB clamps to 255.
        DynamicImage::ImageLuma16(i) => map16(i.as_raw(), 1, &|p| [p[0].min(255) as u8; 3]),
        other => other.to_rgb8(),
    }
}
