//! Every pooled connection carries a statement timeout: a statement stuck behind another
//! session's lock is cancelled with an error, instead of holding its connection until the lock
//! goes. A migration, which may wait for another run or rebuild a large table, has none.

use payhub_actors::store::testing::fresh_database;
use payhub_actors::store::{PoolOptions, StoreError, migrate, pool, pool_with};

async fn shown_timeout(pool: &deadpool_postgres::Pool) -> String {
    let client = pool.get().await.unwrap();
    client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0)
}

fn one_connection_timed_out_at(url: &str, statement_timeout_ms: u64) -> deadpool_postgres::Pool {
    let options = PoolOptions {
        statement_timeout_ms,
        ..PoolOptions::of_size(1)
    };
    pool_with(url, &options).unwrap()
}

#[tokio::test]
async fn a_statement_stuck_behind_a_lock_is_cancelled_at_the_timeout() {
    let db = fresh_database().await;
    let timed = one_connection_timed_out_at(&db.url, 300);
    assert_eq!(shown_timeout(&timed).await, "300ms");

    // Another session holds the table's lock and does not let go.
    let mut holder = db.pool.get().await.unwrap();
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let client = timed.get().await.unwrap();
    let waited = client
        .execute(
            "INSERT INTO audit_log (at, event) VALUES (now(), 'behind-a-lock')",
            &[],
        )
        .await
        .map_err(StoreError::from);
    let error = waited.expect_err("cancelled, not waiting for the lock");
    assert!(error.to_string().contains("statement timeout"), "{error}");
    lock.rollback().await.unwrap();
    // The connection is usable again once the lock is gone.
    client
        .execute(
            "INSERT INTO audit_log (at, event) VALUES (now(), 'after-the-lock')",
            &[],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_default_is_ten_seconds_and_the_url_may_override_it() {
    let db = fresh_database().await;
    assert_eq!(shown_timeout(&pool(&db.url, 1).unwrap()).await, "10s");
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}options=-c%20statement_timeout%3D1234", db.url);
    assert_eq!(shown_timeout(&pool(&url, 1).unwrap()).await, "1234ms");
}

#[tokio::test]
async fn a_migration_runs_without_the_timeout_and_leaves_it_as_it_was() {
    let db = fresh_database().await;
    let timed = one_connection_timed_out_at(&db.url, 300);
    assert_eq!(migrate(&timed).await.unwrap(), 0);
    assert_eq!(shown_timeout(&timed).await, "300ms");
}
