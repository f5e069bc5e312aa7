//! The session actor and the task that keeps its bind: connect, `bind_transceiver`, serve what the
//! SMSC sends (receipts, unbind), and after any loss re-bind with a doubling, capped backoff.
//! The current bound client is published on a watch channel; a delivery that finds none waits for
//! a bind, at most `BIND_WAIT_MS_MAX`, then fails with `Unavailable`.

use super::settings::{SmppSettings, SmppSettingsError};
use super::store::Ride;
use super::{pdu, receipt, store, submit};
use actix::prelude::*;
use deadpool_postgres::Pool;
use futures::{Stream, StreamExt};
use payhub_actors::clock::SharedClock;
use payhub_actors::messages::{Deliver, DeliveryError, DeliveryReceipt};
use payhub_actors::metrics::{global, labels};
use rusmpp::pdus::{DataSmResp, DeliverSmResp};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use rusmppc::{Client, ConnectionBuilder, Event};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit, watch};

/// Longest a delivery waits for the session to bind when it is not bound. A session that has lost
/// its connection binds again after its first backoff (`rebind_backoff_min_ms`, 500 ms by
/// default): the code or outcome that comes meanwhile should not be lost for it, and a customer
/// whose code failed waits 30 s for a resend. An SMSC that stays away costs each delivery this
/// wait, then `Unavailable`.
pub const BIND_WAIT_MS_MAX: u64 = 1_000;

/// The rebind backoff starts again from its minimum only after a session stayed bound this long:
/// an SMSC that accepts the bind and drops the session at once is otherwise bound to again every
/// `rebind_backoff_min_ms`.
const BOUND_STABLE_MS: u64 = 10_000;

/// Largest PDU accepted from the SMSC, in bytes: a `deliver_sm` or `data_sm` may carry up to
/// 64 KiB in `message_payload` (SMPP v3.4 §5.3.2.32), with room for its other fields. A longer one
/// ends the session (and 4 KiB, the bound before, ended it at every long mobile-originated
/// message, which the SMSC then sent again after each bind).
const COMMAND_LENGTH_MAX_BYTES: usize = 70_000;
/// Timed-out submits remembered per bind, for their late answers.
const UNANSWERED_MAX: usize = 1_024;
/// Delivery receipts being recorded at once, per session: one group-committed batch
/// (`store::SMPP_WRITE_LIMITS.batch_max`), so that a burst costs few commits.
const RECEIPTS_IN_FLIGHT_MAX: usize = store::SMPP_WRITE_LIMITS.batch_max;
/// Delivery receipts taken in, recorded or waiting their turn, per session. Past this the SMSC is
/// asked to send them again later.
const RECEIPTS_TAKEN_MAX: usize = 256;
/// Requests from the SMSC whose answers are not yet written, per session. An SMSC that keeps
/// sending and never reads our answers would otherwise grow the connection's write queue without
/// end; past this bound the session is dropped and bound again.
const ANSWERS_OWED_MAX: usize = 1_024;

/// The bounds on what one session owes the SMSC.
struct Owed {
    /// Receipts being recorded.
    recording: Arc<Semaphore>,
    /// Receipts taken in.
    taken: Arc<Semaphore>,
    /// Answers not yet written.
    answers: Arc<Semaphore>,
}

/// Starts the session actor for one SMSC (call inside an actix system: `serve`, or
/// `#[actix_rt::test]`). It binds in the background; a delivery that comes before the bind waits
/// for it (`BIND_WAIT_MS_MAX`). Bad settings are refused here, one line per problem.
pub fn start(
    pool: Pool,
    clock: SharedClock,
    settings: SmppSettings,
) -> Result<Addr<SmppSession>, SmppSettingsError> {
    settings.validate()?;
    let (bound_tx, bound_rx) = watch::channel(None);
    let (stop_tx, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        window: Semaphore::new(settings.window_max),
        pending: Semaphore::new(settings.pending_max),
        settings,
        writes: store::SmppWrites::start(pool.clone()),
        pool,
        clock,
        bound: bound_rx,
        status: Mutex::new(StatusInner::default()),
        submits_paused_until: Mutex::new(None),
    });
    Ok(SmppSession {
        shared,
        stop: stop_tx,
        bound_tx: Some(bound_tx),
        runner: None,
    }
    .start())
}

