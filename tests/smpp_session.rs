//! The SMPP session actor against the SMSC simulator, over real TCP on port 0, with a real
//! PostgreSQL database per test.

mod smpp_support;

use actix::Addr;
use payhub::channels::smpp::{self, GetStatus, Shutdown, SmppSession, SmppSettings};
use payhub::sim::smsc::{self, SmscSim, SmscSimOptions};
use payhub_actors::Secret;
use payhub_actors::messages::{Deliver, DeliveryError, DeliveryReceipt, Destination, NoticeKind};
use payhub_actors::store::testing::{TestDb, fresh_database};
use smpp_support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

async fn bound_session(db: &TestDb, settings: SmppSettings) -> Addr<SmppSession> {
    let session = smpp::start(db.pool.clone(), clock(), settings).expect("valid settings");
    let probe = session.clone();
    wait_until("the session is bound", async || {
        probe.send(GetStatus).await.unwrap().bound
    })
    .await;
    session
}

/// A database with one payment, a simulator, and a session bound to it. Keep `db` bound (`_db`,
/// not `_`): dropping it drops the database.
struct Rig {
    db: TestDb,
    sim: SmscSim,
    payment_id: String,
    session: Addr<SmppSession>,
}

async fn rig(tweak: impl FnOnce(&mut SmppSettings)) -> Rig {
    let db = fresh_database().await;
    let sim = simulator().await;
    let payment_id = payment(&db).await;
    let mut settings = settings(&sim);
    tweak(&mut settings);
    let session = bound_session(&db, settings).await;
    Rig {
        db,
        sim,
        payment_id,
        session,
    }
}

#[derive(Debug)]
struct Row {
    status: String,
    message_ref: Option<String>,
    receipt_status: Option<String>,
    error: Option<String>,
    destination: String,
    everything: String,
}

async fn rows(db: &TestDb, payment_id: &str) -> Vec<Row> {
    let client = db.pool.get().await.unwrap();
    client
        .query(
            "SELECT status, message_ref, receipt_status, error, destination, \
               row_to_json(m)::text FROM customer_messages m WHERE payment_id = $1 ORDER BY id",
            &[&payment_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Row {
            status: r.get(0),
            message_ref: r.get(1),
            receipt_status: r.get(2),
            error: r.get(3),
            destination: r.get(4),
            everything: r.get(5),
        })
        .collect()
}

async fn deliver(
    session: &Addr<SmppSession>,
    msg: Deliver,
) -> Result<DeliveryReceipt, DeliveryError> {
    session.send(msg).await.expect("the actor answers")
}

/// `count` code messages for `payment_id` at once; their answers, in order.
async fn deliver_many(
    session: &Addr<SmppSession>,
    payment_id: &str,
    count: usize,
) -> Vec<Result<DeliveryReceipt, DeliveryError>> {
    let sends = (0..count).map(|_| deliver(session, code_message(payment_id)));
    futures::future::join_all(sends).await
}

#[actix_rt::test]
async fn a_code_message_reaches_the_smsc_and_its_row_keeps_no_text() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;

    let receipt = deliver(&session, code_message(&payment_id)).await.unwrap();

    let messages = sim.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.message_id, receipt.message_ref);
    assert!(m.text.contains(&format!("code {CODE}")), "{}", m.text);
    assert!(
        m.text.contains("12.34 CNY") && m.text.contains("Book Shop"),
        "{}",
        m.text
    );
    assert!(m.text.chars().count() <= 160);
    assert_eq!((m.source_addr.as_str(), m.source_addr_ton), ("PAYHUB", 5));
    assert_eq!(m.destination_addr, "8613800138000");
    assert_eq!((m.dest_addr_ton, m.dest_addr_npi), (1, 1));
    assert_eq!((m.registered_delivery, m.data_coding), (1, 0));
    assert_eq!(m.system_id, SYSTEM_ID);

    let rows = rows(&db, &payment_id).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(row.status == "sent" || row.status == "delivered", "{row:?}");
    assert_eq!(
        row.message_ref.as_deref(),
        Some(receipt.message_ref.as_str())
    );
    assert_eq!(row.destination, "86*******8000");
    assert!(!row.everything.contains(CODE), "{}", row.everything);
    assert!(
        row.everything.contains("\"kind\":\"code\""),
        "{}",
        row.everything
    );
    assert!(
        row.everything.contains("\"channel\":\"sms\""),
        "{}",
        row.everything
    );
}

#[actix_rt::test]
async fn delivery_receipts_are_answered_and_kept_on_the_row() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;

    deliver(&session, code_message(&payment_id)).await.unwrap();
    wait_until("the receipt is recorded", async || {
        rows(&db, &payment_id).await[0].receipt_status.is_some()
    })
    .await;
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(row.receipt_status.as_deref(), Some("DELIVRD"));
    assert_eq!(row.status, "delivered");
    wait_until("the SMSC saw deliver_sm_resp", async || {
        sim.messages()[0].receipt_acknowledged
    })
    .await;

    sim.update_switches(|s| s.receipt_stat = "UNDELIV".into());
    let receipt = deliver(&session, code_message(&payment_id)).await.unwrap();
    wait_until("the second receipt is recorded", async || {
        rows(&db, &payment_id).await[1].receipt_status.is_some()
    })
    .await;
    let row = &rows(&db, &payment_id).await[1];
    assert_eq!(
        row.message_ref.as_deref(),
        Some(receipt.message_ref.as_str())
    );
    assert_eq!(row.receipt_status.as_deref(), Some("UNDELIV"));
    assert_eq!(row.status, "undeliverable");
}

#[actix_rt::test]
async fn a_receipt_before_the_message_id_is_recorded_is_not_lost() {
    let db = fresh_database().await;
    let (payment_id, id, now) = queued_code_row(&db).await;
    let writes = smpp::store::SmppWrites::start(db.pool.clone());
    let matched = writes
        .record_receipt(now, "early-1", "DELIVRD")
        .await
        .unwrap();
    assert!(!matched);
    writes.mark_sent(now, id, "early-1").await.unwrap();
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(row.status, "delivered");
    assert_eq!(row.receipt_status.as_deref(), Some("DELIVRD"));
    assert_eq!(early_receipts_left(&db).await, 0);
}

/// An outcome the payment recorded for its terminal (channel `terminal`) that went by SMS, to a
/// mobile or PDA terminal: the row is the SMS's once its message id is written, and its receipt
/// lands on it (receipts are matched among SMS rows only).
#[actix_rt::test]
async fn a_terminal_outcome_sent_by_sms_takes_its_receipt() {
    let db = fresh_database().await;
    let payment_id = payment(&db).await;
    let now = chrono::Utc::now();
    let client = db.pool.get().await.unwrap();
    let id: i64 = client
        .query_one(
            "INSERT INTO customer_messages
                 (payment_id, kind, channel, destination, status, created_at, updated_at)
             VALUES ($1, 'outcome', 'terminal', 'term_pda', 'queued', $2, $2) RETURNING id",
            &[&payment_id, &now],
        )
        .await
        .unwrap()
        .get(0);
    let writes = smpp::store::SmppWrites::start(db.pool.clone());

    writes.mark_sent(now, id, "pda-1").await.unwrap();
    let matched = writes
        .record_receipt(now, "pda-1", "DELIVRD")
        .await
        .unwrap();

    assert!(matched, "the receipt found its message");
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(row.status, "delivered", "{}", row.everything);
    assert!(
        row.everything.contains("\"channel\":\"sms\""),
        "{}",
        row.everything
    );
    assert_eq!(early_receipts_left(&db).await, 0);
}

