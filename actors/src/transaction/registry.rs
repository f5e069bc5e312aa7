//! The `PaymentRegistry`: finds or starts the one `TransactionActor` of a payment, bounds how
//! many run at once (`in_flight_max`), and after a restart starts again every payment that was
//! waiting for its code or in `processing`, and sends the outcome notices (SMS or terminal) that a
//! stopped process left `queued`.
//!
//! Nothing else revives a payment left in `processing`, so the resume never gives up: a failed
//! read is tried again with backoff, and payments beyond the table's room (`processing` first)
//! are resumed page by page as room frees.

use super::actor::{Gone, OUTCOME_NOTICE_OFFERS_MAX, Tick, TransactionActor, send_outcome_notice};
use super::core::PaymentCore;
use super::store::{PaymentRow, ResumePoint};
use super::{Deps, PaymentError};
use crate::metrics::global;
use actix::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

/// Most outcome SMS a start sends for the processes before it; past it they stay `queued`.
pub const ORPHANED_NOTICES_MAX: i64 = 10_000;
/// Orphaned outcome notices being sent (or waiting to be offered again) at once.
const ORPHANED_NOTICES_AT_ONCE: usize = 16;
/// Payments resumed per read, so that one read's rows are bounded whatever `in_flight_max` is.
const RESUME_PAGE_MAX: usize = 10_000;
/// Pause before the next page of payments to resume, while the table has no room for it.
const RESUME_ROOM_WAIT_MS: u64 = 1_000;
/// Backoff after a failed read of what a start must resume: doubles from the minimum up to the
/// maximum, and never gives up.
const RESUME_RETRY_MIN_MS: u64 = 500;
const RESUME_RETRY_MAX_MS: u64 = 30_000;

/// The actor of a payment, started when needed.
#[derive(Debug, Message)]
#[rtype(result = "Result<Addr<TransactionActor>, PaymentError>")]
pub struct Lookup(pub String);

/// The actor of a payment if it is running; none is started.
#[derive(Debug, Message)]
#[rtype(result = "Option<Addr<TransactionActor>>")]
pub struct Peek(pub String);

/// How many payment actors are alive.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct InFlight;

/// Every actor looks at its deadlines now (operators, and tests that move a manual clock).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TickAll;

pub struct PaymentRegistry {
    deps: Deps,
    actors: HashMap<String, (u64, Addr<TransactionActor>)>,
    next_generation: u64,
    /// Where the resume goes on from, while payments may be left to resume.
    resume_from: Option<ResumePoint>,
    /// The resume under way is a sweep for `processing` payments only.
    sweeping: bool,
    /// An actor stopped before its payment was final (its row could not be loaded, say): the
    /// next sweep looks for a `processing` payment left without one. Without such a stop there
    /// is none to find, and the sweep's read, which walks the payments table, is skipped.
    sweep_due: bool,
    /// Failed reads in a row, for the resume's backoff.
    resume_failures: u32,
}

/// Starts the registry on the current actix arbiter; it resumes payments left in flight.
pub fn start_registry(deps: Deps) -> Addr<PaymentRegistry> {
    PaymentRegistry {
        deps,
        actors: HashMap::new(),
        next_generation: 0,
        resume_from: Some(ResumePoint::start()),
        sweeping: false,
        sweep_due: false,
        resume_failures: 0,
    }
    .start()
}

impl PaymentRegistry {
    fn running(&self, payment_id: &str) -> Option<Addr<TransactionActor>> {
        self.actors
            .get(payment_id)
            .map(|(_, addr)| addr)
            .filter(|addr| addr.connected())
            .cloned()
    }

    /// Starts the actor of `payment_id`; it loads its row unless `row` is given.
    fn spawn(
        &mut self,
        payment_id: String,
        row: Option<PaymentRow>,
        ctx: &mut Context<Self>,
    ) -> Addr<TransactionActor> {
        self.next_generation += 1;
        let generation = self.next_generation;
        let mut actor = TransactionActor::new(
            payment_id.clone(),
            generation,
            self.deps.clone(),
            Some(ctx.address().recipient()),
        );
        if let Some(row) = row {
            actor = actor.with_core(PaymentCore::from_row(self.deps.clone(), row));
        }
        let actor = actor.start();
        self.actors.insert(payment_id, (generation, actor.clone()));
        actor
    }
}

