//! `payhub`: one binary for the gateway, its tools and its simulators (operations.md).

use clap::Parser;

#[global_allocator]
static ALLOCATOR: payhub::Allocator = payhub::Allocator;

fn main() -> std::process::ExitCode {
    let cli = match payhub::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print in full; a bad flag is one line on standard error.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // clap's message without its usage block and hint, on one line.
            let text = e.to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", line.join(" "));
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
