//! Loading holds each weight once: the host memory that loading a bf16 checkpoint adds, at its
//! peak, stays close to the size of what it returns (no mapped file pages held beside the copies,
//! no whole-tensor temporary next to a converted one).
//!
//! Memory, not time, is measured: the process's peak resident memory (VmHWM, reset before each
//! load where Linux allows it) against its resident memory just before loading. This file holds
//! one test on purpose: tests in the same binary run in parallel threads and would raise the peak.

use std::path::Path;

use rhlens::checkpoint::Weights;
use safetensors::tensor::{Dtype, TensorView};
use tch::{Device, Kind, Tensor};

const TENSORS: usize = 8;
/// bf16 elements per tensor: 8 MiB each, 64 MiB in all.
const ELEMENTS: usize = 4 << 20;
const MIB: f64 = 1024.0 * 1024.0;
/// Allocator and bookkeeping room on top of the bound.
const SLACK_MIB: f64 = 12.0;

fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .expect("field in /proc/self/status");
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

fn write_checkpoint(path: &Path) {
    // bf16 bit patterns of small varied values (the upper halves of f32s)
    let data: Vec<u8> = (0..ELEMENTS)
        .map(|i| (((i % 997) as f32 * 1e-3).to_bits() >> 16) as u16)
        .flat_map(u16::to_le_bytes)
        .collect();
    let views: Vec<(String, TensorView<'_>)> = (0..TENSORS)
        .map(|t| {
            let view = TensorView::new(Dtype::BF16, vec![ELEMENTS / 1024, 1024], &data).unwrap();
            (format!("model.layers.{t}.mlp.up_proj.weight"), view)
        })
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// Load every tensor as `kind`; returns them and the memory (MiB) loading added at its peak.
fn load_all(weights: &Weights, kind: Kind) -> (Vec<Tensor>, f64) {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_mib("VmRSS:");
    let tensors: Vec<Tensor> = weights
        .names()
        .iter()
        .map(|name| {
            let shape = weights.shape(name).unwrap();
            weights.tensor(name, &shape, kind, Device::Cpu).unwrap()
        })
        .collect();
    let added = status_mib("VmHWM:") - before;
    eprintln!("{kind:?}: peak added {added:.1} MiB (high-water mark reset: {reset})");
    (tensors, added)
}

#[test]
fn loading_holds_each_weight_once() {
    if !Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc/self/status to read resident memory from");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(&dir.path().join("model.safetensors"));
    // libtorch's start-up allocations happen before anything is measured
    let _ = Tensor::ones([8], (Kind::Float, Device::Cpu)).sum(Kind::Float);
    let weights = Weights::open(dir.path()).unwrap();
    let stored_mib = (TENSORS * ELEMENTS * 2) as f64 / MIB;

    // Converted: the float32 result (2x) and one staging buffer of one tensor's size, kept from
    // tensor to tensor (before: plus the mapped file pages, 3x; a staging buffer taken and freed per
    // tensor also left the C heap holding ~40 MiB of free space here).
    let (f32s, added) = load_all(&weights, Kind::Float);
    let bound = 2.0 * stored_mib + stored_mib / TENSORS as f64 + SLACK_MIB;
    assert_eq!(
        f64::try_from(f32s[5].get(0).get(1)).unwrap(),
        0.00099945068359375
    );
    assert!(
        added <= bound,
        "loading {stored_mib} MiB of bf16 as float32 added {added:.1} MiB at its peak (bound {bound:.0})"
    );
    drop(f32s);

    // Same type: the result is all that is held (before: the mapped file pages as well, 2x).
    let (bf16, added) = load_all(&weights, Kind::BFloat16);
    assert_eq!(f64::try_from(bf16[3].get(0).get(997)).unwrap(), 0.0);
    assert!(
        added <= stored_mib + SLACK_MIB,
        "loading {stored_mib} MiB of bf16 as bf16 added {added:.1} MiB at its peak"
    );
}
