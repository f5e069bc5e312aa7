//! `payhub terminal-sim`: a dedicated customer terminal. It connects to the terminal switch,
//! authenticates with its key, prints every code and outcome it receives (one JSON line each on
//! standard output, a sentence on standard error) and acknowledges them. For tests it can stay
//! silent, refuse, drop the connection mid-delivery, ignore keep-alives, or answer the code on
//! the pay page itself (`--answer-url` with the browser session's `--cookie`).

use crate::channels::terminal::auth::{SharedKey, TerminalKey};
use crate::channels::terminal::client::{ClientError, ClientOptions, TerminalClient};
use crate::channels::terminal::frame::{CodeFrame, ErrorCode, Frame, OutcomeFrame};
use crate::channels::terminal::tls::ClientTls;
use crate::cli::output;
use anyhow::Context as _;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct TerminalSimArgs {
    /// The terminal switch, `host:port`.
    #[arg(long)]
    pub switch: String,
    /// The terminal id (`trm_…`) printed by `payhub terminal add`.
    #[arg(long)]
    pub id: String,
    /// The terminal's shared key: the 64 hex characters printed by `payhub terminal add`.
    #[arg(
        long,
        env = "PAYHUB_TERMINAL_KEY",
        hide_env_values = true,
        required_unless_present = "private_key",
        conflicts_with = "private_key"
    )]
    pub key: Option<String>,
    /// Instead of a shared key: the terminal's Ed25519 or ECDSA P-256 private key (PEM), for a
    /// terminal registered with its public key.
    #[arg(long)]
    pub private_key: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for the switch (and the pay page with --answer-url).
    #[arg(long, conflicts_with_all = ["insecure", "no_tls"])]
    pub ca: Option<PathBuf>,
    /// Accept any certificate (tests and demos only).
    #[arg(long, conflicts_with = "no_tls")]
    pub insecure: bool,
    /// Plain TCP, for a switch configured with `tls = false`.
    #[arg(long)]
    pub no_tls: bool,
    /// The name to check the switch's certificate against (default: the host of --switch).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Never acknowledge (the switch's ACK timeout fires).
    #[arg(long, conflicts_with_all = ["refuse", "drop_on_delivery"])]
    pub silent: bool,
    /// Answer every delivery with NACK.
    #[arg(long, conflicts_with = "drop_on_delivery")]
    pub refuse: bool,
    /// Close the connection as soon as a delivery arrives, without acknowledging.
    #[arg(long)]
    pub drop_on_delivery: bool,
    /// Do not answer the switch's keep-alive PINGs.
    #[arg(long)]
    pub no_pong: bool,
    /// Reconnect after the connection is lost (waiting 1 s, doubling up to 60 s), as a device
    /// does; a refused key, or another connection of the terminal replacing this one, still
    /// ends the simulator.
    #[arg(long)]
    pub reconnect: bool,
    /// Enter each code on the pay page: the code page's URL (`{payment_id}` is replaced), for
    /// example `https://127.0.0.1:8443/pay/{payment_id}/code`.
    #[arg(long, requires = "cookie")]
    pub answer_url: Option<String>,
    /// The `Cookie` header of the browser session that passed the password step.
    #[arg(long, requires = "answer_url")]
    pub cookie: Option<String>,
}

/// What the simulated terminal does with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryBehaviour {
    Acknowledge,
    Silent,
    Refuse,
    DropConnection,
}

/// Entering the code on the pay page from the browser session that passed the password step.
#[derive(Debug, Clone)]
pub struct AutoAnswer {
    /// The code page; `{payment_id}` is replaced by the delivery's payment id.
    pub url: String,
    /// The browser session's `Cookie` header value.
    pub cookie: String,
    /// Trust this CA (PEM) for the pay page, or accept any certificate.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub client: ClientOptions,
    pub behaviour: DeliveryBehaviour,
    pub answer_pings: bool,
    pub answer: Option<AutoAnswer>,
}

