//! Where a benchmark phase's CPU time went, from the kernel's per-thread and per-process counters
//! (`/proc`): the password hashes, the gateway, PostgreSQL, and the benchmark's own browsers and
//! simulators. The target is about the gateway's cost beside the hash; on one machine the
//! harness's share is counted apart, so that it is not taken for the gateway's.

use payhub::host_cpu::USER_HZ;
use std::fs;

/// CPU ticks used so far by each part of the run.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuParts {
    /// The blocking pool's threads: in the flow they run only argon2.
    pub argon2: u64,
    /// The gateway's own thread (actors, webhook worker) and the HTTP workers (these include the
    /// webhook receiver's one worker: a few webhooks a second in the flow).
    pub gateway: u64,
    pub postgres: u64,
    /// Everything else in this process: the browsers, the SMSC and bank simulators.
    pub harness: u64,
}

impl CpuParts {
    pub fn now() -> Self {
        let mut parts = CpuParts::default();
        for (name, ticks) in stats_under("/proc/self/task") {
            let part = if name.starts_with("tokio-rt-worker") {
                &mut parts.argon2
            } else if name == "gateway" || name.starts_with("actix-rt|") {
                &mut parts.gateway
            } else {
                &mut parts.harness
            };
            *part += ticks;
        }
        parts.postgres = stats_under("/proc")
            .filter(|(name, _)| name == "postgres")
            .map(|(_, ticks)| ticks)
            .sum();
        parts
    }

    /// Milliseconds of CPU per operation of each part since `before`: argon2, gateway,
    /// PostgreSQL, harness.
    pub fn ms_per_op_since(&self, before: &CpuParts, ops: usize) -> [f64; 4] {
        let per_op = |now: u64, then: u64| {
            now.saturating_sub(then) as f64 * 1_000.0 / USER_HZ / ops.max(1) as f64
        };
        [
            per_op(self.argon2, before.argon2),
            per_op(self.gateway, before.gateway),
            per_op(self.postgres, before.postgres),
            per_op(self.harness, before.harness),
        ]
    }
}

/// (name, user + system ticks) of each numbered entry of `dir` (threads or processes).
fn stats_under(dir: &str) -> impl Iterator<Item = (String, u64)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| name_and_ticks(&stat))
}

/// `pid (name) state … utime stime …`: the name may hold spaces and parentheses.
fn name_and_ticks(stat: &str) -> Option<(String, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((stat[open + 1..close].to_string(), tick(11)? + tick(12)?))
}
