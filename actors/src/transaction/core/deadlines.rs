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
        if let Some(until) = self.processing_unsure_until {
            self.reload().await?;
            if self.row.status != PaymentStatus::AwaitingCode || now >= until {
                self.processing_unsure_until = None;
            }
        }
        match self.row.status {
            PaymentStatus::AwaitingCustomer | PaymentStatus::AwaitingCode
                if now >= self.row.expires_at =>
            {
                let from = [PaymentStatus::AwaitingCustomer, PaymentStatus::AwaitingCode];
                self.finish(&from, Outcome::expired()).await?;
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
            PaymentStatus::AwaitingCode if self.processing_unsure_until.is_some() => {
                retry.min(self.row.expires_at)
            }
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
