//! Throughput of the SMS channel: the session actor submitting to the simulator over TCP, with
//! every message recorded in PostgreSQL (insert, update, receipt). A measurement, not a check:
//! run it by hand and copy the figures to BENCHMARKS.md.
//!
//! `cargo test --test smpp_throughput -- --ignored --nocapture`

use futures::StreamExt;
use smpp_support::{code_message, payment};
mod smpp_support;

use payhub::channels::smpp::{self, GetStatus, SmppSettings};
use payhub::sim::smsc::{self, SmscSimOptions};
use payhub_actors::SystemClock;
use payhub_actors::store::testing::fresh_database;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGES: usize = 2_000;
/// Deliveries asked for at once, as payments arriving together would.
const SENDERS: usize = 64;

#[actix_rt::test]
#[ignore = "a measurement; run by hand"]
async fn sms_channel_throughput() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("SMPP_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
    for window_max in [1, 10] {
        measure(window_max).await;
    }
}

async fn measure(window_max: usize) {
    let db = fresh_database().await;
    let mut options = SmscSimOptions::loopback("payhub", "secret");
    options.switches.receipts = std::env::var("NO_RECEIPTS").is_err();
    let sim = smsc::start(options).await.unwrap();
    let payment_id = payment(&db).await;
    let config = payhub::config::SmppConfig {
        addr: sim.smpp_addr().to_string(),
        password: "secret".into(),
        window_max,
        ..Default::default()
    };
    let session = smpp::start(
        db.pool.clone(),
        Arc::new(SystemClock),
        SmppSettings::from_config(&config),
    )
    .unwrap();
    while !session.send(GetStatus).await.unwrap().bound {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let sends = (0..MESSAGES).map(|_| {
        let session = session.clone();
        let payment_id = payment_id.clone();
        async move {
            let sent = Instant::now();
            session
                .send(code_message(&payment_id))
                .await
                .unwrap()
                .unwrap();
            sent.elapsed()
        }
    });
    let mut latencies: Vec<Duration> = futures::stream::iter(sends)
        .buffer_unordered(SENDERS)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "window_max {window_max}, {SENDERS} senders: {MESSAGES} SMS in {:.2} s = {:.0} SMS/s; latency p50 {:.1} ms, p99 {:.1} ms",
        elapsed.as_secs_f64(),
        MESSAGES as f64 / elapsed.as_secs_f64(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
    );
    assert_eq!(sim.messages().len(), MESSAGES);
}
