//! The outcome: the final status written with its webhook event, and the customer's notice.

use super::PaymentCore;
use crate::domain::{Msisdn, PaymentStatus};
use crate::messages::{Deliver, Destination, NoticeKind};
use crate::transaction::PaymentError;
use crate::transaction::event::{self, Outcome};
use crate::transaction::outbox::Reservation;
use crate::transaction::writer::NoticeTo;

impl PaymentCore {
    /// Writes the final status with its webhook event, from one of `from`.
    pub(super) async fn finish(
        &mut self,
        from: &[PaymentStatus],
        outcome: Outcome,
    ) -> Result<(), PaymentError> {
        let now = self.now();
        let mut write = event::to_final(
            &self.row,
            from,
            &outcome,
            now,
            &self.settings().public_url,
            self.outcome_notice_to(),
        );
        let reservation = self.deps.webhook_outbox.reserve(now);
        if let Some(reservation) = &reservation {
            write.event_due_at = reservation.leased_until;
        }
        let finish = self.deps.writer.to_final(write).await?;
        self.after_finish(finish, reservation, &outcome).await
    }

    /// `reservation`: the event's place in the worker's queue, when it was written leased.
    pub(super) async fn after_finish(
        &mut self,
        finish: event::Finish,
        reservation: Option<Reservation>,
        outcome: &Outcome,
    ) -> Result<(), PaymentError> {
        let event::Finish::Moved { notice_row, event } = finish else {
            return self.reload().await;
        };
        self.outcome_notice_row = notice_row;
        event::finished(outcome);
        self.deps.webhook_outbox.committed(reservation, event);
        self.row.status = outcome.status;
        self.row.code_hash = None;
        self.row.code_expires_at = None;
        Ok(())
    }

    /// Where the outcome notice goes: the channel the code went to (when one did).
    fn outcome_destination(&self) -> Option<Destination> {
        if self.row.code_sends == 0 {
            return None;
        }
        match self.row.channel.as_deref() {
            Some("terminal") => Some(Destination::Terminal(self.row.terminal_id.clone()?)),
            Some("sms") => Some(Destination::Sms(
                Msisdn::parse(self.row.receiver_msisdn.as_deref()?).ok()?,
            )),
            _ => None,
        }
    }

    /// Where the outcome notice goes, as its row (written with the final status) names it. A
    /// crash between that write and the notice leaves the row `queued`, and the next start sends
    /// it, whatever the channel.
    pub(super) fn outcome_notice_to(&self) -> Option<NoticeTo> {
        Some(match self.outcome_destination()? {
            Destination::Sms(number) => NoticeTo {
                channel: "sms",
                destination: number.masked(),
            },
            Destination::Terminal(id) => NoticeTo {
                channel: "terminal",
                destination: id,
            },
        })
    }

    /// The outcome notice for the customer, once the payment is final.
    pub fn outcome_delivery(&self) -> Option<Deliver> {
        if !self.row.status.is_final() {
            return None;
        }
        let destination = self.outcome_destination()?;
        let notice = self.notice(
            NoticeKind::Outcome,
            None,
            Some(self.row.status.as_str().to_string()),
            false,
        );
        Some(Deliver {
            destination,
            notice,
            recorded: self.outcome_notice_row,
            answer_within: std::time::Duration::from_millis(self.settings().delivery_timeout_ms),
        })
    }
}
