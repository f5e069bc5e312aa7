//! Opening a link's transport: TCP, optionally TLS with the BIPS's certificate checked against the
//! link's CA. The two halves go to the link's reader (frames in) and writer (frames out).

use super::settings::LinkSettings;
use super::unsent::{CountingCodec, CountingTransport};
use payhub_iso8583::Message;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub type LinkReader = Box<dyn AsyncRead + Unpin + Send>;
pub type LinkWriterIo = Box<dyn AsyncWrite + Unpin + Send>;
pub type LinkWriter =
    actix::io::FramedWrite<Message, CountingTransport<LinkWriterIo>, CountingCodec>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    /// The TCP connect or the TLS handshake did not finish within the connect timeout.
    #[error("connecting to {addr}: {stage} not done within {timeout_ms} ms")]
    Timeout {
        addr: String,
        stage: &'static str,
        timeout_ms: u64,
    },
    #[error("TLS to {addr}: {reason}")]
    Tls { addr: String, reason: String },
}

/// Connects, TCP and TLS handshake together, within the link's connect timeout: a peer that
/// accepts and never answers the handshake (plain TCP where TLS is configured) must not hold the
/// link forever.
pub async fn open(settings: &LinkSettings) -> Result<(LinkReader, LinkWriterIo), ConnectError> {
    let addr = settings.addr.clone();
    let deadline = tokio::time::Instant::now() + settings.connect_timeout();
    let timeout = |stage| ConnectError::Timeout {
        addr: settings.addr.clone(),
        stage,
        timeout_ms: settings.connect_timeout_ms(),
    };
    let connect = TcpStream::connect(addr.clone());
    let tcp = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => return Err(timeout("TCP connect")),
    };
    // Requests are small and pipelined: send each as soon as it is written.
    tcp.set_nodelay(true).map_err(|source| ConnectError::Io {
        addr: addr.clone(),
        source,
    })?;
    match &settings.tls_ca_cert {
        None => {
            let (r, w) = tcp.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Some(ca) => {
            let handshake = tls_connect(tcp, &addr, ca);
            let tls = tokio::time::timeout_at(deadline, handshake)
                .await
                .map_err(|_| timeout("TLS handshake"))??;
            let (r, w) = tokio::io::split(tls);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

async fn tls_connect(
    tcp: TcpStream,
    addr: &str,
    ca: &std::path::Path,
) -> Result<tokio_openssl::SslStream<TcpStream>, ConnectError> {
    use openssl::ssl::{SslConnector, SslMethod};
    let tls_err = |reason: String| ConnectError::Tls {
        addr: addr.to_owned(),
        reason,
    };
    let mut builder =
        SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls_err(e.to_string()))?;
    let trusted = crate::tls_trust::trusting_only_file(ca).map_err(tls_err)?;
    builder.set_cert_store(trusted);
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ssl = builder
        .build()
        .configure()
        .and_then(|c| c.into_ssl(host))
        .map_err(|e| tls_err(e.to_string()))?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| tls_err(e.to_string()))?;
    Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    Ok(stream)
}
