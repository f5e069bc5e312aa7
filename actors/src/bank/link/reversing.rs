//! Reversals: loaded from the durable queue, sent as 0420 and repeated as 0421 until answered,
//! and marked in the queue.

use super::{
    BankLinkActor, LinkDeps, LinkState, Pending, PendingKind, REVERSAL_STORE_ATTEMPTS_MAX,
    REVERSAL_STORE_RETRY_MS, REVERSALS_IN_FLIGHT_MAX, REVERSALS_RELOAD_SPACING, ReversalMarked,
    ReversalQueued, ReversalsLoaded, ReversalsNotLoaded,
};
use crate::bank::LinkSettings;
use crate::bank::reversals::{self, PendingReversal, ReversalReason, ReversalRecord};
use crate::bank::stan::format_stan;
use crate::bank::wire;
use crate::messages::{BankError, DebitRequest};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use payhub_iso8583::Message;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// Field 39 of a 0430 that says the reversal was not processed, so that it is sent again:
/// issuer or switch inoperative (91), system malfunction (96), or no field 39 at all.
const REVERSAL_NOT_PROCESSED: [&str; 3] = ["91", "96", ""];
/// Such a reversal is never closed: the customer may be debited until the BIPS processes it. Its
/// repeats are spaced further apart with each refusal (since it was loaded), doubling from
/// `reversal_interval_ms` up to this, so that a BIPS whose reversals are down is not pressed;
/// the row stays in the operator's backlog, with the last refusal's code.
const REVERSAL_REFUSED_REPEAT_MAX_MS: u64 = 600_000;

impl BankLinkActor {
    pub(super) fn send_due_reversals(&mut self, ctx: &mut Context<Self>) {
        if self.state() != LinkState::SignedOn {
            return;
        }
        let now = self.deps.clock.now();
        let due: Vec<i64> = self
            .reversals
            .values()
            .filter(|r| r.next_attempt_at <= now && !self.reversals_in_flight.contains(&r.id))
            .map(|r| r.id)
            .take(REVERSALS_IN_FLIGHT_MAX.saturating_sub(self.reversals_in_flight.len()))
            .collect();
        for id in due {
            self.mark_reversal_sent(id, now, ctx);
        }
    }

