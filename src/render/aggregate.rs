//! Aggregates over many traces (the paper's figures are averages over questions): for each
//! group of traces (by model, by setting, or by correct / incorrect answer), the mean and 95%
//! interval across traces ([`super::stats`]) of
//! - each role's share of attention per layer (summed over the generated steps, renormalised per
//!   layer: [`shares::generation_shares`]);
//! - the visual share along the chain, against the normalised position (step s of n at
//!   (s + ½)/n, in [`POSITION_BINS`] equal bins) and against the absolute step (each step's
//!   per-layer shares renormalised and averaged over layers: [`shares::step_role_shares`]);
//! - the spatial spread of each layer's map on the image ([`spatial::normalized_entropy`] and
//!   [`spatial::top_k_mass`] of the top [`TOP_K_FRACTION`] of tokens): maps of different images
//!   cannot be averaged, their spread can;
//! - the decay map: the visual share at every (layer, step), the mean over the traces that reach
//!   that step.
//!
//! The result is an [`AggregateSummary`], saved as `aggregate.json` and drawn from the file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::stats::Stat;
use super::traces::model_name;
use crate::bench::results::read_results;
use crate::bench::scores::{read_scores, SCORES_FILE};
use crate::formats::shares::{generation_shares, step_role_shares};
use crate::formats::spatial::{normalized_entropy, top_k_mass};
use crate::formats::sweep::SweepSummary;
use crate::formats::trace::{Trace, TRACE_JSON};
use crate::formats::{Role, ROLE_NAMES};

/// Value of the `format` field of `aggregate.json`.
pub const AGGREGATE_FORMAT: &str = "rhlens-aggregate";
pub const AGGREGATE_VERSION: u32 = 1;
/// File name of the summary in a figures directory.
pub const AGGREGATE_FILE: &str = "aggregate.json";
/// Bins of the normalised chain position.
pub const POSITION_BINS: usize = 20;
/// The top-k mass counts the largest ⌈fraction · tokens⌉ image tokens.
pub const TOP_K_FRACTION: f64 = 0.1;

/// How traces are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The model name recorded in the trace.
    Model,
    /// The setting (`budget=100`) of the eval run or sweep that wrote the trace.
    Setting,
    /// Whether the answer was scored correct (`scores.jsonl` of the eval run).
    Correct,
}

impl GroupBy {
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Setting => "setting",
            GroupBy::Correct => "correct",
        }
    }
}

/// Statistics of one group of traces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub label: String,
    /// The setting's number when grouped by setting.
    #[serde(default)]
    pub setting_value: Option<f64>,
    /// Model names in the group.
    pub models: Vec<String>,
    pub random_weights: bool,
    /// Trace directories, as given.
    pub traces: Vec<String>,
    /// Model layer indices (x of the per-layer statistics, rows of the decay map).
    pub layers: Vec<usize>,
    /// Per role name (those of [`ROLE_NAMES`]): the share per layer.
    pub layer_shares: BTreeMap<String, Stat>,
    /// Visual share per normalised-position bin (bin i covers [i/B, (i+1)/B)).
    pub visual_by_position: Stat,
    /// Visual share per absolute step.
    pub visual_by_step: Stat,
    /// Normalised entropy of each layer's map.
    pub spatial_entropy: Stat,
    /// Share of each layer's map on its top [`TOP_K_FRACTION`] of tokens.
    pub top_k_mass: Stat,
    /// `[layers][steps]`: mean visual share at each layer and step.
    pub decay_map: Vec<Vec<f64>>,
}

/// `aggregate.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateSummary {
    pub format: String,
    pub format_version: u32,
    pub group_by: GroupBy,
    pub interval: String,
    pub position_bins: usize,
    pub top_k_fraction: f64,
    pub groups: Vec<GroupSummary>,
    /// Traces left out, and why.
    pub skipped: Vec<String>,
}

impl AggregateSummary {
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        crate::fsutil::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<AggregateSummary> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read aggregate summary {}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(AGGREGATE_FORMAT) {
            bail!(
                "{}: not an aggregate summary (no \"format\": \"{AGGREGATE_FORMAT}\")",
                path.display()
            );
        }
        serde_json::from_value(v).with_context(|| format!("{}: invalid summary", path.display()))
    }
}

/// A trace found under the given paths, with what its run says about it.
#[derive(Debug, Clone)]
pub struct Found {
    pub dir: PathBuf,
    /// `(key, value)` of the eval run's or sweep's setting.
    pub setting: Option<(String, f64)>,
    /// Correct answer, from the eval run's `scores.jsonl`.
    pub correct: Option<bool>,
}

