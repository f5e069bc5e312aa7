//! One `TerminalSessionActor` per authenticated terminal connection: it delivers code and outcome
//! frames, matches acknowledgements, answers and sends keep-alives, and fails every waiting
//! delivery the moment the connection ends. Reading comes in as a stream of frames; writing goes
//! out through a bounded queue to a writer task, so a stalled peer never blocks the actor.

use super::frame::{CODE_MAX_BYTES, MERCHANT_MAX_BYTES, PAYMENT_ID_MAX_BYTES, TEXT_MAX_BYTES};
use super::frame::{CodeFrame, ErrorCode, Frame, FrameError, OutcomeFrame, truncate};
use super::registry::SwitchRegistry;
use actix::prelude::*;
use payhub_actors::messages::{DeliveryError, DeliveryReceipt, Notice, NoticeKind};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Limits and timers of one session.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// How long a delivery waits for the terminal's ACK.
    pub ack_timeout: Duration,
    /// The switch sends PING this often; a terminal silent for two intervals is dropped.
    pub keepalive_interval: Duration,
    /// Deliveries waiting for an ACK at once; more are refused as `Unavailable`.
    pub pending_max: usize,
}

/// Frames queued for the writer task.
pub const OUTBOX_MAX: usize = 32;
/// Silence allowed from a terminal, in keep-alive intervals, before the switch drops it.
pub const SILENT_INTERVALS_MAX: u32 = 2;

type Reply = oneshot::Sender<Result<DeliveryReceipt, DeliveryError>>;

pub struct TerminalSessionActor {
    terminal_id: String,
    session_no: u64,
    limits: SessionLimits,
    registry: SwitchRegistry,
    outbox: mpsc::Sender<Frame>,
    pending: HashMap<u32, Reply>,
    next_msg_id: u32,
    next_ping: u32,
    last_heard: Instant,
}

impl TerminalSessionActor {
    pub fn new(
        terminal_id: String,
        session_no: u64,
        limits: SessionLimits,
        registry: SwitchRegistry,
        outbox: mpsc::Sender<Frame>,
    ) -> Self {
        Self {
            terminal_id,
            session_no,
            limits,
            registry,
            outbox,
            pending: HashMap::new(),
            next_msg_id: 0,
            next_ping: 0,
            last_heard: Instant::now(),
        }
    }

    /// Queues `frame` for the writer; `false` when it cannot. A closed outbox means the writer has
    /// ended (its write failed or timed out): the session ends with it, so that deliveries find
    /// the terminal offline at once.
    fn send_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) -> bool {
        match self.outbox.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ctx.stop();
                false
            }
        }
    }

    /// Sends ERROR and ends the session.
    fn close(&mut self, code: ErrorCode, reason: &str, ctx: &mut Context<Self>) {
        let _ = self.send_frame(Frame::error(code, reason), ctx);
        ctx.stop();
    }

    fn keepalive(&mut self, ctx: &mut Context<Self>) {
        if self.closed_for_silence(ctx) {
            return;
        }
        // A terminal last heard just after a tick reaches the limit just after a later one: it
        // is checked then, not a whole interval later.
        let left = self.silent_max().saturating_sub(self.last_heard.elapsed());
        if left < self.limits.keepalive_interval {
            ctx.run_later(left, |act, ctx| {
                act.closed_for_silence(ctx);
            });
        }
        self.next_ping = self.next_ping.wrapping_add(1);
        let ping = Frame::Ping {
            nonce: self.next_ping,
        };
        if !self.send_frame(ping, ctx) {
            ctx.stop();
        }
    }

    fn silent_max(&self) -> Duration {
        self.limits.keepalive_interval * SILENT_INTERVALS_MAX
    }

    /// Closes the session when the terminal was silent for `SILENT_INTERVALS_MAX` intervals.
    fn closed_for_silence(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.last_heard.elapsed() < self.silent_max() {
            return false;
        }
        tracing::warn!(terminal_id = %self.terminal_id, "terminal missed its keep-alives; closing");
        self.close(ErrorCode::Timeout, "no keep-alive answer", ctx);
        true
    }

    fn settle(&mut self, msg_id: u32, result: Result<DeliveryReceipt, DeliveryError>) {
        match self.pending.remove(&msg_id) {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                tracing::debug!(terminal_id = %self.terminal_id, msg_id, "answer for no waiting delivery")
            }
        }
    }

    fn message_ref(&self, msg_id: u32) -> String {
        format!("{}/{}/{}", self.terminal_id, self.session_no, msg_id)
    }
}

