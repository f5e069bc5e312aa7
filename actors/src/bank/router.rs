//! `BankRouter`: picks the link for the payer's bank (field 100) from the links' `banks` lists —
//! the first signed-on link in configuration order wins — and answers `Debit`. It also queues
//! reversals the gateway asks for, reports link status to operators, and signs every link off on
//! shutdown.

use super::link::{self, BankLinkActor, LinkDeps, LinkShared, LinkState, SignOff};
use super::reversals::{self, ReversalReason, ReversalRecord};
use super::settings::LinkSettings;
use crate::domain::BankId;
use crate::messages::{BankError, Debit, DebitRequest, DebitResponse};
use crate::store::StoreError;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Approved debits remembered for `ReverseDebit` (their STAN and field 7 go into field 90).
pub const RECENT_APPROVALS_MAX: usize = 100_000;
/// How long a graceful shutdown waits for the links to sign off.
pub const SHUTDOWN_WAIT_MS_MAX: u64 = 10_000;

#[derive(Clone)]
pub(crate) struct LinkEntry {
    pub settings: Arc<LinkSettings>,
    pub addr: Addr<BankLinkActor>,
    pub shared: Arc<LinkShared>,
}

#[derive(Debug, Clone)]
struct Approval {
    link: usize,
    stan: u32,
    f7: String,
}

/// A bounded memory of recent approvals, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentApprovals {
    by_rrn: HashMap<String, Approval>,
    order: VecDeque<String>,
}

impl RecentApprovals {
    fn remember(&mut self, rrn: String, approval: Approval) {
        if self.by_rrn.insert(rrn.clone(), approval).is_none() {
            self.order.push_back(rrn);
        }
        while self.order.len() > RECENT_APPROVALS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.by_rrn.remove(&old);
            }
        }
    }

    fn get(&self, rrn: &str) -> Option<Approval> {
        self.by_rrn.get(rrn).cloned()
    }
}

pub struct BankRouter {
    links: Vec<LinkEntry>,
    routes: HashMap<BankId, Vec<usize>>,
    deps: LinkDeps,
    recent: Arc<Mutex<RecentApprovals>>,
}

impl BankRouter {
    pub(crate) fn new(links: Vec<LinkEntry>, deps: LinkDeps) -> Self {
        let mut routes: HashMap<BankId, Vec<usize>> = HashMap::new();
        for (index, entry) in links.iter().enumerate() {
            for bank in &entry.settings.banks {
                routes.entry(bank.clone()).or_default().push(index);
            }
        }
        Self {
            links,
            routes,
            deps,
            recent: Arc::default(),
        }
    }

    /// The links serving `bank`, in configuration order.
    fn candidates(&self, bank: &BankId) -> Result<Vec<(usize, LinkEntry)>, BankError> {
        let indexes = self
            .routes
            .get(bank)
            .ok_or_else(|| BankError::NoRoute(bank.clone()))?;
        Ok(indexes
            .iter()
            .map(|&i| (i, self.links[i].clone()))
            .collect())
    }
}

impl Actor for BankRouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Payments in flight are bounded elsewhere; this bounds the router's own queue.
        let total: usize = self.links.iter().map(|l| l.settings.in_flight_max).sum();
        ctx.set_mailbox_capacity(total.saturating_mul(2).max(1_024));
    }
}

impl Handler<Debit> for BankRouter {
    type Result = ResponseFuture<Result<DebitResponse, BankError>>;

    fn handle(&mut self, Debit(request): Debit, _ctx: &mut Context<Self>) -> Self::Result {
        let candidates = match self.candidates(&request.payer_bank) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let deps = self.deps.clone();
        let recent = self.recent.clone();
        Box::pin(async move {
            let request = Arc::new(request);
            let mut last = BankError::Unavailable;
            for (index, entry) in candidates {
                if entry.shared.state() != LinkState::SignedOn {
                    continue;
                }
                match link::debit(&entry.addr, &entry.settings, &deps, request.clone()).await {
                    // A full or just-dropped link: the next healthy one may take it.
                    Err(e @ (BankError::Busy | BankError::Unavailable)) => last = e,
                    Err(e) => return Err(e),
                    Ok((response, info)) => {
                        if response.response_code == "00" {
                            let approval = Approval {
                                link: index,
                                stan: info.stan,
                                f7: info.f7,
                            };
                            recent
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remember(request.rrn.clone(), approval);
                        }
                        return Ok(response);
                    }
                }
            }
            Err(last)
        })
    }
}

/// The gateway cannot complete a payment whose debit was approved: reverse it (durably queued,
/// then 0420/0421 until 0430). Answers once the reversal is stored.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), BankError>")]
pub struct ReverseDebit(pub DebitRequest);

impl Handler<ReverseDebit> for BankRouter {
    type Result = ResponseFuture<Result<(), BankError>>;

