//! The merchant webhook worker. Final statuses write their event into `webhook_events` in the same
//! transaction (the outbox); this worker claims due events, POSTs them signed to `notify_url`,
//! records every attempt in `webhook_attempts`, and retries with exponential backoff until a 2xx or
//! until `give_up_after_s` (at least 24 h) has passed. It also sends events other parts write
//! (`payment.expired`). State lives in the database, so a restart loses nothing: an event claimed
//! by a process that died is claimed again when its lease runs out.
//!
//! The payment actors hand their committed events over in memory when the worker's queue has
//! room (`payhub_actors::transaction::outbox`), so that most events are never claimed: the claim
//! was an `UPDATE` and a commit of its own for every few events.

pub mod attempts;
pub mod destinations;
pub mod signature;
pub mod slow_merchants;

use crate::config::WebhooksConfig;
use attempts::ATTEMPT_WRITE_LIMITS;
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use futures::stream::{FuturesUnordered, StreamExt};
use payhub_actors::clock::SharedClock;
use payhub_actors::metrics::{global, labels};
use payhub_actors::store::prepared::Prepared;
use payhub_actors::transaction::outbox::{WebhookEvent, WebhookOutbox};
use payhub_actors::transaction::writer::PAYMENT_WRITE_LIMITS;
use slow_merchants::{SlowMerchants, Started};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// How often the worker looks for due events when nobody wakes it.
pub const POLL_INTERVAL_MS: u64 = 1_000;
/// Beyond the request timeout, how long a claimed event stays reserved for this worker: the
/// attempt's record (its writer answers within `ATTEMPT_WRITE_LIMITS.answer_wait_max_ms`) and
/// 5 s more, so that a delivery acknowledged but recorded late is not claimed and sent again.
pub const LEASE_MARGIN_MS: i64 = ATTEMPT_WRITE_LIMITS.answer_wait_max_ms as i64 + 5_000;
/// Attempts every event gets before it is given up, however late the first went out.
pub const ATTEMPTS_MIN: i32 = 3;
/// Longest error text kept per attempt.
pub const ERROR_TEXT_MAX_CHARS: usize = 200;
/// Events handed over in memory that may wait for a slot, per slot.
pub const HANDOFF_DEPTH: usize = 2;

/// Leases (`$2`) up to `$3` events due at `$1` of the merchants in `$4` (`$5` true) or of the
/// others (`$5` false), oldest first, through `webhook_events_due`. Cheap while the oldest due
/// events are the ones taken; a claim for the others while a slow merchant's backlog is the
/// oldest walks all of it, so then [`CLAIM_BY_MERCHANT_SQL`] is used.
const CLAIM_OLDEST_SQL: &str = "UPDATE webhook_events e SET next_attempt_at = $2
  FROM merchants m
 WHERE m.id = e.merchant_id AND e.id IN (
       SELECT id FROM webhook_events
        WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1
          AND (merchant_id = ANY($4)) = $5
        ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING e.id, e.body, e.notify_url, e.attempts, e.created_at, m.webhook_secret, e.merchant_id";

/// As [`CLAIM_OLDEST_SQL`], for the merchants not in `$4` (the slow ones), merchant by merchant,
/// in turns: each merchant's oldest due event, then each one's second, and so on (V82). The
/// merchants with undelivered events are found by skipping from one to the next along
/// `webhook_events_pending_by_merchant`, so the slow merchants' backlogs cost nothing; but each
/// merchant with undelivered events costs about 10 µs, and a claim about 1 ms at least (6 ms at
/// p50 under the debit path's benchmark), against a fraction of that for the oldest-first claim
/// (BENCHMARKS.md, "Webhook claims"). So it is used only while some merchant is slow.
const CLAIM_BY_MERCHANT_SQL: &str = "
WITH RECURSIVE pending AS (
    (SELECT merchant_id FROM webhook_events
      WHERE delivered_at IS NULL AND given_up_at IS NULL
      ORDER BY merchant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.merchant_id FROM webhook_events e
             WHERE e.delivered_at IS NULL AND e.given_up_at IS NULL
               AND e.merchant_id > p.merchant_id
             ORDER BY e.merchant_id LIMIT 1)
      FROM pending p WHERE p.merchant_id IS NOT NULL
), due AS (
    SELECT d.id, d.next_attempt_at,
           row_number() OVER (PARTITION BY a.merchant_id ORDER BY d.next_attempt_at) AS turn
      FROM pending a CROSS JOIN LATERAL (
          SELECT e.id, e.next_attempt_at FROM webhook_events e
           WHERE e.merchant_id = a.merchant_id AND e.delivered_at IS NULL
             AND e.given_up_at IS NULL AND e.next_attempt_at <= $1
           ORDER BY e.next_attempt_at LIMIT $3) d
     WHERE a.merchant_id IS NOT NULL AND a.merchant_id <> ALL($4::text[])
), taken AS (
    SELECT id FROM webhook_events
     WHERE id IN (SELECT id FROM due ORDER BY turn, next_attempt_at LIMIT $3)
       AND delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1
     FOR UPDATE SKIP LOCKED
)
UPDATE webhook_events e SET next_attempt_at = $2
  FROM merchants m, taken t
 WHERE m.id = e.merchant_id AND e.id = t.id
RETURNING e.id, e.body, e.notify_url, e.attempts, e.created_at, m.webhook_secret, e.merchant_id";

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub timeout_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub give_up_after_s: u64,
    pub concurrency_max: usize,
    pub poll_interval_ms: u64,
    pub allow_private_destinations: bool,
}

