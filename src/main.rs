//! rhlens: parse the command line, run the command, and end with one line and an exit status
//! (see `cli::exit`); nothing reaches the user as a panic.
use std::process::ExitCode;

use rhlens::cli::{self, exit, Cli};

fn main() -> ExitCode {
    let (args, command) = match Cli::parse_args() {
        Ok(parsed) => parsed,
        Err(e) => return exit::usage(e),
    };
    let outcome = exit::catch(|| cli::run(args));
    exit::report(&command, outcome)
}
