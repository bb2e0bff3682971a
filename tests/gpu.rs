//! The CUDA path. These tests need a GPU, so they are ignored (reported as such) on CPU-only
//! machines; on a GPU machine run `cargo test --release --test gpu -- --ignored` (or the test
//! binary with `--ignored`). They print the bf16-on-GPU vs float32-on-CPU role-attention difference
//! per layer on the tiny fixtures.
mod common;

use common::*;
use rhlens::generate::GenerateConfig;
use rhlens::probe::{traced_generation, ProbeConfig, TraceRequest};
use rhlens::runtime::Runtime;
use tch::{Device, Kind};

fn request<'a>(img: &'a std::path::Path, prompt: &'a str, probe: ProbeConfig) -> TraceRequest<'a> {
    TraceRequest {
        image: img,
        prompt,
        system: None,
        generate: GenerateConfig {
            max_new_tokens: 24,
            min_new_tokens: 24,
            ..Default::default()
        },
        probe,
        vision: false,
        steering: None,
        out: None,
        force: false,
        settings: serde_json::Value::Null,
    }
}

#[test]
#[ignore = "needs a CUDA device (run with --ignored on a GPU machine)"]
fn cuda_f32_matches_hugging_face_and_bf16_role_attention_is_close() {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device visible to libtorch"
    );
    let (model, image) = ("tiny-flat", "wide");
    let r = Reference::load(model, image);
    let img = image_path(image);
    let dir = model_dir(model);
    // float32 on the GPU reproduces the reference ids
    let gpu32 = Runtime::load(dir.to_str().unwrap(), Kind::Float, Device::Cuda(0)).unwrap();
    let run32 = traced_generation(
        &gpu32,
        &request(&img, r.m("prompt"), ProbeConfig::default()),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(run32.generation.generated_ids, r.ids("greedy_ids"));
    let cpu = Runtime::load(dir.to_str().unwrap(), Kind::Float, Device::Cpu).unwrap();
    let cpu_run = traced_generation(
        &cpu,
        &request(&img, r.m("prompt"), ProbeConfig::default()),
        &mut |_| {},
    )
    .unwrap();
    let d32 = (&run32.arrays.role_attention - &cpu_run.arrays.role_attention)
        .mapv(f32::abs)
        .fold(0f32, |m, &x| m.max(x));
    assert!(
        d32 < 1e-4,
        "float32 GPU vs CPU role attention differs by {d32}"
    );
    // bf16 on the GPU, probabilities as the model computes them and in float32
    for f32_probs in [false, true] {
        let gpu = Runtime::load(dir.to_str().unwrap(), Kind::BFloat16, Device::Cuda(0)).unwrap();
        let probe = ProbeConfig {
            f32_probs,
            ..Default::default()
        };
        let run =
            traced_generation(&gpu, &request(&img, r.m("prompt"), probe), &mut |_| {}).unwrap();
        let same = run
            .generation
            .generated_ids
            .iter()
            .zip(&cpu_run.generation.generated_ids)
            .take_while(|(a, b)| a == b)
            .count();
        let a = run
            .arrays
            .role_attention
            .slice(ndarray::s![..same.max(1), .., ..])
            .to_owned();
        let b = cpu_run
            .arrays
            .role_attention
            .slice(ndarray::s![..same.max(1), .., ..])
            .to_owned();
        let per_layer: Vec<f32> = (0..a.shape()[1])
            .map(|l| {
                (&a.slice(ndarray::s![.., l, ..]) - &b.slice(ndarray::s![.., l, ..]))
                    .mapv(f32::abs)
                    .fold(0f32, |m, &x| m.max(x))
            })
            .collect();
        eprintln!("bf16 (f32 probs: {f32_probs}) vs f32 CPU: ids agree for {same} steps; max |role diff| per layer {per_layer:?}");
        assert!(
            per_layer.iter().all(|d| *d < 0.1),
            "bf16 role attention far from float32: {per_layer:?}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA device (run with --ignored on a GPU machine)"]
fn cuda_capture_leaves_generation_unchanged() {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device visible to libtorch"
    );
    let rt = Runtime::load(
        model_dir("tiny-nested").to_str().unwrap(),
        Kind::BFloat16,
        Device::Cuda(0),
    )
    .unwrap();
    let img = image_path("tall");
    let p = rt.prepare(&img, "Count the shapes.", None).unwrap();
    let g = rhlens::generate::Generator::new(&rt.model, &rt.tokenizer);
    let cfg = request(&img, "Count the shapes.", ProbeConfig::default()).generate;
    let plain = g
        .run(
            &p.input_ids,
            &[p.image.input()],
            &cfg,
            Default::default(),
            &mut |_| {},
        )
        .unwrap();
    let probe = ProbeConfig {
        window: Some(8),
        per_head: true,
        ..Default::default()
    };
    let traced =
        traced_generation(&rt, &request(&img, "Count the shapes.", probe), &mut |_| {}).unwrap();
    assert_eq!(plain.generated_ids, traced.generation.generated_ids);
}
