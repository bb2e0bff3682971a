//! The trace format: writing, reading back, Python-written traces, partial runs and the
//! checks that refuse inconsistent traces.

mod common;
mod render_support;

use std::fs;
use std::path::{Path, PathBuf};

use render_support::{arrays, meta, write_trace, Spec};
use rhlens::formats::shares::mean_role_shares;
use rhlens::formats::trace::{
    EventKind, Trace, TraceError, TraceMeta, TraceWriter, ATTENTION_FILE, TRACE_JSON,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/render")
        .join(name)
}

#[test]
fn round_trip_keeps_metadata_and_every_array() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let spec = Spec::small();
    let (m, a) = (meta(&spec), arrays(&spec));
    write_trace(&dir, &m, &a);
    let t = Trace::read(&dir).unwrap();
    let mut expected = m.clone();
    expected.complete = true;
    assert_eq!(t.meta, expected);
    assert_eq!(t.arrays, a);
    assert!(t.arrays.role_attention_heads.is_some());
    assert!(t.arrays.vision_attention.is_some());
    // no temporary files left behind
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn optional_arrays_may_be_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut spec = Spec::small();
    spec.with_heads = false;
    spec.with_vision = false;
    spec.with_prompt = false;
    spec.window = None;
    write_trace(&dir, &meta(&spec), &arrays(&spec));
    let t = Trace::read(&dir).unwrap();
    assert!(t.arrays.role_attention_heads.is_none());
    assert!(t.arrays.visual_attention_windows.is_none());
    assert!(t.arrays.visual_attention_heads.is_none());
    assert!(t.arrays.vision_attention.is_none());
    assert!(t.arrays.prompt_role_attention.is_none());
}

#[test]
fn reads_a_trace_written_by_python() {
    // scripts/render_fixtures.py writes it with json + safetensors.numpy; every element encodes
    // its own index.
    let t = Trace::read(&fixture("py_trace")).unwrap();
    assert_eq!(t.meta.layers, vec![1, 3]);
    assert_eq!(t.meta.image.merged_grid, [2, 3]);
    assert_eq!(t.meta.model.dtype, "bf16");
    assert_eq!(t.meta.window, None);
    assert_eq!(t.meta.events[1].kind, EventKind::ThinkEnd);
    assert_eq!(
        t.meta.settings["sampling"]["greedy"],
        serde_json::json!(true)
    );
    let ra = &t.arrays.role_attention;
    assert_eq!(ra.dim(), (3, 2, 5));
    for s in 0..3 {
        for l in 0..2 {
            for r in 0..5 {
                let want = (s as f64 + l as f64 / 10.0 + r as f64 / 100.0) as f32;
                assert_eq!(ra[[s, l, r]], want, "role_attention[{s},{l},{r}]");
            }
        }
    }
    let va = &t.arrays.visual_attention;
    assert_eq!(va[[1, 4]], (1.0 + 4.0 / 100.0) as f32);
    assert_eq!(
        t.arrays.prompt_role_attention.as_ref().unwrap()[[0, 2]],
        0.02f32
    );
    assert!(t.arrays.visual_attention_heads.is_none());
}

#[test]
fn refuses_to_overwrite_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let spec = Spec::small();
    let (m, a) = (meta(&spec), arrays(&spec));
    write_trace(&dir, &m, &a);
    let err = TraceWriter::create(&dir, &m, false).unwrap_err();
    assert!(matches!(err, TraceError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    // the old trace is untouched
    Trace::read(&dir).unwrap();
    // forcing replaces the trace files but keeps unrelated ones
    fs::write(dir.join("notes.txt"), "mine").unwrap();
    let w = TraceWriter::create(&dir, &m, true).unwrap();
    assert!(!dir.join(ATTENTION_FILE).exists());
    assert!(dir.join("notes.txt").exists());
    let err = Trace::read(&dir).unwrap_err();
    assert!(matches!(err, TraceError::Partial { .. }), "{err}");
    w.finish(&m, &a).unwrap();
    Trace::read(&dir).unwrap();
}

#[test]
fn an_existing_empty_directory_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::small();
    let (m, a) = (meta(&spec), arrays(&spec));
    TraceWriter::create(tmp.path(), &m, false)
        .unwrap()
        .finish(&m, &a)
        .unwrap();
    Trace::read(tmp.path()).unwrap();
}

