//! Figure values and the one loop that saves them.
//!
//! Each figure is built by a named builder (a function from a data source and the options to
//! the figures it allows); each source (traces, a sweep, metrics rows) lists its builders in one
//! table, and [`draw_table`] runs a table and saves what it builds.

use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::charts::{ChartFigure, MatrixFigure, StackFigure};
use super::maps::MapFigure;
use super::output::{save, Figure};
use super::style::Style;
use super::{RenderOptions, Rendered};

/// Any figure rhlens draws.
#[derive(Debug, Clone)]
pub enum AnyFigure {
    Map(MapFigure),
    Chart(ChartFigure),
    Stack(StackFigure),
    Matrix(MatrixFigure),
}

impl Figure for AnyFigure {
    fn size(&self) -> (u32, u32) {
        match self {
            AnyFigure::Map(f) => f.size(),
            AnyFigure::Chart(f) => f.size(),
            AnyFigure::Stack(f) => f.size(),
            AnyFigure::Matrix(f) => f.size(),
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, st: &Style) -> Result<()> {
        match self {
            AnyFigure::Map(f) => f.draw(root, st),
            AnyFigure::Chart(f) => f.draw(root, st),
            AnyFigure::Stack(f) => f.draw(root, st),
            AnyFigure::Matrix(f) => f.draw(root, st),
        }
    }
}

impl AnyFigure {
    /// The figure without its title and subtitles (the provenance lines), for publication.
    pub fn without_titles(&self) -> AnyFigure {
        let mut f = self.clone();
        let (title, subtitles) = match &mut f {
            AnyFigure::Map(f) => (&mut f.title, &mut f.subtitles),
            AnyFigure::Chart(f) => (&mut f.title, &mut f.subtitles),
            AnyFigure::Stack(f) => (&mut f.title, &mut f.subtitles),
            AnyFigure::Matrix(f) => (&mut f.title, &mut f.subtitles),
        };
        title.clear();
        subtitles.clear();
        f
    }

    /// How many panels the figure has (one-panel figures fit one column of a paper).
    pub fn panel_count(&self) -> usize {
        match self {
            AnyFigure::Map(f) => f.groups.iter().map(|g| g.panels.len()).sum(),
            AnyFigure::Chart(f) => f.panels.len(),
            AnyFigure::Stack(f) => f.panels.len(),
            AnyFigure::Matrix(f) => f.panels.len(),
        }
    }
}

macro_rules! any_figure_from {
    ($($kind:ident: $ty:ty),*) => {$(
        impl From<$ty> for AnyFigure {
            fn from(f: $ty) -> AnyFigure {
                AnyFigure::$kind(f)
            }
        }
    )*};
}
any_figure_from!(Map: MapFigure, Chart: ChartFigure, Stack: StackFigure, Matrix: MatrixFigure);

/// A figure and the file stem (relative to the output directory, no extension) it is saved as.
#[derive(Debug, Clone)]
pub struct Named {
    pub stem: PathBuf,
    pub figure: AnyFigure,
}

impl Named {
    pub fn new(stem: impl Into<PathBuf>, figure: impl Into<AnyFigure>) -> Named {
        Named {
            stem: stem.into(),
            figure: figure.into(),
        }
    }
}

/// Builds every figure of `table` from `source` and saves each under `out`, in table order. A
/// table lists figure builders: each returns the figures (none, one or several) `source` allows.
pub fn draw_table<S: ?Sized, B: Fn(&S, &RenderOptions) -> Vec<Named>>(
    table: &[B],
    source: &S,
    out: &Path,
    opts: &RenderOptions,
    done: &mut Rendered,
) -> Result<()> {
    for build in table {
        for named in build(source, opts) {
            let stem = out.join(&named.stem);
            let written = if opts.canvas.paper {
                let fig = named.figure.without_titles();
                let canvas = opts.canvas.for_paper(fig.size(), fig.panel_count());
                save(&fig, &stem, &canvas)?
            } else {
                save(&named.figure, &stem, &opts.canvas)?
            };
            done.files.extend(written);
        }
    }
    Ok(())
}
