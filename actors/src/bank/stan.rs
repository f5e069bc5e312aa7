//! System trace audit numbers (field 11): six digits, never shared by two outstanding requests on
//! one link, and not reused soon after (a late duplicate answer then matches nothing).

use std::collections::HashSet;

pub const STAN_MAX: u32 = 999_999;

#[derive(Debug)]
pub struct StanAllocator {
    last: u32,
    outstanding: HashSet<u32>,
}

impl StanAllocator {
    /// Starts after `seed` (e.g. from the clock), so a restarted gateway does not repeat the STANs
    /// it used just before.
    pub fn new(seed: u32) -> Self {
        Self {
            last: seed % STAN_MAX,
            outstanding: HashSet::new(),
        }
    }

    /// The next free STAN, or `None` when all 999,999 are outstanding (the in-flight limit keeps
    /// this from happening).
    pub fn allocate(&mut self) -> Option<u32> {
        if self.outstanding.len() >= STAN_MAX as usize {
            return None;
        }
        loop {
            self.last = self.last % STAN_MAX + 1;
            if self.outstanding.insert(self.last) {
                return Some(self.last);
            }
        }
    }

    pub fn release(&mut self, stan: u32) {
        self.outstanding.remove(&stan);
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}

/// Field 11 text.
pub fn format_stan(stan: u32) -> String {
    debug_assert!((1..=STAN_MAX).contains(&stan));
    format!("{stan:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_after_999999_and_skips_outstanding() {
        let mut a = StanAllocator::new(999_998);
        assert_eq!(a.allocate(), Some(999_999));
        assert_eq!(a.allocate(), Some(1));
        let mut b = StanAllocator::new(0);
        let first = b.allocate().unwrap();
        assert_eq!(first, 1);
        // Wrap round with 1 still outstanding: it is skipped.
        b.last = STAN_MAX;
        assert_eq!(b.allocate(), Some(2));
        b.release(1);
        b.last = STAN_MAX;
        assert_eq!(b.allocate(), Some(1));
    }

    #[test]
    fn no_collisions_among_outstanding() {
        let mut a = StanAllocator::new(7);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(a.allocate().unwrap()));
        }
        assert_eq!(a.outstanding(), 10_000);
        assert_eq!(format_stan(42), "000042");
    }
}
