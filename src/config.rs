//! The TOML configuration of operations.md, with `PAYHUB_<SECTION>__<KEY>` environment overrides
//! and `DATABASE_URL`. Every problem is reported on a line of its own.

use payhub_actors::Secret;
use payhub_actors::store::{DatabaseTls, PoolOptions, StoreError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Longest any payment duration may be configured (lifetime, code validity, resend interval,
/// lockout): larger values are mistakes, and would overflow the clock arithmetic.
pub const PAYMENT_DURATION_S_MAX: u64 = 366 * 24 * 3600;
/// Bounds on `http.request_deadline_ms`: above the code page's own wait for the bank, with room
/// for the page after it; at most ten minutes.
pub const REQUEST_DEADLINE_MIN_MS: u64 = crate::http::pages::CODE_STEP_WAIT_MAX_MS + 10_000;
pub const REQUEST_DEADLINE_MAX_MS: u64 = 600_000;
/// Most HTTPS connections that `http.connections_max` may allow: more than a process's file
/// descriptors on any ordinary system.
pub const HTTP_CONNECTIONS_MAX: usize = 1_000_000;
/// Bounds on the other durations and counts of the configuration. Values past them are mistakes,
/// and would overflow a deadline's arithmetic or a semaphore's count at run time.
pub const TIMEOUT_MS_MAX: u64 = 600_000;
pub const INTERVAL_MS_MAX: u64 = 24 * 3600 * 1000;
pub const DATABASE_POOL_SIZE_MAX: usize = 1_000;
/// `database.statement_timeout_ms` at least: a group commit of the busiest writer takes a few ms.
/// At most `TIMEOUT_MS_MAX`, so that a stuck statement does not hold a connection for longer than
/// an operator would wait to hear of it.
pub const STATEMENT_TIMEOUT_MIN_MS: u64 = 100;
pub const CONCURRENCY_MAX: usize = 100_000;
/// actix-server's own limit on HTTP workers (it panics past it).
pub const HTTP_WORKERS_MAX: usize = 512;
/// Bounds on `http.body_max_bytes`: a payment request is a few KiB.
pub const BODY_MAX_BYTES_MIN: usize = 1_024;
pub const BODY_MAX_BYTES_MAX: usize = 1_048_576;
/// Most payment actors alive at once that may be configured (each holds a few KiB).
pub const PAYMENTS_IN_FLIGHT_MAX_LIMIT: usize = 10_000_000;
/// Shortest operator token accepted: it guards the operator page from the network.
pub const OPERATOR_TOKEN_MIN_CHARS: usize = 16;
/// Bounds on the terminal switch's ACK wait and keep-alive interval.
pub const ACK_TIMEOUT_MS_MIN: u64 = 100;
/// A payment waits 10 s for a channel to take a code (`PaymentSettings::delivery_timeout_ms`);
/// the ACK wait, with the session's 1 s margin and the hops' 100 ms each, must fit in it, or a
/// terminal that answers within the time its WELCOME allows is judged silent.
pub const ACK_TIMEOUT_MS_MAX: u64 = 8_500;
pub const KEEPALIVE_INTERVAL_S_MAX: u64 = 3_600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub institution: InstitutionConfig,
    #[serde(default)]
    pub smpp: SmppConfig,
    #[serde(default)]
    pub links: Vec<LinkConfig>,
    #[serde(default)]
    pub payments: PaymentsConfig,
    #[serde(default)]
    pub terminal_switch: TerminalSwitchConfig,
    #[serde(default)]
    pub operator: OperatorConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub security: SecurityConfig,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(default)]
    pub url: String,
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// When set, a TLS connection (the URL's `sslmode`: `prefer`, the default, or `require`) must
    /// show a certificate from this CA for the URL's host. Unset, the certificate is not checked.
    #[serde(default)]
    pub tls_ca_cert: Option<PathBuf>,
    /// How long one statement may run, lock waits included, before PostgreSQL cancels it.
    #[serde(default = "defaults::statement_timeout_ms")]
    pub statement_timeout_ms: u64,
}

impl DatabaseConfig {
    /// A pool of `size` connections to the database, with its TLS checks and statement timeout.
    pub fn pool(&self, size: usize) -> Result<deadpool_postgres::Pool, StoreError> {
        self.pool_named(size, None)
    }

    /// [`pool`](Self::pool), each session named `application_name`.
    pub fn pool_named(
        &self,
        size: usize,
        application_name: Option<String>,
    ) -> Result<deadpool_postgres::Pool, StoreError> {
        let tls = match &self.tls_ca_cert {
            Some(ca) => DatabaseTls::CheckedAgainst(ca.clone()),
            None => DatabaseTls::Unchecked,
        };
        let options = PoolOptions {
            size,
            tls,
            statement_timeout_ms: self.statement_timeout_ms,
            application_name,
        };
        payhub_actors::store::pool_with(&self.url, &options)
    }
}

