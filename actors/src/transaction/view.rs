//! What the customer pages show: from the payment's actor while it is in flight, read from the
//! row otherwise.

use super::PaymentError;
use super::store::{PaymentRow, TerminalRow, customer_terminals};
use crate::domain::{Amount, Currency, Msisdn, PaymentStatus};
use crate::keyed_hash::HashKey;
use crate::store::prepared::Prepared;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentView {
    pub id: String,
    pub merchant_name: String,
    pub amount: Amount,
    pub currency: Currency,
    pub description: String,
    pub status: PaymentStatus,
    pub failure_code: Option<String>,
    pub bank_response_code: Option<String>,
    pub approval_code: Option<String>,
    pub return_url: String,
    pub expires_at: DateTime<Utc>,
    pub customer_id: Option<String>,
    /// Keyed, and still shown by `Debug` as `***` only.
    session_hash: Option<crate::secret::Secret<Vec<u8>>>,
    pub has_live_code: bool,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub code_sends: i32,
    pub code_delivery_error: Option<String>,
}

impl PaymentView {
    /// `12.34 CNY`.
    pub fn amount_text(&self) -> String {
        self.currency.format_amount(self.amount)
    }

    /// Whether `token` is the browser session that passed this payment's password step.
    pub fn session_matches(&self, key: &HashKey, token: &str) -> bool {
        self.session_hash
            .as_ref()
            .is_some_and(|h| super::code::session_matches(key, &self.id, token, h.expose()))
    }

    /// The view of a payment in flight, from its actor's copy of the row.
    pub fn of_row(row: &PaymentRow) -> Self {
        Self {
            id: row.id.clone(),
            merchant_name: row.merchant_name.clone(),
            amount: row.amount,
            currency: row.currency,
            description: row.description.clone(),
            status: row.status,
            // Set with a final status only, and an actor's view is never final.
            failure_code: None,
            bank_response_code: None,
            approval_code: None,
            return_url: row.return_url.clone(),
            expires_at: row.expires_at,
            customer_id: row.customer_id.clone(),
            session_hash: row.session_hash.clone().map(Into::into),
            has_live_code: row.code_hash.is_some(),
            code_expires_at: row.code_expires_at,
            code_sends: row.code_sends,
            code_delivery_error: row.code_delivery_error.clone(),
        }
    }
}

pub async fn load_view(
    client: &impl GenericClient,
    payment_id: &str,
) -> Result<Option<PaymentView>, PaymentError> {
    let Some(row) = client
        .query_opt_cached(
            "SELECT p.id, m.name, p.amount_minor, p.currency, p.description, p.status,
                 p.failure_code, p.bank_response_code, p.approval_code, p.return_url, p.expires_at,
                 p.customer_id, p.session_hash, p.code_hash IS NOT NULL, p.code_expires_at,
                 p.code_sends, p.code_delivery_error
             FROM payments p JOIN merchants m ON m.id = p.merchant_id WHERE p.id = $1",
            &[&payment_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let bad = |f: &str| PaymentError::Storage(format!("payments.{f} holds an invalid value"));
    Ok(Some(PaymentView {
        id: row.get(0),
        merchant_name: row.get(1),
        amount: Amount::parse(row.get(2)).map_err(|_| bad("amount_minor"))?,
        currency: Currency::parse(row.get(3)).map_err(|_| bad("currency"))?,
        description: row.get(4),
        status: PaymentStatus::parse(row.get(5)).ok_or_else(|| bad("status"))?,
        failure_code: row.get(6),
        bank_response_code: row.get(7),
        approval_code: row.get(8),
        return_url: row.get(9),
        expires_at: row.get(10),
        customer_id: row.get(11),
        session_hash: row.get::<_, Option<Vec<u8>>>(12).map(Into::into),
        has_live_code: row.get(13),
        code_expires_at: row.get(14),
        code_sends: row.get(15),
        code_delivery_error: row.get(16),
    }))
}

/// A running payment's view, with the code page's routes when its actor read the customer's
/// terminals.
pub type ViewWithRoutes = (PaymentView, Option<Vec<RouteOption>>);

/// One way the customer may receive a code, as offered on the code page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteOption {
    /// `sms:<id>` (a registered mobile) or `terminal:<id>`.
    pub value: String,
    pub label: String,
}

pub async fn route_options(
    client: &impl GenericClient,
    customer_id: &str,
) -> Result<Vec<RouteOption>, PaymentError> {
    Ok(route_options_of(
        &customer_terminals(client, customer_id).await?,
    ))
}

/// The code page's choices among the customer's `terminals`.
pub fn route_options_of(terminals: &[TerminalRow]) -> Vec<RouteOption> {
    let mut options = Vec::new();
    for t in terminals {
        if t.kind == "mobile" {
            if let Some(m) = t.msisdn.as_deref().and_then(|m| Msisdn::parse(m).ok()) {
                options.push(RouteOption {
                    value: format!("sms:{}", t.id),
                    label: format!("SMS to {}", m.masked()),
                });
            }
        } else {
            let label = if t.label.is_empty() {
                format!("Your {} terminal", t.kind)
            } else {
                format!("Terminal: {}", t.label)
            };
            options.push(RouteOption {
                value: format!("terminal:{}", t.id),
                label,
            });
        }
    }
    options
}
