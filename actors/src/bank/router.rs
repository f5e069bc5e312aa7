//! `BankRouter`: picks the link for the payer's bank (field 100) from the links' `banks` lists —
//! the first signed-on link in configuration order wins — and answers `Debit`, `PrepareDebit` and
//! `SendPrepared`. It also queues reversals the gateway asks for, reports link status to
//! operators, and signs every link off on shutdown.

use super::link::{
    self, BankLinkActor, LinkDebit, LinkDeps, LinkReserve, LinkSendReserved, LinkShared, LinkState,
    SignOff,
};
use super::prepared::{OriginalDebit, PrepareDebit, PreparedDebit, PreparedHandle, SendPrepared};
use super::reversals::{self, ReversalReason};
use super::settings::LinkSettings;
use super::stan::format_stan;
use crate::domain::BankId;
use crate::messages::{BankError, Debit, DebitRequest, DebitResponse};
use crate::store::StoreError;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a graceful shutdown waits for the links to sign off.
pub const SHUTDOWN_WAIT_MS_MAX: u64 = 10_000;

/// Longest a debit waits for one of its links to sign on when none is. Nothing has been sent
/// yet, and a link that has just dropped is back after its reconnect backoff and a sign-on: the
/// payments whose codes arrive meanwhile should not fail for it. A bank that stays down costs each
/// of them this wait, then `BankError::Unavailable` as before.
pub const SIGN_ON_WAIT_MS_MAX: u64 = 1_000;

#[derive(Clone)]
pub(crate) struct LinkEntry {
    pub settings: Arc<LinkSettings>,
    pub addr: Addr<BankLinkActor>,
    pub shared: Arc<LinkShared>,
}

/// The links serving one bank, in configuration order, with their indexes.
type Candidates = Arc<[(usize, LinkEntry)]>;

pub struct BankRouter {
    links: Vec<LinkEntry>,
    routes: HashMap<BankId, Candidates>,
    deps: LinkDeps,
    /// Told whenever one of the links signs on.
    sign_ons: Arc<Notify>,
    /// Reads of the links' states under way ([`STATUS_READS_MAX`]).
    status_reads: Arc<tokio::sync::Semaphore>,
}

/// Reads of the links' states (each reads every link's reversal backlog) under way at once. The
/// read goes on after its asker stopped waiting: probes of a slow database would otherwise pile
/// up, each holding a pooled connection that payments need.
pub const STATUS_READS_MAX: usize = 2;

impl BankRouter {
    pub(crate) fn new(links: Vec<LinkEntry>, deps: LinkDeps, sign_ons: Arc<Notify>) -> Self {
        let mut lists: HashMap<BankId, Vec<(usize, LinkEntry)>> = HashMap::new();
        for (index, entry) in links.iter().enumerate() {
            for bank in &entry.settings.banks {
                lists
                    .entry(bank.clone())
                    .or_default()
                    .push((index, entry.clone()));
            }
        }
        let routes = lists.into_iter().map(|(b, l)| (b, l.into())).collect();
        Self {
            links,
            routes,
            deps,
            sign_ons,
            status_reads: Arc::new(tokio::sync::Semaphore::new(STATUS_READS_MAX)),
        }
    }

    /// The links serving `bank`, in configuration order (shared: no allocation per debit).
    fn candidates(&self, bank: &BankId) -> Result<Candidates, BankError> {
        self.routes
            .get(bank)
            .cloned()
            .ok_or_else(|| BankError::NoRoute(bank.clone()))
    }
}

/// Offers a request to each signed-on candidate in order until one takes it; a full or just-dropped
/// link passes it to the next. While none is signed on, waits for a sign-on, at most
/// `SIGN_ON_WAIT_MS_MAX` in all; a full link is answered at once (`BankError::Busy`).
async fn on_first_link<T, F, Fut>(
    candidates: Candidates,
    sign_ons: Arc<Notify>,
    mut attempt: F,
) -> Result<(usize, LinkEntry, T), BankError>
where
    F: FnMut(Addr<BankLinkActor>) -> Fut,
    Fut: Future<Output = Result<T, BankError>>,
{
    let waited_until = Instant::now() + Duration::from_millis(SIGN_ON_WAIT_MS_MAX);
    loop {
        // Taken before the offer, so that a sign-on while it is made is not missed.
        let signed_on = sign_ons.notified();
        match offer(&candidates, &mut attempt).await {
            Err(BankError::Unavailable) if Instant::now() < waited_until => {
                if tokio::time::timeout_at(waited_until, signed_on)
                    .await
                    .is_err()
                {
                    return Err(BankError::Unavailable);
                }
            }
            offered => return offered,
        }
    }
}

