//! Shared helpers for the integration tests: fixture paths and Hugging Face reference files.
#![allow(dead_code)]
use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Kind, Tensor};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter of the pinned reference stack in `.venv` (scripts/setup.sh installs it).
pub fn python() -> PathBuf {
    let python = root().join(".venv").join("bin").join("python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the reference stack)",
        python.display()
    );
    python
}

pub fn fixtures() -> PathBuf {
    root().join("tests").join("fixtures")
}

pub fn model_dir(name: &str) -> PathBuf {
    if name == "demo-model" {
        return root().join("assets").join("demo-model");
    }
    fixtures().join("models").join(name)
}

pub fn image_path(name: &str) -> PathBuf {
    if name == "demo" {
        return root().join("assets").join("demo.png");
    }
    fixtures().join("images").join(format!("{name}.png"))
}

/// A Hugging Face reference file: tensors plus string metadata.
pub struct Reference {
    pub tensors: HashMap<String, Tensor>,
    pub meta: HashMap<String, String>,
}

impl Reference {
    pub fn load(model: &str, image: &str) -> Reference {
        let path = fixtures()
            .join("reference")
            .join(format!("{model}__{image}.safetensors"));
        let tensors = Tensor::read_safetensors(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .into_iter()
            .collect();
        let bytes = std::fs::read(&path).unwrap();
        let (_, st_meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = st_meta.metadata().clone().unwrap_or_default();
        Reference { tensors, meta }
    }

    pub fn t(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("reference has no tensor {name}"))
    }

    pub fn ids(&self, name: &str) -> Vec<i64> {
        Vec::<i64>::try_from(self.t(name).to_kind(Kind::Int64).flatten(0, -1)).unwrap()
    }

    pub fn m(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("reference has no metadata {key}"))
    }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rhlens"))
}

/// Head-mean of an attention row `[layers, heads, kv]` summed over keys `[a, b)` → `[layers]`
/// (float64; zeros for an empty range).
pub fn head_mean_span_mass(row: &Tensor, a: i64, b: i64) -> Tensor {
    if b <= a {
        return Tensor::zeros([row.size()[0]], (Kind::Double, tch::Device::Cpu));
    }
    row.to_kind(Kind::Double)
        .mean_dim([1i64].as_slice(), false, None::<Kind>)
        .narrow(1, a, b - a)
        .sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)
}
