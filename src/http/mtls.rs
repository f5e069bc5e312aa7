//! Merchant authentication by client certificate (mTLS).
//!
//! The TLS layer asks every client for a certificate but does not require one (browsers on the
//! customer pages have none), and accepts the handshake whatever the certificate: the outcome of
//! verifying it against the merchant CA is recorded per connection (`on_connect`) and judged by the
//! merchant routes, which answer 401 in the API's error shape instead of a bare handshake failure.
//! A merchant is authenticated when its certificate chains to the merchant CA and is within its
//! validity, its SHA-256 fingerprint is registered, and the merchant is enabled.

use crate::http::error::ApiError;
use actix_tls::accept::openssl::TlsStream;
use actix_web::dev::{Extensions, Payload};
use actix_web::rt::net::TcpStream;
use actix_web::{FromRequest, HttpRequest, web};
use anyhow::Context;
use futures::future::LocalBoxFuture;
use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509VerifyResult};
use payhub_actors::Secret;
use payhub_actors::store::merchants;
use std::any::Any;
use std::path::Path;

/// The PEM material of the gateway's TLS listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server certificate, optionally followed by its chain.
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Secret<Vec<u8>>,
    /// The CA that issues merchants' client certificates.
    pub merchant_ca_pem: Vec<u8>,
}

impl ServerTls {
    /// Reads the files `http.tls_cert`, `http.tls_key` and `http.merchant_ca_cert` name.
    pub fn load(cert: &Path, key: &Path, merchant_ca: &Path) -> anyhow::Result<Self> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(Self {
            cert_chain_pem: read(cert)?,
            key_pem: Secret::new(read(key)?),
            merchant_ca_pem: read(merchant_ca)?,
        })
    }

    /// An OpenSSL acceptor: Mozilla's intermediate profile, client certificates requested and
    /// checked against the merchant CA, the verdict left to the merchant routes.
    pub fn acceptor(&self) -> Result<SslAcceptorBuilder, ErrorStack> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        let mut chain = X509::stack_from_pem(&self.cert_chain_pem)?.into_iter();
        let leaf = chain.next().ok_or_else(ErrorStack::get)?;
        b.set_certificate(&leaf)?;
        for extra in chain {
            b.add_extra_chain_cert(extra)?;
        }
        let key = PKey::private_key_from_pem(self.key_pem.expose())?;
        b.set_private_key(&key)?;
        b.check_private_key()?;
        let mut store = X509StoreBuilder::new()?;
        for ca in X509::stack_from_pem(&self.merchant_ca_pem)? {
            b.add_client_ca(&ca)?;
            store.add_cert(ca)?;
        }
        b.set_verify_cert_store(store.build())?;
        // Request a certificate, never refuse the handshake over it; see the module comment.
        b.set_verify_callback(SslVerifyMode::PEER, |_preverified, _ctx| true);
        // Sessions resumed with a client certificate need a context id, or OpenSSL refuses them.
        b.set_session_id_context(b"payhub-gateway")?;
        Ok(b)
    }
}

/// What the client presented on this connection, recorded once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertificate {
    /// Chains to the merchant CA and is within its validity.
    Verified { fingerprint: String },
    /// Presented but not acceptable (another CA, expired, …).
    Rejected { reason: String },
}

/// `HttpServer::on_connect`: records the peer certificate's verdict in the connection's data.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions) {
    let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() else {
        return;
    };
    let ssl = tls.ssl();
    let Some(cert) = ssl.peer_certificate() else {
        return;
    };
    let verdict = ssl.verify_result();
    data.insert(if verdict == X509VerifyResult::OK {
        ClientCertificate::Verified {
            fingerprint: crate::pki::fingerprint(&cert),
        }
    } else {
        ClientCertificate::Rejected {
            reason: verdict.error_string().to_string(),
        }
    });
}

/// The merchant behind the request's client certificate; a handler that takes it answers 401
/// to anyone else.
#[derive(Debug, Clone)]
pub struct AuthenticatedMerchant {
    pub id: String,
    pub name: String,
}

impl FromRequest for AuthenticatedMerchant {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let cert = req.conn_data::<ClientCertificate>().cloned();
        let pool = req
            .app_data::<web::Data<deadpool_postgres::Pool>>()
            .cloned();
        Box::pin(async move {
            let fingerprint = match cert {
                Some(ClientCertificate::Verified { fingerprint }) => fingerprint,
                Some(ClientCertificate::Rejected { reason }) => {
                    return Err(ApiError::unauthenticated(format!(
                        "the client certificate is not accepted: {reason}"
                    )));
                }
                None => {
                    return Err(ApiError::unauthenticated(
                        "a client certificate issued by the gateway's merchant CA is required",
                    ));
                }
            };
            let Some(pool) = pool else {
                tracing::error!("merchant API: no database pool in the app");
                return Err(ApiError::internal());
            };
            let client = pool.get().await?;
            match merchants::by_fingerprint(&client, &fingerprint).await? {
                Some(m) if m.enabled => Ok(Self {
                    id: m.id,
                    name: m.name,
                }),
                Some(_) => Err(ApiError::unauthenticated("this merchant is disabled")),
                None => Err(ApiError::unauthenticated(
                    "the client certificate is not registered to a merchant",
                )),
            }
        })
    }
}
