//! Payments: the row the merchant API creates and reads, the **payment object** of
//! gateway-http.md (which webhooks and pages also show), creation with its idempotency record in
//! one statement, expiry, and the webhook event (outbox) written with a final status.

use super::StoreError;
use super::idempotency::{self, IdempotencyKey};
use super::merchants::is_unique_violation;
use crate::domain::{Amount, Currency, FailureCode, OrderId, PaymentStatus};
use crate::store::prepared::Prepared;
use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;

/// The columns `from_row` reads, in order.
const COLUMNS: &str = "id, merchant_id, order_id, amount_minor, currency, description, return_url, \
     notify_url, status, failure_code, bank_response_code, approval_code, customer_id, \
     created_at, expires_at, updated_at, finished_at";

/// Times in the API: RFC 3339, UTC, whole seconds (`2026-11-28T11:00:51Z`).
pub fn api_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A payment as the merchant asked for it, before it is stored.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub id: String,
    pub merchant_id: String,
    pub order_id: OrderId,
    pub amount: Amount,
    pub currency: Currency,
    pub description: String,
    pub return_url: url::Url,
    pub notify_url: url::Url,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A stored payment: what the merchant API, webhooks and pages show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: String,
    pub merchant_id: String,
    pub order_id: String,
    pub amount: Amount,
    pub currency: Currency,
    pub description: String,
    pub return_url: String,
    pub notify_url: String,
    pub status: PaymentStatus,
    pub failure_code: Option<FailureCode>,
    /// ISO 8583 field 39, where a bank answered.
    pub bank_response_code: Option<String>,
    /// ISO 8583 field 38, on success.
    pub approval_code: Option<String>,
    pub customer_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The payment object of gateway-http.md, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentObject {
    pub id: String,
    pub order_id: String,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: Currency,
    pub description: String,
    pub pay_url: String,
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<FailureCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank_response_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_code: Option<String>,
}

impl PaymentObject {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a payment object always serializes")
    }
}

/// `{public_url}/pay/{id}`, whether or not `public_url` ends with a slash.
pub fn pay_url(public_url: &url::Url, payment_id: &str) -> String {
    format!(
        "{}/pay/{payment_id}",
        public_url.as_str().trim_end_matches('/')
    )
}

impl PaymentRecord {
    /// The record `insert` will store for `new`.
    pub fn from_new(new: &NewPayment) -> Self {
        Self {
            id: new.id.clone(),
            merchant_id: new.merchant_id.clone(),
            order_id: new.order_id.as_str().to_string(),
            amount: new.amount,
            currency: new.currency,
            description: new.description.clone(),
            return_url: new.return_url.to_string(),
            notify_url: new.notify_url.to_string(),
            status: PaymentStatus::AwaitingCustomer,
            failure_code: None,
            bank_response_code: None,
            approval_code: None,
            customer_id: None,
            created_at: new.created_at,
            expires_at: new.expires_at,
            updated_at: new.created_at,
            finished_at: None,
        }
    }

    /// The payment object; `public_url` is the gateway's `http.public_url`.
    pub fn to_api_object(&self, public_url: &url::Url) -> PaymentObject {
        let succeeded = self.status == PaymentStatus::Succeeded;
        let failed = self.status == PaymentStatus::Failed;
        PaymentObject {
            id: self.id.clone(),
            order_id: self.order_id.clone(),
            status: self.status,
            amount: self.amount.minor(),
            currency: self.currency,
            description: self.description.clone(),
            pay_url: pay_url(public_url, &self.id),
            created_at: api_time(self.created_at),
            expires_at: api_time(self.expires_at),
            failure_code: self.failure_code.filter(|_| failed),
            bank_response_code: self
                .bank_response_code
                .clone()
                .filter(|_| failed || succeeded),
            approval_code: self.approval_code.clone().filter(|_| succeeded),
        }
    }

    fn from_row(r: &tokio_postgres::Row) -> Result<Self, StoreError> {
        let id: String = r.get(0);
        let corrupt = |what: &str| StoreError::Corrupt(format!("payment {id}: {what}"));
        let status: &str = r.get(8);
        let failure: Option<&str> = r.get(9);
        Ok(Self {
            merchant_id: r.get(1),
            order_id: r.get(2),
            amount: Amount::parse(r.get(3)).map_err(|_| corrupt("amount_minor"))?,
            currency: Currency::parse(r.get(4)).map_err(|_| corrupt("currency"))?,
            description: r.get(5),
            return_url: r.get(6),
            notify_url: r.get(7),
            status: PaymentStatus::parse(status).ok_or_else(|| corrupt("status"))?,
            failure_code: match failure {
                Some(f) => Some(FailureCode::parse(f).ok_or_else(|| corrupt("failure_code"))?),
                None => None,
            },
            bank_response_code: r.get(10),
            approval_code: r.get(11),
            customer_id: r.get(12),
            created_at: r.get(13),
            expires_at: r.get(14),
            updated_at: r.get(15),
            finished_at: r.get(16),
            id,
        })
    }
}

