//! Hugging Face parity on this machine: the pinned reference stack in `.venv` and rhlens run the
//! same prefill here, on the same libtorch kernels, and must agree to 1e-6 (measured: 0.0, bit
//! for bit). The committed references (tests/parity.rs) were made on another CPU; float results
//! there differ from this machine's by up to ~1.4e-5 in attention for Hugging Face itself, so this
//! test is the strict one and parity.rs the portable one.
mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use tch::Tensor;

const CASES: [(&str, &str, &str); 2] = [
    (
        "tiny-flat",
        "wide",
        "Describe the picture. How many shapes are there?",
    ),
    (
        "tiny-nested",
        "tall",
        "Is the red square above the blue one? Think step by step.",
    ),
];

fn read(path: &std::path::Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .collect()
}

#[test]
fn prefill_is_bit_exact_with_hugging_face_on_this_machine() {
    let python = root().join(".venv").join("bin").join("python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the reference stack)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut hf_args = vec![root()
        .join("scripts")
        .join("hf_prefill.py")
        .into_os_string()];
    for (model, image, prompt) in CASES {
        let hf = dir.path().join(format!("{model}__{image}.hf.safetensors"));
        let rh = dir.path().join(format!("{model}__{image}.rh.safetensors"));
        hf_args.extend([
            model_dir(model).into_os_string(),
            image_path(image).into_os_string(),
            prompt.into(),
            hf.into_os_string(),
        ]);
        let out = Command::new(bin())
            .args(["dump", "--device", "cpu", "--prompt", prompt, "--model"])
            .arg(model_dir(model))
            .arg("--image")
            .arg(image_path(image))
            .arg("--out")
            .arg(&rh)
            .output()
            .unwrap();
        assert!(out.status.success(), "rhlens dump: {out:?}");
    }
    let out = Command::new(&python).args(&hf_args).output().unwrap();
    assert!(out.status.success(), "hf_prefill.py: {out:?}");
    for (model, image, _) in CASES {
        let hf = read(&dir.path().join(format!("{model}__{image}.hf.safetensors")));
        let rh = read(&dir.path().join(format!("{model}__{image}.rh.safetensors")));
        let layers = hf.keys().filter(|k| k.starts_with("attentions.")).count();
        assert!(
            layers >= 2,
            "{model}: the reference has {layers} attention layers"
        );
        for (name, want) in &hf {
            let got = rh
                .get(name)
                .unwrap_or_else(|| panic!("{model}/{image}: rhlens dump has no {name}"));
            let d = max_abs_diff(got, want);
            println!("{model}/{image} {name}: max |rhlens - Hugging Face| = {d:e}");
            assert!(d <= 1e-6, "{model}/{image}: {name} differs by {d}");
        }
    }
}
