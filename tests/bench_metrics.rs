//! RH-AUC against numpy/scipy fixtures (scripts/fixtures_rhauc.py), the paper's Table 1 means,
//! bootstrap mechanics, metrics rows and points files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rhlens::bench::data::{QuestionType, Split};
use rhlens::bench::metrics::{
    bootstrap_rh_auc, column_means, compute_metrics, group_means, metrics_csv, normalized_curve,
    percentile, rh_auc, ModelRow, RhAucError,
};
use rhlens::bench::points::{read_points, Scale};
use rhlens::bench::scores::ScoreRecord;
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rhauc/expected.json");
    let text =
        std::fs::read_to_string(&path).expect("fixture present; run scripts/fixtures_rhauc.py");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn rh_auc_matches_numpy_scipy_fixtures() {
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8);
    for c in cases {
        let r = floats(&c["reasoning"]);
        let h = floats(&c["perception"]);
        let pts: Vec<(f64, f64)> = r.iter().copied().zip(h.iter().copied()).collect();
        let got = rh_auc(&pts).unwrap_or_else(|e| panic!("{}: {e}", c["name"]));
        let want = c["rh_auc"].as_f64().expect("rh_auc");
        let want_raw = c["rh_auc_unnormalized"].as_f64().expect("raw");
        assert!(
            (got.rh_auc - want).abs() <= 1e-9,
            "{}: {} vs {want}",
            c["name"],
            got.rh_auc
        );
        assert!(
            (got.unnormalized - want_raw).abs() <= 1e-9,
            "{}: raw {} vs {want_raw}",
            c["name"],
            got.unnormalized
        );
        assert!((0.0..=1.0).contains(&got.rh_auc));
        assert_eq!(got.n_points, pts.len());
        // Input order must not matter (ties are ordered by H).
        let mut rev = pts.clone();
        rev.reverse();
        assert!((rh_auc(&rev).expect("defined").rh_auc - want).abs() <= 1e-12);
    }
}

#[test]
fn rh_auc_errors_are_typed() {
    let fx = fixture();
    for c in fx["errors"].as_array().expect("errors") {
        let pts: Vec<(f64, f64)> = floats(&c["reasoning"])
            .into_iter()
            .zip(floats(&c["perception"]))
            .collect();
        let err = rh_auc(&pts).expect_err("undefined");
        let kind = match err {
            RhAucError::TooFewPoints(_) => "too_few_points",
            RhAucError::FlatReasoning(_) => "flat_reasoning",
            RhAucError::FlatPerception(_) => "flat_perception",
            RhAucError::NotFinite(_) => "not_finite",
        };
        assert_eq!(kind, c["error"].as_str().expect("kind"), "{}", c["name"]);
        assert!(!err.to_string().to_lowercase().contains("nan"));
    }
    assert_eq!(
        rh_auc(&[(0.1, 0.2), (f64::NAN, 0.3)]).expect_err("nan"),
        RhAucError::NotFinite(1)
    );
    assert!(rh_auc(&[(0.5, 0.5)])
        .expect_err("one point")
        .to_string()
        .contains("at least two settings"));
}

#[test]
fn hand_worked_two_and_three_points() {
    // Two points: the normalised segment runs from (0,1) to (1,0): area 1/2.
    let v = rh_auc(&[(0.6, 0.5), (0.3, 0.8)]).expect("defined");
    assert!((v.rh_auc - 0.5).abs() < 1e-15);
    // Raw: (0.6-0.3)*(0.5+0.8)/2 / 0.3 = 0.65.
    assert!((v.unnormalized - 0.65).abs() < 1e-12);
    // Perception constant at max except a dip: R 0, .5, 1 -> H 1, 0, 1 => 0.5*(1+0)/2*2 = 0.5.
    let v = rh_auc(&[(0.2, 0.9), (0.3, 0.1), (0.4, 0.9)]).expect("defined");
    assert!((v.rh_auc - 0.5).abs() < 1e-12);
    let curve = normalized_curve(&[(0.4, 0.9), (0.2, 0.9), (0.3, 0.1)]).expect("curve");
    let want = [(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)];
    assert_eq!(curve.len(), 3);
    for (g, w) in curve.iter().zip(want) {
        assert!(
            (g.0 - w.0).abs() < 1e-12 && (g.1 - w.1).abs() < 1e-12,
            "{curve:?}"
        );
    }
}

