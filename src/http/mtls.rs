//! Merchant authentication by client certificate (mTLS).
//!
//! The TLS layer asks every client for a certificate but does not require one (browsers on the
//! customer pages have none), and accepts the handshake whatever the certificate: the outcome of
//! verifying it against the merchant CA is recorded per connection (`on_connect`) and judged by the
//! merchant routes, which answer 401 in the API's error shape instead of a bare handshake failure.
//! A merchant is authenticated when its certificate chains to the merchant CA and is within its
//! validity, its SHA-256 fingerprint is registered, and the merchant is enabled. Validity is
//! judged on the gateway's clock: by OpenSSL at the handshake (the whole chain), and again at
//! every request (the certificate, its intermediates and the merchant CA), since a keep-alive
//! connection or a resumed session keeps its first handshake's verdict. A certificate of
//! the merchant's own (`merchant add --cert`) does not chain to the merchant CA: it is accepted
//! when it is within its validity and its fingerprint is registered as pinned, and only when the
//! chain failed for want of a trusted issuer, never for any other fault. One the merchant CA
//! issued is never accepted as pinned: taking its CA out of `merchant_ca_cert` revokes it. (A
//! merchant registered before V73 is recorded as issued at its first request that chains to the
//! merchant CA; until then it could pass as pinned.)

use crate::http::error::ApiError;
use actix_tls::accept::openssl::TlsStream;
use actix_web::dev::{Extensions, Payload};
use actix_web::rt::net::TcpStream;
use actix_web::{FromRequest, HttpRequest, web};
use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::future::LocalBoxFuture;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::ssl::{
    ClientHelloResponse, Ssl, SslAcceptor, SslAcceptorBuilder, SslMethod, SslVerifyMode,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509Ref, X509StoreContext, X509StoreContextRef, X509VerifyResult};
use payhub_actors::Secret;
use payhub_actors::clock::SharedClock;
use payhub_actors::store::merchants;
use payhub_actors::store::merchants::MerchantIdentity;
use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

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
    /// The merchant CA certificates.
    pub fn merchant_cas(&self) -> Result<Vec<X509>, ErrorStack> {
        X509::stack_from_pem(&self.merchant_ca_pem)
    }

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
    /// checked against the merchant CA at `clock`'s time, the verdict left to the merchant routes.
    pub fn acceptor(&self, clock: SharedClock) -> Result<SslAcceptorBuilder, ErrorStack> {
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
        for ca in self.merchant_cas()? {
            b.add_client_ca(&ca)?;
            store.add_cert(ca)?;
        }
        b.set_verify_cert_store(store.build())?;
        // Each handshake verifies the chain (every certificate's validity, the CA's too) at the
        // gateway's clock, not the wall clock: tests move it, and production's is the same.
        let faults = fault_index()?;
        b.set_client_hello_callback(move |ssl, _alert| {
            ssl.param_mut().set_time(clock.now().timestamp());
            ssl.set_ex_data(faults, Fault::default());
            Ok(ClientHelloResponse::SUCCESS)
        });
        // Request a certificate, never refuse the handshake over it; see the module comment.
        b.set_verify_callback(SslVerifyMode::PEER, move |preverified, ctx| {
            if !preverified {
                keep_worst_fault(ctx, faults);
            }
            true
        });
        // Sessions resumed with a client certificate need a context id, or OpenSSL refuses them.
        b.set_session_id_context(b"payhub-gateway")?;
        Ok(b)
    }
}

/// The fault this handshake's verification met that a pin cannot excuse, if any.
///
/// OpenSSL keeps only the last error of a verification that its callback lets go on, and reports
/// the missing trusted issuer late (a leaf signature it cannot verify, 21): without this, a
/// certificate of the wrong purpose (26) from an unknown CA would end as merely untrusted, which
/// a pin excuses.
#[derive(Debug, Default)]
struct Fault(Mutex<Option<X509VerifyResult>>);

fn fault_index() -> Result<Index<Ssl, Fault>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, Fault>> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    let index = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| index))
}

