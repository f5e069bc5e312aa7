//! `BankLinkActor`: one long-lived connection to one bank information processing system.
//!
//! State machine: `Down` → (connect) → `Connected` → (0800/001, 0810/00) → `SignedOn`; a sign-off
//! (ours, or the bank's 0800/002) → `Connected`, and after the bank's a sign-on again; any
//! failure (connect, sign-on refused or unanswered, echo unanswered, socket error, protocol error)
//! → `Down` and a reconnect after a capped exponential backoff. Only a signed-on link carries
//! financial messages. Debits are pipelined up to `in_flight_max` and matched by MTI class + STAN
//! (and field 37). Reversals come from the durable queue (`reversals.rs`): 0420 once (one
//! response timeout after it was queued when the debit went unanswered), then 0421 every
//! `reversal_interval_ms` until a 0430 that processed it, on this connection or the next (one
//! answering 91, 96 or without field 39 is sent again, ever more slowly, never closed). An
//! echo (0800/301)
//! goes out when nothing was received for `echo_interval_ms`, however much was sent, so a bank
//! that reads but stops answering is found within the echo interval plus the response timeout.
//!
//! One file per part of the link's work: `lifecycle` (connecting, sign-on, the housekeeping
//! tick), `debits` (the in-flight table and reservations), `receiving` (answers and the
//! bank's requests) and `reversing` (reversals from the durable queue).

mod debits;
mod lifecycle;
mod receiving;
mod reversing;

pub use reversing::{park_reversal, queue_reversal, reversal_record, unconfigured_reversal_record};

use super::connection::LinkWriter;
use super::prepared::{LinkReservation, Reservations};
use super::reversals::{PendingReversal, ReversalReason};
use super::settings::{Backoff, LinkSettings};
use super::stan::{StanAllocator, format_stan};
use super::unsent::Unsent;
use super::wire::{self, NetworkCode};
use crate::clock::SharedClock;
use crate::messages::{BankError, DebitRequest, DebitResponse};
use crate::metrics::{global, labels};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use payhub_iso8583::Message;
use payhub_iso8583::codec::CodecError;
use payhub_iso8583::mac::{self, MacKey};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// At most this many reversals are outstanding on one connection at once.
pub const REVERSALS_IN_FLIGHT_MAX: usize = 64;
/// The housekeeping tick (timeouts of network messages, echo, reversal repeats) runs at least
/// this often and at most this often.
const TICK_MIN_MS: u64 = 5;
const TICK_MAX_MS: u64 = 250;
/// Reversals beyond `reversals_loaded_max` are loaded at most this often, as answers come in.
const REVERSALS_RELOAD_SPACING: std::time::Duration = std::time::Duration::from_secs(1);
/// A debit whose caller stopped waiting is reclaimed by the link after this many timeouts.
const STALE_DEBIT_TIMEOUTS: u32 = 2;
/// Stopping, the sign-off waits for the debits in flight, and must leave within the router's
/// shutdown wait: a debit unanswered for one timeout, or for half that wait if sooner, is given up
/// then (its payment has stopped waiting, or is told the link dropped) and reversed.
const STOPPING_DEBIT_WAIT: std::time::Duration =
    std::time::Duration::from_millis(super::router::SHUTDOWN_WAIT_MS_MAX / 2);
/// Attempts to store a reversal before the failure is reported (the database may be restarting).
const REVERSAL_STORE_ATTEMPTS_MAX: u32 = 5;
const REVERSAL_STORE_RETRY_MS: u64 = 200;
/// Bytes that may wait for the socket beyond the link's own outstanding messages (every debit and
/// reversal in flight, at `MESSAGE_MAX_BYTES` each). More, beyond the kernel's own buffers, is
/// what the bank has not read: the writer's buffer has no bound of its own, so the link is dropped
/// instead (checked on each tick, and before answering each request from the bank, which a bank
/// can send as fast as it likes).
const UNSENT_BEYOND_IN_FLIGHT_BYTES: usize = 1 << 20;
/// The reconnect backoff starts again from its minimum only once a link has stayed signed on
/// this long: a BIPS that accepts the sign-on and drops the connection at once is otherwise
/// reconnected to (a sign-on and a reversal load each time) every `reconnect_backoff_min_ms`.
const BACKOFF_RESET_AFTER_MS: u64 = 10_000;
/// A generous size for one message on the wire (a 0200 with its MAC is about 230 bytes).
const MESSAGE_MAX_BYTES: usize = 512;

