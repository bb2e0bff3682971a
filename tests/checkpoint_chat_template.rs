//! Chat templates rendered byte for byte as transformers renders them
//! (tests/fixtures/templates/expected.json, made by scripts/fixtures_templates.py), and the
//! template lookup in a checkpoint directory.

use std::path::{Path, PathBuf};

use rhlens::checkpoint::ChatTemplate;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn templates_dir() -> PathBuf {
    root().join("tests/fixtures/templates")
}

fn fixtures() -> Value {
    let text = std::fs::read_to_string(templates_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn special(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn renders_like_transformers() {
    let fx = fixtures();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut templates_seen = std::collections::BTreeSet::new();
    for case in cases {
        let file = case["template"].as_str().unwrap();
        templates_seen.insert(file.to_string());
        let source = std::fs::read_to_string(templates_dir().join(file)).unwrap();
        let tpl = ChatTemplate::new(source, file, special(&case["special_tokens"])).unwrap();
        let (label, got) = match case["kind"].as_str().unwrap() {
            "render" => (
                format!("{file} render {:?}", case["prompt"]),
                tpl.render(case["system"].as_str(), case["prompt"].as_str().unwrap()),
            ),
            _ => (
                format!("{file} {}", case["name"]),
                tpl.render_json(
                    case["messages_json"].as_str().unwrap(),
                    case["add_generation_prompt"].as_bool().unwrap(),
                ),
            ),
        };
        match (case.get("expected"), case.get("error")) {
            (Some(want), _) => {
                let got = got.unwrap_or_else(|e| panic!("{label}: {e}"));
                assert_eq!(got, want.as_str().unwrap(), "{label}");
            }
            (None, Some(msg)) => {
                let e = got.expect_err(&label).to_string();
                assert!(e.contains(msg.as_str().unwrap()), "{label}: {e}");
                assert!(!e.contains('\n'), "{label}: {e}");
            }
            _ => panic!("{label}: fixture has neither expected nor error"),
        }
    }
    for t in ["qwen2_5_vl.jinja", "r1_vl.jinja", "tojson_options.jinja"] {
        assert!(templates_seen.contains(t), "{t} missing from the fixture");
    }
}

#[test]
fn tiny_checkpoints_render_like_their_processor() {
    let fx = fixtures();
    let checkpoints = fx["checkpoints"].as_array().unwrap();
    assert!(!checkpoints.is_empty());
    for ck in checkpoints {
        let dir = root().join(ck["dir"].as_str().unwrap());
        let tpl = ChatTemplate::from_dir(&dir).unwrap();
        let mut want = special(&ck["special_tokens"]);
        want.sort();
        let mut got = tpl.special_tokens().to_vec();
        got.sort();
        assert_eq!(got, want, "{}", dir.display());
        for r in ck["renders"].as_array().unwrap() {
            let out = tpl
                .render(r["system"].as_str(), r["prompt"].as_str().unwrap())
                .unwrap();
            assert_eq!(out, r["expected"].as_str().unwrap(), "{}", dir.display());
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn origin_and_text(dir: &Path) -> (String, String) {
    let t = ChatTemplate::from_dir(dir).unwrap();
    (t.origin().to_string(), t.render(None, "hi").unwrap())
}

#[test]
fn lookup_order_follows_transformers_processor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    write(
        d,
        "tokenizer_config.json",
        &json!({"chat_template": "T:{{ messages[0]['content'][1]['text'] }}", "eos_token": "<e>",
                "bos_token": null, "pad_token": {"content": "<p>", "special": true}})
        .to_string(),
    );
    let (origin, text) = origin_and_text(d);
    assert!(origin.contains("tokenizer_config.json"), "{origin}");
    assert_eq!(text, "T:hi");
    let tpl = ChatTemplate::from_dir(d).unwrap();
    assert_eq!(
        tpl.special_tokens(),
        &[
            ("eos_token".to_string(), "<e>".to_string()),
            ("pad_token".to_string(), "<p>".to_string())
        ]
    );

    // special_tokens_map.json completes what tokenizer_config.json lacks.
    write(
        d,
        "special_tokens_map.json",
        &json!({"eos_token": "<x>", "unk_token": "<u>"}).to_string(),
    );
    let tpl = ChatTemplate::from_dir(d).unwrap();
    assert!(tpl
        .special_tokens()
        .contains(&("eos_token".into(), "<e>".into())));
    assert!(tpl
        .special_tokens()
        .contains(&("unk_token".into(), "<u>".into())));

    write(d, "chat_template.jinja", "J:{{ eos_token }}\n");
    let (origin, text) = origin_and_text(d);
    assert!(origin.ends_with("chat_template.jinja"), "{origin}");
    assert_eq!(text, "J:<e>"); // the final newline is dropped, as in Jinja2

    write(
        d,
        "chat_template.json",
        &json!({"chat_template": "L:{{ bos_token }}."}).to_string(),
    );
    let (origin, text) = origin_and_text(d);
    assert!(origin.ends_with("chat_template.json"), "{origin}");
    assert_eq!(text, "L:."); // undefined variables render empty

    write(
        d,
        "processor_config.json",
        &json!({"chat_template": "P"}).to_string(),
    );
    let (origin, text) = origin_and_text(d);
    assert!(origin.contains("processor_config.json"), "{origin}");
    assert_eq!(text, "P");
}

#[test]
fn named_template_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "tokenizer_config.json",
        &json!({"chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "default:{{ add_generation_prompt }}"}
        ]})
        .to_string(),
    );
    assert_eq!(origin_and_text(d).1, "default:True"); // Python prints booleans capitalised

    write(
        d,
        "tokenizer_config.json",
        &json!({"chat_template": [{"name": "rag", "template": "x"}, {"name": "tool_use", "template": "y"}]})
            .to_string(),
    );
    let e = ChatTemplate::from_dir(d).unwrap_err().to_string();
    assert!(
        e.contains("none named `default` (found: rag, tool_use)"),
        "{e}"
    );
}

#[test]
fn template_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let e = ChatTemplate::from_dir(d).unwrap_err().to_string();
    assert!(e.contains("no chat template found"), "{e}");

    write(
        d,
        "chat_template.jinja",
        "{% for m in messages %}{{ m.role }",
    );
    let e = ChatTemplate::from_dir(d).unwrap_err().to_string();
    assert!(
        e.contains("chat_template.jinja") && e.contains("does not compile"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");

    write(
        d,
        "chat_template.jinja",
        "{{ raise_exception('Only user messages, please') }}",
    );
    let e = ChatTemplate::from_dir(d)
        .unwrap()
        .render(None, "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("Only user messages, please"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    write(d, "chat_template.json", "{\"other\": 1}");
    let e = ChatTemplate::from_dir(d).unwrap_err().to_string();
    assert!(e.contains("has no `chat_template` key"), "{e}");

    let tpl = ChatTemplate::new("x", "inline", vec![]).unwrap();
    let e = tpl
        .render_json(r#"{"role": "user"}"#, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("messages must be a list"), "{e}");
    let e = tpl.render_json("[{", true).unwrap_err().to_string();
    assert!(e.contains("messages are not valid JSON"), "{e}");
}
