//! Bank links (issue 4): one `BankLinkActor` per configured link to a bank information processing
//! system, the `BankRouter` that picks a link for the payer's bank, and the durable reversal queue.
//!
//! ```ignore
//! let router = payhub_actors::bank::start(pool, clock, links, "99990001")?;
//! let answer = router.send(Debit(request)).await?;          // Result<DebitResponse, BankError>
//! // Two-phase, so the 0200's identity is committed before it leaves:
//! let prepared = router.send(PrepareDebit(request)).await??; // link, STAN, field 7 reserved
//! let original = prepared.original();                        // commit it with `processing`
//! let answer = router.send(SendPrepared(prepared)).await?;   // exactly that 0200
//! router.send(ReverseDebit { request, original: Some(original) }).await?; // field 90 from it
//! let statuses = router.send(LinkStatuses).await?;          // for the operator page
//! router.send(Shutdown).await?;                             // sign off, stop
//! ```

pub mod connection;
pub mod link;
pub mod prepared;
pub mod reversals;
pub mod router;
pub mod settings;
pub mod stan;
pub mod unsent;
pub mod wire;

pub use link::{BankLinkActor, LinkState};
pub use prepared::{OriginalDebit, PrepareDebit, PreparedDebit, SendPrepared};
pub use router::{
    BankRouter, LinkStatus, LinkStatuses, ReverseDebit, SIGN_ON_WAIT_MS_MAX, STATUS_READS_MAX,
    Shutdown, SignedOnLinks,
};
pub use settings::{LinkOwner, LinkSettings};

use crate::clock::SharedClock;
use crate::domain::BankId;
use actix::prelude::*;
use deadpool_postgres::Pool;
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bank links: {0}")]
pub struct StartError(pub String);

/// Starts one `BankLinkActor` per link and the router, in the current actix arbiter. Each link
/// connects and signs on in the background; until then debits for its banks fail fast with
/// `BankError::Unavailable`. Pending reversals are reloaded from the database.
pub fn start(
    pool: Pool,
    clock: SharedClock,
    links: Vec<LinkSettings>,
    institution_id: &str,
) -> Result<Addr<BankRouter>, StartError> {
    start_in(None, pool, clock, links, institution_id)
}

/// [`start`], with the link actors on `arbiter` (another thread) when given; the router stays on
/// the current one.
pub fn start_in(
    arbiter: Option<&ArbiterHandle>,
    pool: Pool,
    clock: SharedClock,
    links: Vec<LinkSettings>,
    institution_id: &str,
) -> Result<Addr<BankRouter>, StartError> {
    BankId::parse(institution_id)
        .map_err(|_| StartError("institution id must be 1 to 11 digits".into()))?;
    let mut names = HashSet::new();
    for settings in &links {
        settings
            .check()
            .map_err(|e| StartError(format!("link {}: {e}", settings.name)))?;
        if !names.insert(settings.name.clone()) {
            return Err(StartError(format!(
                "link name {} is used twice",
                settings.name
            )));
        }
    }
    let deps = link::LinkDeps {
        pool,
        clock,
        institution_id: institution_id.to_owned(),
    };
    let sign_ons = Arc::new(tokio::sync::Notify::new());
    let entries = links
        .into_iter()
        .map(|settings| {
            let settings = Arc::new(settings);
            let shared = Arc::new(link::LinkShared::new(sign_ons.clone()));
            let actor = {
                let (settings, deps, shared) = (settings.clone(), deps.clone(), shared.clone());
                move |_: &mut Context<BankLinkActor>| BankLinkActor::new(settings, deps, shared)
            };
            let addr = match arbiter {
                Some(a) => BankLinkActor::start_in_arbiter(a, actor),
                None => BankLinkActor::create(actor),
            };
            router::LinkEntry {
                settings,
                addr,
                shared,
            }
        })
        .collect();
    Ok(BankRouter::new(entries, deps, sign_ons).start())
}
