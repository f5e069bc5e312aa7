//! The payment state machine as plain async Rust: one [`PaymentCore`] per payment, driven one
//! message at a time by its actor. Every transition is committed before its effect leaves the
//! process: the code hash before the code is sent, `processing` and the RRN before the debit, the
//! final status with its webhook event before the customer and the merchant hear of it.

use super::code::{code_hash, code_matches, new_code, new_rrn, new_session_token, session_hash};
use super::event::{self, Outcome};
use super::outbox::Reservation;
use super::store::{self, Attempt, CustomerLogin, PaymentRow, TerminalRow};
use super::view::{PaymentView, ViewWithRoutes, route_options_of};
use super::writer::ToProcessing;
use super::{
    CODE_DELIVERY_FAILURES_MAX, ChannelChoice, CodeReply, DEADLINE_RETRY_MS, Deps, LoginReply,
    PaymentError, ResendReply,
};
use crate::bank::reversals::ReversalReason;
use crate::bank::{PrepareDebit, ReverseDebit, SendPrepared};
use crate::domain::{FailureCode, Msisdn, PaymentStatus};
use crate::messages::{
    BankError, DebitRequest, DebitResponse, Deliver, Destination, Notice, NoticeKind,
};
use crate::secret::Secret;
use crate::store::prepared::Prepared;
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;
use std::time::Duration as StdDuration;

/// Where a code goes, once the customer's choice is resolved against the registered terminals.
#[derive(Debug, Clone)]
struct Route {
    channel: &'static str,
    terminal_id: Option<String>,
    msisdn: Option<Msisdn>,
    destination: Destination,
    /// What the customer is shown (masked number or terminal label).
    label: String,
    unregistered: bool,
}

/// What a passed password step adds to its code's write.
struct PassedLogin<'a> {
    customer: &'a CustomerLogin,
    session_hash: Vec<u8>,
    /// The sign-in attempt (counted as a failure until now), removed by the same write.
    attempt: i64,
}

/// A code written, not yet sent.
struct IssuedCode {
    code: Secret<String>,
    /// The SMS's `customer_messages` row, written with the code.
    message_row: Option<i64>,
}

/// How a debit ended, before it is written.
#[derive(Debug, PartialEq)]
enum DebitEnd {
    Outcome(Outcome),
    /// The outcome cannot be known: reverse, then `failed`/`bank_unavailable`.
    Unknown(&'static str),
}

pub struct PaymentCore {
    deps: Deps,
    row: PaymentRow,
    /// The customer's terminals as last read for a code's route: the code page offers them.
    terminals: Option<Vec<TerminalRow>>,
    /// The outcome SMS's `customer_messages` row, written with the final status.
    outcome_notice_row: Option<i64>,
    /// Set when due deadline work failed (the database refused it): not tried again before then.
    deadline_retry_at: Option<DateTime<Utc>>,
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

