//! End to end through the customer pages, as a browser: real PostgreSQL, the real pages over HTTP
//! on port 0, the real payment actors and webhook worker, the real SMPP session and channel router
//! against the SMSC simulator, the real bank router against the bank simulator (ISO 8583 over
//! TCP), and a webhook receiver on port 0.

mod e2e_support;

use chrono::{Duration, Utc};
use e2e_support::*;
use payhub::http::merchant_testing::TestPki;
use payhub::http::pages::CODE_STEP_WAIT_MAX_MS;
use payhub_actors::clock::{ManualClock, SharedClock};
use payhub_actors::keyed_hash::HashKey;
use payhub_actors::store::testing::{TestDb, fresh_database};
use payhub_actors::transaction::PaymentSettings;
use payhub_actors::transaction::actor::ViewPayment;
use payhub_actors::transaction::registry::{InFlight, Lookup, Peek};
use payhub_actors::transaction::view::{PaymentView, load_view, route_options};
use std::sync::Arc;

struct World {
    db: TestDb,
    clock: ManualClock,
    key: HashKey,
    smsc: payhub::sim::smsc::SmscSim,
    bank: payhub::sim::bank::SimHandle,
    outside: Outside,
    gateway: Option<Gateway>,
    merchant: Merchant,
    customer: Customer,
    receiver: Receiver,
}

const ALICE_ACCOUNT: &str = "6222000011112222";
const ALICE_BALANCE: i64 = 1_000_000;

fn settings() -> PaymentSettings {
    PaymentSettings {
        public_url: url::Url::parse("https://gateway.example").unwrap(),
        delivery_timeout_ms: 2_000,
        debit_timeout_ms: 2_000,
        reversal_retry_ms: 200,
        ..PaymentSettings::default()
    }
}

impl World {
    async fn new() -> World {
        Self::with(settings(), vec![]).await
    }

    /// A bank that stops answering, behind a link that waits 30 s: a gateway stopped meanwhile
    /// leaves its debit `processing`.
    async fn with_a_bank_gone_silent() -> World {
        let w = Self::build(
            settings(),
            vec![],
            ALICE_BALANCE,
            30_000,
            CODE_STEP_WAIT_MAX_MS,
        )
        .await;
        w.silence_bank();
        w
    }

    async fn with(settings: PaymentSettings, webhook_script: Vec<u16>) -> World {
        Self::build(
            settings,
            webhook_script,
            ALICE_BALANCE,
            500,
            CODE_STEP_WAIT_MAX_MS,
        )
        .await
    }

    async fn build(
        settings: PaymentSettings,
        webhook_script: Vec<u16>,
        balance: i64,
        bank_response_timeout_ms: u64,
        code_page_wait_ms: u64,
    ) -> World {
        let db = fresh_database().await;
        let clock = ManualClock::new(Utc::now());
        let key = HashKey::random();
        let smsc = start_smsc().await;
        let bank = start_bank(&[(ALICE_ACCOUNT, balance)]).await;
        let outside = Outside {
            smsc: smsc.smpp_addr(),
            bank: bank.addr(),
            bank_response_timeout_ms,
            smpp_response_timeout_ms: 1_000,
            code_page_wait_ms,
        };
        let pki = TestPki::new();
        let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
        let customer = seed_customer(&db.pool, "alice", ALICE_ACCOUNT).await;
        let receiver = Receiver::start(webhook_script);
        let shared: SharedClock = Arc::new(clock.clone());
        let gateway = Gateway::start(
            db.pool.clone(),
            shared,
            key.clone(),
            settings,
            outside.clone(),
            pki,
        )
        .await;
        World {
            db,
            clock,
            key,
            smsc,
            bank,
            outside,
            gateway: Some(gateway),
            merchant,
            customer,
            receiver,
        }
    }