#[test]
fn an_interrupted_run_is_recognisably_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let spec = Spec::small();
    let (m, a) = (meta(&spec), arrays(&spec));
    let w = TraceWriter::create(&dir, &m, false).unwrap();
    // interrupted before anything but the header was written
    let text = fs::read_to_string(dir.join(TRACE_JSON)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["complete"], serde_json::json!(false));
    let err = Trace::read(&dir).unwrap_err();
    assert!(matches!(err, TraceError::Partial { .. }), "{err}");
    assert!(err.to_string().contains("partial"), "{err}");
    let err = Trace::read_allow_partial(&dir).unwrap_err();
    assert!(
        matches!(err, TraceError::PartialWithoutArrays { .. }),
        "{err}"
    );
    // a checkpoint is readable when partial traces are allowed, and still partial
    w.checkpoint(&m, &a).unwrap();
    assert!(matches!(
        Trace::read(&dir).unwrap_err(),
        TraceError::Partial { .. }
    ));
    let t = Trace::read_allow_partial(&dir).unwrap();
    assert!(!t.meta.complete);
    w.finish(&m, &a).unwrap();
    assert!(Trace::read(&dir).unwrap().meta.complete);
}

#[test]
fn the_writer_checks_shapes_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let spec = Spec::small();
    let (m, mut a) = (meta(&spec), arrays(&spec));
    // one role too few in the arrays
    a.role_attention = a.role_attention.slice(ndarray::s![.., .., 0..4]).to_owned();
    let w = TraceWriter::create(&dir, &m, false).unwrap();
    let err = w.finish(&m, &a).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("role_attention") && msg.contains("roles"),
        "{msg}"
    );
    // nothing complete was written
    assert!(!dir.join(ATTENTION_FILE).exists());
    assert!(matches!(
        Trace::read(&dir).unwrap_err(),
        TraceError::Partial { .. }
    ));
}

/// Writes a valid trace, lets `edit` change its metadata JSON, and returns the read error.
fn read_error_after(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let spec = Spec::small();
    write_trace(&dir, &meta(&spec), &arrays(&spec));
    let path = dir.join(TRACE_JSON);
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    Trace::read(&dir).unwrap_err().to_string()
}

#[test]
fn inconsistent_metadata_is_refused_with_a_clear_message() {
    let e = read_error_after(|v| {
        v["roles"] = serde_json::json!([
            "system",
            "visual",
            "instruction",
            "reasoning",
            "answer",
            "extra"
        ])
    });
    assert!(
        e.contains("role_attention") && e.contains("[40, 6, 5]"),
        "{e}"
    );
    let e = read_error_after(|v| v["image"]["merged_grid"] = serde_json::json!([17, 22]));
    assert!(
        e.contains("merged grid") || e.contains("visual_attention"),
        "{e}"
    );
    let e = read_error_after(|v| v["layers"] = serde_json::json!([0, 1, 2, 3, 4]));
    assert!(e.contains("role_attention"), "{e}");
    let e = read_error_after(|v| v["layers"] = serde_json::json!([0, 1, 2, 3, 5, 4]));
    assert!(e.contains("strictly increasing"), "{e}");
    let e = read_error_after(|v| v["window"] = serde_json::json!(8));
    assert!(e.contains("visual_attention_windows"), "{e}");
    let e = read_error_after(|v| v["model"]["num_heads"] = serde_json::json!(3));
    assert!(e.contains("heads"), "{e}");
    let e = read_error_after(|v| v["steps"] = serde_json::json!(41));
    assert!(e.contains("steps"), "{e}");
    let e = read_error_after(|v| v["spans"][0]["role"] = serde_json::json!("nope"));
    assert!(e.contains("nope"), "{e}");
    let e = read_error_after(|v| v["format_version"] = serde_json::json!(2));
    assert!(e.contains("version 2"), "{e}");
    let e = read_error_after(|v| v["format"] = serde_json::json!("something-else"));
    assert!(e.contains("something-else"), "{e}");
    let e = read_error_after(|v| {
        v.as_object_mut().unwrap().remove("prompt");
    });
    assert!(e.contains("prompt"), "{e}");
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Trace::read(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("not a trace directory") && e.contains(TRACE_JSON),
        "{e}"
    );
    let dir = tmp.path().join("t");
    let spec = Spec::small();
    write_trace(&dir, &meta(&spec), &arrays(&spec));
    fs::remove_file(dir.join(ATTENTION_FILE)).unwrap();
    let e = Trace::read(&dir).unwrap_err().to_string();
    assert!(e.contains(ATTENTION_FILE), "{e}");
    // a corrupt array file
    fs::write(dir.join(ATTENTION_FILE), b"not safetensors").unwrap();
    let e = Trace::read(&dir).unwrap_err().to_string();
    assert!(e.contains(ATTENTION_FILE), "{e}");
}

