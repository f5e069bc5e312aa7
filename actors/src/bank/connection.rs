//! Opening a link's transport: TCP, optionally TLS with the BIPS's certificate checked against the
//! link's CA. The two halves go to the link's reader (frames in) and writer (frames out).

use super::settings::LinkSettings;
use payhub_iso8583::Message;
use payhub_iso8583::codec::MessageCodec;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub type LinkReader = Box<dyn AsyncRead + Unpin + Send>;
pub type LinkWriterIo = Box<dyn AsyncWrite + Unpin + Send>;
pub type LinkWriter = actix::io::FramedWrite<Message, LinkWriterIo, MessageCodec>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: no answer within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    #[error("TLS to {addr}: {reason}")]
    Tls { addr: String, reason: String },
}

/// Connects within the link's response timeout.
pub async fn open(settings: &LinkSettings) -> Result<(LinkReader, LinkWriterIo), ConnectError> {
    let addr = settings.addr.clone();
    let connect = TcpStream::connect(addr.clone());
    let tcp = match tokio::time::timeout(settings.response_timeout(), connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => {
            return Err(ConnectError::Timeout {
                addr,
                timeout_ms: settings.response_timeout_ms,
            });
        }
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
            let tls = tls_connect(tcp, &addr, ca).await?;
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
    builder
        .set_ca_file(ca)
        .map_err(|e| tls_err(format!("CA file {}: {e}", ca.display())))?;
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
