//! The LLM judge against a stub OpenAI-compatible server on 127.0.0.1 (std::net only).
//!
//! The stub judges by markers in the model's answer, so the tests also check that the answer
//! reaches the prompt: `RIGHT` -> `is_correct: true`, `SCORE=n` -> `hallucination_score: n`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rhlens::bench::data::{QuestionType, Split};
use rhlens::bench::judge::{endpoint_url, parse_judge_reply, Judge, JudgeConfig, JudgeTask};
use rhlens::bench::results::{ResultRecord, ResultsWriter};
use rhlens::bench::score::{score_run, ScoreOptions};
use rhlens::bench::scores::read_scores;
use serde_json::{json, Value};

#[derive(Clone, Copy)]
enum Mode {
    /// Answer from the markers; the first `fail_first` requests get HTTP 500.
    Judge { fail_first: usize },
    /// Always this status.
    Status(u16),
    /// Reply with text that holds no verdict.
    Garbage,
    /// Read the request, then never answer (until the client gives up).
    Hang,
}

struct Stub {
    url: String,
    requests: Arc<AtomicUsize>,
    /// (headers, body) of every request.
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

fn start_stub(mode: Mode) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (r2, s2) = (requests.clone(), seen.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (r3, s3) = (r2.clone(), s2.clone());
            std::thread::spawn(move || serve(stream, mode, &r3, &s3));
        }
    });
    Stub {
        url,
        requests,
        seen,
    }
}

fn serve(
    stream: TcpStream,
    mode: Mode,
    requests: &AtomicUsize,
    seen: &Mutex<Vec<(String, String)>>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    // One request per connection: the reply says `Connection: close`.
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        headers.push_str(&line);
    }
    let len = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let n = requests.fetch_add(1, Ordering::SeqCst);
    seen.lock().expect("lock").push((headers, body.clone()));
    let (status, content) = match mode {
        Mode::Hang => {
            std::thread::sleep(Duration::from_millis(1500));
            return;
        }
        Mode::Status(code) => (code, "{\"error\": \"nope\"}".to_string()),
        Mode::Judge { fail_first } if n < fail_first => (500, "{\"error\": \"busy\"}".to_string()),
        Mode::Judge { .. } => (200, chat_reply(&verdict_for(&body))),
        Mode::Garbage => (200, chat_reply("I would rather not say.")),
    };
    let reason = if status == 200 { "OK" } else { "Error" };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{content}",
        content.len()
    );
    let _ = writer.write_all(resp.as_bytes());
    let _ = writer.flush();
}

fn chat_reply(content: &str) -> String {
    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        .to_string()
}

/// The stub's verdict from the markers in the user prompt, wrapped in prose and a code fence
/// the way chat models often answer.
fn verdict_for(body: &str) -> String {
    let v: Value = serde_json::from_str(body).expect("request is JSON");
    let user = v["messages"][1]["content"].as_str().expect("user prompt");
    let answer = user
        .split("Model's answer:")
        .nth(1)
        .expect("prompt shows the model's answer");
    if user.contains("hallucination_score") {
        let score: u32 = answer
            .split("SCORE=")
            .nth(1)
            .and_then(|r| r[..1].parse().ok())
            .expect("score marker");
        format!("Here is my rating.\n```json\n{{\"hallucination_score\": {score}, \"reason\": \"stub\"}}\n```")
    } else {
        let ok = answer.contains("RIGHT");
        format!("{{\"is_correct\": {ok}, \"reason\": \"stub\"}}")
    }
}

fn rec(id: &str, split: Split, qtype: QuestionType, answer: &str) -> ResultRecord {
    ResultRecord {
        sample_id: id.into(),
        split,
        setting: "budget=0".into(),
        setting_value: 0.0,
        sample_index: 0,
        model: "m".into(),
        question: format!("question {id}"),
        prompt: String::new(),
        image: String::new(),
        system: None,
        question_type: qtype,
        gold: "B".into(),
        options: vec![("A".into(), "x".into()), ("B".into(), "y".into())],
        answer_text: answer.into(),
        thinking_text: String::new(),
        think_tokens: 5,
        answer_tokens: 2,
        stop_reason: "eos".into(),
        extracted: None,
        seed: 0,
        role_summary: None,
        elapsed_s: 0.0,
    }
}

