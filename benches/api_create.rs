//! `POST /v1/payments` throughput and latency over keep-alive mTLS connections, against a durable
//! PostgreSQL (fsync and synchronous_commit on: `ClusterOptions::DEMO`) on this machine.
//!
//! `cargo bench --bench api_create` — knobs: `BENCH_CONNECTIONS` (64), `BENCH_SECONDS` (10),
//! `BENCH_WARMUP_SECONDS` (2), `BENCH_KEYED` (1: every request carries an Idempotency-Key),
//! `BENCH_WORKERS` (server workers, 2), `BENCH_POOL` (database connections, 32).
//! Client, server and PostgreSQL share the machine's cores; the figures include all three.

use payhub::host_cpu::CpuTicks;
use payhub::http::merchant_testing::{TestPki, https_client, register_merchant};
use payhub::http::server::{self, ServerSettings};
use payhub_actors::store::local_cluster::{ClusterOptions, LocalCluster};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: payhub::Allocator = payhub::Allocator;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need to run for.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let connections = knob("BENCH_CONNECTIONS", 64) as usize;
    let seconds = knob("BENCH_SECONDS", 10);
    let warmup = knob("BENCH_WARMUP_SECONDS", 2);
    let keyed = knob("BENCH_KEYED", 1) == 1;
    let workers = knob("BENCH_WORKERS", 2) as usize;
    let pool_size = knob("BENCH_POOL", 32) as usize;

    // On disk (not tmpfs), durable settings.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-pg-api");
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = LocalCluster::start(&dir, ClusterOptions::DEMO).expect("cluster");
    let admin = payhub_actors::store::pool(&cluster.url("postgres"), 1).expect("pool");
    admin
        .get()
        .await
        .expect("admin")
        .batch_execute("CREATE DATABASE bench")
        .await
        .expect("create db");
    let pool = payhub_actors::store::pool(&cluster.url("bench"), pool_size).expect("pool");
    payhub_actors::store::migrate(&pool).await.expect("migrate");
    let settings_row = pool
        .get()
        .await
        .expect("conn")
        .query_one(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'), version()",
            &[],
        )
        .await
        .expect("settings");
    println!(
        "postgres: fsync={} synchronous_commit={} ({})",
        settings_row.get::<_, String>(0),
        settings_row.get::<_, String>(1),
        settings_row
            .get::<_, String>(2)
            .split(" on ")
            .next()
            .unwrap_or("")
    );

    let pki = TestPki::new();
    let shop = register_merchant(&pool, "Bench Shop", pki.client_cert("bench")).await;
    let running = server::start(
        ServerSettings::loopback(
            workers,
            url::Url::parse("https://gateway.bench").expect("url"),
        ),
        &pki.server_tls(),
        pool.clone(),
        Arc::new(payhub_actors::SystemClock),
        vec![],
    )
    .expect("server");
    let url = format!("https://127.0.0.1:{}/v1/payments", running.addr.port());

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = https_client(&pki, Some(&shop.cert));
        let (url, measuring, stop, errors) =
            (url.clone(), measuring.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let order = format!("c{c}-{n}");
                let body = serde_json::json!({"order_id": order, "amount": 1234,
                    "currency": "CNY", "description": "bench",
                    "return_url": "https://shop.example/r",
                    "notify_url": "https://shop.example/n"});
                let mut req = client.post(&url).json(&body);
                if keyed {
                    req = req.header("Idempotency-Key", order.as_str());
                }
                let started = Instant::now();
                let ok = match req.send().await {
                    Ok(res) => {
                        res.status() == reqwest::StatusCode::CREATED && res.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if measuring.load(Ordering::Relaxed) && ok {
                    latencies_us.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            latencies_us
        }));
    }
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let cpu_before = CpuTicks::now();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu_after = CpuTicks::now();
    let stolen = cpu_before.stolen_percent_until(&cpu_after);
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|us| *us as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "api_create: connections={connections} keyed={keyed} server_workers={workers} pool={pool_size}"
    );
    println!(
        "api_create: {} creates in {:.1} s = {:.0} creates/s; p50 {:.2} ms, p99 {:.2} ms; errors {}",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        errors.load(Ordering::Relaxed)
    );
    // A virtual machine's host may take CPU time from it; figures from such a run are low.
    println!("api_create: CPU time stolen by the host during the run: {stolen:.0}%");
    // What each create costs the machine (client, gateway and PostgreSQL on the same cores):
    // a figure that moves far less with the host than the rate does.
    println!(
        "api_create: {:.0} µs of CPU per create, all processes of the machine",
        1_000.0 * cpu_before.busy_ms_until(&cpu_after) / all.len().max(1) as f64
    );
    let counts = running.creates.counts();
    let batches = counts.batches.load(Ordering::Relaxed);
    println!(
        "api_create: {} creates written in {batches} batches ({:.1} per batch), {} alone, {} batches refused",
        counts.created_in_batches.load(Ordering::Relaxed),
        counts.created_in_batches.load(Ordering::Relaxed) as f64 / batches.max(1) as f64,
        counts.written_alone.load(Ordering::Relaxed),
        counts.batches_refused.load(Ordering::Relaxed),
    );
    running.stop().await;
    drop(cluster);
}