impl From<&WebhooksConfig> for WebhookSettings {
    fn from(c: &WebhooksConfig) -> Self {
        Self {
            timeout_ms: c.timeout_ms,
            retry_base_ms: c.retry_base_ms,
            retry_max_ms: c.retry_max_ms,
            give_up_after_s: c.give_up_after_s,
            concurrency_max: c.concurrency_max.max(1),
            poll_interval_ms: POLL_INTERVAL_MS,
            allow_private_destinations: c.allow_private_destinations,
        }
    }
}

impl WebhookSettings {
    /// Events waiting in the handoff queue, at most.
    fn handoff_capacity(&self) -> usize {
        HANDOFF_DEPTH * self.concurrency_max.max(1)
    }

    /// How long a handed event is reserved for this worker, from before its write: the write's
    /// longest wait, then the deliveries ahead of it in its slot and its own, then the claim's
    /// margin for recording the attempt. Ahead of it: `HANDOFF_DEPTH` per slot, over as few as
    /// half the slots (claims may hold the rest: a quarter, one of two, every other turn of one).
    fn handoff_lease_ms(&self) -> i64 {
        let ahead = 2 * HANDOFF_DEPTH as u64;
        let deliveries_ms = (ahead + 1).saturating_mul(self.timeout_ms);
        let write_ms = PAYMENT_WRITE_LIMITS.answer_wait_max_ms;
        i64::try_from(deliveries_ms.saturating_add(write_ms))
            .unwrap_or(i64::MAX / 2)
            .saturating_add(LEASE_MARGIN_MS)
    }

    /// When an event whose attempt number `attempts` failed at `now` is tried again, or `None`
    /// when it is given up. Retries back off exponentially, and the last one falls when
    /// `give_up_after_s` have passed since the event: whatever the backoff's cap, an event is
    /// tried for at least that long (gateway-http.md: at least 24 h). One that first went out
    /// late (the gateway was down, the worker behind) still gets `ATTEMPTS_MIN` attempts.
    fn retry_after_failure(
        &self,
        created_at: DateTime<Utc>,
        attempts: i32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let give_up_after_s = i64::try_from(self.give_up_after_s).unwrap_or(i64::MAX / 2_000);
        let give_up_at = created_at + Duration::seconds(give_up_after_s);
        let retry_at = now + self.backoff(attempts);
        if now < give_up_at {
            Some(retry_at.min(give_up_at))
        } else {
            (attempts < ATTEMPTS_MIN).then_some(retry_at)
        }
    }

    /// `retry_base_ms · 2^(attempts-1)`, at most `retry_max_ms`.
    fn backoff(&self, attempts: i32) -> Duration {
        let exponent = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(32);
        let ms = self
            .retry_base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.retry_max_ms);
        Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2))
    }
}

/// A running worker: the payment actors hand it events through `outbox`; cancel `shutdown` to
/// stop it, then await [`finished`](Self::finished).
#[derive(Debug, Clone)]
pub struct WebhookWorker {
    pub outbox: WebhookOutbox,
    pub shutdown: CancellationToken,
    /// Cancelled once the worker has stopped and its deliveries under way are recorded.
    stopped: CancellationToken,
    stop_wait_max_ms: u64,
}

