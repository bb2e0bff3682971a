//! `rhlens report` in a real browser (headless Chromium, installed by scripts/setup.sh): a URL
//! fragment selects a token and a layer; the screenshot shows that step's map over the image,
//! aligned as in the PNG overlays, blended as they are; the selected chip holds the token's
//! text; the page logs no error and loads nothing.
mod common;
mod render_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::Array3;
use render_support::{arrays, flat_photo, meta, write_trace, Spec};
use rhlens::render::colormap::Colormap;

const PHOTO: [u8; 3] = [128, 128, 128];
const STEP: usize = 12;
const LAYER: usize = 3;
/// The lit token of the selected step and layer (row, column of the 17 x 23 grid).
const LIT: (usize, usize) = (5, 7);

/// A trace (640x480 flat grey photo, 17 x 23 tokens, 6 layers, 40 steps) whose map at every
/// step and layer is zero but for one token, which moves with the step and the layer.
fn lit_trace(dir: &Path) -> PathBuf {
    let photo = dir.join("photo.png");
    flat_photo(640, 480, PHOTO).save(&photo).unwrap();
    let spec = Spec {
        image_path: photo.to_string_lossy().into_owned(),
        ..Spec::small()
    };
    let mut m = meta(&spec);
    m.tokens = (0..spec.steps).map(|s| format!(" w{s}")).collect();
    let mut a = arrays(&spec);
    let (rows, cols) = spec.merged();
    let mut maps = Array3::<f32>::zeros((spec.steps, spec.layers.len(), rows * cols));
    for s in 0..spec.steps {
        for l in 0..spec.layers.len() {
            // token (5, 7) at the selected step and layer; elsewhere another one
            let (i, j) = if (s, l) == (STEP, LAYER) {
                LIT
            } else {
                ((s + l) % rows, (2 * s + 3 * l + 1) % cols)
            };
            maps[[s, l, i * cols + j]] = 0.02;
        }
    }
    a.visual_attention_steps = Some(maps);
    let out = dir.join("trace");
    write_trace(&out, &m, &a);
    out
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RHLENS_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `url` with `what` (`--screenshot=FILE` or `--dump-dom`).
fn browse(browser: &Path, profile: &Path, url: &str, what: &str) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1400,1000",
            "--virtual-time-budget=4000",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of attribute `attr` on the first element whose opening tag contains `marker`.
fn attr(dom: &str, marker: &str, attr: &str) -> String {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the page"));
    let tag_start = dom[..at].rfind('<').unwrap();
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>').unwrap()];
    let key = format!("{attr}=\"");
    let from = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} in {tag}"))
        + key.len();
    tag[from..from + tag[from..].find('"').unwrap()].to_string()
}

fn report(traces: &[&Path], out: &Path) {
    let mut cmd = Command::new(common::bin());
    cmd.arg("report");
    for t in traces {
        cmd.arg("--trace").arg(t);
    }
    let st = cmd.arg("--out").arg(out).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn close(found: [u8; 3], want: [u8; 3]) -> bool {
    found.iter().zip(want).all(|(&a, b)| a.abs_diff(b) <= 3)
}

#[test]
fn a_fragment_selects_a_token_and_a_layer_and_lights_its_image_token() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no Chromium found (scripts/setup.sh installs the `chromium` package)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trace = lit_trace(dir.path());
    let page = dir.path().join("report.html");
    report(&[&trace], &page);
    let url = format!(
        "file://{}#step={STEP}&layer={LAYER}&smooth=0&alpha=0.5",
        page.display()
    );
    let profile = dir.path().join("profile");
    let dom = browse(&browser, &profile, &url, "--dump-dom");
    assert_eq!(
        attr(&dom, "id=\"app\"", "data-ready"),
        "1",
        "page did not start"
    );
    // (c) no error, no request: the page records both
    assert_eq!(attr(&dom, "id=\"diag\"", "data-errors"), "0", "{dom}");
    assert_eq!(attr(&dom, "id=\"diag\"", "data-resources"), "0");
    // (b) the selected chip is the token of step 12
    let sel = dom.find("chip sel pinned").expect("a pinned chip");
    let text = &dom[sel..];
    let text = &text[text.find('>').unwrap() + 1..text.find("</span>").unwrap()];
    assert_eq!(text, format!(" w{STEP}"));
    assert_eq!(
        attr(&dom, "class=\"stepinfo\"", "data-token"),
        format!(" w{STEP}")
    );
    // (a) the lit token's box has viridis' top colour blended half over the grey photo, its
    // neighbour the bottom colour (the map's grid spans the whole image)
    let shot = dir.path().join("shot.png");
    browse(
        &browser,
        &profile,
        &url,
        &format!("--screenshot={}", shot.display()),
    );
    let img = image::open(&shot).unwrap().to_rgb8();
    let b: Vec<f64> = attr(&dom, "class=\"view\"", "data-box")
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let (rows, cols) = Spec::small().merged();
    let centre = |i: usize, j: usize| {
        let x = b[0] + (j as f64 + 0.5) * b[2] / cols as f64;
        let y = b[1] + (i as f64 + 0.5) * b[3] / rows as f64;
        img.get_pixel(x as u32, y as u32).0
    };
    let blend = |c: [u8; 3]| -> [u8; 3] {
        std::array::from_fn(|k| ((c[k] as f64 + PHOTO[k] as f64) / 2.0).round() as u8)
    };
    let top = blend(Colormap::Viridis.rgb(1.0));
    let bottom = blend(Colormap::Viridis.rgb(0.0));
    let lit = centre(LIT.0, LIT.1);
    assert!(close(lit, top), "lit token shows {lit:?}, expected {top:?}");
    for (i, j) in [
        (LIT.0, LIT.1 + 1),
        (LIT.0 + 1, LIT.1),
        (LIT.0 - 1, LIT.1 - 1),
    ] {
        let p = centre(i, j);
        assert!(
            close(p, bottom),
            "token ({i}, {j}) shows {p:?}, expected {bottom:?}"
        );
    }
}

