//! The PostgreSQL store: the connection pool, the embedded migrations, a private cluster for the
//! demo and the tests, and a fresh database per test.

pub mod create_batch;
pub mod customers;
pub mod group_commit;
pub mod idempotency;
pub mod local_cluster;
pub mod merchants;
pub mod messages;
pub mod payments;
pub mod prepared;
pub mod terminals;
pub mod testing;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use std::time::Duration;

refinery::embed_migrations!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database url: {0}")]
    BadUrl(String),
    /// Shown with PostgreSQL's reason; not a `source`, so that nothing shows the server's DETAIL.
    #[error("database: {}", postgres_reason(.0))]
    Postgres(tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("migrations: {0}")]
    Migration(String),
    #[error("database row: {0}")]
    Corrupt(String),
    #[error("database TLS: {0}")]
    Tls(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// Why a statement failed: PostgreSQL's message and SQLSTATE ("canceling statement due to
/// statement timeout (SQLSTATE 57014)"), or the client's error and its causes ("error connecting
/// to server: Connection refused"). Never the server's DETAIL, which may quote a row's values
/// (an account number in a duplicate key, say); tokio-postgres alone says only "db error".
fn postgres_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => with_causes(e),
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(with_causes(&e))
    }
}

/// An error and each of its causes, so that "error connecting to server" says why (for instance
/// "Connection refused"). A cause that its error's own message already holds is not repeated.
/// The server's DETAIL and HINT lines are left out, as [`StoreError::Postgres`] leaves them: they
/// may quote rows (an account in "Key (account)=(…) already exists"), also where a wrapping
/// error (refinery's) prints its cause in its own message.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    without_server_detail(&text)
}

/// `text` without the lines a PostgreSQL error's Display adds after its message.
fn without_server_detail(text: &str) -> String {
    text.lines()
        .filter(|line| !line.starts_with("DETAIL:") && !line.starts_with("HINT:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long a caller waits for a pooled connection before it gets an error.
pub const POOL_WAIT_TIMEOUT_MS: u64 = 5_000;
/// How long a new connection may take to open.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long data sent to the database may go unacknowledged before the connection is dropped
/// (`TCP_USER_TIMEOUT`), and how long a connection may sit idle before TCP probes its peer. A
/// database host that vanished (a failover) otherwise leaves each query waiting for as long as
/// the kernel retransmits, many minutes; the server's `statement_timeout` cannot end it.
pub const TCP_USER_TIMEOUT_MS: u64 = 30_000;
/// Idle time before a connection's first TCP keepalive probe (the system's default is 2 hours).
pub const TCP_KEEPALIVE_IDLE_MS: u64 = 30_000;
/// How long one statement may run, lock waits included, before PostgreSQL cancels it (the
/// default of `database.statement_timeout_ms`). Without it, a statement stuck behind a lock
/// holds its connection, and a group-commit writer's one batch, until the lock is released.
pub const STATEMENT_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// A database URL as messages show it: the user, the hosts and the database, never a password,
/// wherever the URL holds one (`user:pw@`, `?password=`, or `password=` in key-value form).
pub fn redacted_url(url: &str) -> String {
    let Ok(config) = tokio_postgres::Config::from_str(url) else {
        return "(a database URL that does not parse)".into();
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// What a TLS connection to PostgreSQL checks. Whether TLS is used at all is the URL's `sslmode`:
/// `disable`, `prefer` (the default: when the server offers it) or `require`.
#[derive(Debug, Clone, Default)]
pub enum DatabaseTls {
    /// Nothing, as libpq's `prefer` and `require`: the connection is encrypted, but a machine in
    /// the middle would not be noticed.
    #[default]
    Unchecked,
    /// The server's certificate must chain to this CA file alone and name the URL's host.
    CheckedAgainst(std::path::PathBuf),
}

impl DatabaseTls {
    fn connector(&self) -> Result<postgres_openssl::MakeTlsConnector, StoreError> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        let tls_err = |e: &dyn std::fmt::Display| StoreError::Tls(e.to_string());
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls_err(&e))?;
        match self {
            Self::Unchecked => builder.set_verify(SslVerifyMode::NONE),
            Self::CheckedAgainst(ca) => {
                let trusted = crate::tls_trust::trusting_only_file(ca).map_err(StoreError::Tls)?;
                builder.set_cert_store(trusted);
            }
        }
        Ok(postgres_openssl::MakeTlsConnector::new(builder.build()))
    }
}

/// What a pool is opened with, besides its URL.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub size: usize,
    pub tls: DatabaseTls,
    /// Set on each connection as `statement_timeout`; an `options` in the URL may override it.
    pub statement_timeout_ms: u64,
    /// Each connection's `application_name` (how `pg_stat_activity` tells its sessions apart).
    pub application_name: Option<String>,
}

impl PoolOptions {
    /// `size` connections, TLS unchecked, the default statement timeout.
    pub fn of_size(size: usize) -> Self {
        Self {
            size,
            tls: DatabaseTls::Unchecked,
            statement_timeout_ms: STATEMENT_TIMEOUT_MS_DEFAULT,
            application_name: None,
        }
    }
}

pub fn pool(url: &str, pool_size: usize) -> Result<Pool, StoreError> {
    pool_with(url, &PoolOptions::of_size(pool_size))
}

pub fn pool_with(url: &str, options: &PoolOptions) -> Result<Pool, StoreError> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| StoreError::BadUrl(e.to_string()))?;
    config.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
    // Unless the URL names them (`tcp_user_timeout`, in seconds for tokio-postgres, 0 for the
    // system's default; `keepalives_idle`, in seconds): its values parse to what a default
    // would, so the names are looked for.
    if !url.contains("tcp_user_timeout") {
        config.tcp_user_timeout(Duration::from_millis(TCP_USER_TIMEOUT_MS));
    }
    if !url.contains("keepalives_idle") {
        config.keepalives_idle(Duration::from_millis(TCP_KEEPALIVE_IDLE_MS));
    }
    let timeout = format!("-c statement_timeout={}", options.statement_timeout_ms);
    let startup = match config.get_options() {
        Some(from_url) => format!("{timeout} {from_url}"),
        None => timeout,
    };
    config.options(&startup);
    if let Some(name) = &options.application_name {
        config.application_name(name);
    }
    let manager = Manager::from_config(
        config,
        options.tls.connector()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_millis(POOL_WAIT_TIMEOUT_MS)))
        .create_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)))
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

