//! User mistakes on the command line: each one must end in a single `error: ...` line on stderr
//! and a non-zero exit (never a panic or a backtrace), and must not destroy work already on disk.
//!
//! Damaged checkpoints, images and input files are built in temporary directories from the
//! committed fixtures. Every command runs with `--device cpu` and a few new tokens.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use serde_json::Value;
use tempfile::TempDir;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model(name: &str) -> PathBuf {
    root()
        .join("tests")
        .join("fixtures")
        .join("models")
        .join(name)
}

fn image(name: &str) -> PathBuf {
    root()
        .join("tests")
        .join("fixtures")
        .join("images")
        .join(format!("{name}.png"))
}

/// Runs rhlens in `cwd` (a temp dir, so nothing lands in the repository).
fn rhlens<I, S>(cwd: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    Command::new(env!("CARGO_BIN_EXE_rhlens"))
        .args(&args)
        .current_dir(cwd)
        // a panic would print its backtrace; the checks below must see it
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run rhlens {args:?}: {e}"))
}

fn os(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

/// `generate` on the tiny flat checkpoint, small and on the CPU, plus `extra` (which replaces
/// the default of any flag it gives).
fn generate_args(extra: &[OsString]) -> Vec<OsString> {
    let given = |flag: &str| {
        extra.iter().any(|x| {
            let x = x.to_string_lossy();
            x == flag || x.starts_with(&format!("{flag}="))
        })
    };
    let defaults: [(&str, OsString); 5] = [
        ("--device", "cpu".into()),
        ("--max-new-tokens", "4".into()),
        ("--model", os(&model("tiny-flat"))),
        ("--image", os(&image("wide"))),
        ("--prompt", "What is in the image?".into()),
    ];
    // tiny-flat never names the thinking tags: `--think` keeps the guess's warning out of the way
    let mut a: Vec<OsString> = vec!["generate".into(), "--quiet".into(), "--think".into()];
    for (flag, value) in defaults {
        if !given(flag) {
            a.extend([flag.into(), value]);
        }
    }
    a.extend(extra.iter().cloned());
    a
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stderr lines that are not empty and not the random-weights note.
fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note:"))
        .map(str::to_string)
        .collect()
}

fn assert_no_crash(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "frame #"] {
        assert!(
            !err.contains(bad),
            "stderr contains {bad:?}:\n{}",
            describe(out)
        );
    }
    // 101 is Rust's panic exit code; a signal leaves no code at all
    assert!(
        matches!(out.status.code(), Some(c) if c != 0 && c != 101),
        "expected a clean non-zero exit:\n{}",
        describe(out)
    );
}

/// The command failed cleanly with exactly one `error:` line naming every needle; returns it.
fn fails(out: &Output, needles: &[&str]) -> String {
    assert_no_crash(out);
    let lines = error_lines(out);
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one error line:\n{}",
        describe(out)
    );
    let line = &lines[0];
    assert!(
        line.starts_with("error:"),
        "no `error:` prefix:\n{}",
        describe(out)
    );
    assert!(
        line.len() > "error:".len() + 3,
        "empty error:\n{}",
        describe(out)
    );
    for n in needles {
        assert!(
            line.to_lowercase().contains(&n.to_lowercase()),
            "error line does not mention {n:?}:\n{}",
            describe(out)
        );
    }
    line.clone()
}