    /// How many message rows of this payment, of `kind` (`code` or `outcome`), meet `condition`
    /// (constant SQL).
    async fn message_rows(&self, pay: &str, kind: &str, condition: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM customer_messages WHERE payment_id = $1 AND kind = '{kind}'
               AND {condition}"
        );
        count(&self.db.pool, &sql, pay).await
    }

    /// The running actor's view of `pay` against the row's, timestamps to the database's
    /// microsecond; returns the view.
    async fn assert_actor_view_is_row(&self, pay: &str) -> PaymentView {
        let registry = &self.gateway.as_ref().unwrap().registry;
        let actor = registry.send(Peek(pay.to_owned())).await.unwrap();
        let seen = actor
            .expect("running")
            .send(ViewPayment::default())
            .await
            .unwrap();
        let (view, routes) = seen.expect("in flight");
        let client = self.db.pool.get().await.unwrap();
        let stored = load_view(&client, pay).await.unwrap().expect("stored");
        assert_eq!(to_micros(view.clone()), to_micros(stored));
        let stored_routes = route_options(&client, &self.customer.id).await.unwrap();
        assert_eq!(routes, Some(stored_routes));
        view
    }

    /// Alice signs in for `pay` with her password, the code to go by SMS: the code page.
    async fn signed_in_by_sms(&self, browser: &Browser, pay: &str) -> Page {
        let page = browser
            .login(pay, "alice", &self.customer.password, "sms", "")
            .await;
        assert_eq!(page.path(), format!("/pay/{pay}/code"), "{}", page.body);
        page
    }

    /// From now on the bank applies each debit, but its 0210 never arrives.
    fn silence_bank(&self) {
        self.bank.set_faults(payhub::sim::bank::Faults {
            drop_pct: 100,
            ..Default::default()
        });
    }

    /// Texts the customer's phone received.
    fn texts(&self) -> Vec<String> {
        texts_to(&self.smsc, &self.customer.mobile)
    }

    fn codes(&self) -> Vec<String> {
        self.texts()
            .iter()
            .filter(|t| t.contains("code "))
            .map(|t| code_in(t))
            .collect()
    }

    fn last_code(&self) -> String {
        self.codes().pop().expect("a code reached the phone")
    }

    fn base(&self) -> String {
        self.gateway.as_ref().unwrap().base.clone()
    }

    fn pki(&self) -> TestPki {
        self.gateway.as_ref().unwrap().pki.clone()
    }

    fn browser(&self) -> Browser {
        Browser::new(&self.base(), &self.pki())
    }

    async fn payment(&self) -> String {
        create_payment(
            &self.db.pool,
            &self.merchant,
            1234,
            &self.receiver.url,
            self.clock.now(),
        )
        .await
    }

    /// A payment, and a browser that passed its password step with SMS chosen.
    async fn signed_in(&self) -> (String, Browser) {
        let pay = self.payment().await;
        let browser = self.browser();
        browser
            .login(&pay, "alice", &self.customer.password, "sms", "")
            .await;
        (pay, browser)
    }

    async fn assert_failed(&self, id: &str, failure_code: &str) {
        let (status, failure, ..) = self.status(id).await;
        assert_eq!(
            (status.as_str(), failure.as_deref()),
            ("failed", Some(failure_code)),
            "payment {id}"
        );
    }

    /// A payment created as a merchant does: `POST /v1/payments` with its client certificate.
    async fn payment_via_api(&self) -> String {
        let order = format!("A-{}", hex::encode(payhub_actors::ids::os_random::<4>()));
        let response = self
            .merchant
            .api
            .post(format!("{}/v1/payments", self.base()))
            .header("Idempotency-Key", order.as_str())
            .json(&serde_json::json!({
                "order_id": order, "amount": 1234, "currency": "CNY", "description": "2 books",
                "return_url": "https://shop.example/return", "notify_url": self.receiver.url,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let object: serde_json::Value = response.json().await.unwrap();
        assert_eq!(object["status"], "awaiting_customer");
        object["id"].as_str().unwrap().to_string()
    }

    /// The payment object, as the merchant reads it.
    async fn api_object(&self, id: &str) -> serde_json::Value {
        let response = self
            .merchant
            .api
            .get(format!("{}/v1/payments/{id}", self.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Debits the bank simulator received.
    fn debits(&self) -> u64 {
        self.bank.stats().debits
    }

    async fn balance(&self) -> i64 {
        self.bank
            .balance(BANK, ALICE_ACCOUNT)
            .await
            .unwrap()
            .unwrap()
    }

    async fn status(&self, id: &str) -> (String, Option<String>, Option<String>, Option<String>) {
        payment_status(&self.db.pool, id).await
    }

    /// Stops the gateway as a crash would and starts a new one on the same database.
    async fn restart(&mut self, settings: PaymentSettings) {
        let pki = self.pki();
        self.gateway.take().unwrap().stop().await;
        let shared: SharedClock = Arc::new(self.clock.clone());
        self.gateway = Some(
            Gateway::start(
                self.db.pool.clone(),
                shared,
                self.key.clone(),
                settings,
                self.outside.clone(),
                pki,
            )
            .await,
        );
    }
}

use futures::FutureExt;
use payhub_actors::Clock;

#[actix_rt::test]
async fn happy_path_pays_once_tells_customer_and_signs_the_webhook() {
    let w = World::new().await;
    let pay = w.payment_via_api().await;
    let browser = w.browser();
    let first = browser.get(&format!("/pay/{pay}")).await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains("Book Shop") && first.body.contains("12.34 CNY"));
    assert!(first.body.contains("2 books"));
    let page = browser
        .login(&pay, &w.customer.online_id, &w.customer.password, "sms", "")
        .await;
    assert_eq!(page.path(), format!("/pay/{pay}/code"), "{}", page.body);
    assert!(page.body.contains("name=\"code\""));
    assert_eq!(w.status(&pay).await.0, "awaiting_code");
    let code = w.last_code();
    assert_eq!(code.len(), 6);
    let text = w.texts()[0].clone();
    assert!(
        text.contains("12.34 CNY") && text.contains("Book Shop"),
        "{text}"
    );
    // The code is stored only as a keyed hash.
    let stored: i64 = count(
        &w.db.pool,
        "SELECT count(*) FROM payments WHERE id = $1 AND code_hash IS NOT NULL AND length(code_hash) = 32",
        &pay,
    )
    .await;
    assert_eq!(stored, 1);

    let csrf = browser.get(&format!("/pay/{pay}/code")).await.csrf();
    let result = browser.submit_code(&pay, &code).await;
    assert_eq!(result.path(), format!("/pay/{pay}/result"));
    assert!(result.body.contains("Payment complete"), "{}", result.body);
    // The link back to the shop (minijinja escapes the slashes).
    assert!(result.body.contains("shop.example") && result.body.contains("Back to Book Shop"));
    let (status, failure, _, approval) = w.status(&pay).await;
    assert_eq!((status.as_str(), failure), ("succeeded", None));
    let approval = approval.expect("field 38 kept");
    assert_eq!(approval.len(), 6);
    assert_eq!(w.debits(), 1);
    assert_eq!(w.balance().await, ALICE_BALANCE - 1234, "debited once");
    // The debit's wire identity was committed with its link's name and address.
    let committed = "SELECT count(*) FROM payments WHERE id = $1 AND bank_link IS NOT NULL
         AND debit_link_addr LIKE '127.0.0.1:%' AND debit_stan IS NOT NULL";
    assert_eq!(count(&w.db.pool, committed, &pay).await, 1);
    let object = w.api_object(&pay).await;
    assert_eq!(object["status"], "succeeded");
    assert_eq!(object["approval_code"], approval.as_str());

    eventually("outcome notice", || async { w.texts().len() == 2 }).await;
    let outcome = &w.texts()[1];
    assert!(
        outcome.contains("succeeded") && outcome.contains("12.34 CNY"),
        "{outcome}"
    );
    // Its one row, written with the final status, carries the SMSC's id once it is accepted.
    eventually("outcome row sent", || async {
        w.message_rows(
            &pay,
            "outcome",
            "channel = 'sms' AND status IN ('sent', 'delivered') AND message_ref IS NOT NULL
               AND destination LIKE '%*%'",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(w.message_rows(&pay, "outcome", "true").await, 1);

    eventually("webhook delivered", || async {
        !w.receiver.requests().is_empty()
    })
    .await;
    let hook = &w.receiver.requests()[0];
    let now = w.clock.now().timestamp();
    hook.verify(&w.merchant.webhook_secret, now, 300)
        .expect("signature verifies with the merchant's secret");
    let body: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(body["type"], "payment.succeeded");
    assert_eq!(body["data"]["id"], pay.as_str());
    assert_eq!(body["data"]["status"], "succeeded");
    assert_eq!(body["data"]["approval_code"], approval.as_str());
    assert!(body["id"].as_str().unwrap().starts_with("evt_"));
    eventually("attempt recorded", || async {
        count(
            &w.db.pool,
            "SELECT count(*) FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id
             WHERE e.payment_id = $1 AND a.status_code = 200",
            &pay,
        )
        .await
            == 1
    })
    .await;
    // A second code post changes nothing.
    let again = browser
        .post(
            &format!("/pay/{pay}/code"),
            &[("csrf_token", &csrf), ("code", &code)],
        )
        .await;
    assert_eq!(again.path(), format!("/pay/{pay}/result"));
    assert_eq!(w.debits(), 1);
}

#[actix_rt::test]
async fn three_wrong_passwords_fail_the_payment_with_one_wording() {
    let w = World::new().await;
    let pay = w.payment().await;
    let browser = w.browser();
    let unknown = browser.login(&pay, "nobody", "whatever", "sms", "").await;
    assert_eq!(unknown.status, 401);
    let wrong = browser
        .login(&pay, "alice", "wrong password", "sms", "")
        .await;
    assert_eq!(wrong.status, 401);
    let strip = |s: &str| s.replace("2 tries", "N").replace("1 try", "N");
    let error = |body: &str| {
        let start = body.find("role=\"alert\">").unwrap();
        let end = body[start..].find("</p>").unwrap() + start;
        body[start..end].to_string()
    };
    assert_eq!(strip(&error(&unknown.body)), strip(&error(&wrong.body)));
    // The address bar now shows the login's address: reloading it shows the payment's page.
    let reloaded = browser.get(&format!("/pay/{pay}/login")).await;
    assert_eq!(
        (reloaded.status, reloaded.path()),
        (200, format!("/pay/{pay}"))
    );
    assert!(reloaded.body.contains("name=\"password\""));
    let third = browser.login(&pay, "alice", "wrong again", "sms", "").await;
    assert_eq!(third.path(), format!("/pay/{pay}/result"));
    assert!(third.body.contains("too many unsuccessful sign-ins"));
    w.assert_failed(&pay, "authentication_failed").await;
    assert!(w.codes().is_empty());
    eventually("failed webhook", || async {
        w.receiver
            .requests()
            .iter()
            .any(|r| r.body.contains("payment.failed"))
    })
    .await;
}

/// A sign-in posted again by the signed-in browser (a double click, a lost answer) with a wrong
/// password counts against the payment too: the third wrong one fails it, as before the code.
#[actix_rt::test]
async fn wrong_passwords_posted_again_after_the_sign_in_fail_the_payment() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    let csrf = browser.get(&format!("/pay/{pay}/code")).await.csrf();
    let post_again = |password: &'static str| {
        let (browser, pay, csrf) = (&browser, &pay, &csrf);
        async move {
            browser
                .post(
                    &format!("/pay/{pay}/login"),
                    &[
                        ("csrf_token", csrf.as_str()),
                        ("identity", "alice"),
                        ("password", password),
                        ("channel", "sms"),
                    ],
                )
                .await
        }
    };
    for left in ["2 tries left", "1 try left"] {
        let page = post_again("a guess").await;
        assert_eq!(page.status, 401, "{}", page.body);
        assert!(page.body.contains(left), "{}", page.body);
    }
    let last = post_again("a guess").await;
    assert_eq!(last.path(), format!("/pay/{pay}/result"), "{}", last.body);
    w.assert_failed(&pay, "authentication_failed").await;
    assert_eq!(w.debits(), 0);
}

#[actix_rt::test]
async fn five_failures_lock_the_identity_across_payments_for_15_minutes() {
    let w = World::new().await;
    let browser = w.browser();
    let mut pays = Vec::new();
    for _ in 0..3 {
        pays.push(w.payment().await);
    }
    // Two failures on each of the first two payments, then one more: five for `alice`.
    for (pay, tries) in [(&pays[0], 2), (&pays[1], 2), (&pays[2], 1)] {
        for _ in 0..tries {
            browser.login(pay, "alice", "nope", "sms", "").await;
        }
    }
    // The right password is refused now, whatever the payment and the letter case.
    for spelling in ["alice", "ALICE"] {
        let locked = browser
            .login(&pays[2], spelling, &w.customer.password, "sms", "")
            .await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        assert!(locked.body.contains("locked"));
    }
    assert_eq!(w.status(&pays[2]).await.0, "awaiting_customer");
    // Locked until 15 minutes after the fifth failure, on a new payment too, and no longer.
    w.clock
        .advance(Duration::minutes(15) - Duration::seconds(2));
    let pay = w.payment().await;
    let still = browser
        .login(&pay, "alice", &w.customer.password, "sms", "")
        .await;
    assert_eq!(still.status, 429, "{}", still.body);
    w.clock.advance(Duration::seconds(3));
    let ok = browser
        .login(&pay, "alice", &w.customer.password, "sms", "")
        .await;
    assert_eq!(ok.path(), format!("/pay/{pay}/code"), "{}", ok.body);
}

/// A lock must not tell who is registered: failures count under the identity as typed (its
/// spelling normalised), never under the customer it names. Five failures with one spelling of a
/// mobile number lock its other spelling the same way, registered or not.
#[actix_rt::test]
async fn a_lock_tells_nobody_whether_the_identity_is_registered() {
    let w = World::new().await;
    let browser = w.browser();
    let nobodys = "8613912345678";
    assert_ne!(w.customer.mobile, nobodys);
    let mut answers = Vec::new();
    for number in [w.customer.mobile.as_str(), nobodys] {
        for attempt in 1..=5 {
            let pay = w.payment().await;
            let wrong = browser
                .login(&pay, &format!("+{number}"), "nope", "sms", "")
                .await;
            // The fifth failure is answered with the lock it sets.
            let expected = if attempt < 5 { 401 } else { 429 };
            assert_eq!(wrong.status, expected, "{number}, attempt {attempt}");
        }
        let pay = w.payment().await;
        let other_spelling = browser.login(&pay, number, "nope", "sms", "").await;
        answers.push((
            other_spelling.status,
            other_spelling.body.contains("locked"),
        ));
    }
    assert_eq!(answers, [(429, true), (429, true)]);
    // The online id was never tried: it is not locked, and the customer signs in with it.
    let pay = w.payment().await;
    let ok = browser
        .login(&pay, "alice", &w.customer.password, "sms", "")
        .await;
    assert_eq!(ok.path(), format!("/pay/{pay}/code"), "{}", ok.body);
}

/// The registered mobile number as people write it (spaces, hyphens) is the same identity: the
/// customer signs in with it, and failures with any spelling of it count together.
#[actix_rt::test]
async fn a_mobile_number_written_with_spaces_or_hyphens_signs_in() {
    let w = World::new().await;
    let browser = w.browser();
    let digits = w.customer.mobile.as_str();
    let spaced = format!("+{} {} {}", &digits[..2], &digits[2..5], &digits[5..]);
    let hyphened = format!("{}-{}", &digits[..5], &digits[5..]);
    let pay = w.payment().await;
    let wrong = browser.login(&pay, &hyphened, "nope", "sms", "").await;
    assert_eq!(wrong.status, 401);
    let ok = browser
        .login(&pay, &spaced, &w.customer.password, "sms", "")
        .await;
    assert_eq!(ok.path(), format!("/pay/{pay}/code"), "{}", ok.body);
    let failures = "SELECT count(*) FROM login_failures WHERE identity = $1";
    let key = format!("msisdn:{digits}");
    assert_eq!(count(&w.db.pool, failures, &key).await, 1);
}

/// A sign-in is counted as a failure until its payment moves on. When the payment ended meanwhile
/// (here, behind its actor's back), a right password must not stay counted against the identity.
#[actix_rt::test]
async fn a_right_password_on_a_payment_that_ended_meanwhile_is_not_a_failure() {
    let w = World::new().await;
    let browser = w.browser();
    let pay = w.payment().await;
    let wrong = browser.login(&pay, "alice", "nope", "sms", "").await;
    assert_eq!(wrong.status, 401);
    let client = w.db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE payments SET status = 'expired', finished_at = now() WHERE id = $1",
            &[&pay],
        )
        .await
        .unwrap();
    browser
        .login(&pay, "alice", &w.customer.password, "sms", "")
        .await;
    let counted = count(
        &w.db.pool,
        "SELECT count(*) FROM login_failures WHERE identity = $1",
        "identity:alice",
    )
    .await;
    assert_eq!(counted, 1, "only the wrong password counts");
    assert!(w.codes().is_empty());
}

/// Each payment has its own actor: sign-ins on many payments at once must still count against
/// one identity, so an attacker with many payment pages gets no more than five guesses.
#[actix_rt::test]
async fn sign_ins_at_once_on_many_payments_get_five_guesses_in_all() {
    let w = World::new().await;
    let mut pays = Vec::new();
    for _ in 0..8 {
        pays.push(w.payment().await);
    }
    let browsers: Vec<Browser> = pays.iter().map(|_| w.browser()).collect();
    let tries = pays
        .iter()
        .zip(&browsers)
        .map(|(pay, browser)| browser.login(pay, "alice", "guess", "sms", ""));
    let statuses: Vec<u16> = futures::future::join_all(tries)
        .await
        .iter()
        .map(|page| page.status)
        .collect();
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    let locked = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(wrong + locked, pays.len(), "{statuses:?}");
    assert!(wrong <= 5 && locked >= 3, "{statuses:?}");
    let counted = count(
        &w.db.pool,
        "SELECT count(*) FROM login_failures WHERE identity = $1",
        "identity:alice",
    )
    .await;
    assert_eq!(counted, 5, "only the guesses that were checked count");
}

/// Five failures within the window lock the identity, even with a right password in between.
#[actix_rt::test]
async fn a_sign_in_between_failures_does_not_forget_them() {
    let w = World::new().await;
    let browser = w.browser();
    for _ in 0..2 {
        let pay = w.payment().await;
        for _ in 0..2 {
            let wrong = browser.login(&pay, "alice", "nope", "sms", "").await;
            assert_eq!(wrong.status, 401, "{}", wrong.body);
        }
    }
    let pay = w.payment().await;
    w.signed_in_by_sms(&browser, &pay).await;
    let pay = w.payment().await;
    let fifth = browser.login(&pay, "alice", "nope", "sms", "").await;
    assert_eq!(fifth.status, 429, "{}", fifth.body);
    let refused = browser
        .login(&pay, "alice", &w.customer.password, "sms", "")
        .await;
    assert_eq!(refused.status, 429, "{}", refused.body);
}

#[actix_rt::test]
async fn three_wrong_codes_fail_and_no_debit_is_sent() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    let real = w.last_code();
    let wrong = if real == "000000" { "111111" } else { "000000" };
    let first = browser.submit_code(&pay, wrong).await;
    assert_eq!(first.status, 422);
    assert!(first.body.contains("2 tries left"), "{}", first.body);
    browser.submit_code(&pay, wrong).await;
    let last = browser.submit_code(&pay, wrong).await;
    assert_eq!(last.path(), format!("/pay/{pay}/result"));
    w.assert_failed(&pay, "code_attempts_exceeded").await;
    assert!(w.debits() == 0);
}

/// The third wrong code is counted, but the payment's failure cannot be written (the database
/// refuses it once): the payment's deadline check fails it at once, so no fourth try is left to
/// the right code, and no debit goes.
#[actix_rt::test]
async fn a_third_wrong_code_whose_failure_was_not_written_leaves_no_fourth_try() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    let real = w.last_code();
    let wrong = if real == "000000" { "111111" } else { "000000" };
    browser.submit_code(&pay, wrong).await;
    browser.submit_code(&pay, wrong).await;
    let client = w.db.pool.get().await.unwrap();
    client
        .batch_execute(
            "CREATE SEQUENCE code_failure_refusals;
             CREATE FUNCTION refuse_code_failure() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('code_failure_refusals') = 1 THEN
                 RAISE EXCEPTION 'injected fault: code failure refused';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_code_failure BEFORE UPDATE ON payments FOR EACH ROW
               WHEN (OLD.status = 'awaiting_code' AND NEW.status = 'failed')
               EXECUTE FUNCTION refuse_code_failure();",
        )
        .await
        .unwrap();
    let third = browser.submit_code(&pay, wrong).await;
    assert!(third.status >= 500, "{} {}", third.status, third.body);
    // The payment's own deadline check ends it at once, without waiting for the customer.
    eventually("failed without a fourth try", || async {
        w.status(&pay).await.0 == "failed"
    })
    .await;
    w.assert_failed(&pay, "code_attempts_exceeded").await;
    let page = browser.get(&format!("/pay/{pay}/code")).await;
    assert_eq!(page.path(), format!("/pay/{pay}/result"), "{}", page.body);
    assert_eq!(w.debits(), 0);
}

/// A sign-in 30 s before the payment's lifetime ends: the code message says the 30 s the code
/// can still be entered, not the 5 minutes a code lasts otherwise.
#[actix_rt::test]
async fn a_code_sent_near_the_payments_end_says_the_time_left() {
    let w = World::new().await;
    let pay = w.payment().await;
    w.clock.advance(Duration::seconds(15 * 60 - 30));
    let browser = w.browser();
    w.signed_in_by_sms(&browser, &pay).await;
    let text = w.texts().pop().expect("the code message");
    // 30 s, or 29 where the payment's expiry was kept to the whole second.
    assert!(
        text.contains("Valid 30 s.") || text.contains("Valid 29 s."),
        "{text}"
    );
}

#[actix_rt::test]
async fn a_late_code_fails_the_payment() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    let code = w.last_code();
    w.clock.advance(Duration::seconds(301));
    let page = browser.submit_code(&pay, &code).await;
    assert_eq!(page.path(), format!("/pay/{pay}/result"));
    assert!(page.body.contains("expired before it was entered"));
    w.assert_failed(&pay, "code_expired").await;
    assert!(w.debits() == 0);
}

/// A code that lapses is no deadline, even with no resend left: only a late code fails the
/// payment (`code_expired`); a payment whose customer walks away expires with its lifetime.
#[actix_rt::test]
async fn a_lapsed_code_with_no_resend_left_waits_for_the_payments_lifetime() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    for _ in 0..2 {
        w.clock.advance(Duration::seconds(31));
        assert_eq!(browser.resend(&pay, "").await.status, 200);
    }
    w.clock.advance(Duration::seconds(301));
    let gateway = w.gateway.as_ref().unwrap();
    gateway.tick_all().await;
    // The page's view is asked of the actor after its tick.
    let page = browser.get(&format!("/pay/{pay}/code")).await;
    assert_eq!(page.path(), format!("/pay/{pay}/code"));
    assert!(
        page.body.contains("no new one can be sent"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("Send me a new code"),
        "no resend offered"
    );
    // A resend posted from an older page.
    let none_left = browser.resend(&pay, "").await;
    assert_eq!(none_left.status, 429);
    assert!(none_left.body.contains("can no longer be paid here"));
    assert!(!none_left.body.contains("Ask for a new one"));
    assert_eq!(w.status(&pay).await.0, "awaiting_code");
    w.clock.advance(Duration::minutes(15));
    gateway.tick_all().await;
    eventually("the payment expired", || async {
        w.status(&pay).await.0 == "expired"
    })
    .await;
    assert!(w.debits() == 0);
}

#[actix_rt::test]
async fn resend_voids_the_old_code_is_spaced_and_bounded() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    let first = w.last_code();
    let too_soon = browser.resend(&pay, "").await;
    assert_eq!(too_soon.status, 429);
    assert!(too_soon.body.contains("seconds"));
    w.clock.advance(Duration::seconds(31));
    let sent = browser.resend(&pay, "").await;
    assert_eq!(sent.status, 200);
    assert!(sent.body.contains("A new code was sent"));
    // Reloading the resend's address shows the code page again, and sends nothing.
    let texts = w.texts().len();
    let reloaded = browser.get(&format!("/pay/{pay}/resend")).await;
    assert_eq!(
        (reloaded.status, reloaded.path()),
        (200, format!("/pay/{pay}/code"))
    );
    assert!(reloaded.body.contains("name=\"code\""));
    assert_eq!(w.texts().len(), texts);
    let second = w.last_code();
    // The old code no longer works (unless the draw repeated it).
    if first != second {
        let old = browser.submit_code(&pay, &first).await;
        assert_eq!(old.status, 422);
    }
    // Even after the first code's validity, a resend keeps the payment alive.
    w.clock.advance(Duration::seconds(301));
    let third = browser.resend(&pay, "").await;
    assert_eq!(third.status, 200, "{}", third.body);
    w.clock.advance(Duration::seconds(31));
    let exhausted = browser.resend(&pay, "").await;
    assert_eq!(exhausted.status, 429);
    assert!(exhausted.body.contains("No more codes"));
    let code = w.last_code();
    let done = browser.submit_code(&pay, &code).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
    assert_eq!(w.codes().len(), 3);
}

