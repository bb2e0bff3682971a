//! The attention probe against Hugging Face's `generate(output_attentions=True)` rows on the
//! committed fixtures: per-role mass at every step and layer, the visual map averaged over steps,
//! the prompt-only layer analysis, and generation left undisturbed by the probe.
mod common;

use common::*;
use rhlens::generate::GenerateConfig;
use rhlens::probe::{prompt_allocation, traced_generation, ProbeConfig, TraceRequest};
use rhlens::runtime::Runtime;
use rhlens::sampling::{Sampling, SamplingConfig};
use tch::{Device, Kind, Tensor};

fn load(model: &str) -> Runtime {
    Runtime::load(model_dir(model).to_str().unwrap(), Kind::Float, Device::Cpu).unwrap()
}

fn config(sampling: SamplingConfig) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: 24,
        min_new_tokens: 24,
        sampling,
        ..Default::default()
    }
}

fn request<'a>(
    image: &'a std::path::Path,
    prompt: &'a str,
    cfg: GenerateConfig,
    probe: ProbeConfig,
) -> TraceRequest<'a> {
    TraceRequest {
        image,
        prompt,
        system: None,
        generate: cfg,
        probe,
        vision: false,
        steering: None,
        out: None,
        force: false,
        settings: serde_json::Value::Null,
    }
}

/// Head-mean of a reference row `[layers, heads, kv]` summed over `[a, b)` → `[layers]`.
fn span_mass(row: &Tensor, a: i64, b: i64) -> Tensor {
    if b <= a {
        return Tensor::zeros([row.size()[0]], (Kind::Double, Device::Cpu));
    }
    row.to_kind(Kind::Double)
        .mean_dim([1i64].as_slice(), false, None::<Kind>)
        .narrow(1, a, b - a)
        .sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)
}

#[test]
fn role_attention_matches_hugging_face_rows() {
    for (model, image) in [
        ("tiny-flat", "wide"),
        ("tiny-nested", "tall"),
        ("tiny-nested", "wide"),
    ] {
        let r = Reference::load(model, image);
        let rt = load(model);
        let img = image_path(image);
        let run = traced_generation(
            &rt,
            &request(
                &img,
                r.m("prompt"),
                config(SamplingConfig::default()),
                ProbeConfig::default(),
            ),
            &mut |_| {},
        )
        .unwrap();
        let ids: Vec<i64> = run.meta.generated_ids.iter().map(|&i| i as i64).collect();
        assert_eq!(
            ids,
            r.ids("greedy_ids"),
            "{model}/{image}: ids with the probe on"
        );
        let p = run.meta.prompt_tokens as i64;
        let span = |role: &str| {
            run.meta
                .spans
                .iter()
                .find(|s| s.role == role)
                .map(|s| (s.start as i64, s.end as i64))
                .unwrap_or((0, 0))
        };
        let (sys, vis, ins) = (span("system"), span("visual"), span("instruction"));
        assert_eq!(sys.0, 0);
        assert_eq!(ins.1, p);
        let roles = &run.meta.roles;
        let ra = &run.arrays.role_attention;
        assert_eq!(ra.shape(), &[24, rt.model.num_layers(), 5]);
        let mut worst = 0f64;
        let mut vis_sum: Option<Tensor> = None;
        for s in 0..24i64 {
            let row = r.t(&format!("gen_rows.{s}"));
            // every generated token so far is reasoning here (no thinking block closed)
            let expect = [
                ("system", span_mass(row, sys.0, sys.1)),
                ("visual", span_mass(row, vis.0, vis.1)),
                ("instruction", span_mass(row, ins.0, ins.1)),
                ("reasoning", span_mass(row, p, p + s)),
                ("answer", span_mass(row, p + s, p + s)),
            ];
            for (name, e) in expect.iter() {
                let ri = roles.iter().position(|x| x == name).unwrap();
                for l in 0..rt.model.num_layers() {
                    let got = ra[[s as usize, l, ri]] as f64;
                    let want = e.double_value(&[l as i64]);
                    worst = worst.max((got - want).abs());
                }
            }
            let v = row
                .to_kind(Kind::Double)
                .mean_dim([1i64].as_slice(), false, None::<Kind>)
                .narrow(1, vis.0, vis.1 - vis.0);
            vis_sum = Some(match vis_sum {
                Some(a) => a + v,
                None => v,
            });
        }
        assert!(
            worst <= 1e-5,
            "{model}/{image}: role attention differs by {worst}"
        );
        let want_vis = vis_sum.unwrap() / 24.0;
        let va = &run.arrays.visual_attention;
        let mut worst_v = 0f64;
        for l in 0..va.shape()[0] {
            for t in 0..va.shape()[1] {
                worst_v = worst_v
                    .max((va[[l, t]] as f64 - want_vis.double_value(&[l as i64, t as i64])).abs());
            }
        }
        assert!(
            worst_v <= 1e-6,
            "{model}/{image}: visual attention differs by {worst_v}"
        );
    }
}

