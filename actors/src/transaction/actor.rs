//! The `TransactionActor`: one per payment in flight. It loads its row when it starts, handles the
//! messages that change state one at a time (`AtomicResponse`: the next message waits until the
//! previous one's database writes and effects are done), arms a timer for the next deadline, tells
//! the customer the outcome, and stops once the payment is final.

use super::core::PaymentCore;
use super::view::ViewWithRoutes;
use super::{ChannelChoice, CodeReply, Deps, LoginReply, PaymentError, ResendReply};
use crate::domain::PaymentStatus;
use crate::secret::Secret;
use actix::prelude::*;
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

/// Longest a timer sleeps before the actor looks at its deadlines again (so a clock moved by a
/// test, or a changed row, is noticed).
pub const TICK_MAX_MS: u64 = 60_000;
/// Messages waiting for one payment; a browser has no business sending more. (actix holds back
/// `try_send` past it, not `send` from a fresh address clone: see [`ViewPayment`].)
pub const MAILBOX_CAPACITY: usize = 16;
/// Tries at loading the payment's row before the actor gives up and stops: a pool that had no
/// connection free in time should not leave a payment in `processing` without its actor.
const LOAD_ATTEMPTS_MAX: u32 = 4;
/// Wait before the second try; doubles per try.
const LOAD_RETRY_MS: u64 = 250;

/// The password step. No `Debug`: the identity may be a mobile number, shown only masked.
#[derive(Message)]
#[rtype(result = "Result<LoginReply, PaymentError>")]
pub struct Login {
    pub identity: String,
    pub password: Secret<String>,
    pub choice: ChannelChoice,
    /// The browser's session token for this payment, set as its cookie if the password passes.
    /// The page derives it from the browser, so that a sign-in whose answer was lost (a
    /// double click, a dropped connection) can be answered again with the same session.
    pub session: Secret<String>,
}

/// A code typed on the code page, with the browser's session token.
#[derive(Debug, Message)]
#[rtype(result = "Result<CodeReply, PaymentError>")]
pub struct SubmitCode {
    pub session: Secret<String>,
    pub code: Secret<String>,
}

/// A new code, over the same channel or another.
#[derive(Debug, Message)]
#[rtype(result = "Result<ResendReply, PaymentError>")]
pub struct Resend {
    pub session: Secret<String>,
    pub choice: Option<ChannelChoice>,
}

/// Apply whatever deadline is due; answers the status after it.
#[derive(Debug, Message)]
#[rtype(result = "Result<PaymentStatus, PaymentError>")]
pub struct Tick;

/// What the customer pages show, from memory: the view and the code page's routes (when the
/// actor read the customer's terminals). `None` once the payment is final.
///
/// A sender that stops waiting leaves its message queued, behind a step that may run for minutes
/// (a slow bank), and the mailbox's capacity does not hold back `send` from a new address clone:
/// `admitted` is a place of the sender's own bound, kept until the actor takes the message.
#[derive(Debug, Default, Message)]
#[rtype(result = "Option<ViewWithRoutes>")]
pub struct ViewPayment {
    pub admitted: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Told to the registry when an actor stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Gone {
    pub payment_id: String,
    pub generation: u64,
    /// Its payment was not known final when it stopped.
    pub unfinished: bool,
}

pub struct TransactionActor {
    payment_id: String,
    generation: u64,
    deps: Deps,
    /// `None` before the row is loaded and while a handler runs.
    core: Option<PaymentCore>,
    registry: Option<Recipient<Gone>>,
    timer: Option<SpawnHandle>,
    /// Every step of this payment runs in it, so each log line carries the payment id.
    span: tracing::Span,
}

/// The payment's row, tried again after an error other than `NotFound`, at most
/// `LOAD_ATTEMPTS_MAX` times.
async fn load_with_retries(deps: Deps, id: String) -> Result<PaymentCore, PaymentError> {
    let mut attempt = 1;
    loop {
        match PaymentCore::load(deps.clone(), &id).await {
            Err(e) if e != PaymentError::NotFound && attempt < LOAD_ATTEMPTS_MAX => {
                tracing::warn!(payment = %id, error = %e, attempt, "cannot load; trying again");
                tokio::time::sleep(Duration::from_millis(LOAD_RETRY_MS << (attempt - 1))).await;
                attempt += 1;
            }
            loaded => return loaded,
        }
    }
}

impl TransactionActor {
    /// The actor of a payment whose row is already loaded (resumed after a restart).
    pub fn with_core(mut self, core: PaymentCore) -> Self {
        self.core = Some(core);
        self
    }

