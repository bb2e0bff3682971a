//! Spatial reductions of one visual attention map: how spread out it is (normalised entropy,
//! top-k mass), where its centre of mass lies, and how much of it falls inside a box of the
//! original image. Model-free and defined once: figures, aggregation, evidence metrics and the
//! demo's looking test all reduce maps through here.
//!
//! A map is `rows × cols` values in raster order of the merged-token grid. The image processor
//! resizes the whole image (no crop, no padding), so token `(i, j)` covers
//! `[j·W/cols, (j+1)·W/cols) × [i·H/rows, (i+1)·H/rows)` of the `W × H` original whatever the
//! patch size (28 px cells for Qwen2.5-VL, 32 px for Qwen3-VL): the same proportional mapping the
//! overlays use (`render::overlay`).

use serde::{Deserialize, Serialize};

/// Normalised Shannon entropy of a map taken as a distribution: `−Σ p log p / log N` with
/// `p = v / Σv` over the `N` tokens. 0 when all mass sits on one token, 1 when it is uniform.
/// `None` for an empty map, a map of one token, or one whose mass is not positive (nothing to
/// normalise). Negative values (never produced by softmax) are treated as zero.
pub fn normalized_entropy(map: &[f32]) -> Option<f64> {
    let total = positive_mass(map)?;
    if map.len() < 2 {
        return None;
    }
    let h: f64 = map
        .iter()
        .map(|&v| f64::from(v.max(0.0)) / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    Some(h / (map.len() as f64).ln())
}

/// Share of the map's mass held by its `k` largest tokens (1 when `k ≥ N`). `None` when the mass
/// is not positive or `k` is 0.
pub fn top_k_mass(map: &[f32], k: usize) -> Option<f64> {
    let total = positive_mass(map)?;
    if k == 0 {
        return None;
    }
    let mut values: Vec<f64> = map.iter().map(|&v| f64::from(v.max(0.0))).collect();
    values.sort_by(|a, b| b.total_cmp(a));
    Some(values.iter().take(k).sum::<f64>() / total)
}

/// Centre of mass `(x, y)` as fractions of the image width and height (0 = left / top edge,
/// 1 = right / bottom edge); token `(i, j)` sits at its cell centre `((j + ½)/cols, (i + ½)/rows)`.
pub fn centre_of_mass(map: &[f32], rows: usize, cols: usize) -> Option<(f64, f64)> {
    check_grid(map, rows, cols)?;
    let total = positive_mass(map)?;
    let (mut x, mut y) = (0.0, 0.0);
    for (k, &v) in map.iter().enumerate() {
        let w = f64::from(v.max(0.0)) / total;
        x += w * ((k % cols) as f64 + 0.5) / cols as f64;
        y += w * ((k / cols) as f64 + 0.5) / rows as f64;
    }
    Some((x, y))
}

/// A box in original-image pixels: `x0 ≤ x < x1`, `y0 ≤ y < y1` (the `[x0, y0, x1, y1]` of
/// benchmark annotations and `--box`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PixelBox {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl PixelBox {
    /// Checks the box is ordered, finite and overlaps a `width × height` image; says why not.
    pub fn check(&self, width: u32, height: u32) -> Result<(), String> {
        let finite = [self.x0, self.y0, self.x1, self.y1]
            .iter()
            .all(|v| v.is_finite());
        if !finite || self.x1 <= self.x0 || self.y1 <= self.y0 {
            return Err(format!(
                "box {},{},{},{} must be x0,y0,x1,y1 with x0 < x1 and y0 < y1",
                self.x0, self.y0, self.x1, self.y1
            ));
        }
        if self.x1 <= 0.0 || self.y1 <= 0.0 || self.x0 >= width as f64 || self.y0 >= height as f64 {
            return Err(format!(
                "box {},{},{},{} lies outside the {width}×{height} image",
                self.x0, self.y0, self.x1, self.y1
            ));
        }
        Ok(())
    }

    /// Fraction of the image's area inside the box (clipped to the image).
    pub fn area_share(&self, width: u32, height: u32) -> f64 {
        let (w, h) = (width as f64, height as f64);
        let span = |a: f64, b: f64, n: f64| (b.min(n) - a.max(0.0)).max(0.0);
        span(self.x0, self.x1, w) * span(self.y0, self.y1, h) / (w * h)
    }
}

/// For each token of a `rows × cols` grid over a `width × height` image, the fraction of the
/// token's cell covered by `bx` (0 outside, 1 inside, between on the box edge).
pub fn box_coverage(bx: &PixelBox, rows: usize, cols: usize, width: u32, height: u32) -> Vec<f64> {
    let overlap = |k: usize, n: usize, size: u32, lo: f64, hi: f64| {
        let cell = size as f64 / n as f64;
        let (a, b) = (k as f64 * cell, (k + 1) as f64 * cell);
        (hi.min(b) - lo.max(a)).max(0.0) / cell
    };
    let col_cover: Vec<f64> = (0..cols)
        .map(|j| overlap(j, cols, width, bx.x0, bx.x1))
        .collect();
    (0..rows)
        .flat_map(|i| {
            let row = overlap(i, rows, height, bx.y0, bx.y1);
            col_cover.iter().map(move |&c| row * c)
        })
        .collect()
}

/// Share of the map's mass inside the box: `Σ v_k · coverage_k / Σ v_k`, each token counted by
/// the fraction of its cell the box covers (a token's attention is spread evenly over its cell).
pub fn box_mass(
    map: &[f32],
    rows: usize,
    cols: usize,
    width: u32,
    height: u32,
    bx: &PixelBox,
) -> Option<f64> {
    check_grid(map, rows, cols)?;
    let total = positive_mass(map)?;
    let coverage = box_coverage(bx, rows, cols, width, height);
    let inside: f64 = map
        .iter()
        .zip(&coverage)
        .map(|(&v, &c)| f64::from(v.max(0.0)) * c)
        .sum();
    Some(inside / total)
}

