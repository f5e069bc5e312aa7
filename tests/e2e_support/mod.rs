//! Shared harness of the end-to-end tests: a gateway (the real HTTPS listener with the merchant API
//! and the customer pages, the payment registry, the webhook worker, the SMPP session and channel
//! router) in an actix system of its own that can be stopped and started again on the same
//! database (a restart), rows seeded with SQL, a browser (reqwest over TLS with cookies) that
//! reads CSRF tokens from the HTML, and a webhook receiver on port 0.
#![allow(dead_code)]

use actix::Recipient;
use actix_web::{App, HttpServer, web};
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use payhub::http::merchant_testing::TestPki;
use payhub::http::pages::{PagesState, configure};
use payhub::http::server::{self, ServerSettings};
use payhub::webhooks::{WebhookSettings, start_worker};
use payhub_actors::clock::SharedClock;
use payhub_actors::keyed_hash::HashKey;
use payhub_actors::messages::Deliver;
use payhub_actors::secret::Secret;
use payhub_actors::transaction::registry::TickAll;
use payhub_actors::transaction::writer::PaymentWriter;
use payhub_actors::transaction::{Deps, PaymentRegistry, PaymentSettings, start_registry};
use std::sync::{Arc, Mutex};

/// The simulators outside the gateway. Inside the gateway (so they restart with it) run the real
/// SMPP session to the SMSC simulator at `smsc`, the real channel router with its terminal switch
/// (plain TCP on port 0), and the real bank router with one link to the bank simulator at `bank`.
#[derive(Clone)]
pub struct Outside {
    pub smsc: std::net::SocketAddr,
    pub bank: std::net::SocketAddr,
    /// The link's wait for a 0210.
    pub bank_response_timeout_ms: u64,
    /// The SMPP session's wait for a `submit_sm_resp` (short in tests, longer under bench load).
    pub smpp_response_timeout_ms: u64,
    /// The code page's wait for the debit's outcome (`PagesState::code_step_wait_ms`).
    pub code_page_wait_ms: u64,
}

pub const INSTITUTION: &str = "99990001";
/// The payer's bank (customers) and the merchant's (register_merchant).
pub const BANK: &str = "0001";
pub const SHOP_ACCOUNT: &str = "6222000000000001";