/// The trace directories named by `paths`: a trace directory itself, or a directory whose
/// children (or whose `traces/` children: an eval run) are traces. Each is looked up in its
/// eval run (`results.jsonl`, `scores.jsonl`) or sweep (`summary.json`) for its setting and
/// correctness.
pub fn find_traces(paths: &[PathBuf]) -> Result<Vec<Found>> {
    let mut dirs = Vec::new();
    let mut from_runs = Vec::new();
    for p in paths {
        if p.join(TRACE_JSON).is_file() {
            dirs.push(p.clone());
            continue;
        }
        if p.join("results.jsonl").is_file() {
            // an eval run (a merged one too): its records name their traces
            from_runs.extend(run_traces(p)?);
            continue;
        }
        if !p.is_dir() {
            bail!(
                "{}: not a trace directory or a directory of traces",
                p.display()
            );
        }
        let before = dirs.len();
        for base in [p.clone(), p.join("traces")] {
            dirs.extend(child_traces(&base)?);
        }
        if dirs.len() == before {
            bail!(
                "{}: holds no traces (no */trace.json, no traces/*/trace.json)",
                p.display()
            );
        }
    }
    let mut runs = RunIndex::default();
    let mut found: Vec<Found> = dirs
        .into_iter()
        .map(|d| runs.find(d))
        .collect::<Result<_>>()?;
    found.extend(from_runs);
    Ok(found)
}

/// The traces an eval run's `results.jsonl` names (where they were written, else under the
/// run's `traces/`), with their settings and, once scored, their correctness.
fn run_traces(run: &Path) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for (recorded, (key, value, correct)) in index_run(run)? {
        let dir = PathBuf::from(&recorded);
        let local = dir.file_name().map(|n| run.join("traces").join(n));
        let dir = match local {
            Some(local) if !dir.join(TRACE_JSON).is_file() => local,
            _ => dir,
        };
        if !dir.join(TRACE_JSON).is_file() {
            bail!(
                "{}: the trace {recorded} named in its results.jsonl is missing",
                run.display()
            );
        }
        out.push(Found {
            dir,
            setting: Some((key, value)),
            correct,
        });
    }
    if out.is_empty() {
        bail!(
            "{}: its results.jsonl names no traces (run eval with --traces)",
            run.display()
        );
    }
    Ok(out)
}

fn child_traces(base: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = fs::read_dir(base) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.join(TRACE_JSON).is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Per trace: (setting key, value, correct).
type TraceInfo = (String, f64, Option<bool>);

/// What eval runs and sweeps say about their traces, read once per run.
#[derive(Default)]
struct RunIndex {
    /// Per run directory: trace folder name → what the run says about it.
    runs: BTreeMap<PathBuf, BTreeMap<String, TraceInfo>>,
}

impl RunIndex {
    fn find(&mut self, dir: PathBuf) -> Result<Found> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let run = if parent.file_name().is_some_and(|n| n == "traces") {
            parent.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            parent
        };
        if !self.runs.contains_key(&run) {
            let by_name = index_run(&run)?
                .into_iter()
                .filter_map(|(path, info)| {
                    let name = Path::new(&path).file_name()?.to_str()?.to_string();
                    Some((name, info))
                })
                .collect();
            self.runs.insert(run.clone(), by_name);
        }
        let hit = self.runs[&run].get(&name);
        Ok(Found {
            setting: hit.map(|h| (h.0.clone(), h.1)),
            correct: hit.and_then(|h| h.2),
            dir,
        })
    }
}

/// Trace path as recorded → (setting, value, correct) of an eval run or a sweep (empty for
/// neither).
fn index_run(run: &Path) -> Result<BTreeMap<String, TraceInfo>> {
    let mut out = BTreeMap::new();
    if run.join("summary.json").is_file() {
        if let Ok(summary) = SweepSummary::read(run) {
            for row in summary.rows {
                let path = run.join(&row.trace).display().to_string();
                out.insert(path, (row.setting, row.value, None));
            }
        }
        return Ok(out);
    }
    let results = run.join("results.jsonl");
    if !results.is_file() {
        return Ok(out);
    }
    let (records, _) = read_results(&results)?;
    let scores = run.join(SCORES_FILE);
    let verdicts: BTreeMap<String, bool> = if scores.is_file() {
        read_scores(&scores)?
            .into_iter()
            .map(|s| (s.key().to_string(), s.correct))
            .collect()
    } else {
        BTreeMap::new()
    };
    for r in records {
        let trace = r
            .role_summary
            .as_ref()
            .and_then(|s| s.get("trace"))
            .and_then(|t| t.as_str())
            .map(str::to_string);
        if let Some(name) = trace {
            let correct = verdicts.get(&r.key().to_string()).copied();
            out.insert(name, (r.setting.clone(), r.setting_value, correct));
        }
    }
    Ok(out)
}

