//! Group commit for the payment actors' two hot writes: `processing` before the 0200 leaves, and
//! the final status with its event, audit line and outcome notice row. The writes of many
//! payments that queue meanwhile go as one statement and one durable commit
//! (`store::group_commit`); each actor still waits for its own answer, after the commit, before
//! anything leaves the process.
//!
//! A batch is decided row by row by the same guard as the single statement (`status = ...`): a
//! payment the batch does not move was not in the expected status, which is that payment's
//! answer ([`RowWrite`] has the rest: one order of row locks, a refused batch written alone).

use super::event::Finish;
use super::outbox::WebhookEvent;
use crate::bank::OriginalDebit;
use crate::domain::PaymentStatus;
use crate::secret::Secret;
use crate::store::StoreError;
use crate::store::group_commit::{Limits, RowWrite, Writer};
use crate::store::prepared::Prepared;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Object, Pool};
use serde_json::Value;
use std::collections::HashMap;

/// Bounds of each of the two writers. One batch in flight: the next fills while it commits. With
/// two, as for creates, the debit path's batches held about 11 rows instead of 15 to 17, and
/// PostgreSQL spent more on commits (BENCHMARKS.md, 29 Nov). The SMPP and webhook attempt writers
/// do the same.
pub const PAYMENT_WRITE_LIMITS: Limits = Limits {
    batch_max: 64,
    in_flight_max: 1,
    queue_max: 4_096,
    linger_ms: 0,
    answer_wait_max_ms: 10_000,
};

/// The payment moves from `awaiting_code` to `processing` with its debit's RRN and wire identity.
#[derive(Debug, Clone)]
pub struct ToProcessing {
    pub payment_id: String,
    pub rrn: String,
    pub original: OriginalDebit,
    pub at: DateTime<Utc>,
}

/// The payment moves from one of `from` to its final status, with its webhook event, audit line
/// and, when `outcome_notice` is set, its outcome notice's `queued` row.
#[derive(Debug, Clone)]
pub struct ToFinal {
    pub payment_id: String,
    pub at: DateTime<Utc>,
    pub status: &'static str,
    pub failure_code: Option<&'static str>,
    pub bank_response_code: Option<String>,
    pub approval_code: Option<String>,
    pub from: Vec<&'static str>,
    pub event_id: String,
    pub event_type: &'static str,
    /// The webhook event's JSON.
    pub body: String,
    /// The audit line's detail.
    pub detail: Value,
    pub outcome_notice: Option<NoticeTo>,
    /// The event's first `next_attempt_at`: `at`, or later when it is handed to this process's
    /// worker in memory (`outbox`), which holds it until then.
    pub event_due_at: DateTime<Utc>,
}

/// Where the customer's outcome notice goes, as its `customer_messages` row names it: channel
/// `sms` and the masked number, or `terminal` and the terminal's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeTo {
    pub channel: &'static str,
    pub destination: String,
}

/// The handle every payment actor shares.
#[derive(Debug, Clone)]
pub struct PaymentWriter {
    processing: Writer<ToProcessing, bool>,
    finals: Writer<ToFinal, Finish>,
}

impl PaymentWriter {
    /// Starts both writers on the current tokio runtime.
    pub fn start(pool: Pool) -> Self {
        Self {
            processing: Writer::start_rows(pool.clone(), PAYMENT_WRITE_LIMITS),
            finals: Writer::start_rows(pool, PAYMENT_WRITE_LIMITS),
        }
    }

    /// `false` when the payment was no longer awaiting its code: nothing was written.
    pub async fn to_processing(&self, write: ToProcessing) -> Result<bool, StoreError> {
        self.processing.ask(write).await
    }

    pub async fn to_final(&self, write: ToFinal) -> Result<Finish, StoreError> {
        self.finals.ask(write).await
    }
}