/// An SMSC that used a message id before (a counter that wrapped, another SMSC): the receipt is
/// for the newest message with the id. An older one keeps its own history; one older than three
/// days is not taken for the receipt's message, whose id may still be on its way (kept aside).
#[actix_rt::test]
async fn a_receipt_is_for_the_newest_message_with_its_id() {
    let db = fresh_database().await;
    let writes = smpp::store::SmppWrites::start(db.pool.clone());
    let (old_payment, old_row, now) = queued_code_row(&db).await;
    writes.mark_sent(now, old_row, "reused-1").await.unwrap();
    writes
        .record_receipt(now, "reused-1", "UNDELIV")
        .await
        .unwrap();
    let (new_payment, new_row, _) = queued_code_row(&db).await;
    writes.mark_sent(now, new_row, "reused-1").await.unwrap();
    assert!(
        writes
            .record_receipt(now, "reused-1", "DELIVRD")
            .await
            .unwrap()
    );
    assert_eq!(rows(&db, &new_payment).await[0].status, "delivered");
    let old = &rows(&db, &old_payment).await[0];
    assert_eq!(
        (old.status.as_str(), old.receipt_status.as_deref()),
        ("undeliverable", Some("UNDELIV"))
    );

    let in_four_days = now + chrono::Duration::days(4);
    assert!(
        !writes
            .record_receipt(in_four_days, "reused-1", "EXPIRED")
            .await
            .unwrap()
    );
    assert_eq!(rows(&db, &new_payment).await[0].status, "delivered");
    assert_eq!(early_receipts_left(&db).await, 1);
}

/// An id used again within days, whose new message's receipt comes before that message's id is
/// written: the earlier message, which had its final receipt, keeps it; the receipt waits aside
/// for the new message, and is its own once its id is written.
#[actix_rt::test]
async fn a_receipt_for_a_reused_id_before_its_message_is_sent_waits_for_it() {
    let db = fresh_database().await;
    let writes = smpp::store::SmppWrites::start(db.pool.clone());
    let (old_payment, old_row, now) = queued_code_row(&db).await;
    writes.mark_sent(now, old_row, "reused-2").await.unwrap();
    let old_receipt = writes.record_receipt(now, "reused-2", "DELIVRD");
    assert!(old_receipt.await.unwrap());
    let (new_payment, new_row, later) = queued_code_row(&db).await;
    let early = writes.record_receipt(later, "reused-2", "UNDELIV");
    assert!(!early.await.unwrap(), "kept aside");
    let old = &rows(&db, &old_payment).await[0];
    assert_eq!(
        (old.status.as_str(), old.receipt_status.as_deref()),
        ("delivered", Some("DELIVRD"))
    );
    writes.mark_sent(now, new_row, "reused-2").await.unwrap();
    let new = &rows(&db, &new_payment).await[0];
    assert_eq!(
        (new.status.as_str(), new.receipt_status.as_deref()),
        ("undeliverable", Some("UNDELIV"))
    );
}

/// An id the SMSC gives again: a final receipt of the earlier message sent again (kept aside) is
/// not taken by the later message, which came after it; the later message's own receipt, the same
/// state as the earlier one's and come while its id was being written, is its own.
#[actix_rt::test]
async fn a_repeated_receipt_is_not_taken_by_a_later_message_but_its_own_is() {
    let db = fresh_database().await;
    let writes = smpp::store::SmppWrites::start(db.pool.clone());
    for id in ["reused-3", "reused-4"] {
        let (_, row, now) = queued_code_row(&db).await;
        writes.mark_sent(now, row, id).await.unwrap();
        assert!(writes.record_receipt(now, id, "DELIVRD").await.unwrap());
    }
    // reused-3's receipt sent again, two minutes before the id is given again (past the
    // minute's allowance for the gateway's clock).
    let earlier = chrono::Utc::now() - chrono::Duration::minutes(2);
    let repeat = writes.record_receipt(earlier, "reused-3", "DELIVRD");
    assert!(!repeat.await.unwrap(), "kept aside");
    let (later_payment, later_row, now) = queued_code_row(&db).await;
    writes.mark_sent(now, later_row, "reused-3").await.unwrap();
    let later = &rows(&db, &later_payment).await[0];
    assert_eq!(
        (later.status.as_str(), later.receipt_status.as_deref()),
        ("sent", None)
    );
    // reused-4 given again: its new message's receipt comes before its id is written, stamped
    // half a minute before the row (the gateway's clock stepped back): within the allowance.
    let (own_payment, own_row, now) = queued_code_row(&db).await;
    let stepped_back = now - chrono::Duration::seconds(30);
    let own = writes.record_receipt(stepped_back, "reused-4", "DELIVRD");
    assert!(!own.await.unwrap());
    writes.mark_sent(now, own_row, "reused-4").await.unwrap();
    let own = &rows(&db, &own_payment).await[0];
    assert_eq!(
        (own.status.as_str(), own.receipt_status.as_deref()),
        ("delivered", Some("DELIVRD"))
    );
}

/// A receipt for an id payhub never records (another ESME on the account, a lost row) is kept a
/// day, and dropped by the next receipt kept aside after that.
#[actix_rt::test]
async fn a_receipt_nobody_claims_is_dropped_after_a_day() {
    let db = fresh_database().await;
    let writes = smpp::store::SmppWrites::start(db.pool.clone());
    let then = chrono::Utc::now();
    let record = |at, reference| writes.record_receipt(at, reference, "DELIVRD");
    assert!(!record(then, "stray-1").await.unwrap());
    let within_a_day = then + chrono::Duration::hours(23);
    assert!(!record(within_a_day, "stray-2").await.unwrap());
    assert_eq!(early_receipts_left(&db).await, 2);
    let after_a_day = then + chrono::Duration::hours(25);
    assert!(!record(after_a_day, "stray-3").await.unwrap());
    assert_eq!(early_receipts_left(&db).await, 2, "stray-1 is dropped");
}

/// An SMSC that sends receipts for ids payhub never recorded fills the table only to about its
/// bound: every so many receipts kept aside, the oldest go. A receipt that races its id is among
/// the newest, and still finds its row.
#[actix_rt::test]
async fn receipts_kept_aside_are_bounded_and_the_oldest_go_first() {
    let db = fresh_database().await;
    let then = chrono::Utc::now() - chrono::Duration::minutes(10);
    let client = db.pool.get().await.unwrap();
    let max = smpp::store::EARLY_RECEIPTS_MAX;
    client
        .execute(
            "INSERT INTO smpp_early_receipts (message_ref, stat, received_at)
             SELECT 'stray-' || n, 'DELIVRD', $1::timestamptz + n * interval '1 ms'
             FROM generate_series(1, $2::bigint) AS n",
            &[&then, &max],
        )
        .await
        .unwrap();
    let (payment_id, id, now) = queued_code_row(&db).await;
    let writes = smpp::store::SmppWrites::start(db.pool.clone());
    let trim_every = smpp::store::EARLY_RECEIPTS_TRIM_EVERY;
    let references: Vec<String> = (1..trim_every)
        .map(|n| format!("new-{n}"))
        .chain(["racing".to_string()])
        .collect();
    let kept = futures::future::join_all(
        references
            .iter()
            .map(|r| writes.record_receipt(now, r, "DELIVRD")),
    )
    .await;
    assert!(
        kept.into_iter().all(|k| !k.unwrap()),
        "no row has these ids"
    );
    wait_until("trimmed to the bound", async || {
        early_receipts_left(&db).await == max
    })
    .await;
    let oldest_kept = i64::try_from(trim_every).unwrap() + 1;
    for (reference, left) in [("stray-1", false), (&format!("stray-{oldest_kept}"), true)] {
        let sql = "SELECT count(*) FROM smpp_early_receipts WHERE message_ref = $1";
        let found: i64 = client.query_one(sql, &[&reference]).await.unwrap().get(0);
        assert_eq!(found == 1, left, "{reference}");
    }
    writes.mark_sent(now, id, "racing").await.unwrap();
    assert_eq!(rows(&db, &payment_id).await[0].status, "delivered");
    assert_eq!(early_receipts_left(&db).await, max - 1);
}

