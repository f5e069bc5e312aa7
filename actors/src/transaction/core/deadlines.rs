//! Deadlines: the payment's lifetime, and a `processing` payment left without its debit (after a
//! restart).

use super::PaymentCore;
use crate::domain::PaymentStatus;
use crate::transaction::event::Outcome;
use crate::transaction::{DEADLINE_RETRY_MS, PaymentError};
use chrono::{DateTime, Duration, Utc};

impl PaymentCore {
    /// Applies whatever is due: the payment lifetime, and a `processing` payment with no debit
    /// in progress: the bank's answer written again when its first write failed; otherwise (after
    /// a restart, or a reversal that could not be queued) reversal, then
    /// `failed`/`bank_unavailable`.
    ///
    /// A code that lapses is no deadline, with or without resends left: a late code fails the
    /// payment (`code_expired`, at its submission), and a payment the customer leaves expires at
    /// the end of its lifetime (gateway-http.md).
    pub async fn check_deadlines(&mut self) -> Result<(), PaymentError> {
        let now = self.now();
        let done = self.apply_due_deadlines(now).await;
        self.deadline_retry_at = done
            .is_err()
            .then(|| now + Duration::milliseconds(DEADLINE_RETRY_MS));
        done
    }

    async fn apply_due_deadlines(&mut self, now: DateTime<Utc>) -> Result<(), PaymentError> {
        if self.processing_unsure {
            // Final already (the write committed, then another step ended it): its outcome
            // notice's row is picked up, as after a write whose answer was lost.
            self.reload().await?;
            self.processing_unsure = self.row.status == PaymentStatus::AwaitingCode;
        }
        match self.row.status {
            PaymentStatus::AwaitingCustomer | PaymentStatus::AwaitingCode
                if now >= self.row.expires_at =>
            {
                let from = [PaymentStatus::AwaitingCustomer, PaymentStatus::AwaitingCode];
                self.finish(&from, Outcome::expired()).await?;
            }
            // Every wrong try counted, the last one's failure not written (the write failed, or
            // the process stopped in between): it ends now, not at the payment's lifetime.
            PaymentStatus::AwaitingCode if self.code_attempts_spent() => {
                self.fail_code_attempts_exceeded().await?;
            }
            PaymentStatus::Processing if self.answered.is_some() => self.write_answer().await?,
            PaymentStatus::Processing => {
                self.reverse_then_fail("restart_while_processing").await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The next instant at which [`check_deadlines`](Self::check_deadlines) may have work.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let retry = self.now() + Duration::milliseconds(self.retry_ms());
        let due = match self.row.status {
            PaymentStatus::AwaitingCode if self.code_attempts_spent() => self.now(),
            PaymentStatus::AwaitingCode if self.processing_unsure => retry.min(self.row.expires_at),
            PaymentStatus::AwaitingCustomer | PaymentStatus::AwaitingCode => self.row.expires_at,
            PaymentStatus::Processing => retry,
            _ => return None,
        };
        Some(self.deadline_retry_at.map_or(due, |retry| due.max(retry)))
    }

    fn retry_ms(&self) -> i64 {
        i64::try_from(self.settings().reversal_retry_ms).unwrap_or(i64::MAX)
    }
}