/// Paper Table 1: (model, size, training, perception %, reasoning %, RH-AUC).
const TABLE1: [(&str, &str, &str, f64, f64, f64); 9] = [
    ("LMM-R1-3B", "3B", "RL", 48.7, 43.8, 0.46),
    ("Curr-ReFT-3B", "3B", "SFT+RL", 50.6, 42.5, 0.47),
    ("Ocean-R1-3B", "3B", "RL", 52.8, 45.6, 0.53),
    ("R1-OneVision-7B", "7B", "SFT+RL", 55.7, 44.2, 0.46),
    ("ThinkLite-VL-7B", "7B", "RL", 63.3, 50.4, 0.52),
    ("OpenVLThinker-7B", "7B", "SFT+RL", 59.2, 48.9, 0.54),
    ("MM-Eureka-7B", "7B", "RL", 62.0, 54.0, 0.55),
    ("MM-R1-7B", "7B", "RL", 60.3, 54.0, 0.57),
    ("Ocean-R1-7B", "7B", "RL", 62.3, 51.8, 0.63),
];

#[test]
fn paper_table1_means() {
    let rows: Vec<ModelRow> = TABLE1
        .iter()
        .map(|(m, size, training, p, r, auc)| ModelRow {
            model: m.to_string(),
            perception: p / 100.0,
            reasoning: r / 100.0,
            rh_auc: Some(*auc),
            labels: BTreeMap::from([
                ("size".to_string(), size.to_string()),
                ("training".to_string(), training.to_string()),
            ]),
        })
        .collect();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // Hand sums: perception 514.9, reasoning 435.2, RH-AUC 4.73 over 9 models.
    let all: Vec<&ModelRow> = rows.iter().collect();
    let m = column_means("all", &all).expect("rows");
    assert_eq!(m.n, 9);
    assert!(close(m.perception, 5.149 / 9.0), "{}", m.perception);
    assert!(close(m.reasoning, 4.352 / 9.0), "{}", m.reasoning);
    assert!(close(m.rh_auc.expect("auc"), 4.73 / 9.0));

    // By size: 3B sums 152.1 / 131.9 / 1.46; 7B sums 362.8 / 303.3 / 3.27.
    let by_size = group_means(&rows, "size");
    assert_eq!(by_size.len(), 2);
    let (b3, b7) = (&by_size[0], &by_size[1]);
    assert_eq!(
        (b3.group.as_str(), b3.n, b7.group.as_str(), b7.n),
        ("3B", 3, "7B", 6)
    );
    assert!(close(b3.perception, 0.507));
    assert!(close(b3.reasoning, 1.319 / 3.0));
    assert!(close(b3.rh_auc.expect("auc"), 1.46 / 3.0));
    assert!(close(b7.perception, 3.628 / 6.0));
    assert!(close(b7.reasoning, 0.5055));
    assert!(close(b7.rh_auc.expect("auc"), 0.545));
    // The paper's reading: larger models balance better.
    assert!(b7.rh_auc > b3.rh_auc);

    // By training: RL sums 349.4 / 299.6 / 3.26 (6 models); SFT+RL 165.5 / 135.6 / 1.47 (3).
    let by_training = group_means(&rows, "training");
    let rl = by_training.iter().find(|g| g.group == "RL").expect("RL");
    let sft = by_training
        .iter()
        .find(|g| g.group == "SFT+RL")
        .expect("SFT+RL");
    assert_eq!((rl.n, sft.n), (6, 3));
    assert!(close(rl.perception, 3.494 / 6.0));
    assert!(close(rl.reasoning, 2.996 / 6.0));
    assert!(close(rl.rh_auc.expect("auc"), 3.26 / 6.0));
    assert!(close(sft.perception, 1.655 / 3.0));
    assert!(close(sft.reasoning, 0.452));
    assert!(close(sft.rh_auc.expect("auc"), 0.49));
    assert!(rl.rh_auc > sft.rh_auc);
}

fn score(split: Split, id: &str, setting: &str, value: f64, correct: bool) -> ScoreRecord {
    ScoreRecord {
        split,
        sample_id: id.to_string(),
        setting: setting.to_string(),
        setting_value: value,
        sample_index: 0,
        model: "m".into(),
        question_type: QuestionType::FreeForm,
        think_tokens: (value as u64) + 10,
        correct,
        scorer: "rule".into(),
        extracted: None,
        hallucination_score: None,
        details: String::new(),
    }
}