fn write_run(dir: &Path) {
    let mut w = ResultsWriter::open(dir).expect("open");
    let rs = [
        rec(
            "r1",
            Split::Reasoning,
            QuestionType::FreeForm,
            "<answer>RIGHT 5</answer>",
        ),
        rec(
            "r2",
            Split::Reasoning,
            QuestionType::MultiChoice,
            "<answer>WRONG A</answer>",
        ),
        rec(
            "p1",
            Split::Perception,
            QuestionType::FreeForm,
            "<answer>two squares SCORE=4</answer>",
        ),
        rec(
            "p2",
            Split::Perception,
            QuestionType::FreeForm,
            "<answer>a cat SCORE=2</answer>",
        ),
        rec(
            "p3",
            Split::Perception,
            QuestionType::FreeForm,
            "<answer>SCORE=3</answer>",
        ),
        rec(
            "p4",
            Split::Perception,
            QuestionType::MultiChoice,
            "<answer>RIGHT B</answer>",
        ),
        rec("p5", Split::Perception, QuestionType::MultiChoice, "   "),
    ];
    for r in &rs {
        w.append(r).expect("append");
    }
}

fn judge_opts(url: &str, retries: u32) -> ScoreOptions {
    let mut cfg = JudgeConfig::new(url, "stub-judge");
    cfg.api_key = Some("sekret".into());
    cfg.backoff = Duration::from_millis(10);
    cfg.max_retries = retries;
    cfg.timeout = Duration::from_secs(10);
    ScoreOptions {
        judge: Some(cfg),
        bootstrap: 0,
        seed: 0,
        progress: false,
    }
}

#[test]
fn judge_scores_caches_and_retries_after_500() {
    let stub = start_stub(Mode::Judge { fail_first: 1 });
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path());

    let s = score_run(dir.path(), &judge_opts(&stub.url, 3)).expect("score with judge");
    // Six answers judged over HTTP (the empty one needs no request) plus one retried 500.
    assert_eq!(s.judge_http, 6);
    assert_eq!(s.judge_cached, 0);
    assert_eq!(stub.requests.load(Ordering::SeqCst), 7);

    let scores = read_scores(&dir.path().join("scores.jsonl")).expect("scores");
    let by_id = |id: &str| scores.iter().find(|s| s.sample_id == id).expect("score");
    let expect = [
        ("r1", true),
        ("r2", false),
        ("p1", true),
        ("p2", false),
        ("p3", true),
        ("p4", true),
        ("p5", false),
    ];
    for (id, ok) in expect {
        assert_eq!(by_id(id).correct, ok, "{id}");
        assert_eq!(by_id(id).scorer, "judge:stub-judge");
    }
    assert_eq!(by_id("p1").hallucination_score, Some(4.0));
    assert_eq!(by_id("p3").hallucination_score, Some(3.0));
    assert_eq!(by_id("r1").hallucination_score, None);
    // Metrics rows carry the scorer: reasoning 1/2, perception 3/5.
    let row = &s.metrics[0];
    assert_eq!(row.scorer, "judge:stub-judge");
    assert_eq!(row.reasoning, Some(0.5));
    assert_eq!(row.perception, Some(0.6));

    // Requests: temperature 0, the model name, the key, system + user messages.
    {
        let seen = stub.seen.lock().expect("lock");
        let (headers, body) = &seen[0];
        assert!(
            headers.starts_with("POST /v1/chat/completions "),
            "{headers}"
        );
        assert!(headers
            .lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer sekret")));
        let v: Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["model"], "stub-judge");
        assert_eq!(v["temperature"], 0);
        assert_eq!(v["messages"][0]["role"], "system");
        let users: Vec<String> = seen
            .iter()
            .map(|(_, b)| {
                let v: Value = serde_json::from_str(b).expect("json");
                v["messages"][1]["content"]
                    .as_str()
                    .expect("user")
                    .to_string()
            })
            .collect();
        // The MC prompt lists the options; the free-form perception prompt asks for a score.
        assert!(users
            .iter()
            .any(|u| u.contains("question r2") && u.contains("A. x\nB. y")));
        assert!(users
            .iter()
            .any(|u| u.contains("question p1") && u.contains("hallucination_score")));
    }

    // Second run: everything from the cache, no HTTP at all.
    let before = stub.requests.load(Ordering::SeqCst);
    let s2 = score_run(dir.path(), &judge_opts(&stub.url, 3)).expect("rescore");
    assert_eq!(stub.requests.load(Ordering::SeqCst), before);
    assert_eq!((s2.judge_http, s2.judge_cached), (0, 6));
    let scores2 = read_scores(&dir.path().join("scores.jsonl")).expect("scores");
    assert_eq!(scores, scores2);
    // The cache survives a torn last line.
    let cache = dir.path().join("judge_cache.jsonl");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&cache)
        .expect("open")
        .write_all(b"{\"key\": \"abc")
        .expect("write");
    let s3 = score_run(dir.path(), &judge_opts(&stub.url, 3)).expect("rescore after tear");
    assert_eq!((s3.judge_http, s3.judge_cached), (0, 6));
}

