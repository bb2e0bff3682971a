//! The fallible boundary around forward passes. tch reports a libtorch error (shapes that do not
//! fit, memory that cannot be had, a device that failed) by panicking; [`guarded`] turns such a
//! panic into a [`TorchFailure`] error that names the stage it happened in, so the caller gets an
//! ordinary `Err` and the user one line instead of a C++ trace.
use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use anyhow::Result;

/// Where in a generation libtorch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The image through the vision tower.
    VisionTower,
    /// The whole prompt through the decoder.
    Prefill,
    /// The `n`-th generated token (from 1) through the decoder.
    Decode(usize),
}

impl Stage {
    /// The name the test hook answers to (see [`guarded`]).
    fn hook_name(self) -> &'static str {
        match self {
            Stage::VisionTower => "vision",
            Stage::Prefill => "prefill",
            Stage::Decode(_) => "decode",
        }
    }

    /// Whether `value` of `RHLENS_TEST_ONLY_TORCH_FAILURE` names a stage.
    pub fn is_hook_name(value: &str) -> bool {
        ["vision", "prefill", "decode"].contains(&value)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::VisionTower => f.write_str("the vision tower"),
            Stage::Prefill => f.write_str("prefill"),
            Stage::Decode(n) => write!(f, "decode step {n}"),
        }
    }
}

/// libtorch failed in `stage`; `message` is the first line of its own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchFailure {
    pub stage: Stage,
    pub message: String,
}

impl fmt::Display for TorchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "libtorch failed in {}: {}", self.stage, self.message)
    }
}

impl std::error::Error for TorchFailure {}

/// Run `work` as `stage`: a libtorch failure inside it becomes a [`TorchFailure`] error. Any
/// other panic is a bug in rhlens and goes on unwinding.
///
/// Test-only: with `RHLENS_TEST_ONLY_TORCH_FAILURE` set to `vision`, `prefill` or `decode`, the
/// first such stage performs a matrix product of mismatched shapes before its work, so that the
/// tests see a real libtorch failure reach the user from that stage.
pub fn guarded<T>(stage: Stage, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        test_only_failure(stage);
        work()
    }));
    match outcome {
        Ok(result) => result,
        Err(payload) => match torch_message(&panic_text(payload.as_ref())) {
            Some(message) => Err(TorchFailure {
                stage,
                message: message.to_string(),
            }
            .into()),
            None => panic::resume_unwind(payload),
        },
    }
}

fn test_only_failure(stage: Stage) {
    let asked = std::env::var("RHLENS_TEST_ONLY_TORCH_FAILURE").ok();
    if asked.as_deref() == Some(stage.hook_name()) {
        let cpu = (tch::Kind::Float, tch::Device::Cpu);
        let _ = tch::Tensor::zeros([2, 3], cpu).matmul(&tch::Tensor::zeros([4, 5], cpu));
    }
}

/// The text of a panic's payload.
pub fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// The first line of libtorch's message in a panic from a tch op, which unwraps
/// `Err(Torch("..."))` and so quotes the C++ message with its newlines escaped.
pub fn torch_message(panic: &str) -> Option<&str> {
    let start = panic.find("Torch(\"")? + "Torch(\"".len();
    let quoted = &panic[start..];
    let end = [quoted.find("\\n"), quoted.rfind("\")")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(quoted.len());
    Some(quoted[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libtorch_panic_becomes_an_error_naming_the_stage() {
        let cpu = (tch::Kind::Float, tch::Device::Cpu);
        let e = guarded(Stage::Decode(3), || {
            Ok(tch::Tensor::zeros([2, 3], cpu).matmul(&tch::Tensor::zeros([4, 5], cpu)))
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.starts_with("libtorch failed in decode step 3: "), "{e}");
        assert!(e.contains("cannot be multiplied"), "{e}");
        assert!(!e.contains("Exception raised"), "{e}");
    }

    #[test]
    fn other_panics_are_not_libtorch_failures() {
        let caught =
            panic::catch_unwind(|| guarded(Stage::Prefill, || -> Result<()> { panic!("bug") }));
        assert!(caught.is_err());
    }
}