impl WebhookWorker {
    /// Waits until the worker, once told to stop, has let its deliveries under way finish and
    /// recorded them: at most one request timeout and the lease margin. An attempt not recorded
    /// is sent again after its lease (at least once), so the pool should close only after this.
    pub async fn finished(&self) {
        let wait = std::time::Duration::from_millis(self.stop_wait_max_ms);
        if tokio::time::timeout(wait, self.stopped.cancelled())
            .await
            .is_err()
        {
            tracing::warn!("webhook deliveries still under way at shutdown");
        }
    }
}

/// How long an idle connection to a merchant's endpoint is kept for the next webhook.
const IDLE_CONNECTION_MS_MAX: u64 = 15_000;

/// Starts the worker on the current tokio runtime.
pub fn start_worker(
    pool: Pool,
    clock: SharedClock,
    settings: WebhookSettings,
) -> anyhow::Result<WebhookWorker> {
    // Idle connections are not kept long: a merchant naming many hosts would otherwise hold a
    // socket open for each, for reqwest's default 90 s.
    let mut client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(settings.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_millis(IDLE_CONNECTION_MS_MAX))
        .user_agent("payhub-webhooks/1");
    if !settings.allow_private_destinations {
        // Through a proxy, only the proxy's name would be resolved here, never the merchant's.
        client = client
            .dns_resolver(Arc::new(destinations::PublicOnly))
            .no_proxy();
    }
    let client = client.build()?;
    let shutdown = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let (outbox, handed) = WebhookOutbox::with_handoff(
        wake.clone(),
        settings.handoff_capacity(),
        settings.handoff_lease_ms(),
    );
    let worker = Worker {
        attempts: attempts::start(pool.clone()),
        pool,
        clock,
        settings,
        client,
    };
    let stopped = CancellationToken::new();
    let stop_wait_max_ms = worker
        .settings
        .timeout_ms
        .saturating_add(LEASE_MARGIN_MS.unsigned_abs());
    let (s, done) = (shutdown.clone(), stopped.clone().drop_guard());
    tokio::spawn(async move {
        Arc::new(worker).run(wake, handed, s).await;
        drop(done);
    });
    Ok(WebhookWorker {
        outbox,
        shutdown,
        stopped,
        stop_wait_max_ms,
    })
}

struct Worker {
    pool: Pool,
    /// Attempts are group-committed.
    attempts: attempts::AttemptWriter,
    clock: SharedClock,
    settings: WebhookSettings,
    client: reqwest::Client,
}