/// The link's state as operators and the router see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Down = 0,
    Connected = 1,
    SignedOn = 2,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Connected => "connected",
            Self::SignedOn => "signed_on",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            2 => Self::SignedOn,
            1 => Self::Connected,
            _ => Self::Down,
        }
    }
}

/// What the router and the status page read without asking the actor.
#[derive(Debug, Default)]
pub struct LinkShared {
    state: AtomicU8,
    /// Told of every sign-on; shared by all the links of one router, whose debits wait on it
    /// while none of their links is signed on.
    sign_ons: Arc<Notify>,
    in_flight: AtomicUsize,
    reversals_queued: AtomicUsize,
    last_echo_at: Mutex<Option<DateTime<Utc>>>,
    /// Debits' round trip, for the operator page.
    pub round_trip: crate::metrics::MovingAverage,
}

impl LinkShared {
    pub fn new(sign_ons: Arc<Notify>) -> Self {
        Self {
            sign_ons,
            ..Self::default()
        }
    }

    pub fn state(&self) -> LinkState {
        LinkState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn reversals_queued(&self) -> usize {
        self.reversals_queued.load(Ordering::Relaxed)
    }

    pub fn last_echo_at(&self) -> Option<DateTime<Utc>> {
        *self.last_echo_at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a link needs besides its settings.
#[derive(Clone)]
pub struct LinkDeps {
    pub pool: Pool,
    pub clock: SharedClock,
    /// Field 32, the gateway's acquiring institution id.
    pub institution_id: String,
}

/// The outcome of one 0200 on the link.
#[derive(Debug)]
pub enum LinkOutcome {
    /// The matching 0210's field 39 and field 38 (when it carries one, whatever field 39 says).
    Answered {
        response_code: String,
        approval_code: Option<String>,
    },
    /// The connection went away (or the link stopped) before the 0210.
    Dropped,
    /// A 0210 that cannot be taken as an answer to this debit (another amount, an approval
    /// without its approval code): what the BIPS did is not known.
    Malformed(String),
}

/// A debit accepted by the link: wait on `reply`, and send `Expire` when tired of waiting.
#[derive(Debug)]
pub struct DebitTicket {
    pub reply: oneshot::Receiver<LinkOutcome>,
    pub stan: u32,
    pub seq: u64,
    /// Field 7 of the 0200 (for field 90 of a reversal).
    pub f7: String,
}

/// Send a debit (a 0200) on this link.
#[derive(Message)]
#[rtype(result = "Result<DebitTicket, BankError>")]
pub struct LinkDebit(pub Arc<DebitRequest>);

/// Reserve a STAN and field 7 for a debit sent later with `LinkSendReserved`.
#[derive(Message)]
#[rtype(result = "Result<LinkReservation, BankError>")]
pub struct LinkReserve(pub Arc<DebitRequest>);

/// Send the 0200 reserved under `stan` and `token`.
#[derive(Message)]
#[rtype(result = "Result<DebitTicket, BankError>")]
pub struct LinkSendReserved {
    pub stan: u32,
    pub token: u64,
}

/// The caller's timeout ran out: forget the debit if still unanswered (`true`), or the answer is
/// already in the ticket (`false`).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Expire {
    pub stan: u32,
    pub seq: u64,
}

/// A reversal was stored: send it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReversalQueued(pub PendingReversal);

/// The pending reversals read, with the count of those turned away (memory full) when the read
/// started.
#[derive(Message)]
#[rtype(result = "()")]
struct ReversalsLoaded(Vec<PendingReversal>, u64);

/// A load of the pending reversals failed: the table may hold some that are not in memory.
#[derive(Message)]
#[rtype(result = "()")]
struct ReversalsNotLoaded;

/// Graceful shutdown: refuse new debits, let outstanding ones finish, sign off, stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SignOff;

enum PendingKind {
    Debit {
        request: Arc<DebitRequest>,
        reply: oneshot::Sender<LinkOutcome>,
        seq: u64,
        f7: String,
    },
    Network {
        code: NetworkCode,
        deadline: Instant,
    },
    Reversal {
        id: i64,
        deadline: Instant,
    },
}

impl PendingKind {
    /// The MTI that answers it.
    fn response_mti(&self) -> &'static str {
        match self {
            Self::Debit { .. } => "0210",
            Self::Network { .. } => "0810",
            Self::Reversal { .. } => "0430",
        }
    }
}

struct Pending {
    kind: PendingKind,
    sent_at: Instant,
}

struct Conn {
    writer: LinkWriter,
    /// Bytes written to `writer` that the socket has not yet taken.
    unsent: Unsent,
    /// The socket's intake when last seen to move (or to have nothing waiting), and when.
    taken_at: (u64, Instant),
    reader: SpawnHandle,
    generation: u64,
}

/// Metric handles of this link, looked up once.
struct LinkMetrics {
    state: Gauge,
    in_flight: Gauge,
    round_trip: Histogram,
    timeouts: Counter,
    reversals_pending: Gauge,
}

impl LinkMetrics {
    fn new(link: &str) -> Self {
        let m = global();
        let l = labels(&[("link", link)]);
        Self {
            state: m.bank_link_state.get_or_create(&l).clone(),
            in_flight: m.bank_link_in_flight.get_or_create(&l).clone(),
            round_trip: m.bank_link_round_trip_seconds.get_or_create(&l).clone(),
            timeouts: m.bank_link_timeouts.get_or_create(&l).clone(),
            reversals_pending: m.bank_reversals_pending.get_or_create(&l).clone(),
        }
    }
}

pub struct BankLinkActor {
    settings: Arc<LinkSettings>,
    deps: LinkDeps,
    shared: Arc<LinkShared>,
    conn: Option<Conn>,
    generation: u64,
    stans: StanAllocator,
    pending: HashMap<(u8, u32), Pending>,
    debits_in_flight: usize,
    /// 0200s prepared but not yet sent; they count against `in_flight_max`.
    reserved: Reservations,
    seq: u64,
    reversals: BTreeMap<i64, PendingReversal>,
    reversals_in_flight: HashSet<i64>,
    /// More may wait in the table than memory holds: the last load filled
    /// `reversals_loaded_max`, or failed. A tick loads them (`load_more_reversals`).
    reversals_beyond_loaded: bool,
    /// Reversals turned away because memory was full, ever: a load that started before the last
    /// of them may not hold it, so it does not clear `reversals_beyond_loaded`.
    reversals_turned_away: u64,
    reversals_loaded_at: Option<Instant>,
    backoff: Backoff,
    /// When the bank last sent anything. Only what is received counts: writes succeed into a
    /// dead peer's socket buffer, so counting them would keep a silent bank from being echoed.
    last_received: Instant,
    /// Debits unanswered within the response timeout since the last one answered: a BIPS whose
    /// financial side stopped may still send and answer network messages.
    debit_timeouts_in_a_row: u32,
    stopping: bool,
    sign_off_sent: bool,
    metrics: LinkMetrics,
    /// X9.19 key when the link MACs its messages (sent in field 128; checked in 128, else 64).
    mac: Option<MacKey>,
}

impl BankLinkActor {
    pub fn new(settings: Arc<LinkSettings>, deps: LinkDeps, shared: Arc<LinkShared>) -> Self {
        let seed = deps.clock.now().timestamp_subsec_micros();
        let backoff = Backoff::new(
            settings.reconnect_backoff_min_ms,
            settings.reconnect_backoff_max_ms,
        );
        let metrics = LinkMetrics::new(&settings.name);
        let mac = settings.mac_key.as_ref().map(|k| MacKey::new(*k.expose()));
        Self {
            mac,
            settings,
            deps,
            shared,
            conn: None,
            generation: 0,
            stans: StanAllocator::new(seed),
            pending: HashMap::new(),
            debits_in_flight: 0,
            reserved: Reservations::default(),
            seq: 0,
            reversals: BTreeMap::new(),
            reversals_in_flight: HashSet::new(),
            reversals_beyond_loaded: false,
            reversals_turned_away: 0,
            reversals_loaded_at: None,
            backoff,
            last_received: Instant::now(),
            debit_timeouts_in_a_row: 0,
            stopping: false,
            sign_off_sent: false,
            metrics,
        }
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn set_state(&mut self, state: LinkState) {
        self.shared.state.store(state as u8, Ordering::Release);
        self.metrics.state.set(state as i64);
        if state == LinkState::SignedOn {
            self.shared.sign_ons.notify_waiters();
        }
    }

    fn state(&self) -> LinkState {
        self.shared.state()
    }

    fn tick_interval(&self) -> Duration {
        let s = &self.settings;
        let shortest = s
            .response_timeout_ms
            .min(s.echo_interval_ms)
            .min(s.reversal_interval_ms);
        Duration::from_millis((shortest / 4).clamp(TICK_MIN_MS, TICK_MAX_MS))
    }

    fn allocate_stan(&mut self) -> Option<u32> {
        self.stans.allocate()
    }

    fn write(&mut self, mut message: Message) -> bool {
        if let Some(key) = &self.mac
            && let Err(e) = mac::sign(&mut message, key)
        {
            tracing::error!(link = %self.settings.name, error = %e, "signing a message");
            return false;
        }
        match self.conn.as_mut() {
            Some(conn) => {
                conn.writer.write(message);
                true
            }
            None => false,
        }
    }

    fn send_network(&mut self, code: NetworkCode) {
        let Some(stan) = self.allocate_stan() else {
            return;
        };
        match wire::network_request(code, &format_stan(stan), self.deps.clock.now()) {
            Ok(message) => {
                let now = Instant::now();
                self.pending.insert(
                    (b'8', stan),
                    Pending {
                        kind: PendingKind::Network {
                            code,
                            deadline: now + self.settings.response_timeout(),
                        },
                        sent_at: now,
                    },
                );
                self.write(message);
            }
            Err(e) => {
                self.stans.release(stan);
                tracing::error!(link = %self.name(), error = %e, "building a 0800");
            }
        }
    }
}

// Each item is moved once, from the reader into its handler; boxing would allocate per message.
#[allow(clippy::large_enum_variant)]
enum Inbound {
    Frame(
        u64,
        Result<Result<Message, payhub_iso8583::Error>, CodecError>,
    ),
    Closed(u64),
}

impl Actor for BankLinkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.in_flight_max.saturating_mul(2).max(64));
        self.set_state(LinkState::Down);
        self.load_reversals(ctx);
        let tick = self.tick_interval();
        ctx.run_interval(tick, |act, ctx| act.tick(ctx));
        self.connect(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.set_state(LinkState::Down);
        for (_, pending) in self.pending.drain() {
            if let PendingKind::Debit { reply, .. } = pending.kind {
                let _ = reply.send(LinkOutcome::Dropped);
            }
        }
    }
}