/// A payment with its code message's row `queued` now: (payment, row, now).
async fn queued_code_row(db: &TestDb) -> (String, i64, chrono::DateTime<chrono::Utc>) {
    let payment_id = payment(db).await;
    let now = chrono::Utc::now();
    let id = smpp::store::insert_queued(&db.pool, now, &payment_id, NoticeKind::Code, "86****00")
        .await
        .unwrap();
    (payment_id, id, now)
}

/// Receipts kept aside for a message id nobody has recorded yet.
async fn early_receipts_left(db: &TestDb) -> i64 {
    let client = db.pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM smpp_early_receipts", &[])
        .await
        .unwrap()
        .get(0)
}

/// 40 outcome message rows `queued` for `payment_id`, and a message id for each.
async fn queued_outcome_rows(
    db: &TestDb,
    payment_id: &str,
    prefix: &str,
) -> (Vec<i64>, Vec<String>) {
    let now = chrono::Utc::now();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let queued =
            smpp::store::insert_queued(&db.pool, now, payment_id, NoticeKind::Outcome, "86****00");
        ids.push(queued.await.unwrap());
    }
    let refs = (0..ids.len()).map(|n| format!("{prefix}-{n}")).collect();
    (ids, refs)
}

/// Message ids and receipts that arrive together are written in batches; whichever of the two
/// comes first, every row ends `delivered` and no receipt is left aside.
#[actix_rt::test]
async fn message_ids_and_receipts_written_in_batches_all_meet() {
    let db = fresh_database().await;
    let payment_id = payment(&db).await;
    let (ids, refs) = queued_outcome_rows(&db, &payment_id, "burst").await;
    // After the rows were written, as any receipt for them is.
    let now = chrono::Utc::now();
    let writes = smpp::store::SmppWrites::start(db.pool.clone());
    // Even rows: the receipt first; odd rows: the id first. All sent at once, so they batch.
    let early = ids.iter().enumerate().filter(|(n, _)| n % 2 == 0);
    let receipts_first = early.map(|(n, _)| writes.record_receipt(now, &refs[n], "DELIVRD"));
    let matched = futures::future::join_all(receipts_first).await;
    assert!(
        matched.iter().all(|m| matches!(m, Ok(false))),
        "{matched:?}"
    );
    let sent = ids
        .iter()
        .enumerate()
        .map(|(n, id)| writes.mark_sent(now, *id, &refs[n]));
    for result in futures::future::join_all(sent).await {
        result.unwrap();
    }
    let late = ids.iter().enumerate().filter(|(n, _)| n % 2 == 1);
    let receipts_after = late.map(|(n, _)| writes.record_receipt(now, &refs[n], "DELIVRD"));
    let matched = futures::future::join_all(receipts_after).await;
    assert!(matched.iter().all(|m| matches!(m, Ok(true))), "{matched:?}");

    let all = rows(&db, &payment_id).await;
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|r| r.status == "delivered"), "{all:?}");
    assert_eq!(early_receipts_left(&db).await, 0);
}

/// A receipt that comes while its message id's write is still queued (an SMSC may send it right
/// after `submit_sm_resp`) is written by that write: one update of the row, and the receipt is
/// answered only after the commit.
#[actix_rt::test]
async fn receipts_that_come_while_their_ids_are_queued_ride_with_them() {
    let db = fresh_database().await;
    let payment_id = payment(&db).await;
    let now = chrono::Utc::now();
    let (ids, refs) = queued_outcome_rows(&db, &payment_id, "ride").await;
    let writes = smpp::store::SmppWrites::start(db.pool.clone());
    // Every id's write is queued (polled first) before any batch is taken.
    let sent = ids
        .iter()
        .zip(&refs)
        .map(|(id, r)| writes.mark_sent(now, *id, r));
    let stats = ["DELIVRD", "UNDELIV"];
    let receipts = refs
        .iter()
        .enumerate()
        .map(|(n, r)| writes.record_receipt(now, r, stats[n % 2]));
    let (sent, receipts) = futures::future::join(
        futures::future::join_all(sent),
        futures::future::join_all(receipts),
    )
    .await;
    assert!(sent.iter().all(|s| s.is_ok()), "{sent:?}");
    assert!(
        receipts.iter().all(|m| matches!(m, Ok(true))),
        "{receipts:?}"
    );
    assert_eq!(writes.receipts_carried(), 40);

    let all = rows(&db, &payment_id).await;
    assert_eq!(all.len(), 40);
    for (n, row) in all.iter().enumerate() {
        let expected = [("delivered", "DELIVRD"), ("undeliverable", "UNDELIV")][n % 2];
        assert_eq!(
            (row.status.as_str(), row.receipt_status.as_deref()),
            (expected.0, Some(expected.1)),
            "{row:?}"
        );
        assert_eq!(row.message_ref.as_deref(), Some(refs[n].as_str()));
    }
    assert_eq!(early_receipts_left(&db).await, 0);
}

#[actix_rt::test]
async fn a_wrong_password_is_refused_clearly_and_deliveries_fail_after_the_bind_wait() {
    let db = fresh_database().await;
    let sim = simulator().await;
    let payment_id = payment(&db).await;
    let mut settings = settings(&sim);
    settings.password = Secret::new("wrong".into());
    let session = smpp::start(db.pool.clone(), clock(), settings).unwrap();

    wait_until("the bind is refused", async || {
        session.send(GetStatus).await.unwrap().last_error.is_some()
    })
    .await;
    let status = session.send(GetStatus).await.unwrap();
    assert!(!status.bound);
    let error = status.last_error.unwrap();
    assert!(
        error.contains("bind_transceiver refused") && error.contains("(0x0000000E)"),
        "{error}"
    );
    assert!(sim.stats().binds_refused >= 1);
    assert_eq!(sim.stats().binds_accepted, 0);

    let started = Instant::now();
    let answer = deliver(&session, code_message(&payment_id)).await;
    assert_eq!(answer, Err(DeliveryError::Unavailable));
    assert_bind_wait_ended(started);
    assert!(rows(&db, &payment_id).await.is_empty());
    assert!(sim.messages().is_empty());
}

