//! Every figure type renders from small synthetic inputs, and its content is checked: not blank,
//! titles and labels present (SVG text, dark title pixels in the PNG), colours where the input
//! fixes them.

mod render_support;

use std::fs;
use std::path::{Path, PathBuf};

use clap::Parser;
use image::RgbImage;
use render_support::{gradient_photo, has_dark_pixels, ink_fraction, meta, write_trace, Spec};
use rhlens::cli::figures::{run, FiguresArgs};
use rhlens::formats::trace::Trace;
use rhlens::render::{
    render_results, render_sweep, render_traces, Canvas, LayerSelection, RenderOptions,
};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: FiguresArgs,
}

fn parse(argv: &[&str]) -> Result<FiguresArgs, clap::Error> {
    let mut all = vec!["figures"];
    all.extend_from_slice(argv);
    Cli::try_parse_from(all).map(|c| c.args)
}

/// A synthetic trace with its photograph, in `root/name`.
fn make_trace(root: &Path, name: &str, spec: &mut Spec) -> PathBuf {
    let photo = root.join(format!("{name}.png"));
    gradient_photo(spec.width, spec.height)
        .save(&photo)
        .unwrap();
    spec.image_path = photo.display().to_string();
    let dir = root.join(name);
    write_trace(&dir, &meta(spec), &render_support::arrays(spec));
    dir
}

