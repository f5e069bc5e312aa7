//! The webhook worker on its own: events written straight into the outbox, a real receiver on
//! port 0, and a merchant endpoint that accepts connections and never answers.

mod e2e_support;

use e2e_support::*;
use payhub::http::merchant_testing::TestPki;
use payhub::webhooks::{WebhookSettings, start_worker};
use payhub_actors::clock::SharedClock;
use payhub_actors::store::testing::fresh_database;
use std::sync::Arc;

/// An endpoint that takes each connection and holds it without a word, for as long as it runs.
async fn silent_endpoint() -> String {
    silent_endpoint_counting(Arc::default()).await
}

/// A silent endpoint that counts the connections it was opened.
async fn silent_endpoint_counting(connections: Arc<std::sync::atomic::AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            held.push(socket);
        }
    });
    format!("http://{addr}/hooks")
}

async fn write_event(pool: &deadpool_postgres::Pool, merchant: &Merchant, n: usize, url: &str) {
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO webhook_events (id, payment_id, merchant_id, event_type, body, notify_url,
                 created_at, next_attempt_at)
             VALUES ($1, $2, $3, 'payment.succeeded', '{}', $4, now(), now())",
            &[&format!("evt_{n}"), &format!("pay_{n}"), &merchant.id, &url],
        )
        .await
        .unwrap();
}

async fn delivered(pool: &deadpool_postgres::Pool) -> i64 {
    let client = pool.get().await.unwrap();
    let sql = "SELECT count(*) FROM webhook_events WHERE delivered_at IS NOT NULL";
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Hands event `id` of a merchant over to the worker as a payment does: a place reserved, the
/// event written leased to this worker, then handed over; `false` when the handoff had no room.
async fn hand_over(
    pool: &deadpool_postgres::Pool,
    outbox: &payhub_actors::transaction::outbox::WebhookOutbox,
    (merchant_id, secret): (&str, &str),
    id: &str,
    url: &str,
) -> bool {
    let now = chrono::Utc::now();
    let Some(reservation) = outbox.reserve(now) else {
        return false;
    };
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO webhook_events (id, payment_id, merchant_id, event_type, body, notify_url,
                 created_at, next_attempt_at)
             VALUES ($1, $1, $2, 'payment.succeeded', '{}', $3, $4, $5)",
            &[&id, &merchant_id, &url, &now, &reservation.leased_until],
        )
        .await
        .unwrap();
    let event = payhub_actors::transaction::outbox::WebhookEvent {
        id: id.into(),
        merchant_id: merchant_id.into(),
        body: "{}".into(),
        notify_url: url.into(),
        attempts: 0,
        created_at: now,
        secret: payhub_actors::Secret::new(secret.into()),
    };
    outbox.committed(Some(reservation), Some(event));
    true
}

/// A worker on the system clock.
fn start_on_system_clock(
    pool: &deadpool_postgres::Pool,
    settings: WebhookSettings,
) -> payhub::webhooks::WebhookWorker {
    let clock: SharedClock = Arc::new(payhub_actors::SystemClock);
    start_worker(pool.clone(), clock, settings).unwrap()
}

/// Starts a worker on the system clock, and waits until `events` events are delivered.
async fn deliver(
    pool: &deadpool_postgres::Pool,
    settings: WebhookSettings,
    events: i64,
) -> payhub::webhooks::WebhookWorker {
    let worker = start_on_system_clock(pool, settings);
    eventually("the events delivered", || async {
        delivered(pool).await == events
    })
    .await;
    worker
}

