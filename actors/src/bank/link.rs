//! `BankLinkActor`: one long-lived connection to one bank information processing system.
//!
//! State machine: `Down` → (connect) → `Connected` → (0800/001, 0810/00) → `SignedOn`; a sign-off
//! (ours, or the bank's 0800/002) → `Connected`, and after the bank's a sign-on again; any
//! failure (connect, sign-on refused or unanswered, echo unanswered, socket error, protocol error)
//! → `Down` and a reconnect after a capped exponential backoff. Only a signed-on link carries
//! financial messages. Debits are pipelined up to `in_flight_max` and matched by MTI class + STAN
//! (and field 37). Reversals come from the durable queue (`reversals.rs`): 0420 once, then 0421
//! every `reversal_interval_ms` until a 0430, on this connection or the next. An echo (0800/301)
//! goes out when nothing was received for `echo_interval_ms`, however much was sent, so a bank
//! that reads but stops answering is found within the echo interval plus the response timeout.

use super::connection::{self, LinkReader, LinkWriter, LinkWriterIo};
use super::prepared::{LinkReservation, Reservation, Reservations};
use super::reversals::{self, PendingReversal, ReversalReason, ReversalRecord};
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
use payhub_iso8583::codec::{CodecError, VerifyingCodec};
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
/// A debit whose caller stopped waiting is reclaimed by the link after this many timeouts.
const STALE_DEBIT_TIMEOUTS: u32 = 2;
/// Attempts to store a reversal before the failure is reported (the database may be restarting).
const REVERSAL_STORE_ATTEMPTS_MAX: u32 = 5;
const REVERSAL_STORE_RETRY_MS: u64 = 200;
/// Bytes that may wait for the socket beyond the link's own outstanding messages (every debit and
/// reversal in flight, at `MESSAGE_MAX_BYTES` each). More, beyond the kernel's own buffers, is
/// what the bank has not read: the writer's buffer has no bound of its own, so the link is dropped
/// instead (checked on each tick, and before answering each request from the bank, which a bank
/// can send as fast as it likes).
const UNSENT_BEYOND_IN_FLIGHT_BYTES: usize = 1 << 20;
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

