//! The merchant API of gateway-http.md: `POST /v1/payments`, `GET /v1/payments/{id}`.
//!
//! Request bodies are read under `http.body_max_bytes` and parsed field by field into the domain
//! newtypes, so every refusal names its field. **Unknown fields are refused** (`422
//! invalid_request` naming the field): a misspelt `notify_url` must not silently create a payment
//! whose outcome nobody hears about. The `Content-Type` is not checked: the body is JSON whatever
//! it says (`curl -d` sends JSON as a form), and a body that is not gets `400 malformed_json`.
//! The cost: a web page could make a browser that holds a merchant's certificate post a JSON body
//! as `text/plain` without a CORS preflight, and create a payment it cannot read. No money moves
//! without the customer's password and code, and merchant certificates belong on servers.

use crate::http::error::{ApiError, ErrorBody};
use crate::http::mtls::AuthenticatedMerchant;
use crate::http::openapi::{self, CreatePaymentRequest, PaymentObjectSchema};
use crate::webhooks::destinations;
use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use payhub_actors::clock::SharedClock;
use payhub_actors::domain::{Amount, Currency, OrderId};
use payhub_actors::metrics::{global, labels};
use payhub_actors::store::create_batch::CreateBatcher;
use payhub_actors::store::idempotency::{self, IdempotencyKey};
use payhub_actors::store::payments::{
    self, CreateOutcome, KeyedRequest, NewPayment, PaymentRecord,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const PAYMENTS_PATH: &str = "/v1/payments";
pub const PAYMENT_PATH: &str = "/v1/payments/{id}";
pub const OPENAPI_PATH: &str = "/v1/openapi.json";
/// Every route of the merchant API (method, path); the OpenAPI document lists each.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", PAYMENTS_PATH),
    ("GET", PAYMENT_PATH),
    ("GET", OPENAPI_PATH),
];

/// Longest description, return and notify URL accepted, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 255;
pub const URL_MAX_CHARS: usize = 2048;

/// What the merchant handlers share.
#[derive(Clone)]
pub struct MerchantApi {
    pub public_url: url::Url,
    pub payment_lifetime_s: u64,
    pub body_max_bytes: usize,
    pub allow_private_notify_urls: bool,
    pub clock: SharedClock,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::error::method_not_allowed;
    // Merchants only: anyone else is told 401 before which methods a resource serves.
    let only = |allow: &'static str| {
        web::to(
            move |_merchant: AuthenticatedMerchant, req: actix_web::HttpRequest| async move {
                method_not_allowed(&req, allow)
            },
        )
    };
    cfg.service(
        web::resource(PAYMENTS_PATH)
            .route(web::post().to(create_payment))
            .default_service(only("POST")),
    )
    .service(
        web::resource(PAYMENT_PATH)
            .route(web::get().to(get_payment))
            .default_service(only("GET")),
    )
    .service(
        web::resource(OPENAPI_PATH)
            .route(web::get().to(openapi::serve))
            .default_service(only("GET")),
    );
}

/// The answer to a path nothing serves: under `/v1`, the merchant API's, a 401 to anyone but a
/// merchant, then a 404; elsewhere (the customer pages' side) a 404.
pub async fn no_route(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    if path == "/v1" || path.starts_with("/v1/") {
        <AuthenticatedMerchant as actix_web::FromRequest>::extract(&req).await?;
    }
    crate::http::error::no_route(req).await
}

/// A create request, parsed.
#[derive(Debug, Clone)]
pub struct CreatePayment {
    pub order_id: OrderId,
    pub amount: Amount,
    pub currency: Currency,
    pub description: String,
    pub return_url: url::Url,
    pub notify_url: url::Url,
}

const FIELDS: [&str; 6] = [
    "order_id",
    "amount",
    "currency",
    "description",
    "return_url",
    "notify_url",
];

fn required<'a>(map: &'a Map<String, Value>, field: &str) -> Result<&'a Value, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid(field, format!("{field} is required"))),
        Some(v) => Ok(v),
    }
}

fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    v.as_str()
        .ok_or_else(|| ApiError::invalid(field, format!("{field} must be a string")))
}

fn http_url(v: &Value, field: &str) -> Result<url::Url, ApiError> {
    let s = string(v, field)?;
    let bad = || ApiError::invalid(field, format!("{field} must be an http or https URL"));
    if s.chars().count() > URL_MAX_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be at most {URL_MAX_CHARS} characters"),
        ));
    }
    let url = url::Url::parse(s).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad());
    }
    Ok(url)
}