const PROCESSING_SQL: &str = "WITH moved AS (
        UPDATE payments SET status = 'processing', rrn = $2, code_hash = NULL,
            code_expires_at = NULL, debit_sent_at = $3, updated_at = $3,
            bank_link = $4, debit_stan = $5, debit_f7 = $6, debit_link_addr = $7,
            debit_acquirer_id = $8
        WHERE id = $1 AND status = 'awaiting_code' RETURNING id),
    audit AS (
        INSERT INTO audit_log (at, payment_id, event, detail)
        SELECT $3, id, 'debit_sent', jsonb_build_object('rrn', $2::text) FROM moved)
    SELECT id FROM moved";

/// `PROCESSING_SQL` for many payments: the same columns as arrays, one element per payment. The
/// expected status travels per row (`from_status`, always `awaiting_code`) so that, as in
/// `FINAL_BATCH_SQL`, the guard cannot match a partial index's predicate: with statistics a
/// little stale, the planner otherwise read every payment in flight through `payments_in_flight`
/// for each batch, instead of one primary-key lookup per row.
const PROCESSING_BATCH_SQL: &str = "WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
            $6::text[], $7::text[], $8::text[], $9::text[]) AS t(id, rrn, at, link, stan, f7,
            from_status, link_addr, acquirer_id)),
    moved AS (
        UPDATE payments p SET status = 'processing', rrn = i.rrn, code_hash = NULL,
            code_expires_at = NULL, debit_sent_at = i.at, updated_at = i.at,
            bank_link = i.link, debit_stan = i.stan, debit_f7 = i.f7, debit_link_addr = i.link_addr,
            debit_acquirer_id = i.acquirer_id
        FROM input i WHERE p.id = i.id AND p.status = i.from_status
        RETURNING p.id, i.rrn, i.at),
    audit AS (
        INSERT INTO audit_log (at, payment_id, event, detail)
        SELECT at, id, 'debit_sent', jsonb_build_object('rrn', rrn) FROM moved)
    SELECT id FROM moved";

impl ToProcessing {
    /// The single statement, on any client (also inside a transaction).
    pub async fn write(&self, client: &impl GenericClient) -> Result<bool, StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &self.payment_id,
            &self.rrn,
            &self.at,
            &self.original.link,
            &self.original.stan,
            &self.original.transmission_time,
            &self.original.link_addr,
            &self.original.acquirer_id,
        ];
        Ok(client.execute_cached(PROCESSING_SQL, &params).await? == 1)
    }
}

impl RowWrite for ToProcessing {
    type Answer = bool;

    fn row_key(&self) -> &str {
        &self.payment_id
    }

    fn not_moved() -> bool {
        false
    }

    async fn write_alone(&self, client: &Object) -> Result<bool, StoreError> {
        self.write(client).await
    }

    async fn write_together(
        client: &Object,
        batch: &[&Self],
    ) -> Result<HashMap<String, bool>, StoreError> {
        let ids: Vec<&str> = batch.iter().map(|w| w.payment_id.as_str()).collect();
        let rrns: Vec<&str> = batch.iter().map(|w| w.rrn.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|w| w.at).collect();
        let links: Vec<&str> = batch.iter().map(|w| w.original.link.as_str()).collect();
        let stans: Vec<&str> = batch.iter().map(|w| w.original.stan.as_str()).collect();
        let f7s: Vec<&str> = batch
            .iter()
            .map(|w| w.original.transmission_time.as_str())
            .collect();
        let from_status = vec![PaymentStatus::AwaitingCode.as_str(); batch.len()];
        let addrs: Vec<Option<&str>> = batch
            .iter()
            .map(|w| w.original.link_addr.as_deref())
            .collect();
        let acquirer_ids: Vec<Option<&str>> = batch
            .iter()
            .map(|w| w.original.acquirer_id.as_deref())
            .collect();
        let rows = client
            .query_cached(
                PROCESSING_BATCH_SQL,
                &[
                    &ids,
                    &rrns,
                    &ats,
                    &links,
                    &stans,
                    &f7s,
                    &from_status,
                    &addrs,
                    &acquirer_ids,
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), true)).collect())
    }
}