/// The gateway's bank router, signed on to the simulator.
async fn start_bank_router(
    pool: &Pool,
    clock: &SharedClock,
    outside: &Outside,
) -> actix::Addr<payhub_actors::bank::BankRouter> {
    use payhub_actors::bank::{self, LinkOwner, LinkSettings, LinkStatuses};
    let bank_id = payhub_actors::domain::BankId::parse(BANK).unwrap();
    let mut link = LinkSettings::new(
        "bips-a",
        &outside.bank.to_string(),
        LinkOwner::ThirdParty,
        vec![bank_id],
    );
    link.response_timeout_ms = outside.bank_response_timeout_ms;
    link.reversal_interval_ms = 100;
    link.reconnect_backoff_min_ms = 20;
    link.reconnect_backoff_max_ms = 200;
    let router =
        bank::start(pool.clone(), clock.clone(), vec![link], INSTITUTION).expect("bank router");
    for _ in 0..400 {
        if let Ok(Ok(statuses)) = router.send(LinkStatuses).await
            && statuses.iter().all(|s| s.state == "signed_on")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    router
}

/// The bank simulator (accounts in memory), on a thread of its own as a separate system would be.
pub async fn start_bank(accounts: &[(&str, i64)]) -> payhub::sim::bank::SimHandle {
    use payhub::sim::bank::testing::{seed_accounts, spawn_on_own_thread};
    use payhub::sim::bank::{SimOptions, SimStoreChoice};
    let mut options = SimOptions::new(SimStoreChoice::Memory, &[BANK]);
    options.seed = seed_accounts(BANK, accounts.iter().chain(&[(SHOP_ACCOUNT, 0)]).copied());
    spawn_on_own_thread(options).await
}

pub const SMSC_SYSTEM_ID: &str = "payhub";
pub const SMSC_PASSWORD: &str = "secret";

/// The gateway's channels: SMPP session bound to the simulator, and the router in front of it;
/// with the terminal switch's address.
async fn start_channels(
    pool: &Pool,
    clock: &SharedClock,
    outside: &Outside,
) -> (Recipient<Deliver>, TerminalSwitch) {
    use payhub::channels::smpp::{self, GetStatus, SmppSettings};
    let config = payhub::config::SmppConfig {
        addr: outside.smsc.to_string(),
        system_id: SMSC_SYSTEM_ID.into(),
        password: SMSC_PASSWORD.into(),
        response_timeout_ms: outside.smpp_response_timeout_ms,
        ..Default::default()
    };
    let mut settings = SmppSettings::from_config(&config);
    settings.rebind_backoff_min_ms = 50;
    settings.rebind_backoff_max_ms = 200;
    settings.throttle_backoff_min_ms = 20;
    settings.throttle_backoff_max_ms = 100;
    let session = smpp::start(pool.clone(), clock.clone(), settings).expect("SMPP settings");
    for _ in 0..200 {
        if session
            .send(GetStatus)
            .await
            .map(|s| s.bound)
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let switch = payhub::channels::terminal::SwitchSettings::from_config(&Default::default());
    let channels = payhub::channels::router::start(
        pool.clone(),
        clock.clone(),
        switch,
        None,
        Some(session.recipient()),
    )
    .await
    .expect("channel router");
    let switch = TerminalSwitch {
        addr: channels.switch.addr,
        registry: channels.switch.registry.clone(),
    };
    (channels.recipient(), switch)
}

/// The gateway's terminal switch (plain TCP), where customers' dedicated terminals connect.
#[derive(Clone)]
pub struct TerminalSwitch {
    pub addr: std::net::SocketAddr,
    pub registry: payhub::channels::terminal::SwitchRegistry,
}

impl TerminalSwitch {
    /// Returns once `terminal_id` has a session on the switch (at most 10 s).
    pub async fn wait_online(&self, terminal_id: &str) {
        let what = format!("{terminal_id} online");
        eventually(&what, || async { self.registry.is_online(terminal_id) }).await;
    }

    pub async fn wait_offline(&self, terminal_id: &str) {
        let what = format!("{terminal_id} offline");
        eventually(&what, || async { !self.registry.is_online(terminal_id) }).await;
    }
}

/// A running gateway: pages on `base`, payments' actors, the webhook worker.
pub struct Gateway {
    pub base: String,
    pub registry: actix::Addr<PaymentRegistry>,
    /// The bank router, for the operator's view of its links.
    pub bank: actix::Addr<payhub_actors::bank::BankRouter>,
    pub terminal_switch: TerminalSwitch,
    server: actix_web::dev::ServerHandle,
    system: actix::System,
    pub pki: TestPki,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn webhook_settings() -> WebhookSettings {
    WebhookSettings {
        timeout_ms: 2_000,
        retry_base_ms: 5_000,
        retry_max_ms: 3_600_000,
        give_up_after_s: 3 * 24 * 3600,
        // The gateway's default `webhooks.concurrency_max`.
        concurrency_max: 32,
        poll_interval_ms: 100,
        // The tests' receivers listen on loopback.
        allow_private_destinations: true,
    }
}

impl Gateway {
    pub async fn start(
        pool: Pool,
        clock: SharedClock,
        key: HashKey,
        settings: PaymentSettings,
        outside: Outside,
        pki: TestPki,
    ) -> Gateway {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tls = pki.server_tls();
        // Named, so that benchmarks can tell the gateway's CPU time from the browsers'.
        let thread = std::thread::Builder::new()
            .name("gateway".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let webhooks = start_worker(pool.clone(), clock.clone(), webhook_settings())
                        .expect("webhook worker");
                    let (channel, terminal_switch) = start_channels(&pool, &clock, &outside).await;
                    let bank = start_bank_router(&pool, &clock, &outside).await;
                    let allow = settings.allow_unregistered_receiver;
                    let code_resends_max = settings.code_resends_max;
                    let settings_url = settings.public_url.clone();
                    let deps = Deps {
                        pool: pool.clone(),
                        writer: PaymentWriter::start(pool.clone()),
                        clock: clock.clone(),
                        settings: Arc::new(settings),
                        hash_key: key.clone(),
                        channel,
                        bank: bank.clone(),
                        webhook_outbox: webhooks.outbox,
                    };
                    let registry = start_registry(deps);
                    let server_settings = ServerSettings::loopback(1, settings_url);
                    let mut state =
                        PagesState::new(registry.clone(), pool.clone(), key, clock.clone(), allow);
                    state.code_step_wait_ms = outside.code_page_wait_ms;
                    state.code_resends_max = code_resends_max;
                    let server = server::start(
                        server_settings,
                        &tls,
                        pool,
                        clock,
                        vec![Arc::new(configure(state))],
                    )
                    .expect("server starts");
                    tx.send((
                        server.addr,
                        server.handle.clone(),
                        actix::System::current(),
                        registry,
                        bank,
                        terminal_switch,
                    ))
                    .map_err(|_| "the test stopped waiting")
                    .expect("report");
                    let _ = server.wait().await;
                });
            })
            .expect("gateway thread");
        let (addr, server, system, registry, bank, terminal_switch) =
            rx.await.expect("gateway started");
        Gateway {
            base: format!("https://127.0.0.1:{}", addr.port()),
            pki,
            registry,
            bank,
            terminal_switch,
            server,
            system,
            thread: Some(thread),
        }
    }

    /// Stops everything at once, as a crash would (no actor finishes its work).
    pub async fn stop(mut self) {
        self.system.stop();
        self.server.stop(false).await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    pub async fn tick_all(&self) {
        let _ = self.registry.send(TickAll).await;
    }
}

// ---- rows -----------------------------------------------------------------------------------------

pub struct Merchant {
    pub id: String,
    pub webhook_secret: String,
    /// The merchant's client certificate, for the merchant API.
    pub api: reqwest::Client,
}

/// A merchant enrolled as `payhub merchant add` does, with a certificate from `pki`.
pub async fn seed_merchant(pool: &Pool, pki: &TestPki, name: &str) -> Merchant {
    let cert = pki.client_cert(name);
    let m = payhub::http::merchant_testing::register_merchant(pool, name, cert).await;
    Merchant {
        id: m.id,
        webhook_secret: m.webhook_secret.expose().clone(),
        api: payhub::http::merchant_testing::https_client(pki, Some(&m.cert)),
    }
}

pub struct Customer {
    pub id: String,
    pub online_id: String,
    pub password: String,
    pub mobile: String,
}

/// A customer with a registered mobile terminal (for SMS).
pub async fn seed_customer(pool: &Pool, online_id: &str, account: &str) -> Customer {
    let id = payhub_actors::ids::new_id("cus");
    let password = "correct horse battery".to_string();
    let hash = payhub_actors::password::hash(Secret::new(password.clone()))
        .await
        .unwrap();
    let mobile = format!(
        "86138{:08}",
        u32::from_le_bytes(payhub_actors::ids::os_random::<4>()) % 100_000_000
    );
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO customers (id, real_name, online_id, bank_id, account, password_hash)
             VALUES ($1, 'Alice Example', $2, '0001', $3, $4)",
            &[&id, &online_id, &account, &hash],
        )
        .await
        .unwrap();
    add_terminal(pool, &id, "mobile", "My phone", Some(&mobile)).await;
    Customer {
        id,
        online_id: online_id.into(),
        password,
        mobile,
    }
}