fn succeeds(out: &Output) {
    assert!(out.status.success(), "expected success:\n{}", describe(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{}", describe(out));
    assert!(!err.contains("error:"), "{}", describe(out));
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A copy of a fixture checkpoint in `tmp/name`, ready to be damaged.
fn checkpoint_copy(tmp: &Path, fixture: &str, name: &str) -> PathBuf {
    let dst = tmp.join(name);
    copy_dir(&model(fixture), &dst);
    dst
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn with_model(dir: &Path) -> Vec<OsString> {
    vec!["--model".into(), os(dir)]
}

// ---------------------------------------------------------------- 1. checkpoints

#[test]
fn missing_or_incomplete_checkpoint_directories() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();

    let missing = t.join("no-such-model");
    let out = rhlens(t, generate_args(&with_model(&missing)));
    fails(&out, &[missing.to_str().unwrap()]);

    let empty = t.join("empty");
    fs::create_dir(&empty).unwrap();
    let out = rhlens(t, generate_args(&with_model(&empty)));
    fails(&out, &["config.json"]);

    for (file, needle) in [
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer.json"),
        ("model.safetensors", "safetensors"),
    ] {
        let dir = checkpoint_copy(t, "tiny-flat", &format!("no-{file}"));
        fs::remove_file(dir.join(file)).unwrap();
        let out = rhlens(t, generate_args(&with_model(&dir)));
        let line = fails(&out, &[needle, "not found"]);
        assert!(line.contains(dir.to_str().unwrap()), "{line}");
    }
}

#[test]
fn broken_config_json() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();

    let dir = checkpoint_copy(t, "tiny-flat", "not-json");
    fs::write(dir.join("config.json"), "{ this is not json").unwrap();
    let out = rhlens(t, generate_args(&with_model(&dir)));
    fails(&out, &["config.json", "not valid JSON"]);

    let dir = checkpoint_copy(t, "tiny-flat", "llama");
    edit_json(&dir.join("config.json"), |c| {
        c["model_type"] = "llama".into()
    });
    let out = rhlens(t, generate_args(&with_model(&dir)));
    fails(&out, &["model_type", "llama"]);
}

#[test]
fn weight_shapes_that_disagree_with_the_config() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();

    // text MLP width: every gate_proj in the file is [112, 64]
    let dir = checkpoint_copy(t, "tiny-flat", "intermediate");
    edit_json(&dir.join("config.json"), |c| {
        c["intermediate_size"] = 120.into()
    });
    let out = rhlens(t, generate_args(&with_model(&dir)));
    fails(&out, &["shape", "[112, 64]", "[120, 64]"]);

    // text hidden size, with heads and the vision projection changed along so that the config
    // itself stays consistent and only the weights disagree
    let dir = checkpoint_copy(t, "tiny-flat", "hidden");
    edit_json(&dir.join("config.json"), |c| {
        c["hidden_size"] = 128.into();
        c["num_attention_heads"] = 8.into();
        c["vision_config"]["out_hidden_size"] = 128.into();
    });
    let out = rhlens(t, generate_args(&with_model(&dir)));
    fails(&out, &["shape", "128"]);
}

#[test]
fn truncated_weights_and_missing_shards() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();

    let dir = checkpoint_copy(t, "tiny-flat", "truncated");
    let st = dir.join("model.safetensors");
    let bytes = fs::read(&st).unwrap();
    fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let out = rhlens(t, generate_args(&with_model(&dir)));
    let line = fails(&out, &["model.safetensors"]);
    assert!(
        line.contains("truncated") || line.contains("corrupt"),
        "{line}"
    );

    let dir = checkpoint_copy(t, "tiny-nested", "missing-shard");
    fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    let out = rhlens(t, generate_args(&with_model(&dir)));
    fails(&out, &["model-00002-of-00003.safetensors", "not found"]);

    // the index names a shard file that was never there
    let dir = checkpoint_copy(t, "tiny-nested", "bad-index");
    let index = dir.join("model.safetensors.index.json");
    let mut renamed = false;
    edit_json(&index, |v| {
        let map = v["weight_map"].as_object_mut().unwrap();
        for file in map.values_mut() {
            if file == "model-00003-of-00003.safetensors" {
                *file = "model-00009-of-00009.safetensors".into();
                renamed = true;
            }
        }
    });
    assert!(renamed, "fixture index has no third shard");
    let out = rhlens(t, generate_args(&with_model(&dir)));
    fails(&out, &["model-00009-of-00009.safetensors"]);
}

// ---------------------------------------------------------------- 2. images

#[test]
fn unreadable_images() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let img = |p: &Path| vec![OsString::from("--image"), os(p)];

    let missing = t.join("missing.png");
    let out = rhlens(t, generate_args(&img(&missing)));
    fails(&out, &[missing.to_str().unwrap()]);

    let text = t.join("text.png");
    fs::write(&text, "this is a text file, not a picture\n").unwrap();
    let out = rhlens(t, generate_args(&img(&text)));
    fails(&out, &[text.to_str().unwrap(), "decode"]);

    let truncated = t.join("truncated.png");
    let bytes = fs::read(image("big")).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let out = rhlens(t, generate_args(&img(&truncated)));
    fails(&out, &[truncated.to_str().unwrap()]);
}

