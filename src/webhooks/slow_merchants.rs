//! Which merchants answer their webhooks slowly, and how many delivery slots they hold.
//!
//! A delivery holds its slot until the merchant answers or `timeout_ms` passes. One merchant whose
//! endpoint has gone dark, with a backlog of events, would otherwise hold every slot for its
//! timeouts while the other merchants' webhooks waited. A merchant whose last attempt took
//! `slow_after_ms` or more is slow until one of its attempts is quick again. The deliveries of slow
//! merchants together hold at most three quarters of the slots, so the rest always serve the
//! others. A merchant that answers quickly is never held back, however many events it has.
//!
//! The state is the worker's own (one task, no lock) and is forgotten at a restart: a merchant
//! is found slow again by its first slow attempt.

use std::collections::HashSet;

/// An attempt this long or longer marks its merchant slow (half the timeout, when that is less).
pub const SLOW_ATTEMPT_MS: u64 = 2_000;
/// Slow merchants remembered at most; past it a newly slow merchant is treated as any other.
pub const SLOW_MERCHANTS_MAX: usize = 4_096;

#[derive(Debug)]
pub struct SlowMerchants {
    slow: HashSet<String>,
    /// Deliveries under way that count against the share: those of merchants slow at their start.
    in_flight: usize,
    share_max: usize,
    slow_after_ms: u64,
}

/// Whether a delivery that was let start counts against the slow merchants' share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    counted: bool,
}

impl SlowMerchants {
    /// For a worker of `slots` delivery slots and a request timeout of `timeout_ms`. With one or
    /// two slots the slow share is one slot: a slow merchant is held back, never shut out.
    pub fn new(slots: usize, timeout_ms: u64) -> Self {
        Self {
            slow: HashSet::new(),
            in_flight: 0,
            share_max: (slots * 3 / 4).max(1),
            slow_after_ms: SLOW_ATTEMPT_MS.min(timeout_ms / 2).max(1),
        }
    }

    /// Lets a delivery to `merchant_id` start, unless the merchant is slow and the slow share is
    /// taken. An event not let start stays leased, and is claimed again once its lease runs out.
    pub fn start(&mut self, merchant_id: &str) -> Option<Started> {
        let counted = self.slow.contains(merchant_id);
        if counted {
            if self.in_flight >= self.share_max {
                return None;
            }
            self.in_flight += 1;
        }
        Some(Started { counted })
    }

    /// A delivery to `merchant_id` that took `duration_ms` has ended.
    pub fn finish(&mut self, merchant_id: &str, started: Started, duration_ms: u64) {
        if started.counted {
            debug_assert!(self.in_flight > 0, "a counted delivery was started");
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if duration_ms < self.slow_after_ms {
            self.slow.remove(merchant_id);
        } else if self.slow.len() < SLOW_MERCHANTS_MAX {
            self.slow.insert(merchant_id.to_owned());
        }
    }

    /// Slots held by slow merchants' deliveries.
    pub fn held(&self) -> usize {
        self.in_flight
    }

    /// The merchants a claim must skip: the slow ones, while their share is taken.
    pub fn skipped(&self) -> Vec<String> {
        if self.in_flight < self.share_max {
            return Vec::new();
        }
        self.slow.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_merchants_together_hold_at_most_three_quarters_of_the_slots() {
        let mut merchants = SlowMerchants::new(8, 10_000);
        for merchant in ["dark", "dim"] {
            let started = merchants.start(merchant).unwrap();
            merchants.finish(merchant, started, 10_000);
        }
        let held: Vec<Started> = (0..6)
            .map(|n| {
                merchants
                    .start(["dark", "dim"][n % 2])
                    .expect("within the share")
            })
            .collect();
        assert_eq!(merchants.start("dark"), None);
        assert_eq!(merchants.start("dim"), None);
        assert_eq!(merchants.skipped().len(), 2);
        for _ in 0..8 {
            assert!(merchants.start("quick").is_some(), "never held back");
        }
        merchants.finish("dark", held[0], 10_000);
        assert!(
            merchants.skipped().is_empty(),
            "a slot of the share is free"
        );
        assert!(merchants.start("dim").is_some());
    }

    #[test]
    fn a_quick_attempt_ends_a_merchants_slowness() {
        let mut merchants = SlowMerchants::new(4, 1_000);
        let started = merchants.start("shop").unwrap();
        merchants.finish("shop", started, 500);
        let held: Vec<Started> = (0..3).map(|_| merchants.start("shop").unwrap()).collect();
        assert_eq!(merchants.start("shop"), None, "500 ms is half the timeout");
        merchants.finish("shop", held[0], 20);
        assert!(merchants.start("shop").is_some());
        assert!(
            merchants.start("shop").is_some(),
            "quick again: not counted"
        );
    }

    #[test]
    fn one_slot_still_serves_a_slow_merchant() {
        let mut merchants = SlowMerchants::new(1, 10_000);
        let started = merchants.start("dark").unwrap();
        merchants.finish("dark", started, 10_000);
        let held = merchants.start("dark").expect("the share is one slot");
        assert_eq!(merchants.start("dark"), None);
        merchants.finish("dark", held, 10_000);
        assert!(merchants.start("dark").is_some());
    }
}
