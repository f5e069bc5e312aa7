//! Seeded fault simulation of the debit: payments have their codes accepted (some sent twice at
//! once) while the bank drops, delays and repeats its answers, closes the link and fails debits,
//! while the SMS center throttles and answers slowly, while the merchant's endpoint fails its
//! first deliveries, while payments' lifetimes end as their codes arrive, and while the gateway
//! itself stops (as in a crash) and starts again on the same database. Whatever happens, once the
//! faults stop and the reversals and webhooks have drained:
//! - every payment is final, with the failure code or approval code its outcome calls for, and
//!   one that expired was not debited;
//! - money moved exactly once: the payer lost, and the shop gained, exactly the amounts of the
//!   payments that succeeded (each payment's amount is distinct, so no two errors can cancel);
//! - every final payment became final once (one audit line), has one webhook event, and its
//!   customer was sent one outcome SMS, also when the crash came between the final status and the
//!   SMS.
//! - what left the gateway agrees with its database: the merchant received each payment's event
//!   (at least once, signed with its secret) and the customer's phone each outcome SMS, all naming
//!   the final status the database holds.
//!
//! `PAYHUB_FAULT_SEED=n` replays one run's choices (faults, the moment of the restart); the seed
//! is printed on failure. The timing of a run is the machine's, and is not replayed.

mod e2e_support;

use actix::Addr;
use chrono::Utc;
use e2e_support::*;
use futures::future::join_all;
use payhub::http::merchant_testing::TestPki;
use payhub::sim::bank::Faults;
use payhub_actors::clock::SharedClock;
use payhub_actors::keyed_hash::HashKey;
use payhub_actors::secret::Secret;
use payhub_actors::store::testing::fresh_database;
use payhub_actors::transaction::PaymentRegistry;
use payhub_actors::transaction::PaymentSettings;
use payhub_actors::transaction::actor::SubmitCode;
use payhub_actors::transaction::registry::Lookup;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const PAYER_ACCOUNT: &str = "6222000044445555";
const PAYER_OPENING_MINOR: i64 = 1_000_000_000;
const ROUNDS: usize = 8;
const PAYMENTS_PER_ROUND: usize = 5;
/// The link's wait for a 0210: short, so that delayed answers come late.
const BANK_RESPONSE_TIMEOUT_MS: u64 = 300;
/// How long a submitted code may take to be answered, whatever the faults.
const ANSWER_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// One round's bank: well, or one kind of fault.
fn faults_for(rng: &mut StdRng) -> Faults {
    let mut f = Faults::default();
    match rng.random_range(0..7) {
        0 => f.drop_pct = rng.random_range(20..=60),
        1 => f.delay_ms = rng.random_range(100..=800),
        2 => f.duplicate_pct = rng.random_range(30..=100),
        3 => f.close_every = rng.random_range(2..=5),
        4 => f.fail_pct = rng.random_range(20..=60),
        5 => {
            f.drop_pct = rng.random_range(10..=30);
            f.delay_ms = rng.random_range(100..=500);
            f.fail_pct = rng.random_range(10..=30);
        }
        _ => {}
    }
    f
}

/// One round's SMS center: well, throttling a few submits (fewer than a message's tries, so every
/// outcome SMS still goes), or slow to answer (within the session's response timeout).
fn smsc_weather(rng: &mut StdRng, switches: &mut payhub::sim::smsc::Switches) {
    switches.throttle_next = 0;
    switches.delay_ms = 0;
    match rng.random_range(0..3) {
        0 => switches.throttle_next = rng.random_range(1..=4),
        1 => switches.delay_ms = rng.random_range(50..=500),
        _ => {}
    }
}

struct World {
    db: payhub_actors::store::testing::TestDb,
    pki: TestPki,
    key: HashKey,
    clock: SharedClock,
    outside: Outside,
    bank: payhub::sim::bank::SimHandle,
    smsc: payhub::sim::smsc::SmscSim,
    receiver: Receiver,
    merchant: Merchant,
    /// (payment id, amount, code, session)
    payments: Vec<(String, i64, String, String)>,
}

