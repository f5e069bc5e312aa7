//! Logging with `tracing`: human-readable on a terminal, JSON with `--log-format json`.

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to standard error.
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr);
}

/// Logs to `writer` (tests capture the log this way), filtered by `PAYHUB_LOG` (`info` when unset
/// or invalid); does nothing when a logger is already set.
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let directives = std::env::var("PAYHUB_LOG").unwrap_or_default();
    let _ = subscriber(format, &directives, writer).try_init();
}

/// The log for `directives` (`PAYHUB_LOG`'s syntax). Whatever they say, nothing passes that
/// [`may_carry_secrets`] names.
fn subscriber<W>(format: LogFormat, directives: &str, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let asked = match directives.trim() {
        "" => EnvFilter::new("info"),
        directives => EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    let guarded = asked.and(filter_fn(|meta| !may_carry_secrets(meta)));
    tracing_subscriber::registry().with(layer.with_filter(guarded))
}

/// Libraries' events that may hold secrets. rusmpp and rusmppc log whole PDUs (the SMS text with
/// its code, the bind password); tokio-postgres logs each statement's parameters at debug level
/// (accounts, keyed hashes, webhook secrets), while its notices and errors are kept. A filter of
/// its own, since `PAYHUB_LOG` rules (a span's, a longer target's) take precedence over any
/// target rule added to it.
fn may_carry_secrets(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    target.starts_with("rusmpp")
        || target.starts_with("tokio_postgres") && *meta.level() > Level::INFO
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the log shows of one event of each kind, under `directives`.
    fn logged(directives: &str) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let log = subscriber(LogFormat::Text, directives, move || writer.clone());
        tracing::subscriber::with_default(log, || {
            let span = tracing::info_span!("payment");
            let _inside = span.enter();
            tracing::debug!(target: "tokio_postgres::query", "parameters: 6222000011112222");
            tracing::debug!(target: "rusmpp::codec", "submit_sm: code 123456");
            tracing::debug!(target: "rusmppc::connection", "bind password s3cret");
            tracing::info!(target: "tokio_postgres::connection", "server notice");
            tracing::debug!(target: "payhub::transaction", "a step of the payment");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn no_filter_lets_the_libraries_log_their_secrets() {
        for directives in [
            "",
            "debug",
            "info,[payment]=debug",
            "tokio_postgres::query=debug,rusmpp::codec=trace,rusmppc=trace",
            "trace",
        ] {
            let log = logged(directives);
            for secret in ["6222000011112222", "code 123456", "s3cret"] {
                assert!(!log.contains(secret), "{directives:?}: {log}");
            }
        }
        let log = logged("info,[payment]=debug");
        assert!(log.contains("server notice"), "{log}");
        assert!(log.contains("a step of the payment"), "{log}");
        assert!(
            !logged("").contains("a step of the payment"),
            "info by default"
        );
    }
}
