//! Latent state steering: a per-layer direction in the residual stream (right after attention)
//! that separates long thinking from short thinking, and its use during generation.
//!
//! direction[l] = mean over long examples − mean over short examples, where an example's vector is
//! the mean, over its thinking tokens, of layer l's residual stream right after the attention
//! block (teacher-forced on the example's own text). Not normalised, as in the paper.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::TextConfig;
use crate::formats::trace::{TraceMeta, TRACE_JSON};
use crate::model::{Captured, ForwardOptions, Observer, Site};
use crate::runtime::Runtime;

/// One generation as rhlens records it: a line of `generate --json` or of `eval`'s
/// results.jsonl, or a trace directory's trace.json.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationRecord {
    pub image: PathBuf,
    pub prompt: String,
    #[serde(default)]
    pub system: Option<String>,
    /// exact generated ids (preferred)
    #[serde(default)]
    pub generated_ids: Option<Vec<i64>>,
    /// the thinking text (used when ids are absent)
    #[serde(default, alias = "thinking_text")]
    pub thinking: Option<String>,
    pub think_tokens: usize,
    /// Where the record was read (`FILE:LINE`), so a failure names it.
    #[serde(skip)]
    pub origin: String,
}

/// Reads a JSONL of generation records; image paths are relative to the file's directory.
pub fn read_records(path: &Path) -> Result<Vec<GenerationRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut r: GenerationRecord = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a generation record", path.display(), i + 1))?;
        r.origin = format!("{}:{}", path.display(), i + 1);
        if r.image.is_relative() && !r.image.exists() {
            r.image = base.join(&r.image);
        }
        if r.generated_ids.is_none() && r.thinking.is_none() {
            bail!(
                "{}:{}: the record has neither generated_ids nor thinking text",
                path.display(),
                i + 1
            );
        }
        out.push(r);
    }
    Ok(out)
}

/// Reads the generations at `path`: a JSONL file (lines of `generate --json`, or an evaluation's
/// results.jsonl), a trace directory, or a directory holding trace directories one or two levels
/// down (as sweeps and `eval --traces` write them).
pub fn read_generations(path: &Path) -> Result<Vec<GenerationRecord>> {
    if path.is_file() {
        return read_records(path);
    }
    if !path.is_dir() {
        bail!("{} does not exist", path.display());
    }
    if path.join(TRACE_JSON).is_file() {
        return Ok(vec![trace_record(path)?]);
    }
    let dirs = trace_dirs(path)?;
    if dirs.is_empty() {
        bail!(
            "{} holds no generations: expected a JSONL file or trace directories",
            path.display()
        );
    }
    dirs.iter().map(|d| trace_record(d)).collect()
}

/// Trace directories in `dir` and in its subdirectories, sorted.
fn trace_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let list = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .with_context(|| format!("reading {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        Ok(v)
    };
    for sub in list(dir)? {
        if sub.join(TRACE_JSON).is_file() {
            out.push(sub);
        } else {
            out.extend(
                list(&sub)?
                    .into_iter()
                    .filter(|d| d.join(TRACE_JSON).is_file()),
            );
        }
    }
    Ok(out)
}

/// The generation a finished trace recorded; its image is found relative to the trace first.
fn trace_record(dir: &Path) -> Result<GenerationRecord> {
    let meta = TraceMeta::read(dir)?;
    if !meta.complete {
        bail!(
            "{}: the trace is partial (its run did not finish), so its generation is incomplete",
            dir.display()
        );
    }
    let image = meta
        .image
        .relative_path
        .as_ref()
        .map(|r| dir.join(r))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(&meta.image.path));
    let system = meta.settings.get("system").and_then(|s| s.as_str());
    Ok(GenerationRecord {
        image,
        prompt: meta.prompt.clone(),
        system: system.map(str::to_string),
        generated_ids: Some(meta.generated_ids.iter().map(|&i| i as i64).collect()),
        thinking: Some(meta.thinking.clone()),
        think_tokens: meta.think_tokens,
        origin: dir.join(TRACE_JSON).display().to_string(),
    })
}

/// Averages the residual stream right after attention (`blocks.{l}.resid_post_attn`) over a range
/// of positions, per layer.
struct ResidualMean {
    range: (i64, i64),
    sums: Vec<Option<Tensor>>,
}

impl Observer for ResidualMean {
    fn wants(&self, site: Site) -> bool {
        matches!(site, Site::ResidPostAttn(_))
    }

    fn on_capture(&mut self, site: Site, value: Captured<'_>) {
        let (Site::ResidPostAttn(layer), Captured::Tensor(hidden)) = (site, value) else {
            return;
        };
        let (a, b) = self.range;
        let m = hidden
            .squeeze_dim(0)
            .narrow(0, a, b - a)
            .to_kind(Kind::Float)
            .mean_dim([0i64].as_slice(), false, None::<Kind>);
        self.sums[layer] = Some(m);
    }
}