/// What the simulated terminal saw, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SimEvent {
    Code {
        terminal_id: String,
        msg_id: u32,
        payment_id: String,
        code: String,
        amount: u64,
        currency: String,
        merchant: String,
        validity_s: u32,
        unregistered_receiver: bool,
        text: String,
        acknowledged: bool,
    },
    Outcome {
        terminal_id: String,
        msg_id: u32,
        payment_id: String,
        outcome: String,
        amount: u64,
        currency: String,
        merchant: String,
        text: String,
        acknowledged: bool,
    },
    /// The code was posted to the pay page; `status` is the HTTP status of the answer.
    Answered {
        payment_id: String,
        status: u16,
        location: Option<String>,
        error: Option<String>,
    },
    Ping {
        answered: bool,
    },
    Closed {
        reason: String,
    },
}

/// Events buffered for the test or the printer.
pub const EVENTS_MAX: usize = 256;

/// A running simulated terminal.
pub struct SimHandle {
    pub terminal_id: String,
    pub events: mpsc::Receiver<SimEvent>,
    stop: CancellationToken,
}

impl SimHandle {
    /// The next event, or `None` after `timeout` or when the terminal has stopped.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SimEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next code or outcome delivery, skipping keep-alive events.
    pub async fn next_delivery(&mut self, timeout: Duration) -> Option<SimEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await? {
                SimEvent::Ping { .. } => continue,
                event => return Some(event),
            }
        }
    }

    /// Disconnects (with an ERROR frame saying goodbye).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Connects and authenticates (an error says why not), then runs the terminal in the background.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, ClientError> {
    let client = TerminalClient::connect(&config.client).await?;
    let (events_tx, events) = mpsc::channel(EVENTS_MAX);
    let stop = CancellationToken::new();
    let terminal_id = config.client.terminal_id.clone();
    tokio::spawn(run_terminal(client, config, events_tx, stop.clone()));
    Ok(SimHandle {
        terminal_id,
        events,
        stop,
    })
}

async fn run_terminal(
    mut client: TerminalClient,
    config: SimConfig,
    events: mpsc::Sender<SimEvent>,
    stop: CancellationToken,
) {
    // The switch PINGs every interval: one silent for more than two has gone (a power cut, a
    // lost route), and the terminal should reconnect rather than wait on a dead connection.
    let silent_max = Duration::from_millis(u64::from(client.keepalive_interval_ms) * 2 + 1_000);
    let reason = loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => {
                client.close("terminal switched off").await;
                break "stopped".to_string();
            }
            frame = tokio::time::timeout(silent_max, client.next()) => frame,
        };
        let frame = match frame {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => break "the switch closed the connection".into(),
            Ok(Err(e)) => break e.to_string(),
            Err(_) => {
                break format!("the switch was silent for {} ms", silent_max.as_millis());
            }
        };
        match on_frame(&mut client, &config, frame, &events).await {
            Ok(Continue::Yes) => {}
            Ok(Continue::No(reason)) => break reason,
            Err(e) => break e.to_string(),
        }
    };
    let _ = events.try_send(SimEvent::Closed { reason });
}

enum Continue {
    Yes,
    No(String),
}

async fn on_frame(
    client: &mut TerminalClient,
    config: &SimConfig,
    frame: Frame,
    events: &mpsc::Sender<SimEvent>,
) -> Result<Continue, ClientError> {
    let msg_id = match &frame {
        Frame::Code(c) => c.msg_id,
        Frame::Outcome(o) => o.msg_id,
        Frame::Ping { nonce } => {
            if config.answer_pings {
                client.send(Frame::Pong { nonce: *nonce }).await?;
            }
            let _ = events.try_send(SimEvent::Ping {
                answered: config.answer_pings,
            });
            return Ok(Continue::Yes);
        }
        Frame::Pong { .. } => return Ok(Continue::Yes),
        Frame::Error { code, message } => {
            return Ok(Continue::No(closed_by_switch(*code, message)));
        }
        other => {
            return Ok(Continue::No(format!(
                "unexpected {} from the switch",
                other.name()
            )));
        }
    };
    let acknowledged = config.behaviour == DeliveryBehaviour::Acknowledge;
    let event = delivery_event(&config.client.terminal_id, frame, acknowledged);
    match config.behaviour {
        DeliveryBehaviour::Acknowledge => client.send(Frame::Ack { msg_id }).await?,
        DeliveryBehaviour::Refuse => {
            client
                .send(Frame::Nack {
                    msg_id,
                    reason: "refused by the simulator".into(),
                })
                .await?
        }
        DeliveryBehaviour::Silent => {}
        DeliveryBehaviour::DropConnection => {
            let _ = events.try_send(event);
            return Ok(Continue::No("dropped the connection mid-delivery".into()));
        }
    }
    if let (
        Some(answer),
        SimEvent::Code {
            payment_id, code, ..
        },
    ) = (&config.answer, &event)
    {
        let answer = answer.clone();
        let (payment_id, code) = (payment_id.clone(), code.clone());
        let events = events.clone();
        tokio::spawn(async move {
            let answered = answer_code(&answer, &payment_id, &code).await;
            let _ = events.send(answered).await;
        });
    }
    let _ = events.try_send(event);
    Ok(Continue::Yes)
}

