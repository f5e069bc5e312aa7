//! The expiry worker: payments that wait for their customer past `expires_at` become `expired`,
//! each with its `payment.expired` webhook event in the same transaction (the webhook worker
//! delivers it). It also forgets idempotency keys past their 24 h replay window, and failed
//! sign-ins too old for any lockout decision. Work per tick is bounded; time comes from the
//! injected clock.

use payhub_actors::clock::SharedClock;
use payhub_actors::metrics::{global, labels};
use payhub_actors::store::{StoreError, customers, idempotency, payments};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ExpirySettings {
    /// Pause between sweeps.
    pub interval_ms: u64,
    /// Payments expired per transaction.
    pub batch_max: i64,
    /// Transactions per sweep, so one sweep cannot run forever after a long outage.
    pub batches_per_sweep_max: usize,
    /// The gateway's `http.public_url`, for the payment object in the event.
    pub public_url: url::Url,
    /// How long after its expiry a payment waiting for its code is left to its actor, which
    /// expires it on time and tells the customer; the sweep takes it only after that (its actor
    /// is not running).
    pub awaiting_code_grace_ms: u64,
    /// How long a failed sign-in is kept: two lockout windows (the lockout reads no further back).
    pub login_failures_kept_s: u64,
}

impl ExpirySettings {
    pub fn new(public_url: url::Url) -> Self {
        Self {
            interval_ms: 1_000,
            batch_max: 500,
            batches_per_sweep_max: 20,
            public_url,
            awaiting_code_grace_ms: 10_000,
            login_failures_kept_s: 2 * 15 * 60,
        }
    }
}

/// One transaction's worth: expires up to `batch_max` due payments and forgets up to as many
/// stale idempotency keys and old failed sign-ins. Returns the number of payments expired.
pub async fn run_once(
    pool: &deadpool_postgres::Pool,
    clock: &SharedClock,
    settings: &ExpirySettings,
) -> Result<usize, StoreError> {
    Ok(run_batch(pool, clock, settings).await?.expired)
}

/// What one batch did.
struct Batch {
    expired: usize,
    /// Whether any of its three parts took a whole batch: more may be due.
    full: bool,
}

async fn run_batch(
    pool: &deadpool_postgres::Pool,
    clock: &SharedClock,
    settings: &ExpirySettings,
) -> Result<Batch, StoreError> {
    let now = clock.now();
    let mut client = pool.get().await?;
    let grace = chrono::Duration::milliseconds(
        i64::try_from(settings.awaiting_code_grace_ms).unwrap_or(i64::MAX),
    );
    let expired = payments::expire_due(
        &mut client,
        now,
        now - grace,
        settings.batch_max,
        &settings.public_url,
    )
    .await?;
    for p in &expired {
        tracing::info!(payment_id = %p.id, merchant_id = %p.merchant_id, "payment expired");
    }
    if !expired.is_empty() {
        global()
            .payments
            // The labels the payments' own final writes count under (no failure code).
            .get_or_create(&labels(&[("status", "expired"), ("failure_code", "")]))
            .inc_by(expired.len() as u64);
    }
    let keys = idempotency::purge_stale(&client, now, settings.batch_max).await?;
    let kept = chrono::Duration::seconds(
        i64::try_from(settings.login_failures_kept_s).unwrap_or(i64::MAX),
    );
    let failures = customers::purge_login_failures(&client, now - kept, settings.batch_max).await?;
    let batch = u64::try_from(settings.batch_max).unwrap_or(0);
    Ok(Batch {
        expired: expired.len(),
        full: [expired.len() as u64, keys, failures]
            .iter()
            .any(|&n| n >= batch),
    })
}

/// The running worker; `stop` ends it after the sweep in progress.
#[derive(Debug)]
pub struct ExpiryWorker {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ExpiryWorker {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the worker on the current tokio runtime.
pub fn spawn(
    pool: deadpool_postgres::Pool,
    clock: SharedClock,
    settings: ExpirySettings,
) -> ExpiryWorker {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let interval = Duration::from_millis(settings.interval_ms.max(1));
        loop {
            sweep(&pool, &clock, &settings).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopped.changed() => return,
            }
        }
    });
    ExpiryWorker { stop, task }
}

async fn sweep(pool: &deadpool_postgres::Pool, clock: &SharedClock, settings: &ExpirySettings) {
    for _ in 0..settings.batches_per_sweep_max {
        // Until a batch finds less than a whole batch of each (payments, keys, sign-ins): keys
        // alone may come faster than one batch a second.
        match run_batch(pool, clock, settings).await {
            Ok(Batch { full: false, .. }) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep failed; retrying next interval");
                return;
            }
        }
    }
}