#[test]
fn prompt_only_allocation_is_the_last_prompt_row() {
    let r = Reference::load("tiny-flat", "big");
    let rt = load("tiny-flat");
    let alloc = prompt_allocation(&rt, &image_path("big"), r.m("prompt"), None).unwrap();
    let prompt = rt.prepare(&image_path("big"), r.m("prompt"), None).unwrap();
    let (vs, ve) = (prompt.spans.visual.0 as i64, prompt.spans.visual.1 as i64);
    let l_total = prompt.input_ids.len() as i64;
    for l in 0..rt.model.num_layers() {
        // reference layer analysis: last row of the prefill attention, head mean, summed per span
        let a = r.t(&format!("attentions.{l}")).to_kind(Kind::Double);
        let row = a
            .select(1, l_total - 1)
            .mean_dim([0i64].as_slice(), false, None::<Kind>);
        let sum = |x: i64, y: i64| row.narrow(0, x, y - x).sum(Kind::Double).double_value(&[]);
        let want = [sum(0, vs), sum(vs, ve), sum(ve, l_total)];
        for (k, w) in want.iter().enumerate() {
            let got = alloc[[l, k]] as f64;
            assert!((got - w).abs() <= 1e-5, "layer {l} role {k}: {got} vs {w}");
        }
        let total: f32 = alloc.row(l).sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "layer {l} shares sum to {total}"
        );
    }
}

#[test]
fn probe_does_not_change_generation() {
    let rt = load("tiny-nested");
    let img = image_path("wide");
    let prompt = "Count the shapes.";
    let sampled = SamplingConfig {
        mode: Sampling::Sample {
            temperature: 0.9,
            top_k: 30,
            top_p: 0.95,
        },
        repetition_penalty: 1.1,
        seed: Some(7),
    };
    for sampling in [SamplingConfig::default(), sampled] {
        let cfg = config(sampling);
        let p = rt.prepare(&img, prompt, None).unwrap();
        let g = rhlens::generate::Generator::new(&rt.model, &rt.tokenizer);
        let plain = g
            .run(
                &p.input_ids,
                &[p.image.input()],
                &cfg,
                Default::default(),
                &mut |_| {},
            )
            .unwrap();
        for probe in [
            ProbeConfig::default(),
            ProbeConfig {
                per_head: true,
                window: Some(5),
                layers: vec![1],
                ..Default::default()
            },
        ] {
            let traced =
                traced_generation(&rt, &request(&img, prompt, cfg.clone(), probe), &mut |_| {})
                    .unwrap();
            assert_eq!(traced.generation.generated_ids, plain.generated_ids);
        }
    }
}

#[test]
fn per_head_and_windows_are_consistent_with_the_means() {
    let rt = load("tiny-flat");
    let img = image_path("wide");
    let probe = ProbeConfig {
        per_head: true,
        window: Some(10),
        visual_heads: true,
        ..Default::default()
    };
    let run = traced_generation(
        &rt,
        &request(
            &img,
            "What is here?",
            config(SamplingConfig::default()),
            probe,
        ),
        &mut |_| {},
    )
    .unwrap();
    let a = &run.arrays;
    let heads = a.role_attention_heads.as_ref().unwrap();
    let mean_heads = heads.mean_axis(ndarray::Axis(2)).unwrap();
    let d = (&mean_heads - &a.role_attention)
        .mapv(f32::abs)
        .fold(0f32, |m, &x| m.max(x));
    assert!(d < 1e-6, "per-head mean differs from role_attention by {d}");
    // windows of 10, 10 and 4 steps: their step-weighted mean is the overall mean
    let w = a.visual_attention_windows.as_ref().unwrap();
    assert_eq!(w.shape()[0], 3);
    let weighted = (&w.index_axis(ndarray::Axis(0), 0) * 10.0f32
        + &w.index_axis(ndarray::Axis(0), 1) * 10.0f32
        + &w.index_axis(ndarray::Axis(0), 2) * 4.0f32)
        / 24.0f32;
    let d = (&weighted - &a.visual_attention)
        .mapv(f32::abs)
        .fold(0f32, |m, &x| m.max(x));
    assert!(
        d < 1e-6,
        "window means disagree with the overall mean by {d}"
    );
    // every step's role masses sum to 1
    for s in 0..a.role_attention.shape()[0] {
        for l in 0..a.role_attention.shape()[1] {
            let t: f32 = a.role_attention.slice(ndarray::s![s, l, ..]).sum();
            assert!((t - 1.0).abs() < 1e-5);
        }
    }
}