/// What the session's deliveries and its keeper share.
pub(super) struct Shared {
    pub(super) settings: SmppSettings,
    pub(super) pool: Pool,
    /// Message ids and receipts, group-committed.
    pub(super) writes: store::SmppWrites,
    pub(super) clock: SharedClock,
    /// One permit per `submit_sm` that may be outstanding.
    pub(super) window: Semaphore,
    /// One permit per delivery accepted and not yet finished.
    pub(super) pending: Semaphore,
    /// The bound client, when there is one.
    pub(super) bound: watch::Receiver<Option<Client>>,
    status: Mutex<StatusInner>,
    /// No submit goes out before this: the SMSC answered one with a throttling status.
    submits_paused_until: Mutex<Option<tokio::time::Instant>>,
}

#[derive(Debug, Default)]
struct StatusInner {
    binds: u64,
    last_error: Option<String>,
    /// `submit_sm` of this bind whose answer came too late to be waited for: sequence number
    /// → message row, and when it was given up on. Each holds its window slot: the SMSC still
    /// counts it outstanding.
    unanswered: HashMap<u32, (i64, tokio::time::Instant)>,
    /// `submit_sm` refused by an answer that came after their timeout.
    late_refusals: u64,
}

impl Shared {
    pub(super) fn bound_client(&self) -> Option<Client> {
        self.bound.borrow().clone()
    }

    /// Whether a client is bound, waiting for a bind at most `BIND_WAIT_MS_MAX`, and not past
    /// `deadline`.
    pub(super) async fn bound_soon(&self, deadline: tokio::time::Instant) -> bool {
        let mut bound = self.bound.clone();
        let wait = Duration::from_millis(BIND_WAIT_MS_MAX);
        let until = deadline.min(tokio::time::Instant::now() + wait);
        matches!(
            tokio::time::timeout_at(until, bound.wait_for(Option::is_some)).await,
            Ok(Ok(_))
        )
    }

    /// The SMSC asked the session to slow down (ESME_RTHROTTLED, ESME_RMSGQFUL), at a message's
    /// try `attempt`: counted, and none of its submits goes out for that try's backoff (returned),
    /// not only the one refused.
    pub(super) fn throttled(&self, attempt: u32) -> Duration {
        global().smpp_throttles.inc();
        let pause = self.settings.throttle_backoff(attempt);
        let until = tokio::time::Instant::now() + pause;
        let mut paused = self
            .submits_paused_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *paused = Some(paused.map_or(until, |earlier| earlier.max(until)));
        pause
    }

    /// Returns once no pause asked for by the SMSC is running. Each pause is at most the
    /// throttling backoff's cap, but throttled submits may renew it: callers bound the wait.
    pub(super) async fn submits_resumed(&self) {
        loop {
            let until = *self
                .submits_paused_until
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match until {
                Some(until) if until > tokio::time::Instant::now() => {
                    tokio::time::sleep_until(until).await;
                }
                _ => return,
            }
        }
    }

    /// Remembers a timed-out `submit_sm`, so that its late answer can still be recorded, and
    /// keeps its window slot until then: the SMSC counts it outstanding until it answers, and the
    /// window is what the SMSC agreed to. The slot comes back with the answer or with the bind's
    /// end. Past `UNANSWERED_MAX` remembered, the slot is let go at once.
    pub(super) fn await_late_answer(&self, sequence_number: u32, row: i64, slot: SemaphorePermit) {
        self.note(|s| {
            if s.unanswered.len() < UNANSWERED_MAX {
                let now = tokio::time::Instant::now();
                s.unanswered.insert(sequence_number, (row, now));
                slot.forget();
            }
        });
    }

    /// A late answer came: its `submit_sm` no longer holds a slot. The row, if it was waited for.
    fn late_answer(&self, sequence_number: u32) -> Option<i64> {
        let mut row = None;
        self.note(|s| row = s.unanswered.remove(&sequence_number).map(|(row, _)| row));
        if row.is_some() {
            self.window.add_permits(1);
        }
        row
    }

    /// Every slot of the window is held by a submit given up on at least a response timeout ago:
    /// the SMSC drops submits without a word (or their answers were lost), and only a new bind
    /// gives the slots back.
    fn window_stuck(&self) -> bool {
        let timeout = self.settings.response_timeout();
        let mut stuck = false;
        self.note(|s| {
            stuck = s.unanswered.len() >= self.settings.window_max
                && s.unanswered.values().all(|(_, at)| at.elapsed() >= timeout);
        });
        stuck
    }