#[test]
fn images_of_unusable_size() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let img = |p: &Path| vec![OsString::from("--image"), os(p)];

    let small = t.join("small.png");
    image::RgbImage::from_pixel(20, 20, image::Rgb([200, 30, 30]))
        .save(&small)
        .unwrap();
    let out = rhlens(t, generate_args(&img(&small)));
    fails(&out, &[small.to_str().unwrap(), "20x20", "28"]);

    // 10 px high: both too thin and too elongated; the message must name a real limit
    let thin = t.join("thin.png");
    image::RgbImage::from_pixel(3000, 10, image::Rgb([30, 30, 200]))
        .save(&thin)
        .unwrap();
    let out = rhlens(t, generate_args(&img(&thin)));
    let line = fails(&out, &[thin.to_str().unwrap(), "3000x10"]);
    assert!(
        line.contains("28") || line.contains("aspect ratio"),
        "{line}"
    );

    // 6000 x 28: every side is large enough, only the aspect ratio (214) is over 200
    let long = t.join("long.png");
    image::RgbImage::from_pixel(6000, 28, image::Rgb([30, 200, 30]))
        .save(&long)
        .unwrap();
    let out = rhlens(t, generate_args(&img(&long)));
    fails(&out, &[long.to_str().unwrap(), "aspect ratio", "200"]);
}

// ---------------------------------------------------------------- 3.-5. flags

#[test]
fn empty_prompts() {
    let tmp = TempDir::new().unwrap();
    for p in ["", "   "] {
        let out = rhlens(tmp.path(), generate_args(&args(&["--prompt", p])));
        fails(&out, &["prompt", "empty"]);
    }
}

#[test]
fn devices_and_dtypes() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let out = rhlens(t, generate_args(&args(&["--device", "tpu"])));
    fails(&out, &["tpu", "cpu"]);
    let out = rhlens(t, generate_args(&args(&["--dtype", "f64"])));
    fails(&out, &["f64", "f32"]);
    if !tch::Cuda::is_available() {
        let out = rhlens(t, generate_args(&args(&["--device", "cuda"])));
        fails(&out, &["cuda", "--device cpu"]);
        let out = rhlens(t, generate_args(&args(&["--device", "cuda:1"])));
        fails(&out, &["cuda:1"]);
    }
}

#[test]
fn sampling_flags_out_of_range() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--temperature", "0"], &["--temperature"]),
        (&["--top-p", "1.5"], &["--top-p", "1.5"]),
        (
            &["--repetition-penalty=-1"],
            &["--repetition-penalty", "-1"],
        ),
        (&["--max-new-tokens", "0"], &["--max-new-tokens"]),
        (
            &["--min-think", "10", "--think-budget", "5"],
            &["--min-think", "--think-budget"],
        ),
    ];
    for (flags, needles) in cases {
        let out = rhlens(t, generate_args(&args(flags)));
        fails(&out, needles);
    }
}

#[test]
fn threads_must_be_positive() {
    let tmp = TempDir::new().unwrap();
    let out = rhlens(tmp.path(), generate_args(&args(&["--threads", "0"])));
    fails(&out, &["--threads"]);
}

/// clap's own parse errors: clean, exit 2, first line `error:` (the one-line rule is checked
/// separately below).
#[test]
fn parse_errors_do_not_crash() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    for a in [
        generate_args(&args(&["--temperature", "warm"])),
        args(&["eval", "--bench", "b", "--out", "o", "--shard", "3/2"]),
        args(&["sweep", "--prompt", "p", "--out", "o", "--weights", "0,0.1"]),
    ] {
        let out = rhlens(t, a);
        assert_no_crash(&out);
        let lines = error_lines(&out);
        assert!(lines[0].starts_with("error:"), "{}", describe(&out));
    }
}

#[test]
fn parse_errors_are_one_line() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let out = rhlens(
        t,
        args(&["eval", "--bench", "b", "--out", "o", "--shard", "3/2"]),
    );
    fails(&out, &["shard", "3"]);
    let out = rhlens(
        t,
        args(&["sweep", "--prompt", "p", "--out", "o", "--weights", "0,0.1"]),
    );
    fails(&out, &["--steer"]);
}