pub async fn add_terminal(
    pool: &Pool,
    customer: &str,
    kind: &str,
    label: &str,
    msisdn: Option<&str>,
) -> String {
    let id = payhub_actors::ids::new_id("trm");
    let key = payhub_actors::ids::os_random::<32>().to_vec();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO terminals (id, customer_id, kind, label, msisdn, shared_key)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &customer, &kind, &label, &msisdn, &key],
        )
        .await
        .unwrap();
    id
}

pub async fn create_payment(
    pool: &Pool,
    merchant: &Merchant,
    amount: i64,
    notify_url: &str,
    now: DateTime<Utc>,
) -> String {
    let id = payhub_actors::ids::new_id("pay");
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO payments (id, merchant_id, order_id, amount_minor, currency, description,
                 return_url, notify_url, created_at, expires_at, updated_at)
             VALUES ($1, $2, $3, $4, 'CNY', '2 books', 'https://shop.example/return', $5, $6, $7, $6)",
            &[
                &id,
                &merchant.id,
                &format!("A-{id}"),
                &amount,
                &notify_url,
                &now,
                &(now + Duration::minutes(15)),
            ],
        )
        .await
        .unwrap();
    id
}

/// Puts a payment straight into `awaiting_code`, as if `customer` had passed the password step in
/// browser `session` and been sent `code` over SMS (valid ten minutes): for tests of the code step
/// and the debit alone.
pub async fn awaiting_code(
    client: &deadpool_postgres::Object,
    key: &HashKey,
    pay: &str,
    customer: &Customer,
    code: &str,
    session: &str,
) {
    use payhub_actors::transaction::code::{code_hash, session_hash};
    client
        .execute(
            "UPDATE payments SET status = 'awaiting_code', customer_id = $2, session_hash = $3,
                 channel = 'sms', receiver_msisdn = $4, code_hash = $5, code_expires_at = $6,
                 code_sends = 1, code_sent_at = now() WHERE id = $1",
            &[
                &pay,
                &customer.id,
                &session_hash(key, pay, session),
                &customer.mobile,
                &code_hash(key, pay, code),
                &(Utc::now() + Duration::minutes(10)),
            ],
        )
        .await
        .unwrap();
}

