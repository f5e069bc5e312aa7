//! The group-commit writer's bounds: a write whose asker stopped waiting is not made late.

use payhub_actors::store::group_commit::{Limits, Writer};
use payhub_actors::store::testing::fresh_database_with_pool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn a_write_whose_asker_gave_up_is_not_made() {
    // One connection, held by the test: the first batch waits for it.
    let db = fresh_database_with_pool(1).await;
    let held = db.pool.get().await.unwrap();
    let made = Arc::new(Mutex::new(Vec::new()));
    let limits = Limits {
        batch_max: 8,
        in_flight_max: 1,
        queue_max: 8,
        answer_wait_max_ms: 200,
    };
    let record = Arc::clone(&made);
    let writer: Writer<u32, ()> = Writer::start(db.pool.clone(), limits, move |pool, batch| {
        let record = Arc::clone(&record);
        async move {
            let _connection = pool.get().await;
            for job in batch {
                record.lock().unwrap().push(job.write);
                job.reply(Ok(()));
            }
        }
    });

    // Write 1 takes the only batch slot and waits for the connection; write 2 waits in the
    // queue behind it. Both askers give up after 200 ms.
    let first = tokio::spawn({
        let writer = writer.clone();
        async move { writer.ask(1).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(writer.ask(2).await.is_err(), "the wait is bounded");
    assert!(first.await.unwrap().is_err());

    drop(held);
    writer.ask(3).await.unwrap();
    assert_eq!(
        *made.lock().unwrap(),
        vec![1, 3],
        "write 1 was already in its batch (its outcome was unknown to its asker); write 2 was \
         still queued when its asker gave up, so it was never made"
    );
}
