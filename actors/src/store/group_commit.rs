//! Group commit: one writer task per kind of write, fed by a bounded queue. The writes that queue
//! while earlier batches are being written go together, as one statement and one durable
//! commit. Each write still gets its own answer, only after its commit.
//!
//! PostgreSQL's cost of a small write is mostly per statement: executor start, the table's CHECK
//! constraints parsed again, the commit and its WAL flush. A batch pays those once. The writers
//! here decide what a batch statement looks like and how a write it could not take is written
//! alone; this module only gathers the batches and bounds them.

use crate::store::StoreError;
use deadpool_postgres::{Object, Pool};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The bounds of one writer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most writes in one batch statement.
    pub batch_max: usize,
    /// Most batches being written at once (each holds a pooled connection). Two: one commits
    /// while the next fills; more make smaller batches.
    pub in_flight_max: usize,
    /// Most writes waiting for a batch; a sender past it waits for room.
    pub queue_max: usize,
    /// How long a batch waits for more writes after its first, unless it is full. Zero for a
    /// write someone waits on (it then takes only what queued meanwhile); a write nobody is
    /// waiting for, at low load, would otherwise cost a commit of its own.
    pub linger_ms: u64,
    /// Longest a write waits for its answer (queue, batch, commit) before it is told the
    /// database is unavailable. Whether it was stored is then unknown, as after any lost reply.
    pub answer_wait_max_ms: u64,
}

/// A write waiting in the queue: what to write, and where its answer goes.
pub struct Job<W, A> {
    pub write: W,
    pub answer: oneshot::Sender<Result<A, StoreError>>,
}

impl<W, A> Job<W, A> {
    pub fn reply(self, answer: Result<A, StoreError>) {
        // The asker may have given up waiting; its answer is then nobody's.
        let _ = self.answer.send(answer);
    }
}

/// The handle that askers hold; cloning shares the one writer.
pub struct Writer<W, A> {
    queue: mpsc::Sender<Job<W, A>>,
    limits: Limits,
}

impl<W, A> Clone for Writer<W, A> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            limits: self.limits,
        }
    }
}

impl<W, A> std::fmt::Debug for Writer<W, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("limits", &self.limits)
            .finish()
    }
}

impl<W: Send + 'static, A: Send + 'static> Writer<W, A> {
    /// Starts the writer on the current tokio runtime; `write_batch` writes one batch and
    /// answers every job in it. The writer stops when every handle is dropped.
    pub fn start<F, Fut>(pool: Pool, limits: Limits, write_batch: F) -> Self
    where
        F: Fn(Pool, Vec<Job<W, A>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        assert!(limits.batch_max >= 1 && limits.in_flight_max >= 1 && limits.queue_max >= 1);
        let (queue, receiver) = mpsc::channel(limits.queue_max);
        tokio::spawn(gather(pool, limits, receiver, write_batch));
        Self { queue, limits }
    }

    /// Queues `write` and waits for its answer, at most `answer_wait_max_ms`.
    pub async fn ask(&self, write: W) -> Result<A, StoreError> {
        let (answer, answered) = oneshot::channel();
        let asked = async {
            self.queue
                .send(Job { write, answer })
                .await
                .map_err(|_| StoreError::Pool("the database writer has stopped".into()))?;
            answered
                .await
                .map_err(|_| StoreError::Pool("the database writer dropped a write".into()))?
        };
        let wait_ms = self.limits.answer_wait_max_ms;
        tokio::time::timeout(Duration::from_millis(wait_ms), asked)
            .await
            .map_err(|_| StoreError::Pool(format!("no answer from the database in {wait_ms} ms")))?
    }
}

