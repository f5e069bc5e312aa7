//! The bank simulator's ISO 8583 server: one task per connection reads frames, applies each
//! request to the store and writes the answers, pipelined (answers may leave out of order when a
//! request waits on the database or a delay fault).

use super::faults::{FaultSwitches, Faults};
use super::ledger::{
    self, Answer, DebitOrder, OriginalElements, ReversalOrder, ReversalOutcome, WireIdentity,
};
use super::store::{InjectedFailure, SimStore};
use crate::channels::terminal::tls::accept_server;
use bytes::BytesMut;
use futures::StreamExt;
use openssl::ssl::SslAcceptor;
use payhub_iso8583::Message;
use payhub_iso8583::codec::{MessageCodec, VerifyingCodec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::codec::{Encoder, FramedRead};

/// Requests of one connection waiting on the database at once.
pub const DB_REQUESTS_IN_FLIGHT_MAX: usize = 256;
/// Answers waiting (delayed or from the database) per connection.
pub const ANSWERS_QUEUED_MAX: usize = 4_096;
/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 256;
/// How long the answers of one write may take: a client that stops reading is dropped, and its
/// connection slot freed, rather than holding the connection for ever.
pub const WRITE_TIMEOUT_MS: u64 = 5_000;
/// A TLS client that has not finished its handshake by then is dropped.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// What the simulator has seen, for tests and the control port.
#[derive(Debug, Default)]
pub struct SimStats {
    pub connections: AtomicU64,
    pub sign_ons: AtomicU64,
    pub sign_offs: AtomicU64,
    pub echoes: AtomicU64,
    pub debits: AtomicU64,
    pub reversals: AtomicU64,
    /// Reversals that undid an approved debit.
    pub reversals_applied: AtomicU64,
    /// Reversals whose field 90 did not identify the debit field 37 found (nothing undone).
    pub reversal_mismatches: AtomicU64,
    /// Financial messages received on a connection before its sign-on.
    pub before_sign_on: AtomicU64,
    pub malformed: AtomicU64,
    pub answers_dropped: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub sign_ons: u64,
    pub sign_offs: u64,
    pub echoes: u64,
    pub debits: u64,
    pub reversals: u64,
    pub reversals_applied: u64,
    pub reversal_mismatches: u64,
    pub before_sign_on: u64,
    pub malformed: u64,
    pub answers_dropped: u64,
}

impl SimStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: g(&self.connections),
            sign_ons: g(&self.sign_ons),
            sign_offs: g(&self.sign_offs),
            echoes: g(&self.echoes),
            debits: g(&self.debits),
            reversals: g(&self.reversals),
            reversals_applied: g(&self.reversals_applied),
            reversal_mismatches: g(&self.reversal_mismatches),
            before_sign_on: g(&self.before_sign_on),
            malformed: g(&self.malformed),
            answers_dropped: g(&self.answers_dropped),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every connection shares.
#[derive(Debug)]
pub struct SimShared {
    pub banks: Vec<String>,
    pub store: SimStore,
    pub faults: FaultSwitches,
    pub stats: SimStats,
    pub rng_seed: u64,
    /// X9.19 key: when set, requests must carry a good MAC and answers carry one.
    pub mac: Option<payhub_iso8583::mac::MacKey>,
    /// When set, every connection starts with a TLS handshake.
    pub tls: Option<SimTls>,
}

/// The simulator's TLS server side (`--tls-cert`, `--tls-key`).
#[derive(Clone)]
pub struct SimTls(pub SslAcceptor);

impl SimTls {
    /// From PEM files: the certificate (chain) and its private key; errors name the file.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Self> {
        crate::channels::terminal::tls::acceptor_from_files(cert, key).map(Self)
    }
}

impl std::fmt::Debug for SimTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimTls")
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<SimShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "bank-sim accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "bank-sim at its connection limit; closing");
            continue;
        };
        let number = shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = socket.set_nodelay(true);
            if let Err(e) = serve_connection(socket, shared, number, shutdown).await {
                tracing::info!(%peer, error = %e, "bank-sim connection ended");
            }
        });
    }
}

