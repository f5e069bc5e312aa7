//! The `ChannelRouter` actor: every customer notice goes through it. `Sms(number)` goes to the
//! SMPP actor; `Terminal(id)` by the terminal's kind: dedicated → its switch session, mobile →
//! SMS to its number, telephone/pager/pda → the channel adapter for that kind. Deliveries to
//! terminals are recorded in `customer_messages` (never the text: it holds the code) before they
//! are attempted. Nothing waits unbounded: a code for an offline terminal fails at once; an
//! outcome for one is held and goes when the terminal is back (`terminal::held_outcomes`).

use crate::channels::adapters::sms_text::{SmsTextAdapter, send_sms};
use crate::channels::adapters::{AdapterSet, ChannelAdapter};
use crate::channels::terminal::held_outcomes;
use crate::channels::terminal::session;
use crate::channels::terminal::tls::acceptor_from_files;
use crate::channels::terminal::{SwitchHandle, SwitchRegistry, SwitchSettings, start_switch};
use crate::config::Config;
use actix::prelude::*;
use anyhow::Context as _;
use deadpool_postgres::Pool;
use openssl::ssl::SslAcceptor;
use payhub_actors::clock::SharedClock;
use payhub_actors::domain::Msisdn;
pub use payhub_actors::domain::TerminalKind;
use payhub_actors::messages::{
    Deliver, DeliveryError, DeliveryReceipt, Destination, Notice, NoticeKind,
};
use payhub_actors::metrics::{global, labels};
use payhub_actors::store::messages;
use payhub_actors::store::prepared::Prepared;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Bounds of the router's waits.
#[derive(Debug, Clone, Copy)]
pub struct RouterSettings {
    /// A terminal session's ACK wait (the switch's `ack_timeout_ms`); the router adds a margin.
    pub ack_timeout_ms: u64,
    /// The terminal switch's keep-alive interval: a terminal silent for two is dropped, so an
    /// outcome notice left unanswered is offered again after that, if the session is still
    /// there (so alive).
    pub keepalive_interval_ms: u64,
    /// Longest wait for the SMS channel or an adapter to answer.
    pub forward_timeout_ms: u64,
}

impl RouterSettings {
    pub const FORWARD_TIMEOUT_MS: u64 = 15_000;
    /// Notices queued at the router, and deliveries under way at once: each delivery runs on
    /// its own, after its sender may have stopped waiting, so the mailbox alone bounds nothing.
    pub const MAILBOX_MAX: usize = 1_024;

    pub fn from_switch(settings: &SwitchSettings) -> Self {
        Self {
            ack_timeout_ms: settings.ack_timeout_ms,
            keepalive_interval_ms: settings.keepalive_interval_ms,
            forward_timeout_ms: Self::FORWARD_TIMEOUT_MS,
        }
    }
}

/// What the router needs; cloned into each delivery's future.
#[derive(Clone)]
struct Routes {
    pool: Pool,
    clock: SharedClock,
    registry: SwitchRegistry,
    sms: Option<Recipient<Deliver>>,
    adapters: AdapterSet,
    settings: RouterSettings,
}

pub struct ChannelRouter {
    routes: Routes,
    /// Places for deliveries under way (`RouterSettings::MAILBOX_MAX`).
    deliveries: Arc<tokio::sync::Semaphore>,
}

impl ChannelRouter {
    pub fn new(
        pool: Pool,
        clock: SharedClock,
        registry: SwitchRegistry,
        sms: Option<Recipient<Deliver>>,
        adapters: AdapterSet,
        settings: RouterSettings,
    ) -> Self {
        Self {
            routes: Routes {
                pool,
                clock,
                registry,
                sms,
                adapters,
                settings,
            },
            deliveries: Arc::new(tokio::sync::Semaphore::new(RouterSettings::MAILBOX_MAX)),
        }
    }
}

impl Actor for ChannelRouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(RouterSettings::MAILBOX_MAX);
    }
}

