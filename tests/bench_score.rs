//! Answer extraction and the rule-based scorer on hand-worked answers; `score_run` end to end.

use std::path::PathBuf;

use rhlens::bench::data::{load_bench, QuestionType, Sample, Split};
use rhlens::bench::results::{ResultRecord, ResultsWriter, Setting};
use rhlens::bench::rule::{extract_answer, free_form_match, score_rule};
use rhlens::bench::score::{score_run, ScoreOptions};
use rhlens::bench::scores::read_scores;
use serde_json::Value;

fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(l, t)| (l.to_string(), t.to_string()))
        .collect()
}

fn record(
    qtype: QuestionType,
    gold: &str,
    options: Vec<(String, String)>,
    answer: &str,
) -> ResultRecord {
    ResultRecord {
        sample_id: "1".into(),
        split: Split::Reasoning,
        setting: "budget=0".into(),
        setting_value: 0.0,
        sample_index: 0,
        model: "m".into(),
        question: "Q".into(),
        prompt: String::new(),
        image: String::new(),
        system: None,
        question_type: qtype,
        gold: gold.into(),
        options,
        answer_text: answer.into(),
        thinking_text: String::new(),
        think_tokens: 0,
        answer_tokens: 0,
        stop_reason: "eos".into(),
        extracted: None,
        seed: 0,
        role_summary: None,
        elapsed_s: 0.0,
    }
}

#[test]
fn extraction_order() {
    let mc = QuestionType::MultiChoice;
    let ff = QuestionType::FreeForm;
    let e = extract_answer("<think>maybe A</think>So. <answer> B </answer>", mc);
    assert_eq!((e.text.as_str(), e.method), ("B", "answer_tag"));
    let e = extract_answer("x <answer>1</answer> y <answer>2</answer>", ff);
    assert_eq!(e.text, "2");
    let e = extract_answer("The value is \\boxed{\\frac{1}{2}}.", ff);
    assert_eq!((e.text.as_str(), e.method), ("\\frac{1}{2}", "boxed"));
    let e = extract_answer("Reasoning... Answer: c) because", mc);
    assert_eq!((e.text.as_str(), e.method), ("C", "answer_letter"));
    // "Answer: a dog" is not the letter a.
    let e = extract_answer("Answer: a dog", mc);
    assert_eq!((e.text.as_str(), e.method), ("Answer: a dog", "whole"));
    let e = extract_answer("Answer: The circle", mc);
    assert_eq!(e.method, "whole");
    let e = extract_answer("  42 ", ff);
    assert_eq!((e.text.as_str(), e.method), ("42", "whole"));
}

#[test]
fn multiple_choice_letters_and_option_text() {
    let o = opts(&[("A", "2"), ("B", "3"), ("C", "4"), ("D", "5")]);
    let mc = |ans: &str| score_rule(&record(QuestionType::MultiChoice, "B", o.clone(), ans));
    for ans in [
        "B",
        "(B)",
        "b",
        "B.",
        "Option B",
        "B. 3",
        "(B) 3",
        "3",
        "3.0",
        "There are 3 more circles.",
        "Answer: B",
        "I think (B) is right.",
        "<answer>B</answer>",
        "<think>(A)?</think><answer>3</answer>",
    ] {
        let v = mc(ans);
        assert!(v.correct, "{ans:?} should be correct: {v:?}");
        assert_eq!(v.extracted.as_deref(), Some("B"), "{ans:?}");
    }
    for ans in ["A", "(A) or (B)", "", "Answer: D", "5", "I cannot tell."] {
        assert!(!mc(ans).correct, "{ans:?} should be wrong");
    }
    // Gold given as an option's value rather than its letter.
    let o2 = opts(&[("A", "11"), ("B", "15"), ("C", "18"), ("D", "19")]);
    let by_value =
        |ans: &str| score_rule(&record(QuestionType::MultiChoice, "15", o2.clone(), ans));
    assert!(by_value("B").correct);
    assert!(by_value("15").correct);
    assert!(!by_value("C").correct);
    // Text options.
    let colors = opts(&[("A", "red"), ("B", "blue"), ("C", "green"), ("D", "yellow")]);
    let col = |ans: &str| score_rule(&record(QuestionType::MultiChoice, "B", colors.clone(), ans));
    assert!(col("blue").correct);
    assert!(col("The square is blue.").correct);
    assert!(!col("red").correct);
    assert!(!col("It is red or blue").correct);
    // Options that contain each other: the longer one wins.
    let nested = opts(&[("A", "red"), ("B", "dark red")]);
    let v = score_rule(&record(
        QuestionType::MultiChoice,
        "B",
        nested,
        "It is dark red.",
    ));
    assert!(v.correct, "{v:?}");
    // No options known: letters still work.
    let v = score_rule(&record(QuestionType::MultiChoice, "C", vec![], "Answer: C"));
    assert!(v.correct);
}

