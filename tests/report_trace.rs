//! Per-step visual maps in the trace (`visual_attention_steps`): every step's head-mean map,
//! consistent with the all-step mean after "Wait" rollbacks, saved as float16, optional.
mod common;

use common::*;
use rhlens::formats::trace::{names, Trace, TraceWriter};
use rhlens::generate::{GenerateConfig, LengthControl, ThinkTags};
use rhlens::probe::{traced_generation, ProbeConfig, TraceRequest, TracedRun};
use rhlens::runtime::Runtime;
use tch::{Device, Kind};

fn traced(probe: ProbeConfig, length: LengthControl, close: &str) -> TracedRun {
    let rt = Runtime::load(
        model_dir("tiny-flat").to_str().unwrap(),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let img = image_path("wide");
    let mut generate = GenerateConfig {
        max_new_tokens: 30,
        min_new_tokens: 30,
        length,
        ..Default::default()
    };
    if !close.is_empty() {
        generate.tags = ThinkTags {
            close: close.to_string(),
            ..Default::default()
        };
    }
    let req = TraceRequest {
        image: &img,
        prompt: "Describe the picture. How many shapes are there?",
        system: None,
        generate,
        probe,
        vision: false,
        steering: None,
        out: None,
        force: false,
        settings: serde_json::Value::Null,
    };
    traced_generation(&rt, &req, &mut |_| {}).unwrap()
}

/// A run whose thinking ends early and is reopened by "Wait" (a rollback of the cache and probe).
fn rolled_back() -> TracedRun {
    let plain = traced(ProbeConfig::default(), LengthControl::new(), "");
    let close = plain.meta.tokens[5..7].concat();
    let mut length = LengthControl::new();
    length.min_think = Some(20);
    let run = traced(ProbeConfig::default(), length, &close);
    assert!(
        run.meta.events.iter().any(|e| e.text.contains("Wait")),
        "no rollback happened: {:?}",
        run.meta.events
    );
    run
}

#[test]
fn step_maps_average_to_the_visual_map_after_a_rollback() {
    let run = rolled_back();
    let steps = run
        .arrays
        .visual_attention_steps
        .as_ref()
        .expect("on by default");
    let shape = steps.shape();
    assert_eq!(
        shape,
        &[
            run.meta.steps,
            run.meta.layers.len(),
            run.meta.visual_tokens()
        ]
    );
    let mean = steps.mean_axis(ndarray::Axis(0)).unwrap();
    let worst = mean
        .iter()
        .zip(run.arrays.visual_attention.iter())
        .map(|(a, b)| ((a - b) / b.abs().max(1e-6)).abs())
        .fold(0f32, f32::max);
    // float16 keeps 11 significant bits: relative error per value under 2^-11
    assert!(
        worst < 1e-3,
        "step maps' mean differs from visual_attention by {worst} (relative)"
    );
    // each step's map is a share of that step's attention: at most 1 in total per layer
    for row in steps.rows() {
        assert!(row.iter().all(|&v| v >= 0.0) && row.sum() <= 1.0 + 1e-3);
    }
}

#[test]
fn step_maps_are_saved_as_float16_and_can_be_turned_off() {
    let run = traced(ProbeConfig::default(), LengthControl::new(), "");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t");
    TraceWriter::create(&out, &run.meta, false)
        .unwrap()
        .finish(&run.meta, &run.arrays)
        .unwrap();
    let bytes = std::fs::read(out.join("attention.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(names::VISUAL_ATTENTION_STEPS).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F16);
    let back = Trace::read(&out).unwrap();
    assert_eq!(
        back.arrays.visual_attention_steps,
        run.arrays.visual_attention_steps
    );

    let off = ProbeConfig {
        step_maps: false,
        ..Default::default()
    };
    let run = traced(off, LengthControl::new(), "");
    assert!(run.arrays.visual_attention_steps.is_none());
}

#[test]
fn a_step_map_array_of_the_wrong_length_is_refused() {
    let run = traced(ProbeConfig::default(), LengthControl::new(), "");
    let mut arrays = run.arrays.clone();
    let maps = arrays.visual_attention_steps.take().unwrap();
    let n = maps.shape()[0];
    arrays.visual_attention_steps = Some(maps.slice(ndarray::s![..n - 1, .., ..]).to_owned());
    let err = rhlens::formats::trace::validate(&run.meta, &arrays).unwrap_err();
    assert!(err.contains("visual_attention_steps"), "{err}");
}