/// The URL's password, if any, never reaches Debug output.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &payhub_actors::store::redacted_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "defaults::http_listen")]
    pub listen: SocketAddr,
    pub public_url: url::Url,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub merchant_ca_cert: PathBuf,
    #[serde(default)]
    pub merchant_ca_key: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "defaults::body_max_bytes")]
    pub body_max_bytes: usize,
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// The longest a request may take, its body included: a client that sends a head and then
    /// holds its body back would otherwise keep the connection for ever.
    #[serde(default = "defaults::request_deadline_ms")]
    pub request_deadline_ms: u64,
    /// Connections open at once, all workers together; each holds a file descriptor. Past it a
    /// worker accepts no more until one closes.
    #[serde(default = "defaults::connections_max")]
    pub connections_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstitutionConfig {
    /// Field 32, the gateway's acquiring institution id.
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmppConfig {
    #[serde(default = "defaults::smpp_addr")]
    pub addr: String,
    #[serde(default = "defaults::smpp_system_id")]
    pub system_id: String,
    #[serde(default)]
    pub password: Secret<String>,
    #[serde(default = "defaults::smpp_source_addr")]
    pub source_addr: String,
    #[serde(default = "defaults::enquire_link_interval_s")]
    pub enquire_link_interval_s: u64,
    #[serde(default = "defaults::smpp_window_max")]
    pub window_max: usize,
    #[serde(default = "defaults::response_timeout_ms")]
    pub response_timeout_ms: u64,
    #[serde(default)]
    pub tls: bool,
    /// Off: no SMS channel (the terminal channel only).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
}

impl Default for SmppConfig {
    fn default() -> Self {
        Self {
            addr: defaults::smpp_addr(),
            system_id: defaults::smpp_system_id(),
            password: Secret::default(),
            source_addr: defaults::smpp_source_addr(),
            enquire_link_interval_s: defaults::enquire_link_interval_s(),
            window_max: defaults::smpp_window_max(),
            response_timeout_ms: defaults::response_timeout_ms(),
            tls: false,
            enabled: true,
        }
    }
}

/// Who runs the BIPS at the other end of a link (`owner` in `[[links]]`).
pub use payhub_actors::bank::LinkOwner;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub name: String,
    pub addr: String,
    pub owner: LinkOwner,
    pub banks: Vec<String>,
    /// Also bounds opening the connection (TCP connect and TLS handshake).
    #[serde(default = "defaults::response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// An echo (0800/301) goes out when nothing was received from the bank for this long.
    #[serde(default = "defaults::echo_interval_s")]
    pub echo_interval_s: u64,
    #[serde(default = "defaults::in_flight_max")]
    pub in_flight_max: usize,
    #[serde(default = "defaults::reversal_interval_ms")]
    pub reversal_interval_ms: u64,
    #[serde(default = "defaults::reconnect_backoff_max_ms")]
    pub reconnect_backoff_max_ms: u64,
    /// Verify the BIPS's certificate against this CA and talk TLS.
    #[serde(default)]
    pub tls_ca_cert: Option<PathBuf>,
    /// Hex of the 16-byte X9.19 MAC key; when set, messages are signed in field 128 and each one
    /// received is checked (MAC in field 128, else 64).
    #[serde(default)]
    pub mac_key_hex: Option<Secret<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    #[serde(default = "defaults::payment_lifetime_s")]
    pub lifetime_s: u64,
    #[serde(default = "defaults::code_digits")]
    pub code_digits: u32,
    #[serde(default = "defaults::code_validity_s")]
    pub code_validity_s: u64,
    #[serde(default = "defaults::code_attempts_max")]
    pub code_attempts_max: u32,
    #[serde(default = "defaults::code_resends_max")]
    pub code_resends_max: u32,
    #[serde(default = "defaults::code_resend_interval_s")]
    pub code_resend_interval_s: u64,
    #[serde(default = "defaults::password_attempts_max")]
    pub password_attempts_max: u32,
    #[serde(default = "defaults::identity_failures_max")]
    pub identity_failures_max: u32,
    #[serde(default = "defaults::identity_lockout_s")]
    pub identity_lockout_s: u64,
    /// Let a customer name an unregistered mobile number for one payment (off by default).
    #[serde(default)]
    pub allow_unregistered_receiver: bool,
    /// Payments in flight at once (actors alive); more are refused with 503.
    #[serde(default = "defaults::in_flight_max_payments")]
    pub in_flight_max: usize,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        toml::from_str("").expect("all payment keys have defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalSwitchConfig {
    #[serde(default = "defaults::terminal_switch_listen")]
    pub listen: SocketAddr,
    #[serde(default = "defaults::yes")]
    pub tls: bool,
    #[serde(default = "defaults::ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    #[serde(default = "defaults::keepalive_interval_s")]
    pub keepalive_interval_s: u64,
}

impl Default for TerminalSwitchConfig {
    fn default() -> Self {
        toml::from_str("").expect("all terminal switch keys have defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    #[serde(default = "defaults::operator_listen")]
    pub listen: SocketAddr,
    /// When set, the operator page asks for it (`Authorization: Bearer …`); otherwise loopback only.
    #[serde(default)]
    pub token: Option<Secret<String>>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        toml::from_str("").expect("all operator keys have defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    #[serde(default = "defaults::webhook_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::webhook_retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "defaults::webhook_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Give up after this long (at least 24 h).
    #[serde(default = "defaults::webhook_give_up_after_s")]
    pub give_up_after_s: u64,
    #[serde(default = "defaults::webhook_concurrency_max")]
    pub concurrency_max: usize,
    /// Whether a `notify_url` may lead to a loopback, private or link-local address. Refused by
    /// default: a merchant could otherwise make the gateway post into its own network (the cloud
    /// metadata address, a database's HTTP port). The demo, and a trial with the merchant on
    /// the gateway's network, set `true`.
    #[serde(default)]
    pub allow_private_destinations: bool,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        toml::from_str("").expect("all webhook keys have defaults")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// 32 random bytes keying the hashes of codes and sessions; created (mode 0600) when missing.
    /// Default: `gateway-secret.key` beside `http.tls_key`.
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
}

/// Each key's default, where the file leaves it out.
pub mod defaults {
    use std::net::SocketAddr;

    pub fn yes() -> bool {
        true
    }
    pub fn pool_size() -> usize {
        16
    }
    pub fn statement_timeout_ms() -> u64 {
        payhub_actors::store::STATEMENT_TIMEOUT_MS_DEFAULT
    }
    pub fn http_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8443))
    }
    pub fn body_max_bytes() -> usize {
        16 * 1024
    }
    pub fn request_deadline_ms() -> u64 {
        60_000
    }
    pub fn connections_max() -> usize {
        8_192
    }
    pub fn workers() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(super::HTTP_WORKERS_MAX)
    }
    pub fn smpp_addr() -> String {
        "127.0.0.1:2775".into()
    }
    pub fn smpp_system_id() -> String {
        "payhub".into()
    }
    pub fn smpp_source_addr() -> String {
        "PAYHUB".into()
    }
    pub fn enquire_link_interval_s() -> u64 {
        30
    }
    pub fn smpp_window_max() -> usize {
        10
    }
    pub fn response_timeout_ms() -> u64 {
        5_000
    }
    pub fn echo_interval_s() -> u64 {
        30
    }
    pub fn in_flight_max() -> usize {
        1_024
    }
    pub fn reversal_interval_ms() -> u64 {
        10_000
    }
    pub fn reconnect_backoff_max_ms() -> u64 {
        30_000
    }
    pub fn payment_lifetime_s() -> u64 {
        15 * 60
    }
    pub fn code_digits() -> u32 {
        6
    }
    pub fn code_validity_s() -> u64 {
        300
    }
    pub fn code_attempts_max() -> u32 {
        3
    }
    pub fn code_resends_max() -> u32 {
        2
    }
    pub fn code_resend_interval_s() -> u64 {
        30
    }
    pub fn password_attempts_max() -> u32 {
        3
    }
    pub fn identity_failures_max() -> u32 {
        5
    }
    pub fn identity_lockout_s() -> u64 {
        15 * 60
    }
    pub fn in_flight_max_payments() -> usize {
        100_000
    }
    pub fn terminal_switch_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
    pub fn ack_timeout_ms() -> u64 {
        5_000
    }
    pub fn keepalive_interval_s() -> u64 {
        30
    }
    pub fn operator_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
    pub fn webhook_timeout_ms() -> u64 {
        10_000
    }
    pub fn webhook_retry_base_ms() -> u64 {
        5_000
    }
    pub fn webhook_retry_max_ms() -> u64 {
        3_600_000
    }
    pub fn webhook_give_up_after_s() -> u64 {
        3 * 24 * 3600
    }
    pub fn webhook_concurrency_max() -> usize {
        32
    }
}

