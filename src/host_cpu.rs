//! How much CPU time the host took from this virtual machine (`steal` in `/proc/stat`). The
//! benchmarks print it: on a shared host, a run with a large share stolen measures the host, not
//! payhub.

use std::time::Instant;

/// The machine's CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuTicks {
    steal: u64,
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
        Self {
            steal: ticks.get(7).copied().unwrap_or(0),
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
}