fn delivery_event(terminal_id: &str, frame: Frame, acknowledged: bool) -> SimEvent {
    match frame {
        Frame::Code(CodeFrame {
            msg_id,
            payment_id,
            code,
            amount_minor,
            currency,
            merchant,
            validity_s,
            flags,
            text,
        }) => SimEvent::Code {
            terminal_id: terminal_id.to_string(),
            msg_id,
            payment_id,
            code,
            amount: amount_minor,
            currency,
            merchant,
            validity_s,
            unregistered_receiver: flags & 1 == 1,
            text,
            acknowledged,
        },
        Frame::Outcome(OutcomeFrame {
            msg_id,
            payment_id,
            outcome,
            amount_minor,
            currency,
            merchant,
            text,
        }) => SimEvent::Outcome {
            terminal_id: terminal_id.to_string(),
            msg_id,
            payment_id,
            outcome,
            amount: amount_minor,
            currency,
            merchant,
            text,
            acknowledged,
        },
        other => SimEvent::Closed {
            reason: format!("unexpected {}", other.name()),
        },
    }
}

/// How long one request to the pay page may take.
pub const ANSWER_TIMEOUT_MS: u64 = 10_000;
/// Largest code page read while looking for its CSRF token.
pub const PAGE_MAX_BYTES: usize = 256 * 1024;

/// GETs the code page with the browser session's cookie for its `csrf_token`, then POSTs `code`
/// and `csrf_token` as a form, as the customer's browser would.
pub async fn answer_code(answer: &AutoAnswer, payment_id: &str, code: &str) -> SimEvent {
    let url = answer.url.replace("{payment_id}", payment_id);
    let result = post_code(answer, &url, code).await;
    match result {
        Ok((status, location)) => SimEvent::Answered {
            payment_id: payment_id.to_string(),
            status,
            location,
            error: None,
        },
        Err(e) => SimEvent::Answered {
            payment_id: payment_id.to_string(),
            status: 0,
            location: None,
            error: Some(format!("{e:#}")),
        },
    }
}

async fn post_code(
    answer: &AutoAnswer,
    url: &str,
    code: &str,
) -> anyhow::Result<(u16, Option<String>)> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(ANSWER_TIMEOUT_MS))
        .danger_accept_invalid_certs(answer.insecure);
    if let Some(pem) = &answer.ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
    }
    let http = builder.build()?;
    let page = http
        .get(url)
        .header(reqwest::header::COOKIE, &answer.cookie)
        .send()
        .await?;
    if !page.status().is_success() {
        anyhow::bail!("the code page answered {}", page.status());
    }
    let html = read_bounded(page, PAGE_MAX_BYTES).await?;
    let csrf =
        hidden_field(&html, "csrf_token").context("the code page has no csrf_token field")?;
    let posted = http
        .post(url)
        .header(reqwest::header::COOKIE, &answer.cookie)
        .form(&[("code", code), ("csrf_token", csrf.as_str())])
        .send()
        .await?;
    let location = posted
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((posted.status().as_u16(), location))
}

