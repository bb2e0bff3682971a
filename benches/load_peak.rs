//! Peak host memory and time of loading one checkpoint, as one JSON line.
//!
//!     cargo bench --bench load_peak -- MODEL_DIR [bf16|f16|f32] [cpu|cuda] [model|weights]
//!
//! `model` (the default) loads it as `rhlens` does (`Runtime::load`: config, tokenizer, template,
//! every weight); `weights` loads each tensor of the files alone, one at a time, keeping them all
//! (the loader without the model). Peak memory is this process's VmHWM, with the high-water mark
//! reset just before loading where Linux allows it (`/proc/self/clear_refs`), so the figure is the
//! resident memory before loading plus what loading added at its worst. Run it from a cold or warm
//! page cache as you need: page-cache pages are not part of a process's resident memory.
//! `scripts/bench_load.py` makes a 7B-width checkpoint and runs this for each dtype.

use std::path::Path;
use std::time::Instant;

use rhlens::checkpoint::Weights;
use rhlens::runtime::Runtime;
use tch::{Device, Kind, Tensor};

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

fn checkpoint_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn load_weights_only(dir: &Path, kind: Kind, device: Device) -> anyhow::Result<Vec<Tensor>> {
    let weights = Weights::open(dir)?;
    let mut kept = Vec::with_capacity(weights.len());
    for name in weights.names() {
        let shape = weights.shape(name).unwrap_or_default();
        kept.push(weights.tensor(name, &shape, kind, device)?);
    }
    Ok(kept)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(dir) = args.first() else {
        anyhow::bail!("usage: load_peak MODEL_DIR [bf16|f16|f32] [cpu|cuda] [model|weights]");
    };
    let dir = Path::new(dir);
    let dtype = args.get(1).map_or("bf16", String::as_str);
    let kind = match dtype {
        "bf16" => Kind::BFloat16,
        "f16" => Kind::Half,
        "f32" => Kind::Float,
        other => anyhow::bail!("dtype {other}: bf16, f16 or f32"),
    };
    let device = match args.get(2).map_or("cpu", String::as_str) {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => anyhow::bail!("device {other}: cpu or cuda"),
    };
    let what = args.get(3).map_or("model", String::as_str);
    // libtorch's own start-up allocations happen before the baseline is read
    let _ = Tensor::ones([8], (Kind::Float, device)).sum(Kind::Float);
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = status_kib("VmRSS:");
    let start = Instant::now();
    let held = match what {
        "model" => {
            let rt = Runtime::load(&dir.to_string_lossy(), kind, device)?;
            Box::new(rt) as Box<dyn std::any::Any>
        }
        "weights" => Box::new(load_weights_only(dir, kind, device)?),
        other => anyhow::bail!("what {other}: model or weights"),
    };
    let load_s = start.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    let rss_after = status_kib("VmRSS:");
    let bytes = checkpoint_bytes(dir);
    let peak_mib = mib(peak).unwrap_or(f64::NAN);
    let before_mib = mib(rss_before).unwrap_or(f64::NAN);
    let line = serde_json::json!({
        "dir": dir,
        "dtype": dtype,
        "device": format!("{device:?}"),
        "what": what,
        "checkpoint_bytes": bytes,
        "load_s": load_s,
        "rss_before_mib": before_mib,
        "peak_rss_mib": peak_mib,
        "rss_after_mib": mib(rss_after),
        "hwm_reset": hwm_reset,
        "peak_over_checkpoint": peak_mib * 1024.0 * 1024.0 / bytes as f64,
        "added_over_checkpoint": (peak_mib - before_mib) * 1024.0 * 1024.0 / bytes as f64,
    });
    println!("{line}");
    drop(held);
    Ok(())
}
