//! Alignment of attention maps with the original image: all attention on one merged token must
//! light exactly that token's pixels of the original photograph, whatever smart_resize did.

mod render_support;

use image::RgbImage;
use render_support::{flat_photo, meta, write_trace, Spec};
use rhlens::formats::trace::Trace;
use rhlens::render::colormap::{Colormap, Norm};
use rhlens::render::overlay::{overlay, upsample, Upsample};
use rhlens::render::{render_traces, RenderOptions};

/// (original W, H, resized W, H) pairs worked out by hand with smart_resize (factor 28,
/// Python rounding): 500→504, 640×480→644×476, 300×200→308×196, 1000×300→1008×308, and a
/// size it leaves alone.
const GEOMETRIES: [(u32, u32, u32, u32); 5] = [
    (500, 500, 504, 504),
    (640, 480, 644, 476),
    (300, 200, 308, 196),
    (1000, 300, 1008, 308),
    (448, 224, 448, 224),
];

const PHOTO: [u8; 3] = [100, 150, 200];
const ALPHA: f64 = 0.6;
/// 0.6 · viridis(1) + 0.4 · PHOTO, viridis(1) = #fde725 = (253, 231, 37): 151.8+40, 138.6+60,
/// 22.2+80, rounded.
const LIT: [u8; 3] = [192, 199, 102];
/// 0.6 · viridis(0) + 0.4 · PHOTO, viridis(0) = #440154 = (68, 1, 84): 40.8+40, 0.6+60, 50.4+80.
const UNLIT: [u8; 3] = [81, 61, 130];

/// The box of merged token (i, j) in original-image pixels: 28 × 28 resized pixels scaled by
/// original / resized.
fn token_box(i: usize, j: usize, g: (u32, u32, u32, u32)) -> (f64, f64, f64, f64) {
    let (w, h, rw, rh) = (g.0 as f64, g.1 as f64, g.2 as f64, g.3 as f64);
    let sx = 28.0 * w / rw;
    let sy = 28.0 * h / rh;
    (
        j as f64 * sx,
        i as f64 * sy,
        (j + 1) as f64 * sx,
        (i + 1) as f64 * sy,
    )
}

fn one_hot(rows: usize, cols: usize, i: usize, j: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; rows * cols];
    v[i * cols + j] = 1.0;
    v
}

fn tokens_to_check(rows: usize, cols: usize) -> Vec<(usize, usize)> {
    vec![
        (0, 0),
        (rows - 1, cols - 1),
        (0, cols - 1),
        (rows - 1, 0),
        (rows / 2, cols / 2),
    ]
}

#[test]
fn nearest_overlay_lights_exactly_the_token_box_in_the_original() {
    for g in GEOMETRIES {
        let (rows, cols) = ((g.3 / 28) as usize, (g.2 / 28) as usize);
        let photo = flat_photo(g.0, g.1, PHOTO);
        let lut = Colormap::Viridis.lut();
        for (i, j) in tokens_to_check(rows, cols) {
            let img = overlay(
                &photo,
                &one_hot(rows, cols, i, j),
                rows,
                cols,
                Upsample::Nearest,
                &lut,
                Norm::new(0.0, 1.0),
                ALPHA,
            );
            assert_eq!(img.dimensions(), (g.0, g.1));
            let (x0, y0, x1, y1) = token_box(i, j, g);
            let mut lit = 0usize;
            for (x, y, p) in img.enumerate_pixels() {
                let (cx, cy) = (x as f64 + 0.5, y as f64 + 0.5);
                let inside = cx > x0 + 1.0 && cx < x1 - 1.0 && cy > y0 + 1.0 && cy < y1 - 1.0;
                let outside = cx < x0 - 1.0 || cx > x1 + 1.0 || cy < y0 - 1.0 || cy > y1 + 1.0;
                assert!(
                    p.0 == LIT || p.0 == UNLIT,
                    "{g:?} token ({i},{j}): pixel ({x},{y}) is {:?}",
                    p.0
                );
                if inside {
                    assert_eq!(p.0, LIT, "{g:?} token ({i},{j}): ({x},{y}) should be lit");
                }
                if outside {
                    assert_eq!(
                        p.0, UNLIT,
                        "{g:?} token ({i},{j}): ({x},{y}) should be dark"
                    );
                }
                lit += (p.0 == LIT) as usize;
            }
            // the lit area is the box area within one pixel row/column per edge
            let area = (x1 - x0) * (y1 - y0);
            let slack = 2.0 * ((x1 - x0) + (y1 - y0)) + 4.0;
            assert!(
                (lit as f64 - area).abs() <= slack,
                "{g:?} token ({i},{j}): {lit} lit pixels for a box of {area}"
            );
        }
    }
}