/// Takes the jobs that queued while the previous batches were written, up to `batch_max`, and
/// hands them to `write_batch` once a batch slot is free.
async fn gather<W, A, F, Fut>(
    pool: Pool,
    limits: Limits,
    mut receiver: mpsc::Receiver<Job<W, A>>,
    write_batch: F,
) where
    W: Send + 'static,
    A: Send + 'static,
    F: Fn(Pool, Vec<Job<W, A>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(limits.in_flight_max));
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut batch = fill(first, &mut receiver, &limits).await;
        // A write whose asker stopped waiting was answered "unavailable, outcome unknown": it is
        // not made late, behind the asker's back.
        batch.retain(|job| !job.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let batch_written = write_batch(pool.clone(), batch);
        tokio::spawn(async move {
            batch_written.await;
            drop(permit);
        });
    }
}

/// `first` and the jobs queued behind it, up to `batch_max`; waiting up to `linger_ms` for more.
async fn fill<W, A>(
    first: Job<W, A>,
    receiver: &mut mpsc::Receiver<Job<W, A>>,
    limits: &Limits,
) -> Vec<Job<W, A>> {
    let lingered = tokio::time::Instant::now() + Duration::from_millis(limits.linger_ms);
    let mut batch = vec![first];
    while batch.len() < limits.batch_max {
        let next = match receiver.try_recv() {
            Ok(job) => Some(job),
            Err(_) if limits.linger_ms == 0 => None,
            Err(_) => tokio::time::timeout_at(lingered, receiver.recv())
                .await
                .ok()
                .flatten(),
        };
        match next {
            Some(job) => batch.push(job),
            None => break,
        }
    }
    batch
}

/// A write to one row (one payment, one message) that can be made alone or with others of its
/// kind in one statement.
pub trait RowWrite: Sized + Send + Sync + 'static {
    type Answer: Send + 'static;
    /// The row written; a batch never holds two writes to one row.
    fn row_key(&self) -> &str;
    /// The answer for a write the batch statement did not apply (its row's guard failed).
    fn not_moved() -> Self::Answer;
    fn write_alone(
        &self,
        client: &Object,
    ) -> impl Future<Output = Result<Self::Answer, StoreError>> + Send;
    /// One statement for all of `batch` (distinct rows, in key order); the answers by row key.
    fn write_together(
        client: &Object,
        batch: &[&Self],
    ) -> impl Future<Output = Result<HashMap<String, Self::Answer>, StoreError>> + Send;
}

impl<W: RowWrite> Writer<W, W::Answer> {
    /// A writer of [`RowWrite`]s.
    pub fn start_rows(pool: Pool, limits: Limits) -> Self {
        Writer::start(pool, limits, write_rows::<W>)
    }
}

/// One batch of row writes: in key order, so concurrent batches take row locks in one order;
/// a second write to a row waits for the batch and goes alone, as does every write of a batch
/// statement that failed as a whole (it wrote nothing).
async fn write_rows<W: RowWrite>(pool: Pool, mut batch: Vec<Job<W, W::Answer>>) {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => return refuse_all(batch, &e),
    };
    batch.sort_by(|a, b| a.write.row_key().cmp(b.write.row_key()));
    let mut seen = HashSet::new();
    let (together, mut alone): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|job| seen.insert(job.write.row_key().to_owned()));
    if together.len() > 1 {
        let writes: Vec<&W> = together.iter().map(|job| &job.write).collect();
        match W::write_together(&client, &writes).await {
            Ok(mut answers) => {
                for job in together {
                    let answer = answers
                        .remove(job.write.row_key())
                        .unwrap_or_else(W::not_moved);
                    job.reply(Ok(answer));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, size = together.len(), "batch refused; writing each alone");
                alone.splice(0..0, together);
            }
        }
    } else {
        alone.splice(0..0, together);
    }
    for job in alone {
        let answer = job.write.write_alone(&client).await;
        job.reply(answer);
    }
}

/// Every job of `batch` gets the pool's error (no connection for the batch).
pub fn refuse_all<W, A>(batch: Vec<Job<W, A>>, error: &deadpool_postgres::PoolError) {
    let message = error.to_string();
    for job in batch {
        job.reply(Err(StoreError::Pool(message.clone())));
    }
}
