//! Pillow-exact convolution resampling of 8-bit RGB images.
//!
//! This reproduces `Image.resize(size, filter)` of Pillow for the convolution filters (what
//! Pillow's `ImagingResample` does), byte for byte:
//! - per output column / row, the filter is evaluated in `f64` at the source pixel centres, with
//!   its support widened by the downscale factor (antialiasing), and normalised to sum 1;
//! - the normalised weights are turned into fixed point with 22 fractional bits
//!   (`32 - 8 - 2`), rounding half away from zero;
//! - pixels are accumulated in `i32` starting from one half (`1 << 21`) and the result is
//!   shifted back and clamped to `0..=255`;
//! - two passes through an 8-bit intermediate image: normally horizontal first (only over the
//!   source rows the vertical pass reads), vertical first when the height shrinks much more than
//!   the width (see `vertical_first`); a pass whose size does not change is skipped, and an
//!   unchanged size returns a copy.

use image::RgbImage;

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's convolution resampling filters, with their Pillow / Hugging Face
/// `PILImageResampling` codes in [`Filter::from_pil_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.Resampling.BOX` (code 4).
    Box,
    /// `Image.Resampling.BILINEAR` (code 2).
    Bilinear,
    /// `Image.Resampling.HAMMING` (code 5).
    Hamming,
    /// `Image.Resampling.BICUBIC` (code 3), Keys cubic with `a = -0.5`.
    Bicubic,
    /// `Image.Resampling.LANCZOS` (code 1), 3 lobes.
    Lanczos,
}

impl Filter {
    /// Maps a `resample` code as stored in `preprocessor_config.json` (Pillow's numbering).
    /// NEAREST (0) is not a convolution in Pillow and is not supported here.
    pub fn from_pil_code(code: i64) -> Option<Filter> {
        match code {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            _ => None,
        }
    }