/// One pass over the candidates, in order.
async fn offer<T, F, Fut>(
    candidates: &Candidates,
    attempt: &mut F,
) -> Result<(usize, LinkEntry, T), BankError>
where
    F: FnMut(Addr<BankLinkActor>) -> Fut,
    Fut: Future<Output = Result<T, BankError>>,
{
    let mut last = BankError::Unavailable;
    for (index, entry) in candidates.iter() {
        if entry.shared.state() != LinkState::SignedOn {
            continue;
        }
        match attempt(entry.addr.clone()).await {
            Err(e @ (BankError::Busy | BankError::Unavailable)) => last = e,
            Err(e) => return Err(e),
            Ok(taken) => return Ok((*index, entry.clone(), taken)),
        }
    }
    Err(last)
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
        let (deps, sign_ons) = (self.deps.clone(), self.sign_ons.clone());
        Box::pin(async move {
            let request = Arc::new(request);
            let (_, entry, ticket) = on_first_link(candidates, sign_ons, |addr| {
                let message = LinkDebit(request.clone());
                async move { link::submit(&addr, message).await }
            })
            .await?;
            link::outcome(&entry.addr, &entry.settings, &deps, &request, ticket).await
        })
    }
}

impl Handler<PrepareDebit> for BankRouter {
    type Result = ResponseFuture<Result<PreparedDebit, BankError>>;

    fn handle(&mut self, msg: PrepareDebit, _ctx: &mut Context<Self>) -> Self::Result {
        let candidates = match self.candidates(&msg.0.payer_bank) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let sign_ons = self.sign_ons.clone();
        let acquirer_id = self.deps.institution_id.clone();
        Box::pin(async move {
            let request = Arc::new(msg.0);
            let (index, entry, reserved) = on_first_link(candidates, sign_ons, |addr| {
                let message = LinkReserve(request.clone());
                async move {
                    addr.send(message)
                        .await
                        .map_err(|_| BankError::Unavailable)?
                }
            })
            .await?;
            Ok(PreparedDebit {
                link: entry.settings.name.clone(),
                link_addr: entry.settings.addr.clone(),
                stan: format_stan(reserved.stan),
                transmission_time: reserved.f7,
                acquirer_id,
                handle: PreparedHandle {
                    link_index: index,
                    request,
                    stan: reserved.stan,
                    token: reserved.token,
                },
            })
        })
    }
}

impl Handler<SendPrepared> for BankRouter {
    type Result = ResponseFuture<Result<DebitResponse, BankError>>;

    fn handle(&mut self, msg: SendPrepared, _ctx: &mut Context<Self>) -> Self::Result {
        let prepared = msg.0;
        let entry = self
            .links
            .get(prepared.handle.link_index)
            .filter(|e| e.settings.name == prepared.link)
            .cloned();
        let deps = self.deps.clone();
        Box::pin(async move {
            // Prepared by another router (or made up): nothing to send it with.
            let entry = entry.ok_or(BankError::Unavailable)?;
            let h = prepared.handle;
            let send = LinkSendReserved {
                stan: h.stan,
                token: h.token,
            };
            let ticket = link::submit(&entry.addr, send).await?;
            link::outcome(&entry.addr, &entry.settings, &deps, &h.request, ticket).await
        })
    }
}

/// Reverse a debit: the gateway cannot complete a payment whose debit was approved, or does not
/// know its outcome. The reversal is queued durably, then sent as 0420/0421 (first after one
/// response timeout) until a 0430 that processed it; the answer comes once it is stored.
///
/// With `original` (what the payment committed before its 0200 left), field 90 carries exactly
/// that STAN and field 7 and the reversal goes over that link (found by name and address, else by
/// address when renamed, else by name when moved: a link of that name at another address may be
/// another BIPS, which the start warns of); when no link has either, the reversal is stored to
/// wait for one. Without it (a debit sent with the one-phase `Debit`, whose caller
/// committed nothing), field 90 carries STAN `000000` and the current time, which only a BIPS
/// matching by field 37 alone accepts: payments always commit the original (`PrepareDebit`).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), BankError>")]
pub struct ReverseDebit {
    pub request: DebitRequest,
    pub original: Option<OriginalDebit>,
}

impl Handler<ReverseDebit> for BankRouter {
    type Result = ResponseFuture<Result<(), BankError>>;

    fn handle(&mut self, msg: ReverseDebit, _ctx: &mut Context<Self>) -> Self::Result {
        let target = match &msg.original {
            Some(original) => self.committed_target(original),
            None => self.uncommitted_target(&msg.request),
        };
        self.queue_reversal(msg.request, target)
    }
}