/// The payment with this id, whoever created it.
pub async fn load(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<PaymentRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE id = $1");
    match client.query_opt_cached(&sql, &[&id]).await? {
        Some(row) => Ok(Some(PaymentRecord::from_row(&row)?)),
        None => Ok(None),
    }
}

/// The payment with this id if `merchant_id` created it.
pub async fn load_for_merchant(
    client: &impl GenericClient,
    merchant_id: &str,
    id: &str,
) -> Result<Option<PaymentRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE id = $1 AND merchant_id = $2");
    match client.query_opt_cached(&sql, &[&id, &merchant_id]).await? {
        Some(row) => Ok(Some(PaymentRecord::from_row(&row)?)),
        None => Ok(None),
    }
}

/// The id of the merchant's payment for `order_id`, if there is one.
pub async fn id_for_order(
    client: &impl GenericClient,
    merchant_id: &str,
    order_id: &str,
) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt_cached(
            "SELECT id FROM payments WHERE merchant_id = $1 AND order_id = $2",
            &[&merchant_id, &order_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// An idempotency key with the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct KeyedRequest {
    pub key: IdempotencyKey,
    pub request_hash: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored; answer 201 with the body that was given.
    Created,
    /// The key was used before for this request: answer with its first response.
    Replay { status: u16, body: String },
    /// The key was used before for another request.
    KeyReused,
    /// The merchant already has a payment with this order id (under another key or none).
    OrderExists,
}

const INSERT_VALUES: &str = "INSERT INTO payments (id, merchant_id, order_id, amount_minor, \
     currency, description, return_url, notify_url, status, created_at, expires_at, updated_at)";

/// How often a create retries after finding a key whose replay window has passed.
const STALE_KEY_RETRIES_MAX: usize = 2;

/// Stores `new`, with its idempotency record when `keyed`, atomically. `body` is the 201 response
/// body that a replay will repeat. A payment never exists without its key record, nor the reverse.
pub async fn create(
    client: &impl GenericClient,
    new: &NewPayment,
    keyed: Option<&KeyedRequest>,
    body: &str,
) -> Result<CreateOutcome, StoreError> {
    let Some(keyed) = keyed else {
        return insert_unkeyed(client, new).await;
    };
    for _ in 0..=STALE_KEY_RETRIES_MAX {
        match insert_keyed(client, new, keyed, body).await? {
            Some(outcome) => return Ok(outcome),
            None => {
                let stored = idempotency::find(client, &new.merchant_id, &keyed.key).await?;
                match stored {
                    Some(s) if !s.is_fresh(new.created_at) => {
                        idempotency::delete_stale(
                            client,
                            &new.merchant_id,
                            &keyed.key,
                            s.created_at,
                        )
                        .await?;
                    }
                    Some(s) if s.request_hash == keyed.request_hash => {
                        return Ok(CreateOutcome::Replay {
                            status: s.status,
                            body: s.body,
                        });
                    }
                    Some(_) => return Ok(CreateOutcome::KeyReused),
                    // Purged between the insert and the read: try again.
                    None => {}
                }
            }
        }
    }
    Err(StoreError::Corrupt(format!(
        "idempotency key for {} kept changing",
        new.merchant_id
    )))
}

/// The ten payment columns `INSERT_VALUES` names (after `status`'s literal), as parameters $1..$10.
struct PaymentValues<'a> {
    new: &'a NewPayment,
    order_id: &'a str,
    amount_minor: i64,
    currency: &'static str,
    return_url: &'a str,
    notify_url: &'a str,
}

