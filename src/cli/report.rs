//! `rhlens report`: one self-contained HTML page to explore traces token by token.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;

use crate::report::{self, Layout, ReportTrace};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Trace directory (repeat for two traces side by side, e.g. base and reasoning model on one
    /// image; more than two get a switch on each side) [default: none; give this or --sweep]
    #[arg(long, value_name = "DIR", required_unless_present = "sweep")]
    pub trace: Vec<PathBuf>,
    /// A sweep directory (from `rhlens sweep`): one page with a switch between its settings
    /// [default: none; give this or --trace]
    #[arg(long, value_name = "DIR", conflicts_with = "trace")]
    pub sweep: Option<PathBuf>,
    /// The HTML file to write
    #[arg(long, value_name = "FILE.html")]
    pub out: PathBuf,
    /// Also use traces whose run was interrupted (what they saved)
    #[arg(long)]
    pub allow_partial: bool,
}

pub fn run(args: ReportArgs) -> Result<()> {
    if args.out.is_dir() {
        bail!(
            "--out {} is a directory; give the HTML file to write",
            args.out.display()
        );
    }
    let started = Instant::now();
    let (traces, layout) = match &args.sweep {
        Some(dir) => (
            report::sweep_traces(dir, args.allow_partial)?,
            Layout::Sweep,
        ),
        None => {
            let traces = args
                .trace
                .iter()
                .map(|d| report::read_trace(d, args.allow_partial).map(ReportTrace::new))
                .collect::<Result<Vec<_>>>()?;
            (traces, Layout::SideBySide)
        }
    };
    write_and_say(&traces, layout, &args.out, started)
}

/// Writes the page and says where it is (and what it had to do without) on stderr.
/// `started`: when reading the traces began (the time reported covers reading and writing).
pub fn write_and_say(
    traces: &[ReportTrace],
    layout: Layout,
    out: &Path,
    started: Instant,
) -> Result<()> {
    for note in report::write(traces, layout, out)? {
        eprintln!("warning: {note}");
    }
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "report: {} ({:.1} MB, {} trace{}, written in {:.2} s)",
        out.display(),
        size as f64 / 1e6,
        traces.len(),
        if traces.len() == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