fn page_of(spec: &Spec, steps_maps: bool) -> String {
    let mut a = arrays(spec);
    if steps_maps {
        let (rows, cols) = spec.merged();
        let n = spec.steps * spec.layers.len() * rows * cols;
        let values: Vec<f32> = (0..n).map(|k| ((k * 7919) % 1000) as f32 * 1e-5).collect();
        a.visual_attention_steps = Some(
            Array3::from_shape_vec((spec.steps, spec.layers.len(), rows * cols), values).unwrap(),
        );
    }
    let trace = rhlens::formats::trace::Trace {
        dir: PathBuf::from("t"),
        meta: meta(spec),
        arrays: a,
    };
    rhlens::formats::trace::validate(&trace.meta, &trace.arrays).unwrap();
    let mut notes = Vec::new();
    rhlens::report::html(
        &[rhlens::report::ReportTrace::new(trace)],
        rhlens::report::Layout::SideBySide,
        &mut notes,
    )
    .unwrap()
}

#[test]
fn a_1000_step_trace_of_28_layers_and_256_image_tokens_makes_a_page_under_15_mb() {
    let spec = Spec {
        width: 448,
        height: 448,
        resized_width: 448,
        resized_height: 448,
        layers: (0..28).collect(),
        num_layers: 28,
        steps: 1000,
        think_end: 900,
        window: None,
        with_heads: false,
        with_vision: false,
        ..Spec::small()
    };
    assert_eq!(spec.merged(), (16, 16));
    let page = page_of(&spec, true);
    assert!(page.contains("\"kind\":\"steps\""));
    assert!(page.len() < 15_000_000, "{} bytes", page.len());
    // the maps are in it, one byte each (base64: 4 characters per 3 bytes)
    assert!(page.len() > 1000 * 28 * 256 * 4 / 3, "{} bytes", page.len());
}

#[test]
fn traces_without_step_maps_show_their_windows_or_their_mean() {
    let page = page_of(&Spec::small(), false);
    assert!(page.contains("\"kind\":\"windows\"") && page.contains("\"window\":16"));
    let spec = Spec {
        window: None,
        ..Spec::small()
    };
    let page = page_of(&spec, false);
    assert!(page.contains("\"kind\":\"mean\""));
    // nothing the page could fetch
    assert!(!page.contains("http://") && !page.contains("https://"));
}

#[test]
fn a_directory_that_is_not_a_trace_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["report", "--trace"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("r.html"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not a trace directory"), "{err}");
    assert!(!dir.path().join("r.html").exists());
}

#[test]
fn trace_with_report_writes_the_page_beside_the_trace_with_per_step_maps() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace");
    let run = Command::new(common::bin())
        .arg("trace")
        .arg("--model")
        .arg(common::model_dir("tiny-flat"))
        .arg("--image")
        .arg(common::image_path("wide"))
        .args(["--prompt", "What is here?", "--max-new-tokens", "4"])
        .args(["--quiet", "--report", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("\"kind\":\"steps\""));
    assert!(page.contains("data:image/png;base64,"));
}
