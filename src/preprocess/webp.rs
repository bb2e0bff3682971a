//! WebP decoded with libwebp's animation decoder, the way Pillow's `WebPImagePlugin` reads every
//! WebP file (still or animated, lossy or lossless): the first frame composed on the canvas as
//! straight (not premultiplied) RGBA, whose alpha `convert("RGB")` then drops.
use anyhow::{bail, Result};
use image::RgbImage;
use libwebp_sys as webp;

use super::decode::{check_pixels, Decoded};

/// Frees the decoder however decoding ends.
struct AnimDecoder(*mut webp::WebPAnimDecoder);

impl Drop for AnimDecoder {
    fn drop(&mut self) {
        // SAFETY: the pointer came from WebPAnimDecoderNew and is deleted once, here.
        unsafe { webp::WebPAnimDecoderDelete(self.0) }
    }
}

pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<Decoded> {
    let (mut w, mut h) = (0, 0);
    // SAFETY: libwebp reads `bytes.len()` bytes of the slice and writes the two integers.
    let ok = unsafe { webp::WebPGetInfo(bytes.as_ptr(), bytes.len(), &mut w, &mut h) };
    if ok == 0 {
        bail!("not a valid WebP file");
    }
    // The canvas is checked before the decoder allocates it.
    check_pixels(w as u64, h as u64, max_pixels)?;
    let data = webp::WebPData {
        bytes: bytes.as_ptr(),
        size: bytes.len(),
    };
    // SAFETY: the options are initialised by libwebp before use; `data` outlives the decoder,
    // which is dropped at the end of this function.
    let decoder = unsafe {
        let mut options = std::mem::zeroed::<webp::WebPAnimDecoderOptions>();
        if webp::WebPAnimDecoderOptionsInit(&mut options) == 0 {
            bail!("libwebp rejected its own decoder options");
        }
        options.color_mode = webp::WEBP_CSP_MODE::MODE_RGBA;
        options.use_threads = 0;
        AnimDecoder(webp::WebPAnimDecoderNew(&data, &options))
    };
    if decoder.0.is_null() {
        bail!("not a valid WebP file");
    }
    // SAFETY: the decoder is live; GetInfo fills the struct, GetNext points `frame` at a canvas
    // of canvas_width * canvas_height * 4 bytes owned by the decoder.
    let (info, frame) = unsafe {
        let mut info = std::mem::zeroed::<webp::WebPAnimInfo>();
        if webp::WebPAnimDecoderGetInfo(decoder.0, &mut info) == 0 {
            bail!("cannot read the WebP canvas");
        }
        let mut frame: *mut u8 = std::ptr::null_mut();
        let mut timestamp = 0;
        if webp::WebPAnimDecoderGetNext(decoder.0, &mut frame, &mut timestamp) == 0
            || frame.is_null()
        {
            bail!("cannot decode the first WebP frame (corrupt or truncated file)");
        }
        (info, frame)
    };
    let (cw, ch) = (info.canvas_width, info.canvas_height);
    check_pixels(u64::from(cw), u64::from(ch), max_pixels)?;
    let len = cw as usize * ch as usize * 4;
    // SAFETY: see above; the slice is read before the decoder is dropped.
    let rgba = unsafe { std::slice::from_raw_parts(frame, len) };
    let rgb: Vec<u8> = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let exif = exif_chunk(&decoder);
    let image = RgbImage::from_raw(cw, ch, rgb)
        .ok_or_else(|| anyhow::anyhow!("WebP canvas {cw}x{ch} does not match its pixels"))?;
    Ok(Decoded { image, exif })
}

/// The file's EXIF chunk (Pillow reads the orientation from it), without an `Exif\0\0` prefix.
fn exif_chunk(decoder: &AnimDecoder) -> Option<Vec<u8>> {
    // SAFETY: the demuxer belongs to the live decoder; the chunk bytes are copied out before
    // the iterator is released.
    unsafe {
        let demux = webp::WebPAnimDecoderGetDemuxer(decoder.0);
        let mut iter = std::mem::zeroed::<webp::WebPChunkIterator>();
        if demux.is_null() || webp::WebPDemuxGetChunk(demux, c"EXIF".as_ptr(), 1, &mut iter) == 0 {
            return None;
        }
        let chunk = std::slice::from_raw_parts(iter.chunk.bytes, iter.chunk.size).to_vec();
        webp::WebPDemuxReleaseChunkIterator(&mut iter);
        Some(match chunk.strip_prefix(b"Exif\0\0") {
            Some(rest) => rest.to_vec(),
            None => chunk,
        })
    }
}
