//! The payment create writer (group commit) against a real PostgreSQL: creates sent at once go
//! in batches, and every create gets the answer it would get alone.

use chrono::{Duration, Utc};
use payhub_actors::domain::{Amount, Currency, OrderId};
use payhub_actors::store::create_batch::CreateBatcher;
use payhub_actors::store::idempotency::{IdempotencyKey, request_hash};
use payhub_actors::store::payments::{self, CreateOutcome, KeyedRequest, NewPayment};
use payhub_actors::store::testing::{TestDb, fresh_database};
use std::sync::atomic::Ordering;

const MERCHANT: &str = "mer_batch";

fn new_payment(order_id: &str) -> NewPayment {
    let now = Utc::now();
    NewPayment {
        id: payhub_actors::ids::new_id("pay"),
        merchant_id: MERCHANT.into(),
        order_id: OrderId::parse(order_id).unwrap(),
        amount: Amount::parse(1_234).unwrap(),
        currency: Currency::parse("CNY").unwrap(),
        description: "2 books".into(),
        return_url: "https://shop.example/return".parse().unwrap(),
        notify_url: "https://shop.example/hooks".parse().unwrap(),
        created_at: now,
        expires_at: now + Duration::minutes(15),
    }
}

fn keyed(key: &str, request: &str) -> Option<KeyedRequest> {
    Some(KeyedRequest {
        key: IdempotencyKey::parse(key).unwrap(),
        request_hash: request_hash("POST", "/v1/payments", request),
    })
}

/// One create as the handler sends it: its 201 body names the payment.
struct Create {
    new: NewPayment,
    keyed: Option<KeyedRequest>,
}

impl Create {
    fn body(&self) -> String {
        format!("{{\"id\":\"{}\"}}", self.new.id)
    }
}

/// Sends every create at once and returns the outcomes in the same order.
async fn send_at_once(writer: &CreateBatcher, creates: &[Create]) -> Vec<CreateOutcome> {
    let sends = creates
        .iter()
        .map(|c| writer.create(c.new.clone(), c.keyed.clone(), c.body()));
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|outcome| outcome.expect("the database is up"))
        .collect()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let client = db.pool.get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Every key row answers with a payment that exists, and every payment created under a key has
/// its row: the two are never written apart.
async fn assert_keys_and_payments_agree(db: &TestDb) {
    let orphan_keys = count(
        db,
        "SELECT count(*) FROM idempotency_keys k WHERE NOT EXISTS \
         (SELECT 1 FROM payments p WHERE p.id = k.response_body::jsonb->>'id')",
    )
    .await;
    assert_eq!(
        orphan_keys, 0,
        "a key row answers with a payment that was not stored"
    );
}

#[tokio::test]
async fn a_burst_goes_in_batches_and_each_create_gets_its_own_answer() {
    let db = fresh_database().await;
    let stored = Create {
        new: new_payment("O-stored"),
        keyed: keyed("k-stored", "stored request"),
    };
    let client = db.pool.get().await.unwrap();
    let first = payments::create(&client, &stored.new, stored.keyed.as_ref(), &stored.body())
        .await
        .unwrap();
    assert_eq!(first, CreateOutcome::Created);
    drop(client);

    let mut creates: Vec<Create> = (0..40)
        .map(|i| Create {
            new: new_payment(&format!("O-{i}")),
            keyed: (i % 4 != 0)
                .then(|| keyed(&format!("k-{i}"), &format!("request {i}")))
                .flatten(),
        })
        .collect();
    // The stored key again: the same request is replayed, another is refused.
    creates.push(Create {
        new: new_payment("O-retry"),
        keyed: keyed("k-stored", "stored request"),
    });
    creates.push(Create {
        new: new_payment("O-other-body"),
        keyed: keyed("k-stored", "another request"),
    });
    // Twins inside the burst: a key sent twice, an order id under two keys.
    creates.push(Create {
        new: new_payment("O-twin-key"),
        keyed: keyed("k-twin", "twin request"),
    });
    creates.push(Create {
        new: new_payment("O-twin-key-again"),
        keyed: keyed("k-twin", "twin request"),
    });
    creates.push(Create {
        new: new_payment("O-twin-order"),
        keyed: keyed("k-twin-order-1", "order twin 1"),
    });
    creates.push(Create {
        new: new_payment("O-twin-order"),
        keyed: keyed("k-twin-order-2", "order twin 2"),
    });

    let writer = CreateBatcher::start(db.pool.clone());
    let outcomes = send_at_once(&writer, &creates).await;

    for outcome in &outcomes[..40] {
        assert_eq!(outcome, &CreateOutcome::Created);
    }
    assert_eq!(
        outcomes[40],
        CreateOutcome::Replay {
            status: 201,
            body: stored.body()
        }
    );
    assert_eq!(outcomes[41], CreateOutcome::KeyReused);
    assert_eq!(outcomes[42], CreateOutcome::Created);
    assert_eq!(
        outcomes[43],
        CreateOutcome::Replay {
            status: 201,
            body: creates[42].body()
        },
        "the twin key gets the first one's answer"
    );
    assert_eq!(outcomes[44], CreateOutcome::Created);
    assert_eq!(outcomes[45], CreateOutcome::OrderExists);

    // The stored one, 40 new, one twin key and one twin order.
    assert_eq!(
        count(&db, "SELECT count(*) FROM payments").await,
        1 + 40 + 1 + 1
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM idempotency_keys").await,
        1 + 30 + 1 + 1
    );
    assert_keys_and_payments_agree(&db).await;
    let counts = writer.counts();
    let batches = counts.batches.load(Ordering::Relaxed);
    let together = counts.created_in_batches.load(Ordering::Relaxed);
    assert!(batches >= 1, "nothing went in a batch");
    assert!(
        together > batches,
        "{together} creates in {batches} batches: no two went together"
    );
}

#[tokio::test]
async fn a_stored_order_id_refuses_its_batch_and_the_others_are_still_created() {
    let db = fresh_database().await;
    let client = db.pool.get().await.unwrap();
    let stored = new_payment("O-stored");
    payments::create(&client, &stored, None, "{}")
        .await
        .unwrap();
    drop(client);

    let mut creates: Vec<Create> = (0..20)
        .map(|i| Create {
            new: new_payment(&format!("O-{i}")),
            keyed: keyed(&format!("k-{i}"), &format!("request {i}")),
        })
        .collect();
    creates.push(Create {
        new: new_payment("O-stored"),
        keyed: keyed("k-late", "late request"),
    });

    let writer = CreateBatcher::start(db.pool.clone());
    let outcomes = send_at_once(&writer, &creates).await;

    for outcome in &outcomes[..20] {
        assert_eq!(outcome, &CreateOutcome::Created);
    }
    assert_eq!(outcomes[20], CreateOutcome::OrderExists);
    assert_eq!(count(&db, "SELECT count(*) FROM payments").await, 21);
    assert_eq!(
        count(&db, "SELECT count(*) FROM idempotency_keys").await,
        20,
        "the refused create left no key row"
    );
    assert_keys_and_payments_agree(&db).await;
    // Sent in one go on this single-threaded runtime, the 21 queue before the writer runs.
    assert_eq!(writer.counts().batches_refused.load(Ordering::Relaxed), 1);
    assert_eq!(writer.counts().written_alone.load(Ordering::Relaxed), 21);
}
