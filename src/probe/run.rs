//! One traced generation from image + prompt to a saved trace, and the prompt-only analysis.
//!
//! A trace being written is saved as it grows ([`Checkpoints`]): every N steps the arrays and
//! metadata captured so far replace the previous save (`complete: false`), and when the caller's
//! stop flag is raised (a signal handler: Slurm's time limit sends SIGTERM) the trace is saved
//! as it is and the run ends with [`Interrupted`], which says where the partial trace is.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use ndarray::Array2;
use tch::Tensor;

use super::capture::{Probe, ProbeConfig, VisionProbe};
use super::record::{finish_meta, trace_arrays, trace_meta};
use super::roles::prompt_roles;
use crate::checkpoint::TextTokenizer;
use crate::formats::trace::{TraceArrays, TraceMeta, TraceWriter};
use crate::fsutil::RunLock;
use crate::generate::{GenerateConfig, Generation, Generator, Hooks, Row, StepObserver};
use crate::model::{Captured, ForwardOptions, Observer, Site};
use crate::runtime::{Prompt, Runtime};

pub struct TraceRequest<'a> {
    pub image: &'a Path,
    pub prompt: &'a str,
    pub system: Option<&'a str>,
    pub generate: GenerateConfig,
    pub probe: ProbeConfig,
    /// also capture the vision tower's attention
    pub vision: bool,
    /// `[layers, hidden]`, already scaled by the steering weight
    pub steering: Option<&'a Tensor>,
    /// write the trace here (refusing an existing directory unless `force`)
    pub out: Option<&'a Path>,
    pub force: bool,
    /// merged into trace.json's settings
    pub settings: serde_json::Value,
}

pub struct TracedRun {
    pub generation: Generation,
    pub meta: TraceMeta,
    pub arrays: TraceArrays,
    pub dir: Option<PathBuf>,
}

fn new_probe(
    rt: &Runtime,
    prompt_ids: &[i64],
    prompt: &Prompt,
    cfg: ProbeConfig,
    max_steps: usize,
) -> Result<Probe> {
    let c = &rt.config.text;
    Probe::new(
        cfg,
        rt.model.num_layers(),
        c.num_attention_heads,
        c.num_key_value_heads,
        &prompt_roles(&prompt.spans, prompt_ids.len()),
        prompt.spans.visual,
        max_steps,
        rt.model.device,
    )
}

/// Steps between saves of a trace being written, unless the caller says otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: usize = 64;

/// When a trace being written is saved before its run ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checkpoints<'a> {
    /// Save every this many steps (0: only at the end).
    pub every: usize,
    /// Raised (by a signal handler) to stop: the trace is saved as it is and the run returns
    /// [`Interrupted`].
    pub stop: Option<&'a AtomicBool>,
}

/// A traced generation stopped by its caller's stop flag; the trace so far is saved.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted after {steps} steps: the partial trace (complete: false, {steps} steps) is in {}",
    dir.display()
)]
pub struct Interrupted {
    pub dir: PathBuf,
    pub steps: usize,
}

/// Everything a traced generation sets up before generating.
struct Setup {
    prompt: Prompt,
    ids: Vec<i64>,
    layers: Vec<usize>,
    meta: TraceMeta,
    writer: Option<TraceWriter>,
    /// held while the trace directory is written
    lock: Option<RunLock>,
}

fn setup(
    rt: &Runtime,
    generator: &Generator<'_>,
    req: &TraceRequest<'_>,
) -> Result<(Setup, Probe)> {
    let prompt = rt.prepare(req.image, req.prompt, req.system)?;
    let ids = generator.prompt_ids(&prompt.input_ids, &req.generate)?;
    // the probe's buffers are sized by max_new_tokens: refuse a request past the context first
    generator.check_context(ids.len(), &req.generate)?;
    let mut probe = new_probe(
        rt,
        &ids,
        &prompt,
        req.probe.clone(),
        req.generate.max_new_tokens,
    )?;
    if req.vision {
        probe = probe.with_vision(VisionProbe::new(
            prompt.image.grid_thw(),
            rt.config.vision.spatial_merge_size as i64,
            rt.model.vision.depth(),
        ));
    }
    let mut settings = recorded_settings(&req.generate, &req.probe);
    settings["attn_impl"] = format!("{:?}", rt.model.attn_impl).to_lowercase().into();
    // the system prompt as given, so that the generation can be replayed (`rhlens direction`)
    settings["system"] = req.system.into();
    if let (Some(m), serde_json::Value::Object(extra)) = (settings.as_object_mut(), &req.settings) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    let layers: Vec<usize> = if req.probe.layers.is_empty() {
        (0..rt.model.num_layers()).collect()
    } else {
        let mut l = req.probe.layers.clone();
        l.sort_unstable();
        l.dedup();
        l
    };
    let meta = trace_meta(rt, &prompt, &layers, req.probe.window, settings, req.out);
    let lock = req.out.map(RunLock::acquire).transpose()?;
    let writer = match req.out {
        Some(dir) => Some(TraceWriter::create(dir, &meta, req.force)?),
        None => None,
    };
    Ok((
        Setup {
            prompt,
            ids,
            layers,
            meta,
            writer,
            lock,
        },
        probe,
    ))
}

