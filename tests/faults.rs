//! Faults a run must come through cleanly: two processes writing one run folder (the second is
//! refused naming the first's pid, the first finishes, every key once), a lock file left by a
//! dead process (taken over), a reader that closes stdout (exit 0, no panic) and a full disk
//! (one error line, and no truncated or temporary file left behind; skipped where a small tmpfs
//! cannot be mounted).
mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use rhlens::fsutil::LOCK_FILE;

/// `rhlens eval` on the tiny checkpoint: one sample of each split at two budgets (4 answers).
fn eval_cmd(out: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["eval", "--device", "cpu", "--quiet", "--limit", "1"])
        .args(["--budgets", "0,4", "--max-new-tokens", "12"])
        .arg("--model")
        .arg(model_dir("tiny-flat"))
        .arg("--bench")
        .arg(root().join("tests/fixtures/bench"))
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(String::from)
        .collect()
}

/// Every result key of `out/results.jsonl`, checking that none appears twice.
fn keys_once(out: &Path) -> usize {
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let mut seen = HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = format!("{}/{}/{}", v["split"], v["sample_id"], v["setting"]);
        assert!(seen.insert(key.clone()), "{key} answered twice");
    }
    seen.len()
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[test]
fn a_second_eval_into_a_folder_being_written_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut first = eval_cmd(&out).stderr(Stdio::null()).spawn().unwrap();
    let pid = first.id();
    let lock = out.join(LOCK_FILE);
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim() != pid.to_string()) {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first eval ended without taking the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // held still, so the second surely runs while the first holds the folder
    signal(pid, "-STOP");
    let second = eval_cmd(&out).output().unwrap();
    signal(pid, "-CONT");
    let errors = error_lines(&second);
    assert_eq!(second.status.code(), Some(1), "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(&format!("pid {pid}")), "{}", errors[0]);
    assert!(first.wait().unwrap().success());
    assert_eq!(keys_once(&out), 4);
    assert!(!lock.exists(), "the lock outlived its run");
}

#[test]
fn a_lock_file_left_by_a_dead_process_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(LOCK_FILE), format!("{dead_pid}\n")).unwrap();
    let run = eval_cmd(&out).output().unwrap();
    assert!(run.status.success(), "{:?}", error_lines(&run));
    assert_eq!(keys_once(&out), 4);
    assert!(
        !out.join(LOCK_FILE).exists(),
        "the stale lock is still there"
    );
}

#[test]
fn a_reader_that_closes_stdout_ends_the_command_quietly() {
    let mut child = Command::new(bin())
        .args(["generate", "--device", "cpu", "--prompt", "How many?"])
        .args(["--max-new-tokens", "8"])
        .arg("--model")
        .arg(model_dir("tiny-flat"))
        .arg("--image")
        .arg(image_path("wide"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // like `rhlens generate ... | head -c0`: the reader is gone before the first write
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(error_lines(&out).is_empty(), "{stderr}");
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// None (and a note) where this process may not mount one.
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: a tmpfs cannot be mounted here, so the full-disk case is not run");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills every free byte with a file.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8]);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Files under `dir` (recursively), the filler excepted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if !p.ends_with("filler") {
            out.push(p);
        }
    }
    out
}

fn no_temporary_files(dir: &Path) {
    for f in files(dir) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp"),
            "temporary file left: {}",
            f.display()
        );
    }
}

fn rhlens_on_tiny(args: &[&str], out: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .args(["--device", "cpu", "--prompt", "How many?"])
        .arg("--model")
        .arg(model_dir("tiny-flat"))
        .arg("--image")
        .arg(image_path("wide"))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn a_full_disk_leaves_no_truncated_output() {
    let Some(disk) = SmallDisk::mount("256k") else {
        return;
    };
    // the dump (logits of every prompt position, every attention map) is larger than the disk
    let dump = disk.path().join("prefill.safetensors");
    let out = rhlens_on_tiny(&["dump"], &dump);
    assert_eq!(out.status.code(), Some(1), "{:?}", error_lines(&out));
    assert_eq!(error_lines(&out).len(), 1);
    assert!(!dump.exists(), "a truncated dump was left");
    no_temporary_files(disk.path());

    // a trace written on a good disk, then figures drawn onto the full one
    let good = tempfile::tempdir().unwrap();
    let trace = good.path().join("t");
    let made = rhlens_on_tiny(&["trace", "--quiet", "--max-new-tokens", "8"], &trace);
    assert!(made.status.success(), "{:?}", error_lines(&made));
    disk.fill();
    let figs = disk.path().join("figs");
    let out = Command::new(bin())
        .args(["figures", "--quiet", "--trace"])
        .arg(&trace)
        .arg("--out")
        .arg(&figs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{:?}", error_lines(&out));
    assert_eq!(error_lines(&out).len(), 1);
    no_temporary_files(disk.path());
    for png in files(disk.path()) {
        image::open(&png).unwrap_or_else(|e| panic!("{} is truncated: {e}", png.display()));
    }

    // a results line that does not fit is cut back: the file still ends with a whole line
    let log = disk.path().join("results.jsonl");
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    std::fs::write(&log, "{\"line\":1}\n").unwrap();
    disk.fill();
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let long_line = format!("{{\"line\":\"{}\"}}\n", "x".repeat(64 * 1024));
    assert!(rhlens::fsutil::append_whole(&mut file, long_line.as_bytes()).is_err());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "{\"line\":1}\n");
}
