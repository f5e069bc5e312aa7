//! Handshakes in progress per peer address. The switch takes at most `handshakes_max`
//! connections through TLS and the handshake at once; without a share per address, one host
//! opening that many connections and sending nothing would keep every terminal out until their
//! handshake timeouts, again and again. An IPv6 peer is counted by its /64 network, which a
//! single host usually has whole.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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
        let ip = peer_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.per_peer_max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { owner: self, ip })
    }
}

/// An IPv4 address (also when mapped into IPv6) as it is; an IPv6 address as its /64 network.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
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
    fn an_ipv6_host_is_counted_by_its_64_network() {
        let peers = PeerHandshakes::new(1);
        let _first = peers.try_take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(
            peers
                .try_take("2001:db8:1:2::ffff".parse().unwrap())
                .is_none()
        );
        assert!(peers.try_take("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = peers.try_take("192.0.2.1".parse().unwrap()).unwrap();
        assert!(
            peers
                .try_take("::ffff:192.0.2.1".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn addresses_without_handshakes_are_forgotten() {
        let peers = PeerHandshakes::new(1);
        drop(peers.try_take("192.0.2.1".parse().unwrap()));
        assert!(peers.counts.lock().unwrap().is_empty());
    }
}