/// Deliveries start as slots free up, not in groups that wait for their slowest: an endpoint
/// that hangs holds one slot until its timeout, while the other events go out through the rest.
#[actix_rt::test]
async fn a_silent_endpoint_holds_one_slot_and_the_other_events_go_out() {
    let db = fresh_database().await;
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let receiver = Receiver::start(vec![]);
    let silent = silent_endpoint().await;
    write_event(&db.pool, &merchant, 0, &silent).await;
    for n in 1..=12 {
        write_event(&db.pool, &merchant, n, &receiver.url).await;
    }
    let settings = WebhookSettings {
        // Far beyond this test's wait: the silent event is still in flight at its end.
        timeout_ms: 60_000,
        concurrency_max: 2,
        ..webhook_settings()
    };
    let worker = deliver(&db.pool, settings, 12).await;
    assert_eq!(receiver.requests().len(), 12);
    let silent_attempts = "SELECT count(*) FROM webhook_attempts WHERE event_id = $1";
    assert_eq!(
        count(&db.pool, silent_attempts, "evt_0").await,
        0,
        "the silent endpoint's attempt is still under way"
    );
    worker.shutdown.cancel();
}

/// An endpoint that reads each request and closes the connection without an answer: the attempt
/// is recorded with why it failed, and without the URL, whose query may hold a merchant's token.
#[actix_rt::test]
async fn a_failed_attempt_says_why_without_the_url() {
    use tokio::io::AsyncReadExt;
    let db = fresh_database().await;
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            drop(socket);
        }
    });
    let url = format!("http://{addr}/hooks?token=s3cr3t");
    write_event(&db.pool, &merchant, 0, &url).await;
    let worker = start_on_system_clock(&db.pool, webhook_settings());
    let recorded = "SELECT count(*) FROM webhook_attempts WHERE event_id = $1";
    eventually("the attempt recorded", || async {
        count(&db.pool, recorded, "evt_0").await >= 1
    })
    .await;
    let client = db.pool.get().await.unwrap();
    let error: String = client
        .query_one(
            "SELECT error FROM webhook_attempts WHERE event_id = 'evt_0' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !error.contains("s3cr3t") && !error.contains("/hooks"),
        "{error}"
    );
    assert!(error.len() > "request: ".len(), "{error}");
    worker.shutdown.cancel();
}

/// A merchant whose endpoint has gone dark, with a backlog, holds at most three quarters of the
/// slots once its attempts are seen to time out: the other merchants' webhooks go out through the
/// rest, before the dark merchant's backlog has had its first attempts.
#[actix_rt::test]
async fn a_dark_merchant_holds_at_most_its_share_of_the_slots() {
    let db = fresh_database().await;
    let pki = TestPki::new();
    let dark = seed_merchant(&db.pool, &pki, "Dark Shop").await;
    let quick = seed_merchant(&db.pool, &pki, "Quick Shop").await;
    let receiver = Receiver::start(vec![]);
    let silent = silent_endpoint().await;
    // Written first, so each claim reaches the dark merchant's events before the other's.
    for n in 0..12 {
        write_event(&db.pool, &dark, n, &silent).await;
    }
    for n in 100..108 {
        write_event(&db.pool, &quick, n, &receiver.url).await;
    }
    let settings = WebhookSettings {
        timeout_ms: 3_000,
        concurrency_max: 4,
        ..webhook_settings()
    };
    let worker = deliver(&db.pool, settings, 8).await;
    assert_eq!(receiver.requests().len(), 8);
    let untried = "SELECT count(*) FROM webhook_events WHERE merchant_id = $1 AND attempts = 0";
    assert!(
        count(&db.pool, untried, &dark.id).await > 0,
        "the quick merchant's events did not wait for the whole dark backlog"
    );
    // The first four attempts found the merchant slow; the next ones held at most 3 of 4 slots.
    let attempts =
        "SELECT count(*) FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id
                    WHERE e.merchant_id = $1";
    eventually("a second round of the dark merchant's attempts", || async {
        count(&db.pool, attempts, &dark.id).await >= 7
    })
    .await;
    let spans = attempt_spans_ms(&db.pool, &dark.id).await;
    assert!(most_at_once(&spans[4..]) <= 3, "{spans:?}");
    worker.shutdown.cancel();
}

