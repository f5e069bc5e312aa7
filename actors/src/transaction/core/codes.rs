//! Codes: written (as a keyed hash) before they are sent, sent over the route's channel, checked
//! on the code page, and resent within their bounds.

use super::login::PassedLogin;
use super::routes::Route;
use super::{PaymentCore, seconds_until, secs_i64};
use crate::domain::{FailureCode, PaymentStatus};
use crate::messages::{Deliver, DeliveryError, Destination, Notice, NoticeKind};
use crate::secret::Secret;
use crate::store::prepared::Prepared;
use crate::transaction::code::{code_hash, code_matches, new_code, resends_left};
use crate::transaction::event::{self, Outcome};
use crate::transaction::store;
use crate::transaction::{
    CODE_DELIVERY_FAILURES_MAX, ChannelChoice, CodeReply, PaymentError, ResendReply,
};
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;
use std::time::Duration as StdDuration;

/// A code written, not yet sent.
pub(super) struct IssuedCode {
    pub(super) code: Secret<String>,
    /// The SMS's `customer_messages` row, written with the code.
    pub(super) message_row: Option<i64>,
}

impl PaymentCore {
    /// Writes a fresh code for `route` (voiding any earlier one) in one statement; at login the
    /// same statement moves the payment to `awaiting_code`. `None` when the payment was no longer
    /// in the status the step expects, or its lifetime ended meanwhile (the step waited for a
    /// password hash, a route): nothing was written. The time is read now, not at the step's
    /// start, so that the code is valid from when it goes.
    pub(super) async fn issue_code(
        &mut self,
        route: &Route,
        login: Option<PassedLogin<'_>>,
    ) -> Result<Option<IssuedCode>, PaymentError> {
        let now = self.now();
        let code = new_code(self.settings().code_digits);
        let hash = code_hash(&self.deps.hash_key, &self.row.id, code.expose());
        let expires = now + Duration::seconds(secs_i64(self.settings().code_validity_s));
        let msisdn = route.msisdn.as_ref().map(|m| m.digits().to_string());
        let sms_to = match &route.destination {
            Destination::Sms(number) => Some(number.masked()),
            Destination::Terminal(_) => None,
        };
        let (from, customer_id, session_hash) = self.code_holder(login.as_ref())?;
        let issue = store::CodeIssue {
            payment_id: &self.row.id,
            from,
            customer_id: &customer_id,
            session_hash: &session_hash,
            code_hash: &hash,
            code_expires_at: expires,
            at: now,
            channel: route.channel,
            terminal_id: route.terminal_id.as_deref(),
            receiver_msisdn: msisdn.as_deref(),
            passed_attempt: login.as_ref().map(|l| l.attempt),
            audit_detail: audit_detail(route),
            sms_to: sms_to.as_deref(),
        };
        let client = self.deps.pool.get().await?;
        let Some(message_row) = store::issue_code(&client, &issue).await? else {
            return Ok(None);
        };
        drop(client);
        event::log_step("code_issued");
        if let Some(login) = login {
            self.row.payer = Some(login.customer.payer.clone());
        }
        self.row.status = PaymentStatus::AwaitingCode;
        self.row.customer_id = Some(customer_id);
        self.row.session_hash = Some(session_hash);
        self.row.code_hash = Some(hash);
        self.row.code_expires_at = Some(expires);
        self.row.code_sent_at = Some(now);
        self.row.code_sends += 1;
        self.row.channel = Some(route.channel.to_string());
        self.row.terminal_id = route.terminal_id.clone();
        self.row.receiver_msisdn = msisdn;
        self.row.code_delivery_error = None;
        Ok(Some(IssuedCode { code, message_row }))
    }