/// Called for each error of a handshake's verification: remembers the last one a pin cannot
/// excuse, and puts it back when an untrusted issuer's error comes after it, so that it is the
/// verdict the connection (and a session resumed from it) is judged by.
fn keep_worst_fault(ctx: &mut X509StoreContextRef, faults: Index<Ssl, Fault>) {
    let error = ctx.error();
    let Ok(ssl) = X509StoreContext::ssl_idx() else {
        return;
    };
    let Some(fault) = ctx.ex_data(ssl).and_then(|ssl| ssl.ex_data(faults)) else {
        return;
    };
    let mut kept = fault
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !UNTRUSTED_ISSUER.contains(&error.as_raw()) {
        *kept = Some(error);
        return;
    }
    if let Some(worse) = *kept {
        drop(kept);
        ctx.set_error(worse);
    }
}

/// What the client presented on this connection, recorded once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertificate {
    /// Chains to the merchant CA; acceptable within its validity.
    Verified {
        fingerprint: String,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    },
    /// Issued by no CA the gateway trusts: acceptable only if pinned, within its validity.
    Uploaded {
        fingerprint: String,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    },
    /// Presented but not acceptable (another CA, expired, …).
    Rejected { reason: String },
}

/// `HttpServer::on_connect`: records the peer certificate's verdict in the connection's data.
/// `merchant_cas` are the merchant CA certificates the acceptor trusts.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions, merchant_cas: &[X509]) {
    let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() else {
        return;
    };
    let ssl = tls.ssl();
    let Some(cert) = ssl.peer_certificate() else {
        return;
    };
    // The chain the client sent. A session resumed from a ticket (stateless, so that no client
    // holds memory here) does not carry it: its intermediates go unchecked, the certificate and a
    // merchant CA that issued it directly are checked still.
    let sent: Vec<&X509Ref> = ssl
        .peer_cert_chain()
        .map(|chain| chain.iter().collect())
        .unwrap_or_default();
    data.insert(judge(&cert, &sent, ssl.verify_result(), merchant_cas));
}

/// The verdict on a presented certificate, from OpenSSL's verification against the merchant CA.
/// `sent` are the other certificates the client sent (its intermediates).
fn judge(
    cert: &X509Ref,
    sent: &[&X509Ref],
    verdict: X509VerifyResult,
    merchant_cas: &[X509],
) -> ClientCertificate {
    let fingerprint = crate::pki::fingerprint(cert);
    // A keep-alive connection (or a resumed session, which keeps its first handshake's verdict)
    // outlives its handshake: each request checks the validity again, on the gateway's clock,
    // of the certificate and, for one the merchant CA issued, of its issuers up to that CA.
    let verified = verdict == X509VerifyResult::OK;
    let issuers = if verified {
        issuers_up_to_a_ca(cert, sent, merchant_cas)
    } else {
        Vec::new()
    };
    let Some((not_before, not_after)) = validity_window(cert, &issuers) else {
        return ClientCertificate::Rejected {
            reason: "the certificate's validity cannot be read".into(),
        };
    };
    if verified {
        return ClientCertificate::Verified {
            fingerprint,
            not_before,
            not_after,
        };
    }
    // Only for want of a trusted issuer; its validity is checked at each request as any other's.
    if UNTRUSTED_ISSUER.contains(&verdict.as_raw()) {
        return ClientCertificate::Uploaded {
            fingerprint,
            not_before,
            not_after,
        };
    }
    ClientCertificate::Rejected {
        reason: verdict.error_string().to_string(),
    }
}

/// Issuers followed from a client's certificate towards the merchant CA, at most.
const CHAIN_DEPTH_MAX: usize = 8;

/// The issuers of `cert`, each found by name and signature among the intermediates the client
/// `sent`, up to and including the merchant CA that issued the last; those found when no merchant
/// CA is reached within `CHAIN_DEPTH_MAX`.
fn issuers_up_to_a_ca<'a>(
    cert: &'a X509Ref,
    sent: &[&'a X509Ref],
    merchant_cas: &'a [X509],
) -> Vec<&'a X509Ref> {
    let mut issuers = Vec::new();
    let mut current = cert;
    while issuers.len() < CHAIN_DEPTH_MAX {
        if let Some(ca) = longest_lived(merchant_cas.iter().map(|ca| &**ca), current) {
            issuers.push(ca);
            break;
        }
        let Some(next) = longest_lived(sent.iter().copied(), current) else {
            break;
        };
        issuers.push(next);
        current = next;
    }
    issuers
}