impl Actor for PaymentRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.resume_page(ctx);
        let sweep = millis(self.deps.settings.processing_sweep_interval_ms.max(1));
        ctx.run_interval(sweep, Self::sweep_processing);
        let started_at = self.deps.clock.now();
        actix::spawn(send_orphaned_notices(self.deps.clone(), started_at));
    }
}

impl PaymentRegistry {
    /// A `processing` payment is moved on only by its actor. One whose actor stopped without
    /// finishing it (its row could not be loaded) gets a new actor here, as after a restart. The
    /// sweep runs after such a stop only, reads `processing` payments only, and waits for a
    /// resume under way.
    fn sweep_processing(&mut self, ctx: &mut Context<Self>) {
        if self.sweep_due && self.resume_from.is_none() {
            self.sweep_due = false;
            self.resume_from = Some(ResumePoint::start());
            self.sweeping = true;
            self.resume_page(ctx);
        }
    }

    /// Starts the next page of payments to resume, as many as the table has room for. The
    /// mailbox waits for the read (pages after the first hold lookups up for one query), so no
    /// lookup starts a payment's actor, and no actor's end is forgotten, while its row is read.
    fn resume_page(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.resume_from.clone() else {
            return;
        };
        let room = (self.deps.settings.in_flight_max)
            .saturating_sub(self.actors.len())
            .min(RESUME_PAGE_MAX);
        if room == 0 {
            ctx.run_later(millis(RESUME_ROOM_WAIT_MS), Self::resume_page);
            return;
        }
        let pool = self.deps.pool.clone();
        let limit = i64::try_from(room).unwrap_or(i64::MAX);
        let processing_only = self.sweeping;
        ctx.wait(
            async move {
                let client = pool.get().await?;
                super::store::resumable_payments(&client, &after, limit, processing_only).await
            }
            .into_actor(self)
            .map(move |read, act, ctx| act.resume_read(read, room, ctx)),
        );
    }

