//! Where a benchmark phase's CPU time went, from the kernel's per-thread and per-process counters
//! (`/proc`): the password hashes, the gateway, PostgreSQL, and the benchmark's own browsers and
//! simulators. The target is about the gateway's cost beside the hash; on one machine the
//! harness's share is counted apart, so that it is not taken for the gateway's.

use payhub::host_cpu::USER_HZ;
use std::collections::HashMap;
use std::fs;

/// The parts, in the order [`CpuParts::ms_per_op_since`] answers.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// The blocking pool's threads: in the flow they run only argon2.
    Argon2,
    /// The gateway's own thread (actors, webhook worker) and its HTTP workers.
    Gateway,
    Postgres,
    /// Everything else in this process: the browsers, the SMSC and bank simulators, the
    /// merchant's webhook receiver.
    Harness,
}

/// CPU ticks used so far by each thread of this process and each PostgreSQL process.
#[derive(Debug, Default, Clone)]
pub struct CpuParts {
    /// Thread or process id → its part and its ticks so far.
    ticks: HashMap<u32, (Part, u64)>,
}

impl CpuParts {
    pub fn now() -> Self {
        let receivers = crate::e2e_support::receiver_threads();
        let threads = stats_under("/proc/self/task").map(|(tid, name, ticks)| {
            let part = if name.starts_with("tokio-rt-worker") {
                Part::Argon2
            } else if receivers.contains(&tid) {
                Part::Harness
            } else if name == "gateway" || name.starts_with("actix-rt|") {
                Part::Gateway
            } else {
                Part::Harness
            };
            (tid, (part, ticks))
        });
        let postgres = stats_under("/proc")
            .filter(|(_, name, _)| name == "postgres")
            .map(|(pid, _, ticks)| (pid, (Part::Postgres, ticks)));
        CpuParts {
            ticks: threads.chain(postgres).collect(),
        }
    }

    /// Milliseconds of CPU per operation of each part since `before`: argon2, gateway,
    /// PostgreSQL, harness. Counted thread by thread: one that ended meanwhile loses only its own
    /// share, where a difference of sums lost all it had used before (the argon2 bound's threads,
    /// idle for 10 s, end during a long flow: 7 ms a payment over 600 payments).
    pub fn ms_per_op_since(&self, before: &CpuParts, ops: usize) -> [f64; 4] {
        let mut ticks = [0u64; 4];
        for (id, (part, now)) in &self.ticks {
            let then = before.ticks.get(id).map_or(0, |(_, then)| *then);
            ticks[*part as usize] += now.saturating_sub(then);
        }
        ticks.map(|t| t as f64 * 1_000.0 / USER_HZ / ops.max(1) as f64)
    }
}

/// (id, name, user + system ticks) of each numbered entry of `dir` (threads or processes).
fn stats_under(dir: &str) -> impl Iterator<Item = (u32, String, u64)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.parse().ok()?;
            let (name, ticks) = name_and_ticks(&fs::read_to_string(e.path().join("stat")).ok()?)?;
            Some((id, name, ticks))
        })
}

/// `pid (name) state … utime stime …`: the name may hold spaces and parentheses.
fn name_and_ticks(stat: &str) -> Option<(String, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((stat[open + 1..close].to_string(), tick(11)? + tick(12)?))
}