impl Worker {
    /// Sends continuously: a delivery starts as soon as a slot is free, rather than in groups
    /// that each wait for their slowest. Handed events go first, but leave claims a quarter of
    /// the open slots; with nothing handed, a claim refills at least half the slots slow
    /// merchants do not hold, so that one statement serves many deliveries. Each
    /// delivery is a task of its own, so that its time is its own and not this loop's (a claim's
    /// wait for a connection would otherwise count as the merchant's). On shutdown the handed
    /// events not yet started stay leased in the table, and are claimed after their lease.
    async fn run(
        self: Arc<Self>,
        wake: Arc<Notify>,
        mut handed: mpsc::Receiver<WebhookEvent>,
        shutdown: CancellationToken,
    ) {
        let slots = self.settings.concurrency_max.max(1);
        let mut slow = SlowMerchants::new(slots, self.settings.timeout_ms);
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(
            self.settings.poll_interval_ms,
        ));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight = FuturesUnordered::new();
        // Deliveries under way that a claim started (the rest were handed over).
        let mut claimed_running = 0usize;
        // Whether the last delivery started came from a claim: a worker of one open slot takes
        // the two sources in turn.
        let mut last_claimed = false;
        // Whether events may be due: after a wake or a tick, until a claim finds fewer than it
        // asked for.
        let mut maybe_due = true;
        // A handed event received while the slots it may use were taken: it starts first.
        let mut next_handed: Option<WebhookEvent> = None;
        loop {
            let free = slots - in_flight.len();
            let open = slots.saturating_sub(slow.held());
            // Neither source starves the other. While a claim may find due events (retries,
            // expiries, events the handoff had no room for), handed events leave it a quarter of
            // the open slots; while handed events wait, claims hold no more than that quarter.
            let claims_share = match open {
                0 | 1 => usize::from(!last_claimed),
                _ => open.div_ceil(4).min(open - 1),
            };
            let owed_to_claims = claims_share.saturating_sub(claimed_running);
            let handed_waiting = next_handed.is_some() || !handed.is_empty();
            let handed_room = if maybe_due {
                free.saturating_sub(owed_to_claims)
            } else {
                free
            };
            let (claim_room, claim_at) = if handed_waiting {
                (free.min(owed_to_claims), 1)
            } else {
                // Alone, a claim waits for half the open slots: one statement, many deliveries.
                (free, open.div_ceil(2).max(1))
            };
            if handed_room > 0
                && !shutdown.is_cancelled()
                && let Some(event) = next_handed.take().or_else(|| handed.try_recv().ok())
            {
                in_flight.extend(self.start(&mut slow, event, false));
                last_claimed = false;
                continue;
            }
            if maybe_due && claim_room >= claim_at && !shutdown.is_cancelled() {
                // Slow merchants' due events wait while handed ones do: the claims' share is
                // for retries, expiries and overflow of the others.
                let claimed = self.claim_due(claim_room, &slow, !handed_waiting).await;
                maybe_due = claimed.len() == claim_room;
                for event in claimed {
                    let started = self.start(&mut slow, event, true);
                    claimed_running += usize::from(started.is_some());
                    last_claimed |= started.is_some();
                    in_flight.extend(started);
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(ended) = in_flight.next(), if !in_flight.is_empty() => {
                    slow.end(ended.started);
                    claimed_running -= usize::from(ended.claimed);
                    let Some(took) = ended.took else { continue };
                    if slow.observe(&ended.merchant_id, took, Instant::now()) {
                        tracing::warn!(
                            merchant = %ended.merchant_id,
                            "webhook endpoint slow; its deliveries now share three quarters of \
                             the slots with other slow merchants'"
                        );
                    }
                }
                // Taken whenever a slot is free, so that its arrival lets a claim go first.
                Some(event) = handed.recv(), if free > 0 && next_handed.is_none() => {
                    if handed_room > 0 {
                        in_flight.extend(self.start(&mut slow, event, false));
                        last_claimed = false;
                    } else {
                        next_handed = Some(event);
                    }
                }
                _ = wake.notified() => maybe_due = true,
                _ = poll.tick() => maybe_due = true,
            }
        }
        // Deliveries under way finish and are recorded (each bounded by `timeout_ms`).
        while in_flight.next().await.is_some() {}
    }

    /// The event's delivery, unless its merchant is slow and the slow share is taken: then the
    /// event stays leased, and is claimed again once its lease runs out.
    fn start(
        self: &Arc<Self>,
        slow: &mut SlowMerchants,
        event: WebhookEvent,
        claimed: bool,
    ) -> Option<impl Future<Output = Ended> + use<>> {
        let Some(started) = slow.start(&event.merchant_id, Instant::now()) else {
            tracing::debug!(event = %event.id, "webhook left to its lease: its merchant is slow");
            global().webhook_held_back.inc();
            return None;
        };
        let merchant_id = event.merchant_id.clone();
        let worker = Arc::clone(self);
        let delivery = tokio::spawn(async move { worker.deliver(&event).await });
        Some(async move {
            let took = delivery
                .await
                .inspect_err(
                    |e| tracing::error!(error = %e, "webhook delivery task ended abnormally"),
                )
                .ok();
            Ended {
                merchant_id,
                started,
                took,
                claimed,
            }
        })
    }

    /// Due events for `free` slots: first slow merchants' (`with_slow`), as many as their share
    /// has room for, then the other merchants'. A claim's failure is logged, and leaves its events to their
    /// lease.
    async fn claim_due(
        &self,
        free: usize,
        slow: &SlowMerchants,
        with_slow: bool,
    ) -> Vec<WebhookEvent> {
        let slow_ids = slow.slow(Instant::now());
        global()
            .webhook_slow_merchants
            .set(i64::try_from(slow_ids.len()).unwrap_or(i64::MAX));
        let mut claimed = Vec::new();
        let room = if with_slow { slow.room().min(free) } else { 0 };
        if !slow_ids.is_empty() && room > 0 {
            claimed = self.claim(room, &slow_ids, true).await;
        }
        let rest = free - claimed.len();
        if rest > 0 {
            claimed.extend(self.claim(rest, &slow_ids, false).await);
        }
        claimed
    }