    /// A new bind: the last one's unanswered submits will never be answered.
    fn forget_unanswered(&self) {
        let mut slots = 0;
        self.note(|s| {
            slots = s.unanswered.len();
            s.unanswered.clear();
        });
        self.window.add_permits(slots);
    }

    fn note(&self, update: impl FnOnce(&mut StatusInner)) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        update(&mut status);
    }

    fn status(&self) -> SmppStatus {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        SmppStatus {
            bound: self.bound.borrow().is_some(),
            binds: status.binds,
            last_error: status.last_error.clone(),
            in_flight: self.settings.window_max - self.window.available_permits(),
            window_max: self.settings.window_max,
            late_refusals: status.late_refusals,
        }
    }
}

/// The actor: one per SMSC.
pub struct SmppSession {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    bound_tx: Option<watch::Sender<Option<Client>>>,
    runner: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for SmppSession {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        if let Some(bound_tx) = self.bound_tx.take() {
            let keeper = keep_bound(self.shared.clone(), bound_tx, self.stop.subscribe());
            self.runner = Some(actix::spawn(keeper));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // The keeper unbinds on its own once told.
        let _ = self.stop.send(true);
    }
}

impl Handler<Deliver> for SmppSession {
    type Result = ResponseFuture<Result<DeliveryReceipt, DeliveryError>>;

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) -> Self::Result {
        Box::pin(submit::deliver(self.shared.clone(), msg))
    }
}

/// Graceful stop: no new deliveries, outstanding submits answered (or timed out), `unbind`,
/// then the actor stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for SmppSession {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let _ = self.stop.send(true);
        let runner = self.runner.take();
        // Draining the window and the unbind each wait at most one response timeout.
        let wait = self.shared.settings.response_timeout() * 3;
        Box::pin(
            async move {
                if let Some(runner) = runner {
                    let _ = tokio::time::timeout(wait, runner).await;
                }
            }
            .into_actor(self)
            .map(|(), _act, ctx| ctx.stop()),
        )
    }
}

/// The session as operators and tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmppStatus {
    pub bound: bool,
    /// Successful binds since start (1 + re-binds).
    pub binds: u64,
    /// Why the last bind failed or the last session ended.
    pub last_error: Option<String>,
    /// `submit_sm` outstanding now.
    pub in_flight: usize,
    pub window_max: usize,
    /// `submit_sm` refused by an answer that came after their timeout: their senders were told
    /// the message might still arrive, and it will not.
    pub late_refusals: u64,
}

#[derive(Debug, Message)]
#[rtype(result = "SmppStatus")]
pub struct GetStatus;

impl Handler<GetStatus> for SmppSession {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.shared.status())
    }
}

