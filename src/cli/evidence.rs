//! `rhlens evidence`: evidence beyond the raw visual share for saved traces (or every trace of a
//! sweep): spatial spread, attention sinks, the heads table, attention inside evidence boxes
//! (no model needed) and, with `--image-dependence`, how much each generated token depends on
//! the image (a teacher-forced ablated pass, which loads the model).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::common::ModelArgs;
use crate::formats::evidence::{
    self, Ablation, Dependence, Evidence, EvidenceOptions, SinkRule, SweepEvidenceRow,
    DEPENDENCE_JSON, EVIDENCE_JSON, HEADS_CSV, SWEEP_EVIDENCE_CSV,
};
use crate::formats::spatial::PixelBox;
use crate::formats::sweep::SweepSummary;
use crate::formats::trace::Trace;
use crate::render::evidence::{render_evidence, render_sweep_evidence, EvidenceSource};
use crate::render::Canvas;
use crate::runtime::Runtime;

/// `--image-dependence` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AblationArg {
    /// the image filled with its mean colour (same grid and positions)
    Blank,
    /// the image tokens removed (positions recomputed)
    Drop,
}

impl AblationArg {
    fn ablation(self) -> Ablation {
        match self {
            AblationArg::Blank => Ablation::Blank,
            AblationArg::Drop => Ablation::Drop,
        }
    }
}

#[derive(Args, Debug)]
pub struct EvidenceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Trace directories to measure (results go into each: evidence.json, heads.csv,
    /// dependence.json, evidence/*.png) [default: none; give this or --sweep]
    #[arg(long, value_name = "DIR", num_args = 1.., required_unless_present = "sweep", conflicts_with = "sweep")]
    pub trace: Vec<PathBuf>,
    /// A sweep directory: measure each of its traces and write evidence_summary.csv and
    /// sweep_evidence.png beside its summary [default: none; give this or --trace]
    #[arg(long, value_name = "DIR")]
    pub sweep: Option<PathBuf>,
    /// Also measure image dependence per generated token with these ablations (blank, drop;
    /// comma-separated): one teacher-forced pass each, on --model (the trace's model) [default:
    /// none]
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ABLATIONS",
        hide_possible_values = true
    )]
    pub image_dependence: Vec<AblationArg>,
    /// Evidence box x0,y0,x1,y1 in original-image pixels (repeat for several): the share of
    /// visual attention inside it per layer and window [default: none]
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = parse_box, allow_hyphen_values = true)]
    pub boxes: Vec<PixelBox>,
    /// Sink rule: an image token receiving at least RATIO times the uniform share of a layer's
    /// visual attention...
    #[arg(long, value_name = "RATIO", default_value_t = 20.0)]
    pub sink_ratio: f64,
    /// ...in more than this fraction of the layers is an attention sink
    #[arg(long, value_name = "FRACTION", default_value_t = 0.5)]
    pub sink_layers: f64,
    /// Head split: a head whose visual share during thinking is at least Z standard deviations
    /// above the mean head is a perception head, any other a reasoning head
    #[arg(
        long,
        value_name = "Z",
        default_value_t = 1.0,
        allow_hyphen_values = true
    )]
    pub perception_z: f64,
    /// Measure image dependence again where dependence.json already holds the ablations asked for
    #[arg(long)]
    pub force: bool,
    /// Write the numbers only, no figures
    #[arg(long)]
    pub no_figures: bool,
    /// No progress lines
    #[arg(long)]
    pub quiet: bool,
}

