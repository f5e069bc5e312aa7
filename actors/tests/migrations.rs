//! Migrations run one at a time: two `payhub migrate` at once on an empty database both succeed,
//! one applying every migration and the other none.

use payhub_actors::store::testing::{admin_url, url_for_database};
use payhub_actors::store::{migrate, pool};

#[tokio::test]
async fn two_migrations_at_once_apply_the_set_once() {
    let admin = admin_url();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name = format!(
        "payhub_blank_{}",
        hex::encode(payhub_actors::ids::os_random::<6>())
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = url_for_database(&admin, &name);
    let (first, second) = (pool(&url, 1).unwrap(), pool(&url, 1).unwrap());
    let (a, b) = tokio::join!(migrate(&first), migrate(&second));
    let mut applied = [a.unwrap(), b.unwrap()];
    applied.sort();
    assert_eq!(applied[0], 0, "{applied:?}");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .unwrap()
        .count();
    assert_eq!(applied, [0, files]);
    assert_eq!(migrate(&first).await.unwrap(), 0, "safe to run again");
    first.close();
    second.close();
    client
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

/// A migration that waits for a table's lock (behind a long transaction) gives up within
/// `MIGRATION_LOCK_WAIT_MAX_MS` instead of queueing every statement on that table behind it; run
/// again once the table is free, it applies.
#[tokio::test]
async fn a_migration_waiting_for_a_table_gives_up_in_bounded_time() {
    use payhub_actors::store::MIGRATION_LOCK_WAIT_MAX_MS;
    use payhub_actors::store::testing::fresh_database;
    let db = fresh_database().await;
    let client = db.pool.get().await.unwrap();
    // V77 undone, as on a database one release behind.
    client
        .batch_execute(
            "ALTER TABLE payments DROP COLUMN debit_acquirer_id;
             DELETE FROM refinery_schema_history WHERE version >= 77;",
        )
        .await
        .unwrap();
    let (holder, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    holder
        .batch_execute("BEGIN; LOCK TABLE payments IN ACCESS SHARE MODE;")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let refused = migrate(&db.pool).await;
    let waited = started.elapsed();
    assert!(refused.is_err(), "{refused:?}");
    assert!(
        waited < std::time::Duration::from_millis(MIGRATION_LOCK_WAIT_MAX_MS + 5_000),
        "{waited:?}"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    let from_v77 = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .unwrap()
        .filter_map(|f| {
            let name = f.unwrap().file_name().into_string().unwrap();
            name.strip_prefix('V')?
                .split("__")
                .next()?
                .parse::<u32>()
                .ok()
        })
        .filter(|version| *version >= 77)
        .count();
    assert_eq!(migrate(&db.pool).await.unwrap(), from_v77);
}

/// A failing statement's DETAIL quotes rows. The error text an operator sees (a migration's, as
/// refinery prints its cause in its own message) leaves it out.
#[tokio::test]
async fn a_failure_leaves_out_the_rows_the_server_quotes() {
    #[derive(Debug)]
    struct Wrapping(tokio_postgres::Error);
    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "migration V99 failed: {}", self.0)
        }
    }
    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let db = payhub_actors::store::testing::fresh_database().await;
    let client = db.pool.get().await.unwrap();
    let failed = client
        .batch_execute(
            "CREATE TEMP TABLE accounts (account TEXT);
             INSERT INTO accounts VALUES ('6222000011112222'), ('6222000011112222');
             CREATE UNIQUE INDEX ON accounts (account);",
        )
        .await
        .unwrap_err();
    let server_said = std::error::Error::source(&failed).unwrap().to_string();
    assert!(server_said.contains("6222000011112222"), "{server_said}");

    let text = payhub_actors::store::with_causes(&Wrapping(failed));

    assert!(text.contains("could not create unique index"), "{text}");
    assert!(!text.contains("6222000011112222"), "{text}");
}