/// An event handed over in memory whose merchant is slow, while slow merchants hold their whole
/// share, does not start: it stays leased in the table, to be claimed once its lease runs out.
#[actix_rt::test]
async fn a_slow_merchants_handed_event_waits_for_its_lease_when_the_share_is_full() {
    use payhub_actors::metrics::global;
    use std::sync::atomic::Ordering::Relaxed;
    let db = fresh_database().await;
    let pki = TestPki::new();
    let dark = seed_merchant(&db.pool, &pki, "Dark Shop").await;
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let silent = silent_endpoint_counting(connections.clone()).await;
    for n in 0..8 {
        write_event(&db.pool, &dark, n, &silent).await;
    }
    let settings = WebhookSettings {
        timeout_ms: 3_000,
        concurrency_max: 4,
        ..webhook_settings()
    };
    let worker = start_on_system_clock(&db.pool, settings);
    // Four first attempts time out and make the merchant slow; then three start, its share.
    eventually("the slow merchant's share taken", || async {
        connections.load(Relaxed) == 7
    })
    .await;
    let held_back = global().webhook_held_back.get();
    let dark_merchant = (dark.id.as_str(), dark.webhook_secret.as_str());
    assert!(
        hand_over(
            &db.pool,
            &worker.outbox,
            dark_merchant,
            "evt_handed",
            &silent
        )
        .await
    );
    eventually("the handed event held back", || async {
        global().webhook_held_back.get() > held_back
    })
    .await;
    assert_eq!(connections.load(Relaxed), 7, "it did not start");
    let leased = "SELECT count(*) FROM webhook_events
                  WHERE id = $1 AND attempts = 0 AND next_attempt_at > now()";
    assert_eq!(
        count(&db.pool, leased, "evt_handed").await,
        1,
        "left to its lease"
    );
    worker.shutdown.cancel();
}

/// Handed events arriving faster than the slots free up do not hold back events only a claim
/// finds (a retry, an expiry's event, one the handoff had no room for): a quarter of the slots is
/// left to claims.
#[actix_rt::test]
async fn a_steady_stream_of_handed_events_does_not_starve_claimed_ones() {
    use std::sync::atomic::AtomicUsize;
    let db = fresh_database().await;
    let pki = TestPki::new();
    let busy = seed_merchant(&db.pool, &pki, "Busy Shop").await;
    let other = seed_merchant(&db.pool, &pki, "Other Shop").await;
    let busy_url = answering_endpoint(Arc::new(AtomicUsize::new(0)), 300).await;
    let other_url = answering_endpoint(Arc::new(AtomicUsize::new(0)), 0).await;
    let settings = WebhookSettings {
        timeout_ms: 3_000,
        concurrency_max: 4,
        ..webhook_settings()
    };
    let worker = start_on_system_clock(&db.pool, settings);
    // About 25 events a second for a merchant that takes 300 ms each: more than 4 slots serve.
    let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (pool, outbox, feeding) = (db.pool.clone(), worker.outbox.clone(), feeding.clone());
        let (merchant_id, secret) = (busy.id.clone(), busy.webhook_secret.clone());
        let url = busy_url.clone();
        actix_rt::spawn(async move {
            let mut n = 0;
            while feeding.load(std::sync::atomic::Ordering::Relaxed) {
                let merchant = (merchant_id.as_str(), secret.as_str());
                let id = format!("evt_busy_{n}");
                n += usize::from(hand_over(&pool, &outbox, merchant, &id, &url).await);
                tokio::time::sleep(std::time::Duration::from_millis(40)).await;
            }
        })
    };
    // The stream has filled the slots and the handoff's queue.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    write_event(&db.pool, &other, 1, &other_url).await;
    eventually("the claimed event delivered", || async {
        count(
            &db.pool,
            "SELECT count(*) FROM webhook_events WHERE id = $1 AND delivered_at IS NOT NULL",
            "evt_1",
        )
        .await
            == 1
    })
    .await;
    // Delivered while the stream still ran, not after it.
    let still_feeding = feeding.swap(false, std::sync::atomic::Ordering::Relaxed);
    assert!(still_feeding);
    feeder.await.unwrap();
    worker.shutdown.cancel();
}