#[test]
fn smooth_overlay_peaks_inside_the_token_box() {
    for g in GEOMETRIES {
        let (rows, cols) = ((g.3 / 28) as usize, (g.2 / 28) as usize);
        for (i, j) in tokens_to_check(rows, cols) {
            let field = upsample(
                &one_hot(rows, cols, i, j),
                rows,
                cols,
                g.0,
                g.1,
                Upsample::Smooth,
            );
            let max = field.iter().cloned().fold(f32::MIN, f32::max);
            assert!(max > 0.9, "{g:?} token ({i},{j}): peak {max}");
            let (x0, y0, x1, y1) = token_box(i, j, g);
            for (k, v) in field.iter().enumerate() {
                let (x, y) = ((k as u32 % g.0) as f64 + 0.5, (k as u32 / g.0) as f64 + 0.5);
                if *v == max {
                    assert!(
                        x >= x0 - 1.0 && x <= x1 + 1.0 && y >= y0 - 1.0 && y <= y1 + 1.0,
                        "{g:?} token ({i},{j}): peak at ({x},{y}) outside box"
                    );
                }
                // smooth spreading reaches at most the neighbouring token centres
                let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
                if (x - cx).abs() > (x1 - x0) + 1.0 || (y - cy).abs() > (y1 - y0) + 1.0 {
                    assert_eq!(*v, 0.0, "{g:?} token ({i},{j}): ({x},{y}) = {v}");
                }
            }
        }
    }
}

#[test]
fn interpolation_is_exact_at_token_centres_and_linear_between() {
    // 1 × 2 grid over a 4 × 1 raster: pixel centres at grid x = 0.25, 0.75, 1.25, 1.75, token
    // centres at 0.5 and 1.5: values clamp outside the centres and interpolate between them.
    let f = upsample(&[0.0, 1.0], 1, 2, 4, 1, Upsample::Smooth);
    assert_eq!(f, vec![0.0, 0.25, 0.75, 1.0]);
    let f = upsample(&[0.0, 1.0], 1, 2, 4, 1, Upsample::Nearest);
    assert_eq!(f, vec![0.0, 0.0, 1.0, 1.0]);
}

/// Bounding box (x0, y0, x1, y1 inclusive) of pixels of colour `c` left of `x_max`.
fn bbox(img: &RgbImage, c: [u8; 3], x_max: u32) -> Option<(u32, u32, u32, u32)> {
    let mut b: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in img.enumerate_pixels() {
        if x < x_max && p.0 == c {
            b = Some(match b {
                None => (x, y, x, y),
                Some((a, bb, cc, d)) => (a.min(x), bb.min(y), cc.max(x), d.max(y)),
            });
        }
    }
    b
}

