//! Results store, torn-line repair, the resumable runner, sharding, manifests and merging.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use rhlens::bench::data::{load_bench, Sample};
use rhlens::bench::merge::merge_runs;
use rhlens::bench::results::{
    read_results, Manifest, RecordKey, ResultRecord, ResultsWriter, Setting, TailRepair,
};
use rhlens::bench::runner::{run_resumable, work_items, RunOptions};
use rhlens::bench::shard::Shard;
use serde_json::json;

fn samples() -> Vec<Sample> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench");
    load_bench(&path).expect("demo bench").samples
}

fn settings() -> Vec<Setting> {
    vec![
        Setting::new("budget=0", 0.0),
        Setting::new("budget=50", 50.0),
        Setting::new("budget=100", 100.0),
    ]
}

/// A fake model: deterministic text from the item.
fn fake(sample: &Sample, setting: &Setting, k: u32) -> ResultRecord {
    let mut r = ResultRecord::for_item(sample, setting, k, "fake-model");
    r.answer_text = format!("<answer>{}</answer>", sample.answer);
    r.thinking_text = "hmm ".repeat(setting.value as usize / 10);
    r.think_tokens = setting.value as u64;
    r.answer_tokens = 3;
    r.stop_reason = "eos".into();
    r.seed = 1000 + k as u64;
    r.role_summary = Some(json!({"visual": 0.25, "instruction": 0.5}));
    r.elapsed_s = 0.01;
    r
}

fn quiet(shard: Option<Shard>, per_setting: u32) -> RunOptions {
    RunOptions {
        shard,
        samples_per_setting: per_setting,
        keep_going: false,
    }
}

fn keys_in(dir: &Path) -> Vec<RecordKey> {
    let (recs, problems) = read_results(&dir.join("results.jsonl")).expect("read");
    assert!(problems.is_empty(), "{problems:?}");
    recs.iter().map(|r| r.key()).collect()
}

#[test]
fn record_round_trips_and_key_identity() {
    let s = samples();
    let r = fake(&s[3], &settings()[1], 1);
    let line = serde_json::to_string(&r).expect("ser");
    let back: ResultRecord = serde_json::from_str(&line).expect("de");
    assert_eq!(back, r);
    assert_eq!(r.key(), RecordKey::new(&s[3], &settings()[1], 1));
    assert_eq!(r.question_type, s[3].qtype);
    assert_eq!(r.gold, s[3].answer);
    // Older lines without the optional fields still parse.
    let minimal = r#"{"sample_id":"1","split":"reasoning","setting":"b","setting_value":1,"model":"m","question_type":"free_from","gold":"3","answer_text":"3"}"#;
    let m: ResultRecord = serde_json::from_str(minimal).expect("minimal");
    assert_eq!(m.sample_index, 0);
    assert!(m.options.is_empty());
}

#[test]
fn torn_last_line_is_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = samples();
    let set = settings();
    {
        let mut w = ResultsWriter::open(dir.path()).expect("open");
        for sample in &s[..3] {
            w.append(&fake(sample, &set[0], 0)).expect("append");
        }
    }
    let path = dir.path().join("results.jsonl");
    let good_len = std::fs::metadata(&path).expect("meta").len();
    // Simulate kill -9 in the middle of writing a fourth line.
    let line = serde_json::to_string(&fake(&s[3], &set[0], 0)).expect("ser");
    let half = &line[..line.len() / 2];
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open")
        .write_all(half.as_bytes())
        .expect("write");

    let (recs, problems) = read_results(&path).expect("tolerant read");
    assert_eq!(recs.len(), 3);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].torn);
    assert_eq!(problems[0].line, 4);

    let w = ResultsWriter::open(dir.path()).expect("reopen");
    assert_eq!(w.repair(), TailRepair::Truncated(half.len() as u64));
    assert_eq!(w.done().len(), 3);
    assert!(w.problems().is_empty());
    drop(w);
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), good_len);

    // A complete last record that only lacks its newline is kept.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open")
        .write_all(line.as_bytes())
        .expect("write");
    let mut w = ResultsWriter::open(dir.path()).expect("reopen");
    assert_eq!(w.repair(), TailRepair::NewlineAdded);
    assert_eq!(w.done().len(), 4);
    w.append(&fake(&s[4], &set[0], 0)).expect("append");
    drop(w);
    assert_eq!(keys_in(dir.path()).len(), 5);
}

