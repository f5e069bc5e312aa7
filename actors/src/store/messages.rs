//! The `customer_messages` rows as more than one part writes them: the channels record each
//! message's fate, and a payment writes its outcome notice's row with its final status.

use super::StoreError;
use super::prepared::Prepared;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};

/// The `error` of an outcome notice's row held for a dedicated terminal that is offline (its
/// status stays `queued`): it goes when the terminal is back (src/channels/terminal/
/// held_outcomes.rs), not at the next start.
pub const HELD_NOTICE: &str = "terminal offline; sent when it reconnects";
/// The start of the `error` of a held notice taken by a sender, being sent to its terminal (the
/// row stays `queued`); the rest names the terminal switch that took it ([`held_notice_sending`]).
/// Only that switch ends it; one a switch of an earlier process took is taken again.
pub const HELD_NOTICE_SENDING: &str = "terminal back; being sent by ";

/// SQL: the message row's `error` (`$error`) says that the terminal switch holds the notice or is
/// sending it, the parameters `$held` and `$sending` bound to [`HELD_NOTICE`] and
/// [`HELD_NOTICE_SENDING`]. Such a row goes when its terminal is back, by the switch alone.
macro_rules! held_or_being_sent {
    ($error:literal, $held:literal, $sending:literal) => {
        concat!(
            "(",
            $error,
            " = ",
            $held,
            " OR starts_with(",
            $error,
            ", ",
            $sending,
            "))"
        )
    };
}
pub(crate) use held_or_being_sent;

/// The `error` of a held notice that the switch `switch_id` is sending.
pub fn held_notice_sending(switch_id: &str) -> String {
    format!("{HELD_NOTICE_SENDING}{switch_id}")
}

/// Records how a delivery that was attempted ended, on its row still `queued`: `delivered` with
/// the channel's reference, or `failed` with why.
pub async fn record_end(
    pool: &Pool,
    now: DateTime<Utc>,
    id: i64,
    result: &Result<crate::messages::DeliveryReceipt, crate::messages::DeliveryError>,
) -> Result<(), StoreError> {
    let (status, message_ref, error) = match result {
        Ok(receipt) => ("delivered", Some(receipt.message_ref.as_str()), None),
        Err(e) => ("failed", None, Some(e.to_string())),
    };
    let client = pool.get().await?;
    client
        .execute_cached(
            "UPDATE customer_messages SET status = $2, message_ref = $3, error = $4,
                 updated_at = $5
             WHERE id = $1 AND status = 'queued'",
            &[&id, &status, &message_ref, &error, &now],
        )
        .await?;
    Ok(())
}

/// The message could not be sent. A row a late acceptance already marked `sent` keeps that, and
/// one the terminal switch holds for its terminal (or is sending) stays its: a sender that gave
/// up waiting may have been answered late that the notice is held.
pub async fn mark_failed(
    pool: &Pool,
    now: DateTime<Utc>,
    id: i64,
    error: &str,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    mark_failed_on(&client, now, id, error).await?;
    Ok(())
}

/// [`mark_failed`] on a given connection or transaction.
pub async fn mark_failed_on(
    client: &impl GenericClient,
    now: DateTime<Utc>,
    id: i64,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute_cached(
            concat!(
                "UPDATE customer_messages SET status = 'failed', error = $2, updated_at = $3 \
                 WHERE id = $1 AND status = 'queued' AND (error IS NULL OR NOT ",
                held_or_being_sent!("error", "$4", "$5"),
                ")"
            ),
            &[&id, &error, &now, &HELD_NOTICE, &HELD_NOTICE_SENDING],
        )
        .await?;
    Ok(())
}
