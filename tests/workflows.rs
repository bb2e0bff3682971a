//! Research workflows end to end on the tiny checkpoints: a base model's output counted as the
//! answer, model names (never paths) in results and legends, traces whose image is found from
//! another working directory, `direction` reading what `eval`, `sweep` and `generate --json`
//! wrote, and one meaning per flag name across commands.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;
use common::*;
use rhlens::formats::trace::{Trace, TraceMeta};
use rhlens::formats::Role;

fn run_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output().unwrap()
}

fn ok_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let out = run_in(dir, args);
    assert!(
        out.status.success(),
        "rhlens {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(args: &[&str]) -> Output {
    ok_in(None, args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `generate --json` on tiny-flat (whose template and tokenizer never name `</think>`).
fn generate_json(extra: &[&str]) -> (serde_json::Value, String) {
    let model = model_dir("tiny-flat");
    let img = image_path("wide");
    let mut args = vec![
        "generate",
        "--model",
        s(&model),
        "--image",
        s(&img),
        "--prompt",
        "What is shown?",
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
        "--json",
    ];
    args.extend(extra);
    let out = ok(&args);
    let v = serde_json::from_slice(&out.stdout).unwrap();
    (v, stderr(&out))
}

#[test]
fn a_base_model_output_counts_as_answer_and_generate_json_records_its_input() {
    let (v, err) = generate_json(&[]);
    let n = v["generated_ids"].as_array().unwrap().len() as u64;
    assert_eq!(v["think_tokens"], 0, "{v}");
    assert_eq!(v["answer_tokens"].as_u64(), Some(n));
    assert_eq!(v["thinking"], "");
    assert_eq!(v["answer"].as_str(), v["text"].as_str().map(str::trim));
    assert!(err.contains("warning:") && err.contains("--think"), "{err}");
    // the input travels with the output
    assert_eq!(v["prompt"], "What is shown?");
    assert_eq!(v["image"].as_str(), Some(s(&image_path("wide"))));
    assert_eq!(v["model"], "tiny-flat");
    assert_eq!(v["settings"]["max_new_tokens"], 6);
    assert_eq!(v["settings"]["no_think"], true);
    // --think: the same text is thinking that never ended; --no-think: answer, without warning
    let (v, _) = generate_json(&["--think"]);
    assert_eq!(
        (v["think_tokens"].as_u64(), v["answer_tokens"].as_u64()),
        (Some(n), Some(0))
    );
    let (v, err) = generate_json(&["--no-think"]);
    assert_eq!(v["answer_tokens"].as_u64(), Some(n));
    assert!(!err.contains("warning:"), "{err}");
    // length control needs thinking: refused before any work
    let out = run_in(
        None,
        &[
            "generate",
            "--no-think",
            "--think-budget",
            "2",
            "--prompt",
            "x",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--think-budget"), "{}", stderr(&out));
}

#[test]
fn a_base_model_trace_gives_its_generated_tokens_the_answer_role() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t");
    ok(&[
        "trace",
        "--model",
        s(&model_dir("tiny-flat")),
        "--image",
        s(&image_path("wide")),
        "--prompt",
        "What is shown?",
        "--max-new-tokens",
        "5",
        "--device",
        "cpu",
        "--no-think",
        "--name",
        "base",
        "--quiet",
        "--out",
        s(&out),
    ]);
    let t = Trace::read(&out).unwrap();
    let m = &t.meta;
    assert_eq!((m.think_tokens, m.answer_tokens), (0, 5));
    assert!(m.spans.iter().all(|sp| sp.role != "reasoning"));
    let answer = m.spans.iter().find(|sp| sp.role == "answer").unwrap();
    assert_eq!(
        (answer.start, answer.end),
        (m.prompt_tokens, m.prompt_tokens + 5)
    );
    // from the second step on, the answer's own tokens receive attention: never "reasoning"
    let r = m.role_index(Role::Reasoning).unwrap();
    let a = m.role_index(Role::Answer).unwrap();
    let ra = &t.arrays.role_attention;
    assert!(ra.index_axis(ndarray::Axis(2), r).iter().all(|&x| x == 0.0));
    assert!(ra[[4, 0, a]] > 0.0);
    assert_eq!(
        (m.model.name.as_str(), m.model.path.as_str()),
        ("base", "base")
    );
}

/// An evaluation of tiny-flat on the bundled benchmark (`limit` samples per split) into `out`.
fn eval(out: &Path, limit: &str, sweep: &[&str], extra: &[&str]) -> Output {
    let model = model_dir("tiny-flat");
    let bench = root().join("assets").join("bench");
    let mut args = vec![
        "eval",
        "--model",
        s(&model),
        "--bench",
        s(&bench),
        "--limit",
        limit,
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        s(out),
    ];
    args.extend(sweep);
    args.extend(extra);
    ok(&args)
}

fn records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_base_model_evaluation_scores_its_whole_output_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("base");
    eval(&run, "2", &["--waits", "0"], &["--name", "base-model"]);
    let recs = records(&run);
    assert_eq!(recs.len(), 4);
    for r in &recs {
        assert_eq!(r["model"], "base-model");
        assert_eq!(r["think_tokens"], 0);
        assert_eq!(r["answer_tokens"], 6);
        // the answer scored is the whole output, not an empty text after a missing close tag
        let text = r["answer_text"].as_str().unwrap().trim().to_string();
        assert_eq!(r["extracted"].as_str(), Some(text.as_str()), "{r}");
    }
    ok(&["score", "--run", s(&run), "--quiet", "--bootstrap", "0"]);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(
        csv.lines().skip(1).all(|l| l.starts_with("base-model,")),
        "{csv}"
    );
    // the manifest names the model too, and no result holds a machine path
    let manifest = std::fs::read_to_string(run.join("manifest.json")).unwrap();
    let model_dir_text = model_dir("tiny-flat").display().to_string();
    assert!(!manifest.contains(&model_dir_text), "{manifest}");
}

#[test]
fn direction_reads_an_evaluation_run_its_traces_and_generate_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // budgets 1 and 4: short (1 thinking token) and long (4) generations
    eval(&run, "1", &["--budgets", "1,4"], &["--traces"]);
    let recs = records(&run);
    assert!(recs
        .iter()
        .all(|r| r["prompt"].as_str().is_some_and(|p| !p.is_empty())));
    assert!(recs
        .iter()
        .all(|r| r["image"].as_str().is_some_and(|p| !p.is_empty())));
    let direction = |input: &Path, name: &str| {
        let out = dir.path().join(name);
        let o = ok(&[
            "direction",
            "--model",
            s(&model_dir("tiny-flat")),
            "--generations",
            s(input),
            "--long-min",
            "3",
            "--short-max",
            "2",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            s(&out),
        ]);
        let counts = tch::Tensor::read_safetensors(&out)
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "counts")
            .unwrap()
            .1;
        (Vec::<i64>::try_from(counts).unwrap(), stderr(&o))
    };
    // the run directory (its results.jsonl), and the trace directories it kept
    assert_eq!(direction(&run, "from_run.safetensors").0, [2, 2]);
    assert_eq!(
        direction(&run.join("traces"), "from_traces.safetensors").0,
        [2, 2]
    );
    // an existing output is refused without --force
    let out = run_in(
        None,
        &[
            "direction",
            "--generations",
            s(&run),
            "--out",
            s(&dir.path().join("from_run.safetensors")),
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    // lines of generate --json, as printed
    let (short, _) = generate_json(&["--think", "--think-budget", "1"]);
    let (long, _) = generate_json(&["--think"]);
    let jsonl = dir.path().join("gens.jsonl");
    std::fs::write(&jsonl, format!("{short}\n{long}\n")).unwrap();
    assert_eq!(direction(&jsonl, "from_generate.safetensors").0, [1, 1]);
}

#[test]
fn traces_find_their_image_from_any_directory_and_figures_label_models_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("img")).unwrap();
    std::fs::copy(image_path("wide"), work.join("img/wide.png")).unwrap();
    for (name, model) in [("base", "tiny-flat"), ("reasoner", "tiny-nested")] {
        ok_in(
            Some(&work),
            &[
                "trace",
                "--model",
                s(&model_dir(model)),
                "--image",
                "img/wide.png",
                "--prompt",
                "What is shown?",
                "--max-new-tokens",
                "4",
                "--device",
                "cpu",
                "--name",
                name,
                "--quiet",
                "--out",
                &format!("traces/{name}"),
            ],
        );
    }
    let meta = TraceMeta::read(&work.join("traces/base")).unwrap();
    assert_eq!(
        meta.image.relative_path.as_deref(),
        Some("../../img/wide.png")
    );
    // from another working directory, the image is found through the trace
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let figures = |traces: &[&Path], extra: &[&str], out: &str| {
        let mut args = vec!["figures", "--json", "--out", out];
        args.push("--trace");
        args.extend(traces.iter().map(|t| s(t)));
        args.extend(extra);
        let o = ok_in(Some(&elsewhere), &args);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let (base, reasoner) = (work.join("traces/base"), work.join("traces/reasoner"));
    let v = figures(&[&base, &reasoner], &[], "figs");
    assert!(!v["notes"].to_string().contains("not found"), "{v}");
    // two models side by side: figure folders carry the model names, not paths
    assert!(elsewhere.join("figs/base").is_dir() && elsewhere.join("figs/reasoner").is_dir());
    // a moved image: a note says so, and --image points at its new place
    let moved = dir.path().join("moved.png");
    std::fs::rename(work.join("img/wide.png"), &moved).unwrap();
    let v = figures(&[&base], &[], "figs2");
    assert!(v["notes"].to_string().contains("not found"), "{v}");
    let v = figures(&[&base], &["--image", s(&moved)], "figs3");
    assert!(!v["notes"].to_string().contains("not found"), "{v}");
    // an output directory that holds files is refused without --force, replaced with it
    let out = run_in(
        Some(&elsewhere),
        &["figures", "--trace", s(&base), "--out", "figs3"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = ok_in(
        Some(&elsewhere),
        &[
            "figures",
            "--trace",
            s(&base),
            "--out",
            "figs3",
            "--force",
            "--quiet",
            "--image",
            s(&moved),
        ],
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "--quiet printed: {out:?}"
    );
}

/// Every long flag of every command, with the commands that have it.
fn flags_by_command() -> Vec<(String, clap::Command)> {
    rhlens::cli::Cli::command()
        .get_subcommands()
        .map(|c| {
            let mut c = c.clone();
            c.build();
            (c.get_name().to_string(), c)
        })
        .collect()
}

#[test]
fn every_flag_has_help_and_one_meaning_across_commands() {
    let mut missing = Vec::new();
    for (name, cmd) in flags_by_command() {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" || arg.is_hide_set() {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let defaulted = !arg.get_default_values().is_empty()
                || arg.is_required_set()
                || arg.get_long().is_none()
                || help.to_lowercase().contains("default")
                || help.contains("when omitted");
            if help.is_empty() || (takes_value && !defaulted) {
                missing.push(format!("{name} --{id}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags without help or default: {missing:?}"
    );
    let has = |command: &str, flag: &str| {
        flags_by_command()
            .iter()
            .find(|(n, _)| n == command)
            .unwrap()
            .1
            .get_arguments()
            .any(|a| a.get_long() == Some(flag))
    };
    // steps per saved map vs rolling mean; canvas size vs accuracy units; text vs count
    assert!(has("trace", "map-window") && !has("trace", "window"));
    assert!(has("figures", "window") && has("figures", "scale"));
    assert!(has("rhauc", "units") && !has("rhauc", "scale"));
    assert!(has("trace", "wait-text") && !has("trace", "wait"));
    // a scored run is `--run RUN` in both commands
    assert!(has("score", "run") && has("rhauc", "run"));
    let parse = |args: &[&str]| <rhlens::cli::Cli as clap::Parser>::try_parse_from(args);
    // one grammar for layer lists
    assert!(
        parse(&["rhlens", "trace", "--prompt", "x", "--out", "t", "--layers", "0,2-3"]).is_ok()
    );
    assert!(
        parse(&["rhlens", "figures", "--trace", "t", "--out", "o", "--layers", "0,2-3"]).is_ok()
    );
    assert!(parse(&["rhlens", "trace", "--prompt", "x", "--out", "t", "--layers", "3-1"]).is_err());
}
