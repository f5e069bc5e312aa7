//! The actors-side settings of one bank link (src/bank_links.rs builds them from the config file).

use crate::domain::BankId;
use std::path::PathBuf;
use std::time::Duration;

/// Who runs the bank information processing system at the other end of a link (the `owner` key
/// of a `[[links]]` entry in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkOwner {
    Gateway,
    PayerBank,
    PayeeBank,
    ThirdParty,
}

impl LinkOwner {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::PayerBank => "payer_bank",
            Self::PayeeBank => "payee_bank",
            Self::ThirdParty => "third_party",
        }
    }
}

/// Everything one `BankLinkActor` needs to know about its link.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub name: String,
    /// `host:port` of the BIPS.
    pub addr: String,
    pub owner: LinkOwner,
    /// Payer banks (field 100) routed over this link, in the order of the configuration.
    pub banks: Vec<BankId>,
    pub response_timeout_ms: u64,
    /// An echo (0800/301) goes out when nothing was received from the bank for this long.
    pub echo_interval_ms: u64,
    pub in_flight_max: usize,
    /// How often an unanswered reversal is repeated as 0421.
    pub reversal_interval_ms: u64,
    /// Pending reversals held in memory at once; the rest wait in the table and are loaded as
    /// these are answered.
    pub reversals_loaded_max: usize,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// When set, the link talks TLS and checks the BIPS's certificate against this CA.
    pub tls_ca_cert: Option<PathBuf>,
    /// The 16-byte X9.19 MAC key; when set, every message is signed in field 128 and every message
    /// received must carry a good MAC in its last field (128, else 64).
    pub mac_key: Option<crate::Secret<[u8; 16]>>,
    /// A reserved 0200 lapses unsent after `response_timeout_ms` or this, whichever is longer.
    /// Not a configuration key: [`RESERVATION_HOLD_MIN_MS`] by default, shortened by tests.
    ///
    /// [`RESERVATION_HOLD_MIN_MS`]: crate::bank::prepared::RESERVATION_HOLD_MIN_MS
    pub reservation_hold_min_ms: u64,
    /// Debits unanswered in a row after which the link reconnects: a BIPS that answers its
    /// echoes but no debits is not healthy. Not a configuration key (3), raised by tests.
    pub debit_timeouts_in_a_row_max: u32,
}

/// The default of `LinkSettings::debit_timeouts_in_a_row_max`.
pub const DEBIT_TIMEOUTS_IN_A_ROW_MAX: u32 = 3;

/// Upper bounds the settings must respect (TIGER_STYLE: a limit on everything).
pub const IN_FLIGHT_MAX_LIMIT: usize = 100_000;
pub const RESPONSE_TIMEOUT_MS_LIMIT: u64 = 600_000;
pub const REVERSALS_LOADED_MAX_LIMIT: usize = 1_000_000;
pub const INTERVAL_MS_LIMIT: u64 = 24 * 3600 * 1000;

impl LinkSettings {
    /// Settings with the defaults of operations.md for everything but the identity of the link.
    pub fn new(name: &str, addr: &str, owner: LinkOwner, banks: Vec<BankId>) -> Self {
        Self {
            name: name.to_owned(),
            addr: addr.to_owned(),
            owner,
            banks,
            response_timeout_ms: 5_000,
            echo_interval_ms: 30_000,
            in_flight_max: 1_024,
            reversal_interval_ms: 10_000,
            reversals_loaded_max: crate::bank::reversals::PENDING_LOAD_MAX,
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 30_000,
            tls_ca_cert: None,
            mac_key: None,
            reservation_hold_min_ms: crate::bank::prepared::RESERVATION_HOLD_MIN_MS,
            debit_timeouts_in_a_row_max: DEBIT_TIMEOUTS_IN_A_ROW_MAX,
        }
    }

    /// Why these settings cannot run a link, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() {
            return Err("a link needs a name".into());
        }
        if self.banks.is_empty() {
            return Err("banks: must name at least one bank id".into());
        }
        if !(1..=IN_FLIGHT_MAX_LIMIT).contains(&self.in_flight_max) {
            return Err(format!("in_flight_max: must be 1 to {IN_FLIGHT_MAX_LIMIT}"));
        }
        if !(1..=RESPONSE_TIMEOUT_MS_LIMIT).contains(&self.response_timeout_ms) {
            return Err(format!(
                "response_timeout_ms: must be 1 to {RESPONSE_TIMEOUT_MS_LIMIT}"
            ));
        }
        if !(1..=REVERSALS_LOADED_MAX_LIMIT).contains(&self.reversals_loaded_max) {
            return Err(format!(
                "reversals_loaded_max: must be 1 to {REVERSALS_LOADED_MAX_LIMIT}"
            ));
        }
        let intervals = [
            ("echo_interval_s", self.echo_interval_ms),
            ("reversal_interval_ms", self.reversal_interval_ms),
            ("reconnect_backoff_max_ms", self.reconnect_backoff_max_ms),
        ];
        if let Some((key, _)) = intervals
            .iter()
            .find(|(_, ms)| !(1..=INTERVAL_MS_LIMIT).contains(ms))
        {
            return Err(format!("{key}: must be positive, at most a day"));
        }
        if !(1..=self.reconnect_backoff_max_ms).contains(&self.reconnect_backoff_min_ms) {
            return Err("reconnect_backoff_max_ms: must be at least the backoff's minimum".into());
        }
        Ok(())
    }

    /// How long a reserved 0200 waits to be sent before it lapses.
    pub fn reservation_hold(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms.max(self.reservation_hold_min_ms))
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// Opening a connection (TCP connect and TLS handshake together) is bounded by the response
    /// timeout: a bank slower than that to connect could not answer in time anyway.
    pub fn connect_timeout_ms(&self) -> u64 {
        self.response_timeout_ms
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms())
    }

    pub fn echo_interval(&self) -> Duration {
        Duration::from_millis(self.echo_interval_ms)
    }

    pub fn reversal_interval(&self) -> Duration {
        Duration::from_millis(self.reversal_interval_ms)
    }
}

/// Capped exponential backoff between reconnect attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    next_ms: u64,
}

impl Backoff {
    pub fn new(min_ms: u64, max_ms: u64) -> Self {
        assert!(min_ms > 0 && min_ms <= max_ms);
        Self {
            min_ms,
            max_ms,
            next_ms: min_ms,
        }
    }

    /// The wait before the next attempt; each call doubles the following one, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next_ms;
        self.next_ms = self.next_ms.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(delay)
    }

    /// After a connection proved healthy, the next failure starts from the minimum again.
    pub fn reset(&mut self) {
        self.next_ms = self.min_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(100, 450);
        let waits: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(waits, vec![100, 200, 400, 450, 450]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn settings_without_banks_are_refused() {
        let s = LinkSettings::new("a", "127.0.0.1:1", LinkOwner::Gateway, vec![]);
        assert!(s.check().unwrap_err().contains("banks"));
    }

    #[test]
    fn intervals_past_a_day_are_refused() {
        let bank = vec![BankId::parse("0001").unwrap()];
        let mut s = LinkSettings::new("a", "127.0.0.1:1", LinkOwner::Gateway, bank);
        s.reversal_interval_ms = 9_000_000_000_000_000;
        assert!(s.check().unwrap_err().contains("at most a day"));
    }
}
