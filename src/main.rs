use clap::Parser;

/// The error and its causes on one line, without repeating a cause that a message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
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

fn main() {
    let cli = match rhlens::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
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
            std::process::exit(2);
        }
    };
    if let Err(e) = rhlens::cli::run(cli) {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}