#[test]
fn resumable_runner_completes_each_item_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = samples();
    let set = settings();
    let total = s.len() * set.len() * 2;
    let mut calls: HashMap<RecordKey, usize> = HashMap::new();

    // First attempt dies after 20 answers.
    {
        let mut w = ResultsWriter::open(dir.path()).expect("open");
        let mut n = 0;
        let err = run_resumable(&mut w, &s, &set, &quiet(None, 2), |sample, setting, k| {
            if n == 20 {
                return Err(anyhow!("out of memory"));
            }
            n += 1;
            *calls.entry(RecordKey::new(sample, setting, k)).or_default() += 1;
            Ok(fake(sample, setting, k))
        })
        .expect_err("stops at the failure");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("out of memory") && msg.contains("20 results saved"),
            "{msg}"
        );
    }
    // Then a kill -9 tears the last line.
    let path = dir.path().join("results.jsonl");
    let len = std::fs::metadata(&path).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(len - 7)
        .expect("truncate");
    let lost = keys_in_tolerant(&path).1;
    assert_eq!(lost, 1);

    // Resume: exactly the missing work runs, once.
    let mut w = ResultsWriter::open(dir.path()).expect("reopen");
    assert_eq!(w.done().len(), 19);
    let summary = run_resumable(&mut w, &s, &set, &quiet(None, 2), |sample, setting, k| {
        *calls.entry(RecordKey::new(sample, setting, k)).or_default() += 1;
        Ok(fake(sample, setting, k))
    })
    .expect("completes");
    assert_eq!(summary.items, total);
    assert_eq!(summary.already_done, 19);
    assert_eq!(summary.completed, total - 19);
    assert!(summary.failed.is_empty());
    drop(w);

    let keys = keys_in(dir.path());
    assert_eq!(keys.len(), total);
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), total);
    // Every item answered once, except the torn one, answered twice (its write was lost).
    assert_eq!(calls.len(), total);
    assert_eq!(calls.values().filter(|&&c| c == 2).count(), 1);
    assert!(calls.values().all(|&c| c == 1 || c == 2));

    // A third run has nothing to do.
    let mut w = ResultsWriter::open(dir.path()).expect("reopen");
    let summary = run_resumable(&mut w, &s, &set, &quiet(None, 2), |_, _, _| {
        panic!("nothing should run")
    })
    .expect("no-op");
    assert_eq!((summary.completed, summary.already_done), (0, total));
}

fn keys_in_tolerant(path: &Path) -> (usize, usize) {
    let (recs, problems) = read_results(path).expect("read");
    (recs.len(), problems.len())
}

#[test]
fn keep_going_records_failures_and_a_rerun_retries_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = samples();
    let set = settings();
    let mut opts = quiet(None, 1);
    opts.keep_going = true;
    let bad = |sample: &Sample| sample.id == "2";
    let mut w = ResultsWriter::open(dir.path()).expect("open");
    let summary = run_resumable(&mut w, &s, &set, &opts, |sample, setting, k| {
        if bad(sample) {
            Err(anyhow!("generation failed"))
        } else {
            Ok(fake(sample, setting, k))
        }
    })
    .expect("keeps going");
    let n_bad = s.iter().filter(|x| bad(x)).count() * set.len();
    assert_eq!(summary.failed.len(), n_bad);
    assert_eq!(summary.completed, s.len() * set.len() - n_bad);
    let mut retried = 0;
    let summary = run_resumable(&mut w, &s, &set, &opts, |sample, setting, k| {
        retried += 1;
        assert!(bad(sample));
        Ok(fake(sample, setting, k))
    })
    .expect("retry");
    assert_eq!(retried, n_bad);
    assert!(summary.failed.is_empty());
}

#[test]
fn wrong_record_from_answer_function_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = samples();
    let set = settings();
    let mut w = ResultsWriter::open(dir.path()).expect("open");
    let err = run_resumable(&mut w, &s, &set, &quiet(None, 1), |sample, _, k| {
        Ok(fake(sample, &Setting::new("other", 1.0), k))
    })
    .expect_err("mismatch");
    assert!(err.to_string().contains("returned a record for"));
    assert!(w.done().is_empty());
}