/// Every problem found in a configuration, on one line, each after a "; ".
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Reads `path`, applies the environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        let env = process_environment()?;
        Self::from_toml(&text, &env).map_err(|ConfigErrors(lines)| {
            ConfigErrors(
                lines
                    .into_iter()
                    .map(|l| format!("{}: {l}", path.display()))
                    .collect(),
            )
        })
    }

    /// Parses `text` with overrides from `env` (`PAYHUB_<SECTION>__<KEY>`, `DATABASE_URL`).
    pub fn from_toml(text: &str, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
        let mut value: toml::Table =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![syntax_error(text, &e)]))?;
        let guesses = apply_env(&mut value, env)?;
        let config = deserialize(value, guesses)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        self.check_service(&mut problems);
        self.check_listeners(&mut problems);
        self.check_payments(&mut problems);
        self.check_links(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// The database, the HTTP listener and the institution.
    fn check_service(&self, problems: &mut Vec<String>) {
        if self.database.url.is_empty() {
            problems.push("database.url: missing (set it, or DATABASE_URL)".to_string());
        }
        if !(1..=DATABASE_POOL_SIZE_MAX).contains(&self.database.pool_size) {
            problems.push(format!(
                "database.pool_size: must be 1 to {DATABASE_POOL_SIZE_MAX}"
            ));
        }
        if !(STATEMENT_TIMEOUT_MIN_MS..=TIMEOUT_MS_MAX)
            .contains(&self.database.statement_timeout_ms)
        {
            problems.push(format!(
                "database.statement_timeout_ms: must be {STATEMENT_TIMEOUT_MIN_MS} to \
                 {TIMEOUT_MS_MAX}"
            ));
        }
        if self.http.public_url.scheme() != "https" {
            // The listener speaks TLS only: an http pay_url would lead customers nowhere.
            problems.push("http.public_url: must be an https URL".to_string());
        }
        if !(REQUEST_DEADLINE_MIN_MS..=REQUEST_DEADLINE_MAX_MS)
            .contains(&self.http.request_deadline_ms)
        {
            problems.push(format!(
                "http.request_deadline_ms: must be {REQUEST_DEADLINE_MIN_MS} to \
                 {REQUEST_DEADLINE_MAX_MS} (the code page alone may wait {} ms for the bank)",
                crate::http::pages::CODE_STEP_WAIT_MAX_MS
            ));
        }
        if !(1..=HTTP_CONNECTIONS_MAX).contains(&self.http.connections_max) {
            problems.push(format!(
                "http.connections_max: must be 1 to {HTTP_CONNECTIONS_MAX}"
            ));
        }
        if self.institution.id.is_empty()
            || self.institution.id.len() > 11
            || !self.institution.id.bytes().all(|b| b.is_ascii_digit())
        {
            problems.push("institution.id: must be 1 to 11 digits (ISO 8583 field 32)".to_string());
        }
    }

    /// The HTTP workers and body limit, the terminal switch and the operator page.
    fn check_listeners(&self, problems: &mut Vec<String>) {
        let counts = [
            ("http.workers", self.http.workers, 1, HTTP_WORKERS_MAX),
            (
                "http.body_max_bytes",
                self.http.body_max_bytes,
                BODY_MAX_BYTES_MIN,
                BODY_MAX_BYTES_MAX,
            ),
        ];
        let spans = [
            (
                "terminal_switch.ack_timeout_ms",
                self.terminal_switch.ack_timeout_ms,
                ACK_TIMEOUT_MS_MIN,
                ACK_TIMEOUT_MS_MAX,
            ),
            (
                "terminal_switch.keepalive_interval_s",
                self.terminal_switch.keepalive_interval_s,
                1,
                KEEPALIVE_INTERVAL_S_MAX,
            ),
        ];
        let out_of = counts
            .iter()
            .map(|&(name, v, min, max)| (name, v as u64, min as u64, max as u64))
            .chain(spans);
        for (name, value, min, max) in out_of {
            if !(min..=max).contains(&value) {
                problems.push(format!("{name}: must be {min} to {max}"));
            }
        }
        if let Some(token) = &self.operator.token
            && token.expose().trim().chars().count() < OPERATOR_TOKEN_MIN_CHARS
        {
            problems.push(format!(
                "operator.token: at least {OPERATOR_TOKEN_MIN_CHARS} characters when set \
                 (without a token, the operator page answers loopback only)"
            ));
        }
    }

    /// The payment rules and the webhook retry period.
    fn check_payments(&self, problems: &mut Vec<String>) {
        let p = &self.payments;
        if !(1..=PAYMENTS_IN_FLIGHT_MAX_LIMIT).contains(&p.in_flight_max) {
            problems.push(format!(
                "payments.in_flight_max: must be 1 to {PAYMENTS_IN_FLIGHT_MAX_LIMIT}"
            ));
        }
        if !(6..=8).contains(&p.code_digits) {
            problems.push("payments.code_digits: must be 6, 7 or 8".to_string());
        }
        if p.code_validity_s == 0 || p.lifetime_s == 0 {
            problems.push("payments: code_validity_s and lifetime_s must be positive".to_string());
        }
        Self::check_fixed_rules(p, problems);
        let durations = [
            ("lifetime_s", p.lifetime_s),
            ("code_validity_s", p.code_validity_s),
            ("code_resend_interval_s", p.code_resend_interval_s),
            ("identity_lockout_s", p.identity_lockout_s),
        ];
        for (name, seconds) in durations {
            if seconds > PAYMENT_DURATION_S_MAX {
                problems.push(format!(
                    "payments.{name}: at most {PAYMENT_DURATION_S_MAX} (one year)"
                ));
            }
        }
        self.check_webhooks(problems);
    }

    /// The webhook worker: at least 24 h of retries, and every bound finite.
    fn check_webhooks(&self, problems: &mut Vec<String>) {
        let w = &self.webhooks;
        if !(24 * 3600..=PAYMENT_DURATION_S_MAX).contains(&w.give_up_after_s) {
            problems.push(format!(
                "webhooks.give_up_after_s: must be 86400 (24 h) to {PAYMENT_DURATION_S_MAX}"
            ));
        }
        let spans = [
            ("timeout_ms", w.timeout_ms, TIMEOUT_MS_MAX),
            ("retry_base_ms", w.retry_base_ms, INTERVAL_MS_MAX),
            ("retry_max_ms", w.retry_max_ms, INTERVAL_MS_MAX),
        ];
        for (name, value, max) in spans {
            if !(1..=max).contains(&value) {
                problems.push(format!("webhooks.{name}: must be 1 to {max}"));
            }
        }
        if w.retry_max_ms < w.retry_base_ms {
            problems.push("webhooks.retry_max_ms: must be at least retry_base_ms".to_string());
        }
        if !(1..=CONCURRENCY_MAX).contains(&w.concurrency_max) {
            problems.push(format!(
                "webhooks.concurrency_max: must be 1 to {CONCURRENCY_MAX}"
            ));
        }
    }

    /// gateway-http.md fixes the tries, resends and lockout: an operator may make them stricter,
    /// never looser than the contract that customers and merchants were given.
    fn check_fixed_rules(p: &PaymentsConfig, problems: &mut Vec<String>) {
        let counts = [
            ("code_attempts_max", p.code_attempts_max, 1, 3),
            ("code_resends_max", p.code_resends_max, 0, 2),
            ("password_attempts_max", p.password_attempts_max, 1, 3),
            ("identity_failures_max", p.identity_failures_max, 1, 5),
        ];
        for (name, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                problems.push(format!(
                    "payments.{name}: must be {min} to {max} (gateway-http.md allows {max})"
                ));
            }
        }
        let spans = [
            ("code_resend_interval_s", p.code_resend_interval_s, 30),
            ("identity_lockout_s", p.identity_lockout_s, 15 * 60),
        ];
        for (name, seconds, min) in spans {
            if seconds < min {
                problems.push(format!(
                    "payments.{name}: must be at least {min} (gateway-http.md)"
                ));
            }
        }
    }

    /// The bank links: unique names, banks served, bounds and MAC keys.
    /// Each `[[links]]` entry as the link will take it (`bank_links::link_settings`: errors name
    /// the link and the key), and no name twice.
    fn check_links(&self, problems: &mut Vec<String>) {
        let mut names = std::collections::HashSet::new();
        for (i, link) in self.links.iter().enumerate() {
            if !names.insert(link.name.as_str()) {
                problems.push(format!("links[{i}].name: `{}` is used twice", link.name));
            }
            if let Err(e) = crate::bank_links::link_settings(link) {
                problems.push(e);
            }
        }
    }

    /// The file that holds the key for code and session hashes.
    pub fn secret_key_path(&self) -> PathBuf {
        self.security.secret_key_file.clone().unwrap_or_else(|| {
            self.http
                .tls_key
                .parent()
                .unwrap_or(Path::new("."))
                .join("gateway-secret.key")
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A deserializer's message without the values it quotes (between backticks or double quotes):
/// the wrongly typed value may be a password or a token written without its quotes. The names
/// the schema gives stay: a field's (`missing field`, `unknown field`) and what was expected.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted: Option<(char, String)> = None;
    let mut escaped = false;
    for c in message.chars() {
        match &mut quoted {
            // Within a quoted value, an escaped quote is part of it (serde quotes strings as
            // Rust's Debug does).
            Some((_, text)) if escaped => {
                text.push(c);
                escaped = false;
            }
            Some((_, text)) if c == '\\' => {
                text.push(c);
                escaped = true;
            }
            Some((open, text)) if c == *open => {
                if out.ends_with("field ") || out.contains("expected") {
                    out.extend([*open].into_iter().chain(text.chars()).chain([*open]));
                } else {
                    out.push('…');
                }
                quoted = None;
            }
            Some((_, text)) => text.push(c),
            None if c == '`' || c == '"' => quoted = Some((c, String::new())),
            None => out.push(c),
        }
    }
    if quoted.is_some() {
        out.push('…');
    }
    out
}

/// A TOML syntax error as its line and column and the reason, without the line's text (which may
/// hold a password).
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    });
    format!("{}{}", at.unwrap_or_default(), one_line(e.message()))
}

