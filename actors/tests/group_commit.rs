//! The group-commit writer's bounds: a write whose asker stopped waiting is not made late; a
//! lingering batch waits for writes that come soon after its first, and no longer.

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
        linger_ms: 0,
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

/// Writes `batch` sizes to `sizes`; each write answers at once.
fn batch_size_recorder(linger_ms: u64, sizes: Arc<Mutex<Vec<usize>>>) -> Writer<u32, ()> {
    // Never connected: these batches touch no database, so paused time cannot fire a timeout
    // while a connection is being made.
    let pool = payhub_actors::store::pool("postgres://127.0.0.1:1/unused", 1).unwrap();
    let limits = Limits {
        batch_max: 3,
        in_flight_max: 1,
        queue_max: 8,
        linger_ms,
        answer_wait_max_ms: 5_000,
    };
    Writer::start(pool, limits, move |_pool, batch| {
        let sizes = Arc::clone(&sizes);
        async move {
            sizes.lock().unwrap().push(batch.len());
            for job in batch {
                job.reply(Ok(()));
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_lingering_batch_takes_the_writes_that_come_soon_after_its_first() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let lingering = batch_size_recorder(50, Arc::clone(&sizes));
    let ask_after = |writer: &Writer<u32, ()>, ms: u64, write: u32| {
        let writer = writer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            writer.ask(write).await
        })
    };

    // Two writes 20 ms apart, then one 100 ms later: the first two share a batch; the third
    // came after the linger ended.
    let asked = [
        ask_after(&lingering, 0, 1),
        ask_after(&lingering, 20, 2),
        ask_after(&lingering, 120, 3),
    ];
    for answer in asked {
        answer.await.unwrap().unwrap();
    }
    assert_eq!(*sizes.lock().unwrap(), vec![2, 1]);

    // A full batch does not wait out its linger: four writes at once make batches of 3 and 1,
    // and the first is answered before the linger (50 ms) would have ended.
    sizes.lock().unwrap().clear();
    let started = tokio::time::Instant::now();
    let asked: Vec<_> = (10..14).map(|w| ask_after(&lingering, 0, w)).collect();
    let mut answered = Vec::new();
    for answer in asked {
        answer.await.unwrap().unwrap();
        answered.push(started.elapsed());
    }
    assert_eq!(*sizes.lock().unwrap(), vec![3, 1]);
    assert!(answered[0] < Duration::from_millis(50), "{answered:?}");

    // Without a linger, writes 20 ms apart go alone.
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let eager = batch_size_recorder(0, Arc::clone(&sizes));
    let asked = [ask_after(&eager, 0, 1), ask_after(&eager, 20, 2)];
    for answer in asked {
        answer.await.unwrap().unwrap();
    }
    assert_eq!(*sizes.lock().unwrap(), vec![1, 1]);
}
