//! Prometheus metrics for the whole process, in one registry. Every part counts here; the operator
//! listener renders [`Metrics::render`] at `/metrics`. Labels never carry secrets or account
//! numbers.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub struct Metrics {
    registry: Registry,
    /// Payments reaching a status (`status`, `failure_code`).
    pub payments: Family<Labels, Counter>,
    /// Failed reads of the payments a start must resume (each is tried again).
    pub payment_resume_failures: Counter,
    /// Authorization codes sent (`channel`).
    pub codes_sent: Family<Labels, Counter>,
    /// SMPP: submits (`result`: ok|throttled|error), receipts (`stat`).
    pub smpp_submits: Family<Labels, Counter>,
    pub smpp_throttles: Counter,
    pub smpp_receipts: Family<Labels, Counter>,
    /// Bank links (`link`): state (0 down, 1 connected, 2 signed on), in-flight, round trips,
    /// timeouts, reversals pending.
    pub bank_link_state: Family<Labels, Gauge>,
    pub bank_link_in_flight: Family<Labels, Gauge>,
    pub bank_link_round_trip_seconds: HistogramFamily,
    pub bank_link_timeouts: Family<Labels, Counter>,
    pub bank_reversals_pending: Family<Labels, Gauge>,
    /// Webhooks: deliveries (`result`: delivered|failed), retries, merchants slow now, events
    /// left to their lease because their merchant was slow and the slow share taken.
    pub webhook_deliveries: Family<Labels, Counter>,
    pub webhook_retries: Counter,
    pub webhook_slow_merchants: Gauge,
    pub webhook_held_back: Counter,
    /// HTTP request latency (`listener`, `route`, `status`).
    pub http_request_seconds: HistogramFamily,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("payhub");
        let m = Metrics {
            payments: Family::default(),
            payment_resume_failures: Counter::default(),
            codes_sent: Family::default(),
            smpp_submits: Family::default(),
            smpp_throttles: Counter::default(),
            smpp_receipts: Family::default(),
            bank_link_state: Family::default(),
            bank_link_in_flight: Family::default(),
            bank_link_round_trip_seconds: Family::new_with_constructor(latency_histogram),
            bank_link_timeouts: Family::default(),
            bank_reversals_pending: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_retries: Counter::default(),
            webhook_slow_merchants: Gauge::default(),
            webhook_held_back: Counter::default(),
            http_request_seconds: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        registry.register("payments", "Payments reaching a status", m.payments.clone());
        registry.register(
            "payment_resume_failures",
            "Failed reads of the payments in flight a start must resume",
            m.payment_resume_failures.clone(),
        );
        registry.register(
            "codes_sent",
            "Authorization codes sent, by channel",
            m.codes_sent.clone(),
        );
        registry.register(
            "smpp_submits",
            "SMPP submit_sm results",
            m.smpp_submits.clone(),
        );
        registry.register(
            "smpp_throttles",
            "SMPP throttling answers",
            m.smpp_throttles.clone(),
        );
        registry.register(
            "smpp_receipts",
            "SMPP delivery receipts",
            m.smpp_receipts.clone(),
        );
        registry.register(
            "bank_link_state",
            "Bank link state: 0 down, 1 connected, 2 signed on",
            m.bank_link_state.clone(),
        );
        registry.register(
            "bank_link_in_flight",
            "Requests outstanding",
            m.bank_link_in_flight.clone(),
        );
        registry.register(
            "bank_link_round_trip_seconds",
            "Bank link round-trip latency",
            m.bank_link_round_trip_seconds.clone(),
        );
        registry.register(
            "bank_link_timeouts",
            "Bank requests timed out",
            m.bank_link_timeouts.clone(),
        );
        registry.register(
            "bank_reversals_pending",
            "Reversals waiting for a 0430",
            m.bank_reversals_pending.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_retries",
            "Webhook retries scheduled",
            m.webhook_retries.clone(),
        );
        registry.register(
            "webhook_slow_merchants",
            "Merchants whose webhook endpoints answer slowly, sharing three quarters of the slots",
            m.webhook_slow_merchants.clone(),
        );
        registry.register(
            "webhook_held_back",
            "Webhooks left to their lease: their merchant was slow and the slow share taken",
            m.webhook_held_back.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP request latency",
            m.http_request_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// A moving average of durations (each new one weighs 1/8), readable without locks: the bank
/// link's round trip as the operator page shows it.
#[derive(Debug, Default)]
pub struct MovingAverage {
    /// Microseconds; 0 until the first observation.
    micros: AtomicU64,
}

impl MovingAverage {
    const WEIGHT_INVERSE: u64 = 8;

    pub fn observe(&self, duration: std::time::Duration) {
        let new = u64::try_from(duration.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self
            .micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(match old {
                    0 => new,
                    old => old - old / Self::WEIGHT_INVERSE + new / Self::WEIGHT_INVERSE,
                })
            });
    }

    /// The average so far, in microseconds; `None` before any observation.
    pub fn micros(&self) -> Option<u64> {
        Some(self.micros.load(Ordering::Relaxed)).filter(|&m| m > 0)
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_starts_at_the_first_value_and_moves_an_eighth() {
        let average = MovingAverage::default();
        assert_eq!(average.micros(), None);
        average.observe(std::time::Duration::from_micros(800));
        assert_eq!(average.micros(), Some(800));
        average.observe(std::time::Duration::from_micros(1_600));
        assert_eq!(average.micros(), Some(900));
    }

    #[test]
    fn renders_registered_metrics_with_labels() {
        let m = global();
        m.codes_sent
            .get_or_create(&labels(&[("channel", "sms")]))
            .inc();
        m.bank_link_round_trip_seconds
            .get_or_create(&labels(&[("link", "bips-a")]))
            .observe(0.002);
        let text = m.render();
        assert!(
            text.contains("payhub_codes_sent_total{channel=\"sms\"}"),
            "{text}"
        );
        assert!(
            text.contains("payhub_bank_link_round_trip_seconds_bucket"),
            "{text}"
        );
    }
}
