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
