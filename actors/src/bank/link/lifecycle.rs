//! The link's life: connecting, signing on, dropping a connection and reconnecting with backoff,
//! and the housekeeping tick (timeouts, echo, sign-off on shutdown).

use super::{
    BankLinkActor, Conn, Inbound, LinkOutcome, LinkState, MESSAGE_MAX_BYTES, PendingKind,
    REVERSALS_IN_FLIGHT_MAX, STALE_DEBIT_TIMEOUTS, STOPPING_DEBIT_WAIT,
    UNSENT_BEYOND_IN_FLIGHT_BYTES,
};
use crate::bank::connection::{self, LinkReader, LinkWriterIo};
use crate::bank::reversals::ReversalReason;
use crate::bank::unsent::Unsent;
use crate::bank::wire::NetworkCode;
use actix::prelude::*;
use payhub_iso8583::codec::VerifyingCodec;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

impl BankLinkActor {
    pub(super) fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.conn.is_some() {
            return;
        }
        let settings = self.settings.clone();
        let fut = async move { connection::open(&settings).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok((reader, writer)) => act.on_connected(reader, writer, ctx),
            Err(e) => {
                tracing::warn!(link = %act.name(), error = %e, "bank link connect failed");
                act.schedule_reconnect(ctx);
            }
        }));
    }

    fn schedule_reconnect(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let delay = self.backoff.next_delay();
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    fn on_connected(&mut self, reader: LinkReader, writer: LinkWriterIo, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        // The MAC is checked over the bytes as received, which a re-packed message may not be.
        let codec = VerifyingCodec::new(self.mac.clone());
        let frames = tokio_util::codec::FramedRead::new(reader, codec);
        let stream = futures::StreamExt::chain(
            futures::StreamExt::map(frames, move |item| Inbound::Frame(generation, item)),
            futures::stream::once(async move { Inbound::Closed(generation) }),
        );
        let reader = ctx.add_stream(stream);
        let unsent = Unsent::default();
        let writer = actix::io::FramedWrite::new(unsent.transport(writer), unsent.codec(), ctx);
        self.conn = Some(Conn {
            writer,
            unsent,
            taken_at: (0, Instant::now()),
            reader,
            generation,
        });
        self.set_state(LinkState::Connected);
        tracing::info!(link = %self.name(), "bank link connected; signing on");
        self.send_network(NetworkCode::SignOn);
    }

    /// Closes the connection, fails what was outstanding on it and plans the next attempt.
    pub(super) fn drop_connection(&mut self, why: &str, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // A link closed because the gateway stops is no news for an operator's alerts.
        if self.stopping {
            tracing::info!(link = %self.name(), reason = why, "bank link closed");
        } else {
            tracing::warn!(link = %self.name(), reason = why, "bank link down");
        }
        ctx.cancel_future(conn.reader);
        // Not a graceful close: flushing to a bank that does not read would never end, and what
        // is still unsent is given up below anyway.
        ctx.cancel_future(conn.writer.handle());
        self.set_state(LinkState::Down);
        for ((_, stan), pending) in std::mem::take(&mut self.pending) {
            self.stans.release(stan);
            if let PendingKind::Debit {
                request, reply, f7, ..
            } = pending.kind
                && reply.send(LinkOutcome::Dropped).is_err()
            {
                // Nobody waits for this debit any more: the link reverses it itself.
                self.reverse_orphan_with(&request, stan, f7, ReversalReason::Timeout, ctx);
            }
        }
        self.debits_in_flight = 0;
        self.reversals_in_flight.clear();
        self.shared.in_flight.store(0, Ordering::Relaxed);
        if self.stopping {
            ctx.stop();
        } else {
            self.schedule_reconnect(ctx);
        }
    }

    pub(super) fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut expired = Vec::new();
        let stale_after = if self.stopping {
            self.settings.response_timeout().min(STOPPING_DEBIT_WAIT)
        } else {
            self.settings.response_timeout() * STALE_DEBIT_TIMEOUTS
        };
        for (key, p) in &self.pending {
            let late = match &p.kind {
                PendingKind::Network { deadline, .. } | PendingKind::Reversal { deadline, .. } => {
                    now >= *deadline
                }
                PendingKind::Debit { .. } => now.duration_since(p.sent_at) >= stale_after,
            };
            if late {
                expired.push(*key);
            }
        }
        for key in expired {
            if self.expire_pending(key, ctx) {
                return; // the connection was dropped
            }
        }
        if let Some(why) = self.not_reading(now) {
            self.drop_connection(&why, ctx);
            return;
        }
        self.lapse_reservations(now);
        if self.state() == LinkState::SignedOn {
            let idle = now.duration_since(self.last_received);
            let echo_outstanding = self.pending.values().any(|p| {
                matches!(
                    p.kind,
                    PendingKind::Network {
                        code: NetworkCode::Echo,
                        ..
                    }
                )
            });
            if idle >= self.settings.echo_interval() && !echo_outstanding {
                self.send_network(NetworkCode::Echo);
            }
            self.load_more_reversals(ctx);
            self.send_due_reversals(ctx);
        }
        if self.stopping {
            self.try_sign_off(ctx);
        }
        self.metrics.in_flight.set(self.debits_in_flight as i64);
    }

    /// The most bytes that may wait for the socket.
    fn unsent_max_bytes(&self) -> usize {
        let own = self.settings.in_flight_max + REVERSALS_IN_FLIGHT_MAX;
        own.saturating_mul(MESSAGE_MAX_BYTES)
            .saturating_add(UNSENT_BEYOND_IN_FLIGHT_BYTES)
    }

    /// Why the bank is taken not to read: more than `unsent_max_bytes` wait for the socket, or
    /// some have waited a response timeout while the socket took nothing. A bank that sends
    /// (answers, echoes) but never reads is not silent, so the echo does not find it out.
    pub(super) fn not_reading(&mut self, now: Instant) -> Option<String> {
        let (timeout, unsent_max) = (self.settings.response_timeout(), self.unsent_max_bytes());
        let conn = self.conn.as_mut()?;
        let (unsent, taken) = (conn.unsent.bytes(), conn.unsent.taken());
        if unsent > unsent_max {
            return Some(format!("the bank does not read: {unsent} bytes unsent"));
        }
        if unsent == 0 || taken != conn.taken_at.0 {
            conn.taken_at = (taken, now);
            return None;
        }
        let stalled = now.duration_since(conn.taken_at.1) >= timeout;
        stalled.then(|| {
            let ms = timeout.as_millis();
            format!("the bank has read nothing for {ms} ms: {unsent} bytes unsent")
        })
    }

    /// Handles one late entry; `true` when the connection was dropped because of it.
    fn expire_pending(&mut self, key: (u8, u32), ctx: &mut Context<Self>) -> bool {
        let Some(pending) = self.pending.remove(&key) else {
            return false;
        };
        self.stans.release(key.1);
        match pending.kind {
            PendingKind::Network { code, .. } => {
                tracing::warn!(link = %self.name(), code = code.as_str(), "0800 unanswered");
                self.drop_connection("network message unanswered", ctx);
                true
            }
            PendingKind::Reversal { id, .. } => {
                self.reversals_in_flight.remove(&id);
                false
            }
            PendingKind::Debit {
                request, reply, f7, ..
            } => {
                self.debit_left();
                if reply.send(LinkOutcome::Dropped).is_err() {
                    self.reverse_orphan_with(&request, key.1, f7, ReversalReason::Timeout, ctx);
                }
                self.debit_timed_out(ctx)
            }
        }
    }

    /// Counts a debit unanswered in time. After `debit_timeouts_in_a_row_max` in a row the link
    /// drops its connection and signs on again, and the router meanwhile sends over another
    /// link: a BIPS that answers its echoes but no debits is not healthy. Whether it dropped.
    pub(super) fn debit_timed_out(&mut self, ctx: &mut Context<Self>) -> bool {
        self.metrics.timeouts.inc();
        self.debit_timeouts_in_a_row += 1;
        // A stopping link signs off once its debits are settled; it does not reconnect.
        let max = self.settings.debit_timeouts_in_a_row_max;
        if self.debit_timeouts_in_a_row < max || self.stopping {
            return false;
        }
        self.debit_timeouts_in_a_row = 0;
        tracing::warn!(
            link = %self.name(),
            timeouts = max,
            "debits unanswered in a row; reconnecting"
        );
        self.drop_connection("debits unanswered in a row", ctx);
        true
    }

    pub(super) fn try_sign_off(&mut self, ctx: &mut Context<Self>) {
        if self.sign_off_sent || self.debits_in_flight > 0 {
            return;
        }
        self.sign_off_sent = true;
        if self.state() == LinkState::SignedOn {
            self.send_network(NetworkCode::SignOff);
            // Nothing financial (a due reversal, say) follows the sign-off.
            self.set_state(LinkState::Connected);
        } else {
            // Not signed on: nothing to sign off from.
            if self.conn.is_some() {
                self.drop_connection("stopping", ctx);
            } else {
                ctx.stop();
            }
        }
    }
}
