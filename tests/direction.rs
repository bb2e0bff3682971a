//! The steering direction against a Python computation with forward hooks on the same checkpoint
//! (scripts/fixtures_direction.py: mean residual after attention over thinking tokens, long minus
//! short), and the `rhlens direction` command writing it.
mod common;

use common::*;
use rhlens::runtime::Runtime;
use rhlens::steer::{compute_direction, read_records, thinking_residual};
use tch::{Device, Kind, Tensor};

#[test]
fn direction_matches_python_forward_hooks() {
    let r = Reference {
        tensors: Tensor::read_safetensors(fixtures().join("direction/expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect(),
        meta: Default::default(),
    };
    let rt = Runtime::load(
        model_dir("tiny-flat").to_str().unwrap(),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let records = read_records(&fixtures().join("direction/generations.jsonl")).unwrap();
    assert_eq!(records.len(), 6);
    for (i, rec) in records.iter().enumerate() {
        let v = thinking_residual(&rt, rec).unwrap();
        let d = max_abs_diff(&v, r.t(&format!("record.{i}")));
        assert!(
            d <= 1e-5,
            "record {i}: per-layer mean residual differs by {d}"
        );
    }
    let d = compute_direction(&rt, &records, 20, 10, &mut |_, _| {}).unwrap();
    let diff = max_abs_diff(&d.direction, r.t("direction"));
    assert!(
        diff <= 1e-5,
        "direction differs from the Python reference by {diff}"
    );
    assert_eq!(vec![d.n_long as i64, d.n_short as i64], r.ids("counts"));

    // the command writes the same direction
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dir.safetensors");
    let o = std::process::Command::new(bin())
        .args([
            "direction",
            "--model",
            model_dir("tiny-flat").to_str().unwrap(),
            "--generations",
            fixtures()
                .join("direction/generations.jsonl")
                .to_str()
                .unwrap(),
            "--long-min",
            "20",
            "--short-max",
            "10",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    assert!(max_abs_diff(&saved["direction"], r.t("direction")) <= 1e-5);
}
