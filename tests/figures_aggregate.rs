//! Aggregate figures over many traces: the summary equals a numpy/scipy computation over the same
//! traces, 20 traces in two groups render, traces group by model / setting / correctness, the
//! decay map holds the trace's values, the `layers` output draws, and publication mode draws
//! no titles.

mod common;
mod render_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use render_support::{ink_fraction, meta, write_trace, Spec};
use rhlens::formats::trace::Trace;
use rhlens::render::aggregate::{AggregateSummary, AGGREGATE_FILE};
use rhlens::render::aggregate_figures::decay_panel;

const MODELS: [&str; 2] = ["base-vl", "think-vl"];

/// A deterministic wobble in [0, 1) for trace `i`, step `s`, layer `l`.
fn wobble(i: usize, s: usize, l: usize) -> f32 {
    (((i * 7919 + s * 104_729 + l * 1_299_709) % 1000) as f32) / 1000.0
}

/// Trace `i` of the synthetic eval run: model by half, budget by parity, length by index.
fn write_run_trace(dir: &Path, i: usize) {
    let mut spec = Spec::small();
    spec.steps = 12 + (i * 7) % 30;
    spec.think_end = spec.steps - 4;
    spec.with_heads = false;
    spec.with_vision = false;
    spec.window = None;
    let mut m = meta(&spec);
    m.model.name = MODELS[i / 10].into();
    let mut a = render_support::arrays(&spec);
    let (steps, layers, _) = a.role_attention.dim();
    for s in 0..steps {
        for l in 0..layers {
            a.role_attention[[s, l, 1]] *= 0.5 + wobble(i, s, l) + 0.4 * (i / 10) as f32;
            a.role_attention[[s, l, 3]] *= 0.5 + wobble(i + 1, s, l);
        }
    }
    for (k, v) in a.visual_attention.iter_mut().enumerate() {
        *v *= 0.2 + wobble(i, k, 3);
    }
    write_trace(dir, &m, &a);
}

/// An eval run of 20 traced answers (two models, budgets 8 and 16), answered and scored.
fn make_run(root: &Path) -> PathBuf {
    let run = root.join("run");
    let mut results = String::new();
    let mut scores = String::new();
    for i in 0..20 {
        let budget = if i % 2 == 0 { 8 } else { 16 };
        let name = format!("reasoning-q{i}-budget_{budget}-s0");
        let trace = run.join("traces").join(&name);
        write_run_trace(&trace, i);
        let key = serde_json::json!({
            "split": "reasoning", "sample_id": format!("q{i}"), "setting": format!("budget={budget}"),
            "setting_value": budget, "sample_index": 0, "model": MODELS[i / 10],
            "question_type": "multi_choice",
        });
        let mut rec = key.clone();
        rec["gold"] = "A".into();
        rec["answer_text"] = "A".into();
        rec["role_summary"] = serde_json::json!({ "trace": trace.display().to_string() });
        results.push_str(&format!("{rec}\n"));
        let mut score = key;
        score["think_tokens"] = 4.into();
        score["correct"] = (i % 3 != 0).into();
        score["scorer"] = "rule".into();
        score["extracted"] = serde_json::Value::Null;
        score["details"] = "".into();
        scores.push_str(&format!("{score}\n"));
    }
    fs::write(run.join("results.jsonl"), results).unwrap();
    fs::write(run.join("scores.jsonl"), scores).unwrap();
    run
}

fn figures(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .arg("figures")
        .args(args)
        .output()
        .expect("run rhlens figures")
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "figures failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn summary(out: &Path) -> AggregateSummary {
    AggregateSummary::read(&out.join(AGGREGATE_FILE)).unwrap()
}

#[test]
fn aggregation_equals_numpy_over_the_same_traces() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path());
    for by in ["model", "setting", "correct"] {
        let out = tmp.path().join(format!("by-{by}"));
        let o = out.to_str().unwrap();
        ok(&figures(&[
            "--traces",
            run.to_str().unwrap(),
            "--group-by",
            by,
            "--out",
            o,
        ]));
        let reference = Command::new(common::python())
            .arg(common::root().join("scripts/aggregate_reference.py"))
            .arg(out.join(AGGREGATE_FILE))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&reference.stdout);
        assert!(
            reference.status.success(),
            "{}",
            String::from_utf8_lossy(&reference.stderr)
        );
        let diffs: Vec<(String, f64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("max_diff "))
            .map(|l| {
                let (name, v) = l.split_once(' ').unwrap();
                (name.to_string(), v.parse().unwrap())
            })
            .collect();
        // five roles, two curves, two spatial measures, the decay map
        assert_eq!(diffs.len(), 10, "{text}");
        for (name, d) in diffs {
            assert!(d <= 1e-6, "group by {by}: {name} differs from numpy by {d}");
        }
    }
}

