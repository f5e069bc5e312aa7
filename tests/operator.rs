//! The operator listener over real HTTP on port 0 against a real PostgreSQL.

mod e2e_support;

use payhub::bank_links::BankLinks;
use payhub::http::operator::{self, LinkStatusSource, NoLinks, OperatorState};
use payhub_actors::bank::{self, LinkOwner, LinkSettings};
use payhub_actors::domain::BankId;
use payhub_actors::store::testing::fresh_database;
use std::net::SocketAddr;
use std::sync::Arc;

/// The real bank router with one link per `(name, addr)`, as `serve` starts it, seen through the
/// adapter `serve` gives the operator listener.
fn bank_links(pool: &deadpool_postgres::Pool, links: &[(&str, SocketAddr)]) -> Arc<BankLinks> {
    let settings = links
        .iter()
        .map(|(name, addr)| {
            let bank = BankId::parse(e2e_support::BANK).unwrap();
            let mut link =
                LinkSettings::new(name, &addr.to_string(), LinkOwner::ThirdParty, vec![bank]);
            link.reconnect_backoff_min_ms = 20;
            link.reconnect_backoff_max_ms = 200;
            link
        })
        .collect();
    let clock: payhub_actors::clock::SharedClock = Arc::new(payhub_actors::SystemClock);
    let router = bank::start(pool.clone(), clock, settings, e2e_support::INSTITUTION).unwrap();
    Arc::new(BankLinks(router))
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn readyz(base: &str) -> (u16, serde_json::Value) {
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    (ready.status().as_u16(), ready.json().await.unwrap())
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

fn state(pool: &deadpool_postgres::Pool, links: Arc<dyn LinkStatusSource>) -> OperatorState {
    OperatorState {
        pool: pool.clone(),
        links,
        token: None,
    }
}

#[actix_rt::test]
async fn health_metrics_and_page() {
    let db = fresh_database().await;
    seed_payment(&db.pool).await;
    let bank = e2e_support::start_bank(&[]).await;
    let links = bank_links(&db.pool, &[("bips-a", bank.addr())]);
    let base = start(state(&db.pool, links));
    let http = reqwest::Client::new();

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    e2e_support::eventually("ready once the link signs on", || async {
        readyz(&base).await.0 == 200
    })
    .await;

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("payhub_bank_link_state{link=\"bips-a\"} 2"),
        "{metrics}"
    );

    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("bips-a") && html.contains("third_party") && html.contains("signed_on"),
        "{html}"
    );
    assert!(
        html.contains("pay_1") && html.contains("12.34 CNY"),
        "{html}"
    );
    assert!(html.contains("622200******2222"), "account masked: {html}");
    assert!(!html.contains("6222000011112222"), "full account leaked");
    // Without a token, loopback alone opens the page only to a request that names this machine:
    // a page of another site re-resolved to 127.0.0.1 (DNS rebinding) names its own host.
    let port = base.rsplit(':').next().unwrap();
    for (host, status) in [
        (format!("localhost:{port}"), 200),
        (format!("[::1]:{port}"), 200),
        (format!("LocalHost.:{port}"), 200),
        (format!("0.0.0.0:{port}"), 200),
        (format!("evil.example:{port}"), 403),
        ("evil.example".to_string(), 403),
    ] {
        for path in ["/", "/metrics", "/api/links"] {
            let answer = http
                .get(format!("{base}{path}"))
                .header("host", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), status, "{host} {path}");
        }
    }
}

#[actix_rt::test]
async fn readyz_is_503_until_a_real_bank_link_signs_on() {
    let db = fresh_database().await;
    let none = start(state(&db.pool, Arc::new(NoLinks)));
    let (status, body) = readyz(&none).await;
    assert_eq!((status, &body["bank_links_signed_on"]), (503, &0.into()));
    assert_eq!(body["database"], true);

    let down = bank_links(&db.pool, &[("bips-down", closed_port())]);
    let base = start(state(&db.pool, down));
    let (status, body) = readyz(&base).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (&body["bank_links"], &body["bank_links_signed_on"]),
        (&1.into(), &0.into())
    );
    let links = e2e_support::get_json(&format!("{base}/api/links")).await;
    assert_eq!(links[0]["state"], "down", "{links}");

    let bank = e2e_support::start_bank(&[]).await;
    let both = bank_links(
        &db.pool,
        &[("bips-down", closed_port()), ("bips-up", bank.addr())],
    );
    let base = start(state(&db.pool, both));
    e2e_support::eventually("the simulator's link signs on", || async {
        readyz(&base).await.0 == 200
    })
    .await;
    let (_, body) = readyz(&base).await;
    assert_eq!(
        (&body["bank_links"], &body["bank_links_signed_on"]),
        (&2.into(), &1.into())
    );
}

/// A probe reads no database table: with the reversals locked (a slow database), `/readyz`
/// still answers ready at once, and the links' states, which read each link's backlog, are not
/// read by more than `STATUS_READS_MAX` requests at once (each would hold a pooled connection
/// after its asker gave up).
#[actix_rt::test]
async fn readyz_answers_from_memory_while_the_database_is_slow() {
    let db = fresh_database().await;
    let bank = e2e_support::start_bank(&[]).await;
    let links = bank_links(&db.pool, &[("bips-up", bank.addr())]);
    let base = start(state(&db.pool, links.clone()));
    e2e_support::eventually("the link signs on", || async {
        readyz(&base).await.0 == 200
    })
    .await;
    let mut blocker = db.pool.get().await.unwrap();
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE reversals IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let asked: Vec<_> = (0..8).map(|_| links.links()).collect();
    let answered = futures::future::join_all(asked).await;
    let (status, body) = readyz(&base).await;

    assert_eq!(status, 200, "{body}");
    assert!(
        answered.iter().all(Vec::is_empty),
        "none read past the lock"
    );
    let waiting: i64 = lock
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT count(*), min(created_at)%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let most = i64::try_from(bank::STATUS_READS_MAX).unwrap();
    assert!(waiting <= most, "{waiting} reads of the backlog wait");
    lock.rollback().await.unwrap();
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

    // A browser opens the page with `?token=`: it gets the page's address without the token and
    // a cookie that stands for it (never the token itself), and the page is not cached.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let opened = browser
        .get(format!("{base}/?token=s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 303);
    assert_eq!(opened.headers()["location"], "/");
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("s3cret"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = browser
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let forged = browser
        .get(format!("{base}/"))
        .header("cookie", "payhub_operator=00")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

/// An empty token, should one reach the page, opens nothing (the configuration refuses it too).
#[actix_rt::test]
async fn an_empty_token_opens_nothing() {
    let db = fresh_database().await;
    let base = start(OperatorState {
        pool: db.pool.clone(),
        links: Arc::new(NoLinks),
        token: Some(payhub_actors::Secret::new(String::new())),
    });
    let http = reqwest::Client::new();
    for path in ["/?token=", "/metrics?token="] {
        let denied = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(denied.status(), 403, "{path}");
    }
}
