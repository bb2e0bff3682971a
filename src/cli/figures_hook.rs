//! Drawing figures at the end of commands that produce figure inputs.
use std::path::Path;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    figures: super::figures::FiguresArgs,
}

/// Run `rhlens figures` with these arguments.
pub fn figures(argv: &[&str]) -> Result<()> {
    let mut all = vec!["figures"];
    all.extend_from_slice(argv);
    let w = Wrap::try_parse_from(all).map_err(|e| anyhow::anyhow!("{e}"))?;
    super::figures::run(w.figures)
}

/// The figures of a sweep directory, into DIR/figures.
pub fn sweep_figures(dir: &Path, quiet: bool) -> Result<()> {
    let out = dir.join("figures");
    let (d, o) = (dir.to_string_lossy(), out.to_string_lossy());
    let mut argv = vec!["--sweep", d.as_ref(), "--out", o.as_ref()];
    if quiet {
        argv.push("--quiet");
    }
    figures(&argv)
}
