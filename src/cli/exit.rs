//! How a command ends for the user: one line on stderr and an exit status, whatever went wrong.
//! Status 0 on success and when whoever reads stdout has gone (`rhlens ... | head -c1`), 1 when
//! the command failed (an error, a libtorch failure, a bug), 2 for a usage error.
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Mutex;

use crate::error::InvalidSetting;
use crate::model::stage::{panic_text, torch_message, Stage, TorchFailure};

/// Exit status of a command that could not do its work.
pub const FAILURE: u8 = 1;
/// Exit status of a command line that does not parse.
pub const USAGE: u8 = 2;

/// How a command ended, short of success.
pub enum Failure {
    Error(anyhow::Error),
    /// A panic: libtorch reports its errors this way (out of memory, shapes, devices).
    Panic {
        message: String,
        location: Option<String>,
    },
}

/// Where the last panic happened; the hook keeps it for the exit point, which prints the line.
static PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

/// Run a command, turning a panic into a [`Failure`] instead of a message and a backtrace.
pub fn catch(command: impl FnOnce() -> anyhow::Result<()>) -> Result<(), Failure> {
    panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        if let Ok(mut slot) = PANIC_LOCATION.lock() {
            *slot = location;
        }
    }));
    let outcome = panic::catch_unwind(AssertUnwindSafe(command));
    let _ = panic::take_hook();
    match outcome {
        Ok(result) => result.map_err(Failure::Error),
        Err(payload) => {
            let message = panic_text(payload.as_ref());
            let location = PANIC_LOCATION.lock().ok().and_then(|mut l| l.take());
            Err(Failure::Panic { message, location })
        }
    }
}

/// The exit status for how `command` ended, after printing its one line (if any) on stderr.
pub fn report(command: &str, outcome: Result<(), Failure>) -> ExitCode {
    let line = match outcome {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Error(e)) if reader_gone(&e) => return ExitCode::SUCCESS,
        Err(Failure::Error(e)) => match torch_failure(&e) {
            // like a libtorch panic outside any stage: the command, then what to try
            Some(failure) => format!(
                "{command}: {} ({})",
                one_line(&e),
                torch_hint(&failure.message)
            ),
            None => one_line(&e),
        },
        Err(Failure::Panic { message, .. }) if stdout_closed(&message) => return ExitCode::SUCCESS,
        Err(Failure::Panic { message, location }) => panic_line(command, &message, location),
    };
    eprintln!("error: {line}");
    ExitCode::from(FAILURE)
}

/// A usage error as one line (exit 2); help and version go to stdout (exit 0).
pub fn usage(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
    }
    // clap explains over several lines; keep the explanation, drop usage and hints
    let rendered = e.render().to_string();
    let text: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("{} (see --help)", text.join(" "));
    ExitCode::from(USAGE)
}

/// The error and its causes on one line, without repeating a cause that a message already
/// quotes; settings the library names are shown as their flags.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<InvalidSetting>() {
            Some(setting) => setting.phrase(&super::flags::flag),
            None => cause.to_string(),
        };
        let text = text.trim();
        if text.is_empty() || msg.contains(text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(text);
    }
    msg.replace('\n', " ")
}

/// The libtorch failure a forward pass reported, if that is what the error is.
fn torch_failure(e: &anyhow::Error) -> Option<&TorchFailure> {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<TorchFailure>())
}

/// The error is a write to a pipe whose reader has gone.
fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `print!` panics when stdout is closed; that is the reader leaving, not a failure.
fn stdout_closed(message: &str) -> bool {
    message.starts_with("failed printing to stdout")
        && (message.contains("Broken pipe") || message.contains("os error 32"))
}

/// One line for a panic: a libtorch failure with what to try, or a bug in rhlens.
fn panic_line(command: &str, message: &str, location: Option<String>) -> String {
    match torch_message(message) {
        Some(torch) => format!(
            "{command}: libtorch failed: {torch} ({})",
            torch_hint(torch)
        ),
        None => {
            let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
            let first = message.lines().next().unwrap_or_default();
            format!("{command}: internal error{at}: {first} (please report this as a bug)")
        }
    }
}

/// What to try for a libtorch failure.
fn torch_hint(message: &str) -> &'static str {
    let lower = message.to_lowercase();
    if lower.contains("out of memory") || lower.contains("can't allocate memory") {
        "it ran out of memory: try a smaller image with --max-pixels, --dtype bf16, or --device cpu"
    } else if lower.contains("cuda") || lower.contains("device") {
        "try --device cpu"
    } else {
        "try a smaller image with --max-pixels, --dtype bf16, or --device cpu; if it persists, \
         please report it"
    }
}

/// Test-only: with `RHLENS_TEST_ONLY_TORCH_FAILURE` set (to anything but the name of a forward
/// stage, which fails inside that stage instead: see [`crate::model::stage::guarded`]), a command
/// that loads a model fails inside libtorch (a matrix product of mismatched shapes) right after
/// loading it, so that the tests can see how such a failure reaches the user. Nothing is computed
/// or written.
pub fn test_only_torch_failure() {
    let asked = std::env::var("RHLENS_TEST_ONLY_TORCH_FAILURE").ok();
    if asked.is_some_and(|v| !Stage::is_hook_name(&v)) {
        let _ = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu)).matmul(
            &tch::Tensor::zeros([4, 5], (tch::Kind::Float, tch::Device::Cpu)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_panics_keep_the_first_line_of_the_message() {
        let panic = "called `Result::unwrap()` on an `Err` value: Torch(\"mat1 and mat2 shapes \
                     cannot be multiplied (2x3 and 4x5)\\nException raised from meta at x.cpp\")";
        assert_eq!(
            torch_message(panic),
            Some("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")
        );
        let oom = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory.\")";
        assert_eq!(torch_message(oom), Some("CUDA out of memory."));
        assert!(torch_hint("CUDA out of memory.").contains("--max-pixels"));
        assert_eq!(torch_message("index out of bounds"), None);
    }

    #[test]
    fn errors_name_settings_as_flags_and_drop_repeats() {
        let e = anyhow::Error::from(InvalidSetting::new(
            "min_think",
            "50 is larger than `think_budget` 20",
        ))
        .context("generating");
        assert_eq!(
            one_line(&e),
            "generating: --min-think 50 is larger than --think-budget 20"
        );
        let e = anyhow::anyhow!("inner").context("outer: inner");
        assert_eq!(one_line(&e), "outer: inner");
    }

    #[test]
    fn a_closed_stdout_is_not_a_failure() {
        assert!(stdout_closed(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(reader_gone(&e.context("writing")));
    }
}
