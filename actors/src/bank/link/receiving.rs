//! What the bank sends: answers matched to what is in flight, and its network requests.

use super::{BACKOFF_RESET_AFTER_MS, BankLinkActor, LinkOutcome, LinkState, PendingKind};
use crate::bank::reversals::ReversalReason;
use crate::bank::wire::{self, NetworkCode};
use actix::prelude::*;
use payhub_iso8583::Message;
use std::time::Duration;
use tokio::time::Instant;

/// Why a 0210 matched by STAN and field 37 still cannot be taken as the debit's answer: its
/// field 4 is not the amount asked for, or an approval (00) lacks field 4 or field 38, which the
/// profile requires of it. (A decline without field 4 says no less than with it.)
fn debit_answer_flaw(answer: &Message, request: &crate::messages::DebitRequest) -> Option<String> {
    let asked = format!("{:012}", request.amount.minor());
    let approved = answer.get(39) == Some("00");
    match answer.get(4) {
        Some(amount) if amount != asked => {
            return Some(format!("0210 field 4 {amount} is not the amount asked for"));
        }
        None if approved => return Some("0210 approved without field 4".into()),
        _ => {}
    }
    if approved && answer.get(38).is_none() {
        return Some("0210 approved without field 38".into());
    }
    None
}

impl BankLinkActor {
    /// A message whose MAC the reader's codec checked (on a link that MACs its messages).
    pub(super) fn on_message(&mut self, message: Message, ctx: &mut Context<Self>) {
        self.last_received = Instant::now();
        let mti = message.mti().to_owned();
        if !wire::is_response(&mti) {
            self.on_request(&message, ctx);
            return;
        }
        let Some(stan) = wire::stan_of(&message) else {
            tracing::warn!(link = %self.name(), mti = %mti, "response without a STAN dropped");
            return;
        };
        let key = (wire::mti_class(&mti), stan);
        let Some(pending) = self.pending.get(&key) else {
            tracing::warn!(link = %self.name(), mti = %mti, stan, "response matches nothing; dropped");
            return;
        };
        // The answer's own MTI, not only its class: a 0230 answers no 0200.
        if mti != pending.kind.response_mti() {
            tracing::warn!(link = %self.name(), mti = %mti, stan, "answer of another type dropped");
            return;
        }
        // A late answer must carry the RRN of the debit or reversal now holding its STAN: a
        // reversal closed by another's 0430 would leave its debit standing.
        let rrn = match &pending.kind {
            PendingKind::Debit { request, .. } => Some(request.rrn.as_str()),
            PendingKind::Reversal { id, .. } => {
                self.reversals.get(id).map(|r| r.record.rrn.as_str())
            }
            PendingKind::Network { .. } => None,
        };
        if rrn.is_some_and(|rrn| message.get(37) != Some(rrn)) {
            tracing::warn!(link = %self.name(), mti = %mti, stan, "answer with another RRN dropped");
            return;
        }
        let Some(pending) = self.pending.remove(&key) else {
            return;
        };
        self.stans.release(stan);
        let elapsed = pending.sent_at.elapsed();
        match pending.kind {
            PendingKind::Debit {
                request, reply, f7, ..
            } => {
                self.debit_left();
                self.debit_timeouts_in_a_row = 0;
                self.metrics.round_trip.observe(elapsed.as_secs_f64());
                self.shared.round_trip.observe(elapsed);
                let response_code = message.get(39).unwrap_or("").to_owned();
                let flaw = debit_answer_flaw(&message, &request);
                // Whatever a waiting payment would reverse (an approval, 94, 91 or 96, a code
                // the profile does not list, no field 39, a 0210 that is not this debit's).
                let maybe_debited = flaw.is_some()
                    || response_code.len() != 2
                    || matches!(response_code.as_str(), "00" | "94")
                    || ReversalReason::of_response(&response_code).is_some();
                let answer = match flaw {
                    Some(flaw) => LinkOutcome::Malformed(flaw),
                    None => LinkOutcome::Answered {
                        // Whatever the code: with 94 an approval code is what says "approved".
                        approval_code: message.get(38).map(str::to_owned),
                        response_code,
                    },
                };
                if reply.send(answer).is_err() && maybe_debited {
                    // Perhaps debited, but the payment no longer waits for it: undo it.
                    self.reverse_orphan_with(
                        &request,
                        stan,
                        f7,
                        ReversalReason::GatewayIncomplete,
                        ctx,
                    );
                }
                if self.stopping {
                    self.try_sign_off(ctx);
                }
            }
            PendingKind::Network { code, .. } => self.on_network_answer(code, &message, ctx),
            PendingKind::Reversal { id, .. } => self.on_reversal_answer(id, &message),
        }
    }