    fn resume_read(
        &mut self,
        read: Result<Vec<PaymentRow>, PaymentError>,
        room: usize,
        ctx: &mut Context<Self>,
    ) {
        let rows = match read {
            Ok(rows) => rows,
            Err(e) => {
                self.resume_failures = self.resume_failures.saturating_add(1);
                let wait = resume_backoff(self.resume_failures);
                global().payment_resume_failures.inc();
                tracing::error!(
                    error = %e,
                    retry_in_ms = wait.as_millis(),
                    "cannot read the payments in flight to resume; trying again"
                );
                ctx.run_later(wait, Self::resume_page);
                return;
            }
        };
        self.resume_failures = 0;
        let more = rows.len() >= room;
        let first_page = self.resume_from == Some(ResumePoint::start());
        self.resume_from = rows.last().filter(|_| more).map(ResumePoint::after);
        let sweep = self.sweeping;
        self.sweeping = sweep && more;
        if !sweep {
            tracing::info!(payments = rows.len(), "resuming payments in flight");
        }
        for row in rows {
            if self.running(&row.id).is_some() {
                continue;
            }
            if sweep {
                tracing::warn!(payment = %row.id, "a payment in processing had no actor; starting one");
            }
            // An actor that stopped while the page was read (its `Gone` waits behind the read)
            // may have moved its payment on since: the new one reads the row again, so that it
            // does not act on the old state (reverse a debit that succeeded). The others start
            // from the page's row: their payments had no actor. (Only the expiry sweep moves a
            // payment without one, an `awaiting_code` one past its grace; the actor's own write
            // then finds it moved, and reloads.)
            let moved_meanwhile = self.actors.contains_key(&row.id);
            let id = row.id.clone();
            self.spawn(id, (!moved_meanwhile).then_some(row), ctx);
        }
        if more {
            if first_page && !sweep && self.actors.len() >= self.deps.settings.in_flight_max {
                tracing::warn!(
                    in_flight_max = self.deps.settings.in_flight_max,
                    "more payments to resume than the table has room for; the rest follow as room frees"
                );
            }
            ctx.run_later(Duration::ZERO, Self::resume_page);
        }
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The wait after failed read number `failures` (1 = the first).
fn resume_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    millis((RESUME_RETRY_MIN_MS << doublings).min(RESUME_RETRY_MAX_MS))
}

/// The outcome SMS of payments that became final just before an earlier process stopped, before
/// the channel took them: the customer is told after all, in the background. A
/// process that stopped after the SMSC took a notice but before its row said so sends it twice;
/// like webhooks, a notice goes at least once. (Another gateway on the same database that is
/// sending a notice at this moment may send it too.) A failed read is tried again, like the
/// resume.
async fn send_orphaned_notices(deps: Deps, started_at: chrono::DateTime<chrono::Utc>) {
    let read = || async {
        let client = deps.pool.get().await?;
        super::store::orphaned_outcome_notices(&client, started_at, ORPHANED_NOTICES_MAX).await
    };
    let mut failures = 0;
    let orphans = loop {
        match read().await {
            Ok(orphans) => break orphans,
            Err(e) => {
                failures += 1;
                let wait = resume_backoff(failures);
                tracing::error!(
                    error = %e,
                    retry_in_ms = wait.as_millis(),
                    "cannot read the outcome notices left queued; trying again"
                );
                tokio::time::sleep(wait).await;
            }
        }
    };
    if !orphans.is_empty() {
        tracing::warn!(
            notices = orphans.len(),
            "sending outcome notices left queued"
        );
    }
    if orphans.len() as i64 >= ORPHANED_NOTICES_MAX {
        // The oldest go first; the rest of the day's wait for the next start.
        tracing::warn!(
            read_max = ORPHANED_NOTICES_MAX,
            "more outcome notices may be left queued than one start sends"
        );
    }
    // Each is offered as a live payment's is (its channel may still be binding at a start), a
    // few at a time, so that one waiting to be offered again holds up only its own place.
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(ORPHANED_NOTICES_AT_ONCE));
    for (row, notice_row) in orphans {
        let core = PaymentCore::from_row(deps.clone(), row).with_outcome_notice_row(notice_row);
        let Some(deliver) = core.outcome_delivery() else {
            continue;
        };
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let deps = deps.clone();
        actix::spawn(async move {
            send_outcome_notice(deps, deliver, OUTCOME_NOTICE_OFFERS_MAX).await;
            drop(place);
        });
    }
}

impl Handler<Lookup> for PaymentRegistry {
    type Result = Result<Addr<TransactionActor>, PaymentError>;

    fn handle(&mut self, msg: Lookup, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.running(&msg.0) {
            return Ok(addr);
        }
        if self.actors.len() >= self.deps.settings.in_flight_max {
            return Err(PaymentError::Busy);
        }
        Ok(self.spawn(msg.0, None, ctx))
    }
}

impl Handler<Peek> for PaymentRegistry {
    type Result = Option<Addr<TransactionActor>>;

    fn handle(&mut self, msg: Peek, _: &mut Context<Self>) -> Self::Result {
        self.running(&msg.0)
    }
}

impl Handler<Gone> for PaymentRegistry {
    type Result = ();

    fn handle(&mut self, msg: Gone, _: &mut Context<Self>) {
        self.sweep_due |= msg.unfinished;
        if self
            .actors
            .get(&msg.payment_id)
            .is_some_and(|(generation, _)| *generation == msg.generation)
        {
            self.actors.remove(&msg.payment_id);
        }
    }
}

impl Handler<InFlight> for PaymentRegistry {
    type Result = usize;

    fn handle(&mut self, _: InFlight, _: &mut Context<Self>) -> usize {
        self.actors.len()
    }
}

impl Handler<TickAll> for PaymentRegistry {
    type Result = ();

    fn handle(&mut self, _: TickAll, _: &mut Context<Self>) {
        for (_, addr) in self.actors.values() {
            addr.do_send(Tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_backoff_doubles_to_its_cap_without_overflow() {
        assert_eq!(resume_backoff(1), millis(RESUME_RETRY_MIN_MS));
        assert_eq!(resume_backoff(2), millis(2 * RESUME_RETRY_MIN_MS));
        assert_eq!(resume_backoff(7), millis(RESUME_RETRY_MAX_MS));
        assert_eq!(resume_backoff(u32::MAX), millis(RESUME_RETRY_MAX_MS));
    }
}