/// The link a reversal is sent on, and the original 0200's data elements it repeats.
type Target = Result<(ReversalLink, Original), BankError>;

/// The original 0200's field 11, field 7 and field 32 (the acquirer, which the gateway's
/// configuration may have changed since).
struct Original {
    stan: String,
    f7: String,
    acquirer_id: String,
}

/// Where a reversal goes: the debit's link (by its address, else by name: the same BIPS renamed,
/// or moved), or (that BIPS having been removed from the configuration since) the database
/// alone, waiting for its link.
enum ReversalLink {
    Configured(LinkEntry),
    Unconfigured { name: String, addr: Option<String> },
}

impl BankRouter {
    fn committed_target(&self, original: &OriginalDebit) -> Target {
        original.check()?;
        // The debit's own link (name and address) first, then the address: a link of the
        // debit's name at another address may be another BIPS, which would answer 00 to a debit
        // it never saw.
        let addr = original.link_addr.as_deref();
        let same = |l: &&LinkEntry| {
            l.settings.name == original.link && addr.is_none_or(|a| l.settings.addr == a)
        };
        let by_addr = || {
            let addr = addr?;
            self.links.iter().find(|l| l.settings.addr == addr)
        };
        let by_name = || self.links.iter().find(|l| l.settings.name == original.link);
        let link = match self
            .links
            .iter()
            .find(same)
            .or_else(by_addr)
            .or_else(by_name)
        {
            Some(entry) => ReversalLink::Configured(entry.clone()),
            None => ReversalLink::Unconfigured {
                name: original.link.clone(),
                addr: original.link_addr.clone(),
            },
        };
        let original = Original {
            stan: original.stan.clone(),
            f7: original.transmission_time.clone(),
            // Before V77 the payment kept no acquirer: the one configured now.
            acquirer_id: (original.acquirer_id.clone())
                .unwrap_or_else(|| self.deps.institution_id.clone()),
        };
        Ok((link, original))
    }

    fn uncommitted_target(&self, request: &DebitRequest) -> Target {
        let original = Original {
            stan: "000000".into(),
            f7: super::wire::transmission_time(self.deps.clock.now()),
            acquirer_id: self.deps.institution_id.clone(),
        };
        let entry = self.candidates(&request.payer_bank)?[0].1.clone();
        Ok((ReversalLink::Configured(entry), original))
    }

    /// Stores a reversal for `request` durably and hands it to its link; answers once stored.
    fn queue_reversal(
        &self,
        request: DebitRequest,
        target: Target,
    ) -> ResponseFuture<Result<(), BankError>> {
        let deps = self.deps.clone();
        Box::pin(async move {
            let (
                link,
                Original {
                    stan,
                    f7,
                    acquirer_id,
                },
            ) = target?;
            let reason = ReversalReason::GatewayIncomplete;
            match link {
                ReversalLink::Configured(entry) => {
                    let record =
                        link::reversal_record(&request, &entry.settings, stan, f7, &acquirer_id);
                    link::queue_reversal((&entry.addr, &entry.settings), &deps, &record, reason)
                        .await
                }
                ReversalLink::Unconfigured { name, addr } => {
                    let record = link::unconfigured_reversal_record(
                        &request,
                        &name,
                        addr,
                        stan,
                        f7,
                        &acquirer_id,
                    );
                    link::park_reversal(&deps, &record, reason).await
                }
            }
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

/// How many links are signed on, of how many: from memory, for readiness probes (no database
/// read, so a probe never waits behind one or holds a connection).
#[derive(Debug, Message)]
#[rtype(result = "(usize, usize)")]
pub struct SignedOnLinks;

impl Handler<SignedOnLinks> for BankRouter {
    type Result = MessageResult<SignedOnLinks>;

    fn handle(&mut self, _msg: SignedOnLinks, _ctx: &mut Context<Self>) -> Self::Result {
        let signed_on = self
            .links
            .iter()
            .filter(|l| l.shared.state() == LinkState::SignedOn)
            .count();
        MessageResult((signed_on, self.links.len()))
    }
}

impl Handler<LinkStatuses> for BankRouter {
    type Result = ResponseFuture<Result<Vec<LinkStatus>, StoreError>>;

    fn handle(&mut self, _msg: LinkStatuses, _ctx: &mut Context<Self>) -> Self::Result {
        let links = self.links.clone();
        let deps = self.deps.clone();
        let Ok(reading) = self.status_reads.clone().try_acquire_owned() else {
            let busy = StoreError::Pool("the links' states are being read already".into());
            return Box::pin(std::future::ready(Err(busy)));
        };
        Box::pin(async move {
            let _reading = reading;
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
