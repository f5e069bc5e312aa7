//! Group commit for payment creates: the merchant API's hot path (issue 2: 5,000 creates/s with
//! durable commits).
//!
//! Creates that arrive while earlier ones are being written go together, as one statement: one
//! atomic transaction, one commit for all of them (`group_commit`).
//!
//! The batch statement handles only the plain case: a new key (or none) and a new order id. Any
//! create it does not insert goes through [`payments::create`] one at a time, which gives the
//! exact answers (a replay, `KeyReused`, `OrderExists`, a stale key). That covers:
//! - a key already stored: the batch skips that payment (`ON CONFLICT DO NOTHING`);
//! - a second create in the same batch with the same key or order id: held back before the batch;
//! - an order id already stored, a deadlock, any error: the batch statement fails as a whole and
//!   writes nothing, and each of its creates is retried alone.

use crate::store::StoreError;
use crate::store::group_commit::{Job, Limits, Writer, refuse_all};
use crate::store::payments::{self, CreateOutcome, KeyedRequest, NewPayment};
use crate::store::prepared::Prepared;
use deadpool_postgres::{Object, Pool};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The create writer's bounds. Two batches in flight: with four, batches were smaller and
/// PostgreSQL's CPU per create rose by 40% (benches/api_create).
pub const CREATE_LIMITS: Limits = Limits {
    batch_max: 64,
    in_flight_max: 2,
    queue_max: 1_024,
    linger_ms: 0,
    answer_wait_max_ms: 10_000,
};

/// One create: the payment, its key, and the 201 body a replay repeats.
pub struct Create {
    pub new: NewPayment,
    pub keyed: Option<KeyedRequest>,
    pub body: String,
}

type Pending = Job<Create, CreateOutcome>;

/// The handle request handlers use. Cloning shares the one writer.
#[derive(Debug, Clone)]
pub struct CreateBatcher {
    writer: Writer<Create, CreateOutcome>,
    counts: Arc<BatchCounts>,
}

/// What the writer has done so far, for benchmarks and tests.
#[derive(Debug, Default)]
pub struct BatchCounts {
    /// Batch statements that committed.
    pub batches: AtomicU64,
    /// Creates those statements inserted.
    pub created_in_batches: AtomicU64,
    /// Batch statements that failed as a whole (their creates were then written alone).
    pub batches_refused: AtomicU64,
    /// Creates written one at a time (alone in their turn, repeats, skipped or refused).
    pub written_alone: AtomicU64,
}

impl CreateBatcher {
    /// Starts the writer on the current tokio runtime. It stops when every handle is dropped.
    pub fn start(pool: Pool) -> Self {
        let counts = Arc::new(BatchCounts::default());
        let batch_counts = Arc::clone(&counts);
        let writer = Writer::start(pool, CREATE_LIMITS, move |pool, batch| {
            let counts = Arc::clone(&batch_counts);
            async move { write_batch(&pool, batch, &counts).await }
        });
        Self { writer, counts }
    }

    pub fn counts(&self) -> &BatchCounts {
        &self.counts
    }

    /// Stores `new` (with its key record when `keyed`) like [`payments::create`], in a batch.
    pub async fn create(
        &self,
        new: NewPayment,
        keyed: Option<KeyedRequest>,
        body: String,
    ) -> Result<CreateOutcome, StoreError> {
        self.writer.ask(Create { new, keyed, body }).await
    }
}

async fn write_batch(pool: &Pool, batch: Vec<Pending>, counts: &BatchCounts) {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => return refuse_all(batch, &e),
    };
    let (mut together, repeats) = split_repeats(batch);
    // Written alone afterwards, in arrival order: a repeat after the create it repeats.
    let mut alone = if together.len() > 1 {
        match insert_together(&client, &mut together).await {
            Ok(inserted) => {
                let (created, skipped): (Vec<_>, Vec<_>) = together
                    .into_iter()
                    .partition(|p| inserted.contains(&p.write.new.id));
                counts.batches.fetch_add(1, Ordering::Relaxed);
                let created_count = u64::try_from(created.len()).unwrap_or(u64::MAX);
                counts
                    .created_in_batches
                    .fetch_add(created_count, Ordering::Relaxed);
                for pending in created {
                    pending.reply(Ok(CreateOutcome::Created));
                }
                skipped
            }
            Err(e) => {
                counts.batches_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, size = together.len(), "create batch refused; writing each alone");
                together
            }
        }
    } else {
        together
    };
    alone.extend(repeats);
    let alone_count = u64::try_from(alone.len()).unwrap_or(u64::MAX);
    counts
        .written_alone
        .fetch_add(alone_count, Ordering::Relaxed);
    write_alone(&client, alone).await;
}

/// Splits off the creates that repeat an earlier one's key or order id in the same batch: one
/// statement must not decide two creates that depend on each other.
fn split_repeats(batch: Vec<Pending>) -> (Vec<Pending>, Vec<Pending>) {
    let mut keys = HashSet::new();
    let mut orders = HashSet::new();
    batch.into_iter().partition(|job| {
        let p = &job.write;
        let merchant = &p.new.merchant_id;
        let key_is_new = match &p.keyed {
            Some(k) => keys.insert((merchant.clone(), k.key.as_str().to_owned())),
            None => true,
        };
        let order_is_new = orders.insert((merchant.clone(), p.new.order_id.as_str().to_owned()));
        key_is_new && order_is_new
    })
}

