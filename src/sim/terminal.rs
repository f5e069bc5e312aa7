//! `payhub terminal-sim` (issue 6).

#[derive(Debug, clap::Args)]
pub struct TerminalSimArgs {
    #[arg(long)]
    pub switch: String,
}

pub async fn run(_args: TerminalSimArgs) -> anyhow::Result<()> {
    anyhow::bail!("`payhub terminal-sim` is not built yet (issue 6)")
}
