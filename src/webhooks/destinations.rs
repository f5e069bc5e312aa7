//! Where webhooks may go. A merchant chooses each payment's `notify_url`; with
//! `webhooks.allow_private_destinations = false` it may not lead into the gateway's own network
//! (loopback, private ranges, link-local such as a cloud's metadata service): the gateway would
//! otherwise post signed requests wherever a merchant points it. The host is checked when the
//! payment is created (an address or `localhost` in the URL) and again at every delivery, on the
//! addresses its name resolves to then.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why `url`'s host, as written, is not a public destination; `None` when it is, or when only
/// resolving its name can tell.
pub fn written_host_refusal(url: &url::Url) -> Option<String> {
    let private = match url.host()? {
        url::Host::Ipv4(v4) => !is_public(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => !is_public(IpAddr::V6(v6)),
        url::Host::Domain(name) => is_local_name(name),
    };
    private.then(|| format!("{} is not a public address", url.host_str().unwrap_or("")))
}

/// `localhost` and its subdomains resolve to loopback by convention (RFC 6761).
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether `ip` is reachable on the public Internet: not loopback, private, shared (carrier NAT),
/// link-local, unspecified, broadcast, multicast, documentation or benchmarking space.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    let benchmarking = a == 198 && (b == 18 || b == 19);
    let protocol_assignments = a == 192 && b == 0 && c == 0;
    let relay_anycast = a == 192 && b == 88 && c == 99;
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || shared
        || benchmarking
        || protocol_assignments
        || relay_anycast)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // Addresses that carry an IPv4 address lead wherever that one does: NAT64 (64:ff9b::/96),
    // 6to4 (2002::/16) and the old IPv4-compatible form (::/96).
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || seg[..6] == [0; 6] && !ip.is_loopback() {
        return !ip.is_unspecified() && is_public_v4(embedded(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        return is_public_v4(embedded(seg[1], seg[2]));
    }
    let unique_local = seg[0] & 0xfe00 == 0xfc00;
    // Link-local fe80::/10, and the old site-local fec0::/10 beside it.
    let link_or_site_local = seg[0] & 0xff80 == 0xfe80;
    let documentation = (seg[0] == 0x2001 && seg[1] == 0x0db8) || seg[0] & 0xfff0 == 0x3ff0;
    let teredo = seg[0] == 0x2001 && seg[1] == 0;
    let benchmarking = seg[0] == 0x2001 && seg[1] == 2 && seg[2] == 0;
    let discard = seg[..4] == [0x100, 0, 0, 0];
    let local_nat64 = seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1;
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || unique_local
        || link_or_site_local
        || documentation
        || teredo
        || benchmarking
        || discard
        || local_nat64)
}

/// Resolves names with the system resolver and keeps only public addresses: a name that leads
/// only inside the network fails to connect, with the reason in the attempt's error.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> bool {
        written_host_refusal(&url::Url::parse(url).unwrap()).is_some()
    }

    #[test]
    fn inside_addresses_are_not_public() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "::10.0.0.1",
            "2001::1",
            "fec0::1",
            "100::1",
            "2001:2::1",
            "3fff::1",
            "192.88.99.1",
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn written_hosts_are_checked_without_resolving() {
        assert!(refused("http://127.0.0.1:9000/hooks"));
        assert!(refused("https://[::1]/hooks"));
        assert!(refused("http://localhost/hooks"));
        assert!(refused("http://api.LOCALHOST./hooks"));
        assert!(refused("http://169.254.169.254/latest/meta-data"));
        assert!(!refused("https://shop.example/hooks/payhub"));
        assert!(!refused("https://93.184.216.34/hooks"));
    }

    #[tokio::test]
    async fn names_resolving_inside_fail_to_resolve() {
        let err = match PublicOnly.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved to a public address"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("no public address"), "{err}");
    }
}
