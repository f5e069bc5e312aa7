//! The SMS channel's rows in `customer_messages`. The text is never stored: it holds the code.
//!
//! A receipt may race the recording of its message id, so both sides take the same transaction
//! advisory lock on the id: whichever commits second sees the first.

use super::receipt;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use payhub_actors::messages::NoticeKind;
use payhub_actors::store::StoreError;
use payhub_actors::store::prepared::Prepared;

/// First key of the advisory locks taken per SMSC message id.
const RECEIPT_LOCK_CLASS: i32 = 3034;
/// How long a receipt waits for its message id to be recorded.
const EARLY_RECEIPT_KEEP_H: i64 = 24;

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

/// The SMSC accepted the message as `message_ref`; applies a receipt that came first.
pub async fn mark_sent(
    pool: &Pool,
    now: DateTime<Utc>,
    id: i64,
    message_ref: &str,
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_message_ref(&tx, message_ref).await?;
    tx.execute_cached(
        "UPDATE customer_messages SET status = 'sent', message_ref = $2, updated_at = $3 \
         WHERE id = $1",
        &[&id, &message_ref, &now],
    )
    .await?;
    let early = tx
        .query_opt_cached(
            "DELETE FROM smpp_early_receipts WHERE message_ref = $1 RETURNING stat",
            &[&message_ref],
        )
        .await?;
    if let Some(early) = early {
        let stat: String = early.get(0);
        apply_receipt(&tx, now, message_ref, &stat).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The message could not be sent. A row a late acceptance already marked `sent` keeps that.
pub async fn mark_failed(
    pool: &Pool,
    now: DateTime<Utc>,
    id: i64,
    error: &str,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute_cached(
            "UPDATE customer_messages SET status = 'failed', error = $2, updated_at = $3 \
             WHERE id = $1 AND status = 'queued'",
            &[&id, &error, &now],
        )
        .await?;
    Ok(())
}

/// Keeps a receipt's state on its message row, or aside until the row has the id.
/// Returns whether a row carried the id already.
pub async fn record_receipt(
    pool: &Pool,
    now: DateTime<Utc>,
    message_ref: &str,
    stat: &str,
) -> Result<bool, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_message_ref(&tx, message_ref).await?;
    let updated = apply_receipt(&tx, now, message_ref, stat).await?;
    if updated == 0 {
        // Receipts for ids payhub never recorded (another ESME on the account, a lost row) are
        // kept a day, not forever.
        let expired = now - chrono::Duration::hours(EARLY_RECEIPT_KEEP_H);
        tx.execute_cached(
            "DELETE FROM smpp_early_receipts WHERE received_at < $1",
            &[&expired],
        )
        .await?;
        tx.execute_cached(
            "INSERT INTO smpp_early_receipts (message_ref, stat, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (message_ref) DO UPDATE SET stat = EXCLUDED.stat, received_at = EXCLUDED.received_at",
            &[&message_ref, &stat, &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(updated > 0)
}

async fn lock_message_ref(
    tx: &deadpool_postgres::Transaction<'_>,
    message_ref: &str,
) -> Result<(), StoreError> {
    tx.execute_cached(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&RECEIPT_LOCK_CLASS, &message_ref],
    )
    .await?;
    Ok(())
}

async fn apply_receipt(
    tx: &deadpool_postgres::Transaction<'_>,
    now: DateTime<Utc>,
    message_ref: &str,
    stat: &str,
) -> Result<u64, StoreError> {
    let status = receipt::row_status(stat);
    Ok(tx
        .execute_cached(
            "UPDATE customer_messages SET receipt_status = $2, \
               status = COALESCE($3, status), updated_at = $4 \
             WHERE message_ref = $1 AND channel = 'sms'",
            &[&message_ref, &stat, &status, &now],
        )
        .await?)
}
