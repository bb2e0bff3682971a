//! `rhlens score`, `rhlens rhauc`, `rhlens merge` through the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rhlens::bench::data::load_bench;
use rhlens::bench::metrics::rh_auc;
use rhlens::bench::results::{Manifest, ResultRecord, ResultsWriter, Setting};
use rhlens::bench::runner::{run_resumable, RunOptions};
use rhlens::bench::shard::Shard;
use serde_json::{json, Value};

fn rhlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rhlens"))
        .args(args)
        .output()
        .expect("run rhlens")
}

fn ok_json(args: &[&str]) -> Value {
    let out = rhlens(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn fails_with(args: &[&str], needle: &str) {
    let out = rhlens(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: stderr {err:?} lacks {needle:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn fixture() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rhauc/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("json")
}

#[test]
fn rhauc_from_points_files() {
    let fx = fixture();
    let case = fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == "paper_lengths_7")
        .expect("case")
        .clone();
    let r: Vec<f64> = serde_json::from_value(case["reasoning"].clone()).expect("r");
    let h: Vec<f64> = serde_json::from_value(case["perception"].clone()).expect("h");
    let want = case["rh_auc"].as_f64().expect("want");
    let dir = tempfile::tempdir().expect("tempdir");

    // Percent CSV, one model: scale detected and reported.
    let mut csv = String::from("setting,reasoning,perception\n");
    for (i, (a, b)) in r.iter().zip(&h).enumerate() {
        csv.push_str(&format!("budget={},{},{}\n", i * 100, a * 100.0, b * 100.0));
    }
    let p = dir.path().join("points.csv");
    std::fs::write(&p, csv).expect("write");
    let v = ok_json(&["rhauc", "--points", p.to_str().expect("utf8"), "--json"]);
    assert!(
        (v["rh_auc"].as_f64().expect("number") - want).abs() <= 1e-9,
        "{v}"
    );
    assert_eq!(v["scale"], "percent");
    assert_eq!(v["scale_detected"], true);
    assert_eq!(v["models"][0]["n_points"], 7);

    // JSON array with two models and a grouping column: rh_auc by model.
    let mut pts = Vec::new();
    for (i, (a, b)) in r.iter().zip(&h).enumerate() {
        pts.push(json!({"model": "x", "training": "RL", "setting": i * 100, "reasoning": a, "perception": b}));
    }
    pts.push(json!({"model": "y", "training": "SFT+RL", "setting": "0", "reasoning": 0.3, "perception": 0.8}));
    pts.push(json!({"model": "y", "training": "SFT+RL", "setting": "1", "reasoning": 0.6, "perception": 0.5}));
    let pj = dir.path().join("points.json");
    std::fs::write(&pj, serde_json::to_string(&pts).expect("ser")).expect("write");
    let v = ok_json(&[
        "rhauc",
        "--points",
        pj.to_str().expect("utf8"),
        "--json",
        "--group-by",
        "training",
    ]);
    assert!((v["rh_auc"]["x"].as_f64().expect("x") - want).abs() <= 1e-9);
    assert!((v["rh_auc"]["y"].as_f64().expect("y") - 0.5).abs() <= 1e-12);
    assert_eq!(v["scale"], "unit");
    assert_eq!(v["groups"]["training"].as_array().expect("groups").len(), 2);

    // Text output works too.
    let out = rhlens(&["rhauc", "--points", p.to_str().expect("utf8")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{want:.3}")), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("percent"));
}

#[test]
fn rhauc_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let single = dir.path().join("single.csv");
    std::fs::write(&single, "setting,reasoning,perception\n0,0.5,0.6\n").expect("write");
    fails_with(
        &["rhauc", "--points", single.to_str().expect("utf8")],
        "at least two settings",
    );
    let flat = dir.path().join("flat.csv");
    std::fs::write(
        &flat,
        "setting,reasoning,perception\n0,0.5,0.6\n1,0.5,0.7\n",
    )
    .expect("write");
    fails_with(
        &["rhauc", "--points", flat.to_str().expect("utf8"), "--json"],
        "reasoning accuracy is the same",
    );
    fails_with(
        &[
            "rhauc",
            "--points",
            flat.to_str().expect("utf8"),
            "--bootstrap",
            "10",
        ],
        "use --run",
    );
    fails_with(
        &["rhauc", "--points", "/nonexistent/points.csv"],
        "cannot read",
    );
    fails_with(
        &["rhauc", "--run", dir.path().to_str().expect("utf8")],
        "rhlens score",
    );
}

fn fake(s: &rhlens::bench::data::Sample, set: &Setting, k: u32, model: &str) -> ResultRecord {
    let mut r = ResultRecord::for_item(s, set, k, model);
    // Right on every other sample id and more often at higher budgets for reasoning.
    let id: usize = s.id.parse().expect("numeric id");
    let right = match s.split {
        rhlens::bench::data::Split::Reasoning => id as f64 <= 2.0 + set.value / 50.0,
        rhlens::bench::data::Split::Perception => id as f64 <= 6.0 - set.value / 50.0,
    };
    r.answer_text = if right {
        format!("<answer>{}</answer>", s.answer)
    } else {
        "<answer>none of these</answer>".into()
    };
    r.think_tokens = set.value as u64;
    r
}

fn run_shard(dir: &Path, shard: Shard, settings: &[Setting]) {
    let bench = load_bench(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench"))
        .expect("bench");
    Manifest::new(
        Path::new("tests/fixtures/bench"),
        "cli-model",
        settings,
        1,
        &bench.samples,
        Some(shard),
        json!({}),
    )
    .write_or_check(dir)
    .expect("manifest");
    let mut w = ResultsWriter::open(dir).expect("open");
    let opts = RunOptions {
        shard: Some(shard),
        samples_per_setting: 1,
        keep_going: false,
    };
    run_resumable(&mut w, &bench.samples, settings, &opts, |s, set, k| {
        Ok(fake(s, set, k, "cli-model"))
    })
    .expect("run");
}

#[test]
fn merge_score_and_bootstrap_through_the_cli() {
    let root = tempfile::tempdir().expect("tempdir");
    let settings = vec![
        Setting::new("budget=0", 0.0),
        Setting::new("budget=50", 50.0),
        Setting::new("budget=100", 100.0),
    ];
    let a = root.path().join("a");
    let b = root.path().join("b");
    run_shard(&a, Shard::new(0, 2).expect("s"), &settings);
    run_shard(&b, Shard::new(1, 2).expect("s"), &settings);
    let s = |p: &Path| p.to_str().expect("utf8").to_string();

    // Only one shard: incomplete, and --strict turns that into a failure.
    let partial = root.path().join("partial");
    let v = ok_json(&["merge", "--out", &s(&partial), &s(&a), "--json"]);
    assert_eq!(v["complete"], false);
    assert_eq!(v["missing"].as_array().expect("missing").len(), 21);
    fails_with(
        &[
            "merge",
            "--strict",
            "--out",
            &s(&root.path().join("p2")),
            &s(&a),
        ],
        "21 missing",
    );

    let merged = root.path().join("merged");
    let v = ok_json(&["merge", "--out", &s(&merged), &s(&a), &s(&b), "--json"]);
    assert_eq!(v["complete"], true);
    assert_eq!(v["written"], 42);

    let v = ok_json(&["score", &s(&merged), "--json", "--bootstrap", "50"]);
    let rows = v["metrics"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    // Reasoning ids 1..7 right iff id <= 2 + value/50: 2/7, 3/7, 4/7; perception id <= 6 - value/50: 6/7, 5/7, 4/7.
    let pts: Vec<(f64, f64)> = [(2.0, 6.0), (3.0, 5.0), (4.0, 4.0)]
        .iter()
        .map(|(r, p)| (r / 7.0, p / 7.0))
        .collect();
    for (row, (r, p)) in rows.iter().zip(&pts) {
        assert!((row["reasoning"].as_f64().expect("r") - r).abs() < 1e-12);
        assert!((row["perception"].as_f64().expect("p") - p).abs() < 1e-12);
        assert_eq!(row["scorer"], "rule");
    }
    let want = rh_auc(&pts).expect("defined").rh_auc;
    assert!((v["rhauc"]["rh_auc"].as_f64().expect("auc") - want).abs() < 1e-12);
    for f in ["scores.jsonl", "metrics.json", "metrics.csv", "rhauc.json"] {
        assert!(merged.join(f).is_file(), "{f}");
    }

    // metrics.csv feeds `rhauc --points` directly.
    let v = ok_json(&[
        "rhauc",
        "--points",
        &s(&merged.join("metrics.csv")),
        "--json",
    ]);
    assert!((v["rh_auc"].as_f64().expect("auc") - want).abs() < 1e-12);
    assert_eq!(v["models"][0]["scorer"], "rule");
    let v = ok_json(&[
        "rhauc",
        "--points",
        &s(&merged.join("metrics.json")),
        "--json",
    ]);
    assert!((v["rh_auc"].as_f64().expect("auc") - want).abs() < 1e-12);

    // Bootstrap from the scored run: same seed, same interval.
    let args = [
        "rhauc",
        "--run",
        &s(&merged),
        "--bootstrap",
        "200",
        "--seed",
        "9",
        "--json",
    ];
    let v1 = ok_json(&args);
    let v2 = ok_json(&args);
    assert_eq!(v1, v2);
    let boot = &v1["models"][0]["bootstrap"];
    assert_eq!(boot["resamples"], 200);
    assert!(boot["lo"].as_f64().expect("lo") <= boot["hi"].as_f64().expect("hi"));

    fails_with(
        &["score", &s(&root.path().join("nope"))],
        "results.jsonl not found",
    );
}
