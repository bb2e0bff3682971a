//! Diagnose overthinking on one image: one traced generation per setting (and per sample), a
//! summary table, resumable (settings whose trace is complete are skipped).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::formats::trace::{Trace, TraceArrays, TraceMeta};
use crate::formats::{Role, ROLE_NAMES};
use crate::generate::GenerateConfig;
use crate::probe::{traced_generation, ProbeConfig, TraceRequest};
use crate::runtime::Runtime;
use crate::settings::{Sweep, SweepSetting};

/// One row of `summary.json` / `summary.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRow {
    pub setting: String,
    pub value: f64,
    pub sample: usize,
    pub seed: Option<u64>,
    /// trace directory, relative to the sweep directory
    pub trace: String,
    pub think_tokens: usize,
    pub answer_tokens: usize,
    pub generated_tokens: usize,
    pub answer: String,
    pub stop_reason: String,
    /// mean share of attention on the image over all steps, early / middle / late thirds of layers
    pub visual_share_early: f64,
    pub visual_share_middle: f64,
    pub visual_share_late: f64,
    pub visual_share: f64,
    pub instruction_share: f64,
    pub reasoning_share: f64,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepSummary {
    pub kind: String,
    pub image: String,
    pub prompt: String,
    pub model: String,
    pub random_weights: bool,
    pub samples: usize,
    pub rows: Vec<SweepRow>,
}

/// Mean over steps of each role's share, per layer group (early/middle/late thirds) and overall.
pub fn role_shares(meta: &TraceMeta, arrays: &TraceArrays) -> ([f64; 3], [f64; ROLE_NAMES.len()]) {
    let ra = &arrays.role_attention;
    let (steps, layers, roles) = ra.dim();
    let vis = meta.role_index(Role::Visual).unwrap_or(1);
    let mut overall = [0f64; ROLE_NAMES.len()];
    let mut groups = [0f64; 3];
    let mut counts = [0usize; 3];
    if steps == 0 || layers == 0 {
        return (groups, overall);
    }
    for l in 0..layers {
        let g = (l * 3 / layers).min(2);
        let mut v = 0f64;
        for s in 0..steps {
            v += ra[[s, l, vis]] as f64;
            for r in 0..roles.min(ROLE_NAMES.len()) {
                overall[r] += ra[[s, l, r]] as f64;
            }
        }
        groups[g] += v / steps as f64;
        counts[g] += 1;
    }
    for g in 0..3 {
        if counts[g] > 0 {
            groups[g] /= counts[g] as f64;
        }
    }
    for o in overall.iter_mut() {
        *o /= (steps * layers) as f64;
    }
    (groups, overall)
}

pub struct SweepRequest<'a> {
    pub image: &'a Path,
    pub prompt: &'a str,
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
    let (groups, overall) = role_shares(meta, arrays);
    let idx = |r: Role| meta.role_index(r).map(|i| overall[i]).unwrap_or(0.0);
    SweepRow {
        setting: setting.key.clone(),
        value: setting.value,
        sample,
        seed,
        trace: rel.to_string(),
        think_tokens: meta.think_tokens,
        answer_tokens: meta.answer_tokens,
        generated_tokens: meta.generated_ids.len(),
        answer: meta.answer.clone(),
        stop_reason: meta.stop_reason.clone(),
        visual_share_early: groups[0],
        visual_share_middle: groups[1],
        visual_share_late: groups[2],
        visual_share: idx(Role::Visual),
        instruction_share: idx(Role::Instruction),
        reasoning_share: idx(Role::Reasoning),
        elapsed_s,
    }
}

/// Run (or resume) a sweep; `progress(done, total, label)` is called after each generation.
pub fn run_sweep(
    rt: &Runtime,
    sweep: &Sweep,
    req: &SweepRequest<'_>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<SweepSummary> {
    std::fs::create_dir_all(req.out).with_context(|| format!("creating {}", req.out.display()))?;
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
            if let Ok(t) = Trace::read(&dir) {
                let same = t.meta.prompt == req.prompt
                    && t.meta.image.path == req.image.to_string_lossy()
                    && t.meta.model.path == rt.dir.to_string_lossy()
                    && t.meta.settings.get("setting").and_then(|v| v.as_str())
                        == Some(setting.key.as_str());
                if !same {
                    anyhow::bail!(
                        "{} holds a trace of another prompt, image or model; use a new --out directory",
                        dir.display()
                    );
                }
                // finished in an earlier run
                rows.push(row_from_trace(
                    setting, k, seed, &rel, &t.meta, &t.arrays, 0.0,
                ));
                done += 1;
                progress(done, total, &format!("{} (done before)", setting.key));
                continue;
            }
            let (cfg, steering) = sweep.apply(setting, &base);
            let t0 = std::time::Instant::now();
            let tr = TraceRequest {
                image: req.image,
                prompt: req.prompt,
                system: req.system,
                generate: cfg,
                probe: req.probe.clone(),
                vision: false,
                steering: steering.as_ref(),
                out: Some(&dir),
                // a partial trace from an interrupted run is redone
                force: true,
                settings: serde_json::json!({
                    "sweep": sweep.kind.as_str(),
                    "setting": setting.key,
                    "value": setting.value,
                    "sample": k,
                    "steer": sweep.steer_file.as_ref().map(|p| p.to_string_lossy().into_owned()),
                }),
            };
            let run = traced_generation(rt, &tr, &mut |_| {})
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
        kind: sweep.kind.as_str().to_string(),
        image: req.image.to_string_lossy().into_owned(),
        prompt: req.prompt.to_string(),
        model: rt.dir.to_string_lossy().into_owned(),
        random_weights: rt.config.random_weights,
        samples,
        rows,
    };
    write_summary(&summary, req.out)?;
    Ok(summary)
}

pub fn write_summary(s: &SweepSummary, out: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(s)?;
    crate::fsutil::write_atomic(&out.join("summary.json"), json.as_bytes())?;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "setting",
        "value",
        "sample",
        "seed",
        "think_tokens",
        "answer_tokens",
        "generated_tokens",
        "stop_reason",
        "visual_share",
        "visual_share_early",
        "visual_share_middle",
        "visual_share_late",
        "instruction_share",
        "reasoning_share",
        "answer",
        "trace",
    ])?;
    for r in &s.rows {
        w.write_record([
            r.setting.clone(),
            r.value.to_string(),
            r.sample.to_string(),
            r.seed.map(|s| s.to_string()).unwrap_or_default(),
            r.think_tokens.to_string(),
            r.answer_tokens.to_string(),
            r.generated_tokens.to_string(),
            r.stop_reason.clone(),
            format!("{:.6}", r.visual_share),
            format!("{:.6}", r.visual_share_early),
            format!("{:.6}", r.visual_share_middle),
            format!("{:.6}", r.visual_share_late),
            format!("{:.6}", r.instruction_share),
            format!("{:.6}", r.reasoning_share),
            r.answer.clone(),
            r.trace.clone(),
        ])?;
    }
    let csv = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing summary.csv: {e}"))?;
    crate::fsutil::write_atomic(&out.join("summary.csv"), &csv)?;
    Ok(())
}
