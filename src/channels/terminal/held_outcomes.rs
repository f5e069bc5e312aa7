//! Outcome notices held for a dedicated terminal that was offline. A customer told of an outcome
//! "over the same channel" (gateway-http.md) must be told once the terminal is back, not never:
//! the notice's row stays `queued`, marked held, and goes when the terminal authenticates again,
//! if that is within a day of the outcome (an older one is marked failed then). A row taken to be
//! sent is marked so, with the switch that took it ([`held_notice_sending`]), until it ends: the
//! start's resend of notices left `queued` passes it by, and a row a stopped process left so is
//! taken again. A code is never
//! held: it would be stale by then, and the pay page offers another way at once.

use super::registry::SwitchRegistry;
use super::session::{TerminalSessionActor, deliver};
use actix::Addr;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use payhub_actors::clock::SharedClock;
use payhub_actors::domain::{Amount, Currency};
use payhub_actors::messages::{DeliveryError, DeliveryReceipt, Notice, NoticeKind};
use payhub_actors::store::messages;
pub use payhub_actors::store::messages::{HELD_NOTICE, HELD_NOTICE_SENDING, held_notice_sending};
use payhub_actors::store::prepared::Prepared;
use std::time::Duration;

/// Held notices older than this are not sent, but marked failed.
pub const HELD_NOTICE_AGE_MAX_S: i64 = 86_400;
/// Held notices taken at once: no more than a session keeps waiting for ACKs.
pub const HELD_NOTICES_BATCH_MAX: i64 = 8;
/// A row this switch marked as being sent this long ago (or a batch's deliveries ago, if that is
/// longer: [`sending_stale_since`]) is one whose end could not be recorded: it is taken again, or
/// failed after a day, as a held one.
pub const HELD_SENDING_STALE_S: i64 = 3_600;
/// Batches sent on one connection, at most (512 notices).
pub const HELD_BATCHES_PER_CONNECTION_MAX: usize = 64;
/// Times one sending waits out the silence limit after a notice went unanswered, to go on with
/// the terminal's held notices on the same connection, at most.
pub const UNANSWERED_WAITS_MAX: usize = 2;

/// How long a held notice's sender waits: for each ACK, and, after a notice went unanswered,
/// for the silence limit (a session still there after it is alive).
#[derive(Debug, Clone, Copy)]
pub struct HeldWaits {
    pub ack: Duration,
    pub silent_max: Duration,
}

impl HeldWaits {
    /// For the switch's `ack_timeout_ms` and `keepalive_interval_ms`.
    pub fn of_switch(ack_timeout_ms: u64, keepalive_interval_ms: u64) -> Self {
        Self {
            ack: super::session::answer_wait(ack_timeout_ms),
            silent_max: super::session::silent_max(keepalive_interval_ms),
        }
    }
}

