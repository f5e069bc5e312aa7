//! The SMS channel's rows in `customer_messages`. The text is never stored: it holds the code.
//!
//! A receipt may race the recording of its message id. Both sides are SQL functions (V60, V66;
//! ids in batches by V69; which row a receipt is for, V78 and V79) that take the same transaction
//! advisory lock on the id: whichever commits second sees the first.

pub use super::ids_in_writing::Ride;
use super::ids_in_writing::{IdsInWriting, Writing};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use payhub_actors::messages::NoticeKind;
use payhub_actors::store::StoreError;
use payhub_actors::store::group_commit::{Limits, RowWrite, Writer};
use payhub_actors::store::prepared::Prepared;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// How long a receipt waits for its message id to be recorded.
const EARLY_RECEIPT_KEEP_H: i64 = 24;

/// How many receipts wait for their message id, at most, once trimmed: the newest are kept.
/// The SMSC's window of submits races its receipts, so a few wait at any time; this many means a
/// peer sending receipts for ids payhub never recorded.
pub const EARLY_RECEIPTS_MAX: i64 = 4_096;
/// Receipts kept aside by this process between two trims (and a trim at each start, since a
/// process's count is lost with it). The table holds at most `EARLY_RECEIPTS_MAX` and this many
/// for each gateway writing to it, give or take the receipts kept while a trim runs. A trim walks
/// the kept receipts once per chunk and once more to find none left: about ten rows for each
/// receipt kept aside since the last, where a bound checked at each receipt walked the whole
/// table each time.
pub const EARLY_RECEIPTS_TRIM_EVERY: u64 = 1_024;
/// Receipts a trim drops per statement, so that it holds few row locks at once.
const EARLY_RECEIPTS_TRIM_CHUNK: i64 = 1_024;
/// Statements per trim at most; a table this far past its bound is trimmed over several trims.
const EARLY_RECEIPTS_TRIM_CHUNKS_MAX: usize = 256;

pub fn kind_name(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Code => "code",
        NoticeKind::Outcome => "outcome",
    }
}

/// Records a message about to be submitted; returns its row id.
pub async fn insert_queued(
    pool: &Pool,
    now: DateTime<Utc>,
    payment_id: &str,
    kind: NoticeKind,
    masked_destination: &str,
) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one_cached(
            "INSERT INTO customer_messages \
               (payment_id, kind, channel, destination, status, created_at, updated_at) \
             VALUES ($1, $2, 'sms', $3, 'queued', $4, $4) RETURNING id",
            &[&payment_id, &kind_name(kind), &masked_destination, &now],
        )
        .await?;
    Ok(row.get(0))
}

pub use payhub_actors::store::messages::mark_failed;

/// The SMS channel's two hot writes, group-committed (`group_commit`): the SMSC's message id
/// on a row after `submit_sm_resp`, and delivery receipts. Each is a call of its V60 function;
/// a batch is one statement calling it once per write.
#[derive(Debug, Clone)]
pub struct SmppWrites {
    sent: Writer<Sent, ()>,
    receipts: Writer<Receipt, bool>,
    /// A receipt rides with or waits for its id's `sent` write, when one runs.
    ids_in_writing: Arc<IdsInWriting>,
    receipts_carried: Arc<AtomicU64>,
    receipts_kept_aside: Arc<AtomicU64>,
    /// Trims of the receipts kept aside: at most one runs and one waits to run after it (a trim
    /// asked for meanwhile is the waiting one's).
    trims_admitted: Arc<Semaphore>,
    trim_running: Arc<tokio::sync::Mutex<()>>,
    pool: Pool,
}

/// Bounds of each writer: a session's window of submits and its receipts fit in one batch; one
/// batch in flight, as for the payment writer (`PAYMENT_WRITE_LIMITS`). A batch lingers 10 ms for
/// more: at low load each id and each receipt would otherwise cost a commit of its own, and an
/// SMSC that sends a receipt right after its `submit_sm_resp` finds the id's write still open,
/// so the receipt rides with it. Nobody waits on a receipt's write but the SMSC; a code's id
/// delays the login's answer by at most that much.
pub const SMPP_WRITE_LIMITS: Limits = Limits {
    batch_max: 64,
    in_flight_max: 1,
    queue_max: 4_096,
    linger_ms: 10,
    answer_wait_max_ms: 10_000,
};