/// The group label of a trace, or why it has none.
fn group_of(found: &Found, trace: &Trace, by: GroupBy) -> Result<(String, Option<f64>), String> {
    match by {
        GroupBy::Model => Ok((model_name(&trace.meta.model), None)),
        GroupBy::Setting => match &found.setting {
            Some((key, value)) => Ok((key.clone(), Some(*value))),
            None => Err(
                "no setting: not listed in an eval run's results.jsonl or a sweep's summary.json"
                    .into(),
            ),
        },
        GroupBy::Correct => match found.correct {
            Some(true) => Ok(("correct".into(), None)),
            Some(false) => Ok(("incorrect".into(), None)),
            None => Err("no score: not in a scored eval run (run `rhlens score --run RUN`)".into()),
        },
    }
}

/// One trace reduced to what the aggregate needs.
struct Reduced {
    /// `[layers, ROLE_NAMES]`
    layer_shares: Array2<f64>,
    /// `[steps, layers]`: visual share at each step and layer.
    step_layer_visual: Array2<f64>,
    /// Visual share per step (mean over layers of the renormalised shares).
    step_visual: Vec<f64>,
    entropy: Vec<Option<f64>>,
    top_k: Vec<Option<f64>>,
}

/// Reduces one trace; `None` when it has no generated step or no visual role.
fn reduce(trace: &Trace) -> Option<Reduced> {
    let meta = &trace.meta;
    let ra = &trace.arrays.role_attention;
    let vi = meta.role_index(Role::Visual)?;
    let (steps, layers, _) = ra.dim();
    if steps == 0 {
        return None;
    }
    let all: Vec<usize> = (0..layers).collect();
    let own = generation_shares(ra, &all);
    let mut layer_shares = Array2::<f64>::zeros((layers, ROLE_NAMES.len()));
    for (k, name) in ROLE_NAMES.iter().enumerate() {
        if let Some(r) = meta.role_index_by_name(name) {
            layer_shares.column_mut(k).assign(&own.column(r));
        }
    }
    let mut step_layer_visual = Array2::<f64>::zeros((steps, layers));
    for l in 0..layers {
        let s = step_role_shares(ra, &[l]);
        step_layer_visual.column_mut(l).assign(&s.column(vi));
    }
    let step_visual = step_role_shares(ra, &all).column(vi).to_vec();
    let maps = &trace.arrays.visual_attention;
    let k = ((maps.ncols() as f64) * TOP_K_FRACTION).ceil() as usize;
    let rows: Vec<Vec<f32>> = maps.outer_iter().map(|r| r.to_vec()).collect();
    Some(Reduced {
        layer_shares,
        step_layer_visual,
        step_visual,
        entropy: rows.iter().map(|m| normalized_entropy(m)).collect(),
        top_k: rows.iter().map(|m| top_k_mass(m, k.max(1))).collect(),
    })
}

/// Mean visual share of each normalised-position bin of one trace (`None`: no step in it).
fn position_bins(step_visual: &[f64]) -> Vec<Option<f64>> {
    let n = step_visual.len();
    let mut sum = vec![0.0; POSITION_BINS];
    let mut count = vec![0usize; POSITION_BINS];
    for (s, v) in step_visual.iter().enumerate() {
        let pos = (s as f64 + 0.5) / n as f64;
        let b = ((pos * POSITION_BINS as f64).floor() as usize).min(POSITION_BINS - 1);
        sum[b] += v;
        count[b] += 1;
    }
    (0..POSITION_BINS)
        .map(|b| (count[b] > 0).then(|| sum[b] / count[b] as f64))
        .collect()
}

/// Traces of one group as they are read.
#[derive(Default)]
struct GroupAcc {
    value: Option<f64>,
    models: Vec<String>,
    random_weights: bool,
    traces: Vec<String>,
    layers: Vec<usize>,
    reduced: Vec<Reduced>,
}

