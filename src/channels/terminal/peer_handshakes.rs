//! Handshakes in progress per peer address. The switch takes at most `handshakes_max`
//! connections through TLS and the handshake at once; without a share per address, one host
//! opening that many connections and sending nothing would keep every terminal out until their
//! handshake timeouts, again and again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

pub(crate) struct PeerHandshakes {
    per_peer_max: usize,
    /// Addresses with a handshake in progress: at most `handshakes_max` of them.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One handshake of `ip` in progress; given back when dropped.
pub(crate) struct PeerSlot<'a> {
    owner: &'a PeerHandshakes,
    ip: IpAddr,
}

impl PeerHandshakes {
    pub(crate) fn new(per_peer_max: usize) -> Self {
        Self {
            per_peer_max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a handshake from `ip`, unless it has `per_peer_max` in progress already.
    pub(crate) fn try_take(&self, ip: IpAddr) -> Option<PeerSlot<'_>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.per_peer_max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { owner: self, ip })
    }
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_and_gives_it_back() {
        let peers = PeerHandshakes::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = peers.try_take(a).unwrap();
        let _second = peers.try_take(a).unwrap();
        assert!(peers.try_take(a).is_none(), "a third from the same address");
        assert!(
            peers.try_take(b).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(
            peers.try_take(a).is_some(),
            "a finished handshake frees its slot"
        );
    }

    #[test]
    fn addresses_without_handshakes_are_forgotten() {
        let peers = PeerHandshakes::new(1);
        drop(peers.try_take("192.0.2.1".parse().unwrap()));
        assert!(peers.counts.lock().unwrap().is_empty());
    }
}
