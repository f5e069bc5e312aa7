//! One gateway per database. Payments in flight, bank links' STANs and their reversal queues
//! belong to the process that runs them: a second `payhub serve` on the same database would
//! resume the first one's `processing` payments as if after a crash, and reverse debits that are
//! still in flight (during a rolling deploy, say). So `serve` claims the database with a session
//! advisory lock, held on a connection of its own for the gateway's life; PostgreSQL releases it
//! when that connection ends, however the process ends.
//!
//! That connection is checked every few seconds. One that was lost (the backend was terminated,
//! an idle socket dropped) or that does not answer within a check's interval (its host vanished)
//! is replaced and the lock taken again on a new connection, ending first this gateway's own
//! stale session if the server still holds the lock for it. If another gateway took it meanwhile,
//! or the claim cannot be taken again within one more interval (the database down, or failed over
//! to a standby that another gateway may claim), this process stops at once, as a crash would, and
//! leaves its payments to the next gateway: it cannot tell an outage from a failover.
//!
//! The lock is released as soon as its connection ends, but an earlier gateway's statement may
//! still be running (a commit waiting for a disk or a synchronous standby), and a gateway whose
//! claim connection alone was lost writes until its next check. A payment that statement moves
//! on after the new gateway read it `processing` would be reversed though it succeeded. So each
//! gateway names its sessions (`application_name`), and a new claim waits until no earlier
//! gateway's session is running a statement or holding a transaction open, and, if any is left
//! connected, until that gateway has had time to see its claim lost and stop.
//!
//! After a failover to a standby, or a restart of the database server, no session of the earlier
//! gateway is left to see, yet it writes on (its pool reconnects) until its own check finds the
//! claim lost. So the holder's every check also writes a heartbeat (`gateway_claim`, V74), and a
//! new claim waits until four of the holder's intervals have passed since its last one (three
//! for it to stop, one as margin), unless the holder released the claim as it stopped.

use anyhow::bail;
use chrono::{DateTime, Utc};
use deadpool::managed::Manager as _;
use deadpool_postgres::{ClientWrapper, Pool};
use payhub_actors::store::{CONNECT_TIMEOUT_MS, StoreError, redacted_url};
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
/// The longest wait for an earlier holder's heartbeat to lapse, whatever its row says.
const HEARTBEAT_LAPSE_WAIT_MAX_MS: u64 = 60_000;
/// The longest a stopping gateway spends releasing its claim.
const RELEASE_TIMEOUT_MS: u64 = 2_000;

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
    pool: Pool,
    own_sessions: String,
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
        let first = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), claim(pool));
        let Ok(first) = first.await else {
            bail!(
                "database {} did not answer the claim within {CONNECT_TIMEOUT_MS} ms",
                redacted_url(url)
            );
        };
        let Claim::Held(holder) = first? else {
            bail!(
                "another payhub serve is running on database {}: one gateway per database, so \
                 stop it first",
                redacted_url(url)
            );
        };
        let claimed_at = tokio::time::Instant::now();
        let lapse = record_holder(&holder.client, own_sessions, interval).await?;
        let own = own_sessions.to_string();
        let keeper = tokio::spawn(keep(pool.clone(), holder, own.clone(), interval));
        let claim = Self {
            keeper,
            pool: pool.clone(),
            own_sessions: own,
        };
        if !lapse.is_zero() {
            tracing::warn!(
                wait_ms = lapse.as_millis(),
                "waiting for the earlier gateway's claim on the database to lapse"
            );
            tokio::time::sleep(lapse).await;
        }
        wait_for_earlier_gateways(pool, own_sessions, (claimed_at, interval)).await?;
        Ok(claim)
    }

    /// Says, as this gateway stops (its writes done), or as a start fails before any part of it
    /// ran, that the next one need not wait out its heartbeat; the claim ends with it. Within
    /// `RELEASE_TIMEOUT_MS`: a failure leaves the next start waiting, nothing worse.
    pub async fn release(self) {
        let released = async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE gateway_claim SET released = true WHERE holder = $1",
                    &[&self.own_sessions],
                )
                .await?;
            Ok::<_, StoreError>(())
        };
        let within = Duration::from_millis(RELEASE_TIMEOUT_MS);
        match tokio::time::timeout(within, released).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the claim on the database was not released"),
            Err(_) => tracing::warn!("the claim on the database was not released in time"),
        }
    }
}

