//! One gateway per database. Payments in flight, bank links' STANs and their reversal queues
//! belong to the process that runs them: a second `payhub serve` on the same database would
//! resume the first one's `processing` payments as if after a crash, and reverse debits that are
//! still in flight (during a rolling deploy, say). So `serve` claims the database with a session
//! advisory lock, held on a connection of its own for the gateway's life; PostgreSQL releases it
//! when that connection ends, however the process ends.
//!
//! That connection is checked every few seconds. One that was lost (the database restarted, the
//! backend was terminated, an idle socket dropped) is replaced and the lock taken again; if
//! another gateway took it meanwhile, this process stops at once, as a crash would, and leaves
//! its payments to that gateway.

use anyhow::bail;
use deadpool_postgres::{ClientWrapper, Pool};
use payhub_actors::store::{StoreError, redacted_url};
use std::time::Duration;

/// The advisory lock key of a serving gateway ("gatewy" in ASCII); migrations use another.
const SERVING_LOCK_KEY: i64 = 0x6761_7465_7779;
/// How often the claim's connection is checked.
pub const CLAIM_CHECK_INTERVAL_MS: u64 = 5_000;

/// The database, claimed for this gateway until dropped.
pub struct DatabaseClaim {
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for DatabaseClaim {
    /// The keeper ends, and with it the connection and the lock.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl DatabaseClaim {
    /// Claims the database, or says in one line that another gateway serves it.
    pub async fn take(pool: &Pool, url: &str) -> anyhow::Result<Self> {
        Self::take_checking_every(pool, url, Duration::from_millis(CLAIM_CHECK_INTERVAL_MS)).await
    }

    /// [`take`](Self::take), its connection checked every `interval`.
    pub async fn take_checking_every(
        pool: &Pool,
        url: &str,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let Some(holder) = claim(pool).await? else {
            bail!(
                "another payhub serve is running on database {}: one gateway per database, so \
                 stop it first",
                redacted_url(url)
            );
        };
        let keeper = tokio::spawn(keep(pool.clone(), holder, interval));
        Ok(Self { keeper })
    }
}

/// A connection out of the pool holding the lock, or `None` when another session holds it.
async fn claim(pool: &Pool) -> Result<Option<ClientWrapper>, StoreError> {
    let client = pool.get().await?;
    let claimed: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SERVING_LOCK_KEY])
        .await?
        .get(0);
    // Out of the pool: the connection, and with it the lock, lives as long as the claim.
    Ok(claimed.then(|| deadpool_postgres::Object::take(client)))
}

/// Checks the holder every `interval`; replaces a lost one.
async fn keep(pool: Pool, mut holder: ClientWrapper, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if holder.simple_query("SELECT 1").await.is_ok() {
            continue;
        }
        tracing::error!("the connection that holds this gateway's claim on the database was lost");
        holder = loop {
            match claim(&pool).await {
                Ok(Some(holder)) => break holder,
                Ok(None) => {
                    tracing::error!(
                        "another payhub serve claimed the database meanwhile: stopping at once"
                    );
                    std::process::exit(1);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim the database again yet");
                    tokio::time::sleep(interval).await;
                }
            }
        };
        tracing::warn!("the database is claimed again");
    }
}
