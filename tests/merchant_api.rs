//! The merchant API over real TLS with real client certificates, against real PostgreSQL: the
//! server runs in-process on port 0 (`TestGateway`), the client is reqwest with native-tls.

use payhub::http::merchant::ROUTES;
use payhub::http::merchant_testing::{TestGateway, register_merchant, register_pinned_merchant};
use payhub::pki::{self, Validity};
use payhub_actors::clock::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn order(order_id: &str) -> Value {
    json!({"order_id": order_id, "amount": 1234, "currency": "CNY", "description": "2 books",
           "return_url": "https://shop.example/return",
           "notify_url": "https://shop.example/hooks/payhub"})
}

async fn body(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = res.text().await.unwrap();
    assert_eq!(ct.as_deref(), Some("application/json"), "{status} {text}");
    (status, serde_json::from_str(&text).unwrap())
}

async fn create(gw: &TestGateway, client: &reqwest::Client, b: &Value) -> (StatusCode, Value) {
    body(
        client
            .post(gw.url("/v1/payments"))
            .json(b)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn read(gw: &TestGateway, client: &reqwest::Client, path: &str) -> (StatusCode, Value) {
    body(client.get(gw.url(path)).send().await.unwrap()).await
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

async fn count(gw: &TestGateway, table: &str) -> i64 {
    let c = gw.db.pool.get().await.unwrap();
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[actix_rt::test]
async fn create_read_replay_and_conflicts() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Book Shop").await;
    let client = gw.client(Some(&shop.cert));
    let post = |key: &str, b: &Value| {
        client
            .post(gw.url("/v1/payments"))
            .header("Idempotency-Key", key)
            .json(b)
            .send()
    };

    let (status, created) = body(post("k-1", &order("A-1001")).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("pay_"));
    assert_eq!(created["status"], "awaiting_customer");
    assert_eq!(created["amount"], 1234);
    assert_eq!(created["currency"], "CNY");
    assert_eq!(created["order_id"], "A-1001");
    assert_eq!(created["description"], "2 books");
    assert_eq!(created["pay_url"], format!("https://gateway.test/pay/{id}"));
    let created_at =
        chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().unwrap()).unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires_at - created_at).num_seconds(), 900);

    let (status, fetched) = read(&gw, &client, &format!("/v1/payments/{id}")).await;
    assert_eq!((status, &fetched), (StatusCode::OK, &created));

    // The same body with its keys in another order is the same request: replayed verbatim.
    let reordered: Value = serde_json::from_str(
        r#"{"notify_url":"https://shop.example/hooks/payhub","currency":"CNY","amount":1234,
            "order_id":"A-1001","return_url":"https://shop.example/return","description":"2 books"}"#,
    )
    .unwrap();
    let replay = post("k-1", &reordered).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let (status, replayed) = body(replay).await;
    assert_eq!((status, &replayed), (StatusCode::CREATED, &created));

    let mut other = order("A-1001");
    other["amount"] = json!(999);
    let (status, err) = body(post("k-1", &other).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&err), "idempotency_key_reused");

    let (status, err) = body(post("k-2", &order("A-1001")).await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&err), "order_exists");
    let unkeyed = client
        .post(gw.url("/v1/payments"))
        .json(&order("A-1001"))
        .send()
        .await
        .unwrap();
    let (status, err) = body(unkeyed).await;
    assert_eq!(
        (status, error_code(&err)),
        (StatusCode::CONFLICT, "order_exists")
    );
    // It names the order's payment, so a merchant whose first create was answered `unavailable`
    // (and committed after all) finds it.
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains(id), "{message}");

    // Nothing half-written: one payment, one key (the 409 under k-2 stored nothing).
    assert_eq!(count(&gw, "payments").await, 1);
    assert_eq!(count(&gw, "idempotency_keys").await, 1);

    // Without a key, a new order is simply created.
    let (status, _) = create(&gw, &client, &order("A-1002")).await;
    assert_eq!(status, StatusCode::CREATED);
    gw.stop().await;
}