/// A resend posted after the payment's lifetime, before its expiry deadline has run, expires it
/// and sends no code.
#[actix_rt::test]
async fn a_resend_after_the_payments_lifetime_expires_it_and_sends_no_code() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    let csrf = browser.get(&format!("/pay/{pay}/code")).await.csrf();
    w.clock.advance(Duration::minutes(16));
    let page = browser
        .post(
            &format!("/pay/{pay}/resend"),
            &[("csrf_token", csrf.as_str()), ("route", "")],
        )
        .await;
    assert_eq!(page.path(), format!("/pay/{pay}/result"), "{}", page.body);
    assert_eq!(w.status(&pay).await.0, "expired");
    assert_eq!(w.codes().len(), 1, "no second code");
    assert_eq!(w.debits(), 0);
}

/// Every password hashing slot (one per core) taken for `ms`, as a flood of sign-ins would; the
/// tasks that hold them.
async fn hashing_slots_held_for(ms: u64) -> Vec<tokio::task::JoinHandle<Option<()>>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let held = (0..cores)
        .map(|_| {
            tokio::spawn(payhub_actors::password::bounded(move || {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }))
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    held
}

/// A sign-in whose password check waited (every hashing slot busy) past the payment's lifetime
/// issues no code: the payment expires, and nothing reaches the phone.
#[actix_rt::test]
async fn a_sign_in_that_outlasts_the_payments_lifetime_sends_no_code() {
    const SLOTS_HELD_MS: u64 = 2_500;
    let w = World::new().await;
    let pay = w.payment().await;
    let browser = w.browser();
    let held = hashing_slots_held_for(SLOTS_HELD_MS).await;
    let password = w.customer.password.clone();
    let login = browser.login(&pay, "alice", &password, "sms", "");
    let advance = async {
        // The sign-in has read the clock and waits for a slot.
        tokio::time::sleep(std::time::Duration::from_millis(SLOTS_HELD_MS / 2)).await;
        w.clock.advance(Duration::minutes(16));
    };
    let (page, ()) = futures::join!(login, advance);
    for slot in held {
        slot.await.unwrap();
    }

    assert_eq!(page.path(), format!("/pay/{pay}/result"), "{}", page.body);
    assert_eq!(w.status(&pay).await.0, "expired");
    assert!(w.codes().is_empty(), "no code after the payment's lifetime");
}

/// A sign-in that finds no password hashing slot in time is answered busy, and counts as no
/// failure: the customer tries again once the flood has passed.
#[actix_rt::test]
async fn a_sign_in_behind_busy_hashing_is_answered_busy_and_not_counted() {
    let w = World::with(
        PaymentSettings {
            password_wait_max_ms: 300,
            ..settings()
        },
        vec![],
    )
    .await;
    let pay = w.payment().await;
    let browser = w.browser();
    let held = hashing_slots_held_for(1_500).await;

    let busy = browser
        .login(&pay, "alice", &w.customer.password, "sms", "")
        .await;

    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(busy.body.contains("Busy right now"), "{}", busy.body);
    for slot in held {
        slot.await.unwrap();
    }
    let failures = "SELECT count(*) FROM login_failures WHERE identity = $1";
    assert_eq!(count(&w.db.pool, failures, "identity:alice").await, 0);
    let ok = w.signed_in_by_sms(&browser, &pay).await;
    assert_eq!(ok.status, 200);
    assert_eq!(w.codes().len(), 1);
}

#[actix_rt::test]
async fn a_code_from_another_browser_session_is_refused() {
    let w = World::new().await;
    let pay = w.payment().await;
    let mallory = w.browser();
    let her_token = mallory.get(&format!("/pay/{pay}")).await.csrf();
    let alice = w.browser();
    alice
        .login(&pay, "alice", &w.customer.password, "sms", "")
        .await;
    let code = w.last_code();
    let page = mallory.get(&format!("/pay/{pay}/code")).await;
    assert_eq!(page.status, 403);
    // A sign-in posted from her own page once Alice's passed gives her no session of Alice's.
    let again = mallory
        .post(
            &format!("/pay/{pay}/login"),
            &[
                ("csrf_token", her_token.as_str()),
                ("identity", "alice"),
                ("password", "guess"),
                ("channel", "sms"),
            ],
        )
        .await;
    assert_eq!(again.path(), format!("/pay/{pay}/code"));
    assert_eq!(again.status, 403, "{}", again.body);
    // Mallory fetches a CSRF token of her own from the payment page and posts the right code.
    let pay_page = mallory.get(&format!("/pay/{pay}")).await;
    assert!(pay_page.body.contains("the browser you signed in with"));
    let csrf_source = mallory.get(&format!("/pay/{pay}/code")).await;
    assert!(!csrf_source.body.contains("csrf_token"));
    let forged = mallory
        .post(
            &format!("/pay/{pay}/code"),
            &[("csrf_token", "00"), ("code", &code)],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(
        forged.body.contains("This form has expired"),
        "{}",
        forged.body
    );
    // With her own valid token, the right code is still not hers to use.
    let wrong_session = mallory
        .post(
            &format!("/pay/{pay}/code"),
            &[("csrf_token", her_token.as_str()), ("code", &code)],
        )
        .await;
    assert_eq!(wrong_session.status, 403, "{}", wrong_session.body);
    assert!(
        wrong_session
            .body
            .contains("the browser you signed in with"),
        "{}",
        wrong_session.body
    );
    assert_eq!(w.status(&pay).await.0, "awaiting_code");
    assert!(w.debits() == 0);
    let ok = alice.submit_code(&pay, &code).await;
    assert!(ok.body.contains("Payment complete"));
}

/// A browser that never signed in, holding a CSRF pair of its own and any session cookie, gets
/// the refusal for a malformed code or route too: not the code page, which names where the
/// customer's codes go.
#[actix_rt::test]
async fn a_malformed_post_from_a_browser_that_never_signed_in_shows_no_routes() {
    let w = World::new().await;
    let pay = w.payment().await;
    let forger = cookieless_client(&w.pki());
    let first = forger
        .get(format!("{}/pay/{pay}", w.base()))
        .send()
        .await
        .unwrap();
    let csrf_cookie = first
        .cookies()
        .find(|c| c.name() == "payhub_csrf")
        .expect("a CSRF cookie")
        .value()
        .to_string();
    let token = Page {
        status: 200,
        url: String::new(),
        body: first.text().await.unwrap(),
    }
    .csrf();
    w.browser()
        .login(&pay, "alice", &w.customer.password, "sms", "")
        .await;
    let masked_number = &w.customer.mobile[..6];
    for (path, field, value) in [("code", "code", ""), ("resend", "route", "pager:1")] {
        let page = forger
            .post(format!("{}/pay/{pay}/{path}", w.base()))
            .header(
                "cookie",
                format!("payhub_csrf={csrf_cookie}; payhub_session=x"),
            )
            .form(&[("csrf_token", token.as_str()), (field, value)])
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 403, "{path}");
        let body = page.text().await.unwrap();
        assert!(body.contains("the browser you signed in with"), "{body}");
        assert!(!body.contains(masked_number), "{path}: {body}");
    }
    assert_eq!(w.status(&pay).await.0, "awaiting_code");
}

/// A gateway configured for 8-digit codes sends 8 digits in the SMS, and the page takes them
/// (and refuses the same code cut to the default 6).
#[actix_rt::test]
async fn eight_digit_codes_go_out_and_are_accepted() {
    let eight = PaymentSettings {
        code_digits: 8,
        ..settings()
    };
    let w = World::build(eight, vec![], ALICE_BALANCE, 500, CODE_STEP_WAIT_MAX_MS).await;
    let (pay, browser) = w.signed_in().await;
    let code = w.last_code();
    assert_eq!(code.len(), 8, "{code}");
    let short = browser.submit_code(&pay, &code[..6]).await;
    assert!(
        short.body.contains("That code is not right"),
        "{}",
        short.body
    );
    let done = browser.submit_code(&pay, &code).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
}

#[actix_rt::test]
async fn insufficient_funds_is_declined_with_field_39() {
    let w = World::build(settings(), vec![], 1_000, 500, CODE_STEP_WAIT_MAX_MS).await;
    let (pay, browser) = w.signed_in().await;
    let page = browser.submit_code(&pay, &w.last_code()).await;
    assert!(page.body.contains("insufficient funds"), "{}", page.body);
    let (status, failure, code, approval) = w.status(&pay).await;
    assert_eq!(
        (
            status.as_str(),
            failure.as_deref(),
            code.as_deref(),
            approval
        ),
        ("failed", Some("bank_declined"), Some("51"), None)
    );
    eventually("webhook", || async { !w.receiver.requests().is_empty() }).await;
    let body: serde_json::Value = serde_json::from_str(&w.receiver.requests()[0].body).unwrap();
    assert_eq!(body["data"]["failure_code"], "bank_declined");
    assert_eq!(body["data"]["bank_response_code"], "51");
}

/// A `processing` write that outlasts the code step's wait (here behind a lock on the row) may
/// still commit: read back as awaiting its code, the payment is read again at each retry, and
/// once the write has committed it is settled at once (its reserved 0200 never left: reversed to
/// be safe, then failed), not at its expiry. Nothing was debited.
#[actix_rt::test]
async fn a_processing_write_that_commits_after_its_wait_is_settled_at_once() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    let code = w.last_code();
    let mut locker = w.db.pool.get().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.query("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", &[&pay])
        .await
        .unwrap();
    // The code step gives up on the write after its wait (2 s here).
    let _ = browser.submit_code(&pay, &code).await;
    eventually("the write waits on the lock", || async {
        count(
            &w.db.pool,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND $1 <> ''",
            &pay,
        )
        .await
            >= 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(payment_status(&w.db.pool, &pay).await.0, "awaiting_code");
    lock.rollback().await.unwrap();
    let pool = w.db.pool.clone();
    eventually("settled once the write committed", || {
        let (pool, id) = (pool.clone(), pay.clone());
        async move { payment_status(&pool, &id).await.0 == "failed" }
    })
    .await;
    w.assert_failed(&pay, "bank_unavailable").await;
    assert_eq!(w.debits(), 0, "the reserved 0200 never left");
}

#[actix_rt::test]
async fn bank_timeout_is_bank_unavailable_and_the_debit_is_reversed() {
    let w = World::new().await;
    // The bank applies the debit but its 0210 never arrives.
    w.silence_bank();
    let (pay, browser) = w.signed_in().await;
    let page = browser.submit_code(&pay, &w.last_code()).await;
    assert!(
        page.body.contains("returned automatically"),
        "{}",
        page.body
    );
    w.assert_failed(&pay, "bank_unavailable").await;
    // The bank router queued the reversal; once answers flow again it is acknowledged, and the
    // money is back. It goes one response timeout (500 ms) after it was queued, on the
    // gateway's clock: the debit may still be at the bank until then.
    w.bank.set_faults(Default::default());
    w.clock.advance(Duration::seconds(1));
    eventually("reversal applied", || async {
        w.bank.stats().reversals >= 1 && w.balance().await == ALICE_BALANCE
    })
    .await;
    assert_eq!(w.debits(), 1);
}

/// 91 (issuer or switch inoperative) and 96 (system malfunction) are the bank not deciding: the
/// payment fails as `bank_unavailable` with the bank's code, and the debit is reversed to be safe
/// (96 applied it first).
#[actix_rt::test]
async fn a_bank_malfunction_is_bank_unavailable_and_the_debit_is_reversed() {
    let w = World::new().await;
    w.bank.set_faults(payhub::sim::bank::Faults {
        fail_pct: 100,
        ..Default::default()
    });
    let pay = w.payment().await;
    let browser = w.browser();
    w.signed_in_by_sms(&browser, &pay).await;
    let page = browser.submit_code(&pay, &w.last_code()).await;
    assert!(
        page.body.contains("returned automatically"),
        "{}",
        page.body
    );
    let (status, failure, code, _) = w.status(&pay).await;
    let code = code.expect("the bank's field 39");
    assert!(code == "91" || code == "96", "{code}");
    assert_eq!(
        (status.as_str(), failure.as_deref()),
        ("failed", Some("bank_unavailable"))
    );
    eventually("webhook", || async { !w.receiver.requests().is_empty() }).await;
    let body: serde_json::Value = serde_json::from_str(&w.receiver.requests()[0].body).unwrap();
    assert_eq!(body["data"]["failure_code"], "bank_unavailable");
    assert_eq!(body["data"]["bank_response_code"], code.as_str());
    eventually("reversal applied", || async {
        w.bank.stats().reversals >= 1 && w.balance().await == ALICE_BALANCE
    })
    .await;
}

/// The `processing` write waits behind a row lock for longer than the bank link's response
/// timeout (500 ms here): the reserved 0200 still goes once the write commits, and the payment
/// succeeds, instead of failing `bank_unavailable` with no bank asked.
#[actix_rt::test]
async fn a_processing_write_slower_than_the_response_timeout_still_sends_its_debit() {
    let w = World::new().await;
    let (pay, browser) = w.signed_in().await;
    let code = w.last_code();
    let mut client = w.db.pool.get().await.unwrap();
    let lock = client.transaction().await.unwrap();
    lock.execute("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", &[&pay])
        .await
        .unwrap();
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
        lock.commit().await.unwrap();
    };
    let (page, ()) = tokio::join!(browser.submit_code(&pay, &code), release);
    assert!(page.body.contains("Payment complete"), "{}", page.body);
    assert_eq!(w.debits(), 1);
    assert_eq!(w.balance().await, ALICE_BALANCE - 1234);
}

/// A BIPS that approves with a code the profile does not list (08, honour with identification):
/// the gateway cannot know what that did to the account, so the payment fails with the bank's
/// code, and the debit is reversed to be safe.
#[actix_rt::test]
async fn an_unlisted_response_code_fails_the_payment_and_the_debit_is_reversed() {
    let w = World::new().await;
    w.bank.set_faults(payhub::sim::bank::Faults {
        approved_as: 8,
        ..Default::default()
    });
    let (pay, browser) = w.signed_in().await;
    browser.submit_code(&pay, &w.last_code()).await;
    let (status, failure, code, _) = w.status(&pay).await;
    assert_eq!(
        (status.as_str(), failure.as_deref(), code.as_deref()),
        ("failed", Some("bank_declined"), Some("08"))
    );
    eventually("reversal applied", || async {
        w.bank.stats().reversals_applied == 1 && w.balance().await == ALICE_BALANCE
    })
    .await;
}

/// A bank slow to answer does not hold the customer's browser: past the code page's wait it shows
/// the payment in progress, reloading itself, and then the outcome.
#[actix_rt::test]
async fn a_slow_bank_shows_the_payment_in_progress_then_its_outcome() {
    let w = World::build(settings(), vec![], ALICE_BALANCE, 1_500, 200).await;
    w.silence_bank();
    let pay = w.payment().await;
    let browser = w.browser();
    w.signed_in_by_sms(&browser, &pay).await;
    let page = browser.submit_code(&pay, &w.last_code()).await;
    let refresh = "http-equiv=\"refresh\"";
    assert_eq!(page.path(), format!("/pay/{pay}/result"));
    assert!(page.body.contains("Payment in progress"), "{}", page.body);
    assert!(page.body.contains(refresh), "{}", page.body);
    assert_eq!(w.status(&pay).await.0, "processing");
    eventually("the debit's outcome", || async {
        w.status(&pay).await.0 == "failed"
    })
    .await;
    let done = browser.get(&format!("/pay/{pay}/result")).await;
    assert!(done.body.contains("Payment not completed"), "{}", done.body);
    assert!(!done.body.contains(refresh), "{}", done.body);
}

/// The terminal channel whole: a customer's dedicated terminal, connected to the gateway's
/// switch, receives the code with the amount and the merchant; the code typed in the browser
/// that signed in completes the payment; the outcome is told on the same terminal.
/// A dedicated terminal of Alice's, connected to the switch with `behaviour`: its id and the
/// running simulator.
async fn connect_dedicated_terminal(
    w: &World,
    behaviour: payhub::sim::terminal::DeliveryBehaviour,
) -> (String, payhub::sim::terminal::SimHandle) {
    let terminal_id =
        add_terminal(&w.db.pool, &w.customer.id, "dedicated", "Desk unit", None).await;
    let terminal = start_terminal(w, &terminal_id, behaviour).await;
    (terminal_id, terminal)
}

/// The simulator of a registered dedicated terminal, connected (waits until the switch has it).
async fn start_terminal(
    w: &World,
    terminal_id: &str,
    behaviour: payhub::sim::terminal::DeliveryBehaviour,
) -> payhub::sim::terminal::SimHandle {
    use payhub::channels::terminal::auth::SharedKey;
    use payhub::channels::terminal::client::ClientOptions;
    use payhub::channels::terminal::tls::ClientTls;
    use payhub::sim::terminal::{SimConfig, spawn};
    let key: Vec<u8> =
        w.db.pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT shared_key FROM terminals WHERE id = $1",
                &[&terminal_id],
            )
            .await
            .unwrap()
            .get(0);
    let switch = w.gateway.as_ref().unwrap().terminal_switch.clone();
    let client = ClientOptions {
        switch: switch.addr.to_string(),
        server_name: None,
        terminal_id: terminal_id.to_string(),
        key: SharedKey::new(key.try_into().unwrap()).into(),
        tls: ClientTls::Off,
    };
    let terminal = spawn(SimConfig {
        client,
        behaviour,
        answer_pings: true,
        answer: None,
    })
    .await
    .unwrap();
    switch.wait_online(terminal_id).await;
    terminal
}