    fn on_request(&mut self, message: &Message, ctx: &mut Context<Self>) {
        // A bank can send requests faster than the tick comes round: check before answering.
        if let Some(why) = self.not_reading(Instant::now()) {
            self.drop_connection(&why, ctx);
        } else if message.mti() == "0800" {
            self.on_network_request(message, ctx);
        } else {
            tracing::warn!(link = %self.name(), mti = %message.mti(), "unexpected request dropped");
        }
    }

    /// A bank's 0800: its sign-on and echo are accepted; a code the profile does not name is
    /// refused (12, invalid transaction) rather than accepted and ignored.
    fn on_network_request(&mut self, message: &Message, ctx: &mut Context<Self>) {
        let code = message.get(70).and_then(NetworkCode::parse);
        let response_code = if code.is_some() { "00" } else { "12" };
        match wire::network_answer(message, response_code) {
            Ok(answer) => {
                self.write(answer);
            }
            Err(e) => tracing::warn!(link = %self.name(), error = %e, "answering a 0800"),
        }
        if code == Some(NetworkCode::SignOff) && self.state() == LinkState::SignedOn {
            self.signed_off_by_bank(ctx);
        }
    }

    /// The bank signed off (maintenance, say): no financial message goes out on this link, so the
    /// router picks another, until a sign-on after the backoff's delay is accepted. A refused
    /// sign-on drops the connection, and the link reconnects with backoff as after any failure.
    fn signed_off_by_bank(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(link = %self.name(), "the bank signed off; signing on again later");
        self.set_state(LinkState::Connected);
        let generation = self.generation;
        ctx.run_later(self.backoff.next_delay(), move |act, _| {
            let same_connection = act.conn.as_ref().map(|c| c.generation) == Some(generation);
            if same_connection && act.state() == LinkState::Connected && !act.stopping {
                act.send_network(NetworkCode::SignOn);
            }
        });
    }

    /// Resets the reconnect backoff if this connection is still signed on after
    /// [`BACKOFF_RESET_AFTER_MS`].
    fn reset_backoff_once_stable(&mut self, ctx: &mut Context<Self>) {
        let generation = self.generation;
        let stable = Duration::from_millis(BACKOFF_RESET_AFTER_MS);
        ctx.run_later(stable, move |act, _| {
            let same_connection = act.conn.as_ref().map(|c| c.generation) == Some(generation);
            if same_connection && act.state() == LinkState::SignedOn {
                act.backoff.reset();
            }
        });
    }

    fn on_network_answer(&mut self, code: NetworkCode, message: &Message, ctx: &mut Context<Self>) {
        let accepted = message.get(39) == Some("00");
        match code {
            NetworkCode::SignOn if accepted => {
                tracing::info!(link = %self.name(), "bank link signed on");
                self.set_state(LinkState::SignedOn);
                self.debit_timeouts_in_a_row = 0;
                self.reset_backoff_once_stable(ctx);
                self.load_reversals(ctx);
                self.send_due_reversals(ctx);
            }
            NetworkCode::SignOn => {
                self.drop_connection("sign-on refused", ctx);
            }
            NetworkCode::Echo if !accepted => {
                // As unanswered: the bank says it cannot serve, so the link is not healthy.
                self.drop_connection("echo refused", ctx);
            }
            NetworkCode::Echo => {
                let mut last = self
                    .shared
                    .last_echo_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                *last = Some(self.deps.clock.now());
            }
            NetworkCode::SignOff => {
                tracing::info!(link = %self.name(), "bank link signed off");
                self.drop_connection("signed off", ctx);
            }
        }
    }
}