/// The final transition, its webhook event, its audit line and, when the outcome goes by SMS
/// (`$12`, the masked number), the outcome message's `queued` row. All but the transition are
/// written only when the payment moved.
const FINISH_SQL: &str = "WITH moved AS (
        UPDATE payments SET status = $3, failure_code = $4, bank_response_code = $5,
            approval_code = $6, finished_at = $2, updated_at = $2,
            code_hash = NULL, code_expires_at = NULL
        WHERE id = $1 AND status = ANY($7)
        RETURNING id, merchant_id, notify_url),
    event AS (
        INSERT INTO webhook_events (id, payment_id, merchant_id, event_type, body, notify_url,
            created_at, next_attempt_at)
        SELECT $8, id, merchant_id, $9, $10, notify_url, $2, $13 FROM moved),
    audit AS (
        INSERT INTO audit_log (at, payment_id, event, detail) SELECT $2, id, $3, $11 FROM moved),
    notice AS (
        INSERT INTO customer_messages
            (payment_id, kind, channel, destination, status, created_at, updated_at)
        SELECT id, 'outcome', $14, $12, 'queued', $2, $2 FROM moved WHERE $12::text IS NOT NULL
        RETURNING id)
    SELECT m.id, (SELECT id FROM notice), m.notify_url, k.webhook_secret, m.merchant_id
    FROM moved m LEFT JOIN merchants k ON k.id = m.merchant_id";

/// `FINISH_SQL` for many payments. Each payment's `from` statuses travel as one comma-separated
/// text (arrays of arrays do not unnest row by row).
const FINAL_BATCH_SQL: &str = "WITH input AS (
        SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
            $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[],
            $12::text[], $13::timestamptz[], $14::text[])
        AS t(id, at, status, failure_code, bank_response_code, approval_code, from_statuses,
            event_id, event_type, body, detail, notice_to, due_at, notice_channel)),
    moved AS (
        UPDATE payments p SET status = i.status, failure_code = i.failure_code,
            bank_response_code = i.bank_response_code, approval_code = i.approval_code,
            finished_at = i.at, updated_at = i.at, code_hash = NULL, code_expires_at = NULL
        FROM input i
        WHERE p.id = i.id AND p.status = ANY(string_to_array(i.from_statuses, ','))
        RETURNING p.id, p.merchant_id, p.notify_url, i.at, i.status, i.event_id, i.event_type,
            i.body, i.detail, i.notice_to, i.due_at, i.notice_channel),
    event AS (
        INSERT INTO webhook_events (id, payment_id, merchant_id, event_type, body, notify_url,
            created_at, next_attempt_at)
        SELECT event_id, id, merchant_id, event_type, body, notify_url, at, due_at FROM moved),
    audit AS (
        INSERT INTO audit_log (at, payment_id, event, detail)
        SELECT at, id, status, detail FROM moved),
    notice AS (
        INSERT INTO customer_messages
            (payment_id, kind, channel, destination, status, created_at, updated_at)
        SELECT id, 'outcome', notice_channel, notice_to, 'queued', at, at FROM moved
        WHERE notice_to IS NOT NULL
        RETURNING id, payment_id)
    SELECT m.id, n.id, m.notify_url, k.webhook_secret, m.merchant_id
    FROM moved m LEFT JOIN merchants k ON k.id = m.merchant_id
        LEFT JOIN notice n ON n.payment_id = m.id";

