//! How much CPU time the host took from this virtual machine (`steal` in `/proc/stat`), and how
//! much this machine's processes used. The benchmarks print both: on a shared host, a run with a
//! large share stolen measures the host, not payhub, while the CPU time each operation costs
//! (gateway, simulators and PostgreSQL together) varies much less with the host.

use std::time::Instant;

/// Ticks per second of `/proc/stat` and `/proc/<pid>/stat`: Linux fixes it at 100 for user space
/// on every architecture it reports in ticks.
pub const USER_HZ: f64 = 100.0;

/// The machine's CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuTicks {
    steal: u64,
    /// Ticks spent running code (user, nice, system, irq, softirq): not idle, I/O wait or stolen.
    busy: u64,
    total: u64,
    at: Instant,
}

impl CpuTicks {
    /// Zeros where `/proc/stat` cannot be read (not Linux): the share is then 0.
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        let tick = |i: usize| ticks.get(i).copied().unwrap_or(0);
        Self {
            steal: tick(7),
            busy: tick(0) + tick(1) + tick(2) + tick(5) + tick(6),
            total: ticks.iter().sum(),
            at: Instant::now(),
        }
    }

    /// The share of all CPU time since `self` that the host took, in percent.
    pub fn stolen_percent_until(&self, later: &CpuTicks) -> f64 {
        debug_assert!(later.at >= self.at);
        let total = later.total.saturating_sub(self.total).max(1);
        100.0 * later.steal.saturating_sub(self.steal) as f64 / total as f64
    }

    /// The share of all CPU time since `self` that ran code (not idle, waiting or stolen), in
    /// percent: whether a phase kept the machine busy.
    pub fn busy_percent_until(&self, later: &CpuTicks) -> f64 {
        let total = later.total.saturating_sub(self.total).max(1);
        100.0 * later.busy.saturating_sub(self.busy) as f64 / total as f64
    }

    /// CPU time all processes of the machine used since `self`, in milliseconds.
    pub fn busy_ms_until(&self, later: &CpuTicks) -> f64 {
        later.busy.saturating_sub(self.busy) as f64 * 1_000.0 / USER_HZ
    }
}
