//! The switch's listener: TLS, the challenge–response handshake, then a TerminalSessionActor for
//! each authenticated terminal. Refusals are logged and audited, never with the key.

use super::SwitchSettings;
use super::auth::{SharedKey, TerminalPublicKey, fresh_nonce, valid_terminal_id};
use super::frame::{ErrorCode, Frame, FrameCodec, FrameError, PROTOCOL_VERSION};
use super::peer_handshakes::PeerHandshakes;
use super::refusal_audits::{REFUSAL_AUDITS_PER_MINUTE_MAX, RefusalAudits, Verdict};
use super::registry::SwitchRegistry;
use super::session::{OUTBOX_MAX, SessionLimits, TerminalSessionActor};
use super::tls::{BoxIo, accept_server};
use actix::{Actor, StreamHandler};
use deadpool_postgres::Pool;
use futures::{SinkExt, StreamExt};
use openssl::ssl::SslAcceptor;
use payhub_actors::clock::SharedClock;
use payhub_actors::store::prepared::Prepared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{Framed, FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// What every connection handler needs.
pub(crate) struct Shared {
    pub pool: Pool,
    pub clock: SharedClock,
    pub settings: SwitchSettings,
    pub registry: SwitchRegistry,
    pub tls: Option<SslAcceptor>,
    /// Connections still in TLS or the handshake; more are dropped on accept.
    pub handshakes: Semaphore,
    /// The same, per peer address.
    pub peer_handshakes: PeerHandshakes,
    /// How many refusals a minute get an audit row.
    pub refusal_audits: RefusalAudits,
}

/// Why a terminal was refused. Only `Protocol` and `UnsupportedVersion` are told to the terminal
/// as such; every other reason looks the same from outside ("authentication failed").
#[derive(Debug)]
enum Refusal {
    Unknown,
    Disabled,
    NotDedicated,
    NoKey,
    WrongProof,
    UnsupportedVersion(u8),
    Protocol(String),
    Database(String),
    Busy,
}

impl Refusal {
    fn reason(&self) -> String {
        match self {
            Refusal::Unknown => "unregistered terminal".into(),
            Refusal::Disabled => "terminal or customer disabled".into(),
            Refusal::NotDedicated => "terminal is not of kind dedicated".into(),
            Refusal::NoKey => "terminal has no usable key".into(),
            Refusal::WrongProof => "wrong proof".into(),
            Refusal::UnsupportedVersion(v) => format!("unsupported protocol version {v}"),
            Refusal::Protocol(e) => format!("protocol error: {e}"),
            Refusal::Database(e) => format!("database: {e}"),
            Refusal::Busy => "too many terminals connected".into(),
        }
    }

    fn to_terminal(&self) -> Frame {
        match self {
            Refusal::UnsupportedVersion(_) => Frame::error(
                ErrorCode::UnsupportedVersion,
                &format!("this switch speaks version {PROTOCOL_VERSION}"),
            ),
            Refusal::Protocol(e) => Frame::error(ErrorCode::Protocol, e),
            Refusal::Database(_) => Frame::error(ErrorCode::Busy, "try again later"),
            Refusal::Busy => Frame::error(ErrorCode::Busy, "too many terminals connected"),
            _ => Frame::error(ErrorCode::AuthenticationFailed, "authentication failed"),
        }
    }
}

/// Accepts connections until `stop` is cancelled.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let shared = shared.clone();
                let stop = stop.clone();
                actix_rt::spawn(async move { serve_connection(tcp, peer, shared, stop).await });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "terminal switch accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
            }
        }
    }
    tracing::info!("terminal switch stopped accepting");
}

