//! The robustness suite: seeded, property-style mutations of everything rhlens reads (config.json,
//! preprocessor_config.json, safetensors headers and files, bench question files, trace.json,
//! attention.safetensors, points files). Every case must end in success or one clear line, never
//! a panic, a signal or a hang. Most cases call the library in-process (a panic is caught and
//! reported as a finding; an error must be one line); a representative subset runs the binary
//! (exit 0, or exit 1 with exactly one `error:` line; a run past its deadline is a hang).
//!
//! The seed is fixed so a failure replays; each finding names its family and case number.
mod common;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rhlens::bench::load_bench;
use rhlens::bench::points::{read_points, Scale};
use rhlens::formats::trace::Trace;
use rhlens::generate::{GenerateConfig, Generator, Hooks};
use rhlens::model::stage::panic_text;
use rhlens::runtime::Runtime;
use serde_json::{json, Value};
use tch::{Device, Kind};

/// splitmix64: small, seedable, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// How the cases of one family ended.
#[derive(Default)]
struct Tally {
    ok: usize,
    refused: usize,
    findings: Vec<String>,
}

impl Tally {
    /// Record an in-process case: its result, or the panic it raised.
    fn case<T>(&mut self, label: String, run: impl FnOnce() -> anyhow::Result<T>) {
        match panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(_)) => self.ok += 1,
            Ok(Err(e)) => self.refusal(label, &format!("{e:#}")),
            Err(payload) => {
                let text = panic_text(payload.as_ref());
                self.findings.push(format!("{label}: panicked: {text}"));
            }
        }
    }

    /// An error must be one line, and a libtorch failure means a check is missing.
    fn refusal(&mut self, label: String, message: &str) {
        if message.contains('\n') {
            self.findings
                .push(format!("{label}: error over lines: {message}"));
        } else if message.contains("libtorch failed") {
            self.findings
                .push(format!("{label}: reached libtorch: {message}"));
        } else {
            self.refused += 1;
        }
    }

    fn report(&self, family: &str) -> usize {
        let total = self.ok + self.refused + self.findings.len();
        println!(
            "{family}: {total} cases, {} ran, {} refused with one line, {} findings",
            self.ok,
            self.refused,
            self.findings.len()
        );
        total
    }
}

/// Run `family` on a thread and fail if it has not finished in `secs` (an in-process hang).
fn within<T: Send + 'static>(secs: u64, family: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(family());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("a family of cases did not finish in {secs} s: a hang"))
}

/// Print the family's counts and fail on any finding; returns the number of cases.
fn finish(family: &str, tally: &Tally) -> usize {
    let total = tally.report(family);
    assert!(
        tally.findings.is_empty(),
        "{family}:\n{}",
        tally.findings.join("\n")
    );
    total
}

// ---------------------------------------------------------------- JSON mutations

/// Pointers to every value inside `v` (not the root).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| {
                (
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    x,
                )
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("{at}/{i}"), x))
            .collect(),
        _ => return,
    };
    for (p, x) in children {
        out.push(p.clone());
        pointers(x, p, out);
    }
}

/// A hostile replacement for `old`.
fn hostile_value(rng: &mut Rng, old: &Value) -> Value {
    let n = old.as_f64().unwrap_or(1.0);
    let pool = [
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(3),
        json!(16),
        json!(1_000_000_000u64),
        json!(1u64 << 40),
        json!(-1e9),
        json!(0.5),
        json!(1e300),
        json!(n * 2.0),
        json!(n + 1.0),
        json!(n - 1.0),
        json!("nope"),
        json!(""),
        Value::Null,
        json!(true),
        json!([]),
        json!([1, 2, 3]),
        json!({}),
        json!("x".repeat(5000)),
    ];
    rng.pick(&pool).clone()
}

