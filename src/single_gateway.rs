//! One gateway per database. Payments in flight, bank links' STANs and their reversal queues
//! belong to the process that runs them: a second `payhub serve` on the same database would
//! resume the first one's `processing` payments as if after a crash, and reverse debits that are
//! still in flight (during a rolling deploy, say). So `serve` claims the database with a session
//! advisory lock, held on a connection of its own for the gateway's life; PostgreSQL releases it
//! when that connection ends, however the process ends.
//!
//! That connection is checked every few seconds. One that was lost (the database restarted, the
//! backend was terminated, an idle socket dropped) or that does not answer within a check's
//! interval (its host vanished) is replaced and the lock taken again, ending first this gateway's
//! own stale session if the server still holds the lock for it; if another gateway took it
//! meanwhile, this process stops at once, as a crash would, and leaves its payments to that
//! gateway.
//!
//! The lock is released as soon as its connection ends, but an earlier gateway's statement may
//! still be running (a commit waiting for a disk or a synchronous standby), and a gateway whose
//! claim connection alone was lost writes until its next check. A payment that statement moves
//! on after the new gateway read it `processing` would be reversed though it succeeded. So each
//! gateway names its sessions (`application_name`), and a new claim waits until no earlier
//! gateway's session is running a statement or holding a transaction open, and, if any is left
//! connected, until that gateway has had time to see its claim lost and stop.

use anyhow::bail;
use deadpool_postgres::{ClientWrapper, Pool};
use payhub_actors::store::{StoreError, redacted_url};
use std::time::Duration;

/// The advisory lock key of a serving gateway ("gatewy" in ASCII); migrations use another.
const SERVING_LOCK_KEY: i64 = 0x6761_7465_7779;
/// How often the claim's connection is checked.
pub const CLAIM_CHECK_INTERVAL_MS: u64 = 5_000;
/// A gateway's sessions are named this and an instance id of its own.
pub const SESSION_NAME_PREFIX: &str = "payhub serve ";
/// Checks the claim makes, at most, for an earlier gateway's statements to end (each check
/// interval apart): after them, the start fails naming the sessions.
const EARLIER_STATEMENTS_CHECKS_MAX: u32 = 12;
/// Pause between looks at an earlier gateway's sessions.
const EARLIER_SESSIONS_POLL_MS: u64 = 100;

/// This process's name for its sessions: unique even where every process is pid 1.
pub fn session_name() -> String {
    format!(
        "{SESSION_NAME_PREFIX}{}",
        hex::encode(payhub_actors::ids::os_random::<4>())
    )
}

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
    /// Claims the database for the gateway whose sessions are named `own_sessions`, or says in
    /// one line that another gateway serves it (or that an earlier one's statements still run).
    pub async fn take(pool: &Pool, url: &str, own_sessions: &str) -> anyhow::Result<Self> {
        let interval = Duration::from_millis(CLAIM_CHECK_INTERVAL_MS);
        Self::take_checking_every(pool, url, own_sessions, interval).await
    }

    /// [`take`](Self::take), its connection checked every `interval`.
    pub async fn take_checking_every(
        pool: &Pool,
        url: &str,
        own_sessions: &str,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let Some(holder) = claim(pool).await? else {
            bail!(
                "another payhub serve is running on database {}: one gateway per database, so \
                 stop it first",
                redacted_url(url)
            );
        };
        let keeper = tokio::spawn(keep(
            pool.clone(),
            holder,
            interval,
            own_sessions.to_owned(),
        ));
        let claim = Self { keeper };
        wait_for_earlier_gateways(pool, own_sessions, interval).await?;
        Ok(claim)
    }
}

/// An earlier gateway's session, as `pg_stat_activity` shows it.
struct EarlierSession {
    pid: i32,
    /// Running a statement, or in a transaction that may still commit.
    may_write: bool,
}

async fn earlier_sessions(pool: &Pool, own: &str) -> Result<Vec<EarlierSession>, StoreError> {
    let client = pool.get().await?;
    // Another role's sessions show no state: counted as writing.
    let rows = client
        .query(
            "SELECT pid, coalesce(state NOT IN ('idle', 'disabled'), true)
               FROM pg_stat_activity
              WHERE datname = current_database() AND application_name LIKE $1 || '%'
                AND application_name <> $2",
            &[&SESSION_NAME_PREFIX, &own],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| EarlierSession {
            pid: r.get(0),
            may_write: r.get(1),
        })
        .collect())
}