/// A delivery with no bound session waited for a bind, and the wait ended (a check that it is
/// bounded, not a measure of speed).
fn assert_bind_wait_ended(started: Instant) {
    let wait = Duration::from_millis(smpp::BIND_WAIT_MS_MAX);
    assert!(started.elapsed() >= wait, "{:?}", started.elapsed());
    assert!(started.elapsed() < 5 * wait, "{:?}", started.elapsed());
}

#[actix_rt::test]
async fn throttling_is_retried_with_backoff_then_delivered() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;
    sim.update_switches(|s| {
        s.throttle_next = 2;
        s.queue_full_next = 1;
    });

    let receipt = deliver(&session, code_message(&payment_id)).await.unwrap();

    assert_eq!(sim.stats().submits, 4);
    assert_eq!(sim.stats().submits_refused, 3);
    assert_eq!(sim.messages().len(), 1);
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(
        row.message_ref.as_deref(),
        Some(receipt.message_ref.as_str())
    );
    assert!(row.error.is_none());
}

/// A throttling answer slows the whole bind, as an SMSC operator expects: no other message is
/// submitted until the backoff has passed, then both go out.
#[actix_rt::test]
async fn throttling_pauses_every_submit_of_the_bind() {
    let Rig {
        db: _db,
        sim,
        payment_id,
        session,
    } = rig(|s| (s.throttle_backoff_min_ms, s.throttle_backoff_max_ms) = (1_000, 1_000)).await;
    sim.update_switches(|s| s.throttle_next = 1);
    let first = actix_rt::spawn(session.send(code_message(&payment_id)));
    wait_until("the first submit is throttled", async || {
        sim.stats().submits_refused == 1
    })
    .await;
    let second = actix_rt::spawn(session.send(code_message(&payment_id)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.stats().submits,
        1,
        "nothing is submitted during the pause"
    );
    first.await.unwrap().unwrap().unwrap();
    second.await.unwrap().unwrap().unwrap();
    assert_eq!(sim.stats().submits, 3);
    assert_eq!(sim.messages().len(), 2);
}

/// A throttling the SMSC answers after the submit's timeout: the sender was told the message may
/// still arrive, so the refusal is counted (and logged), and the session slows down as for an
/// answer in time.
#[actix_rt::test]
async fn a_throttling_answered_late_is_counted_and_pauses_the_bind() {
    let Rig {
        db: _db,
        sim,
        payment_id,
        session,
    } = rig(|s| (s.throttle_backoff_min_ms, s.throttle_backoff_max_ms) = (1_000, 1_000)).await;
    // Longer than the 1 s response timeout of these tests.
    sim.update_switches(|s| (s.delay_ms, s.throttle_next) = (1_500, 1));
    let answer = deliver(&session, code_message(&payment_id)).await;
    assert_eq!(answer, Err(DeliveryError::Timeout));
    wait_until("the late refusal is counted", async || {
        session.send(GetStatus).await.unwrap().late_refusals == 1
    })
    .await;
    sim.update_switches(|s| s.delay_ms = 0);
    let next = actix_rt::spawn(session.send(code_message(&payment_id)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.stats().submits,
        1,
        "nothing is submitted during the pause"
    );
    next.await.unwrap().unwrap().unwrap();
    assert_eq!(sim.messages().len(), 1);
}

#[actix_rt::test]
async fn throttling_beyond_the_tries_fails_the_delivery() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|s| s.submit_attempts_max = 3).await;
    sim.update_switches(|s| s.throttle_next = 100);

    let answer = deliver(&session, code_message(&payment_id)).await;

    assert_eq!(answer, Err(DeliveryError::Unavailable));
    assert_eq!(sim.stats().submits, 3);
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(row.status, "failed");
    assert!(
        row.error.as_deref().unwrap().contains("0x00000058"),
        "{row:?}"
    );
}

/// An outcome whose row the payment wrote, and which it offers again when told `Unavailable`,
/// keeps its row `queued` until the payment gives up: a start after a stop in between must still
/// find it to offer (it looks for `queued` outcome rows only).
#[actix_rt::test]
async fn an_outcome_the_payment_offers_again_keeps_its_row_queued() {
    use payhub_actors::transaction::store::orphaned_outcome_notices;
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|s| s.submit_attempts_max = 2).await;
    let now = chrono::Utc::now();
    let row = smpp::store::insert_queued(
        &db.pool,
        now,
        &payment_id,
        NoticeKind::Outcome,
        "861380***8000",
    )
    .await
    .unwrap();
    sim.update_switches(|s| s.throttle_next = 100);
    let mut outcome = code_message(&payment_id);
    outcome.notice.kind = NoticeKind::Outcome;
    outcome.notice.code = None;
    outcome.notice.outcome = Some("succeeded".into());
    outcome.recorded = Some(row);

    assert_eq!(
        deliver(&session, outcome).await,
        Err(DeliveryError::Unavailable)
    );

    assert_eq!(rows(&db, &payment_id).await[0].status, "queued");
    let client = db.pool.get().await.unwrap();
    let later = now + chrono::Duration::minutes(1);
    let orphans = orphaned_outcome_notices(&client, later, 10).await.unwrap();
    assert_eq!(orphans.len(), 1, "the next start offers it");
}

/// A message id whose write outlasts the session's wait for the database is still written: the
/// SMSC has the message, and a row left `queued` would be offered again at the next start.
#[actix_rt::test]
async fn a_message_id_written_after_its_wait_is_kept() {
    let Rig {
        db,
        sim: _sim,
        payment_id,
        session,
    } = rig(|s| s.database_timeout_ms = 500).await;
    let now = chrono::Utc::now();
    let mut rows_written = Vec::new();
    for _ in 0..2 {
        let row =
            smpp::store::insert_queued(&db.pool, now, &payment_id, NoticeKind::Code, "86**00")
                .await
                .unwrap();
        rows_written.push(row);
    }
    // The first id's write waits on this lock; the second queues behind it.
    let mut blocker = db.pool.get().await.unwrap();
    let lock = blocker.transaction().await.unwrap();
    lock.execute(
        "SELECT 1 FROM customer_messages WHERE id = $1 FOR UPDATE",
        &[&rows_written[0]],
    )
    .await
    .unwrap();
    for row in &rows_written {
        let mut message = code_message(&payment_id);
        message.recorded = Some(*row);
        assert!(deliver(&session, message).await.is_ok(), "the SMSC took it");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    lock.rollback().await.unwrap();

    wait_until("both ids are written", async || {
        rows(&db, &payment_id)
            .await
            .iter()
            .all(|row| row.message_ref.is_some() && row.status != "queued")
    })
    .await;
}

/// The sender stops waiting after `answer_within`: the session answers by then, and a message it
/// could not send by then is failed, not left to be refused after nobody waits.
#[actix_rt::test]
async fn a_delivery_answers_within_the_senders_wait_whatever_the_retries_left() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|s| (s.throttle_backoff_min_ms, s.throttle_backoff_max_ms) = (200, 5_000)).await;
    // Five tries with their backoffs take 3 s; the sender waits 1.5 s.
    sim.update_switches(|s| s.throttle_next = 100);
    let wait = Duration::from_millis(1_500);
    let message = Deliver {
        answer_within: wait,
        ..code_message(&payment_id)
    };

    let answer = tokio::time::timeout(wait, session.send(message)).await;

    let answer = answer.expect("answered within the sender's wait").unwrap();
    assert_eq!(answer, Err(DeliveryError::Unavailable));
    assert!(sim.stats().submits < 5, "{:?}", sim.stats());
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(row.status, "failed");
    assert!(
        row.error.as_deref().unwrap().contains("0x00000058"),
        "{row:?}"
    );
}