/// `text` (JSON) with one value replaced or removed, or its bytes cut short.
fn mutate_json(rng: &mut Rng, text: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(text) else {
        return text.to_string();
    };
    if rng.below(10) == 0 {
        let cut = rng.below(text.len());
        return text[..text.floor_char_boundary(cut)].to_string();
    }
    let mut all = Vec::new();
    pointers(&v, String::new(), &mut all);
    if all.is_empty() {
        return text.to_string();
    }
    let target = rng.pick(&all).clone();
    let (parent, key) = target.rsplit_once('/').unwrap_or(("", ""));
    let remove = rng.below(4) == 0;
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) if remove => {
            m.remove(&key.replace("~1", "/").replace("~0", "~"));
        }
        _ => {
            if let Some(slot) = v.pointer_mut(&target) {
                *slot = hostile_value(rng, slot);
            }
        }
    }
    v.to_string()
}

// ---------------------------------------------------------------- safetensors mutations

/// `bytes` (a safetensors file) with its header length, a dtype, a shape or offsets changed,
/// header bytes flipped, an entry removed, or the file cut short.
fn mutate_safetensors(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let body = &bytes[8 + n..];
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let name = rng.pick(&names).clone();
    let entry = &mut header[&name];
    match rng.below(7) {
        0 => {
            let lengths = [
                0,
                1,
                n as u64 - 1,
                n as u64 + 1,
                bytes.len() as u64,
                u64::MAX,
            ];
            let mut out = bytes.to_vec();
            out[..8].copy_from_slice(&rng.pick(&lengths).to_le_bytes());
            return out;
        }
        1 => {
            let dtypes = ["F16", "BF16", "F64", "I64", "I8", "BOOL", "U8", "XX"];
            entry["dtype"] = json!(rng.pick(&dtypes));
        }
        2 => {
            let dims = entry["shape"].as_array().map_or(0, Vec::len);
            let shapes = [
                json!([]),
                json!([0]),
                json!([1u64 << 40, 2]),
                json!([-1, 3]),
            ];
            match (dims, rng.below(2)) {
                (d, 0) if d > 0 => entry["shape"][rng.below(d)] = json!(rng.below(100)),
                _ => entry["shape"] = rng.pick(&shapes).clone(),
            }
        }
        3 => {
            let end = body.len() as u64;
            let offsets = [
                json!([0, 0]),
                json!([8, 4]),
                json!([0, end + 1]),
                json!([end, end + 64]),
                json!([-1, 4]),
                json!([1u64 << 62, 1u64 << 63]),
            ];
            entry["data_offsets"] = rng.pick(&offsets).clone();
        }
        4 => {
            header.as_object_mut().unwrap().remove(&name);
        }
        5 => {
            let mut out = bytes.to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = 8 + rng.below(n);
                out[at] = rng.next() as u8;
            }
            return out;
        }
        _ => return bytes[..rng.below(bytes.len())].to_vec(),
    }
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    out.extend(body);
    out
}

// ---------------------------------------------------------------- checkpoints

/// A copy of the tiny checkpoint in a new temporary directory.
fn tiny_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir("tiny-flat")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// A copy of the tiny checkpoint with `file` mutated `rng`'s way.
fn mutated_checkpoint(rng: &mut Rng, file: &str) -> tempfile::TempDir {
    let tmp = tiny_copy();
    let path = tmp.path().join(file);
    let bytes = std::fs::read(&path).unwrap();
    let mutated = match file.ends_with(".safetensors") {
        true => mutate_safetensors(rng, &bytes),
        false => mutate_json(rng, &String::from_utf8(bytes).unwrap()).into_bytes(),
    };
    std::fs::write(&path, mutated).unwrap();
    tmp
}

/// Load the checkpoint in `dir` and generate two tokens on the tiny image.
fn load_and_generate(dir: &Path) -> anyhow::Result<()> {
    let rt = Runtime::load(dir.to_str().unwrap(), Kind::Float, Device::Cpu)?;
    let prompt = rt.prepare(&image_path("wide"), "What is this?", None)?;
    let gen = Generator::new(&rt.model, &rt.tokenizer);
    let cfg = GenerateConfig {
        max_new_tokens: 2,
        ..Default::default()
    };
    let images = [prompt.image.input()];
    gen.run(
        &prompt.input_ids,
        &images,
        &cfg,
        Hooks::default(),
        &mut |_| {},
    )?;
    Ok(())
}

