//! The paper's inputs are accepted as published: its question files (`question_id`, `image`,
//! `text`), RH-Bench records that name their image by `image_src`, and its R1 instruction; and the
//! paper's budget protocol refuses the options it would ignore.
mod common;

use std::path::Path;

use common::*;
use rhlens::bench::data::{load_bench, load_questions, Split};
use rhlens::prompt::PromptStyle;

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn question_files_in_the_papers_schema_and_rhlens_are_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "img/a.png", "x");
    write(
        d,
        "q.jsonl",
        "{\"question_id\": 7, \"image\": \"a.png\", \"text\": \"What?\"}\n\
         {\"id\": \"b\", \"image\": \"a.png\", \"question\": \"Why?\"}\n\
         {\"image_src\": \"/elsewhere/images/a.png\", \"question\": \"How?\"}\n\
         {\"question_id\": 9, \"image\": \"gone.png\", \"text\": \"?\"}\n",
    );
    let (qs, problems) = load_questions(&d.join("q.jsonl"), Some(&d.join("img"))).unwrap();
    let got: Vec<(&str, &str)> = qs
        .iter()
        .map(|q| (q.id.as_str(), q.question.as_str()))
        .collect();
    assert_eq!(got, [("7", "What?"), ("b", "Why?"), ("2", "How?")]);
    assert!(qs.iter().all(|q| q.image == d.join("img").join("a.png")));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].id.as_deref(), Some("9"));
    assert!(problems[0].reason.contains("gone.png"), "{problems:?}");
}

#[test]
fn the_bench_reader_takes_rh_bench_image_src_and_the_papers_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "per_images/b.png", "x");
    write(
        d,
        "halu_data.json",
        r#"[{"id": 1, "question": "Is it red?", "image_src": "/data/MMhalu/images/b.png",
             "answer": "no", "question_type": "free_form"}]"#,
    );
    let b = load_bench(d).unwrap();
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    assert_eq!(b.samples[0].image, d.join("per_images").join("b.png"));

    write(
        d,
        "generic/bench.jsonl",
        "{\"question_id\": \"q1\", \"text\": \"Count?\", \"image\": \"../per_images/b.png\", \
         \"answer\": \"2\", \"question_type\": \"free_form\", \"split\": \"perception\"}\n",
    );
    let b = load_bench(&d.join("generic")).unwrap();
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    assert_eq!(b.samples[0].id, "q1");
    assert_eq!(b.samples[0].question, "Count?");
    assert_eq!(b.samples[0].split, Split::Perception);
}

#[test]
fn the_r1_preset_appends_the_papers_instruction_exactly() {
    // as the paper's length-control script writes it: right after the question
    let paper = "You FIRST think about the reasoning process as an internal monologue and then \
provide the final answer. The reasoning process MUST BE enclosed within <think> </think> tags. \
The final answer MUST BE in <answer> </answer> tags.";
    assert_eq!(PromptStyle::R1.apply("Q?"), format!("Q?{paper}"));
    assert_eq!(PromptStyle::Plain.apply("Q?"), "Q?");
    let heatmap = PromptStyle::R1Heatmap.apply("Q?");
    assert!(heatmap.starts_with("Q? You FIRST"));
    assert!(heatmap.ends_with("</answer> tags, Let's think more."));
}

fn refused(args: &[&str], words: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let model = model_dir("tiny-flat");
    all.extend(
        [
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            "out",
        ]
        .map(String::from),
    );
    let out = std::process::Command::new(bin())
        .args(&all)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} ran: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for w in words {
        assert!(errors[0].contains(w), "`{w}` not in {}", errors[0]);
    }
    assert!(
        !tmp.path().join("out").exists(),
        "{args:?} wrote its output"
    );
}

#[test]
fn the_paper_protocol_refuses_what_it_would_ignore() {
    let image = image_path("wide");
    let sweep = |extra: &[&str]| {
        let mut a = vec![
            "sweep",
            "--image",
            image.to_str().unwrap(),
            "--prompt",
            "Q?",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |v: Vec<String>, words: &[&str]| {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        refused(&a, words)
    };
    run(
        sweep(&["--budget-protocol", "paper", "--waits", "0,1"]),
        &["--budget-protocol", "--budgets"],
    );
    run(
        sweep(&[
            "--budget-protocol",
            "paper",
            "--budgets",
            "0,9",
            "--min-think",
            "2",
        ]),
        &["--min-think", "--budget-protocol paper"],
    );
    run(
        sweep(&["--budgets", "0,9", "--answer-tokens", "9"]),
        &["--answer-tokens"],
    );
    let bench = root().join("assets").join("bench");
    run(
        [
            "eval",
            "--bench",
            bench.to_str().unwrap(),
            "--budgets",
            "0,9",
            "--answer-tokens",
            "4",
        ]
        .map(String::from)
        .to_vec(),
        &["--answer-tokens"],
    );
}

#[test]
fn the_paper_protocol_samples_as_the_checkpoints_generation_config_says() {
    use rhlens::budget::paper_sampling;
    use rhlens::sampling::{Sampling, SamplingConfig};
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "generation_config.json",
        r#"{"do_sample": false, "temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.05}"#,
    );
    let given = SamplingConfig {
        mode: Sampling::Greedy,
        repetition_penalty: 1.0,
        seed: Some(4),
    };
    let s = paper_sampling(dir.path(), &given).unwrap();
    // the scripts pass do_sample=True; Hugging Face's top-k 50 where the file is silent
    let want = Sampling::Sample {
        temperature: 0.6,
        top_k: 50,
        top_p: 0.9,
    };
    assert_eq!(s.mode, want);
    assert_eq!((s.repetition_penalty, s.seed), (1.05, Some(4)));
    let chosen = SamplingConfig {
        repetition_penalty: 1.2,
        ..given
    };
    assert_eq!(
        paper_sampling(dir.path(), &chosen)
            .unwrap()
            .repetition_penalty,
        1.2
    );
}
