//! The `[[links]]` of the configuration file as the bank link actors want them, and the bank
//! router as the operator listener sees it.

use crate::config::LinkConfig;
use crate::http::operator::{LinkStatusSource, LinkView, QUERY_TIMEOUT_MS};
use actix::Addr;
use futures::future::BoxFuture;
use payhub_actors::Secret;
use payhub_actors::bank::{self, BankRouter, LinkSettings};
use payhub_actors::domain::BankId;

/// Converts one `[[links]]` entry; errors name the link and the key.
pub fn link_settings(config: &LinkConfig) -> Result<LinkSettings, String> {
    let name = &config.name;
    let banks = config
        .banks
        .iter()
        .map(|b| {
            BankId::parse(b).map_err(|_| format!("links.{name}.banks: {b} is not 1 to 11 digits"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_addr(&config.addr).map_err(|e| format!("links.{name}.addr: {e}"))?;
    if let Some(ca) = &config.tls_ca_cert {
        // Read at every connect; checked here so that a missing file stops the start.
        payhub_actors::tls_trust::trusting_only_file(ca)
            .map_err(|e| format!("links.{name}.tls_ca_cert: {e}"))?;
    }
    let mut settings = LinkSettings::new(name, &config.addr, config.owner, banks);
    settings.response_timeout_ms = config.response_timeout_ms;
    settings.echo_interval_ms = config.echo_interval_s.saturating_mul(1_000);
    settings.in_flight_max = config.in_flight_max;
    settings.reversal_interval_ms = config.reversal_interval_ms;
    settings.reconnect_backoff_max_ms = config.reconnect_backoff_max_ms;
    settings.reconnect_backoff_min_ms = settings
        .reconnect_backoff_min_ms
        .min(config.reconnect_backoff_max_ms.max(1));
    settings.tls_ca_cert = config.tls_ca_cert.clone();
    if let Some(hex_key) = &config.mac_key_hex {
        let bytes = hex::decode(hex_key.expose().trim())
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| format!("links.{name}.mac_key_hex: must be 32 hex characters"))?;
        settings.mac_key = Some(Secret::new(bytes));
    }
    settings.check().map_err(|e| format!("links.{name}: {e}"))?;
    Ok(settings)
}

/// `host:port`, the port 1 to 65535 (an IPv6 host in brackets).
fn check_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr} is not host:port"))?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if host.is_empty() || host.contains(char::is_whitespace) || !port_ok {
        return Err(format!("{addr} is not host:port"));
    }
    Ok(())
}

/// Every link of the configuration.
pub fn all_link_settings(links: &[LinkConfig]) -> Result<Vec<LinkSettings>, String> {
    links.iter().map(link_settings).collect()
}

/// The operator listener's view of the bank router: `/readyz`, `/api/links` and the page.
pub struct BankLinks(pub Addr<BankRouter>);

impl LinkStatusSource for BankLinks {
    fn links(&self) -> BoxFuture<'static, Vec<LinkView>> {
        let asked = ask(&self.0, bank::LinkStatuses);
        Box::pin(async move {
            let Some(Ok(links)) = asked.await else {
                return Vec::new();
            };
            links.into_iter().map(link_view).collect()
        })
    }

    fn signed_on(&self) -> BoxFuture<'static, (usize, usize)> {
        let asked = ask(&self.0, bank::SignedOnLinks);
        Box::pin(async move { asked.await.unwrap_or((0, 0)) })
    }
}

/// The router's answer to `msg`, or `None` when it gives none within `QUERY_TIMEOUT_MS`.
fn ask<M>(router: &Addr<BankRouter>, msg: M) -> BoxFuture<'static, Option<M::Result>>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    BankRouter: actix::Handler<M>,
{
    let asked = router.send(msg);
    Box::pin(async move {
        let wait = std::time::Duration::from_millis(QUERY_TIMEOUT_MS);
        tokio::time::timeout(wait, asked).await.ok()?.ok()
    })
}

fn link_view(l: bank::LinkStatus) -> LinkView {
    LinkView {
        signed_on: l.state == "signed_on",
        state: l.state.to_string(),
        owner: l.owner.to_string(),
        in_flight: l.in_flight,
        last_echo_age_s: l
            .last_echo_at
            .map(|t| (chrono::Utc::now() - t).num_seconds().max(0) as u64),
        latency_ms: l.round_trip_us.map(|us| us as f64 / 1_000.0),
        reversals_pending: l.reversals_pending.max(0) as u64,
        name: l.name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_actors::bank::LinkOwner;

    fn config() -> LinkConfig {
        LinkConfig {
            name: "bips-a".into(),
            addr: "127.0.0.1:8583".into(),
            owner: LinkOwner::ThirdParty,
            banks: vec!["0001".into(), "0002".into()],
            response_timeout_ms: 5_000,
            echo_interval_s: 30,
            in_flight_max: 1_024,
            reversal_interval_ms: 10_000,
            reconnect_backoff_max_ms: 30_000,
            tls_ca_cert: None,
            mac_key_hex: None,
        }
    }

    #[test]
    fn converts_a_link() {
        let s = link_settings(&config()).unwrap();
        assert_eq!(s.echo_interval_ms, 30_000);
        assert_eq!(s.banks.len(), 2);
        assert_eq!(s.owner.as_str(), "third_party");
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = config();
        c.banks = vec!["12ab".into()];
        assert!(
            link_settings(&c)
                .unwrap_err()
                .contains("links.bips-a.banks")
        );
        let mut c = config();
        c.mac_key_hex = Some("zz".into());
        assert!(link_settings(&c).unwrap_err().contains("mac_key_hex"));
        let mut c = config();
        c.in_flight_max = 0;
        assert!(link_settings(&c).unwrap_err().contains("in_flight_max"));
        for addr in [
            "10.0.0.5",
            "10.0.0.5:0",
            ":8583",
            "10.0.0.5:port",
            "bips a:8583",
        ] {
            let mut c = config();
            c.addr = addr.into();
            let e = link_settings(&c).unwrap_err();
            assert!(e.starts_with("links.bips-a.addr: "), "{addr}: {e}");
        }
        let mut c = config();
        c.tls_ca_cert = Some("/nonexistent/bips-ca.pem".into());
        let e = link_settings(&c).unwrap_err();
        assert!(e.starts_with("links.bips-a.tls_ca_cert: "), "{e}");
    }

    #[test]
    fn names_and_addresses_of_hosts_are_accepted() {
        for addr in ["bips.example:8583", "[::1]:8583", "127.0.0.1:1"] {
            let mut c = config();
            c.addr = addr.into();
            assert!(link_settings(&c).is_ok(), "{addr}");
        }
    }
}