#[actix_rt::test]
async fn a_code_by_dedicated_terminal_and_the_outcome_told_on_it() {
    use payhub::sim::terminal::{DeliveryBehaviour, SimEvent};
    let w = World::new().await;
    let (_, mut terminal) = connect_dedicated_terminal(&w, DeliveryBehaviour::Acknowledge).await;
    let pay = w.payment().await;
    let browser = w.browser();
    let wait = std::time::Duration::from_secs(10);
    let page = browser
        .login(&pay, "alice", &w.customer.password, "terminal", "")
        .await;
    assert_eq!(page.path(), format!("/pay/{pay}/code"));
    assert!(page.body.contains("name=\"code\""), "{}", page.body);
    let Some(SimEvent::Code {
        payment_id,
        code,
        amount,
        currency,
        merchant,
        ..
    }) = terminal.next_delivery(wait).await
    else {
        panic!("the code on the terminal");
    };
    assert_eq!(payment_id, pay);
    assert_eq!((amount, currency.as_str()), (1234, "CNY"));
    assert_eq!(merchant, "Book Shop");
    assert!(w.codes().is_empty(), "no SMS: {:?}", w.codes());
    let done = browser.submit_code(&pay, &code).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
    assert_told_succeeded(terminal.next_delivery(wait).await, &pay);
}

