//! `payhub iso8583 decode|encode` (issue 3).

#[derive(Debug, clap::Subcommand)]
pub enum Iso8583Command {
    /// Decodes one message (hex, without its length header) to JSON.
    Decode {
        hex: Option<String>,
        /// Show account numbers in full.
        #[arg(long)]
        reveal: bool,
    },
    /// Reads the JSON of `decode` on standard input and prints the message as hex.
    Encode,
}

pub fn run(_cmd: Iso8583Command) -> anyhow::Result<()> {
    anyhow::bail!("`payhub iso8583` is not built yet (issue 3)")
}
