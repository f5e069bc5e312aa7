//! The expiry worker against real PostgreSQL with a manual clock: payments past their lifetime
//! become `expired` with their `payment.expired` event, in bounded batches; others are untouched.

use payhub::expiry::{self, ExpirySettings};
use payhub::http::merchant_testing::TestGateway;
use payhub_actors::Clock;
use payhub_actors::clock::SharedClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

async fn create(gw: &TestGateway, client: &reqwest::Client, order_id: &str) -> String {
    let res = client
        .post(gw.url("/v1/payments"))
        .json(
            &json!({"order_id": order_id, "amount": 500, "currency": "EUR",
                      "return_url": "https://s.example/r", "notify_url": "https://s.example/n"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[actix_rt::test]
async fn due_payments_expire_in_bounded_batches_with_their_webhook_event() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create(&gw, &client, &format!("E-{i}")).await);
    }
    let done = create(&gw, &client, "E-done").await;
    let processing = create(&gw, &client, "E-processing").await;
    let db = gw.db.pool.get().await.unwrap();
    db.execute(
        "UPDATE payments SET status = 'succeeded', approval_code = '123456' WHERE id = $1",
        &[&done],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE payments SET status = 'processing' WHERE id = $1",
        &[&processing],
    )
    .await
    .unwrap();

    let clock: SharedClock = Arc::new(gw.clock.clone());
    let mut settings = ExpirySettings::new(gw.settings.public_url.clone());
    settings.batch_max = 2;
    // Not yet due.
    gw.clock.advance(chrono::Duration::seconds(899));
    assert_eq!(
        expiry::run_once(&gw.db.pool, &clock, &settings)
            .await
            .unwrap(),
        0
    );
    gw.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(
        expiry::run_once(&gw.db.pool, &clock, &settings)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        expiry::run_once(&gw.db.pool, &clock, &settings)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        expiry::run_once(&gw.db.pool, &clock, &settings)
            .await
            .unwrap(),
        0
    );
    // Counted in the one series a payment's own expiry counts in, with no failure code.
    let metrics = payhub_actors::metrics::global().render();
    assert!(
        metrics.contains("payhub_payments_total{status=\"expired\",failure_code=\"\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("payhub_payments_total{status=\"expired\"}"),
        "{metrics}"
    );

    for id in &ids {
        let read: Value = client
            .get(gw.url(&format!("/v1/payments/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(read["status"], "expired");
        let row = db
            .query_one(
                "SELECT id, event_type, body, notify_url, merchant_id FROM webhook_events \
                 WHERE payment_id = $1",
                &[id],
            )
            .await
            .unwrap();
        let event: Value = serde_json::from_str(row.get::<_, &str>(2)).unwrap();
        assert_eq!(row.get::<_, &str>(1), "payment.expired");
        assert_eq!(event["id"], row.get::<_, &str>(0));
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(event["type"], "payment.expired");
        assert_eq!(event["data"], read);
        assert_eq!(row.get::<_, &str>(3), "https://s.example/n");
        assert_eq!(row.get::<_, &str>(4), shop.id);
    }
    let untouched: Vec<String> = db
        .query(
            "SELECT status FROM payments WHERE id = ANY($1) ORDER BY status",
            &[&vec![done.clone(), processing.clone()]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(untouched, ["processing", "succeeded"]);
    let events: i64 = db
        .query_one("SELECT count(*) FROM webhook_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 3);
    gw.stop().await;
}

#[actix_rt::test]
async fn the_spawned_worker_expires_and_stops() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let id = create(&gw, &client, "W-1").await;
    gw.clock.advance(chrono::Duration::minutes(16));
    let mut settings = ExpirySettings::new(gw.settings.public_url.clone());
    settings.interval_ms = 20;
    let worker = expiry::spawn(gw.db.pool.clone(), Arc::new(gw.clock.clone()), settings);
    let db = gw.db.pool.get().await.unwrap();
    let mut status = String::new();
    for _ in 0..250 {
        status = db
            .query_one("SELECT status FROM payments WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        if status == "expired" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, "expired");
    worker.stop().await;
    gw.stop().await;
}

#[actix_rt::test]
async fn stale_idempotency_keys_are_purged() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let res = client
        .post(gw.url("/v1/payments"))
        .header("Idempotency-Key", "old")
        .json(&json!({"order_id": "P-1", "amount": 5, "currency": "USD",
                      "return_url": "http://s.example/r", "notify_url": "http://s.example/n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let clock: SharedClock = Arc::new(gw.clock.clone());
    let settings = ExpirySettings::new(gw.settings.public_url.clone());
    let keys = || async {
        let db = gw.db.pool.get().await.unwrap();
        db.query_one("SELECT count(*) FROM idempotency_keys", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    gw.clock.advance(chrono::Duration::hours(23));
    expiry::run_once(&gw.db.pool, &clock, &settings)
        .await
        .unwrap();
    assert_eq!(keys().await, 1);
    gw.clock.advance(chrono::Duration::hours(2));
    expiry::run_once(&gw.db.pool, &clock, &settings)
        .await
        .unwrap();
    assert_eq!(keys().await, 0);
    gw.stop().await;
}

/// One sweep forgets every stale idempotency key, a batch at a time, even when no payment is
/// due: keys created faster than one batch per interval no longer pile up.
#[actix_rt::test]
async fn one_sweep_forgets_every_stale_key_batch_after_batch() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let db = gw.db.pool.get().await.unwrap();
    let old = gw.clock.now() - chrono::Duration::hours(25);
    db.execute(
        "INSERT INTO idempotency_keys
             (merchant_id, key, request_hash, response_status, response_body, created_at)
         SELECT $1, 'k' || n, '\\x00', 201, '{}', $2 FROM generate_series(1, 7) AS n",
        &[&shop.id, &old],
    )
    .await
    .unwrap();
    let mut settings = ExpirySettings::new(gw.settings.public_url.clone());
    settings.batch_max = 2;
    settings.interval_ms = 60_000;
    let worker = expiry::spawn(gw.db.pool.clone(), Arc::new(gw.clock.clone()), settings);
    let mut left = -1;
    for _ in 0..250 {
        left = db
            .query_one("SELECT count(*) FROM idempotency_keys", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "keys left after the first sweep");
    worker.stop().await;
    gw.stop().await;
}

#[actix_rt::test]
async fn a_payment_awaiting_its_code_is_left_to_its_actor_for_a_grace() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let id = create(&gw, &client, "C-1").await;
    let db = gw.db.pool.get().await.unwrap();
    db.execute(
        "UPDATE payments SET status = 'awaiting_code', code_hash = '\\x00',
             code_expires_at = now() WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let clock: SharedClock = Arc::new(gw.clock.clone());
    let settings = ExpirySettings::new(gw.settings.public_url.clone());
    let status = || async {
        let row = db
            .query_one("SELECT status FROM payments WHERE id = $1", &[&id])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    // Just past its lifetime: its actor expires it and tells the customer, not the sweep.
    gw.clock.advance(chrono::Duration::seconds(901));
    let swept = expiry::run_once(&gw.db.pool, &clock, &settings).await;
    assert_eq!(swept.unwrap(), 0);
    assert_eq!(status().await, "awaiting_code");
    // No actor took it within the grace: the sweep does.
    let grace = i64::try_from(settings.awaiting_code_grace_ms).unwrap();
    gw.clock.advance(chrono::Duration::milliseconds(grace));
    let swept = expiry::run_once(&gw.db.pool, &clock, &settings).await;
    assert_eq!(swept.unwrap(), 1);
    assert_eq!(status().await, "expired");
    // As the actors' own final write: the code is forgotten, and the audit log says who ended it.
    let row = db
        .query_one(
            "SELECT code_hash IS NULL AND code_expires_at IS NULL,
                    (SELECT detail->>'expired_by' FROM audit_log
                      WHERE payment_id = $1 AND event = 'expired')
               FROM payments WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the code hash is kept");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("expiry_sweep")
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn failed_sign_ins_are_forgotten_after_two_lockout_windows() {
    let gw = TestGateway::spawn(vec![]).await;
    let clock: SharedClock = Arc::new(gw.clock.clone());
    let settings = ExpirySettings::new(gw.settings.public_url.clone());
    let kept = i64::try_from(settings.login_failures_kept_s).unwrap();
    let now = gw.clock.now();
    let db = gw.db.pool.get().await.unwrap();
    for age_s in [kept + 1, kept - 60] {
        db.execute(
            "INSERT INTO login_failures (identity, failed_at) VALUES ('identity:x', $1)",
            &[&(now - chrono::Duration::seconds(age_s))],
        )
        .await
        .unwrap();
    }
    expiry::run_once(&gw.db.pool, &clock, &settings)
        .await
        .unwrap();
    let ages_left: Vec<f64> = db
        .query(
            "SELECT extract(epoch FROM $1 - failed_at)::float8 FROM login_failures",
            &[&now],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ages_left.len(), 1, "{ages_left:?}");
    assert!(
        (ages_left[0] - (kept - 60) as f64).abs() < 1.0,
        "{ages_left:?}"
    );
    gw.stop().await;
}