/// A backlog of due events (after an outage, say) does not hold back the events handed over
/// meanwhile: claims keep to a quarter of the slots while handed events wait.
#[actix_rt::test]
async fn a_due_backlog_does_not_starve_handed_events() {
    use std::sync::atomic::AtomicUsize;
    let db = fresh_database().await;
    let pki = TestPki::new();
    let behind = seed_merchant(&db.pool, &pki, "Behind Shop").await;
    let fresh = seed_merchant(&db.pool, &pki, "Fresh Shop").await;
    let behind_url = answering_endpoint(Arc::new(AtomicUsize::new(0)), 300).await;
    let fresh_url = answering_endpoint(Arc::new(AtomicUsize::new(0)), 0).await;
    for n in 0..60 {
        write_event(&db.pool, &behind, n, &behind_url).await;
    }
    let settings = WebhookSettings {
        timeout_ms: 3_000,
        concurrency_max: 4,
        ..webhook_settings()
    };
    let worker = start_on_system_clock(&db.pool, settings);
    let backlog_delivered = "SELECT count(*) FROM webhook_events
                             WHERE merchant_id = $1 AND delivered_at IS NOT NULL";
    eventually("the backlog under way", || async {
        count(&db.pool, backlog_delivered, &behind.id).await >= 4
    })
    .await;
    let fresh_merchant = (fresh.id.as_str(), fresh.webhook_secret.as_str());
    assert!(
        hand_over(
            &db.pool,
            &worker.outbox,
            fresh_merchant,
            "evt_handed",
            &fresh_url
        )
        .await
    );
    let handed_delivered =
        "SELECT count(*) FROM webhook_events WHERE id = $1 AND delivered_at IS NOT NULL";
    eventually("the handed event delivered", || async {
        count(&db.pool, handed_delivered, "evt_handed").await == 1
    })
    .await;
    assert!(
        count(&db.pool, backlog_delivered, &behind.id).await < 60,
        "delivered while the backlog still waited"
    );
    worker.shutdown.cancel();
}

/// Each recorded attempt of `merchant_id`'s events as (start, end) in ms, by start.
async fn attempt_spans_ms(pool: &deadpool_postgres::Pool, merchant_id: &str) -> Vec<(f64, f64)> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT (extract(epoch FROM a.attempted_at) * 1000 - a.duration_ms)::float8,
                    (extract(epoch FROM a.attempted_at) * 1000)::float8
             FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id
             WHERE e.merchant_id = $1 ORDER BY 1",
            &[&merchant_id],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The most of `spans` under way at once.
fn most_at_once(spans: &[(f64, f64)]) -> usize {
    spans
        .iter()
        .map(|(at, _)| spans.iter().filter(|(s, e)| s <= at && at < e).count())
        .max()
        .unwrap_or(0)
}

/// An endpoint that answers every request `200` with a short body, as many merchants' do, on
/// connections it keeps open, `delay_ms` after the request; it counts the connections it was
/// opened.
async fn answering_endpoint(
    connections: Arc<std::sync::atomic::AtomicUsize>,
    delay_ms: u64,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            actix_rt::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = socket.read(&mut chunk).await {
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(end) = whole_request(&buffer) {
                        buffer.drain(..end);
                        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                        // The body after the head, as a framework that streams it sends it.
                        let head = "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n";
                        if socket.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        if socket.write_all(b"{\"received\":1}\n").await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}/hooks")
}

/// The length of the first whole request in `buffer` (headers and a `content-length` body).
fn whole_request(buffer: &[u8]) -> Option<usize> {
    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (buffer.len() >= head_end + body_len).then_some(head_end + body_len)
}

/// A merchant's answer is read to its end, so the connection serves the next delivery: an answer
/// left unread made every webhook open a connection (and, over HTTPS, a TLS handshake) of its own.
#[actix_rt::test]
async fn answers_with_a_body_are_read_and_the_connection_is_reused() {
    let db = fresh_database().await;
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = answering_endpoint(connections.clone(), 0).await;
    for n in 1..=6 {
        write_event(&db.pool, &merchant, n, &url).await;
    }
    let settings = WebhookSettings {
        // One delivery at a time: each can take the connection the one before left.
        concurrency_max: 1,
        ..webhook_settings()
    };
    let worker = deliver(&db.pool, settings, 6).await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one connection for six deliveries"
    );
    worker.shutdown.cancel();
}