/// Each create alone, pipelined on one connection; they are independent statements.
async fn write_alone(client: &Object, alone: Vec<Pending>) {
    let outcomes = alone
        .iter()
        .map(|job| &job.write)
        .map(|p| payments::create(client, &p.new, p.keyed.as_ref(), &p.body));
    let outcomes = futures::future::join_all(outcomes).await;
    for (pending, outcome) in alone.into_iter().zip(outcomes) {
        pending.reply(outcome);
    }
}

/// Key rows first, then the payments whose key row is new (or that have no key), in one
/// statement. Rows go in (merchant, key) order so two concurrent batches lock keys in the same
/// order. Returns the ids of the payments inserted.
const INSERT_BATCH_SQL: &str = "WITH input AS ( \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], \
             $11::text[], $12::bytea[], $13::text[]) \
         AS t(id, merchant_id, order_id, amount_minor, currency, description, return_url, \
             notify_url, created_at, expires_at, key, request_hash, body)), \
     key_rows AS ( \
         INSERT INTO idempotency_keys (merchant_id, key, request_hash, response_status, \
             response_body, created_at) \
         SELECT merchant_id, key, request_hash, 201, body, created_at FROM input \
         WHERE key IS NOT NULL \
         ON CONFLICT (merchant_id, key) DO NOTHING RETURNING merchant_id, key) \
     INSERT INTO payments (id, merchant_id, order_id, amount_minor, currency, description, \
         return_url, notify_url, status, created_at, expires_at, updated_at) \
     SELECT id, merchant_id, order_id, amount_minor, currency, description, return_url, \
         notify_url, 'awaiting_customer', created_at, expires_at, created_at FROM input i \
     WHERE i.key IS NULL OR EXISTS (SELECT 1 FROM key_rows k \
         WHERE k.merchant_id = i.merchant_id AND k.key = i.key) \
     RETURNING id";

async fn insert_together(
    client: &Object,
    together: &mut [Pending],
) -> Result<HashSet<String>, StoreError> {
    together.sort_by(|a, b| lock_order(a).cmp(&lock_order(b)));
    let columns = Columns::of(together);
    let rows = client
        .query_cached(INSERT_BATCH_SQL, &columns.params())
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

fn lock_order(job: &Pending) -> (&str, Option<&str>) {
    let p = &job.write;
    (
        p.new.merchant_id.as_str(),
        p.keyed.as_ref().map(|k| k.key.as_str()),
    )
}

/// The batch as the statement's thirteen arrays, one element per create.
struct Columns<'a> {
    id: Vec<&'a str>,
    merchant_id: Vec<&'a str>,
    order_id: Vec<&'a str>,
    amount_minor: Vec<i64>,
    currency: Vec<&'static str>,
    description: Vec<&'a str>,
    return_url: Vec<&'a str>,
    notify_url: Vec<&'a str>,
    created_at: Vec<chrono::DateTime<chrono::Utc>>,
    expires_at: Vec<chrono::DateTime<chrono::Utc>>,
    key: Vec<Option<&'a str>>,
    request_hash: Vec<Option<&'a [u8]>>,
    body: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a [Pending]) -> Self {
        let batch: Vec<&Create> = batch.iter().map(|job| &job.write).collect();
        Self {
            id: batch.iter().map(|p| p.new.id.as_str()).collect(),
            merchant_id: batch.iter().map(|p| p.new.merchant_id.as_str()).collect(),
            order_id: batch.iter().map(|p| p.new.order_id.as_str()).collect(),
            amount_minor: batch.iter().map(|p| p.new.amount.minor()).collect(),
            currency: batch.iter().map(|p| p.new.currency.alpha()).collect(),
            description: batch.iter().map(|p| p.new.description.as_str()).collect(),
            return_url: batch.iter().map(|p| p.new.return_url.as_str()).collect(),
            notify_url: batch.iter().map(|p| p.new.notify_url.as_str()).collect(),
            created_at: batch.iter().map(|p| p.new.created_at).collect(),
            expires_at: batch.iter().map(|p| p.new.expires_at).collect(),
            key: batch
                .iter()
                .map(|p| p.keyed.as_ref().map(|k| k.key.as_str()))
                .collect(),
            request_hash: batch
                .iter()
                .map(|p| p.keyed.as_ref().map(|k| &k.request_hash[..]))
                .collect(),
            body: batch.iter().map(|p| p.body.as_str()).collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 13] {
        [
            &self.id,
            &self.merchant_id,
            &self.order_id,
            &self.amount_minor,
            &self.currency,
            &self.description,
            &self.return_url,
            &self.notify_url,
            &self.created_at,
            &self.expires_at,
            &self.key,
            &self.request_hash,
            &self.body,
        ]
    }
}
