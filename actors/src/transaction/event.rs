//! The final status and its webhook event, in one transaction (the outbox). The event body is the
//! payment object of gateway-http.md, built by `store::payments` (one definition for the API and
//! the webhooks).

use super::PaymentError;
use crate::domain::{FailureCode, PaymentStatus};
use crate::store::payments;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::{Value, json};

/// The outcome a payment ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: PaymentStatus,
    pub failure_code: Option<FailureCode>,
    pub bank_response_code: Option<String>,
    pub approval_code: Option<String>,
}

impl Outcome {
    pub fn succeeded(approval_code: Option<String>) -> Self {
        Self {
            status: PaymentStatus::Succeeded,
            failure_code: None,
            // The payment object reports field 39 for failures only.
            bank_response_code: None,
            approval_code,
        }
    }

    pub fn failed(code: FailureCode, bank_response_code: Option<String>) -> Self {
        Self {
            status: PaymentStatus::Failed,
            failure_code: Some(code),
            bank_response_code,
            approval_code: None,
        }
    }

    pub fn expired() -> Self {
        Self {
            status: PaymentStatus::Expired,
            failure_code: None,
            bank_response_code: None,
            approval_code: None,
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self.status {
            PaymentStatus::Succeeded => "payment.succeeded",
            PaymentStatus::Expired => "payment.expired",
            _ => "payment.failed",
        }
    }
}

/// Moves the payment from one of `from` to the final `outcome`, and writes its webhook event
/// (MERCHANT's `insert_final_event`, with the one payment object of the API) and an audit line, in
/// `tx`. `Ok(false)` when the payment was no longer in one of `from` (someone else finished it):
/// nothing is written.
pub async fn finish(
    tx: &Transaction<'_>,
    payment_id: &str,
    from: &[PaymentStatus],
    outcome: &Outcome,
    now: DateTime<Utc>,
    public_url: &url::Url,
) -> Result<bool, PaymentError> {
    assert!(outcome.status.is_final(), "finish takes a final status");
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let moved = tx
        .execute(
            "UPDATE payments SET status = $3, failure_code = $4, bank_response_code = $5,
                 approval_code = $6, finished_at = $2, updated_at = $2,
                 code_hash = NULL, code_expires_at = NULL
             WHERE id = $1 AND status = ANY($7)",
            &[
                &payment_id,
                &now,
                &outcome.status.as_str(),
                &outcome.failure_code.map(|c| c.as_str()),
                &outcome.bank_response_code,
                &outcome.approval_code,
                &from,
            ],
        )
        .await?;
    if moved == 0 {
        return Ok(false);
    }
    let record = payments::load(tx, payment_id)
        .await
        .map_err(|e| PaymentError::Storage(e.to_string()))?
        .ok_or(PaymentError::NotFound)?;
    payments::insert_final_event(tx, &record, public_url, now)
        .await
        .map_err(|e| PaymentError::Storage(e.to_string()))?;
    audit(
        tx,
        now,
        payment_id,
        outcome.status.as_str(),
        json!({
            "failure_code": outcome.failure_code.map(|c| c.as_str()),
            "bank_response_code": outcome.bank_response_code,
        }),
    )
    .await?;
    let failure = outcome.failure_code.map(|c| c.as_str()).unwrap_or("");
    crate::metrics::global()
        .payments
        .get_or_create(&crate::metrics::labels(&[
            ("status", outcome.status.as_str()),
            ("failure_code", failure),
        ]))
        .inc();
    Ok(true)
}

/// One line of the audit log. Never secrets, never full account numbers.
pub async fn audit(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    payment_id: &str,
    event: &str,
    detail: Value,
) -> Result<(), tokio_postgres::Error> {
    // In the payment's span (it carries the id); the detail may hold masked data only, and is
    // left to the audit table.
    tracing::info!(event, "payment step");
    tx.execute(
        "INSERT INTO audit_log (at, payment_id, event, detail) VALUES ($1, $2, $3, $4)",
        &[&now, &payment_id, &event, &detail],
    )
    .await
    .map(|_| ())
}