impl StreamHandler<Inbound> for BankLinkActor {
    fn handle(&mut self, item: Inbound, ctx: &mut Context<Self>) {
        let current = self.conn.as_ref().map(|c| c.generation);
        match item {
            Inbound::Frame(generation, _) | Inbound::Closed(generation)
                if Some(generation) != current => {}
            Inbound::Frame(_, Ok(Ok(message))) => self.on_message(message, ctx),
            Inbound::Frame(_, Ok(Err(e))) => {
                // A malformed message in a good frame: log and drop it, keep the link.
                tracing::warn!(link = %self.name(), error = %e, "malformed message dropped");
            }
            Inbound::Frame(_, Err(e)) => {
                let why = format!("protocol error: {e}");
                self.drop_connection(&why, ctx);
            }
            Inbound::Closed(_) => self.drop_connection("closed by the peer", ctx),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The `Closed` item has already been handled; the actor lives on.
    }
}

/// The writer failed; handled after the writer has let go of its buffers.
#[derive(Message)]
#[rtype(result = "()")]
struct WriteFailed {
    generation: u64,
    why: String,
}

impl Handler<WriteFailed> for BankLinkActor {
    type Result = ();

    fn handle(&mut self, msg: WriteFailed, ctx: &mut Context<Self>) {
        if self.conn.as_ref().map(|c| c.generation) == Some(msg.generation) {
            self.drop_connection(&msg.why, ctx);
        }
    }
}

impl actix::io::WriteHandler<CodecError> for BankLinkActor {
    fn error(&mut self, err: CodecError, ctx: &mut Context<Self>) -> Running {
        // The writer is borrowed while it reports: touch it only from the next message.
        if let Some(generation) = self.conn.as_ref().map(|c| c.generation) {
            ctx.notify(WriteFailed {
                generation,
                why: format!("write failed: {err}"),
            });
        }
        Running::Stop
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The writer ends with its connection; the actor lives on.
    }
}

impl Handler<LinkDebit> for BankLinkActor {
    type Result = Result<DebitTicket, BankError>;

