//! `payhub merchant add`, `customer add`, `terminal add` (issues 2 and 6).

#[derive(Debug, clap::Subcommand)]
pub enum MerchantCommand {}

#[derive(Debug, clap::Subcommand)]
pub enum CustomerCommand {}

#[derive(Debug, clap::Subcommand)]
pub enum TerminalCommand {}

pub async fn merchant(cmd: MerchantCommand) -> anyhow::Result<()> {
    match cmd {}
}

pub async fn customer(cmd: CustomerCommand) -> anyhow::Result<()> {
    match cmd {}
}

pub async fn terminal(cmd: TerminalCommand) -> anyhow::Result<()> {
    match cmd {}
}