/// Score records from a correctness table: reasoning samples first, then perception.
fn table_scores(reasoning: &[Vec<u8>], perception: &[Vec<u8>]) -> Vec<ScoreRecord> {
    let mut out = Vec::new();
    for (split, table) in [
        (Split::Reasoning, reasoning),
        (Split::Perception, perception),
    ] {
        for (i, row) in table.iter().enumerate() {
            for (k, c) in row.iter().enumerate() {
                out.push(score(
                    split,
                    &format!("s{i}"),
                    &format!("T{k}"),
                    k as f64,
                    *c == 1,
                ));
            }
        }
    }
    out
}

fn u8_table(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .expect("table")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_u64().expect("0/1") as u8)
                .collect()
        })
        .collect()
}

#[test]
fn bootstrap_matches_independent_python_resampling() {
    let fx = fixture();
    for c in fx["bootstrap"].as_array().expect("bootstrap") {
        let scores = table_scores(&u8_table(&c["reasoning"]), &u8_table(&c["perception"]));
        let refs: Vec<&ScoreRecord> = scores.iter().collect();
        let n = c["resamples"].as_u64().expect("n") as usize;
        let seed = c["seed"].as_u64().expect("seed");
        let b = bootstrap_rh_auc(&refs, n, seed);
        assert_eq!(b.resamples, n);
        assert_eq!(
            b.undefined as u64,
            c["undefined"].as_u64().expect("undef"),
            "{}",
            c["name"]
        );
        let lo = b.lo.expect("lo");
        let hi = b.hi.expect("hi");
        assert!(
            (lo - c["lo"].as_f64().expect("lo")).abs() <= 1e-9,
            "{}: lo {lo}",
            c["name"]
        );
        assert!(
            (hi - c["hi"].as_f64().expect("hi")).abs() <= 1e-9,
            "{}: hi {hi}",
            c["name"]
        );
        // Point estimate through the metrics path.
        let rows = compute_metrics(&scores);
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.reasoning.expect("r"), r.perception.expect("p")))
            .collect();
        match c["point"].as_f64() {
            Some(p) => assert!((rh_auc(&pts).expect("defined").rh_auc - p).abs() <= 1e-9),
            None => assert!(rh_auc(&pts).is_err()),
        }
    }
}

#[test]
fn bootstrap_is_deterministic_and_seed_dependent() {
    let r = vec![
        vec![1, 0, 0],
        vec![1, 1, 0],
        vec![0, 1, 1],
        vec![1, 1, 1],
        vec![0, 0, 1],
    ];
    let p = vec![
        vec![1, 1, 0],
        vec![1, 0, 0],
        vec![1, 1, 1],
        vec![0, 1, 0],
        vec![1, 0, 0],
    ];
    let scores = table_scores(&r, &p);
    let refs: Vec<&ScoreRecord> = scores.iter().collect();
    let a = bootstrap_rh_auc(&refs, 500, 42);
    let b = bootstrap_rh_auc(&refs, 500, 42);
    let c = bootstrap_rh_auc(&refs, 500, 43);
    assert_eq!(a, b);
    assert_ne!((a.lo, a.hi, a.undefined), (c.lo, c.hi, c.undefined));
    assert!(a.lo <= a.hi);
}

#[test]
fn bootstrap_of_identical_samples_is_a_point() {
    // Every sample of a split behaves the same, so every resample reproduces the estimate.
    let r = vec![vec![0, 1, 1]; 4];
    let p = vec![vec![1, 1, 0]; 5];
    let scores = table_scores(&r, &p);
    let refs: Vec<&ScoreRecord> = scores.iter().collect();
    let b = bootstrap_rh_auc(&refs, 50, 1);
    // R = (0,1,1), H = (1,1,0): sorted (0,1),(1,0),(1,1) -> area (1-0)*(0+1)/2 = 0.5.
    assert_eq!(b.undefined, 0);
    assert_eq!((b.lo, b.hi), (Some(0.5), Some(0.5)));
}

#[test]
fn percentile_is_numpy_linear() {
    let v = [1.0, 2.0, 4.0, 8.0];
    // numpy.percentile([1,2,4,8], [0, 25, 50, 97.5]) = 1, 1.75, 3, 7.7
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert!((percentile(&v, 0.25).expect("p") - 1.75).abs() < 1e-12);
    assert!((percentile(&v, 0.5).expect("p") - 3.0).abs() < 1e-12);
    assert!((percentile(&v, 0.975).expect("p") - 7.7).abs() < 1e-12);
    assert_eq!(percentile(&[], 0.5), None);
}