#[test]
fn a_wrong_array_dtype_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let spec = Spec::small();
    let (m, a) = (meta(&spec), arrays(&spec));
    write_trace(&dir, &m, &a);
    // rewrite role_attention as f64
    let ra: Vec<u8> = a
        .role_attention
        .iter()
        .flat_map(|v| (*v as f64).to_le_bytes())
        .collect();
    let va: Vec<u8> = a
        .visual_attention
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let views = vec![
        (
            "role_attention",
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F64,
                a.role_attention.shape().to_vec(),
                &ra,
            )
            .unwrap(),
        ),
        (
            "visual_attention",
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                a.visual_attention.shape().to_vec(),
                &va,
            )
            .unwrap(),
        ),
    ];
    let bytes = safetensors::serialize(views, &None).unwrap();
    fs::write(dir.join(ATTENTION_FILE), bytes).unwrap();
    let e = Trace::read(&dir).unwrap_err().to_string();
    assert!(e.contains("role_attention") && e.contains("F32"), "{e}");
}

#[test]
fn default_meta_has_the_format_header_and_roles() {
    let m = TraceMeta::default();
    assert_eq!(m.format, "rhlens-trace");
    assert_eq!(m.format_version, 1);
    assert_eq!(
        m.roles,
        vec!["system", "visual", "instruction", "reasoning", "answer"]
    );
    let json = serde_json::to_value(&m).unwrap();
    // the documented field names
    for key in [
        "format",
        "format_version",
        "complete",
        "model",
        "image",
        "prompt",
        "rendered_prompt",
        "roles",
        "spans",
        "prompt_tokens",
        "layers",
        "window",
        "steps",
        "generated_ids",
        "tokens",
        "text",
        "thinking",
        "answer",
        "think_tokens",
        "answer_tokens",
        "stop_reason",
        "events",
        "settings",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
}

#[test]
fn mean_role_shares_renormalises_per_layer() {
    // hand-worked: two steps, one layer, three roles
    let a = ndarray::Array3::from_shape_vec((2, 1, 3), vec![1.0, 1.0, 2.0, 3.0, 1.0, 0.0]).unwrap();
    let s = mean_role_shares(&a);
    // sums over steps: 4, 2, 2 of 8
    assert!((s[[0, 0]] - 0.5).abs() < 1e-12);
    assert!((s[[0, 1]] - 0.25).abs() < 1e-12);
    assert!((s[[0, 2]] - 0.25).abs() < 1e-12);
}

#[test]
fn the_array_file_is_the_same_bytes_every_time() {
    // the metadata of attention.safetensors (format, format_version) once came out in a random
    // order, so two identical runs wrote different bytes
    let a = arrays(&Spec::small());
    let first = rhlens::formats::trace::arrays_to_bytes(&a).unwrap();
    for _ in 0..16 {
        assert_eq!(rhlens::formats::trace::arrays_to_bytes(&a).unwrap(), first);
    }
    let (_, header) = safetensors::SafeTensors::read_metadata(&first).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["format"], "rhlens-trace");
    assert_eq!(meta["format_version"], "1");
    let st = safetensors::SafeTensors::deserialize(&first).unwrap();
    assert_eq!(
        st.tensor("role_attention").unwrap().shape(),
        a.role_attention.shape()
    );
}

/// `rhlens trace` on the tiny checkpoint (greedy) into `dir`.
fn trace_tiny(dir: &Path) {
    let out = std::process::Command::new(common::bin())
        .args(["trace", "--device", "cpu", "--quiet", "--greedy"])
        .args(["--prompt", "How many?", "--max-new-tokens", "12"])
        .arg("--model")
        .arg(common::model_dir("tiny-flat"))
        .arg("--image")
        .arg(common::image_path("wide"))
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn identical_runs_write_identical_traces_with_each_tokens_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    trace_tiny(&a);
    trace_tiny(&b);
    for name in [TRACE_JSON, ATTENTION_FILE] {
        let (x, y) = (
            fs::read(a.join(name)).unwrap(),
            fs::read(b.join(name)).unwrap(),
        );
        assert!(x == y, "{name} differs between identical runs");
    }
    let meta = TraceMeta::read(&a).unwrap();
    assert!(!meta.generated_ids.is_empty());
    let tok = rhlens::checkpoint::TextTokenizer::from_dir(common::model_dir("tiny-flat")).unwrap();
    let decoded: Vec<String> = meta
        .generated_ids
        .iter()
        .map(|&id| tok.decode(&[id as i64], false).unwrap())
        .collect();
    assert_eq!(meta.tokens, decoded);
    assert_eq!(
        meta.tokens.concat(),
        tok.decode(
            &meta
                .generated_ids
                .iter()
                .map(|&i| i as i64)
                .collect::<Vec<_>>(),
            false
        )
        .unwrap()
    );
}