/// `event` is the terminal being told that payment `pay` succeeded.
fn assert_told_succeeded(event: Option<payhub::sim::terminal::SimEvent>, pay: &str) {
    match event {
        Some(payhub::sim::terminal::SimEvent::Outcome {
            payment_id,
            outcome,
            ..
        }) => assert_eq!((payment_id.as_str(), outcome.as_str()), (pay, "succeeded")),
        other => panic!("the outcome on the terminal, not {other:?}"),
    }
}

/// The terminal goes offline after showing the code: the outcome is kept for it, and shown
/// when it connects again, once.
#[actix_rt::test]
async fn an_outcome_for_a_terminal_gone_offline_is_shown_when_it_is_back() {
    use payhub::sim::terminal::{DeliveryBehaviour, SimEvent};
    let w = World::new().await;
    let (terminal_id, mut terminal) =
        connect_dedicated_terminal(&w, DeliveryBehaviour::Acknowledge).await;
    let pay = w.payment().await;
    let browser = w.browser();
    browser
        .login(&pay, "alice", &w.customer.password, "terminal", "")
        .await;
    let wait = std::time::Duration::from_secs(10);
    let Some(SimEvent::Code { code, .. }) = terminal.next_delivery(wait).await else {
        panic!("the code on the terminal");
    };
    terminal.stop();
    let switch = w.gateway.as_ref().unwrap().terminal_switch.clone();
    switch.wait_offline(&terminal_id).await;
    let done = browser.submit_code(&pay, &code).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
    let held = "SELECT count(*) FROM customer_messages
                WHERE payment_id = $1 AND kind = 'outcome' AND status = 'queued'";
    eventually("the outcome held", || async {
        count(&w.db.pool, held, &pay).await == 1
    })
    .await;
    let mut back = start_terminal(&w, &terminal_id, DeliveryBehaviour::Acknowledge).await;
    assert_told_succeeded(back.next_delivery(wait).await, &pay);
    let delivered = "SELECT count(*) FROM customer_messages
                     WHERE payment_id = $1 AND kind = 'outcome' AND status = 'delivered'";
    eventually("the outcome delivered", || async {
        count(&w.db.pool, delivered, &pay).await == 1
    })
    .await;
    // Once: a second connection gets nothing more.
    back.stop();
    switch.wait_offline(&terminal_id).await;
    let mut again = start_terminal(&w, &terminal_id, DeliveryBehaviour::Acknowledge).await;
    assert!(
        again
            .next_delivery(std::time::Duration::from_millis(500))
            .await
            .is_none()
    );
}

/// Two outcomes held for a terminal that then connects and drops at the first: both stay held
/// for its next connection, neither is left taken and unsent.
#[actix_rt::test]
async fn outcomes_held_for_a_terminal_that_drops_again_wait_for_the_next_connection() {
    use payhub::sim::terminal::{DeliveryBehaviour, SimEvent};
    let w = World::new().await;
    let (terminal_id, paid) = outcomes_held_for_a_terminal(&w, 2).await;
    let held = held_outcomes_sql();
    let wait = std::time::Duration::from_secs(10);
    let switch = w.gateway.as_ref().unwrap().terminal_switch.clone();
    let mut dropping = start_terminal(&w, &terminal_id, DeliveryBehaviour::DropConnection).await;
    // It drops at the first outcome: both rows were taken by then.
    assert!(matches!(
        dropping.next_delivery(wait).await,
        Some(SimEvent::Outcome {
            acknowledged: false,
            ..
        })
    ));
    switch.wait_offline(&terminal_id).await;
    eventually("both held again", || async {
        count(&w.db.pool, &held, &terminal_id).await == 2
    })
    .await;
    let mut back = start_terminal(&w, &terminal_id, DeliveryBehaviour::Acknowledge).await;
    let mut told = Vec::new();
    for _ in 0..2 {
        match back.next_delivery(wait).await {
            Some(SimEvent::Outcome { payment_id, .. }) => told.push(payment_id),
            other => panic!("an outcome on the terminal, not {other:?}"),
        }
    }
    told.sort();
    assert_eq!(told, paid);
}

/// A terminal that connects again while its held outcomes go to its older connection (silent,
/// half-open): the outcomes held again there go to the newer connection, at once, each once.
#[actix_rt::test]
async fn outcomes_held_again_on_a_replaced_connection_go_to_the_newer_one() {
    use payhub::sim::terminal::{DeliveryBehaviour, SimEvent};
    let w = World::new().await;
    let (terminal_id, paid) = outcomes_held_for_a_terminal(&w, 3).await;
    let wait = std::time::Duration::from_secs(10);
    let mut silent = start_terminal(&w, &terminal_id, DeliveryBehaviour::Silent).await;
    assert!(matches!(
        silent.next_delivery(wait).await,
        Some(SimEvent::Outcome { .. })
    ));
    // The first outcome waits for the silent connection's ACK: the terminal connects again.
    let mut newer = start_terminal(&w, &terminal_id, DeliveryBehaviour::Acknowledge).await;
    let mut told = Vec::new();
    for _ in 0..3 {
        match newer.next_delivery(wait).await {
            Some(SimEvent::Outcome { payment_id, .. }) => told.push(payment_id),
            other => panic!("an outcome on the newer connection, not {other:?}"),
        }
    }
    told.sort();
    assert_eq!(told, paid);
    let delivered = "SELECT count(*) FROM customer_messages WHERE destination = $1
                       AND kind = 'outcome' AND status = 'delivered'";
    eventually("all three delivered", || async {
        count(&w.db.pool, delivered, &terminal_id).await == 3
    })
    .await;
}

/// An outcome a stopped process was sending to its terminal (taken, not ended) is neither sent
/// again by the next start's resend of notices left queued (the terminal may be connected and
/// taking it from the held ones at that moment) nor lost: the terminal's next connection takes it.
#[actix_rt::test]
async fn an_outcome_left_being_sent_by_an_earlier_process_goes_at_the_next_connection() {
    use payhub::channels::terminal::held_outcomes::held_notice_sending;
    use payhub::sim::terminal::{DeliveryBehaviour, SimEvent};
    use payhub_actors::transaction::store::orphaned_outcome_notices;
    let w = World::new().await;
    let (terminal_id, paid) = outcomes_held_for_a_terminal(&w, 2).await;
    let client = w.db.pool.get().await.unwrap();
    // One left by another process's switch; one by this switch two hours ago, whose end could not
    // be recorded.
    let this_switch = w.gateway.as_ref().unwrap().terminal_switch.registry.clone();
    let marks = [
        (held_notice_sending("sw_gone"), w.clock.now()),
        (
            held_notice_sending(this_switch.switch_id()),
            w.clock.now() - Duration::hours(2),
        ),
    ];
    for ((error, at), pay) in marks.iter().zip(&paid) {
        client
            .execute(
                "UPDATE customer_messages SET error = $2, updated_at = $3
                 WHERE payment_id = $1 AND kind = 'outcome'",
                &[pay, error, at],
            )
            .await
            .unwrap();
    }
    let later = w.clock.now() + Duration::minutes(1);
    let orphans = orphaned_outcome_notices(&client, later, 100).await.unwrap();
    assert!(orphans.is_empty(), "{} resent", orphans.len());
    let mut back = start_terminal(&w, &terminal_id, DeliveryBehaviour::Acknowledge).await;
    let mut told = Vec::new();
    for _ in 0..2 {
        match back.next_delivery(std::time::Duration::from_secs(10)).await {
            Some(SimEvent::Outcome { payment_id, .. }) => told.push(payment_id),
            other => panic!("an outcome on the terminal, not {other:?}"),
        }
    }
    told.sort();
    assert_eq!(told, paid);
}

/// A dedicated terminal that showed `n` codes and went offline before their payments completed:
/// its id, and the `n` payments (sorted) whose outcomes are held for it.
async fn outcomes_held_for_a_terminal(w: &World, n: usize) -> (String, Vec<String>) {
    use payhub::sim::terminal::{DeliveryBehaviour, SimEvent};
    let (terminal_id, mut terminal) =
        connect_dedicated_terminal(w, DeliveryBehaviour::Acknowledge).await;
    let wait = std::time::Duration::from_secs(10);
    let mut waiting = Vec::new();
    for _ in 0..n {
        let pay = w.payment().await;
        let browser = w.browser();
        browser
            .login(&pay, "alice", &w.customer.password, "terminal", "")
            .await;
        let Some(SimEvent::Code { code, .. }) = terminal.next_delivery(wait).await else {
            panic!("the code on the terminal");
        };
        waiting.push((pay, browser, code));
    }
    terminal.stop();
    let switch = w.gateway.as_ref().unwrap().terminal_switch.clone();
    switch.wait_offline(&terminal_id).await;
    for (pay, browser, code) in &waiting {
        let done = browser.submit_code(pay, code).await;
        assert!(done.body.contains("Payment complete"), "{}", done.body);
    }
    let held = held_outcomes_sql();
    eventually("the outcomes held", || async {
        count(&w.db.pool, &held, &terminal_id).await == n as i64
    })
    .await;
    let mut paid: Vec<String> = waiting.into_iter().map(|(pay, ..)| pay).collect();
    paid.sort();
    (terminal_id, paid)
}

/// How many outcomes are held for terminal `$1`.
fn held_outcomes_sql() -> String {
    format!(
        "SELECT count(*) FROM customer_messages WHERE destination = $1 AND kind = 'outcome'
            AND status = 'queued' AND error = '{}'",
        payhub::channels::terminal::held_outcomes::HELD_NOTICE
    )
}

