//! Benchmark (ignored by default): round trips per second over one bank link, through the
//! `BankRouter` and one `BankLinkActor`, against `payhub bank-sim --store memory` running as its
//! own process. Run:
//!
//! ```sh
//! cargo test --release --test bank_link_bench -- --ignored --nocapture
//! ```
//!
//! Knobs (environment): `BENCH_SECONDS` (default 10), `BENCH_IN_FLIGHT` (concurrent debits,
//! default 1024), `BENCH_LINK_THREAD` (1: the link actor on an arbiter thread of its own).

use payhub_actors::bank::{self, LinkOwner, LinkSettings};
use payhub_actors::domain::{AccountNumber, Amount, BankId, Currency};
use payhub_actors::messages::{Debit, DebitRequest};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: payhub::Allocator = payhub::Allocator;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const ACCOUNTS: usize = 1_000;

fn request(rrn: u64) -> DebitRequest {
    DebitRequest {
        payment_id: format!("pay_{rrn}"),
        rrn: format!("{rrn:012}"),
        amount: Amount::parse(1).unwrap(),
        currency: Currency::Cny,
        payer_bank: BankId::parse("0001").unwrap(),
        payer_account: AccountNumber::parse(&format!("acct{:06}", rrn as usize % ACCOUNTS))
            .unwrap(),
        payee_account: AccountNumber::parse("shop-settlement").unwrap(),
        terminal_id: "TERM0001".into(),
        card_acceptor_id: "MERCHANT0000001".into(),
        merchant_name_location: "Book Shop, Beijing".into(),
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn link_round_trips_per_second() {
    let seconds = env_or("BENCH_SECONDS", 10);
    let in_flight = env_or("BENCH_IN_FLIGHT", 1_024) as usize;
    let link_thread = env_or("BENCH_LINK_THREAD", 1) == 1;

    // The bank: a separate process on port 0, accounts seeded from a file.
    let mut seed = tempfile::NamedTempFile::new().unwrap();
    writeln!(seed, "bank_id,account,balance_minor,currency").unwrap();
    for n in 0..ACCOUNTS {
        writeln!(seed, "0001,acct{n:06},999999999999,CNY").unwrap();
    }
    writeln!(seed, "0001,shop-settlement,0,CNY").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_payhub"))
        .args(["bank-sim", "--listen", "127.0.0.1:0", "--store", "memory"])
        .args(["--bank", "0001", "--seed"])
        .arg(seed.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let started: serde_json::Value = serde_json::from_str(&first).unwrap();
    let addr = started["listen"].as_str().unwrap().to_string();

    let system = actix::System::new();
    let result = system.block_on(async move {
        let db = payhub_actors::store::testing::fresh_database().await;
        let mut link = LinkSettings::new(
            "bench",
            &addr,
            LinkOwner::ThirdParty,
            vec![BankId::parse("0001").unwrap()],
        );
        link.in_flight_max = in_flight.max(1);
        link.response_timeout_ms = 30_000;
        let arbiter = link_thread.then(actix::Arbiter::new);
        let router = bank::start_in(
            arbiter.as_ref().map(|a| a.handle()).as_ref(),
            db.pool.clone(),
            Arc::new(payhub_actors::SystemClock),
            vec![link],
            "99990001",
        )
        .unwrap();
        loop {
            let s = router.send(bank::LinkStatuses).await.unwrap().unwrap();
            if s[0].state == "signed_on" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let next_rrn = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..in_flight)
            .map(|_| {
                let (router, next_rrn, stop, measuring, errors) = (
                    router.clone(),
                    next_rrn.clone(),
                    stop.clone(),
                    measuring.clone(),
                    errors.clone(),
                );
                actix::spawn(async move {
                    let mut latencies_us: Vec<u32> = Vec::with_capacity(1 << 16);
                    while !stop.load(Ordering::Relaxed) {
                        let rrn = next_rrn.fetch_add(1, Ordering::Relaxed);
                        let t0 = Instant::now();
                        let answer = router.send(Debit(request(rrn))).await;
                        let ok = matches!(&answer, Ok(Ok(a)) if a.response_code == "00");
                        if !ok {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        if measuring.load(Ordering::Relaxed) {
                            latencies_us
                                .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                    }
                    latencies_us
                })
            })
            .collect();
        // Warm up, then measure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let errors_before = errors.load(Ordering::Relaxed);
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        router.send(bank::Shutdown).await.unwrap();
        if let Some(a) = arbiter {
            a.stop();
        }
        (all, elapsed, errors.load(Ordering::Relaxed) - errors_before)
    });
    let _ = child.kill();
    let _ = child.wait();
    let (mut latencies, elapsed, errors) = result;
    latencies.sort_unstable();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "bank link: {} round trips in {:.2} s = {:.0}/s; latency p50 {} us, p99 {} us, max {} us; \
         in flight {in_flight}, link thread {link_thread}, errors {errors}",
        latencies.len(),
        elapsed.as_secs_f64(),
        rate,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
    );
    assert!(!latencies.is_empty());
}