    fn handle(&mut self, msg: LinkDebit, _ctx: &mut Context<Self>) -> Self::Result {
        self.send_debit(msg.0)
    }
}

impl Handler<LinkReserve> for BankLinkActor {
    type Result = Result<LinkReservation, BankError>;

    fn handle(&mut self, msg: LinkReserve, _ctx: &mut Context<Self>) -> Self::Result {
        self.hold_reservation(msg.0)
    }
}

impl Handler<LinkSendReserved> for BankLinkActor {
    type Result = Result<DebitTicket, BankError>;

    fn handle(&mut self, msg: LinkSendReserved, _ctx: &mut Context<Self>) -> Self::Result {
        self.send_reserved(msg.stan, msg.token)
    }
}

impl Handler<Expire> for BankLinkActor {
    type Result = bool;

    fn handle(&mut self, msg: Expire, ctx: &mut Context<Self>) -> bool {
        let key = (b'2', msg.stan);
        let ours = matches!(
            self.pending.get(&key),
            Some(Pending { kind: PendingKind::Debit { seq, .. }, .. }) if *seq == msg.seq
        );
        if !ours {
            return false;
        }
        self.pending.remove(&key);
        self.stans.release(msg.stan);
        self.debit_left();
        self.debit_timed_out(ctx);
        true
    }
}

impl Handler<ReversalQueued> for BankLinkActor {
    type Result = ();