#[actix_rt::test]
async fn an_error_status_fails_that_delivery_only() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;
    sim.update_switches(|s| s.error_status = 0x0B);

    let answer = deliver(&session, code_message(&payment_id)).await;

    let Err(DeliveryError::Rejected(reason)) = answer else {
        panic!("expected a rejection, got {answer:?}");
    };
    assert!(reason.contains("0x0000000B"), "{reason}");
    assert_eq!(sim.stats().submits, 1, "an error status is not retried");
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(row.status, "failed");
    assert!(row.message_ref.is_none());
    assert!(row.error.as_deref().unwrap().contains("0x0000000B"));

    sim.update_switches(|s| s.error_status = 0);
    let receipt = deliver(&session, code_message(&payment_id)).await.unwrap();
    let row = &rows(&db, &payment_id).await[1];
    assert_eq!(
        row.message_ref.as_deref(),
        Some(receipt.message_ref.as_str())
    );
}

#[actix_rt::test]
async fn after_an_smsc_restart_the_session_rebinds_and_delivers_again() {
    let db = fresh_database().await;
    let sim = simulator().await;
    let payment_id = payment(&db).await;
    let settings = settings(&sim);
    let listen = sim.smpp_addr();
    let session = bound_session(&db, settings).await;
    deliver(&session, code_message(&payment_id)).await.unwrap();

    stop_and_see_the_loss(sim, &session).await;
    let started = Instant::now();
    assert_eq!(
        deliver(&session, code_message(&payment_id)).await,
        Err(DeliveryError::Unavailable)
    );
    assert_bind_wait_ended(started);

    let restarted = simulator_at(listen).await;
    wait_until("the session is bound again", async || {
        let status = session.send(GetStatus).await.unwrap();
        status.bound && status.binds == 2
    })
    .await;
    deliver(&session, code_message(&payment_id)).await.unwrap();
    assert_eq!(restarted.messages().len(), 1);
}

/// Stops the SMSC and waits until the session has noticed the loss.
async fn stop_and_see_the_loss(sim: SmscSim, session: &Addr<SmppSession>) {
    sim.stop().await;
    wait_until("the loss is noticed", async || {
        !session.send(GetStatus).await.unwrap().bound
    })
    .await;
}

/// The SMSC started again where it listened before.
async fn simulator_at(listen: std::net::SocketAddr) -> SmscSim {
    let mut options = SmscSimOptions::loopback(SYSTEM_ID, PASSWORD);
    options.listen = listen;
    smsc::start(options).await.unwrap()
}

/// A code that comes while the session binds again after a loss waits for the bind and goes out,
/// instead of failing the customer's sign-in for a reconnect.
#[actix_rt::test]
async fn a_delivery_during_a_rebind_waits_for_the_bind() {
    let db = fresh_database().await;
    let sim = simulator().await;
    let payment_id = payment(&db).await;
    let listen = sim.smpp_addr();
    let session = bound_session(&db, settings(&sim)).await;
    stop_and_see_the_loss(sim, &session).await;

    let restarted = simulator_at(listen).await;
    let answer = deliver(&session, code_message(&payment_id)).await;
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(restarted.messages().len(), 1);
    assert_eq!(session.send(GetStatus).await.unwrap().binds, 2);
}

#[actix_rt::test]
async fn a_dropped_connection_fails_in_flight_and_the_session_recovers() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;
    sim.update_switches(|s| s.drop_next = 1);

    // The submit_sm was written when the connection went: the SMSC may have taken it, so the
    // code is not said unsent (a customer may still receive it).
    let answer = deliver(&session, code_message(&payment_id)).await;
    assert_eq!(answer, Err(DeliveryError::Timeout));
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(row.status, "failed", "{}", row.everything);
    assert!(
        row.error.as_deref().unwrap_or_default().contains("closed"),
        "{}",
        row.everything
    );

    wait_until("the session is bound again", async || {
        let status = session.send(GetStatus).await.unwrap();
        status.bound && status.binds == 2
    })
    .await;
    deliver(&session, code_message(&payment_id)).await.unwrap();

    // An outcome notice cut the same way is offered again: told twice rather than never.
    sim.update_switches(|s| s.drop_next = 1);
    let mut outcome = code_message(&payment_id);
    outcome.notice.kind = NoticeKind::Outcome;
    outcome.notice.code = None;
    outcome.notice.outcome = Some("succeeded".into());
    assert_eq!(
        deliver(&session, outcome).await,
        Err(DeliveryError::Unavailable)
    );
}

#[actix_rt::test]
async fn no_more_than_the_window_of_submits_is_outstanding() {
    let Rig {
        db: _db,
        sim,
        payment_id,
        session,
    } = rig(|s| s.window_max = 3).await;
    sim.update_switches(|s| s.delay_ms = 300);

    let answers = deliver_many(&session, &payment_id, 9).await;

    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(sim.messages().len(), 9);
    assert_eq!(sim.stats().max_outstanding, 3);
}

/// A `submit_sm` whose answer is late still counts against the window the SMSC agreed to: its
/// slot comes back with the late answer, not with the timeout.
#[actix_rt::test]
async fn submits_answered_late_keep_their_window_slots_until_answered() {
    let Rig {
        db: _db,
        sim,
        payment_id,
        session,
    } = rig(|s| s.window_max = 2).await;
    // Longer than the 1 s response timeout of these tests.
    sim.update_switches(|s| s.delay_ms = 1_500);

    let answers = deliver_many(&session, &payment_id, 4).await;

    assert!(
        answers
            .iter()
            .all(|a| a == &Err(DeliveryError::Timeout) || a == &Err(DeliveryError::Unavailable)),
        "{answers:?}"
    );
    assert_eq!(sim.stats().max_outstanding, 2, "{:?}", sim.stats());
    // The late answers gave the slots back: the window works again once the SMSC is quick.
    sim.update_switches(|s| s.delay_ms = 0);
    wait_until("both slots back", async || {
        session.send(GetStatus).await.unwrap().in_flight == 0
    })
    .await;
    let answers = deliver_many(&session, &payment_id, 2).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
}

/// A sender that waits less than the response timeout: the submit's own wait is cut to the
/// sender's, so a late acceptance still finds its row (the client library once ignored the cut,
/// and the attempt was abandoned unrecorded, its slot freed while the SMSC still had it).
#[actix_rt::test]
async fn a_late_acceptance_past_a_short_senders_wait_is_recorded() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|s| s.response_timeout_ms = 5_000).await;
    sim.update_switches(|s| s.delay_ms = 2_500);
    let mut message = code_message(&payment_id);
    message.answer_within = Duration::from_secs(2);
    assert_eq!(
        deliver(&session, message).await,
        Err(DeliveryError::Timeout)
    );
    assert_eq!(
        session.send(GetStatus).await.unwrap().in_flight,
        1,
        "the slot is held"
    );
    wait_until("the late acceptance recorded", async || {
        rows(&db, &payment_id).await[0].message_ref.is_some()
    })
    .await;
    let status = rows(&db, &payment_id).await[0].status.clone();
    assert!(status == "sent" || status == "delivered", "{status}");
    assert_eq!(session.send(GetStatus).await.unwrap().in_flight, 0);
}