    /// The row is here: a final payment stops; one found `processing` is resolved with the bank
    /// at once (no debit is in progress in this process); any other waits for its deadline.
    fn begin(&mut self, loaded: Result<PaymentCore, PaymentError>, ctx: &mut Context<Self>) {
        match loaded {
            Ok(core) if core.status().is_final() => {
                self.core = Some(core);
                ctx.stop();
            }
            Ok(core) => {
                let processing = core.status() == PaymentStatus::Processing;
                self.core = Some(core);
                if processing {
                    ctx.address().do_send(Tick);
                } else {
                    self.arm_timer(ctx);
                }
            }
            Err(e) => {
                if e != PaymentError::NotFound {
                    tracing::warn!(payment = %self.payment_id, error = %e, "cannot load");
                }
                ctx.stop();
            }
        }
    }

    pub fn new(
        payment_id: String,
        generation: u64,
        deps: Deps,
        registry: Option<Recipient<Gone>>,
    ) -> Self {
        let span = tracing::info_span!("payment", payment_id = %payment_id);
        Self {
            span,
            payment_id,
            generation,
            deps,
            core: None,
            registry,
            timer: None,
        }
    }

    /// Runs `step` on the payment, one at a time, then arms timers and tells the outcome.
    fn run<R, Fut>(
        &mut self,
        step: impl FnOnce(PaymentCore) -> Fut,
    ) -> AtomicResponse<Self, Result<R, PaymentError>>
    where
        R: 'static,
        Fut: Future<Output = (PaymentCore, Result<R, PaymentError>)> + 'static,
    {
        let Some(core) = self.core.take() else {
            return AtomicResponse::new(Box::pin(fut::ready(Err(PaymentError::NotFound))));
        };
        let was_final = core.status().is_final();
        let step = step(core).instrument(self.span.clone());
        AtomicResponse::new(Box::pin(step.into_actor(self).map(
            move |(core, result), act, ctx| {
                act.core = Some(core);
                act.after_step(ctx, was_final);
                result
            },
        )))
    }

    fn after_step(&mut self, ctx: &mut Context<Self>, was_final: bool) {
        let Some(core) = &self.core else { return };
        if core.status().is_final() {
            if !was_final && let Some(deliver) = core.outcome_delivery() {
                let offers = OUTCOME_NOTICE_OFFERS_MAX;
                let notice = send_outcome_notice(self.deps.clone(), deliver, offers);
                actix::spawn(notice.instrument(self.span.clone()));
            }
            ctx.stop();
            return;
        }
        self.arm_timer(ctx);
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(old) = self.timer.take() {
            ctx.cancel_future(old);
        }
        let Some(core) = &self.core else { return };
        let Some(deadline) = core.next_deadline() else {
            return;
        };
        let ms = (deadline - self.deps.clock.now()).num_milliseconds().max(0);
        let ms = u64::try_from(ms).unwrap_or(0).min(TICK_MAX_MS);
        self.timer = Some(ctx.run_later(Duration::from_millis(ms), |_, ctx| {
            ctx.address().do_send(Tick);
        }));
    }
}

impl Actor for TransactionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        if let Some(core) = self.core.take() {
            // Resumed after a restart: the registry loaded the row together with the others.
            self.begin(Ok(core), ctx);
            return;
        }
        let deps = self.deps.clone();
        let id = self.payment_id.clone();
        // `wait`: no message is handled before the row is here.
        ctx.wait(
            load_with_retries(deps, id)
                .instrument(self.span.clone())
                .into_actor(self)
                .map(|loaded, act, ctx| act.begin(loaded, ctx)),
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(registry) = &self.registry {
            registry.do_send(Gone {
                payment_id: self.payment_id.clone(),
                generation: self.generation,
                unfinished: self.core.as_ref().is_none_or(|c| !c.status().is_final()),
            });
        }
    }
}

impl Handler<Login> for TransactionActor {
    type Result = AtomicResponse<Self, Result<LoginReply, PaymentError>>;

    fn handle(&mut self, msg: Login, _: &mut Context<Self>) -> Self::Result {
        self.run(move |mut core| async move {
            let reply = core
                .login(&msg.identity, msg.password, msg.choice, msg.session)
                .await;
            (core, reply)
        })
    }
}

impl Handler<SubmitCode> for TransactionActor {
    type Result = AtomicResponse<Self, Result<CodeReply, PaymentError>>;