/// Which of a terminal's `queued` outcome rows are held for it, in the statements that take them
/// and fail them: held (`$2`), or marked as being sent (`$6`) by another switch or by this one
/// (`$7`) before `$8` ([`sending_stale_since`]).
macro_rules! held_for_the_terminal {
    () => {
        "(error = $2 OR (starts_with(error, $6) AND (error <> $7 OR updated_at < $8)))"
    };
}

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
/// taken (marked as being sent) before its notice goes, and ends delivered, failed, or held
/// again if the terminal went away, its session was full, or it did not answer. Gone or full
/// ends the sending after that batch; a terminal that connected again meanwhile gets the notices
/// held again on its newer session: its own sender, started at its authentication, could not
/// take the rows this one held then. Notices left unanswered are passed over until every other
/// held notice went once; then the sending waits out the silence limit and offers them again to
/// the session there then (at most `UNANSWERED_WAITS_MAX` times): a terminal gone without
/// closing is dropped by then, and one still there is alive.
pub async fn send_held(
    pool: Pool,
    clock: SharedClock,
    registry: SwitchRegistry,
    terminal_id: String,
    mut session: Addr<TerminalSessionActor>,
    waits: HeldWaits,
) {
    let stale_since = || sending_stale_since(clock.now(), waits.ack);
    if let Err(e) = fail_aged(&pool, &clock, &registry, &terminal_id, stale_since()).await {
        tracing::warn!(%terminal_id, error = %e, "cannot fail the held notices past a day");
    }
    let mut unanswered_waits = 0;
    // Left unanswered in this round: not taken again until every other held notice went once.
    let mut unanswered: Vec<i64> = Vec::new();
    for _ in 0..HELD_BATCHES_PER_CONNECTION_MAX {
        let stale = stale_since();
        let taken = take_held(&pool, &clock, &registry, &terminal_id, (stale, &unanswered));
        let taken = match taken.await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(%terminal_id, error = %e, "cannot read the outcome notices held");
                return;
            }
        };
        let last_batch = taken.len() < HELD_NOTICES_BATCH_MAX as usize;
        if !taken.is_empty() {
            tracing::info!(%terminal_id, notices = taken.len(), "sending held outcome notices");
        }
        // The whole batch is settled, even after the terminal went away: each row taken must end
        // delivered, failed or held again (once gone, the rest fail fast as offline).
        let mut gone = false;
        for (row, notice) in taken {
            let result = deliver(&session, notice, waits.ack).await;
            gone |= went_away(&result);
            if result == Err(DeliveryError::NotAcknowledged) {
                unanswered.push(row);
            }
            if let Err(e) = settle(&pool, &clock, row, &result).await {
                tracing::warn!(%terminal_id, row, error = %e, "a held notice's end not recorded");
            }
        }
        if gone {
            match registry.session(&terminal_id) {
                Some(newer) if newer != session => session = newer,
                _ => return,
            }
            unanswered.clear();
            continue;
        }
        if !last_batch {
            continue;
        }
        if unanswered.is_empty() || unanswered_waits == UNANSWERED_WAITS_MAX {
            return;
        }
        unanswered_waits += 1;
        tokio::time::sleep(waits.silent_max).await;
        match registry.session(&terminal_id) {
            Some(now_there) => session = now_there,
            None => return,
        }
        unanswered.clear();
    }
}

/// Whether a notice's delivery ended in a way that keeps it for the terminal's next connection:
/// the terminal went away, its session could take nothing more now, or it did not answer (it
/// may have vanished without closing; its connection is dropped once silent long enough).
fn held_again(result: &Result<DeliveryReceipt, DeliveryError>) -> bool {
    went_away(result) || *result == Err(DeliveryError::NotAcknowledged)
}

/// The terminal went away, or its session could take nothing more now.
fn went_away(result: &Result<DeliveryReceipt, DeliveryError>) -> bool {
    matches!(
        result,
        Err(DeliveryError::Offline | DeliveryError::Unavailable)
    )
}