// ---------------------------------------------------------------- 6. trace settings

fn trace_args(out: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = args(&["trace", "--device", "cpu", "--max-new-tokens", "4"]);
    a.extend(args(&[
        "--quiet",
        "--think",
        "--prompt",
        "What is in the image?",
    ]));
    a.extend(["--model".into(), os(&model("tiny-flat"))]);
    a.extend(["--image".into(), os(&image("wide"))]);
    a.extend(["--out".into(), os(out)]);
    a.extend(args(extra));
    a
}

#[test]
fn trace_refuses_an_existing_directory_unless_forced() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let dir = t.join("existing");
    fs::create_dir(&dir).unwrap();
    let marker = dir.join("notes.txt");
    fs::write(&marker, "my notes").unwrap();

    let out = rhlens(t, trace_args(&dir, &[]));
    fails(&out, &[dir.to_str().unwrap(), "--force"]);
    assert_eq!(fs::read_to_string(&marker).unwrap(), "my notes");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "refused run wrote files"
    );

    let out = rhlens(t, trace_args(&dir, &["--force"]));
    succeeds(&out);
    let meta: Value = serde_json::from_slice(&fs::read(dir.join("trace.json")).unwrap()).unwrap();
    assert_eq!(meta["complete"], Value::Bool(true));
    assert!(dir.join("attention.safetensors").is_file());
    // --force replaces the trace files only; other files are the user's
    assert_eq!(fs::read_to_string(&marker).unwrap(), "my notes");
}

#[test]
fn invalid_trace_settings() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--think-close", ""], &["close tag", "empty"]),
        (&["--think-open", "X", "--think-close", "X"], &["differ"]),
        (&["--layers", "99"], &["99", "3"]),
        (&["--map-window", "0"], &["--map-window"]),
        (&["--attn-precision", "f64"], &["--attn-precision", "f64"]),
    ];
    for (i, (flags, needles)) in cases.iter().enumerate() {
        let dir = t.join(format!("t{i}"));
        let out = rhlens(t, trace_args(&dir, flags));
        fails(&out, needles);
        let written = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(
            written,
            0,
            "{flags:?}: a refused trace left files in {}",
            dir.display()
        );
    }
}

// ---------------------------------------------------------------- 7. partial traces

fn partial_trace(t: &Path) -> PathBuf {
    let dir = t.join("trace");
    succeeds(&rhlens(t, trace_args(&dir, &[])));
    // what an interrupted run leaves behind
    edit_json(&dir.join("trace.json"), |v| {
        v["complete"] = Value::Bool(false)
    });
    dir
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn figures_refuse_partial_traces_unless_allowed() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let dir = partial_trace(t);
    let figs = t.join("figs");
    let fig_args = |extra: &[&str]| {
        let mut a = vec![
            OsString::from("figures"),
            "--quiet".into(),
            "--trace".into(),
            os(&dir),
            "--out".into(),
            os(&figs),
        ];
        a.extend(args(extra));
        a
    };
    let out = rhlens(t, fig_args(&[]));
    fails(&out, &[dir.to_str().unwrap(), "partial"]);
    assert!(
        files_under(&figs).is_empty(),
        "figures drawn from a refused trace"
    );

    let out = rhlens(t, fig_args(&["--allow-partial"]));
    succeeds(&out);
    let pngs = files_under(&figs)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    assert!(pngs > 0, "no figures with --allow-partial");
}

#[test]
fn partial_trace_error_points_to_allow_partial() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let dir = partial_trace(t);
    let out = rhlens(
        t,
        vec![
            OsString::from("figures"),
            "--trace".into(),
            os(&dir),
            "--out".into(),
            os(&t.join("figs")),
        ],
    );
    fails(&out, &["partial", "--allow-partial"]);
}

// ---------------------------------------------------------------- 8. sweeps and steering

