//! Inputs that used to reach libtorch and fail there (a panic, an abort on a huge allocation, a
//! hang), or that silently gave wrong results, are refused before any tensor work with one line
//! naming the setting at fault; a libtorch failure that does happen names the stage it
//! happened in.
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rhlens::generate::{GenerateConfig, Generator, Hooks};
use rhlens::runtime::Runtime;
use serde_json::Value;
use tch::{Device, Kind};

/// A copy of the tiny checkpoint with `edits` (file, JSON pointer, value) applied.
fn edited_checkpoint(edits: &[(&str, &str, Value)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = model_dir("tiny-flat");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    for (file, pointer, value) in edits {
        let path = tmp.path().join(file);
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        *json.pointer_mut(pointer).unwrap() = value.clone();
        std::fs::write(&path, json.to_string()).unwrap();
    }
    tmp
}

fn load(dir: &Path) -> anyhow::Result<Runtime> {
    Runtime::load(dir.to_str().unwrap(), Kind::Float, Device::Cpu)
}

/// The one-line error loading a checkpoint with `edits` gives.
fn load_error(edits: &[(&str, &str, Value)]) -> String {
    let tmp = edited_checkpoint(edits);
    match load(tmp.path()) {
        Ok(_) => panic!("{edits:?}: the checkpoint loaded"),
        Err(e) => format!("{e:#}"),
    }
}

/// Generate on the tiny image for `prompt` under `cfg`, with `eos` as the stop ids when given.
fn generate(
    rt: &Runtime,
    prompt: &str,
    cfg: &GenerateConfig,
    eos: Option<Vec<i64>>,
) -> anyhow::Result<usize> {
    let prompt = rt.prepare(&image_path("wide"), prompt, None)?;
    let mut gen = Generator::new(&rt.model, &rt.tokenizer);
    if let Some(eos) = eos {
        gen.eos_ids = eos;
    }
    let images = [prompt.image.input()];
    let g = gen.run(
        &prompt.input_ids,
        &images,
        cfg,
        Hooks::default(),
        &mut |_| {},
    )?;
    Ok(g.generated_ids.len())
}

#[test]
fn a_preprocessor_that_cuts_other_patches_than_the_weights_is_refused() {
    for (key, value, names) in [
        ("/patch_size", 16, "vision_config.patch_size"),
        (
            "/temporal_patch_size",
            1,
            "vision_config.temporal_patch_size",
        ),
        // transformers refuses this one too; it used to scramble the image features silently
        ("/merge_size", 3, "vision_config.spatial_merge_size"),
    ] {
        let e = load_error(&[("preprocessor_config.json", key, value.into())]);
        assert!(e.contains("preprocessor_config.json"), "{e}");
        assert!(e.contains(&key[1..]) && e.contains(names), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn pixel_bounds_are_refused_before_any_allocation() {
    for (edits, says) in [
        // a 1e9-pixel minimum used to upscale every image into an allocation that aborted
        (
            vec![("/min_pixels", 1_000_000_000u64)],
            "larger than `max_pixels`",
        ),
        (
            vec![
                ("/min_pixels", 1_000_000_000),
                ("/max_pixels", 2_000_000_000),
            ],
            "above rhlens' limit",
        ),
        (vec![("/min_pixels", 100)], "smaller than one merged patch"),
        (vec![("/max_pixels", 3000)], "larger than `max_pixels` 3000"),
    ] {
        let edits: Vec<(&str, &str, Value)> = edits
            .into_iter()
            .map(|(k, v)| ("preprocessor_config.json", k, v.into()))
            .collect();
        let e = load_error(&edits);
        assert!(e.contains(says), "{edits:?}: {e}");
    }
}

#[test]
fn special_token_ids_outside_the_vocabulary_are_refused() {
    // the weights keep their 576 rows; the config's vocabulary no longer holds the image token
    let e = load_error(&[("config.json", "/image_token_id", 600.into())]);
    assert!(
        e.contains("`image_token_id` 600 is outside the vocabulary"),
        "{e}"
    );
    let e = load_error(&[("generation_config.json", "/eos_token_id", (-3).into())]);
    assert!(
        e.contains("`eos_token_id` -3 is outside the vocabulary"),
        "{e}"
    );
    let e = load_error(&[("config.json", "/vocab_size", 560.into())]);
    assert!(e.contains("`vocab_size` is 560"), "{e}");
}

#[test]
fn an_unknown_activation_is_refused() {
    for pointer in ["/hidden_act", "/vision_config/hidden_act"] {
        let e = load_error(&[("config.json", pointer, "nope".into())]);
        assert!(e.contains("`nope` is not supported"), "{e}");
        assert!(e.contains("silu"), "{e}");
    }
}

#[test]
fn a_request_past_the_context_names_both_numbers() {
    let tmp = edited_checkpoint(&[("config.json", "/max_position_embeddings", 120.into())]);
    let rt = load(tmp.path()).unwrap();
    let cfg = GenerateConfig {
        max_new_tokens: 100,
        ..Default::default()
    };
    let e = format!(
        "{:#}",
        generate(&rt, "What is this?", &cfg, None).unwrap_err()
    );
    assert!(e.contains("max_new_tokens 100 does not fit"), "{e}");
    assert!(e.contains("context of 120 positions"), "{e}");
    // a prompt alone longer than the context is refused before its quadratic prefill
    let long = "word ".repeat(200);
    let e = format!("{:#}", generate(&rt, &long, &cfg, None).unwrap_err());
    assert!(e.contains("prompt is") && e.contains("holds 120"), "{e}");
}

#[test]
fn a_huge_token_limit_reserves_only_what_the_generation_uses() {
    // a context this large lets max_new_tokens 1e12 through; the cache used to be reserved for
    // all of it up front (terabytes)
    let context = Value::from(1u64 << 41);
    let tmp = edited_checkpoint(&[("config.json", "/max_position_embeddings", context)]);
    let rt = load(tmp.path()).unwrap();
    let cfg = GenerateConfig {
        max_new_tokens: 1_000_000_000_000,
        ..Default::default()
    };
    // every id stops generation: one token
    let all: Vec<i64> = (0..rt.config.text.vocab_size as i64).collect();
    assert_eq!(generate(&rt, "What is this?", &cfg, Some(all)).unwrap(), 1);
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused_before_the_model_runs() {
    let rt = load(&model_dir("tiny-flat")).unwrap();
    for bad in [-1i64, 576, 1 << 40] {
        let prompt = rt.prepare(&image_path("wide"), "hi", None).unwrap();
        let mut ids = prompt.input_ids.clone();
        ids.push(bad);
        let opts = Default::default();
        let e = match rt.model.prefill(&ids, &[prompt.image.input()], 0, opts) {
            Ok(_) => panic!("prefill ran with id {bad}"),
            Err(e) => e.to_string(),
        };
        let at = ids.len() - 1;
        assert!(
            e.contains(&format!("token id {bad} (position {at}) is outside")),
            "{e}"
        );
    }
}

/// Run rhlens with `args` (and `env`), killed if it has not ended after a few minutes: a hang
/// is a failure, not a stuck test run.
fn rhlens(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rhlens {args:?} did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// stderr lines other than the random-weights note.
fn complaints(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("note:") && !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn tiny_generate(extra: &[&str]) -> Vec<String> {
    let model = model_dir("tiny-flat").to_string_lossy().into_owned();
    let image = image_path("wide").to_string_lossy().into_owned();
    let mut args: Vec<String> = ["generate", "--device", "cpu", "--max-new-tokens", "3"]
        .map(String::from)
        .to_vec();
    args.extend(["--model".into(), model, "--image".into(), image]);
    args.extend(["--prompt".into(), "What is this?".into()]);
    // said outright, so that the base-model guess adds no warning line
    args.push("--think".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn more_threads_than_cores_are_capped_with_a_warning() {
    let args = tiny_generate(&["--threads", "10000"]);
    let out = rhlens(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(out.status.code(), Some(0), "{:?}", complaints(&out));
    let lines = complaints(&out);
    let warnings: Vec<&String> = lines.iter().filter(|l| !l.starts_with('[')).collect();
    assert_eq!(warnings.len(), 1, "{lines:?}");
    assert!(
        warnings[0].starts_with("warning: --threads 10000 is more than the"),
        "{lines:?}"
    );
}

#[test]
fn a_libtorch_failure_names_its_stage() {
    let args = tiny_generate(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (hook, stage) in [
        ("vision", "the vision tower"),
        ("prefill", "prefill"),
        ("decode", "decode step 1"),
    ] {
        let out = rhlens(&args, &[("RHLENS_TEST_ONLY_TORCH_FAILURE", hook)]);
        assert_eq!(out.status.code(), Some(1), "{:?}", complaints(&out));
        let lines = complaints(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let want = format!("error: generate: libtorch failed in {stage}: mat1 and mat2");
        assert!(lines[0].starts_with(&want), "{lines:?}");
        assert!(!lines[0].contains("Exception raised"), "{lines:?}");
        // the token chosen from the prefill's logits was streamed before decode step 1 failed
        assert_eq!(out.stdout.is_empty(), hook != "decode");
    }
}

#[test]
fn a_trace_past_the_context_is_refused_before_its_buffers_are_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("trace");
    let mut args = tiny_generate(&["--out", out_dir.to_str().unwrap()]);
    args[0] = "trace".into();
    args[4] = "1000000000000".into();
    let out = rhlens(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(out.status.code(), Some(1), "{:?}", complaints(&out));
    let lines = complaints(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let want = "error: --max-new-tokens 1000000000000 does not fit";
    assert!(lines[0].starts_with(want), "{lines:?}");
    assert!(lines[0].contains("context of 32768 positions"), "{lines:?}");
}

#[test]
fn direction_refuses_generated_ids_outside_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_path("wide");
    for bad in [576i64, -5] {
        let records = tmp.path().join("generations.jsonl");
        let mut text = String::new();
        for (ids, think) in [(vec![5, 6, 7, 8, bad], 5), (vec![9, 10], 1)] {
            let record = serde_json::json!({"image": image, "prompt": "What is this?",
                "generated_ids": ids, "think_tokens": think});
            text.push_str(&format!("{record}\n"));
        }
        std::fs::write(&records, text).unwrap();
        let out_file = tmp.path().join("dir.safetensors");
        let model = model_dir("tiny-flat");
        let args = [
            "direction",
            "--device",
            "cpu",
            "--quiet",
            "--model",
            model.to_str().unwrap(),
            "--generations",
            records.to_str().unwrap(),
            "--long-min",
            "3",
            "--short-max",
            "2",
            "--out",
            out_file.to_str().unwrap(),
        ];
        let out = rhlens(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{:?}", complaints(&out));
        let lines = complaints(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let want = format!("generations.jsonl:1: generated id {bad} is outside");
        assert!(lines[0].contains(&want), "{lines:?}");
        assert!(!out_file.exists());
    }
}