/// Returns once no earlier gateway may still write: none of its sessions is left, or those left
/// are idle and it has had two claim checks to see its claim lost and stop (a gateway whose host
/// died leaves idle sessions until TCP gives up on them). Fails after
/// `EARLIER_STATEMENTS_CHECKS_MAX` checks with a session that may still write.
async fn wait_for_earlier_gateways(
    pool: &Pool,
    own: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let settled = started + 2 * interval;
    let give_up = started + interval * EARLIER_STATEMENTS_CHECKS_MAX;
    let mut warned = false;
    loop {
        let left = earlier_sessions(pool, own).await?;
        let writing: Vec<i32> = left.iter().filter(|s| s.may_write).map(|s| s.pid).collect();
        let now = tokio::time::Instant::now();
        if left.is_empty() || (writing.is_empty() && now >= settled) {
            return Ok(());
        }
        if now >= give_up {
            bail!(
                "an earlier payhub serve's sessions on the database are still running statements \
                 (backend pids {writing:?}): a payment they move on must not be resumed as if \
                 stopped. Wait for them, or end them with pg_terminate_backend, and start again"
            );
        }
        if !warned {
            tracing::warn!(
                sessions = left.len(),
                "waiting for an earlier gateway's sessions on the database to end"
            );
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(EARLIER_SESSIONS_POLL_MS)).await;
    }
}

/// A connection out of the pool holding the lock, or `None` when another session holds it.
async fn claim(pool: &Pool) -> Result<Option<ClientWrapper>, StoreError> {
    // Out of the pool at once: the connection, and with it the lock, lives as long as the claim,
    // and one that failed to claim in time is closed rather than handed out again.
    let client = deadpool_postgres::Object::take(pool.get().await?);
    let claimed: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SERVING_LOCK_KEY])
        .await?
        .get(0);
    Ok(claimed.then_some(client))
}

/// Checks the holder every `interval`; replaces one that was lost or that does not answer
/// within `interval` (a database host that vanished answers nothing, and TCP would take many
/// minutes to say so, while another gateway may claim the database that took its place).
async fn keep(pool: Pool, mut holder: ClientWrapper, interval: Duration, own: String) {
    loop {
        tokio::time::sleep(interval).await;
        let check = tokio::time::timeout(interval, holder.simple_query("SELECT 1")).await;
        if matches!(check, Ok(Ok(_))) {
            continue;
        }
        tracing::error!(
            "the connection that holds this gateway's claim on the database was lost or stopped \
             answering"
        );
        drop(holder);
        holder = claim_again(&pool, interval, &own).await;
        tracing::warn!("the database is claimed again");
    }
}

/// The claim taken again, each try bounded by `interval`. Held by this gateway's own earlier
/// connection (one that stopped answering us, still alive to the server), that session is ended
/// and the claim taken; held by another gateway, this process stops at once, as a crash would.
async fn claim_again(pool: &Pool, interval: Duration, own: &str) -> ClientWrapper {
    // Held by nobody of ours twice running: not a lock released between the two looks.
    let mut held_by_another = 0;
    loop {
        let error = match tokio::time::timeout(interval, claim(pool)).await {
            Ok(Ok(Some(holder))) => return holder,
            Ok(Ok(None)) => match end_own_stale_holder(pool, own, interval).await {
                Ok(true) => continue,
                Ok(false) if held_by_another == 0 => {
                    held_by_another += 1;
                    continue;
                }
                Ok(false) => {
                    tracing::error!(
                        "another payhub serve claimed the database meanwhile: stopping at once"
                    );
                    std::process::exit(1);
                }
                Err(e) => e.to_string(),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", interval.as_millis()),
        };
        tracing::error!(error, "cannot claim the database again yet");
        tokio::time::sleep(interval).await;
    }
}

/// Ends the session of this gateway's (named `own`) that holds the claim, if one does, waiting
/// up to `wait` for it to end: whether one did.
async fn end_own_stale_holder(pool: &Pool, own: &str, wait: Duration) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    // A bigint advisory key shows in `pg_locks` as its high and low 32 bits.
    let rows = client
        .query(
            "SELECT pg_terminate_backend(l.pid, $3)
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid::bigint = $1::bigint >> 32
                AND l.objid::bigint = $1::bigint & 4294967295 AND a.application_name = $2",
            &[&SERVING_LOCK_KEY, &own, &wait_ms],
        )
        .await?;
    Ok(!rows.is_empty())
}