impl SmppWrites {
    pub fn start(pool: Pool) -> Self {
        let writes = Self {
            sent: Writer::start_rows(pool.clone(), SMPP_WRITE_LIMITS),
            receipts: Writer::start_rows(pool.clone(), SMPP_WRITE_LIMITS),
            ids_in_writing: Arc::default(),
            receipts_carried: Arc::default(),
            receipts_kept_aside: Arc::default(),
            trims_admitted: Arc::new(Semaphore::new(2)),
            trim_running: Arc::default(),
            pool,
        };
        writes.trim_in_background();
        writes
    }

    /// The SMSC accepted the message on row `id` as `message_ref`; applies a receipt that came
    /// first, or one that rode with this write (`smpp_mark_sent`).
    ///
    /// The write goes on when its caller stops waiting (its own bound, a slow database): the
    /// message went, and a row left `queued` would be offered again at the next start, and its
    /// receipt lost. The writer drops a write nobody waits for, so it is waited for here.
    pub async fn mark_sent(
        &self,
        now: DateTime<Utc>,
        id: i64,
        message_ref: &str,
    ) -> Result<(), StoreError> {
        // Begun before this returns, so that a receipt right behind its submit_sm_resp rides.
        let writing = self.ids_in_writing.begin(message_ref);
        let write = Sent {
            id,
            message_ref: message_ref.to_owned(),
            at: now,
            seat: writing.as_ref().map(|guard| guard.writing()),
        };
        let sent = self.sent.clone();
        let written = tokio::spawn(async move {
            let written = sent.ask(write).await;
            if let (Ok(()), Some(guard)) = (&written, writing) {
                guard.recorded();
            }
            written
        });
        written
            .await
            .map_err(|e| StoreError::Pool(format!("the message id's write stopped: {e}")))?
    }

    /// Keeps a receipt's state on its message row, or aside until the row has the id
    /// (`smpp_record_receipt`). While its id's `sent` write runs, the receipt rides with it or
    /// waits for it. Returns whether a row carried the id already.
    pub async fn record_receipt(
        &self,
        now: DateTime<Utc>,
        message_ref: &str,
        stat: &str,
    ) -> Result<bool, StoreError> {
        if self.ride(message_ref, stat).await == Ride::Recorded {
            return Ok(true);
        }
        self.write_receipt(now, message_ref, stat).await
    }

    /// Offers a receipt to its id's `sent` write, when one runs: `Recorded` once that write has
    /// committed with it; otherwise the receipt is the caller's to write, after that write.
    pub async fn ride(&self, message_ref: &str, stat: &str) -> Ride {
        let ride = self.ids_in_writing.ride_or_wait(message_ref, stat).await;
        if ride == Ride::Recorded {
            self.receipts_carried.fetch_add(1, Ordering::Relaxed);
        }
        ride
    }

    /// Writes a receipt on its own (`smpp_record_receipt`): on its row, or aside until the row
    /// has the id. Returns whether a row carried the id already.
    pub async fn write_receipt(
        &self,
        now: DateTime<Utc>,
        message_ref: &str,
        stat: &str,
    ) -> Result<bool, StoreError> {
        let write = Receipt {
            message_ref: message_ref.to_owned(),
            stat: stat.to_owned(),
            at: now,
        };
        let on_its_row = self.receipts.ask(write).await?;
        if !on_its_row {
            self.kept_aside();
        }
        Ok(on_its_row)
    }

    /// Receipts recorded by their id's write so far.
    pub fn receipts_carried(&self) -> u64 {
        self.receipts_carried.load(Ordering::Relaxed)
    }

    /// Counts a receipt kept aside; every `EARLY_RECEIPTS_TRIM_EVERY` of them, trims.
    fn kept_aside(&self) {
        let kept = self.receipts_kept_aside.fetch_add(1, Ordering::Relaxed) + 1;
        if kept.is_multiple_of(EARLY_RECEIPTS_TRIM_EVERY) {
            self.trim_in_background();
        }
    }

    /// Drops all but the newest `EARLY_RECEIPTS_MAX` receipts kept aside, on a task of its own:
    /// no SMSC answer waits for it. A receipt that really races its id's write waits there for
    /// milliseconds, so the newest are the ones worth keeping.
    fn trim_in_background(&self) {
        let Ok(admitted) = self.trims_admitted.clone().try_acquire_owned() else {
            return;
        };
        let (pool, running) = (self.pool.clone(), self.trim_running.clone());
        tokio::spawn(async move {
            let _running = running.lock().await;
            let _admitted = admitted;
            match trim_early_receipts(&pool).await {
                Ok(0) => {}
                Ok(dropped) => tracing::warn!(
                    dropped,
                    "delivery receipts for unknown message ids past the bound were dropped"
                ),
                Err(e) => tracing::warn!(error = %e, "receipts kept aside not trimmed"),
            }
        });
    }
}

