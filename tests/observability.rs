//! What an operator sees of one real payment (the real gateway, bank and SMSC simulators, webhook
//! receiver): the series of `/metrics` on the operator listener, and the JSON log, where every
//! line of the payment's actor carries its id in the `payment` span and no secret appears, and the
//! operator's view of the bank link with its round trip.
//!
//! The metrics registry and the logger are the process's: this binary runs one payment only, so
//! the counters' increases are this payment's.

mod e2e_support;

use e2e_support::{PAYER_ACCOUNT, Stage, eventually};
use payhub::bank_links::BankLinks;
use payhub::http::operator::{self, OperatorState};
use payhub::telemetry::{LogFormat, init_with_writer};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The JSON log, kept in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            let labelled = series.starts_with('{') || series.is_empty();
            let matches = labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
            (labelled && matches).then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// A series: its name, the labels it must have, and its least increase over one payment.
type Series = (&'static str, &'static [(&'static str, &'static str)], f64);

/// The series issue 7 lists.
const SERIES: &[Series] = &[
    (
        "payhub_payments_total",
        &[("status", "succeeded"), ("failure_code", "")],
        1.0,
    ),
    ("payhub_codes_sent_total", &[("channel", "sms")], 1.0),
    ("payhub_smpp_submits_total", &[("result", "ok")], 1.0),
    (
        "payhub_bank_link_round_trip_seconds_count",
        &[("link", "bips-a")],
        1.0,
    ),
    (
        "payhub_webhook_deliveries_total",
        &[("result", "delivered")],
        1.0,
    ),
    (
        "payhub_http_request_seconds_count",
        &[("listener", "gateway"), ("route", "/pay/{id}/code")],
        2.0,
    ),
];

fn assert_increases(before: &str, after: &str) {
    for (name, labels, least) in SERIES {
        let increase = sample(after, name, labels) - sample(before, name, labels);
        assert!(
            increase >= *least,
            "{name}{labels:?} rose by {increase}, not {least}:\n{after}"
        );
    }
    let codes = sample(after, "payhub_codes_sent_total", &[("channel", "sms")])
        - sample(before, "payhub_codes_sent_total", &[("channel", "sms")]);
    assert_eq!(codes, 1.0, "one code sent, counted once");
    assert_eq!(
        sample(after, "payhub_bank_link_state", &[("link", "bips-a")]),
        2.0,
        "signed on"
    );
}

/// The operator's view of the link shows the debit's round trip.
async fn assert_link_latency(base: &str) {
    let links = e2e_support::get_json(&format!("{base}/api/links")).await;
    assert_eq!(links[0]["name"], "bips-a", "{links}");
    assert_eq!(links[0]["state"], "signed_on", "{links}");
    let latency_ms = links[0]["latency_ms"].as_f64().expect("a latency");
    assert!(latency_ms > 0.0, "{links}");
}

/// The lines logged in the payment's span, and nowhere a secret of the payment.
fn assert_logged_in_span(log: &LogBuffer, payment: &str, secrets: &[&str]) {
    let lines = log.lines();
    let mine: Vec<_> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "payment" && l["span"]["payment_id"] == payment)
        .collect();
    let steps: Vec<_> = mine.iter().map(|l| l["fields"]["event"].clone()).collect();
    for step in ["code_issued", "debit_sent", "succeeded"] {
        assert!(steps.contains(&step.into()), "{step} not in {steps:?}");
    }
    // Timestamps are digits enough to hold a six-digit code by chance.
    let text: String = lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.as_object_mut().unwrap().remove("timestamp");
            l.to_string()
        })
        .collect();
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} in the log");
    }
}

#[actix_rt::test]
async fn one_payment_shows_in_metrics_and_logs_in_its_span() {
    let log = LogBuffer::default();
    let writer = log.clone();
    init_with_writer(LogFormat::Json, move || writer.clone());
    let stage = Stage::start().await;
    let (addr, server) = operator::start(
        "127.0.0.1:0".parse().unwrap(),
        OperatorState {
            pool: stage.db.pool.clone(),
            links: Arc::new(BankLinks(stage.gateway.bank.clone())),
            token: None,
        },
    )
    .unwrap();
    actix_rt::spawn(server);
    let base = format!("http://{addr}");
    let before = scrape(&base).await;

    let payment = stage.payment().await;
    let code = stage.pay(&payment).await;
    eventually("the webhook is delivered", || async {
        !stage.receiver.requests().is_empty()
    })
    .await;
    let delivered = |metrics: &str| sample(metrics, "payhub_webhook_deliveries_total", &[]);
    eventually("the webhook delivery is counted", || async {
        delivered(&scrape(&base).await) > delivered(&before)
    })
    .await;

    assert_increases(&before, &scrape(&base).await);
    assert_link_latency(&base).await;
    let secrets = [code.as_str(), &stage.customer.password, PAYER_ACCOUNT];
    assert_logged_in_span(&log, &payment, &secrets);
}