/// Of the `candidates` that issued `cert`, the one valid the longest: a renewed CA or
/// intermediate (same name and key) beside its expired predecessor is the one OpenSSL chose.
fn longest_lived<'a>(
    candidates: impl Iterator<Item = &'a X509Ref>,
    cert: &X509Ref,
) -> Option<&'a X509Ref> {
    candidates
        .filter(|candidate| issued_by(cert, candidate))
        .max_by_key(|candidate| crate::pki::validity(candidate).map(|(_, end)| end))
}

/// When `cert` and all its `issuers` are valid: the latest start, the earliest end.
fn validity_window(cert: &X509Ref, issuers: &[&X509Ref]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (mut start, mut end) = crate::pki::validity(cert)?;
    for issuer in issuers {
        let (issuer_start, issuer_end) = crate::pki::validity(issuer)?;
        start = start.max(issuer_start);
        end = end.min(issuer_end);
    }
    Some((start, end))
}

/// Whether `ca` issued `cert`: its name and key identifiers match, and its key verifies the
/// signature.
fn issued_by(cert: &X509Ref, ca: &X509Ref) -> bool {
    ca.issued(cert) == X509VerifyResult::OK
        && ca
            .public_key()
            .is_ok_and(|key| cert.verify(&key).unwrap_or(false))
}