impl Handler<Deliver> for ChannelRouter {
    type Result = ResponseFuture<Result<DeliveryReceipt, DeliveryError>>;

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) -> Self::Result {
        let Ok(place) = self.deliveries.clone().try_acquire_owned() else {
            tracing::warn!("channel router deliveries at their limit; refused one");
            return Box::pin(std::future::ready(Err(DeliveryError::Unavailable)));
        };
        let routes = self.routes.clone();
        Box::pin(async move {
            let _place = place;
            routes.deliver(msg).await
        })
    }
}

/// One adapter's delivery, answered within `wait` (the adapter is asked for its answer a hop's
/// margin before).
async fn bounded(
    adapter: &dyn ChannelAdapter,
    number: Msisdn,
    notice: Notice,
    recorded: Option<i64>,
    wait: Duration,
) -> Result<DeliveryReceipt, DeliveryError> {
    let answer_within = wait.saturating_sub(Deliver::HOP_MARGIN);
    let delivery = adapter.deliver(number, notice, recorded, answer_within);
    tokio::time::timeout(wait, delivery)
        .await
        .unwrap_or(Err(DeliveryError::Timeout))
}

/// Kept from a terminal delivery's wait for writing how it ended (an outcome held), so that it is
/// written before the sender stops waiting and fails the notice itself.
const END_WRITE_MARGIN_MS: u64 = 500;

/// A registered terminal as the router sees it.
struct TerminalRow {
    kind: TerminalKind,
    msisdn: Option<String>,
}

impl Routes {
    async fn deliver(&self, msg: Deliver) -> Result<DeliveryReceipt, DeliveryError> {
        // The next hop answers within what is left of the sender's wait, and within the
        // router's own bound.
        let wait =
            (msg.answer_within.saturating_sub(Deliver::HOP_MARGIN)).min(self.forward_timeout());
        // The router's own database steps count against it too.
        let deadline = Instant::now() + wait;
        let Deliver {
            destination,
            notice,
            recorded,
            ..
        } = msg;
        match destination {
            Destination::Sms(number) => self.sms(number, notice, recorded, wait).await,
            Destination::Terminal(id) => {
                let terminal = self.terminal(&id, &notice.payment_id).await?;
                let wait = deadline.saturating_duration_since(Instant::now());
                match terminal.kind {
                    TerminalKind::Mobile => {
                        let number = registered_number(&terminal)?;
                        self.sms(number, notice, recorded, wait).await
                    }
                    TerminalKind::Dedicated => {
                        self.dedicated(&id, notice, recorded, deadline).await
                    }
                    kind => {
                        self.adapter(kind, &id, &terminal, notice, recorded, wait)
                            .await
                    }
                }
            }
        }
    }

    async fn sms(
        &self,
        number: Msisdn,
        notice: Notice,
        recorded: Option<i64>,
        wait: Duration,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        let Some(sms) = self.sms.clone() else {
            return Err(DeliveryError::Unavailable);
        };
        send_sms(sms, number, notice, recorded, wait).await
    }

    fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.forward_timeout_ms)
    }

    /// The terminal, if it is registered and enabled, belongs to an enabled customer, and (once
    /// the payment knows its customer) to that payment's customer.
    async fn terminal(&self, id: &str, payment_id: &str) -> Result<TerminalRow, DeliveryError> {
        let client = self.pool.get().await.map_err(|e| db_unavailable(&e))?;
        let row = client
            .query_opt_cached(
                "SELECT t.kind, t.msisdn, t.status, c.status, t.customer_id,
                        (SELECT p.customer_id FROM payments p WHERE p.id = $2)
                   FROM terminals t JOIN customers c ON c.id = t.customer_id
                  WHERE t.id = $1",
                &[&id, &payment_id],
            )
            .await
            .map_err(|e| db_unavailable(&e))?
            .ok_or_else(|| DeliveryError::Rejected("unknown terminal".into()))?;
        let kind: String = row.get(0);
        let terminal_status: String = row.get(2);
        let customer_status: String = row.get(3);
        let owner: String = row.get(4);
        let payer: Option<String> = row.get(5);
        if terminal_status != "enabled" || customer_status != "enabled" {
            return Err(DeliveryError::Rejected("terminal disabled".into()));
        }
        if payer.is_some_and(|payer| payer != owner) {
            tracing::warn!(terminal_id = %id, payment_id, "terminal of another customer refused");
            return Err(DeliveryError::Rejected(
                "the terminal belongs to another customer".into(),
            ));
        }
        let kind = TerminalKind::parse(&kind)
            .map_err(|_| DeliveryError::Rejected("unknown terminal kind".into()))?;
        Ok(TerminalRow {
            kind,
            msisdn: row.get(1),
        })
    }

    /// `deadline`: when the sender stops waiting. Past it, or past the session's own ACK wait,
    /// the delivery failed (`NotAcknowledged`; an ACK that comes later is ignored).
    async fn dedicated(
        &self,
        id: &str,
        notice: Notice,
        recorded: Option<i64>,
        deadline: Instant,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        let record = self.record("terminal", id, &notice, recorded).await?;
        let outcome = notice.kind == NoticeKind::Outcome;
        // What is left once the row is written, less the time to write how the delivery ended
        // (held, for an outcome), so that the answer comes before its sender stops waiting.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_millis(END_WRITE_MARGIN_MS));
        let result = match self.registry.session(id) {
            None => Err(DeliveryError::Offline),
            Some(session) => session::deliver(&session, notice, self.ack_wait().min(wait)).await,
        };
        match result {
            Err(DeliveryError::Offline) if outcome => self.hold(record, id, Duration::ZERO).await,
            // The terminal may have vanished without closing: its connection is dropped once
            // silent long enough. Told more than once rather than never: it is offered again
            // to a session still there then (so alive), or at the terminal's next connection.
            Err(DeliveryError::NotAcknowledged) if outcome => {
                let silent_max = self.held_waits().silent_max;
                self.hold(record, id, silent_max).await
            }
            result => self.finish(record, result).await,
        }
    }

    fn ack_wait(&self) -> Duration {
        session::answer_wait(self.settings.ack_timeout_ms)
    }

    fn held_waits(&self) -> held_outcomes::HeldWaits {
        let settings = &self.settings;
        held_outcomes::HeldWaits::of_switch(settings.ack_timeout_ms, settings.keepalive_interval_ms)
    }

    /// Keeps an outcome notice for a terminal, to go when it is back. A session there `resend_after`
    /// from now gets the notices held (one that authenticated meanwhile had those held before
    /// sent already, so with no wait, this one is sent now).
    async fn hold(
        &self,
        record: Recorded,
        terminal_id: &str,
        resend_after: Duration,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        if let Err(e) = held_outcomes::hold(&self.pool, &self.clock, record.id).await {
            // The row stays `queued`: the next start offers it again.
            tracing::warn!(message = record.id, error = %e, "could not hold an outcome notice");
        }
        let (pool, clock, registry) =
            (self.pool.clone(), self.clock.clone(), self.registry.clone());
        let (terminal_id, waits) = (terminal_id.to_owned(), self.held_waits());
        actix_rt::spawn(async move {
            tokio::time::sleep(resend_after).await;
            if let Some(session) = registry.session(&terminal_id) {
                held_outcomes::send_held(pool, clock, registry, terminal_id, session, waits).await;
            }
        });
        Err(DeliveryError::Held)
    }

    async fn adapter(
        &self,
        kind: TerminalKind,
        id: &str,
        terminal: &TerminalRow,
        notice: Notice,
        recorded: Option<i64>,
        wait: Duration,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        let Some(adapter) = self.adapters.for_kind(kind) else {
            return Err(DeliveryError::Unavailable);
        };
        let number = registered_number(terminal)?;
        if adapter.records_messages() {
            return bounded(adapter.as_ref(), number, notice, recorded, wait).await;
        }
        let record = self
            .record(adapter.channel(), id, &notice, recorded)
            .await?;
        let result = bounded(adapter.as_ref(), number, notice, None, wait).await;
        self.finish(record, result).await
    }

    /// The notice's `queued` row, written before anything leaves the process; `recorded` when
    /// it is written already (an outcome's, with the final status), which this delivery ends.
    async fn record(
        &self,
        channel: &'static str,
        destination: &str,
        notice: &Notice,
        recorded: Option<i64>,
    ) -> Result<Recorded, DeliveryError> {
        let code = notice.kind == NoticeKind::Code;
        if let Some(id) = recorded {
            return Ok(Recorded {
                id,
                channel,
                code,
                by_sender: true,
            });
        }
        let kind = match notice.kind {
            NoticeKind::Code => "code",
            NoticeKind::Outcome => "outcome",
        };
        let now = self.clock.now();
        let client = self.pool.get().await.map_err(|e| db_unavailable(&e))?;
        let row = client
            .query_one_cached(
                "INSERT INTO customer_messages
                     (payment_id, kind, channel, destination, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'queued', $5, $5) RETURNING id",
                &[&notice.payment_id, &kind, &channel, &destination, &now],
            )
            .await
            .map_err(|e| db_unavailable(&e))?;
        Ok(Recorded {
            id: row.get(0),
            channel,
            code,
            by_sender: false,
        })
    }

    /// Records how a delivery ended and passes the result on.
    async fn finish(
        &self,
        record: Recorded,
        result: Result<DeliveryReceipt, DeliveryError>,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        if record.by_sender && result == Err(DeliveryError::Unavailable) {
            // Nothing went: the sender offers the notice again, or marks its row failed.
            return result;
        }
        if result.is_ok() && record.code {
            global()
                .codes_sent
                .get_or_create(&labels(&[("channel", record.channel)]))
                .inc();
        }
        let now = self.clock.now();
        if let Err(e) = messages::record_end(&self.pool, now, record.id, &result).await {
            // The notice already went (or failed); the row stays `queued` for an operator to see.
            tracing::warn!(message = record.id, error = %e, "could not record a delivery's end");
        }
        result
    }

    async fn choices(&self, customer_id: &str) -> Result<Vec<TerminalChoice>, DeliveryError> {
        let client = self.pool.get().await.map_err(|e| db_unavailable(&e))?;
        let rows = client
            .query_cached(
                "SELECT id, kind, label FROM terminals
                  WHERE customer_id = $1 AND status = 'enabled' ORDER BY created_at, id",
                &[&customer_id],
            )
            .await
            .map_err(|e| db_unavailable(&e))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let id: String = row.get(0);
                let kind = TerminalKind::parse(row.get(1)).ok()?;
                let unavailable = self.unavailable_reason(&id, kind);
                Some(TerminalChoice {
                    id,
                    kind,
                    label: row.get(2),
                    available: unavailable.is_none(),
                    unavailable_reason: unavailable,
                })
            })
            .collect())
    }

    fn unavailable_reason(&self, id: &str, kind: TerminalKind) -> Option<&'static str> {
        match kind {
            TerminalKind::Dedicated if !self.registry.is_online(id) => Some("offline"),
            TerminalKind::Mobile if !self.sms.as_ref().is_some_and(|s| s.connected()) => {
                Some("the SMS channel is not available")
            }
            TerminalKind::Telephone | TerminalKind::Pager | TerminalKind::Pda
                if self.adapters.for_kind(kind).is_none() =>
            {
                Some("no delivery service for this kind of terminal")
            }
            _ => None,
        }
    }
}