#[test]
fn judge_gives_up_after_retries_and_on_client_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path());
    let stub = start_stub(Mode::Status(503));
    let err = score_run(dir.path(), &judge_opts(&stub.url, 2)).expect_err("always 503");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("failed after 3 attempts") && msg.contains("HTTP 503"),
        "{msg}"
    );
    assert_eq!(stub.requests.load(Ordering::SeqCst), 3);

    let stub = start_stub(Mode::Status(401));
    let err = score_run(dir.path(), &judge_opts(&stub.url, 5)).expect_err("401");
    assert!(format!("{err:#}").contains("HTTP 401"));
    assert_eq!(
        stub.requests.load(Ordering::SeqCst),
        1,
        "client errors are not retried"
    );
}

#[test]
fn judge_retries_timeouts() {
    let stub = start_stub(Mode::Hang);
    let mut cfg = JudgeConfig::new(format!("{}/v1", stub.url), "stub-judge");
    cfg.timeout = Duration::from_millis(200);
    cfg.max_retries = 1;
    cfg.backoff = Duration::from_millis(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Judge::new(cfg, &dir.path().join("cache.jsonl")).expect("judge");
    let r = rec(
        "r1",
        Split::Reasoning,
        QuestionType::FreeForm,
        "<answer>RIGHT</answer>",
    );
    let err = j.judge(&r).expect_err("times out");
    assert!(err.to_string().contains("failed after 2 attempts"), "{err}");
    assert_eq!(j.http_requests(), 2);
}

#[test]
fn unparseable_replies_fall_back_to_rules_and_are_not_cached() {
    let stub = start_stub(Mode::Garbage);
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path());
    let s = score_run(dir.path(), &judge_opts(&stub.url, 0)).expect("score");
    assert_eq!(s.judge_fallbacks, 6);
    let scores = read_scores(&dir.path().join("scores.jsonl")).expect("scores");
    // Rule-based: "RIGHT B" names no option cleanly (no lone letter, "(B)" or option text).
    let p4 = scores.iter().find(|s| s.sample_id == "p4").expect("p4");
    assert_eq!(p4.scorer, "rule");
    assert!(!p4.correct);
    assert!(
        p4.details.starts_with("judge reply unparseable"),
        "{}",
        p4.details
    );
    assert!(s.metrics[0].scorer.contains("rule"));
    let n = stub.requests.load(Ordering::SeqCst);
    score_run(dir.path(), &judge_opts(&stub.url, 0)).expect("again");
    assert_eq!(
        stub.requests.load(Ordering::SeqCst),
        2 * n,
        "garbage is asked again"
    );
}

#[test]
fn reply_parsing_is_lenient() {
    let c = JudgeTask::Correctness;
    let h = JudgeTask::Hallucination;
    let ok = |s: &str, t| parse_judge_reply(s, t).map(|r| (r.correct, r.hallucination_score));
    assert_eq!(
        ok("{\"is_correct\": true, \"reason\": \"x\"}", c),
        Some((true, None))
    );
    assert_eq!(
        ok("```json\n{\"is_correct\": false}\n```", c),
        Some((false, None))
    );
    assert_eq!(
        ok("Verdict: {\"is_correct\": \"True\"} done", c),
        Some((true, None))
    );
    assert_eq!(
        ok("{\"is_correct\": true, \"reason\": \"unterminated", c),
        Some((true, None))
    );
    assert_eq!(
        ok("{\"hallucination_score\": \"4\"}", h),
        Some((true, Some(4.0)))
    );
    assert_eq!(
        ok("{\"hallucination_score\": 2}", h),
        Some((false, Some(2.0)))
    );
    assert_eq!(
        ok("\"hallucination_score\": 3,", h),
        Some((true, Some(3.0)))
    );
    assert_eq!(ok("{\"hallucination_score\": 7}", h), None);
    assert_eq!(ok("no verdict", c), None);
    assert_eq!(ok("{\"is_correct\": true}", h), None);
    let r =
        parse_judge_reply("{\"is_correct\": false, \"reason\": \"wrong count\"}", c).expect("r");
    assert_eq!(r.reason.as_deref(), Some("wrong count"));
}

#[test]
fn endpoint_urls() {
    assert_eq!(
        endpoint_url("http://h:8000"),
        "http://h:8000/v1/chat/completions"
    );
    assert_eq!(
        endpoint_url("http://h:8000/"),
        "http://h:8000/v1/chat/completions"
    );
    assert_eq!(endpoint_url("http://h/v1"), "http://h/v1/chat/completions");
    assert_eq!(
        endpoint_url("https://x/openai/v1/chat/completions"),
        "https://x/openai/v1/chat/completions"
    );
}