/// `(status, failure_code, bank_response_code, approval_code)` of a payment.
pub async fn payment_status(
    pool: &Pool,
    id: &str,
) -> (String, Option<String>, Option<String>, Option<String>) {
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT status, failure_code, bank_response_code, approval_code FROM payments WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

pub async fn count(pool: &Pool, sql: &str, id: &str) -> i64 {
    let client = pool.get().await.unwrap();
    client.query_one(sql, &[&id]).await.unwrap().get(0)
}

/// Waits (bounded) until `check` holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The JSON body of `GET url` (plain HTTP, as on the operator listener).
pub async fn get_json(url: &str) -> serde_json::Value {
    let response = reqwest::get(url).await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

// ---- a browser -----------------------------------------------------------------------------------

pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
}

/// A browser: trusts the gateway's server CA, keeps cookies, has no client certificate.
pub fn browser_client(pki: &TestPki) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(browser_tls(pki))
        .cookie_store(true)
        .build()
        .expect("browser")
}

/// A client that sends only the cookies a test sets on each request (a forger's, not a
/// browser's), trusting the gateway's server CA.
pub fn cookieless_client(pki: &TestPki) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(browser_tls(pki))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("cookieless client")
}

/// The TLS setup of every browser that trusts this server CA, built once: like a real browser, it
/// loads its trust store at start, not for each visit. (Building it means parsing the system's CA
/// bundle twice, about 0.1 s of CPU: per payment, that was half the end-to-end benchmark's load.)
fn browser_tls(pki: &TestPki) -> native_tls::TlsConnector {
    use std::collections::HashMap;
    static BUILT: Mutex<Option<HashMap<Vec<u8>, native_tls::TlsConnector>>> = Mutex::new(None);
    let ca = pki.server_ca.cert_pem();
    let mut built = BUILT.lock().unwrap();
    built
        .get_or_insert_with(HashMap::new)
        .entry(ca.clone())
        .or_insert_with(|| {
            native_tls::TlsConnector::builder()
                .add_root_certificate(native_tls::Certificate::from_pem(&ca).expect("root"))
                .build()
                .expect("browser TLS")
        })
        .clone()
}

pub struct Page {
    pub status: u16,
    pub url: String,
    pub body: String,
}

impl Page {
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self.body.find(marker).expect("page has a CSRF token") + marker.len();
        let end = self.body[start..].find('"').expect("token ends") + start;
        self.body[start..end].to_string()
    }

    pub fn path(&self) -> String {
        url::Url::parse(&self.url).unwrap().path().to_string()
    }
}

impl Browser {
    pub fn new(base: &str, pki: &TestPki) -> Browser {
        Browser {
            http: browser_client(pki),
            base: base.to_string(),
        }
    }

    pub fn at(&mut self, base: &str) {
        self.base = base.to_string();
    }

    async fn page(response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let url = response.url().to_string();
        let body = response.text().await.unwrap();
        Page { status, url, body }
    }