impl World {
    async fn start_gateway(&self) -> Gateway {
        self.start_gateway_with(PaymentSettings::default()).await
    }

    async fn start_gateway_with(&self, settings: PaymentSettings) -> Gateway {
        Gateway::start(
            self.db.pool.clone(),
            self.clock.clone(),
            self.key.clone(),
            settings,
            self.outside.clone(),
            self.pki.clone(),
        )
        .await
    }
}

/// The world, with a merchant endpoint that answers `receiver_script` to its first deliveries.
async fn world(receiver_script: Vec<u16>) -> World {
    let db = fresh_database().await;
    let smsc = start_smsc().await;
    let bank = start_bank(&[(PAYER_ACCOUNT, PAYER_OPENING_MINOR)]).await;
    let receiver = Receiver::start(receiver_script);
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let customer = seed_customer(&db.pool, "alice", PAYER_ACCOUNT).await;
    let key = HashKey::random();
    let mut payments = Vec::new();
    let client = db.pool.get().await.unwrap();
    for i in 0..ROUNDS * PAYMENTS_PER_ROUND {
        // Distinct amounts: a payment moved twice, or lost, shows in the sums.
        let amount = 1_000 + 7 * i as i64;
        let pay = create_payment(&db.pool, &merchant, amount, &receiver.url, Utc::now()).await;
        let (code, session) = (format!("{:06}", 100_000 + i), format!("session-{i}"));
        awaiting_code(&client, &key, &pay, &customer, &code, &session).await;
        payments.push((pay, amount, code, session));
    }
    drop(client);
    let outside = Outside {
        smsc: smsc.smpp_addr(),
        bank: bank.addr(),
        bank_response_timeout_ms: BANK_RESPONSE_TIMEOUT_MS,
        smpp_response_timeout_ms: 2_000,
        code_page_wait_ms: payhub::http::pages::CODE_STEP_WAIT_MAX_MS,
    };
    World {
        db,
        pki,
        key,
        clock: Arc::new(payhub_actors::SystemClock),
        outside,
        bank,
        smsc,
        receiver,
        merchant,
        payments,
    }
}

/// Submits each payment's code to its actor, all at once; the answers (an outcome, an error, a
/// stopped actor) are not checked here: the database and the bank's ledger are, at the end.
/// `copies` of each code at once, as a customer who presses the button twice.
async fn submit_codes(
    registry: Addr<PaymentRegistry>,
    batch: Vec<(String, i64, String, String)>,
    copies: usize,
) {
    join_all(batch.iter().map(|(pay, _, code, session)| async {
        let Ok(Ok(actor)) = registry.send(Lookup(pay.clone())).await else {
            return;
        };
        join_all((0..copies).map(|_| {
            let submit = actor.send(SubmitCode {
                session: Secret::new(session.clone()),
                code: Secret::new(code.clone()),
            });
            tokio::time::timeout(ANSWER_WAIT_MAX, submit)
        }))
        .await;
    }))
    .await;
}

