//! `payhub smsc-sim` (issue 5).

#[derive(Debug, clap::Args)]
pub struct SmscSimArgs {
    #[arg(long)]
    pub listen: String,
}

pub async fn run(_args: SmscSimArgs) -> anyhow::Result<()> {
    anyhow::bail!("`payhub smsc-sim` is not built yet (issue 5)")
}
