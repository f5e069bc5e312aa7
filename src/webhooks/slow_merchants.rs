//! Which merchants answer their webhooks slowly, and how many delivery slots they hold.
//!
//! A delivery holds its slot until the merchant answers or `timeout_ms` passes. One merchant whose
//! endpoint has gone dark, with a backlog of events, would otherwise hold every slot for its
//! timeouts while the other merchants' webhooks waited. A merchant two of whose attempts in a row
//! took `SLOW_ATTEMPT_MS` or more (half the request timeout, when less; one stall of a busy
//! endpoint is not enough) is slow until `SLOW_FOR_MS` after its last slow attempt: long enough
//! that a merchant with one dead `notify_url` among live ones (or a balancer with one dead
//! backend) stays slow rather than turning quick between its timeouts. The deliveries of slow merchants, counted from their
//! start, together hold at most three quarters of the slots, so the rest always serve the others.
//!
//! What is not covered: a merchant is found slow only by its slow attempts, so one that goes
//! dark (or any dark merchant after a restart, since this state is the worker's own and kept in
//! memory) can hold every slot for one `timeout_ms`. With one slot, the share is that slot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An attempt this long or longer is slow (half the timeout, when that is less).
const SLOW_ATTEMPT_MS: u64 = 2_000;
/// Slow attempts in a row that make a merchant slow.
const SLOW_ATTEMPTS_TO_MARK: u8 = 2;
/// How long a merchant stays slow after its last slow attempt.
const SLOW_FOR_MS: u64 = 600_000;
/// Merchants with a recent slow attempt remembered at most; past it (once those with none
/// recent are forgotten) a merchant's slow attempts are not counted.
const SLOW_MERCHANTS_MAX: usize = 4_096;

#[derive(Debug)]
pub struct SlowMerchants {
    /// Merchants with a recent slow attempt.
    slow_since: HashMap<String, Slowness>,
    /// Deliveries under way that count against the share: those of merchants slow at their start.
    held: usize,
    share_max: usize,
    slow_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Slowness {
    /// Slow attempts in a row, up to `SLOW_ATTEMPTS_TO_MARK`.
    attempts: u8,
    /// The last one's end.
    last_at: Instant,
}

impl Slowness {
    fn marks_slow(&self, now: Instant) -> bool {
        self.attempts >= SLOW_ATTEMPTS_TO_MARK && self.is_recent(now)
    }

    fn is_recent(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_at) < slow_for()
    }
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
            .is_some_and(|s| s.marks_slow(now))
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

    /// A delivery that was let start has ended: its slot is free.
    pub fn end(&mut self, started: Started) {
        if started.counted {
            debug_assert!(self.held > 0, "a counted delivery was started");
            self.held = self.held.saturating_sub(1);
        }
    }

    /// An attempt to `merchant_id` took `took`, ending at `now`. Returns whether it made the
    /// merchant slow.
    pub fn observe(&mut self, merchant_id: &str, took: Duration, now: Instant) -> bool {
        let before = self
            .slow_since
            .get(merchant_id)
            .copied()
            .filter(|s| s.is_recent(now));
        let was_slow = before.is_some_and(|s| s.marks_slow(now));
        if took < self.slow_after {
            // A quick attempt ends a run of slow ones, but not a merchant's slowness.
            if !was_slow {
                self.slow_since.remove(merchant_id);
            }
            return false;
        }
        let slowness = Slowness {
            attempts: before
                .map_or(0, |s| s.attempts)
                .saturating_add(1)
                .min(SLOW_ATTEMPTS_TO_MARK),
            last_at: now,
        };
        if !self.has_room_for(merchant_id, now) {
            return false;
        }
        self.slow_since.insert(merchant_id.to_owned(), slowness);
        !was_slow && slowness.marks_slow(now)
    }