    async fn reload(&mut self) -> Result<(), PaymentError> {
        let client = self.deps.pool.get().await?;
        self.row = store::load_payment(&client, &self.row.id).await?;
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

    // ---- the password step ------------------------------------------------------------------

    /// Identity and password; on success the code goes out over the chosen channel.
    pub async fn login(
        &mut self,
        identity: &str,
        password: Secret<String>,
        choice: ChannelChoice,
    ) -> Result<LoginReply, PaymentError> {
        if let Some(done) = self.require(PaymentStatus::AwaitingCustomer)? {
            return Ok(LoginReply::Finished(done));
        }
        let now = self.now();
        if now >= self.row.expires_at {
            self.finish(&[PaymentStatus::AwaitingCustomer], Outcome::expired())
                .await?;
            return Ok(LoginReply::Finished(self.row.status));
        }
        let (failures_max, window) = self.lockout();
        let client = self.deps.pool.get().await?;
        let start = store::begin_login(&client, identity, failures_max, window, now).await?;
        drop(client);
        let attempt = match start.attempt {
            Attempt::Counted(attempt) => attempt,
            Attempt::Locked(until) => {
                return Ok(LoginReply::Locked {
                    retry_after_s: seconds_until(now, until),
                });
            }
        };
        if !verify_password(password, start.customer.as_ref()).await {
            return self.password_failed(&start.key, now).await;
        }
        let Some(customer) = start.customer else {
            // verify_password never accepts an unknown identity.
            return Err(PaymentError::Storage("unknown identity accepted".into()));
        };
        self.password_passed(attempt, customer, start.terminals, choice, now)
            .await
    }

    /// Failures of one identity that lock it, and the window they must fall in (also the lock's
    /// length).
    fn lockout(&self) -> (u32, Duration) {
        let window = Duration::seconds(secs_i64(self.settings().identity_lockout_s));
        (self.settings().identity_failures_max, window)
    }

    async fn locked_until(
        &self,
        client: &deadpool_postgres::Client,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, PaymentError> {
        let (failures_max, window) = self.lockout();
        store::locked_until(client, key, failures_max, window, now).await
    }

    async fn password_failed(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<LoginReply, PaymentError> {
        let mut client = self.deps.pool.get().await?;
        // The attempt's `login_failures` row, written before the hash, stays: it is the failure.
        let tx = client.transaction().await?;
        let failures: Option<i32> = tx
            .query_opt_cached(
                "UPDATE payments SET password_failures = password_failures + 1, updated_at = $2
                 WHERE id = $1 AND status = 'awaiting_customer' RETURNING password_failures",
                &[&self.row.id, &now],
            )
            .await?
            .map(|r| r.get(0));
        let Some(failures) = failures else {
            tx.commit().await?;
            drop(client);
            self.reload().await?;
            return Ok(LoginReply::Finished(self.row.status));
        };
        self.row.password_failures = failures;
        let max = i32::try_from(self.settings().password_attempts_max).unwrap_or(i32::MAX);
        if failures >= max {
            let outcome = Outcome::failed(FailureCode::AuthenticationFailed, None);
            let finish = event::to_final(
                &self.row,
                &[PaymentStatus::AwaitingCustomer],
                &outcome,
                now,
                &self.settings().public_url,
                self.outcome_sms_destination().as_deref(),
            )
            .write(&tx)
            .await?;
            tx.commit().await?;
            drop(client);
            self.after_finish(finish, None, &outcome).await?;
            return Ok(LoginReply::Finished(self.row.status));
        }
        tx.commit().await?;
        if let Some(until) = self.locked_until(&client, key, now).await? {
            return Ok(LoginReply::Locked {
                retry_after_s: seconds_until(now, until),
            });
        }
        Ok(LoginReply::BadCredentials {
            attempts_left: u32::try_from(max - failures).unwrap_or(0),
        })
    }

    async fn password_passed(
        &mut self,
        attempt: i64,
        customer: CustomerLogin,
        terminals: Vec<TerminalRow>,
        choice: ChannelChoice,
        now: DateTime<Utc>,
    ) -> Result<LoginReply, PaymentError> {
        let session = new_session_token();
        let session_hash = session_hash(&self.deps.hash_key, &self.row.id, session.expose());
        let route = self
            .route(
                &customer.id,
                customer.typed_msisdn.as_deref(),
                &choice,
                Some(terminals),
            )
            .await?;
        let route = match route {
            Ok(route) => route,
            Err(reason) => {
                return self
                    .passed_without_route(attempt, &customer, session, session_hash, reason, now)
                    .await;
            }
        };
        let login = PassedLogin {
            customer: &customer,
            session_hash,
            attempt,
        };
        let Some(issued) = self.issue_code(&route, now, Some(login)).await? else {
            self.reload().await?;
            return Ok(LoginReply::Finished(self.row.status));
        };
        match self.send_code(&route, issued).await? {
            Ok(()) => Ok(LoginReply::CodeSent {
                session,
                destination: route.label,
            }),
            Err(reason) => Ok(LoginReply::CodeNotDelivered { session, reason }),
        }
    }

    /// The password passed but no code can go where the customer asked: the browser session is
    /// kept, with the reason, so that another channel can be chosen on the code page.
    async fn passed_without_route(
        &mut self,
        attempt: i64,
        customer: &CustomerLogin,
        session: Secret<String>,
        session_hash: Vec<u8>,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<LoginReply, PaymentError> {
        let mut client = self.deps.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute_cached("DELETE FROM login_failures WHERE id = $1", &[&attempt])
            .await?;
        let moved = tx
            .execute_cached(
                "UPDATE payments SET status = 'awaiting_code', customer_id = $2, session_hash = $3,
                     updated_at = $4
                 WHERE id = $1 AND status = 'awaiting_customer'",
                &[&self.row.id, &customer.id, &session_hash, &now],
            )
            .await?;
        if moved == 0 {
            tx.rollback().await?;
            drop(client);
            self.reload().await?;
            return Ok(LoginReply::Finished(self.row.status));
        }
        self.record_delivery_failure(&tx, &reason, now).await?;
        tx.commit().await?;
        self.row.status = PaymentStatus::AwaitingCode;
        self.row.customer_id = Some(customer.id.clone());
        self.row.payer = Some(customer.payer.clone());
        self.row.session_hash = Some(session_hash);
        Ok(LoginReply::CodeNotDelivered { session, reason })
    }

    // ---- routes and codes ---------------------------------------------------------------------

    /// Resolves the customer's channel choice; `Ok(Err(reason))` when it cannot be served. The
    /// customer's terminals are read unless the caller `just_read` them.
    async fn route(
        &mut self,
        customer_id: &str,
        typed_msisdn: Option<&str>,
        choice: &ChannelChoice,
        just_read: Option<Vec<TerminalRow>>,
    ) -> Result<Result<Route, String>, PaymentError> {
        let terminals = match just_read {
            Some(terminals) => terminals,
            None => {
                let client = self.deps.pool.get().await?;
                store::customer_terminals(&client, customer_id).await?
            }
        };
        let route = match choice {
            ChannelChoice::Sms { receiver } => self.sms_route(&terminals, typed_msisdn, receiver),
            ChannelChoice::Terminal { terminal } => terminal_route(&terminals, terminal.as_deref()),
        };
        self.terminals = Some(terminals);
        Ok(route)
    }

    fn sms_route(
        &self,
        terminals: &[TerminalRow],
        typed_msisdn: Option<&str>,
        receiver: &Option<Msisdn>,
    ) -> Result<Route, String> {
        let registered: Vec<Msisdn> = terminals
            .iter()
            .filter(|t| t.kind == "mobile")
            .filter_map(|t| t.msisdn.as_deref())
            .filter_map(|m| Msisdn::parse(m).ok())
            .collect();
        let (msisdn, unregistered) = match receiver {
            Some(r) if registered.contains(r) => (r.clone(), false),
            Some(r) if self.settings().allow_unregistered_receiver => (r.clone(), true),
            Some(_) => {
                return Err("That mobile number is not registered for your account. \
                            Leave the number empty to use your registered mobile."
                    .into());
            }
            None => {
                let typed = typed_msisdn.and_then(|m| Msisdn::parse(m).ok());
                match typed.or_else(|| registered.first().cloned()) {
                    Some(m) => (m, false),
                    None => {
                        return Err("No mobile number is registered for SMS. \
                                    Choose your terminal instead."
                            .into());
                    }
                }
            }
        };
        Ok(Route {
            channel: "sms",
            terminal_id: None,
            label: format!("SMS to {}", msisdn.masked()),
            destination: Destination::Sms(msisdn.clone()),
            msisdn: Some(msisdn),
            unregistered,
        })
    }

    /// Writes a fresh code for `route` (voiding any earlier one) in one statement; at login the
    /// same statement moves the payment to `awaiting_code`. `None` when the payment was no longer
    /// in the status the step expects: nothing was written.
    async fn issue_code(
        &mut self,
        route: &Route,
        now: DateTime<Utc>,
        login: Option<PassedLogin<'_>>,
    ) -> Result<Option<IssuedCode>, PaymentError> {
        let code = new_code(self.settings().code_digits);
        let hash = code_hash(&self.deps.hash_key, &self.row.id, code.expose());
        let expires = now + Duration::seconds(secs_i64(self.settings().code_validity_s));
        let msisdn = route.msisdn.as_ref().map(|m| m.digits().to_string());
        let sms_to = match &route.destination {
            Destination::Sms(number) => Some(number.masked()),
            Destination::Terminal(_) => None,
        };
        let missing = || PaymentError::Storage("awaiting_code without its session".into());
        let (from, customer_id, session_hash) = match &login {
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
        };
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
            audit_detail: json!({
                "channel": route.channel,
                "terminal_id": route.terminal_id,
                "msisdn": route.msisdn.as_ref().map(|m| m.masked()),
                "unregistered_receiver": route.unregistered,
            }),
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

    async fn record_delivery_failure(
        &mut self,
        tx: &Transaction<'_>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PaymentError> {
        tx.execute_cached(
            "UPDATE payments SET code_hash = NULL, code_expires_at = NULL,
                 code_delivery_error = $2, code_delivery_failures = code_delivery_failures + 1,
                 updated_at = $3
             WHERE id = $1",
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
    async fn send_code(
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
        let Err(reason) = sent else {
            return Ok(Ok(()));
        };
        let now = self.now();
        let mut client = self.deps.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute_cached(
            "UPDATE payments SET code_sends = code_sends - 1 WHERE id = $1",
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

    fn notice(
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
            validity_s: u32::try_from(self.settings().code_validity_s).unwrap_or(u32::MAX),
            outcome,
            unregistered_receiver,
        }
    }

    /// One notice through the channel router, bounded in time; the error is said to the customer.
    async fn deliver(
        &self,
        destination: Destination,
        notice: Notice,
        recorded: Option<i64>,
    ) -> Result<(), String> {
        let wait = StdDuration::from_millis(self.settings().delivery_timeout_ms);
        let sent = tokio::time::timeout(
            wait,
            self.deps.channel.send(Deliver {
                destination,
                notice,
                recorded,
            }),
        )
        .await;
        match sent {
            Ok(Ok(Ok(_receipt))) => Ok(()),
            Ok(Ok(Err(e))) => Err(delivery_reason(&e)),
            Ok(Err(_)) | Err(_) => {
                Err("The message service did not answer. Try again or choose another way.".into())
            }
        }
    }

    // ---- the code step ------------------------------------------------------------------------

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
        if now >= self.row.expires_at {
            self.finish(&[PaymentStatus::AwaitingCode], Outcome::expired())
                .await?;
            return Ok(CodeReply::Finished(self.row.status));
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
        let max = i32::try_from(self.settings().code_attempts_max).unwrap_or(i32::MAX);
        if failures >= max {
            let outcome = Outcome::failed(FailureCode::CodeAttemptsExceeded, None);
            self.finish(&[PaymentStatus::AwaitingCode], outcome).await?;
            return Ok(CodeReply::Finished(self.row.status));
        }
        Ok(CodeReply::Wrong {
            attempts_left: u32::try_from(max - failures).unwrap_or(0),
        })
    }

    // ---- resend -------------------------------------------------------------------------------

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
        let Some(issued) = self.issue_code(&route, now, None).await? else {
            self.reload().await?;
            return Err(PaymentError::WrongState(self.row.status));
        };
        Ok(match self.send_code(&route, issued).await? {
            Ok(()) => ResendReply::Sent {
                destination: route.label,
            },
            Err(reason) => ResendReply::NotDelivered { reason },
        })
    }

    /// The channel the last code went to.
    fn current_choice(&self) -> ChannelChoice {
        match self.row.channel.as_deref() {
            Some("terminal") => ChannelChoice::Terminal {
                terminal: self.row.terminal_id.clone(),
            },
            _ => ChannelChoice::Sms {
                receiver: self
                    .row
                    .receiver_msisdn
                    .as_deref()
                    .and_then(|m| Msisdn::parse(m).ok()),
            },
        }
    }

    // ---- the debit ----------------------------------------------------------------------------

    /// Two phases: the bank router reserves the 0200's wire identity (link, STAN, field 7), the
    /// payment commits it with `processing`, and only then does the 0200 leave. A reversal, even
    /// after a restart, can then name the original exactly.
    async fn debit(&mut self, now: DateTime<Utc>) -> Result<CodeReply, PaymentError> {
        let request = self.debit_request(new_rrn()).await?;
        let wait = StdDuration::from_millis(self.settings().debit_timeout_ms);
        let prepared =
            match tokio::time::timeout(wait, self.deps.bank.send(PrepareDebit(request))).await {
                Ok(Ok(Ok(prepared))) => prepared,
                // Nothing was sent: the payment fails while still awaiting its code.
                unsent => {
                    tracing::warn!(payment = %self.row.id, ?unsent, "no bank link took the debit");
                    let outcome = Outcome::failed(FailureCode::BankUnavailable, None);
                    self.finish(&[PaymentStatus::AwaitingCode], outcome).await?;
                    return Ok(CodeReply::Finished(self.row.status));
                }
            };
        let original = prepared.original();
        let to_processing = ToProcessing {
            payment_id: self.row.id.clone(),
            rrn: prepared.rrn().to_owned(),
            original: original.clone(),
            at: now,
        };
        let moved = match self.deps.writer.to_processing(to_processing).await {
            Ok(moved) => moved,
            Err(e) => {
                // A write that timed out may still commit: the row, not memory, then says where
                // the payment is, and a `processing` one is reversed at its next deadline (its
                // reserved 0200 never left) instead of when its code would have lapsed.
                if let Err(reload) = self.reload().await {
                    tracing::warn!(payment = %self.row.id, error = %reload, "cannot reload");
                }
                return Err(e.into());
            }
        };
        if !moved {
            // The reservation lapses unsent.
            self.reload().await?;
            return Ok(CodeReply::Finished(self.row.status));
        }
        event::log_step("debit_sent");
        self.row.status = PaymentStatus::Processing;
        self.row.rrn = Some(prepared.rrn().to_owned());
        self.row.original_debit = Some(original);
        self.row.code_hash = None;
        let answer = tokio::time::timeout(wait, self.deps.bank.send(SendPrepared(prepared))).await;
        match answer {
            Ok(Ok(answer)) => match debit_end(answer) {
                DebitEnd::Outcome(outcome) => {
                    self.finish(&[PaymentStatus::Processing], outcome).await?
                }
                DebitEnd::Unknown(reason) => _ = self.reverse_then_fail(reason).await?,
            },
            Ok(Err(_mailbox)) => _ = self.reverse_then_fail("bank_router_gone").await?,
            Err(_elapsed) => _ = self.reverse_then_fail("no_answer").await?,
        }
        Ok(CodeReply::Finished(self.row.status))
    }

    async fn debit_request(&self, rrn: String) -> Result<DebitRequest, PaymentError> {
        if self.row.customer_id.is_none() {
            return Err(PaymentError::Storage(
                "awaiting_code without a customer".into(),
            ));
        }
        let parties = store::DebitParties::of(&self.row)?;
        Ok(DebitRequest {
            payment_id: self.row.id.clone(),
            rrn,
            amount: self.row.amount,
            currency: self.row.currency,
            payer_bank: parties.payer_bank,
            payer_account: parties.payer_account,
            payee_account: parties.merchant_account,
            terminal_id: parties.terminal_id,
            card_acceptor_id: parties.card_acceptor_id,
            merchant_name_location: parties.name_location,
        })
    }

    /// For a payment whose debit outcome is unknown: queue the reversal with the bank router,
    /// and only then write `failed`/`bank_unavailable`. If the router refuses, the payment stays
    /// `processing` and the actor tries again later.
    async fn reverse_then_fail(&mut self, reason: &str) -> Result<bool, PaymentError> {
        let Some(rrn) = self.row.rrn.clone() else {
            // No RRN was ever recorded, so no debit was ever sent.
            let outcome = Outcome::failed(FailureCode::BankUnavailable, None);
            self.finish(&[PaymentStatus::Processing], outcome).await?;
            return Ok(true);
        };
        // The same request the debit carried (the RRN finds it at the BIPS).
        let request = self.debit_request(rrn).await?;
        tracing::info!(payment = %self.row.id, reason, "reversing a debit of unknown outcome");
        let wait = StdDuration::from_millis(self.settings().debit_timeout_ms);
        let reverse = ReverseDebit {
            request,
            original: self.row.original_debit.clone(),
        };
        let queued = tokio::time::timeout(wait, self.deps.bank.send(reverse)).await;
        if !matches!(queued, Ok(Ok(Ok(())))) {
            tracing::warn!(payment = %self.row.id, ?queued, "reversal not queued yet; will retry");
            return Ok(false);
        }
        let outcome = Outcome::failed(FailureCode::BankUnavailable, None);
        self.finish(&[PaymentStatus::Processing], outcome).await?;
        Ok(true)
    }

    // ---- deadlines and restarts ---------------------------------------------------------------

    /// Applies whatever is due: the payment lifetime, a code that expired with no resend left,
    /// and a `processing` payment with no debit in progress (after a restart, or a reversal that
    /// could not be queued): reversal, then `failed`/`bank_unavailable`.
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
    fn resends_left(&self) -> bool {
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

    // ---- the outcome --------------------------------------------------------------------------

    /// Writes the final status with its webhook event, from one of `from`.
    async fn finish(
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
            self.outcome_sms_destination().as_deref(),
        );
        let reservation = self.deps.webhook_outbox.reserve(now);
        if let Some(reservation) = &reservation {
            write.event_due_at = reservation.leased_until;
        }
        let finish = self.deps.writer.to_final(write).await?;
        self.after_finish(finish, reservation, &outcome).await
    }

    /// `reservation`: the event's place in the worker's queue, when it was written leased.
    async fn after_finish(
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

    /// The masked number of an outcome notice that will go by SMS: its row is written with the
    /// final status.
    fn outcome_sms_destination(&self) -> Option<String> {
        match self.outcome_destination()? {
            Destination::Sms(number) => Some(number.masked()),
            Destination::Terminal(_) => None,
        }
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
        })
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

fn terminal_route(terminals: &[TerminalRow], wanted: Option<&str>) -> Result<Route, String> {
    let chosen = match wanted.map(str::trim).filter(|w| !w.is_empty()) {
        Some(w) => terminals
            .iter()
            .find(|t| t.id == w || t.label.eq_ignore_ascii_case(w))
            .ok_or("None of your registered terminals has that name.")?,
        None => terminals
            .iter()
            .find(|t| t.kind == "dedicated")
            .or_else(|| terminals.iter().find(|t| t.kind != "mobile"))
            .or_else(|| terminals.first())
            .ok_or("No terminal is registered for your account. Choose SMS instead.")?,
    };
    let label = if chosen.label.is_empty() {
        format!("your {} terminal", chosen.kind)
    } else {
        chosen.label.clone()
    };
    Ok(Route {
        channel: "terminal",
        terminal_id: Some(chosen.id.clone()),
        msisdn: None,
        destination: Destination::Terminal(chosen.id.clone()),
        label,
        unregistered: false,
    })
}

fn delivery_reason(e: &crate::messages::DeliveryError) -> String {
    use crate::messages::DeliveryError::*;
    match e {
        Offline => "Your terminal is offline, so the code could not reach it. \
                    Switch it on, or choose another way to receive the code."
            .into(),
        Rejected(_) => "The message service refused the message. \
                        Choose another way to receive the code."
            .into(),
        Timeout => "The code could not be confirmed as delivered in time. \
                    Ask for a new code or choose another way."
            .into(),
        Unavailable => "That channel is not available right now. \
                        Choose another way to receive the code."
            .into(),
    }
}

/// How field 39 (or its absence) ends the payment.
fn debit_end(answer: Result<DebitResponse, BankError>) -> DebitEnd {
    match answer {
        Ok(r) if r.response_code == "00" => DebitEnd::Outcome(Outcome::succeeded(r.approval_code)),
        // A duplicate: the original's outcome. An approval code says it was approved; without one
        // the outcome cannot be known.
        Ok(r) if r.response_code == "94" => match r.approval_code {
            Some(approval) => DebitEnd::Outcome(Outcome::succeeded(Some(approval))),
            None => DebitEnd::Unknown("duplicate_without_outcome"),
        },
        // The bank could not decide, and the debit was reversed to be safe: the bank was
        // unavailable, not the customer declined (a merchant may try again later).
        Ok(r) if ReversalReason::of_response(&r.response_code).is_some() => DebitEnd::Outcome(
            Outcome::failed(FailureCode::BankUnavailable, Some(r.response_code)),
        ),
        Ok(r) => DebitEnd::Outcome(Outcome::failed(
            FailureCode::BankDeclined,
            Some(r.response_code),
        )),
        // The router stored the reversal itself (`Timeout`), or nothing was sent (a reservation
        // that lapsed or a link that went down: `Unavailable`).
        Err(
            BankError::Timeout | BankError::NoRoute(_) | BankError::Unavailable | BankError::Busy,
        ) => DebitEnd::Outcome(Outcome::failed(FailureCode::BankUnavailable, None)),
        Err(BankError::Protocol(_)) => DebitEnd::Unknown("protocol_error"),
        // The router could not store the reversal: the payment stays `processing` until one is.
        Err(BankError::ReversalNotStored) => DebitEnd::Unknown("reversal_not_stored"),
    }
}

async fn verify_password(password: Secret<String>, customer: Option<&CustomerLogin>) -> bool {
    let phc = customer.map(|c| c.password_hash.clone());
    crate::password::bounded(move || match phc {
        Some(phc) => crate::password::verify_blocking(&password, &phc),
        None => {
            // The same work as a wrong password, so an unknown identity cannot be told apart.
            let _ = crate::password::verify_blocking(&password, crate::password::decoy_hash());
            false
        }
    })
    .await
    .unwrap_or(false)
}

fn secs_i64(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1_000_000)
}

fn seconds_until(now: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
    let ms = (until - now).num_milliseconds().max(0);
    u64::try_from(ms).unwrap_or(0).div_ceil(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};

    fn answered(code: &str, approval: Option<&str>) -> Result<DebitResponse, BankError> {
        Ok(DebitResponse {
            response_code: code.into(),
            approval_code: approval.map(Into::into),
            link: "bips-a".into(),
        })
    }

    #[test]
    fn a_duplicate_is_the_original_outcome_when_it_tells_it() {
        assert_eq!(
            debit_end(answered("94", Some("A00001"))),
            DebitEnd::Outcome(Outcome::succeeded(Some("A00001".into())))
        );
        assert_eq!(
            debit_end(answered("94", None)),
            DebitEnd::Unknown("duplicate_without_outcome")
        );
        // Field 38 on a decline changes nothing.
        assert_eq!(
            debit_end(answered("51", Some("A00001"))),
            DebitEnd::Outcome(Outcome::failed(
                FailureCode::BankDeclined,
                Some("51".into())
            ))
        );
    }

    #[test]
    fn a_bank_that_cannot_decide_is_unavailable_not_a_decline() {
        for code in ["91", "96"] {
            assert_eq!(
                debit_end(answered(code, None)),
                DebitEnd::Outcome(Outcome::failed(
                    FailureCode::BankUnavailable,
                    Some(code.into())
                ))
            );
        }
    }

    #[test]
    fn a_reversal_not_stored_keeps_the_payment_open() {
        assert_eq!(
            debit_end(Err(BankError::ReversalNotStored)),
            DebitEnd::Unknown("reversal_not_stored")
        );
        assert_eq!(
            debit_end(Err(BankError::Timeout)),
            DebitEnd::Outcome(Outcome::failed(FailureCode::BankUnavailable, None))
        );
    }

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