    /// Pillow's numbering of this filter.
    pub fn pil_code(self) -> i64 {
        match self {
            Filter::Lanczos => 1,
            Filter::Bilinear => 2,
            Filter::Bicubic => 3,
            Filter::Box => 4,
            Filter::Hamming => 5,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    // Same expressions (and so the same f64 rounding) as Pillow's filter functions.
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes these constants as C floats.
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Fixed-point weights of one resampling pass: for output index `i`, source indices
/// `start[i] .. start[i] + len[i]` with weights `weights[i * ksize ..][.. len[i]]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

impl Coeffs {
    fn window(&self, i: usize) -> (usize, &[i32]) {
        let off = i * self.ksize;
        (self.start[i], &self.weights[off..off + self.len[i]])
    }
}

/// Pillow's `precompute_coeffs` (box = whole image) followed by `normalize_coeffs_8bpc`.
fn precompute_coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    // Pillow takes the box as C floats: `(double)(in1 - in0)` is exact for any real size.
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;

    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C `(int)` truncates toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let mut ww = 0.0f64;
        for (x, kx) in k.iter_mut().take(n).enumerate() {
            let w = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..xx * ksize + n];
        for (dst, &w) in row.iter_mut().zip(k.iter()) {
            let w = if ww != 0.0 { w / ww } else { w };
            let scaled = w * (1u32 << PRECISION_BITS) as f64;
            *dst = if w < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        start.push(xmin as usize);
        len.push(n);
    }
    Coeffs {
        ksize,
        start,
        len,
        weights,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over source rows `rows` of a packed RGB buffer `src` of width `src_w`.
fn resample_horizontal(
    src: &[u8],
    src_w: usize,
    rows: std::ops::Range<usize>,
    coeffs: &Coeffs,
    out_w: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (src_row, out_row) in src
        .chunks_exact(src_w * 3)
        .skip(rows.start)
        .take(rows.len())
        .zip(out.chunks_exact_mut(out_w * 3))
    {
        for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
            let (xmin, k) = coeffs.window(xx);
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (p, &w) in src_row[xmin * 3..].chunks_exact(3).zip(k) {
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
    out
}

/// Vertical pass; `row_offset` is the source row that `src`'s first row stands for.
fn resample_vertical(
    src: &[u8],
    width: usize,
    row_offset: usize,
    coeffs: &Coeffs,
    out_h: usize,
) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; out_h * stride];
    // Row-wise accumulation: the integer sums are exact, so the order of terms does not matter.
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, k) = coeffs.window(yy);
        acc.fill(HALF);
        for (dy, &w) in k.iter().enumerate() {
            let y = ymin + dy - row_offset;
            let src_row = &src[y * stride..(y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(src_row) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Pillow (since its "resize vertically first" change, in the pinned Pillow 13) runs the
/// vertical pass first when the height shrinks by more rows than twice the columns the width
/// shrinks by; with an 8-bit intermediate the pass order changes the result.
fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let dy = in_h as i64 - out_h as i64;
    let dx = in_w as i64 - out_w as i64;
    dy > 0 && dy > 2 * dx
}

/// Resizes like Pillow's `Image.resize((new_w, new_h), filter)` on an RGB image.
///
/// Pillow refuses empty sizes; here a zero target dimension gives an empty image and an empty
/// source a black one (no source pixel has weight).
pub fn resize(img: &RgbImage, new_w: u32, new_h: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if (in_w, in_h) == (new_w, new_h) {
        return img.clone();
    }
    if new_w == 0 || new_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(new_w, new_h);
    }
    let (in_w, in_h, out_w, out_h) = (in_w as usize, in_h as usize, new_w as usize, new_h as usize);
    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;

    let horiz = precompute_coeffs(in_w, out_w, filter);
    let vert = precompute_coeffs(in_h, out_h, filter);

    let src = img.as_raw();
    let out = if need_horizontal && need_vertical && vertical_first(in_w, in_h, out_w, out_h) {
        // Vertical pass over the whole width, then horizontal over every output row.
        let mid = resample_vertical(src, in_w, 0, &vert, out_h);
        resample_horizontal(&mid, in_w, 0..out_h, &horiz, out_w)
    } else {
        let (mid, mid_w, mid_offset) = if need_horizontal {
            // Source rows the vertical pass reads; the horizontal pass only produces those.
            let first_row = vert.start[0];
            let last_row = vert.start[out_h - 1] + vert.len[out_h - 1];
            let rows = first_row..last_row.max(first_row);
            let buf = resample_horizontal(src, in_w, rows, &horiz, out_w);
            (std::borrow::Cow::Owned(buf), out_w, first_row)
        } else {
            (std::borrow::Cow::Borrowed(src.as_slice()), in_w, 0)
        };
        if need_vertical {
            resample_vertical(&mid, mid_w, mid_offset, &vert, out_h)
        } else {
            mid.into_owned()
        }
    };
    // Both dimensions match the buffer length by construction.
    RgbImage::from_raw(new_w, new_h, out).expect("resampled buffer matches its dimensions")
}

/// Pillow-exact `Image.resize((new_w, new_h), Image.BICUBIC)` (antialiased) of an RGB image.
pub fn resize_bicubic(img: &RgbImage, new_w: u32, new_h: u32) -> RgbImage {
    resize(img, new_w, new_h, Filter::Bicubic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_kernel_values() {
        // Keys cubic, a = -0.5: 1 at 0, 0 at integers, -0.0625 at 1.5, 0.5625 at 0.5.
        let f = Filter::Bicubic;
        assert_eq!(f.eval(0.0), 1.0);
        assert_eq!(f.eval(1.0), 0.0);
        assert_eq!(f.eval(-2.0), 0.0);
        assert_eq!(f.eval(0.5), 0.5625);
        assert_eq!(f.eval(-1.5), -0.0625);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(100, 37), (37, 100), (1000, 3), (5, 5 * 7)] {
            let c = precompute_coeffs(i, o, Filter::Bicubic);
            for xx in 0..o {
                let (_, k) = c.window(xx);
                let sum: i64 = k.iter().map(|&w| i64::from(w)).sum();
                // Rounding each weight can move the sum by at most half a unit per weight.
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o}: {sum}"
                );
            }
        }
    }

    #[test]
    fn empty_sizes_do_not_panic() {
        let img = RgbImage::from_pixel(5, 4, image::Rgb([9, 9, 9]));
        assert_eq!(resize_bicubic(&img, 0, 3).dimensions(), (0, 3));
        let empty = RgbImage::new(0, 4);
        let out = resize_bicubic(&empty, 6, 2);
        assert_eq!(out.dimensions(), (6, 2));
        assert!(out.as_raw().iter().all(|&v| v == 0));
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(33, 17, image::Rgb([200, 13, 255]));
        for f in [
            Filter::Box,
            Filter::Bilinear,
            Filter::Hamming,
            Filter::Bicubic,
            Filter::Lanczos,
        ] {
            let out = resize(&img, 61, 9, f);
            assert!(out.pixels().all(|p| p.0 == [200, 13, 255]), "{f:?}");
        }
    }
}