#[test]
fn metrics_rows_and_csv_columns() {
    let mut scores = vec![
        score(Split::Reasoning, "1", "budget=100", 100.0, true),
        score(Split::Reasoning, "2", "budget=100", 100.0, false),
        score(Split::Perception, "1", "budget=100", 100.0, true),
        score(Split::Reasoning, "1", "budget=0", 0.0, true),
        score(Split::Perception, "1", "budget=0", 0.0, false),
        score(Split::Perception, "2", "budget=0", 0.0, false),
    ];
    scores[2].scorer = "judge:gpt-4o".into();
    let rows = compute_metrics(&scores);
    assert_eq!(rows.len(), 2);
    // Ordered by setting value.
    assert_eq!(rows[0].setting, "budget=0");
    assert_eq!(rows[0].reasoning, Some(1.0));
    assert_eq!(rows[0].perception, Some(0.0));
    assert_eq!(rows[0].hallucination, Some(1.0));
    assert_eq!((rows[0].n_reasoning, rows[0].n_perception), (1, 2));
    assert_eq!(rows[0].mean_think_tokens, Some(10.0));
    assert_eq!(rows[1].reasoning, Some(0.5));
    assert_eq!(rows[1].perception, Some(1.0));
    assert_eq!(rows[1].mean_think_tokens, Some(110.0));
    assert_eq!(rows[1].scorer, "judge:gpt-4o+rule");
    let csv = metrics_csv(&rows);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("model,setting,setting_value,reasoning,perception,hallucination,mean_think_tokens,n_reasoning,n_perception,scorer")
    );
    assert_eq!(lines.next(), Some("m,budget=0,0,1,0,1,10,1,2,rule"));
    assert_eq!(
        lines.next(),
        Some("m,budget=100,100,0.5,1,0,110,2,1,judge:gpt-4o+rule")
    );
}

#[test]
fn points_files_scale_detection_and_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("p.csv");
    std::fs::write(
        &csv,
        "model,setting,reasoning,perception,training\n\
         a,budget=0,40.2,61.1,RL\na,budget=100,43.8,59.8,RL\na,budget=200,47.1,58.3,RL\n\
         b,budget=0,41.0,55.0,SFT+RL\nb,budget=100,42.0,54.0,SFT+RL\n",
    )
    .expect("write");
    let pts = read_points(&csv, Scale::Auto).expect("points");
    assert_eq!(pts.scale, Scale::Percent);
    assert!(pts.scale_detected);
    let models = pts.rhauc_per_model();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0].model, "a");
    let want = rh_auc(&[(0.402, 0.611), (0.438, 0.598), (0.471, 0.583)]).expect("a");
    assert!((models[0].rh_auc.expect("a") - want.rh_auc).abs() < 1e-12);
    assert_eq!(models[0].points[1].setting_value, Some(100.0));
    // Model b: two points, descending: area 1/2.
    assert!((models[1].rh_auc.expect("b") - 0.5).abs() < 1e-12);
    let rows = pts.model_rows(&models);
    let g = group_means(&rows, "training");
    assert_eq!(g.len(), 2);

    // Forcing unit scale on percent data is an error, not a silent misreading.
    let err = read_points(&csv, Scale::Unit).expect_err("out of range");
    let err = err
        .downcast_ref::<rhlens::error::InvalidSetting>()
        .expect("a setting error");
    assert_eq!(err.setting, "units");
    assert!(err.reason.contains("give percent"), "{}", err.reason);

    // JSON {points: [...]} in 0-1 without a model column.
    let js = dir.path().join("p.json");
    std::fs::write(
        &js,
        r#"{"points": [{"setting": 0, "reasoning": 0.3, "perception": 0.8},
                       {"setting": "50", "reasoning": "0.6", "perception": 0.5}]}"#,
    )
    .expect("write");
    let pts = read_points(&js, Scale::Auto).expect("json points");
    assert_eq!(pts.scale, Scale::Unit);
    let m = pts.rhauc_per_model();
    assert_eq!(m.len(), 1);
    assert!((m[0].rh_auc.expect("defined") - 0.5).abs() < 1e-12);

    // Missing column.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "setting,reasoning\n0,0.5\n").expect("write");
    let err = read_points(&bad, Scale::Auto).expect_err("missing perception");
    assert!(format!("{err:#}").contains("missing column `perception`"));
}