#[test]
fn shards_partition_the_work_and_merge_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let s = samples();
    let set = settings();
    let n = 3;
    let all: Vec<RecordKey> = work_items(&s, &set, 2).iter().map(|w| w.key()).collect();
    let mut dirs = Vec::new();
    let mut seen: HashSet<RecordKey> = HashSet::new();
    for i in 0..n {
        let shard = Shard::new(i, n).expect("shard");
        let dir = root.path().join(shard.dir_name());
        Manifest::new(
            Path::new("tests/fixtures/bench"),
            "fake-model",
            &set,
            2,
            &s,
            Some(shard),
            json!({"t": 0.0}),
        )
        .write_or_check(&dir)
        .expect("manifest");
        let mut w = ResultsWriter::open(&dir).expect("open");
        let sum = run_resumable(&mut w, &s, &set, &quiet(Some(shard), 2), |a, b, k| {
            Ok(fake(a, b, k))
        })
        .expect("shard run");
        assert_eq!(sum.items, all.len() / n);
        for k in keys_in(&dir) {
            assert!(seen.insert(k), "a key ran in two shards");
        }
        dirs.push(dir);
    }
    assert_eq!(seen, all.iter().cloned().collect::<HashSet<_>>());

    // Merge all shards: complete, nothing duplicated.
    let out = root.path().join("merged");
    let rep = merge_runs(&out, &dirs).expect("merge");
    assert_eq!(rep.written, all.len());
    assert!(rep.is_complete() && rep.duplicates.is_empty() && rep.unexpected.is_empty());
    assert_eq!(keys_in(&out).len(), all.len());
    let m = Manifest::read(&out).expect("read").expect("manifest");
    assert_eq!(m.shard, None);
    assert_eq!(m.expected_keys(), all);
    // Merging again into the same directory is refused.
    assert!(merge_runs(&out, &dirs).is_err());

    // Missing shard 2 and shard 0 given twice: missing and duplicated keys are reported.
    let out2 = root.path().join("partial");
    let rep =
        merge_runs(&out2, &[dirs[0].clone(), dirs[1].clone(), dirs[0].clone()]).expect("merge");
    let shard2: HashSet<RecordKey> = keys_in(&dirs[2]).into_iter().collect();
    assert_eq!(rep.missing.iter().cloned().collect::<HashSet<_>>(), shard2);
    assert_eq!(rep.duplicates.len(), all.len() / n);
    assert!(!rep.is_complete());

    // A shard of a different run is refused.
    let other = root.path().join("other");
    Manifest::new(
        Path::new("x"),
        "another-model",
        &set,
        2,
        &s,
        None,
        json!(null),
    )
    .write(&other)
    .expect("manifest");
    ResultsWriter::open(&other).expect("results file");
    let err = merge_runs(&root.path().join("m3"), &[dirs[0].clone(), other]).expect_err("mismatch");
    assert!(err.to_string().contains("differs in model"), "{err}");
}

#[test]
fn manifest_guards_resumes_with_other_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = samples();
    let set = settings();
    let m = Manifest::new(
        Path::new("b"),
        "m",
        &set,
        1,
        &s,
        None,
        json!({"temperature": 0.7}),
    );
    m.write_or_check(dir.path()).expect("first");
    m.write_or_check(dir.path()).expect("same again");
    let other = Manifest::new(
        Path::new("b"),
        "m",
        &set[..2],
        1,
        &s,
        None,
        json!({"temperature": 0.7}),
    );
    let err = other
        .write_or_check(dir.path())
        .expect_err("different settings");
    assert!(err.to_string().contains("different settings"), "{err}");
    let other = Manifest::new(
        Path::new("b"),
        "m",
        &set,
        1,
        &s,
        None,
        json!({"temperature": 1.0}),
    );
    assert!(other.write_or_check(dir.path()).is_err());
}

#[test]
fn shard_specs_and_slurm_environment() {
    assert_eq!(
        "1/4".parse::<Shard>().expect("ok"),
        Shard { index: 1, count: 4 }
    );
    assert_eq!(
        " 0 / 1 ".parse::<Shard>().expect("ok"),
        Shard { index: 0, count: 1 }
    );
    for bad in ["4/4", "1/0", "a/2", "3", "-1/2", ""] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    let s = Shard::new(2, 5).expect("ok");
    let owned: Vec<usize> = (0..12).filter(|&i| s.owns(i)).collect();
    assert_eq!(owned, vec![2, 7]);

    // The only test in this binary that touches these variables.
    std::env::remove_var("SLURM_ARRAY_TASK_MIN");
    std::env::remove_var("SLURM_ARRAY_TASK_ID");
    std::env::remove_var("SLURM_ARRAY_TASK_COUNT");
    assert_eq!(Shard::resolve(None).expect("none"), None);
    std::env::set_var("SLURM_ARRAY_TASK_ID", "3");
    std::env::set_var("SLURM_ARRAY_TASK_COUNT", "4");
    assert_eq!(
        Shard::resolve(None).expect("env"),
        Some(Shard { index: 3, count: 4 })
    );
    // A 1-based array (--array=1-4).
    std::env::set_var("SLURM_ARRAY_TASK_MIN", "1");
    assert_eq!(
        Shard::resolve(None).expect("env"),
        Some(Shard { index: 2, count: 4 })
    );
    // The command-line flag wins.
    let cli = Some(Shard::new(0, 2).expect("ok"));
    assert_eq!(Shard::resolve(cli).expect("cli"), cli);
    std::env::set_var("SLURM_ARRAY_TASK_ID", "x");
    assert!(Shard::resolve(None).is_err());
    std::env::remove_var("SLURM_ARRAY_TASK_MIN");
    std::env::remove_var("SLURM_ARRAY_TASK_ID");
    std::env::remove_var("SLURM_ARRAY_TASK_COUNT");
}
