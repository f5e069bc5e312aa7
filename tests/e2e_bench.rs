//! The end-to-end benchmark (issue 5), run on demand:
//! `cargo test --test e2e_bench -- --ignored --nocapture`.
//! Real PostgreSQL, the real HTTPS listener and pages, SMSC and bank simulators over TCP. Prints
//! payments/s and p50/p99 per step of the whole flow, the argon2-only bound on the same cores, the
//! debit path alone (code accepted → outcome stored → webhook queued), and the resident memory with
//! 10,000 payments awaiting their code. Figures go to BENCHMARKS.md (`## Payments end to end`).

#[path = "e2e_bench_parts/cpu_parts.rs"]
mod cpu_parts;
mod e2e_support;

use chrono::Utc;
use cpu_parts::CpuParts;
use e2e_support::*;
use futures::StreamExt;
use payhub::host_cpu::CpuTicks;
use payhub::http::merchant_testing::TestPki;
use payhub_actors::clock::SharedClock;
use payhub_actors::keyed_hash::HashKey;
use payhub_actors::secret::Secret;
use payhub_actors::store::testing::{fresh_database, fresh_database_with_pool};
use payhub_actors::transaction::PaymentSettings;
use payhub_actors::transaction::actor::SubmitCode;
use payhub_actors::transaction::registry::{InFlight, Lookup};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: payhub::Allocator = payhub::Allocator;

const ACCOUNT: &str = "6222000011112222";
/// Knobs (environment), with their defaults: `BENCH_FLOW_PAYMENTS` 48, `BENCH_FLOW_CONCURRENCY`
/// 8, `BENCH_DEBIT_PAYMENTS` 4000, `BENCH_DEBIT_CONCURRENCY` 64, `BENCH_DB_POOL_SIZE` 16 (the
/// gateway's default `database.pool_size`).
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const WAITING_PAYMENTS: i64 = 10_000;
/// Debit-path payments run before the clock starts.
const DEBIT_WARMUP_PAYMENTS: usize = 256;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  {name:<22} p50 {:>8.1} ms   p99 {:>8.1} ms   (n={})",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.len()
    );
}

fn rss_kib() -> u64 {
    kib_in("/proc/self/status", "VmRSS:")
}

/// The resident memory backed by transparent huge pages: a 2 MiB page is resident whole once one
/// byte of it is touched.
fn huge_pages_kib() -> u64 {
    kib_in("/proc/self/smaps_rollup", "AnonHugePages:")
}