#[test]
fn the_overlay_figure_lights_the_token_at_its_place_on_the_photo() {
    let tmp = tempfile::tempdir().unwrap();
    let photo_path = tmp.path().join("photo.png");
    let g = (640u32, 480u32, 644u32, 476u32);
    flat_photo(g.0, g.1, PHOTO).save(&photo_path).unwrap();
    let mut spec = Spec::small();
    spec.layers = vec![0];
    spec.num_layers = 1;
    spec.image_path = photo_path.display().to_string();
    let (rows, cols) = spec.merged();
    let (ti, tj) = (4usize, 17usize);
    let m = meta(&spec);
    let mut a = render_support::arrays(&spec);
    a.visual_attention.fill(0.0);
    a.visual_attention[[0, ti * cols + tj]] = 0.02;
    let dir = tmp.path().join("trace");
    write_trace(&dir, &m, &a);
    let t = Trace::read(&dir).unwrap();
    let out = tmp.path().join("fig");
    let opts = RenderOptions {
        upsample: Upsample::Nearest,
        alpha: ALPHA,
        ..Default::default()
    };
    let done = render_traces(&[("t".to_string(), t)], &out, &opts).unwrap();
    assert!(done.notes.is_empty(), "{:?}", done.notes);
    let img = image::open(out.join("t/maps/mean.png")).unwrap().to_rgb8();
    let x_max = img.width() - 140;
    let photo = bbox(&img, UNLIT, x_max).expect("photo area");
    let lit = bbox(&img, LIT, x_max).expect("lit token");
    let (pw, ph) = (
        (photo.2 - photo.0 + 1) as f64,
        (photo.3 - photo.1 + 1) as f64,
    );
    // the photo keeps its aspect ratio
    assert!((pw / ph - 640.0 / 480.0).abs() < 0.01, "{pw}x{ph}");
    let sx = pw / cols as f64;
    let sy = ph / rows as f64;
    let want = (
        photo.0 as f64 + tj as f64 * sx,
        photo.1 as f64 + ti as f64 * sy,
        photo.0 as f64 + (tj + 1) as f64 * sx - 1.0,
        photo.1 as f64 + (ti + 1) as f64 * sy - 1.0,
    );
    for (got, want) in [
        (lit.0 as f64, want.0),
        (lit.1 as f64, want.1),
        (lit.2 as f64, want.2),
        (lit.3 as f64, want.3),
    ] {
        assert!(
            (got - want).abs() <= 1.5,
            "lit box {lit:?}, expected {want:?}"
        );
    }
}

#[test]
fn the_heatmap_grid_shows_the_colormap_ends() {
    // no photograph: the lit cell is exactly the top colour of viridis, the rest the bottom one
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::small();
    spec.layers = vec![0];
    spec.num_layers = 1;
    let (rows, cols) = spec.merged();
    let m = meta(&spec);
    let mut a = render_support::arrays(&spec);
    a.visual_attention.fill(0.0);
    a.visual_attention[[0, (rows - 1) * cols]] = 0.5; // bottom-left token
    let dir = tmp.path().join("trace");
    write_trace(&dir, &m, &a);
    let t = Trace::read(&dir).unwrap();
    let out = tmp.path().join("fig");
    let done = render_traces(&[("t".to_string(), t)], &out, &RenderOptions::default()).unwrap();
    assert_eq!(
        done.notes.len(),
        1,
        "missing image is noted: {:?}",
        done.notes
    );
    let img = image::open(out.join("t/layers_grid.png"))
        .unwrap()
        .to_rgb8();
    let x_max = img.width() - 140;
    let dark = bbox(&img, [68, 1, 84], x_max).expect("bottom colour");
    let lit = bbox(&img, [253, 231, 37], x_max).expect("top colour");
    let (pw, ph) = ((dark.2 - dark.0 + 1) as f64, (dark.3 - dark.1 + 1) as f64);
    let (cw, chh) = (pw / cols as f64, ph / rows as f64);
    assert!(
        (lit.0 as f64 - dark.0 as f64).abs() <= 1.0,
        "{lit:?} {dark:?}"
    );
    assert!(
        (lit.3 as f64 - dark.3 as f64).abs() <= 1.0,
        "{lit:?} {dark:?}"
    );
    assert!(
        ((lit.2 - lit.0 + 1) as f64 - cw).abs() <= 1.5,
        "{lit:?} cell {cw}"
    );
    assert!(
        ((lit.3 - lit.1 + 1) as f64 - chh).abs() <= 1.5,
        "{lit:?} cell {chh}"
    );
}
