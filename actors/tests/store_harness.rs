//! The test harness itself: a fresh, migrated database per test, isolated from the others.

use payhub_actors::store::testing::fresh_database;

#[tokio::test]
async fn each_test_gets_its_own_migrated_database() {
    let a = fresh_database().await;
    let b = fresh_database().await;
    let ca = a.pool.get().await.unwrap();
    let cb = b.pool.get().await.unwrap();
    ca.execute(
        "INSERT INTO audit_log (at, event) VALUES (now(), 'harness-check')",
        &[],
    )
    .await
    .unwrap();
    let in_a: i64 = ca
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    let in_b: i64 = cb
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((in_a, in_b), (1, 0));
    let db_a: String = ca
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(db_a.starts_with("payhub_test_"));
}

#[tokio::test]
async fn migrations_are_safe_to_run_again() {
    let db = fresh_database().await;
    let applied = payhub_actors::store::migrate(&db.pool).await.unwrap();
    assert_eq!(applied, 0, "a migrated database has nothing left to apply");
}