#[test]
fn free_form_numbers() {
    let ok = |ans: &str, gold: &str| free_form_match(ans, gold).correct;
    assert!(ok("3", "3"));
    assert!(ok("3.0", "3"));
    assert!(ok("There are 3 red circles.", "3"));
    assert!(ok("3 circles", "3"));
    assert!(!ok("4", "3"));
    assert!(!ok("2.5", "3")); // no rounding towards an integer gold
    assert!(ok("0.5", "1/2"));
    assert!(ok("1/2", "0.5"));
    assert!(ok("\\frac{1}{2}", "1/2"));
    assert!(ok("50%", "0.5"));
    assert!(!ok("0.6", "1/2"));
    assert!(ok("1234", "1,234"));
    assert!(ok("1,234.0", "1234"));
    assert!(ok("3.1416", "3.14")); // gold's precision
    assert!(!ok("3.2", "3.14"));
    assert!(ok("-2", "-2"));
    assert!(!ok("2", "-2"));
    assert!(ok("5 dollars", "$5"));
    assert!(ok("45°", "45"));
    // The last number stated is the answer when several appear.
    assert!(ok("2 red and 3 blue, so 5 in total", "5"));
    assert!(!ok("no number here", "5"));
    // Number words when no digits are given.
    assert!(ok("There are three red circles.", "3"));
    assert!(ok("twenty-one", "21"));
    assert!(ok("None of them.", "0"));
    assert!(!ok("There are four.", "3"));
    // A sentence holding one number is not a numeric gold answer: text rules apply.
    let v = free_form_match(
        "two red squares",
        "There are 2 red squares in opposite corners.",
    );
    assert!(v.details.starts_with("text match"), "{v:?}");
    let v = free_form_match("x = 12.50 cm", "12.5");
    assert_eq!(v.extracted.as_deref(), Some("12.5"));
}

#[test]
fn free_form_yes_no_and_text() {
    let ok = |ans: &str, gold: &str| free_form_match(ans, gold).correct;
    assert!(ok("Yes, there is a blue square.", "Yes"));
    assert!(ok("yes", "Yes"));
    assert!(!ok("No.", "Yes"));
    assert!(!ok("There is no blue square.", "Yes"));
    assert!(ok("There is no green triangle.", "No"));
    assert!(ok("No", "no"));
    assert!(!ok("I am not sure", "No"));
    assert!(ok(
        "I see two red squares in the corners",
        "two red squares"
    ));
    assert!(ok("The Eiffel Tower.", "eiffel tower"));
    assert!(!ok("a red circle", "two red squares"));
}

#[test]
fn runner_extracted_answer_is_used() {
    let mut r = record(
        QuestionType::FreeForm,
        "7",
        vec![],
        "long text with 3 and 4",
    );
    assert!(!score_rule(&r).correct);
    r.extracted = Some("7".into());
    let v = score_rule(&r);
    assert!(v.correct);
    assert!(v.details.contains("runner"));
}

fn demo_bench() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench")
}

/// A plausible answer text for a sample: right or wrong on purpose.
fn answer_for(s: &Sample, right: bool) -> String {
    let gold = s.answer.trim();
    match s.qtype {
        QuestionType::MultiChoice => {
            let letter = if gold.len() == 1 {
                gold.to_string()
            } else {
                s.options
                    .iter()
                    .find(|(_, t)| t == gold)
                    .map(|(l, _)| l.clone())
                    .expect("gold option")
            };
            let pick = if right {
                letter
            } else {
                s.options
                    .iter()
                    .map(|(l, _)| l.clone())
                    .find(|l| *l != letter)
                    .expect("another option")
            };
            format!("After counting, the answer is clear.\nAnswer: {pick}")
        }
        QuestionType::FreeForm => {
            if right {
                format!("<answer>{gold}</answer>")
            } else if gold.eq_ignore_ascii_case("yes") {
                "<answer>No</answer>".into()
            } else if gold.eq_ignore_ascii_case("no") {
                "<answer>Yes</answer>".into()
            } else if gold.contains(' ') {
                "<answer>A green circle.</answer>".into()
            } else {
                "<answer>999</answer>".into()
            }
        }
    }
}

