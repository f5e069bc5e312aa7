//! `payhub`: one binary for the gateway, its tools and its simulators (operations.md).

use clap::Parser;
use clap::error::ErrorKind;
use payhub::cli::output;

#[global_allocator]
static ALLOCATOR: payhub::Allocator = payhub::Allocator;

fn main() -> std::process::ExitCode {
    let cli = match payhub::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print in full; a bad flag is one line on standard error.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            output::warn(missing_subcommand(&e.to_string()));
            return std::process::ExitCode::from(2);
        }
        Err(e) => {
            // clap's message without its usage block and hint, on one line.
            let text = e.to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            output::warn(format!("{} (see --help)", line.join(" ")));
            return std::process::ExitCode::from(2);
        }
    };
    match payhub::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            output::warn(format!("payhub: {}", payhub::cli::one_line_error(&e)));
            std::process::ExitCode::FAILURE
        }
    }
}

/// One line for a command given without its subcommand, from clap's help text: "payhub merchant:
/// a subcommand is required: add, disable, enable (see --help)".
fn missing_subcommand(help: &str) -> String {
    let usage = help
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .unwrap_or("payhub");
    let command = usage.split(" [").next().unwrap_or(usage);
    let command = command.split(" <").next().unwrap_or(command);
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    format!(
        "{command}: a subcommand is required: {} (see --help)",
        subcommands.join(", ")
    )
}