impl Actor for TerminalSessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.limits.pending_max.max(1));
        ctx.run_interval(self.limits.keepalive_interval, |act, ctx| {
            act.keepalive(ctx)
        });
        tracing::info!(terminal_id = %self.terminal_id, session = self.session_no, "terminal session started");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.registry.unregister(&self.terminal_id, self.session_no);
        let waiting = self.pending.len();
        for (_, reply) in self.pending.drain() {
            // The terminal went away before it acknowledged: it is offline now.
            let _ = reply.send(Err(DeliveryError::Offline));
        }
        tracing::info!(terminal_id = %self.terminal_id, session = self.session_no, waiting, "terminal session ended");
    }
}

/// Added to the ACK timeout so the session, not its sender, reports a missing ACK.
pub const SESSION_MARGIN_MS: u64 = 1_000;

/// How long a terminal may stay silent before its session is dropped.
pub fn silent_max(keepalive_interval_ms: u64) -> Duration {
    Duration::from_millis(keepalive_interval_ms) * SILENT_INTERVALS_MAX
}

/// How long a sender gives a session to answer a delivery: the ACK wait and the margin.
pub fn answer_wait(ack_timeout_ms: u64) -> Duration {
    Duration::from_millis(ack_timeout_ms + SESSION_MARGIN_MS)
}

/// `notice` through `session`, answered within `wait`: the terminal's ACK or NACK, `Offline` when
/// the session is gone, `NotAcknowledged` past the wait (an ACK that comes later is ignored).
pub async fn deliver(
    session: &Addr<TerminalSessionActor>,
    notice: Notice,
    wait: Duration,
) -> Result<DeliveryReceipt, DeliveryError> {
    match tokio::time::timeout(wait, session.send(SessionDeliver(notice))).await {
        Ok(Ok(result)) => result,
        Ok(Err(_session_gone)) => Err(DeliveryError::Offline),
        Err(_) => Err(DeliveryError::NotAcknowledged),
    }
}

/// Delivers one notice to this session's terminal and waits for its ACK.
#[derive(Debug, Message)]
#[rtype(result = "Result<DeliveryReceipt, DeliveryError>")]
pub struct SessionDeliver(pub Notice);

impl Handler<SessionDeliver> for TerminalSessionActor {
    type Result = ResponseFuture<Result<DeliveryReceipt, DeliveryError>>;

    fn handle(
        &mut self,
        SessionDeliver(notice): SessionDeliver,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        if self.pending.len() >= self.limits.pending_max {
            return Box::pin(async { Err(DeliveryError::Unavailable) });
        }
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        let msg_id = self.next_msg_id;
        let frame = match notice_frame(msg_id, &notice) {
            Ok(frame) => frame,
            Err(reason) => return Box::pin(async move { Err(DeliveryError::Rejected(reason)) }),
        };
        if !self.send_frame(frame, ctx) {
            // A closed outbox ended the session (the terminal is gone); a full one is a busy
            // moment of a live terminal, to be tried again, not held for its next connection.
            let error = if ctx.state().alive() {
                DeliveryError::Unavailable
            } else {
                DeliveryError::Offline
            };
            return Box::pin(async move { Err(error) });
        }
        let (reply, answer) = oneshot::channel();
        self.pending.insert(msg_id, reply);
        ctx.run_later(self.limits.ack_timeout, move |act, _| {
            act.settle(msg_id, Err(DeliveryError::NotAcknowledged))
        });
        Box::pin(async move { answer.await.unwrap_or(Err(DeliveryError::Offline)) })
    }
}