/// At most `max_bytes` of a response body, as text.
async fn read_bounded(mut response: reqwest::Response, max_bytes: usize) -> anyhow::Result<String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() >= max_bytes {
            body.truncate(max_bytes);
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The `value` of the `<input>` named `name` in an HTML page (attributes in any order, single or
/// double quotes).
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let mut rest = html;
    while let Some(start) = rest.find("<input") {
        let tag_and_more = &rest[start..];
        let end = tag_and_more.find('>')?;
        let tag = &tag_and_more[..end];
        if attribute(tag, "name").as_deref() == Some(name) {
            return attribute(tag, "value").map(|v| unescape(&v));
        }
        rest = &tag_and_more[end..];
    }
    None
}

fn attribute(tag: &str, attr: &str) -> Option<String> {
    let mut rest = tag;
    loop {
        let at = rest.find(attr)?;
        let before_ok = rest[..at].chars().last().is_some_and(|c| c.is_whitespace());
        let after = rest[at + attr.len()..].trim_start();
        if before_ok && let Some(value) = after.strip_prefix('=') {
            let value = value.trim_start();
            let quote = value.chars().next()?;
            if quote == '"' || quote == '\'' {
                let inner = &value[1..];
                return inner.find(quote).map(|end| inner[..end].to_string());
            }
            let end = value.find(char::is_whitespace).unwrap_or(value.len());
            return Some(value[..end].trim_end_matches('/').to_string());
        }
        rest = &rest[at + attr.len()..];
    }
}

fn unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl TerminalSimArgs {
    fn terminal_key(&self) -> anyhow::Result<TerminalKey> {
        if let Some(path) = &self.private_key {
            let pem =
                std::fs::read(path).with_context(|| format!("--private-key {}", path.display()))?;
            return TerminalKey::private_from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("--private-key {}: {e}", path.display()));
        }
        let hex = self.key.as_deref().unwrap_or_default();
        let key = SharedKey::from_hex(hex).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
        Ok(key.into())
    }

    fn sim_config(&self) -> anyhow::Result<SimConfig> {
        let key = self.terminal_key()?;
        let ca_pem = match &self.ca {
            Some(path) => {
                Some(std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?)
            }
            None => None,
        };
        let tls = match (&ca_pem, self.insecure, self.no_tls) {
            (_, _, true) => ClientTls::Off,
            (_, true, _) => ClientTls::Insecure,
            (Some(pem), _, _) => ClientTls::Ca(pem.clone()),
            (None, false, false) => ClientTls::System,
        };
        let behaviour = if self.silent {
            DeliveryBehaviour::Silent
        } else if self.refuse {
            DeliveryBehaviour::Refuse
        } else if self.drop_on_delivery {
            DeliveryBehaviour::DropConnection
        } else {
            DeliveryBehaviour::Acknowledge
        };
        let answer = match (&self.answer_url, &self.cookie) {
            (Some(url), Some(cookie)) => Some(AutoAnswer {
                url: url.clone(),
                cookie: cookie.clone(),
                ca_pem,
                insecure: self.insecure,
            }),
            _ => None,
        };
        Ok(SimConfig {
            client: ClientOptions {
                switch: self.switch.clone(),
                server_name: self.server_name.clone(),
                terminal_id: self.id.clone(),
                key,
                tls,
            },
            behaviour,
            answer_pings: !self.no_pong,
            answer,
        })
    }
}

/// First wait before a reconnect, and the longest.
pub const RECONNECT_FIRST_MS: u64 = 1_000;
pub const RECONNECT_MAX_MS: u64 = 60_000;

/// Why a session ended, when the switch said so with an ERROR.
fn closed_by_switch(code: u16, message: &str) -> String {
    format!("the switch closed the session: {message} (error {code})")
}

/// Whether the session ended because another connection of this terminal authenticated.
fn replaced(reason: &str) -> bool {
    reason.ends_with(&format!("(error {})", ErrorCode::Replaced as u16))
}

