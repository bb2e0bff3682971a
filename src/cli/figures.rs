//! `rhlens figures`: draw every figure the given traces, sweep and metrics files allow.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, ValueEnum};

use crate::formats::trace::{Trace, TraceError};
use crate::render::aggregate::{self, AggregateSummary, GroupBy, AGGREGATE_FILE};
use crate::render::aggregate_figures::Allocation;
use crate::render::traces::IMAGE_NOT_FOUND;
use crate::render::{
    self, Canvas, ColorScale, Colormap, LayerSelection, LengthAxis, RenderOptions, Rendered,
    Upsample,
};

/// Arguments of `rhlens figures`.
#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("inputs")
        .required(true)
        .multiple(true)
        .args(["trace", "sweep", "results", "traces", "aggregate", "allocation"])
))]
pub struct FiguresArgs {
    /// Trace directories (from `rhlens trace`); two or more are also compared side by side
    /// [default: none; give at least one of --trace, --sweep, --results]
    #[arg(long, num_args = 1.., value_name = "DIR")]
    pub trace: Vec<PathBuf>,

    /// Sweep directory (from `rhlens sweep`, holding summary.json) [default: none]
    #[arg(long, value_name = "DIR")]
    pub sweep: Option<PathBuf>,

    /// Metrics files (CSV or JSON rows: model, setting, setting_value, reasoning, perception, ...)
    /// [default: none]
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub results: Vec<PathBuf>,

    /// Traces to aggregate: trace directories, or directories holding them (an eval run, its
    /// `traces/`, a sweep), e.g. a shell glob such as runs/*/traces/*; writes OUT/aggregate.json
    /// and draws the mean and 95% interval across traces per group [default: none]
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub traces: Vec<PathBuf>,

    /// How --traces are grouped: by model name, by the eval or sweep setting, or by whether the
    /// answer was scored correct (a scored eval run's scores.jsonl)
    #[arg(long, value_enum, default_value_t = GroupByArg::Model, requires = "traces")]
    pub group_by: GroupByArg,

    /// An aggregate summary written by --traces (OUT/aggregate.json) to draw again [default: none]
    #[arg(long, value_name = "FILE", conflicts_with = "traces")]
    pub aggregate: Option<PathBuf>,

    /// Outputs of `rhlens layers` (directories holding allocation.json), one line per model in
    /// the layer-allocation figure [default: none]
    #[arg(long, num_args = 1.., value_name = "DIR")]
    pub allocation: Vec<PathBuf>,

    /// Publication mode: no titles or provenance lines, 3.3 in (one panel) or 6.9 in (several)
    /// wide at 300 dpi, smaller text, and a PDF of every figure
    #[arg(long)]
    pub paper: bool,

    /// Output directory (created if missing); one that already holds files is refused unless
    /// --force
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Draw into an output directory that already holds files, replacing figures of the same name
    #[arg(long)]
    pub force: bool,

    /// Names of the traces in titles, legends and directory names, one per --trace, in order
    /// [default: the model names when the traces come from different models, else the trace
    /// directory names]
    #[arg(long = "label", value_name = "NAME", num_args = 1..)]
    pub labels: Vec<String>,

    /// Image to draw under the maps instead of the one recorded in the trace (for an image that
    /// moved) [default: the trace's image, found relative to the trace directory, then as
    /// recorded]
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,

    /// Also write every figure as SVG
    #[arg(long)]
    pub svg: bool,

    /// Canvas width in layout pixels, before --scale (default: sized to the figure)
    #[arg(long, value_name = "PX")]
    pub width: Option<u32>,

    /// Canvas height in layout pixels, before --scale (default: sized to the figure, or in
    /// proportion to --width)
    #[arg(long, value_name = "PX")]
    pub height: Option<u32>,

