//! Benchmarks: RH-Bench data, the results store and resumable runner, the evaluation workflow,
//! scoring (rule-based or an LLM judge), metrics and RH-AUC.
//!
//! Modules, each importing only those listed before it (the imports form no circle):
//!
//! 1. [`text`]: number, phrase and CSV helpers (imports no other bench module).
//! 2. [`data`]: load RH-Bench (or a generic JSON/JSONL bench) into validated [`data::Sample`]s.
//! 3. [`shard`]: shard `I` of `N` of a run's work.
//! 4. [`results`]: one JSON line per (sample, setting, sample index) in `RUN_DIR/results.jsonl`,
//!    crash-safe appends and the run manifest (data, shard, text).
//! 5. [`runner`]: the resumable, shardable loop and the progress it reports (data, results,
//!    shard).
//! 6. [`eval`]: the evaluation workflow; the one bench module that runs the model, through the
//!    probe (data, results, runner, shard).
//! 7. [`merge`]: join shard directories into one run (results).
//! 8. [`rule`]: answer extraction and the rule-based scorer (data, results, text).
//! 9. [`judge`]: the LLM judge (data, results, rule, text).
//! 10. [`scores`]: `RUN_DIR/scores.jsonl` records (data, results, rule).
//! 11. [`metrics`]: accuracies per (model, setting), RH-AUC and its bootstrap interval (data,
//!     scores, text).
//! 12. [`score`]: `score_run`, results to scores, metrics and RH-AUC files (judge, metrics,
//!     results, rule, scores).
//! 13. [`points`]: accuracy points files for `rhlens rhauc --points` (metrics, text).
//! 14. [`report`]: terminal tables (metrics).

pub mod data;
pub mod eval;
pub mod judge;
pub mod merge;
pub mod metrics;
pub mod points;
pub mod report;
pub mod results;
pub mod rule;
pub mod runner;
pub mod score;
pub mod scores;
pub mod shard;
mod text;

pub use data::{load_bench, Bench, QuestionType, RecordProblem, Sample, Split};
pub use merge::{merge_runs, MergeReport};
pub use metrics::{rh_auc, RhAuc, RhAucError};
pub use results::{read_results, Manifest, ResultRecord, ResultsWriter, Setting};
pub use runner::{run_resumable, RunOptions, RunSummary};
pub use score::{score_run, ScoreOptions, ScoreSummary};
pub use shard::Shard;
pub use text::parse_csv;