/// A value that only the environment gives, read as TOML: a number, say. The key's type is
/// known only when the configuration is read.
struct Guess {
    keys: Vec<String>,
    raw: String,
}

/// The configuration in `table`. Where a guess turns out to be text (a numeric token, say), it is
/// taken again as the text it was.
fn deserialize(mut table: toml::Table, mut guesses: Vec<Guess>) -> Result<Config, ConfigErrors> {
    loop {
        let value = toml::Value::Table(table.clone());
        let error = match serde_path_to_error::deserialize::<_, Config>(value) {
            Ok(config) => return Ok(config),
            Err(error) => error,
        };
        let wrong = guesses.iter().position(|g| path_is(error.path(), &g.keys));
        let Some(guess) = wrong.map(|at| guesses.swap_remove(at)) else {
            let path = error.path().to_string();
            let why = without_values(&error.inner().to_string());
            let line = match error.path().iter().next() {
                Some(_) => format!("{path}: {why}"),
                None => why,
            };
            return Err(ConfigErrors(vec![one_line(&line)]));
        };
        set_path(&mut table, &guess.keys, &guess.raw, Read::Text)
            .map_err(|e| ConfigErrors(vec![e]))?;
    }
}

fn path_is(path: &serde_path_to_error::Path, keys: &[String]) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    segments.len() == keys.len()
        && segments
            .iter()
            .zip(keys)
            .all(|(segment, key)| match segment {
                Segment::Map { key: name } => name == key,
                Segment::Seq { index } => key.parse() == Ok(*index),
                _ => false,
            })
}