#[derive(Message)]
#[rtype(result = "()")]
struct ReversalsLoaded(Vec<PendingReversal>);

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
    backoff: Backoff,
    /// When the bank last sent anything. Only what is received counts: writes succeed into a
    /// dead peer's socket buffer, so counting them would keep a silent bank from being echoed.
    last_received: Instant,
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
            backoff,
            last_received: Instant::now(),
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

    // ----- connection lifecycle -----

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.conn.is_some() {
            return;
        }
        let settings = self.settings.clone();
        let fut = async move { connection::open(&settings).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok((reader, writer)) => act.on_connected(reader, writer, ctx),
            Err(e) => {
                tracing::warn!(link = %act.name(), error = %e, "bank link connect failed");
                act.schedule_reconnect(ctx);
            }
        }));
    }

    fn schedule_reconnect(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let delay = self.backoff.next_delay();
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    fn on_connected(&mut self, reader: LinkReader, writer: LinkWriterIo, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        // The MAC is checked over the bytes as received, which a re-packed message may not be.
        let codec = VerifyingCodec::new(self.mac.clone());
        let frames = tokio_util::codec::FramedRead::new(reader, codec);
        let stream = futures::StreamExt::chain(
            futures::StreamExt::map(frames, move |item| Inbound::Frame(generation, item)),
            futures::stream::once(async move { Inbound::Closed(generation) }),
        );
        let reader = ctx.add_stream(stream);
        let unsent = Unsent::default();
        let writer = actix::io::FramedWrite::new(unsent.transport(writer), unsent.codec(), ctx);
        self.conn = Some(Conn {
            writer,
            unsent,
            taken_at: (0, Instant::now()),
            reader,
            generation,
        });
        self.set_state(LinkState::Connected);
        tracing::info!(link = %self.name(), "bank link connected; signing on");
        self.send_network(NetworkCode::SignOn);
    }

    /// Closes the connection, fails what was outstanding on it and plans the next attempt.
    fn drop_connection(&mut self, why: &str, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // A link closed because the gateway stops is no news for an operator's alerts.
        if self.stopping {
            tracing::info!(link = %self.name(), reason = why, "bank link closed");
        } else {
            tracing::warn!(link = %self.name(), reason = why, "bank link down");
        }
        ctx.cancel_future(conn.reader);
        // Not a graceful close: flushing to a bank that does not read would never end, and what
        // is still unsent is given up below anyway.
        ctx.cancel_future(conn.writer.handle());
        self.set_state(LinkState::Down);
        for ((_, stan), pending) in std::mem::take(&mut self.pending) {
            self.stans.release(stan);
            if let PendingKind::Debit {
                request, reply, f7, ..
            } = pending.kind
                && reply.send(LinkOutcome::Dropped).is_err()
            {
                // Nobody waits for this debit any more: the link reverses it itself.
                self.reverse_orphan_with(&request, stan, f7, ReversalReason::Timeout, ctx);
            }
        }
        self.debits_in_flight = 0;
        self.reversals_in_flight.clear();
        self.shared.in_flight.store(0, Ordering::Relaxed);
        if self.stopping {
            ctx.stop();
        } else {
            self.schedule_reconnect(ctx);
        }
    }

    // ----- sending -----

    /// A debit took a place in the in-flight table (what the router and operators read, too).
    fn debit_entered(&mut self) {
        self.debits_in_flight += 1;
        self.shared
            .in_flight
            .store(self.debits_in_flight, Ordering::Relaxed);
    }

    /// A debit left the in-flight table: answered, timed out, or given up by its caller.
    fn debit_left(&mut self) {
        self.debits_in_flight -= 1;
        self.shared
            .in_flight
            .store(self.debits_in_flight, Ordering::Relaxed);
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

    /// Allocates a STAN and builds the 0200 with field 7 from the clock; nothing is sent yet.
    fn reserve(&mut self, request: Arc<DebitRequest>) -> Result<(u32, Reservation), BankError> {
        if self.state() != LinkState::SignedOn || self.stopping {
            return Err(BankError::Unavailable);
        }
        if self.debits_in_flight + self.reserved.len() >= self.settings.in_flight_max {
            return Err(BankError::Busy);
        }
        let stan = self.allocate_stan().ok_or(BankError::Busy)?;
        let now = self.deps.clock.now();
        let message =
            match wire::debit_request(&request, &format_stan(stan), now, &self.deps.institution_id)
            {
                Ok(m) => m,
                Err(e) => {
                    self.stans.release(stan);
                    return Err(BankError::Protocol(e.to_string()));
                }
            };
        let f7 = message.get(7).unwrap_or_default().to_owned();
        self.seq += 1;
        let reservation = Reservation {
            token: self.seq,
            request,
            message,
            f7,
            lapses_at: Instant::now() + self.settings.response_timeout(),
        };
        Ok((stan, reservation))
    }

    /// Puts a reserved 0200 on the wire, exactly as it was built.
    fn send_reservation(
        &mut self,
        stan: u32,
        reservation: Reservation,
    ) -> Result<DebitTicket, BankError> {
        if self.state() != LinkState::SignedOn || self.stopping {
            self.stans.release(stan);
            return Err(BankError::Unavailable);
        }
        let Reservation {
            token: seq,
            request,
            message,
            f7,
            ..
        } = reservation;
        let (tx, rx) = oneshot::channel();
        self.pending.insert(
            (b'2', stan),
            Pending {
                kind: PendingKind::Debit {
                    request,
                    reply: tx,
                    seq,
                    f7: f7.clone(),
                },
                sent_at: Instant::now(),
            },
        );
        self.debit_entered();
        self.write(message);
        Ok(DebitTicket {
            reply: rx,
            stan,
            seq,
            f7,
        })
    }

    fn send_debit(&mut self, request: Arc<DebitRequest>) -> Result<DebitTicket, BankError> {
        let (stan, reservation) = self.reserve(request)?;
        self.send_reservation(stan, reservation)
    }

    fn hold_reservation(
        &mut self,
        request: Arc<DebitRequest>,
    ) -> Result<LinkReservation, BankError> {
        let (stan, reservation) = self.reserve(request)?;
        let answer = LinkReservation {
            stan,
            token: reservation.token,
            f7: reservation.f7.clone(),
        };
        self.reserved.insert(stan, reservation);
        Ok(answer)
    }

    fn send_reserved(&mut self, stan: u32, token: u64) -> Result<DebitTicket, BankError> {
        // Lapsed (its STAN released) or never made here: nothing goes out.
        let reservation = self
            .reserved
            .take(stan, token)
            .ok_or(BankError::Unavailable)?;
        self.send_reservation(stan, reservation)
    }

    /// Releases the STANs of reservations nobody sent within the response timeout.
    fn lapse_reservations(&mut self, now: Instant) {
        for stan in self.reserved.lapse(now) {
            self.stans.release(stan);
            tracing::info!(link = %self.name(), stan, "a prepared debit was never sent; released");
        }
    }

    fn send_due_reversals(&mut self, ctx: &mut Context<Self>) {
        if self.state() != LinkState::SignedOn {
            return;
        }
        let now = self.deps.clock.now();
        let due: Vec<i64> = self
            .reversals
            .values()
            .filter(|r| r.next_attempt_at <= now && !self.reversals_in_flight.contains(&r.id))
            .map(|r| r.id)
            .take(REVERSALS_IN_FLIGHT_MAX.saturating_sub(self.reversals_in_flight.len()))
            .collect();
        for id in due {
            self.mark_reversal_sent(id, now, ctx);
        }
    }

    /// Records a reversal's send before it leaves (`ReversalMarked` then sends it): after a crash
    /// in between, the next send is a `0421`, the repeat a BIPS may have seen already, never a
    /// second `0420`.
    fn mark_reversal_sent(&mut self, id: i64, now: DateTime<Utc>, ctx: &mut Context<Self>) {
        let (Some(reversal), Some(conn)) = (self.reversals.get_mut(&id), &self.conn) else {
            return;
        };
        let next = now
            + chrono::Duration::from_std(self.settings.reversal_interval())
                .unwrap_or(chrono::Duration::seconds(10));
        let repeat = reversal.attempts > 0;
        reversal.next_attempt_at = next;
        self.reversals_in_flight.insert(id);
        let generation = conn.generation;
        let pool = self.deps.pool.clone();
        let link = self.settings.name.clone();
        let addr = ctx.address();
        // Not recorded in time: not sent now, but tried again at its next attempt.
        let wait = self.settings.response_timeout();
        actix::spawn(async move {
            let marking = reversals::mark_sent(&pool, id, now, next);
            let marked = match tokio::time::timeout(wait, marking).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(link = %link, id, error = %e, "recording a reversal send");
                    false
                }
                Err(_) => {
                    tracing::warn!(link = %link, id, "recording a reversal send: timed out");
                    false
                }
            };
            addr.do_send(ReversalMarked {
                id,
                repeat,
                generation,
                marked,
            });
        });
    }

    fn send_reversal(&mut self, id: i64, repeat: bool) {
        let Some(reversal) = self.reversals.get(&id) else {
            self.reversals_in_flight.remove(&id);
            return;
        };
        let Some(stan) = self.stans.allocate() else {
            self.reversals_in_flight.remove(&id);
            return;
        };
        let now = self.deps.clock.now();
        let message = match wire::reversal_advice(&reversal.record, repeat, &format_stan(stan), now)
        {
            Ok(m) => m,
            Err(e) => {
                self.stans.release(stan);
                self.reversals_in_flight.remove(&id);
                tracing::error!(link = %self.settings.name, id, error = %e, "building a reversal");
                return;
            }
        };
        let sent_at = Instant::now();
        self.pending.insert(
            (b'4', stan),
            Pending {
                kind: PendingKind::Reversal {
                    id,
                    deadline: sent_at + self.settings.response_timeout(),
                },
                sent_at,
            },
        );
        self.write(message);
    }

    fn load_reversals(&mut self, ctx: &mut Context<Self>) {
        let pool = self.deps.pool.clone();
        let name = self.settings.name.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            match reversals::pending(&pool, &name).await {
                Ok(list) => addr.do_send(ReversalsLoaded(list)),
                Err(e) => tracing::warn!(link = %name, error = %e, "loading pending reversals"),
            }
        });
    }

    /// Queues (durably) and sends a reversal for a debit whose caller is gone.
    fn reverse_orphan_with(
        &mut self,
        request: &DebitRequest,
        stan: u32,
        f7: String,
        reason: ReversalReason,
        ctx: &mut Context<Self>,
    ) {
        let stan = format_stan(stan);
        let record = reversal_record(request, &self.settings.name, stan, f7, &self.deps);
        let deps = self.deps.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            // Nobody waits for the answer; a failure is logged by `store_reversal`.
            let _ = queue_reversal(&addr, &deps, &record, reason).await;
        });
    }

    // ----- receiving -----

    /// A message whose MAC the reader's codec checked (on a link that MACs its messages).
    fn on_message(&mut self, message: Message, ctx: &mut Context<Self>) {
        self.last_received = Instant::now();
        let mti = message.mti().to_owned();
        if !wire::is_response(&mti) {
            self.on_request(&message, ctx);
            return;
        }
        let Some(stan) = wire::stan_of(&message) else {
            tracing::warn!(link = %self.name(), mti = %mti, "response without a STAN dropped");
            return;
        };
        let key = (wire::mti_class(&mti), stan);
        let Some(pending) = self.pending.get(&key) else {
            tracing::warn!(link = %self.name(), mti = %mti, stan, "response matches nothing; dropped");
            return;
        };
        // A late 0210 must carry the RRN of the debit now holding its STAN.
        if let PendingKind::Debit { request, .. } = &pending.kind
            && message.get(37) != Some(request.rrn.as_str())
        {
            tracing::warn!(link = %self.name(), stan, "0210 with another debit's RRN dropped");
            return;
        }
        let Some(pending) = self.pending.remove(&key) else {
            return;
        };
        self.stans.release(stan);
        let elapsed = pending.sent_at.elapsed();
        match pending.kind {
            PendingKind::Debit {
                request, reply, f7, ..
            } => {
                self.debit_left();
                self.metrics.round_trip.observe(elapsed.as_secs_f64());
                self.shared.round_trip.observe(elapsed);
                let response_code = message.get(39).unwrap_or("").to_owned();
                // 00, or 94 (the original's outcome): the debit may have been made.
                let maybe_debited = matches!(response_code.as_str(), "00" | "94");
                let answer = LinkOutcome::Answered {
                    // Whatever the code: with 94 an approval code is what says "approved".
                    approval_code: message.get(38).map(str::to_owned),
                    response_code,
                };
                if reply.send(answer).is_err() && maybe_debited {
                    // Perhaps debited, but the payment no longer waits for it: undo it.
                    self.reverse_orphan_with(
                        &request,
                        stan,
                        f7,
                        ReversalReason::GatewayIncomplete,
                        ctx,
                    );
                }
                if self.stopping {
                    self.try_sign_off(ctx);
                }
            }
            PendingKind::Network { code, .. } => self.on_network_answer(code, &message, ctx),
            PendingKind::Reversal { id, .. } => self.on_reversal_answer(id, &message),
        }
    }

    fn on_request(&mut self, message: &Message, ctx: &mut Context<Self>) {
        // A bank can send requests faster than the tick comes round: check before answering.
        if let Some(why) = self.not_reading(Instant::now()) {
            self.drop_connection(&why, ctx);
        } else if message.mti() == "0800" {
            self.on_network_request(message, ctx);
        } else {
            tracing::warn!(link = %self.name(), mti = %message.mti(), "unexpected request dropped");
        }
    }

    /// A bank's 0800: its sign-on and echo are accepted; a code the profile does not name is
    /// refused (12, invalid transaction) rather than accepted and ignored.
    fn on_network_request(&mut self, message: &Message, ctx: &mut Context<Self>) {
        let code = message.get(70).and_then(NetworkCode::parse);
        let response_code = if code.is_some() { "00" } else { "12" };
        match wire::network_answer(message, response_code) {
            Ok(answer) => {
                self.write(answer);
            }
            Err(e) => tracing::warn!(link = %self.name(), error = %e, "answering a 0800"),
        }
        if code == Some(NetworkCode::SignOff) && self.state() == LinkState::SignedOn {
            self.signed_off_by_bank(ctx);
        }
    }

    /// The bank signed off (maintenance, say): no financial message goes out on this link, so the
    /// router picks another, until a sign-on after the backoff's delay is accepted. A refused
    /// sign-on drops the connection, and the link reconnects with backoff as after any failure.
    fn signed_off_by_bank(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(link = %self.name(), "the bank signed off; signing on again later");
        self.set_state(LinkState::Connected);
        let generation = self.generation;
        ctx.run_later(self.backoff.next_delay(), move |act, _| {
            let same_connection = act.conn.as_ref().map(|c| c.generation) == Some(generation);
            if same_connection && act.state() == LinkState::Connected && !act.stopping {
                act.send_network(NetworkCode::SignOn);
            }
        });
    }

    fn on_network_answer(&mut self, code: NetworkCode, message: &Message, ctx: &mut Context<Self>) {
        let accepted = message.get(39) == Some("00");
        match code {
            NetworkCode::SignOn if accepted => {
                tracing::info!(link = %self.name(), "bank link signed on");
                self.set_state(LinkState::SignedOn);
                self.backoff.reset();
                self.load_reversals(ctx);
                self.send_due_reversals(ctx);
            }
            NetworkCode::SignOn => {
                self.drop_connection("sign-on refused", ctx);
            }
            NetworkCode::Echo => {
                let mut last = self
                    .shared
                    .last_echo_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                *last = Some(self.deps.clock.now());
            }
            NetworkCode::SignOff => {
                tracing::info!(link = %self.name(), "bank link signed off");
                self.drop_connection("signed off", ctx);
            }
        }
    }

    fn on_reversal_answer(&mut self, id: i64, message: &Message) {
        self.reversals_in_flight.remove(&id);
        if self.reversals.remove(&id).is_none() {
            return;
        }
        self.publish_reversal_count();
        let code = message.get(39).unwrap_or("").to_owned();
        if code != "00" {
            // The profile ends a reversal at its 0430 whatever field 39 says (a BIPS answers 00
            // also when it never saw the original). Anything else may mean the debit stands: the
            // code is kept on the reversal's row, and said here for the operator.
            tracing::warn!(link = %self.name(), id, response_code = %code, "reversal answered other than 00");
        }
        let pool = self.deps.pool.clone();
        let now = self.deps.clock.now();
        let link = self.settings.name.clone();
        actix::spawn(async move {
            if let Err(e) = reversals::complete(&pool, id, &code, now).await {
                tracing::warn!(link = %link, id, error = %e, "closing a reversal");
            }
        });
    }

    fn publish_reversal_count(&self) {
        self.shared
            .reversals_queued
            .store(self.reversals.len(), Ordering::Relaxed);
        self.metrics
            .reversals_pending
            .set(self.reversals.len() as i64);
    }

    // ----- housekeeping -----

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut expired = Vec::new();
        let stale_after = self.settings.response_timeout() * STALE_DEBIT_TIMEOUTS;
        for (key, p) in &self.pending {
            let late = match &p.kind {
                PendingKind::Network { deadline, .. } | PendingKind::Reversal { deadline, .. } => {
                    now >= *deadline
                }
                PendingKind::Debit { .. } => now.duration_since(p.sent_at) >= stale_after,
            };
            if late {
                expired.push(*key);
            }
        }
        for key in expired {
            if self.expire_pending(key, ctx) {
                return; // the connection was dropped
            }
        }
        if let Some(why) = self.not_reading(now) {
            self.drop_connection(&why, ctx);
            return;
        }
        self.lapse_reservations(now);
        if self.state() == LinkState::SignedOn {
            let idle = now.duration_since(self.last_received);
            let echo_outstanding = self.pending.values().any(|p| {
                matches!(
                    p.kind,
                    PendingKind::Network {
                        code: NetworkCode::Echo,
                        ..
                    }
                )
            });
            if idle >= self.settings.echo_interval() && !echo_outstanding {
                self.send_network(NetworkCode::Echo);
            }
            self.send_due_reversals(ctx);
        }
        if self.stopping {
            self.try_sign_off(ctx);
        }
        self.metrics.in_flight.set(self.debits_in_flight as i64);
    }

    /// The most bytes that may wait for the socket.
    fn unsent_max_bytes(&self) -> usize {
        let own = self.settings.in_flight_max + REVERSALS_IN_FLIGHT_MAX;
        own.saturating_mul(MESSAGE_MAX_BYTES)
            .saturating_add(UNSENT_BEYOND_IN_FLIGHT_BYTES)
    }

    /// Why the bank is taken not to read: more than `unsent_max_bytes` wait for the socket, or
    /// some have waited a response timeout while the socket took nothing. A bank that sends
    /// (answers, echoes) but never reads is not silent, so the echo does not find it out.
    fn not_reading(&mut self, now: Instant) -> Option<String> {
        let (timeout, unsent_max) = (self.settings.response_timeout(), self.unsent_max_bytes());
        let conn = self.conn.as_mut()?;
        let (unsent, taken) = (conn.unsent.bytes(), conn.unsent.taken());
        if unsent > unsent_max {
            return Some(format!("the bank does not read: {unsent} bytes unsent"));
        }
        if unsent == 0 || taken != conn.taken_at.0 {
            conn.taken_at = (taken, now);
            return None;
        }
        let stalled = now.duration_since(conn.taken_at.1) >= timeout;
        stalled.then(|| {
            let ms = timeout.as_millis();
            format!("the bank has read nothing for {ms} ms: {unsent} bytes unsent")
        })
    }

    /// Handles one late entry; `true` when the connection was dropped because of it.
    fn expire_pending(&mut self, key: (u8, u32), ctx: &mut Context<Self>) -> bool {
        let Some(pending) = self.pending.remove(&key) else {
            return false;
        };
        self.stans.release(key.1);
        match pending.kind {
            PendingKind::Network { code, .. } => {
                tracing::warn!(link = %self.name(), code = code.as_str(), "0800 unanswered");
                self.drop_connection("network message unanswered", ctx);
                true
            }
            PendingKind::Reversal { id, .. } => {
                self.reversals_in_flight.remove(&id);
                false
            }
            PendingKind::Debit {
                request, reply, f7, ..
            } => {
                self.debit_left();
                self.metrics.timeouts.inc();
                if reply.send(LinkOutcome::Dropped).is_err() {
                    self.reverse_orphan_with(&request, key.1, f7, ReversalReason::Timeout, ctx);
                }
                false
            }
        }
    }

    fn try_sign_off(&mut self, ctx: &mut Context<Self>) {
        if self.sign_off_sent || self.debits_in_flight > 0 {
            return;
        }
        self.sign_off_sent = true;
        if self.state() == LinkState::SignedOn {
            self.send_network(NetworkCode::SignOff);
            // Nothing financial (a due reversal, say) follows the sign-off.
            self.set_state(LinkState::Connected);
        } else {
            // Not signed on: nothing to sign off from.
            if self.conn.is_some() {
                self.drop_connection("stopping", ctx);
            } else {
                ctx.stop();
            }
        }
    }
}

