//! A trace survives its job being stopped: `rhlens trace` saves what it captured every few steps
//! and on SIGTERM (what Slurm sends at a time limit), then exits non-zero with one line naming the
//! partial trace; `figures --allow-partial` draws it and plain `figures` refuses it.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use rhlens::formats::trace::{Trace, TraceError, TraceMeta, ATTENTION_FILE};

/// Steps in the last save of the trace in `dir`, once it holds arrays.
fn saved_steps(dir: &Path) -> Option<usize> {
    if !dir.join(ATTENTION_FILE).is_file() {
        return None;
    }
    TraceMeta::read(dir)
        .ok()
        .filter(|m| m.steps > 0)
        .map(|m| m.steps)
}

fn error_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(String::from)
        .collect()
}

#[test]
fn a_trace_stopped_by_sigterm_keeps_its_saved_steps_and_figures_draw_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let (model, image) = (model_dir("tiny-flat"), image_path("wide"));
    // far more steps than the run reaches before the signal: it cannot finish first
    let mut child = Command::new(bin())
        .args([
            "trace",
            "--device",
            "cpu",
            "--quiet",
            "--prompt",
            "How many?",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--image")
        .arg(&image)
        .args(["--max-new-tokens", "20000", "--min-new-tokens", "20000"])
        .args(["--checkpoint-every", "3", "--out"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before_signal = loop {
        if let Some(steps) = saved_steps(&dir) {
            break steps;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the trace ended before saving a checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(before_signal % 3, 0, "saves fall every 3 steps");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let errors = error_lines(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("partial trace"), "{}", errors[0]);
    assert!(errors[0].contains(&*dir.to_string_lossy()), "{}", errors[0]);

    let meta = TraceMeta::read(&dir).unwrap();
    assert!(!meta.complete);
    assert_eq!(meta.stop_reason, "interrupted");
    assert!(
        meta.steps >= before_signal,
        "{} < {before_signal}",
        meta.steps
    );
    assert!(meta.steps < 20000);
    assert_eq!(meta.generated_ids.len(), meta.steps);
    assert_eq!(meta.tokens.len(), meta.steps);
    let partial = Trace::read_allow_partial(&dir).unwrap();
    assert_eq!(partial.arrays.role_attention.dim().0, meta.steps);
    assert!(matches!(Trace::read(&dir), Err(TraceError::Partial { .. })));
    // nothing but the trace's files: no temporary file, no lock left
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["attention.safetensors", "trace.json"]);

    let figures = |extra: &[&str]| {
        Command::new(bin())
            .args(["figures", "--quiet", "--trace"])
            .arg(&dir)
            .arg("--out")
            .arg(tmp.path().join("figs"))
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = figures(&[]);
    let errors = error_lines(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("--allow-partial"), "{}", errors[0]);
    let drawn = figures(&["--allow-partial"]);
    assert!(drawn.status.success(), "{drawn:?}");
    let pngs = walk_pngs(&tmp.path().join("figs"));
    assert!(!pngs.is_empty());
    for png in pngs {
        let img = image::open(&png).unwrap();
        assert!(img.width() > 16 && img.height() > 16, "{}", png.display());
    }
}

fn walk_pngs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_pngs(&p));
        } else if p.extension().is_some_and(|x| x == "png") {
            out.push(p);
        }
    }
    out
}