    /// Whom a code is issued to: the status the payment moves from, the customer, and the browser
    /// session's hash. At login they come with the passed password step, on a resend from the row.
    fn code_holder(
        &self,
        login: Option<&PassedLogin<'_>>,
    ) -> Result<(PaymentStatus, String, Vec<u8>), PaymentError> {
        let missing = || PaymentError::Storage("awaiting_code without its session".into());
        Ok(match login {
            Some(l) => (
                PaymentStatus::AwaitingCustomer,
                l.customer.id.clone(),
                l.session_hash.clone(),
            ),
            None => (
                PaymentStatus::AwaitingCode,
                self.row.customer_id.clone().ok_or_else(missing)?,
                self.row.session_hash.clone().ok_or_else(missing)?,
            ),
        })
    }

    pub(super) async fn record_delivery_failure(
        &mut self,
        tx: &Transaction<'_>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PaymentError> {
        tx.execute_cached(
            "UPDATE payments SET code_hash = NULL, code_expires_at = NULL,
                 code_delivery_error = $2, code_delivery_failures = code_delivery_failures + 1,
                 updated_at = $3
             WHERE id = $1 AND status = 'awaiting_code'",
            &[&self.row.id, &reason, &now],
        )
        .await?;
        self.row.code_hash = None;
        self.row.code_expires_at = None;
        self.row.code_delivery_failures += 1;
        self.row.code_delivery_error = Some(reason.to_owned());
        Ok(())
    }

    /// Sends the code (already committed); on failure the code is voided, the reason kept and
    /// the message's row, if the code's write made one, marked failed.
    pub(super) async fn send_code(
        &mut self,
        route: &Route,
        issued: IssuedCode,
    ) -> Result<Result<(), String>, PaymentError> {
        let notice = self.notice(
            NoticeKind::Code,
            Some(issued.code),
            None,
            route.unregistered,
        );
        // `codes_sent` is counted where each channel records the message's fate (the SMPP
        // session, the channel router), not here as well.
        let sent = self
            .deliver(route.destination.clone(), notice, issued.message_row)
            .await;
        let reason = match sent {
            Ok(()) => return Ok(Ok(())),
            Err(Undelivered::Unconfirmed) => {
                // It may still reach the customer (an SMS center or terminal that answers late):
                // voiding it would leave them holding a dead code while told none was sent. It
                // stays valid, and counts as sent; a resend voids it.
                let payment = &self.row.id;
                tracing::warn!(%payment, "code delivery unconfirmed; the code stays valid");
                return Ok(Ok(()));
            }
            Err(Undelivered::Failed(reason)) => reason,
        };
        let now = self.now();
        let mut client = self.deps.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute_cached(
            // A payment that ended during the delivery (the sweep expired it) keeps its row.
            "UPDATE payments SET code_sends = code_sends - 1
             WHERE id = $1 AND status = 'awaiting_code'",
            &[&self.row.id],
        )
        .await?;
        self.record_delivery_failure(&tx, &reason, now).await?;
        if let Some(row) = issued.message_row {
            crate::store::messages::mark_failed_on(&tx, now, row, &reason).await?;
        }
        tx.commit().await?;
        self.row.code_sends -= 1;
        Ok(Err(reason))
    }

    pub(super) fn notice(
        &self,
        kind: NoticeKind,
        code: Option<Secret<String>>,
        outcome: Option<String>,
        unregistered_receiver: bool,
    ) -> Notice {
        Notice {
            payment_id: self.row.id.clone(),
            kind,
            merchant_name: self.row.merchant_name.clone(),
            amount: self.row.amount,
            currency: self.row.currency,
            code,
            validity_s: self.code_validity_left_s(),
            outcome,
            unregistered_receiver,
        }
    }

    /// How long the code just issued can be entered: its own validity, cut by the payment's
    /// lifetime (the payment expires with whatever code it holds). Counted from its issue, not
    /// from now: the few milliseconds of its write would otherwise make 300 s read "4 min".
    fn code_validity_left_s(&self) -> u32 {
        let configured = secs_i64(self.settings().code_validity_s);
        let issued = self.row.code_sent_at.unwrap_or_else(|| self.now());
        let until = self.row.code_expires_at.unwrap_or(self.row.expires_at);
        let left = (until.min(self.row.expires_at) - issued).num_seconds();
        u32::try_from(left.clamp(0, configured)).unwrap_or(u32::MAX)
    }

