//! Customer terminals and their initial information (claim: a terminal is registered with one or
//! more items: telephone number, serial number, key). A dedicated terminal proves itself with a
//! 32-byte shared key that `payhub terminal add` generates.

use super::StoreError;
use super::merchants::is_unique_violation;
use crate::domain::{Msisdn, TerminalKind};
use crate::secret::Secret;
use crate::store::prepared::Prepared;
use deadpool_postgres::GenericClient;

/// Length of a dedicated terminal's shared key.
pub const SHARED_KEY_BYTES: usize = 32;
/// Longest label and serial number accepted.
pub const LABEL_MAX_CHARS: usize = 64;
pub const SERIAL_MAX_CHARS: usize = 64;

#[derive(Debug, Clone)]
pub struct NewTerminal {
    pub id: String,
    pub customer_id: String,
    pub kind: TerminalKind,
    pub label: String,
    pub msisdn: Option<Msisdn>,
    pub serial: Option<String>,
    pub shared_key: Option<Secret<[u8; SHARED_KEY_BYTES]>>,
    pub public_key_pem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("mobile number {0} is already registered to a customer")]
    MobileTaken(String),
    /// Another customer signs in with this text as their online id, which the sign-in page
    /// looks up first: the number could not sign its customer in.
    #[error("mobile number {0} is another customer's online id")]
    MobileIsAnOnlineId(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for TerminalError {
    fn from(e: tokio_postgres::Error) -> Self {
        TerminalError::Store(e.into())
    }
}

impl NewTerminal {
    pub fn mobile(customer_id: &str, msisdn: Msisdn) -> Self {
        Self {
            id: crate::ids::new_id("trm"),
            customer_id: customer_id.to_string(),
            kind: TerminalKind::Mobile,
            label: String::new(),
            msisdn: Some(msisdn),
            serial: None,
            shared_key: None,
            public_key_pem: None,
        }
    }

    /// The rules for initial information, by kind: phones and pagers are reached by number; a
    /// PDA by number or identified by serial or key; a dedicated terminal by its shared key.
    pub fn check(&self) -> Result<(), TerminalError> {
        let invalid = |m: &str| Err(TerminalError::Invalid(m.to_string()));
        if self.label.chars().count() > LABEL_MAX_CHARS {
            return invalid("--label: at most 64 characters");
        }
        if let Some(serial) = &self.serial {
            let n = serial.chars().count();
            if n == 0 || n > SERIAL_MAX_CHARS || serial.chars().any(char::is_control) {
                return invalid("--serial: 1 to 64 printable characters");
            }
        }
        match self.kind {
            TerminalKind::Mobile | TerminalKind::Telephone | TerminalKind::Pager
                if self.msisdn.is_none() =>
            {
                invalid("--msisdn: required for a mobile, telephone or pager terminal")
            }
            TerminalKind::Pda
                if self.msisdn.is_none()
                    && self.serial.is_none()
                    && self.public_key_pem.is_none() =>
            {
                invalid("a pda terminal needs --msisdn, --serial or --public-key-file")
            }
            TerminalKind::Dedicated
                if self.shared_key.is_none() == self.public_key_pem.is_none() =>
            {
                invalid("a dedicated terminal needs a shared key or a public key, not both")
            }
            _ => Ok(()),
        }
    }
}

/// Disables a terminal: no code or notice goes to it again. `false` when there is no such
/// terminal.
pub async fn disable(client: &impl GenericClient, id: &str) -> Result<bool, TerminalError> {
    let updated = client
        .execute_cached(
            "UPDATE terminals SET status = 'disabled' WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(updated == 1)
}

pub async fn insert(client: &impl GenericClient, t: &NewTerminal) -> Result<(), TerminalError> {
    t.check()?;
    if let (TerminalKind::Mobile, Some(number)) = (t.kind, &t.msisdn) {
        let online_id_of_another = client
            .query_opt_cached(
                "SELECT 1 FROM customers WHERE online_id IN ($1, '+' || $1) AND id <> $2",
                &[&number.digits(), &t.customer_id],
            )
            .await?;
        if online_id_of_another.is_some() {
            return Err(TerminalError::MobileIsAnOnlineId(number.masked()));
        }
    }
    let result = client
        .execute_cached(
            "INSERT INTO terminals (id, customer_id, kind, label, msisdn, serial, shared_key, \
             public_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &t.id,
                &t.customer_id,
                &t.kind.as_str(),
                &t.label,
                &t.msisdn.as_ref().map(Msisdn::digits),
                &t.serial,
                &t.shared_key.as_ref().map(|k| &k.expose()[..]),
                &t.public_key_pem,
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e, "terminals_mobile_msisdn") => Err(
            TerminalError::MobileTaken(t.msisdn.as_ref().map(Msisdn::masked).unwrap_or_default()),
        ),
        Err(e) => Err(e.into()),
    }
}
