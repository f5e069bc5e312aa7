//! Two-phase debits. `PrepareDebit` picks the link, reserves a STAN there and fixes field 7; the
//! payment commits that identity (link, field 11, field 7, field 32) to PostgreSQL; only then does
//! `SendPrepared` put exactly that 0200 on the wire. A reversal after a restart can then carry the
//! original data elements (field 90) a strict BIPS matches, from the payment's own row
//! (`ReverseDebit { original: Some(OriginalDebit { .. }) }`).
//!
//! A reservation never sent (the payment died between the two steps) lapses after the link's
//! `response_timeout_ms`, or [`RESERVATION_HOLD_MIN_MS`] if that is longer; until then it counts
//! against the link's `in_flight_max`.

use crate::messages::{BankError, DebitRequest, DebitResponse};
use actix::prelude::*;
use payhub_iso8583::Message;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tokio::time::Instant;

/// How long a reserved 0200 waits for its payment's `processing` write, at least: longer than
/// the payment writer waits for its answer, so that a write that commits late, but in time for
/// the payment, still finds its 0200 to send (a lapsed one would fail the payment
/// `bank_unavailable` though no bank was asked).
pub const RESERVATION_HOLD_MIN_MS: u64 = 15_000;
const _: () = assert!(
    crate::transaction::writer::PAYMENT_WRITE_LIMITS.answer_wait_max_ms < RESERVATION_HOLD_MIN_MS
);

/// Reserve a STAN and field 7 for `request` on the link that serves its payer's bank.
#[derive(Debug, Message)]
#[rtype(result = "Result<PreparedDebit, BankError>")]
pub struct PrepareDebit(pub DebitRequest);

/// Send the 0200 a `PrepareDebit` fixed; answers like `Debit` (a silence or 91/96 queues the
/// reversal before `Timeout` or the answer comes back). A reservation that lapsed (or a link that
/// went down since) is `BankError::Unavailable`: nothing was sent.
#[derive(Debug, Message)]
#[rtype(result = "Result<DebitResponse, BankError>")]
pub struct SendPrepared(pub PreparedDebit);

/// A 0200 ready to leave: commit `link`, `stan` and `transmission_time` with the payment, then
/// send it with `SendPrepared`. Not `Clone`: one reservation, one send.
pub struct PreparedDebit {
    /// The name of the link that holds the reservation.
    pub link: String,
    /// That link's address.
    pub link_addr: String,
    /// Field 11, six digits.
    pub stan: String,
    /// Field 7, MMDDhhmmss UTC.
    pub transmission_time: String,
    /// Field 32, the gateway's institution id.
    pub acquirer_id: String,
    pub(crate) handle: PreparedHandle,
}

/// Which reservation, on which link (private to the bank module).
pub(crate) struct PreparedHandle {
    pub link_index: usize,
    pub request: Arc<DebitRequest>,
    pub stan: u32,
    pub token: u64,
}

impl PreparedDebit {
    /// The identity to commit, as a later `ReverseDebit` wants it.
    pub fn original(&self) -> OriginalDebit {
        OriginalDebit {
            link: self.link.clone(),
            link_addr: Some(self.link_addr.clone()),
            stan: self.stan.clone(),
            transmission_time: self.transmission_time.clone(),
            acquirer_id: Some(self.acquirer_id.clone()),
        }
    }

    /// Field 37 of the prepared 0200.
    pub fn rrn(&self) -> &str {
        &self.handle.request.rrn
    }
}

impl fmt::Debug for PreparedDebit {
    // Only the wire identity: the request's accounts stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedDebit")
            .field("link", &self.link)
            .field("stan", &self.stan)
            .field("transmission_time", &self.transmission_time)
            .field("rrn", &self.handle.request.rrn)
            .finish_non_exhaustive()
    }
}

/// The wire identity of a 0200 as the payment committed it: the link it went over, its field 11,
/// its field 7 and its field 32. A reversal puts all three fields into field 90, and field 32
/// into its own field 32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalDebit {
    pub link: String,
    /// The link's address (the BIPS), which a renamed link keeps; `None` before V72.
    pub link_addr: Option<String>,
    pub stan: String,
    pub transmission_time: String,
    /// Field 32, the gateway's institution id when the 0200 left; `None` before V77.
    pub acquirer_id: Option<String>,
}

impl OriginalDebit {
    /// Why these values cannot go into field 90, if they cannot (they come from a database row).
    pub fn check(&self) -> Result<(), BankError> {
        let digits = |v: &str, len: usize| v.len() == len && v.bytes().all(|b| b.is_ascii_digit());
        if !digits(&self.stan, 6) || self.stan == "000000" {
            return Err(BankError::Protocol(format!(
                "original STAN {:?} is not six digits (000001 to 999999)",
                self.stan
            )));
        }
        if !digits(&self.transmission_time, 10) {
            return Err(BankError::Protocol(format!(
                "original field 7 {:?} is not MMDDhhmmss",
                self.transmission_time
            )));
        }
        if let Some(id) = &self.acquirer_id
            && crate::domain::BankId::parse(id).is_err()
        {
            return Err(BankError::Protocol(format!(
                "original field 32 {id:?} is not an institution id"
            )));
        }
        Ok(())
    }
}

/// A STAN and field 7 reserved on a link, as the link hands them out.
#[derive(Debug, Clone)]
pub struct LinkReservation {
    pub stan: u32,
    pub token: u64,
    pub f7: String,
}

/// One reserved 0200, built and waiting for its `SendPrepared`.
pub(crate) struct Reservation {
    pub token: u64,
    pub request: Arc<DebitRequest>,
    pub message: Message,
    pub f7: String,
    pub lapses_at: Instant,
}

/// A link's reservations, by STAN.
#[derive(Default)]
pub(crate) struct Reservations {
    by_stan: HashMap<u32, Reservation>,
}

impl Reservations {
    pub fn len(&self) -> usize {
        self.by_stan.len()
    }

    pub fn insert(&mut self, stan: u32, reservation: Reservation) {
        let previous = self.by_stan.insert(stan, reservation);
        debug_assert!(previous.is_none(), "a reserved STAN was allocated twice");
    }

    /// The reservation for `stan`, if it is still the one `token` names.
    pub fn take(&mut self, stan: u32, token: u64) -> Option<Reservation> {
        match self.by_stan.get(&stan) {
            Some(r) if r.token == token => self.by_stan.remove(&stan),
            _ => None,
        }
    }

    /// Removes the reservations that lapsed by `now`; returns their STANs.
    pub fn lapse(&mut self, now: Instant) -> Vec<u32> {
        let lapsed: Vec<u32> = self
            .by_stan
            .iter()
            .filter(|(_, r)| r.lapses_at <= now)
            .map(|(stan, _)| *stan)
            .collect();
        for stan in &lapsed {
            self.by_stan.remove(stan);
        }
        lapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original(stan: &str, f7: &str) -> OriginalDebit {
        OriginalDebit {
            link: "bips-a".into(),
            link_addr: None,
            stan: stan.into(),
            transmission_time: f7.into(),
            acquirer_id: Some("99990001".into()),
        }
    }

    #[test]
    fn original_values_are_checked_before_field_90() {
        assert_eq!(original("000042", "1128110000").check(), Ok(()));
        assert!(original("42", "1128110000").check().is_err());
        assert!(original("000000", "1128110000").check().is_err());
        assert!(original("00004x", "1128110000").check().is_err());
        assert!(original("000042", "11281100").check().is_err());
    }
}
