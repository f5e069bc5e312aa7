//! The device side of the protocol: connect, authenticate, then read and write frames. The
//! terminal simulator is built on it; it is also a reference for device builders.

use super::auth::TerminalKey;
use super::frame::{ErrorCode, Frame, FrameCodec, FrameError, PROTOCOL_VERSION};
use super::tls::{BoxIo, ClientTls, connect_client};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_util::codec::Framed;

/// How long connecting and authenticating may take.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` of the switch.
    pub switch: String,
    /// The name checked against the switch's certificate (default: the host of `switch`).
    pub server_name: Option<String>,
    pub terminal_id: String,
    /// The shared key (HMAC proof) or the private key (signature).
    pub key: TerminalKey,
    pub tls: ClientTls,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the switch at {0}: {1}")]
    Connect(String, String),
    #[error("the switch refused the terminal: {message} (error {code})")]
    Refused { code: u16, message: String },
    #[error("the switch broke the protocol: {0}")]
    Protocol(String),
    #[error("timed out talking to the switch")]
    Timeout,
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

/// An authenticated connection to the switch.
pub struct TerminalClient {
    framed: Framed<BoxIo, FrameCodec>,
    pub keepalive_interval_ms: u32,
    pub ack_timeout_ms: u32,
}

impl TerminalClient {
    /// Connects, sends HELLO, answers the CHALLENGE with the proof and waits for WELCOME.
    pub async fn connect(options: &ClientOptions) -> Result<Self, ClientError> {
        tokio::time::timeout(
            Duration::from_millis(CONNECT_TIMEOUT_MS),
            Self::connect_unbounded(options),
        )
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    async fn connect_unbounded(options: &ClientOptions) -> Result<Self, ClientError> {
        let unreachable = |e: String| ClientError::Connect(options.switch.clone(), e);
        let tcp = tokio::net::TcpStream::connect(&options.switch)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let host = match &options.server_name {
            Some(name) => name.clone(),
            None => host_of(&options.switch),
        };
        let io = connect_client(tcp, &host, &options.tls)
            .await
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let mut framed = Framed::new(io, FrameCodec);
        framed
            .send(Frame::Hello {
                version: PROTOCOL_VERSION,
                terminal_id: options.terminal_id.clone(),
            })
            .await?;
        let nonce = match expect_frame(&mut framed).await? {
            Frame::Challenge { nonce } => nonce,
            other => return Err(unexpected(other)),
        };
        let proof = options
            .key
            .proof_frame(&options.terminal_id, &nonce)
            .map_err(ClientError::Protocol)?;
        framed.send(proof).await?;
        match expect_frame(&mut framed).await? {
            Frame::Welcome {
                keepalive_interval_ms,
                ack_timeout_ms,
            } => Ok(Self {
                framed,
                keepalive_interval_ms,
                ack_timeout_ms,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// The next frame from the switch; `None` when the switch closed the connection.
    pub async fn next(&mut self) -> Result<Option<Frame>, ClientError> {
        match self.framed.next().await {
            Some(Ok(frame)) => Ok(Some(frame)),
            Some(Err(e)) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// Sends one frame, within a keep-alive interval: a switch that stopped reading is gone.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ClientError> {
        tokio::time::timeout(self.write_wait(), self.framed.send(frame))
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    /// Says goodbye with an ERROR frame and closes, within a keep-alive interval as a send: a
    /// switch that stopped reading does not hold the goodbye up.
    pub async fn close(mut self, reason: &str) {
        let wait = self.write_wait();
        let goodbye = async {
            let _ = self
                .framed
                .send(Frame::error(ErrorCode::ShuttingDown, reason))
                .await;
            let _ = self.framed.close().await;
        };
        let _ = tokio::time::timeout(wait, goodbye).await;
    }

    /// How long one write may wait for the switch to read.
    fn write_wait(&self) -> Duration {
        Duration::from_millis(u64::from(self.keepalive_interval_ms).max(1_000))
    }
}

async fn expect_frame(framed: &mut Framed<BoxIo, FrameCodec>) -> Result<Frame, ClientError> {
    match framed.next().await {
        Some(Ok(Frame::Error { code, message })) => Err(ClientError::Refused { code, message }),
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) => Err(e.into()),
        None => Err(ClientError::Protocol(
            "the switch closed the connection during the handshake".into(),
        )),
    }
}

fn unexpected(frame: Frame) -> ClientError {
    ClientError::Protocol(format!("unexpected {} during the handshake", frame.name()))
}

/// `host` of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}
