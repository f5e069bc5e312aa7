//! What one SMPP session needs to know, checked once at start so a bad value is one clear line
//! instead of a session that never binds.

use crate::config::SmppConfig;
use payhub_actors::Secret;
use std::time::Duration;

/// Settings of one session to one SMSC. Built from `[smpp]` with [`SmppSettings::from_config`];
/// the keys `[smpp]` does not carry have working defaults.
#[derive(Debug, Clone)]
pub struct SmppSettings {
    /// `host:port` of the SMSC.
    pub addr: String,
    pub system_id: String,
    pub password: Secret<String>,
    /// The alphanumeric sender (`source_addr_ton` 5).
    pub source_addr: String,
    pub enquire_link_interval_s: u64,
    /// Most `submit_sm` outstanding at once, as the SMSC counts them: one answered after its
    /// timeout holds its slot until the answer comes (or the bind ends).
    pub window_max: usize,
    /// How long to wait for any response (bind, submit, unbind), and for a window slot.
    pub response_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub tls: bool,
    /// Re-bind backoff after a loss: doubles from the minimum up to the maximum.
    pub rebind_backoff_min_ms: u64,
    pub rebind_backoff_max_ms: u64,
    /// Tries per message when the SMSC answers ESME_RTHROTTLED or ESME_RMSGQFUL.
    pub submit_attempts_max: u32,
    /// Wait before the second try; doubles per try up to the maximum.
    pub throttle_backoff_min_ms: u64,
    pub throttle_backoff_max_ms: u64,
    /// Deliveries waiting for the session at once (for a bind, in the window or for a slot);
    /// more are answered `Unavailable` at once.
    pub pending_max: usize,
    /// Bound on each database statement of the channel.
    pub database_timeout_ms: u64,
}

/// `system_id` is a C-octet string of at most 16 octets with its terminator.
const SYSTEM_ID_LEN_MAX: usize = 15;
/// `password` is at most 9 octets with its terminator.
const PASSWORD_LEN_MAX: usize = 8;
/// Upper bounds of the session's counts and waits: past them a value is a mistake, and would
/// overflow a semaphore or a deadline.
const WINDOW_MAX_LIMIT: usize = 10_000;
const PENDING_MAX_LIMIT: usize = 1_000_000;
const TIMEOUT_MS_LIMIT: u64 = 600_000;
/// GSM alphanumeric senders are at most 11 characters.
const SOURCE_ADDR_LEN_MAX: usize = 11;

impl SmppSettings {
    pub fn from_config(config: &SmppConfig) -> Self {
        Self {
            addr: config.addr.clone(),
            system_id: config.system_id.clone(),
            password: config.password.clone(),
            source_addr: config.source_addr.clone(),
            enquire_link_interval_s: config.enquire_link_interval_s,
            window_max: config.window_max,
            response_timeout_ms: config.response_timeout_ms,
            connect_timeout_ms: 5_000,
            tls: config.tls,
            rebind_backoff_min_ms: 500,
            rebind_backoff_max_ms: 30_000,
            submit_attempts_max: 5,
            throttle_backoff_min_ms: 200,
            throttle_backoff_max_ms: 5_000,
            pending_max: 10_000,
            database_timeout_ms: 5_000,
        }
    }