/// An SMSC that drops submits without a word would keep the window's slots for good: once every
/// slot has waited a response timeout past its own, the session is bound again, and the slots
/// come back.
#[actix_rt::test]
async fn a_window_of_submits_never_answered_is_freed_by_a_new_bind() {
    let Rig {
        db: _db,
        sim,
        payment_id,
        session,
    } = rig(|s| s.window_max = 2).await;
    sim.update_switches(|s| s.delay_ms = 60_000);

    let answers = deliver_many(&session, &payment_id, 2).await;
    assert!(
        answers.iter().all(|a| a == &Err(DeliveryError::Timeout)),
        "{answers:?}"
    );
    wait_until("bound again", async || sim.stats().binds_accepted >= 2).await;
    sim.update_switches(|s| s.delay_ms = 0);
    wait_until("bound", async || {
        session.send(GetStatus).await.unwrap().bound
    })
    .await;
    let answer = deliver(&session, code_message(&payment_id)).await;
    assert!(answer.is_ok(), "{answer:?}");
}

/// A burst with delivery receipts on: the client library once stopped writing at its per-poll
/// limits without waking itself, and every submit behind it timed out (vendor/README.md).
#[actix_rt::test]
async fn a_burst_with_receipts_all_goes_out() {
    const BURST: usize = 200;
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|s| s.window_max = 1).await;

    let answers = deliver_many(&session, &payment_id, BURST).await;

    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(sim.messages().len(), BURST);
    // Every receipt is taken (fewer than RECEIPTS_TAKEN_MAX at once), kept on its row and
    // acknowledged.
    wait_until("every receipt is on its row and acknowledged", async || {
        let kept = rows(&db, &payment_id)
            .await
            .iter()
            .filter(|r| r.receipt_status.as_deref() == Some("DELIVRD"))
            .count();
        kept == BURST && sim.messages().iter().all(|m| m.receipt_acknowledged)
    })
    .await;
}

#[actix_rt::test]
async fn graceful_shutdown_unbinds() {
    let Rig {
        db: _db,
        sim,
        session,
        ..
    } = rig(|_| {}).await;

    session.send(Shutdown).await.unwrap();

    assert_eq!(sim.stats().unbinds, 1);
    wait_until("the simulator sees no bound session", async || {
        sim.stats().sessions_bound == 0
    })
    .await;
    wait_until("the actor stops", async || !session.connected()).await;
}

