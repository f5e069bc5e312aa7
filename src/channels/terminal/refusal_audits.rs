//! A bound on the audit rows that terminal refusals write. A peer may name any terminal id in its
//! HELLO, so each refused connection could otherwise add a row to `audit_log`: an unauthenticated
//! peer would decide how fast the audit table grows. Past the bound a refusal is still logged;
//! the next audited refusal says how many were not audited before it.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Mutex, MutexGuard};

/// Refusals audited per minute.
pub const REFUSAL_AUDITS_PER_MINUTE_MAX: u32 = 600;

#[derive(Debug)]
pub struct RefusalAudits {
    per_minute_max: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<DateTime<Utc>>,
    audited: u32,
    /// Refusals not audited since the last audited one.
    not_audited: u64,
    /// This minute's first refusal past the bound was logged as such.
    warned: bool,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write its audit row, noting the refusals before it that were not audited.
    Audit { not_audited_before: u64 },
    /// Log only; `first` is the first refusal of this minute past the bound.
    LogOnly { first: bool },
}

impl RefusalAudits {
    pub fn new(per_minute_max: u32) -> Self {
        Self {
            per_minute_max,
            window: Mutex::new(Window {
                started: None,
                audited: 0,
                not_audited: 0,
                warned: false,
            }),
        }
    }

    pub fn decide(&self, now: DateTime<Utc>) -> Verdict {
        let mut window = self.window();
        let minute_over = window
            .started
            .is_none_or(|started| now < started || now - started >= Duration::minutes(1));
        if minute_over {
            window.started = Some(now);
            window.audited = 0;
            window.warned = false;
        }
        if window.audited < self.per_minute_max {
            window.audited += 1;
            let not_audited_before = std::mem::take(&mut window.not_audited);
            return Verdict::Audit { not_audited_before };
        }
        window.not_audited += 1;
        Verdict::LogOnly {
            first: !std::mem::replace(&mut window.warned, true),
        }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for RefusalAudits {
    fn default() -> Self {
        Self::new(REFUSAL_AUDITS_PER_MINUTE_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn past_the_bound_a_minute_refusals_are_logged_and_counted_into_the_next_audit() {
        let audits = RefusalAudits::new(2);
        let t0 = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        let at = |s: i64| t0 + Duration::seconds(s);
        let audit = |n| Verdict::Audit {
            not_audited_before: n,
        };
        assert_eq!(audits.decide(at(0)), audit(0));
        assert_eq!(audits.decide(at(1)), audit(0));
        assert_eq!(audits.decide(at(2)), Verdict::LogOnly { first: true });
        assert_eq!(audits.decide(at(3)), Verdict::LogOnly { first: false });
        assert_eq!(audits.decide(at(59)), Verdict::LogOnly { first: false });
        // A new minute: audited again, and the first row says three were not.
        assert_eq!(audits.decide(at(60)), audit(3));
        assert_eq!(audits.decide(at(61)), audit(0));
        assert_eq!(audits.decide(at(62)), Verdict::LogOnly { first: true });
        // A clock set back starts a new minute rather than stalling the audit.
        assert_eq!(audits.decide(at(10)), audit(1));
    }
}
