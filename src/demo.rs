//! `payhub demo`: the whole system on one machine (issue 7).

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its PostgreSQL cluster, certificates and configuration.
    #[arg(long, default_value = ".payhub-demo")]
    pub dir: std::path::PathBuf,
}

pub async fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("`payhub demo` is not built yet (issue 7)")
}
