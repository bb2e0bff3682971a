//! Loading RH-Bench and generic benches; validation of bad records.

use std::path::{Path, PathBuf};

use rhlens::bench::data::{
    load_bench, options_from_question, parse_choice_list, BenchError, BenchFormat, QuestionType,
    Split,
};

fn demo_bench() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench")
}

fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(l, t)| (l.to_string(), t.to_string()))
        .collect()
}

#[test]
fn demo_bench_loads_in_rh_bench_layout() {
    let b = load_bench(&demo_bench()).expect("demo bench");
    assert_eq!(b.format, BenchFormat::RhBench);
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    assert_eq!(b.count(Split::Reasoning), 7);
    assert_eq!(b.count(Split::Perception), 7);
    // Reasoning file first, in file order.
    assert_eq!(b.samples[0].split, Split::Reasoning);
    assert_eq!(b.samples[0].id, "1");
    for s in &b.samples {
        assert!(s.image.is_file(), "{}", s.image.display());
    }
    let r = |id: &str| {
        b.samples
            .iter()
            .find(|s| s.split == Split::Reasoning && s.id == id)
            .expect("reasoning sample")
    };
    let p = |id: &str| {
        b.samples
            .iter()
            .find(|s| s.split == Split::Perception && s.id == id)
            .expect("perception sample")
    };
    // Image given as a bare file name resolves inside reason_images/.
    assert!(r("1").image.ends_with("reason_images/r01.png"));
    assert!(p("1").image.ends_with("per_images/p01.png"));
    // Choices on separate lines "(A) 2" and inline "A. 3 B. 6".
    assert_eq!(r("2").qtype, QuestionType::MultiChoice);
    assert_eq!(
        r("2").options,
        opts(&[("A", "2"), ("B", "3"), ("C", "4"), ("D", "5")])
    );
    assert_eq!(
        r("4").options,
        opts(&[("A", "3"), ("B", "6"), ("C", "9"), ("D", "12")])
    );
    assert!(r("1").options.is_empty());
    // `options` list lettered in order.
    assert_eq!(
        p("4").options,
        opts(&[("A", "red"), ("B", "blue"), ("C", "green"), ("D", "yellow")])
    );
    // `free_from` is read as free form.
    assert_eq!(p("3").qtype, QuestionType::FreeForm);
    // The limit applies per split.
    let sel = b.select(None, Some(2));
    assert_eq!(sel.len(), 4);
    assert_eq!(b.select(Some(Split::Perception), None).len(), 7);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn bad_records_are_skipped_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "reason_images/a.png", "x");
    write(d, "per_images/b.png", "x");
    write(
        d,
        "reason_data.json",
        r#"[
  {"id": 1, "question": "Q1", "image": "a.png", "answer": 3, "question_type": "free_form"},
  {"id": 2, "image": "a.png", "answer": "A", "question_type": "multi_choice"},
  {"id": 3, "question": "   ", "image": "a.png", "answer": "A", "question_type": "multi_choice"},
  {"id": 4, "question": "Q4", "image": "a.png", "answer": "A", "question_type": "essay"},
  {"id": 5, "question": "Q5", "image": "missing.png", "answer": "A", "question_type": "free_form"},
  {"id": 1, "question": "Q1 again", "image": "a.png", "answer": "3", "question_type": "free_form"},
  {"id": 7, "question": "Q7", "image": "a.png", "answer": null, "question_type": "free_form"},
  "not an object",
  {"id": 9, "question": "Q9 Choices: (A) x (B) y", "image": "a.png", "answer": "B", "question_type": "multi_choice"}
]"#,
    );
    // Perception ids restart at 1 in RH-Bench: not a duplicate of reasoning id 1.
    write(
        d,
        "halu_data.json",
        r#"[{"id": 1, "question": "Is it red?", "image": "b.png", "answer": "no", "question_type": "free_from"}]"#,
    );
    let b = load_bench(d).expect("bench loads despite bad records");
    let ids: Vec<(Split, &str)> = b.samples.iter().map(|s| (s.split, s.id.as_str())).collect();
    assert_eq!(
        ids,
        vec![
            (Split::Reasoning, "1"),
            (Split::Reasoning, "9"),
            (Split::Perception, "1")
        ]
    );
    assert_eq!(b.samples[0].answer, "3");
    assert_eq!(b.samples[1].options, opts(&[("A", "x"), ("B", "y")]));
    assert_eq!(b.samples[2].qtype, QuestionType::FreeForm);
    let reasons: Vec<(usize, String)> = b
        .problems
        .iter()
        .map(|p| (p.index, p.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    let expect = [
        (1, "missing field `question`"),
        (2, "empty question"),
        (3, "unknown question_type `essay`"),
        (4, "image `missing.png` not found"),
        (
            5,
            "duplicate id `1` in split reasoning (first seen at record 0)",
        ),
        (6, "missing field `answer`"),
        (7, "record is not a JSON object"),
    ];
    for ((idx, reason), (want_idx, want)) in reasons.iter().zip(expect) {
        assert_eq!(*idx, want_idx);
        assert!(reason.contains(want), "{reason} vs {want}");
    }
    assert_eq!(b.problems[0].id.as_deref(), Some("2"));
    assert!(b.problems[0]
        .to_string()
        .contains("reason_data.json record 1 (id 2)"));
}

#[test]
fn generic_jsonl_with_split() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "img/x.png", "x");
    write(
        d,
        "bench.jsonl",
        "{\"id\": \"a\", \"split\": \"perception\", \"question\": \"Q\", \"image\": \"img/x.png\", \"answer\": \"yes\", \"question_type\": \"free_form\"}\n\
         {broken json\n\
         \n\
         {\"id\": \"b\", \"question\": \"Q\", \"image\": \"img/x.png\", \"answer\": \"1\", \"question_type\": \"free_form\"}\n\
         {\"id\": \"c\", \"split\": \"vision\", \"question\": \"Q\", \"image\": \"img/x.png\", \"answer\": \"1\", \"question_type\": \"free_form\"}\n\
         {\"id\": \"d\", \"split\": \"reasoning\", \"question\": \"Q\", \"image\": \"img/x.png\", \"answer\": \"B\", \"question_type\": \"multi_choice\", \"options\": {\"B\": \"two\", \"A\": \"one\"}}\n",
    );
    // A directory with bench.jsonl and the file itself load the same.
    for path in [d.to_path_buf(), d.join("bench.jsonl")] {
        let b = load_bench(&path).expect("generic bench");
        assert_eq!(b.format, BenchFormat::Generic);
        let ids: Vec<&str> = b.samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "d"]);
        assert_eq!(b.samples[1].options, opts(&[("A", "one"), ("B", "two")]));
        let reasons: Vec<(usize, &str)> = b
            .problems
            .iter()
            .map(|p| (p.index, p.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(reasons[0].0, 1);
        assert!(reasons[0].1.starts_with("invalid JSON line"));
        assert_eq!(reasons[1], (3, "missing field `split`"));
        assert!(reasons[2].1.contains("unknown split `vision`"));
    }
    // A JSON array file works too.
    write(
        d,
        "arr.json",
        r#"[{"id": 5, "split": "reasoning", "question": "Q", "image": "img/x.png", "answer": "2", "question_type": "multiple_choice", "options": ["A. 1", "B. 2"]}]"#,
    );
    let b = load_bench(&d.join("arr.json")).expect("array bench");
    assert_eq!(b.samples.len(), 1);
    assert_eq!(b.samples[0].options, opts(&[("A", "1"), ("B", "2")]));
}