    /// One notice through the channel router, bounded in time.
    async fn deliver(
        &self,
        destination: Destination,
        notice: Notice,
        recorded: Option<i64>,
    ) -> Result<(), Undelivered> {
        let wait = StdDuration::from_millis(self.settings().delivery_timeout_ms);
        let sent = tokio::time::timeout(
            wait,
            self.deps.channel.send(Deliver {
                destination,
                notice,
                recorded,
                answer_within: wait,
            }),
        )
        .await;
        match sent {
            Ok(Ok(Ok(_receipt))) => Ok(()),
            Ok(Ok(Err(DeliveryError::Timeout))) | Err(_) => Err(Undelivered::Unconfirmed),
            Ok(Ok(Err(e))) => Err(Undelivered::Failed(delivery_reason(&e))),
            Ok(Err(_router_gone)) => Err(Undelivered::Failed(
                "The message service is not running. Try again or choose another way.".into(),
            )),
        }
    }

    pub async fn submit_code(
        &mut self,
        session: &str,
        code: &str,
    ) -> Result<CodeReply, PaymentError> {
        if let Some(done) = self.require(PaymentStatus::AwaitingCode)? {
            return Ok(CodeReply::Finished(done));
        }
        if !self.session_ok(session) {
            return Err(PaymentError::WrongSession);
        }
        let now = self.now();
        if let Some(done) = self.ended_before_the_code(now).await? {
            return Ok(CodeReply::Finished(done));
        }
        let (Some(hash), Some(code_expires)) = (&self.row.code_hash, self.row.code_expires_at)
        else {
            return Ok(CodeReply::NoLiveCode);
        };
        if now >= code_expires {
            let outcome = Outcome::failed(FailureCode::CodeExpired, None);
            self.finish(&[PaymentStatus::AwaitingCode], outcome).await?;
            return Ok(CodeReply::Finished(self.row.status));
        }
        if !code_matches(&self.deps.hash_key, &self.row.id, code, hash) {
            return self.code_failed(now).await;
        }
        self.debit(now).await
    }

    /// Whether the customer may still ask for another code.
    fn resends_left(&self) -> bool {
        resends_left(self.row.code_sends, self.settings().code_resends_max)
    }

    async fn code_failed(&mut self, now: DateTime<Utc>) -> Result<CodeReply, PaymentError> {
        let client = self.deps.pool.get().await?;
        let failures: Option<i32> = client
            .query_opt_cached(
                "UPDATE payments SET code_failures = code_failures + 1, updated_at = $2
                 WHERE id = $1 AND status = 'awaiting_code' RETURNING code_failures",
                &[&self.row.id, &now],
            )
            .await?
            .map(|r| r.get(0));
        drop(client);
        let Some(failures) = failures else {
            self.reload().await?;
            return Ok(CodeReply::Finished(self.row.status));
        };
        self.row.code_failures = failures;
        if self.code_attempts_spent() {
            return Ok(CodeReply::Finished(
                self.fail_code_attempts_exceeded().await?,
            ));
        }
        Ok(CodeReply::Wrong {
            attempts_left: u32::try_from(self.code_attempts_max() - failures).unwrap_or(0),
        })
    }

    fn code_attempts_max(&self) -> i32 {
        i32::try_from(self.settings().code_attempts_max).unwrap_or(i32::MAX)
    }

    /// Whether the wrong tries counted on the row leave none.
    pub(super) fn code_attempts_spent(&self) -> bool {
        self.row.code_failures >= self.code_attempts_max()
    }

    pub(super) async fn fail_code_attempts_exceeded(
        &mut self,
    ) -> Result<PaymentStatus, PaymentError> {
        let outcome = Outcome::failed(FailureCode::CodeAttemptsExceeded, None);
        self.finish(&[PaymentStatus::AwaitingCode], outcome).await?;
        Ok(self.row.status)
    }

