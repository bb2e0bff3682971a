//! Diagnose overthinking on one image: one traced generation per setting (and per sample), a
//! summary table, resumable (settings whose trace is complete are skipped).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::budget::{paper_generation, BudgetProtocol};
use crate::formats::diff::first_difference;
use crate::formats::shares::role_shares;
use crate::formats::sweep::{SweepRow, SweepSummary};
use crate::formats::trace::{Trace, TraceArrays, TraceMeta};
use crate::formats::Role;
use crate::generate::GenerateConfig;
use crate::probe::run::recorded_settings;
use crate::probe::{traced_generation, ProbeConfig, TraceRequest, TracedRun};
use crate::prompt::PromptStyle;
use crate::runtime::Runtime;
use crate::settings::{Sweep, SweepSetting};

pub struct SweepRequest<'a> {
    pub image: &'a Path,
    /// the question, before `prompt_style` is applied
    pub prompt: &'a str,
    pub prompt_style: PromptStyle,
    pub protocol: BudgetProtocol,
    pub system: Option<&'a str>,
    pub base: GenerateConfig,
    pub probe: ProbeConfig,
    pub samples: usize,
    pub out: &'a Path,
}

fn row_from_trace(
    setting: &SweepSetting,
    sample: usize,
    seed: Option<u64>,
    rel: &str,
    meta: &TraceMeta,
    arrays: &TraceArrays,
    elapsed_s: f64,
) -> SweepRow {
    let (visual_groups, overall) = role_shares(meta, arrays);
    // A trace without image tokens puts no attention on them.
    let [early, middle, late] = visual_groups.unwrap_or([0.0; 3]);
    let idx = |r: Role| meta.role_index(r).map(|i| overall[i]).unwrap_or(0.0);
    SweepRow {
        setting: setting.key.clone(),
        value: setting.value,
        sample: Some(sample),
        seed,
        trace: rel.to_string(),
        think_tokens: Some(meta.think_tokens),
        answer_tokens: meta.answer_tokens,
        generated_tokens: meta.generated_ids.len(),
        answer: meta.answer.clone(),
        stop_reason: meta.stop_reason.clone(),
        visual_share_early: early,
        visual_share_middle: middle,
        visual_share_late: late,
        visual_share: idx(Role::Visual),
        instruction_share: idx(Role::Instruction),
        reasoning_share: idx(Role::Reasoning),
        elapsed_s,
    }
}

/// Run (or resume) a sweep; `progress(done, total, label)` is called after each generation.
fn steer_file(sweep: &Sweep) -> Option<String> {
    sweep
        .steer_file
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
}

/// A finished trace in `dir` may stand for `setting` only if it was made from the same prompt,
/// image and model with the same settings; otherwise the sweep would mix in rows of another run.
/// The refusal names the first option that differs.
fn check_resumable(
    t: &Trace,
    dir: &Path,
    rt: &Runtime,
    req: &SweepRequest<'_>,
    sweep: &Sweep,
    setting: &SweepSetting,
    cfg: &GenerateConfig,
) -> Result<()> {
    // the paper's protocol traces stage 2, whose prompt holds stage 1's thinking
    let asked = t
        .meta
        .settings
        .get("stage1_prompt")
        .and_then(|v| v.as_str());
    let same_input = asked.unwrap_or(&t.meta.prompt) == req.prompt_style.apply(req.prompt)
        && t.meta.image.path == req.image.to_string_lossy()
        && t.meta.model.name == rt.name
        && t.meta.settings.get("setting").and_then(|v| v.as_str()) == Some(setting.key.as_str());
    if !same_input {
        return crate::error::invalid(
            "out",
            format!(
                "{} holds a trace of another prompt, image or model; use a new directory",
                dir.display()
            ),
        );
    }
    let mut now = recorded_settings(cfg, &req.probe);
    now["steer"] = steer_file(sweep).into();
    // compared only when not the default, so sweeps made before these options resume
    if req.prompt_style != PromptStyle::Plain {
        now["prompt_style"] = req.prompt_style.name().into();
    }
    if let BudgetProtocol::Paper { answer_tokens } = req.protocol {
        now["budget_protocol"] = req.protocol.record();
        now["stage1_max_new_tokens"] = cfg.max_new_tokens.into();
        now["max_new_tokens"] = answer_tokens.into();
    }
    let saved = serde_json::Value::Object(t.meta.settings.clone());
    match first_difference(&saved, &now) {
        None => Ok(()),
        Some((name, before, after)) => crate::error::invalid(
            "out",
            format!(
                "{} holds a trace made with another `{name}` ({before} there, {after} now); \
                 rerun with the same options or use a new directory",
                dir.display()
            ),
        ),
    }
}

