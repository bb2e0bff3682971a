use clap::Parser;

fn main() {
    let cli = rhlens::cli::Cli::parse();
    if let Err(e) = rhlens::cli::run(cli) {
        // one line: the error and its causes
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
