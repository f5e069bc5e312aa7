//! Each destination's share of the worker's slots. A merchant endpoint that never answers holds
//! a slot for `timeout_ms` per attempt; without a share, one such endpoint (a merchant's server
//! gone dark behind a firewall that drops packets) would hold every slot, and every other
//! merchant's webhooks would wait behind its timeouts. A destination is a URL's origin (scheme,
//! host and port): what one server answers for.

use payhub_actors::transaction::outbox::WebhookEvent;
use std::collections::{HashMap, VecDeque};

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
    in_flight: HashMap<String, usize>,
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
    pub fn new(share_max: usize, parked_max: usize) -> Self {
        assert!(share_max > 0);
        Self {
            share_max,
            parked_max,
            in_flight: HashMap::new(),
            parked: VecDeque::new(),
        }
    }

    /// Takes a share for `event` when its destination has room; parks it otherwise.
    pub fn admit(&mut self, event: WebhookEvent) -> Admission {
        let destination = destination(&event.notify_url);
        if self.has_room(&destination) {
            *self.in_flight.entry(destination.clone()).or_insert(0) += 1;
            return Admission::Deliver(destination, event);
        }
        if self.parked.len() >= self.parked_max {
            return Admission::Dropped(event);
        }
        self.parked.push_back((destination, event));
        Admission::Parked
    }

    /// A delivery to `destination` ended: the oldest parked event that now has room, with its
    /// share taken.
    pub fn finished(&mut self, destination: &str) -> Option<(String, WebhookEvent)> {
        if let Some(count) = self.in_flight.get_mut(destination) {
            *count -= 1;
            if *count == 0 {
                self.in_flight.remove(destination);
            }
        }
        let ready = self.parked.iter().position(|(d, _)| self.has_room(d))?;
        let (destination, event) = self.parked.remove(ready)?;
        *self.in_flight.entry(destination.clone()).or_insert(0) += 1;
        Some((destination, event))
    }

    /// Destinations using their whole share: a claim leaves their events in the table.
    pub fn full(&self) -> Vec<String> {
        self.in_flight
            .iter()
            .filter(|(_, n)| **n >= self.share_max)
            .map(|(d, _)| d.clone())
            .collect()
    }

    fn has_room(&self, destination: &str) -> bool {
        self.in_flight.get(destination).copied().unwrap_or(0) < self.share_max
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

    #[test]
    fn a_destination_past_its_share_waits_and_others_go() {
        let mut shares = Shares::new(2, 1);
        let slow = "http://slow.example/hooks";
        assert!(matches!(
            shares.admit(event(0, slow)),
            Admission::Deliver(..)
        ));
        assert!(matches!(
            shares.admit(event(1, slow)),
            Admission::Deliver(..)
        ));
        assert!(matches!(shares.admit(event(2, slow)), Admission::Parked));
        assert!(matches!(
            shares.admit(event(3, slow)),
            Admission::Dropped(_)
        ));
        assert!(matches!(
            shares.admit(event(4, "http://fast.example/hooks")),
            Admission::Deliver(..)
        ));
        assert_eq!(shares.full(), ["http://slow.example"]);
        // The fast one ending frees nothing for the slow one's parked event.
        assert!(shares.finished("http://fast.example").is_none());
        let (destination, next) = shares.finished("http://slow.example").unwrap();
        assert_eq!(
            (destination.as_str(), next.id.as_str()),
            ("http://slow.example", "evt_2")
        );
        assert_eq!(shares.full(), ["http://slow.example"]);
    }
}
