//! rhlens reproduces the paper as published: its layer analysis and its two-stage budget
//! protocol, compared on a fixture with a Python run of the same logic on the pinned Hugging Face
//! stack (scripts/paper_reference.py: eager attention, float32, inputs through the processor).
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn rh(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn python(args: &[&str]) {
    let python = root().join(".venv").join("bin").join("python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let script = root().join("scripts").join("paper_reference.py");
    ok(
        Command::new(python)
            .arg(script)
            .args(args)
            .output()
            .unwrap(),
        "paper_reference.py",
    );
}

fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

fn rhlens_layers(model: &Path, questions: &Path, out: &Path, query: &str) -> Value {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let images = s(&fixtures().join("images"));
    let args = [
        "layers",
        "--device",
        "cpu",
        "--quiet",
        "--query",
        query,
        "--model",
        &s(model),
        "--questions",
        &s(questions),
        "--images",
        &images,
        "--out",
        &s(out),
    ];
    ok(rh(&args), "rhlens layers");
    json(&out.join("allocation.json"))
}

#[test]
fn layers_equals_the_papers_analysis_on_a_question_file_in_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("questions.jsonl");
    std::fs::write(
        &q,
        "{\"question_id\": 1, \"image\": \"wide.png\", \"text\": \"What is here?\"}\n\
         {\"question_id\": \"q2\", \"image\": \"tall.png\", \"text\": \"Count the shapes.\"}\n",
    )
    .unwrap();
    let model = model_dir("tiny-flat");
    let reference = dir.path().join("reference.json");
    let images = fixtures().join("images");
    python(&[
        "layers",
        model.to_str().unwrap(),
        q.to_str().unwrap(),
        images.to_str().unwrap(),
        reference.to_str().unwrap(),
    ]);
    let want = json(&reference);
    let got = rhlens_layers(&model, &q, &dir.path().join("paper"), "user-end");
    assert_eq!(got["sample_ids"], want["ids"]);
    assert_eq!(got["query"], "user-end");
    let mean = max_diff(&matrix(&got["allocation"]), &matrix(&want["allocation"]));
    assert!(mean < 1e-5, "mean allocation differs by {mean}");
    for (i, (g, w)) in got["per_sample"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["per_sample"].as_array().unwrap())
        .enumerate()
    {
        let d = max_diff(&matrix(g), &matrix(w));
        assert!(d < 1e-5, "sample {i} differs by {d}");
    }
    // the spread is reported beside the mean
    assert_eq!(matrix(&got["std"]).len(), matrix(&want["allocation"]).len());
    // the other row really is another analysis (so the comparison above can fail)
    let header = rhlens_layers(&model, &q, &dir.path().join("header"), "assistant-start");
    let apart = max_diff(&matrix(&header["allocation"]), &matrix(&want["allocation"]));
    assert!(apart > 1e-3, "the two query rows agree ({apart})");
}

#[test]
fn paper_budget_protocol_equals_the_two_stage_procedure_under_greedy_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir("tiny-flat");
    let image = image_path("wide");
    let question = "What?";
    let reference = dir.path().join("reference.json");
    python(&[
        "budget",
        model.to_str().unwrap(),
        image.to_str().unwrap(),
        question,
        "30",
        "8",
        "0,10,40",
        reference.to_str().unwrap(),
    ]);
    let want = json(&reference);
    let out = dir.path().join("sweep");
    let args = [
        "sweep",
        "--device",
        "cpu",
        "--quiet",
        "--no-figures",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        question,
        "--greedy",
        "--prompt-style",
        "r1",
        "--budget-protocol",
        "paper",
        "--budgets",
        "0,10,40",
        "--max-new-tokens",
        "30",
        "--answer-tokens",
        "8",
        "--out",
        out.to_str().unwrap(),
    ];
    ok(rh(&args), "rhlens sweep");
    for run in want["runs"].as_array().unwrap() {
        let key = format!("think_chars={}", run["chars"]);
        let trace = json(&out.join("traces").join(&key).join("trace.json"));
        let settings = &trace["settings"];
        // the R1 preset's prompt is the paper's string
        assert_eq!(settings["stage1_prompt"], want["stage1_prompt"], "{key}");
        assert_eq!(settings["stage1"]["text"], want["stage1_text"], "{key}");
        assert_eq!(settings["stage1"]["thinking"], run["thinking"], "{key}");
        assert_eq!(trace["prompt"], run["stage2_prompt"], "{key}");
        assert_eq!(trace["generated_ids"], run["answer_ids"], "{key}");
        assert_eq!(settings["budget_protocol"]["budget_protocol"], "paper");
    }
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["kind"], "think_chars");
}
