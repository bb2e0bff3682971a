//! Safetensors loading: dtypes, ownership, name normalisation, shards, and corrupt files.
//! Files are written here with the `safetensors` crate (or by hand) from known values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rhlens::checkpoint::{canonical_name, ModelConfig, Weights};
use safetensors::tensor::{Dtype, TensorView};
use tch::{Device, Kind, Tensor};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// bf16 = upper 16 bits of the f32; exact for the values used here.
fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
        .collect()
}

/// f16 bit patterns of 1.0, -2.0, 0.5, 65504.0.
const F16_VALUES: [f32; 4] = [1.0, -2.0, 0.5, 65504.0];
fn f16_bytes() -> Vec<u8> {
    [0x3c00u16, 0xc000, 0x3800, 0x7bff]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

struct Spec {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn write_file(path: &Path, specs: &[Spec]) {
    let views: Vec<(String, TensorView<'_>)> = specs
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                TensorView::new(s.dtype, s.shape.clone(), &s.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

const A: [f32; 6] = [1.0, -2.5, 3.25, 0.0, 1e-3, -7.0];
const B: [f32; 4] = [1.5, -2.0, 0.15625, 256.0];

fn basic_specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "model.layers.0.mlp.up_proj.weight",
            dtype: Dtype::F32,
            shape: vec![2, 3],
            data: f32_bytes(&A),
        },
        Spec {
            name: "model.norm.weight",
            dtype: Dtype::BF16,
            shape: vec![4],
            data: bf16_bytes(&B),
        },
        Spec {
            name: "visual.merger.ln_q.weight",
            dtype: Dtype::F16,
            shape: vec![2, 2],
            data: f16_bytes(),
        },
        Spec {
            name: "counts",
            dtype: Dtype::I64,
            shape: vec![3],
            data: [5i64, -1, 1 << 40]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        },
        Spec {
            name: "scale",
            dtype: Dtype::F64,
            shape: vec![],
            data: 0.1f64.to_le_bytes().to_vec(),
        },
    ]
}

fn values(t: &Tensor) -> Vec<f32> {
    let t = t.to_kind(Kind::Float).flatten(0, -1);
    Vec::<f32>::try_from(&t).unwrap()
}

#[test]
fn loads_every_dtype_with_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(&tmp.path().join("model.safetensors"), &basic_specs());
    let w = Weights::open(tmp.path()).unwrap();
    assert_eq!(w.len(), 5);
    assert_eq!(
        w.names(),
        vec![
            "counts",
            "model.layers.0.mlp.up_proj.weight",
            "model.norm.weight",
            "scale",
            "visual.merger.ln_q.weight"
        ]
    );
    assert_eq!(w.shape("model.norm.weight"), Some(vec![4]));
    assert_eq!(w.dtype_name("model.norm.weight").as_deref(), Some("BF16"));

    // Same kind on CPU: copied.
    let a = w
        .tensor(
            "model.layers.0.mlp.up_proj.weight",
            &[2, 3],
            Kind::Float,
            Device::Cpu,
        )
        .unwrap();
    assert_eq!(a.kind(), Kind::Float);
    assert_eq!(a.size(), vec![2, 3]);
    assert_eq!(values(&a), A.to_vec());

    // bf16 → f32 (conversion), f32 → bf16, f16 → f32, f64 scalar, i64.
    let b = w
        .tensor("model.norm.weight", &[4], Kind::Float, Device::Cpu)
        .unwrap();
    assert_eq!(b.kind(), Kind::Float);
    assert_eq!(values(&b), B.to_vec());
    let b16 = w
        .tensor("model.norm.weight", &[4], Kind::BFloat16, Device::Cpu)
        .unwrap();
    assert_eq!(b16.kind(), Kind::BFloat16);
    assert_eq!(values(&b16), B.to_vec());
    let a16 = w
        .tensor(
            "model.layers.0.mlp.up_proj.weight",
            &[2, 3],
            Kind::BFloat16,
            Device::Cpu,
        )
        .unwrap();
    assert_eq!(a16.kind(), Kind::BFloat16);
    // bf16 keeps 8 significant bits: within half an ulp (2^-9 relative) of each value.
    for (got, want) in values(&a16).iter().zip(&A) {
        assert!((got - want).abs() <= want.abs() / 512.0, "{got} vs {want}");
    }
    let h = w
        .tensor(
            "visual.merger.ln_q.weight",
            &[2, 2],
            Kind::Float,
            Device::Cpu,
        )
        .unwrap();
    assert_eq!(values(&h), F16_VALUES.to_vec());
    let s = w.tensor("scale", &[], Kind::Double, Device::Cpu).unwrap();
    assert_eq!(s.kind(), Kind::Double);
    assert_eq!(f64::try_from(&s).unwrap(), 0.1);
    let c = w.tensor("counts", &[3], Kind::Int64, Device::Cpu).unwrap();
    assert_eq!(Vec::<i64>::try_from(&c).unwrap(), vec![5, -1, 1 << 40]);
}

#[test]
fn tensors_own_their_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    write_file(&path, &basic_specs());
    let w = Weights::open(tmp.path()).unwrap();
    let same = w
        .tensor(
            "model.layers.0.mlp.up_proj.weight",
            &[2, 3],
            Kind::Float,
            Device::Cpu,
        )
        .unwrap();
    let converted = w
        .tensor("model.norm.weight", &[4], Kind::Float, Device::Cpu)
        .unwrap();
    let kept_bf16 = w
        .tensor("model.norm.weight", &[4], Kind::BFloat16, Device::Cpu)
        .unwrap();
    drop(w);
    // Unmapped and replaced on disk: tensors that pointed into the mapping would now read
    // freed memory or the new bytes.
    std::fs::remove_file(&path).unwrap();
    let mut changed = basic_specs();
    changed[0].data = f32_bytes(&[9.0; 6]);
    changed[1].data = bf16_bytes(&[9.0; 4]);
    write_file(&path, &changed);
    assert_eq!(values(&same), A.to_vec());
    assert_eq!(values(&converted), B.to_vec());
    assert_eq!(values(&kept_bf16), B.to_vec());
    // And they are writable, independent storage.
    let mut same = same;
    let _ = same.fill_(4.0);
    assert_eq!(values(&same), vec![4.0; 6]);
}

