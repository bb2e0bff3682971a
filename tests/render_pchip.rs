//! PCHIP against scipy, RH-AUC against hand-worked cases, and metrics-file parsing.

use std::path::Path;

use rhlens::render::pchip::{Pchip, PchipError};
use rhlens::render::results::{
    group_metrics, normalised_points, parse_metrics_csv, parse_metrics_json, read_metrics, rh_auc,
    split_csv, trapezoid, RhAucUndefined,
};

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render/pchip_scipy.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn pchip_matches_scipy_within_1e_12() {
    let fx = fixture();
    let cases = fx["cases"].as_object().unwrap();
    assert!(cases.len() >= 7);
    for (name, case) in cases {
        let x = floats(&case["x"]);
        let y = floats(&case["y"]);
        let p = Pchip::new(&x, &y).unwrap();
        let xq = floats(&case["xq"]);
        let yq = floats(&case["yq"]);
        for (xv, want) in xq.iter().zip(&yq) {
            let got = p.eval(*xv);
            let tol = 1e-12 * want.abs().max(1.0);
            assert!(
                (got - want).abs() <= tol,
                "{name}: pchip({xv}) = {got}, scipy {want}"
            );
        }
        let d = floats(&case["derivatives"]);
        for (k, (got, want)) in p.derivatives().iter().zip(&d).enumerate() {
            let tol = 1e-12 * want.abs().max(1.0);
            assert!(
                (got - want).abs() <= tol,
                "{name}: derivative at knot {k} = {got}, scipy {want}"
            );
        }
    }
}

#[test]
fn pchip_end_rules_hand_checked() {
    // end_clip: the one-sided estimate at both ends exceeds 3|m0| with m0, m1 of opposite
    // signs, so it is clipped to 3*m0: left 3*1, right 3*(1/0.9).
    let p = Pchip::new(&[0.0, 1.0, 1.1, 2.0], &[0.0, 1.0, -9.0, -8.0]).unwrap();
    let d = p.derivatives();
    assert_eq!(d[0], 3.0);
    assert!((d[3] - 3.0 / 0.9).abs() < 1e-12);
    // interior turning points get zero slope
    assert_eq!(d[1], 0.0);
    assert_eq!(d[2], 0.0);
    // two points: a straight line
    let p = Pchip::new(&[1.0, 3.0], &[2.0, 6.0]).unwrap();
    assert_eq!(p.eval(2.0), 4.0);
    assert_eq!(p.eval(0.0), 0.0);
    // passes through the knots, monotone between monotone data
    let x = [0.0, 0.2, 0.5, 1.0];
    let y = [0.0, 0.1, 0.8, 1.0];
    let p = Pchip::new(&x, &y).unwrap();
    for (a, b) in x.iter().zip(&y) {
        assert!((p.eval(*a) - b).abs() < 1e-15);
    }
    let s = p.sample(150);
    assert_eq!(s.len(), 150);
    assert_eq!(s[0].0, 0.0);
    assert_eq!(s[149].0, 1.0);
    assert!(s.windows(2).all(|w| w[1].1 >= w[0].1));
}

#[test]
fn pchip_rejects_bad_input() {
    assert_eq!(
        Pchip::new(&[0.0], &[1.0]).unwrap_err(),
        PchipError::TooFewPoints
    );
    assert_eq!(
        Pchip::new(&[0.0, 0.0], &[1.0, 2.0]).unwrap_err(),
        PchipError::NotIncreasing
    );
    assert_eq!(
        Pchip::new(&[1.0, 0.0], &[1.0, 2.0]).unwrap_err(),
        PchipError::NotIncreasing
    );
    assert_eq!(
        Pchip::new(&[0.0, 1.0], &[1.0]).unwrap_err(),
        PchipError::LengthMismatch
    );
}

