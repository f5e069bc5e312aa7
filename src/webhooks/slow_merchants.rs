//! Which merchants answer their webhooks slowly, and how many delivery slots they hold.
//!
//! A delivery holds its slot until the merchant answers or `timeout_ms` passes. One merchant whose
//! endpoint has gone dark, with a backlog of events, would otherwise hold every slot for its
//! timeouts while the other merchants' webhooks waited. A merchant one of whose attempts took
//! `slow_after_ms` or more is slow for `SLOW_FOR_MS` after it: long enough that a merchant with
//! one dead `notify_url` among live ones (or a balancer with one dead backend) stays slow rather
//! than turning quick between its timeouts. The deliveries of slow merchants, counted from their
//! start, together hold at most three quarters of the slots, so the rest always serve the others.
//!
//! What is not covered: a merchant is found slow by its first slow attempt, so one that goes
//! dark (or any dark merchant after a restart, since this state is the worker's own and kept in
//! memory) can hold every slot for one `timeout_ms`. With one slot, the share is that slot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An attempt this long or longer marks its merchant slow (half the timeout, when that is less).
pub const SLOW_ATTEMPT_MS: u64 = 2_000;
/// How long a merchant stays slow after its last slow attempt.
pub const SLOW_FOR_MS: u64 = 600_000;
/// Slow merchants remembered at most; past it (once those no longer slow are forgotten) a newly
/// slow merchant is treated as any other.
pub const SLOW_MERCHANTS_MAX: usize = 4_096;

#[derive(Debug)]
pub struct SlowMerchants {
    /// Each slow merchant's last slow attempt's end.
    slow_since: HashMap<String, Instant>,
    /// Deliveries under way that count against the share: those of merchants slow at their start.
    held: usize,
    share_max: usize,
    slow_after: Duration,
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
            slow_since: HashMap::new(),
            held: 0,
            share_max: (slots * 3 / 4).max(1),
            slow_after: Duration::from_millis(SLOW_ATTEMPT_MS.min(timeout_ms / 2).max(1)),
        }
    }

    fn is_slow(&self, merchant_id: &str, now: Instant) -> bool {
        self.slow_since
            .get(merchant_id)
            .is_some_and(|at| now.saturating_duration_since(*at) < slow_for())
    }

    /// Lets a delivery to `merchant_id` start, unless the merchant is slow and the slow share is
    /// taken.
    pub fn start(&mut self, merchant_id: &str, now: Instant) -> Option<Started> {
        let counted = self.is_slow(merchant_id, now);
        if counted {
            if self.held >= self.share_max {
                return None;
            }
            self.held += 1;
        }
        Some(Started { counted })
    }

    /// A delivery to `merchant_id` whose attempt took `took` has ended at `now`.
    pub fn finish(&mut self, merchant_id: &str, started: Started, took: Duration, now: Instant) {
        if started.counted {
            debug_assert!(self.held > 0, "a counted delivery was started");
            self.held = self.held.saturating_sub(1);
        }
        if took < self.slow_after {
            return;
        }
        if self.slow_since.len() >= SLOW_MERCHANTS_MAX {
            self.slow_since
                .retain(|_, at| now.saturating_duration_since(*at) < slow_for());
        }
        if self.slow_since.len() < SLOW_MERCHANTS_MAX || self.slow_since.contains_key(merchant_id) {
            self.slow_since.insert(merchant_id.to_owned(), now);
        }
    }

    /// Slots held by slow merchants' deliveries.
    pub fn held(&self) -> usize {
        self.held
    }

    /// How many more deliveries of slow merchants may start now.
    pub fn room(&self) -> usize {
        self.share_max.saturating_sub(self.held)
    }

    /// The merchants slow now.
    pub fn slow(&self, now: Instant) -> Vec<String> {
        self.slow_since
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) < slow_for())
            .map(|(merchant_id, _)| merchant_id.clone())
            .collect()
    }
}

fn slow_for() -> Duration {
    Duration::from_millis(SLOW_FOR_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);
    const QUICK: Duration = Duration::from_millis(20);

    fn slow_once(merchants: &mut SlowMerchants, merchant: &str, now: Instant) {
        let started = merchants.start(merchant, now).unwrap();
        merchants.finish(merchant, started, TIMEOUT, now);
    }

    #[test]
    fn slow_merchants_together_hold_at_most_three_quarters_of_the_slots() {
        let now = Instant::now();
        let mut merchants = SlowMerchants::new(8, 10_000);
        slow_once(&mut merchants, "dark", now);
        slow_once(&mut merchants, "dim", now);
        let held: Vec<Started> = (0..6)
            .map(|n| merchants.start(["dark", "dim"][n % 2], now).unwrap())
            .collect();
        assert_eq!(merchants.start("dark", now), None);
        assert_eq!(merchants.start("dim", now), None);
        assert_eq!((merchants.held(), merchants.room()), (6, 0));
        for _ in 0..8 {
            assert!(merchants.start("quick", now).is_some(), "never held back");
        }
        merchants.finish("dark", held[0], TIMEOUT, now);
        assert_eq!(merchants.room(), 1);
        assert!(merchants.start("dim", now).is_some());
    }

    #[test]
    fn a_merchant_stays_slow_between_its_slow_attempts_and_then_is_forgotten() {
        let now = Instant::now();
        let mut merchants = SlowMerchants::new(4, 1_000);
        let started = merchants.start("shop", now).unwrap();
        merchants.finish("shop", started, Duration::from_millis(500), now);
        assert_eq!(
            merchants.slow(now),
            vec!["shop".to_string()],
            "half the timeout"
        );
        // Quick attempts in between (a live notify_url beside a dead one) do not end it.
        let later = now + Duration::from_secs(60);
        let started = merchants.start("shop", later).unwrap();
        merchants.finish("shop", started, QUICK, later);
        assert!(merchants.start("shop", later).is_some_and(|s| s.counted));
        let after = now + slow_for();
        assert!(merchants.slow(after).is_empty());
        assert!(merchants.start("shop", after).is_some_and(|s| !s.counted));
    }

    #[test]
    fn one_slot_still_serves_a_slow_merchant() {
        let now = Instant::now();
        let mut merchants = SlowMerchants::new(1, 10_000);
        slow_once(&mut merchants, "dark", now);
        let held = merchants.start("dark", now).expect("the share is one slot");
        assert_eq!(merchants.start("dark", now), None);
        merchants.finish("dark", held, TIMEOUT, now);
        assert!(merchants.start("dark", now).is_some());
    }

    #[test]
    fn merchants_no_longer_slow_make_room_for_new_ones() {
        let now = Instant::now();
        let mut merchants = SlowMerchants::new(4, 10_000);
        for n in 0..SLOW_MERCHANTS_MAX {
            merchants.finish(&format!("m{n}"), Started { counted: false }, TIMEOUT, now);
        }
        merchants.finish("late", Started { counted: false }, TIMEOUT, now);
        assert!(
            !merchants.is_slow("late", now),
            "the table is full of slow merchants"
        );
        let after = now + slow_for();
        merchants.finish("late", Started { counted: false }, TIMEOUT, after);
        assert!(merchants.is_slow("late", after));
        assert_eq!(merchants.slow_since.len(), 1);
    }
}