fn checkpoint_family(seed: u64, file: &'static str, cases: usize) -> Tally {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for i in 0..cases {
        let tmp = mutated_checkpoint(&mut rng, file);
        tally.case(format!("{file} case {i}"), || load_and_generate(tmp.path()));
    }
    tally
}

#[test]
fn mutated_checkpoints_load_or_are_refused_in_one_line() {
    let families = [
        (1, "config.json", 90),
        (2, "preprocessor_config.json", 50),
        (3, "generation_config.json", 15),
        (4, "model.safetensors", 60),
    ];
    let mut total = 0;
    for (seed, file, cases) in families {
        let tally = within(300, move || checkpoint_family(seed, file, cases));
        total += finish(file, &tally);
    }
    println!("checkpoints: {total} cases");
}

// ---------------------------------------------------------------- read-back files

const BENCH: &str = r#"{"id": "a", "split": "perception", "question": "Is it red?", "image": "x.png", "answer": "yes", "question_type": "free_form"}
{"id": "b", "split": "reasoning", "question": "How many?", "image": "x.png", "answer": "B", "question_type": "multi_choice", "options": {"A": "one", "B": "two"}}
{"id": "c", "split": "reasoning", "question": "Which? Choices: (A) x (B) y", "image": "x.png", "answer": "A", "question_type": "multi_choice"}
"#;

/// A bench file with one line mutated, or cut short.
fn mutated_bench(rng: &mut Rng) -> String {
    let mut lines: Vec<String> = BENCH.lines().map(String::from).collect();
    let at = rng.below(lines.len());
    lines[at] = mutate_json(rng, &lines[at]);
    if rng.below(5) == 0 {
        lines.push(
            rng.pick(&["{", "[]", "null", "\u{0}", "{\"id\": 1}"])
                .to_string(),
        );
    }
    lines.join("\n")
}

const POINTS_CSV: &str = "model,setting,reasoning,perception\nm,budget=0,0.40,0.80\nm,budget=100,0.50,0.75\nm,budget=200,0.55,0.70\nm,budget=400,0.60,0.62\n";

/// A points file (CSV or JSON) with a cell, a column or its end changed.
fn mutated_points(rng: &mut Rng) -> (String, &'static str) {
    let cells = [
        "", "nan", "NaN", "inf", "-inf", "-1", "1e400", "150", "abc", "0.5,0.5", "\"", "1",
    ];
    let mut rows: Vec<Vec<String>> = POINTS_CSV
        .lines()
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    match rng.below(4) {
        0 => {
            let r = rng.below(rows.len());
            let c = rng.below(rows[r].len());
            rows[r][c] = rng.pick(&cells).to_string();
        }
        1 => {
            let c = rng.below(4);
            rows.iter_mut().for_each(|r| {
                r.remove(c);
            });
        }
        2 => rows.truncate(rng.below(rows.len() + 1)),
        _ => {
            // the same points as JSON, then one value mutated
            let items: Vec<Value> = rows[1..]
                .iter()
                .map(|r| {
                    json!({"model": r[0], "setting": r[1], "reasoning": r[2].parse::<f64>().ok(),
                    "perception": r[3].parse::<f64>().ok()})
                })
                .collect();
            return (mutate_json(rng, &Value::from(items).to_string()), "json");
        }
    }
    let text: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
    (text.join("\n"), "csv")
}

fn py_trace() -> PathBuf {
    fixtures().join("render").join("py_trace")
}

/// A copy of the reference trace with trace.json or attention.safetensors mutated.
fn mutated_trace(rng: &mut Rng) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["trace.json", "attention.safetensors"] {
        std::fs::copy(py_trace().join(name), tmp.path().join(name)).unwrap();
    }
    let (name, bytes) = match rng.below(2) {
        0 => {
            let text = std::fs::read_to_string(tmp.path().join("trace.json")).unwrap();
            ("trace.json", mutate_json(rng, &text).into_bytes())
        }
        _ => {
            let bytes = std::fs::read(tmp.path().join("attention.safetensors")).unwrap();
            ("attention.safetensors", mutate_safetensors(rng, &bytes))
        }
    };
    std::fs::write(tmp.path().join(name), bytes).unwrap();
    tmp
}