/// A `field:   N kB` line of a `/proc` file; 0 when absent.
fn kib_in(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Verifications in each measure of the argon2 bound: about 2.5 s on two cores.
const ARGON2_BOUND_VERIFICATIONS: usize = 120;

/// Password verifications per second at the configured argon2 parameters, `cores` at once.
async fn argon2_bound(cores: usize, n: usize) -> f64 {
    let phc = payhub_actors::password::hash(Secret::new("correct horse battery".into()))
        .await
        .unwrap();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| {
            let phc = phc.clone();
            async move {
                payhub_actors::password::verify(Secret::new("correct horse battery".into()), phc)
                    .await
            }
        })
        .buffer_unordered(cores)
        .collect::<Vec<_>>()
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

#[actix_rt::test]
#[ignore = "benchmark: run on demand with --ignored --nocapture"]
async fn payments_end_to_end() {
    let flow_payments = knob("BENCH_FLOW_PAYMENTS", 48);
    let flow_concurrency = knob("BENCH_FLOW_CONCURRENCY", 8);
    let debit_payments = knob("BENCH_DEBIT_PAYMENTS", 4_000);
    let debit_concurrency = knob("BENCH_DEBIT_CONCURRENCY", 64);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Durable commits and the pool's default size, as in production.
    payhub_actors::store::testing::use_durable_cluster();
    let db = fresh_database_with_pool(knob("BENCH_DB_POOL_SIZE", 16)).await;
    print_durability(&db.pool).await;
    let smsc = start_smsc_on_own_thread();
    // Each browser at once is another customer, with an account and a phone of their own.
    let shopper_accounts: Vec<String> = (0..flow_concurrency)
        .map(|i| format!("62220000333{i:05}"))
        .collect();
    let mut accounts = vec![(ACCOUNT, i64::MAX / 4)];
    accounts.extend(shopper_accounts.iter().map(|a| (a.as_str(), i64::MAX / 4)));
    let bank = start_bank(&accounts).await;
    let receiver = Receiver::start(vec![]);
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let customer = seed_customer(&db.pool, "alice", ACCOUNT).await;
    let mut shoppers = Vec::new();
    for (i, account) in shopper_accounts.iter().enumerate() {
        shoppers.push(seed_customer(&db.pool, &format!("shopper{i}"), account).await);
    }
    if std::env::var("BENCH_FLOW_CHEAP_HASH").is_ok() {
        cheapen_passwords(&db.pool, &shoppers[0].password).await;
    }
    let shoppers = std::sync::Mutex::new(shoppers);
    let key = HashKey::random();
    let clock: SharedClock = Arc::new(payhub_actors::SystemClock);
    let settings = PaymentSettings {
        // Many logins of one customer: the lockout must not interfere.
        identity_failures_max: 1_000_000,
        ..PaymentSettings::default()
    };
    let outside = Outside {
        smsc: smsc.smpp_addr(),
        bank: bank.addr(),
        bank_response_timeout_ms: 5_000,
        smpp_response_timeout_ms: 10_000,
        code_page_wait_ms: payhub::http::pages::CODE_STEP_WAIT_MAX_MS,
    };
    let gateway = Gateway::start(
        db.pool.clone(),
        clock.clone(),
        key.clone(),
        settings.clone(),
        outside.clone(),
        pki.clone(),
    )
    .await;
    println!("payments end to end ({cores} cores)");

    // 1. The argon2-only bound, here and again after the flow: the host's speed drifts by more
    // than the gateway's cost, so the flow is weighed against the mean of the two.
    let bound_before = argon2_bound(cores, ARGON2_BOUND_VERIFICATIONS).await;

    // 2. The whole flow through the pages.
    let mut ids = Vec::new();
    for _ in 0..flow_payments {
        ids.push(create_payment(&db.pool, &merchant, 1234, &receiver.url, Utc::now()).await);
    }
    let cpu_before = CpuParts::now();
    let machine_before = CpuTicks::now();
    let started = Instant::now();
    let steps: Vec<(f64, f64, f64)> = futures::stream::iter(ids)
        .map(|pay| {
            let browser = Browser::new(&gateway.base, &pki);
            let (smsc, shoppers) = (&smsc, &shoppers);
            async move {
                // At most `flow_concurrency` payments run at once: one customer is always free.
                let customer = shoppers.lock().unwrap().pop().expect("a free customer");
                let t0 = Instant::now();
                let page = browser.get(&format!("/pay/{pay}")).await;
                let csrf = page.csrf();
                let t1 = Instant::now();
                let done = browser
                    .post(
                        &format!("/pay/{pay}/login"),
                        &[
                            ("csrf_token", csrf.as_str()),
                            ("identity", customer.online_id.as_str()),
                            ("password", customer.password.as_str()),
                            ("channel", "sms"),
                        ],
                    )
                    .await;
                assert_eq!(done.path(), format!("/pay/{pay}/code"));
                let t2 = Instant::now();
                let code = code_on_phone(smsc, &customer.mobile).await;
                let t3 = Instant::now();
                let result = browser
                    .post(
                        &format!("/pay/{pay}/code"),
                        &[("csrf_token", csrf.as_str()), ("code", code.as_str())],
                    )
                    .await;
                assert!(result.body.contains("Payment complete"), "{}", result.body);
                let t4 = Instant::now();
                shoppers.lock().unwrap().push(customer);
                let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
                (ms(t0, t1), ms(t1, t2), ms(t3, t4))
            }
        })
        .buffer_unordered(flow_concurrency)
        .collect()
        .await;
    let flow_rate = flow_payments as f64 / started.elapsed().as_secs_f64();
    let machine_after = CpuTicks::now();
    // Before the second bound: its verifications are not the flow's.
    let parts_after = CpuParts::now();
    let bound_after = argon2_bound(cores, ARGON2_BOUND_VERIFICATIONS).await;
    let bound = (bound_before + bound_after) / 2.0;
    println!(
        "  argon2 verify bound     {bound:.1} /s ({bound_before:.1} before the flow, \
         {bound_after:.1} after)"
    );
    println!(
        "  whole flow              {flow_rate:.1} payments/s ({:.0}% of the argon2 bound; the \
         machine {:.0}% busy, {:.0}% of its time stolen by the host)",
        100.0 * flow_rate / bound,
        machine_before.busy_percent_until(&machine_after),
        machine_before.stolen_percent_until(&machine_after),
    );
    let [argon2, gateway_ms, postgres, harness] =
        parts_after.ms_per_op_since(&cpu_before, flow_payments);
    println!(
        "  CPU per payment         argon2 {argon2:.1} ms, gateway {gateway_ms:.1} ms, PostgreSQL \
         {postgres:.1} ms, browsers, simulators and webhook receiver {harness:.1} ms: the gateway \
         and its database cost {:.0}% beside the hash",
        100.0 * (gateway_ms + postgres) / argon2
    );
    report("open page", steps.iter().map(|s| s.0).collect());
    report("password step", steps.iter().map(|s| s.1).collect());
    report("code step (debit)", steps.iter().map(|s| s.2).collect());
    if debit_payments == 0 {
        // `BENCH_DEBIT_PAYMENTS=0`: the flow alone, e.g. to read `pg_stat_statements` after it.
        gateway.stop().await;
        return;
    }

    // 3. The debit path alone: payments awaiting their code, the code submitted to the actor.
    let mut ready = Vec::new();
    let client = db.pool.get().await.unwrap();
    for i in 0..debit_payments + DEBIT_WARMUP_PAYMENTS {
        let pay = create_payment(&db.pool, &merchant, 100, &receiver.url, Utc::now()).await;
        let (code, session) = (format!("{:06}", i % 1_000_000), format!("s{i}"));
        awaiting_code(&client, &key, &pay, &customer, &code, &session).await;
        ready.push((pay, code, session));
    }
    // The pool's connections planned their statements when the flow's tables were small, and
    // keep those plans until statistics change. A running system's autovacuum analyses a table
    // that grew this much within its one-minute nap; the benchmark grew it in seconds, so it
    // analyses here, as autovacuum would have (BENCHMARKS.md, 30 Nov 20:15).
    client.batch_execute("ANALYZE").await.unwrap();
    drop(client);
    // In the flow each payment's actor has run since its page was opened: it is started here,
    // before the clock, so that the phase measures the debit path alone.
    let mut actors = Vec::with_capacity(ready.len());
    for (pay, code, session) in ready {
        let actor = gateway.registry.send(Lookup(pay)).await.unwrap().unwrap();
        actors.push((actor, code, session));
    }
    // A running gateway has its connections open and its statements prepared: the first
    // payments, untimed, do that, and their SMS and webhooks go out before the clock starts.
    let measured = actors.split_off(DEBIT_WARMUP_PAYMENTS);
    submit_codes(actors, debit_concurrency).await;
    assert_eq!(
        webhooks_waiting(&db.pool).await,
        0,
        "the warm-up's webhooks"
    );
    let cpu_before = CpuTicks::now();
    let parts_before = CpuParts::now();
    let started = Instant::now();
    let latencies = submit_codes(measured, debit_concurrency).await;
    let debit_rate = debit_payments as f64 / started.elapsed().as_secs_f64();
    let stolen = cpu_before.stolen_percent_until(&CpuTicks::now());
    println!(
        "  debit path alone        {debit_rate:.0} payments/s (concurrency {debit_concurrency}; \
         {stolen:.0}% of the CPU time stolen by the host)"
    );
    report("code → outcome + event", latencies);
    outcome_notices_drained(&db.pool, started).await;
    webhooks_delivered(&db.pool, started).await;
    // Through the outcome SMS and webhooks sent after the last answer; a figure that moves
    // much less with the host than the rate does.
    let cpu_ms = cpu_before.busy_ms_until(&CpuTicks::now());
    let [_, gateway_ms, postgres, harness] =
        CpuParts::now().ms_per_op_since(&parts_before, debit_payments);
    println!(
        "  CPU per debit           {:.0} µs, all processes of the machine: gateway {:.0} µs, \
         PostgreSQL {:.0} µs, the rest of the benchmark (SMSC and bank simulators, the \
         merchant's webhook receiver) {:.0} µs",
        1_000.0 * cpu_ms / debit_payments as f64,
        1_000.0 * gateway_ms,
        1_000.0 * postgres,
        1_000.0 * harness,
    );

    // 4. Memory with 10,000 payments awaiting their code (rebuilt as actors after a restart).
    gateway.stop().await;
    seed_waiting_payments(&db.pool, &merchant, &customer).await;
    let before = rss_kib();
    let gateway = Gateway::start(db.pool.clone(), clock, key, settings, outside, pki).await;
    let in_flight = resumed_payments(&gateway).await;
    let after = rss_kib();
    println!(
        "  {in_flight} payments awaiting their code: RSS {:.1} MiB for the whole test process \
         ({:.1} MiB more than before they were loaded)",
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / 1024.0
    );
    gateway.stop().await;
}

/// Each code submitted to its payment's actor, `concurrency` at once: the latency of each, in ms.
async fn submit_codes(
    actors: Vec<(
        actix::Addr<payhub_actors::transaction::TransactionActor>,
        String,
        String,
    )>,
    concurrency: usize,
) -> Vec<f64> {
    futures::stream::iter(actors)
        .map(|(actor, code, session)| async move {
            let t = Instant::now();
            let reply = actor
                .send(SubmitCode {
                    session: Secret::new(session),
                    code: Secret::new(code),
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                reply,
                payhub_actors::transaction::CodeReply::Finished(
                    payhub_actors::domain::PaymentStatus::Succeeded
                )
            );
            t.elapsed().as_secs_f64() * 1e3
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// How many payment actors a freshly started gateway runs once it has resumed the
/// `WAITING_PAYMENTS` (up to a minute), after two more seconds to settle.
async fn resumed_payments(gateway: &Gateway) -> usize {
    for _ in 0..600 {
        if gateway.registry.send(InFlight).await.unwrap() >= WAITING_PAYMENTS as usize {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    gateway.registry.send(InFlight).await.unwrap()
}

/// `WAITING_PAYMENTS` payments awaiting their code, written straight into the table.
async fn seed_waiting_payments(
    pool: &deadpool_postgres::Pool,
    merchant: &Merchant,
    customer: &Customer,
) {
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO payments (id, merchant_id, order_id, amount_minor, currency, description,
                 return_url, notify_url, created_at, expires_at, updated_at, status, customer_id,
                 session_hash, channel, receiver_msisdn, code_hash, code_expires_at, code_sends,
                 code_sent_at)
             SELECT 'pay_w' || g, $1, 'W-' || g, 1234, 'CNY', '2 books', 'https://shop.example/r',
                 'https://shop.example/n', now(), now() + interval '15 minutes', now(),
                 'awaiting_code', $2, '\\x00', 'sms', $3, '\\x00', now() + interval '5 minutes', 1,
                 now()
             FROM generate_series(1, $4::bigint) g",
            &[
                &merchant.id,
                &customer.id,
                &customer.mobile,
                &WAITING_PAYMENTS,
            ],
        )
        .await
        .unwrap();
}

/// Asks `probe` every 100 ms, for at most a minute, until `done` holds of its answer; the last
/// answer.
async fn poll_until<T>(mut probe: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let mut answer = probe().await;
    for _ in 0..600 {
        if done(&answer) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        answer = probe().await;
    }
    answer
}

/// The outcome SMS of the debit path go out behind it, through the one SMPP session: how long
/// until none is left queued (at most a minute), and how they ended.
async fn outcome_notices_drained(pool: &deadpool_postgres::Pool, debit_started: Instant) {
    let client = pool.get().await.unwrap();
    let by_status = poll_until(
        async || {
            client
                .query(
                    "SELECT status || COALESCE(': ' || error, ''), count(*) FROM customer_messages
                     WHERE kind = 'outcome' GROUP BY 1 ORDER BY 1",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<Vec<_>>()
        },
        |by_status| {
            by_status
                .iter()
                .all(|(status, _)| !status.starts_with("queued"))
        },
    )
    .await;
    println!(
        "  outcome SMS             {by_status:?} {:.1} s after the debit path started",
        debit_started.elapsed().as_secs_f64()
    );
}

/// Waits (up to a minute) until every webhook event has been delivered.
async fn webhooks_delivered(pool: &deadpool_postgres::Pool, debit_started: Instant) {
    let waiting = webhooks_waiting(pool).await;
    println!(
        "  webhooks                {waiting} not delivered {:.1} s after the debit path started",
        debit_started.elapsed().as_secs_f64()
    );
}

/// Webhook events not yet delivered, once none is left or after a minute.
async fn webhooks_waiting(pool: &deadpool_postgres::Pool) -> i64 {
    let client = pool.get().await.unwrap();
    poll_until(
        async || {
            client
                .query_one(
                    "SELECT count(*) FROM webhook_events WHERE delivered_at IS NULL",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        },
        |waiting| *waiting == 0,
    )
    .await
}

async fn print_durability(pool: &deadpool_postgres::Pool) {
    let row = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .await
        .unwrap();
    let (fsync, commit): (String, String) = (row.get(0), row.get(1));
    println!("  postgres: fsync={fsync} synchronous_commit={commit}");
}

/// The code the customer's phone shows: the newest code message to `mobile`. The gateway answers
/// the login only once the SMSC has accepted the message, and each customer pays one payment at a
/// time, so it is this payment's. Read off the simulator, as the customer reads the phone: the
/// benchmark puts no load of its own on the gateway's database.
async fn code_on_phone(smsc: &payhub::sim::smsc::SmscSim, mobile: &str) -> String {
    // Up to 30 s: under full load the SMSC's answer may queue behind many others.
    for _ in 0..3_000 {
        if let Some(m) = smsc.newest_message_to(mobile, |m| m.text.starts_with("payhub: code ")) {
            return code_in(&m.text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no code message reached {mobile}");
}

/// A diagnostic, not the figure (`BENCH_FLOW_CHEAP_HASH`): the flow's customers get an
/// argon2id hash of 64 KiB and one pass, so that the flow shows what the gateway and its database
/// cost without the configured hash's time and its 19 MiB passing through the caches.
async fn cheapen_passwords(pool: &deadpool_postgres::Pool, password: &str) {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&payhub_actors::ids::os_random::<16>()).unwrap();
    let phc = argon2
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "UPDATE customers SET password_hash = $1 WHERE online_id LIKE 'shopper%'",
            &[&phc],
        )
        .await
        .unwrap();
}

/// Resident memory of the gateway with 10,000 payments awaiting their code, alone in its process:
/// `cargo test --test e2e_bench memory -- --ignored --nocapture`.
#[actix_rt::test]
#[ignore = "benchmark: run on demand with --ignored --nocapture"]
async fn memory_with_10000_payments_awaiting_their_code() {
    // Both benchmarks of this process share one cluster: the durable one.
    payhub_actors::store::testing::use_durable_cluster();
    let db = fresh_database().await;
    let smsc = start_smsc().await;
    let bank = start_bank(&[(ACCOUNT, 1_000_000)]).await;
    let pki = TestPki::new();
    let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
    let customer = seed_customer(&db.pool, "alice", ACCOUNT).await;
    seed_waiting_payments(&db.pool, &merchant, &customer).await;
    let outside = Outside {
        smsc: smsc.smpp_addr(),
        bank: bank.addr(),
        bank_response_timeout_ms: 5_000,
        smpp_response_timeout_ms: 10_000,
        code_page_wait_ms: payhub::http::pages::CODE_STEP_WAIT_MAX_MS,
    };
    let clock: SharedClock = Arc::new(payhub_actors::SystemClock);
    // Everything but the payment actors: a gateway over an empty table first.
    let baseline = {
        let empty = fresh_database().await;
        let g = Gateway::start(
            empty.pool.clone(),
            clock.clone(),
            HashKey::random(),
            PaymentSettings::default(),
            outside.clone(),
            pki.clone(),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let rss = rss_kib();
        g.stop().await;
        rss
    };
    let gateway = Gateway::start(
        db.pool.clone(),
        clock,
        HashKey::random(),
        PaymentSettings::default(),
        outside,
        pki,
    )
    .await;
    let in_flight = resumed_payments(&gateway).await;
    let after = rss_kib();
    println!(
        "{in_flight} payment actors awaiting their code: process RSS {:.1} MiB ({:.1} MiB of it \
         in transparent huge pages); with a gateway over an empty table {:.1} MiB; the actors' \
         share {:.1} MiB",
        after as f64 / 1024.0,
        huge_pages_kib() as f64 / 1024.0,
        baseline as f64 / 1024.0,
        after.saturating_sub(baseline) as f64 / 1024.0
    );
    gateway.stop().await;
}