/// A safetensors file whose data section starts at an odd offset (legal, but unaligned).
fn write_unaligned(path: &Path) {
    let data = f32_bytes(&A);
    let mut header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[2,3],"data_offsets":[0,{}]}}}}"#,
        data.len()
    );
    while (8 + header.len()) % 2 == 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn unaligned_data_is_copied_safely() {
    let tmp = tempfile::tempdir().unwrap();
    write_unaligned(&tmp.path().join("model.safetensors"));
    let w = Weights::open(tmp.path()).unwrap();
    let t = w.tensor("w", &[2, 3], Kind::Float, Device::Cpu).unwrap();
    assert_eq!(values(&t), A.to_vec());
    let d = w.tensor("w", &[2, 3], Kind::Double, Device::Cpu).unwrap();
    assert_eq!(d.kind(), Kind::Double);
    assert_eq!(values(&d), A.to_vec());
}

#[test]
fn canonical_names() {
    let cases = [
        (
            "model.visual.blocks.0.attn.qkv.weight",
            "visual.blocks.0.attn.qkv.weight",
        ),
        (
            "model.language_model.layers.1.mlp.up_proj.weight",
            "model.layers.1.mlp.up_proj.weight",
        ),
        (
            "model.language_model.embed_tokens.weight",
            "model.embed_tokens.weight",
        ),
        ("vision_tower.merger.mlp.0.bias", "visual.merger.mlp.0.bias"),
        ("language_model.model.norm.weight", "model.norm.weight"),
        ("language_model.lm_head.weight", "lm_head.weight"),
        ("model.lm_head.weight", "lm_head.weight"),
        ("lm_head.weight", "lm_head.weight"),
        (
            "visual.patch_embed.proj.weight",
            "visual.patch_embed.proj.weight",
        ),
        (
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.input_layernorm.weight",
        ),
    ];
    for (stored, canonical) in cases {
        assert_eq!(canonical_name(stored), canonical, "{stored}");
    }
}

