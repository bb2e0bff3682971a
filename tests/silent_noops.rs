//! Settings that would silently do nothing are refused before any work: a budget sweep whose
//! budgets the token limit cuts first (rows identical but for their label), a thinking budget the
//! token limit never reaches, a thinking budget given to a budget sweep, several samples under
//! greedy decoding, and a steering direction without a weight. Each ends in one `error:` line naming
//! the flags concerned, and nothing is written.
mod common;

use std::path::Path;
use std::process::Output;

use common::*;

fn rhlens<S: AsRef<std::ffi::OsStr>>(args: &[S], cwd: &Path) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run rhlens")
}

/// `args` on the tiny checkpoint, on the CPU, writing to `out`.
fn on_tiny_model(args: &[&str]) -> Vec<String> {
    let model = model_dir("tiny-flat").to_string_lossy().into_owned();
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--model".into(), model, "--device".into(), "cpu".into()]);
    all.extend(["--out".into(), "out".into()]);
    all
}

/// Runs `args` on the tiny checkpoint and checks the refusal: status, one line, the words.
fn refused(args: &[&str], status: i32, words: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_path("wide");
    let mut all = on_tiny_model(args);
    if args[0] != "eval" {
        let input = ["--image", image.to_str().unwrap(), "--prompt", "How many?"];
        all.extend(input.map(String::from));
    }
    let out = rhlens(&all, tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    for w in words {
        assert!(
            errors[0].contains(w),
            "{args:?}: `{w}` not in {}",
            errors[0]
        );
    }
    assert!(
        !tmp.path().join("out").exists(),
        "{args:?} wrote its output"
    );
}

#[test]
fn budgets_the_token_limit_cuts_first_are_refused() {
    let bench = root().join("assets").join("bench");
    refused(
        &["sweep", "--budgets", "0,4,8", "--max-new-tokens", "8"],
        1,
        &["--budgets", "8", "--max-new-tokens"],
    );
    refused(
        &[
            "eval",
            "--bench",
            bench.to_str().unwrap(),
            "--budgets",
            "0,300",
        ],
        1,
        &["--budgets", "300", "--max-new-tokens 256"],
    );
    refused(
        &["trace", "--think-budget", "12", "--max-new-tokens", "12"],
        1,
        &["--think-budget 12", "--max-new-tokens 12"],
    );
}

#[test]
fn a_thinking_budget_in_a_budget_sweep_is_refused() {
    refused(
        &["sweep", "--budgets", "0,2", "--think-budget", "1"],
        1,
        &["--think-budget 1", "budget sweep"],
    );
}

#[test]
fn several_samples_under_greedy_decoding_are_refused() {
    refused(
        &["sweep", "--budgets", "0,2", "--samples", "3"],
        1,
        &["--samples 3", "greedy", "--temperature"],
    );
}

#[test]
fn a_steering_direction_needs_a_weight() {
    refused(
        &["trace", "--steer", "direction.safetensors"],
        2,
        &["--steer-weight"],
    );
}

/// Runs the same command twice into one folder, the second time with `second` appended, and
/// checks that the second run is refused naming `flag` and leaves the first run's files alone.
fn resume_refused(first: &[&str], second: &[&str], flag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = on_tiny_model(first);
    args.push("--quiet".into());
    let out = rhlens(&args, tmp.path());
    assert!(out.status.success(), "{out:?}");
    let listing = |dir: &Path| {
        let mut v: Vec<_> = walk(dir);
        v.sort();
        v
    };
    let before = listing(&tmp.path().join("out"));
    args.extend(second.iter().map(|a| a.to_string()));
    let out = rhlens(&args, tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("");
    assert!(error.contains(flag), "`{flag}` not named: {stderr}");
    assert_eq!(listing(&tmp.path().join("out")), before, "files changed");
}

/// Every file under `dir` with its size and modification time.
fn walk(dir: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            let m = std::fs::metadata(&p).unwrap();
            out.push((p, m.len(), m.modified().unwrap()));
        }
    }
    out
}

#[test]
fn a_sweep_resumed_with_other_settings_is_refused_naming_the_option() {
    let image = image_path("wide");
    let first = [
        "sweep",
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "How many?",
        "--budgets",
        "0,2",
        "--max-new-tokens",
        "8",
        "--no-figures",
    ];
    resume_refused(&first, &["--min-new-tokens", "2"], "--min-new-tokens");
    resume_refused(&first, &["--answer-cue", "<answer>"], "--answer-cue");
}

#[test]
fn an_evaluation_resumed_with_other_settings_is_refused_naming_the_option() {
    let bench = root().join("assets").join("bench");
    let first = [
        "eval",
        "--bench",
        bench.to_str().unwrap(),
        "--budgets",
        "0,2",
        "--max-new-tokens",
        "6",
        "--limit",
        "1",
    ];
    resume_refused(&first, &["--min-new-tokens", "2"], "--min-new-tokens");
}

#[test]
fn a_failing_record_is_named_by_its_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_path("wide");
    let record = |ids: &str, think: usize| {
        format!(
            r#"{{"image": "{}", "prompt": "How many?", "generated_ids": [{ids}], "think_tokens": {think}}}"#,
            image.display()
        )
    };
    // line 1 long, line 2 short, line 3 short with no thinking tokens at all
    let lines = [
        record("370, 378, 25, 485, 519, 271", 6),
        record("370, 378", 1),
        record("", 0),
    ];
    let file = tmp.path().join("generations.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let model = model_dir("tiny-flat");
    let args = [
        "direction",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--generations",
        file.to_str().unwrap(),
        "--long-min",
        "4",
        "--short-max",
        "2",
        "--out",
        "d.safetensors",
    ];
    let out = rhlens(&args, tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = "generations.jsonl:3";
    assert!(
        stderr.contains(line) && stderr.contains("no thinking tokens"),
        "the failing record is not named: {stderr}"
    );
    assert!(!tmp.path().join("d.safetensors").exists());
}

#[test]
fn waits_that_never_happen_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir("tiny-flat");
    let image = image_path("wide");
    let args = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--device",
        "cpu",
        "--prompt",
        "q",
        "--waits",
        "2",
        "--max-new-tokens",
        "10",
        "--json",
    ];
    let out = rhlens(&args, tmp.path());
    assert!(out.status.success(), "{out:?}");
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let waits = g["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "wait")
        .count();
    // greedy on this checkpoint: thinking never ends within 10 tokens, so no wait can be inserted
    assert_eq!(waits, 0, "{g}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: --waits 2") && stderr.contains("2 wait(s) never inserted"),
        "{stderr}"
    );
}