/// `PAYHUB_HTTP__LISTEN=…` sets `http.listen`; `PAYHUB_LINKS__0__ADDR` sets `links[0].addr`.
/// Where the file has text, the value is taken as text; else it is read as TOML when it parses
/// (numbers, booleans, arrays), and the keys read so without the file's word are the guesses.
/// The process's environment as text. A variable that is not UTF-8 is passed over, unless it is
/// one the configuration reads: that is an error naming it, never its value (`std::env::vars`
/// would panic and print the value, which may be a password).
fn process_environment() -> Result<Vec<(String, String)>, ConfigErrors> {
    let mut env = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => env.push((name, value)),
            (Ok(name), Err(_)) if is_configuration_variable(&name) => {
                problems.push(format!("{name}: the value is not valid UTF-8"));
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(env)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// Whether [`apply_env`] reads the variable.
fn is_configuration_variable(name: &str) -> bool {
    name == "DATABASE_URL" || name.starts_with("PAYHUB_") && name.contains("__")
}

fn apply_env(root: &mut toml::Table, env: &[(String, String)]) -> Result<Vec<Guess>, ConfigErrors> {
    let mut problems = Vec::new();
    let mut guesses = Vec::new();
    for (name, raw) in env {
        if name == "DATABASE_URL" {
            let db = root
                .entry("database")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(db) = db.as_table_mut() {
                let empty = db
                    .get("url")
                    .and_then(|u| u.as_str())
                    .is_none_or(str::is_empty);
                if empty {
                    db.insert("url".into(), toml::Value::String(raw.clone()));
                }
            }
            continue;
        }
        // Other PAYHUB_ variables (PAYHUB_LOG, the log filter) are not configuration keys.
        if !is_configuration_variable(name) {
            continue;
        }
        let path = &name["PAYHUB_".len()..];
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            problems.push(format!("{name}: expected PAYHUB_<SECTION>__<KEY>"));
            continue;
        }
        match set_path(root, &keys, raw, Read::AsFile) {
            Ok(true) => guesses.push(Guess {
                keys,
                raw: raw.clone(),
            }),
            Ok(false) => {}
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(guesses)
    } else {
        Err(ConfigErrors(problems))
    }
}

fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// How an environment value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// As the file has the key: text where it has text, else TOML when it parses.
    AsFile,
    /// As text, whatever it looks like.
    Text,
}

/// Sets the value at `keys` from `raw`, read as `read` says; `true` when the value is a guess.
fn set_path(
    table: &mut toml::Table,
    keys: &[String],
    raw: &str,
    read: Read,
) -> Result<bool, String> {
    let Some((first, rest)) = keys.split_first() else {
        return Err("empty key".into());
    };
    if rest.is_empty() {
        // Where the file has a string, the variable's text is taken as it is: `0x1F` or `1_000`
        // stay what the operator wrote, not the number TOML would read.
        let in_file = table.get(first);
        let as_text = read == Read::Text || matches!(in_file, Some(toml::Value::String(_)));
        let value = if as_text {
            toml::Value::String(raw.to_string())
        } else {
            env_value(raw)
        };
        let guessed = in_file.is_none() && !value.is_str();
        table.insert(first.clone(), value);
        return Ok(guessed);
    }
    if !table.contains_key(first) && rest[0].parse::<usize>().is_ok() {
        // An entry of a list the file does not have (`[[links]]`): a variable sets a key of an
        // entry, it does not make one.
        return Err(format!("no {first}[{}] in the file", rest[0]));
    }
    let child = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match child {
        toml::Value::Table(t) => set_path(t, rest, raw, read),
        toml::Value::Array(items) => {
            let index: usize = rest[0]
                .parse()
                .map_err(|_| format!("`{}` is not an index", rest[0]))?;
            let item = items
                .get_mut(index)
                .ok_or_else(|| format!("no {first}[{index}]"))?;
            match item {
                toml::Value::Table(t) if rest.len() > 1 => set_path(t, &rest[1..], raw, read),
                _ => Err(format!("cannot set {first}[{index}]")),
            }
        }
        _ => Err(format!("`{first}` is not a section")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[database]
url = "postgres://localhost/payhub"
pool_size = 16
[http]
listen = "127.0.0.1:8443"
public_url = "https://127.0.0.1:8443"
tls_cert = "/x/server.crt"
tls_key = "/x/server.key"
merchant_ca_cert = "/x/merchant-ca.crt"
merchant_ca_key = "/x/merchant-ca.key"
[institution]
id = "99990001"
[smpp]
addr = "127.0.0.1:2775"
system_id = "payhub"
password = "secret"
source_addr = "PAYHUB"
[[links]]
name = "bips-a"
addr = "127.0.0.1:8583"
owner = "third_party"
banks = ["0001", "0002"]
response_timeout_ms = 5000
echo_interval_s = 30
"#;

    #[test]
    fn minimal_file_from_operations_md_loads_with_defaults() {
        let c = Config::from_toml(MINIMAL, &[]).unwrap();
        assert_eq!(c.links[0].owner, LinkOwner::ThirdParty);
        assert_eq!(c.payments.code_digits, 6);
        assert_eq!(c.payments.code_validity_s, 300);
        assert_eq!(c.payments.lifetime_s, 900);
        assert_eq!(c.secret_key_path(), PathBuf::from("/x/gateway-secret.key"));
        // A merchant's notify_url may not lead into the gateway's own network unless allowed.
        assert!(!c.webhooks.allow_private_destinations);
        assert!((1..=HTTP_WORKERS_MAX).contains(&c.http.workers));
    }

    #[test]
    fn a_bad_link_value_stops_the_load_naming_the_link_and_key() {
        for (from, to, key) in [
            (
                "echo_interval_s = 30",
                "echo_interval_s = 0",
                "echo_interval_s",
            ),
            ("127.0.0.1:8583", "127.0.0.1", "addr"),
            (
                "response_timeout_ms = 5000",
                "response_timeout_ms = 0",
                "response_timeout_ms",
            ),
        ] {
            let text = MINIMAL.replace(from, to);
            assert_ne!(text, MINIMAL);
            let e = Config::from_toml(&text, &[]).unwrap_err().to_string();
            assert!(e.contains("links.bips-a"), "{e}");
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn a_plain_http_public_url_is_refused() {
        let text = MINIMAL.replace("https://127.0.0.1:8443", "http://127.0.0.1:8443");
        assert_ne!(text, MINIMAL);
        let e = Config::from_toml(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("http.public_url: must be an https URL"), "{e}");
    }

    #[test]
    fn a_variable_for_a_link_the_file_lacks_names_itself() {
        let without_links = &MINIMAL[..MINIMAL.find("[[links]]").unwrap()];
        let env = [(
            "PAYHUB_LINKS__0__ADDR".to_string(),
            "10.0.0.1:9000".to_string(),
        )];
        let e = Config::from_toml(without_links, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PAYHUB_LINKS__0__ADDR: no links[0]"), "{e}");
    }

    #[test]
    fn environment_overrides_keys() {
        let env = vec![
            (
                "PAYHUB_DATABASE__URL".to_string(),
                "postgres://other/db".to_string(),
            ),
            ("PAYHUB_DATABASE__POOL_SIZE".to_string(), "4".to_string()),
            (
                "PAYHUB_LINKS__0__ADDR".to_string(),
                "10.0.0.1:9000".to_string(),
            ),
            ("PAYHUB_INSTITUTION__ID".to_string(), "12345".to_string()),
            ("PAYHUB_LOG".to_string(), "debug".to_string()),
            // Text that TOML would read as a number stays as written where the file has text.
            ("PAYHUB_SMPP__PASSWORD".to_string(), "0x1F".to_string()),
            ("PAYHUB_SMPP__SYSTEM_ID".to_string(), "1_000".to_string()),
        ];
        let c = Config::from_toml(MINIMAL, &env).unwrap();
        assert_eq!(c.smpp.password.expose(), "0x1F");
        assert!(
            !format!("{c:?}").contains("0x1F"),
            "the password in Debug output"
        );
        assert_eq!(c.smpp.system_id, "1_000");
        assert_eq!(c.database.url, "postgres://other/db");
        assert_eq!(c.database.pool_size, 4);
        assert_eq!(c.links[0].addr, "10.0.0.1:9000");
        assert_eq!(c.institution.id, "12345");
    }

    #[test]
    fn an_environment_value_for_a_key_the_file_lacks_takes_the_key_type() {
        let env = [
            // Text that reads as a number, for a text key: the text.
            (
                "PAYHUB_OPERATOR__TOKEN".to_string(),
                "00123456789012345".to_string(),
            ),
            // A number for a number key: the number.
            ("PAYHUB_PAYMENTS__CODE_DIGITS".to_string(), "8".to_string()),
        ];
        let c = Config::from_toml(MINIMAL, &env).unwrap();
        assert_eq!(c.operator.token.unwrap().expose(), "00123456789012345");
        assert_eq!(c.payments.code_digits, 8);
        // Text for a number key is refused, naming the key.
        let env = [(
            "PAYHUB_PAYMENTS__CODE_DIGITS".to_string(),
            "six".to_string(),
        )];
        let err = Config::from_toml(MINIMAL, &env).unwrap_err();
        assert!(err.to_string().contains("payments.code_digits"), "{err}");
    }

    #[test]
    fn the_rules_of_gateway_http_md_may_be_made_stricter_never_looser() {
        let with = |pairs: &[(&str, &str)]| {
            let env: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (format!("PAYHUB_PAYMENTS__{k}"), v.to_string()))
                .collect();
            Config::from_toml(MINIMAL, &env)
        };
        let stricter = with(&[("CODE_ATTEMPTS_MAX", "2"), ("CODE_RESEND_INTERVAL_S", "60")]);
        assert_eq!(stricter.unwrap().payments.code_attempts_max, 2);
        let looser = with(&[
            ("CODE_ATTEMPTS_MAX", "4"),
            ("CODE_RESENDS_MAX", "3"),
            ("CODE_RESEND_INTERVAL_S", "10"),
            ("PASSWORD_ATTEMPTS_MAX", "0"),
            ("IDENTITY_FAILURES_MAX", "6"),
            ("IDENTITY_LOCKOUT_S", "60"),
        ])
        .unwrap_err();
        assert_eq!(
            keys_named(&looser),
            [
                "payments.code_attempts_max",
                "payments.code_resends_max",
                "payments.password_attempts_max",
                "payments.identity_failures_max",
                "payments.code_resend_interval_s",
                "payments.identity_lockout_s",
            ],
            "{looser}"
        );
    }

    /// The key each problem names, in order.
    fn keys_named(errors: &ConfigErrors) -> Vec<&str> {
        errors
            .0
            .iter()
            .map(|p| p.split(':').next().unwrap_or(""))
            .collect()
    }

    /// Environment pairs as `from_toml` takes them.
    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Values that would overflow a deadline or a semaphore at run time are refused at start.
    #[test]
    fn durations_and_counts_past_their_bounds_are_refused() {
        let env = owned(&[
            ("PAYHUB_DATABASE__POOL_SIZE", "100000"),
            ("PAYHUB_DATABASE__STATEMENT_TIMEOUT_MS", "0"),
            ("PAYHUB_WEBHOOKS__GIVE_UP_AFTER_S", "9000000000000"),
            ("PAYHUB_WEBHOOKS__TIMEOUT_MS", "2700000000000000"),
            ("PAYHUB_WEBHOOKS__CONCURRENCY_MAX", "1000000"),
        ]);
        let err = Config::from_toml(MINIMAL, &env).unwrap_err();
        assert_eq!(
            keys_named(&err),
            [
                "database.pool_size",
                "database.statement_timeout_ms",
                "webhooks.give_up_after_s",
                "webhooks.timeout_ms",
                "webhooks.concurrency_max",
            ],
            "{err}"
        );
    }

    /// Values that would panic at start (actix's 512 workers), refuse every request, open the
    /// operator page to anyone, or stop every payment (`in_flight_max = 0`) are refused.
    #[test]
    fn listener_and_payment_table_bounds_are_refused_past_them() {
        let env = owned(&[
            ("PAYHUB_HTTP__WORKERS", "1024"),
            ("PAYHUB_HTTP__BODY_MAX_BYTES", "0"),
            ("PAYHUB_TERMINAL_SWITCH__ACK_TIMEOUT_MS", "9000"),
            ("PAYHUB_TERMINAL_SWITCH__KEEPALIVE_INTERVAL_S", "0"),
            ("PAYHUB_OPERATOR__TOKEN", ""),
            ("PAYHUB_PAYMENTS__IN_FLIGHT_MAX", "0"),
        ]);
        let err = Config::from_toml(MINIMAL, &env).unwrap_err();
        assert_eq!(
            keys_named(&err),
            [
                "http.workers",
                "http.body_max_bytes",
                "terminal_switch.ack_timeout_ms",
                "terminal_switch.keepalive_interval_s",
                "operator.token",
                "payments.in_flight_max",
            ],
            "{err}"
        );
        let short_token = owned(&[("PAYHUB_OPERATOR__TOKEN", "s3cret")]);
        let err = Config::from_toml(MINIMAL, &short_token).unwrap_err();
        assert_eq!(keys_named(&err), ["operator.token"], "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let good = owned(&[("PAYHUB_OPERATOR__TOKEN", "a-long-enough-operator-token")]);
        assert!(Config::from_toml(MINIMAL, &good).is_ok());
    }

    /// A password written wrongly is not repeated in the error: a syntax error gives its line and
    /// column, a type error the key.
    #[test]
    fn a_config_error_does_not_repeat_a_secret() {
        let bad_escape = MINIMAL.replace(r#"password = "secret""#, r#"password = "s3cr\qet""#);
        let err = Config::from_toml(&bad_escape, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("line 17, column 19: invalid escape"),
            "{err}"
        );
        assert!(!err.contains("s3cr"), "{err}");
        let unquoted = MINIMAL.replace(r#"password = "secret""#, "password = 73105566");
        let err = Config::from_toml(&unquoted, &[]).unwrap_err().to_string();
        assert!(err.starts_with("smpp.password: invalid type"), "{err}");
        assert!(!err.contains("73105566"), "{err}");
    }

    /// A missing key, an unknown one and a value outside a list are named, with what was
    /// expected; the value written is not repeated.
    #[test]
    fn a_config_error_names_the_key_and_what_was_expected() {
        let missing = MINIMAL.replace("public_url", "# public_url");
        let err = Config::from_toml(&missing, &[]).unwrap_err().to_string();
        assert!(err.contains("missing field `public_url`"), "{err}");
        let unknown = MINIMAL.replace("public_url", "publik_url");
        let err = Config::from_toml(&unknown, &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field `publik_url`"), "{err}");
        assert!(err.contains("`public_url`"), "{err}");
        assert_eq!(
            without_values("unknown variant `thirdparty`, expected one of `gateway`, `payer_bank`"),
            "unknown variant …, expected one of `gateway`, `payer_bank`"
        );
        assert_eq!(
            without_values("invalid type: string \"s3cret\", expected u64"),
            "invalid type: string …, expected u64"
        );
        assert_eq!(
            without_values("invalid value: `unterminated"),
            "invalid value: …"
        );
        assert_eq!(
            without_values(r#"invalid type: string "ab\"cd", expected u64"#),
            "invalid type: string …, expected u64"
        );
    }

    #[test]
    fn database_url_fills_an_empty_url() {
        let text = MINIMAL.replace("url = \"postgres://localhost/payhub\"", "");
        let env = vec![("DATABASE_URL".to_string(), "postgres://env/db".to_string())];
        assert_eq!(
            Config::from_toml(&text, &env).unwrap().database.url,
            "postgres://env/db"
        );
        assert!(
            Config::from_toml(&text, &[])
                .unwrap_err()
                .to_string()
                .contains("database.url")
        );
    }

    #[test]
    fn each_problem_is_one_line() {
        let text = MINIMAL
            .replace("id = \"99990001\"", "id = \"x\"")
            .replace("banks = [\"0001\", \"0002\"]", "banks = [\"bank\"]");
        let err = Config::from_toml(&text, &[]).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.0.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn a_request_deadline_shorter_than_the_code_pages_wait_is_refused() {
        let env = [(
            "PAYHUB_HTTP__REQUEST_DEADLINE_MS".to_string(),
            "5000".to_string(),
        )];
        let err = Config::from_toml(MINIMAL, &env).unwrap_err();
        assert!(
            err.to_string().contains("http.request_deadline_ms"),
            "{err}"
        );
        let c = Config::from_toml(MINIMAL, &[]).unwrap();
        assert_eq!(c.http.request_deadline_ms, 60_000);
    }

    #[test]
    fn the_connection_bound_is_a_positive_count() {
        let c = Config::from_toml(MINIMAL, &[]).unwrap();
        assert_eq!(c.http.connections_max, 8_192);
        for bad in ["0", "1000001"] {
            let env = [("PAYHUB_HTTP__CONNECTIONS_MAX".to_string(), bad.to_string())];
            let err = Config::from_toml(MINIMAL, &env).unwrap_err();
            assert!(err.to_string().contains("http.connections_max"), "{err}");
        }
    }

    #[test]
    fn durations_beyond_a_year_are_refused() {
        let env = [(
            "PAYHUB_PAYMENTS__LIFETIME_S".to_string(),
            "9223372036854775807".to_string(),
        )];
        let err = Config::from_toml(MINIMAL, &env).unwrap_err();
        assert!(err.to_string().contains("payments.lifetime_s"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused() {
        let err = Config::from_toml(&format!("{MINIMAL}\n[nonsense]\nx=1"), &[]).unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        let err = Config::from_toml(&MINIMAL.replace("pool_size = 16", "pool_size = \"a\""), &[])
            .unwrap_err();
        assert!(err.to_string().contains("pool_size"), "{err}");
    }
}