/// Drops all but the newest `EARLY_RECEIPTS_MAX` receipts kept aside, a chunk at a time;
/// returns how many went.
async fn trim_early_receipts(pool: &Pool) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    let mut dropped = 0;
    for _ in 0..EARLY_RECEIPTS_TRIM_CHUNKS_MAX {
        let chunk = client
            .execute_cached(
                "DELETE FROM smpp_early_receipts WHERE message_ref IN (
                     SELECT message_ref FROM smpp_early_receipts
                     ORDER BY received_at DESC OFFSET $1 LIMIT $2)",
                &[&EARLY_RECEIPTS_MAX, &EARLY_RECEIPTS_TRIM_CHUNK],
            )
            .await?;
        dropped += chunk;
        if chunk < EARLY_RECEIPTS_TRIM_CHUNK.unsigned_abs() {
            break;
        }
    }
    Ok(dropped)
}

struct Sent {
    id: i64,
    message_ref: String,
    at: DateTime<Utc>,
    /// Where a receipt that comes meanwhile boards (none when the id is not tracked).
    seat: Option<Arc<Writing>>,
}

impl Sent {
    /// The stat of the receipt riding with this write; none boards once this is read.
    fn receipt_stat(&self) -> Option<String> {
        self.seat.as_ref()?.take_receipt()
    }
}

impl RowWrite for Sent {
    type Answer = ();

    // By message id: the advisory lock both functions take is on it.
    fn row_key(&self) -> &str {
        &self.message_ref
    }

    fn not_moved() {}

    async fn write_alone(&self, client: &Object) -> Result<(), StoreError> {
        Self::write_together(client, &[self]).await.map(drop)
    }

    /// One statement for the whole batch (`smpp_mark_sent_batch`, V69).
    async fn write_together(
        client: &Object,
        batch: &[&Self],
    ) -> Result<HashMap<String, ()>, StoreError> {
        let ids: Vec<i64> = batch.iter().map(|w| w.id).collect();
        let refs: Vec<&str> = batch.iter().map(|w| w.message_ref.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|w| w.at).collect();
        let stats: Vec<Option<String>> = batch.iter().map(|w| w.receipt_stat()).collect();
        client
            .execute_cached(
                "SELECT smpp_mark_sent_batch($1, $2, $3, $4)",
                &[&ids, &refs, &ats, &stats],
            )
            .await?;
        Ok(refs.iter().map(|r| ((*r).to_owned(), ())).collect())
    }
}

struct Receipt {
    message_ref: String,
    stat: String,
    at: DateTime<Utc>,
}

impl Receipt {
    /// Receipts for ids payhub never recorded (another ESME on the account, a lost row) are
    /// kept a day, not forever (and not more than about `EARLY_RECEIPTS_MAX`).
    fn keep_since(&self) -> DateTime<Utc> {
        self.at - chrono::Duration::hours(EARLY_RECEIPT_KEEP_H)
    }
}

impl RowWrite for Receipt {
    type Answer = bool;

    fn row_key(&self) -> &str {
        &self.message_ref
    }

    fn not_moved() -> bool {
        false
    }

    async fn write_alone(&self, client: &Object) -> Result<bool, StoreError> {
        let row = client
            .query_one_cached(
                "SELECT smpp_record_receipt($1, $2, $3, $4)",
                &[&self.message_ref, &self.stat, &self.at, &self.keep_since()],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn write_together(
        client: &Object,
        batch: &[&Self],
    ) -> Result<HashMap<String, bool>, StoreError> {
        let refs: Vec<&str> = batch.iter().map(|w| w.message_ref.as_str()).collect();
        let stats: Vec<&str> = batch.iter().map(|w| w.stat.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|w| w.at).collect();
        let keeps: Vec<DateTime<Utc>> = batch.iter().map(|w| w.keep_since()).collect();
        let rows = client
            .query_cached(
                "SELECT t.ref, smpp_record_receipt(t.ref, t.stat, t.at, t.keep)
                 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
                     AS t(ref, stat, at, keep)",
                &[&refs, &stats, &ats, &keeps],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
