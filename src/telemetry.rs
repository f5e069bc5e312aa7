//! Logging with `tracing`: human-readable on a terminal, JSON with `--log-format json`.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAYHUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // rusmpp logs whole PDUs at debug level: the SMS text (the code) and the bind password.
        .add_directive("rusmpp=off".parse().expect("a valid directive"))
        .add_directive("rusmppc=off".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