/// The reversal of a debit sent on `link` with `stan` (field 11 text) at `f7`.
pub fn reversal_record(
    request: &DebitRequest,
    link: &str,
    stan: String,
    f7: String,
    deps: &LinkDeps,
) -> ReversalRecord {
    ReversalRecord {
        payment_id: Some(request.payment_id.clone()),
        link_name: link.to_owned(),
        rrn: request.rrn.clone(),
        amount_minor: request.amount.minor(),
        currency_numeric: request.currency.numeric().to_owned(),
        original_stan: stan,
        original_f7: f7,
        acquirer_id: deps.institution_id.clone(),
    }
}

/// Stores a reversal and hands it to the link `addr` to send; `ReversalNotStored` when the
/// database refused it (the caller keeps the payment open and asks again later).
pub async fn queue_reversal(
    addr: &Addr<BankLinkActor>,
    deps: &LinkDeps,
    record: &ReversalRecord,
    reason: ReversalReason,
) -> Result<(), BankError> {
    let stored = store_reversal(deps, record, reason)
        .await
        .map_err(|_| BankError::ReversalNotStored)?;
    addr.do_send(ReversalQueued(stored));
    Ok(())
}

/// Stores a reversal, retrying briefly while the database is unavailable.
async fn store_reversal(
    deps: &LinkDeps,
    record: &ReversalRecord,
    reason: ReversalReason,
) -> Result<PendingReversal, crate::store::StoreError> {
    let mut attempt = 1;
    loop {
        match reversals::queue(&deps.pool, record, reason, deps.clock.now()).await {
            Ok(p) => return Ok(p),
            Err(e) if attempt >= REVERSAL_STORE_ATTEMPTS_MAX => {
                tracing::error!(
                    link = %record.link_name,
                    rrn = %record.rrn,
                    error = %e,
                    "a reversal could not be stored"
                );
                return Err(e);
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(REVERSAL_STORE_RETRY_MS)).await;
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

    fn handle(&mut self, msg: Expire, _ctx: &mut Context<Self>) -> bool {
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
        self.metrics.timeouts.inc();
        true
    }
}

impl Handler<ReversalQueued> for BankLinkActor {
    type Result = ();

    fn handle(&mut self, msg: ReversalQueued, ctx: &mut Context<Self>) {
        self.reversals.entry(msg.0.id).or_insert(msg.0);
        self.publish_reversal_count();
        self.send_due_reversals(ctx);
    }
}

impl Handler<ReversalsLoaded> for BankLinkActor {
    type Result = ();

    fn handle(&mut self, msg: ReversalsLoaded, ctx: &mut Context<Self>) {
        for r in msg.0 {
            self.reversals.entry(r.id).or_insert(r);
        }
        self.publish_reversal_count();
        self.send_due_reversals(ctx);
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
        let record = reversal_record(request, &settings.name, stan, ticket.f7.clone(), deps);
        async move { queue_reversal(addr, deps, &record, reason).await }
    };
    match outcome {
        LinkOutcome::Dropped => {
            reverse(ReversalReason::Timeout).await?;
            Err(BankError::Timeout)
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