/// Generate with the probe attached and (optionally) save the trace.
/// The generation and probe settings a trace records (`trace.json`'s `settings`, beside what the
/// caller adds); a resumed sweep compares them with a finished trace's.
pub fn recorded_settings(generate: &GenerateConfig, probe: &ProbeConfig) -> serde_json::Value {
    serde_json::json!({
        "sampling": generate.sampling,
        "max_new_tokens": generate.max_new_tokens,
        "min_new_tokens": generate.min_new_tokens,
        "tags": generate.tags,
        "length_control": generate.length,
        "no_think": generate.no_think,
        "per_head": probe.per_head,
        "f32_probs": probe.f32_probs,
    })
}

pub fn traced_generation(
    rt: &Runtime,
    req: &TraceRequest<'_>,
    on_text: &mut dyn FnMut(&str),
) -> Result<TracedRun> {
    traced_generation_with(rt, req, Checkpoints::default(), on_text)
}

/// [`traced_generation`] that saves the trace as it grows and stops when asked
/// (see [`Checkpoints`]). Both apply to a run with an output directory (`out`): without one
/// there is nothing to save, and the run goes to its end.
pub fn traced_generation_with(
    rt: &Runtime,
    req: &TraceRequest<'_>,
    checkpoints: Checkpoints<'_>,
    on_text: &mut dyn FnMut(&str),
) -> Result<TracedRun> {
    let generator = Generator::new(&rt.model, &rt.tokenizer);
    let (su, mut probe) = setup(rt, &generator, req)?;
    let mut saver = Saver {
        probe: &mut probe,
        su: &su,
        tokenizer: &rt.tokenizer,
        checkpoints,
    };
    let hooks = Hooks {
        observer: Some(&mut saver),
        steering: req.steering,
    };
    let generation = generator.run(
        &su.ids,
        &[su.prompt.image.input()],
        &req.generate,
        hooks,
        on_text,
    )?;
    finish_run(su, &probe, generation, &rt.tokenizer)
}

/// The probe, plus saving the trace every few steps and stopping when the flag is raised.
struct Saver<'s> {
    probe: &'s mut Probe,
    su: &'s Setup,
    tokenizer: &'s TextTokenizer,
    checkpoints: Checkpoints<'s>,
}

impl Observer for Saver<'_> {
    fn wants(&self, site: Site) -> bool {
        self.probe.wants(site)
    }
    fn on_capture(&mut self, site: Site, value: Captured<'_>) {
        self.probe.on_capture(site, value)
    }
}

impl StepObserver for Saver<'_> {
    fn rollback(&mut self, steps: usize) {
        StepObserver::rollback(self.probe, steps)
    }
    fn set_answer_start(&mut self, index: usize) {
        Probe::set_answer_start(self.probe, index)
    }
    fn on_token(&mut self, row: &Row<'_>) -> Result<()> {
        let Some(writer) = &self.su.writer else {
            return Ok(());
        };
        let stop = self
            .checkpoints
            .stop
            .is_some_and(|s| s.load(Ordering::Relaxed));
        let every = self.checkpoints.every;
        let steps = row.ids().len();
        if !stop && (every == 0 || steps % every != 0) {
            return Ok(());
        }
        let (meta, arrays) = trace_of(self.su, self.probe, &row.so_far()?, self.tokenizer)?;
        writer.checkpoint(&meta, &arrays)?;
        if stop {
            return Err(Interrupted {
                dir: writer.dir().to_path_buf(),
                steps: meta.steps,
            }
            .into());
        }
        Ok(())
    }
}