/// Serves one accepted connection, after its TLS handshake when the simulator talks TLS.
async fn serve_connection(
    socket: TcpStream,
    shared: Arc<SimShared>,
    number: u64,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let tls = shared.tls.clone();
    let (conn, answers) = Connection::new(shared, number);
    let Some(acceptor) = tls else {
        let (reader, writer) = socket.into_split();
        return run_connection(conn, answers, reader, writer, shutdown).await;
    };
    let wait = Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
    let stream = match tokio::time::timeout(wait, accept_server(&acceptor.0, socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(std::io::Error::other(e.to_string())),
        Err(_) => return Err(std::io::Error::other("TLS handshake timed out")),
    };
    let (reader, writer) = tokio::io::split(stream);
    run_connection(conn, answers, reader, writer, shutdown).await
}

struct Connection {
    shared: Arc<SimShared>,
    rng: StdRng,
    signed_on: bool,
    received: u64,
    out: BytesMut,
    answers_tx: mpsc::Sender<Message>,
    db_slots: Arc<Semaphore>,
    /// Answers held back by the delay switch, at most `ANSWERS_QUEUED_MAX` at once.
    delayed_slots: Arc<Semaphore>,
}

impl Connection {
    fn new(shared: Arc<SimShared>, number: u64) -> (Self, mpsc::Receiver<Message>) {
        let rng =
            StdRng::seed_from_u64(shared.rng_seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (answers_tx, answers_rx) = mpsc::channel(ANSWERS_QUEUED_MAX);
        (
            Self {
                shared,
                rng,
                signed_on: false,
                received: 0,
                out: BytesMut::with_capacity(64 * 1024),
                answers_tx,
                db_slots: Arc::new(Semaphore::new(DB_REQUESTS_IN_FLIGHT_MAX)),
                delayed_slots: Arc::new(Semaphore::new(ANSWERS_QUEUED_MAX)),
            },
            answers_rx,
        )
    }
}

async fn run_connection<R, W>(
    mut conn: Connection,
    mut answers_rx: mpsc::Receiver<Message>,
    reader: R,
    mut writer: W,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    {
        // A bad or missing MAC arrives as a malformed message: checked over the bytes as received.
        let codec = VerifyingCodec::new(conn.shared.mac.clone());
        let mut frames = FramedRead::new(reader, codec);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(answer) = answers_rx.recv() => conn.encode(&answer),
                item = frames.next() => match item {
                    None => break,
                    Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                    Some(Ok(Err(e))) => {
                        bump(&conn.shared.stats.malformed);
                        tracing::warn!(error = %e, "bank-sim: malformed message dropped");
                    }
                    Some(Ok(Ok(message))) => {
                        if conn.receive(message).await == Flow::Close {
                            break;
                        }
                    }
                },
            }
            // Write when no further whole frame is already buffered (batches pipelined answers).
            let more = matches!(
                payhub_iso8583::frame::split_frame(frames.read_buffer()),
                Ok(Some(_))
            );
            if !more && !conn.out.is_empty() {
                write_in_time(&mut writer, &conn.out).await?;
                conn.out.clear();
            }
        }
        if !conn.out.is_empty() {
            let _ = write_in_time(&mut writer, &conn.out).await;
        }
        Ok(())
    }
}

async fn write_in_time<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let timeout = Duration::from_millis(WRITE_TIMEOUT_MS);
    match tokio::time::timeout(timeout, writer.write_all(bytes)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client reads nothing",
        )),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

impl Connection {
    fn encode(&mut self, message: &Message) {
        let signed;
        let message = match &self.shared.mac {
            Some(key) => {
                let mut copy = message.clone();
                if let Err(e) = payhub_iso8583::mac::sign(&mut copy, key) {
                    tracing::error!(error = %e, "bank-sim: signing an answer");
                    return;
                }
                signed = copy;
                &signed
            }
            None => message,
        };
        if let Err(e) = MessageCodec.encode(message, &mut self.out) {
            tracing::error!(error = %e, "bank-sim: encoding an answer");
        }
    }

    fn chance(&mut self, pct: u8) -> bool {
        pct > 0 && self.rng.random_range(0..100u8) < pct
    }

