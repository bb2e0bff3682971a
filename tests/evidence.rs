//! `rhlens evidence`: image dependence equals a Hugging Face teacher-forced computation on a
//! fixture (scripts/dependence_reference.py: eager, float32, inputs through the processor), the
//! attention metrics land beside the trace, a sweep gets a per-setting summary, and bad input is
//! one line.
mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// Runs rhlens with `args`; it must succeed.
fn rhlens_ok(args: &[&str]) {
    let out = Command::new(bin()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rhlens {}: {err}", args[0]);
}

/// `rhlens evidence` on the tiny fixture, for a `--trace` or a `--sweep` (`what`).
fn evidence(what: &str, dir: &Path, ablations: &str, extra: &[&str]) {
    let model = model_dir("tiny-flat");
    let mut args = vec![
        "evidence",
        "--device",
        "cpu",
        "--quiet",
        "--model",
        s(&model),
    ];
    args.extend([what, s(dir), "--image-dependence", ablations]);
    args.extend_from_slice(extra);
    rhlens_ok(&args);
}

fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A short traced generation of the tiny fixture with per-head arrays and windows.
fn trace(dir: &Path) {
    let model = model_dir("tiny-flat");
    let image = image_path("wide");
    let args = [
        "trace",
        "--device",
        "cpu",
        "--quiet",
        "--model",
        s(&model),
        "--image",
        s(&image),
        "--prompt",
        "What is here?",
        "--max-new-tokens",
        "10",
        "--think-budget",
        "4",
        "--per-head",
        "--map-window",
        "4",
        "--out",
        s(dir),
    ];
    rhlens_ok(&args);
}

#[test]
fn image_dependence_equals_a_hugging_face_teacher_forced_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    trace(&dir);
    evidence("--trace", &dir, "blank,drop", &["--box", "0,0,100,60"]);
    let model = model_dir("tiny-flat");
    let reference = tmp.path().join("reference.json");
    let script = root().join("scripts").join("dependence_reference.py");
    let py = Command::new(python())
        .args([s(&script), s(&model), s(&dir), s(&reference)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&py.stderr);
    assert!(py.status.success(), "dependence_reference.py: {err}");
    let want = json(&reference);
    let got = json(&dir.join("dependence.json"));
    let meta = json(&dir.join("trace.json"));
    let steps = meta["generated_ids"].as_array().unwrap().len();
    assert_eq!(got["steps"].as_u64().unwrap() as usize, steps);
    for (i, name) in ["blank", "drop"].into_iter().enumerate() {
        let v = &got["variants"][i];
        assert_eq!(v["ablation"], name);
        let (kl, want_kl) = (floats(&v["kl"]), floats(&want[name]["kl"]));
        assert!(max_diff(&kl, &want_kl) < 1e-5, "{name}: KL differs");
        let d = max_diff(
            &floats(&v["delta_logp"]),
            &floats(&want[name]["delta_logp"]),
        );
        assert!(d < 1e-5, "{name}: Δ log p differs by {d}");
        // Hugging Face returns the last layer after the final norm: compare the others
        for (l, w) in want[name]["resid_cosine_distance"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let d = max_diff(&floats(&v["resid_cosine_distance"][l]), &floats(w));
            assert!(d < 1e-6, "{name}: layer {l} distance differs by {d}");
        }
        // the ablation changes the predictions (so the comparison above can fail)
        assert!(
            kl.iter().any(|&k| k > 1e-3),
            "{name}: the image made no difference"
        );
        let all = &v["summary"]["all"];
        assert_eq!(all["tokens"].as_u64().unwrap() as usize, steps);
        let mean = kl.iter().sum::<f64>() / steps as f64;
        assert!((all["kl"].as_f64().unwrap() - mean).abs() < 1e-12);
    }
    assert_eq!(got["variants"][0]["fill_rgb"], want["blank"]["fill"]);
    // the drop variant's prompt lost exactly the image tokens
    let visual = meta["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "visual")
        .unwrap();
    let image_tokens = visual["end"].as_u64().unwrap() - visual["start"].as_u64().unwrap();
    assert_eq!(
        got["variants"][1]["prompt_tokens"].as_u64().unwrap(),
        meta["prompt_tokens"].as_u64().unwrap() - image_tokens
    );
    // the attention metrics and figures are beside the trace
    let ev = json(&dir.join("evidence.json"));
    assert_eq!(ev["boxes"][0]["mean"].as_f64().unwrap() > 0.0, true);
    assert!(dir.join("heads.csv").is_file());
    for fig in [
        "dependence_steps",
        "spread",
        "spread_windows",
        "sink_free_share",
        "heads_thinking",
        "box_mass",
    ] {
        assert!(
            dir.join("evidence").join(format!("{fig}.png")).is_file(),
            "{fig}"
        );
    }
}

#[test]
fn a_sweep_summary_gets_dependence_and_sink_free_share_per_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("sweep");
    let model = model_dir("tiny-flat");
    let image = image_path("tall");
    let (budgets, limit) = ("0,3", "6");
    let mut args = vec!["sweep", "--out", s(&sweep), "--budgets", budgets];
    args.extend([
        "--max-new-tokens",
        limit,
        "--prompt",
        "Count.",
        "--image",
        s(&image),
    ]);
    args.extend([
        "--model",
        s(&model),
        "--device",
        "cpu",
        "--quiet",
        "--no-figures",
    ]);
    rhlens_ok(&args);
    evidence("--sweep", &sweep, "blank", &[]);
    let csv = std::fs::read_to_string(sweep.join("evidence_summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "setting",
        "visual_share",
        "sink_free_visual_share",
        "blank_kl_thinking",
        "blank_kl_answer",
    ] {
        assert!(header.contains(&col), "{col} missing from {header:?}");
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["budget=0", "budget=3"]
    );
    // each row's dependence is its own trace's
    for r in &rows {
        let dep = json(&sweep.join("traces").join(r[0]).join("dependence.json"));
        let col = header
            .iter()
            .position(|c| *c == "blank_kl_thinking")
            .unwrap();
        match dep["variants"][0]["summary"]["thinking"]["kl"].as_f64() {
            Some(kl) => assert!((r[col].parse::<f64>().unwrap() - kl).abs() < 1e-6),
            None => assert_eq!(r[col], ""),
        }
    }
    assert!(sweep.join("figures").join("sweep_evidence.png").is_file());
}

#[test]
fn bad_boxes_and_settings_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    trace(&dir);
    let cases: [(&[&str], i32, &str); 4] = [
        (&["--box", "1,2,3"], 2, "four numbers"),
        (&["--box", "5,0,1,9"], 2, "x0 < x1"),
        (&["--box", "500,500,900,900"], 1, "outside"),
        (&["--force"], 1, "--image-dependence"),
    ];
    for (extra, code, says) in cases {
        let mut args = vec!["evidence", "--trace", s(&dir), "--no-figures"];
        args.extend_from_slice(extra);
        let out = Command::new(bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert_eq!(
            err.trim()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1,
            "{err}"
        );
    }
}

#[test]
fn eval_reports_the_attention_inside_each_bbox_of_a_record() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = tmp.path().join("bench");
    std::fs::create_dir_all(bench.join("per_images")).unwrap();
    std::fs::copy(image_path("wide"), bench.join("per_images/w.png")).unwrap();
    // wide.png is 200 × 120: the whole image, then its left and right halves
    let record = serde_json::json!([{
        "id": 1, "question": "What is here?", "image": "per_images/w.png", "answer": "x",
        "question_type": "free_form",
        "bbox": [[0, 0, 200, 120], [0, 0, 100, 120], [100, 0, 200, 120]]
    }]);
    std::fs::write(bench.join("halu_data.json"), record.to_string()).unwrap();
    let (model, out) = (model_dir("tiny-flat"), tmp.path().join("run"));
    let mut args = vec![
        "eval",
        "--bench",
        s(&bench),
        "--out",
        s(&out),
        "--budgets",
        "0",
    ];
    args.extend([
        "--max-new-tokens",
        "4",
        "--model",
        s(&model),
        "--device",
        "cpu",
        "--quiet",
    ]);
    rhlens_ok(&args);
    let line = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let rec: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let mass = floats(&rec["role_summary"]["box_mass"]);
    assert!((mass[0] - 1.0).abs() < 1e-6, "{mass:?}");
    assert!(mass[1] > 0.0 && mass[2] > 0.0, "{mass:?}");
    assert!((mass[1] + mass[2] - 1.0).abs() < 1e-6, "{mass:?}");
}