/// A worker told to stop lets the delivery under way finish and records it before `finished`
/// returns, so the gateway closes its pool only after: an attempt left unrecorded would be sent
/// again once its lease ran out.
#[actix_rt::test]
async fn a_stopping_worker_records_the_delivery_under_way() {
    let db = fresh_database().await;
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = answering_endpoint(connections.clone(), 500).await;
    write_event(&db.pool, &merchant, 1, &url).await;
    let worker = start_on_system_clock(&db.pool, webhook_settings());
    eventually("the delivery under way", || async {
        connections.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    worker.shutdown.cancel();
    worker.finished().await;
    assert_eq!(delivered(&db.pool).await, 1);
}

/// An attempt recorded after the event's delivery (a duplicate sent once its lease ran out, and
/// refused) is kept in the attempts, and leaves the event delivered: it would otherwise be sent
/// again, or marked given up.
#[actix_rt::test]
async fn a_late_failed_attempt_does_not_undo_a_delivery() {
    use chrono::Utc;
    use payhub::webhooks::attempts::{self, Attempt};
    use payhub_actors::store::group_commit::RowWrite;
    let db = fresh_database().await;
    let merchant = seed_merchant(&db.pool, &TestPki::new(), "Book Shop").await;
    write_event(&db.pool, &merchant, 1, "http://127.0.0.1:9/hooks").await;
    let writer = attempts::start(db.pool.clone());
    let now = Utc::now();
    let attempt = |attempts, status_code, delivered_at, given_up_at| Attempt {
        event_id: "evt_1".into(),
        at: now,
        status_code: Some(status_code),
        error: None,
        duration_ms: 5,
        attempts,
        next_attempt_at: now + chrono::Duration::hours(1),
        delivered_at,
        given_up_at,
    };
    writer.ask(attempt(1, 200, Some(now), None)).await.unwrap();
    // Alone, and in a batch (with another event's first attempt).
    writer.ask(attempt(2, 503, None, Some(now))).await.unwrap();
    write_event(&db.pool, &merchant, 2, "http://127.0.0.1:9/hooks").await;
    let other = Attempt {
        event_id: "evt_2".into(),
        ..attempt(1, 503, None, None)
    };
    let client = db.pool.get().await.unwrap();
    let late = attempt(3, 503, None, Some(now));
    Attempt::write_together(&client, &[&late, &other])
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT delivered_at IS NOT NULL, given_up_at IS NULL, attempts,
                    (SELECT count(*) FROM webhook_attempts WHERE event_id = 'evt_1'),
                    (SELECT attempts FROM webhook_events WHERE id = 'evt_2')
             FROM webhook_events WHERE id = 'evt_1'",
            &[],
        )
        .await
        .unwrap();
    let state: (bool, bool, i32, i64, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(state, (true, true, 1, 3, 1));
}

/// With `allow_private_destinations = false`, a `notify_url` naming a loopback address, or
/// `localhost`, is not posted to: each attempt is recorded as refused, with its reason, and the
/// event is retried on the usual schedule (a name's addresses may change).
#[actix_rt::test]
async fn private_destinations_are_refused_when_the_operator_says_so() {
    let db = fresh_database().await;
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let receiver = Receiver::start(vec![]);
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    write_event(&db.pool, &merchant, 0, &receiver.url).await;
    write_event(&db.pool, &merchant, 1, &by_name).await;
    let settings = WebhookSettings {
        allow_private_destinations: false,
        ..webhook_settings()
    };
    let worker = start_on_system_clock(&db.pool, settings);
    let refused =
        "SELECT count(*) FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id
         WHERE e.id = $1 AND a.error LIKE 'refused: % is not a public address'
           AND a.status_code IS NULL AND e.delivered_at IS NULL AND e.given_up_at IS NULL
           AND e.attempts = 1 AND e.next_attempt_at > now()";
    for event in ["evt_0", "evt_1"] {
        eventually("the attempt refused", || async {
            count(&db.pool, refused, event).await == 1
        })
        .await;
    }
    assert!(receiver.requests().is_empty());
    worker.shutdown.cancel();
}

/// A name that resolves only inside the network (here the machine's own name, which the hosts
/// file points at a loopback address) is resolved by the worker to no address at all.
#[actix_rt::test]
async fn a_name_resolving_only_to_private_addresses_is_not_connected_to() {
    let Some(own_name) = own_name_resolving_privately().await else {
        eprintln!("skipped: this machine's name does not resolve to a private address");
        return;
    };
    let db = fresh_database().await;
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let receiver = Receiver::start(vec![]);
    let by_name = receiver.url.replace("127.0.0.1", &own_name);
    write_event(&db.pool, &merchant, 0, &by_name).await;
    let settings = WebhookSettings {
        allow_private_destinations: false,
        ..webhook_settings()
    };
    let worker = start_on_system_clock(&db.pool, settings);
    let refused = "SELECT count(*) FROM webhook_attempts
         WHERE event_id = $1 AND error LIKE 'connect: % resolves to no public address'";
    eventually("the attempt refused", || async {
        count(&db.pool, refused, "evt_0").await == 1
    })
    .await;
    assert!(receiver.requests().is_empty());
    worker.shutdown.cancel();
}

/// The machine's host name, when it resolves, and only to addresses that are not public.
async fn own_name_resolving_privately() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_owned();
    let addrs: Vec<_> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .ok()?
        .collect();
    let private = !addrs.is_empty()
        && addrs
            .iter()
            .all(|a| !payhub::webhooks::destinations::is_public(a.ip()));
    (private && !name.is_empty()).then_some(name)
}

/// Any 2xx acknowledges an event (a 204 without a body too); a redirect is neither followed nor
/// taken as delivered: the attempt records the 3xx and the event waits for its next try.
#[actix_rt::test]
async fn any_2xx_acknowledges_and_a_redirect_is_not_followed() {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let db = fresh_database().await;
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let followed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = followed.clone();
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        App::new()
            .route("/no-content", web::post().to(HttpResponse::NoContent))
            .route(
                "/moved",
                web::post().to(|| async {
                    HttpResponse::Found()
                        .insert_header(("location", "/elsewhere"))
                        .finish()
                }),
            )
            .route(
                "/elsewhere",
                web::to(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async { HttpResponse::Ok().finish() }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let base = format!("http://{}", server.addrs()[0]);
    actix_rt::spawn(server.run());
    write_event(&db.pool, &merchant, 1, &format!("{base}/no-content")).await;
    write_event(&db.pool, &merchant, 2, &format!("{base}/moved")).await;
    let worker = deliver(&db.pool, webhook_settings(), 1).await;
    let attempted = async || {
        let client = db.pool.get().await.unwrap();
        let sql = "SELECT a.status_code, e.delivered_at IS NOT NULL FROM webhook_attempts a
                     JOIN webhook_events e ON e.id = a.event_id WHERE e.id = 'evt_2'";
        let rows = client.query(sql, &[]).await.unwrap();
        rows.iter()
            .map(|r| (r.get::<_, Option<i32>>(0), r.get::<_, bool>(1)))
            .collect::<Vec<_>>()
    };
    eventually("the redirect's attempt recorded", || async {
        !attempted().await.is_empty()
    })
    .await;
    assert_eq!(attempted().await, vec![(Some(302), false)]);
    assert_eq!(followed.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(delivered(&db.pool).await, 1);
    worker.shutdown.cancel();
}
