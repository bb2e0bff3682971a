//! Every rhlens command on the families beyond Qwen2.5-VL, through the binary on the tiny
//! fixtures: `doctor --model` reports the family and its geometry; budget forcing is token-exact
//! under a template that opens `<think>` itself (its first tokens equal Hugging Face's greedy
//! ones); a trace's image geometry uses 32 px cells for Qwen3-VL and an overlay lights exactly a
//! token's box of the original picture; a sweep and an eval run end to end; the MiMo-style
//! template's `/no_think` switch closes thinking.
mod common;

use std::process::{Command, Output};

use common::*;
use image::RgbImage;
use rhlens::checkpoint::ChatTemplate;
use rhlens::formats::trace::Trace;
use rhlens::render::colormap::{Colormap, Norm};
use rhlens::render::overlay::{overlay, Upsample};

fn rhlens(args: &[&str]) -> Output {
    let o = Command::new(bin()).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "rhlens {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn dir_of(model: &str) -> String {
    model_dir(model).to_str().unwrap().to_string()
}

#[test]
fn doctor_reports_family_geometry_and_template() {
    for (model, family, px, opens) in [
        ("qwen3-vl-tiny", "Qwen3-VL (model_type qwen3_vl)", 32, "yes"),
        ("qwen2-vl-tiny", "Qwen2-VL (model_type qwen2_vl)", 28, "no"),
        (
            "qwen3-vl-moe-tiny",
            "Qwen3-VL-MoE (model_type qwen3_vl_moe)",
            32,
            "yes",
        ),
        (
            "mimo-vl-tiny",
            "Qwen2.5-VL (model_type qwen2_5_vl)",
            28,
            "yes",
        ),
        ("tiny-flat", "Qwen2.5-VL (model_type qwen2_5_vl)", 28, "no"),
    ] {
        let o = rhlens(&["doctor", "--model", &dir_of(model)]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(&format!("family: {family}")), "{model}: {out}");
        assert!(
            out.contains(&format!("{px} px per image token")),
            "{model}: {out}"
        );
        assert!(
            out.contains(&format!("opens <think> itself: {opens}")),
            "{model}: {out}"
        );
    }
    let o = rhlens(&["doctor", "--model", &dir_of("qwen3-vl-tiny")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("interleaved M-RoPE [4, 4, 4]"), "{out}");
    assert!(out.contains("deepstack blocks [1, 2]"), "{out}");
}

#[test]
fn budget_forcing_is_token_exact_when_the_template_opens_think() {
    let r = Reference::load("qwen3-vl-tiny", "wide");
    let budget = 6usize;
    let o = rhlens(&[
        "generate",
        "--model",
        &dir_of("qwen3-vl-tiny"),
        "--image",
        image_path("wide").to_str().unwrap(),
        "--prompt",
        r.m("prompt"),
        "--greedy",
        "--think-budget",
        &budget.to_string(),
        "--max-new-tokens",
        "12",
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["think_tokens"], budget, "{v}");
    let ids: Vec<i64> = v["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    // the model's own thinking tokens are Hugging Face's greedy ones; then the close tag
    assert_eq!(&ids[..budget], &r.ids("greedy_ids")[..budget]);
    let tok = rhlens::checkpoint::TextTokenizer::from_dir(model_dir("qwen3-vl-tiny")).unwrap();
    let close = tok.encode("</think>").unwrap();
    assert_eq!(&ids[budget..budget + close.len()], close.as_slice());
    // the prompt already opened thinking: the text holds no second open tag
    assert!(!v["text"].as_str().unwrap().contains("<think>"), "{v}");
}

/// The box of merged token (i, j) in original-image pixels: `cell × cell` resized pixels scaled
/// by original / resized.
#[test]
fn open_think_is_refused_when_the_template_already_opens_it() {
    let o = Command::new(bin())
        .args([
            "generate",
            "--model",
            &dir_of("qwen3-vl-tiny"),
            "--image",
            image_path("wide").to_str().unwrap(),
            "--prompt",
            "Why?",
            "--open-think",
            "--max-new-tokens",
            "4",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--open-think") && err.contains("already opens"),
        "{err}"
    );
    let errors = err.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(errors, 1, "{err}");
}

fn token_box(i: usize, j: usize, cell: f64, orig: (u32, u32), resized: (u32, u32)) -> [f64; 4] {
    let sx = cell * orig.0 as f64 / resized.0 as f64;
    let sy = cell * orig.1 as f64 / resized.1 as f64;
    [
        j as f64 * sx,
        i as f64 * sy,
        (j + 1) as f64 * sx,
        (i + 1) as f64 * sy,
    ]
}

#[test]
fn trace_geometry_uses_32_px_cells_and_the_overlay_lights_one_token_box() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("trace");
    rhlens(&[
        "trace",
        "--model",
        &dir_of("qwen3-vl-tiny"),
        "--image",
        image_path("wide").to_str().unwrap(),
        "--prompt",
        "What is in the picture?",
        "--greedy",
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    let trace = Trace::read(&out).unwrap();
    let img = &trace.meta.image;
    let [rows, cols] = img.merged_grid;
    assert_eq!(
        img.resized_width as usize,
        cols * 32,
        "{:?}",
        img.merged_grid
    );
    assert_eq!(img.resized_height as usize, rows * 32);
    assert_eq!(img.grid_thw, [1, rows * 2, cols * 2]);
    assert_eq!(trace.arrays.visual_attention.shape()[1], rows * cols);
    let photo = image::open(image_path("wide")).unwrap().to_rgb8();
    let (w, h) = photo.dimensions();
    assert_eq!((w, h), (img.width, img.height));
    let (i, j) = (rows - 1, cols / 2);
    let mut values = vec![0.0f32; rows * cols];
    values[i * cols + j] = 1.0;
    let flat = RgbImage::from_pixel(w, h, image::Rgb([100, 150, 200]));
    let lut = Colormap::Viridis.lut();
    let lit_img = overlay(
        &flat,
        &values,
        rows,
        cols,
        Upsample::Nearest,
        &lut,
        Norm::new(0.0, 1.0),
        1.0,
    );
    let lit = lut.at(1.0);
    let [x0, y0, x1, y1] = token_box(i, j, 32.0, (w, h), (img.resized_width, img.resized_height));
    for (x, y, p) in lit_img.enumerate_pixels() {
        let (cx, cy) = (x as f64 + 0.5, y as f64 + 0.5);
        let inside = cx > x0 + 1.0 && cx < x1 - 1.0 && cy > y0 + 1.0 && cy < y1 - 1.0;
        let outside = cx < x0 - 1.0 || cx > x1 + 1.0 || cy < y0 - 1.0 || cy > y1 + 1.0;
        if inside {
            assert_eq!(p.0, lit, "({x},{y}) inside token ({i},{j}) should be lit");
        }
        if outside {
            assert_ne!(p.0, lit, "({x},{y}) outside token ({i},{j}) should be dark");
        }
    }
}

/// `rhlens COMMAND --model MODEL ARGS --budgets 0,4 --max-new-tokens 8 --device cpu --quiet
/// --out OUT`.
fn run_budgets(command: &str, model: &str, args: &[&str], out: &std::path::Path) {
    let model = dir_of(model);
    let mut all = vec![command, "--model", &model];
    all.extend_from_slice(args);
    let out = out.to_str().unwrap();
    all.extend_from_slice(&["--budgets", "0,4", "--max-new-tokens", "8"]);
    all.extend_from_slice(&["--device", "cpu", "--quiet", "--out", out]);
    rhlens(&all);
}

#[test]
fn sweep_and_eval_run_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_path("tall");
    let bench = root().join("tests/fixtures/bench");
    for model in ["qwen3-vl-tiny", "qwen2-vl-tiny", "qwen3-vl-moe-tiny"] {
        let sweep = tmp.path().join(format!("{model}-sweep"));
        let on_image = [
            "--image",
            image.to_str().unwrap(),
            "--prompt",
            "How many shapes?",
        ];
        run_budgets("sweep", model, &on_image, &sweep);
        let summary = std::fs::read_to_string(sweep.join("summary.json")).unwrap();
        assert!(summary.contains("budget=4"), "{model}: {summary}");
        let eval = tmp.path().join(format!("{model}-eval"));
        run_budgets("eval", model, &["--bench", bench.to_str().unwrap()], &eval);
        let results = std::fs::read_to_string(eval.join("results.jsonl")).unwrap();
        assert!(results.lines().count() >= 2, "{model}: {results}");
    }
}

#[test]
fn mimo_template_switches_thinking_off_with_no_think() {
    let t = ChatTemplate::from_dir(model_dir("mimo-vl-tiny")).unwrap();
    assert!(t.opens_think("Why?", "<think>", "</think>").unwrap());
    assert!(!t
        .opens_think("Why? /no_think", "<think>", "</think>")
        .unwrap());
    let off = t.generation_prompt("Why? /no_think").unwrap();
    assert!(off.ends_with("<think>\n\n</think>\n\n"), "{off:?}");
}
