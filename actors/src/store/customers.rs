//! Customers: actual identity, identity for online transactions, account and password hash. A
//! customer registered with a mobile number gets that telephone as its first terminal, in the same
//! transaction.

use super::StoreError;
use super::merchants::is_unique_violation;
use super::terminals::{self, NewTerminal, TerminalError};
use crate::domain::{AccountNumber, BankId, Msisdn, OnlineId};
use crate::secret::Secret;
use crate::store::prepared::Prepared;
use deadpool_postgres::GenericClient;

#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub id: String,
    /// Actual identity: the customer's real name (personal data, never logged).
    pub real_name: Secret<String>,
    /// Actual identity document (national id or similar), if given.
    pub national_id: Option<Secret<String>>,
    pub online_id: OnlineId,
    pub bank_id: BankId,
    pub account: AccountNumber,
    /// argon2id PHC string.
    pub password_hash: Secret<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("online id `{0}` is already registered")]
    OnlineIdTaken(String),
    /// The sign-in page looks an identity up as an online id first: this one would hide that
    /// customer's mobile number.
    #[error("online id {0} is the mobile number of another customer")]
    OnlineIdIsAMobile(String),
    #[error(transparent)]
    Terminal(#[from] TerminalError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for CustomerError {
    fn from(e: tokio_postgres::Error) -> Self {
        CustomerError::Store(e.into())
    }
}

/// Inserts the customer and, with `mobile`, its first terminal (kind `mobile`); one transaction.
/// Returns the terminal id when one was registered.
pub async fn insert(
    client: &mut deadpool_postgres::Client,
    c: &NewCustomer,
    mobile: Option<&Msisdn>,
) -> Result<Option<String>, CustomerError> {
    let tx = client.transaction().await?;
    if let Ok(number) = Msisdn::parse(c.online_id.as_str()) {
        let mobile_of_another = tx
            .query_opt_cached(
                "SELECT 1 FROM terminals
                 WHERE kind = 'mobile' AND status = 'enabled' AND msisdn = $1",
                &[&number.digits()],
            )
            .await?;
        if mobile_of_another.is_some() {
            return Err(CustomerError::OnlineIdIsAMobile(number.masked()));
        }
    }
    let result = tx
        .execute_cached(
            "INSERT INTO customers (id, real_name, national_id, online_id, bank_id, account, \
             password_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &c.id,
                c.real_name.expose(),
                &c.national_id.as_ref().map(|n| n.expose().as_str()),
                &c.online_id.as_str(),
                &c.bank_id.as_str(),
                &c.account.expose(),
                c.password_hash.expose(),
            ],
        )
        .await;
    match result {
        Err(e) if is_unique_violation(&e, "customers_online_id_key") => {
            return Err(CustomerError::OnlineIdTaken(c.online_id.as_str().into()));
        }
        other => {
            other?;
        }
    }
    let terminal_id = match mobile {
        Some(msisdn) => {
            let t = NewTerminal::mobile(&c.id, msisdn.clone());
            terminals::insert(&tx, &t).await?;
            Some(t.id)
        }
        None => None,
    };
    tx.commit().await?;
    Ok(terminal_id)
}

/// The customer id for an identity for online transactions.
pub async fn id_by_online_id(
    client: &impl GenericClient,
    online_id: &OnlineId,
) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt_cached(
            "SELECT id FROM customers WHERE online_id = $1",
            &[&online_id.as_str()],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
/// Deletes up to `batch_max` failed sign-ins from before `cutoff` (too old for any lockout
/// decision); returns how many.
pub async fn purge_login_failures(
    client: &impl GenericClient,
    cutoff: chrono::DateTime<chrono::Utc>,
    batch_max: i64,
) -> Result<u64, StoreError> {
    Ok(client
        .execute_cached(
            "DELETE FROM login_failures WHERE id IN (SELECT id FROM login_failures \
             WHERE failed_at < $1 LIMIT $2)",
            &[&cutoff, &batch_max],
        )
        .await?)
}