/// A `customer_messages` row being written.
struct Recorded {
    id: i64,
    channel: &'static str,
    code: bool,
    /// Written by the sender (an outcome's row, with the final status), not by this delivery.
    by_sender: bool,
}

fn registered_number(terminal: &TerminalRow) -> Result<Msisdn, DeliveryError> {
    terminal
        .msisdn
        .as_deref()
        .and_then(|n| Msisdn::parse(n).ok())
        .ok_or_else(|| DeliveryError::Rejected("the terminal has no valid number".into()))
}

fn db_unavailable(e: &dyn std::fmt::Display) -> DeliveryError {
    tracing::error!(error = %e, "customer channel: database unavailable");
    DeliveryError::Unavailable
}

/// One of a customer's terminals, for the pay page's `terminal` choice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TerminalChoice {
    pub id: String,
    pub kind: TerminalKind,
    pub label: String,
    /// Whether a code can go there now (dedicated: connected; mobile: SMS up; others: an adapter).
    pub available: bool,
    pub unavailable_reason: Option<&'static str>,
}

/// The enabled terminals of a customer and whether each can receive a code now.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<TerminalChoice>, DeliveryError>")]
pub struct ListTerminals {
    pub customer_id: String,
}

impl Handler<ListTerminals> for ChannelRouter {
    type Result = ResponseFuture<Result<Vec<TerminalChoice>, DeliveryError>>;

