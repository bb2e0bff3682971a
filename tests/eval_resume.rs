//! A real `rhlens eval` run killed with SIGKILL part-way resumes with every sample × setting
//! present exactly once and no corrupt line; then score and rhauc run on it.
mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn eval_cmd(out: &std::path::Path) -> Command {
    let mut c = Command::new(bin());
    c.args([
        "eval",
        "--model",
        model_dir("tiny-flat").to_str().unwrap(),
        "--bench",
        root().join("tests/fixtures/bench").to_str().unwrap(),
        "--budgets",
        "0,4,8",
        "--max-new-tokens",
        "12",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn lines(out: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn killed_eval_resumes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // start, wait until some answers are on disk, then kill -9
    let mut child = eval_cmd(&out).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if lines(&out).len() >= 5 || t0.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = lines(&out).len();
    assert!(
        before >= 5,
        "the run wrote {before} results before being killed"
    );

    let status = eval_cmd(&out).status().unwrap();
    assert!(status.success());
    let all = lines(&out);
    let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
    for l in &all {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("corrupt line {l:?}: {e}"));
        let key = (
            v["split"].as_str().unwrap().to_string(),
            v["sample_id"].as_str().unwrap().to_string(),
            v["setting"].as_str().unwrap().to_string(),
        );
        *seen.entry(key).or_default() += 1;
    }
    // 14 demo-bench samples × 3 budgets, each exactly once
    assert_eq!(seen.len(), 42, "{} distinct results", seen.len());
    assert!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
    assert!(all.len() > before, "the resume answered nothing");

    // a third run has nothing to do
    let again = eval_cmd(&out).output().unwrap();
    assert!(again.status.success());
    assert_eq!(lines(&out).len(), 42);

    // budgets were applied: think_tokens never exceeds the budget
    for l in &all {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let b: u64 = v["setting"]
            .as_str()
            .unwrap()
            .trim_start_matches("budget=")
            .parse()
            .unwrap();
        assert!(v["think_tokens"].as_u64().unwrap() <= b);
        assert!(v["role_summary"]["mean_share"].as_array().unwrap().len() == 5);
    }

    let score = Command::new(bin())
        .args(["score", out.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(
        score.status.success(),
        "{}",
        String::from_utf8_lossy(&score.stderr)
    );
    assert!(out.join("metrics.csv").exists());
}