async fn ids_in(pool: &deadpool_postgres::Pool, sql: &str) -> Vec<String> {
    let client = pool.get().await.unwrap();
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[actix_rt::test]
async fn money_moves_exactly_once_whatever_the_bank_and_a_crash_do() {
    let seed = std::env::var("PAYHUB_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from_le_bytes(payhub_actors::ids::os_random::<8>()));
    let context = format!("PAYHUB_FAULT_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // The merchant's endpoint fails the first deliveries, as one being deployed does.
    let failing = rng.random_range(0..=8);
    let w = world((0..failing).map(|i| [500, 503][i % 2]).collect()).await;

    let (gateway, crash) = run_rounds(&w, &mut rng).await;
    settle(&w, &gateway).await;
    let (succeeded_minor, outcomes) = check_payments(&w, &context).await;
    check_what_left_the_gateway(&w, &context).await;
    println!(
        "{context}: {crash}; the merchant's endpoint failed the first {failing} deliveries; \
         outcomes {outcomes:?}"
    );
    let payer = w.bank.balance(BANK, PAYER_ACCOUNT).await.unwrap().unwrap();
    let shop = w.bank.balance(BANK, SHOP_ACCOUNT).await.unwrap().unwrap();
    assert_eq!(
        (PAYER_OPENING_MINOR - payer, shop),
        (succeeded_minor, succeeded_minor),
        "{context}: outcomes {outcomes:?}"
    );
    assert!(
        outcomes.keys().any(|k| k.starts_with("succeeded")),
        "{context}: a run where nothing succeeded checks little: {outcomes:?}"
    );
    gateway.stop().await;
}

/// The rounds, each with its bank faults and SMS center weather. In one of them the payments'
/// lifetimes end as their codes arrive; in one (maybe the same) the gateway stops as in a crash,
/// with debits in flight, and starts again. The running gateway, and what the run met.
async fn run_rounds(w: &World, rng: &mut StdRng) -> (Gateway, String) {
    let crash_round = rng.random_range(0..ROUNDS);
    let expiry_round = rng.random_range(0..ROUNDS);
    let mut crash = String::new();
    let mut gateway = w.start_gateway().await;
    for (round, batch) in w.payments.chunks(PAYMENTS_PER_ROUND).enumerate() {
        if round == expiry_round {
            expire_soon(w, batch, rng).await;
            // A restart, as a deploy makes, with the bank calm: each actor holds the lifetime it
            // read at its start, and a start reads every payment awaiting its code.
            w.bank.set_faults(Faults::default());
            gateway.stop().await;
            gateway = w.start_gateway().await;
        }
        let mut faults = faults_for(rng);
        if round == crash_round {
            // Lost answers keep the round's debits in flight (until the link's timeout) when the
            // gateway stops.
            faults.drop_pct = faults.drop_pct.max(rng.random_range(50..=100));
        }
        w.bank.set_faults(faults);
        w.smsc.update_switches(|s| smsc_weather(rng, s));
        let copies = rng.random_range(1..=2);
        let submitted = submit_codes(gateway.registry.clone(), batch.to_vec(), copies);
        if round != crash_round {
            submitted.await;
            continue;
        }
        let submitted = tokio::task::spawn_local(submitted);
        let crash_after_ms = rng.random_range(20..=250);
        tokio::time::sleep(std::time::Duration::from_millis(crash_after_ms)).await;
        gateway.stop().await;
        let in_flight = ids_in(
            &w.db.pool,
            "SELECT id FROM payments WHERE status = 'processing'",
        )
        .await;
        crash = format!(
            "crash in round {round} with {} debits in flight",
            in_flight.len()
        );
        gateway = w.start_gateway().await;
        submitted.await.unwrap();
    }
    (
        gateway,
        format!("{crash}, lifetimes ending in round {expiry_round}"),
    )
}

/// Each payment of `batch` reaches the end of its lifetime 0–400 ms from now: with the restart
/// that follows, its code arrives just before the end, or just after.
async fn expire_soon(w: &World, batch: &[(String, i64, String, String)], rng: &mut StdRng) {
    let client = w.db.pool.get().await.unwrap();
    for (pay, ..) in batch {
        let after_ms = rng.random_range(0..=400_i64);
        let expires_at = Utc::now() + chrono::Duration::milliseconds(after_ms);
        for (table, key) in [("payments", "id"), ("payments_open", "payment_id")] {
            let sql = format!("UPDATE {table} SET expires_at = $2 WHERE {key} = $1");
            client.execute(&sql, &[pay, &expires_at]).await.unwrap();
        }
    }
}

/// The bank and the SMS center are well again: the codes the crash kept from their actors are
/// submitted once more, and the reversals go through. Waits (at most 60 s: the crashed process's
/// webhook events wait out their lease, about 21 s, and a failed delivery its 5 s backoff) until
/// no payment, reversal, outcome SMS or webhook event is left open.
async fn settle(w: &World, gateway: &Gateway) {
    w.bank.set_faults(Faults::default());
    w.smsc
        .update_switches(|s| (s.throttle_next, s.delay_ms) = (0, 0));
    let waiting = ids_in(
        &w.db.pool,
        "SELECT id FROM payments WHERE status = 'awaiting_code'",
    )
    .await;
    let again: Vec<_> = w
        .payments
        .iter()
        .filter(|p| waiting.contains(&p.0))
        .cloned()
        .collect();
    submit_codes(gateway.registry.clone(), again, 1).await;
    for _ in 0..1_200 {
        let open = ids_in(
            &w.db.pool,
            "SELECT id FROM payments WHERE status NOT IN ('succeeded', 'failed', 'expired')
             UNION ALL SELECT rrn FROM reversals WHERE completed_at IS NULL
             UNION ALL SELECT payment_id FROM customer_messages
                 WHERE kind = 'outcome' AND status = 'queued'
             UNION ALL SELECT id FROM webhook_events WHERE delivered_at IS NULL",
        )
        .await;
        if open.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Each payment final once, with its codes, one webhook event, one outcome SMS sent and no
/// reversal open: the sum of the amounts that succeeded, and how many payments ended each way.
async fn check_payments(
    w: &World,
    context: &str,
) -> (i64, std::collections::BTreeMap<String, usize>) {
    let client = w.db.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT p.id, p.status, p.failure_code, p.approval_code, p.amount_minor,
                    (SELECT count(*) FROM webhook_events e WHERE e.payment_id = p.id),
                    (SELECT count(*) FROM reversals r WHERE r.payment_id = p.id
                        AND r.completed_at IS NULL),
                    (SELECT count(*) FROM audit_log a WHERE a.payment_id = p.id
                        AND a.event IN ('succeeded', 'failed', 'expired')),
                    (SELECT count(*) FROM customer_messages n WHERE n.payment_id = p.id
                        AND n.kind = 'outcome' AND n.status IN ('sent', 'delivered'))
             FROM payments p",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), w.payments.len(), "{context}");
    let mut succeeded_minor = 0;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for r in &rows {
        let (id, status) = (r.get::<_, String>(0), r.get::<_, String>(1));
        let failure = r.get::<_, Option<String>>(2);
        let approval = r.get::<_, Option<String>>(3);
        let (events, reversals_open) = (r.get::<_, i64>(5), r.get::<_, i64>(6));
        let (finals_audited, notices_sent) = (r.get::<_, i64>(7), r.get::<_, i64>(8));
        let seen = format!("{context}: {id} {status} {failure:?} {approval:?}");
        match status.as_str() {
            "succeeded" => {
                assert!(approval.is_some() && failure.is_none(), "{seen}");
                succeeded_minor += r.get::<_, i64>(4);
            }
            "failed" => assert!(
                matches!(
                    failure.as_deref(),
                    Some("bank_declined" | "bank_unavailable")
                ),
                "{seen}"
            ),
            // Not debited: the sums of both accounts below show it.
            "expired" => assert!(failure.is_none() && approval.is_none(), "{seen}"),
            _ => panic!("not final: {seen}"),
        }
        assert_eq!(events, 1, "one webhook event: {seen}");
        assert_eq!(finals_audited, 1, "final once, never changed: {seen}");
        assert_eq!(reversals_open, 0, "reversal drained: {seen}");
        assert_eq!(
            notices_sent, 1,
            "the customer told the outcome once: {seen}"
        );
        *outcomes.entry(format!("{status} {failure:?}")).or_default() += 1;
    }
    (succeeded_minor, outcomes)
}

/// The merchant's and the customer's view against the database's: each payment's webhook event
/// reached the merchant at least once, signed with its secret, and every copy names the final
/// status; each outcome SMS on the phone names it too. (Copies may repeat: a delivery whose answer
/// was lost in the crash is sent again, by design.)
async fn check_what_left_the_gateway(w: &World, context: &str) {
    let client = w.db.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT id, status, amount_minor, currency FROM payments",
            &[],
        )
        .await
        .unwrap();
    let now = Utc::now().timestamp();
    let hooks: Vec<serde_json::Value> = w
        .receiver
        .requests()
        .iter()
        .map(|hook| {
            hook.verify(&w.merchant.webhook_secret, now, 300)
                .unwrap_or_else(|e| panic!("{context}: a webhook's signature: {e}"));
            serde_json::from_str(&hook.body).unwrap()
        })
        .collect();
    let texts: Vec<String> = w.smsc.messages().into_iter().map(|m| m.text).collect();
    for r in &rows {
        let (id, status) = (r.get::<_, String>(0), r.get::<_, String>(1));
        let seen = format!("{context}: {id} {status}");
        let told: Vec<_> = hooks
            .iter()
            .filter(|h| h["data"]["id"] == id.as_str())
            .collect();
        assert!(!told.is_empty(), "the merchant was told: {seen}");
        for hook in told {
            assert_eq!(hook["type"], format!("payment.{status}"), "{seen}");
            assert_eq!(hook["data"]["status"], status.as_str(), "{seen}");
        }
        let currency = payhub_actors::domain::Currency::parse(&r.get::<_, String>(3)).unwrap();
        let amount = payhub_actors::domain::Amount::parse(r.get(2)).unwrap();
        let about_this = format!("payhub: payment of {} to ", currency.format_amount(amount));
        let sms: Vec<_> = texts
            .iter()
            .filter(|t| t.starts_with(&about_this))
            .collect();
        assert!(!sms.is_empty(), "the customer was told: {seen}");
        for text in sms {
            assert!(text.ends_with(&format!(" {status}.")), "{seen}: {text}");
        }
    }
}

/// The crash the simulation can meet only by chance, made on purpose: a payment final, its outcome
/// SMS's row still `queued` when the gateway stopped. The next start sends it, even when the SMS
/// center is not taking messages at first.
#[actix_rt::test]
async fn an_outcome_sms_left_queued_by_a_stopped_gateway_goes_at_the_next_start() {
    let w = world(vec![]).await;
    let payment = w.payments[0].clone();
    let gateway = w.start_gateway().await;
    submit_codes(gateway.registry.clone(), vec![payment.clone()], 1).await;
    let outcome_sent = "SELECT payment_id FROM customer_messages
        WHERE kind = 'outcome' AND status IN ('sent', 'delivered')";
    eventually("the outcome SMS sent", || async {
        ids_in(&w.db.pool, outcome_sent).await == vec![payment.0.clone()]
    })
    .await;
    gateway.stop().await;
    let client = w.db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE customer_messages SET status = 'queued', message_ref = NULL,
                 receipt_status = NULL WHERE kind = 'outcome'",
            &[],
        )
        .await
        .unwrap();
    let outcome_texts = || {
        w.smsc
            .messages()
            .into_iter()
            .filter(|m| m.text.contains("succeeded"))
            .count()
    };
    assert_eq!(outcome_texts(), 1);

    // The SMS center throttles every try of the first offer (5): the notice is offered again,
    // as a live payment's is, not failed at its first offer.
    w.smsc.update_switches(|s| s.throttle_next = 5);
    let gateway = w
        .start_gateway_with(PaymentSettings {
            outcome_notice_retry_ms: 300,
            ..PaymentSettings::default()
        })
        .await;
    eventually("the outcome SMS sent again", || async {
        ids_in(&w.db.pool, outcome_sent).await == vec![payment.0.clone()]
    })
    .await;
    assert_eq!(outcome_texts(), 2, "{:?}", w.smsc.messages());
    gateway.stop().await;
}

/// A crash between counting the last wrong code and failing the payment: the next start ends it
/// `failed` (`code_attempts_exceeded`) at once, not `expired` at the end of its lifetime.
#[actix_rt::test]
async fn a_payment_whose_wrong_tries_are_all_counted_fails_at_the_next_start() {
    let w = world(vec![]).await;
    let payment = w.payments[0].0.clone();
    let client = w.db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE payments SET code_failures = 3 WHERE id = $1",
            &[&payment],
        )
        .await
        .unwrap();
    let gateway = w.start_gateway().await;
    let failed = "SELECT id FROM payments
        WHERE status = 'failed' AND failure_code = 'code_attempts_exceeded'";
    eventually("failed at the start", || async {
        ids_in(&w.db.pool, failed).await == vec![payment.clone()]
    })
    .await;
    gateway.stop().await;
}
