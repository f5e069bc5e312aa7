//! `payhub pki init`: the gateway's server certificate and the merchant CA (issue 2).

#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Creates the server certificate and key, the merchant CA, and a starter payhub.toml.
    Init {
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Host names and addresses for the server certificate (default localhost and 127.0.0.1).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

pub fn run(_cmd: PkiCommand) -> anyhow::Result<()> {
    anyhow::bail!("`payhub pki` is not built yet (issue 2)")
}
