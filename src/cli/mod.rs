//! The command line of operations.md. Each command's flags live beside the code that runs it.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub mod output;

#[derive(Parser)]
#[command(
    name = "payhub",
    version,
    about = "Online payment gateway and bank switching hub"
)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The whole system on one machine with no set-up.
    Demo(crate::demo::DemoArgs),
    /// Certificates: the gateway's server certificate and the merchant CA.
    #[command(subcommand)]
    Pki(crate::pki::PkiCommand),
    /// The gateway: merchant API, customer pages, bank links, channels, workers.
    Serve(ConfigArg),
    /// Applies the SQL migrations; safe to run again.
    Migrate(ConfigArg),
    /// Merchants.
    #[command(subcommand)]
    Merchant(crate::enroll::MerchantCommand),
    /// Customers.
    #[command(subcommand)]
    Customer(crate::enroll::CustomerCommand),
    /// Customer terminals.
    #[command(subcommand)]
    Terminal(crate::enroll::TerminalCommand),
    /// A bank information processing system on ISO 8583, for operators and tests.
    BankSim(crate::sim::bank::BankSimArgs),
    /// An SMPP v3.4 SMSC simulator.
    SmscSim(crate::sim::smsc::SmscSimArgs),
    /// A dedicated customer terminal that connects to the terminal switch.
    TerminalSim(crate::sim::terminal::TerminalSimArgs),
    /// Decode and encode bank-link messages.
    #[command(subcommand)]
    Iso8583(crate::iso_cli::Iso8583Command),
}

#[derive(Clone, Args)]
pub struct ConfigArg {
    /// The payhub.toml file.
    #[arg(long)]
    pub config: PathBuf,
}

/// Runs one command to completion. Actors need an actix system, so every command runs inside one.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init(cli.log_format);
    let system = actix::System::new();
    system.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Pki(cmd) => crate::pki::run(cmd),
        Command::Serve(args) => crate::serve::run(&args.config).await,
        Command::Migrate(args) => crate::serve::migrate(&args.config).await,
        Command::Merchant(cmd) => crate::enroll::merchant(cmd).await,
        Command::Customer(cmd) => crate::enroll::customer(cmd).await,
        Command::Terminal(cmd) => crate::enroll::terminal(cmd).await,
        Command::BankSim(args) => crate::sim::bank::run(args).await,
        Command::SmscSim(args) => crate::sim::smsc::run(args).await,
        Command::TerminalSim(args) => crate::sim::terminal::run(args).await,
        Command::Iso8583(cmd) => crate::iso_cli::run(cmd),
    }
}

/// An error and its causes on one line, for standard error.
pub fn one_line_error(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
