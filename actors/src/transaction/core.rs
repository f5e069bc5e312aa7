//! The payment state machine as plain async Rust: one `PaymentCore` per payment, driven one
//! message at a time by its actor. Every transition is committed before its effect leaves the
//! process: the code hash before the code is sent, `processing` and the RRN before the debit, the
//! final status with its webhook event before the customer and the merchant hear of it.
//!
//! One file per step: `login` (the password step), `routes` (where a code goes), `codes`
//! (issuing, sending, checking and resending codes), `debit`, `deadlines` (expiry and
//! restarts) and `outcome` (the final status and the customer's notice).

mod codes;
mod deadlines;
mod debit;
mod login;
mod outcome;
mod routes;

use super::event::Outcome;
use super::store::{self, PaymentRow, TerminalRow};
use super::view::{PaymentView, ViewWithRoutes, route_options_of};
use super::{Deps, PaymentError};
use crate::domain::PaymentStatus;
use chrono::{DateTime, Utc};

pub struct PaymentCore {
    deps: Deps,
    row: PaymentRow,
    /// The customer's terminals as last read for a code's route: the code page offers them.
    terminals: Option<Vec<TerminalRow>>,
    /// The outcome SMS's `customer_messages` row, written with the final status.
    outcome_notice_row: Option<i64>,
    /// Set when due deadline work failed (the database refused it): not tried again before then.
    deadline_retry_at: Option<DateTime<Utc>>,
    /// The bank's answer to this payment's debit until its final status is written. A failed
    /// write is tried again with it at the next deadline: the debit was answered, so reversing it
    /// (as for a debit of unknown outcome) would undo a payment the bank approved.
    answered: Option<Box<Outcome>>,
    /// A `processing` write timed out, and the row was read back as awaiting its code: the write
    /// may still commit (how late depends on the writer's queue, the pool and the statement
    /// timeout), so the row is read again at each retry until it moves or the payment expires,
    /// and a payment that did move on is settled then, not at its expiry.
    processing_unsure: bool,
}

impl PaymentCore {
    pub async fn load(deps: Deps, payment_id: &str) -> Result<Self, PaymentError> {
        let client = deps.pool.get().await?;
        let row = store::load_payment(&client, payment_id).await?;
        Ok(Self::from_row(deps, row))
    }

    pub fn from_row(deps: Deps, row: PaymentRow) -> Self {
        Self {
            deps,
            row,
            terminals: None,
            outcome_notice_row: None,
            deadline_retry_at: None,
            answered: None,
            processing_unsure: false,
        }
    }

    /// A final payment whose outcome SMS row is `notice_row`: its [`outcome_delivery`] names it.
    ///
    /// [`outcome_delivery`]: Self::outcome_delivery
    pub fn with_outcome_notice_row(mut self, notice_row: i64) -> Self {
        self.outcome_notice_row = Some(notice_row);
        self
    }

    pub fn row(&self) -> &PaymentRow {
        &self.row
    }

    pub fn status(&self) -> PaymentStatus {
        self.row.status
    }

    /// What the customer pages show, from memory; `None` once the payment is final (the pages
    /// then read the outcome from the row).
    pub fn view(&self) -> Option<ViewWithRoutes> {
        if self.row.status.is_final() {
            return None;
        }
        let routes = self.terminals.as_deref().map(route_options_of);
        Some((PaymentView::of_row(&self.row), routes))
    }

    /// Reads the row again, where memory may be behind it (a write expected another status, or
    /// one timed out). When it is final, an earlier write of this actor may have committed
    /// although its answer was lost: the notice then ends the row that write left `queued`,
    /// rather than leaving it for the next start to send a second time.
    async fn reload(&mut self) -> Result<(), PaymentError> {
        let client = self.deps.pool.get().await?;
        self.row = store::load_payment(&client, &self.row.id).await?;
        if self.row.status.is_final() {
            self.outcome_notice_row = store::queued_outcome_notice(&client, &self.row.id).await?;
        }
        Ok(())
    }

    fn now(&self) -> DateTime<Utc> {
        self.deps.clock.now()
    }

    fn settings(&self) -> &super::PaymentSettings {
        &self.deps.settings
    }

    /// `Err` unless the payment is in `expected`; final statuses come back as `Ok(Some(status))`.
    fn require(&self, expected: PaymentStatus) -> Result<Option<PaymentStatus>, PaymentError> {
        match self.row.status {
            s if s == expected => Ok(None),
            s if s.is_final() => Ok(Some(s)),
            s => Err(PaymentError::WrongState(s)),
        }
    }

    fn session_ok(&self, token: &str) -> bool {
        match &self.row.session_hash {
            Some(hash) => {
                super::code::session_matches(&self.deps.hash_key, &self.row.id, token, hash)
            }
            None => false,
        }
    }
}

fn secs_i64(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1_000_000)
}

fn seconds_until(now: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
    let ms = (until - now).num_milliseconds().max(0);
    u64::try_from(ms).unwrap_or(0).div_ceil(1_000)
}
