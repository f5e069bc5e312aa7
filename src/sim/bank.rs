//! `payhub bank-sim` (issue 4).

#[derive(Debug, clap::Args)]
pub struct BankSimArgs {
    #[arg(long)]
    pub listen: String,
}

pub async fn run(_args: BankSimArgs) -> anyhow::Result<()> {
    anyhow::bail!("`payhub bank-sim` is not built yet (issue 4)")
}
