//! The `PaymentRegistry`: finds or starts the one `TransactionActor` of a payment, bounds how
//! many run at once (`in_flight_max`), and after a restart starts again every payment that was
//! waiting for its code or in `processing`, and sends the outcome SMS that a stopped process left
//! `queued`.

use super::actor::{Gone, Tick, TransactionActor, send_outcome_notice};
use super::core::PaymentCore;
use super::store::PaymentRow;
use super::{Deps, PaymentError};
use actix::prelude::*;
use std::collections::HashMap;

/// Most outcome SMS a start sends for the processes before it; past it they stay `queued`.
pub const ORPHANED_NOTICES_MAX: i64 = 10_000;

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
}

/// Starts the registry on the current actix arbiter; it resumes payments left in flight.
pub fn start_registry(deps: Deps) -> Addr<PaymentRegistry> {
    PaymentRegistry {
        deps,
        actors: HashMap::new(),
        next_generation: 0,
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
        let pool = self.deps.pool.clone();
        let limit = i64::try_from(self.deps.settings.in_flight_max).unwrap_or(i64::MAX);
        ctx.wait(
            async move {
                let client = pool.get().await?;
                super::store::resumable_payments(&client, limit).await
            }
            .into_actor(self)
            .map(|resumed, act, ctx| match resumed {
                Ok(rows) => {
                    tracing::info!(payments = rows.len(), "resuming payments in flight");
                    for row in rows {
                        act.spawn(row.id.clone(), Some(row), ctx);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot resume payments in flight"),
            }),
        );
        let started_at = self.deps.clock.now();
        actix::spawn(send_orphaned_notices(self.deps.clone(), started_at));
    }
}

/// The outcome SMS of payments that became final just before an earlier process stopped, before
/// the channel took them: the customer is told after all. One at a time, in the background. A
/// process that stopped after the SMSC took a notice but before its row said so sends it twice;
/// like webhooks, a notice goes at least once. (Another gateway on the same database that is
/// sending a notice at this moment may send it too.)
async fn send_orphaned_notices(deps: Deps, started_at: chrono::DateTime<chrono::Utc>) {
    let read = async {
        let client = deps.pool.get().await?;
        super::store::orphaned_outcome_notices(&client, started_at, ORPHANED_NOTICES_MAX).await
    };
    let orphans = match read.await {
        Ok(orphans) => orphans,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the outcome notices left queued");
            return;
        }
    };
    if !orphans.is_empty() {
        tracing::warn!(
            notices = orphans.len(),
            "sending outcome notices left queued"
        );
    }
    for (row, notice_row) in orphans {
        let core = PaymentCore::from_row(deps.clone(), row).with_outcome_notice_row(notice_row);
        if let Some(deliver) = core.outcome_delivery() {
            send_outcome_notice(deps.clone(), deliver).await;
        }
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