    pub async fn get(&self, path: &str) -> Page {
        Self::page(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        Self::page(
            self.http
                .post(format!("{}{path}", self.base))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Opens the payment page and signs in; returns the page the gateway ends on.
    pub async fn login(
        &self,
        payment: &str,
        identity: &str,
        password: &str,
        channel: &str,
        terminal: &str,
    ) -> Page {
        let page = self.get(&format!("/pay/{payment}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = page.csrf();
        self.post(
            &format!("/pay/{payment}/login"),
            &[
                ("csrf_token", csrf.as_str()),
                ("identity", identity),
                ("password", password),
                ("channel", channel),
                ("terminal", terminal),
            ],
        )
        .await
    }

    pub async fn submit_code(&self, payment: &str, code: &str) -> Page {
        let page = self.get(&format!("/pay/{payment}/code")).await;
        let csrf = page.csrf();
        self.post(
            &format!("/pay/{payment}/code"),
            &[("csrf_token", csrf.as_str()), ("code", code)],
        )
        .await
    }

    pub async fn resend(&self, payment: &str, route: &str) -> Page {
        let page = self.get(&format!("/pay/{payment}/code")).await;
        let csrf = page.csrf();
        self.post(
            &format!("/pay/{payment}/resend"),
            &[("csrf_token", csrf.as_str()), ("route", route)],
        )
        .await
    }
}

/// The SMSC simulator, on port 0.
pub async fn start_smsc() -> payhub::sim::smsc::SmscSim {
    payhub::sim::smsc::start(payhub::sim::smsc::SmscSimOptions::loopback(
        SMSC_SYSTEM_ID,
        SMSC_PASSWORD,
    ))
    .await
    .expect("SMSC simulator")
}

/// The SMSC simulator on a thread and actix system of its own, as a separate SMSC would run:
/// benchmarks' many browsers on the test's thread must not delay its answers.
pub fn start_smsc_on_own_thread() -> payhub::sim::smsc::SmscSim {
    let (tx, rx) = std::sync::mpsc::channel();
    let named = std::thread::Builder::new().name("smsc-sim".into());
    named
        .spawn(move || {
            actix::System::new().block_on(async move {
                let _ = tx.send(start_smsc().await);
                std::future::pending::<()>().await;
            });
        })
        .expect("SMSC simulator thread");
    rx.recv()
        .expect("the SMSC simulator thread reports its handle")
}

/// Texts the SMSC simulator accepted for `msisdn`, oldest first.
pub fn texts_to(sim: &payhub::sim::smsc::SmscSim, msisdn: &str) -> Vec<String> {
    sim.messages()
        .into_iter()
        .filter(|m| m.destination_addr.trim_start_matches('+') == msisdn)
        .map(|m| m.text)
        .collect()
}

/// The digits after `code ` in a customer message.
pub fn code_in(text: &str) -> String {
    let start = text.find("code ").expect("message has a code") + 5;
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect()
}

// ---- a webhook receiver --------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Received {
    pub signature: String,
    pub body: String,
}

impl Received {
    /// Whether its `Payhub-Signature` verifies with the merchant's `secret` at `now_unix`, within
    /// `tolerance_s`; the signature scheme's error otherwise.
    pub fn verify(
        &self,
        secret: &str,
        now_unix: i64,
        tolerance_s: i64,
    ) -> Result<i64, payhub::webhooks::signature::SignatureError> {
        payhub::webhooks::signature::verify(
            secret.as_bytes(),
            &self.signature,
            self.body.as_bytes(),
            now_unix,
            tolerance_s,
        )
    }
}

/// The threads that have served a webhook in this process ([`Receiver`]). They share the gateway's
/// thread names (`actix-rt|…`), and the benchmark counts them as the merchant's, not the gateway's.
static RECEIVER_THREADS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub fn receiver_threads() -> Vec<u32> {
    RECEIVER_THREADS.lock().unwrap().clone()
}

/// Notes the calling thread as a receiver's (`/proc/thread-self` is `PID/task/TID`), once per
/// thread: the benchmark's receiver serves thousands of webhooks a second.
fn note_receiver_thread() {
    thread_local!(static NOTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if NOTED.replace(true) {
        return;
    }
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|link| link.file_name()?.to_str()?.parse().ok());
    if let Some(tid) = tid {
        RECEIVER_THREADS.lock().unwrap().push(tid);
    }
}

/// A merchant's endpoint on port 0: answers the scripted statuses in order (then 200), records
/// every request.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub fn start(script: Vec<u16>) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let (r, s) = (received.clone(), script.clone());
        let server = HttpServer::new(move || {
            let (r, s) = (r.clone(), s.clone());
            App::new().route(
                "/hooks",
                web::post().to(move |req: actix_web::HttpRequest, body: web::Bytes| {
                    let (r, s) = (r.clone(), s.clone());
                    note_receiver_thread();
                    async move {
                        let signature = req
                            .headers()
                            .get("Payhub-Signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        r.lock().unwrap().push(Received {
                            signature,
                            body: String::from_utf8_lossy(&body).to_string(),
                        });
                        let status = s.lock().unwrap().pop_front().unwrap_or(200);
                        actix_web::HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(status).unwrap(),
                        )
                        .finish()
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Receiver {
            url: format!("http://{addr}/hooks"),
            received,
            server: handle,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

// ---- a whole stage ---------------------------------------------------------------------------------

/// The payer's account on a [`Stage`], and its balance.
pub const PAYER_ACCOUNT: &str = "6222000011112222";
pub const PAYER_BALANCE: i64 = 1_000_000;

/// Everything one payment needs: a fresh database, the SMSC and bank simulators, a gateway, a
/// merchant "Book Shop", a customer `alice` with a mobile, and the merchant's webhook receiver.
pub struct Stage {
    pub db: payhub_actors::store::testing::TestDb,
    pub clock: payhub_actors::clock::ManualClock,
    pub smsc: payhub::sim::smsc::SmscSim,
    pub bank: payhub::sim::bank::SimHandle,
    pub gateway: Gateway,
    pub merchant: Merchant,
    pub customer: Customer,
    pub receiver: Receiver,
}

impl Stage {
    pub async fn start() -> Stage {
        let db = payhub_actors::store::testing::fresh_database().await;
        let clock = payhub_actors::clock::ManualClock::new(Utc::now());
        let smsc = start_smsc().await;
        let bank = start_bank(&[(PAYER_ACCOUNT, PAYER_BALANCE)]).await;
        let outside = Outside {
            smsc: smsc.smpp_addr(),
            bank: bank.addr(),
            bank_response_timeout_ms: 2_000,
            smpp_response_timeout_ms: 1_000,
            code_page_wait_ms: payhub::http::pages::CODE_STEP_WAIT_MAX_MS,
        };
        let pki = TestPki::new();
        let merchant = seed_merchant(&db.pool, &pki, "Book Shop").await;
        let customer = seed_customer(&db.pool, "alice", PAYER_ACCOUNT).await;
        let receiver = Receiver::start(vec![]);
        let settings = PaymentSettings {
            public_url: url::Url::parse("https://gateway.example").unwrap(),
            delivery_timeout_ms: 2_000,
            debit_timeout_ms: 4_000,
            ..PaymentSettings::default()
        };
        let shared: SharedClock = Arc::new(clock.clone());
        let gateway = Gateway::start(
            db.pool.clone(),
            shared,
            HashKey::random(),
            settings,
            outside,
            pki,
        )
        .await;
        Stage {
            db,
            clock,
            smsc,
            bank,
            gateway,
            merchant,
            customer,
            receiver,
        }
    }

    /// A payment of 12.34 CNY to the merchant, waiting for the customer.
    pub async fn payment(&self) -> String {
        use payhub_actors::Clock;
        create_payment(
            &self.db.pool,
            &self.merchant,
            1234,
            &self.receiver.url,
            self.clock.now(),
        )
        .await
    }

    /// Pays `payment` as the customer does in a browser (password, then the code sent by SMS);
    /// returns the code.
    pub async fn pay(&self, payment: &str) -> String {
        let browser = Browser::new(&self.gateway.base, &self.gateway.pki);
        let c = &self.customer;
        let page = browser
            .login(payment, &c.online_id, &c.password, "sms", "")
            .await;
        assert_eq!(page.path(), format!("/pay/{payment}/code"), "{}", page.body);
        let code = texts_to(&self.smsc, &c.mobile)
            .iter()
            .rev()
            .find(|t| t.contains("code "))
            .map(|t| code_in(t))
            .expect("a code reached the phone");
        let result = browser.submit_code(payment, &code).await;
        assert!(result.body.contains("Payment complete"), "{}", result.body);
        code
    }
}