enum SessionEnd {
    Stop,
    Lost(String),
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Binds, serves, and re-binds after any loss until told to stop.
async fn keep_bound(
    shared: Arc<Shared>,
    bound_tx: watch::Sender<Option<Client>>,
    mut stop: watch::Receiver<bool>,
) {
    let addr = shared.settings.addr.clone();
    let mut failures: u32 = 0;
    while !stopping(&stop) {
        match connect_and_bind(&shared.settings).await {
            Ok(Bound {
                client,
                events,
                connection,
            }) => {
                let bound_at = tokio::time::Instant::now();
                shared.note(|s| s.binds += 1);
                // Sequence numbers start again with each connection.
                shared.forget_unanswered();
                tracing::info!(smsc = %addr, "SMPP session bound");
                bound_tx.send_replace(Some(client.clone()));
                let end = serve(&shared, &client, events, &mut stop).await;
                bound_tx.send_replace(None);
                match end {
                    SessionEnd::Stop => {
                        unbind(&shared, &client).await;
                        connection.abort();
                        return;
                    }
                    SessionEnd::Lost(reason) => {
                        if bound_at.elapsed() >= Duration::from_millis(BOUND_STABLE_MS) {
                            failures = 0;
                        }
                        tracing::warn!(smsc = %addr, %reason, "SMPP session lost");
                        shared.note(|s| s.last_error = Some(reason));
                        close(&shared.settings, &client, connection).await;
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(smsc = %addr, %reason, "SMPP bind failed");
                shared.note(|s| s.last_error = Some(reason));
            }
        }
        failures = failures.saturating_add(1);
        let backoff = shared.settings.rebind_backoff(failures);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
    }
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>;

/// A bound session: the client, what the SMSC sends, and the task that runs the connection.
struct Bound {
    client: Client,
    events: Events,
    connection: tokio::task::JoinHandle<()>,
}

/// Closes the connection, waiting no longer than a response timeout: a graceful close first
/// writes every queued PDU, which an SMSC that does not read never lets happen. Then the
/// connection's task ends, and the socket with it.
async fn close(settings: &SmppSettings, client: &Client, connection: tokio::task::JoinHandle<()>) {
    let _ = tokio::time::timeout(settings.response_timeout(), client.close_and_wait()).await;
    connection.abort();
}

async fn connect_and_bind(settings: &SmppSettings) -> Result<Bound, String> {
    let builder = ConnectionBuilder::new()
        .max_command_length(COMMAND_LENGTH_MAX_BYTES)
        .enquire_link_interval(Duration::from_secs(settings.enquire_link_interval_s))
        .enquire_link_response_timeout(settings.response_timeout())
        .response_timeout(settings.response_timeout())
        // Answered by `on_incoming`, under its bound: the library's own answers queue without one.
        .disable_auto_enquire_link_response()
        // payhub speaks v3.4; the library encodes v5.0, whose PDUs we use are the same.
        .disable_interface_version_check()
        // The connection's task is ours, so that it can be ended (`close`).
        .no_spawn();
    // Built before connecting: a connection is never left behind by a bad PDU.
    let bind = pdu::bind_transceiver(settings).map_err(|e| e.to_string())?;
    let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
    let addr = &settings.addr;
    let (client, events, connection) = if settings.tls {
        let connecting = builder.connect(format!("smpps://{addr}"));
        let (client, events, connection) = tokio::time::timeout(connect_timeout, connecting)
            .await
            .map_err(|_| format!("connecting to {addr}: timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let events: Events = Box::pin(events);
        (client, events, tokio::spawn(connection))
    } else {
        let stream = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr}: timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        // Small PDUs must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let (client, events, connection) = builder.connected(stream);
        let events: Events = Box::pin(events);
        (client, events, tokio::spawn(connection))
    };
    let answer = tokio::time::timeout(settings.response_timeout(), client.bind_transceiver(bind))
        .await
        .map_err(|_| "bind_transceiver: no answer in time".to_string());
    let refusal = match answer {
        Ok(Ok(_)) => {
            return Ok(Bound {
                client,
                events,
                connection,
            });
        }
        Ok(Err(rusmppc::error::Error::UnexpectedResponse { response })) => format!(
            "bind_transceiver refused by the SMSC: {}",
            pdu::status_name(response.status())
        ),
        Ok(Err(e)) => format!("bind_transceiver: {e}"),
        Err(timeout) => timeout,
    };
    close(settings, &client, connection).await;
    Err(refusal)
}

async fn serve(
    shared: &Arc<Shared>,
    client: &Client,
    mut events: Events,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let owed = Owed {
        recording: Arc::new(Semaphore::new(RECEIPTS_IN_FLIGHT_MAX)),
        taken: Arc::new(Semaphore::new(RECEIPTS_TAKEN_MAX)),
        answers: Arc::new(Semaphore::new(ANSWERS_OWED_MAX)),
    };
    let mut last_error = None;
    let mut window_check = tokio::time::interval(shared.settings.response_timeout());
    window_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return SessionEnd::Stop;
                }
            }
            _ = window_check.tick() => {
                if shared.window_stuck() {
                    return SessionEnd::Lost(
                        "every submit_sm of the window went unanswered".into(),
                    );
                }
            }
            event = events.next() => match event {
                None => {
                    return SessionEnd::Lost(
                        last_error.unwrap_or_else(|| "the SMSC closed the session".into()),
                    );
                }
                Some(Event::Error(e)) => last_error = Some(e.to_string()),
                Some(Event::Incoming(command)) => {
                    if let Some(end) = on_incoming(shared, client, &owed, command).await {
                        return end;
                    }
                }
            },
        }
    }
}

async fn on_incoming(
    shared: &Arc<Shared>,
    client: &Client,
    owed: &Owed,
    command: Command,
) -> Option<SessionEnd> {
    let sequence_number = command.sequence_number();
    let id = command.id();
    if id.is_response() {
        // An SMSC may refuse a submit with a generic_nack instead of its submit_sm_resp.
        if matches!(id, CommandId::SubmitSmResp | CommandId::GenericNack) {
            on_late_submit_resp(shared, &command);
        }
        // Any other response came after its request timed out.
        return None;
    }
    // Answers are written by tasks, never awaited here: this loop must keep reading the
    // submit_sm_resps that the code messages wait for.
    let Ok(answer_slot) = owed.answers.clone().try_acquire_owned() else {
        return Some(SessionEnd::Lost(format!(
            "the SMSC sent {ANSWERS_OWED_MAX} requests without reading the answers"
        )));
    };
    let client = client.clone();
    match id {
        // Some SMSCs send receipts (or mobile-originated messages) as `data_sm`.
        CommandId::DeliverSm | CommandId::DataSm => {
            let message = on_message_in_turn(shared.clone(), owed, command);
            actix::spawn(async move {
                answer_message(&client, id, sequence_number, message.await).await;
                drop(answer_slot);
            });
            None
        }
        CommandId::Unbind => {
            let answered = client.unbind_resp(sequence_number);
            let _ = tokio::time::timeout(shared.settings.response_timeout(), answered).await;
            Some(SessionEnd::Lost("the SMSC unbound".into()))
        }
        CommandId::EnquireLink => {
            actix::spawn(async move {
                let _ = client.enquire_link_resp(sequence_number).await;
                drop(answer_slot);
            });
            None
        }
        // SMPP v3.4 §4.12: an alert_notification has no response.
        CommandId::AlertNotification => {
            tracing::info!("alert_notification from the SMSC ignored");
            drop(answer_slot);
            None
        }
        _ => {
            actix::spawn(async move {
                let nack = client.status(CommandStatus::EsmeRinvcmdid);
                let _ = nack.generic_nack(sequence_number).await;
                drop(answer_slot);
            });
            None
        }
    }
}

/// The `deliver_sm_resp` or `data_sm_resp` to a message the SMSC sent, with its status.
async fn answer_message(
    client: &Client,
    id: CommandId,
    sequence_number: u32,
    status: CommandStatus,
) {
    let answer = client.status(status);
    let _ = if id == CommandId::DeliverSm {
        answer
            .deliver_sm_resp(sequence_number, DeliverSmResp::default())
            .await
    } else {
        answer
            .data_sm_resp(sequence_number, DataSmResp::default())
            .await
    };
}

/// A `deliver_sm`'s or `data_sm`'s status. Up to RECEIPTS_TAKEN_MAX receipts are taken in at
/// once; a receipt that rides with its message id's write costs no more. The others are written
/// side by side, at most RECEIPTS_IN_FLIGHT_MAX at once, each waiting its turn no longer than the
/// database timeout. Past either bound the SMSC is asked to send the receipt again later. Waiting
/// in the reading loop instead would stop it, and with it the submit_sm_resps the code messages
/// wait for (and the deliver_sm_resps that free the slots): a deadlock under load.
fn on_message_in_turn(
    shared: Arc<Shared>,
    owed: &Owed,
    command: Command,
) -> impl Future<Output = CommandStatus> + use<> {
    let taken = owed.taken.clone().try_acquire_owned().ok();
    let recording = owed.recording.clone();
    async move {
        let status = match taken {
            Some(_) => on_message(&shared, &command, recording).await,
            None => CommandStatus::EsmeRxTAppn,
        };
        drop(taken);
        status
    }
}

/// A `submit_sm_resp` after its wait ended: when the SMSC accepted the message after all, its
/// row says so (the caller was told `Timeout`; the customer may still get the SMS). A refusal is
/// told in the log, its row stays `failed`, and throttling slows the session down as an answer
/// in time would.
fn on_late_submit_resp(shared: &Arc<Shared>, command: &Command) {
    let Some(row) = shared.late_answer(command.sequence_number()) else {
        return;
    };
    // A refusal may come without a body (SMPP v3.4 sends none with an error status).
    let status = command.status();
    if status != CommandStatus::EsmeRok {
        if pdu::submit_verdict(status) == pdu::SubmitVerdict::Retry {
            shared.throttled(1);
        }
        shared.note(|s| s.late_refusals += 1);
        let status = pdu::status_name(status);
        tracing::warn!(
            row,
            status,
            "SMS refused by the SMSC after its timeout: not sent"
        );
        return;
    }
    if command.id() != CommandId::SubmitSmResp {
        return;
    }
    let message_ref = submit::message_id_of(command.pdu());
    let shared = shared.clone();
    actix::spawn(async move {
        let sent = shared
            .writes
            .mark_sent(shared.clock.now(), row, &message_ref);
        match tokio::time::timeout(shared.settings.database_timeout(), sent).await {
            Ok(Ok(())) => tracing::warn!(row, "SMS accepted by the SMSC after its timeout"),
            _ => tracing::error!(row, "late SMS acceptance not recorded"),
        }
    });
}

/// Keeps a delivery receipt (a `deliver_sm`'s or a `data_sm`'s); the answer's status asks the
/// SMSC to send it again when the database could not take it.
async fn on_message(
    shared: &Shared,
    command: &Command,
    recording: Arc<Semaphore>,
) -> CommandStatus {
    let (esm_class, receipt) = match command.pdu() {
        Some(Pdu::DeliverSm(deliver)) => (deliver.esm_class, receipt::of_deliver_sm(deliver)),
        Some(Pdu::DataSm(data)) => (data.esm_class, receipt::of_data_sm(data)),
        // The body could not be decoded (rusmppc patch 6): asking again would bring the same.
        _ => {
            tracing::warn!("undecodable message from the SMSC refused for good");
            return CommandStatus::EsmeRxPAppn;
        }
    };
    if !receipt::is_receipt_esm_class(u8::from(esm_class)) {
        tracing::info!("ignored a mobile-originated SMS");
        return CommandStatus::EsmeRok;
    }
    let Some(receipt) = receipt else {
        tracing::warn!("unreadable delivery receipt ignored");
        return CommandStatus::EsmeRok;
    };
    global()
        .smpp_receipts
        .get_or_create(&labels(&[("stat", receipt.stat)]))
        .inc();
    keep_receipt(shared, &receipt, recording).await
}

/// The receipt rides with its message id's write, or is written on its own once a recording
/// slot is free.
async fn keep_receipt(
    shared: &Shared,
    receipt: &receipt::Receipt,
    recording: Arc<Semaphore>,
) -> CommandStatus {
    let (message_ref, stat) = (receipt.message_id.as_str(), receipt.stat);
    let wait = shared.settings.database_timeout();
    match tokio::time::timeout(wait, shared.writes.ride(message_ref, stat)).await {
        Ok(Ride::Recorded) => return CommandStatus::EsmeRok,
        Ok(Ride::WriteAlone) => {}
        Err(_) => {
            tracing::error!(
                "delivery receipt's message id not recorded in time; the SMSC will resend it"
            );
            return CommandStatus::EsmeRxTAppn;
        }
    }
    let Ok(Ok(_slot)) = tokio::time::timeout(wait, recording.acquire_owned()).await else {
        tracing::warn!("delivery receipts at their limit; the SMSC will resend this one");
        return CommandStatus::EsmeRxTAppn;
    };
    let writing = shared
        .writes
        .write_receipt(shared.clock.now(), message_ref, stat);
    match tokio::time::timeout(wait, writing).await {
        Ok(Ok(_)) => CommandStatus::EsmeRok,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "delivery receipt not recorded; the SMSC will resend it");
            CommandStatus::EsmeRxTAppn
        }
        Err(_) => {
            tracing::error!("delivery receipt not recorded in time; the SMSC will resend it");
            CommandStatus::EsmeRxTAppn
        }
    }
}

/// Lets outstanding submits finish (bounded), then unbinds and closes.
async fn unbind(shared: &Shared, client: &Client) {
    let timeout = shared.settings.response_timeout();
    let window = u32::try_from(shared.settings.window_max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(timeout, shared.window.acquire_many(window)).await;
    match tokio::time::timeout(timeout, client.unbind()).await {
        Ok(Ok(())) => tracing::info!(smsc = %shared.settings.addr, "SMPP session unbound"),
        Ok(Err(e)) => tracing::warn!(error = %e, "SMPP unbind not acknowledged"),
        Err(_) => tracing::warn!("SMPP unbind not acknowledged in time"),
    }
    let _ = tokio::time::timeout(timeout, client.close_and_wait()).await;
}