    /// Records a reversal's send before it leaves (`ReversalMarked` then sends it): after a crash
    /// in between, the next send is a `0421`, the repeat a BIPS may have seen already, never a
    /// second `0420`.
    fn mark_reversal_sent(&mut self, id: i64, now: DateTime<Utc>, ctx: &mut Context<Self>) {
        let (Some(reversal), Some(conn)) = (self.reversals.get_mut(&id), &self.conn) else {
            return;
        };
        let next = next_repeat_at(&self.settings, now, reversal.refusals);
        let repeat = reversal.attempts > 0;
        reversal.next_attempt_at = next;
        self.reversals_in_flight.insert(id);
        let generation = conn.generation;
        let pool = self.deps.pool.clone();
        let link = self.settings.name.clone();
        let addr = ctx.address();
        // Not recorded in time: not sent now, but tried again at its next attempt.
        let wait = self.settings.response_timeout();
        actix::spawn(async move {
            let marking = reversals::mark_sent(&pool, id, now, next);
            let marked = match tokio::time::timeout(wait, marking).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(link = %link, id, error = %e, "recording a reversal send");
                    false
                }
                Err(_) => {
                    tracing::warn!(link = %link, id, "recording a reversal send: timed out");
                    false
                }
            };
            addr.do_send(ReversalMarked {
                id,
                repeat,
                generation,
                marked,
            });
        });
    }

    pub(super) fn send_reversal(&mut self, id: i64, repeat: bool) {
        let Some(reversal) = self.reversals.get(&id) else {
            self.reversals_in_flight.remove(&id);
            return;
        };
        let Some(stan) = self.stans.allocate() else {
            self.reversals_in_flight.remove(&id);
            return;
        };
        let now = self.deps.clock.now();
        let (record, stan_text) = (&reversal.record, format_stan(stan));
        let institution_id = &self.deps.institution_id;
        let message = match wire::reversal_advice(record, repeat, &stan_text, now, institution_id) {
            Ok(m) => m,
            Err(e) => {
                self.stans.release(stan);
                self.reversals_in_flight.remove(&id);
                tracing::error!(link = %self.settings.name, id, error = %e, "building a reversal");
                return;
            }
        };
        let sent_at = Instant::now();
        self.pending.insert(
            (b'4', stan),
            Pending {
                kind: PendingKind::Reversal {
                    id,
                    deadline: sent_at + self.settings.response_timeout(),
                },
                sent_at,
            },
        );
        self.write(message);
    }

    pub(super) fn load_reversals(&mut self, ctx: &mut Context<Self>) {
        self.reversals_loaded_at = Some(Instant::now());
        let pool = self.deps.pool.clone();
        let name = self.settings.name.clone();
        let limit = self.settings.reversals_loaded_max;
        let turned_away = self.reversals_turned_away;
        let addr = ctx.address();
        actix::spawn(async move {
            match reversals::pending(&pool, &name, limit).await {
                Ok(list) => addr.do_send(ReversalsLoaded(list, turned_away)),
                Err(e) => {
                    // Tried again at a tick: the reversals of payments already final have no
                    // other way back into memory while the link stays up.
                    tracing::warn!(link = %name, error = %e, "loading pending reversals; trying again");
                    addr.do_send(ReversalsNotLoaded);
                }
            }
        });
    }

    /// Queues (durably) and sends a reversal for a debit whose caller is gone.
    pub(super) fn reverse_orphan_with(
        &mut self,
        request: &DebitRequest,
        stan: u32,
        f7: String,
        reason: ReversalReason,
        ctx: &mut Context<Self>,
    ) {
        let stan = format_stan(stan);
        let acquirer_id = &self.deps.institution_id;
        let record = reversal_record(request, &self.settings, stan, f7, acquirer_id);
        let deps = self.deps.clone();
        let addr = ctx.address();
        let settings = self.settings.clone();
        actix::spawn(async move {
            // Nobody waits for the answer; a failure is logged by `store_reversal`.
            let _ = queue_reversal((&addr, &settings), &deps, &record, reason).await;
        });
    }

    /// Past `reversals_loaded_max`, reversals wait in the table: at a tick, more are loaded once
    /// half of those in memory were answered, at most once per `REVERSALS_RELOAD_SPACING`.
    pub(super) fn load_more_reversals(&mut self, ctx: &mut Context<Self>) {
        let low = self.reversals.len() <= self.settings.reversals_loaded_max / 2;
        let recently = self
            .reversals_loaded_at
            .is_some_and(|at| at.elapsed() < REVERSALS_RELOAD_SPACING);
        if self.reversals_beyond_loaded && low && !recently {
            self.load_reversals(ctx);
        }
    }

    pub(super) fn on_reversal_answer(&mut self, id: i64, message: &Message) {
        self.reversals_in_flight.remove(&id);
        if !self.reversals.contains_key(&id) {
            return;
        }
        let code = message.get(39).unwrap_or("").to_owned();
        if REVERSAL_NOT_PROCESSED.contains(&code.as_str())
            && let Some(reversal) = self.reversals.get_mut(&id)
        {
            // The BIPS could not process it: nothing was undone, so it is sent again, as a 0421
            // at its next attempt, as if unanswered (a BIPS applies each reversal at most once).
            reversal.refusals = reversal.refusals.saturating_add(1);
            let refusals = reversal.refusals;
            // Its next repeat was planned at its send, before this refusal: from now, after the
            // wait this many refusals earn.
            let next = next_repeat_at(&self.settings, self.deps.clock.now(), refusals);
            reversal.next_attempt_at = next;
            tracing::warn!(link = %self.name(), id, response_code = %code, refusals, "reversal not processed by the BIPS; it will be sent again");
            // Kept on the row, still pending, for the operator: the last refusal's code (a
            // 0430 without one says nothing to keep) and when it goes again.
            let pool = self.deps.pool.clone();
            let link = self.settings.name.clone();
            actix::spawn(async move {
                let code = Some(code.as_str()).filter(|c| !c.is_empty());
                if let Err(e) = reversals::note_refusal(&pool, id, code, next).await {
                    tracing::warn!(link = %link, id, error = %e, "noting a reversal's refusal");
                }
            });
            return;
        }
        self.reversals.remove(&id);
        self.publish_reversal_count();
        if code != "00" {
            // The profile ends a reversal at its 0430 (a BIPS answers 00 also when it never saw
            // the original). A refusal other than 91 or 96 (05, 12, 30…) says the BIPS will not
            // undo it: the debit may stand. The code is kept on the reversal's row, and said here
            // for the operator.
            tracing::error!(link = %self.name(), id, response_code = %code, "reversal refused by the BIPS; the debit may stand");
        }
        let pool = self.deps.pool.clone();
        let now = self.deps.clock.now();
        let link = self.settings.name.clone();
        actix::spawn(async move {
            if let Err(e) = reversals::complete(&pool, id, &code, now).await {
                tracing::warn!(link = %link, id, error = %e, "closing a reversal");
            }
        });
    }

    pub(super) fn publish_reversal_count(&self) {
        self.shared
            .reversals_queued
            .store(self.reversals.len(), Ordering::Relaxed);
        self.metrics
            .reversals_pending
            .set(self.reversals.len() as i64);
    }
}

