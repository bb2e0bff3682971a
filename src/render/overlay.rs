//! Rasters of attention maps: upsampling a token grid onto image pixels, colouring and
//! alpha-blending over the photograph.
//!
//! Geometry. Qwen2.5-VL resizes the whole original image (no crop, no padding) to
//! `resized_w × resized_h`, both multiples of 28, and each merged token covers a 28 × 28 pixel
//! square of the resized image. Token `(i, j)` of a `rows × cols` grid therefore covers resized
//! pixels `[28j, 28j+28) × [28i, 28i+28)`, which is `(28·W/resized_w) × (28·H/resized_h)` pixels
//! of the `W × H` original, i.e. `[j·W/cols, (j+1)·W/cols) × [i·H/rows, (i+1)·H/rows)`. The same
//! proportional mapping holds for any display size of the image, so every function here takes
//! the output size and maps pixel centres to grid coordinates.

use image::{Rgb, RgbImage};

use super::colormap::{ColorLut, Norm};

/// How a token grid is spread over image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upsample {
    /// Bilinear interpolation between token centres (smooth; the default for overlays).
    #[default]
    Smooth,
    /// Each pixel takes the value of the token that covers it (blocky; exact token boxes).
    Nearest,
}

/// Continuous grid coordinate of the centre of output pixel `p` when `n_out` pixels span
/// `n_grid` tokens: token `k` covers `[k, k+1)`.
fn grid_coord(p: u32, n_out: u32, n_grid: usize) -> f64 {
    (p as f64 + 0.5) * n_grid as f64 / n_out as f64
}

/// Spreads a `rows × cols` raster-order map over an `out_w × out_h` pixel raster that shows the
/// whole image. Returns `out_w * out_h` values in raster order.
pub fn upsample(
    values: &[f32],
    rows: usize,
    cols: usize,
    out_w: u32,
    out_h: u32,
    mode: Upsample,
) -> Vec<f32> {
    assert_eq!(values.len(), rows * cols, "map size does not match grid");
    let mut out = Vec::with_capacity(out_w as usize * out_h as usize);
    match mode {
        Upsample::Nearest => {
            let col_of: Vec<usize> = (0..out_w)
                .map(|x| (grid_coord(x, out_w, cols).floor() as usize).min(cols - 1))
                .collect();
            for y in 0..out_h {
                let i = (grid_coord(y, out_h, rows).floor() as usize).min(rows - 1);
                let row = &values[i * cols..(i + 1) * cols];
                out.extend(col_of.iter().map(|&j| row[j]));
            }
        }
        Upsample::Smooth => {
            // Interpolate between token centres (at k + 0.5); clamp beyond the outer centres.
            let axis = |n_out: u32, n: usize| -> Vec<(usize, usize, f32)> {
                (0..n_out)
                    .map(|p| {
                        let u = (grid_coord(p, n_out, n) - 0.5).clamp(0.0, (n - 1) as f64);
                        let k0 = (u.floor() as usize).min(n - 1);
                        let k1 = (k0 + 1).min(n - 1);
                        (k0, k1, (u - k0 as f64) as f32)
                    })
                    .collect()
            };
            let xs = axis(out_w, cols);
            let ys = axis(out_h, rows);
            for &(i0, i1, fy) in &ys {
                let r0 = &values[i0 * cols..(i0 + 1) * cols];
                let r1 = &values[i1 * cols..(i1 + 1) * cols];
                for &(j0, j1, fx) in &xs {
                    let top = r0[j0] + (r0[j1] - r0[j0]) * fx;
                    let bottom = r1[j0] + (r1[j1] - r1[j0]) * fx;
                    out.push(top + (bottom - top) * fy);
                }
            }
        }
    }
    out
}

/// Colours a `w × h` field of values.
pub fn colorize(field: &[f32], w: u32, h: u32, lut: &ColorLut, norm: Norm) -> RgbImage {
    assert_eq!(field.len(), w as usize * h as usize);
    let mut img = RgbImage::new(w, h);
    for (px, &v) in img.pixels_mut().zip(field) {
        *px = Rgb(lut.at(norm.t(v as f64)));
    }
    img
}

/// `alpha · over + (1 − alpha) · base`, per channel, rounded to the nearest integer.
pub fn blend(base: &RgbImage, over: &RgbImage, alpha: f64) -> RgbImage {
    assert_eq!(base.dimensions(), over.dimensions());
    let a = alpha.clamp(0.0, 1.0);
    let mut out = RgbImage::new(base.width(), base.height());
    for ((o, b), c) in out.pixels_mut().zip(base.pixels()).zip(over.pixels()) {
        for k in 0..3 {
            o.0[k] = (a * c.0[k] as f64 + (1.0 - a) * b.0[k] as f64)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// A coloured map at `w × h` pixels (no photograph).
#[allow(clippy::too_many_arguments)]
pub fn heatmap_raster(
    values: &[f32],
    rows: usize,
    cols: usize,
    w: u32,
    h: u32,
    mode: Upsample,
    lut: &ColorLut,
    norm: Norm,
) -> RgbImage {
    colorize(&upsample(values, rows, cols, w, h, mode), w, h, lut, norm)
}

/// The map coloured and blended over `photo` (any size showing the whole original image).
#[allow(clippy::too_many_arguments)]
pub fn overlay(
    photo: &RgbImage,
    values: &[f32],
    rows: usize,
    cols: usize,
    mode: Upsample,
    lut: &ColorLut,
    norm: Norm,
    alpha: f64,
) -> RgbImage {
    let (w, h) = photo.dimensions();
    let colored = heatmap_raster(values, rows, cols, w, h, mode, lut, norm);
    blend(photo, &colored, alpha)
}
