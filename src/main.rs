//! `payhub`: one binary for the gateway, its tools and its simulators (operations.md).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = payhub::cli::Cli::parse();
    match payhub::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payhub: {}", payhub::cli::one_line_error(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