/// Pause after a failed accept.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;
/// How long the switch tries to deliver an ERROR frame to a refused terminal.
const REFUSAL_WRITE_TIMEOUT_MS: u64 = 1_000;
/// How long the audit line of a refusal may take: the connection holds a handshake slot meanwhile.
const REFUSAL_AUDIT_TIMEOUT_MS: u64 = 1_000;

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Ok(_permit) = shared.handshakes.try_acquire() else {
        tracing::warn!(%peer, "too many terminal handshakes in progress; connection dropped");
        return;
    };
    let Some(_peer_slot) = shared.peer_handshakes.try_take(peer.ip()) else {
        tracing::warn!(%peer, "too many handshakes in progress from this address; connection dropped");
        return;
    };
    let _ = tcp.set_nodelay(true);
    // TLS, HELLO, CHALLENGE and PROOF all within one handshake timeout (terminal-protocol.md).
    let handshake_timeout = Duration::from_millis(shared.settings.handshake_timeout_ms);
    let deadline = tokio::time::Instant::now() + handshake_timeout;
    let io: BoxIo = match &shared.tls {
        None => Box::new(tcp),
        Some(acceptor) => {
            match tokio::time::timeout_at(deadline, accept_server(acceptor, tcp)).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "terminal TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "terminal TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let mut framed = Framed::new(io, FrameCodec);
    let outcome = tokio::select! {
        // A stop that comes with the handshake's end wins: no session starts after the switch
        // closed its sessions.
        biased;
        _ = stop.cancelled() => return,
        outcome = tokio::time::timeout_at(deadline, authenticate(&mut framed, &shared)) => outcome,
    };
    match outcome {
        Ok(Ok(_)) if stop.is_cancelled() => {}
        Ok(Ok(terminal_id)) => start_session(framed, terminal_id, &shared).await,
        Ok(Err((terminal_id, refusal))) => {
            refuse(&mut framed, peer, terminal_id, refusal, &shared).await
        }
        Err(_) => {
            tracing::warn!(%peer, "terminal handshake timed out");
            let _ = send_briefly(
                &mut framed,
                Frame::error(ErrorCode::Timeout, "handshake timed out"),
            )
            .await;
        }
    }
}

/// HELLO → CHALLENGE → PROOF, checked against the registered key. Answers the terminal id, or the
/// id it claimed (if any) and why it was refused.
async fn authenticate(
    framed: &mut Framed<BoxIo, FrameCodec>,
    shared: &Shared,
) -> Result<String, (Option<String>, Refusal)> {
    let (version, terminal_id) = match next_frame(framed).await.map_err(|r| (None, r))? {
        Frame::Hello {
            version,
            terminal_id,
        } => (version, terminal_id),
        other => return Err((None, unexpected(&other, "HELLO"))),
    };
    if version != PROTOCOL_VERSION {
        // A refusal's log and audit line name only a well-formed id.
        let named = valid_terminal_id(&terminal_id).then_some(terminal_id);
        return Err((named, Refusal::UnsupportedVersion(version)));
    }
    if !valid_terminal_id(&terminal_id) {
        return Err((
            None,
            Refusal::Protocol(
                "HELLO.terminal_id: must be 1 to 64 printable ASCII characters".into(),
            ),
        ));
    }
    // The challenge goes out whether or not the id is registered, so the answer does not tell
    // which ids exist.
    let nonce = fresh_nonce();
    let fail = |r: Refusal| (Some(terminal_id.clone()), r);
    framed
        .send(Frame::Challenge { nonce })
        .await
        .map_err(|e| fail(Refusal::Protocol(e.to_string())))?;
    let proof = match next_frame(framed).await.map_err(fail)? {
        proof @ (Frame::Proof { .. } | Frame::Signature { .. }) => proof,
        other => return Err(fail(unexpected(&other, "PROOF or SIGNATURE"))),
    };
    if !framed.read_buffer().is_empty() {
        return Err(fail(Refusal::Protocol("frames sent before WELCOME".into())));
    }
    let keys = registered_keys(&shared.pool, &terminal_id)
        .await
        .map_err(fail)?;
    let proven = match (&proof, &keys) {
        (
            Frame::Proof { mac },
            Registered {
                shared: Some(key), ..
            },
        ) => key.verify(&terminal_id, &nonce, mac),
        (
            Frame::Signature { signature },
            Registered {
                public: Some(key), ..
            },
        ) => key.verify(&terminal_id, &nonce, signature),
        _ => false,
    };
    if !proven {
        return Err(fail(Refusal::WrongProof));
    }
    if shared.registry.connected_count() >= shared.settings.sessions_max
        && !shared.registry.is_online(&terminal_id)
    {
        return Err(fail(Refusal::Busy));
    }
    Ok(terminal_id)
}

async fn next_frame(framed: &mut Framed<BoxIo, FrameCodec>) -> Result<Frame, Refusal> {
    match framed.next().await {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) => Err(Refusal::Protocol(e.to_string())),
        None => Err(Refusal::Protocol(
            "connection closed during the handshake".into(),
        )),
    }
}

