//! config.json parsing against what transformers derives from the same files
//! (tests/fixtures/checkpoint/config_cases.json, made by scripts/fixtures_checkpoint.py), plus the
//! validation errors.

use std::path::{Path, PathBuf};

use rhlens::checkpoint::{CheckpointError, ModelConfig};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> Value {
    let path = root().join("tests/fixtures/checkpoint/config_cases.json");
    let text = std::fs::read_to_string(&path).expect("config_cases.json fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Compare every field of a parsed config with the transformers-derived expectation.
fn check(name: &str, cfg: &ModelConfig, exp: &Value) {
    let t = &exp["text"];
    let u = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("{name}: bad fixture {v}")) as usize
    };
    let list = |v: &Value| -> Vec<usize> { v.as_array().unwrap().iter().map(u).collect() };
    assert_eq!(cfg.model_type, "qwen2_5_vl", "{name}");
    assert_eq!(cfg.text.hidden_size, u(&t["hidden_size"]), "{name}");
    assert_eq!(
        cfg.text.num_hidden_layers,
        u(&t["num_hidden_layers"]),
        "{name}"
    );
    assert_eq!(
        cfg.text.num_attention_heads,
        u(&t["num_attention_heads"]),
        "{name}"
    );
    assert_eq!(
        cfg.text.num_key_value_heads,
        u(&t["num_key_value_heads"]),
        "{name}"
    );
    assert_eq!(cfg.text.head_dim, u(&t["head_dim"]), "{name}");
    assert_eq!(
        cfg.text.intermediate_size,
        u(&t["intermediate_size"]),
        "{name}"
    );
    assert_eq!(cfg.text.vocab_size, u(&t["vocab_size"]), "{name}");
    assert_eq!(
        cfg.text.rms_norm_eps,
        t["rms_norm_eps"].as_f64().unwrap(),
        "{name}"
    );
    assert_eq!(
        cfg.text.rope_theta,
        t["rope_theta"].as_f64().unwrap(),
        "{name}"
    );
    assert_eq!(cfg.text.mrope_section, list(&t["mrope_section"]), "{name}");
    assert_eq!(
        cfg.text.tie_word_embeddings,
        t["tie_word_embeddings"].as_bool().unwrap(),
        "{name}"
    );
    assert_eq!(
        cfg.text.max_position_embeddings,
        u(&t["max_position_embeddings"]),
        "{name}"
    );
    assert_eq!(
        cfg.text.hidden_act,
        t["hidden_act"].as_str().unwrap(),
        "{name}"
    );

    let v = &exp["vision"];
    assert_eq!(cfg.vision.depth, u(&v["depth"]), "{name}");
    assert_eq!(cfg.vision.hidden_size, u(&v["hidden_size"]), "{name}");
    assert_eq!(cfg.vision.num_heads, u(&v["num_heads"]), "{name}");
    assert_eq!(
        cfg.vision.intermediate_size,
        u(&v["intermediate_size"]),
        "{name}"
    );
    assert_eq!(cfg.vision.patch_size, u(&v["patch_size"]), "{name}");
    assert_eq!(
        cfg.vision.temporal_patch_size,
        u(&v["temporal_patch_size"]),
        "{name}"
    );
    assert_eq!(
        cfg.vision.spatial_merge_size,
        u(&v["spatial_merge_size"]),
        "{name}"
    );
    assert_eq!(cfg.vision.window_size, u(&v["window_size"]), "{name}");
    assert_eq!(
        cfg.vision.fullatt_block_indexes,
        list(&v["fullatt_block_indexes"]),
        "{name}"
    );
    assert_eq!(
        cfg.vision.out_hidden_size,
        u(&v["out_hidden_size"]),
        "{name}"
    );
    assert_eq!(cfg.vision.in_channels, u(&v["in_channels"]), "{name}");
    assert_eq!(
        cfg.vision.tokens_per_second,
        u(&v["tokens_per_second"]),
        "{name}"
    );
    assert_eq!(
        cfg.vision.hidden_act,
        v["hidden_act"].as_str().unwrap(),
        "{name}"
    );

    assert_eq!(
        cfg.image_token_id,
        exp["image_token_id"].as_i64().unwrap(),
        "{name}"
    );
    assert_eq!(
        cfg.video_token_id,
        exp["video_token_id"].as_i64().unwrap(),
        "{name}"
    );
    assert_eq!(
        cfg.vision_start_token_id,
        exp["vision_start_token_id"].as_i64().unwrap(),
        "{name}"
    );
    assert_eq!(
        cfg.vision_end_token_id,
        exp["vision_end_token_id"].as_i64().unwrap(),
        "{name}"
    );
    let eos: Vec<i64> = exp["eos_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(cfg.eos_token_ids, eos, "{name}");
    assert_eq!(cfg.pad_token_id, exp["pad_token_id"].as_i64(), "{name}");
}

#[test]
fn matches_transformers_on_config_variants() {
    let fx = fixtures();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let config = serde_json::to_string(&case["config"]).unwrap();
        let generation = case["generation_config"]
            .as_object()
            .map(|g| serde_json::to_string(g).unwrap());
        let cfg = ModelConfig::from_json_str(&config, generation.as_deref())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check(name, &cfg, &case["expected"]);
    }
}