/// The reversal of a debit sent on `link` with `stan` (field 11 text) at `f7`, from acquirer
/// `acquirer_id` (its field 32).
pub fn reversal_record(
    request: &DebitRequest,
    link: &LinkSettings,
    stan: String,
    f7: String,
    acquirer_id: &str,
) -> ReversalRecord {
    let link_addr = Some(link.addr.clone());
    unconfigured_reversal_record(request, &link.name, link_addr, stan, f7, acquirer_id)
}

/// The reversal of a debit sent on a link that is no longer configured: its name, and its address
/// when the payment recorded it.
pub fn unconfigured_reversal_record(
    request: &DebitRequest,
    link_name: &str,
    link_addr: Option<String>,
    stan: String,
    f7: String,
    acquirer_id: &str,
) -> ReversalRecord {
    ReversalRecord {
        payment_id: Some(request.payment_id.clone()),
        link_name: link_name.to_owned(),
        link_addr,
        rrn: request.rrn.clone(),
        amount_minor: request.amount.minor(),
        currency_numeric: request.currency.numeric().to_owned(),
        original_stan: stan,
        original_f7: f7,
        acquirer_id: acquirer_id.to_owned(),
    }
}

/// Stores a reversal and hands it to the link `addr` to send (unless its 0430 came already);
/// `ReversalNotStored` when the database refused it (the caller keeps the payment open and asks
/// again later). Of a debit the BIPS did not answer, the first send waits `link`'s response
/// timeout.
pub async fn queue_reversal(
    (addr, link): (&Addr<BankLinkActor>, &LinkSettings),
    deps: &LinkDeps,
    record: &ReversalRecord,
    reason: ReversalReason,
) -> Result<(), BankError> {
    let hold = link.response_timeout();
    // A reversal stored already for this RRN belongs to the link named on its row, which loads
    // it by that name: given to another link too, it would leave twice.
    if let Some(stored) = store_reversal(deps, record, reason, hold).await?
        && stored.record.link_name == link.name
    {
        addr.do_send(ReversalQueued(stored));
    }
    Ok(())
}

/// Stores a reversal whose link is not configured, under any name or address: it waits, pending,
/// until a link of that name (or, from the next start, of that address) is configured. Sending it
/// over another link could reach a BIPS that never saw the debit, which would answer `00` and
/// leave the debit standing.
pub async fn park_reversal(
    deps: &LinkDeps,
    record: &ReversalRecord,
    reason: ReversalReason,
) -> Result<(), BankError> {
    // The stored row: one already queued for this RRN (on whatever link) is kept as it was.
    // Its link is not configured: nothing sends it before one is.
    let Some(stored) = store_reversal(deps, record, reason, Duration::ZERO).await? else {
        return Ok(()); // Answered already.
    };
    let stored = stored.record;
    tracing::error!(
        link = %stored.link_name,
        rrn = %stored.rrn,
        "a reversal waits for its link, unless that is configured: configure a link named {} \
         (or one with its address, {}) to send it",
        stored.link_name,
        stored.link_addr.as_deref().unwrap_or("not recorded")
    );
    Ok(())
}

/// Stores a reversal, retrying briefly while the database is unavailable; `ReversalNotStored`
/// (the database's error logged here) when it stays so. `None` when its 0430 came already.
async fn store_reversal(
    deps: &LinkDeps,
    record: &ReversalRecord,
    reason: ReversalReason,
    hold: Duration,
) -> Result<Option<PendingReversal>, BankError> {
    let mut attempt = 1;
    loop {
        match reversals::queue(&deps.pool, record, reason, deps.clock.now(), hold).await {
            Ok(p) => return Ok(p),
            Err(e) if attempt >= REVERSAL_STORE_ATTEMPTS_MAX => {
                tracing::error!(
                    link = %record.link_name,
                    rrn = %record.rrn,
                    error = %e,
                    "a reversal could not be stored"
                );
                return Err(BankError::ReversalNotStored);
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(REVERSAL_STORE_RETRY_MS)).await;
            }
        }
    }
}

/// When a reversal sent (or refused) at `now` is repeated if no 0430 processes it: after the
/// link's interval, doubled for each refusal, at most `REVERSAL_REFUSED_REPEAT_MAX_MS` (or the
/// interval, if more).
fn next_repeat_at(settings: &LinkSettings, now: DateTime<Utc>, refusals: u32) -> DateTime<Utc> {
    let interval = settings.reversal_interval();
    let backed_off = interval.saturating_mul(1 << refusals.min(16));
    let wait = backed_off.min(Duration::from_millis(REVERSAL_REFUSED_REPEAT_MAX_MS).max(interval));
    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(10))
}