/// Whether [`traced_generation_batch`] can run these requests together: the same generation
/// config and steering, no vision capture, and length control that never rolls back.
pub fn batchable(reqs: &[TraceRequest<'_>]) -> bool {
    let Some(first) = reqs.first() else {
        return false;
    };
    Generator::batchable(&first.generate)
        && reqs.iter().all(|r| {
            !r.vision
                && r.generate.max_new_tokens == first.generate.max_new_tokens
                && r.generate.min_new_tokens == first.generate.min_new_tokens
                && r.generate.sampling == first.generate.sampling
                && r.generate.tags == first.generate.tags
                && r.generate.length == first.generate.length
                && match (r.steering, first.steering) {
                    (None, None) => true,
                    (Some(a), Some(b)) => std::ptr::eq(a, b) || a.equal(b),
                    _ => false,
                }
        })
}

/// [`traced_generation`] for several requests decoded together (left-padded, one cache), each
/// with its own probe and trace. Under greedy decoding the generations and probe arrays equal
/// those of one-at-a-time runs (up to float rounding in the probe); seeded sampling draws
/// differently. The requests must be [`batchable`].
pub fn traced_generation_batch(rt: &Runtime, reqs: &[TraceRequest<'_>]) -> Result<Vec<TracedRun>> {
    if !batchable(reqs) {
        anyhow::bail!(
            "these requests cannot run as a batch (different settings, vision capture, or length control that rolls back)"
        );
    }
    let generator = Generator::new(&rt.model, &rt.tokenizer);
    let (setups, mut probes): (Vec<Setup>, Vec<Probe>) = reqs
        .iter()
        .map(|r| setup(rt, &generator, r))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let images: Vec<[crate::model::ImageInput<'_>; 1]> =
        setups.iter().map(|s| [s.prompt.image.input()]).collect();
    let prompts: Vec<crate::model::BatchPrompt<'_>> = setups
        .iter()
        .zip(&images)
        .map(|(s, im)| crate::model::BatchPrompt {
            input_ids: &s.ids,
            images: im,
        })
        .collect();
    let observers: Vec<Option<&mut dyn crate::generate::StepObserver>> = probes
        .iter_mut()
        .map(|p| Some(p as &mut dyn crate::generate::StepObserver))
        .collect();
    let generations =
        generator.run_batch(&prompts, &reqs[0].generate, observers, reqs[0].steering)?;
    drop(prompts);
    drop(images);
    setups
        .into_iter()
        .zip(&probes)
        .zip(generations)
        .map(|((s, p), g)| finish_run(s, p, g, &rt.tokenizer))
        .collect()
}

/// Probe arrays, meta and the saved trace for a finished generation.
fn finish_run(
    su: Setup,
    probe: &Probe,
    generation: Generation,
    tokenizer: &TextTokenizer,
) -> Result<TracedRun> {
    let (meta, arrays) = trace_of(&su, probe, &generation, tokenizer)?;
    let Setup { writer, lock, .. } = su;
    let dir = match writer {
        Some(w) => {
            w.write_timing(&timing_json(&generation))?;
            Some(w.finish(&meta, &arrays)?)
        }
        None => None,
    };
    // the lock goes only once the trace is complete
    drop(lock);
    Ok(TracedRun {
        generation,
        meta,
        arrays,
        dir,
    })
}

/// How long the run took (`timing.json`, kept out of trace.json so that identical runs write
/// identical traces).
fn timing_json(generation: &Generation) -> serde_json::Value {
    let t = generation.timing;
    serde_json::json!({
        "prefill_ms": t.prefill_ms,
        "decode_ms": t.decode_ms,
        "decode_steps": t.decode_steps,
        "decode_tokens_per_s": t.decode_tokens_per_s(),
        "peak_rss_mib": crate::peak_rss_mib(),
    })
}

/// The trace (metadata and arrays) of `generation`, finished or so far, with `probe`'s arrays.
fn trace_of(
    su: &Setup,
    probe: &Probe,
    generation: &Generation,
    tokenizer: &TextTokenizer,
) -> Result<(TraceMeta, TraceArrays)> {
    let Setup {
        prompt,
        ids,
        layers,
        meta,
        ..
    } = su;
    let mut meta = meta.clone();
    let pa = probe.arrays();
    finish_meta(&mut meta, ids.len(), prompt, generation, pa.steps);
    meta.tokens = generation
        .generated_ids
        .iter()
        .map(|&id| tokenizer.decode(&[id], false))
        .collect::<Result<_, _>>()?;
    let prompt_role = (pa.steps > 0).then(|| {
        let n = layers.len() * crate::formats::ROLE_NAMES.len();
        Array2::from_shape_vec(
            (layers.len(), crate::formats::ROLE_NAMES.len()),
            pa.role_attention[..n].to_vec(),
        )
        .expect("step 0 holds layers x roles values")
    });
    let arrays = trace_arrays(&pa, prompt.image.info.grid_thw, prompt_role)?;
    Ok((meta, arrays))
}

/// The reference layer analysis: the last prompt token's head-mean attention mass per role
/// (system, visual, instruction, ...) for every decoder layer, from one prefill. `[layers, roles]`.
pub fn prompt_allocation(
    rt: &Runtime,
    image: &Path,
    question: &str,
    system: Option<&str>,
) -> Result<Array2<f32>> {
    allocation_of(rt, &rt.prepare(image, question, system)?)
}

/// [`prompt_allocation`] of a prepared prompt: the row of its last token.
pub(crate) fn allocation_of(rt: &Runtime, prompt: &Prompt) -> Result<Array2<f32>> {
    let mut probe = new_probe(rt, &prompt.input_ids, prompt, ProbeConfig::default(), 1)?;
    let opts = ForwardOptions {
        observer: Some(&mut probe),
        ..Default::default()
    };
    let _ = rt
        .model
        .prefill(&prompt.input_ids, &[prompt.image.input()], 0, opts)?;
    let pa = probe.arrays();
    Array2::from_shape_vec(
        (pa.layers.len(), crate::formats::ROLE_NAMES.len()),
        pa.role_attention,
    )
    .context("allocation shape")
}
