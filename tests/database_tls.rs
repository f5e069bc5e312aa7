//! TLS to PostgreSQL: a private cluster that speaks TLS, reached with the URL's `sslmode` and,
//! when `database.tls_ca_cert` is set, its certificate checked against that CA alone.

use payhub::pki;
use payhub_actors::store::local_cluster::{ClusterOptions, ClusterTls, LocalCluster};
use payhub_actors::store::{DatabaseTls, PoolOptions, pool, pool_with, with_causes};
use std::os::unix::fs::PermissionsExt;

/// Whether the pool's connection is encrypted, as the server sees it.
async fn over_tls(pool: &deadpool_postgres::Pool) -> bool {
    let client = pool.get().await.expect("a connection");
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

async fn refusal(pool: &deadpool_postgres::Pool) -> String {
    let err = pool.get().await.expect_err("the connection is refused");
    with_causes(&err)
}

/// A private cluster in a fresh folder (not `DATABASE_URL`'s server, which may speak TLS).
fn private_cluster(dir: &tempfile::TempDir, options: ClusterOptions) -> LocalCluster {
    // The cluster runs as the `postgres` user, who must reach its data folder.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    LocalCluster::start(&dir.path().join("pg"), options).unwrap()
}

#[tokio::test]
async fn a_database_is_reached_over_tls_and_its_certificate_checked_when_a_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::new_ca("database CA").unwrap();
    let server = pki::issue_server(&ca, &["127.0.0.1".to_string()]).unwrap();
    let options = ClusterOptions {
        tls: Some(ClusterTls {
            cert_pem: server.cert_pem(),
            key_pem: server.key_pem(),
        }),
        ..ClusterOptions::TEST
    };
    let cluster = private_cluster(&dir, options);
    let url = format!("{}?sslmode=require", cluster.url("postgres"));
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let stranger_file = dir.path().join("stranger.crt");
    std::fs::write(&stranger_file, pki::new_ca("stranger").unwrap().cert_pem()).unwrap();

    // Unchecked, as libpq's `require`: encrypted.
    assert!(over_tls(&pool(&url, 1).unwrap()).await);
    // Checked against the right CA, for the URL's host.
    let checked = checked_against(ca_file);
    assert!(over_tls(&pool_with(&url, &checked).unwrap()).await);
    // Another CA: refused, saying why.
    let wrong = checked_against(stranger_file);
    let why = refusal(&pool_with(&url, &wrong).unwrap()).await;
    assert!(why.contains("certificate verify failed"), "{why}");
    // `sslmode=disable`: plain, as asked.
    let plain = format!("{}?sslmode=disable", cluster.url("postgres"));
    assert!(!over_tls(&pool(&plain, 1).unwrap()).await);
}

/// One connection whose server certificate must come from the CA in `ca_file`.
fn checked_against(ca_file: std::path::PathBuf) -> PoolOptions {
    PoolOptions {
        tls: DatabaseTls::CheckedAgainst(ca_file),
        ..PoolOptions::of_size(1)
    }
}

#[tokio::test]
async fn a_database_without_tls_refuses_a_url_that_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = private_cluster(&dir, ClusterOptions::TEST);
    let url = format!("{}?sslmode=require", cluster.url("postgres"));
    let why = refusal(&pool(&url, 1).unwrap()).await;
    assert!(why.contains("TLS") || why.contains("SSL"), "{why}");
    // The default, `prefer`: plain, since the server offers no TLS.
    assert!(!over_tls(&pool(&cluster.url("postgres"), 1).unwrap()).await);
}
