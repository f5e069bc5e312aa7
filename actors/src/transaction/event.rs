//! The final status and its webhook event, in one statement (the outbox). The event body is the
//! payment object of gateway-http.md, built by `store::payments` (one definition for the API and
//! the webhooks).

use super::outbox::WebhookEvent;
use super::store::PaymentRow;
use super::writer::{NoticeTo, ToFinal};
use crate::domain::{FailureCode, PaymentStatus};
use crate::ids;
use crate::store::payments::{self, PaymentRecord};
use chrono::{DateTime, Utc};
use serde_json::json;

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

/// The record the payment will hold once `outcome` is written at `now`.
pub fn final_record(row: &PaymentRow, outcome: &Outcome, now: DateTime<Utc>) -> PaymentRecord {
    PaymentRecord {
        id: row.id.clone(),
        merchant_id: row.merchant_id.clone(),
        order_id: row.order_id.clone(),
        amount: row.amount,
        currency: row.currency,
        description: row.description.clone(),
        return_url: row.return_url.clone(),
        notify_url: row.notify_url.clone(),
        status: outcome.status,
        failure_code: outcome.failure_code,
        bank_response_code: outcome.bank_response_code.clone(),
        approval_code: outcome.approval_code.clone(),
        customer_id: row.customer_id.clone(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        updated_at: now,
        finished_at: Some(now),
    }
}

/// The write that moves the payment from one of `from` to the final `outcome`, with its webhook
/// event (the one payment object of the API), an audit line and, when `outcome_notice` says
/// where the customer is told, that notice's `queued` row. Written as one
/// statement (alone with [`ToFinal::write`], or batched by the `PaymentWriter`): a payment is
/// never final without its event. [`Finish::NotMoved`] when the payment was no longer in one of
/// `from` (someone else finished it): nothing is written. The caller calls [`finished`] once the
/// write has committed.
pub fn to_final(
    row: &PaymentRow,
    from: &[PaymentStatus],
    outcome: &Outcome,
    now: DateTime<Utc>,
    public_url: &url::Url,
    outcome_notice: Option<NoticeTo>,
) -> ToFinal {
    assert!(
        outcome.status.is_final(),
        "a final write takes a final status"
    );
    let record = final_record(row, outcome, now);
    let event_id = ids::new_id("evt");
    let event_type = outcome.event_type();
    let body = payments::event_body(
        &event_id,
        event_type,
        now,
        &record.to_api_object(public_url),
    );
    ToFinal {
        payment_id: row.id.clone(),
        at: now,
        status: outcome.status.as_str(),
        failure_code: outcome.failure_code.map(|c| c.as_str()),
        bank_response_code: outcome.bank_response_code.clone(),
        approval_code: outcome.approval_code.clone(),
        from: from.iter().map(|s| s.as_str()).collect(),
        event_id,
        event_type,
        body,
        detail: json!({
            "failure_code": outcome.failure_code.map(|c| c.as_str()),
            "bank_response_code": outcome.bank_response_code,
        }),
        outcome_notice,
        event_due_at: now,
    }
}

pub enum Finish {
    /// The payment is final; `notice_row` is its outcome SMS's `customer_messages` row, `event`
    /// its committed webhook event.
    Moved {
        notice_row: Option<i64>,
        event: Option<WebhookEvent>,
    },
    /// It was no longer in one of `from`: nothing was written.
    NotMoved,
}

/// The log line and the metric of a final status, once its transaction has committed.
pub fn finished(outcome: &Outcome) {
    log_step(outcome.status.as_str());
    let failure = outcome.failure_code.map(|c| c.as_str()).unwrap_or("");
    crate::metrics::global()
        .payments
        .get_or_create(&crate::metrics::labels(&[
            ("status", outcome.status.as_str()),
            ("failure_code", failure),
        ]))
        .inc();
}

/// The log's line for an audit line, in the payment's span (which carries its id); the detail
/// stays in the audit table.
pub fn log_step(event: &str) {
    tracing::info!(event, "payment step");
}