/// Makes this gateway the holder in `gateway_claim`; how long an earlier holder's heartbeat has
/// yet to lapse, unless it released the claim: four of its intervals after its last check. It
/// stops three intervals after it last heard its check answered (a check, the check's timeout,
/// one more to claim again), which is later than the server stamped the check by the answer's
/// way back and its own timers' delays: one interval covers them.
async fn record_holder(
    client: &ClientWrapper,
    own: &str,
    interval: Duration,
) -> Result<Duration, StoreError> {
    let lapse_ms: Option<i64> = client
        .query_opt(
            "SELECT (EXTRACT(EPOCH FROM checked_at - now()) * 1000 + 4 * check_interval_ms)::bigint
               FROM gateway_claim WHERE holder <> $1 AND NOT released",
            &[&own],
        )
        .await?
        .map(|row| row.get(0));
    let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
    client
        .execute(
            "INSERT INTO gateway_claim (holder, checked_at, check_interval_ms)
             VALUES ($1, now(), $2)
             ON CONFLICT (id) DO UPDATE
                SET holder = $1, checked_at = now(), check_interval_ms = $2, released = false",
            &[&own, &interval_ms],
        )
        .await?;
    let lapse_ms = u64::try_from(lapse_ms.unwrap_or(0)).unwrap_or(0);
    Ok(Duration::from_millis(
        lapse_ms.min(HEARTBEAT_LAPSE_WAIT_MAX_MS),
    ))
}

/// The holder's check: its heartbeat written. `false` when the row names another holder.
async fn heartbeat(client: &ClientWrapper, own: &str) -> Result<bool, StoreError> {
    let updated = client
        .execute(
            "UPDATE gateway_claim SET checked_at = now() WHERE holder = $1",
            &[&own],
        )
        .await?;
    Ok(updated == 1)
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
/// are idle and it has had three intervals to see its claim lost and stop (a check, its timeout,
/// and the one more interval it has to claim again; a gateway whose host died leaves idle
/// sessions until TCP gives up on them). Fails after
/// `EARLIER_STATEMENTS_CHECKS_MAX` checks with a session that may still write.
async fn wait_for_earlier_gateways(
    pool: &Pool,
    own: &str,
    (started, interval): (tokio::time::Instant, Duration),
) -> anyhow::Result<()> {
    let settled = started + 3 * interval;
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

/// The connection that holds the lock, and how the server knows it: a backend's pid and start
/// tell this gateway's own stale session from any other (a pid alone may be reused).
struct Holder {
    client: ClientWrapper,
    pid: i32,
    started: DateTime<Utc>,
}

/// A try at the lock on a new connection: never a pooled one, which after a failover may be dead
/// and hang the claim, or wait behind a busy pool.
enum Claim {
    Held(Holder),
    /// Another session holds it; the connection that asked, to look further.
    Refused(ClientWrapper),
}

async fn claim(pool: &Pool) -> Result<Claim, StoreError> {
    let manager = pool.manager();
    let mut client = manager.create().await?;
    // Out of the pool's books: its statement cache is not the pool's to keep.
    manager.detach(&mut client);
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1), pid, backend_start
               FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[&SERVING_LOCK_KEY],
        )
        .await?;
    Ok(if row.get::<_, bool>(0) {
        Claim::Held(Holder {
            client,
            pid: row.get(1),
            started: row.get(2),
        })
    } else {
        Claim::Refused(client)
    })
}

