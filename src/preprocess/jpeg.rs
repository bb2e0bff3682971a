//! JPEG decoded with libjpeg-turbo's decoder (accurate integer IDCT, fancy upsampling), the
//! decoder Pillow links, set up the way Pillow's `JpegImagePlugin` sets it up.
use anyhow::{anyhow, bail, Result};
use image::RgbImage;
use mozjpeg::{ColorSpace, Decompress, Marker};

use super::decode::{check_pixels, Decoded};

/// Decodes a whole JPEG file to RGB, as `Image.open(...).convert("RGB")` does.
///
/// Pillow picks the mode from the frame's component count (1: `L`, 3: `RGB`, 4: `CMYK`, others
/// refused) and reads CMYK as inverted ("Adobe conventions", always), then converts to RGB with
/// its own formula; libjpeg does the YCbCr/YCCK conversion in both.
pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<Decoded> {
    if !has_end_marker(bytes) {
        // libjpeg fills a cut-off scan with grey; Pillow refuses such a file
        // ("image file is truncated"), and so does rhlens.
        bail!("truncated JPEG (no end-of-image marker after the last scan)");
    }
    // libjpeg reports errors by unwinding out of its callback; catch them here as one message.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_unwinding(bytes, max_pixels)
    }));
    match caught {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(|s| s.trim_start_matches("libjpeg fatal error: ").to_string())
                .unwrap_or_else(|| "the JPEG decoder failed".to_string());
            Err(anyhow!("{}", msg.trim()))
        }
    }
}

fn decode_unwinding(bytes: &[u8], max_pixels: u64) -> Result<Decoded> {
    let header = Decompress::with_markers(&[Marker::APP(1)]).from_mem(bytes)?;
    let (w, h) = (header.width(), header.height());
    check_pixels(w as u64, h as u64, max_pixels)?;
    // Pillow keeps the first APP1 that holds EXIF.
    let exif = header
        .markers()
        .find(|m| m.data.starts_with(b"Exif\0\0"))
        .map(|m| m.data[6..].to_vec());
    let layers = header.components().len();
    let rgb: Vec<u8> = match layers {
        1 => {
            let mut started = header.grayscale()?;
            let grey: Vec<u8> = started.read_scanlines()?;
            grey.iter().flat_map(|&v| [v; 3]).collect()
        }
        3 => header.rgb()?.read_scanlines()?,
        4 => {
            let mut started = header.to_colorspace(ColorSpace::JCS_CMYK)?;
            let cmyk: Vec<u8> = started.read_scanlines()?;
            cmyk.chunks_exact(4)
                .flat_map(inverted_cmyk_to_rgb)
                .collect()
        }
        n => bail!("cannot handle {n}-layer JPEG images"),
    };
    let image = RgbImage::from_raw(w as u32, h as u32, rgb).ok_or_else(|| {
        anyhow!("the JPEG decoder returned fewer rows than the {w}x{h} image has")
    })?;
    Ok(Decoded { image, exif })
}

/// Pillow's CMYK → RGB (`cmyk2rgb` in its Convert.c) on libjpeg's raw CMYK samples, which Pillow
/// stores inverted (`CMYK;I`): `c = 255 - raw_c`, `k = 255 - raw_k`, so `255 - k = raw_k`.
fn inverted_cmyk_to_rgb(raw: &[u8]) -> [u8; 3] {
    let nk = i32::from(raw[3]);
    let channel = |raw_c: u8| {
        let c = 255 - i32::from(raw_c);
        // MULDIV255(c, nk): (c * nk + 128) / 255, rounded as Pillow does with shifts
        let t = c * nk + 128;
        let scaled = ((t >> 8) + t) >> 8;
        (nk - scaled).clamp(0, 255) as u8
    };
    [channel(raw[0]), channel(raw[1]), channel(raw[2])]
}

/// Whether an end-of-image marker (FF D9) follows the last start-of-scan marker (FF DA).
/// Entropy-coded data cannot contain either (0xFF bytes are stuffed), so a file cut inside
/// its last scan has none; an embedded EXIF thumbnail's markers come before the main scans.
fn has_end_marker(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(p) => bytes[p..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}