/// A terminal that takes the code but never acknowledges it: the delivery failed, as the terminal
/// protocol says, so the page says so and offers another way, and the code is void.
#[actix_rt::test]
async fn a_code_the_terminal_does_not_acknowledge_is_failed_and_another_way_offered() {
    use payhub::sim::terminal::DeliveryBehaviour;
    let w = World::new().await;
    let (_, _terminal) = connect_dedicated_terminal(&w, DeliveryBehaviour::Silent).await;
    let pay = w.payment().await;
    let browser = w.browser();
    let page = browser
        .login(&pay, "alice", &w.customer.password, "terminal", "")
        .await;
    assert_eq!(page.path(), format!("/pay/{pay}/code"));
    assert!(
        page.body.contains("did not confirm the code"),
        "{}",
        page.body
    );
    assert!(page.body.contains("value=\"sms:trm_"), "{}", page.body);
    assert!(!page.body.contains("name=\"code\""), "{}", page.body);
    let client = w.db.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT code_hash IS NULL FROM payments WHERE id = $1",
            &[&pay],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the code is void");
    let sent = browser.resend(&pay, "sms").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let done = browser.submit_code(&pay, &w.last_code()).await;
    assert!(done.body.contains("Payment complete"));
}

#[actix_rt::test]
async fn an_offline_terminal_is_said_at_once_and_sms_is_offered() {
    let w = World::new().await;
    add_terminal(&w.db.pool, &w.customer.id, "dedicated", "Desk unit", None).await;
    // The dedicated terminal is registered but not connected to the switch: offline.
    let pay = w.payment().await;
    let browser = w.browser();
    let page = browser
        .login(&pay, "alice", &w.customer.password, "terminal", "")
        .await;
    assert_eq!(page.path(), format!("/pay/{pay}/code"));
    assert!(page.body.contains("offline"), "{}", page.body);
    assert!(page.body.contains("value=\"sms:trm_"), "{}", page.body);
    assert!(!page.body.contains("name=\"code\""));
    let sent = browser.resend(&pay, "sms").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let done = browser.submit_code(&pay, &w.last_code()).await;
    assert!(done.body.contains("Payment complete"));
}

/// Each registered mobile is offered on its own, and the code goes to the one chosen.
#[actix_rt::test]
async fn a_resend_goes_to_the_mobile_chosen_among_several() {
    let w = World::new().await;
    add_terminal(&w.db.pool, &w.customer.id, "dedicated", "Desk unit", None).await;
    let second = "8613900139777";
    let phone = add_terminal(&w.db.pool, &w.customer.id, "mobile", "Work", Some(second)).await;
    let (pay, browser) = w.signed_in().await;
    let page = browser.get(&format!("/pay/{pay}/code")).await;
    let offered = format!("value=\"sms:{phone}\"");
    assert!(page.body.contains(&offered), "{}", page.body);
    assert!(page.body.contains("SMS to"), "{}", page.body);
    w.clock.advance(Duration::seconds(31));
    let sent = browser.resend(&pay, &format!("sms:{phone}")).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let to_second = texts_to(&w.smsc, second);
    assert_eq!(to_second.len(), 1, "{to_second:?}");
    let done = browser.submit_code(&pay, &code_in(&to_second[0])).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
}

