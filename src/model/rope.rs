//! Rotary position embeddings: the decoder's multimodal RoPE (M-RoPE) with Hugging Face's
//! `get_rope_index` semantics, and the vision tower's 2-D rotary positions and window ordering.
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::layers::{inv_freq, rotate_half};

/// 3-D positions (temporal, height, width) for every token of a prompt, and the offset that maps a
/// cache position to its text position while decoding (`rope_delta`, usually negative).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeIndex {
    /// `[3][len]`: planes t, h, w.
    pub planes: [Vec<i64>; 3],
    pub rope_delta: i64,
}

impl RopeIndex {
    pub fn len(&self) -> usize {
        self.planes[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[3, 1, len]` int64 tensor.
    pub fn to_tensor(&self, device: Device) -> Tensor {
        let flat: Vec<i64> = self.planes.iter().flatten().copied().collect();
        Tensor::from_slice(&flat)
            .view([3, 1, self.len() as i64])
            .to_device(device)
    }
}

/// Hugging Face `get_rope_index` for still images: text runs count up on all three planes; a run
/// of image tokens gets t = start, h = start + row, w = start + col over the merged grid, and the
/// text after it resumes at start + max(merged_h, merged_w).
pub fn rope_index(
    input_ids: &[i64],
    image_token_id: i64,
    grids_thw: &[[i64; 3]],
    spatial_merge: i64,
) -> Result<RopeIndex> {
    let mut planes: [Vec<i64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut current = 0i64;
    let mut images = grids_thw.iter();
    let mut i = 0usize;
    while i < input_ids.len() {
        let is_image = input_ids[i] == image_token_id;
        let mut j = i;
        while j < input_ids.len() && (input_ids[j] == image_token_id) == is_image {
            j += 1;
        }
        if !is_image {
            for k in 0..(j - i) as i64 {
                for plane in planes.iter_mut() {
                    plane.push(current + k);
                }
            }
            current += (j - i) as i64;
        } else {
            let Some(&[t, h, w]) = images.next() else {
                bail!("the prompt has more image-token runs than images");
            };
            let (lt, lh, lw) = (t, h / spatial_merge, w / spatial_merge);
            if lt * lh * lw != (j - i) as i64 {
                bail!(
                    "image tokens and image features do not match: {} tokens for a {}x{}x{} merged grid",
                    j - i,
                    lt,
                    lh,
                    lw
                );
            }
            for tt in 0..lt {
                for hh in 0..lh {
                    for ww in 0..lw {
                        planes[0].push(current + tt);
                        planes[1].push(current + hh);
                        planes[2].push(current + ww);
                    }
                }
            }
            current += lh.max(lw);
        }
        i = j;
    }
    if images.next().is_some() {
        bail!("more images than image-token runs in the prompt");
    }
    let max = planes.iter().flatten().copied().max().unwrap_or(-1);
    let rope_delta = max + 1 - input_ids.len() as i64;
    Ok(RopeIndex { planes, rope_delta })
}

/// The decoder's rotary table (`Qwen2_5_VLRotaryEmbedding`, `Qwen3VLTextRotaryEmbedding`).
pub struct TextRope {
    inv_freq: Tensor,
    mrope_section: Vec<i64>,
    /// Qwen3-VL: the plane (0 t, 1 h, 2 w) of each frequency, cycling t, h, w.
    interleaved: Option<Tensor>,
}

/// Plane of each of the `half` frequencies in Qwen3-VL's interleaved layout: frequency j is
/// height when `j % 3 == 1` and `j < 3 * section[1]`, width when `j % 3 == 2` and
/// `j < 3 * section[2]`, temporal otherwise (`recomposition_frequencies`).
pub fn interleaved_planes(section: &[i64], half: i64) -> Vec<i64> {
    (0..half)
        .map(|j| match j % 3 {
            1 if j < 3 * section[1] => 1,
            2 if j < 3 * section[2] => 2,
            _ => 0,
        })
        .collect()
}

impl TextRope {
    pub fn new(
        theta: f64,
        head_dim: i64,
        mrope_section: &[usize],
        interleaved: bool,
        device: Device,
    ) -> Self {
        let section: Vec<i64> = mrope_section.iter().map(|&s| s as i64).collect();
        let planes = interleaved.then(|| {
            Tensor::from_slice(&interleaved_planes(&section, head_dim / 2))
                .to_device(device)
                .view([1, 1, 1, -1])
        });
        Self {
            inv_freq: inv_freq(theta, head_dim).to_device(device),
            mrope_section: section,
            interleaved: planes,
        }
    }

    /// cos, sin `[B, 1, L, head_dim]` in `kind` for positions `[3, B, L]`, computed in float32 and
    /// recomposed so that each frequency chunk takes its plane (t, h, w, t, h, w ...).
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let b = positions.size()[1];
        let n = self.inv_freq.size()[0];
        let inv = self.inv_freq.view([1, 1, n, 1]).expand([3, b, n, 1], false);
        let pos = positions.unsqueeze(2).to_kind(Kind::Float);
        let freqs = inv.matmul(&pos).transpose(2, 3);
        let recompose = |f: Tensor| {
            if let Some(planes) = &self.interleaved {
                // f [3, B, L, half]: pick plane planes[j] for frequency j
                let s = f.size();
                let index = planes.expand([1, s[1], s[2], s[3]], false);
                let f = f.gather(0, &index, false).squeeze_dim(0);
                return Tensor::cat(&[&f, &f], -1);
            }
            let chunks = f.split_with_sizes(self.mrope_section.as_slice(), -1);
            let picked: Vec<Tensor> = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| c.select(0, (i % 3) as i64))
                .collect();
            let f = Tensor::cat(&picked, -1);
            Tensor::cat(&[&f, &f], -1)
        };
        let cos = recompose(freqs.cos()).to_kind(kind).unsqueeze(1);
        let sin = recompose(freqs.sin()).to_kind(kind).unsqueeze(1);
        (cos, sin)
    }
}

/// `q * cos + rotate_half(q) * sin` in the tensor's own dtype.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

/// Per-patch (row, col) positions in the vision tower's 2x2-block order, repeated per frame.
pub fn vision_positions(grids_thw: &[[i64; 3]], merge: i64) -> Vec<[i64; 2]> {
    let mut out = Vec::new();
    for &[t, h, w] in grids_thw {
        for _ in 0..t {
            for br in 0..h / merge {
                for bc in 0..w / merge {
                    for ir in 0..merge {
                        for ic in 0..merge {
                            out.push([br * merge + ir, bc * merge + ic]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Window order of merged tokens and cumulative window lengths in patches, as Hugging Face's
/// `get_vision_window_index` computes them (including the padding that adds a whole empty window
/// when a side divides evenly, and the removal of zero-length windows).
pub fn vision_window_index(
    grids_thw: &[[i64; 3]],
    merge: i64,
    window_size: i64,
    patch_size: i64,
) -> (Vec<i64>, Vec<i64>) {
    let win = window_size / merge / patch_size;
    let unit = merge * merge;
    let mut index = Vec::new();
    let mut cu = vec![0i64];
    let mut offset = 0i64;
    for &[t, h, w] in grids_thw {
        let (lh, lw) = (h / merge, w / merge);
        let pad_h = win - lh % win;
        let pad_w = win - lw % win;
        let (nwh, nww) = ((lh + pad_h) / win, (lw + pad_w) / win);
        for tt in 0..t {
            for wh in 0..nwh {
                for ww in 0..nww {
                    let mut count = 0;
                    for r in wh * win..(wh + 1) * win {
                        for c in ww * win..(ww + 1) * win {
                            if r < lh && c < lw {
                                index.push(offset + tt * lh * lw + r * lw + c);
                                count += 1;
                            }
                        }
                    }
                    let last = *cu.last().unwrap_or(&0);
                    cu.push(last + count * unit);
                }
            }
        }
        offset += t * lh * lw;
    }
    cu.dedup();
    (index, cu)
}

/// Cumulative patch counts of the full-attention blocks: one segment per frame.
pub fn vision_full_seqlens(grids_thw: &[[i64; 3]]) -> Vec<i64> {
    let mut cu = vec![0i64];
    for &[t, h, w] in grids_thw {
        for _ in 0..t {
            let last = *cu.last().unwrap_or(&0);
            cu.push(last + h * w);
        }
    }
    cu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_index_matches_worked_example() {
        // 15 text tokens, a 34x46 patch grid (17x23 merged), then 5 text tokens.
        let img = 99;
        let mut ids = vec![1i64; 15];
        ids.extend(std::iter::repeat(img).take(17 * 23));
        ids.extend([2i64; 5]);
        let r = rope_index(&ids, img, &[[1, 34, 46]], 2).unwrap();
        assert_eq!(r.planes[0][15], 15);
        assert_eq!(r.planes[1][15 + 23], 16); // second row
        assert_eq!(r.planes[2][15 + 22], 15 + 22);
        let after = 15 + 17 * 23;
        assert_eq!(r.planes[0][after], 38);
        assert_eq!(r.planes[2][after + 4], 42);
        assert_eq!(r.rope_delta, 43 - ids.len() as i64);
    }

    #[test]
    fn window_index_pads_a_whole_window_when_divisible() {
        // merged grid 4x4 with window 4: pad adds 4 on each side, so windows with nothing are dropped.
        let (idx, cu) = vision_window_index(&[[1, 8, 8]], 2, 112, 14);
        assert_eq!(idx, (0..16).collect::<Vec<_>>());
        assert_eq!(cu, vec![0, 64]);
        // merged 2x6 with window 4: windows of 2x4 and 2x2 merged tokens.
        let (idx, cu) = vision_window_index(&[[1, 4, 12]], 2, 112, 14);
        assert_eq!(&idx[..4], &[0, 1, 2, 3]);
        assert_eq!(&idx[4..8], &[6, 7, 8, 9]);
        assert_eq!(cu, vec![0, 32, 48]);
    }
}