/// Parses a create body; also returns its canonical form (sorted keys, no whitespace) for the
/// idempotency hash.
pub fn parse_create(body: &[u8]) -> Result<(CreatePayment, String), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed_json(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::malformed_json("the body must be a JSON object"));
    };
    if let Some(key) = super::repeated_key::repeated_key(body) {
        return Err(ApiError::invalid(
            &key,
            format!("`{key}` is given more than once"),
        ));
    }
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown,
            format!(
                "unknown field `{unknown}`; fields are {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let amount = required(&map, "amount")?;
    let amount = amount
        .as_i64()
        .ok_or_else(|| ApiError::invalid("amount", "amount must be an integer (minor units)"))?;
    let description = match map.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(v) => {
            let d = string(v, "description")?;
            if d.chars().count() > DESCRIPTION_MAX_CHARS || d.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    "description",
                    "description must be at most 255 characters, without control characters",
                ));
            }
            d.to_string()
        }
    };
    let parsed = CreatePayment {
        order_id: OrderId::parse(string(required(&map, "order_id")?, "order_id")?)?,
        amount: Amount::parse(amount)?,
        currency: Currency::parse(string(required(&map, "currency")?, "currency")?)?,
        description,
        return_url: http_url(required(&map, "return_url")?, "return_url")?,
        notify_url: http_url(required(&map, "notify_url")?, "notify_url")?,
    };
    let sorted: BTreeMap<&String, &Value> = map.iter().filter(|(_, v)| !v.is_null()).collect();
    let canonical = serde_json::to_string(&sorted).map_err(|_| ApiError::internal())?;
    Ok((parsed, canonical))
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    // Two keys (a proxy adding its own, say) would leave the retry's key to chance.
    if req.headers().get_all("Idempotency-Key").nth(1).is_some() {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "Idempotency-Key must be given once",
        ));
    }
    match req.headers().get("Idempotency-Key") {
        None => Ok(None),
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ApiError::invalid(
                    "Idempotency-Key",
                    "must be 1 to 255 printable ASCII characters",
                )
            })?;
            Ok(Some(IdempotencyKey::parse(text)?))
        }
    }
}

/// Reads the body, refusing it as soon as it passes `limit_bytes` (or announces that it will).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit_bytes: usize,
) -> Result<web::BytesMut, ApiError> {
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit_bytes as u64) {
        return Err(ApiError::body_too_large(limit_bytes));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => ApiError::body_too_large(limit_bytes),
            other => ApiError::malformed_json(format!("the body could not be read: {other}")),
        })?;
        if body.len() + chunk.len() > limit_bytes {
            return Err(ApiError::body_too_large(limit_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// Creates a payment.
#[utoipa::path(
    post,
    path = "/v1/payments",
    tag = "payments",
    request_body = CreatePaymentRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1..255 printable characters; the first response is replayed for 24 h")),
    responses(
        (status = 201, description = "Created (or the replay of the first response)", body = PaymentObjectSchema),
        (status = 400, description = "The body is not a JSON object (`malformed_json`)", body = ErrorBody),
        (status = 401, description = "No acceptable client certificate (`unauthenticated`)", body = ErrorBody),
        (status = 409, description = "The order id has a payment under another key (`order_exists`)", body = ErrorBody),
        (status = 413, description = "The body is larger than `http.body_max_bytes` (`body_too_large`)", body = ErrorBody),
        (status = 422, description = "A field is invalid or unknown (`invalid_request`), or the key was used for another body (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry with the same key (`unavailable`)", body = ErrorBody),
    )
)]
pub async fn create_payment(
    merchant: AuthenticatedMerchant,
    req: HttpRequest,
    payload: web::Payload,
    api: web::Data<MerchantApi>,
    writer: web::Data<CreateBatcher>,
    pool: web::Data<deadpool_postgres::Pool>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let body = read_body(&req, payload, api.body_max_bytes).await?;
    let (input, canonical) = parse_create(&body)?;
    let now = api.clock.now();
    if !api.allow_private_notify_urls
        && let Some(refused) = destinations::written_host_refusal(&input.notify_url)
        && !replayable(&pool, &merchant.id, key.as_ref(), now).await
    {
        return Err(ApiError::invalid(
            "notify_url",
            format!(
                "notify_url must lead to a public address: {refused} \
                 (the gateway's webhooks.allow_private_destinations is false)"
            ),
        ));
    }
    let lifetime_s = i64::try_from(api.payment_lifetime_s).unwrap_or(i64::MAX / 2);
    let new = NewPayment {
        id: payhub_actors::ids::new_id("pay"),
        merchant_id: merchant.id.clone(),
        order_id: input.order_id,
        amount: input.amount,
        currency: input.currency,
        description: input.description,
        return_url: input.return_url,
        notify_url: input.notify_url,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(lifetime_s),
    };
    let created_body = PaymentRecord::from_new(&new)
        .to_api_object(&api.public_url)
        .to_json();
    let keyed = key.map(|key| KeyedRequest {
        key,
        request_hash: idempotency::request_hash("POST", PAYMENTS_PATH, &canonical),
    });
    let outcome = writer
        .create(new.clone(), keyed, created_body.clone())
        .await?;
    match outcome {
        CreateOutcome::Created => {
            global()
                .payments
                .get_or_create(&labels(&[("status", "awaiting_customer")]))
                .inc();
            tracing::debug!(payment_id = %new.id, merchant_id = %merchant.id, "payment created");
            Ok(json_response(StatusCode::CREATED, created_body))
        }
        CreateOutcome::Replay { status, body } => {
            let status = StatusCode::from_u16(status).map_err(|_| ApiError::internal())?;
            let mut response = json_response(status, body);
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
            Ok(response)
        }
        CreateOutcome::KeyReused => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )),
        CreateOutcome::OrderExists => Err(order_exists(&pool, &new).await),
    }
}