    /// Sends an answer through the fault switches.
    fn answer(&mut self, message: Option<Message>, faults: &Faults) {
        let Some(message) = message else {
            return;
        };
        if self.chance(faults.drop_pct) {
            bump(&self.shared.stats.answers_dropped);
            return;
        }
        let copies = if self.chance(faults.duplicate_pct) {
            2
        } else {
            1
        };
        if faults.delay_ms == 0 {
            for _ in 0..copies {
                self.encode(&message);
            }
            return;
        }
        let Ok(slot) = self.delayed_slots.clone().try_acquire_owned() else {
            bump(&self.shared.stats.answers_dropped);
            return;
        };
        let delay = Duration::from_millis(self.rng.random_range(0..=faults.delay_ms));
        let tx = self.answers_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::time::sleep(delay).await;
            for _ in 0..copies {
                if tx.try_send(message.clone()).is_err() {
                    return;
                }
            }
        });
    }

    async fn receive(&mut self, message: Message) -> Flow {
        let faults = self.shared.faults.get();
        self.received += 1;
        if faults.close_every > 0 && self.received.is_multiple_of(u64::from(faults.close_every)) {
            return Flow::Close;
        }
        match message.mti() {
            "0800" => {
                let answer = self.network(&message);
                self.answer(answer, &faults);
            }
            "0200" => self.debit(message, faults).await,
            "0420" | "0421" => self.reversal(message, faults).await,
            other => tracing::warn!(mti = other, "bank-sim: unexpected message dropped"),
        }
        Flow::Continue
    }

    fn network(&mut self, request: &Message) -> Option<Message> {
        let stats = &self.shared.stats;
        let code = match request.get(70) {
            Some("001") => {
                self.signed_on = true;
                bump(&stats.sign_ons);
                ledger::APPROVED
            }
            Some("002") => {
                self.signed_on = false;
                bump(&stats.sign_offs);
                ledger::APPROVED
            }
            Some("301") => {
                bump(&stats.echoes);
                ledger::APPROVED
            }
            _ => ledger::FORMAT_ERROR,
        };
        respond(request, "0810", &[7, 11, 70], code, None)
    }

    async fn debit(&mut self, request: Message, faults: Faults) {
        bump(&self.shared.stats.debits);
        if !self.signed_on {
            bump(&self.shared.stats.before_sign_on);
            let answer = respond(
                &request,
                "0210",
                ECHOED_0210,
                ledger::ISSUER_INOPERATIVE,
                None,
            );
            self.answer(answer, &faults);
            return;
        }
        let order = match parse_debit(&request, &self.shared.banks) {
            Ok(order) => order,
            Err(code) => {
                let answer = respond(&request, "0210", ECHOED_0210, code, None);
                self.answer(answer, &faults);
                return;
            }
        };
        let injected = self.chance(faults.fail_pct).then(|| {
            if self.rng.random_bool(0.5) {
                InjectedFailure::IssuerInoperative
            } else {
                InjectedFailure::MalfunctionAfterApplying
            }
        });
        let store = self.shared.store.clone();
        let work = async move {
            match store.debit(&order, injected).await {
                Ok(answer) => answer.approved_as(faults.approved_as),
                Err(e) => {
                    tracing::error!(error = %e, "bank-sim: debit failed");
                    Answer::declined(ledger::SYSTEM_MALFUNCTION)
                }
            }
        };
        if self.shared.store.is_memory() {
            let answer = work.await;
            let message = debit_answer(&request, &answer);
            self.answer(message, &faults);
        } else {
            self.spawn_answer(work, request, debit_answer, faults).await;
        }
    }

    async fn reversal(&mut self, request: Message, faults: Faults) {
        bump(&self.shared.stats.reversals);
        if !self.signed_on {
            // Financial messages wait for the sign-on, as the profile says: nothing undone.
            bump(&self.shared.stats.before_sign_on);
            let code = ledger::ISSUER_INOPERATIVE;
            let answer = respond(&request, "0430", ECHOED_0430, code, None);
            self.answer(answer, &faults);
            return;
        }
        let Some(order) = parse_reversal(&request) else {
            let answer = respond(&request, "0430", ECHOED_0430, ledger::FORMAT_ERROR, None);
            self.answer(answer, &faults);
            return;
        };
        if self.chance(faults.reversal_fail_pct) {
            // Could not process it: nothing undone, as a BIPS whose ledger is down answers.
            let code = ledger::SYSTEM_MALFUNCTION;
            let answer = respond(&request, "0430", ECHOED_0430, code, None);
            self.answer(answer, &faults);
            return;
        }
        let shared = self.shared.clone();
        let work = async move {
            match shared.store.reverse(&order).await {
                Ok(outcome) => {
                    count_reversal(&shared.stats, &order, outcome);
                    Some(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "bank-sim: reversal failed; not answered");
                    None
                }
            }
        };
        // 00 whatever was undone: "never saw it" and "not that one" are answered alike.
        let build = |request: &Message, done: &Option<()>| {
            done.and_then(|()| respond(request, "0430", ECHOED_0430, ledger::APPROVED, None))
        };
        if self.shared.store.is_memory() {
            let done = work.await;
            let answer = build(&request, &done);
            self.answer(answer, &faults);
        } else {
            let build = move |r: &Message, d: &Option<()>| build(r, d);
            self.spawn_answer(work, request, build, faults).await;
        }
    }

    /// Runs database work off the read loop; its answer comes back through the answer queue.
    async fn spawn_answer<T, W, B, M>(
        &mut self,
        work: W,
        request: Message,
        build: B,
        faults: Faults,
    ) where
        T: Send + 'static,
        W: std::future::Future<Output = T> + Send + 'static,
        B: FnOnce(&Message, &T) -> M + Send + 'static,
        M: Into<Option<Message>>,
    {
        let Ok(slot) = self.db_slots.clone().acquire_owned().await else {
            return;
        };
        // Fault decisions stay on the connection's seeded generator, in arrival order.
        let dropped = self.chance(faults.drop_pct);
        let copies = if self.chance(faults.duplicate_pct) {
            2
        } else {
            1
        };
        let delay = if faults.delay_ms > 0 {
            Duration::from_millis(self.rng.random_range(0..=faults.delay_ms))
        } else {
            Duration::ZERO
        };
        let tx = self.answers_tx.clone();
        if dropped {
            bump(&self.shared.stats.answers_dropped);
        }
        tokio::spawn(async move {
            let result = work.await;
            drop(slot);
            let Some(message) = build(&request, &result).into() else {
                return;
            };
            if dropped {
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            for _ in 0..copies {
                if tx.send(message.clone()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Fields of a 0200 copied into its 0210.
/// As the conformance vector `debit_0210_approved` has them: not 3, 12, 13 or 100, which the
/// profile names for the 0200 only.
const ECHOED_0210: &[u8] = &[4, 7, 11, 32, 37, 41, 42, 49];
/// Fields of a 0420/0421 copied into its 0430.
const ECHOED_0430: &[u8] = &[4, 7, 11, 32, 37, 49, 90];

/// An answer of type `mti` with field 39 `code`, the request's `echoed` fields (those that are
/// present) and an approval code.
fn respond(
    request: &Message,
    mti: &str,
    echoed: &[u8],
    code: &str,
    approval_code: Option<&str>,
) -> Option<Message> {
    let mut fields: Vec<(u8, &str)> = echoed
        .iter()
        .filter_map(|f| request.get(*f).map(|v| (*f, v)))
        .collect();
    if let Some(a) = approval_code {
        fields.push((38, a));
    }
    fields.push((39, code));
    fields.sort_by_key(|(f, _)| *f);
    let mut answer = Message::new(mti).ok()?;
    for (field, value) in fields {
        // Every value came from a checked message or is a valid constant.
        if let Err(e) = answer.set(field, value) {
            tracing::error!(field, error = %e, "bank-sim: building an answer");
            return None;
        }
    }
    Some(answer)
}

/// The 0210 for `request`; a repeat's says the amount the recorded debit took.
fn debit_answer(request: &Message, answer: &Answer) -> Option<Message> {
    let mut answered = respond(
        request,
        "0210",
        ECHOED_0210,
        &answer.response_code,
        answer.approval_code.as_deref(),
    )?;
    if let Some(amount) = answer.original_amount_minor {
        answered.set(4, &format!("{amount:012}")).ok()?;
    }
    Some(answered)
}

fn count_reversal(stats: &SimStats, order: &ReversalOrder, outcome: ReversalOutcome) {
    match outcome {
        ReversalOutcome::Reversed => bump(&stats.reversals_applied),
        ReversalOutcome::NothingToUndo => {}
        ReversalOutcome::Mismatch => {
            bump(&stats.reversal_mismatches);
            tracing::warn!(
                rrn = %order.rrn,
                original_stan = %order.original.stan,
                original_f7 = %order.original.transmission_time,
                "bank-sim: field 90 does not identify the debit of field 37; nothing reversed"
            );
        }
    }
}

/// The reversal a 0420/0421 asks for: field 37 and a well-formed field 90.
pub fn parse_reversal(request: &Message) -> Option<ReversalOrder> {
    Some(ReversalOrder {
        rrn: request.get(37)?.to_owned(),
        original: OriginalElements::parse(request.get(90)?)?,
    })
}

/// The debit a 0200 asks for, or the response code refusing it.
pub fn parse_debit(request: &Message, banks: &[String]) -> Result<DebitOrder, &'static str> {
    let field = |n: u8| request.get(n).ok_or(ledger::FORMAT_ERROR);
    if field(3)? != "000000" {
        return Err(ledger::INVALID_TRANSACTION);
    }
    let wire = WireIdentity {
        stan: field(11)?.to_owned(),
        transmission_time: field(7)?.to_owned(),
        acquirer_id: field(32)?.to_owned(),
    };
    let amount_minor: i64 = field(4)?.parse().map_err(|_| ledger::FORMAT_ERROR)?;
    if amount_minor == 0 {
        return Err(ledger::INVALID_AMOUNT);
    }
    let payer_bank = field(100)?;
    if !banks.iter().any(|b| b == payer_bank) {
        return Err(ledger::UNKNOWN_ACCOUNT);
    }
    Ok(DebitOrder {
        rrn: field(37)?.to_owned(),
        payer_bank: payer_bank.to_owned(),
        payer_account: field(102)?.to_owned(),
        payee_account: field(103)?.to_owned(),
        amount_minor,
        currency_numeric: field(49)?.to_owned(),
        wire,
    })
}