#[test]
fn traces_group_by_model_setting_and_correct_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path());
    let traces = run.join("traces");
    let expect = [
        ("model", vec![("base-vl", 10), ("think-vl", 10)]),
        ("setting", vec![("budget=8", 10), ("budget=16", 10)]),
        // i % 3 == 0 is incorrect: 0, 3, ..., 18
        ("correct", vec![("incorrect", 7), ("correct", 13)]),
    ];
    for (by, groups) in expect {
        let out = tmp.path().join(format!("by-{by}"));
        ok(&figures(&[
            "--traces",
            traces.to_str().unwrap(),
            "--group-by",
            by,
            "--out",
            out.to_str().unwrap(),
        ]));
        let got: Vec<(String, usize)> = summary(&out)
            .groups
            .iter()
            .map(|g| (g.label.clone(), g.traces.len()))
            .collect();
        let want: Vec<(String, usize)> = groups.iter().map(|(l, n)| (l.to_string(), *n)).collect();
        assert_eq!(got, want, "group by {by}");
    }
    // traces outside a scored run cannot be grouped by correctness: one line, nothing drawn
    let lone = tmp.path().join("lone");
    write_run_trace(&lone.join("t"), 3);
    let o = figures(&[
        "--traces",
        lone.to_str().unwrap(),
        "--group-by",
        "correct",
        "--out",
        tmp.path().join("none").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no score"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

fn png(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

const AGGREGATE_FIGURES: [&str; 5] = [
    "aggregate_layer_shares",
    "aggregate_visual_by_position",
    "aggregate_visual_by_step",
    "aggregate_spatial",
    "decay_map",
];

#[test]
fn twenty_traces_in_two_groups_render_and_redraw_from_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path());
    let out = tmp.path().join("figs");
    ok(&figures(&[
        "--traces",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--svg",
    ]));
    for f in AGGREGATE_FIGURES {
        let img = png(&out.join(format!("{f}.png")));
        assert!(ink_fraction(&img) > 0.02, "{f}: nearly blank");
        let doc = fs::read_to_string(out.join(format!("{f}.svg"))).unwrap();
        for label in ["base-vl (n=10)", "think-vl (n=10)"] {
            assert!(doc.contains(label), "{f}: no {label:?}");
        }
    }
    // by setting, the layer × setting decay map is drawn too
    let by_setting = tmp.path().join("by-setting");
    ok(&figures(&[
        "--traces",
        run.to_str().unwrap(),
        "--group-by",
        "setting",
        "--out",
        by_setting.to_str().unwrap(),
    ]));
    assert!(ink_fraction(&png(&by_setting.join("decay_map_settings.png"))) > 0.02);
    // the saved summary draws the same figures again, without the traces
    let again = tmp.path().join("again");
    let saved = out.join(AGGREGATE_FILE);
    fs::remove_dir_all(run.join("traces")).unwrap();
    ok(&figures(&[
        "--aggregate",
        saved.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]));
    for f in AGGREGATE_FIGURES {
        assert_eq!(
            png(&again.join(format!("{f}.png"))),
            png(&out.join(format!("{f}.png"))),
            "{f}"
        );
    }
}

#[test]
fn the_decay_map_holds_the_traces_visual_share_at_each_layer_and_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    write_run_trace(&dir, 4);
    let out = tmp.path().join("figs");
    ok(&figures(&[
        "--traces",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let t = Trace::read(&dir).unwrap();
    let ra = &t.arrays.role_attention;
    let (steps, layers, roles) = ra.dim();
    let s = summary(&out);
    let g = &s.groups[0];
    assert_eq!(g.decay_map.len(), layers);
    let panel = decay_panel(g, String::new());
    for l in 0..layers {
        assert_eq!(g.decay_map[l].len(), steps);
        for st in 0..steps {
            let total: f64 = (0..roles).map(|r| ra[[st, l, r]] as f64).sum();
            let want = ra[[st, l, 1]] as f64 / total;
            assert!(
                (g.decay_map[l][st] - want).abs() < 1e-12,
                "layer {l} step {st}"
            );
            // the panel lists the deepest layer first, one column per step
            let drawn = panel.values[layers - 1 - l][st];
            assert!((drawn - want).abs() < 1e-12, "panel: layer {l} step {st}");
            assert_eq!(
                panel.row_labels[layers - 1 - l],
                t.meta.layers[l].to_string()
            );
            assert_eq!(panel.x[st], st as f64);
        }
    }
}

/// An `allocation.json` as `rhlens layers` writes it.
fn write_allocation(dir: &Path, model: &str, visual_top: f64) {
    fs::create_dir_all(dir).unwrap();
    let rows: Vec<[f64; 3]> = (0..8)
        .map(|l| {
            let v = visual_top * (1.0 - l as f64 / 10.0);
            [0.5 - v / 2.0, v, 0.5 - v / 2.0]
        })
        .collect();
    let std: Vec<[f64; 3]> = (0..8).map(|_| [0.02, 0.03, 0.02]).collect();
    let json = serde_json::json!({
        "model": model, "random_weights": false, "roles": ["system", "visual", "instruction"],
        "samples": 50, "allocation": rows, "std": std,
    });
    fs::write(dir.join("allocation.json"), json.to_string()).unwrap();
}

#[test]
fn the_layers_output_draws_as_the_layer_allocation_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_allocation(&a, "Qwen2.5-VL-7B", 0.4);
    write_allocation(&b, "R1-Onevision-7B", 0.2);
    let out = tmp.path().join("figs");
    ok(&figures(&[
        "--allocation",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--svg",
    ]));
    for f in ["allocation_layers", "allocation_layers_bars"] {
        assert!(
            ink_fraction(&png(&out.join(format!("{f}.png")))) > 0.02,
            "{f}"
        );
        let doc = fs::read_to_string(out.join(format!("{f}.svg"))).unwrap();
        assert!(
            doc.contains("R1-Onevision-7B") && doc.contains("Qwen2.5-VL-7B"),
            "{f}"
        );
    }
    // not a layers output: one line naming the file
    let bad = figures(&[
        "--allocation",
        tmp.path().to_str().unwrap(),
        "--out",
        "unused",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains("allocation.json"), "{err}");
}

/// Every `<text>` element's content, in document order.
fn svg_texts(doc: &str) -> Vec<String> {
    let doc = doc.replace(">\n", ">").replace("\n</text>", "</text>");
    doc.split("<text")
        .skip(1)
        .filter_map(|t| {
            t.split_once('>')
                .and_then(|(_, rest)| rest.split_once("</text>"))
        })
        .map(|(content, _)| content.trim().to_string())
        .collect()
}

#[test]
fn publication_mode_draws_no_titles_or_provenance_and_writes_pdf() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path());
    let (plain, paper) = (tmp.path().join("plain"), tmp.path().join("paper"));
    let r = run.to_str().unwrap();
    ok(&figures(&[
        "--traces",
        r,
        "--out",
        plain.to_str().unwrap(),
        "--svg",
    ]));
    ok(&figures(&[
        "--traces",
        r,
        "--out",
        paper.to_str().unwrap(),
        "--svg",
        "--paper",
    ]));
    for f in AGGREGATE_FIGURES {
        let texts =
            |dir: &Path| svg_texts(&fs::read_to_string(dir.join(format!("{f}.svg"))).unwrap());
        let (with, without) = (texts(&plain), texts(&paper));
        assert!(
            with.iter().any(|t| t.contains("traces in 2 groups")),
            "{f}: {with:?}"
        );
        assert!(
            !without.iter().any(|t| t.contains("traces in")),
            "{f}: {without:?}"
        );
        assert!(without.len() < with.len(), "{f}: the title went away");
        // 300 dpi: 3.3 in for one panel, 6.9 in for several
        let img = png(&paper.join(format!("{f}.png")));
        assert!(
            [990, 2070].contains(&img.width()),
            "{f}: {} px wide",
            img.width()
        );
        let pdf = fs::read(paper.join(format!("{f}.pdf"))).unwrap();
        assert!(
            pdf.starts_with(b"%PDF-1.4") && pdf.ends_with(b"%%EOF\n"),
            "{f}"
        );
    }
}