pub fn run_sweep(
    rt: &Runtime,
    sweep: &Sweep,
    req: &SweepRequest<'_>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<SweepSummary> {
    req.protocol
        .check(sweep.kind, &sweep.settings, &req.base, req.samples)?;
    let asked = req.prompt_style.apply(req.prompt);
    std::fs::create_dir_all(req.out).with_context(|| format!("creating {}", req.out.display()))?;
    // one writer per sweep folder, until the summary is written
    let _lock = crate::fsutil::RunLock::acquire(req.out)?;
    let samples = req.samples.max(1);
    let total = sweep.settings.len() * samples;
    let mut rows = Vec::new();
    let mut done = 0;
    for setting in &sweep.settings {
        for k in 0..samples {
            let rel = if samples > 1 {
                format!("traces/{}-s{k}", setting.key)
            } else {
                format!("traces/{}", setting.key)
            };
            let dir: PathBuf = req.out.join(&rel);
            let mut base = req.base.clone();
            // distinct seeds per sample so a sweep reports spread, not one draw
            if let Some(s) = base.sampling.seed {
                base.sampling.seed = Some(s + k as u64);
            } else if samples > 1 && !base.sampling.is_greedy() {
                base.sampling.seed = Some(k as u64);
            }
            let seed = base.sampling.seed;
            let (cfg, steering) = req.protocol.apply(sweep, setting, &base);
            if let Ok(t) = Trace::read(&dir) {
                check_resumable(&t, &dir, rt, req, sweep, setting, &cfg)?;
                // finished in an earlier run
                rows.push(row_from_trace(
                    setting, k, seed, &rel, &t.meta, &t.arrays, 0.0,
                ));
                done += 1;
                progress(done, total, &format!("{} (done before)", setting.key));
                continue;
            }
            let t0 = std::time::Instant::now();
            let tr = TraceRequest {
                image: req.image,
                prompt: &asked,
                system: req.system,
                generate: cfg,
                probe: req.probe.clone(),
                vision: false,
                steering: steering.as_ref(),
                out: Some(&dir),
                // a partial trace from an interrupted run is redone
                force: true,
                settings: serde_json::json!({
                    "sweep": req.protocol.kind_name(sweep.kind),
                    "setting": setting.key,
                    "value": setting.value,
                    "sample": k,
                    "steer": steer_file(sweep),
                    "prompt_style": req.prompt_style.name(),
                    "budget_protocol": req.protocol.record(),
                }),
            };
            let run = sweep_generation(rt, &tr, req, setting)
                .with_context(|| format!("setting {}", setting.key))?;
            rows.push(row_from_trace(
                setting,
                k,
                seed,
                &rel,
                &run.meta,
                &run.arrays,
                t0.elapsed().as_secs_f64(),
            ));
            done += 1;
            progress(done, total, &setting.key);
        }
    }
    let summary = SweepSummary {
        kind: req.protocol.kind_name(sweep.kind).to_string(),
        image: req.image.to_string_lossy().into_owned(),
        prompt: asked,
        model: rt.name.clone(),
        random_weights: rt.config.random_weights,
        samples,
        rows,
    };
    summary.write(req.out)?;
    Ok(summary)
}

/// One setting's traced generation, by the sweep's budget protocol.
fn sweep_generation(
    rt: &Runtime,
    tr: &TraceRequest<'_>,
    req: &SweepRequest<'_>,
    setting: &SweepSetting,
) -> Result<TracedRun> {
    match req.protocol {
        BudgetProtocol::TokenExact => traced_generation(rt, tr, &mut |_| {}),
        BudgetProtocol::Paper { answer_tokens } => {
            let chars = setting.value as usize;
            Ok(paper_generation(rt, tr, req.prompt, chars, answer_tokens)?.0)
        }
    }
}