pub async fn run(args: TerminalSimArgs) -> anyhow::Result<()> {
    let config = args.sim_config()?;
    let mut backoff_ms = RECONNECT_FIRST_MS;
    loop {
        let lost = match spawn(config.clone()).await {
            Ok(sim) => {
                output::warn(format!(
                    "terminal {} connected to the switch at {}",
                    args.id, args.switch
                ));
                backoff_ms = RECONNECT_FIRST_MS;
                match print_events(sim).await? {
                    Some(reason) => reason,
                    None => return Ok(()),
                }
            }
            // Only a refused key or version ends it: a busy switch, or one that timed the
            // handshake out, says to try again later.
            Err(e @ ClientError::Refused { code, .. }) if refusal_is_final(code) => {
                return Err(e.into());
            }
            Err(e) => e.to_string(),
        };
        if replaced(&lost) {
            // Another device holds this identity (a newer one, or a copy): reconnecting would
            // knock it off in turn, and it this one, without end.
            anyhow::bail!(
                "{lost}: another connection of this terminal signed in; not reconnecting"
            );
        }
        if !args.reconnect {
            anyhow::bail!("disconnected: {lost}");
        }
        output::warn(format!(
            "disconnected: {lost}; reconnecting in {} s",
            backoff_ms / 1_000
        ));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
        }
        backoff_ms = (backoff_ms * 2).min(RECONNECT_MAX_MS);
    }
}

/// Whether an ERROR during the handshake means the same terminal must not simply try again.
fn refusal_is_final(code: u16) -> bool {
    matches!(
        ErrorCode::from_u16(code),
        Some(ErrorCode::AuthenticationFailed | ErrorCode::UnsupportedVersion | ErrorCode::Protocol)
    )
}

/// Prints events until the connection ends (its reason) or Ctrl-C (`None`).
async fn print_events(mut sim: SimHandle) -> anyhow::Result<Option<String>> {
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                sim.stop();
                return Ok(None);
            }
            event = sim.events.recv() => event,
        };
        let Some(event) = event else {
            return Ok(Some("the terminal stopped".into()));
        };
        if !matches!(event, SimEvent::Ping { .. }) {
            output::note(serde_json::to_string(&event)?);
            output::warn(describe(&event));
        }
        if let SimEvent::Closed { reason } = event {
            return Ok(Some(reason));
        }
    }
}

/// One sentence for a person watching the terminal.
fn describe(event: &SimEvent) -> String {
    match event {
        SimEvent::Code {
            code,
            merchant,
            text,
            payment_id,
            ..
        } => format!("code {code} for {payment_id} from {merchant}: {text}"),
        SimEvent::Outcome {
            payment_id, text, ..
        } => format!("outcome for {payment_id}: {text}"),
        SimEvent::Answered {
            payment_id,
            status,
            error,
            ..
        } => match error {
            Some(e) => format!("could not enter the code for {payment_id}: {e}"),
            None => format!("entered the code for {payment_id} on the pay page: HTTP {status}"),
        },
        SimEvent::Ping { .. } => "keep-alive".into(),
        SimEvent::Closed { reason } => format!("disconnected: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_key_version_or_frame_ends_the_simulator() {
        for (code, last) in [
            (1, true),
            (2, true),
            (3, true),
            (4, false),
            (5, false),
            (7, false),
        ] {
            assert_eq!(refusal_is_final(code), last, "ERROR {code}");
        }
    }

    /// A replaced session ends the simulator; other ends let it reconnect.
    #[test]
    fn a_session_replaced_by_another_connection_is_told_from_other_ends() {
        assert!(replaced(&closed_by_switch(6, "replaced")));
        assert!(!replaced(&closed_by_switch(7, "shutting down")));
        assert!(!replaced("the switch was silent for 60000 ms"));
    }

    #[test]
    fn finds_the_csrf_token_in_any_attribute_order() {
        let html = r#"<form method="post"><input type="hidden" value="a&amp;b" name="csrf_token">
            <input name="code" value=""></form>"#;
        assert_eq!(hidden_field(html, "csrf_token").as_deref(), Some("a&b"));
        let html = "<input name='csrf_token' type=hidden value='xyz'/>";
        assert_eq!(hidden_field(html, "csrf_token").as_deref(), Some("xyz"));
        let html = "<input data-name=\"csrf_token\" value=\"no\"><input name=csrf_token value=yes>";
        assert_eq!(hidden_field(html, "csrf_token").as_deref(), Some("yes"));
        assert_eq!(hidden_field("<p>nothing</p>", "csrf_token"), None);
    }
}