/// `x0,y0,x1,y1`, four finite numbers.
fn parse_box(s: &str) -> Result<PixelBox, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{s}` is not four numbers x0,y0,x1,y1"))?;
    let [x0, y0, x1, y1] = v[..] else {
        return Err(format!("`{s}` is not four numbers x0,y0,x1,y1"));
    };
    let b = PixelBox { x0, y0, x1, y1 };
    if !(x0 < x1 && y0 < y1) || v.iter().any(|x| !x.is_finite()) {
        return Err(format!("`{s}`: a box needs x0 < x1 and y0 < y1"));
    }
    Ok(b)
}

impl EvidenceArgs {
    fn options(&self) -> Result<EvidenceOptions> {
        if !(self.sink_ratio.is_finite() && self.sink_ratio > 0.0) {
            bail!(
                "--sink-ratio must be a positive number, not {}",
                self.sink_ratio
            );
        }
        if !(0.0..1.0).contains(&self.sink_layers) {
            bail!("--sink-layers must lie in [0, 1), not {}", self.sink_layers);
        }
        if !self.perception_z.is_finite() {
            bail!("--perception-z must be a finite number");
        }
        if self.force && self.image_dependence.is_empty() {
            bail!("--force only applies to --image-dependence, which is not given");
        }
        Ok(EvidenceOptions {
            sinks: SinkRule {
                ratio: self.sink_ratio,
                layer_fraction: self.sink_layers,
            },
            perception_z: self.perception_z,
            boxes: self.boxes.clone(),
        })
    }

    fn ablations(&self) -> Vec<Ablation> {
        let mut v: Vec<Ablation> = Vec::new();
        for a in &self.image_dependence {
            if !v.contains(&a.ablation()) {
                v.push(a.ablation());
            }
        }
        v
    }
}

/// The model, loaded at the first trace that needs it.
struct LazyModel<'a> {
    args: &'a ModelArgs,
    quiet: bool,
    rt: Option<Runtime>,
}

impl LazyModel<'_> {
    fn get(&mut self) -> Result<&Runtime> {
        if self.rt.is_none() {
            let mut rt = self.args.load()?;
            // explicit softmax attention, as Hugging Face's eager path: the ablated and the
            // plain pass agree with a reference to float32 rounding, not to fused-kernel noise
            rt.model.attn_impl = crate::model::AttnImpl::Eager;
            if let Some(note) = rt.random_weights_note().filter(|_| !self.quiet) {
                eprintln!("{note}");
            }
            self.rt = Some(rt);
        }
        Ok(self.rt.as_ref().expect("loaded above"))
    }
}

pub fn run(args: EvidenceArgs) -> Result<()> {
    let opts = args.options()?;
    let ablations = args.ablations();
    let mut model = LazyModel {
        args: &args.model,
        quiet: args.quiet,
        rt: None,
    };
    let Some(sweep) = &args.sweep else {
        for dir in &args.trace {
            one_trace(&args, dir, &opts, &ablations, &mut model)?;
        }
        return Ok(());
    };
    let summary = SweepSummary::read(sweep)?;
    let mut rows = Vec::new();
    for row in &summary.rows {
        let dir = sweep.join(&row.trace);
        let (ev, dep) = one_trace(&args, &dir, &opts, &ablations, &mut model)?;
        rows.push(sweep_row(
            &row.setting,
            row.value,
            row.sample,
            &ev,
            dep.as_ref(),
        ));
    }
    let csv = evidence::sweep_evidence_csv(&rows);
    crate::fsutil::write_atomic(&sweep.join(SWEEP_EVIDENCE_CSV), csv.as_bytes())
        .with_context(|| format!("writing {}", sweep.join(SWEEP_EVIDENCE_CSV).display()))?;
    if !args.no_figures {
        let mut subtitles = vec![format!("{} · {}", summary.model, summary.prompt)];
        if summary.random_weights {
            subtitles[0].push_str(" · RANDOM WEIGHTS (demo checkpoint, not a trained model)");
        }
        render_sweep_evidence(
            &rows,
            &summary.kind,
            subtitles,
            &sweep.join("figures"),
            &Canvas::default(),
        )?;
    }
    eprintln!(
        "evidence: {} ({} settings)",
        sweep.join(SWEEP_EVIDENCE_CSV).display(),
        rows.len()
    );
    Ok(())
}

fn sweep_row(
    setting: &str,
    value: f64,
    sample: Option<usize>,
    ev: &Evidence,
    dep: Option<&Dependence>,
) -> SweepEvidenceRow {
    let entropies: Vec<Option<f64>> = ev.spread.by_layer.iter().map(|s| s.entropy).collect();
    SweepEvidenceRow {
        setting: setting.to_string(),
        value,
        sample,
        visual_share: ev.sinks.visual_share,
        sink_free_visual_share: ev.sinks.sink_free_visual_share,
        sinks: ev.sinks.tokens.len(),
        entropy: evidence::mean_present(&entropies),
        box_mass: ev.boxes.first().and_then(|b| b.mean),
        dependence: dep
            .map(|d| d.variants.iter().map(|v| (v.ablation, v.summary)).collect())
            .unwrap_or_default(),
    }
}

/// Everything for one trace: the attention metrics, the dependence when asked for (kept when
/// already measured), the figures; returns what was written.
fn one_trace(
    args: &EvidenceArgs,
    dir: &Path,
    opts: &EvidenceOptions,
    ablations: &[Ablation],
    model: &mut LazyModel<'_>,
) -> Result<(Evidence, Option<Dependence>)> {
    let trace = Trace::read(dir)?;
    let (ev, heads) =
        evidence::evidence(&trace, opts).with_context(|| dir.display().to_string())?;
    evidence::write_json(dir, EVIDENCE_JSON, &ev)?;
    if let Some(rows) = &heads {
        crate::fsutil::write_atomic(&dir.join(HEADS_CSV), evidence::heads_csv(rows).as_bytes())
            .with_context(|| format!("writing {}", dir.join(HEADS_CSV).display()))?;
    }
    let mut dep = Dependence::read(dir)?;
    let measured = |d: &Option<Dependence>| {
        d.as_ref()
            .is_some_and(|d| ablations.iter().all(|a| d.variant(*a).is_some()))
    };
    if !ablations.is_empty() && (args.force || !measured(&dep)) {
        let rt = model.get()?;
        let steering = trace_steering(rt, &trace)?;
        let d = crate::probe::dependence::measure(rt, dir, ablations, steering.as_ref())?;
        evidence::write_json(dir, DEPENDENCE_JSON, &d)?;
        dep = Some(d);
    }
    if !args.no_figures {
        let src = EvidenceSource {
            trace: &trace,
            evidence: &ev,
            heads: heads.as_deref(),
            dependence: dep.as_ref(),
        };
        render_evidence(&src, &dir.join("evidence"), &Canvas::default())?;
    }
    if !args.quiet {
        eprintln!("{}", describe(dir, &ev, dep.as_ref()));
    }
    Ok((ev, dep))
}

/// The steering the trace was generated with (its file and weight, from its settings).
fn trace_steering(rt: &Runtime, trace: &Trace) -> Result<Option<tch::Tensor>> {
    let s = &trace.meta.settings;
    let weight = s
        .get("steer_weight")
        .and_then(|w| w.as_f64())
        .unwrap_or(0.0);
    match s.get("steer").and_then(|p| p.as_str()) {
        Some(path) if weight != 0.0 => crate::steer::load_scaled(Path::new(path), rt, weight)
            .with_context(|| format!("{}: the trace was steered", trace.dir.display())),
        _ => Ok(None),
    }
}

fn describe(dir: &Path, ev: &Evidence, dep: Option<&Dependence>) -> String {
    let mut line = format!(
        "{}: visual share {:.4} ({:.4} without {} sink tokens)",
        dir.display(),
        ev.sinks.visual_share,
        ev.sinks.sink_free_visual_share,
        ev.sinks.tokens.len()
    );
    for v in dep.map(|d| d.variants.as_slice()).unwrap_or_default() {
        if let Some(all) = v.summary.all {
            line.push_str(&format!(
                "; {}: mean KL {:.4}, mean Δ log p {:.4}",
                v.ablation.name(),
                all.kl,
                all.delta_logp
            ));
        }
    }
    line
}