    fn handle(&mut self, msg: ReversalQueued, ctx: &mut Context<Self>) {
        // Stored already: past the bound it waits in the table, and is loaded as those held
        // are answered (a bank that never answers a 0420 cannot grow this map).
        if self.reversals.len() >= self.settings.reversals_loaded_max {
            self.reversals_beyond_loaded = true;
            self.reversals_turned_away += 1;
            return;
        }
        self.reversals.entry(msg.0.id).or_insert(msg.0);
        self.publish_reversal_count();
        self.send_due_reversals(ctx);
    }
}

impl Handler<ReversalsLoaded> for BankLinkActor {
    type Result = ();

    fn handle(&mut self, msg: ReversalsLoaded, ctx: &mut Context<Self>) {
        let ReversalsLoaded(loaded, turned_away_before) = msg;
        let filled = loaded.len() >= self.settings.reversals_loaded_max;
        for r in loaded {
            self.reversals.entry(r.id).or_insert(r);
        }
        // Full memory: a reversal queued since the read may have been left in the table; so
        // may one turned away while the read ran, stored after it began.
        let turned_away_since = self.reversals_turned_away != turned_away_before;
        self.reversals_beyond_loaded = filled
            || turned_away_since
            || self.reversals.len() >= self.settings.reversals_loaded_max;
        self.publish_reversal_count();
        self.send_due_reversals(ctx);
    }
}

impl Handler<ReversalsNotLoaded> for BankLinkActor {
    type Result = ();