fn unexpected(frame: &Frame, wanted: &str) -> Refusal {
    Refusal::Protocol(format!("expected {wanted}, got {}", frame.name()))
}

/// The keys a dedicated terminal may prove itself with.
struct Registered {
    shared: Option<SharedKey>,
    public: Option<TerminalPublicKey>,
}

/// The keys of an enabled dedicated terminal of an enabled customer.
async fn registered_keys(pool: &Pool, terminal_id: &str) -> Result<Registered, Refusal> {
    let client = pool
        .get()
        .await
        .map_err(|e| Refusal::Database(e.to_string()))?;
    let row = client
        .query_opt_cached(
            "SELECT t.kind, t.status, c.status, t.shared_key, t.public_key
               FROM terminals t JOIN customers c ON c.id = t.customer_id
              WHERE t.id = $1",
            &[&terminal_id],
        )
        .await
        .map_err(|e| Refusal::Database(e.to_string()))?
        .ok_or(Refusal::Unknown)?;
    let kind: String = row.get(0);
    let terminal_status: String = row.get(1);
    let customer_status: String = row.get(2);
    let key: Option<Vec<u8>> = row.get(3);
    if terminal_status != "enabled" || customer_status != "enabled" {
        return Err(Refusal::Disabled);
    }
    if kind != "dedicated" {
        return Err(Refusal::NotDedicated);
    }
    let public_pem: Option<String> = row.get(4);
    // A public key is registered instead of a shared key (docs/terminal-protocol.md, section 1):
    // where there is one, a shared key stored beside it (registration made one for every
    // dedicated terminal until 1 Dec, and printed it) proves nothing.
    let shared = match public_pem {
        Some(_) => None,
        None => key.as_deref().and_then(SharedKey::from_slice),
    };
    let public = match public_pem.as_deref().map(TerminalPublicKey::from_pem) {
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => {
            tracing::warn!(terminal_id, error = %e, "registered public key unusable");
            None
        }
        None => None,
    };
    if shared.is_none() && public.is_none() {
        return Err(Refusal::NoKey);
    }
    Ok(Registered { shared, public })
}

async fn refuse(
    framed: &mut Framed<BoxIo, FrameCodec>,
    peer: SocketAddr,
    terminal_id: Option<String>,
    refusal: Refusal,
    shared: &Shared,
) {
    let reason = refusal.reason();
    tracing::warn!(%peer, terminal_id = terminal_id.as_deref().unwrap_or("-"), reason = %reason, "terminal refused");
    // Only a refusal of a claimed terminal id is audited: a peer that names none (it closed, or
    // sent no HELLO) could otherwise add a row per connection. Claimed ids are audited up to a
    // bound a minute, since any peer may claim one. The log line above still tells.
    if let Some(terminal_id) = &terminal_id {
        match shared.refusal_audits.decide(shared.clock.now()) {
            Verdict::Audit { not_audited_before } => {
                let audit = audit_refusal(shared, peer, terminal_id, &reason, not_audited_before);
                let timeout = Duration::from_millis(REFUSAL_AUDIT_TIMEOUT_MS);
                if tokio::time::timeout(timeout, audit).await.is_err() {
                    tracing::warn!("could not audit a terminal refusal in time");
                }
            }
            Verdict::LogOnly { first: true } => tracing::warn!(
                "more than {REFUSAL_AUDITS_PER_MINUTE_MAX} terminal refusals this minute: the \
                 rest are logged but not audited; the next audit row counts them"
            ),
            Verdict::LogOnly { first: false } => {}
        }
    }
    let _ = send_briefly(framed, refusal.to_terminal()).await;
}

