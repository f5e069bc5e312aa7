//! The terminal switch: dedicated customer terminals connect over TLS, prove their registered key
//! and receive authorization codes and outcome notices (docs/terminal-protocol.md).

pub mod auth;
pub mod client;
pub mod frame;
pub mod held_outcomes;
pub(crate) mod peer_handshakes;
pub mod refusal_audits;
pub mod registry;
pub mod server;
pub mod session;
pub mod tls;

pub use registry::SwitchRegistry;

use crate::config::TerminalSwitchConfig;
use deadpool_postgres::Pool;
use openssl::ssl::SslAcceptor;
use payhub_actors::clock::SharedClock;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The switch's settings: the `[terminal_switch]` keys plus limits with working defaults.
#[derive(Debug, Clone)]
pub struct SwitchSettings {
    pub listen: SocketAddr,
    /// How long a delivery waits for the terminal's ACK.
    pub ack_timeout_ms: u64,
    /// The switch PINGs this often; a terminal silent for two intervals is dropped.
    pub keepalive_interval_ms: u64,
    /// TLS plus HELLO/CHALLENGE/PROOF must finish within this.
    pub handshake_timeout_ms: u64,
    /// Connections in TLS or the handshake at once; more are dropped on accept.
    pub handshakes_max: usize,
    /// Of those, from one address at once: more from it are dropped on accept.
    pub handshakes_per_peer_max: usize,
    /// Authenticated terminals at once; more are refused with ERROR busy.
    pub sessions_max: usize,
    /// Deliveries waiting for an ACK per terminal.
    pub pending_max: usize,
}

impl SwitchSettings {
    pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
    pub const HANDSHAKES_MAX: usize = 256;
    /// Many terminals may share one address (a carrier's NAT), but a handshake takes a few round
    /// trips: 16 at once from one address still lets hundreds a second through.
    pub const HANDSHAKES_PER_PEER_MAX: usize = 16;
    pub const SESSIONS_MAX: usize = 10_000;
    pub const PENDING_MAX: usize = 8;

    pub fn from_config(config: &TerminalSwitchConfig) -> Self {
        Self {
            listen: config.listen,
            ack_timeout_ms: config.ack_timeout_ms,
            keepalive_interval_ms: config.keepalive_interval_s.saturating_mul(1_000).max(1_000),
            handshake_timeout_ms: Self::HANDSHAKE_TIMEOUT_MS,
            handshakes_max: Self::HANDSHAKES_MAX,
            handshakes_per_peer_max: Self::HANDSHAKES_PER_PEER_MAX,
            sessions_max: Self::SESSIONS_MAX,
            pending_max: Self::PENDING_MAX,
        }
    }
}

/// A running switch: where it listens, who is connected, and how to stop it.
#[derive(Debug, Clone)]
pub struct SwitchHandle {
    pub addr: SocketAddr,
    pub registry: SwitchRegistry,
    stop: CancellationToken,
}

impl SwitchHandle {
    /// Stops accepting and closes every session (each gets ERROR shutting-down); deliveries
    /// waiting on them fail as `Offline`.
    pub fn shutdown(&self) {
        self.stop.cancel();
        self.registry.close_all();
    }
}

/// Binds the switch and starts accepting terminals (on the current actix system). `tls: None`
/// serves plain TCP (only for `[terminal_switch] tls = false`).
pub async fn start_switch(
    pool: Pool,
    clock: SharedClock,
    settings: SwitchSettings,
    tls: Option<SslAcceptor>,
) -> std::io::Result<SwitchHandle> {
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let registry = SwitchRegistry::new();
    let stop = CancellationToken::new();
    let shared = Arc::new(server::Shared {
        pool,
        clock,
        handshakes: tokio::sync::Semaphore::new(settings.handshakes_max),
        peer_handshakes: peer_handshakes::PeerHandshakes::new(settings.handshakes_per_peer_max),
        settings,
        registry: registry.clone(),
        tls,
        refusal_audits: refusal_audits::RefusalAudits::default(),
    });
    actix_rt::spawn(server::accept_loop(listener, shared, stop.clone()));
    tracing::info!(%addr, "terminal switch listening");
    Ok(SwitchHandle {
        addr,
        registry,
        stop,
    })
}
