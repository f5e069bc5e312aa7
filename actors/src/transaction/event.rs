//! The final status and its webhook event, in one transaction (the outbox).
//!
//! The event body carries the payment object of gateway-http.md. MERCHANT's
//! `store::payments::to_api_object` is the one definition of that object; until it lands here this
//! module builds the same fields from the row it has just written.

use crate::domain::{FailureCode, PaymentStatus};
use chrono::{DateTime, SecondsFormat, Utc};
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

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Moves the payment from one of `from` to the final `outcome`, and writes its webhook event and an
/// audit line, in `tx`. `Ok(false)` when the payment was no longer in one of `from` (someone else
/// finished it): nothing is written.
pub async fn finish(
    tx: &Transaction<'_>,
    payment_id: &str,
    from: &[PaymentStatus],
    outcome: &Outcome,
    now: DateTime<Utc>,
    public_url: &str,
) -> Result<bool, tokio_postgres::Error> {
    assert!(outcome.status.is_final(), "finish takes a final status");
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let row = tx
        .query_opt(
            "UPDATE payments SET status = $3, failure_code = $4, bank_response_code = $5,
                 approval_code = $6, finished_at = $2, updated_at = $2,
                 code_hash = NULL, code_expires_at = NULL
             WHERE id = $1 AND status = ANY($7)
             RETURNING id, merchant_id, order_id, status, amount_minor, currency, description,
                 created_at, expires_at, failure_code, bank_response_code, approval_code, notify_url",
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
    let Some(row) = row else {
        return Ok(false);
    };
    let object = payment_object(&row, public_url);
    let event_id = crate::ids::new_id("evt");
    let body = json!({
        "id": event_id,
        "type": outcome.event_type(),
        "created_at": rfc3339(now),
        "data": object,
    })
    .to_string();
    let merchant_id: String = row.get("merchant_id");
    let notify_url: String = row.get("notify_url");
    tx.execute(
        "INSERT INTO webhook_events (id, payment_id, merchant_id, event_type, body, notify_url,
             created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (payment_id, event_type) DO NOTHING",
        &[
            &event_id,
            &payment_id,
            &merchant_id,
            &outcome.event_type(),
            &body,
            &notify_url,
            &now,
        ],
    )
    .await?;
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
    tx.execute(
        "INSERT INTO audit_log (at, payment_id, event, detail) VALUES ($1, $2, $3, $4)",
        &[&now, &payment_id, &event, &detail],
    )
    .await
    .map(|_| ())
}

/// The payment object of gateway-http.md from a `payments` row.
pub fn payment_object(row: &tokio_postgres::Row, public_url: &str) -> Value {
    let id: String = row.get("id");
    let mut object = json!({
        "id": id,
        "order_id": row.get::<_, String>("order_id"),
        "status": row.get::<_, String>("status"),
        "amount": row.get::<_, i64>("amount_minor"),
        "currency": row.get::<_, String>("currency"),
        "description": row.get::<_, String>("description"),
        "pay_url": format!("{}/pay/{id}", public_url.trim_end_matches('/')),
        "created_at": rfc3339(row.get("created_at")),
        "expires_at": rfc3339(row.get("expires_at")),
    });
    for field in ["failure_code", "bank_response_code", "approval_code"] {
        if let Some(value) = row.get::<_, Option<String>>(field) {
            object[field] = Value::String(value);
        }
    }
    object
}