    /// Up to `limit` due events of the merchants in `merchant_ids` (`among`), or of the others,
    /// each reserved for this worker for a lease.
    async fn claim(&self, limit: usize, merchant_ids: &[String], among: bool) -> Vec<WebhookEvent> {
        self.try_claim(limit, merchant_ids, among)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "webhook worker cannot claim events");
                Vec::new()
            })
    }

    async fn try_claim(
        &self,
        limit: usize,
        merchant_ids: &[String],
        among: bool,
    ) -> anyhow::Result<Vec<WebhookEvent>> {
        let limit = i64::try_from(limit).unwrap_or(1);
        let client = self.pool.get().await?;
        // After the wait for a connection, which the lease need not cover.
        let now = self.clock.now();
        let timeout_ms = i64::try_from(self.settings.timeout_ms).unwrap_or(i64::MAX / 2);
        let lease = now + Duration::milliseconds(timeout_ms + LEASE_MARGIN_MS);
        // Merchant by merchant only when the others' claim would pass over slow merchants' due
        // events.
        let rows = if among || merchant_ids.is_empty() {
            let claim = CLAIM_OLDEST_SQL;
            client
                .query_cached(claim, &[&now, &lease, &limit, &merchant_ids, &among])
                .await?
        } else {
            let claim = CLAIM_BY_MERCHANT_SQL;
            client
                .query_cached(claim, &[&now, &lease, &limit, &merchant_ids])
                .await?
        };
        Ok(rows
            .iter()
            .map(|r| WebhookEvent {
                id: r.get(0),
                merchant_id: r.get(6),
                body: r.get(1),
                notify_url: r.get(2),
                attempts: r.get(3),
                created_at: r.get(4),
                secret: payhub_actors::Secret::new(r.get(5)),
            })
            .collect())
    }

    /// Sends the event and records the attempt; returns how long the attempt took (its
    /// recording aside).
    async fn deliver(&self, event: &WebhookEvent) -> std::time::Duration {
        let started = Instant::now();
        let (status_code, error) = match self.refusal(&event.notify_url) {
            Some(refused) => (None, Some(refused)),
            None => self.post(event).await,
        };
        let took = started.elapsed();
        let duration_ms = i32::try_from(took.as_millis()).unwrap_or(i32::MAX);
        let delivered = status_code.is_some_and(|s| (200..300).contains(&s));
        if let Err(e) = self
            .record(event, delivered, status_code, error, duration_ms)
            .await
        {
            // The lease runs out and the event is tried again: at least once, never lost.
            tracing::warn!(event = %event.id, error = %e, "webhook attempt not recorded");
        }
        took
    }

    /// Why the event may not go to `notify_url` as written (its host named as an address).
    fn refusal(&self, notify_url: &str) -> Option<String> {
        if self.settings.allow_private_destinations {
            return None;
        }
        let refused = match url::Url::parse(notify_url) {
            Ok(url) => destinations::written_host_refusal(&url)?,
            Err(e) => format!("notify_url: {e}"),
        };
        Some(format!("refused: {refused}"))
    }

    /// The signed POST: its status code, or why there is none.
    async fn post(&self, event: &WebhookEvent) -> (Option<i32>, Option<String>) {
        let t = self.clock.now().timestamp();
        let header = signature::sign(event.secret.expose().as_bytes(), t, event.body.as_bytes());
        let sent = self
            .client
            .post(&event.notify_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, header)
            .body(event.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                read_to_end(response).await;
                (Some(i32::from(status)), None)
            }
            Err(e) => (None, Some(error_text(&e))),
        }
    }

    async fn record(
        &self,
        event: &WebhookEvent,
        delivered: bool,
        status_code: Option<i32>,
        error: Option<String>,
        duration_ms: i32,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let attempts = event.attempts + 1;
        let retry = if delivered {
            None
        } else {
            self.settings
                .retry_after_failure(event.created_at, attempts, now)
        };
        let given_up = !delivered && retry.is_none();
        let next = retry.unwrap_or(now);
        let attempt = attempts::Attempt {
            event_id: event.id.clone(),
            at: now,
            status_code,
            error,
            duration_ms,
            attempts,
            next_attempt_at: next,
            delivered_at: delivered.then_some(now),
            given_up_at: given_up.then_some(now),
        };
        self.attempts.ask(attempt).await?;
        let result = if delivered { "delivered" } else { "failed" };
        global()
            .webhook_deliveries
            .get_or_create(&labels(&[("result", result)]))
            .inc();
        if !delivered && !given_up {
            global().webhook_retries.inc();
        }
        if given_up {
            tracing::warn!(event = %event.id, attempts, "webhook given up");
        }
        Ok(())
    }
}

/// A delivery that has ended, for the slow merchants' count.
struct Ended {
    merchant_id: String,
    started: Started,
    /// How long the attempt took; none when its task ended abnormally (not the merchant's time).
    took: Option<std::time::Duration>,
    /// Started by a claim, not handed over.
    claimed: bool,
}