    /// Ends a payment awaiting its code that no code may move on any more, before one is
    /// compared or sent: past the payment's lifetime (`expired`), or with every wrong try
    /// counted (the last one's failure not written: the write failed, or the process stopped in
    /// between). Its status then; `None` while a code may still go.
    async fn ended_before_the_code(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Option<PaymentStatus>, PaymentError> {
        if now >= self.row.expires_at {
            self.finish(&[PaymentStatus::AwaitingCode], Outcome::expired())
                .await?;
            return Ok(Some(self.row.status));
        }
        if self.code_attempts_spent() {
            return Ok(Some(self.fail_code_attempts_exceeded().await?));
        }
        Ok(None)
    }

    /// A new code, over the same or another channel. A real resend (a code was delivered) is
    /// bounded and spaced; a retry after a failed delivery is bounded by
    /// [`CODE_DELIVERY_FAILURES_MAX`].
    pub async fn resend(
        &mut self,
        session: &str,
        choice: Option<ChannelChoice>,
    ) -> Result<ResendReply, PaymentError> {
        if let Some(done) = self.require(PaymentStatus::AwaitingCode)? {
            return Err(PaymentError::WrongState(done));
        }
        if !self.session_ok(session) {
            return Err(PaymentError::WrongSession);
        }
        let now = self.now();
        if let Some(done) = self.ended_before_the_code(now).await? {
            return Err(PaymentError::WrongState(done));
        }
        let delivered_before = self.row.code_sends > 0 && self.row.code_hash.is_some();
        if delivered_before {
            if !self.resends_left() {
                return Ok(ResendReply::Exhausted);
            }
            let interval = Duration::seconds(secs_i64(self.settings().code_resend_interval_s));
            if let Some(sent) = self.row.code_sent_at
                && now < sent + interval
            {
                return Ok(ResendReply::TooSoon {
                    wait_s: seconds_until(now, sent + interval),
                });
            }
        } else if self.row.code_delivery_failures >= CODE_DELIVERY_FAILURES_MAX {
            return Ok(ResendReply::Exhausted);
        }
        let customer_id = self
            .row
            .customer_id
            .clone()
            .ok_or_else(|| PaymentError::Storage("awaiting_code without a customer".into()))?;
        let choice = choice.unwrap_or_else(|| self.current_choice());
        let route = match self.route(&customer_id, None, &choice, None).await? {
            Ok(route) => route,
            Err(reason) => return Ok(ResendReply::NotDelivered { reason }),
        };
        let Some(issued) = self.issue_code(&route, None).await? else {
            self.reload().await?;
            self.check_deadlines().await?;
            return Err(PaymentError::WrongState(self.row.status));
        };
        Ok(match self.send_code(&route, issued).await? {
            Ok(()) => ResendReply::Sent {
                destination: route.label,
            },
            Err(reason) => ResendReply::NotDelivered { reason },
        })
    }
}

/// The audit line of a code's route (the number masked).
fn audit_detail(route: &Route) -> serde_json::Value {
    json!({
        "channel": route.channel,
        "terminal_id": route.terminal_id,
        "msisdn": route.msisdn.as_ref().map(|m| m.masked()),
        "unregistered_receiver": route.unregistered,
    })
}

/// Why a code did not (surely) reach the customer.
enum Undelivered {
    /// It did not; the reason is said to the customer.
    Failed(String),
    /// No answer in time: it may still arrive.
    Unconfirmed,
}

fn delivery_reason(e: &DeliveryError) -> String {
    use DeliveryError::*;
    match e {
        Offline | Held => "Your terminal is offline, so the code could not reach it. \
                    Switch it on, or choose another way to receive the code."
            .into(),
        Rejected(_) => "The message service refused the message. \
                        Choose another way to receive the code."
            .into(),
        // Unconfirmed, not failed (see `send_code`).
        Timeout => "The code could not be confirmed as delivered in time. \
                    Ask for a new code or choose another way."
            .into(),
        NotAcknowledged => "Your terminal did not confirm the code in time. \
                            Check that it is on, or choose another way to receive the code."
            .into(),
        Unavailable => "That channel is not available right now. \
                        Choose another way to receive the code."
            .into(),
    }
}
