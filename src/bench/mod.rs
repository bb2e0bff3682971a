//! Benchmarks without a model: RH-Bench data, the results store and resumable runner, scoring
//! (rule-based or an LLM judge), metrics and RH-AUC.
//!
//! - [`data`]: load RH-Bench (or a generic JSON/JSONL bench) into validated [`data::Sample`]s.
//! - [`results`]: one JSON line per (sample, setting, sample index) in `RUN_DIR/results.jsonl`,
//!   crash-safe appends and the run manifest.
//! - [`runner`]: the resumable, shardable loop the evaluation command drives.
//! - [`merge`]: join shard directories into one run.
//! - [`score`], [`judge`]: answer extraction and correctness.
//! - [`metrics`]: accuracies per (model, setting), RH-AUC and its bootstrap interval.
//! - [`points`]: accuracy points files for `rhlens rhauc --points`.
//! - [`report`]: terminal tables.

pub mod data;
pub mod judge;
pub mod merge;
pub mod metrics;
pub mod points;
pub mod report;
pub mod results;
pub mod runner;
pub mod score;
mod text;

pub use data::{load_bench, Bench, QuestionType, RecordProblem, Sample, Split};
pub use merge::{merge_runs, MergeReport};
pub use metrics::{rh_auc, RhAuc, RhAucError};
pub use results::{read_results, Manifest, ResultRecord, ResultsWriter, Setting};
pub use runner::{run_resumable, RunOptions, RunSummary, Shard};
pub use score::{score_run, ScoreOptions, ScoreSummary};
pub use text::parse_csv;