    /// Multiply the canvas and every size in it (2 = twice the resolution, for print)
    #[arg(
        long,
        value_name = "FACTOR",
        default_value_t = 1.0,
        conflicts_with = "dpi"
    )]
    pub scale: f64,

    /// Resolution as dots per inch, an alternative to --scale (100 dpi = scale 1) [default: from
    /// --scale]
    #[arg(long, value_name = "DPI")]
    pub dpi: Option<f64>,

    /// Layers to draw, e.g. 0,4,8-12 (default: every captured layer)
    #[arg(long, value_name = "LIST")]
    pub layers: Option<LayerSelection>,

    /// Opacity of the heatmap over the photograph, 0-1
    #[arg(long, value_name = "A", default_value_t = 0.5)]
    pub alpha: f64,

    /// Colormap of heatmaps and of ordered series
    #[arg(long, value_enum, default_value_t = ColormapArg::Viridis)]
    pub colormap: ColormapArg,

    /// Rolling-mean window, in steps, of curves along the reasoning chain (default: steps/40)
    #[arg(long, value_name = "STEPS")]
    pub window: Option<usize>,

    /// How the token grid is spread over image pixels in overlays
    #[arg(long, value_enum, default_value_t = UpsampleArg::Smooth)]
    pub upsample: UpsampleArg,

    /// One colour scale for all panels of a figure, or one per panel
    #[arg(long, value_enum, default_value_t = ColorScaleArg::Shared)]
    pub color_scale: ColorScaleArg,

    /// x axis of accuracy vs reasoning length
    #[arg(long, value_enum, default_value_t = LengthAxisArg::Auto)]
    pub length_axis: LengthAxisArg,

    /// Draw traces whose run did not finish (saved checkpoints)
    #[arg(long)]
    pub allow_partial: bool,

    /// Print nothing but warnings and errors (no notes, no list of files)
    #[arg(long)]
    pub quiet: bool,

    /// Print one JSON object {"files": [...], "notes": [...]} instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColormapArg {
    Viridis,
    Magma,
    Inferno,
    Plasma,
    Turbo,
    Cividis,
}