#[test]
fn load_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    match load_bench(&dir.path().join("nope")) {
        Err(BenchError::NotFound(_)) => {}
        other => panic!("{other:?}"),
    }
    let err = load_bench(dir.path()).expect_err("empty dir");
    assert!(err.to_string().contains("reason_data.json"));
    write(dir.path(), "reason_data.json", "{not json");
    let err = load_bench(dir.path()).expect_err("bad json");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[test]
fn choice_lists() {
    assert_eq!(
        options_from_question("Which?\nChoices:\n(A) Mr. B. Smith\n(B) Ms. C. Jones\n(C) none"),
        opts(&[("A", "Mr. B. Smith"), ("B", "Ms. C. Jones"), ("C", "none")])
    );
    assert_eq!(
        options_from_question("Pick one. Choices: A. 1.5 B. 2.5 C. 3.5"),
        opts(&[("A", "1.5"), ("B", "2.5"), ("C", "3.5")])
    );
    assert_eq!(
        parse_choice_list(" (a) left (b) right"),
        opts(&[("A", "left"), ("B", "right")])
    );
    assert_eq!(
        options_from_question("Options: A: red, B: blue"),
        opts(&[("A", "red"), ("B", "blue")])
    );
    // Multi-line choice text continues the previous choice.
    assert_eq!(
        parse_choice_list("A. first\n   part two\nB. second"),
        opts(&[("A", "first part two"), ("B", "second")])
    );
    assert!(options_from_question("How many? Choices: only one").is_empty());
    assert!(options_from_question("No choices here").is_empty());
}
