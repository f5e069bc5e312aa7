//! Outcome notices held for a dedicated terminal that was offline. A customer told of an outcome
//! "over the same channel" (gateway-http.md) must be told once the terminal is back, not never:
//! the notice's row stays `queued`, marked held, and goes when the terminal authenticates again,
//! if that is within a day of the outcome. A code is never held: it would be stale by then, and
//! the pay page offers another way at once.

use super::session::{SessionDeliver, TerminalSessionActor};
use actix::Addr;
use deadpool_postgres::Pool;
use payhub_actors::clock::SharedClock;
use payhub_actors::domain::{Amount, Currency};
use payhub_actors::messages::{DeliveryError, Notice, NoticeKind};
use payhub_actors::store::prepared::Prepared;
use std::time::Duration;

/// The `error` of a held notice's row (status `queued`).
pub const HELD_NOTICE: &str = "terminal offline; sent when it reconnects";
/// Held notices older than this are not sent; their rows stay `queued`, marked held.
pub const HELD_NOTICE_AGE_MAX_S: i64 = 86_400;
/// Held notices sent on one connection, at most: no more than a session keeps waiting for ACKs.
pub const HELD_NOTICES_PER_CONNECTION_MAX: i64 = 8;

/// Marks an outcome notice's row held: still `queued`, to go when its terminal is back.
pub async fn hold(pool: &Pool, clock: &SharedClock, row: i64) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .execute_cached(
            "UPDATE customer_messages SET error = $2, updated_at = $3
             WHERE id = $1 AND status = 'queued'",
            &[&row, &HELD_NOTICE, &clock.now()],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Sends the notices held for `terminal_id` to its new session, oldest first, each once: a row is
/// taken (no longer marked held) before its notice goes, and ends delivered, failed, or held
/// again if the terminal went away meanwhile.
pub async fn send_held(
    pool: Pool,
    clock: SharedClock,
    terminal_id: String,
    session: Addr<TerminalSessionActor>,
    ack_wait: Duration,
) {
    let taken = match take_held(&pool, &clock, &terminal_id).await {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(%terminal_id, error = %e, "cannot read the outcome notices held");
            return;
        }
    };
    if !taken.is_empty() {
        tracing::info!(%terminal_id, notices = taken.len(), "sending held outcome notices");
    }
    for (row, notice) in taken {
        let result = tokio::time::timeout(ack_wait, session.send(SessionDeliver(notice))).await;
        let result = match result {
            Ok(Ok(result)) => result,
            Ok(Err(_session_gone)) => Err(DeliveryError::Offline),
            Err(_) => Err(DeliveryError::NotAcknowledged),
        };
        if let Err(e) = settle(&pool, &clock, row, &result).await {
            tracing::warn!(%terminal_id, row, error = %e, "a held notice's end not recorded");
        }
    }
}

async fn take_held(
    pool: &Pool,
    clock: &SharedClock,
    terminal_id: &str,
) -> Result<Vec<(i64, Notice)>, String> {
    let now = clock.now();
    let oldest = now - chrono::Duration::seconds(HELD_NOTICE_AGE_MAX_S);
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query_cached(
            "WITH taken AS (
                 UPDATE customer_messages SET error = NULL, updated_at = $3
                 WHERE id IN (
                     SELECT id FROM customer_messages
                     WHERE channel = 'terminal' AND destination = $1 AND kind = 'outcome'
                       AND status = 'queued' AND error = $2
                       AND created_at > $4
                     ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED)
                 RETURNING id, payment_id)
             SELECT t.id, p.id, m.name, p.amount_minor, p.currency, p.status
             FROM taken t JOIN payments p ON p.id = t.payment_id
                 JOIN merchants m ON m.id = p.merchant_id
             ORDER BY t.id",
            &[
                &terminal_id,
                &HELD_NOTICE,
                &now,
                &oldest,
                &HELD_NOTICES_PER_CONNECTION_MAX,
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    rows.iter().map(held_notice).collect()
}

fn held_notice(row: &tokio_postgres::Row) -> Result<(i64, Notice), String> {
    let currency: String = row.get(4);
    let notice = Notice {
        payment_id: row.get(1),
        kind: NoticeKind::Outcome,
        merchant_name: row.get(2),
        amount: Amount::parse(row.get(3)).map_err(|e| e.to_string())?,
        currency: Currency::parse(&currency).map_err(|e| e.to_string())?,
        code: None,
        validity_s: 0,
        outcome: Some(row.get(5)),
        unregistered_receiver: false,
    };
    Ok((row.get(0), notice))
}

async fn settle(
    pool: &Pool,
    clock: &SharedClock,
    row: i64,
    result: &Result<payhub_actors::messages::DeliveryReceipt, DeliveryError>,
) -> Result<(), String> {
    if matches!(result, Err(DeliveryError::Offline)) {
        return hold(pool, clock, row).await;
    }
    let (status, message_ref, error) = match result {
        Ok(receipt) => ("delivered", Some(receipt.message_ref.clone()), None),
        Err(e) => ("failed", None, Some(e.to_string())),
    };
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .execute_cached(
            "UPDATE customer_messages SET status = $2, message_ref = $3, error = $4,
                 updated_at = $5
             WHERE id = $1 AND status = 'queued'",
            &[&row, &status, &message_ref, &error, &clock.now()],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
