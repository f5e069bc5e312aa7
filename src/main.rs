//! `payhub`: one binary for the gateway, its tools and its simulators (operations.md).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = match payhub::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print in full; a bad flag is one line on standard error.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad command line").trim();
            eprintln!(
                "payhub: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return std::process::ExitCode::from(2);
        }
    };
    match payhub::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payhub: {}", payhub::cli::one_line_error(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