    fn handle(&mut self, _: ReversalsNotLoaded, _: &mut Context<Self>) {
        self.reversals_beyond_loaded = true;
    }
}

/// A reversal's send was recorded (or could not be): now it may leave, on the connection it was
/// marked for.
#[derive(Message)]
#[rtype(result = "()")]
struct ReversalMarked {
    id: i64,
    /// Sent before: a `0421`.
    repeat: bool,
    generation: u64,
    marked: bool,
}

impl Handler<ReversalMarked> for BankLinkActor {
    type Result = ();

    fn handle(&mut self, msg: ReversalMarked, _ctx: &mut Context<Self>) {
        if msg.marked
            && let Some(reversal) = self.reversals.get_mut(&msg.id)
        {
            reversal.attempts += 1;
        }
        if self.conn.as_ref().map(|c| c.generation) != Some(msg.generation) {
            // That connection is gone, and its reversals in flight with it.
            return;
        }
        if !msg.marked || self.state() != LinkState::SignedOn {
            // Tried again at its next attempt.
            self.reversals_in_flight.remove(&msg.id);
            return;
        }
        self.send_reversal(msg.id, msg.repeat);
    }
}

impl Handler<SignOff> for BankLinkActor {
    type Result = ();

    fn handle(&mut self, _msg: SignOff, ctx: &mut Context<Self>) {
        self.stopping = true;
        if self.conn.is_none() {
            ctx.stop();
            return;
        }
        self.try_sign_off(ctx);
    }
}

/// Hands a debit to the link: its ticket, or why the link refused it (then nothing was sent).
pub async fn submit<M>(addr: &Addr<BankLinkActor>, msg: M) -> Result<DebitTicket, BankError>
where
    M: actix::Message<Result = Result<DebitTicket, BankError>> + Send + 'static,
    BankLinkActor: Handler<M>,
{
    addr.send(msg).await.map_err(|_| BankError::Unavailable)?
}

/// Waits for the answer to a sent 0200, up to the response timeout; on silence or 91/96 the
/// reversal is stored before answering, and `ReversalNotStored` is the answer if it could not be.
pub async fn outcome(
    addr: &Addr<BankLinkActor>,
    settings: &LinkSettings,
    deps: &LinkDeps,
    request: &DebitRequest,
    mut ticket: DebitTicket,
) -> Result<DebitResponse, BankError> {
    let outcome = match tokio::time::timeout(settings.response_timeout(), &mut ticket.reply).await {
        Ok(outcome) => outcome.unwrap_or(LinkOutcome::Dropped),
        Err(_) => {
            let expired = addr
                .send(Expire {
                    stan: ticket.stan,
                    seq: ticket.seq,
                })
                .await
                .unwrap_or(true);
            if expired {
                LinkOutcome::Dropped
            } else {
                (&mut ticket.reply).await.unwrap_or(LinkOutcome::Dropped)
            }
        }
    };
    // A reversal that could not be stored fails the answer (`ReversalNotStored`): the payment
    // must not be final until its reversal is durable.
    let reverse = |reason| {
        let stan = format_stan(ticket.stan);
        let acquirer_id = &deps.institution_id;
        let record = reversal_record(request, settings, stan, ticket.f7.clone(), acquirer_id);
        async move { queue_reversal((addr, settings), deps, &record, reason).await }
    };
    match outcome {
        LinkOutcome::Dropped => {
            reverse(ReversalReason::Timeout).await?;
            Err(BankError::Timeout)
        }
        LinkOutcome::Malformed(why) => {
            reverse(ReversalReason::ResponseUnlisted).await?;
            Err(BankError::Protocol(why))
        }
        LinkOutcome::Answered {
            response_code,
            approval_code,
        } => {
            if let Some(reason) = ReversalReason::of_response(&response_code) {
                reverse(reason).await?;
            } else if response_code.len() != 2 {
                // A 0210 without a valid field 39 says nothing: undo whatever it did.
                reverse(ReversalReason::Timeout).await?;
                return Err(BankError::Protocol("0210 without field 39".into()));
            }
            Ok(DebitResponse {
                response_code,
                approval_code,
                link: settings.name.clone(),
            })
        }
    }
}
