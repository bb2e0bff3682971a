//! tokenizer.json: ids and decodings against transformers' tokenizer
//! (tests/fixtures/checkpoint/tokenizer_cases.json, made by scripts/fixtures_checkpoint.py), and the
//! streaming decoder.

use std::path::PathBuf;

use rhlens::checkpoint::TextTokenizer;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> Vec<Value> {
    let path = root().join("tests/fixtures/checkpoint/tokenizer_cases.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["checkpoints"].as_array().unwrap().clone()
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Feed ids one at a time; returns the chunks (and the flushed tail as the last chunk).
fn stream(tok: &TextTokenizer, ids: &[i64], skip: bool) -> Vec<String> {
    let mut s = tok.decode_stream(skip);
    let mut chunks = Vec::new();
    for &id in ids {
        if let Some(c) = s.step(id).unwrap() {
            chunks.push(c);
        }
    }
    if let Some(c) = s.finish().unwrap() {
        chunks.push(c);
    }
    chunks
}

#[test]
fn matches_transformers() {
    let checkpoints = fixtures();
    assert!(!checkpoints.is_empty());
    for ck in checkpoints {
        let dir = root().join(ck["dir"].as_str().unwrap());
        let tok = TextTokenizer::from_dir(&dir).unwrap();
        assert_eq!(tok.vocab_size() as u64, ck["vocab_size"].as_u64().unwrap());
        for (token, id) in ck["token_ids"].as_object().unwrap() {
            assert_eq!(tok.token_to_id(token), id.as_i64(), "{token}");
        }
        for (id, token) in ck["id_to_token"].as_object().unwrap() {
            let id: i64 = id.parse().unwrap();
            assert_eq!(tok.id_to_token(id).as_deref(), token.as_str(), "{id}");
        }
        for case in ck["texts"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ids = ids_of(&case["ids"]);
            assert_eq!(tok.encode(text).unwrap(), ids, "encode {text:?}");
            let decoded = case["decoded"].as_str().unwrap();
            let skipped = case["decoded_skip_special"].as_str().unwrap();
            assert_eq!(tok.decode(&ids, false).unwrap(), decoded, "{text:?}");
            assert_eq!(tok.decode(&ids, true).unwrap(), skipped, "{text:?}");
            // Streaming reproduces the full decode, and never shows a broken character.
            for (skip, want) in [(false, decoded), (true, skipped)] {
                let chunks = stream(&tok, &ids, skip);
                assert_eq!(chunks.concat(), want, "stream {text:?}");
                for c in &chunks {
                    assert!(!c.contains('\u{FFFD}'), "broken character in chunk {c:?}");
                }
            }
        }
    }
}

#[test]
fn stream_holds_back_split_characters() {
    let tok = TextTokenizer::from_dir(root().join("tests/fixtures/models/tiny-flat")).unwrap();
    let text = "好🙂";
    let ids = tok.encode(text).unwrap();
    // The tiny vocabulary spells these characters byte by byte.
    assert!(ids.len() >= 4, "{ids:?}");
    assert!(tok.decode(&ids[..1], false).unwrap().contains('\u{FFFD}'));
    let mut s = tok.decode_stream(false);
    let mut out = Vec::new();
    for &id in &ids {
        out.push(s.step(id).unwrap());
    }
    let emitted: Vec<&String> = out.iter().flatten().collect();
    assert_eq!(emitted, vec!["好", "🙂"], "{out:?}");
    assert!(out[0].is_none());
    assert_eq!(s.finish().unwrap(), None);

    // A stream cut inside a character flushes the replacement character, as a full decode does.
    let mut s = tok.decode_stream(false);
    assert_eq!(s.step(ids[0]).unwrap(), None);
    let tail = s.finish().unwrap();
    assert_eq!(tail, Some(tok.decode(&ids[..1], false).unwrap()));
}

#[test]
fn special_tokens_in_text_are_single_ids() {
    let tok = TextTokenizer::from_dir(root().join("tests/fixtures/models/tiny-nested")).unwrap();
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    let think = tok.token_to_id("<think>").unwrap();
    let ids = tok.encode("<|im_start|><think>").unwrap();
    assert_eq!(ids, vec![im_start, think]);
}

#[test]
fn errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let e = TextTokenizer::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not found"),
        "{e}"
    );

    std::fs::write(tmp.path().join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let e = TextTokenizer::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("cannot load"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");

    let e = TextTokenizer::from_dir(tmp.path().join("gone"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");

    let tok = TextTokenizer::from_dir(root().join("tests/fixtures/models/tiny-flat")).unwrap();
    let e = tok.decode(&[-1], false).unwrap_err().to_string();
    assert!(e.contains("token id -1 is out of range"), "{e}");
    assert!(tok.decode_stream(true).step(-5).is_err());
    // Ids past the vocabulary (embedding rows the tokenizer lacks) decode to nothing, as in HF.
    assert_eq!(tok.decode(&[100_000], false).unwrap(), "");
    assert_eq!(tok.id_to_token(-3), None);
}