/// Ends the session with an ERROR frame (replaced, shutting down).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Close {
    pub code: ErrorCode,
    pub reason: &'static str,
}

impl Handler<Close> for TerminalSessionActor {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        self.close(msg.code, msg.reason, ctx);
    }
}

impl StreamHandler<Result<Frame, FrameError>> for TerminalSessionActor {
    fn handle(&mut self, item: Result<Frame, FrameError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        let frame = match item {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(terminal_id = %self.terminal_id, error = %e, "bad frame from terminal; closing");
                self.close(ErrorCode::Protocol, &e.to_string(), ctx);
                return;
            }
        };
        match frame {
            Frame::Ack { msg_id } => {
                let receipt = DeliveryReceipt {
                    message_ref: self.message_ref(msg_id),
                };
                self.settle(msg_id, Ok(receipt));
            }
            Frame::Nack { msg_id, reason } => {
                self.settle(msg_id, Err(DeliveryError::Rejected(peer_text(&reason))));
            }
            Frame::Ping { nonce } => {
                let _ = self.send_frame(Frame::Pong { nonce }, ctx);
            }
            Frame::Pong { .. } => {}
            Frame::Error { code, message } => {
                tracing::info!(terminal_id = %self.terminal_id, code, message = %peer_text(&message), "terminal closed the session");
                ctx.stop();
            }
            other => {
                let reason = format!("{} is not expected after authentication", other.name());
                self.close(ErrorCode::Protocol, &reason, ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A terminal's own words, fit for a log line and a database row: its control characters
/// (a NUL, which PostgreSQL refuses in text, or a line break that would forge a log line) shown
/// as U+FFFD.
fn peer_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The CODE or OUTCOME frame for a notice.
fn notice_frame(msg_id: u32, notice: &Notice) -> Result<Frame, String> {
    if notice.payment_id.len() > PAYMENT_ID_MAX_BYTES {
        return Err("payment id too long for the terminal protocol".into());
    }
    let amount_minor = u64::try_from(notice.amount.minor()).map_err(|_| "negative amount")?;
    let merchant = truncate(&notice.merchant_name, MERCHANT_MAX_BYTES);
    let text = truncate(&notice.text(), TEXT_MAX_BYTES);
    Ok(match (notice.kind, &notice.code) {
        (NoticeKind::Code, Some(code)) => {
            if code.expose().len() > CODE_MAX_BYTES {
                return Err("code too long for the terminal protocol".into());
            }
            Frame::Code(CodeFrame {
                msg_id,
                payment_id: notice.payment_id.clone(),
                code: code.expose().clone(),
                amount_minor,
                currency: notice.currency.alpha().to_string(),
                merchant,
                validity_s: notice.validity_s,
                flags: u8::from(notice.unregistered_receiver),
                text,
            })
        }
        (NoticeKind::Code, None) => return Err("a code notice without a code".into()),
        (NoticeKind::Outcome, _) => Frame::Outcome(OutcomeFrame {
            msg_id,
            payment_id: notice.payment_id.clone(),
            outcome: truncate(notice.outcome.as_deref().unwrap_or("updated"), 32),
            amount_minor,
            currency: notice.currency.alpha().to_string(),
            merchant,
            text,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::peer_text;

    #[test]
    fn a_terminals_words_lose_their_control_characters() {
        assert_eq!(peer_text("display broken"), "display broken");
        assert_eq!(
            peer_text("bad\0\nline\u{7f}"),
            "bad\u{FFFD}\u{FFFD}line\u{FFFD}"
        );
    }
}
