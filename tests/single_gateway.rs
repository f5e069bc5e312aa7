//! One gateway per database: the claim refuses a second gateway, and a claim whose connection is
//! lost is taken again.

use payhub::single_gateway::DatabaseClaim;
use payhub_actors::store::testing::fresh_database;
use std::time::Duration;

/// The backend that holds an advisory lock on this test's database.
async fn holder_pid(pool: &deadpool_postgres::Pool) -> Option<i32> {
    let client = pool.get().await.unwrap();
    client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[actix_rt::test]
async fn a_claim_whose_connection_is_lost_is_taken_again() {
    let db = fresh_database().await;
    let interval = Duration::from_millis(100);
    let claim = DatabaseClaim::take_checking_every(&db.pool, &db.url, interval)
        .await
        .unwrap();
    let second = DatabaseClaim::take(&db.pool, &db.url).await;
    let refused = second.err().expect("a second claim is refused").to_string();
    assert!(refused.contains("another payhub serve"), "{refused}");

    let first_pid = holder_pid(&db.pool).await.expect("held");
    let client = db.pool.get().await.unwrap();
    client
        .execute("SELECT pg_terminate_backend($1)", &[&first_pid])
        .await
        .unwrap();
    let mut taken_again = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        taken_again = holder_pid(&db.pool).await.filter(|pid| *pid != first_pid);
        if taken_again.is_some() {
            break;
        }
    }
    assert!(taken_again.is_some(), "the lock is held again");
    assert!(DatabaseClaim::take(&db.pool, &db.url).await.is_err());

    drop(claim);
    let mut free = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if holder_pid(&db.pool).await.is_none() {
            free = true;
            break;
        }
    }
    assert!(free, "dropped, the claim lets the database go");
}