fn sweep_args(out: &Path, prompt: &str, extra: &[OsString]) -> Vec<OsString> {
    let mut a: Vec<OsString> = args(&["sweep", "--device", "cpu", "--max-new-tokens", "4"]);
    a.extend(args(&[
        "--quiet",
        "--think",
        "--no-figures",
        "--prompt",
        prompt,
    ]));
    a.extend(["--model".into(), os(&model("tiny-flat"))]);
    a.extend(["--image".into(), os(&image("wide"))]);
    a.extend(["--out".into(), os(out)]);
    a.extend(extra.iter().cloned());
    a
}

fn write_direction(path: &Path, name: &str, shape: &[usize]) {
    let n: usize = shape.iter().product();
    let bytes: Vec<u8> = (0..n)
        .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
            .unwrap();
    let data = safetensors::serialize([(name, view)], &None).unwrap();
    fs::write(path, data).unwrap();
}

#[test]
fn sweep_needs_something_to_sweep_and_a_usable_direction() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let out_dir = t.join("sweep");

    let out = rhlens(t, sweep_args(&out_dir, "Q", &[]));
    fails(&out, &["--budgets", "--waits", "--steer"]);

    let steer = |file: &Path| vec![OsString::from("--steer"), os(file)];
    let with_weights = |mut v: Vec<OsString>| {
        v.extend(args(&["--weights", "0,0.1"]));
        v
    };

    let missing = t.join("missing.safetensors");
    let out = rhlens(t, sweep_args(&out_dir, "Q", &with_weights(steer(&missing))));
    fails(&out, &[missing.to_str().unwrap()]);

    // tiny-flat has 3 layers of hidden size 64
    let wrong = t.join("wrong-shape.safetensors");
    write_direction(&wrong, "direction", &[5, 7]);
    let out = rhlens(t, sweep_args(&out_dir, "Q", &with_weights(steer(&wrong))));
    fails(&out, &[wrong.to_str().unwrap(), "[5, 7]", "[3, 64]"]);

    let unnamed = t.join("no-direction.safetensors");
    write_direction(&unnamed, "other", &[3, 64]);
    let out = rhlens(t, sweep_args(&out_dir, "Q", &with_weights(steer(&unnamed))));
    fails(&out, &[unnamed.to_str().unwrap(), "direction"]);

    let out = rhlens(t, sweep_args(&out_dir, "Q", &steer(&wrong)));
    fails(&out, &["--weights"]);

    assert!(
        files_under(&out_dir).is_empty(),
        "refused sweeps wrote {:?}",
        files_under(&out_dir)
    );
}

#[test]
fn steering_file_errors_read_plainly() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let out_dir = t.join("sweep");
    let missing = t.join("missing.safetensors");
    let not_st = t.join("notes.safetensors");
    fs::write(&not_st, "hello").unwrap();
    for file in [&missing, &not_st] {
        let mut extra = vec![OsString::from("--steer"), os(file)];
        extra.extend(args(&["--weights", "0,0.1"]));
        let line = fails(&rhlens(t, sweep_args(&out_dir, "Q", &extra)), &[]);
        for debug in ["IoError(", "Os {", "kind:", "HeaderTooSmall"] {
            assert!(!line.contains(debug), "Debug text {debug:?} in: {line}");
        }
    }
}

// ---------------------------------------------------------------- 9. direction

#[test]
fn direction_inputs() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let img = image("wide");
    let rec = |ids: usize| {
        serde_json::json!({
            "image": img,
            "prompt": "Describe the picture.",
            "generated_ids": (1..=ids as i64).collect::<Vec<_>>(),
            "think_tokens": ids,
        })
        .to_string()
    };
    let gens = t.join("gens.jsonl");
    fs::write(&gens, format!("{}\n{}\n", rec(6), rec(8))).unwrap();
    let run = |file: &Path, long_min: &str, short_max: &str, out: &Path| {
        let mut a = args(&["direction", "--device", "cpu", "--quiet"]);
        a.extend(["--model".into(), os(&model("tiny-flat"))]);
        a.extend(["--generations".into(), os(file)]);
        a.extend(args(&["--long-min", long_min, "--short-max", short_max]));
        a.extend(["--out".into(), os(out)]);
        rhlens(t, a)
    };
    let out_file = t.join("direction.safetensors");

    // both examples are long (> 5), none short (< 3)
    let out = run(&gens, "5", "3", &out_file);
    fails(&out, &["short", "0 short"]);
    // none long (> 10), one short (< 7)
    let out = run(&gens, "10", "7", &out_file);
    fails(&out, &["long", "0 long"]);
    assert!(!out_file.exists());

    let bad = t.join("bad.jsonl");
    fs::write(
        &bad,
        format!("{}\n{{\"image\": \"x\", \"prompt\": \n", rec(6)),
    )
    .unwrap();
    let out = run(&bad, "7", "7", &out_file);
    fails(&out, &[&format!("{}:2", bad.display())]);
    assert!(!out_file.exists());
}