impl<'a> PaymentValues<'a> {
    fn of(new: &'a NewPayment) -> Self {
        Self {
            new,
            order_id: new.order_id.as_str(),
            amount_minor: new.amount.minor(),
            currency: new.currency.alpha(),
            return_url: new.return_url.as_str(),
            notify_url: new.notify_url.as_str(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.new.id,
            &self.new.merchant_id,
            &self.order_id,
            &self.amount_minor,
            &self.currency,
            &self.new.description,
            &self.return_url,
            &self.notify_url,
            &self.new.created_at,
            &self.new.expires_at,
        ]
    }
}

fn order_exists_or(e: tokio_postgres::Error) -> Result<CreateOutcome, StoreError> {
    if is_unique_violation(&e, "payments_merchant_id_order_id_key") {
        Ok(CreateOutcome::OrderExists)
    } else {
        Err(e.into())
    }
}

async fn insert_unkeyed(
    client: &impl GenericClient,
    new: &NewPayment,
) -> Result<CreateOutcome, StoreError> {
    let sql = format!(
        "{INSERT_VALUES} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'awaiting_customer', $9, $10, $9)"
    );
    let values = PaymentValues::of(new);
    let result = client.execute_cached(&sql, &values.params()).await;
    match result {
        Ok(_) => Ok(CreateOutcome::Created),
        Err(e) => order_exists_or(e),
    }
}

/// One statement, so one transaction and one round trip: the key row first (a concurrent twin
/// waits on it, then finds it), the payment only if the key row was new. `None`: the key exists.
async fn insert_keyed(
    client: &impl GenericClient,
    new: &NewPayment,
    keyed: &KeyedRequest,
    body: &str,
) -> Result<Option<CreateOutcome>, StoreError> {
    let sql = format!(
        "WITH key_row AS (INSERT INTO idempotency_keys (merchant_id, key, request_hash, \
             response_status, response_body, created_at) VALUES ($2, $11, $12, 201, $13, $9) \
             ON CONFLICT (merchant_id, key) DO NOTHING RETURNING 1) \
             {INSERT_VALUES} SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'awaiting_customer', $9, $10, $9 \
             WHERE EXISTS (SELECT 1 FROM key_row)"
    );
    let values = PaymentValues::of(new);
    let (key, hash) = (keyed.key.as_str(), &keyed.request_hash[..]);
    let mut params = values.params().to_vec();
    params.extend_from_slice(&[&key, &hash, &body]);
    let result = client.execute_cached(&sql, &params).await;
    match result {
        Ok(1) => Ok(Some(CreateOutcome::Created)),
        Ok(_) => Ok(None),
        Err(e) => order_exists_or(e).map(Some),
    }
}

/// The event JSON of gateway-http.md: `{"id","type","created_at","data":{payment object}}`.
pub fn event_body(
    event_id: &str,
    event_type: &str,
    created_at: DateTime<Utc>,
    data: &PaymentObject,
) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
        created_at: String,
        data: &'a PaymentObject,
    }
    serde_json::to_string(&Event {
        id: event_id,
        event_type,
        created_at: api_time(created_at),
        data,
    })
    .expect("an event always serializes")
}

/// Writes the webhook event of each of `payments` (final, each with its event type) in one
/// statement.
async fn insert_final_events(
    client: &impl GenericClient,
    payments: &[PaymentRecord],
    public_url: &url::Url,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if payments.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(payments.len());
    let mut types = Vec::with_capacity(payments.len());
    let mut bodies = Vec::with_capacity(payments.len());
    for payment in payments {
        assert!(payment.status.is_final(), "webhooks are for final statuses");
        let event_id = crate::ids::new_id("evt");
        let event_type = format!("payment.{}", payment.status.as_str());
        bodies.push(event_body(
            &event_id,
            &event_type,
            now,
            &payment.to_api_object(public_url),
        ));
        ids.push(event_id);
        types.push(event_type);
    }
    let payment_ids: Vec<&str> = payments.iter().map(|p| p.id.as_str()).collect();
    let merchants: Vec<&str> = payments.iter().map(|p| p.merchant_id.as_str()).collect();
    let notify_urls: Vec<&str> = payments.iter().map(|p| p.notify_url.as_str()).collect();
    client
        .execute_cached(
            "INSERT INTO webhook_events (id, payment_id, merchant_id, event_type, body, notify_url, \
             created_at, next_attempt_at) \
             SELECT e.id, e.payment_id, e.merchant_id, e.event_type, e.body, e.notify_url, $7, $7 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
             AS e(id, payment_id, merchant_id, event_type, body, notify_url)",
            &[&ids, &payment_ids, &merchants, &types, &bodies, &notify_urls, &now],
        )
        .await?;
    Ok(())
}

/// The sweep's audit detail: the actors' own (no failure, no bank code), and who expired it.
const SWEEP_AUDIT_DETAIL: &str =
    r#"{"failure_code": null, "bank_response_code": null, "expired_by": "expiry_sweep"}"#;