/// Whether `key` has a first response to replay: a retry of a request accepted before the
/// operator refused private `notify_url`s still gets it.
async fn replayable(
    pool: &deadpool_postgres::Pool,
    merchant_id: &str,
    key: Option<&IdempotencyKey>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(key) = key else { return false };
    let Ok(client) = pool.get().await else {
        return false;
    };
    let stored = idempotency::find(&client, merchant_id, key).await;
    stored.ok().flatten().is_some_and(|s| s.is_fresh(now))
}

/// `409 order_exists`, naming the order's payment when it can be read: a merchant whose create
/// was answered `unavailable` but committed can then find it.
async fn order_exists(pool: &deadpool_postgres::Pool, new: &NewPayment) -> ApiError {
    let order_id = new.order_id.as_str();
    let existing = match pool.get().await {
        Ok(client) => payments::id_for_order(&client, &new.merchant_id, order_id)
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    let message = match existing {
        Some(id) => format!("a payment for order_id `{order_id}` already exists: `{id}`"),
        None => format!("a payment for order_id `{order_id}` already exists"),
    };
    ApiError::new(StatusCode::CONFLICT, "order_exists", message)
}

/// Reads a payment; only the merchant that created it sees it.
#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    tag = "payments",
    params(("id" = String, Path, description = "The payment id (`pay_…`)")),
    responses(
        (status = 200, description = "The payment object", body = PaymentObjectSchema),
        (status = 401, description = "No acceptable client certificate (`unauthenticated`)", body = ErrorBody),
        (status = 404, description = "No such payment for this merchant (`not_found`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable (`unavailable`)", body = ErrorBody),
    )
)]
pub async fn get_payment(
    merchant: AuthenticatedMerchant,
    id: web::Path<String>,
    api: web::Data<MerchantApi>,
    pool: web::Data<deadpool_postgres::Pool>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found(format!("no payment `{id}` for this merchant"));
    if !payhub_actors::ids::is_payment_id(&id) {
        return Err(not_found());
    }
    let client = pool.get().await?;
    let payment = payments::load_for_merchant(&client, &merchant.id, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(json_response(
        StatusCode::OK,
        payment.to_api_object(&api.public_url).to_json(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"order_id":"A-1001","amount":1234,"currency":"CNY","description":"2 books",
        "return_url":"https://shop.example/return","notify_url":"https://shop.example/hooks/payhub"}"#;

    fn field_of(body: &str) -> (StatusCode, &'static str, Option<String>) {
        let e = parse_create(body.as_bytes()).unwrap_err();
        (e.status, e.code(), e.body.error.field)
    }

    #[test]
    fn a_field_given_twice_is_refused_naming_it() {
        let twice = GOOD.replace("\"amount\":1234", "\"amount\":1,\"amount\":1234");
        assert_ne!(twice, GOOD);
        assert_eq!(
            field_of(&twice),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                Some("amount".into())
            )
        );
    }

    #[test]
    fn parses_the_example_and_canonicalises_key_order() {
        let (p, canon) = parse_create(GOOD.as_bytes()).unwrap();
        assert_eq!(p.amount.minor(), 1234);
        let reordered = r#"{"notify_url":"https://shop.example/hooks/payhub","amount":1234,
            "order_id":"A-1001","currency":"CNY","description":"2 books",
            "return_url":"https://shop.example/return"}"#;
        assert_eq!(parse_create(reordered.as_bytes()).unwrap().1, canon);
    }

    #[test]
    fn each_bad_field_is_named() {
        let swap = |from: &str, to: &str| GOOD.replace(from, to);
        let cases = [
            (swap("1234", "0"), "amount"),
            (swap("1234", "\"1234\""), "amount"),
            (swap("1234", "12.5"), "amount"),
            (swap("1234", "1000000000000"), "amount"),
            (swap("\"CNY\"", "\"XYZ\""), "currency"),
            (swap("\"A-1001\"", "\"\""), "order_id"),
            (
                swap("\"A-1001\"", &format!("\"{}\"", "x".repeat(65))),
                "order_id",
            ),
            (
                swap("https://shop.example/return", "ftp://x/y"),
                "return_url",
            ),
            (
                swap("https://shop.example/hooks/payhub", "not a url"),
                "notify_url",
            ),
            (swap("\"2 books\"", "7"), "description"),
            (swap("\"order_id\"", "\"orderid\""), "orderid"),
            (swap("\"currency\":\"CNY\",", ""), "currency"),
        ];
        for (body, field) in cases {
            let (status, code, named) = field_of(&body);
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(code, "invalid_request");
            assert_eq!(named.as_deref(), Some(field), "{body}");
        }
    }

    #[test]
    fn malformed_bodies_are_400() {
        for body in ["", "{", "[1]", "null", "{\"a\":}"] {
            let (status, code, _) = field_of(body);
            assert_eq!(
                (status, code),
                (StatusCode::BAD_REQUEST, "malformed_json"),
                "{body}"
            );
        }
    }
}