    fn handle(
        &mut self,
        ReverseDebit(request): ReverseDebit,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.queue_reversal(ReversalOf {
            payment_id: request.payment_id,
            rrn: request.rrn,
            amount: request.amount,
            currency: request.currency,
            payer_bank: request.payer_bank,
        })
    }
}

/// What a reversal needs to know of the debit it undoes.
struct ReversalOf {
    payment_id: String,
    rrn: String,
    amount: crate::domain::Amount,
    currency: crate::domain::Currency,
    payer_bank: BankId,
}

impl BankRouter {
    /// Stores a reversal for `debit` durably and hands it to its link; answers once stored.
    fn queue_reversal(&self, debit: ReversalOf) -> ResponseFuture<Result<(), BankError>> {
        let known = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&debit.rrn);
        let entry = match known {
            Some(a) => Ok((self.links[a.link].clone(), a.stan, a.f7)),
            // Not remembered (a restart since): the BIPS finds the debit by field 37.
            None => self.candidates(&debit.payer_bank).map(|c| {
                let f7 = super::wire::transmission_time(self.deps.clock.now());
                (c[0].1.clone(), 0, f7)
            }),
        };
        let deps = self.deps.clone();
        Box::pin(async move {
            let (entry, stan, f7) = entry?;
            let record = ReversalRecord {
                payment_id: Some(debit.payment_id),
                link_name: entry.settings.name.clone(),
                rrn: debit.rrn,
                amount_minor: debit.amount.minor(),
                currency_numeric: debit.currency.numeric().to_owned(),
                original_stan: if stan == 0 {
                    "000000".into()
                } else {
                    super::stan::format_stan(stan)
                },
                original_f7: f7,
                acquirer_id: deps.institution_id.clone(),
            };
            let stored = link::store_reversal(&deps, &record, ReversalReason::GatewayIncomplete)
                .await
                .map_err(|e| {
                    BankError::Protocol(format!("the reversal could not be stored: {e}"))
                })?;
            entry.addr.do_send(link::ReversalQueued(stored));
            Ok(())
        })
    }
}

/// One link as the operator page shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkStatus {
    pub name: String,
    pub owner: &'static str,
    pub addr: String,
    pub banks: Vec<String>,
    /// `down`, `connected` or `signed_on`.
    pub state: &'static str,
    pub in_flight: usize,
    pub in_flight_max: usize,
    pub last_echo_at: Option<DateTime<Utc>>,
    /// Moving average of debits' round trips; `None` before the first answer.
    pub round_trip_us: Option<u64>,
    pub reversals_pending: i64,
    pub oldest_pending_reversal_at: Option<DateTime<Utc>>,
    pub oldest_pending_reversal_age_s: Option<i64>,
}

/// The state of every link, for the operator endpoints.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<LinkStatus>, StoreError>")]
pub struct LinkStatuses;

impl Handler<LinkStatuses> for BankRouter {
    type Result = ResponseFuture<Result<Vec<LinkStatus>, StoreError>>;

    fn handle(&mut self, _msg: LinkStatuses, _ctx: &mut Context<Self>) -> Self::Result {
        let links = self.links.clone();
        let deps = self.deps.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(links.len());
            for entry in links {
                let s = &entry.settings;
                let backlog = reversals::backlog(&deps.pool, &s.name).await?;
                let now = deps.clock.now();
                out.push(LinkStatus {
                    name: s.name.clone(),
                    owner: s.owner.as_str(),
                    addr: s.addr.clone(),
                    banks: s.banks.iter().map(|b| b.as_str().to_owned()).collect(),
                    state: entry.shared.state().as_str(),
                    in_flight: entry.shared.in_flight(),
                    in_flight_max: s.in_flight_max,
                    last_echo_at: entry.shared.last_echo_at(),
                    round_trip_us: entry.shared.round_trip.micros(),
                    reversals_pending: backlog.pending,
                    oldest_pending_reversal_at: backlog.oldest_created_at,
                    oldest_pending_reversal_age_s: backlog
                        .oldest_created_at
                        .map(|t| (now - t).num_seconds().max(0)),
                });
            }
            Ok(out)
        })
    }
}

/// Graceful shutdown: every link refuses new debits, lets its outstanding ones finish, signs off
/// (0800/002) and stops. Answers when all have stopped or after the wait limit.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for BankRouter {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<BankLinkActor>> = self.links.iter().map(|l| l.addr.clone()).collect();
        let wait_ms = self
            .links
            .iter()
            .map(|l| l.settings.response_timeout_ms.saturating_mul(3))
            .max()
            .unwrap_or(0)
            .min(SHUTDOWN_WAIT_MS_MAX);
        let fut = async move {
            for addr in &addrs {
                addr.do_send(SignOff);
            }
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
            while addrs.iter().any(|a| a.connected()) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        Box::pin(fut.into_actor(self).map(|(), _act, ctx| ctx.stop()))
    }
}
