//! One gateway per database. Payments in flight, bank links' STANs and their reversal queues
//! belong to the process that runs them: a second `payhub serve` on the same database would
//! resume the first one's `processing` payments as if after a crash, and reverse debits that are
//! still in flight (during a rolling deploy, say). So `serve` claims the database with a session
//! advisory lock, held on a connection of its own for the gateway's life; PostgreSQL releases it
//! when that connection ends, however the process ends.

use anyhow::bail;
use payhub_actors::store::redacted_url;

/// The advisory lock key of a serving gateway ("gatewy" in ASCII); migrations use another.
const SERVING_LOCK_KEY: i64 = 0x6761_7465_7779;

/// The database, claimed for this gateway until dropped.
pub struct DatabaseClaim {
    _holder: deadpool_postgres::ClientWrapper,
}

impl DatabaseClaim {
    /// Claims the database, or says in one line that another gateway serves it.
    pub async fn take(pool: &deadpool_postgres::Pool, url: &str) -> anyhow::Result<Self> {
        let client = pool.get().await?;
        let claimed: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&SERVING_LOCK_KEY])
            .await?
            .get(0);
        if !claimed {
            bail!(
                "another payhub serve is running on database {}: one gateway per database, so \
                 stop it first",
                redacted_url(url)
            );
        }
        // Out of the pool: the connection, and with it the lock, lives as long as the claim.
        Ok(Self {
            _holder: deadpool_postgres::Object::take(client),
        })
    }
}