/// The map without the given tokens (set to 0), the rest rescaled so that the map keeps its
/// total mass: how a map looks once attention sinks are masked (`--mask-sinks`). Indices past
/// the map are ignored; a map whose remaining mass is not positive comes back all zero.
pub fn mask_tokens(map: &[f32], tokens: &[usize]) -> Vec<f32> {
    let mut out = map.to_vec();
    for &k in tokens {
        if let Some(v) = out.get_mut(k) {
            *v = 0.0;
        }
    }
    match (positive_mass(map), positive_mass(&out)) {
        (Some(before), Some(after)) => {
            let scale = before / after;
            out.iter().map(|&v| (f64::from(v) * scale) as f32).collect()
        }
        _ => vec![0.0; map.len()],
    }
}

fn positive_mass(map: &[f32]) -> Option<f64> {
    let total: f64 = map.iter().map(|&v| f64::from(v.max(0.0))).sum();
    (total > 0.0 && total.is_finite()).then_some(total)
}

fn check_grid(map: &[f32], rows: usize, cols: usize) -> Option<()> {
    (rows > 0 && cols > 0 && map.len() == rows * cols).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn entropy_of_uniform_one_hot_and_half() {
        assert!(close(normalized_entropy(&[1.0; 4]).unwrap(), 1.0));
        assert!(close(
            normalized_entropy(&[0.0, 3.0, 0.0, 0.0]).unwrap(),
            0.0
        ));
        // Two of four tokens equally: ln 2 / ln 4 = 0.5.
        assert!(close(
            normalized_entropy(&[0.5, 0.5, 0.0, 0.0]).unwrap(),
            0.5
        ));
        assert_eq!(normalized_entropy(&[0.0, 0.0]), None);
        assert_eq!(normalized_entropy(&[1.0]), None);
    }

    #[test]
    fn top_k_mass_sorts_by_value() {
        let map = [0.125, 0.5, 0.25, 0.125];
        assert!(close(top_k_mass(&map, 1).unwrap(), 0.5));
        assert!(close(top_k_mass(&map, 2).unwrap(), 0.75));
        assert!(close(top_k_mass(&map, 9).unwrap(), 1.0));
        assert_eq!(top_k_mass(&map, 0), None);
    }

    #[test]
    fn centre_of_mass_of_a_corner_and_a_pair() {
        // 2 × 3 grid, all mass on the bottom-right token: centre (5/6, 3/4).
        let (x, y) = centre_of_mass(&[0.0, 0.0, 0.0, 0.0, 0.0, 1.0], 2, 3).unwrap();
        assert!(close(x, 5.0 / 6.0) && close(y, 0.75));
        // Equal mass on the two top corners: centre (1/2, 1/4).
        let (x, y) = centre_of_mass(&[1.0, 0.0, 1.0, 0.0, 0.0, 0.0], 2, 3).unwrap();
        assert!(close(x, 0.5) && close(y, 0.25));
        assert_eq!(centre_of_mass(&[1.0; 5], 2, 3), None);
    }

    #[test]
    fn box_mass_counts_partial_cells_by_area() {
        // 2 × 2 grid over a 100 × 50 image: cells are 50 × 25 px.
        let map = [0.5, 0.125, 0.25, 0.125];
        let whole_left = PixelBox {
            x0: 0.0,
            y0: 0.0,
            x1: 50.0,
            y1: 50.0,
        };
        assert!(close(
            box_mass(&map, 2, 2, 100, 50, &whole_left).unwrap(),
            0.75
        ));
        // Half of the top-left cell (x 0–25, y 0–25): 0.5 × 0.5.
        let half = PixelBox {
            x0: 0.0,
            y0: 0.0,
            x1: 25.0,
            y1: 25.0,
        };
        assert!(close(box_mass(&map, 2, 2, 100, 50, &half).unwrap(), 0.25));
        // A box reaching past the image edge is clipped.
        let beyond = PixelBox {
            x0: 50.0,
            y0: 25.0,
            x1: 500.0,
            y1: 500.0,
        };
        assert!(close(
            box_mass(&map, 2, 2, 100, 50, &beyond).unwrap(),
            0.125
        ));
        assert!(close(beyond.area_share(100, 50), 0.25));
    }

    #[test]
    fn masking_a_token_keeps_the_total_mass() {
        // 0.5 on token 1 removed; the other 0.5 scaled by 2 so the total stays 1.
        let masked = mask_tokens(&[0.125, 0.5, 0.25, 0.125], &[1, 9]);
        assert_eq!(masked, vec![0.25, 0.0, 0.5, 0.25]);
        assert_eq!(mask_tokens(&[0.0, 1.0], &[1]), vec![0.0, 0.0]);
    }

    #[test]
    fn box_check_refuses_unordered_and_outside_boxes() {
        let bad = PixelBox {
            x0: 10.0,
            y0: 0.0,
            x1: 5.0,
            y1: 5.0,
        };
        assert!(bad.check(100, 100).is_err());
        let outside = PixelBox {
            x0: 200.0,
            y0: 0.0,
            x1: 300.0,
            y1: 5.0,
        };
        assert!(outside.check(100, 100).is_err());
        let ok = PixelBox {
            x0: 0.0,
            y0: 0.0,
            x1: 5.0,
            y1: 5.0,
        };
        assert!(ok.check(100, 100).is_ok());
    }
}