/// Checks the holder every `interval`. One lost, or not answering within `interval` (a database
/// host that vanished answers nothing, and TCP would take minutes to say so), is replaced within
/// one more `interval`, or this process stops, as a crash would: it cannot tell a database
/// outage from a failover after which another gateway claims the new primary, and its actors
/// would go on writing there.
async fn keep(pool: Pool, mut holder: Holder, own: String, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let check = tokio::time::timeout(interval, heartbeat(&holder.client, &own)).await;
        match check {
            Ok(Ok(true)) => continue,
            Ok(Ok(false)) => {
                tracing::error!(
                    "another payhub serve is recorded as holding the database: stopping at once"
                );
                std::process::exit(1);
            }
            _ => {}
        }
        tracing::error!(
            "the connection that holds this gateway's claim on the database was lost or stopped \
             answering"
        );
        let stale = (holder.pid, holder.started);
        drop(holder);
        holder = match tokio::time::timeout(interval, claim_again(&pool, stale, interval)).await {
            Ok(holder) => holder,
            Err(_) => {
                tracing::error!(
                    within_ms = interval.as_millis(),
                    "cannot claim the database again in time: stopping at once, so that no \
                     other gateway finds this one still writing"
                );
                std::process::exit(1);
            }
        };
        tracing::warn!("the database is claimed again");
    }
}

/// What a try at claiming the database again found.
enum Retake {
    Claimed(Holder),
    /// Nobody held the lock once the try looked (released meanwhile), or this gateway's own
    /// stale session held it and was ended: try again.
    Again,
    /// Another session holds it, named so.
    HeldByAnother(String),
}

/// The claim taken again; the caller bounds how long (`interval`). `stale` is the lost holder's
/// backend (pid and start): if the server still holds the lock for it, that session is ended
/// (waiting up to half the interval, so that one more try fits) and the claim taken. Held by
/// anyone else, this process stops at once, as a crash would.
async fn claim_again(pool: &Pool, stale: (i32, DateTime<Utc>), interval: Duration) -> Holder {
    loop {
        match retake(pool, stale, interval / 2).await {
            Ok(Retake::Claimed(holder)) => return holder,
            Ok(Retake::Again) => {}
            Ok(Retake::HeldByAnother(session)) => {
                tracing::error!(
                    session,
                    "another payhub serve claimed the database meanwhile: stopping at once"
                );
                std::process::exit(1);
            }
            Err(e) => tracing::error!(error = %e, "cannot claim the database again yet"),
        }
        tokio::time::sleep(Duration::from_millis(RETAKE_PAUSE_MS)).await;
    }
}

/// Pause between tries at claiming the database again.
const RETAKE_PAUSE_MS: u64 = 50;

/// One try at the lock; when refused, who holds it, and this gateway's own stale session ended
/// (waiting up to `wait` for it to end).
async fn retake(
    pool: &Pool,
    stale: (i32, DateTime<Utc>),
    wait: Duration,
) -> Result<Retake, StoreError> {
    let client = match claim(pool).await? {
        Claim::Held(holder) => return Ok(Retake::Claimed(holder)),
        Claim::Refused(client) => client,
    };
    // A bigint advisory key shows in `pg_locks` as its high and low 32 bits, `objsubid` 1.
    let holder = client
        .query_opt(
            "SELECT l.pid, a.backend_start, coalesce(a.application_name, '')
               FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid::bigint = $1::bigint >> 32
                AND l.objid::bigint = $1::bigint & 4294967295",
            &[&SERVING_LOCK_KEY],
        )
        .await?;
    let Some(holder) = holder else {
        return Ok(Retake::Again);
    };
    let (pid, started): (i32, Option<DateTime<Utc>>) = (holder.get(0), holder.get(1));
    if (pid, started) != (stale.0, Some(stale.1)) {
        return Ok(Retake::HeldByAnother(holder.get(2)));
    }
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    client
        .execute("SELECT pg_terminate_backend($1, $2)", &[&pid, &wait_ms])
        .await?;
    Ok(Retake::Again)
}