fn spec(name: &'static str, vals: &[f32]) -> Spec {
    Spec {
        name,
        dtype: Dtype::F32,
        shape: vec![vals.len()],
        data: f32_bytes(vals),
    }
}

#[test]
fn normalises_resaved_names_and_reads_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_file(
        &d.join("model-00001-of-00002.safetensors"),
        &[
            spec("model.language_model.embed_tokens.weight", &[1.0, 2.0]),
            spec("model.visual.patch_embed.proj.weight", &[3.0]),
        ],
    );
    write_file(
        &d.join("model-00002-of-00002.safetensors"),
        &[spec("lm_head.weight", &[4.0, 5.0, 6.0])],
    );
    let index = serde_json::json!({
        "metadata": {"total_size": 24},
        "weight_map": {
            "model.language_model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.visual.patch_embed.proj.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors"
        }
    });
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let w = Weights::open(d).unwrap();
    assert_eq!(w.files().len(), 2);
    assert_eq!(
        w.names(),
        vec![
            "lm_head.weight",
            "model.embed_tokens.weight",
            "visual.patch_embed.proj.weight"
        ]
    );
    // Stored-layout names are accepted too.
    assert!(w.contains("model.language_model.embed_tokens.weight"));
    assert!(w.contains("model.embed_tokens.weight"));
    let t = w
        .tensor(
            "visual.patch_embed.proj.weight",
            &[1],
            Kind::Float,
            Device::Cpu,
        )
        .unwrap();
    assert_eq!(values(&t), vec![3.0]);
    let t = w
        .tensor("lm_head.weight", &[3], Kind::Float, Device::Cpu)
        .unwrap();
    assert_eq!(values(&t), vec![4.0, 5.0, 6.0]);

    // A single model.safetensors takes precedence over the index (as in transformers).
    write_file(&d.join("model.safetensors"), &[spec("only", &[7.0])]);
    let w = Weights::open(d).unwrap();
    assert_eq!(w.names(), vec!["only"]);
}

fn err_of(dir: &Path) -> String {
    let e = Weights::open(dir).expect_err("should fail").to_string();
    assert!(!e.contains('\n'), "not one line: {e}");
    e
}

#[test]
fn lookup_errors() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(&tmp.path().join("model.safetensors"), &basic_specs());
    let w = Weights::open(tmp.path()).unwrap();
    let e = w
        .tensor(
            "model.layers.3.mlp.up_proj.weight",
            &[64, 32],
            Kind::Float,
            Device::Cpu,
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "checkpoint has no weight `model.layers.3.mlp.up_proj.weight`"
    );
    let e = w
        .tensor(
            "model.layers.0.mlp.up_proj.weight",
            &[2, 4],
            Kind::Float,
            Device::Cpu,
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "weight `model.layers.0.mlp.up_proj.weight` has shape [2, 3] but the config implies [2, 4]"
    );
    // Asked for by its re-saved name, reported by its canonical name.
    let e = w
        .tensor(
            "model.language_model.layers.9.x",
            &[1],
            Kind::Float,
            Device::Cpu,
        )
        .unwrap_err()
        .to_string();
    assert_eq!(e, "checkpoint has no weight `model.layers.9.x`");
    assert!(!w.contains("nothing"));
    assert_eq!(w.shape("nothing"), None);
}