    /// Whether `merchant_id` has or can have an entry, once those with no recent slow attempt
    /// are forgotten.
    fn has_room_for(&mut self, merchant_id: &str, now: Instant) -> bool {
        if self.slow_since.len() >= SLOW_MERCHANTS_MAX {
            self.slow_since.retain(|_, s| s.is_recent(now));
        }
        self.slow_since.len() < SLOW_MERCHANTS_MAX || self.slow_since.contains_key(merchant_id)
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
            .filter(|(_, s)| s.marks_slow(now))
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

    fn attempt(merchants: &mut SlowMerchants, merchant: &str, took: Duration, now: Instant) {
        let started = merchants.start(merchant, now).unwrap();
        merchants.end(started);
        merchants.observe(merchant, took, now);
    }

    /// Two slow attempts in a row.
    fn make_slow(merchants: &mut SlowMerchants, merchant: &str, now: Instant) {
        attempt(merchants, merchant, TIMEOUT, now);
        attempt(merchants, merchant, TIMEOUT, now);
    }

    #[test]
    fn slow_merchants_together_hold_at_most_three_quarters_of_the_slots() {
        let now = Instant::now();
        let mut merchants = SlowMerchants::new(8, 10_000);
        make_slow(&mut merchants, "dark", now);
        make_slow(&mut merchants, "dim", now);
        let held: Vec<Started> = (0..6)
            .map(|n| merchants.start(["dark", "dim"][n % 2], now).unwrap())
            .collect();
        assert_eq!(merchants.start("dark", now), None);
        assert_eq!(merchants.start("dim", now), None);
        assert_eq!((merchants.held(), merchants.room()), (6, 0));
        for _ in 0..8 {
            assert!(merchants.start("quick", now).is_some(), "never held back");
        }
        merchants.end(held[0]);
        assert_eq!(merchants.room(), 1);
        assert!(merchants.start("dim", now).is_some());
    }

    #[test]
    fn two_slow_attempts_in_a_row_make_a_merchant_slow_until_it_is_forgotten() {
        let now = Instant::now();
        let mut merchants = SlowMerchants::new(4, 1_000);
        let half_the_timeout = Duration::from_millis(500);
        attempt(&mut merchants, "shop", half_the_timeout, now);
        attempt(&mut merchants, "shop", QUICK, now);
        attempt(&mut merchants, "shop", half_the_timeout, now);
        assert!(merchants.slow(now).is_empty(), "one stall at a time");
        assert!(merchants.observe("shop", half_the_timeout, now), "now slow");
        assert_eq!(merchants.slow(now), vec!["shop".to_string()]);
        assert!(
            !merchants.observe("shop", half_the_timeout, now),
            "slow already"
        );
        // Quick attempts in between (a live notify_url beside a dead one) do not end it.
        let later = now + Duration::from_secs(60);
        attempt(&mut merchants, "shop", QUICK, later);
        assert!(merchants.start("shop", later).is_some_and(|s| s.counted));
        let after = later + slow_for();
        assert!(merchants.slow(after).is_empty());
        assert!(merchants.start("shop", after).is_some_and(|s| !s.counted));
    }

    #[test]
    fn one_slot_still_serves_a_slow_merchant() {
        let now = Instant::now();
        let mut merchants = SlowMerchants::new(1, 10_000);
        make_slow(&mut merchants, "dark", now);
        let held = merchants.start("dark", now).expect("the share is one slot");
        assert_eq!(merchants.start("dark", now), None);
        merchants.end(held);
        assert!(merchants.start("dark", now).is_some());
    }

    #[test]
    fn merchants_no_longer_slow_make_room_for_new_ones() {
        let now = Instant::now();
        let mut merchants = SlowMerchants::new(4, 10_000);
        for n in 0..SLOW_MERCHANTS_MAX {
            merchants.observe(&format!("m{n}"), TIMEOUT, now);
        }
        for _ in 0..2 {
            assert!(
                !merchants.observe("late", TIMEOUT, now),
                "the table is full"
            );
        }
        assert!(!merchants.is_slow("late", now));
        let after = now + slow_for();
        merchants.observe("late", TIMEOUT, after);
        assert!(merchants.observe("late", TIMEOUT, after));
        assert_eq!(merchants.slow_since.len(), 1);
    }
}
