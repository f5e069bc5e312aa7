//! The payment writer (group commit of `processing` and final statuses) against a real
//! PostgreSQL: writes sent at once go in batches, and each payment gets the answer its own
//! statement would give.

use chrono::Utc;
use payhub_actors::bank::OriginalDebit;
use payhub_actors::store::testing::{TestDb, fresh_database};
use payhub_actors::transaction::event::Finish;
use payhub_actors::transaction::writer::{NoticeTo, PaymentWriter, ToFinal, ToProcessing};
use serde_json::json;

/// `count` payments awaiting their code, ids `pay_w0`…
async fn seed_awaiting_code(db: &TestDb, count: i64) -> Vec<String> {
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO payments (id, merchant_id, order_id, amount_minor, currency, return_url,
                 notify_url, status, created_at, expires_at, updated_at)
             SELECT 'pay_w' || g, 'mer_w', 'W-' || g, 100, 'CNY', 'https://shop.example/r',
                 'https://shop.example/n', 'awaiting_code', now(), now() + interval '15 minutes',
                 now()
             FROM generate_series(0, $1::bigint - 1) g",
            &[&count],
        )
        .await
        .unwrap();
    (0..count).map(|i| format!("pay_w{i}")).collect()
}

fn to_processing(id: &str, n: usize) -> ToProcessing {
    ToProcessing {
        payment_id: id.to_owned(),
        rrn: format!("{n:012}"),
        original: OriginalDebit {
            link: "bank-a".into(),
            link_addr: Some("127.0.0.1:8583".into()),
            stan: format!("{:06}", n + 1),
            transmission_time: "1128203000".into(),
            acquirer_id: Some("99990001".into()),
        },
        at: Utc::now(),
    }
}

/// The final write of `id`, its outcome notice going by `channel` (`sms`, `terminal`) if any.
fn to_final(id: &str, channel: Option<&'static str>) -> ToFinal {
    ToFinal {
        payment_id: id.to_owned(),
        at: Utc::now(),
        status: "succeeded",
        failure_code: None,
        bank_response_code: None,
        approval_code: Some("A1B2C3".into()),
        from: vec!["processing"],
        event_id: format!("evt_{id}"),
        event_type: "payment.succeeded",
        body: format!("{{\"id\":\"evt_{id}\"}}"),
        detail: json!({}),
        outcome_notice: channel.map(|channel| NoticeTo {
            channel,
            destination: match channel {
                "sms" => "+86138****0000".to_owned(),
                _ => "trm_box".to_owned(),
            },
        }),
        event_due_at: Utc::now(),
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let client = db.pool.get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn writes_sent_at_once_each_get_their_own_answer() {
    let db = fresh_database().await;
    let ids = seed_awaiting_code(&db, 30).await;
    // One payment is no longer awaiting its code: its write must not move it.
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE payments SET status = 'expired' WHERE id = 'pay_w7'",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let open = "SELECT count(*) FROM payments_open o JOIN payments p ON p.id = o.payment_id";
    assert_eq!(
        count(&db, open).await,
        29,
        "the expired payment left the open list"
    );
    let writer = PaymentWriter::start(db.pool.clone());

    let moves = ids
        .iter()
        .enumerate()
        .map(|(n, id)| writer.to_processing(to_processing(id, n)));
    let moved = futures::future::join_all(moves).await;
    for (n, answer) in moved.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), n != 7, "payment {n}");
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM payments WHERE status = 'processing' AND rrn IS NOT NULL
               AND debit_stan IS NOT NULL AND debit_link_addr = '127.0.0.1:8583'
               AND debit_acquirer_id = '99990001'"
        )
        .await,
        29,
        "each write, alone or batched, commits the link's name and address and the acquirer"
    );
    assert_eq!(
        count(&db, open).await,
        29,
        "processing payments are still open"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_log WHERE event = 'debit_sent'"
        )
        .await,
        29
    );

    // A third are told by SMS, a third on a terminal; pay_w7 (expired) is not moved; pay_w3 is
    // sent twice.
    let notice_channel = |n: usize| [Some("sms"), Some("terminal"), None][n % 3];
    let mut finals: Vec<ToFinal> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| to_final(id, notice_channel(n)))
        .collect();
    finals.push(to_final("pay_w3", None));
    let answers = futures::future::join_all(finals.into_iter().map(|w| writer.to_final(w))).await;
    let answers: Vec<Finish> = answers.into_iter().map(|a| a.unwrap()).collect();
    for (n, answer) in answers.iter().enumerate().take(30) {
        match answer {
            Finish::Moved { notice_row, .. } => {
                assert_ne!(n, 7, "an expired payment was moved");
                let told = notice_channel(n).is_some();
                assert_eq!(notice_row.is_some(), told, "payment {n}'s notice row");
            }
            Finish::NotMoved => assert_eq!(n, 7, "payment {n} was not moved"),
        }
    }
    assert!(
        matches!(answers[30], Finish::NotMoved),
        "a payment is finished once"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM payments WHERE status = 'succeeded'"
        )
        .await,
        29
    );
    assert_eq!(count(&db, "SELECT count(*) FROM webhook_events").await, 29);
    assert_eq!(
        count(&db, "SELECT count(*) FROM payments_open").await,
        0,
        "every finished payment left the open list"
    );
    let queued = "SELECT count(*) FROM customer_messages WHERE kind = 'outcome'
        AND status = 'queued' AND channel = ";
    assert_eq!(count(&db, &format!("{queued} 'sms'")).await, 10);
    assert_eq!(
        count(
            &db,
            &format!("{queued} 'terminal' AND destination = 'trm_box'")
        )
        .await,
        9,
        "pay_w7, not moved, would go to a terminal"
    );
}