#[test]
fn rh_auc_hand_worked() {
    // R = 0.4, 0.5, 0.6 → 0, 0.5, 1; H = 0.7, 0.6, 0.4 → 1, 2/3, 0.
    // Area = 0.5·(1 + 2/3)/2 + 0.5·(2/3 + 0)/2 = 5/12 + 1/6 = 7/12.
    let pts = [(0.5, 0.6), (0.4, 0.7), (0.6, 0.4)];
    let auc = rh_auc(&pts).unwrap();
    assert!((auc - 7.0 / 12.0).abs() < 1e-12, "{auc}");
    // sorting by reasoning accuracy is part of the definition
    let n = normalised_points(&pts).unwrap();
    assert_eq!(n[0], (0.0, 1.0));
    assert_eq!(n[2], (1.0, 0.0));
    // perception rising linearly with reasoning: half of the unit square
    assert!((rh_auc(&[(0.1, 0.2), (0.3, 0.9)]).unwrap() - 0.5).abs() < 1e-12);
    assert!((rh_auc(&[(0.1, 0.2), (0.2, 0.9), (0.3, 0.9)]).unwrap() - 0.75).abs() < 1e-12);
    // ties in reasoning add no area
    assert!((trapezoid(&[(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]) - 1.0).abs() < 1e-12);
}

#[test]
fn rh_auc_undefined_cases_say_why() {
    assert_eq!(
        rh_auc(&[(0.5, 0.5)]).unwrap_err(),
        RhAucUndefined::TooFewSettings(1)
    );
    assert_eq!(
        rh_auc(&[(0.5, 0.4), (0.5, 0.6)]).unwrap_err(),
        RhAucUndefined::ConstantReasoning
    );
    assert_eq!(
        rh_auc(&[(0.4, 0.6), (0.5, 0.6)]).unwrap_err(),
        RhAucUndefined::ConstantPerception
    );
    assert_eq!(
        rh_auc(&[(0.4, f64::NAN), (0.5, 0.6)]).unwrap_err(),
        RhAucUndefined::NotFinite
    );
    assert!(RhAucUndefined::TooFewSettings(1)
        .to_string()
        .contains("at least two"));
}

#[test]
fn csv_parsing_handles_quotes_blanks_and_any_column_order() {
    let text = "perception,model,setting,setting_value,reasoning,mean_think_tokens,scorer\r\n\
                0.6,\"Model, \"\"A\"\"\",budget=100,100,0.5,97.5,exact\r\n\
                0.7,B,default,,0.4,,\n";
    let rows = parse_metrics_csv(text).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].model, "Model, \"A\"");
    assert_eq!(rows[0].setting_kind(), "budget");
    assert_eq!(rows[0].setting_value, Some(100.0));
    assert_eq!(rows[0].mean_think_tokens, Some(97.5));
    assert_eq!(rows[0].scorer.as_deref(), Some("exact"));
    assert_eq!(rows[1].setting_value, None);
    assert_eq!(rows[1].mean_think_tokens, None);
    assert_eq!(rows[1].hallucination, None);
    assert_eq!(split_csv("a,b\n\n1,2").unwrap().len(), 2);
}

#[test]
fn csv_errors_name_the_line_and_column() {
    let e = parse_metrics_csv("model,setting,reasoning\nA,budget=1,abc\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("reasoning") && e.contains("abc"),
        "{e}"
    );
    let e = parse_metrics_csv("name,value\nA,1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("model"), "{e}");
    let e = split_csv("a,\"b\n").unwrap_err().to_string();
    assert!(e.contains("unterminated"), "{e}");
}

#[test]
fn json_forms_are_accepted() {
    let row = r#"{"model":"A","setting":"budget=100","setting_value":100,"reasoning":0.5,"perception":0.6}"#;
    assert_eq!(parse_metrics_json(&format!("[{row}]")).unwrap().len(), 1);
    assert_eq!(
        parse_metrics_json(&format!("{{\"rows\":[{row},{row}]}}"))
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        parse_metrics_json(&format!("{row}\n{row}\n"))
            .unwrap()
            .len(),
        2
    );
    assert!(parse_metrics_json("[{\"setting\":\"x\"}]").is_err());
}

#[test]
fn accuracies_outside_0_1_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("m.csv");
    std::fs::write(
        &f,
        "model,setting,reasoning,perception\nA,budget=1,48.7,0.5\n",
    )
    .unwrap();
    let e = read_metrics(&f).unwrap_err().to_string();
    assert!(e.contains("48.7") && e.contains("0–1"), "{e}");
    let e = read_metrics(&tmp.path().join("missing.csv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.csv"), "{e}");
}

#[test]
fn rows_group_into_one_sweep_per_model_and_kind() {
    let csv = "model,setting,setting_value,reasoning,perception\n\
               A,budget=0,0,0.4,0.7\nA,budget=100,100,0.5,0.6\nA,default,,0.45,0.65\n\
               A,steer=0.1,0.1,0.41,0.69\nA,steer=-0.1,-0.1,0.42,0.6\n\
               B,default,,0.3,0.5\n";
    let groups = group_metrics(&parse_metrics_csv(csv).unwrap());
    let labels: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
    assert_eq!(labels, vec!["A (budget)", "A (steer)", "B"]);
    assert_eq!(groups[0].rows.len(), 2);
    assert_eq!(groups[2].rows.len(), 1);
    assert_eq!(groups[0].color, groups[1].color);
    assert_ne!(groups[0].color, groups[2].color);
}