#[actix_rt::test]
async fn only_sms_destinations_are_carried() {
    let Rig {
        db: _db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;
    let mut msg = code_message(&payment_id);
    msg.destination = Destination::Terminal("trm_1".into());
    let answer = deliver(&session, msg).await;
    assert!(
        matches!(answer, Err(DeliveryError::Rejected(_))),
        "{answer:?}"
    );
    assert!(sim.messages().is_empty());
}

#[actix_rt::test]
async fn the_simulator_lists_messages_and_takes_switches_over_http() {
    let Rig {
        db: _db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;
    let receipt = deliver(&session, code_message(&payment_id)).await.unwrap();
    let base = format!("http://{}", sim.http_addr().unwrap());
    let http = reqwest::Client::new();

    let listed: serde_json::Value = http
        .get(format!("{base}/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &listed[0];
    assert_eq!(first["message_id"], receipt.message_ref.as_str());
    assert_eq!(first["destination_addr"], "8613800138000");
    assert_eq!(first["source_addr"], "PAYHUB");
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .contains(&format!("code {CODE}"))
    );
    assert!(chrono::DateTime::parse_from_rfc3339(first["received_at"].as_str().unwrap()).is_ok());

    let filtered = |number: &'static str| {
        let http = http.clone();
        let url = format!("{base}/messages");
        async move {
            let listed: serde_json::Value = http
                .get(url)
                .query(&[("destination", number)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            listed.as_array().unwrap().len()
        }
    };
    assert_eq!(filtered("+8613800138000").await, 1);
    assert_eq!(filtered("8613900000000").await, 0);

    let changed = http
        .post(format!("{base}/switches"))
        .body(r#"{"throttle_next": 1, "delay_ms": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(sim.switches().throttle_next, 1);
    assert_eq!(sim.switches().delay_ms, 5);
    assert!(sim.switches().receipts, "other switches keep their values");

    let refused = http
        .post(format!("{base}/switches"))
        .body(r#"{"throttle_next": "many"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_request");
}

#[actix_rt::test]
async fn the_bind_is_kept_alive_with_enquire_link_both_ways() {
    let Rig {
        db: _db,
        sim,
        session,
        ..
    } = rig(|s| s.enquire_link_interval_s = 1).await;
    sim.update_switches(|s| s.enquire_link_interval_ms = 100);

    wait_until("the SMSC's enquire_link is answered", async || {
        sim.stats().enquire_link_resps >= 2
    })
    .await;
    wait_until("the gateway sent its own enquire_link", async || {
        sim.stats().enquire_links >= 1
    })
    .await;
    let status = session.send(GetStatus).await.unwrap();
    assert!(status.bound);
    assert_eq!(status.binds, 1, "keep-alive never costs a re-bind");
}

#[actix_rt::test]
async fn an_outcome_message_is_sent_and_recorded_as_an_outcome() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;
    let mut msg = code_message(&payment_id);
    msg.notice.kind = NoticeKind::Outcome;
    msg.notice.code = None;
    msg.notice.outcome = Some("succeeded".into());

    deliver(&session, msg).await.unwrap();

    let text = &sim.messages()[0].text;
    assert!(
        text.contains("succeeded") && text.contains("Book Shop"),
        "{text}"
    );
    assert!(!text.contains("code "), "{text}");
    let row = &rows(&db, &payment_id).await[0];
    assert!(row.everything.contains("\"kind\":\"outcome\""), "{row:?}");
}

#[actix_rt::test]
async fn a_merchant_named_in_another_script_reaches_the_phone_spelled_in_ascii() {
    let Rig {
        db: _db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;
    let mut msg = code_message(&payment_id);
    msg.notice.merchant_name = "书店 Café".into();

    deliver(&session, msg).await.unwrap();

    let text = &sim.messages()[0].text;
    assert!(text.contains("to Shu Dian Cafe."), "{text}");
    assert!(text.contains(&format!("code {CODE}")), "{text}");
    assert!(!text.contains('?'), "{text}");
}

#[actix_rt::test]
async fn an_acceptance_after_the_timeout_is_still_recorded() {
    let Rig {
        db,
        sim,
        payment_id,
        session,
    } = rig(|_| {}).await;
    // Longer than the 1 s response timeout of these tests.
    sim.update_switches(|s| s.delay_ms = 1_500);

    let answer = deliver(&session, code_message(&payment_id)).await;
    assert_eq!(answer, Err(DeliveryError::Timeout));
    assert_eq!(rows(&db, &payment_id).await[0].status, "failed");

    wait_until("the late acceptance is recorded", async || {
        rows(&db, &payment_id).await[0].message_ref.is_some()
    })
    .await;
    let row = &rows(&db, &payment_id).await[0];
    assert_eq!(
        row.message_ref.as_deref(),
        Some(sim.messages()[0].message_id.as_str())
    );
    assert_ne!(row.status, "failed", "{row:?}");
    assert!(row.error.as_deref().unwrap().contains("in time"), "{row:?}");
    assert!(session.send(GetStatus).await.unwrap().bound);
}

/// A submit refused late with a generic_nack instead of a submit_sm_resp: its window slot comes
/// back and the refusal is counted (throttling pauses the submits, as from a submit_sm_resp).
#[actix_rt::test]
async fn a_late_generic_nack_gives_its_window_slot_back() {
    use futures::SinkExt;
    use rusmpp::{Command, CommandStatus, Pdu};
    let RawSubmit {
        db: _db,
        session,
        mut smsc,
        sending,
        submit,
        ..
    } = submit_to_a_raw_smsc().await;
    assert_eq!(sending.await.unwrap(), Err(DeliveryError::Timeout));
    assert_eq!(session.send(GetStatus).await.unwrap().in_flight, 1);
    let nack = Command::new(
        CommandStatus::EsmeRthrottled,
        submit.sequence_number(),
        Pdu::GenericNack,
    );
    smsc.send(nack).await.unwrap();
    wait_until("the slot back", async || {
        let status = session.send(GetStatus).await.unwrap();
        status.in_flight == 0 && status.late_refusals == 1
    })
    .await;
}

/// A session bound to a raw SMSC, with a new payment's code message on its way: the `submit_sm`
/// the SMSC got for it is not answered yet. Keep `db` bound: dropping it drops the database.
struct RawSubmit {
    db: TestDb,
    payment_id: String,
    session: Addr<SmppSession>,
    smsc: tokio_util::codec::Framed<tokio::net::TcpStream, rusmpp::tokio_codec::CommandCodec>,
    sending: actix_rt::task::JoinHandle<Result<DeliveryReceipt, DeliveryError>>,
    submit: rusmpp::Command,
}

async fn submit_to_a_raw_smsc() -> RawSubmit {
    use futures::StreamExt;
    let db = fresh_database().await;
    let payment_id = payment(&db).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = settings_for(listener.local_addr().unwrap().to_string());
    let session = smpp::start(db.pool.clone(), clock(), settings).expect("valid settings");
    let mut smsc = accept_bind(&listener).await;
    wait_until("bound", async || {
        session.send(GetStatus).await.unwrap().bound
    })
    .await;
    let sender = session.clone();
    let message = code_message(&payment_id);
    let sending = actix_rt::spawn(async move { deliver(&sender, message).await });
    let submit = loop {
        let command = smsc.next().await.unwrap().unwrap();
        if command.id() == rusmpp::CommandId::SubmitSm {
            break command;
        }
    };
    RawSubmit {
        db,
        payment_id,
        session,
        smsc,
        sending,
        submit,
    }
}

/// A raw SMSC on `listener`: accepts the session's connection and its bind.
async fn accept_bind(
    listener: &tokio::net::TcpListener,
) -> tokio_util::codec::Framed<tokio::net::TcpStream, rusmpp::tokio_codec::CommandCodec> {
    use futures::{SinkExt, StreamExt};
    use rusmpp::pdus::BindTransceiverResp;
    use rusmpp::{Command, CommandId, CommandStatus};
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("the session connects")
        .unwrap();
    let mut smsc = tokio_util::codec::Framed::new(stream, rusmpp::tokio_codec::CommandCodec::new());
    let bind = smsc.next().await.unwrap().unwrap();
    assert_eq!(bind.id(), CommandId::BindTransceiver);
    let system_id = std::str::FromStr::from_str("smsc").unwrap();
    let resp = BindTransceiverResp::builder().system_id(system_id).build();
    let answer = Command::new(CommandStatus::EsmeRok, bind.sequence_number(), resp);
    smsc.send(answer).await.unwrap();
    smsc
}

/// The SMSC's own unbind is answered, and the session binds again; an SMSC that stops answering
/// enquire_link loses the bind too, and the session binds again.
#[actix_rt::test]
async fn an_smsc_that_unbinds_or_stops_answering_is_bound_again() {
    use futures::{SinkExt, StreamExt};
    use rusmpp::{Command, CommandId, CommandStatus, Pdu};
    let db = fresh_database().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = settings_for(listener.local_addr().unwrap().to_string());
    settings.enquire_link_interval_s = 1;
    let session = smpp::start(db.pool.clone(), clock(), settings).expect("valid settings");

    let mut smsc = accept_bind(&listener).await;
    smsc.send(Command::new(CommandStatus::EsmeRok, 7, Pdu::Unbind))
        .await
        .unwrap();
    let answer = answers_to(&mut smsc, 1).await[0];
    assert_eq!((answer.0, answer.1), (CommandId::UnbindResp, 7));

    // Bound again; this SMSC reads but never answers, so its enquire_link goes unanswered.
    let mut silent = accept_bind(&listener).await;
    let reading = actix_rt::spawn(async move { while let Some(Ok(_)) = silent.next().await {} });
    let _third = accept_bind(&listener).await;
    reading.abort();
    wait_until("the session is bound a third time", async || {
        let status = session.send(GetStatus).await.unwrap();
        status.bound && status.binds == 3
    })
    .await;
}

/// An SMSC that accepts each bind and then drops the connection is bound to again with a growing
/// delay: the backoff starts again from its minimum only after a session stayed bound for 10 s.
#[actix_rt::test]
async fn an_smsc_that_drops_each_session_after_its_bind_is_backed_off() {
    let db = fresh_database().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = settings_for(listener.local_addr().unwrap().to_string());
    settings.rebind_backoff_min_ms = 50;
    settings.rebind_backoff_max_ms = 5_000;
    let _session = smpp::start(db.pool.clone(), clock(), settings).expect("valid settings");
    let binds = Arc::new(AtomicUsize::new(0));
    let counted = binds.clone();
    let smsc = actix_rt::spawn(async move {
        loop {
            drop(accept_bind(&listener).await);
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    wait_until("a second bind", async || binds.load(Ordering::SeqCst) >= 2).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Reset at each bind, the backoff allowed a bind every 50 ms and a little: about 20 here.
    // Doubling, 50 + 100 + 200 + 400 + 800 ms allow at most 6.
    let seen = binds.load(Ordering::SeqCst);
    smsc.abort();
    assert!(seen <= 7, "{seen} binds");
}

/// SMPP v3.4 §4.12: an alert_notification has no response. A request an ESME does not take is
/// refused with generic_nack.
#[actix_rt::test]
async fn an_alert_notification_gets_no_answer_and_an_unknown_request_a_generic_nack() {
    use futures::SinkExt;
    use rusmpp::pdus::{AlertNotification, QuerySm};
    use rusmpp::{Command, CommandId, CommandStatus, Pdu};
    let db = fresh_database().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = settings_for(listener.local_addr().unwrap().to_string());
    let _session = smpp::start(db.pool.clone(), clock(), settings).expect("valid settings");
    let mut smsc = accept_bind(&listener).await;
    let requests = [
        Command::new(
            CommandStatus::EsmeRok,
            2,
            AlertNotification::builder().build(),
        ),
        Command::new(CommandStatus::EsmeRok, 3, QuerySm::builder().build()),
        Command::new(CommandStatus::EsmeRok, 4, Pdu::EnquireLink),
    ];
    for request in requests {
        smsc.send(request).await.unwrap();
    }
    let answers = answers_to(&mut smsc, 2).await;
    assert_eq!(
        answers,
        [
            (CommandId::GenericNack, 3, CommandStatus::EsmeRinvcmdid),
            (CommandId::EnquireLinkResp, 4, CommandStatus::EsmeRok),
        ]
    );
}

/// Some SMSCs send delivery receipts as `data_sm` (its text in `message_payload`): each gets its
/// `data_sm_resp`, and a receipt lands on its row as from a `deliver_sm`.
#[actix_rt::test]
async fn a_receipt_in_a_data_sm_is_kept_and_answered() {
    use futures::SinkExt;
    use rusmpp::pdus::DataSm;
    use rusmpp::tlvs::MessageSubmissionRequestTlvValue as Tlv;
    use rusmpp::types::AnyOctetString;
    use rusmpp::values::{EsmClass, MessagePayload};
    use rusmpp::{Command, CommandId, CommandStatus};
    let db = fresh_database().await;
    let payment_id = payment(&db).await;
    let now = chrono::Utc::now();
    let row = smpp::store::insert_queued(&db.pool, now, &payment_id, NoticeKind::Code, "86****00");
    let row = row.await.unwrap();
    smpp::store::SmppWrites::start(db.pool.clone())
        .mark_sent(now, row, "dsm-1")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = settings_for(listener.local_addr().unwrap().to_string());
    let session = smpp::start(db.pool.clone(), clock(), settings).expect("valid settings");
    let mut smsc = accept_bind(&listener).await;
    let data_sm = |esm_class: u8, text: &[u8]| {
        let payload = MessagePayload::new(AnyOctetString::from_slice(text));
        DataSm::builder()
            .esm_class(EsmClass::from(esm_class))
            .tlvs(vec![Tlv::MessagePayload(payload)])
            .build()
    };
    let receipt = data_sm(
        0x04,
        b"id:dsm-1 sub:001 dlvrd:001 stat:DELIVRD err:000 text:",
    );
    // Up to the 64 KiB message_payload allows.
    let mobile_originated = data_sm(0x00, &[b'h'; 65_535]);
    smsc.send(Command::new(CommandStatus::EsmeRok, 2, receipt))
        .await
        .unwrap();
    smsc.send(Command::new(CommandStatus::EsmeRok, 3, mobile_originated))
        .await
        .unwrap();
    let answers = answers_to(&mut smsc, 2).await;
    let ok = |n| (CommandId::DataSmResp, n, CommandStatus::EsmeRok);
    assert_eq!(answers, [ok(2), ok(3)]);
    assert_eq!(
        session.send(GetStatus).await.unwrap().binds,
        1,
        "still the first bind"
    );
    let kept = &rows(&db, &payment_id).await[0];
    assert_eq!(
        (kept.status.as_str(), kept.receipt_status.as_deref()),
        ("delivered", Some("DELIVRD"))
    );
}

/// The session's next `n` answers to the SMSC's requests (its own enquire_links skipped), by
/// sequence number: (command, sequence number, status).
async fn answers_to(
    smsc: &mut tokio_util::codec::Framed<tokio::net::TcpStream, rusmpp::tokio_codec::CommandCodec>,
    n: usize,
) -> Vec<(rusmpp::CommandId, u32, rusmpp::CommandStatus)> {
    use futures::StreamExt;
    let mut answers = Vec::new();
    while answers.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(5), smsc.next()).await;
        let answer = next.expect("the session answers").unwrap().unwrap();
        if answer.id() != rusmpp::CommandId::EnquireLink {
            answers.push((answer.id(), answer.sequence_number(), answer.status()));
        }
    }
    answers.sort_by_key(|a| a.1);
    answers
}

#[actix_rt::test]
async fn an_smsc_that_sends_requests_and_never_reads_is_dropped_and_bound_again() {
    use futures::SinkExt;
    use rusmpp::{Command, CommandStatus, Pdu};
    let db = fresh_database().await;
    // A small receive buffer, so the session's answers pile up on its side soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(8).unwrap();
    let settings = settings_for(listener.local_addr().unwrap().to_string());
    let session = smpp::start(db.pool.clone(), clock(), settings).expect("valid settings");
    let mut smsc = accept_bind(&listener).await;
    // From now on the SMSC sends enquire_link as fast as it can and reads nothing.
    let flood = actix_rt::spawn(async move {
        for sequence_number in 2.. {
            let enquire = Command::new(CommandStatus::EsmeRok, sequence_number, Pdu::EnquireLink);
            let sent = if sequence_number % 64 == 0 {
                smsc.send(enquire).await
            } else {
                smsc.feed(enquire).await
            };
            if sent.is_err() {
                return sequence_number;
            }
        }
        unreachable!("the session never dropped the connection")
    });
    let sent = tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("the session drops an SMSC that does not read")
        .unwrap();
    // Each answer is 16 bytes: the kernel's buffers held many before the bound was reached.
    assert!(sent > 1_024, "dropped after {sent} requests");
    let _again = accept_bind(&listener).await;
    wait_until("the session is bound again", async || {
        let status = session.send(GetStatus).await.unwrap();
        status.bound && status.binds == 2
    })
    .await;
    let status = session.send(GetStatus).await.unwrap();
    let why = status.last_error.unwrap_or_default();
    assert!(why.contains("without reading the answers"), "{why}");
}

/// A PDU as raw bytes: its header, then `body` as is.
fn raw_pdu(command_id: u32, status: u32, sequence_number: u32, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(16 + body.len()).unwrap();
    [length, command_id, status, sequence_number]
        .iter()
        .flat_map(|word| word.to_be_bytes())
        .chain(body.iter().copied())
        .collect()
}

/// PDUs whose bodies cannot be decoded (a C-octet string without its NUL) leave the session
/// bound: a `deliver_sm` is refused for good, so the SMSC does not send it again, and an
/// accepting `submit_sm_resp` counts as accepted, without a message id.
#[actix_rt::test]
async fn undecodable_pdus_are_answered_and_the_session_goes_on() {
    use futures::SinkExt;
    use rusmpp::{Command, CommandId, CommandStatus, Pdu};
    use tokio::io::AsyncWriteExt;
    const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    const DELIVER_SM: u32 = 0x0000_0005;
    let RawSubmit {
        db,
        payment_id,
        session,
        mut smsc,
        sending,
        submit,
    } = submit_to_a_raw_smsc().await;
    let resp = raw_pdu(SUBMIT_SM_RESP, 0, submit.sequence_number(), b"abc");
    smsc.get_mut().write_all(&resp).await.unwrap();
    let receipt = sending.await.unwrap().expect("accepted");
    assert_eq!(receipt.message_ref, "");
    assert_eq!(rows(&db, &payment_id).await[0].status, "sent");

    let deliver_sm = raw_pdu(DELIVER_SM, 0, 9, b"abc");
    smsc.get_mut().write_all(&deliver_sm).await.unwrap();
    smsc.send(Command::new(CommandStatus::EsmeRok, 10, Pdu::EnquireLink))
        .await
        .unwrap();
    let answers = answers_to(&mut smsc, 2).await;
    assert_eq!(
        answers,
        [
            (CommandId::DeliverSmResp, 9, CommandStatus::EsmeRxPAppn),
            (CommandId::EnquireLinkResp, 10, CommandStatus::EsmeRok),
        ]
    );
    let status = session.send(GetStatus).await.unwrap();
    assert_eq!((status.bound, status.binds), (true, 1));
}