#[tokio::test]
async fn a_refused_batch_is_written_alone_and_only_the_bad_write_fails() {
    let db = fresh_database().await;
    let ids = seed_awaiting_code(&db, 10).await;
    let writer = PaymentWriter::start(db.pool.clone());
    // pay_w9 reuses pay_w4's RRN: the batch statement breaks the unique index as a whole.
    let moves = ids.iter().enumerate().map(|(n, id)| {
        let rrn_of = if n == 9 { 4 } else { n };
        writer.to_processing(to_processing(id, rrn_of))
    });
    let answers = futures::future::join_all(moves).await;
    for (n, answer) in answers.iter().enumerate().take(9) {
        assert!(matches!(answer, Ok(true)), "payment {n}: {answer:?}");
    }
    assert!(answers[9].is_err(), "a duplicate RRN must be refused");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM payments WHERE status = 'processing'"
        )
        .await,
        9
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM payments WHERE id = 'pay_w9' AND status = 'awaiting_code' AND rrn IS NULL").await,
        1,
        "the refused write left its payment as it was"
    );
}

#[tokio::test]
async fn a_final_write_answers_its_event_signed_by_the_merchant_and_leased_as_asked() {
    let db = fresh_database().await;
    let ids = seed_awaiting_code(&db, 3).await;
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO merchants (id, name, cert_fingerprint, cert_serial, webhook_secret,
                 bank_id, account, terminal_id, card_acceptor_id)
             VALUES ('mer_w', 'W', 'ab', '01', 'whsec_w', 'bank-a', '6222', 'T0000001',
                 'M00000000000001')",
            &[],
        )
        .await
        .unwrap();
    let writer = PaymentWriter::start(db.pool.clone());
    let leased_until = Utc::now() + chrono::Duration::seconds(45);
    // Three at once (a batch, or some alone): each answer is its own payment's event.
    let finals = ids.iter().map(|id| {
        let mut write = to_final(id, None);
        write.from = vec!["awaiting_code"];
        write.event_due_at = leased_until;
        writer.to_final(write)
    });
    for (id, answer) in ids.iter().zip(futures::future::join_all(finals).await) {
        let Finish::Moved {
            event: Some(event), ..
        } = answer.unwrap()
        else {
            panic!("{id}: moved, with its event");
        };
        assert_eq!(event.id, format!("evt_{id}"));
        assert_eq!(event.body, format!("{{\"id\":\"evt_{id}\"}}"));
        assert_eq!(event.notify_url, "https://shop.example/n");
        assert_eq!(event.secret.expose(), "whsec_w");
        assert_eq!(event.attempts, 0);
    }
    let leased = client
        .query_one(
            "SELECT count(*) FROM webhook_events WHERE next_attempt_at = $1",
            &[&leased_until],
        )
        .await
        .unwrap();
    assert_eq!(
        leased.get::<_, i64>(0),
        3,
        "no worker claims a handed event before its lease"
    );
}