#[actix_rt::test]
async fn a_key_is_replayed_for_24_hours_then_forgotten() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let post = |b: Value| {
        client
            .post(gw.url("/v1/payments"))
            .header("Idempotency-Key", "daily")
            .json(&b)
            .send()
    };
    let (status, first) = body(post(order("D-1")).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    gw.clock.advance(chrono::Duration::hours(23));
    let (_, again) = body(post(order("D-1")).await.unwrap()).await;
    assert_eq!(again, first);
    gw.clock.advance(chrono::Duration::hours(2));
    let (status, next) = body(post(order("D-2")).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{next}");
    assert_ne!(next["id"], first["id"]);
    gw.stop().await;
}

#[actix_rt::test]
async fn concurrent_retries_with_one_key_create_one_payment() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let tries = (0..8).map(|_| {
        client
            .post(gw.url("/v1/payments"))
            .header("Idempotency-Key", "race")
            .json(&order("R-1"))
            .send()
    });
    let mut bodies = Vec::new();
    for res in futures::future::join_all(tries).await {
        let (status, b) = body(res.unwrap()).await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
        bodies.push(b);
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    assert_eq!(count(&gw, "payments").await, 1);
    gw.stop().await;
}

#[actix_rt::test]
async fn another_merchants_payment_is_not_found() {
    let gw = TestGateway::spawn(vec![]).await;
    let a = gw.enroll_merchant("A").await;
    let b = gw.enroll_merchant("B").await;
    let (_, created) = create(&gw, &gw.client(Some(&a.cert)), &order("X-1")).await;
    let path = format!("/v1/payments/{}", created["id"].as_str().unwrap());
    let (status, err) = read(&gw, &gw.client(Some(&b.cert)), &path).await;
    assert_eq!(
        (status, error_code(&err)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // The same order id is free for another merchant.
    let (status, _) = create(&gw, &gw.client(Some(&b.cert)), &order("X-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = read(
        &gw,
        &gw.client(Some(&a.cert)),
        "/v1/payments/pay_doesnotexist",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    gw.stop().await;
}

async fn expect_unauthenticated(gw: &TestGateway, client: reqwest::Client, why: &str) {
    let (status, err) = create(gw, &client, &order("U-1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {err}");
    assert_eq!(error_code(&err), "unauthenticated", "{why}");
    let (status, _) = read(gw, &client, "/v1/payments/pay_x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
}

/// "An uploaded certificate may instead be pinned by SHA-256 fingerprint": the merchant's own
/// client certificate, from a CA the gateway does not know, is accepted once registered, within
/// its validity. A CA certificate presented as a client's stays refused (wrong purpose).
#[actix_rt::test]
async fn an_uploaded_certificate_pinned_by_fingerprint_is_accepted() {
    let gw = TestGateway::spawn(vec![]).await;
    let other_ca = pki::new_ca("the merchant's own CA").unwrap();
    let own = pki::issue_client(&other_ca, "own", Validity::days_from_now(1)).unwrap();
    let client = gw.client(Some(&own));
    expect_unauthenticated(&gw, client.clone(), "not pinned yet").await;
    register_pinned_merchant(&gw.db.pool, "Own CA", own).await;
    // Unknown fingerprints are cached too: past the cache's life the pin is seen.
    gw.clock.advance(chrono::Duration::milliseconds(
        payhub::http::mtls::MERCHANT_CACHE_TTL_MS + 1,
    ));
    let (status, body) = create(&gw, &client, &order("pinned")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    register_pinned_merchant(&gw.db.pool, "A CA", other_ca.clone()).await;
    expect_unauthenticated(&gw, gw.client(Some(&other_ca)), "a CA certificate").await;
    // Pinned, but expired: refused.
    let now = chrono::Utc::now().timestamp();
    let expired = Validity {
        not_before_unix: now - 7200,
        not_after_unix: now - 3600,
    };
    let old = pki::issue_client(&other_ca, "old own", expired).unwrap();
    register_pinned_merchant(&gw.db.pool, "Old own", old.clone()).await;
    expect_unauthenticated(&gw, gw.client(Some(&old)), "pinned but expired").await;
    gw.stop().await;
}

/// A pinned certificate must still be made for a client: a server's (its extended key usage
/// names only serverAuth) is refused, on a new connection and on an open one, although OpenSSL
/// reports that verification's missing trusted issuer after the wrong purpose.
#[actix_rt::test]
async fn a_pinned_certificate_made_for_another_purpose_is_refused() {
    let gw = TestGateway::spawn(vec![]).await;
    let other_ca = pki::new_ca("the merchant's own CA").unwrap();
    let server = pki::issue_server(&other_ca, &["shop.example".into()]).unwrap();
    register_pinned_merchant(&gw.db.pool, "Server certificate", server.clone()).await;
    let client = gw.client(Some(&server));
    let (status, err) = create(&gw, &client, &order("purpose")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("purpose"), "{message}");
    expect_unauthenticated(&gw, client, "the open connection").await;
    assert_eq!(count(&gw, "payments").await, 0);
    gw.stop().await;
}

/// A certificate registered as issued by the merchant CA is never taken for a pinned one: once
/// the CA that issued it is no longer trusted (taken out of `merchant_ca_cert`; here, one the
/// gateway never trusted), it is refused.
#[actix_rt::test]
async fn an_issued_certificate_without_its_trusted_ca_is_refused() {
    let gw = TestGateway::spawn(vec![]).await;
    let removed_ca = pki::new_ca("a merchant CA taken out of the file").unwrap();
    let issued = pki::issue_client(&removed_ca, "issued", Validity::days_from_now(1)).unwrap();
    register_merchant(&gw.db.pool, "Issued", issued.clone()).await;
    let (status, err) = create(&gw, &gw.client(Some(&issued)), &order("revoked")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(
        err["error"]["message"],
        "the client certificate's issuer is not trusted"
    );
    assert_eq!(count(&gw, "payments").await, 0);
    gw.stop().await;
}

/// A merchant registered before V73 does not say how its certificate is trusted: its first
/// request over a certificate that chains to the merchant CA records it as issued, so taking the
/// CA out later revokes it.
#[actix_rt::test]
async fn a_merchant_registered_before_v73_is_recorded_as_issued_at_its_first_request() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let db = gw.db.pool.get().await.unwrap();
    let pinned = async || -> Option<bool> {
        db.query_one(
            "SELECT cert_pinned FROM merchants WHERE id = $1",
            &[&shop.id],
        )
        .await
        .unwrap()
        .get(0)
    };
    db.execute(
        "UPDATE merchants SET cert_pinned = NULL WHERE id = $1",
        &[&shop.id],
    )
    .await
    .unwrap();
    assert_eq!(pinned().await, None);
    let (status, body) = create(&gw, &gw.client(Some(&shop.cert)), &order("first")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(pinned().await, Some(false));
    gw.stop().await;
}

#[actix_rt::test]
async fn requests_without_an_acceptable_certificate_are_401() {
    let gw = TestGateway::spawn(vec![]).await;
    expect_unauthenticated(&gw, gw.client(None), "no certificate").await;

    // A certificate from another CA whose fingerprint is not registered (not pinned).
    let rogue_ca = pki::new_ca("rogue CA").unwrap();
    let rogue = pki::issue_client(&rogue_ca, "rogue", Validity::days_from_now(1)).unwrap();
    expect_unauthenticated(&gw, gw.client(Some(&rogue)), "another CA").await;

    // The right CA, but not registered.
    let unregistered = gw.pki.client_cert("nobody");
    expect_unauthenticated(&gw, gw.client(Some(&unregistered)), "unregistered").await;

    // Registered, but expired.
    let now = chrono::Utc::now().timestamp();
    let old = pki::issue_client(
        &gw.pki.merchant_ca,
        "old",
        Validity {
            not_before_unix: now - 7200,
            not_after_unix: now - 3600,
        },
    )
    .unwrap();
    register_merchant(&gw.db.pool, "Old", old.clone()).await;
    expect_unauthenticated(&gw, gw.client(Some(&old)), "expired").await;

    // Registered and then disabled: refused from the next request on.
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let ok = client
        .post(gw.url("/v1/payments"))
        .json(&order("ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    let db = gw.db.pool.get().await.unwrap();
    payhub_actors::store::merchants::set_status(
        &db,
        &shop.id,
        payhub_actors::store::merchants::MerchantStatus::Disabled,
    )
    .await
    .unwrap();
    // The certificate's merchant is cached for MERCHANT_CACHE_TTL_MS; past it, refused.
    gw.clock.advance(chrono::Duration::milliseconds(
        payhub::http::mtls::MERCHANT_CACHE_TTL_MS + 1,
    ));
    expect_unauthenticated(&gw, client, "disabled").await;
    assert_eq!(count(&gw, "payments").await, 1);
    gw.stop().await;
}

/// A keep-alive connection outlives its TLS handshake: a certificate that expires while the
/// connection stays open is refused from then on.
#[actix_rt::test]
async fn a_certificate_that_expires_on_an_open_connection_is_refused_from_then_on() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let (status, _) = create(&gw, &client, &order("before")).await;
    assert_eq!(status, StatusCode::CREATED);
    // The test PKI's certificates are valid a week.
    gw.clock.advance(chrono::Duration::days(8));
    expect_unauthenticated(&gw, client, "expired on the open connection").await;
    assert_eq!(count(&gw, "payments").await, 1);
    gw.stop().await;
}

/// A certificate's validity is judged on the gateway's clock, not the wall clock: one whose
/// validity has not begun is refused until the clock reaches it, and one that outlives the
/// merchant CA that issued it is refused once the CA has expired on that clock.
#[actix_rt::test]
async fn a_certificate_is_valid_from_its_start_on_the_gateways_clock() {
    let gw = TestGateway::spawn(vec![]).await;
    let now = chrono::Utc::now().timestamp();
    let later = pki::issue_client(
        &gw.pki.merchant_ca,
        "later",
        Validity {
            not_before_unix: now + 3_600,
            not_after_unix: now + 7_200,
        },
    )
    .unwrap();
    register_merchant(&gw.db.pool, "Later", later.clone()).await;
    expect_unauthenticated(&gw, gw.client(Some(&later)), "not valid yet").await;
    gw.clock.advance(chrono::Duration::minutes(90));
    let (status, body) = create(&gw, &gw.client(Some(&later)), &order("later")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let years = |n: i64| n * 365 * 86_400;
    let outliving = pki::issue_client(
        &gw.pki.merchant_ca,
        "outliving its CA",
        Validity {
            not_before_unix: now,
            not_after_unix: now + years(pki::CA_VALIDITY_DAYS as i64 / 365 + 10),
        },
    )
    .unwrap();
    register_merchant(&gw.db.pool, "Outliving", outliving.clone()).await;
    let open = gw.client(Some(&outliving));
    let (status, body) = create(&gw, &open, &order("a")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    gw.clock.advance(chrono::Duration::seconds(years(
        pki::CA_VALIDITY_DAYS as i64 / 365 + 1,
    )));
    // On the connection verified while the CA was valid (as on a resumed session), and on a
    // new one.
    expect_unauthenticated(&gw, open, "the CA expired, open connection").await;
    expect_unauthenticated(&gw, gw.client(Some(&outliving)), "the CA expired").await;
    gw.stop().await;
}

#[actix_rt::test]
async fn bad_input_gets_the_error_shape_never_a_5xx() {
    let gw = TestGateway::spawn_with(|s| s.body_max_bytes = 2048, vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let raw = |b: String| {
        client
            .post(gw.url("/v1/payments"))
            .header("content-type", "application/json")
            .body(b)
            .send()
    };
    let good = order("B-1").to_string();
    let with = |k: &str, v: Value| {
        let mut o = order("B-1");
        o[k] = v;
        o.to_string()
    };
    let cases: Vec<(String, StatusCode, &str, Option<&str>)> = vec![
        (
            "{\"order_id\":".into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        ("[]".into(), StatusCode::BAD_REQUEST, "malformed_json", None),
        (
            with("amount", json!("1234")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("amount"),
        ),
        (
            with("amount", json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("amount"),
        ),
        (
            with("amount", json!(1_000_000_000_000_i64)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("amount"),
        ),
        (
            with("currency", json!("GBP")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("currency"),
        ),
        (
            with("order_id", json!(7)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("order_id"),
        ),
        (
            with("order_id", json!("x".repeat(65))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("order_id"),
        ),
        (
            with("notify_url", json!("javascript:alert(1)")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("notify_url"),
        ),
        (
            with("return_url", json!(null)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("return_url"),
        ),
        (
            with("notify_uri", json!("https://x.example")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("notify_uri"),
        ),
        (
            with("description", json!("x".repeat(3000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
    ];
    for (b, want_status, want_code, want_field) in cases {
        let (status, err) = body(raw(b.clone()).await.unwrap()).await;
        assert_eq!((status, error_code(&err)), (want_status, want_code), "{b}");
        assert_eq!(err["error"]["field"].as_str(), want_field, "{b}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    // A form is not JSON.
    let form = client
        .post(gw.url("/v1/payments"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("order_id=B-2&amount=1234")
        .send()
        .await
        .unwrap();
    let (status, err) = body(form).await;
    assert_eq!(
        (status, error_code(&err)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );

    let long_key = client
        .post(gw.url("/v1/payments"))
        .header("Idempotency-Key", "k".repeat(256))
        .json(&order("B-1"))
        .send()
        .await
        .unwrap();
    let (status, err) = body(long_key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "Idempotency-Key");

    let two_keys = client
        .post(gw.url("/v1/payments"))
        .header("Idempotency-Key", "k-a")
        .header("Idempotency-Key", "k-b")
        .json(&order("B-1"))
        .send()
        .await
        .unwrap();
    let (status, err) = body(two_keys).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "Idempotency-Key");

    let (status, err) = body(client.get(gw.url("/v1/nothing")).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&err)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // A payment id no payment can have, with a NUL the database would refuse: no such payment.
    for odd in ["pay_%00", "pay_ab%2Fcd", "pay_%C3%A9", "x"] {
        let path = format!("/v1/payments/{odd}");
        let (status, err) = body(client.get(gw.url(&path)).send().await.unwrap()).await;
        assert_eq!(
            (status, error_code(&err)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{odd}"
        );
    }
    let delete = client.delete(gw.url("/v1/payments")).send().await.unwrap();
    assert_eq!(delete.headers()["allow"], "POST");
    let (status, err) = body(delete).await;
    assert_eq!(
        (status, error_code(&err)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert_eq!(count(&gw, "payments").await, 0);
    // And the good body still works after all that.
    let (status, _) = body(raw(good).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    // The body is JSON whatever its declared type: `curl -d` declares a form.
    let declared_form = client
        .post(gw.url("/v1/payments"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(order("B-form").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(body(declared_form).await.0, StatusCode::CREATED);
    gw.stop().await;
}

/// With `webhooks.allow_private_destinations = false`, a `notify_url` that names a loopback,
/// private or link-local address (or `localhost`) is refused at creation, naming the field; a
/// public one is accepted.
#[actix_rt::test]
async fn private_notify_urls_are_refused_when_the_operator_says_so() {
    let gw = TestGateway::spawn_with(|s| s.allow_private_notify_urls = false, vec![]).await;
    let shop = gw.enroll_merchant("Book Shop").await;
    let client = gw.client(Some(&shop.cert));
    for (n, url) in [
        "http://127.0.0.1:9000/hooks",
        "http://localhost/hooks",
        "http://169.254.169.254/latest/meta-data",
        "https://[fd00::1]/hooks",
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = order(&format!("private-{n}"));
        b["notify_url"] = json!(url);
        let (status, v) = create(&gw, &client, &b).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
        assert_eq!(error_code(&v), "invalid_request");
        assert_eq!(v["error"]["field"], "notify_url", "{v}");
    }
    assert_eq!(count(&gw, "payments").await, 0);
    let (status, v) = create(&gw, &client, &order("public")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    // A request accepted before the operator refused private addresses, retried with its key,
    // still gets its first response replayed (its stored answer written here as that gateway did).
    let mut earlier = order("before-the-policy");
    earlier["notify_url"] = json!("http://127.0.0.1:9000/hooks");
    let (_, canonical) =
        payhub::http::merchant::parse_create(earlier.to_string().as_bytes()).unwrap();
    let hash = payhub_actors::store::idempotency::request_hash("POST", "/v1/payments", &canonical);
    let db = gw.db.pool.get().await.unwrap();
    db.execute(
        "INSERT INTO idempotency_keys VALUES ($1, 'k-before', $2, 201, '{\"id\":\"pay_before\"}', $3)",
        &[&shop.id, &hash.as_slice(), &gw.clock.now()],
    )
    .await
    .unwrap();
    let replayed = client
        .post(gw.url("/v1/payments"))
        .header("Idempotency-Key", "k-before")
        .json(&earlier)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let (status, v) = body(replayed).await;
    assert_eq!(
        (status, v["id"].as_str()),
        (StatusCode::CREATED, Some("pay_before"))
    );
}

/// "Every merchant request is made over TLS with the merchant's client certificate": anything
/// under `/v1` without one is 401, the document, a method a resource does not serve and a path
/// nothing serves alike; with one, those are 200, 405 and 404. Elsewhere an unknown path is 404.
#[actix_rt::test]
async fn every_v1_request_without_a_certificate_is_401() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let merchant = gw.client(Some(&shop.cert));
    let stranger = gw.client(None);
    let cases = [
        (reqwest::Method::GET, "/v1/openapi.json", StatusCode::OK),
        (
            reqwest::Method::DELETE,
            "/v1/payments/pay_x",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            reqwest::Method::GET,
            "/v1/payments",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (reqwest::Method::GET, "/v1/refunds", StatusCode::NOT_FOUND),
        (reqwest::Method::GET, "/v1", StatusCode::NOT_FOUND),
    ];
    for (method, path, with_certificate) in cases {
        let send = |client: &reqwest::Client| client.request(method.clone(), gw.url(path)).send();
        let (status, err) = body(send(&stranger).await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {err}");
        assert_eq!(error_code(&err), "unauthenticated", "{method} {path}");
        let status = send(&merchant).await.unwrap().status();
        assert_eq!(status, with_certificate, "{method} {path}");
    }
    let res = stranger.get(gw.url("/nothing")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[actix_rt::test]
async fn openapi_document_is_served_and_lists_every_route() {
    let gw = TestGateway::spawn(vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let client = gw.client(Some(&shop.cert));
    let (status, doc) = body(client.get(gw.url("/v1/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} missing from the document");
        // Every listed route is really served (anything but the catch-all's "no route").
        let url = gw.url(&path.replace("{id}", "pay_x"));
        let req = match *method {
            "POST" => client.post(url).json(&order("O-1")),
            _ => client.get(url),
        };
        let res = req.send().await.unwrap();
        let text = res.text().await.unwrap();
        assert!(!text.contains("no route for"), "{method} {path}: {text}");
    }
    gw.stop().await;
}

#[actix_rt::test]
async fn extra_configurators_share_the_listener_without_a_certificate() {
    use actix_web::web;
    let pages: payhub::http::server::Configurator =
        std::sync::Arc::new(|cfg: &mut web::ServiceConfig| {
            cfg.route(
                "/pay/{id}",
                web::get().to(|id: web::Path<String>| async move { format!("page for {id}") }),
            );
        });
    let gw = TestGateway::spawn(vec![pages]).await;
    let res = gw
        .client(None)
        .get(gw.url("/pay/pay_1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "page for pay_1");
    gw.stop().await;
}

/// A customer page past the request deadline is answered with a page, not the API's JSON.
#[actix_rt::test]
async fn a_page_past_the_deadline_is_answered_with_a_page() {
    use actix_web::web;
    let slow: payhub::http::server::Configurator =
        std::sync::Arc::new(|cfg: &mut web::ServiceConfig| {
            cfg.route(
                "/pay/{id}/login",
                web::post().to(|| async {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    "too late"
                }),
            );
        });
    let gw = TestGateway::spawn_with(|s| s.request_deadline_ms = 500, vec![slow]).await;
    let res = gw
        .client(None)
        .post(gw.url("/pay/pay_1/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = res.text().await.unwrap();
    assert!(page.contains("taking too long"), "{page}");
    // A link back to the payment's page (minijinja escapes the slashes).
    assert!(
        page.contains("pay_1") && page.contains("Back to the payment"),
        "{page}"
    );
    gw.stop().await;
}

/// A graceful stop lets a request in progress finish, as long as the code page may wait for the
/// bank: a customer who has just typed the code gets the outcome, not a dropped connection.
#[actix_rt::test]
async fn a_stop_lets_a_slow_code_step_finish() {
    use actix_web::web;
    const STEP_MS: u64 = 7_000;
    const _: () = assert!(payhub::http::pages::CODE_STEP_WAIT_MAX_MS > STEP_MS);
    let slow: payhub::http::server::Configurator =
        std::sync::Arc::new(|cfg: &mut web::ServiceConfig| {
            cfg.route(
                "/pay/{id}/code",
                web::post().to(|| async {
                    tokio::time::sleep(std::time::Duration::from_millis(STEP_MS)).await;
                    "the outcome"
                }),
            );
        });
    let gw = TestGateway::spawn_with(|_| {}, vec![slow]).await;
    let request = gw.client(None).post(gw.url("/pay/pay_1/code")).send();
    let request = tokio::spawn(request);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    gw.stop().await;
    let answer = request.await.unwrap().expect("answered, not dropped");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "the outcome");
}

/// Every answer, the API's as the pages', tells browsers to come back over HTTPS only and not to
/// guess another content type.
#[actix_rt::test]
async fn answers_carry_hsts_and_nosniff() {
    let gw = TestGateway::spawn_with(|_| {}, vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let with_cert = gw.client(Some(&shop.cert));
    let unknown = with_cert.get(gw.url("/v1/nothing")).send().await.unwrap();
    let without_cert = gw.client(None);
    let refused = without_cert
        .get(gw.url("/v1/payments"))
        .send()
        .await
        .unwrap();
    for (answer, status) in [(unknown, 404), (refused, 401)] {
        assert_eq!(answer.status(), status);
        let headers = answer.headers();
        assert_eq!(headers["strict-transport-security"], "max-age=31536000");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    gw.stop().await;
}

/// A keep-alive connection that has served a request and then gets the first byte of the next
/// one, and nothing more, is closed: actix-http times only a connection's first head, and such a
/// client held its slot for ever. The connection answers its requests until then.
#[actix_rt::test]
async fn a_connection_stuck_in_its_second_requests_head_is_closed() {
    use std::io::{Read, Write};
    let gw = TestGateway::spawn_with(|s| s.stuck_connection_after_ms = 1_500, vec![]).await;
    let addr = gw.server.addr;
    let (answered, closed_after) = tokio::task::spawn_blocking(move || {
        let mut tls = tls_to(addr);
        let request = "GET /v1/nothing HTTP/1.1\r\nHost: gateway.test\r\n\r\n";
        let mut first = Vec::new();
        // Two requests a second apart, each answered: an active connection is left alone.
        for _ in 0..2 {
            tls.write_all(request.as_bytes()).unwrap();
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk).unwrap();
            first.extend_from_slice(&chunk[..n]);
            std::thread::sleep(std::time::Duration::from_millis(1_000));
        }
        tls.write_all(b"G").unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        // Until the gateway closes the connection (or, failing the test, 20 s pass).
        let _ = tls.read_to_end(&mut rest);
        (
            String::from_utf8_lossy(&first).into_owned(),
            started.elapsed(),
        )
    })
    .await
    .unwrap();
    assert_eq!(answered.matches("HTTP/1.1 401").count(), 2, "{answered}");
    assert!(
        closed_after < std::time::Duration::from_secs(10),
        "{closed_after:?}"
    );
    gw.stop().await;
}

/// An answer whose body the client takes slowly is not cut: the connection counts as busy until
/// the body is written, not only while the handler runs.
#[actix_rt::test]
async fn an_answer_read_slowly_is_not_cut_by_the_stuck_connection_watch() {
    const BODY_BYTES: usize = 32 << 20;
    let gw = TestGateway::spawn_with(
        |s| s.stuck_connection_after_ms = 1_000,
        vec![answer_of(BODY_BYTES)],
    )
    .await;
    // A pause past the watch's limit.
    let received = read_answer(gw.server.addr, BODY_BYTES, 3_000, 0).await;
    assert!(received >= BODY_BYTES, "cut after {received} bytes");
    gw.stop().await;
}

/// A client that stops reading a long answer is cut off once no chunk has gone for longer than
/// the request deadline allows, instead of holding its connection for ever.
#[actix_rt::test]
async fn an_answer_the_client_stops_reading_is_cut_off() {
    const BODY_BYTES: usize = 64 << 20;
    let gw = TestGateway::spawn_with(
        |s| {
            s.stuck_connection_after_ms = 1_000;
            s.request_deadline_ms = 500;
        },
        vec![answer_of(BODY_BYTES)],
    )
    .await;
    // Past the deadline and the head time (5.5 s here) without reading.
    let received = read_answer(gw.server.addr, BODY_BYTES, 8_000, 0).await;
    assert!(
        received < BODY_BYTES,
        "the whole answer came: the connection was kept"
    );
    gw.stop().await;
}

/// A client that reads a long answer steadily but slowly, for longer than the no-progress limit,
/// gets it whole: each piece it takes is progress, not only the answer's start.
#[actix_rt::test]
async fn an_answer_read_steadily_for_long_is_not_cut_off() {
    const BODY_BYTES: usize = 64 << 20;
    let gw = TestGateway::spawn_with(
        |s| {
            s.stuck_connection_after_ms = 1_000;
            // No progress for 5.5 s is stuck; the reading below takes longer.
            s.request_deadline_ms = 500;
        },
        vec![answer_of(BODY_BYTES)],
    )
    .await;
    // 2 ms between reads.
    let received = read_answer(gw.server.addr, BODY_BYTES, 0, 2).await;
    assert!(received >= BODY_BYTES, "cut after {received} bytes");
    gw.stop().await;
}

/// A route `/big` answering `bytes` bytes.
fn answer_of(bytes: usize) -> payhub::http::server::Configurator {
    use actix_web::web;
    std::sync::Arc::new(move |cfg: &mut web::ServiceConfig| {
        cfg.route(
            "/big",
            web::get().to(move || async move { vec![b'x'; bytes] }),
        );
    })
}

/// Asks for `/big`, reads its first bytes, pauses `pause_ms`, then reads until `bytes` came or
/// the connection ended, `pace_ms` between reads: the body's bytes received.
async fn read_answer(
    addr: std::net::SocketAddr,
    bytes: usize,
    pause_ms: u64,
    pace_ms: u64,
) -> usize {
    use std::io::{Read, Write};
    tokio::task::spawn_blocking(move || {
        let mut tls = tls_to(addr);
        tls.write_all(b"GET /big HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 1024];
        let n = tls.read(&mut first).unwrap();
        let head = body_start(&first[..n]);
        let mut received = n - head;
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        let mut chunk = vec![0u8; 1 << 16];
        while received < bytes {
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
            std::thread::sleep(std::time::Duration::from_millis(pace_ms));
        }
        received
    })
    .await
    .unwrap()
}

/// Where the body starts in the first bytes of an answer (its head is short, and read whole).
fn body_start(first: &[u8]) -> usize {
    first
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
        .expect("the answer's head in its first read")
}

/// A TLS connection to the gateway without a client certificate (reads time out after 20 s).
fn tls_to(addr: std::net::SocketAddr) -> native_tls::TlsStream<std::net::TcpStream> {
    let connector = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    connector.connect("127.0.0.1", tcp).unwrap()
}

/// HTTP/2 is not offered: actix-http would set no limit on a connection's streams and never close
/// an idle h2 connection, so one client could hold the listener's connections for ever.
#[actix_rt::test]
async fn http2_is_not_offered() {
    let gw = TestGateway::spawn_with(|_| {}, vec![]).await;
    let addr = gw.server.addr;
    let chosen = tokio::task::spawn_blocking(move || {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        builder.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        let tls = builder.build().connect("localhost", tcp).unwrap();
        tls.ssl().selected_alpn_protocol().map(<[u8]>::to_vec)
    })
    .await
    .unwrap();
    assert_ne!(chosen.as_deref(), Some(&b"h2"[..]));
    gw.stop().await;
}

#[actix_rt::test]
async fn a_request_whose_body_is_held_back_is_cut_off_at_the_deadline() {
    use std::io::{Read, Write};
    let gw = TestGateway::spawn_with(|s| s.request_deadline_ms = 500, vec![]).await;
    let shop = gw.enroll_merchant("Shop").await;
    let identity =
        native_tls::Identity::from_pkcs8(&shop.cert.cert_pem(), &shop.cert.key_pem()).unwrap();
    let addr = gw.server.addr;
    // A client that sends the head and the start of a body, then nothing.
    let answer = tokio::task::spawn_blocking(move || {
        let connector = native_tls::TlsConnector::builder()
            .identity(identity)
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut tls = connector.connect("127.0.0.1", tcp).unwrap();
        let head = "POST /v1/payments HTTP/1.1\r\nHost: gateway.test\r\n\
                    Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"order_id\":";
        tls.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        // Until the gateway closes the connection (or, failing the test, 10 s pass).
        let _ = tls.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    // Its answer carries the headers every other answer carries.
    let head = answer.to_ascii_lowercase();
    assert!(head.contains("x-content-type-options: nosniff"), "{answer}");
    assert!(
        head.contains("strict-transport-security: max-age="),
        "{answer}"
    );
    assert_eq!(count(&gw, "payments").await, 0);
    gw.stop().await;
}