/// OpenSSL's verdicts (`X509_V_ERR_*`, stable numbers) for a certificate whose issuer the gateway
/// does not trust, with nothing else wrong with it that verification reached: depth-zero
/// self-signed (18), self-signed in the chain (19), issuer not found (20), leaf signature not
/// verifiable (21).
const UNTRUSTED_ISSUER: [i32; 4] = [18, 19, 20, 21];

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
        let cache = req.app_data::<web::Data<MerchantCache>>().cloned();
        let now = cache.as_ref().map_or_else(Utc::now, |c| c.clock.now());
        Box::pin(async move {
            let (fingerprint, not_before, not_after, chained) = match cert {
                Some(ClientCertificate::Verified {
                    fingerprint,
                    not_before,
                    not_after,
                }) => (fingerprint, not_before, not_after, true),
                Some(ClientCertificate::Uploaded {
                    fingerprint,
                    not_before,
                    not_after,
                }) => (fingerprint, not_before, not_after, false),
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
            if now < not_before {
                return Err(ApiError::unauthenticated(
                    "the client certificate is not valid yet",
                ));
            }
            if now > not_after {
                return Err(ApiError::unauthenticated(
                    "the client certificate has expired",
                ));
            }
            let merchant = match cache.as_ref().and_then(|c| c.get(&fingerprint)) {
                Some(cached) => cached,
                None => {
                    let Some(pool) = pool else {
                        tracing::error!("merchant API: no database pool in the app");
                        return Err(ApiError::internal());
                    };
                    let client = pool.get().await?;
                    let mut found = merchants::by_fingerprint(&client, &fingerprint).await?;
                    // A merchant registered before V73 whose certificate chains to the merchant
                    // CA: issued, from now on judged so.
                    if let Some(m) = found
                        .as_mut()
                        .filter(|m| chained && m.cert_pinned.is_none())
                    {
                        merchants::record_issued(&client, &m.id).await?;
                        m.cert_pinned = Some(false);
                    }
                    if let Some(cache) = &cache {
                        cache.put(fingerprint, found.clone());
                    }
                    found
                }
            };
            match merchant {
                // Issued by a merchant CA the gateway no longer trusts: revoked with it.
                Some(m) if !chained && m.cert_pinned == Some(false) => Err(
                    ApiError::unauthenticated("the client certificate's issuer is not trusted"),
                ),
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

/// How long a certificate's merchant (and whether it is enabled) is reused before it is read
/// again: disabling a merchant takes effect within this time.
pub const MERCHANT_CACHE_TTL_MS: i64 = 1_000;
/// Fingerprints remembered at once; past this the stale ones are forgotten, and if that is not
/// enough, all of them.
pub const MERCHANT_CACHE_ENTRIES_MAX: usize = 10_000;

/// A fingerprint's lookup result and when it was read.
type CachedLookup = (Option<MerchantIdentity>, chrono::DateTime<chrono::Utc>);

/// Saves the merchant lookup on every request of a busy merchant (one database round trip).
/// Unknown fingerprints are remembered too, so a stranger's retries do not reach the database.
pub struct MerchantCache {
    clock: SharedClock,
    ttl: chrono::Duration,
    entries: Mutex<HashMap<String, CachedLookup>>,
}

impl MerchantCache {
    pub fn new(clock: SharedClock, ttl_ms: i64) -> Self {
        Self {
            clock,
            ttl: chrono::Duration::milliseconds(ttl_ms),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(lookup result)` while fresh.
    fn get(&self, fingerprint: &str) -> Option<Option<MerchantIdentity>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (merchant, read_at) = entries.get(fingerprint)?;
        (self.clock.now() - *read_at < self.ttl).then(|| merchant.clone())
    }

    fn put(&self, fingerprint: String, merchant: Option<MerchantIdentity>) {
        let now = self.clock.now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MERCHANT_CACHE_ENTRIES_MAX {
            // Stale entries go first, so that strangers' certificates (each a new fingerprint)
            // do not push the merchants' fresh ones out with them.
            entries.retain(|_, (_, read_at)| now - *read_at < self.ttl);
            // Mostly fresh entries: a stream of new fingerprints. Starting over keeps each scan
            // above paid for by thousands of insertions.
            if entries.len() >= MERCHANT_CACHE_ENTRIES_MAX * 3 / 4 {
                entries.clear();
            }
        }
        entries.insert(fingerprint, (merchant, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertifiedKey, Validity};
    use payhub_actors::clock::ManualClock;
    use std::sync::Arc;

    fn shop() -> Option<MerchantIdentity> {
        Some(MerchantIdentity {
            id: "mer_shop".into(),
            name: "Shop".into(),
            enabled: true,
            cert_pinned: Some(false),
        })
    }

    /// A CA certificate for `name`, signed by `parent` (self-signed without one), valid `days`.
    /// (Its path length of 0 matters not here: the window is judged by name and signature.)
    fn ca(name: &str, parent: Option<&CertifiedKey>, days: u32) -> CertifiedKey {
        let key = crate::pki::new_key().unwrap();
        ca_with(name, parent, Validity::days_from_now(days), key)
    }

    fn ca_with(
        name: &str,
        parent: Option<&CertifiedKey>,
        validity: Validity,
        key: PKey<openssl::pkey::Private>,
    ) -> CertifiedKey {
        crate::pki::ca_certificate(name, parent, validity, key).unwrap()
    }

    /// An operator's merchant CA may issue through an intermediate: the window ends when the
    /// first certificate of the path to the CA does, the intermediate here; of an intermediate
    /// sent twice, renewed and expired, the renewed one counts.
    #[test]
    fn a_verified_certificate_is_valid_only_while_its_intermediate_is() {
        let root = ca("operator root", None, 3_650);
        let intermediate = ca("operator intermediate", Some(&root), 30);
        let now = chrono::Utc::now().timestamp();
        let past = Validity {
            not_before_unix: now - 7_200,
            not_after_unix: now - 3_600,
        };
        let expired = ca_with(
            "operator intermediate",
            Some(&root),
            past,
            intermediate.key.clone(),
        );
        let leaf =
            crate::pki::issue_client(&intermediate, "shop", Validity::days_from_now(365)).unwrap();
        let unrelated = ca("unrelated", None, 1);
        let sent = [&*unrelated.cert, &*expired.cert, &*intermediate.cert];
        let verdict = judge(
            &leaf.cert,
            &sent,
            X509VerifyResult::OK,
            std::slice::from_ref(&root.cert),
        );
        let ClientCertificate::Verified { not_after, .. } = verdict else {
            panic!("{verdict:?}");
        };
        let intermediate_ends = crate::pki::validity(&intermediate.cert).unwrap().1;
        assert_eq!(not_after, intermediate_ends);
        assert!(not_after < crate::pki::validity(&leaf.cert).unwrap().1);
    }

    #[test]
    fn a_full_cache_forgets_stale_fingerprints_before_fresh_ones() {
        let clock = ManualClock::new(chrono::Utc::now());
        let cache = MerchantCache::new(Arc::new(clock.clone()), MERCHANT_CACHE_TTL_MS);
        for n in 0..MERCHANT_CACHE_ENTRIES_MAX - 1 {
            cache.put(format!("stranger-{n}"), None);
        }
        clock.advance(chrono::Duration::milliseconds(MERCHANT_CACHE_TTL_MS));
        cache.put("shop".into(), shop());
        cache.put("one-more-stranger".into(), None);
        assert!(cache.get("shop").is_some_and(|m| m.is_some()));
        assert_eq!(cache.get("stranger-0"), None);
    }
}