/// Marks failed the terminal's notices held (or left being sent by an earlier process) past a
/// day, held at most a week before that (older ones were failed by an earlier connection; the
/// bound keeps the read to recent history). One this switch is sending ends as its sending does,
/// unless it was marked before `stale_since` ([`sending_stale_since`]).
async fn fail_aged(
    pool: &Pool,
    clock: &SharedClock,
    registry: &SwitchRegistry,
    terminal_id: &str,
    stale_since: DateTime<Utc>,
) -> Result<(), String> {
    let now = clock.now();
    let oldest = now - chrono::Duration::seconds(HELD_NOTICE_AGE_MAX_S);
    let looked_back = oldest - chrono::Duration::days(7);
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .execute_cached(
            concat!(
                "UPDATE customer_messages SET status = 'failed',
                     error = 'terminal offline for over a day', updated_at = $3
                 WHERE kind = 'outcome' AND channel = 'terminal' AND destination = $1
                   AND created_at <= $4 AND created_at > $5 AND status = 'queued' AND ",
                held_for_the_terminal!()
            ),
            &[
                &terminal_id,
                &HELD_NOTICE,
                &now,
                &oldest,
                &looked_back,
                &HELD_NOTICE_SENDING,
                &held_notice_sending(registry.switch_id()),
                &stale_since,
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Before this instant, a row this switch marked as being sent is stale: longer ago than
/// [`HELD_SENDING_STALE_S`] and than a whole batch's deliveries, each up to `ack_wait`, so that
/// no delivery still under way is taken again.
fn sending_stale_since(now: DateTime<Utc>, ack_wait: Duration) -> DateTime<Utc> {
    let batch_ms = ack_wait
        .as_millis()
        .saturating_mul(HELD_NOTICES_BATCH_MAX as u128 + 1);
    let stale_ms = i64::try_from(batch_ms)
        .unwrap_or(i64::MAX)
        .max(HELD_SENDING_STALE_S * 1_000);
    now - chrono::Duration::milliseconds(stale_ms)
}

/// Takes up to a batch of the terminal's held notices of the last day, and of those an earlier
/// process left being sent (or this one, before `stale_since`: [`sending_stale_since`]), but
/// not those `skipped`.
async fn take_held(
    pool: &Pool,
    clock: &SharedClock,
    registry: &SwitchRegistry,
    terminal_id: &str,
    (stale_since, skipped): (DateTime<Utc>, &[i64]),
) -> Result<Vec<(i64, Notice)>, String> {
    let now = clock.now();
    let oldest = now - chrono::Duration::seconds(HELD_NOTICE_AGE_MAX_S);
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query_cached(
            TAKE_HELD_SQL,
            &[
                &terminal_id,
                &HELD_NOTICE,
                &now,
                &oldest,
                &HELD_NOTICES_BATCH_MAX,
                &HELD_NOTICE_SENDING,
                &held_notice_sending(registry.switch_id()),
                &stale_since,
                &skipped,
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    rows.iter().map(held_notice).collect()
}

/// Served by V75's index on a terminal's outcome notices by age.
const TAKE_HELD_SQL: &str = concat!(
    "WITH taken AS (
        UPDATE customer_messages SET error = $7, updated_at = $3
        WHERE id IN (
            SELECT id FROM customer_messages
            WHERE kind = 'outcome' AND channel = 'terminal' AND destination = $1
              AND created_at > $4 AND status = 'queued' AND id <> ALL($9::bigint[]) AND ",
    held_for_the_terminal!(),
    "
            ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED)
        RETURNING id, payment_id)
    SELECT t.id, p.id, m.name, p.amount_minor, p.currency, p.status
    FROM taken t JOIN payments p ON p.id = t.payment_id
        JOIN merchants m ON m.id = p.merchant_id
    ORDER BY t.id"
);

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
    result: &Result<DeliveryReceipt, DeliveryError>,
) -> Result<(), String> {
    if held_again(result) {
        return hold(pool, clock, row).await;
    }
    messages::record_end(pool, clock.now(), row, result)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    /// A batch's deliveries with a long acknowledgement wait outlast the hour: a row is stale only
    /// after all of them.
    #[test]
    fn a_row_is_stale_only_after_a_whole_batch_could_be_delivered() {
        let now = chrono::Utc::now();
        let short = super::sending_stale_since(now, std::time::Duration::from_secs(6));
        assert_eq!(
            now - short,
            chrono::Duration::seconds(super::HELD_SENDING_STALE_S)
        );
        let long = super::sending_stale_since(now, std::time::Duration::from_secs(601));
        assert_eq!(now - long, chrono::Duration::seconds(9 * 601));
    }

    /// Every authentication reads its terminal's held notices: through V75's index, not a scan of
    /// the day's messages.
    #[tokio::test]
    async fn held_notices_are_found_through_the_terminal_outcomes_index() {
        let select = super::TAKE_HELD_SQL;
        let inner =
            &select[select.find("SELECT id FROM").unwrap()..select.find(" FOR UPDATE").unwrap()];
        let sql = inner
            .replace("$1", "'trm_x'")
            .replace("$2", "'held'")
            .replace("$4", "now()")
            .replace("$5", "8")
            .replace("$6", "'sending by '")
            .replace("$7", "'sending by sw_1'")
            .replace("$8", "now()")
            .replace("$9", "'{}'");
        let plan = payhub_actors::store::testing::plan_without_seq_scans(&sql).await;
        assert!(
            plan.contains("customer_messages_terminal_outcomes"),
            "{plan}"
        );
    }
}