    /// Every problem, one per line, naming the `[smpp]` key.
    pub fn validate(&self) -> Result<(), SmppSettingsError> {
        let mut problems = Vec::new();
        if self
            .addr
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            problems.push(format!("smpp.addr: `{}` is not host:port", self.addr));
        }
        if self.system_id.is_empty()
            || self.system_id.len() > SYSTEM_ID_LEN_MAX
            || !is_printable_ascii(&self.system_id)
        {
            problems.push(format!(
                "smpp.system_id: must be 1 to {SYSTEM_ID_LEN_MAX} printable ASCII characters"
            ));
        }
        let password = self.password.expose();
        if password.len() > PASSWORD_LEN_MAX || !is_printable_ascii(password) {
            problems.push(format!(
                "smpp.password: must be at most {PASSWORD_LEN_MAX} printable ASCII characters"
            ));
        }
        if self.source_addr.is_empty()
            || self.source_addr.chars().count() > SOURCE_ADDR_LEN_MAX
            || !self
                .source_addr
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ')
        {
            problems.push(format!(
                "smpp.source_addr: must be 1 to {SOURCE_ADDR_LEN_MAX} letters, digits or spaces"
            ));
        }
        let counts = [
            ("window_max", self.window_max, WINDOW_MAX_LIMIT),
            ("pending_max", self.pending_max, PENDING_MAX_LIMIT),
            (
                "submit_attempts_max",
                self.submit_attempts_max as usize,
                100,
            ),
        ];
        for (name, value, max) in counts {
            if !(1..=max).contains(&value) {
                problems.push(format!("smpp.{name}: must be 1 to {max}"));
            }
        }
        let spans = [
            (
                "response_timeout_ms",
                self.response_timeout_ms,
                TIMEOUT_MS_LIMIT,
            ),
            (
                "connect_timeout_ms",
                self.connect_timeout_ms,
                TIMEOUT_MS_LIMIT,
            ),
            (
                "enquire_link_interval_s",
                self.enquire_link_interval_s,
                24 * 3600,
            ),
        ];
        for (name, value, max) in spans {
            if !(1..=max).contains(&value) {
                problems.push(format!("smpp.{name}: must be 1 to {max}"));
            }
        }
        if self.rebind_backoff_min_ms == 0
            || self.rebind_backoff_max_ms < self.rebind_backoff_min_ms
            || self.rebind_backoff_max_ms > TIMEOUT_MS_LIMIT
        {
            problems.push("smpp: rebind backoff must be positive, minimum at most maximum".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SmppSettingsError(problems))
        }
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    pub fn database_timeout(&self) -> Duration {
        Duration::from_millis(self.database_timeout_ms)
    }

    /// Backoff before re-bind number `failures` (1 = first retry).
    pub fn rebind_backoff(&self, failures: u32) -> Duration {
        doubling(
            self.rebind_backoff_min_ms,
            self.rebind_backoff_max_ms,
            failures,
        )
    }

    /// Backoff after throttled try number `attempt` (1 = first try).
    pub fn throttle_backoff(&self, attempt: u32) -> Duration {
        doubling(
            self.throttle_backoff_min_ms,
            self.throttle_backoff_max_ms,
            attempt,
        )
    }
}

fn doubling(min_ms: u64, max_ms: u64, step: u32) -> Duration {
    let factor = 1u64 << step.saturating_sub(1).min(20);
    Duration::from_millis(min_ms.saturating_mul(factor).min(max_ms))
}

fn is_printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct SmppSettingsError(pub Vec<String>);

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> SmppSettings {
        let config = SmppConfig {
            password: "secret".into(),
            ..SmppConfig::default()
        };
        SmppSettings::from_config(&config)
    }

    #[test]
    fn defaults_from_the_config_are_valid() {
        good().validate().unwrap();
    }

    #[test]
    fn each_bad_value_is_named() {
        let mut s = good();
        s.addr = "nowhere".into();
        s.password = Secret::new("far too long".into());
        s.source_addr = "PAYHUB-GATEWAY".into();
        s.window_max = 0;
        let err = s.validate().unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(err.to_string().contains("smpp.addr"));
        assert!(err.to_string().contains("smpp.password"));
        assert!(!err.to_string().contains("far too long"));
        // Past its bound, a wait or a count would overflow a deadline or a semaphore.
        let mut s = good();
        s.window_max = usize::MAX;
        s.response_timeout_ms = u64::MAX;
        let err = s.validate().unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(
            err.to_string()
                .contains("smpp.window_max: must be 1 to 10000")
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = good();
        assert_eq!(s.rebind_backoff(1), Duration::from_millis(500));
        assert_eq!(s.rebind_backoff(2), Duration::from_millis(1_000));
        assert_eq!(s.rebind_backoff(60), Duration::from_millis(30_000));
        assert_eq!(s.throttle_backoff(3), Duration::from_millis(800));
    }
}