#[test]
fn score_run_writes_metrics_for_the_demo_bench() {
    let bench = load_bench(&demo_bench()).expect("demo bench");
    let settings = [
        Setting::new("budget=0", 0.0),
        Setting::new("budget=100", 100.0),
        Setting::new("budget=200", 200.0),
    ];
    // Planned correctness: at budget k (index t), reasoning sample i is right iff i < 3 + t
    // (3, 4, 5 of 7 right); perception sample i is right iff i < 6 - 2t (6, 4, 2 of 7 right).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = ResultsWriter::open(dir.path()).expect("writer");
    for (t, setting) in settings.iter().enumerate() {
        let mut ri = 0;
        let mut pi = 0;
        for s in &bench.samples {
            let right = match s.split {
                Split::Reasoning => {
                    ri += 1;
                    ri - 1 < 3 + t
                }
                Split::Perception => {
                    pi += 1;
                    pi - 1 < 6 - 2 * t
                }
            };
            let mut rec = ResultRecord::for_item(s, setting, 0, "demo-model");
            rec.answer_text = answer_for(s, right);
            rec.think_tokens = 10 * (t as u64 + 1);
            w.append(&rec).expect("append");
        }
    }
    // A duplicated line is ignored by scoring.
    let mut dup = ResultRecord::for_item(&bench.samples[0], &settings[0], 0, "demo-model");
    dup.answer_text = "nonsense".into();
    w.append(&dup).expect("append dup");
    drop(w);

    let summary = score_run(
        dir.path(),
        &ScoreOptions {
            bootstrap: 200,
            seed: 5,
            ..Default::default()
        },
    )
    .expect("score");
    assert_eq!(summary.records, 42);
    assert_eq!(summary.duplicates, 1);
    let m = &summary.metrics;
    assert_eq!(m.len(), 3);
    for (t, row) in m.iter().enumerate() {
        assert_eq!(row.setting, settings[t].key);
        assert_eq!((row.n_reasoning, row.n_perception), (7, 7));
        let want_r = (3 + t) as f64 / 7.0;
        let want_p = (6 - 2 * t) as f64 / 7.0;
        assert!(
            (row.reasoning.expect("r") - want_r).abs() < 1e-12,
            "{row:?}"
        );
        assert!(
            (row.perception.expect("p") - want_p).abs() < 1e-12,
            "{row:?}"
        );
        assert!((row.hallucination.expect("h") - (1.0 - want_p)).abs() < 1e-12);
        assert_eq!(row.mean_think_tokens, Some(10.0 * (t as f64 + 1.0)));
        assert_eq!(row.scorer, "rule");
    }
    // R rises 3/7, 4/7, 5/7 while H falls 6/7, 4/7, 2/7: normalised (0,1),(.5,.5),(1,0) -> 0.5.
    let auc = &summary.rhauc[0];
    assert!((auc.rh_auc.expect("defined") - 0.5).abs() < 1e-12);
    assert_eq!(auc.scorer.as_deref(), Some("rule"));
    let b = auc.bootstrap.as_ref().expect("bootstrap");
    assert_eq!((b.resamples, b.seed), (200, 5));

    let scores = read_scores(&dir.path().join("scores.jsonl")).expect("scores");
    assert_eq!(scores.len(), 42);
    assert!(scores.iter().all(|s| s.scorer == "rule"));
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).expect("csv");
    assert!(csv.starts_with(
        "model,setting,setting_value,reasoning,perception,hallucination,mean_think_tokens,n_reasoning,n_perception,scorer\n"
    ));
    assert_eq!(csv.lines().count(), 4);
    let mj: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics.json")).expect("json"),
    )
    .expect("metrics.json");
    assert_eq!(mj.as_array().expect("rows").len(), 3);
    assert_eq!(mj[0]["model"], "demo-model");
    let rj: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("rhauc.json")).expect("json"),
    )
    .expect("rhauc.json");
    assert!((rj["rh_auc"].as_f64().expect("number") - 0.5).abs() < 1e-12);
    assert_eq!(rj["models"][0]["scorer"], "rule");
}

#[test]
fn score_run_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = score_run(dir.path(), &ScoreOptions::default()).expect_err("no results");
    assert!(err.to_string().contains("results.jsonl not found"), "{err}");
    std::fs::write(dir.path().join("results.jsonl"), "").expect("write");
    let err = score_run(dir.path(), &ScoreOptions::default()).expect_err("empty");
    assert!(err.to_string().contains("no usable results"), "{err}");
}

#[test]
fn odd_text_never_panics() {
    let odd = [
        "",
        "°",
        "−3",
        "½",
        "45°C",
        "\u{1F600} B",
        "\\frac{",
        "\\frac{1}{0}",
        "\\boxed{",
        "\\boxed{}",
        "<answer>",
        "</answer><answer>",
        "Answer:",
        "Answer: ",
        "Answer: (",
        "(",
        "()",
        "Option",
        "1/0",
        ",,,",
        "1,2345",
        ".5.5",
        "--3",
        "é Answer: é",
        "3-2",
        "ß",
    ];
    let o = opts(&[("A", "½"), ("B", "°")]);
    for a in odd {
        for qt in [QuestionType::MultiChoice, QuestionType::FreeForm] {
            let _ = extract_answer(a, qt);
            for gold in ["A", "3", "yes", "½", ""] {
                let _ = score_rule(&record(qt, gold, o.clone(), a));
                let _ = free_form_match(a, gold);
            }
        }
    }
    // "−3" (Unicode minus) reads as -3; "3-2" is not -2.
    assert!(free_form_match("−3", "-3").correct);
    assert!(!free_form_match("3-2", "-2").correct);
}