// ---------------------------------------------------------------- 10. eval and layers

#[test]
fn eval_inputs() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let missing = t.join("no-bench");
    let run_dir = t.join("run");
    let mut a = args(&[
        "eval",
        "--device",
        "cpu",
        "--max-new-tokens",
        "4",
        "--budgets",
        "0",
    ]);
    a.extend(["--model".into(), os(&model("tiny-flat"))]);
    a.extend(["--bench".into(), os(&missing)]);
    a.extend(["--out".into(), os(&run_dir)]);
    let out = rhlens(t, a);
    fails(&out, &[missing.to_str().unwrap()]);
    assert!(
        !run_dir.exists(),
        "a refused eval created its run directory"
    );
}

fn layers_run(t: &Path, questions: &Path, out: &Path) -> Output {
    let mut a = args(&["layers", "--device", "cpu", "--quiet"]);
    a.extend(["--model".into(), os(&model("tiny-flat"))]);
    a.extend(["--questions".into(), os(questions)]);
    a.extend(["--out".into(), os(out)]);
    rhlens(t, a)
}

#[test]
fn layers_with_bad_question_records() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let wide = image("wide");
    let tall = image("tall");

    // every record is bad: one clear error at the end; the only other lines name the
    // skipped records
    let all_bad = t.join("all-bad.jsonl");
    let lines = [
        serde_json::json!({"image": "missing.png", "question": "a"}),
        serde_json::json!({"question": "no image"}),
        serde_json::json!({"image": wide}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(&all_bad, text).unwrap();
    let out_dir = t.join("all-bad-out");
    let out = layers_run(t, &all_bad, &out_dir);
    assert_no_crash(&out);
    let errs = error_lines(&out);
    let (last, before) = errs.split_last().expect("no stderr");
    assert!(last.starts_with("error:"), "{}", describe(&out));
    assert!(last.contains("every record"), "{}", describe(&out));
    for l in before {
        assert!(
            l.starts_with("skipped record"),
            "unexpected line {l:?}:\n{}",
            describe(&out)
        );
    }
    assert_eq!(before.len(), 3, "{}", describe(&out));
    assert!(!out_dir.join("allocation.csv").exists());

    // a mix: the good records are used, the bad one is reported
    let mixed = t.join("mixed.jsonl");
    let lines = [
        serde_json::json!({"image": "missing.png", "question": "a"}),
        serde_json::json!({"image": wide, "question": "What is this?"}),
        serde_json::json!({"image": tall, "question": "Count the shapes."}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(&mixed, text).unwrap();
    let out_dir = t.join("mixed-out");
    let out = layers_run(t, &mixed, &out_dir);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{}", describe(&out));
    assert!(err.contains("skipped record"), "{}", describe(&out));
    assert!(err.contains("missing.png"), "{}", describe(&out));
    for f in [
        "allocation.csv",
        "allocation.json",
        "allocation.safetensors",
    ] {
        assert!(
            out_dir.join(f).is_file(),
            "{f} not written:\n{}",
            describe(&out)
        );
    }
    let csv = fs::read_to_string(out_dir.join("allocation.csv")).unwrap();
    // header + one row per layer of tiny-flat
    assert_eq!(
        csv.lines().filter(|l| !l.trim().is_empty()).count(),
        4,
        "{csv}"
    );
}

// ---------------------------------------------------------------- 11. work already done

fn trace_mtimes(sweep: &Path) -> BTreeMap<String, SystemTime> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(sweep.join("traces")).unwrap() {
        let e = e.unwrap();
        let p = e.path().join("trace.json");
        m.insert(e.file_name().to_string_lossy().into_owned(), mtime(&p));
    }
    m
}

#[test]
fn a_rerun_sweep_keeps_finished_traces_and_redoes_partial_ones() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let dir = t.join("sweep");
    let budgets = |b: &str| args(&["--budgets", b]);

    succeeds(&rhlens(t, sweep_args(&dir, "Q", &budgets("0,2"))));
    let first = trace_mtimes(&dir);
    assert_eq!(first.keys().collect::<Vec<_>>(), ["budget=0", "budget=2"]);

    // the same command again: nothing is redone
    succeeds(&rhlens(t, sweep_args(&dir, "Q", &budgets("0,2"))));
    assert_eq!(trace_mtimes(&dir), first, "finished traces were rewritten");

    // one more budget: only the new setting runs
    succeeds(&rhlens(t, sweep_args(&dir, "Q", &budgets("0,2,3"))));
    let third = trace_mtimes(&dir);
    assert_eq!(third.len(), 3);
    for (k, v) in &first {
        assert_eq!(third[k], *v, "{k} was rewritten");
    }
    let summary: Value =
        serde_json::from_slice(&fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["rows"].as_array().unwrap().len(), 3);

    // an interrupted setting is redone, the finished ones are kept
    let partial = dir.join("traces").join("budget=2").join("trace.json");
    edit_json(&partial, |v| v["complete"] = Value::Bool(false));
    let before = trace_mtimes(&dir);
    succeeds(&rhlens(t, sweep_args(&dir, "Q", &budgets("0,2,3"))));
    let after = trace_mtimes(&dir);
    assert_eq!(after["budget=0"], before["budget=0"]);
    assert_eq!(after["budget=3"], before["budget=3"]);
    assert_ne!(
        after["budget=2"], before["budget=2"],
        "partial trace not redone"
    );
    let meta: Value = serde_json::from_slice(&fs::read(&partial).unwrap()).unwrap();
    assert_eq!(meta["complete"], Value::Bool(true));
}

#[test]
fn a_resumed_sweep_does_not_mix_in_traces_of_another_prompt() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let dir = t.join("sweep");
    let b = args(&["--budgets", "0,2"]);
    succeeds(&rhlens(t, sweep_args(&dir, "First question?", &b)));
    let out = rhlens(t, sweep_args(&dir, "Second question?", &b));
    if out.status.success() {
        // acceptable only if every trace in the summary is for the new prompt
        for e in fs::read_dir(dir.join("traces")).unwrap() {
            let p = e.unwrap().path().join("trace.json");
            let meta: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            assert_eq!(
                meta["prompt"],
                "Second question?",
                "{} is stale",
                p.display()
            );
        }
    } else {
        fails(&out, &["prompt"]);
    }
}