#[test]
fn tiny_checkpoints_match_transformers() {
    let fx = fixtures();
    let checkpoints = fx["checkpoints"].as_array().unwrap();
    assert!(!checkpoints.is_empty());
    for ck in checkpoints {
        let dir = root().join(ck["dir"].as_str().unwrap());
        let cfg = ModelConfig::from_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let exp = &ck["expected"];
        check(&dir.display().to_string(), &cfg, exp);
        assert_eq!(cfg.random_weights, exp["random_weights"].as_bool().unwrap());
        assert_eq!(cfg.torch_dtype.as_deref(), exp["torch_dtype"].as_str());
    }
}

/// A small valid flat config; tests break one thing at a time.
fn flat() -> Value {
    json!({
        "model_type": "qwen2_5_vl",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 96,
        "vocab_size": 300,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "vision_config": {"depth": 2, "hidden_size": 32, "num_heads": 2, "out_hidden_size": 64,
                          "fullatt_block_indexes": [1]}
    })
}

fn nested() -> Value {
    json!({
        "model_type": "qwen2_5_vl",
        "dtype": "float32",
        "text_config": {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 300,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
        },
        "vision_config": {"depth": 2, "hidden_size": 32, "num_heads": 2, "out_hidden_size": 64,
                          "fullatt_block_indexes": [1], "in_channels": 3}
    })
}

fn parse(v: &Value) -> Result<ModelConfig, CheckpointError> {
    ModelConfig::from_json_str(&v.to_string(), None)
}

fn parse_err(v: &Value) -> String {
    let e = parse(v).expect_err("config should be rejected").to_string();
    assert!(!e.contains('\n'), "error is not one line: {e}");
    e
}