impl ToFinal {
    /// The single statement, on any client (also inside a transaction).
    pub async fn write(&self, client: &impl GenericClient) -> Result<Finish, StoreError> {
        let moved = client
            .query_opt_cached(
                FINISH_SQL,
                &[
                    &self.payment_id,
                    &self.at,
                    &self.status,
                    &self.failure_code,
                    &self.bank_response_code,
                    &self.approval_code,
                    &self.from,
                    &self.event_id,
                    &self.event_type,
                    &self.body,
                    &self.detail,
                    &self.outcome_notice.as_ref().map(|n| n.destination.as_str()),
                    &self.event_due_at,
                    &self.outcome_notice.as_ref().map(|n| n.channel),
                ],
            )
            .await?;
        Ok(moved.map_or(Finish::NotMoved, |row| self.moved(&row)))
    }

    /// The answer for this write's row of `FINISH_SQL` or `FINAL_BATCH_SQL`. Payments do not
    /// hold their merchant by a foreign key: without the merchant's row there is no secret to
    /// sign the event with, and nothing to hand over.
    fn moved(&self, row: &tokio_postgres::Row) -> Finish {
        let secret: Option<String> = row.get(3);
        Finish::Moved {
            notice_row: row.get(1),
            event: secret.map(|secret| WebhookEvent {
                id: self.event_id.clone(),
                merchant_id: row.get(4),
                body: self.body.clone(),
                notify_url: row.get(2),
                attempts: 0,
                created_at: self.at,
                secret: Secret::new(secret),
            }),
        }
    }
}

impl RowWrite for ToFinal {
    type Answer = Finish;

    fn row_key(&self) -> &str {
        &self.payment_id
    }

    fn not_moved() -> Finish {
        Finish::NotMoved
    }

    async fn write_alone(&self, client: &Object) -> Result<Finish, StoreError> {
        self.write(client).await
    }

    async fn write_together(
        client: &Object,
        batch: &[&Self],
    ) -> Result<HashMap<String, Finish>, StoreError> {
        let ids: Vec<&str> = batch.iter().map(|w| w.payment_id.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|w| w.at).collect();
        let statuses: Vec<&str> = batch.iter().map(|w| w.status).collect();
        let failures: Vec<Option<&str>> = batch.iter().map(|w| w.failure_code).collect();
        let bank_codes: Vec<Option<&str>> = batch
            .iter()
            .map(|w| w.bank_response_code.as_deref())
            .collect();
        let approvals: Vec<Option<&str>> =
            batch.iter().map(|w| w.approval_code.as_deref()).collect();
        let froms: Vec<String> = batch.iter().map(|w| w.from.join(",")).collect();
        let event_ids: Vec<&str> = batch.iter().map(|w| w.event_id.as_str()).collect();
        let event_types: Vec<&str> = batch.iter().map(|w| w.event_type).collect();
        let bodies: Vec<&str> = batch.iter().map(|w| w.body.as_str()).collect();
        let details: Vec<&Value> = batch.iter().map(|w| &w.detail).collect();
        let notices = batch.iter().map(|w| w.outcome_notice.as_ref());
        let notice_to: Vec<Option<&str>> = notices
            .clone()
            .map(|n| n.map(|n| n.destination.as_str()))
            .collect();
        let notice_channels: Vec<Option<&str>> = notices.map(|n| n.map(|n| n.channel)).collect();
        let due: Vec<DateTime<Utc>> = batch.iter().map(|w| w.event_due_at).collect();
        let rows = client
            .query_cached(
                FINAL_BATCH_SQL,
                &[
                    &ids,
                    &ats,
                    &statuses,
                    &failures,
                    &bank_codes,
                    &approvals,
                    &froms,
                    &event_ids,
                    &event_types,
                    &bodies,
                    &details,
                    &notice_to,
                    &due,
                    &notice_channels,
                ],
            )
            .await?;
        let writes: HashMap<&str, &&Self> = batch.iter().map(|w| (w.row_key(), w)).collect();
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id: String = r.get(0);
                let finish = writes.get(id.as_str())?.moved(r);
                Some((id, finish))
            })
            .collect())
    }
}