    fn handle(&mut self, msg: SubmitCode, _: &mut Context<Self>) -> Self::Result {
        self.run(move |mut core| async move {
            let reply = core
                .submit_code(msg.session.expose(), msg.code.expose())
                .await;
            (core, reply)
        })
    }
}

impl Handler<Resend> for TransactionActor {
    type Result = AtomicResponse<Self, Result<ResendReply, PaymentError>>;

    fn handle(&mut self, msg: Resend, _: &mut Context<Self>) -> Self::Result {
        self.run(move |mut core| async move {
            let reply = core.resend(msg.session.expose(), msg.choice).await;
            (core, reply)
        })
    }
}

impl Handler<Tick> for TransactionActor {
    type Result = AtomicResponse<Self, Result<PaymentStatus, PaymentError>>;

    fn handle(&mut self, _: Tick, _: &mut Context<Self>) -> Self::Result {
        self.run(move |mut core| async move {
            let reply = core.check_deadlines().await.map(|()| core.status());
            (core, reply)
        })
    }
}

impl Handler<ViewPayment> for TransactionActor {
    type Result = Option<ViewWithRoutes>;

    /// A step's `AtomicResponse` holds the mailbox until it is done, so the view is never taken
    /// halfway through one.
    fn handle(&mut self, _: ViewPayment, _: &mut Context<Self>) -> Self::Result {
        self.core.as_ref()?.view()
    }
}

/// Offers of an outcome notice, the first included, that a channel could not take (nothing was
/// sent: the SMSC throttled past its tries, the session was being bound again).
pub const OUTCOME_NOTICE_OFFERS_MAX: u32 = 4;
/// Outcome notices waiting to be offered again, at most; past this, one is given up at once.
pub const OUTCOME_NOTICES_RETRYING_MAX: usize = 1_024;
static OUTCOME_NOTICES_RETRYING: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(OUTCOME_NOTICES_RETRYING_MAX);

/// Detached: the actor stops at once. The channel records the message's fate; a notice whose row
/// the payment wrote, and that failed before the channel took it, is marked failed here (a row
/// the channel already moved on is left alone). A notice the channel could not take at all is
/// offered again, up to `offers_max` times in all, `outcome_notice_retry_ms` apart and doubling.
pub(super) async fn send_outcome_notice(
    deps: Deps,
    deliver: crate::messages::Deliver,
    offers_max: u32,
) {
    use crate::messages::{Deliver, DeliveryError};
    let Deliver {
        destination,
        notice,
        recorded,
        answer_within,
    } = deliver;
    let wait = Duration::from_millis(deps.settings.delivery_timeout_ms);
    let mut retry_slot = None;
    let mut offer = 1;
    let error = loop {
        let this = Deliver {
            destination: destination.clone(),
            notice: notice.clone(),
            recorded,
            answer_within,
        };
        match tokio::time::timeout(wait, deps.channel.send(this)).await {
            // Taken (`Held`: kept by the channel until the terminal is back).
            Ok(Ok(Ok(_) | Err(DeliveryError::Held))) => return,
            Ok(Ok(Err(DeliveryError::Unavailable)))
                if offer < offers_max && holds_retry_slot(&mut retry_slot) =>
            {
                let pause_ms = deps.settings.outcome_notice_retry_ms << (offer - 1);
                tracing::warn!(
                    offer,
                    pause_ms,
                    "outcome notice not taken; offering it again"
                );
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                offer += 1;
            }
            Ok(Ok(Err(e))) => break e.to_string(),
            Ok(Err(_mailbox)) => break "the channel router is not running".to_string(),
            Err(_) => break format!("no answer from the channel in {} ms", wait.as_millis()),
        }
    };
    tracing::warn!(error, "outcome notice not delivered");
    if let Some(row) = recorded
        && let Err(e) =
            crate::store::messages::mark_failed(&deps.pool, deps.clock.now(), row, &error).await
    {
        tracing::error!(error = %e, row, "failed outcome notice not recorded");
    }
}

/// Whether this notice holds one of the `OUTCOME_NOTICES_RETRYING_MAX` places to wait in, taking
/// one if it can.
fn holds_retry_slot(slot: &mut Option<tokio::sync::SemaphorePermit<'static>>) -> bool {
    if slot.is_none() {
        *slot = OUTCOME_NOTICES_RETRYING.try_acquire().ok();
    }
    slot.is_some()
}
