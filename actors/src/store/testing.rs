//! Test support: one PostgreSQL server per test process (`DATABASE_URL`, else a private cluster),
//! a migrated template database, and a fresh database per test that is dropped afterwards.
//!
//! ```ignore
//! let db = payhub_actors::store::testing::fresh_database().await;
//! let client = db.pool.get().await?;
//! ```

use super::local_cluster::{ClusterOptions, LocalCluster};
use deadpool_postgres::Pool;
use std::sync::OnceLock;
use tokio_postgres::NoTls;

/// Connections each test database's pool may open.
pub const TEST_POOL_SIZE: usize = 8;

static ADMIN_URL: OnceLock<Result<String, String>> = OnceLock::new();
static CLUSTER_OPTIONS: OnceLock<ClusterOptions> = OnceLock::new();
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// A database of its own for one test, migrated, dropped when the value is dropped.
pub struct TestDb {
    pub pool: Pool,
    pub url: String,
    name: String,
    admin_url: String,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("name", &self.name).finish()
    }
}

/// Benchmarks: this process's private cluster commits durably (fsync and synchronous_commit on),
/// as a real deployment does. Call before the first database; tests keep the fast cluster.
pub fn use_durable_cluster() {
    let _ = CLUSTER_OPTIONS.set(ClusterOptions::DEMO);
}

/// The admin URL of the server this test process uses. Panics (in tests only) with the reason when
/// no server can be had.
pub fn admin_url() -> String {
    match ADMIN_URL.get_or_init(start_server) {
        Ok(url) => url.clone(),
        Err(e) => panic!("no PostgreSQL for tests: {e}"),
    }
}

fn start_server() -> Result<String, String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(url);
    }
    let base = std::env::temp_dir().join("payhub-test-pg");
    remove_stale_clusters(&base);
    let dir = base.join(std::process::id().to_string());
    let options = CLUSTER_OPTIONS.get_or_init(|| ClusterOptions::TEST).clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // The cluster lives on a thread that never exits: the server's parent-death signal is tied to
    // this thread, so it stops when the test process ends, and not when one test's thread ends.
    std::thread::Builder::new()
        .name("pg-test-cluster".into())
        .spawn(move || match LocalCluster::start(&dir, options) {
            Ok(cluster) => {
                let _ = tx.send(Ok(cluster.url("postgres")));
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

/// Data folders left by test processes that no longer run.
fn remove_stale_clusters(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{name}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `base` with its database name replaced.
pub fn url_for_database(base: &str, db: &str) -> String {
    match url::Url::parse(base) {
        Ok(mut url) => {
            url.set_path(&format!("/{db}"));
            url.to_string()
        }
        Err(_) => base.to_string(),
    }
}

async fn admin_client(admin: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(admin, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
    tokio::spawn(conn);
    client
}

async fn template(admin: &str) -> String {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("payhub_tpl_{}", super::migrations_fingerprint());
            let client = admin_client(admin).await;
            // Several test processes may share one DATABASE_URL server.
            client
                .execute("SELECT pg_advisory_lock(8583)", &[])
                .await
                .expect("advisory lock");
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .expect("pg_database")
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
                    .await
                    .expect("drop");
                client
                    .batch_execute(&format!("CREATE DATABASE {building}"))
                    .await
                    .expect("create template");
                let pool =
                    super::pool(&url_for_database(admin, &building), 1).expect("template pool");
                super::migrate(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("migrating the template: {e}"));
                pool.close();
                drop(pool);
                client
                    .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .await
                    .expect("rename template");
            }
            client
                .execute("SELECT pg_advisory_unlock(8583)", &[])
                .await
                .expect("unlock");
            name
        })
        .await
        .clone()
}

/// A fresh, migrated database for one test.
pub async fn fresh_database() -> TestDb {
    fresh_database_with_pool(TEST_POOL_SIZE).await
}

/// A fresh, migrated database whose pool opens up to `pool_size` connections.
pub async fn fresh_database_with_pool(pool_size: usize) -> TestDb {
    let admin = admin_url();
    let tpl = template(&admin).await;
    let name = format!("payhub_test_{}", hex::encode(crate::ids::os_random::<6>()));
    let client = admin_client(&admin).await;
    client
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {tpl}"))
        .await
        .unwrap_or_else(|e| panic!("creating the test database: {e}"));
    let url = url_for_database(&admin, &name);
    let pool = super::pool(&url, pool_size).expect("test pool");
    TestDb {
        pool,
        url,
        name,
        admin_url: admin,
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let name = self.name.clone();
        let admin = self.admin_url.clone();
        // Drop runs outside any runtime guarantee, so the DROP DATABASE gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The plan PostgreSQL makes for `sql` on a fresh database, with sequential scans priced out:
/// whatever the table's size, a statement no index can serve still shows a scan.
pub async fn plan_without_seq_scans(sql: &str) -> String {
    let db = fresh_database().await;
    let client = db.pool.get().await.expect("a connection");
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .expect("setting the planner");
    let rows = client
        .query(&format!("EXPLAIN {sql}"), &[])
        .await
        .expect("a plan");
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}
