//! A webhook attempt and its event's new state, written in one statement and group-committed
//! with the other attempts that finish meanwhile (`group_commit`). A delivered event stays
//! delivered: an attempt recorded after the delivery (a duplicate, sent once the event's lease
//! ran out) is kept with the others, and changes nothing on the event.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use payhub_actors::store::StoreError;
use payhub_actors::store::group_commit::{Limits, RowWrite, Writer};
use payhub_actors::store::prepared::Prepared;
use std::collections::HashMap;

/// Bounds of the attempt writer: a worker's deliveries in flight fit in one batch; one batch in
/// flight, as for the payment writer (`PAYMENT_WRITE_LIMITS`). No lingering: each delivery slot
/// waits on its attempt's write, so a 10 ms linger made every slot wait at least that long per
/// delivery (with the default 32 slots, webhooks drained about a second later in the benchmark).
pub const ATTEMPT_WRITE_LIMITS: Limits = Limits {
    batch_max: 64,
    in_flight_max: 1,
    queue_max: 1_024,
    linger_ms: 0,
    answer_wait_max_ms: 10_000,
};

pub type AttemptWriter = Writer<Attempt, ()>;

pub fn start(pool: Pool) -> AttemptWriter {
    Writer::start_rows(pool, ATTEMPT_WRITE_LIMITS)
}

/// One delivery attempt of event `event_id`, and what the event becomes.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    /// The event's attempts so far, this one included.
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub given_up_at: Option<DateTime<Utc>>,
}

impl RowWrite for Attempt {
    type Answer = ();

    fn row_key(&self) -> &str {
        &self.event_id
    }

    fn not_moved() {}

    async fn write_alone(&self, client: &Object) -> Result<(), StoreError> {
        client
            .execute_cached(
                "WITH attempt AS (
                     INSERT INTO webhook_attempts
                         (event_id, attempted_at, status_code, error, duration_ms)
                     VALUES ($1, $6, $7, $8, $9))
                 UPDATE webhook_events SET attempts = $2, next_attempt_at = $3,
                     delivered_at = $4, given_up_at = $5
                 WHERE id = $1 AND delivered_at IS NULL",
                &[
                    &self.event_id,
                    &self.attempts,
                    &self.next_attempt_at,
                    &self.delivered_at,
                    &self.given_up_at,
                    &self.at,
                    &self.status_code,
                    &self.error,
                    &self.duration_ms,
                ],
            )
            .await?;
        Ok(())
    }

    async fn write_together(
        client: &Object,
        batch: &[&Self],
    ) -> Result<HashMap<String, ()>, StoreError> {
        let ids: Vec<&str> = batch.iter().map(|a| a.event_id.as_str()).collect();
        let attempts: Vec<i32> = batch.iter().map(|a| a.attempts).collect();
        let next: Vec<DateTime<Utc>> = batch.iter().map(|a| a.next_attempt_at).collect();
        let delivered: Vec<Option<DateTime<Utc>>> = batch.iter().map(|a| a.delivered_at).collect();
        let given_up: Vec<Option<DateTime<Utc>>> = batch.iter().map(|a| a.given_up_at).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|a| a.at).collect();
        let codes: Vec<Option<i32>> = batch.iter().map(|a| a.status_code).collect();
        let errors: Vec<Option<&str>> = batch.iter().map(|a| a.error.as_deref()).collect();
        let durations: Vec<i32> = batch.iter().map(|a| a.duration_ms).collect();
        client
            .execute_cached(
                "WITH input AS (
                     SELECT * FROM unnest($1::text[], $2::int4[], $3::timestamptz[],
                         $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], $7::int4[],
                         $8::text[], $9::int4[])
                     AS t(id, attempts, next_at, delivered_at, given_up_at, at, status_code,
                         error, duration_ms)),
                 attempt AS (
                     INSERT INTO webhook_attempts
                         (event_id, attempted_at, status_code, error, duration_ms)
                     SELECT id, at, status_code, error, duration_ms FROM input)
                 UPDATE webhook_events e SET attempts = i.attempts, next_attempt_at = i.next_at,
                     delivered_at = i.delivered_at, given_up_at = i.given_up_at
                 FROM input i WHERE e.id = i.id AND e.delivered_at IS NULL",
                &[
                    &ids, &attempts, &next, &delivered, &given_up, &ats, &codes, &errors,
                    &durations,
                ],
            )
            .await?;
        Ok(ids.iter().map(|id| ((*id).to_owned(), ())).collect())
    }
}
