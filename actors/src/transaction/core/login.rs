//! The password step: identity and password, the lockout, and on success the code's route.

use super::{PaymentCore, seconds_until, secs_i64};
use crate::domain::{FailureCode, PaymentStatus};
use crate::secret::Secret;
use crate::store::prepared::Prepared;
use crate::transaction::code::session_hash;
use crate::transaction::event::{self, Outcome};
use crate::transaction::store::{self, Attempt, CustomerLogin, TerminalRow};
use crate::transaction::{ChannelChoice, LoginReply, PaymentError};
use chrono::{DateTime, Duration, Utc};

/// What a passed password step adds to its code's write.
pub(super) struct PassedLogin<'a> {
    pub(super) customer: &'a CustomerLogin,
    pub(super) session_hash: Vec<u8>,
    /// The sign-in attempt (counted as a failure until now), removed by the same write.
    pub(super) attempt: i64,
}

impl PaymentCore {
    /// Identity and password; on success the code goes out over the chosen channel.
    pub async fn login(
        &mut self,
        identity: &str,
        password: Secret<String>,
        choice: ChannelChoice,
        session: Secret<String>,
    ) -> Result<LoginReply, PaymentError> {
        if self.row.status == PaymentStatus::AwaitingCode {
            return self.signed_in_again(identity, password, session).await;
        }
        if let Some(done) = self.require(PaymentStatus::AwaitingCustomer)? {
            return Ok(LoginReply::Finished(done));
        }
        let now = self.now();
        if now >= self.row.expires_at {
            self.finish(&[PaymentStatus::AwaitingCustomer], Outcome::expired())
                .await?;
            return Ok(LoginReply::Finished(self.row.status));
        }
        let (start, attempt) = match self.count_attempt(identity, now).await? {
            Ok(counted) => counted,
            Err(locked) => return Ok(locked),
        };
        if !self
            .verify(password, start.customer.as_ref(), attempt)
            .await?
        {
            return self.password_failed(&start.key, now).await;
        }
        let Some(customer) = start.customer else {
            // verify_password never accepts an unknown identity.
            return Err(PaymentError::Storage("unknown identity accepted".into()));
        };
        let passed = self
            .password_passed(attempt, customer, start.terminals, choice, session, now)
            .await;
        // The attempt counts as a failure until the statement that moves the payment on removes
        // it. When none did (the payment ended meanwhile, or the database failed), a right
        // password must not stay counted against the identity.
        if matches!(passed, Ok(LoginReply::Finished(_)) | Err(_)) {
            self.forget_attempt(attempt).await;
        }
        passed
    }

    /// A sign-in posted again after it passed (a double click, an answer lost on the way): the
    /// browser that signed in, with the same customer's password, gets its session back. The
    /// password is checked again, and counted against the identity like any sign-in, because the
    /// session token comes from the browser's CSRF cookie, which someone able to plant cookies in
    /// the customer's browser could know. Any other browser is refused before the hash.
    async fn signed_in_again(
        &mut self,
        identity: &str,
        password: Secret<String>,
        session: Secret<String>,
    ) -> Result<LoginReply, PaymentError> {
        if !self.session_ok(session.expose()) {
            return Err(PaymentError::WrongState(PaymentStatus::AwaitingCode));
        }
        let now = self.now();
        let (start, attempt) = match self.count_attempt(identity, now).await? {
            Ok(counted) => counted,
            Err(locked) => return Ok(locked),
        };
        let payer = self.row.customer_id.as_deref();
        let same_customer = start
            .customer
            .as_ref()
            .is_some_and(|c| Some(c.id.as_str()) == payer);
        if !self
            .verify(password, start.customer.as_ref(), attempt)
            .await?
            || !same_customer
        {
            // Counted against the identity and the payment, as at the first sign-in.
            return self.password_failed(&start.key, now).await;
        }
        self.forget_attempt(attempt).await;
        Ok(LoginReply::SignedInAgain)
    }

    /// Whether the password is the customer's. A sign-in the hashing slots could not take in
    /// time is answered `Busy`, and its attempt, counted as a failure so far, is not one.
    async fn verify(
        &self,
        password: Secret<String>,
        customer: Option<&CustomerLogin>,
        attempt: i64,
    ) -> Result<bool, PaymentError> {
        let wait_ms = self.settings().password_wait_max_ms;
        let verified = verify_password(password, customer, wait_ms).await;
        if verified.is_err() {
            tracing::warn!(payment = %self.row.id, wait_ms, "no password hashing slot in time");
            self.forget_attempt(attempt).await;
        }
        verified
    }