fn read_back_families() -> Vec<(&'static str, Tally)> {
    let mut rng = Rng(5);
    let mut bench = Tally::default();
    for i in 0..50 {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("x.png"), "x").unwrap();
        let path = tmp.path().join("bench.jsonl");
        std::fs::write(&path, mutated_bench(&mut rng)).unwrap();
        bench.case(format!("bench case {i}"), || Ok(load_bench(&path)?));
    }
    let mut points = Tally::default();
    for i in 0..60 {
        let tmp = tempfile::tempdir().unwrap();
        let (text, ext) = mutated_points(&mut rng);
        let path = tmp.path().join(format!("points.{ext}"));
        std::fs::write(&path, text).unwrap();
        points.case(format!("points case {i}"), || {
            let p = read_points(&path, Scale::Auto)?;
            let per_model = p.rhauc_per_model();
            Ok(p.model_rows(&per_model).len())
        });
    }
    let mut traces = Tally::default();
    for i in 0..60 {
        let tmp = mutated_trace(&mut rng);
        traces.case(format!("trace case {i}"), || Ok(Trace::read(tmp.path())?));
    }
    vec![
        ("bench files", bench),
        ("points files", points),
        ("traces", traces),
    ]
}

#[test]
fn mutated_read_back_files_load_or_are_refused_in_one_line() {
    for (family, tally) in within(120, read_back_families) {
        finish(family, &tally);
    }
}

// ---------------------------------------------------------------- the binary

/// Run rhlens: exit 0, or exit 1 with exactly one `error:` line (notes, warnings and the
/// generation summary aside); a signal, a panic's status 101 or a run past its deadline is a
/// finding.
fn binary_case(label: &str, args: &[String]) -> Result<bool, String> {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{label}: cannot run: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("{label}: hung"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note:") && !l.starts_with('['))
        .filter(|l| !l.starts_with("warning:"))
        .collect();
    match out.status.code() {
        Some(0) if said.iter().all(|l| !l.contains("error")) => Ok(true),
        Some(1) if said.len() == 1 && said[0].starts_with("error: ") => {
            let line = said[0];
            match line.contains("libtorch failed") || line.contains("internal error") {
                true => Err(format!("{label}: {line}")),
                false => Ok(false),
            }
        }
        code => Err(format!("{label}: exit {code:?}, stderr: {stderr}")),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_binary_ends_cleanly_on_a_sample_of_mutations() {
    let mut rng = Rng(7);
    let image = image_path("wide").to_string_lossy().into_owned();
    let (mut ok, mut refused, mut findings) = (0, 0, Vec::new());
    let mut tally = |label: String, outcome: Result<bool, String>| match outcome {
        Ok(true) => ok += 1,
        Ok(false) => refused += 1,
        Err(f) => findings.push(format!("{label}: {f}")),
    };
    let files = [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
    ];
    for i in 0..12 {
        let file = files[i % files.len()];
        let tmp = mutated_checkpoint(&mut rng, file);
        let mut args = strings(&["generate", "--device", "cpu", "--max-new-tokens", "2"]);
        args.extend(strings(&["--prompt", "What is this?", "--image", &image]));
        args.extend(["--model".to_string(), tmp.path().to_string_lossy().into()]);
        let label = format!("generate, {file} case {i}");
        tally(label.clone(), binary_case(&label, &args));
    }
    for i in 0..5 {
        let tmp = mutated_trace(&mut rng);
        let dir = tmp.path().to_string_lossy().into_owned();
        let out = format!("{dir}/figs");
        let args = strings(&["figures", "--trace", &dir, "--out", &out]);
        let label = format!("figures case {i}");
        tally(label.clone(), binary_case(&label, &args));
    }
    for i in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let (text, ext) = mutated_points(&mut rng);
        let path = tmp.path().join(format!("points.{ext}"));
        std::fs::write(&path, text).unwrap();
        let args = strings(&["rhauc", "--points", &path.to_string_lossy()]);
        let label = format!("rhauc case {i}");
        tally(label.clone(), binary_case(&label, &args));
    }
    println!(
        "binary: {} cases, {ok} ran, {refused} refused with one line, {} findings",
        ok + refused + findings.len(),
        findings.len()
    );
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}
