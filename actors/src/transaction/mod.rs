//! One payment in flight: the state machine `awaiting_customer → awaiting_code → processing →
//! succeeded | failed | expired`, the password and authorization-code steps, the debit and the
//! outcome (with its webhook event, written in the same transaction as the final status).
//!
//! - [`core`]: the state machine as plain async Rust over PostgreSQL, one payment at a time.
//! - [`actor`]: the `TransactionActor`, which serialises messages (`AtomicResponse`) and arms the
//!   payment's timers.
//! - [`registry`]: the `PaymentRegistry`, one actor per payment in flight, bounded, rebuilding the
//!   payments that were in flight when the process stopped.

pub mod actor;
pub mod code;
pub mod core;
pub mod event;
pub mod outbox;
pub mod registry;
pub mod store;
pub mod view;
pub mod writer;

use crate::bank::BankRouter;
use crate::clock::SharedClock;
use crate::domain::{Msisdn, PaymentStatus};
use crate::keyed_hash::HashKey;
use crate::messages::Deliver;
use actix::{Addr, Recipient};
use deadpool_postgres::Pool;
use std::sync::Arc;

pub use actor::TransactionActor;
pub use registry::{PaymentRegistry, start_registry};

/// The payment rules (operations.md `[payments]`), as the actors need them.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    pub code_digits: u32,
    pub code_validity_s: u64,
    pub code_attempts_max: u32,
    pub code_resends_max: u32,
    pub code_resend_interval_s: u64,
    pub password_attempts_max: u32,
    pub identity_failures_max: u32,
    pub identity_lockout_s: u64,
    pub allow_unregistered_receiver: bool,
    /// Payments with a live actor at once; more are refused (`Busy`).
    pub in_flight_max: usize,
    /// The gateway's public base URL (`pay_url` in the payment object of webhooks).
    pub public_url: url::Url,
    /// Longest a sign-in waits for a password hashing slot (one per core) before it is answered
    /// busy: behind a flood of sign-ins, the page would otherwise wait for minutes, and the hash
    /// be done for a page that stopped waiting.
    pub password_wait_max_ms: u64,
    /// Longest wait for a channel to accept a notice.
    pub delivery_timeout_ms: u64,
    /// Longest wait for the bank router's answer; the router times out on its own before this.
    pub debit_timeout_ms: u64,
    /// Pause between attempts to queue a reversal the bank router refused.
    pub reversal_retry_ms: u64,
    /// Pause before an outcome notice the channel could not take is offered again; doubles at
    /// each offer (`actor::OUTCOME_NOTICE_OFFERS_MAX` in all).
    pub outcome_notice_retry_ms: u64,
    /// How often the registry looks for `processing` payments without an actor (one whose
    /// actor could not load its row) and starts one; it looks only after an actor stopped before
    /// its payment was final.
    pub processing_sweep_interval_ms: u64,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            code_digits: 6,
            code_validity_s: 300,
            code_attempts_max: 3,
            code_resends_max: 2,
            code_resend_interval_s: 30,
            password_attempts_max: 3,
            identity_failures_max: 5,
            identity_lockout_s: 15 * 60,
            allow_unregistered_receiver: false,
            in_flight_max: 100_000,
            public_url: url::Url::parse("https://localhost:8443").expect("a valid constant URL"),
            password_wait_max_ms: 10_000,
            delivery_timeout_ms: 10_000,
            debit_timeout_ms: 60_000,
            reversal_retry_ms: 5_000,
            outcome_notice_retry_ms: 30_000,
            processing_sweep_interval_ms: 60_000,
        }
    }
}

/// Failed code deliveries after which a payment stops trying other channels.
pub const CODE_DELIVERY_FAILURES_MAX: i32 = 5;

/// Pause before due deadline work (expiry, a reversal) is tried again after the
/// database refused it, so a payment past its deadline does not spin on a failing write.
pub const DEADLINE_RETRY_MS: i64 = 1_000;

/// What every payment actor shares.
#[derive(Clone)]
pub struct Deps {
    pub pool: Pool,
    /// The group-committed writes of the debit path (`processing`, final statuses).
    pub writer: writer::PaymentWriter,
    pub clock: SharedClock,
    pub settings: Arc<PaymentSettings>,
    pub hash_key: HashKey,
    /// The channel router (SMS and terminals).
    pub channel: Recipient<Deliver>,
    /// The bank router: two-phase debits, and reversals through its durable queue.
    pub bank: Addr<BankRouter>,
    /// How committed webhook events reach the worker at once.
    pub webhook_outbox: outbox::WebhookOutbox,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Which non-Internet channel the customer chose for the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelChoice {
    /// SMS to a registered mobile number: the mobile terminal `mobile` (by id or label) when given, else
    /// the number signed in with or the first registered; or (when the policy allows) to
    /// `receiver`.
    Sms {
        receiver: Option<Msisdn>,
        mobile: Option<String>,
    },
    /// A registered terminal, by id or label; the customer's first terminal when `None`.
    Terminal { terminal: Option<String> },
}

impl ChannelChoice {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sms { .. } => "sms",
            Self::Terminal { .. } => "terminal",
        }
    }
}

/// Why a message to a payment was not acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("no such payment")]
    NotFound,
    #[error("the payment is {}", .0.as_str())]
    WrongState(PaymentStatus),
    #[error("this browser session did not sign in for the payment")]
    WrongSession,
    #[error("too many payments in flight")]
    Busy,
    #[error("storage: {0}")]
    Storage(String),
}

impl From<tokio_postgres::Error> for PaymentError {
    fn from(e: tokio_postgres::Error) -> Self {
        PaymentError::Storage(e.to_string())
    }
}

impl From<crate::store::StoreError> for PaymentError {
    fn from(e: crate::store::StoreError) -> Self {
        PaymentError::Storage(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for PaymentError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PaymentError::Storage(e.to_string())
    }
}

/// The answer to the password step.
#[derive(Debug)]
pub enum LoginReply {
    /// Password right, code delivered; the browser gets the session it signed in with as its
    /// cookie.
    CodeSent { destination: String },
    /// Password right, but the code could not be delivered; other channels may be tried.
    CodeNotDelivered { reason: String },
    /// The sign-in was posted again by the browser that passed it, with the password: it gets
    /// its session again (the code already went).
    SignedInAgain,
    /// Unknown identity or wrong password (one answer for both).
    BadCredentials { attempts_left: u32 },
    /// The identity is locked after too many failures.
    Locked { retry_after_s: u64 },
    /// The payment reached a final status (e.g. `authentication_failed`).
    Finished(PaymentStatus),
}

/// The answer to a submitted code.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeReply {
    Wrong {
        attempts_left: u32,
    },
    /// No live code (its delivery failed): another channel must be chosen first.
    NoLiveCode,
    Finished(PaymentStatus),
}

/// The answer to a request for a new code.
#[derive(Debug, PartialEq, Eq)]
pub enum ResendReply {
    Sent { destination: String },
    NotDelivered { reason: String },
    TooSoon { wait_s: u64 },
    Exhausted,
}