#[test]
fn unsupported_dtype_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(
        &tmp.path().join("model.safetensors"),
        &[Spec {
            name: "u",
            dtype: Dtype::U32,
            shape: vec![2],
            data: vec![0; 8],
        }],
    );
    let w = Weights::open(tmp.path()).unwrap();
    let e = w
        .tensor("u", &[2], Kind::Float, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "weight `u` is stored as U32, which rhlens cannot load");
}

#[test]
fn corrupt_files_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.safetensors");
    write_file(&good, &basic_specs());
    let bytes = std::fs::read(&good).unwrap();

    // Truncated data section, truncated header, a few bytes, empty, and not safetensors at all.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() - 5].to_vec()),
        ("header", bytes[..8 + header_len / 2].to_vec()),
        ("tiny", bytes[..5].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"this is not a safetensors file at all".to_vec()),
    ];
    for (what, data) in variants {
        let dir = tmp.path().join(what);
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("model.safetensors");
        std::fs::write(&file, data).unwrap();
        let e = err_of(&dir);
        assert!(
            e.contains(&file.display().to_string())
                && e.contains("not a valid safetensors file")
                && e.contains("truncated or corrupt"),
            "{what}: {e}"
        );
    }
}

#[test]
fn index_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_file(&d.join("a.safetensors"), &[spec("x", &[1.0])]);
    let write_index = |map: serde_json::Value| {
        std::fs::write(
            d.join("model.safetensors.index.json"),
            serde_json::json!({ "weight_map": map }).to_string(),
        )
        .unwrap()
    };

    write_index(serde_json::json!({"x": "a.safetensors", "y": "b.safetensors"}));
    let e = err_of(d);
    assert!(
        e.contains("b.safetensors") && e.contains("lists it as a shard"),
        "{e}"
    );

    write_index(serde_json::json!({"x": "a.safetensors", "z": "a.safetensors"}));
    let e = err_of(d);
    assert!(
        e.contains("lists weight `z` in `a.safetensors`, but that file does not contain it"),
        "{e}"
    );

    std::fs::write(d.join("model.safetensors.index.json"), "{}").unwrap();
    assert!(err_of(d).contains("has no `weight_map`"));

    std::fs::write(d.join("model.safetensors.index.json"), "{oops").unwrap();
    assert!(err_of(d).contains("is not valid JSON"));

    // Two files that hold the same weight under different layouts.
    write_file(
        &d.join("b.safetensors"),
        &[spec("model.language_model.norm.weight", &[1.0])],
    );
    write_file(
        &d.join("c.safetensors"),
        &[spec("model.norm.weight", &[2.0])],
    );
    write_index(serde_json::json!({
        "model.language_model.norm.weight": "b.safetensors",
        "model.norm.weight": "c.safetensors"
    }));
    let e = err_of(d);
    assert!(
        e.contains("weight `model.norm.weight` appears twice"),
        "{e}"
    );
}

