//! Test support for everything behind the gateway listener (merchant API tests, PAY's page and
//! end-to-end tests, benchmarks): an in-memory PKI, merchant enrollment, an mTLS client, and the
//! real server on port 0 over a fresh database. Helpers panic on set-up failures: tests only.
//!
//! ```ignore
//! let gw = TestGateway::spawn(vec![]).await;
//! let shop = gw.enroll_merchant("Shop").await;
//! let res = gw.client(Some(&shop.cert)).post(gw.url("/v1/payments")).json(&body).send().await?;
//! ```

use crate::enroll::CertTrust;
use crate::http::mtls::ServerTls;
use crate::http::server::{self, Configurator, RunningServer, ServerSettings};
use crate::pki::{self, CertifiedKey, Validity};
use payhub_actors::ManualClock;
use payhub_actors::Secret;
use payhub_actors::store::testing::{TestDb, fresh_database};
use std::sync::Arc;

/// The gateway's server CA and certificate (for localhost and 127.0.0.1) and a merchant CA.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub server_ca: CertifiedKey,
    pub server: CertifiedKey,
    pub merchant_ca: CertifiedKey,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> Self {
        let server_ca = pki::new_ca("test server CA").expect("server CA");
        let hosts = ["localhost".to_string(), "127.0.0.1".to_string()];
        let server = pki::issue_server(&server_ca, &hosts).expect("server certificate");
        let merchant_ca = pki::new_ca("test merchant CA").expect("merchant CA");
        Self {
            server_ca,
            server,
            merchant_ca,
        }
    }

    pub fn server_tls(&self) -> ServerTls {
        ServerTls {
            cert_chain_pem: self.server.cert_pem(),
            key_pem: Secret::new(self.server.key_pem()),
            merchant_ca_pem: self.merchant_ca.cert_pem(),
        }
    }

    /// A client certificate from the merchant CA, valid for a week: tests that move their clock a
    /// day or two keep it valid (each request checks it against the gateway's clock).
    pub fn client_cert(&self, common_name: &str) -> CertifiedKey {
        pki::issue_client(&self.merchant_ca, common_name, Validity::days_from_now(7))
            .expect("client certificate")
    }
}

/// A registered merchant and what it holds.
#[derive(Debug, Clone)]
pub struct TestMerchant {
    pub id: String,
    pub name: String,
    pub webhook_secret: Secret<String>,
    pub cert: CertifiedKey,
}

/// Registers a merchant (bank 0001, a fixed account) whose client certificate is `cert`, issued
/// by the merchant CA.
pub async fn register_merchant(
    pool: &deadpool_postgres::Pool,
    name: &str,
    cert: CertifiedKey,
) -> TestMerchant {
    register(pool, name, cert, CertTrust::Issued).await
}

/// Registers a merchant whose client certificate is its own, pinned by fingerprint.
pub async fn register_pinned_merchant(
    pool: &deadpool_postgres::Pool,
    name: &str,
    cert: CertifiedKey,
) -> TestMerchant {
    register(pool, name, cert, CertTrust::Pinned).await
}

async fn register(
    pool: &deadpool_postgres::Pool,
    name: &str,
    cert: CertifiedKey,
    trust: CertTrust,
) -> TestMerchant {
    let bank = payhub_actors::domain::BankId::parse("0001").expect("bank id");
    let account = payhub_actors::domain::AccountNumber::parse("6222000000000001").expect("account");
    let new = crate::enroll::new_merchant(name, bank, account, (&cert.cert, trust), None);
    let client = pool.get().await.expect("pool");
    payhub_actors::store::merchants::insert(&client, &new)
        .await
        .expect("insert merchant");
    TestMerchant {
        id: new.id,
        name: name.to_string(),
        webhook_secret: new.webhook_secret,
        cert,
    }
}

/// An HTTPS client trusting `pki`'s server CA, presenting `identity` when given.
pub fn https_client(pki: &TestPki, identity: Option<&CertifiedKey>) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&pki.server_ca.cert_pem()).expect("root");
    let mut builder = reqwest::Client::builder()
        .use_native_tls()
        .add_root_certificate(root)
        .timeout(std::time::Duration::from_secs(30));
    if let Some(id) = identity {
        let identity =
            reqwest::Identity::from_pkcs8_pem(&id.cert_pem(), &id.key_pem()).expect("identity");
        builder = builder.identity(identity);
    }
    builder.build().expect("client")
}

/// The real gateway listener on 127.0.0.1:0 over a fresh database, with a manual clock.
pub struct TestGateway {
    pub db: TestDb,
    pub pki: TestPki,
    pub clock: ManualClock,
    pub settings: ServerSettings,
    pub server: RunningServer,
}

impl TestGateway {
    pub async fn spawn(extra: Vec<Configurator>) -> Self {
        Self::spawn_with(|_| {}, extra).await
    }

    /// Like `spawn`, with the settings adjusted first (body limit, lifetime …).
    pub async fn spawn_with(
        adjust: impl FnOnce(&mut ServerSettings),
        extra: Vec<Configurator>,
    ) -> Self {
        let db = fresh_database().await;
        let pki = TestPki::new();
        let clock = ManualClock::new(chrono::Utc::now());
        let public_url = url::Url::parse("https://gateway.test").expect("url");
        let mut settings = ServerSettings::loopback(2, public_url);
        adjust(&mut settings);
        let server = server::start(
            settings.clone(),
            &pki.server_tls(),
            db.pool.clone(),
            Arc::new(clock.clone()),
            extra,
        )
        .expect("server starts");
        Self {
            db,
            pki,
            clock,
            settings,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.server.addr.port())
    }

    /// A merchant with a certificate from this gateway's merchant CA.
    pub async fn enroll_merchant(&self, name: &str) -> TestMerchant {
        let cert = self.pki.client_cert(name);
        register_merchant(&self.db.pool, name, cert).await
    }

    pub fn client(&self, identity: Option<&CertifiedKey>) -> reqwest::Client {
        https_client(&self.pki, identity)
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}
