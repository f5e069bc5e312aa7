//! Logging with `tracing`: human-readable on a terminal, JSON with `--log-format json`.

use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to standard error.
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr);
}

/// Logs to `writer` (tests capture the log this way); does nothing when a logger is already set.
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAYHUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // rusmpp logs whole PDUs at debug level: the SMS text (the code) and the bind password.
        .add_directive("rusmpp=off".parse().expect("a valid directive"))
        .add_directive("rusmppc=off".parse().expect("a valid directive"))
        // tokio-postgres logs each statement's parameters at debug level: accounts, keyed hashes,
        // webhook secrets. Its notices (info) and errors still come through.
        .add_directive("tokio_postgres=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
