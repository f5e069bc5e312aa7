//! The operator listener over real HTTP on port 0 against a real PostgreSQL.

use futures::future::BoxFuture;
use payhub::http::operator::{self, LinkStatusSource, LinkView, NoLinks, OperatorState};
use payhub_actors::store::testing::fresh_database;
use std::sync::Arc;

struct OneLink {
    signed_on: bool,
}

impl LinkStatusSource for OneLink {
    fn links(&self) -> BoxFuture<'static, Vec<LinkView>> {
        let signed_on = self.signed_on;
        Box::pin(async move {
            vec![LinkView {
                name: "bips-a".into(),
                owner: "third_party".into(),
                state: if signed_on { "signed_on" } else { "down" }.into(),
                signed_on,
                in_flight: 0,
                last_echo_age_s: Some(3),
                latency_ms: Some(1.5),
                reversals_pending: 0,
            }]
        })
    }
}

async fn seed_payment(pool: &deadpool_postgres::Pool) {
    let c = pool.get().await.unwrap();
    c.batch_execute(
        "INSERT INTO merchants (id, name, cert_fingerprint, cert_serial, webhook_secret, bank_id, account, terminal_id, card_acceptor_id)
           VALUES ('mer_1', 'Book Shop', 'fp', '1', 'whsec', '0002', '6222000099990000', 'TERM0001', 'MERCHANT0000001');
         INSERT INTO customers (id, real_name, online_id, bank_id, account, password_hash)
           VALUES ('cus_1', 'Li Lei', 'lilei', '0001', '6222000011112222', 'x');
         INSERT INTO payments (id, merchant_id, order_id, amount_minor, currency, return_url, notify_url, status, customer_id, created_at, expires_at, updated_at)
           VALUES ('pay_1', 'mer_1', 'A-1', 1234, 'CNY', 'https://shop/return', 'https://shop/hook', 'succeeded', 'cus_1', now(), now() + interval '15 minutes', now());",
    )
    .await
    .unwrap();
}

fn start(state: OperatorState) -> String {
    let (addr, server) = operator::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    actix_rt::spawn(server);
    format!("http://{addr}")
}

#[actix_rt::test]
async fn health_metrics_and_page() {
    let db = fresh_database().await;
    seed_payment(&db.pool).await;
    let base = start(OperatorState {
        pool: db.pool.clone(),
        links: Arc::new(OneLink { signed_on: true }),
        token: None,
    });
    let http = reqwest::Client::new();

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    payhub_actors::metrics::global()
        .payments
        .get_or_create(&payhub_actors::metrics::labels(&[
            ("status", "succeeded"),
            ("failure_code", ""),
        ]))
        .inc();
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("payhub_payments_total{status=\"succeeded\""),
        "{metrics}"
    );

    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("bips-a") && html.contains("third_party"),
        "{html}"
    );
    assert!(
        html.contains("pay_1") && html.contains("12.34 CNY"),
        "{html}"
    );
    assert!(html.contains("622200******2222"), "account masked: {html}");
    assert!(!html.contains("6222000011112222"), "full account leaked");
}

#[actix_rt::test]
async fn readyz_fails_with_no_link_signed_on() {
    let db = fresh_database().await;
    for links in [
        Arc::new(NoLinks) as Arc<dyn LinkStatusSource>,
        Arc::new(OneLink { signed_on: false }),
    ] {
        let base = start(OperatorState {
            pool: db.pool.clone(),
            links,
            token: None,
        });
        let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 503);
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["database"], true);
        assert_eq!(body["bank_links_signed_on"], 0);
    }
}

#[actix_rt::test]
async fn token_protects_page_and_metrics() {
    let db = fresh_database().await;
    let base = start(OperatorState {
        pool: db.pool.clone(),
        links: Arc::new(NoLinks),
        token: Some(payhub_actors::Secret::new("s3cret".into())),
    });
    let http = reqwest::Client::new();
    for path in ["/", "/metrics"] {
        let denied = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(denied.status(), 403, "{path}");
        let ok = http
            .get(format!("{base}{path}"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