    /// Counts a sign-in attempt of `identity`, as a failure until its password passes: what the
    /// identity names and the attempt's id, or the answer when the identity is locked.
    async fn count_attempt(
        &self,
        identity: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<(store::LoginStart, i64), LoginReply>, PaymentError> {
        let (failures_max, window) = self.lockout();
        let client = self.deps.pool.get().await?;
        let start = store::begin_login(&client, identity, failures_max, window, now).await?;
        Ok(match start.attempt {
            Attempt::Counted(attempt) => Ok((start, attempt)),
            Attempt::Locked(until) => Err(LoginReply::Locked {
                retry_after_s: seconds_until(now, until),
            }),
        })
    }

    /// Removes a sign-in attempt that was counted as a failure before its password passed. At
    /// worst (the database unreachable) it stays counted, and ages out with the lockout window.
    async fn forget_attempt(&self, attempt: i64) {
        let forgotten = async {
            let client = self.deps.pool.get().await?;
            client
                .execute_cached("DELETE FROM login_failures WHERE id = $1", &[&attempt])
                .await?;
            Ok::<_, PaymentError>(())
        };
        if let Err(e) = forgotten.await {
            tracing::warn!(payment = %self.row.id, error = %e, "a passed sign-in stays counted");
        }
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
        // Before the code (a first sign-in) or after it (one posted again by the signed-in
        // browser): the payment fails from where it is.
        let from = self.row.status;
        let mut client = self.deps.pool.get().await?;
        // The attempt's `login_failures` row, written before the hash, stays: it is the failure.
        let tx = client.transaction().await?;
        let failures: Option<i32> = tx
            .query_opt_cached(
                "UPDATE payments SET password_failures = password_failures + 1, updated_at = $2
                 WHERE id = $1 AND status = $3 RETURNING password_failures",
                &[&self.row.id, &now, &from.as_str()],
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
        if failures >= self.password_attempts_max() {
            let outcome = Outcome::failed(FailureCode::AuthenticationFailed, None);
            let finish = event::to_final(
                &self.row,
                &[from],
                &outcome,
                now,
                &self.settings().public_url,
                self.outcome_notice_to(),
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
        Ok(self.bad_credentials())
    }

    fn password_attempts_max(&self) -> i32 {
        i32::try_from(self.settings().password_attempts_max).unwrap_or(i32::MAX)
    }

    /// The one answer for an unknown identity or a wrong password, with the payment's tries left.
    fn bad_credentials(&self) -> LoginReply {
        let left = self
            .password_attempts_max()
            .saturating_sub(self.row.password_failures);
        LoginReply::BadCredentials {
            attempts_left: u32::try_from(left).unwrap_or(0),
        }
    }

    async fn password_passed(
        &mut self,
        attempt: i64,
        customer: CustomerLogin,
        terminals: Vec<TerminalRow>,
        choice: ChannelChoice,
        session: Secret<String>,
        now: DateTime<Utc>,
    ) -> Result<LoginReply, PaymentError> {
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
                    .passed_without_route(attempt, &customer, session_hash, reason, now)
                    .await;
            }
        };
        let login = PassedLogin {
            customer: &customer,
            session_hash,
            attempt,
        };
        let Some(issued) = self.issue_code(&route, Some(login)).await? else {
            self.reload().await?;
            self.check_deadlines().await?;
            return Ok(LoginReply::Finished(self.row.status));
        };
        match self.send_code(&route, issued).await? {
            Ok(()) => Ok(LoginReply::CodeSent {
                destination: route.label,
            }),
            Err(reason) => Ok(LoginReply::CodeNotDelivered { reason }),
        }
    }

    /// The password passed but no code can go where the customer asked: the browser session is
    /// kept, with the reason, so that another channel can be chosen on the code page.
    async fn passed_without_route(
        &mut self,
        attempt: i64,
        customer: &CustomerLogin,
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
        Ok(LoginReply::CodeNotDelivered { reason })
    }
}

/// Whether the password is the customer's; `Busy` when no hashing slot came free within
/// `wait_ms`.
async fn verify_password(
    password: Secret<String>,
    customer: Option<&CustomerLogin>,
    wait_ms: u64,
) -> Result<bool, PaymentError> {
    let phc = customer.map(|c| c.password_hash.clone());
    let wait = std::time::Duration::from_millis(wait_ms);
    let verified = crate::password::bounded_within(wait, move || match phc {
        Some(phc) => crate::password::verify_blocking(&password, &phc),
        None => {
            // The same work as a wrong password, so an unknown identity cannot be told apart.
            let _ = crate::password::verify_blocking(&password, crate::password::decoy_hash());
            false
        }
    })
    .await
    .map_err(|_| PaymentError::Busy)?;
    Ok(verified.unwrap_or(false))
}
