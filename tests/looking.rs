//! The demo checkpoint looks at what it is asked about, as rhlens measures it: on colour
//! questions of the demo bench, the visual attention of the answer tokens (the steps that write
//! the words inside `<answer> … </answer>`) falls inside the asked object's box at least 3× as
//! often as the box's share of the image area would give, averaged over questions, in at least
//! one layer group.
//! End to end: the traces come from the `rhlens trace` binary (one map per step,
//! `--map-window 1`), the box mass from `formats::spatial`, so this also checks that probe rows,
//! the merged grid and the pixel boxes line up.
//!
//! The fast test checks the bench's first colour questions; the other runs the same measurement on
//! every colour question of the bench (the number in the README:
//! `cargo test --release --test looking -- --nocapture` prints each question's ratios).

mod common;

use std::path::Path;

use common::{bin, root};
use rhlens::formats::spatial::{box_mass, PixelBox};
use rhlens::formats::trace::{EventKind, Trace};

/// The ratio the demo model must reach (in at least one layer group).
const LOOKING_RATIO: f64 = 3.0;
/// Colour questions checked on every test run (the first ones of the bench, fixed).
const FAST_CASES: usize = 4;

struct Case {
    id: String,
    image: String,
    question: String,
    answer: String,
    bbox: PixelBox,
}

fn colour_cases(limit: usize) -> Vec<Case> {
    let bench = root().join("assets/bench");
    let text = std::fs::read_to_string(bench.join("halu_data.json")).expect("demo bench");
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).expect("bench json");
    records
        .iter()
        .filter(|r| r["category"] == "color")
        .take(limit)
        .map(|r| {
            let b: Vec<f64> = serde_json::from_value(r["bbox"].clone()).expect("bbox");
            Case {
                id: r["id"].to_string(),
                image: bench
                    .join(r["image"].as_str().expect("image"))
                    .to_string_lossy()
                    .into_owned(),
                question: r["question"].as_str().expect("question").to_string(),
                answer: r["answer"].as_str().expect("answer").to_string(),
                bbox: PixelBox {
                    x0: b[0],
                    y0: b[1],
                    x1: b[2],
                    y1: b[3],
                },
            }
        })
        .collect()
}

fn trace(case: &Case, out: &Path) -> Trace {
    let status = std::process::Command::new(bin())
        .args(["trace", "--model"])
        .arg(root().join("assets/demo-model"))
        .args([
            "--image",
            case.image.as_str(),
            "--prompt",
            case.question.as_str(),
        ])
        .args([
            "--max-new-tokens",
            "48",
            "--map-window",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(out)
        .status()
        .expect("run rhlens trace");
    assert!(
        status.success(),
        "rhlens trace failed on question {}",
        case.id
    );
    Trace::read(out).expect("trace")
}

/// The steps that write the answer: the tokens inside `<answer> … </answer>` after the thinking
/// block closes (step s writes generated token s), or every step after it when the model wrote no
/// answer tag.
fn answer_steps(t: &Trace) -> Vec<usize> {
    let close = t
        .meta
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ThinkEnd | EventKind::ForcedThinkEnd))
        .map(|e| e.step)
        .max()
        .expect("the thinking block closes");
    let after: Vec<usize> = (close + 1..t.meta.tokens.len()).collect();
    let is = |s: &usize, tag: &str| t.meta.tokens[*s].trim() == tag;
    let Some(open) = after.iter().position(|s| is(s, "<answer>")) else {
        return after;
    };
    after[open + 1..]
        .iter()
        .copied()
        .take_while(|s| !is(s, "</answer>"))
        .collect()
}

/// Per layer group, `box_mass / area_share` of the answer tokens' mean visual map.
fn box_ratios(t: &Trace, bx: &PixelBox, groups: &[Vec<usize>]) -> Vec<f64> {
    let windows = t
        .arrays
        .visual_attention_windows
        .as_ref()
        .expect("per-step maps");
    let steps = answer_steps(t);
    assert!(!steps.is_empty(), "no answer tokens in {:?}", t.meta.text);
    let [rows, cols] = t.meta.image.merged_grid;
    let (w, h) = (t.meta.image.width, t.meta.image.height);
    groups
        .iter()
        .map(|layers| {
            let mut map = vec![0f32; rows * cols];
            for &s in &steps {
                for &l in layers {
                    for (k, v) in map.iter_mut().enumerate() {
                        *v += windows[[s, l, k]];
                    }
                }
            }
            box_mass(&map, rows, cols, w, h, bx).expect("a map with mass") / bx.area_share(w, h)
        })
        .collect()
}

/// Early and late halves of the captured layers (array rows).
fn layer_groups(n: usize) -> Vec<Vec<usize>> {
    vec![(0..n / 2).collect(), (n / 2..n).collect()]
}

/// Mean ratio per layer group over the cases, printing each question's answer and ratios.
fn mean_ratios(cases: &[Case]) -> (Vec<String>, Vec<f64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sums: Vec<f64> = Vec::new();
    let mut names = Vec::new();
    let mut correct = 0;
    for case in cases {
        let t = trace(case, &dir.path().join(format!("q{}", case.id)));
        let groups = layer_groups(t.meta.layers.len());
        names = groups
            .iter()
            .map(|g| {
                format!(
                    "layers {}-{}",
                    t.meta.layers[g[0]],
                    t.meta.layers[g[g.len() - 1]]
                )
            })
            .collect();
        let ratios = box_ratios(&t, &case.bbox, &groups);
        let answer = t
            .meta
            .answer
            .replace("<answer>", "")
            .replace("</answer>", "");
        correct += usize::from(answer.trim() == case.answer);
        println!(
            "q{} {:?}: answer {:?} (gold {}), box/area ratio per group {:?}",
            case.id,
            case.question,
            answer.trim(),
            case.answer,
            ratios
        );
        sums.resize(ratios.len(), 0.0);
        sums.iter_mut().zip(&ratios).for_each(|(s, r)| *s += r);
    }
    let means: Vec<f64> = sums.iter().map(|s| s / cases.len() as f64).collect();
    println!(
        "{} colour questions, {correct} answered right; mean ratio: {}",
        cases.len(),
        names
            .iter()
            .zip(&means)
            .map(|(n, m)| format!("{n} {m:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (names, means)
}

#[test]
fn the_demo_model_looks_at_the_object_it_is_asked_about() {
    let cases = colour_cases(FAST_CASES);
    assert_eq!(cases.len(), FAST_CASES);
    let (names, means) = mean_ratios(&cases);
    let best = means.iter().cloned().fold(f64::MIN, f64::max);
    let target = LOOKING_RATIO;
    assert!(
        best >= target,
        "visual attention inside the asked object's box is only {best:.2}× its area share \
         (groups {names:?}: {means:?}); the demo model should look at it (≥ {target}×)"
    );
}

#[test]
fn looking_over_every_colour_question() {
    let cases = colour_cases(usize::MAX);
    let (names, means) = mean_ratios(&cases);
    assert!(
        means.iter().any(|m| *m >= LOOKING_RATIO),
        "over all {} colour questions the box/area ratio is {means:?} (groups {names:?}), \
         below {LOOKING_RATIO}× in every group",
        cases.len()
    );
}