#[test]
fn hand_worked_small_configs() {
    let cfg = parse(&flat()).unwrap();
    assert_eq!(cfg.text.head_dim, 16);
    assert_eq!(cfg.text.num_kv_groups(), 2);
    assert_eq!(cfg.text.kv_dim(), 32);
    assert_eq!(cfg.vision.head_dim(), 16);
    assert_eq!(cfg.vision.patch_dim(), 3 * 2 * 14 * 14);
    assert_eq!(cfg.vision.merge_unit(), 4);
    // Class defaults when a config omits the ids.
    assert_eq!(cfg.image_token_id, 151655);
    assert_eq!(cfg.eos_token_ids, vec![151645]);
    assert_eq!(cfg.pad_token_id, None);
    assert!(!cfg.random_weights);
    assert_eq!(cfg.torch_dtype, None);

    let cfg = parse(&nested()).unwrap();
    assert_eq!(cfg.text.rope_theta, 10000.0);
    assert_eq!(cfg.torch_dtype.as_deref(), Some("float32"));

    // Hub configs write `in_chans`; it names the patch-embedding input channels.
    let mut v = flat();
    v["vision_config"]["in_chans"] = json!(4);
    assert_eq!(parse(&v).unwrap().vision.in_channels, 4);

    // An explicit head_dim equal to hidden/heads is accepted.
    let mut v = flat();
    v["head_dim"] = json!(16);
    assert_eq!(parse(&v).unwrap().text.head_dim, 16);

    // generation_config.json overrides eos and pad; an int becomes a one-element list.
    let cfg = ModelConfig::from_json_str(
        &flat().to_string(),
        Some(r#"{"eos_token_id": 9, "pad_token_id": 3}"#),
    )
    .unwrap();
    assert_eq!(cfg.eos_token_ids, vec![9]);
    assert_eq!(cfg.pad_token_id, Some(3));

    // Token ids only inside text_config are used (transformers 5.17 would ignore them and fall
    // back to the class defaults; a checkpoint that moved them there means them).
    let mut v = nested();
    v["text_config"]["image_token_id"] = json!(77);
    v["text_config"]["vision_start_token_id"] = json!(75);
    let cfg = parse(&v).unwrap();
    assert_eq!((cfg.image_token_id, cfg.vision_start_token_id), (77, 75));
    assert_eq!(cfg.video_token_id, 151656);
    // The top level wins when both are present.
    v["image_token_id"] = json!(88);
    assert_eq!(parse(&v).unwrap().image_token_id, 88);

    let mut v = flat();
    v["rhlens_random_weights"] = json!(true);
    assert!(parse(&v).unwrap().random_weights);

    // Sliding windows that no layer uses are fine.
    let mut v = flat();
    v["use_sliding_window"] = json!(true);
    v["max_window_layers"] = json!(2);
    assert!(parse(&v).is_ok());
}

#[test]
fn validation_errors_name_the_problem() {
    let mut v = flat();
    v["model_type"] = json!("llava");
    let e = parse_err(&v);
    assert!(
        e.contains("unsupported model_type `llava`") && e.contains("qwen2_5_vl"),
        "{e}"
    );

    let mut v = flat();
    v.as_object_mut().unwrap().remove("model_type");
    assert!(parse_err(&v).contains("missing field `model_type`"));

    let mut v = flat();
    v["rope_scaling"]["mrope_section"] = json!([2, 3, 4]);
    let e = parse_err(&v);
    assert!(
        e.contains("`rope_scaling.mrope_section` [2, 3, 4]") && e.contains("head_dim / 2 = 8"),
        "{e}"
    );

    // Default mrope_section [16, 24, 24] does not fit head_dim 16.
    let mut v = flat();
    v.as_object_mut().unwrap().remove("rope_scaling");
    let e = parse_err(&v);
    assert!(e.contains("default mrope_section [16, 24, 24]"), "{e}");

    let mut v = flat();
    v["num_attention_heads"] = json!(5);
    let e = parse_err(&v);
    assert!(
        e.contains("`hidden_size` (64) is not divisible by `num_attention_heads` (5)"),
        "{e}"
    );

    let mut v = flat();
    v["num_key_value_heads"] = json!(3);
    let e = parse_err(&v);
    assert!(
        e.contains("`num_attention_heads` (4) is not a multiple of `num_key_value_heads` (3)"),
        "{e}"
    );

    let mut v = nested();
    v["text_config"]
        .as_object_mut()
        .unwrap()
        .remove("hidden_size");
    let e = parse_err(&v);
    assert!(e.contains("missing field `text_config.hidden_size`"), "{e}");

    let mut v = flat();
    v.as_object_mut().unwrap().remove("vocab_size");
    assert!(parse_err(&v).contains("missing field `vocab_size`"));

    let mut v = flat();
    v.as_object_mut().unwrap().remove("vision_config");
    assert!(parse_err(&v).contains("missing field `vision_config`"));

    let mut v = flat();
    v["hidden_size"] = json!("64");
    assert!(parse_err(&v).contains("`hidden_size` must be a non-negative integer"));

    let mut v = flat();
    v["head_dim"] = json!(32);
    assert!(parse_err(&v).contains("`head_dim` (32) differs"));

    let mut v = nested();
    v["text_config"]["rope_parameters"]["rope_type"] = json!("yarn");
    let e = parse_err(&v);
    assert!(
        e.contains("`text_config.rope_parameters` has rope type `yarn`"),
        "{e}"
    );

    let mut v = flat();
    v["vision_config"]["out_hidden_size"] = json!(48);
    assert!(parse_err(&v).contains("`vision_config.out_hidden_size` (48) must equal"));

    let mut v = flat();
    v["vision_config"]["num_heads"] = json!(3);
    assert!(parse_err(&v).contains("`vision_config.hidden_size` (32) is not divisible"));

    let mut v = flat();
    v["vision_config"]["num_heads"] = json!(16); // head size 2
    assert!(parse_err(&v).contains("must be a multiple of 4"));

    let mut v = flat();
    v["vision_config"]["fullatt_block_indexes"] = json!([1, 2]);
    assert!(parse_err(&v).contains("contains 2, but the vision tower has only 2 blocks"));

    let mut v = flat();
    v["use_sliding_window"] = json!(true);
    v["max_window_layers"] = json!(1);
    assert!(parse_err(&v).contains("sliding-window attention"));

    let e = ModelConfig::from_json_str("{\"model_type\": ", None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("`config.json` is not valid JSON"), "{e}");

    let e = ModelConfig::from_json_str(&flat().to_string(), Some("{\"eos_token_id\": \"x\"}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("generation_config.json") && e.contains("eos_token_id"),
        "{e}"
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn directory_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = ModelConfig::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("not found"),
        "missing config.json: {e}"
    );

    write(tmp.path(), "config.json", "{not json");
    let e = ModelConfig::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("config.json` is not valid JSON"), "{e}");

    write(tmp.path(), "config.json", &flat().to_string());
    write(tmp.path(), "generation_config.json", "[1, 2");
    let e = ModelConfig::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("generation_config.json` is not valid JSON"),
        "{e}"
    );

    write(
        tmp.path(),
        "generation_config.json",
        r#"{"eos_token_id": [1, 2]}"#,
    );
    assert_eq!(
        ModelConfig::from_dir(tmp.path()).unwrap().eos_token_ids,
        vec![1, 2]
    );

    let gone = tmp.path().join("nope");
    let e = ModelConfig::from_dir(&gone).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");

    let e = ModelConfig::from_dir(tmp.path().join("config.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a file"), "{e}");
}