impl From<ColormapArg> for Colormap {
    fn from(c: ColormapArg) -> Colormap {
        match c {
            ColormapArg::Viridis => Colormap::Viridis,
            ColormapArg::Magma => Colormap::Magma,
            ColormapArg::Inferno => Colormap::Inferno,
            ColormapArg::Plasma => Colormap::Plasma,
            ColormapArg::Turbo => Colormap::Turbo,
            ColormapArg::Cividis => Colormap::Cividis,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupByArg {
    /// The model name each trace records
    Model,
    /// The setting (budget=100, waits=2, ...) of the eval run or sweep that wrote the trace
    Setting,
    /// Correct or incorrect answer (scores.jsonl of a scored eval run)
    Correct,
}

impl From<GroupByArg> for GroupBy {
    fn from(g: GroupByArg) -> GroupBy {
        match g {
            GroupByArg::Model => GroupBy::Model,
            GroupByArg::Setting => GroupBy::Setting,
            GroupByArg::Correct => GroupBy::Correct,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpsampleArg {
    /// Bilinear between token centres
    Smooth,
    /// One flat block per token (exact token boxes)
    Nearest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorScaleArg {
    Shared,
    Panel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LengthAxisArg {
    /// Mean thinking tokens when every row has them, else the setting value
    Auto,
    /// Mean thinking tokens of the setting (`mean_think_tokens`)
    ThinkTokens,
    /// The setting's number (`setting_value`: budget, waits, steering weight)
    SettingValue,
}

impl FiguresArgs {
    /// The rendering options these arguments ask for.
    pub fn options(&self) -> Result<RenderOptions> {
        let scale = match self.dpi {
            Some(d) if d > 0.0 => d / 100.0,
            Some(d) => bail!("--dpi must be positive, got {d}"),
            // publication mode prints at 300 dpi unless asked otherwise
            None if self.paper && self.scale == 1.0 => 3.0,
            None => self.scale,
        };
        Ok(RenderOptions {
            canvas: Canvas {
                width: self.width,
                height: self.height,
                scale,
                png: true,
                svg: self.svg,
                paper: self.paper,
                text: 1.0,
            },
            colormap: self.colormap.into(),
            alpha: self.alpha,
            upsample: match self.upsample {
                UpsampleArg::Smooth => Upsample::Smooth,
                UpsampleArg::Nearest => Upsample::Nearest,
            },
            color_scale: match self.color_scale {
                ColorScaleArg::Shared => ColorScale::Shared,
                ColorScaleArg::Panel => ColorScale::Panel,
            },
            layers: self.layers.clone(),
            window: self.window,
            length_axis: match self.length_axis {
                LengthAxisArg::Auto => LengthAxis::Auto,
                LengthAxisArg::ThinkTokens => LengthAxis::ThinkTokens,
                LengthAxisArg::SettingValue => LengthAxis::SettingValue,
            },
            image: self.image.clone(),
        })
    }
}

/// Runs `rhlens figures`.
pub fn run(args: FiguresArgs) -> Result<()> {
    let opts = args.options()?;
    if !args.labels.is_empty() && args.trace.is_empty() {
        bail!("--label names traces; pass them with --trace");
    }
    // every input is read before the output directory is touched
    let traces = read_traces(&args)?;
    let mut rows = Vec::new();
    for f in &args.results {
        rows.extend(render::results::read_metrics(f)?);
    }
    let summary = read_aggregate(&args)?;
    let allocations = read_allocations(&args.allocation)?;
    let holds_files = fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some());
    if holds_files && !args.force {
        bail!(
            "{} already holds files: choose another --out or pass --force to draw into it",
            args.out.display()
        );
    }
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let mut all = Rendered::default();
    if !traces.is_empty() {
        merge(&mut all, render::render_traces(&traces, &args.out, &opts)?);
    }
    if let Some(dir) = &args.sweep {
        let drawn =
            render::render_sweep(dir, &args.out, &opts, args.allow_partial).map_err(with_flags)?;
        merge(&mut all, drawn);
    }
    if !args.results.is_empty() {
        merge(&mut all, render::render_results(&rows, &args.out, &opts)?);
    }
    if let Some(summary) = summary {
        let mut drawn = Rendered::default();
        if !args.traces.is_empty() {
            // figures are drawn from the saved file, as a later --aggregate draws them again
            let path = args.out.join(AGGREGATE_FILE);
            summary.write(&path)?;
            drawn.files.push(path.clone());
            let saved = AggregateSummary::read(&path)?;
            merge(
                &mut drawn,
                render::render_aggregate(&saved, &args.out, &opts)?,
            );
        } else {
            merge(
                &mut drawn,
                render::render_aggregate(&summary, &args.out, &opts)?,
            );
        }
        merge(&mut all, drawn);
    }
    if !allocations.is_empty() {
        merge(
            &mut all,
            render::render_allocations(&allocations, &args.out, &opts)?,
        );
    }
    if args.json {
        let v = serde_json::json!({
            "files": all.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "notes": all.notes,
        });
        println!("{v}");
    } else {
        report(&all, &args.out, args.quiet);
    }
    Ok(())
}

/// The aggregate of `--traces` (computed) or `--aggregate` (read), if asked for.
fn read_aggregate(args: &FiguresArgs) -> Result<Option<AggregateSummary>> {
    if let Some(path) = &args.aggregate {
        return AggregateSummary::read(path).map(Some);
    }
    if args.traces.is_empty() {
        return Ok(None);
    }
    let found = aggregate::find_traces(&args.traces)?;
    aggregate::aggregate(&found, args.group_by.into(), args.allow_partial)
        .map(Some)
        .map_err(with_flags)
}

/// The `--allocation` outputs, labelled by their model names (repeats get `-2`, ...).
fn read_allocations(dirs: &[PathBuf]) -> Result<Vec<(String, Allocation)>> {
    let mut out: Vec<(String, Allocation)> = Vec::new();
    for d in dirs {
        let a = Allocation::read(d)?;
        let base = if a.model.is_empty() {
            d.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "model".into())
        } else {
            a.model.clone()
        };
        let mut label = base.clone();
        let mut k = 2;
        while out.iter().any(|(l, _)| *l == label) {
            label = format!("{base}-{k}");
            k += 1;
        }
        out.push((label, a));
    }
    Ok(out)
}

/// The `--trace` directories read, with their labels.
fn read_traces(args: &FiguresArgs) -> Result<Vec<(String, Trace)>> {
    let mut read = Vec::new();
    for dir in &args.trace {
        let t = if args.allow_partial {
            Trace::read_allow_partial(dir)
        } else {
            Trace::read(dir)
        }
        .map_err(|e| with_flags(e.into()))?;
        read.push((dir.clone(), t));
    }
    let labels = render::trace_labels(&read, &args.labels)?;
    Ok(labels
        .into_iter()
        .zip(read)
        .map(|(l, (_, t))| (l, t))
        .collect())
}

/// Tells the user what was drawn into `out`: notes and the figure files (nothing when quiet).
pub fn report(drawn: &Rendered, out: &Path, quiet: bool) {
    if quiet {
        return;
    }
    for n in &drawn.notes {
        eprintln!("note: {n}");
    }
    if drawn.notes.iter().any(|n| n.ends_with(IMAGE_NOT_FOUND)) {
        eprintln!("note: pass --image FILE to draw a moved image under the maps");
    }
    for f in &drawn.files {
        println!("{}", f.display());
    }
    eprintln!(
        "wrote {} figure files to {}",
        drawn.files.len(),
        out.display()
    );
}

/// A partial trace refused: say which flag draws it anyway.
fn with_flags(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<TraceError>() {
        Some(TraceError::Partial { dir }) => anyhow::anyhow!(
            "{} is a partial trace: the run that wrote it did not finish (rerun it, or pass \
             --allow-partial to draw what it saved)",
            dir.display()
        ),
        _ => e,
    }
}

fn merge(all: &mut Rendered, r: Rendered) {
    all.files.extend(r.files);
    all.notes.extend(r.notes);
}
