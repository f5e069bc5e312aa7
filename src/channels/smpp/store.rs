//! The SMS channel's rows in `customer_messages`. The text is never stored: it holds the code.
//!
//! A receipt may race the recording of its message id. Both sides are SQL functions (migration
//! V60) that take the same transaction advisory lock on the id: whichever commits second sees the
//! first.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use payhub_actors::messages::NoticeKind;
use payhub_actors::store::StoreError;
use payhub_actors::store::prepared::Prepared;

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

/// The SMSC accepted the message as `message_ref`; applies a receipt that came first
/// (`smpp_mark_sent`, migration V60).
pub async fn mark_sent(
    pool: &Pool,
    now: DateTime<Utc>,
    id: i64,
    message_ref: &str,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute_cached(
            "SELECT smpp_mark_sent($1, $2, $3)",
            &[&id, &message_ref, &now],
        )
        .await?;
    Ok(())
}

pub use payhub_actors::store::messages::mark_failed;

/// Keeps a receipt's state on its message row, or aside until the row has the id
/// (`smpp_record_receipt`, migration V60). Returns whether a row carried the id already.
pub async fn record_receipt(
    pool: &Pool,
    now: DateTime<Utc>,
    message_ref: &str,
    stat: &str,
) -> Result<bool, StoreError> {
    // Receipts for ids payhub never recorded (another ESME on the account, a lost row) are kept a
    // day, not forever.
    let keep_since = now - chrono::Duration::hours(EARLY_RECEIPT_KEEP_H);
    let client = pool.get().await?;
    let row = client
        .query_one_cached(
            "SELECT smpp_record_receipt($1, $2, $3, $4)",
            &[&message_ref, &stat, &now, &keep_since],
        )
        .await?;
    Ok(row.get(0))
}