/// Applies the embedded migrations; safe to run again.
pub async fn migrate(pool: &Pool) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    // A migration may rebuild a large table, and wait for another run's lock: neither is a
    // stuck statement. The connection goes back to the pool with its timeout, whatever happened.
    client.batch_execute("SET statement_timeout = 0").await?;
    let applied = migrate_one_at_a_time(&mut client).await;
    let reset = client.batch_execute("RESET statement_timeout").await;
    let applied = applied?;
    reset?;
    Ok(applied)
}

/// How far the database's schema is from this build's: the newest migration applied (`None`:
/// never migrated) against the newest embedded, when the database is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaBehind {
    pub applied: Option<u32>,
    pub needed: u32,
}

/// `Some` when the database lacks a migration this build has: a gateway must not serve on it.
pub async fn schema_behind(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Option<SchemaBehind>, StoreError> {
    let needed = migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0);
    let migrated: bool = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let applied = match migrated {
        false => None,
        true => client
            .query_one("SELECT max(version) FROM refinery_schema_history", &[])
            .await?
            .get::<_, Option<i32>>(0)
            .map(|v| u32::try_from(v).unwrap_or(0)),
    };
    Ok((applied.unwrap_or(0) < needed).then_some(SchemaBehind { applied, needed }))
}

/// One run at a time: two `payhub migrate` at once (two deploy scripts, say) would both apply the
/// same migration, and one would fail half-way through the set.
async fn migrate_one_at_a_time(
    client: &mut deadpool_postgres::Object,
) -> Result<usize, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    // Set once the run's own lock is held: waiting for another run is no stall.
    let bounded = client
        .batch_execute(&format!("SET lock_timeout = {MIGRATION_LOCK_WAIT_MAX_MS}"))
        .await;
    let report = match bounded {
        Ok(()) => (migrations::runner().run_async(&mut ***client).await)
            .map_err(|e| StoreError::Migration(with_causes(&e))),
        Err(e) => Err(e.into()),
    };
    let reset = client.batch_execute("RESET lock_timeout").await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = report?;
    reset?;
    unlocked?;
    Ok(report.applied_migrations().len())
}

/// The session advisory lock that `migrate` holds while it runs ("payhub" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7061_7968_7562;

/// The longest a migration waits for a table's lock. A migration that waits longer is refused
/// (run it again later): while its lock request waits behind a long query, every statement on
/// that table queues behind the request, and a live gateway's payments with them.
pub const MIGRATION_LOCK_WAIT_MAX_MS: u64 = 10_000;

/// A short fingerprint of the embedded migrations, so a template database made from an older set
/// is never reused.
pub fn migrations_fingerprint() -> String {
    let mut sum: u64 = 0;
    for m in migrations::runner().get_migrations() {
        sum = sum.wrapping_mul(31).wrapping_add(m.checksum());
    }
    format!("{sum:016x}")
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn a_shown_database_url_never_carries_its_password() {
        for url in [
            "postgres://payhub:hunter2@db.example:5433/payhub",
            "postgres://payhub@db.example:5433/payhub?password=hunter2&sslmode=require",
            "host=db.example port=5433 user=payhub password=hunter2 dbname=payhub",
        ] {
            assert_eq!(
                redacted_url(url),
                "postgres://payhub@db.example:5433/payhub",
                "{url}"
            );
        }
        assert!(!redacted_url("postgres://u:hunter2@[bad").contains("hunter2"));
    }
}
