//! Batched generation (left-padded prompts of different lengths, one shared cache) against batch
//! size 1: the same greedy tokens for every row, the same probe arrays per row, and `rhlens eval
//! --batch-size 3` writing the same answers as `--batch-size 1`.
mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use rhlens::generate::{GenerateConfig, Generator, Hooks, StepObserver, StopReason};
use rhlens::model::{AttnImpl, BatchPrompt, ImageInput};
use rhlens::probe::run::traced_generation_batch;
use rhlens::probe::{prompt_roles, traced_generation, Probe, ProbeConfig, TraceRequest};
use rhlens::runtime::Runtime;
use tch::{Device, Kind};

const PROMPTS: [(&str, &str); 3] = [
    ("wide", "What is shown?"),
    (
        "tall",
        "Describe the colours of this picture in detail, one by one, and then count the shapes.",
    ),
    ("big", "Which shape is largest? Think first."),
];

fn configs() -> Vec<(&'static str, GenerateConfig)> {
    let plain = GenerateConfig {
        max_new_tokens: 16,
        ..Default::default()
    };
    let mut budget = plain.clone();
    budget.max_new_tokens = 20;
    budget.length.think_budget = Some(5);
    budget.length.answer_cue = "<answer>".into();
    budget.length.open_think = true;
    vec![("plain", plain), ("budget 5", budget)]
}

fn requests<'a>(
    images: &'a [std::path::PathBuf],
    cfg: &GenerateConfig,
    probe: &ProbeConfig,
) -> Vec<TraceRequest<'a>> {
    images
        .iter()
        .zip(PROMPTS)
        .map(|(image, (_, prompt))| TraceRequest {
            image,
            prompt,
            system: None,
            generate: cfg.clone(),
            probe: probe.clone(),
            vision: false,
            steering: None,
            out: None,
            force: false,
            settings: serde_json::Value::Null,
        })
        .collect()
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "{what}: max |diff| {worst}");
}

fn check_model(model: &str, attn: AttnImpl) {
    let mut rt =
        Runtime::load(model_dir(model).to_str().unwrap(), Kind::Float, Device::Cpu).unwrap();
    rt.model.attn_impl = attn;
    let images: Vec<_> = PROMPTS.iter().map(|(i, _)| image_path(i)).collect();
    let probe = ProbeConfig::default();
    for (name, cfg) in configs() {
        let reqs = requests(&images, &cfg, &probe);
        let single: Vec<_> = reqs
            .iter()
            .map(|r| traced_generation(&rt, r, &mut |_| {}).unwrap())
            .collect();
        let lens: Vec<usize> = single.iter().map(|r| r.meta.prompt_tokens).collect();
        assert!(
            lens.iter().any(|&l| l != lens[0]),
            "{model}: prompt lengths {lens:?} should differ to exercise padding"
        );
        let batch = traced_generation_batch(&rt, &reqs).unwrap();
        assert_eq!(batch.len(), single.len());
        for (row, (s, b)) in single.iter().zip(&batch).enumerate() {
            let ctx = format!("{model} {attn:?} {name} row {row}");
            assert_eq!(
                s.generation.generated_ids, b.generation.generated_ids,
                "{ctx}: tokens"
            );
            assert_eq!(s.generation.forced, b.generation.forced, "{ctx}: forced");
            assert_eq!(s.generation.stop_reason, b.generation.stop_reason, "{ctx}");
            assert_eq!(
                s.generation.answer_start, b.generation.answer_start,
                "{ctx}"
            );
            assert_eq!(s.meta.steps, b.meta.steps, "{ctx}: probe steps");
            assert!(s.meta.steps > 0, "{ctx}: nothing was probed");
            let (sa, ba) = (&s.arrays, &b.arrays);
            assert_close(
                &format!("{ctx}: role_attention"),
                sa.role_attention.as_slice().unwrap(),
                ba.role_attention.as_slice().unwrap(),
            );
            assert_close(
                &format!("{ctx}: visual_attention"),
                sa.visual_attention.as_slice().unwrap(),
                ba.visual_attention.as_slice().unwrap(),
            );
        }
        if name == "budget 5" {
            // the budget closed thinking in every row
            assert!(batch.iter().all(|r| r.generation.think_tokens <= 5));
        }
    }
}

