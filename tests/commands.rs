//! The model-running commands end to end on the tiny checkpoints: trace (with vision-tower
//! attention), sweep over 7 budgets (and its resume), layers over a question file.
mod common;

use std::process::Command;

use common::*;
use rhlens::formats::trace::Trace;

fn rh(args: &[&str]) -> std::process::Output {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rhlens {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn trace_writes_a_readable_trace_with_vision_attention() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t");
    let model = model_dir("tiny-nested");
    let img = image_path("wide");
    rh(&[
        "trace",
        "--model",
        model.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--prompt",
        "Where is the circle?",
        "--max-new-tokens",
        "10",
        "--device",
        "cpu",
        "--vision-attention",
        "--map-window",
        "4",
        "--per-head",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = Trace::read(&out).unwrap();
    assert!(t.meta.complete);
    assert_eq!(t.meta.steps, 10);
    assert_eq!(t.arrays.role_attention.shape()[0], 10);
    let va = t
        .arrays
        .vision_attention
        .as_ref()
        .expect("vision attention saved");
    let g = t.meta.image.grid_thw;
    assert_eq!(va.shape(), &[3, g[1] * g[2]]);
    // each query row sums to 1, so the per-patch mean over a chunk's queries sums to 1 per chunk:
    // the full-attention block (index 2 in tiny-nested) has one chunk, window blocks one per window
    let full: f32 = va.row(2).sum();
    assert!(
        (full - 1.0).abs() < 1e-4,
        "full-attention block sums to {full}"
    );
    let win: f32 = va.row(0).sum();
    assert!(
        win >= 1.0 - 1e-4 && (win - win.round()).abs() < 1e-3,
        "window block sums to {win}"
    );
    assert_eq!(
        t.arrays.visual_attention_windows.as_ref().unwrap().shape()[0],
        3
    );
    assert!(t.arrays.role_attention_heads.is_some());
}

#[test]
fn sweep_over_seven_budgets_writes_a_summary_and_a_trace_each_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let model = model_dir("tiny-flat");
    let img = image_path("tall");
    let args = [
        "sweep",
        "--model",
        model.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--prompt",
        "How many shapes?",
        "--budgets",
        "0,2,4,6,8,10,12",
        "--max-new-tokens",
        "20",
        "--min-new-tokens",
        "20",
        "--answer-cue",
        "<answer>",
        "--device",
        "cpu",
        "--quiet",
        "--no-figures",
        "--out",
        out.to_str().unwrap(),
    ];
    rh(&args);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let rows = summary["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    for (r, b) in rows.iter().zip([0, 2, 4, 6, 8, 10, 12]) {
        assert_eq!(
            r["think_tokens"].as_u64().unwrap(),
            b,
            "budget {b} is token-exact"
        );
        let t = Trace::read(&out.join(r["trace"].as_str().unwrap())).unwrap();
        assert_eq!(t.meta.think_tokens, b as usize);
        assert!(t.meta.text.contains("</think>"));
    }
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 8);
    // rerun: complete traces are kept as they are
    let stamp = |b: &str| {
        std::fs::metadata(out.join("traces").join(b).join("trace.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = stamp("budget=4");
    rh(&args);
    assert_eq!(stamp("budget=4"), before);
}

#[test]
fn layers_averages_the_prompt_only_allocation_and_skips_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.jsonl");
    let imgs = fixtures().join("images");
    std::fs::write(
        &q,
        "{\"id\": \"a\", \"image\": \"wide.png\", \"question\": \"What is here?\"}\n\
         {\"id\": \"b\", \"image\": \"tall.png\", \"question\": \"Count the shapes.\"}\n\
         {\"id\": \"c\", \"image\": \"missing.png\", \"question\": \"?\"}\n\
         {\"id\": \"d\", \"question\": \"no image\"}\n",
    )
    .unwrap();
    let out = dir.path().join("layers");
    let model = model_dir("tiny-flat");
    let o = rh(&[
        "layers",
        "--model",
        model.to_str().unwrap(),
        "--questions",
        q.to_str().unwrap(),
        "--images",
        imgs.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
        "--query",
        "assistant-start",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("skipped record c") && err.contains("skipped record d"),
        "{err}"
    );
    let csv = std::fs::read_to_string(out.join("allocation.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').skip(1).map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 3);
    // equals the renormalised mean of the two samples' prompt-only allocations
    let rt =
        rhlens::runtime::Runtime::load(model.to_str().unwrap(), tch::Kind::Float, tch::Device::Cpu)
            .unwrap();
    let a = rhlens::probe::prompt_allocation(&rt, &imgs.join("wide.png"), "What is here?", None)
        .unwrap();
    let b =
        rhlens::probe::prompt_allocation(&rt, &imgs.join("tall.png"), "Count the shapes.", None)
            .unwrap();
    for l in 0..3 {
        let m: Vec<f64> = (0..3)
            .map(|k| (a[[l, k]] + b[[l, k]]) as f64 / 2.0)
            .collect();
        let s: f64 = m.iter().sum();
        for k in 0..3 {
            assert!((rows[l][k] - m[k] / s).abs() < 1e-5, "layer {l} role {k}");
        }
    }
}

/// `layers` and `dump` follow the overwrite rule of `trace`: an existing output is refused in one
/// line naming `--force`, and replaced with it.
#[test]
fn layers_and_dump_refuse_an_existing_output_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.jsonl");
    std::fs::write(&q, "{\"image\": \"wide.png\", \"question\": \"What?\"}\n").unwrap();
    let model = model_dir("tiny-flat");
    let (model, q) = (model.to_str().unwrap(), q.to_str().unwrap());
    let images = fixtures().join("images");
    let image = image_path("wide");
    let layers_out = dir.path().join("layers");
    let dump_out = dir.path().join("prefill.safetensors");
    let layers = [
        "layers",
        "--model",
        model,
        "--questions",
        q,
        "--images",
        images.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
        "--out",
        layers_out.to_str().unwrap(),
    ];
    let dump = [
        "dump",
        "--model",
        model,
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "What?",
        "--device",
        "cpu",
        "--out",
        dump_out.to_str().unwrap(),
    ];
    for args in [&layers[..], &dump[..]] {
        rh(args);
        let again = Command::new(bin()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&again.stderr);
        assert_eq!(again.status.code(), Some(1), "{err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        let mut forced = args.to_vec();
        forced.push("--force");
        rh(&forced);
    }
}
