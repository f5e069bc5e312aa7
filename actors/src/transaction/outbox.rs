//! How a committed webhook event reaches this process's webhook worker.
//!
//! The event is written with its final status (the outbox). Without more, the worker would find
//! it by claiming it from `webhook_events`: an `UPDATE` and a commit of their own per claim. When
//! the worker has room, the payment instead reserves a place in its in-memory queue before the
//! write, writes the event leased to this process (`next_attempt_at` = now + the lease), and hands
//! it over once committed. A process that dies with events queued loses nothing: their lease runs
//! out and any worker claims them, as it does any event the queue had no room for.

use crate::secret::Secret;
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// One event ready for delivery.
#[derive(Debug)]
pub struct WebhookEvent {
    pub id: String,
    /// Whose endpoint it goes to: the worker shares its slots by merchant.
    pub merchant_id: String,
    pub body: String,
    pub notify_url: String,
    /// Attempts so far.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub secret: Secret<String>,
}

/// The payment actors' side of the worker.
#[derive(Debug, Clone)]
pub struct WebhookOutbox {
    wake: Arc<Notify>,
    queue: mpsc::Sender<WebhookEvent>,
    lease_ms: i64,
}

/// A place in the worker's queue, held from before the event's write until it is handed over.
#[derive(Debug)]
pub struct Reservation {
    permit: mpsc::OwnedPermit<WebhookEvent>,
    /// The event's `next_attempt_at`: no other worker claims it before.
    pub leased_until: DateTime<Utc>,
}

impl WebhookOutbox {
    /// Events are handed over through a queue of `capacity`; `wake` tells the worker to claim
    /// an event the queue had no room for. The worker must start delivering each handed event
    /// within `lease_ms` of its write.
    pub fn with_handoff(
        wake: Arc<Notify>,
        capacity: usize,
        lease_ms: i64,
    ) -> (Self, mpsc::Receiver<WebhookEvent>) {
        assert!(
            capacity > 0 && lease_ms > 0,
            "a handoff needs room and a lease"
        );
        let (queue, handed) = mpsc::channel(capacity);
        let outbox = Self {
            wake,
            queue,
            lease_ms,
        };
        (outbox, handed)
    }

    /// A place in the queue, if there is one free.
    pub fn reserve(&self, now: DateTime<Utc>) -> Option<Reservation> {
        let permit = self.queue.clone().try_reserve_owned().ok()?;
        Some(Reservation {
            permit,
            leased_until: now + Duration::milliseconds(self.lease_ms),
        })
    }

    /// The event's write has committed: hand it over, or wake the worker to claim it.
    pub fn committed(&self, reservation: Option<Reservation>, event: Option<WebhookEvent>) {
        match (reservation, event) {
            (Some(reservation), Some(event)) => {
                reservation.permit.send(event);
            }
            _ => self.wake.notify_one(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> WebhookEvent {
        WebhookEvent {
            id: id.into(),
            merchant_id: "mer_1".into(),
            body: "{}".into(),
            notify_url: "http://127.0.0.1:9/".into(),
            attempts: 0,
            created_at: Utc::now(),
            secret: Secret::new("s".into()),
        }
    }

    #[tokio::test]
    async fn a_reserved_event_is_handed_over_and_a_full_queue_reserves_nothing() {
        let (outbox, mut handed) = WebhookOutbox::with_handoff(Arc::default(), 1, 60_000);
        let now = Utc::now();
        let reservation = outbox.reserve(now).expect("room for one");
        assert_eq!(reservation.leased_until, now + Duration::seconds(60));
        assert!(outbox.reserve(now).is_none(), "the queue holds one");
        outbox.committed(Some(reservation), Some(event("evt_1")));
        assert_eq!(handed.recv().await.unwrap().id, "evt_1");
        assert!(outbox.reserve(now).is_some(), "the place is free again");
    }

    #[tokio::test]
    async fn an_event_the_queue_had_no_room_for_wakes_the_worker() {
        let wake = Arc::new(Notify::new());
        let (outbox, _handed) = WebhookOutbox::with_handoff(wake.clone(), 1, 60_000);
        let _held = outbox.reserve(Utc::now()).expect("room for one");
        assert!(outbox.reserve(Utc::now()).is_none());
        outbox.committed(None, Some(event("evt_2")));
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
            .await
            .expect("woken");
    }
}