#[test]
fn batched_greedy_equals_batch_one_tiny_flat() {
    check_model("tiny-flat", AttnImpl::Sdpa);
}

#[test]
fn batched_greedy_equals_batch_one_tiny_nested() {
    check_model("tiny-nested", AttnImpl::Sdpa);
}

#[test]
fn batched_greedy_equals_batch_one_eager() {
    check_model("tiny-flat", AttnImpl::Eager);
}

fn probe_for(rt: &Runtime, prompt: &rhlens::runtime::Prompt, max_steps: usize) -> Probe {
    let c = &rt.config.text;
    Probe::new(
        ProbeConfig::default(),
        rt.model.num_layers(),
        c.num_attention_heads,
        c.num_key_value_heads,
        &prompt_roles(&prompt.spans, prompt.input_ids.len()),
        prompt.spans.visual,
        max_steps,
        rt.model.device,
    )
    .unwrap()
}

/// Rows that stop early keep feeding tokens while the others go on; neither their tokens nor
/// their probes may be disturbed. The tiny models never choose their real end-of-sequence id, so
/// a token the first row generates early is made the stop id.
#[test]
fn rows_stopping_at_different_steps() {
    let rt = Runtime::load(
        model_dir("tiny-flat").to_str().unwrap(),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let prompts: Vec<_> = PROMPTS
        .iter()
        .map(|(i, p)| rt.prepare(&image_path(i), p, None).unwrap())
        .collect();
    let cfg = GenerateConfig {
        max_new_tokens: 16,
        ..Default::default()
    };
    let plain = Generator::new(&rt.model, &rt.tokenizer);
    let free: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| {
            plain
                .run(
                    &p.input_ids,
                    &[p.image.input()],
                    &cfg,
                    Hooks::default(),
                    &mut |_| {},
                )
                .unwrap()
                .generated_ids
        })
        .collect();
    // a token of row 0 (from its third on) that the other rows do not produce before step 8
    let stop = free[0][2..]
        .iter()
        .copied()
        .find(|t| free[1..].iter().all(|f| !f[..8].contains(t)))
        .expect("a stop id that ends row 0 first");
    let mut generator = Generator::new(&rt.model, &rt.tokenizer);
    generator.eos_ids = vec![stop];

    let mut single = Vec::new();
    for p in &prompts {
        let mut probe = probe_for(&rt, p, cfg.max_new_tokens);
        let hooks = Hooks {
            observer: Some(&mut probe),
            ..Default::default()
        };
        let g = generator
            .run(&p.input_ids, &[p.image.input()], &cfg, hooks, &mut |_| {})
            .unwrap();
        single.push((g, probe.arrays()));
    }
    let lens: Vec<usize> = single.iter().map(|(g, _)| g.generated_ids.len()).collect();
    assert_eq!(single[0].0.stop_reason, StopReason::Eos);
    assert!(
        lens[1..].iter().any(|&l| l > lens[0]),
        "rows should stop at different steps: {lens:?}"
    );

    let images: Vec<[ImageInput<'_>; 1]> = prompts.iter().map(|p| [p.image.input()]).collect();
    let batch: Vec<BatchPrompt<'_>> = prompts
        .iter()
        .zip(&images)
        .map(|(p, im)| BatchPrompt {
            input_ids: &p.input_ids,
            images: im,
        })
        .collect();
    let mut probes: Vec<Probe> = prompts
        .iter()
        .map(|p| probe_for(&rt, p, cfg.max_new_tokens))
        .collect();
    let observers: Vec<Option<&mut dyn StepObserver>> = probes
        .iter_mut()
        .map(|p| Some(p as &mut dyn StepObserver))
        .collect();
    let gens = generator.run_batch(&batch, &cfg, observers, None).unwrap();
    for (row, ((s, sa), (b, probe))) in single.iter().zip(gens.iter().zip(&probes)).enumerate() {
        assert_eq!(s.generated_ids, b.generated_ids, "row {row}: tokens");
        assert_eq!(s.stop_reason, b.stop_reason, "row {row}");
        let ba = probe.arrays();
        assert_eq!(sa.steps, ba.steps, "row {row}: probe steps");
        assert_close(
            &format!("row {row}: role_attention"),
            &sa.role_attention,
            &ba.role_attention,
        );
        assert_close(
            &format!("row {row}: visual_attention"),
            &sa.visual_attention,
            &ba.visual_attention,
        );
    }

    // rolling back is refused in a batch
    let mut waits = cfg.clone();
    waits.length.waits = 1;
    assert!(!Generator::batchable(&waits));
    assert!(generator
        .run_batch(&batch, &waits, Vec::new(), None)
        .is_err());
}

fn eval(out: &std::path::Path, batch: u32) -> f64 {
    let t0 = Instant::now();
    let o = Command::new(bin())
        .args([
            "eval",
            "--model",
            model_dir("tiny-flat").to_str().unwrap(),
            "--bench",
            root().join("tests/fixtures/bench").to_str().unwrap(),
            "--budgets",
            "0,4",
            "--max-new-tokens",
            "12",
            "--device",
            "cpu",
            "--quiet",
            "--batch-size",
            &batch.to_string(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "eval --batch-size {batch}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    t0.elapsed().as_secs_f64()
}

type Answers = HashMap<(String, String, String, u64), serde_json::Value>;

fn answers(out: &std::path::Path) -> Answers {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = (
                v["split"].as_str().unwrap().to_string(),
                v["sample_id"].as_str().unwrap().to_string(),
                v["setting"].as_str().unwrap().to_string(),
                v["sample_index"].as_u64().unwrap_or(0),
            );
            let shares = &v["role_summary"]["mean_share"];
            let value = serde_json::json!({
                "answer_text": v["answer_text"],
                "thinking_text": v["thinking_text"],
                "extracted": v["extracted"],
                "think_tokens": v["think_tokens"],
                "answer_tokens": v["answer_tokens"],
                "stop_reason": v["stop_reason"],
                "steps": v["role_summary"]["steps"],
                "mean_share": shares,
            });
            (key, value)
        })
        .collect()
}

#[test]
fn eval_batch_three_writes_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (one, three) = (dir.path().join("b1"), dir.path().join("b3"));
    let t1 = eval(&one, 1);
    let t3 = eval(&three, 3);
    println!("rhlens eval (tiny-flat, tests/fixtures/bench, budgets 0,4, 12 tokens, cpu): --batch-size 1 {t1:.2} s, --batch-size 3 {t3:.2} s");
    let (a, b) = (answers(&one), answers(&three));
    assert_eq!(a.len(), 28, "14 samples x 2 budgets");
    assert_eq!(a.len(), b.len());
    for (key, v1) in &a {
        let v3 = b
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} missing at batch 3"));
        for field in [
            "answer_text",
            "thinking_text",
            "extracted",
            "think_tokens",
            "answer_tokens",
            "stop_reason",
            "steps",
        ] {
            assert_eq!(v1[field], v3[field], "{key:?}: {field}");
        }
        let s1: Vec<f64> = serde_json::from_value(v1["mean_share"].clone()).unwrap();
        let s3: Vec<f64> = serde_json::from_value(v3["mean_share"].clone()).unwrap();
        for (x, y) in s1.iter().zip(&s3) {
            assert!(
                (x - y).abs() <= 1e-5,
                "{key:?}: mean_share {s1:?} vs {s3:?}"
            );
        }
    }
}