/// Reads every trace and aggregates it into its group. Traces that cannot be grouped or have
/// nothing to aggregate are skipped with a reason; traces of one group must capture the same
/// layers.
pub fn aggregate(found: &[Found], by: GroupBy, allow_partial: bool) -> Result<AggregateSummary> {
    let mut groups: Vec<(String, GroupAcc)> = Vec::new();
    let mut skipped = Vec::new();
    for f in found {
        let trace = if allow_partial {
            Trace::read_allow_partial(&f.dir)
        } else {
            Trace::read(&f.dir)
        }?;
        let (label, value) = match group_of(f, &trace, by) {
            Ok(g) => g,
            Err(why) => {
                skipped.push(format!("{}: {why}", f.dir.display()));
                continue;
            }
        };
        let Some(reduced) = reduce(&trace) else {
            skipped.push(format!(
                "{}: no generated step with a visual role",
                f.dir.display()
            ));
            continue;
        };
        let at = match groups.iter().position(|g| g.0 == label) {
            Some(i) => i,
            None => {
                let acc = GroupAcc {
                    layers: trace.meta.layers.clone(),
                    value,
                    ..Default::default()
                };
                groups.push((label.clone(), acc));
                groups.len() - 1
            }
        };
        add_to_group(&mut groups[at], f, &trace, reduced)?;
    }
    if groups.is_empty() {
        bail!("no trace could be aggregated: {}", skipped.join("; "));
    }
    if by == GroupBy::Setting {
        groups.sort_by(|a, b| {
            a.1.value
                .unwrap_or(0.0)
                .total_cmp(&b.1.value.unwrap_or(0.0))
        });
    }
    Ok(AggregateSummary {
        format: AGGREGATE_FORMAT.into(),
        format_version: AGGREGATE_VERSION,
        group_by: by,
        interval: "95% interval of the mean across traces: mean ± t(0.975, n−1)·s/√n".into(),
        position_bins: POSITION_BINS,
        top_k_fraction: TOP_K_FRACTION,
        groups: groups
            .into_iter()
            .map(|(l, acc)| summarise(l, acc))
            .collect(),
        skipped,
    })
}

fn add_to_group(
    group: &mut (String, GroupAcc),
    f: &Found,
    trace: &Trace,
    r: Reduced,
) -> Result<()> {
    let (label, acc) = group;
    if trace.meta.layers != acc.layers {
        bail!(
            "{}: captures layers {:?}, but the other traces of group {label:?} capture {:?}; \
             aggregate traces with the same layers",
            f.dir.display(),
            trace.meta.layers,
            acc.layers
        );
    }
    let model = model_name(&trace.meta.model);
    if !acc.models.contains(&model) {
        acc.models.push(model);
    }
    acc.random_weights |= trace.meta.model.random_weights;
    acc.traces.push(f.dir.display().to_string());
    acc.reduced.push(r);
    Ok(())
}

/// Columns of values across traces: `get(trace, i)` for i in 0..len, `None` left out.
fn columns(
    rs: &[Reduced],
    len: usize,
    get: impl Fn(&Reduced, usize) -> Option<f64>,
) -> Vec<Vec<f64>> {
    (0..len)
        .map(|i| rs.iter().filter_map(|r| get(r, i)).collect())
        .collect()
}

fn summarise(label: String, acc: GroupAcc) -> GroupSummary {
    let rs = &acc.reduced;
    let layers = acc.layers.len();
    let steps = rs.iter().map(|r| r.step_visual.len()).max().unwrap_or(0);
    let layer_shares = ROLE_NAMES
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let cols = columns(rs, layers, |r, l| Some(r.layer_shares[[l, k]]));
            (name.to_string(), Stat::of(&cols))
        })
        .collect();
    let bins: Vec<Vec<Option<f64>>> = rs.iter().map(|r| position_bins(&r.step_visual)).collect();
    let by_position: Vec<Vec<f64>> = (0..POSITION_BINS)
        .map(|b| bins.iter().filter_map(|t| t[b]).collect())
        .collect();
    let decay_map = (0..layers)
        .map(|l| {
            columns(rs, steps, |r, s| {
                (s < r.step_visual.len()).then(|| r.step_layer_visual[[s, l]])
            })
            .iter()
            .map(|c| c.iter().sum::<f64>() / c.len().max(1) as f64)
            .collect()
        })
        .collect();
    GroupSummary {
        label,
        setting_value: acc.value,
        models: acc.models,
        random_weights: acc.random_weights,
        traces: acc.traces,
        layers: acc.layers,
        layer_shares,
        visual_by_position: Stat::of(&by_position),
        visual_by_step: Stat::of(&columns(rs, steps, |r, s| r.step_visual.get(s).copied())),
        spatial_entropy: Stat::of(&columns(rs, layers, |r, l| r.entropy[l])),
        top_k_mass: Stat::of(&columns(rs, layers, |r, l| r.top_k[l])),
        decay_map,
    }
}