/// At sign-in with SMS chosen, `terminal` names which registered mobile gets the code (by id or
/// label); for a name that is none of them nothing is sent, and the code page says why and offers
/// the registered ways.
#[actix_rt::test]
async fn the_sign_in_sends_the_code_to_the_mobile_named() {
    let w = World::new().await;
    let second = "8613900139777";
    let phone = add_terminal(&w.db.pool, &w.customer.id, "mobile", "Work", Some(second)).await;
    for name in [phone.as_str(), "work"] {
        let pay = w.payment().await;
        let browser = w.browser();
        let before = texts_to(&w.smsc, second).len();
        let page = browser
            .login(&pay, "alice", &w.customer.password, "sms", name)
            .await;
        assert_eq!(page.path(), format!("/pay/{pay}/code"), "{}", page.body);
        let to_second = texts_to(&w.smsc, second);
        assert_eq!(to_second.len(), before + 1, "{to_second:?}");
        let done = browser
            .submit_code(&pay, &code_in(to_second.last().unwrap()))
            .await;
        assert!(done.body.contains("Payment complete"), "{}", done.body);
    }
    let texts = w.texts().len();
    let pay = w.payment().await;
    let refused = w
        .browser()
        .login(&pay, "alice", &w.customer.password, "sms", "Home")
        .await;
    assert_eq!(
        refused.path(),
        format!("/pay/{pay}/code"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("not (or no longer) registered"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains(&format!("value=\"sms:{phone}\"")),
        "{}",
        refused.body
    );
    assert_eq!(w.texts().len(), texts);
}

#[actix_rt::test]
async fn bad_input_gets_calm_4xx_pages() {
    let w = World::new().await;
    let pay = w.payment().await;
    let browser = w.browser();
    assert_eq!(browser.get("/pay/pay_doesnotexist").await.status, 404);
    assert_eq!(browser.get("/pay/..%2f..%2fetc").await.status, 404);
    // A path or method no page serves is a page too, never the API's JSON.
    for nowhere in [
        browser.get(&format!("/pay/{pay}/elsewhere")).await,
        browser.post(&format!("/pay/{pay}"), &[]).await,
    ] {
        assert_eq!(nowhere.status, 404);
        assert!(
            nowhere.body.starts_with("<!doctype html>"),
            "{}",
            nowhere.body
        );
    }
    // No CSRF cookie yet: refused.
    let fresh = w.browser();
    let p = fresh
        .post(
            &format!("/pay/{pay}/login"),
            &[("identity", "alice"), ("password", "x")],
        )
        .await;
    assert_eq!(p.status, 403);
    let page = browser.get(&format!("/pay/{pay}")).await;
    let csrf = page.csrf();
    let long = "x".repeat(10_000);
    let big = browser
        .post(
            &format!("/pay/{pay}/login"),
            &[("csrf_token", &csrf), ("identity", &long)],
        )
        .await;
    assert_eq!(big.status, 400);
    let odd = browser
        .post(
            &format!("/pay/{pay}/login"),
            &[
                ("csrf_token", &csrf),
                ("identity", "alice"),
                ("password", "pw"),
                ("channel", "fax"),
            ],
        )
        .await;
    assert_eq!(odd.status, 422);
    let no_session = browser
        .post(
            &format!("/pay/{pay}/code"),
            &[("csrf_token", &csrf), ("code", "123456")],
        )
        .await;
    assert_eq!(no_session.status, 403);
    assert_eq!(w.status(&pay).await.0, "awaiting_customer");
}

/// A sign-in posted twice (a double click: the browser drops the first answer, whose cookie it
/// never sees) still reaches the code page: the second post finds the code sent and, the password
/// checked again, gives the same browser its session again. Meanwhile the payment opened again in
/// that browser leads back to the sign-in, not to a refusal.
#[actix_rt::test]
async fn a_sign_in_whose_answer_was_lost_can_be_posted_again() {
    let w = World::new().await;
    let pay = w.payment().await;
    let base = w.base();
    let root = reqwest::Certificate::from_pem(&w.pki().server_ca.cert_pem()).unwrap();
    let client = |jar: Option<Arc<reqwest::cookie::Jar>>| {
        let builder = reqwest::Client::builder()
            .use_native_tls()
            .add_root_certificate(root.clone());
        match jar {
            Some(jar) => builder.cookie_provider(jar),
            // A post whose answer is lost: no cookie kept, no redirect followed.
            None => builder.redirect(reqwest::redirect::Policy::none()),
        }
        .build()
        .unwrap()
    };
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = client(Some(jar.clone()));
    let page = browser
        .get(format!("{base}/pay/{pay}"))
        .send()
        .await
        .unwrap();
    let body = page.text().await.unwrap();
    let csrf = Page {
        status: 200,
        url: String::new(),
        body,
    }
    .csrf();
    let form = [
        ("csrf_token", csrf.as_str()),
        ("identity", "alice"),
        ("password", w.customer.password.as_str()),
        ("channel", "sms"),
    ];
    // The first post goes with the browser's cookies, and its answer is lost.
    let url: url::Url = base.parse().unwrap();
    let cookies = reqwest::cookie::CookieStore::cookies(&*jar, &url.join("/pay/x").unwrap());
    let lost = client(None)
        .post(format!("{base}/pay/{pay}/login"))
        .header("cookie", cookies.clone().unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(lost.status(), 303);
    assert_eq!(w.codes().len(), 1);
    // Whoever holds the browser's CSRF cookie (planted there, say) but not the password gets no
    // session: the password is checked again, and counted.
    let planted = client(None)
        .post(format!("{base}/pay/{pay}/login"))
        .header("cookie", cookies.clone().unwrap())
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("identity", "alice"),
            ("password", "a guess"),
            ("channel", "sms"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), 401);
    assert!(planted.headers().get("set-cookie").is_none());
    let failures = "SELECT count(*) FROM login_failures WHERE identity = $1";
    assert_eq!(count(&w.db.pool, failures, "identity:alice").await, 1);
    // The payment opened again in that browser leads back to the sign-in (no session cookie);
    // another browser is only told to wait.
    let get = async |browser: &reqwest::Client, path: &str| {
        let answer = browser.get(format!("{base}{path}")).send().await.unwrap();
        (answer.status(), answer.text().await.unwrap())
    };
    for path in [format!("/pay/{pay}"), format!("/pay/{pay}/code")] {
        let (status, body) = get(&browser, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains("Sign in once more"), "{path}: {body}");
    }
    let (_, other) = get(&client(Some(Arc::default())), &format!("/pay/{pay}")).await;
    assert!(other.contains("Waiting for the code"), "{other}");
    // The second: the code page, where the code the phone got is accepted.
    let again = browser
        .post(format!("{base}/pay/{pay}/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.url().path(), format!("/pay/{pay}/code"));
    assert_eq!(again.status(), 200);
    assert_eq!(w.codes().len(), 1, "no second code");
    assert_eq!(count(&w.db.pool, failures, "identity:alice").await, 1);
    let code_page = Page {
        status: 200,
        url: String::new(),
        body: again.text().await.unwrap(),
    };
    let done = browser
        .post(format!("{base}/pay/{pay}/code"))
        .form(&[
            ("csrf_token", code_page.csrf().as_str()),
            ("code", w.last_code().as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(done.text().await.unwrap().contains("Payment complete"));
}

#[actix_rt::test]
async fn the_cookies_are_http_only_and_secure_over_tls_the_session_strict() {
    let w = World::new().await;
    let pay = w.payment().await;
    let root = reqwest::Certificate::from_pem(&w.pki().server_ca.cert_pem()).unwrap();
    let page = reqwest::Client::builder()
        .use_native_tls()
        .add_root_certificate(root)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = w.base();
    let first = page.get(format!("{base}/pay/{pay}")).send().await.unwrap();
    // The CSRF cookie is sent on arrival from the merchant's site (Lax), so it is not replaced.
    let csrf_cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(csrf_cookie.starts_with("payhub_csrf="), "{csrf_cookie}");
    assert!(
        ["HttpOnly", "SameSite=Lax", "Secure", "Path=/pay"]
            .iter()
            .all(|a| csrf_cookie.contains(a)),
        "{csrf_cookie}"
    );
    let body = first.text().await.unwrap();
    let csrf = Page {
        status: 200,
        url: String::new(),
        body,
    }
    .csrf();
    let login = page
        .post(format!("{base}/pay/{pay}/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("identity", "alice"),
            ("password", w.customer.password.as_str()),
            ("channel", "sms"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(
        login.headers()["location"],
        format!("/pay/{pay}/code").as_str()
    );
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("payhub_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(cookie.contains("Secure"), "served over TLS: {cookie}");
    assert!(cookie.contains(&format!("Path=/pay/{pay}")), "{cookie}");
}

/// A sign-in that did not come from the payment's own page is refused without starting the
/// payment's actor: such actors would live until their payments expire, and fill `in_flight_max`
/// for every merchant.
#[actix_rt::test]
async fn a_forged_sign_in_starts_no_actor() {
    let w = World::new().await;
    let pay = w.payment().await;
    let stranger = w.browser();
    let refused = stranger
        .post(
            &format!("/pay/{pay}/login"),
            &[
                ("csrf_token", "00"),
                ("identity", "alice"),
                ("password", "guess"),
                ("channel", "sms"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let registry = &w.gateway.as_ref().unwrap().registry;
    let actor = registry.send(Peek(pay.clone())).await.unwrap();
    assert!(actor.is_none(), "no actor for a forged post");
    // From its own page, the same browser signs in.
    w.signed_in_by_sms(&stranger, &pay).await;
    assert!(registry.send(Peek(pay)).await.unwrap().is_some());
}

/// An SMS center that accepts the code after the gateway stopped waiting: the code may reach the
/// phone, so it stays valid (voided, the customer would hold a dead code while told none went).
#[actix_rt::test]
async fn a_code_whose_delivery_is_unconfirmed_in_time_stays_valid() {
    let w = World::new().await;
    // Past the SMPP session's 1 s wait for the submit_sm_resp.
    w.smsc.update_switches(|s| s.delay_ms = 1_500);
    let (pay, browser) = w.signed_in().await;
    eventually("the code reached the phone", || async {
        w.codes().len() == 1
    })
    .await;
    w.smsc.update_switches(|s| s.delay_ms = 0);
    let done = browser.submit_code(&pay, &w.last_code()).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
}

#[actix_rt::test]
async fn smsc_throttling_delays_but_delivers_the_code() {
    let w = World::new().await;
    w.smsc.update_switches(|s| s.throttle_next = 2);
    let pay = w.payment().await;
    let browser = w.browser();
    let page = w.signed_in_by_sms(&browser, &pay).await;
    assert!(page.body.contains("name=\"code\""), "{}", page.body);
    assert!(w.smsc.stats().submits_refused >= 2, "{:?}", w.smsc.stats());
    let done = browser.submit_code(&pay, &w.last_code()).await;
    assert!(done.body.contains("Payment complete"));
}

/// The code's SMS row is written with the code; when the SMSC refuses the message, that row
/// (not a second one) says so, the code is void and the code page says what happened.
#[actix_rt::test]
async fn a_refused_code_sms_leaves_its_row_failed_and_the_code_void() {
    let w = World::new().await;
    // ESME_RSUBMITFAIL for every submit from now on.
    w.smsc.update_switches(|s| s.error_status = 0x45);
    let pay = w.payment().await;
    let page = w.signed_in_by_sms(&w.browser(), &pay).await;
    assert!(!page.body.contains("name=\"code\""), "{}", page.body);
    assert_eq!(
        w.message_rows(&pay, "code", "status = 'failed' AND error IS NOT NULL")
            .await,
        1
    );
    assert_eq!(w.message_rows(&pay, "code", "true").await, 1);
    let live_codes = count(
        &w.db.pool,
        "SELECT count(*) FROM payments WHERE id = $1 AND (code_hash IS NOT NULL OR code_sends > 0)",
        &pay,
    )
    .await;
    assert_eq!(live_codes, 0);
    assert_eq!(w.status(&pay).await.0, "awaiting_code");
}

/// While a payment runs, its pages take its view from its actor: that view says what the row
/// says, after a code that could not be sent and after one that was.
#[actix_rt::test]
async fn the_actors_view_of_a_payment_is_its_row() {
    let w = World::new().await;
    w.smsc.update_switches(|s| s.error_status = 0x45);
    let pay = w.payment().await;
    let browser = w.browser();
    w.signed_in_by_sms(&browser, &pay).await;
    let delivery_failed = w.assert_actor_view_is_row(&pay).await;
    assert!(delivery_failed.code_delivery_error.is_some());
    w.smsc.update_switches(|s| s.error_status = 0);
    let page = browser.resend(&pay, "").await;
    assert!(page.body.contains("name=\"code\""), "{}", page.body);
    let code_sent = w.assert_actor_view_is_row(&pay).await;
    assert!(code_sent.has_live_code && code_sent.code_delivery_error.is_none());
}

/// An outcome SMS the SMSC throttles past the session's tries was not sent at all: it is offered
/// again a while later, and reaches the customer once the SMSC takes messages again.
#[actix_rt::test]
async fn an_outcome_sms_throttled_past_its_tries_is_offered_again() {
    let w = World::with(
        PaymentSettings {
            outcome_notice_retry_ms: 300,
            ..settings()
        },
        vec![],
    )
    .await;
    let pay = w.payment().await;
    let browser = w.browser();
    w.signed_in_by_sms(&browser, &pay).await;
    w.smsc.update_switches(|s| s.throttle_next = 6);
    let done = browser.submit_code(&pay, &w.last_code()).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
    eventually("the outcome SMS sent after all", || async {
        w.message_rows(&pay, "outcome", "status IN ('sent', 'delivered')")
            .await
            == 1
    })
    .await;
    assert!(w.smsc.stats().submits_refused >= 6, "{:?}", w.smsc.stats());
    assert_eq!(w.message_rows(&pay, "outcome", "true").await, 1);
    assert!(
        w.texts().iter().any(|t| t.contains("succeeded")),
        "{:?}",
        w.texts()
    );
}

/// The outcome SMS's row is written with the final status; when the SMSC then refuses the
/// message, that row (not a second one) says so, and the payment's outcome stands.
#[actix_rt::test]
async fn a_refused_outcome_sms_leaves_its_row_failed() {
    let w = World::new().await;
    let pay = w.payment().await;
    let browser = w.browser();
    w.signed_in_by_sms(&browser, &pay).await;
    // ESME_RSUBMITFAIL for every submit from now on.
    w.smsc.update_switches(|s| s.error_status = 0x45);
    let done = browser.submit_code(&pay, &w.last_code()).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
    eventually("outcome row failed", || async {
        w.message_rows(&pay, "outcome", "status = 'failed' AND error IS NOT NULL")
            .await
            == 1
    })
    .await;
    assert_eq!(w.message_rows(&pay, "outcome", "true").await, 1);
    assert_eq!(w.status(&pay).await.0, "succeeded");
}

#[actix_rt::test]
async fn an_unregistered_receiver_is_refused_unless_the_policy_allows_it() {
    for allow in [false, true] {
        let w = World::with(
            PaymentSettings {
                allow_unregistered_receiver: allow,
                ..settings()
            },
            vec![],
        )
        .await;
        let pay = w.payment().await;
        let browser = w.browser();
        let page = browser.get(&format!("/pay/{pay}")).await;
        assert_eq!(page.body.contains("name=\"receiver\""), allow);
        let csrf = page.csrf();
        let other = "8613900001111";
        let done = browser
            .post(
                &format!("/pay/{pay}/login"),
                &[
                    ("csrf_token", csrf.as_str()),
                    ("identity", "alice"),
                    ("password", w.customer.password.as_str()),
                    ("channel", "sms"),
                    ("receiver", other),
                ],
            )
            .await;
        assert_eq!(done.path(), format!("/pay/{pay}/code"));
        let to_other = texts_to(&w.smsc, other);
        let audited = count(
            &w.db.pool,
            "SELECT count(*) FROM audit_log WHERE payment_id = $1 AND event = 'code_issued'
               AND detail->>'unregistered_receiver' = 'true'",
            &pay,
        )
        .await;
        if allow {
            assert_eq!(
                to_other.len(),
                1,
                "policy on: the code goes to the named number"
            );
            assert_eq!(audited, 1);
        } else {
            // Policy off: the receiver field is ignored, the code goes to the registered mobile.
            assert!(to_other.is_empty());
            assert_eq!(w.codes().len(), 1);
            assert_eq!(audited, 0);
        }
    }
}

#[actix_rt::test]
async fn a_restart_while_awaiting_the_customer_or_the_code_continues() {
    let mut w = World::new().await;
    let early = w.payment().await;
    let mid = w.payment().await;
    let mut browser = w.browser();
    browser.get(&format!("/pay/{early}")).await;
    browser
        .login(&mid, "alice", &w.customer.password, "sms", "")
        .await;
    let code = w.last_code();
    w.restart(settings()).await;
    browser.at(&w.base());
    // awaiting_code: the same browser session enters the code it already has.
    let done = browser.submit_code(&mid, &code).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
    // awaiting_customer: the payment starts from the beginning.
    browser
        .login(&early, "alice", &w.customer.password, "sms", "")
        .await;
    let done = browser.submit_code(&early, &w.last_code()).await;
    assert!(done.body.contains("Payment complete"), "{}", done.body);
    assert_eq!(w.debits(), 2);
}

#[actix_rt::test]
async fn a_restart_while_processing_reverses_and_fails_without_a_second_debit() {
    let mut w = World::with_a_bank_gone_silent().await;
    // The browser waits on the debit that never answers…
    let (pay, waiting) = processing(&w).await;
    // …and the gateway dies (the lost 0210 stays lost; the bank answers again from now on).
    w.bank.set_faults(payhub::sim::bank::Faults::default());
    w.restart(settings()).await;
    waiting.abort();
    let pool = w.db.pool.clone();
    eventually("resolved after restart", || {
        let (pool, id) = (pool.clone(), pay.clone());
        async move { payment_status(&pool, &id).await.0 == "failed" }
    })
    .await;
    let (_, failure, ..) = w.status(&pay).await;
    assert_eq!(failure.as_deref(), Some("bank_unavailable"));
    assert_eq!(w.debits(), 1, "never debited twice");
    // The reversal is stored durably with the bank router before `failed` is written…
    let queued = count(
        &w.db.pool,
        "SELECT count(*) FROM reversals r JOIN payments p ON p.rrn = r.rrn WHERE p.id = $1",
        &pay,
    )
    .await;
    assert_eq!(queued, 1, "the debit's reversal is queued");
    // …goes once the debit is surely done at the bank (a response timeout, 30 s, later on the
    // gateway's clock)…
    w.clock.advance(Duration::seconds(31));
    // …and names the original exactly (field 90 from the committed STAN and field 7), so the
    // strict simulator undoes the debit.
    eventually("the money back", || async {
        w.bank.stats().reversals_applied >= 1 && w.balance().await == ALICE_BALANCE
    })
    .await;
    assert_eq!(w.bank.stats().reversal_mismatches, 0);
    eventually("failed webhook", || async {
        w.receiver
            .requests()
            .iter()
            .any(|r| r.body.contains("bank_unavailable"))
    })
    .await;
}

/// Sends a payment's code and leaves it in `processing`: the bank must be silenced first, and the
/// browser's wait for the debit is returned, to be dropped with the gateway.
async fn processing(w: &World) -> (String, actix_rt::task::JoinHandle<()>) {
    let (pay, browser) = w.signed_in().await;
    let code = w.last_code();
    let csrf = browser.get(&format!("/pay/{pay}/code")).await.csrf();
    let (http, url) = (browser.http.clone(), format!("{}/pay/{pay}/code", w.base()));
    let waiting = actix_rt::spawn(async move {
        let _ = http
            .post(url)
            .form(&[("csrf_token", csrf.as_str()), ("code", code.as_str())])
            .send()
            .await;
    });
    let pool = w.db.pool.clone();
    let id = pay.clone();
    eventually("processing", || {
        let (pool, id) = (pool.clone(), id.clone());
        async move { payment_status(&pool, &id).await.0 == "processing" }
    })
    .await;
    (pay, waiting)
}

#[actix_rt::test]
async fn a_start_that_cannot_read_its_payments_in_flight_tries_again_and_reverses_them() {
    let mut w = World::with_a_bank_gone_silent().await;
    // Room for one actor after the restart: the payment in `processing` must be resumed before
    // the one waiting for its code that expires earlier, and that one after it.
    let (waiting_code, _browser) = w.signed_in().await;
    w.clock.advance(Duration::seconds(1));
    let (pay, waiting) = processing(&w).await;
    w.bank.set_faults(payhub::sim::bank::Faults::default());
    // The start's read of the payments to resume fails: the table it reads is gone for a while.
    let pool = w.db.pool.clone();
    let rename = |from: &'static str, to: &'static str| {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.unwrap();
            let sql = format!("ALTER TABLE {from} RENAME TO {to}");
            client.batch_execute(&sql).await.unwrap();
        }
    };
    rename("payments_open", "payments_open_hidden").await;
    let failures = || {
        payhub_actors::metrics::global()
            .payment_resume_failures
            .get()
    };
    let failures_before = failures();
    w.restart(PaymentSettings {
        in_flight_max: 1,
        ..settings()
    })
    .await;
    waiting.abort();
    eventually("a failed resume", || async { failures() > failures_before }).await;
    rename("payments_open_hidden", "payments_open").await;
    eventually("resolved after the failed resume", || {
        let (pool, id) = (pool.clone(), pay.clone());
        async move { payment_status(&pool, &id).await.0 == "failed" }
    })
    .await;
    w.assert_failed(&pay, "bank_unavailable").await;
    assert_eq!(w.debits(), 1, "never debited twice");
    // The reversal goes a response timeout (30 s) after it was queued, on the gateway's clock.
    w.clock.advance(Duration::seconds(31));
    eventually("the money back", || async {
        w.bank.stats().reversals_applied >= 1 && w.balance().await == ALICE_BALANCE
    })
    .await;
    // The table's one place is free again: the payment waiting for its code runs next.
    let registry = w.gateway.as_ref().unwrap().registry.clone();
    eventually("the second page resumed", || {
        let (registry, id) = (registry.clone(), waiting_code.clone());
        async move { registry.send(Peek(id)).await.unwrap().is_some() }
    })
    .await;
    assert_eq!(w.status(&waiting_code).await.0, "awaiting_code");
}

/// A payment in `processing` whose actor could not load its row (the table unreadable for its
/// four tries) is found by the registry's next sweep and resolved as after a restart. Here no
/// debit was recorded, so it fails at once without a reversal. Before an actor stops unfinished,
/// the sweep reads nothing: three of its intervals pass first without it.
#[actix_rt::test]
async fn a_processing_payment_whose_actor_could_not_load_is_swept_and_resolved() {
    let w = World::with(
        PaymentSettings {
            processing_sweep_interval_ms: 200,
            ..settings()
        },
        vec![],
    )
    .await;
    // The start's own resume reads `processing` payments too: answered once its read is done
    // (the registry's mailbox waits for it).
    let registry = w.gateway.as_ref().unwrap().registry.clone();
    registry.send(InFlight).await.unwrap();
    let pay = w.payment().await;
    let client = w.db.pool.get().await.unwrap();
    let sql = "UPDATE payments SET status = 'processing' WHERE id = $1";
    client.execute(sql, &[&pay]).await.unwrap();
    // No actor stopped unfinished: no sweep looks for it.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(w.status(&pay).await.0, "processing");

    client
        .batch_execute("ALTER TABLE payments RENAME TO payments_hidden")
        .await
        .unwrap();
    let started = registry.send(Lookup(pay.clone())).await.unwrap();
    assert!(started.is_ok(), "an actor is started for the payment");
    eventually("the actor gave up loading its row", || {
        let (registry, id) = (registry.clone(), pay.clone());
        async move { registry.send(Peek(id)).await.unwrap().is_none() }
    })
    .await;
    client
        .batch_execute("ALTER TABLE payments_hidden RENAME TO payments")
        .await
        .unwrap();
    drop(client);
    let pool = w.db.pool.clone();
    eventually("swept and failed", || {
        let (pool, id) = (pool.clone(), pay.clone());
        async move { payment_status(&pool, &id).await.0 == "failed" }
    })
    .await;
    w.assert_failed(&pay, "bank_unavailable").await;
    assert_eq!(w.debits(), 0);
}

/// Makes the database refuse to write a final status for a payment listed in
/// `final_writes_refused`, as a database that fails the statement would; each refusal is counted
/// in a sequence, which a refused statement's rollback does not undo.
async fn refuse_final_writes(pool: &deadpool_postgres::Pool) {
    let client = pool.get().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE final_writes_refused (payment_id TEXT PRIMARY KEY);
             CREATE SEQUENCE final_write_refusals;
             CREATE FUNCTION refuse_final_write() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF OLD.status = 'processing' AND NEW.status <> OLD.status
                  AND EXISTS (SELECT 1 FROM final_writes_refused WHERE payment_id = NEW.id) THEN
                 PERFORM nextval('final_write_refusals');
                 RAISE EXCEPTION 'injected fault: final write refused';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_final_write BEFORE UPDATE ON payments
               FOR EACH ROW EXECUTE FUNCTION refuse_final_write();",
        )
        .await
        .unwrap();
}

async fn final_write_refusals(pool: &deadpool_postgres::Pool) -> i64 {
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM final_write_refusals",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

#[actix_rt::test]
async fn an_approval_whose_write_failed_is_written_again_not_reversed() {
    let w = World::new().await;
    refuse_final_writes(&w.db.pool).await;
    let (pay, browser) = w.signed_in().await;
    let client = w.db.pool.get().await.unwrap();
    client
        .execute("INSERT INTO final_writes_refused VALUES ($1)", &[&pay])
        .await
        .unwrap();
    // The bank approves, the approval cannot be stored: the customer sees the payment in progress.
    let page = browser.submit_code(&pay, &w.last_code()).await;
    assert_eq!(page.path(), format!("/pay/{pay}/result"), "{}", page.body);
    assert!(page.body.contains("Payment in progress"), "{}", page.body);
    assert_eq!(w.status(&pay).await.0, "processing");
    // Its deadline comes while the database still refuses: the answer is tried again, and kept.
    let refused = final_write_refusals(&w.db.pool).await;
    assert!(refused >= 1);
    let pool = w.db.pool.clone();
    eventually("a write tried again at the deadline", || {
        let pool = pool.clone();
        async move { final_write_refusals(&pool).await > refused }
    })
    .await;
    // The database accepts again: the approval the bank gave is the outcome, not a reversal.
    client
        .execute("DELETE FROM final_writes_refused", &[])
        .await
        .unwrap();
    eventually("succeeded", || {
        let (pool, id) = (pool.clone(), pay.clone());
        async move { payment_status(&pool, &id).await.0 == "succeeded" }
    })
    .await;
    let (_, failure, _, approval) = w.status(&pay).await;
    assert_eq!(failure, None);
    assert!(approval.is_some(), "the bank's approval code is kept");
    assert_eq!(w.debits(), 1);
    let reversals = count(
        &w.db.pool,
        "SELECT count(*) FROM reversals r JOIN payments p ON p.rrn = r.rrn WHERE p.id = $1",
        &pay,
    )
    .await;
    assert_eq!(reversals, 0, "an answered debit is not reversed");
    assert_eq!(w.bank.stats().reversals_applied, 0);
    assert_eq!(w.balance().await, ALICE_BALANCE - 1234);
    eventually("succeeded webhook", || async {
        w.receiver
            .requests()
            .iter()
            .any(|r| r.body.contains("payment.succeeded") && r.body.contains(&pay))
    })
    .await;
}

/// The final write committed, but its answer never reached the actor (a connection lost after
/// the commit): the actor's retry finds the payment final. The customer's notice then ends the
/// row that write left `queued`, so the next start does not send the outcome a second time.
#[actix_rt::test]
async fn a_final_write_whose_answer_was_lost_ends_its_own_notice_row() {
    let w = World::new().await;
    refuse_final_writes(&w.db.pool).await;
    let (pay, browser) = w.signed_in().await;
    let mut client = w.db.pool.get().await.unwrap();
    client
        .execute("INSERT INTO final_writes_refused VALUES ($1)", &[&pay])
        .await
        .unwrap();
    let page = browser.submit_code(&pay, &w.last_code()).await;
    assert!(page.body.contains("Payment in progress"), "{}", page.body);
    // What the lost write committed: the final status and its notice's `queued` row.
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("DELETE FROM final_writes_refused")
        .await
        .unwrap();
    tx.execute(
        "UPDATE payments SET status = 'succeeded', finished_at = now() WHERE id = $1",
        &[&pay],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO customer_messages
             (payment_id, kind, channel, destination, status, created_at, updated_at)
         VALUES ($1, 'outcome', 'sms', '+86*****0000', 'queued', now(), now())",
        &[&pay],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    eventually("the outcome notice", || async { w.texts().len() == 2 }).await;
    eventually("its row sent", || async {
        w.message_rows(&pay, "outcome", "status IN ('sent', 'delivered')")
            .await
            == 1
    })
    .await;
    assert_eq!(w.message_rows(&pay, "outcome", "true").await, 1);
}

#[actix_rt::test]
async fn webhooks_are_retried_with_backoff_across_a_restart_until_acknowledged() {
    let mut w = World::with(settings(), vec![500, 503]).await;
    let (pay, browser) = w.signed_in().await;
    browser.submit_code(&pay, &w.last_code()).await;
    eventually("first attempt", || async {
        w.receiver.requests().len() == 1
    })
    .await;
    let attempts = |w: &World| {
        let pool = w.db.pool.clone();
        let pay = pay.clone();
        async move {
            count(
                &pool,
                "SELECT count(*) FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id
                 WHERE e.payment_id = $1",
                &pay,
            )
            .await
        }
    };
    eventually("first attempt recorded", || attempts(&w).map(|n| n == 1)).await;
    // Nothing more until the backoff (5 s, then 10 s) has passed on the gateway's clock.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(w.receiver.requests().len(), 1);
    w.clock.advance(Duration::seconds(6));
    eventually("second attempt", || async {
        w.receiver.requests().len() == 2
    })
    .await;
    eventually("second attempt recorded", || attempts(&w).map(|n| n == 2)).await;
    w.restart(settings()).await;
    w.clock.advance(Duration::seconds(11));
    eventually("third attempt", || async {
        w.receiver.requests().len() == 3
    })
    .await;
    eventually("delivered", || {
        let pool = w.db.pool.clone();
        let pay = pay.clone();
        async move {
            count(
                &pool,
                "SELECT count(*) FROM webhook_events WHERE payment_id = $1 AND delivered_at IS NOT NULL
                   AND attempts = 3",
                &pay,
            )
            .await
                == 1
        }
    })
    .await;
    let requests = w.receiver.requests();
    // The same event each time, each signed with its own timestamp.
    assert!(requests.iter().all(|r| r.body == requests[0].body));
    for r in &requests {
        r.verify(&w.merchant.webhook_secret, w.clock.now().timestamp(), 600)
            .expect("each attempt is signed");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        w.receiver.requests().len(),
        3,
        "acknowledged: no more attempts"
    );
}

fn to_micros(mut view: PaymentView) -> PaymentView {
    view.expires_at = micros(view.expires_at);
    view.code_expires_at = view.code_expires_at.map(micros);
    view
}

/// `t` as the database keeps it.
fn micros(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).expect("in range")
}
