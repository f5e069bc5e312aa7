//! Debits on the link: the in-flight count, STAN reservations (prepared, held, sent or lapsed).

use super::{BankLinkActor, DebitTicket, LinkState, Pending, PendingKind};
use crate::bank::prepared::{LinkReservation, Reservation};
use crate::bank::stan::format_stan;
use crate::bank::wire;
use crate::messages::{BankError, DebitRequest};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;
use tokio::time::Instant;

impl BankLinkActor {
    /// A debit took a place in the in-flight table (what the router and operators read, too).
    fn debit_entered(&mut self) {
        self.debits_in_flight += 1;
        self.shared
            .in_flight
            .store(self.debits_in_flight, Ordering::Relaxed);
    }

    /// A debit left the in-flight table: answered, timed out, or given up by its caller.
    pub(super) fn debit_left(&mut self) {
        self.debits_in_flight -= 1;
        self.shared
            .in_flight
            .store(self.debits_in_flight, Ordering::Relaxed);
    }

    /// Allocates a STAN and builds the 0200 with field 7 from the clock; nothing is sent yet.
    fn reserve(&mut self, request: Arc<DebitRequest>) -> Result<(u32, Reservation), BankError> {
        if self.state() != LinkState::SignedOn || self.stopping {
            return Err(BankError::Unavailable);
        }
        if self.debits_in_flight + self.reserved.len() >= self.settings.in_flight_max {
            return Err(BankError::Busy);
        }
        let stan = self.allocate_stan().ok_or(BankError::Busy)?;
        let now = self.deps.clock.now();
        let message =
            match wire::debit_request(&request, &format_stan(stan), now, &self.deps.institution_id)
            {
                Ok(m) => m,
                Err(e) => {
                    self.stans.release(stan);
                    return Err(BankError::Protocol(e.to_string()));
                }
            };
        let f7 = message.get(7).unwrap_or_default().to_owned();
        self.seq += 1;
        let reservation = Reservation {
            token: self.seq,
            request,
            message,
            f7,
            lapses_at: Instant::now() + self.settings.reservation_hold(),
        };
        Ok((stan, reservation))
    }

    /// Puts a reserved 0200 on the wire, exactly as it was built.
    fn send_reservation(
        &mut self,
        stan: u32,
        reservation: Reservation,
    ) -> Result<DebitTicket, BankError> {
        if self.state() != LinkState::SignedOn || self.stopping {
            self.stans.release(stan);
            return Err(BankError::Unavailable);
        }
        let Reservation {
            token: seq,
            request,
            message,
            f7,
            ..
        } = reservation;
        let (tx, rx) = oneshot::channel();
        self.pending.insert(
            (b'2', stan),
            Pending {
                kind: PendingKind::Debit {
                    request,
                    reply: tx,
                    seq,
                    f7: f7.clone(),
                },
                sent_at: Instant::now(),
            },
        );
        self.debit_entered();
        self.write(message);
        Ok(DebitTicket {
            reply: rx,
            stan,
            seq,
            f7,
        })
    }

    pub(super) fn send_debit(
        &mut self,
        request: Arc<DebitRequest>,
    ) -> Result<DebitTicket, BankError> {
        let (stan, reservation) = self.reserve(request)?;
        self.send_reservation(stan, reservation)
    }

    pub(super) fn hold_reservation(
        &mut self,
        request: Arc<DebitRequest>,
    ) -> Result<LinkReservation, BankError> {
        let (stan, reservation) = self.reserve(request)?;
        let answer = LinkReservation {
            stan,
            token: reservation.token,
            f7: reservation.f7.clone(),
        };
        self.reserved.insert(stan, reservation);
        Ok(answer)
    }

    pub(super) fn send_reserved(
        &mut self,
        stan: u32,
        token: u64,
    ) -> Result<DebitTicket, BankError> {
        // Lapsed (its STAN released) or never made here: nothing goes out.
        let reservation = self
            .reserved
            .take(stan, token)
            .ok_or(BankError::Unavailable)?;
        self.send_reservation(stan, reservation)
    }

    /// Releases the STANs of reservations nobody sent within their hold.
    pub(super) fn lapse_reservations(&mut self, now: Instant) {
        for stan in self.reserved.lapse(now) {
            self.stans.release(stan);
            tracing::info!(link = %self.name(), stan, "a prepared debit was never sent; released");
        }
    }
}