async fn audit_refusal(
    shared: &Shared,
    peer: SocketAddr,
    terminal_id: &str,
    reason: &str,
    not_audited_before: u64,
) {
    let mut detail = serde_json::json!({
        "terminal_id": terminal_id,
        "peer": peer.to_string(),
        "reason": reason,
    });
    if not_audited_before > 0 {
        detail["refusals_not_audited_before"] = not_audited_before.into();
    }
    let Ok(client) = shared.pool.get().await else {
        tracing::warn!("could not audit a terminal refusal: no database connection");
        return;
    };
    let at = shared.clock.now();
    if let Err(e) = client
        .execute_cached(
            "INSERT INTO audit_log (at, event, detail) VALUES ($1, 'terminal_refused', $2)",
            &[&at, &detail],
        )
        .await
    {
        tracing::warn!(error = %e, "could not audit a terminal refusal");
    }
}

async fn send_briefly(
    framed: &mut Framed<BoxIo, FrameCodec>,
    frame: Frame,
) -> Result<(), FrameError> {
    let write = async {
        framed.send(frame).await?;
        framed.close().await
    };
    tokio::time::timeout(Duration::from_millis(REFUSAL_WRITE_TIMEOUT_MS), write)
        .await
        .map_err(|_| FrameError::Io("write timed out".into()))?
}

/// Hands the connection to a new session actor and a writer task. The session is registered
/// before WELCOME goes out, so a terminal that has its WELCOME can be delivered to.
async fn start_session(framed: Framed<BoxIo, FrameCodec>, terminal_id: String, shared: &Shared) {
    let settings = &shared.settings;
    let welcome = Frame::Welcome {
        keepalive_interval_ms: u32::try_from(settings.keepalive_interval_ms).unwrap_or(u32::MAX),
        ack_timeout_ms: u32::try_from(settings.ack_timeout_ms).unwrap_or(u32::MAX),
    };
    let (outbox, outbox_rx) = mpsc::channel(OUTBOX_MAX);
    if outbox.try_send(welcome).is_err() {
        return;
    }
    tracing::info!(terminal_id = %terminal_id, "terminal authenticated");
    let io = framed.into_inner();
    let (read_half, write_half) = tokio::io::split(io);
    let limits = SessionLimits {
        ack_timeout: Duration::from_millis(settings.ack_timeout_ms),
        keepalive_interval: Duration::from_millis(settings.keepalive_interval_ms),
        pending_max: settings.pending_max,
    };
    let session_no = shared.registry.next_session_no();
    let registry = shared.registry.clone();
    let id = terminal_id.clone();
    let session = TerminalSessionActor::create(move |ctx| {
        TerminalSessionActor::add_stream(FramedRead::new(read_half, FrameCodec), ctx);
        TerminalSessionActor::new(id, session_no, limits, registry, outbox)
    });
    shared
        .registry
        .register(&terminal_id, session_no, session.clone());
    let write_timeout_ms = settings.ack_timeout_ms;
    actix_rt::spawn(write_frames(
        FramedWrite::new(write_half, FrameCodec),
        outbox_rx,
        write_timeout_ms,
    ));
    actix_rt::spawn(super::held_outcomes::send_held(
        shared.pool.clone(),
        shared.clock.clone(),
        shared.registry.clone(),
        terminal_id,
        session,
        super::held_outcomes::HeldWaits::of_switch(
            settings.ack_timeout_ms,
            settings.keepalive_interval_ms,
        ),
    ));
}

async fn send_with_timeout<S>(sink: &mut S, frame: Frame, timeout_ms: u64) -> Result<(), FrameError>
where
    S: futures::Sink<Frame, Error = FrameError> + Unpin,
{
    tokio::time::timeout(Duration::from_millis(timeout_ms), sink.send(frame))
        .await
        .map_err(|_| FrameError::Io("write timed out".into()))?
}

/// Writes the session's frames until the session ends (its sender is dropped) or the peer stops
/// reading for longer than `timeout_ms`.
async fn write_frames(
    mut sink: FramedWrite<tokio::io::WriteHalf<BoxIo>, FrameCodec>,
    mut outbox: mpsc::Receiver<Frame>,
    timeout_ms: u64,
) {
    while let Some(frame) = outbox.recv().await {
        if let Err(e) = send_with_timeout(&mut sink, frame, timeout_ms).await {
            tracing::info!(error = %e, "terminal connection write failed");
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(timeout_ms), sink.close()).await;
}