// ---------------------------------------------------------------- cosmetics of causes

#[test]
fn error_causes_are_not_repeated() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let repeated = |line: &str| {
        let parts: Vec<&str> = line.split(": ").collect();
        parts.windows(2).any(|w| w[0] == w[1])
    };

    let dir = checkpoint_copy(t, "tiny-flat", "not-json");
    fs::write(dir.join("config.json"), "{ this is not json").unwrap();
    let line = fails(&rhlens(t, generate_args(&with_model(&dir))), &[]);
    assert!(!repeated(&line), "{line}");

    let file = t.join("a-file");
    fs::write(&file, "x").unwrap();
    let line = fails(&rhlens(t, trace_args(&file, &["--force"])), &[]);
    assert!(!repeated(&line), "{line}");
}

// ---------------------------------------------------------------- version and doctor

#[test]
fn version_and_doctor() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let out = rhlens(t, ["--version"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        describe(&out)
    );

    let out = rhlens(t, ["doctor"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lib = stdout
        .lines()
        .find_map(|l| l.strip_prefix("libtorch: "))
        .unwrap_or_else(|| panic!("no libtorch line:\n{}", describe(&out)));
    let version = lib
        .split(|c: char| c == '+' || c.is_whitespace())
        .next()
        .unwrap();
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() >= 2 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "libtorch version {version:?} is not a version number"
    );
    let cuda = format!("cuda available: {}", tch::Cuda::is_available());
    assert!(
        stdout.lines().any(|l| l == cuda),
        "no {cuda:?} line:\n{}",
        describe(&out)
    );
}