    fn handle(&mut self, msg: ListTerminals, _ctx: &mut Context<Self>) -> Self::Result {
        let routes = self.routes.clone();
        Box::pin(async move { routes.choices(&msg.customer_id).await })
    }
}

/// The terminal switch and the router, running.
#[derive(Debug, Clone)]
pub struct Channels {
    pub switch: SwitchHandle,
    pub router: Addr<ChannelRouter>,
}

impl Channels {
    /// Where PAY sends every notice.
    pub fn recipient(&self) -> Recipient<Deliver> {
        self.router.clone().recipient()
    }

    pub fn shutdown(&self) {
        self.switch.shutdown();
    }
}

/// The adapters shipped: PDAs get the notice as SMS text when the SMS channel exists. Telephone
/// (voice) and pager providers cannot run here, so none is shipped and those kinds are shown as
/// unavailable.
pub fn default_adapters(sms: Option<&Recipient<Deliver>>) -> AdapterSet {
    let mut set = AdapterSet::default();
    if let Some(sms) = sms {
        set = set.with(Arc::new(SmsTextAdapter::new(
            TerminalKind::Pda,
            sms.clone(),
        )));
    }
    set
}

/// Starts the terminal switch (TLS when `tls` is given) and the router on the current actix
/// system. `sms` is the SMPP actor; without it SMS deliveries answer `Unavailable`.
pub async fn start(
    pool: Pool,
    clock: SharedClock,
    settings: SwitchSettings,
    tls: Option<SslAcceptor>,
    sms: Option<Recipient<Deliver>>,
) -> std::io::Result<Channels> {
    let adapters = default_adapters(sms.as_ref());
    start_with_adapters(pool, clock, settings, tls, sms, adapters).await
}

/// [`start`] as `payhub serve` does it: `[terminal_switch]` settings, TLS (unless `tls = false`)
/// with the gateway's server certificate and key from `[http] tls_cert` / `tls_key`.
pub async fn start_from_config(
    config: &Config,
    pool: Pool,
    clock: SharedClock,
    sms: Option<Recipient<Deliver>>,
) -> anyhow::Result<Channels> {
    let switch = &config.terminal_switch;
    let tls = if switch.tls {
        Some(acceptor_from_files(
            &config.http.tls_cert,
            &config.http.tls_key,
        )?)
    } else {
        None
    };
    let settings = SwitchSettings::from_config(switch);
    start(pool, clock, settings, tls, sms)
        .await
        .with_context(|| format!("terminal switch: cannot listen on {}", switch.listen))
}

/// [`start`] with a chosen set of adapters (a real voice or paging provider).
pub async fn start_with_adapters(
    pool: Pool,
    clock: SharedClock,
    settings: SwitchSettings,
    tls: Option<SslAcceptor>,
    sms: Option<Recipient<Deliver>>,
    adapters: AdapterSet,
) -> std::io::Result<Channels> {
    let router_settings = RouterSettings::from_switch(&settings);
    let switch = start_switch(pool.clone(), clock.clone(), settings, tls).await?;
    let router = ChannelRouter::new(
        pool,
        clock,
        switch.registry.clone(),
        sms,
        adapters,
        router_settings,
    )
    .start();
    Ok(Channels { switch, router })
}
