//! `rhlens score`, `rhlens rhauc` and `rhlens merge`: benchmark commands that need no model.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::bench::judge::JudgeConfig;
use crate::bench::merge::merge_runs;
use crate::bench::metrics::{self, group_means, RhAucReport};
use crate::bench::points::{read_points, Scale};
use crate::bench::report::{group_table, metrics_table, rhauc_table};
use crate::bench::score::{score_run, ScoreOptions};
use crate::bench::scores::{read_scores, SCORES_FILE};

/// Score a run: extract answers, judge correctness, write metrics and RH-AUC.
#[derive(Debug, Clone, Args)]
pub struct ScoreArgs {
    /// Run directory holding results.jsonl (written by `rhlens eval` or `rhlens merge`); scores,
    /// metrics and RH-AUC are written into it, replacing earlier ones (judge replies are cached)
    /// [default: none; required]
    #[arg(
        long = "run",
        value_name = "RUN_DIR",
        required_unless_present = "run_dir_positional"
    )]
    pub run_dir: Option<PathBuf>,
    /// The run directory given without `--run` (the older form).
    #[arg(value_name = "RUN_DIR", hide = true, conflicts_with = "run_dir")]
    pub run_dir_positional: Option<PathBuf>,
    /// OpenAI-compatible endpoint for an LLM judge (base URL, `.../v1`, or the full
    /// `.../v1/chat/completions`) [default: none: the rule-based scorer]
    #[arg(long, value_name = "URL")]
    pub judge_url: Option<String>,
    /// Judge model name [default: gpt-4o]
    #[arg(long, value_name = "NAME", requires = "judge_url")]
    pub judge_model: Option<String>,
    /// Environment variable holding the judge's API key (sent as a Bearer token) [default: none:
    /// no key sent]
    #[arg(long, value_name = "VAR", requires = "judge_url")]
    pub judge_key_env: Option<String>,
    /// Judge request timeout in seconds.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub judge_timeout_s: f64,
    /// Judge retries on timeouts, 429 and 5xx (exponential backoff from 1 s).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub judge_retries: u32,
    /// Bootstrap resamples for the RH-AUC 95% interval (0 = none).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub bootstrap: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object (metrics rows and RH-AUC) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// No progress bar, notes or list of files written (the tables and warnings still print).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run_score(args: ScoreArgs) -> Result<()> {
    let Some(run_dir) = args.run_dir.clone().or(args.run_dir_positional.clone()) else {
        bail!("give the run directory with --run RUN_DIR");
    };
    let judge = match &args.judge_url {
        None => None,
        Some(url) => {
            let mut cfg = JudgeConfig::new(
                url.clone(),
                args.judge_model.clone().unwrap_or_else(|| "gpt-4o".into()),
            );
            if let Some(var) = &args.judge_key_env {
                let key = std::env::var(var).with_context(|| {
                    format!("--judge-key-env {var}: environment variable {var} is not set")
                })?;
                cfg.api_key = Some(key);
            }
            if !(args.judge_timeout_s.is_finite() && args.judge_timeout_s > 0.0) {
                bail!("--judge-timeout-s must be a positive number of seconds");
            }
            cfg.timeout = Duration::from_secs_f64(args.judge_timeout_s);
            cfg.max_retries = args.judge_retries;
            Some(cfg)
        }
    };
    let opts = ScoreOptions {
        judge,
        bootstrap: args.bootstrap,
        seed: args.seed,
        progress: !args.quiet && !args.json,
    };
    let summary = score_run(&run_dir, &opts)?;
    if !args.quiet {
        for p in &summary.line_problems {
            eprintln!("note: results.jsonl {p}");
        }
        if summary.duplicates > 0 {
            eprintln!(
                "note: {} duplicate result lines ignored (first copy kept)",
                summary.duplicates
            );
        }
    }
    if summary.judge_fallbacks > 0 {
        eprintln!(
            "warning: {} judge replies could not be parsed; those records were scored by the rule-based scorer (labelled `rule`)",
            summary.judge_fallbacks
        );
    }
    if args.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            records: usize,
            duplicates: usize,
            judge_requests: usize,
            judge_cached: usize,
            judge_fallbacks: usize,
            metrics: &'a [metrics::SettingMetrics],
            rhauc: RhAucReport<'a>,
        }
        let out = Out {
            records: summary.records,
            duplicates: summary.duplicates,
            judge_requests: summary.judge_http,
            judge_cached: summary.judge_cached,
            judge_fallbacks: summary.judge_fallbacks,
            metrics: &summary.metrics,
            rhauc: RhAucReport::new(&summary.rhauc),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{}", metrics_table(&summary.metrics));
    println!();
    print!("{}", rhauc_table(&summary.rhauc));
    if !args.quiet {
        if opts.judge.is_some() {
            eprintln!(
                "judge: {} answered over HTTP, {} from the cache",
                summary.judge_http, summary.judge_cached
            );
        }
        eprintln!(
            "wrote scores.jsonl, metrics.json, metrics.csv, rhauc.json in {}",
            run_dir.display()
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScaleArg {
    /// Percent if any value is above 1 (or has a % sign), else 0-1.
    Auto,
    /// Accuracies in 0-1.
    Unit,
    /// Accuracies in 0-100.
    Percent,
}

impl From<ScaleArg> for Scale {
    fn from(s: ScaleArg) -> Scale {
        match s {
            ScaleArg::Auto => Scale::Auto,
            ScaleArg::Unit => Scale::Unit,
            ScaleArg::Percent => Scale::Percent,
        }
    }
}

/// RH-AUC from accuracy points (CSV/JSON) or from a scored run.
#[derive(Debug, Clone, Args)]
pub struct RhaucArgs {
    /// Points file: CSV or JSON with columns setting, reasoning, perception and optional model
    /// (one RH-AUC per model); metrics.csv / metrics.json from `rhlens score` work as is
    /// [default: none; give --points or --run]
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "run",
        conflicts_with = "run"
    )]
    pub points: Option<PathBuf>,
    /// A scored run directory (its scores.jsonl); needed for --bootstrap [default: none]
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,
    /// Units of the accuracies in --points: fractions (unit, 0-1) or percent (0-100).
    #[arg(long, value_enum, default_value_t = ScaleArg::Auto)]
    pub units: ScaleArg,
    /// Bootstrap resamples over samples for a 95% interval (needs --run).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub bootstrap: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also print means of RH-AUC and accuracies per value of this column (e.g. training)
    /// [default: none]
    #[arg(long, value_name = "COLUMN")]
    pub group_by: Vec<String>,
    /// Print one JSON object; `rh_auc` is a number, or an object by model when there are several.
    #[arg(long)]
    pub json: bool,
}

pub fn run_rhauc(args: RhaucArgs) -> Result<()> {
    let (models, scale_note, extra) = if let Some(run) = &args.run {
        let scores_path = run.join(SCORES_FILE);
        if !scores_path.is_file() {
            bail!(
                "{} not found: run `rhlens score --run {}` first",
                scores_path.display(),
                run.display()
            );
        }
        let scores = read_scores(&scores_path)?;
        let rows = metrics::compute_metrics(&scores);
        let models = metrics::rhauc_per_model(&scores, &rows, args.bootstrap, args.seed);
        (models, None, json!({}))
    } else {
        let Some(path) = &args.points else {
            bail!("give --points FILE or --run RUN_DIR");
        };
        if args.bootstrap > 0 {
            bail!("--bootstrap resamples samples, which a points file does not have: use --run RUN_DIR (a scored run) instead");
        }
        let points = read_points(path, args.units.into())?;
        let models = points.rhauc_per_model();
        let note = points.scale_detected.then(|| {
            format!(
                "accuracies read as {} ({}); pass --units to override",
                if points.scale == Scale::Percent {
                    "percent (0-100)"
                } else {
                    "fractions (0-1)"
                },
                if points.scale == Scale::Percent {
                    "a value above 1 or a % sign was found"
                } else {
                    "no value above 1"
                }
            )
        });
        let mut groups = serde_json::Map::new();
        let rows = points.model_rows(&models);
        for label in &args.group_by {
            let label = label.to_ascii_lowercase();
            let g = group_means(&rows, &label);
            if g.is_empty() {
                bail!("--group-by {label}: no point has a `{label}` column");
            }
            groups.insert(label, serde_json::to_value(g)?);
        }
        let extra = json!({
            "scale": points.scale.to_string(),
            "scale_detected": points.scale_detected,
            "skipped": points.skipped,
            "groups": groups,
        });
        (models, note, extra)
    };
    if models.is_empty() {
        bail!("no points with both reasoning and perception accuracy");
    }
    if models.iter().all(|m| m.rh_auc.is_none()) {
        let m = &models[0];
        let err = m.error.clone().unwrap_or_default();
        if models.len() == 1 {
            bail!("{err}");
        }
        bail!(
            "RH-AUC is undefined for every model (first, {}: {err})",
            m.model
        );
    }
    if args.json {
        let mut out = RhAucReport::new(&models);
        if let Some(e) = extra.as_object() {
            out.extra = e.clone();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if let Some(n) = scale_note {
        eprintln!("note: {n}");
    }
    if let Some(skipped) = extra.get("skipped").and_then(|s| s.as_array()) {
        for s in skipped {
            eprintln!("note: skipped {}", s.as_str().unwrap_or_default());
        }
    }
    print!("{}", rhauc_table(&models));
    if let Some(groups) = extra.get("groups").and_then(|g| g.as_object()) {
        for (label, g) in groups {
            let g: Vec<metrics::GroupMean> = serde_json::from_value(g.clone())?;
            println!();
            print!("{}", group_table(label, &g));
        }
    }
    Ok(())
}

/// Join shard run directories into one.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Output run directory (must not hold results yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Shard run directories, each with results.jsonl and manifest.json.
    #[arg(required = true, value_name = "SHARD_DIR")]
    pub shard_dirs: Vec<PathBuf>,
    /// Fail (non-zero exit) when keys are missing or duplicated.
    #[arg(long)]
    pub strict: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run_merge(args: MergeArgs) -> Result<()> {
    let report = merge_runs(&args.out, &args.shard_dirs)?;
    let show = |keys: &[crate::bench::results::RecordKey]| -> Vec<String> {
        keys.iter().take(10).map(|k| k.to_string()).collect()
    };
    if args.json {
        let out = json!({
            "out": args.out.display().to_string(),
            "written": report.written,
            "per_shard": report.per_shard.iter().map(|(d, n)| json!({"dir": d.display().to_string(), "records": n})).collect::<Vec<_>>(),
            "duplicates": report.duplicates,
            "missing": report.missing,
            "unexpected": report.unexpected,
            "line_problems": report.line_problems.iter().map(|(p, l)| json!({"file": p.display().to_string(), "line": l.line, "reason": l.reason, "torn": l.torn})).collect::<Vec<_>>(),
            "has_manifest": report.has_manifest,
            "complete": report.is_complete(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (dir, n) in &report.per_shard {
            println!("{n:>8} records  {}", dir.display());
        }
        println!(
            "{:>8} written to {}",
            report.written,
            args.out.join("results.jsonl").display()
        );
        for (p, l) in &report.line_problems {
            eprintln!("note: {} {l}", p.display());
        }
        if !report.duplicates.is_empty() {
            eprintln!(
                "warning: {} duplicated keys (first copy kept), e.g. {}",
                report.duplicates.len(),
                show(&report.duplicates).join("; ")
            );
        }
        if !report.has_manifest {
            eprintln!("warning: no shard has a manifest.json, so missing work cannot be listed");
        } else if report.missing.is_empty() {
            println!("complete: every expected result is present");
        } else {
            eprintln!(
                "warning: {} expected results missing, e.g. {}",
                report.missing.len(),
                show(&report.missing).join("; ")
            );
        }
        if !report.unexpected.is_empty() {
            eprintln!(
                "warning: {} results not in the manifest, e.g. {}",
                report.unexpected.len(),
                show(&report.unexpected).join("; ")
            );
        }
    }
    if args.strict && (!report.missing.is_empty() || !report.duplicates.is_empty()) {
        bail!(
            "merge incomplete: {} missing, {} duplicated",
            report.missing.len(),
            report.duplicates.len()
        );
    }
    Ok(())
}