/// Marks up to `batch_max` payments still waiting for the customer past their `expires_at` as
/// `expired`, each with its `payment.expired` event and audit line, in one transaction; a code
/// issued is forgotten, as the actors' own final write forgets it. A payment waiting for its code
/// is taken only if it expired before `awaiting_code_before`: until then it is its actor's, which
/// also tells the customer over the channel the code went by (this sweep does not: it runs where
/// no actor took the payment). Payments already `processing` are left to the bank's answer.
/// Returns the payments expired.
pub async fn expire_due(
    client: &mut deadpool_postgres::Client,
    now: DateTime<Utc>,
    awaiting_code_before: DateTime<Utc>,
    batch_max: i64,
    public_url: &url::Url,
) -> Result<Vec<PaymentRecord>, StoreError> {
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            &format!(
                "WITH due AS (SELECT p.id FROM payments_open o JOIN payments p ON p.id = o.payment_id \
                 WHERE o.expires_at <= $1 AND (p.status = 'awaiting_customer' \
                     OR (p.status = 'awaiting_code' AND o.expires_at <= $3)) \
                 ORDER BY o.expires_at LIMIT $2 FOR UPDATE OF p SKIP LOCKED), \
                 moved AS (UPDATE payments p SET status = 'expired', updated_at = $1, \
                     finished_at = $1, code_hash = NULL, code_expires_at = NULL \
                 FROM due WHERE p.id = due.id RETURNING {}), \
                 audit AS (INSERT INTO audit_log (at, payment_id, event, detail) \
                     SELECT $1, id, 'expired', '{}'::jsonb FROM moved) \
                 SELECT {COLUMNS} FROM moved",
                COLUMNS
                    .split(", ")
                    .map(|c| format!("p.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", "),
                SWEEP_AUDIT_DETAIL,
            ),
            &[&now, &batch_max, &awaiting_code_before],
        )
        .await?;
    let expired = rows
        .iter()
        .map(PaymentRecord::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    // One statement for the events: the payments' locks are held until the commit.
    insert_final_events(&tx, &expired, public_url, now).await?;
    tx.commit().await?;
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: PaymentStatus) -> PaymentRecord {
        let t = DateTime::parse_from_rfc3339("2026-11-28T11:00:51.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        PaymentRecord {
            id: "pay_1".into(),
            merchant_id: "mer_1".into(),
            order_id: "A-1001".into(),
            amount: Amount::parse(1234).unwrap(),
            currency: Currency::Cny,
            description: "2 books".into(),
            return_url: "https://shop.example/return".into(),
            notify_url: "https://shop.example/hooks".into(),
            status,
            failure_code: Some(FailureCode::BankDeclined),
            bank_response_code: Some("51".into()),
            approval_code: Some("123456".into()),
            customer_id: None,
            created_at: t,
            expires_at: t + chrono::Duration::minutes(15),
            updated_at: t,
            finished_at: None,
        }
    }

    #[test]
    fn payment_object_matches_the_contract() {
        let url = url::Url::parse("https://gateway.example/").unwrap();
        let json: serde_json::Value = serde_json::from_str(
            &record(PaymentStatus::AwaitingCustomer)
                .to_api_object(&url)
                .to_json(),
        )
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id":"pay_1","order_id":"A-1001","status":"awaiting_customer",
                "amount":1234,"currency":"CNY","description":"2 books",
                "pay_url":"https://gateway.example/pay/pay_1",
                "created_at":"2026-11-28T11:00:51Z","expires_at":"2026-11-28T11:15:51Z"})
        );
        let failed = record(PaymentStatus::Failed).to_api_object(&url);
        assert_eq!(failed.failure_code, Some(FailureCode::BankDeclined));
        assert_eq!(failed.bank_response_code.as_deref(), Some("51"));
        assert_eq!(failed.approval_code, None);
        let ok = record(PaymentStatus::Succeeded).to_api_object(&url);
        assert_eq!(ok.failure_code, None);
        assert_eq!(ok.approval_code.as_deref(), Some("123456"));
    }

    #[test]
    fn event_body_wraps_the_object() {
        let url = url::Url::parse("https://g.example").unwrap();
        let p = record(PaymentStatus::Expired);
        let body = event_body(
            "evt_1",
            "payment.expired",
            p.created_at,
            &p.to_api_object(&url),
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "payment.expired");
        assert_eq!(v["data"]["status"], "expired");
        assert_eq!(v["data"]["pay_url"], "https://g.example/pay/pay_1");
    }
}