/// Per-layer mean residual (after attention) over the thinking tokens of one record: `[layers, hidden]`.
pub fn thinking_residual(rt: &Runtime, rec: &GenerationRecord) -> Result<Tensor> {
    let prompt = rt.prepare(&rec.image, &rec.prompt, rec.system.as_deref())?;
    let (gen, n_think) = match &rec.generated_ids {
        Some(ids) => (ids.clone(), rec.think_tokens.min(ids.len())),
        None => {
            let ids = rt
                .tokenizer
                .encode(rec.thinking.as_deref().unwrap_or_default())?;
            let n = ids.len();
            (ids, n)
        }
    };
    if n_think == 0 {
        bail!("the record has no thinking tokens");
    }
    let mut ids = prompt.input_ids.clone();
    let p = ids.len() as i64;
    ids.extend(&gen[..n_think]);
    let mut obs = ResidualMean {
        range: (p, p + n_think as i64),
        sums: (0..rt.model.num_layers()).map(|_| None).collect(),
    };
    let _ = rt.model.prefill(
        &ids,
        &[prompt.image.input()],
        0,
        ForwardOptions {
            observer: Some(&mut obs),
            ..Default::default()
        },
    )?;
    let rows: Vec<Tensor> = obs
        .sums
        .into_iter()
        .map(|t| t.expect("every layer reports"))
        .collect();
    Ok(Tensor::stack(&rows, 0).to_device(Device::Cpu))
}

pub struct Direction {
    /// `[layers, hidden]` float32
    pub direction: Tensor,
    pub n_long: usize,
    pub n_short: usize,
}

/// Refuse a record whose generated ids are not ids of the model's vocabulary (a record read
/// back from another model, or edited), before any of them is run.
fn check_generated_ids(rec: &GenerationRecord, text: &TextConfig) -> Result<()> {
    let ids = rec.generated_ids.as_deref().unwrap_or_default();
    match ids.iter().find(|&&id| !text.has_token(id)) {
        Some(id) => bail!(
            "{}: generated id {id} is outside the model's vocabulary (ids 0 to {}); was the \
             record made with another model?",
            rec.origin,
            text.vocab_size - 1
        ),
        None => Ok(()),
    }
}

/// Long-minus-short direction from records with `think_tokens > long_min` and `< short_max`.
pub fn compute_direction(
    rt: &Runtime,
    records: &[GenerationRecord],
    long_min: usize,
    short_max: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Direction> {
    let long: Vec<&GenerationRecord> = records
        .iter()
        .filter(|r| r.think_tokens > long_min)
        .collect();
    let short: Vec<&GenerationRecord> = records
        .iter()
        .filter(|r| r.think_tokens < short_max)
        .collect();
    if long.is_empty() || short.is_empty() {
        bail!(
            "need at least one long (> {long_min} thinking tokens) and one short (< {short_max}) generation; found {} long and {} short among {}",
            long.len(),
            short.len(),
            records.len()
        );
    }
    for r in long.iter().chain(&short) {
        check_generated_ids(r, &rt.config.text)?;
    }
    let total = long.len() + short.len();
    let mut done = 0;
    let mut mean = |set: &[&GenerationRecord]| -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for r in set {
            let v = thinking_residual(rt, r).with_context(|| r.origin.clone())?;
            acc = Some(match acc {
                Some(a) => a + v,
                None => v,
            });
            done += 1;
            progress(done, total);
        }
        Ok(acc.expect("non-empty") / set.len() as f64)
    };
    let l = mean(&long)?;
    let s = mean(&short)?;
    Ok(Direction {
        direction: l - s,
        n_long: long.len(),
        n_short: short.len(),
    })
}

pub fn save(d: &Direction, path: &Path) -> Result<()> {
    let counts = Tensor::from_slice(&[d.n_long as i64, d.n_short as i64]);
    let named = [("direction", &d.direction), ("counts", &counts)];
    crate::fsutil::replace_with(path, |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(std::io::Error::other)
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// Check that `path` is a steering file (a safetensors file with a 2-D float `direction`) without
/// loading a model; returns the direction's shape.
pub fn check_file(path: &Path) -> Result<Vec<usize>> {
    if !path.is_file() {
        bail!(
            "steering file {} does not exist (make one with `rhlens direction`)",
            path.display()
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("reading steering file {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|_| {
        anyhow::anyhow!("steering file {} is not a safetensors file", path.display())
    })?;
    let d = st.tensor("direction").map_err(|_| {
        anyhow::anyhow!(
            "{} has no `direction` tensor (make one with `rhlens direction`)",
            path.display()
        )
    })?;
    if d.shape().len() != 2 {
        bail!(
            "steering direction in {} has shape {:?}; expected [layers, hidden]",
            path.display(),
            d.shape()
        );
    }
    Ok(d.shape().to_vec())
}

/// Load a direction and scale it for the model; `None` for weight 0 (exactly no steering).
pub fn load_scaled(path: &Path, rt: &Runtime, weight: f64) -> Result<Option<Tensor>> {
    if !weight.is_finite() {
        return crate::error::invalid("steer_weight", "must be a finite number");
    }
    check_file(path)?;
    let named = Tensor::read_safetensors(path)
        .with_context(|| format!("reading steering direction {}", path.display()))?;
    let Some((_, d)) = named.into_iter().find(|(n, _)| n == "direction") else {
        bail!(
            "{} has no `direction` tensor (make one with `rhlens direction`)",
            path.display()
        );
    };
    let want = [
        rt.model.num_layers() as i64,
        rt.config.text.hidden_size as i64,
    ];
    if d.size() != want {
        bail!(
            "steering direction {} has shape {:?} but this model needs {:?}",
            path.display(),
            d.size(),
            want
        );
    }
    if weight == 0.0 {
        return Ok(None);
    }
    Ok(Some(
        (d * weight)
            .to_kind(rt.model.kind)
            .to_device(rt.model.device),
    ))
}
