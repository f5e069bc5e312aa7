//! Merchants: registration (by `payhub merchant add`), status, and the lookup by client
//! certificate fingerprint that authenticates every merchant API request.

use super::StoreError;
use crate::domain::{AccountNumber, BankId};
use crate::secret::Secret;
use crate::store::prepared::Prepared;
use deadpool_postgres::GenericClient;

/// Field 41 (card acceptor terminal id) is 8 characters; field 42 (card acceptor id) 15.
pub const TERMINAL_ID_LEN: usize = 8;
pub const CARD_ACCEPTOR_ID_LEN: usize = 15;

#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub id: String,
    pub name: String,
    pub cert_fingerprint: String,
    pub cert_serial: String,
    /// The merchant's own certificate, pinned by fingerprint, rather than one the merchant CA
    /// issued.
    pub cert_pinned: bool,
    pub webhook_secret: Secret<String>,
    pub bank_id: BankId,
    pub account: AccountNumber,
    pub terminal_id: String,
    pub card_acceptor_id: String,
    pub location: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantStatus {
    Enabled,
    Disabled,
}

impl MerchantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }
    }
}

/// What the API needs to know about the merchant behind a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantIdentity {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    /// Whether the certificate is accepted without a trusted issuer: `Some(true)` pinned,
    /// `Some(false)` issued by the merchant CA, `None` registered before this was recorded (V73).
    pub cert_pinned: Option<bool>,
}

/// Everything about a merchant except its webhook secret's value stays printable.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub webhook_secret: Secret<String>,
    pub bank_id: BankId,
    pub account: AccountNumber,
    pub terminal_id: String,
    pub card_acceptor_id: String,
    pub location: String,
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    #[error("a merchant with this certificate fingerprint is already registered")]
    FingerprintTaken,
    #[error("no merchant `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for MerchantError {
    fn from(e: tokio_postgres::Error) -> Self {
        MerchantError::Store(e.into())
    }
}

/// `n` random decimal digits (for fields 41 and 42).
pub fn random_digits(n: usize) -> String {
    let bytes = crate::ids::os_random::<32>();
    assert!(n <= bytes.len(), "at most 32 random digits");
    bytes[..n]
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect()
}

pub async fn insert(client: &impl GenericClient, m: &NewMerchant) -> Result<(), MerchantError> {
    assert_eq!(m.terminal_id.len(), TERMINAL_ID_LEN, "field 41 length");
    assert_eq!(
        m.card_acceptor_id.len(),
        CARD_ACCEPTOR_ID_LEN,
        "field 42 length"
    );
    let result = client
        .execute_cached(
            "INSERT INTO merchants (id, name, cert_fingerprint, cert_serial, cert_pinned, \
             webhook_secret, bank_id, account, terminal_id, card_acceptor_id, location) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &m.id,
                &m.name,
                &m.cert_fingerprint,
                &m.cert_serial,
                &m.cert_pinned,
                m.webhook_secret.expose(),
                &m.bank_id.as_str(),
                &m.account.expose(),
                &m.terminal_id,
                &m.card_acceptor_id,
                &m.location,
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e, "merchants_cert_fingerprint_key") => {
            Err(MerchantError::FingerprintTaken)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `e` is a unique violation of `constraint`.
pub fn is_unique_violation(e: &tokio_postgres::Error, constraint: &str) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some(constraint)
    })
}

/// The merchant whose client certificate has this SHA-256 fingerprint (lower-case hex).
pub async fn by_fingerprint(
    client: &impl GenericClient,
    fingerprint: &str,
) -> Result<Option<MerchantIdentity>, StoreError> {
    let row = client
        .query_opt_cached(
            "SELECT id, name, status, cert_pinned FROM merchants WHERE cert_fingerprint = $1",
            &[&fingerprint],
        )
        .await?;
    Ok(row.map(|r| MerchantIdentity {
        id: r.get(0),
        name: r.get(1),
        enabled: r.get::<_, &str>(2) == MerchantStatus::Enabled.as_str(),
        cert_pinned: r.get(3),
    }))
}

/// Records that a merchant registered before V73 (`cert_pinned` NULL) holds a certificate the
/// merchant CA issued.
pub async fn record_issued(client: &impl GenericClient, id: &str) -> Result<(), StoreError> {
    client
        .execute_cached(
            "UPDATE merchants SET cert_pinned = false WHERE id = $1 AND cert_pinned IS NULL",
            &[&id],
        )
        .await?;
    Ok(())
}

pub async fn load(client: &impl GenericClient, id: &str) -> Result<Option<Merchant>, StoreError> {
    let row = client
        .query_opt_cached(
            "SELECT id, name, webhook_secret, bank_id, account, terminal_id, card_acceptor_id, \
             location, status FROM merchants WHERE id = $1",
            &[&id],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    let corrupt = |e: crate::domain::FieldError| StoreError::Corrupt(format!("merchant {id}: {e}"));
    Ok(Some(Merchant {
        id: r.get(0),
        name: r.get(1),
        webhook_secret: Secret::new(r.get(2)),
        bank_id: BankId::parse(r.get(3)).map_err(corrupt)?,
        account: AccountNumber::parse(r.get(4)).map_err(corrupt)?,
        terminal_id: r.get(5),
        card_acceptor_id: r.get(6),
        location: r.get(7),
        enabled: r.get::<_, &str>(8) == MerchantStatus::Enabled.as_str(),
    }))
}

pub async fn set_status(
    client: &impl GenericClient,
    id: &str,
    status: MerchantStatus,
) -> Result<(), MerchantError> {
    let n = client
        .execute_cached(
            "UPDATE merchants SET status = $2 WHERE id = $1",
            &[&id, &status.as_str()],
        )
        .await?;
    if n == 0 {
        return Err(MerchantError::NotFound(id.to_string()));
    }
    Ok(())
}
