//! Deadlines: the payment's lifetime, a code's validity, and a `processing` payment left without
//! its debit (after a restart).

use super::PaymentCore;
use crate::domain::{FailureCode, PaymentStatus};
use crate::transaction::event::Outcome;
use crate::transaction::{DEADLINE_RETRY_MS, PaymentError};
use chrono::{DateTime, Duration, Utc};

impl PaymentCore {
    /// Applies whatever is due: the payment lifetime, a code that expired with no resend left,
    /// and a `processing` payment with no debit in progress: the bank's answer written again when
    /// its first write failed; otherwise (after a restart, or a reversal that could not be
    /// queued) reversal, then `failed`/`bank_unavailable`.
    pub async fn check_deadlines(&mut self) -> Result<(), PaymentError> {
        let now = self.now();
        let done = self.apply_due_deadlines(now).await;
        self.deadline_retry_at = done
            .is_err()
            .then(|| now + Duration::milliseconds(DEADLINE_RETRY_MS));
        done
    }

    async fn apply_due_deadlines(&mut self, now: DateTime<Utc>) -> Result<(), PaymentError> {
        match self.row.status {
            PaymentStatus::AwaitingCustomer | PaymentStatus::AwaitingCode
                if now >= self.row.expires_at =>
            {
                let from = [PaymentStatus::AwaitingCustomer, PaymentStatus::AwaitingCode];
                self.finish(&from, Outcome::expired()).await?;
            }
            PaymentStatus::AwaitingCode if self.code_lapsed(now) && !self.resends_left() => {
                let outcome = Outcome::failed(FailureCode::CodeExpired, None);
                self.finish(&[PaymentStatus::AwaitingCode], outcome).await?;
            }
            PaymentStatus::Processing if self.answered.is_some() => self.write_answer().await?,
            PaymentStatus::Processing => {
                self.reverse_then_fail("restart_while_processing").await?;
            }
            _ => {}
        }
        Ok(())
    }

    fn code_lapsed(&self, now: DateTime<Utc>) -> bool {
        self.row.code_expires_at.is_some_and(|at| now >= at)
    }

    /// Whether the customer may still ask for another code (a lapsed code is then no deadline:
    /// the payment waits for the resend, or for its lifetime to end).
    pub(super) fn resends_left(&self) -> bool {
        u32::try_from(self.row.code_sends - 1).is_ok_and(|r| r < self.settings().code_resends_max)
    }

    /// The next instant at which [`check_deadlines`](Self::check_deadlines) may have work.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let due = match self.row.status {
            PaymentStatus::AwaitingCustomer => self.row.expires_at,
            PaymentStatus::AwaitingCode => awaiting_code_deadline(
                self.row.expires_at,
                self.row.code_expires_at,
                self.resends_left(),
                self.now(),
            ),
            PaymentStatus::Processing => self.now() + Duration::milliseconds(self.retry_ms()),
            _ => return None,
        };
        Some(self.deadline_retry_at.map_or(due, |retry| due.max(retry)))
    }

    fn retry_ms(&self) -> i64 {
        i64::try_from(self.settings().reversal_retry_ms).unwrap_or(i64::MAX)
    }
}

/// The next deadline of a payment awaiting its code: the code's expiry while it is valid, or when
/// no resend is left (it then fails the payment); otherwise the payment's own expiry. A lapsed
/// code with resends left is no deadline: the payment waits for a resend.
fn awaiting_code_deadline(
    expires_at: DateTime<Utc>,
    code_expires_at: Option<DateTime<Utc>>,
    resends_left: bool,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match code_expires_at {
        Some(code) if now < code || !resends_left => code.min(expires_at),
        _ => expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_lapsed_code_with_resends_left_waits_for_the_payments_expiry() {
        let (expires, code) = (at(900), Some(at(300)));
        // Before the code lapses its expiry is next, whatever the resends.
        assert_eq!(awaiting_code_deadline(expires, code, true, at(10)), at(300));
        assert_eq!(
            awaiting_code_deadline(expires, code, false, at(10)),
            at(300)
        );
        // Lapsed: a deadline in the past would fire again at once, for ever. Only with no resend
        // left is it due (it fails the payment); otherwise the payment's expiry is next.
        assert_eq!(
            awaiting_code_deadline(expires, code, true, at(301)),
            at(900)
        );
        assert_eq!(
            awaiting_code_deadline(expires, code, false, at(301)),
            at(300)
        );
        assert_eq!(awaiting_code_deadline(expires, None, true, at(10)), at(900));
        // A code valid past the payment's lifetime ends with it.
        let late = Some(at(900) + Duration::seconds(60));
        assert_eq!(
            awaiting_code_deadline(expires, late, false, at(10)),
            at(900)
        );
    }
}