#[test]
fn missing_weights_files() {
    let tmp = tempfile::tempdir().unwrap();
    let e = err_of(tmp.path());
    assert!(
        e.contains("needs model.safetensors or model.safetensors.index.json"),
        "{e}"
    );
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"x").unwrap();
    let e = err_of(tmp.path());
    assert!(e.contains("PyTorch .bin"), "{e}");
    let e = err_of(&tmp.path().join("absent"));
    assert!(e.contains("does not exist"), "{e}");
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// Shapes every Qwen2.5-VL checkpoint must have, from its config.
fn expected_shapes(cfg: &ModelConfig) -> HashMap<String, Vec<i64>> {
    let t = &cfg.text;
    let v = &cfg.vision;
    let (h, i, kv) = (
        t.hidden_size as i64,
        t.intermediate_size as i64,
        t.kv_dim() as i64,
    );
    let (vh, vi) = (v.hidden_size as i64, v.intermediate_size as i64);
    let merged = vh * v.merge_unit() as i64;
    let mut m = HashMap::new();
    m.insert(
        "model.embed_tokens.weight".into(),
        vec![t.vocab_size as i64, h],
    );
    m.insert("model.norm.weight".into(), vec![h]);
    for l in 0..t.num_hidden_layers {
        let p = format!("model.layers.{l}");
        m.insert(format!("{p}.self_attn.q_proj.weight"), vec![h, h]);
        m.insert(format!("{p}.self_attn.q_proj.bias"), vec![h]);
        m.insert(format!("{p}.self_attn.k_proj.weight"), vec![kv, h]);
        m.insert(format!("{p}.self_attn.v_proj.bias"), vec![kv]);
        m.insert(format!("{p}.self_attn.o_proj.weight"), vec![h, h]);
        m.insert(format!("{p}.mlp.up_proj.weight"), vec![i, h]);
        m.insert(format!("{p}.mlp.down_proj.weight"), vec![h, i]);
        m.insert(format!("{p}.input_layernorm.weight"), vec![h]);
    }
    m.insert(
        "visual.patch_embed.proj.weight".into(),
        vec![
            vh,
            v.in_channels as i64,
            v.temporal_patch_size as i64,
            v.patch_size as i64,
            v.patch_size as i64,
        ],
    );
    for b in 0..v.depth {
        let p = format!("visual.blocks.{b}");
        m.insert(format!("{p}.attn.qkv.weight"), vec![3 * vh, vh]);
        m.insert(format!("{p}.mlp.gate_proj.bias"), vec![vi]);
        m.insert(format!("{p}.norm1.weight"), vec![vh]);
    }
    m.insert("visual.merger.mlp.0.weight".into(), vec![merged, merged]);
    m.insert(
        "visual.merger.mlp.2.weight".into(),
        vec![v.out_hidden_size as i64, merged],
    );
    if !t.tie_word_embeddings {
        m.insert("lm_head.weight".into(), vec![t.vocab_size as i64, h]);
    }
    m
}

#[test]
fn tiny_checkpoints_agree_with_their_configs() {
    for name in ["tiny-flat", "tiny-nested"] {
        let dir = fixture(name);
        let cfg = ModelConfig::from_dir(&dir).unwrap();
        let w = Weights::open(&dir).unwrap();
        assert!(
            w.names().iter().all(|n| n.starts_with("model.")
                || n.starts_with("visual.")
                || n.starts_with("lm_head.")),
            "{name}: non-canonical names"
        );
        assert_eq!(
            w.contains("lm_head.weight"),
            !cfg.text.tie_word_embeddings,
            "{name}"
        );
        for (weight, shape) in expected_shapes(&cfg) {
            let t = w
                .tensor(&weight, &shape, Kind::Float, Device::Cpu)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.size(), shape);
            assert!(
                bool::try_from(t.isfinite().all()).unwrap(),
                "{name}: {weight}"
            );
        }
    }
    // The nested fixture is sharded.
    assert!(Weights::open(fixture("tiny-nested")).unwrap().files().len() > 1);
}

#[test]
fn loads_to_cuda_when_available() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: GPU transfer not exercised");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write_file(&tmp.path().join("model.safetensors"), &basic_specs());
    let w = Weights::open(tmp.path()).unwrap();
    let dev = Device::Cuda(0);
    let b = w
        .tensor("model.norm.weight", &[4], Kind::Float, dev)
        .unwrap();
    let a = w
        .tensor(
            "model.layers.0.mlp.up_proj.weight",
            &[2, 3],
            Kind::Float,
            dev,
        )
        .unwrap();
    drop(w);
    assert_eq!(b.device(), dev);
    assert_eq!(b.kind(), Kind::Float);
    assert_eq!(values(&b.to_device(Device::Cpu)), B.to_vec());
    assert_eq!(values(&a.to_device(Device::Cpu)), A.to_vec());
}
