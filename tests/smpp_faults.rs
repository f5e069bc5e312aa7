//! Seeded fault simulation: deliveries through the session actor while the simulator throttles,
//! refuses, stalls and drops at random. Whatever happens, every delivery is answered in bounded
//! time, every answer matches its row, nothing is recorded as sent that the SMSC did not accept,
//! and a receipt the SMSC saw acknowledged is on its row.
//!
//! `PAYHUB_FAULT_SEED=n` replays one run; the seed is printed on failure.

mod smpp_support;

use payhub::channels::smpp::{self, GetStatus, SmppSettings};
use payhub::sim::smsc::{self, SmscSimOptions, Switches};
use payhub_actors::SystemClock;
use payhub_actors::messages::DeliveryError;
use payhub_actors::store::testing::fresh_database;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smpp_support::{code_message, payment};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEPS: usize = 40;
/// No delivery may take longer than this, whatever the faults (tries × waits, with margin).
const ANSWER_BOUND: Duration = Duration::from_secs(8);

fn switches_for(rng: &mut StdRng) -> Switches {
    let mut s = Switches::default();
    match rng.random_range(0..10) {
        0 => s.throttle_next = rng.random_range(1..=2),
        1 => s.queue_full_next = 1,
        2 => s.error_status = [0x0B, 0x45, 0x61][rng.random_range(0..3)],
        3 => s.drop_next = 1,
        // Longer than the response timeout: the answer comes too late.
        4 => s.delay_ms = 700,
        5 => s.delay_ms = rng.random_range(1..50),
        _ => {}
    }
    s
}

#[actix_rt::test]
async fn every_delivery_is_answered_and_matches_its_row_under_random_faults() {
    let seed = std::env::var("PAYHUB_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut rng = StdRng::seed_from_u64(seed);
    let context = format!("PAYHUB_FAULT_SEED={seed}");

    let db = fresh_database().await;
    let sim = smsc::start(SmscSimOptions::loopback("payhub", "secret"))
        .await
        .unwrap();
    let client = db.pool.get().await.unwrap();
    let payment_id = payment(&db).await;
    let config = payhub::config::SmppConfig {
        addr: sim.smpp_addr().to_string(),
        password: "secret".into(),
        response_timeout_ms: 500,
        ..Default::default()
    };
    let mut settings = SmppSettings::from_config(&config);
    settings.rebind_backoff_min_ms = 20;
    settings.rebind_backoff_max_ms = 100;
    settings.throttle_backoff_min_ms = 10;
    settings.throttle_backoff_max_ms = 40;
    let session = smpp::start(db.pool.clone(), Arc::new(SystemClock), settings).unwrap();

    let mut accepted = HashSet::new();
    for step in 0..STEPS {
        sim.set_switches(switches_for(&mut rng));
        // Let a dropped session come back now and then, as it would between customers.
        if rng.random_bool(0.5) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !session.send(GetStatus).await.unwrap().bound && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let rows_before = count(&client, "TRUE").await;
        let answer = tokio::time::timeout(ANSWER_BOUND, session.send(code_message(&payment_id)))
            .await
            .unwrap_or_else(|_| panic!("{context}: step {step} not answered in time"))
            .unwrap();
        let rows_after = count(&client, "TRUE").await;
        let last = client
            .query_opt(
                "SELECT status, message_ref, error FROM customer_messages ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        match &answer {
            Ok(receipt) => {
                let last = last.unwrap();
                let status: String = last.get(0);
                let message_ref: Option<String> = last.get(1);
                assert_eq!(rows_after, rows_before + 1, "{context}: step {step}");
                assert!(
                    ["sent", "delivered", "undeliverable"].contains(&status.as_str()),
                    "{context}: step {step}: {status}"
                );
                assert_eq!(message_ref.as_deref(), Some(receipt.message_ref.as_str()));
                assert!(
                    sim.messages()
                        .iter()
                        .any(|m| m.message_id == receipt.message_ref),
                    "{context}: step {step}: sent but unknown to the SMSC"
                );
                assert!(
                    accepted.insert(receipt.message_ref.clone()),
                    "{context}: duplicate id"
                );
            }
            Err(DeliveryError::Unavailable) if rows_after == rows_before => {}
            Err(error) => {
                assert_eq!(
                    rows_after,
                    rows_before + 1,
                    "{context}: step {step}: {error:?}"
                );
                let last = last.unwrap();
                let status: String = last.get(0);
                let detail: Option<String> = last.get(2);
                assert_eq!(status, "failed", "{context}: step {step}: {error:?}");
                assert!(
                    detail.is_some(),
                    "{context}: step {step}: a failure says why"
                );
                if let DeliveryError::Rejected(reason) = error {
                    assert!(reason.contains("0x000000"), "{context}: {reason}");
                }
            }
        }
    }

    // Nothing is on record as sent that the SMSC did not accept; every Ok is on record as sent
    // (a timed-out submit the SMSC accepted late may be on record as sent too).
    let known: HashSet<String> = sim.messages().into_iter().map(|m| m.message_id).collect();
    let recorded: Vec<Option<String>> = client
        .query(
            "SELECT message_ref FROM customer_messages \
             WHERE status IN ('sent', 'delivered', 'undeliverable')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let recorded: HashSet<String> = recorded.into_iter().map(Option::unwrap).collect();
    assert!(recorded.is_subset(&known), "{context}");
    assert!(accepted.is_subset(&recorded), "{context}");
    // A receipt the gateway acknowledged was committed first: on its row, or kept aside for a
    // message whose id the gateway never learned.
    for m in sim.messages() {
        if m.receipt_acknowledged {
            let kept: i64 = client
                .query_one(
                    "SELECT (SELECT count(*) FROM customer_messages \
                               WHERE message_ref = $1 AND receipt_status = 'DELIVRD') \
                          + (SELECT count(*) FROM smpp_early_receipts WHERE message_ref = $1)",
                    &[&m.message_id],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(kept, 1, "{context}: receipt for {}", m.message_id);
        }
    }
}

async fn count(client: &deadpool_postgres::Client, condition: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM customer_messages WHERE {condition}"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}