fn png(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn svg(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn has_color(img: &RgbImage, c: [u8; 3], tol: u8) -> bool {
    img.pixels()
        .any(|p| p.0.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= tol))
}

/// Not blank, and text in the title band.
fn check_png(path: &Path) {
    let img = png(path);
    let ink = ink_fraction(&img);
    assert!(ink > 0.02, "{}: nearly blank ({ink})", path.display());
    let (w, _) = img.dimensions();
    let dark = has_dark_pixels(&img, w / 4, 4, 3 * w / 4, 40);
    assert!(
        dark > 40,
        "{}: no title text ({dark} dark pixels)",
        path.display()
    );
}

/// A complete SVG document whose bitmaps are embedded and that holds every label.
fn check_svg(path: &Path, labels: &[&str]) {
    // plotters writes text content on its own line: join it to its tags
    let doc = svg(path)
        .replace(">\n", ">")
        .replace("\n</text>", "</text>");
    assert!(doc.trim_start().starts_with("<svg"), "{}", path.display());
    assert!(doc.trim_end().ends_with("</svg>"), "{}", path.display());
    assert!(
        !doc.contains("rhlens-bitmap-"),
        "{}: placeholder left",
        path.display()
    );
    for l in labels {
        assert!(doc.contains(l), "{}: missing label {l:?}", path.display());
    }
}

const TRACE_FIGURES: [&str; 11] = [
    "layers_grid",
    "layers_grid_overlay",
    "maps/mean",
    "layer_ranges",
    "windows",
    "vision_blocks",
    "allocation_prompt",
    "allocation_generation",
    "visual_share_by_layer",
    "shift_steps",
    "heads_visual_share",
];

#[test]
fn every_trace_figure_is_drawn_with_its_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_trace(tmp.path(), "run", &mut Spec::small());
    let t = Trace::read(&dir).unwrap();
    let out = tmp.path().join("fig");
    let opts = RenderOptions {
        canvas: Canvas {
            svg: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let done = render_traces(&[("R1 model".to_string(), t)], &out, &opts).unwrap();
    assert!(done.notes.is_empty(), "{:?}", done.notes);
    let base = out.join("R1_model");
    let mut expected: Vec<String> = TRACE_FIGURES.iter().map(|s| s.to_string()).collect();
    for l in 0..6 {
        expected.push(format!("maps/layer_{l:02}"));
        expected.push(format!("maps/heads_layer_{l:02}"));
    }
    for f in &expected {
        for ext in ["png", "svg"] {
            let p = base.join(format!("{f}.{ext}"));
            assert!(done.files.contains(&p), "{} not reported", p.display());
        }
        check_png(&base.join(format!("{f}.png")));
        check_svg(
            &base.join(format!("{f}.svg")),
            &["R1 model", "RANDOM WEIGHTS"],
        );
    }
    assert_eq!(done.files.len(), expected.len() * 2);
    // maps embed their rasters; per-layer titles and colorbar labels are present
    for f in ["layers_grid", "maps/mean", "windows", "vision_blocks"] {
        check_svg(
            &base.join(format!("{f}.svg")),
            &["<image", "data:image/png;base64,", "attention"],
        );
    }
    check_svg(
        &base.join("layers_grid.svg"),
        &["Layer 0", "Layer 5", "attention (head mean)"],
    );
    check_svg(&base.join("windows.svg"), &["Steps 0–15", "Steps 32–39"]);
    check_svg(&base.join("maps/heads_layer_02.svg"), &["Head 0", "Head 3"]);
    check_svg(
        &base.join("layer_ranges.svg"),
        &["Early layers 0–1", "Late layers 4–5"],
    );
    check_svg(
        &base.join("allocation_generation.svg"),
        &[
            "Visual (image tokens)",
            "Instruction",
            "System prompt",
            "Reasoning (thinking)",
            "Answer",
            ">Layer<",
            "Share of attention",
        ],
    );
    check_svg(
        &base.join("shift_steps.svg"),
        &[
            "Generation step (token)",
            "Wait",
            "thinking ends",
            "answer starts",
            "Early layers",
        ],
    );
    check_svg(
        &base.join("heads_visual_share.svg"),
        &[">Head<", "visual share"],
    );

    // colours fixed by the input: the roles' colours in the bars, the event lines, the colormap
    let alloc = png(&base.join("allocation_generation.png"));
    for c in [
        [0x00, 0x72, 0xB2],
        [0xE6, 0x9F, 0x00],
        [0x99, 0x99, 0x99],
        [0xD5, 0x5E, 0x00],
        [0x00, 0x9E, 0x73],
    ] {
        assert!(has_color(&alloc, c, 0), "allocation bars lack {c:?}");
    }
    // the prompt-only analysis has no reasoning or answer mass
    let prompt = png(&base.join("allocation_prompt.png"));
    assert!(has_color(&prompt, [0x00, 0x72, 0xB2], 0));
    assert!(!has_color(&prompt, [0xD5, 0x5E, 0x00], 0));
    assert!(!has_color(&prompt, [0x00, 0x9E, 0x73], 0));
    let shift = png(&base.join("shift_steps.png"));
    assert!(has_color(&shift, [0xCC, 0x79, 0xA7], 0), "no Wait line");
    let grid = png(&base.join("layers_grid.png"));
    assert!(has_color(&grid, [253, 231, 37], 0) && has_color(&grid, [68, 1, 84], 0));
}

#[test]
fn options_change_size_colormap_and_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_trace(tmp.path(), "run", &mut Spec::small());
    let t = Trace::read(&dir).unwrap();
    let one = |opts: RenderOptions, sub: &str| {
        let out = tmp.path().join(sub);
        render_traces(&[("t".to_string(), t.clone())], &out, &opts).unwrap();
        out.join("t")
    };
    let base = one(RenderOptions::default(), "a");
    let big = one(
        RenderOptions {
            canvas: Canvas {
                scale: 2.0,
                ..Default::default()
            },
            ..Default::default()
        },
        "b",
    );
    let (w1, h1) = png(&base.join("shift_steps.png")).dimensions();
    let (w2, h2) = png(&big.join("shift_steps.png")).dimensions();
    assert!(
        w2.abs_diff(2 * w1) <= 1 && h2.abs_diff(2 * h1) <= 1,
        "{w1}x{h1} → {w2}x{h2}"
    );
    check_png(&big.join("shift_steps.png"));
    let wide = one(
        RenderOptions {
            canvas: Canvas {
                width: Some(1200),
                ..Default::default()
            },
            ..Default::default()
        },
        "c",
    );
    assert_eq!(png(&wide.join("allocation_generation.png")).width(), 1200);
    // magma instead of viridis
    let magma = one(
        RenderOptions {
            colormap: rhlens::render::Colormap::Magma,
            ..Default::default()
        },
        "d",
    );
    let grid = png(&magma.join("layers_grid.png"));
    assert!(has_color(&grid, [252, 253, 191], 0) && !has_color(&grid, [253, 231, 37], 0));
    // a layer selection limits the per-layer figures
    let sel = one(
        RenderOptions {
            layers: Some("1,3-4".parse::<LayerSelection>().unwrap()),
            ..Default::default()
        },
        "e",
    );
    assert!(sel.join("maps/layer_03.png").exists());
    assert!(!sel.join("maps/layer_02.png").exists());
    // a layer that was not captured is a clear error
    let err = render_traces(
        &[("t".to_string(), t.clone())],
        &tmp.path().join("f"),
        &RenderOptions {
            layers: Some("7".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("layer 7 was not captured"), "{err}");
    let err = render_traces(
        &[("t".to_string(), t)],
        &tmp.path().join("g"),
        &RenderOptions {
            alpha: 1.5,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("alpha"), "{err}");
}

#[test]
fn two_traces_are_compared_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let a = make_trace(tmp.path(), "reasoner", &mut Spec::small());
    let mut spec = Spec::small();
    spec.steps = 24;
    spec.think_end = 10;
    spec.with_heads = false;
    let b = make_trace(tmp.path(), "base", &mut spec);
    let traces = vec![
        ("Reasoner".to_string(), Trace::read(&a).unwrap()),
        ("Base".to_string(), Trace::read(&b).unwrap()),
    ];
    let out = tmp.path().join("fig");
    let opts = RenderOptions {
        canvas: Canvas {
            svg: true,
            ..Default::default()
        },
        ..Default::default()
    };
    render_traces(&traces, &out, &opts).unwrap();
    for f in [
        "compare_layers_grid",
        "compare_layers_grid_overlay",
        "compare_mean",
        "compare_allocation_prompt",
        "compare_allocation_generation",
        "compare_visual_share_by_layer",
        "compare_shift_steps",
    ] {
        check_png(&out.join(format!("{f}.png")));
        check_svg(&out.join(format!("{f}.svg")), &["Reasoner", "Base"]);
    }
    check_svg(
        &out.join("compare_visual_share_by_layer.svg"),
        &["Reasoner (generation)", "Base (last prompt token)"],
    );
    check_svg(
        &out.join("compare_shift_steps.svg"),
        &["Base: end of thinking"],
    );
    assert!(out.join("Reasoner/shift_steps.png").exists());
    assert!(out.join("Base/shift_steps.png").exists());
}

fn make_sweep(root: &Path) -> PathBuf {
    let dir = root.join("sweep");
    let mut rows = Vec::new();
    // budget=100 has two samples
    for (k, (b, sample)) in [(50usize, 0usize), (100, 0), (100, 1), (200, 0)]
        .into_iter()
        .enumerate()
    {
        let mut spec = Spec::small();
        spec.steps = b / 4 + 6;
        spec.think_end = b / 4;
        spec.with_heads = false;
        spec.image_path = root.join("photo.png").display().to_string();
        let rel = format!("t{k}");
        write_trace(
            &dir.join(&rel),
            &meta(&spec),
            &render_support::arrays(&spec),
        );
        rows.push(serde_json::json!({
            "setting": format!("budget={b}"), "value": b, "sample": sample,
            "trace": rel, "think_tokens": b / 4, "answer": "red", "stop_reason": "eos",
            "visual_share": 0.1
        }));
    }
    // a setting whose run was interrupted: only the header was written
    let spec = Spec::small();
    rhlens::formats::trace::TraceWriter::create(&dir.join("t_broken"), &meta(&spec), false)
        .unwrap();
    rows.push(serde_json::json!({
        "setting": "budget=400", "value": 400, "sample": 0, "trace": "t_broken",
        "think_tokens": 0, "answer": "", "stop_reason": "interrupted"
    }));
    gradient_photo(640, 480)
        .save(root.join("photo.png"))
        .unwrap();
    fs::write(
        dir.join("summary.json"),
        serde_json::json!({"kind": "budgets", "image": "photo.png", "rows": rows}).to_string(),
    )
    .unwrap();
    dir
}

#[test]
fn a_sweep_is_drawn_over_its_traces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_sweep(tmp.path());
    let out = tmp.path().join("fig");
    let opts = RenderOptions {
        canvas: Canvas {
            svg: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let done = render_sweep(&dir, &out, &opts, false).unwrap();
    assert_eq!(done.notes.len(), 1, "{:?}", done.notes);
    assert!(
        done.notes[0].contains("budget=400 left out") && done.notes[0].contains("partial"),
        "{:?}",
        done.notes
    );
    assert!(!out.join("budget_400").exists());
    for f in [
        "sweep_maps",
        "sweep_visual_share_by_layer",
        "sweep_visual_share_matrix",
        "sweep_shift_steps",
    ] {
        check_png(&out.join(format!("{f}.png")));
        check_svg(&out.join(format!("{f}.svg")), &["budget=50", "budget=200"]);
    }
    check_png(&out.join("sweep_summary.png"));
    check_svg(
        &out.join("sweep_summary.svg"),
        &[
            "Thinking budget (tokens)",
            "thinking tokens (mean over samples)",
            "early layers",
        ],
    );
    check_svg(
        &out.join("sweep_maps.svg"),
        &["budget=100 sample 0", "budget=100 sample 1"],
    );
    // each setting's own figures, one directory per sample
    assert!(out.join("budget_100_sample_1/shift_steps.png").exists());
    assert!(out.join("budget_50/maps/mean.png").exists());
    // a missing summary is a clear error
    let err = render_sweep(tmp.path(), &out, &opts, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("summary.json"), "{err}");
}

const METRICS: &str = "model,setting,setting_value,reasoning,perception,hallucination,mean_think_tokens,n_reasoning,n_perception,scorer
Alpha,budget=0,0,0.4,0.7,0.3,10,450,450,exact
Alpha,budget=100,100,0.5,0.6,0.4,95,450,450,exact
Alpha,budget=200,200,0.6,0.4,0.6,180,450,450,exact
Beta,budget=0,0,0.3,0.5,0.5,12,450,450,exact
";

#[test]
fn results_give_rh_auc_length_and_scatter_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("metrics.csv");
    fs::write(&f, METRICS).unwrap();
    let rows = rhlens::render::results::read_metrics(&f).unwrap();
    let out = tmp.path().join("fig");
    let opts = RenderOptions {
        canvas: Canvas {
            svg: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let done = render_results(&rows, &out, &opts).unwrap();
    assert_eq!(done.files.len(), 6);
    assert!(
        done.notes.iter().any(|n| n.contains("Beta")),
        "{:?}",
        done.notes
    );
    for f in ["rhauc", "accuracy_vs_length", "reasoning_vs_perception"] {
        check_png(&out.join(format!("{f}.png")));
    }
    // Alpha's RH-AUC is 7/12 (worked out in render_pchip.rs)
    check_svg(
        &out.join("rhauc.svg"),
        &[
            "Alpha — RH-AUC 0.583",
            "Beta — RH-AUC undefined",
            "needs at least two settings",
            "Reasoning accuracy (min–max normalised)",
            "Perception accuracy (normalised)",
            "PCHIP curve",
        ],
    );
    // the area is shaded at alpha 0.3 in Alpha's colour (Okabe–Ito blue over white)
    let img = png(&out.join("rhauc.png"));
    let shade = [
        (0.3 * 0.0 + 0.7 * 255.0) as u8,
        (0.3 * 114.0 + 0.7 * 255.0) as u8,
        (0.3 * 178.0 + 0.7 * 255.0) as u8,
    ];
    assert!(has_color(&img, shade, 2), "no shaded area {shade:?}");
    check_svg(
        &out.join("accuracy_vs_length.svg"),
        &[
            "Mean thinking tokens",
            "Reasoning accuracy",
            "Perception accuracy",
            "Alpha",
            "Beta",
        ],
    );
    check_svg(
        &out.join("reasoning_vs_perception.svg"),
        &["Alpha (0.58)", "Beta"],
    );
    // the setting value as x axis on request
    let out2 = tmp.path().join("fig2");
    render_results(
        &rows,
        &out2,
        &RenderOptions {
            canvas: Canvas {
                svg: true,
                png: false,
                ..Default::default()
            },
            length_axis: rhlens::render::LengthAxis::SettingValue,
            ..Default::default()
        },
    )
    .unwrap();
    check_svg(
        &out2.join("accuracy_vs_length.svg"),
        &["Setting value (budget)"],
    );
    assert!(!out2.join("rhauc.png").exists());
}

#[test]
fn the_command_line_draws_everything_and_reports_mistakes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = make_trace(tmp.path(), "a", &mut Spec::small());
    let sweep = make_sweep(tmp.path());
    let metrics = tmp.path().join("m.csv");
    fs::write(&metrics, METRICS).unwrap();
    let out = tmp.path().join("out");
    let args = parse(&[
        "--trace",
        a.to_str().unwrap(),
        "--sweep",
        sweep.to_str().unwrap(),
        "--results",
        metrics.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dpi",
        "150",
        "--colormap",
        "cividis",
        "--layers",
        "0-2",
        "--window",
        "4",
        "--upsample",
        "nearest",
        "--color-scale",
        "panel",
        "--alpha",
        "0.7",
        "--quiet",
    ])
    .unwrap();
    let opts = args.options().unwrap();
    assert_eq!(opts.canvas.scale, 1.5);
    run(args).unwrap();
    assert!(out.join("a/maps/layer_02.png").exists());
    assert!(!out.join("a/maps/layer_03.png").exists());
    assert!(out.join("sweep_summary.png").exists());
    assert!(out.join("rhauc.png").exists());

    // inputs are required, options are checked
    assert!(parse(&["--out", "x"]).is_err());
    assert!(parse(&["--results", "m.csv", "--out", "x", "--colormap", "jet"]).is_err());
    assert!(parse(&["--results", "m.csv", "--out", "x", "--layers", "3-1"]).is_err());
    assert!(parse(&[
        "--results",
        "m.csv",
        "--out",
        "x",
        "--scale",
        "2",
        "--dpi",
        "200"
    ])
    .is_err());
    let err = run(parse(&[
        "--trace",
        tmp.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap())
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a trace directory"), "{err}");
    let err = run(parse(&[
        "--trace",
        a.to_str().unwrap(),
        "--label",
        "x",
        "y",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap())
    .unwrap_err()
    .to_string();
    assert!(err.contains("labels"), "{err}");
    let err = run(parse(&[
        "--results",
        "/nonexistent/m.csv",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap())
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/m.csv"), "{err}");
}

#[test]
fn a_missing_photograph_is_noted_and_maps_are_drawn_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::small();
    spec.image_path = "does/not/exist.jpg".into();
    let dir = tmp.path().join("t");
    write_trace(&dir, &meta(&spec), &render_support::arrays(&spec));
    let out = tmp.path().join("fig");
    let done = render_traces(
        &[("t".to_string(), Trace::read(&dir).unwrap())],
        &out,
        &RenderOptions::default(),
    )
    .unwrap();
    assert_eq!(done.notes.len(), 1);
    assert!(
        done.notes[0].contains("does/not/exist.jpg"),
        "{:?}",
        done.notes
    );
    assert!(out.join("t/layers_grid.png").exists());
    assert!(out.join("t/maps/mean.png").exists());
    assert!(!out.join("t/layers_grid_overlay.png").exists());
    // an image of another shape is refused the same way
    let other = tmp.path().join("other.png");
    gradient_photo(100, 300).save(&other).unwrap();
    let done = render_traces(
        &[("t".to_string(), Trace::read(&dir).unwrap())],
        &tmp.path().join("fig2"),
        &RenderOptions {
            image: Some(other),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(done.notes[0].contains("100x300"), "{:?}", done.notes);
}

#[test]
fn a_prompt_only_trace_draws_what_it_can() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::small();
    spec.steps = 0;
    spec.think_end = 0;
    spec.window = Some(8);
    let dir = make_trace(tmp.path(), "p", &mut spec);
    let t = Trace::read(&dir).unwrap();
    assert_eq!(t.arrays.role_attention.dim(), (0, 6, 5));
    assert_eq!(
        t.arrays.visual_attention_windows.as_ref().unwrap().dim(),
        (0, 6, 391)
    );
    let out = tmp.path().join("fig");
    let done = render_traces(&[("p".to_string(), t)], &out, &RenderOptions::default()).unwrap();
    assert!(out.join("p/allocation_prompt.png").exists());
    assert!(out.join("p/visual_share_by_layer.png").exists());
    assert!(out.join("p/maps/mean.png").exists());
    assert!(!out.join("p/allocation_generation.png").exists());
    assert!(!out.join("p/shift_steps.png").exists());
    assert!(!out.join("p/windows.png").exists());
    for f in &done.files {
        if f.extension().is_some_and(|e| e == "png") {
            check_png(f);
        }
    }
}
