//! How the binary ends: a reader that leaves early is not a failure (status 0, nothing on
//! stderr), a libtorch failure is one `error:` line naming the command (status 1, no panic or
//! backtrace), and a usage error is one line with status 2.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(parts: &[&str]) -> String {
    let mut p = root().join("tests").join("fixtures");
    for part in parts {
        p.push(part);
    }
    p.to_string_lossy().into_owned()
}

/// `generate` on the tiny checkpoint on the CPU, streaming its text, plus `extra`.
fn generate(extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["generate", "--device", "cpu", "--max-new-tokens", "24"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--model".into(), fixture(&["models", "tiny-flat"])]);
    a.extend(["--image".into(), fixture(&["images", "wide.png"])]);
    a.extend(["--prompt".into(), "What is in the image?".into()]);
    // tiny-flat never names the thinking tags: say it does not think (no warning)
    a.push("--no-think".into());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// `rhauc` on a small points file written to `dir`.
fn rhauc(dir: &std::path::Path) -> Vec<String> {
    let points = dir.join("points.csv");
    let mut csv = String::from("setting,reasoning,perception\n");
    for i in 0..40 {
        let r = 0.5 + 0.01 * i as f64;
        csv.push_str(&format!("budget={},{r},{}\n", i * 10, 1.0 - r));
    }
    std::fs::write(&points, csv).unwrap();
    ["rhauc", "--units", "unit", "--points"]
        .iter()
        .map(|s| s.to_string())
        .chain([points.to_string_lossy().into_owned()])
        .collect()
}

fn spawn(args: &[String], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rhlens"));
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot run rhlens {args:?}: {e}"))
}

fn describe(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    format!("exit {:?}, stderr:\n{stderr}", out.status.code())
}

/// stderr lines other than the note every random-weights output carries.
fn stderr_lines(out: &Output) -> Vec<String> {
    let text = String::from_utf8_lossy(&out.stderr);
    let note_or_blank = |l: &&str| l.starts_with("note:") || l.trim().is_empty();
    text.lines()
        .filter(|l| !note_or_blank(l))
        .map(String::from)
        .collect()
}

/// Run with stdout read for `bytes` bytes (none: closed at once), then closed.
fn run_with_reader_leaving(args: &[String], bytes: usize) -> Output {
    let mut child = spawn(args, &[]);
    let mut stdout = child.stdout.take().unwrap();
    if bytes > 0 {
        let mut buf = vec![0u8; bytes];
        stdout.read_exact(&mut buf).unwrap();
    }
    drop(stdout);
    child.wait_with_output().unwrap()
}

fn ends_quietly(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    assert!(stderr_lines(out).is_empty(), "{}", describe(out));
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let rhauc = rhauc(tmp.path());
    ends_quietly(&run_with_reader_leaving(&rhauc, 1));
    ends_quietly(&run_with_reader_leaving(&rhauc, 0));
    let generate = generate(&[]);
    ends_quietly(&run_with_reader_leaving(&generate, 1));
    ends_quietly(&run_with_reader_leaving(&generate, 0));
}

#[test]
fn a_libtorch_failure_is_one_line_naming_the_command() {
    let child = spawn(&generate(&[]), &[("RHLENS_TEST_ONLY_TORCH_FAILURE", "1")]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    let line = &lines[0];
    assert!(line.starts_with("error: generate: "), "{line}");
    // libtorch's own first line, not its C++ stack
    assert!(line.contains("shapes cannot be multiplied"), "{line}");
    assert!(line.contains("--device cpu"), "{line}");
    for bad in ["panicked", "backtrace", "Exception raised", "Torch("] {
        assert!(!line.contains(bad), "{line}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn usage_errors_are_one_line_with_status_2() {
    for flags in [
        &["--dtype", "f64"][..],
        &["--device", "tpu"],
        &["--temperature", "warm"],
    ] {
        // in place of `--device cpu`; parsing fails before any device is used
        let mut args = generate(&[]);
        args.splice(1..3, flags.iter().map(|s| s.to_string()));
        let out = spawn(&args, &[]).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", describe(&out));
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{}", describe(&out));
        assert!(lines[0].starts_with("error:"), "{}", describe(&out));
    }
}
