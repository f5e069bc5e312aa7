//! Each slow destination's share of the worker's slots. A merchant endpoint that never answers
//! holds a slot for `timeout_ms` per attempt; without a share, one such endpoint (a merchant's
//! server gone dark behind a firewall that drops packets) would hold every slot, and every other
//! merchant's webhooks would wait behind its timeouts. A destination is a URL's origin (scheme,
//! host and port): what one server answers for.
//!
//! Only a destination that was slow lately is held to its share: a busy merchant whose endpoint
//! answers promptly may use every slot, as its volume needs. So an endpoint that goes dark holds
//! every slot for at most one `timeout_ms`, then its share.

use payhub_actors::transaction::outbox::WebhookEvent;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a destination is held to its share after a slow attempt.
pub const SLOW_REMEMBERED_MS: u64 = 60_000;
/// Destinations remembered as slow, at most; past this the oldest memories go.
pub const SLOW_DESTINATIONS_MAX: usize = 1_024;

/// The origin `notify_url` is delivered to; the URL itself when it does not parse.
pub fn destination(notify_url: &str) -> String {
    match url::Url::parse(notify_url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => notify_url.to_owned(),
    }
}

/// A `LIKE` pattern matching the URLs of `destination` (an origin).
pub fn like_pattern(destination: &str) -> String {
    let escaped = destination
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped}/%")
}

/// Deliveries in flight per destination, and the events that wait for their destination's share.
pub struct Shares {
    share_max: usize,
    parked_max: usize,
    /// An attempt that took this long marks its destination slow.
    slow_after: Duration,
    in_flight: HashMap<String, usize>,
    /// Until when each slow destination is held to its share.
    slow_until: HashMap<String, Instant>,
    /// Events whose destination had no room when they came, oldest first. Their lease keeps them
    /// in the table: one dropped for want of room here is claimed again when the lease runs out.
    parked: VecDeque<(String, WebhookEvent)>,
}

/// What to do with an event that came in.
pub enum Admission {
    Deliver(String, WebhookEvent),
    Parked,
    /// No room to wait either; its lease brings it back.
    Dropped(WebhookEvent),
}

impl Shares {
    pub fn new(share_max: usize, parked_max: usize, slow_after: Duration) -> Self {
        assert!(share_max > 0);
        Self {
            share_max,
            parked_max,
            slow_after,
            in_flight: HashMap::new(),
            slow_until: HashMap::new(),
            parked: VecDeque::new(),
        }
    }

    /// Takes a share for `event` when its destination has room; parks it otherwise.
    pub fn admit(&mut self, event: WebhookEvent) -> Admission {
        let destination = destination(&event.notify_url);
        if self.room_at(&destination, Instant::now()) {
            *self.in_flight.entry(destination.clone()).or_insert(0) += 1;
            return Admission::Deliver(destination, event);
        }
        if self.parked.len() >= self.parked_max {
            return Admission::Dropped(event);
        }
        self.parked.push_back((destination, event));
        Admission::Parked
    }

    /// A delivery to `destination` ended after `took`: the oldest parked event that now has
    /// room, with its share taken.
    pub fn finished(
        &mut self,
        destination: &str,
        took: Duration,
        now: Instant,
    ) -> Option<(String, WebhookEvent)> {
        if let Some(count) = self.in_flight.get_mut(destination) {
            *count -= 1;
            if *count == 0 {
                self.in_flight.remove(destination);
            }
        }
        if took >= self.slow_after {
            self.remember_slow(destination, now);
        }
        let ready = self.parked.iter().position(|(d, _)| self.room_at(d, now))?;
        let (destination, event) = self.parked.remove(ready)?;
        *self.in_flight.entry(destination.clone()).or_insert(0) += 1;
        Some((destination, event))
    }

    /// Slow destinations using their whole share: a claim leaves their events in the table.
    pub fn full(&self, now: Instant) -> Vec<String> {
        self.in_flight
            .keys()
            .filter(|d| !self.room_at(d, now))
            .cloned()
            .collect()
    }

    fn room_at(&self, destination: &str, now: Instant) -> bool {
        let slow = self
            .slow_until
            .get(destination)
            .is_some_and(|until| now < *until);
        !slow || self.in_flight.get(destination).copied().unwrap_or(0) < self.share_max
    }

    fn remember_slow(&mut self, destination: &str, now: Instant) {
        if self.slow_until.len() >= SLOW_DESTINATIONS_MAX {
            self.slow_until.retain(|_, until| now < *until);
        }
        if self.slow_until.len() >= SLOW_DESTINATIONS_MAX {
            self.slow_until.clear();
        }
        let until = now + Duration::from_millis(SLOW_REMEMBERED_MS);
        self.slow_until.insert(destination.to_owned(), until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize, url: &str) -> WebhookEvent {
        WebhookEvent {
            id: format!("evt_{n}"),
            body: "{}".into(),
            notify_url: url.into(),
            attempts: 0,
            created_at: chrono::Utc::now(),
            secret: payhub_actors::Secret::new("whsec_test".into()),
        }
    }

    #[test]
    fn destinations_are_origins() {
        assert_eq!(
            destination("https://Shop.example:443/hooks/payhub?x=1"),
            "https://shop.example"
        );
        assert_eq!(
            destination("http://127.0.0.1:9000/a"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(like_pattern("http://a_b.example"), "http://a\\_b.example/%");
    }

    const SLOW: Duration = Duration::from_secs(2);
    const QUICK: Duration = Duration::from_millis(5);

    #[test]
    fn a_prompt_destination_may_use_every_slot() {
        let mut shares = Shares::new(2, 1, SLOW);
        let busy = "http://busy.example/hooks";
        for n in 0..5 {
            assert!(matches!(
                shares.admit(event(n, busy)),
                Admission::Deliver(..)
            ));
        }
        assert!(
            shares
                .finished("http://busy.example", QUICK, Instant::now())
                .is_none()
        );
        assert!(shares.full(Instant::now()).is_empty());
    }

    #[test]
    fn a_slow_destination_past_its_share_waits_and_others_go() {
        let mut shares = Shares::new(2, 1, SLOW);
        let slow = "http://slow.example/hooks";
        let now = Instant::now();
        for n in 0..3 {
            assert!(matches!(
                shares.admit(event(n, slow)),
                Admission::Deliver(..)
            ));
        }
        // Its first attempt took long: from now on it holds at most its share.
        assert!(shares.finished("http://slow.example", SLOW, now).is_none());
        assert_eq!(shares.full(now), ["http://slow.example"]);
        assert!(matches!(shares.admit(event(3, slow)), Admission::Parked));
        assert!(matches!(
            shares.admit(event(4, slow)),
            Admission::Dropped(_)
        ));
        assert!(matches!(
            shares.admit(event(5, "http://fast.example/hooks")),
            Admission::Deliver(..)
        ));
        // The fast one ending frees nothing for the slow one's parked event.
        assert!(shares.finished("http://fast.example", QUICK, now).is_none());
        let (destination, next) = shares.finished("http://slow.example", SLOW, now).unwrap();
        assert_eq!(
            (destination.as_str(), next.id.as_str()),
            ("http://slow.example", "evt_3")
        );
        assert_eq!(shares.full(now), ["http://slow.example"]);
        // A minute without a slow attempt, and it is free again.
        let later = now + Duration::from_millis(SLOW_REMEMBERED_MS);
        assert!(shares.full(later).is_empty());
    }
}