/// Longest answer body read to its end. A merchant's answer carries nothing payhub uses, but a
/// connection goes back to the pool only once its answer has been read: left unread, every
/// webhook opened a connection of its own (a TLS handshake, over HTTPS). A longer body is left,
/// and its connection closed. The request's `timeout_ms` bounds the reading.
const ANSWER_READ_MAX_BYTES: usize = 64 * 1024;

async fn read_to_end(mut response: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > ANSWER_READ_MAX_BYTES {
            return;
        }
    }
}

/// Why an attempt failed, as kept with it: reqwest's own text names the URL only (whose query
/// may hold a merchant's token), so the innermost cause says why (refused, reset, no public
/// address, an answer that is not HTTP...).
fn error_text(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let text = if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connect() {
        format!("connect: {cause}")
    } else if std::ptr::addr_eq(cause, e) {
        // No cause to tell: reqwest's text without the URL.
        e.to_string()
            .split(" for url (")
            .next()
            .unwrap_or_default()
            .to_string()
    } else {
        format!("request: {cause}")
    };
    text.chars().take(ERROR_TEXT_MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(retry_max_ms: u64, give_up_after_s: u64) -> WebhookSettings {
        WebhookSettings {
            timeout_ms: 10_000,
            retry_base_ms: 5_000,
            retry_max_ms,
            give_up_after_s,
            concurrency_max: 1,
            poll_interval_ms: POLL_INTERVAL_MS,
            allow_private_destinations: true,
        }
    }

    /// Follows one event that never gets a 2xx: the times of its attempts.
    fn attempts_until_given_up(settings: &WebhookSettings) -> Vec<DateTime<Utc>> {
        let created = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut at = vec![created];
        while let Some(next) =
            settings.retry_after_failure(created, at.len() as i32, at[at.len() - 1])
        {
            assert!(next > at[at.len() - 1], "always later");
            at.push(next);
            assert!(at.len() < 100_000, "ends");
        }
        at
    }

    #[test]
    fn an_event_first_tried_after_its_give_up_time_still_gets_its_attempts() {
        let s = settings(3_600_000, 86_400);
        let created = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let late = created + Duration::hours(25);
        let second = s.retry_after_failure(created, 1, late);
        assert_eq!(second, Some(late + Duration::seconds(5)));
        let third = s.retry_after_failure(created, 2, second.unwrap());
        assert_eq!(third, Some(late + Duration::seconds(15)));
        assert_eq!(
            s.retry_after_failure(created, ATTEMPTS_MIN, third.unwrap()),
            None
        );
    }

    #[test]
    fn a_failing_event_is_tried_until_its_give_up_time_whatever_the_backoff_cap() {
        let day_s = 86_400;
        for (retry_max_ms, give_up_after_s) in [
            (3_600_000, day_s),
            (86_400_000, day_s),
            (3_600_000, 3 * day_s),
            (1_000, day_s),
        ] {
            let s = settings(retry_max_ms, give_up_after_s);
            let at = attempts_until_given_up(&s);
            let last = at[at.len() - 1] - at[0];
            assert_eq!(
                last,
                Duration::seconds(give_up_after_s as i64),
                "cap {retry_max_ms} ms: the last attempt at the give-up time"
            );
            let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
            assert_eq!(
                gaps[0],
                Duration::seconds(5).min(Duration::milliseconds(retry_max_ms as i64))
            );
            assert!(
                gaps[..gaps.len() - 1].windows(2).all(|g| g[1] >= g[0]),
                "backs off"
            );
        }
    }

    /// The others' claim while a merchant is slow reads each merchant's due events from its own
    /// part of V82's index, and skips from one merchant to the next along it: never the whole
    /// table's due events in age order, the slow merchants' backlogs first.
    #[tokio::test]
    async fn claims_read_each_merchants_part_of_the_pending_index() {
        let sql = super::CLAIM_BY_MERCHANT_SQL
            .replace("$1", "now()")
            .replace("$2", "now()")
            .replace("$3", "8")
            .replace("$4", "'{mer_slow}'");
        let plan = payhub_actors::store::testing::plan_without_seq_scans(&sql).await;
        assert!(
            plan.contains("webhook_events_pending_by_merchant"),
            "{plan}"
        );
        assert!(!plan.contains("webhook_events_due"), "{plan}");
    }
}
