//! The OpenAPI 3 document of the merchant API, served at `/v1/openapi.json`. The schemas here
//! describe the wire format; the handlers in `merchant.rs` carry the paths.

use crate::http::error::{ErrorBody, ErrorDetail};
use crate::http::mtls::AuthenticatedMerchant;
use actix_web::HttpResponse;
use utoipa::OpenApi;

/// The body of `POST /v1/payments`. Unknown fields are refused with `422 invalid_request`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CreatePaymentRequest {
    /// 1..64 characters, unique per merchant.
    #[schema(example = "A-1001", min_length = 1, max_length = 64)]
    order_id: String,
    /// Minor units, 1..=999999999999.
    #[schema(example = 1234, minimum = 1, maximum = 999_999_999_999_i64)]
    amount: i64,
    /// ISO 4217 alpha code: CNY, USD or EUR.
    #[schema(example = "CNY")]
    currency: String,
    /// Shown to the customer; at most 255 characters.
    #[schema(example = "2 books", max_length = 255)]
    description: Option<String>,
    /// http or https URL the customer returns to.
    #[schema(example = "https://shop.example/return")]
    return_url: String,
    /// http or https URL that receives the signed webhooks.
    #[schema(example = "https://shop.example/hooks/payhub")]
    notify_url: String,
}

/// The payment object (`payments::PaymentObject` on the wire).
#[derive(utoipa::ToSchema)]
#[schema(as = PaymentObject)]
#[allow(dead_code)]
pub struct PaymentObjectSchema {
    #[schema(example = "pay_0123456789abcdef0123456789abcdef")]
    id: String,
    order_id: String,
    /// `awaiting_customer` → `awaiting_code` → `processing` → `succeeded` | `failed` | `expired`.
    #[schema(example = "awaiting_customer")]
    status: String,
    amount: i64,
    currency: String,
    description: String,
    /// `http.public_url` + `/pay/{id}`: send the customer here.
    pay_url: String,
    /// RFC 3339, UTC, whole seconds.
    created_at: String,
    expires_at: String,
    /// When failed: `authentication_failed`, `code_attempts_exceeded`, `code_expired`,
    /// `bank_declined` or `bank_unavailable`.
    failure_code: Option<String>,
    /// ISO 8583 field 39, where a bank answered.
    bank_response_code: Option<String>,
    /// ISO 8583 field 38, when succeeded.
    approval_code: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payhub merchant API",
        description = "Payments over HTTPS with a client certificate issued by the gateway's \
                       merchant CA (mTLS). Errors: {\"error\":{\"code\",\"message\",\"field\"?}}."
    ),
    paths(
        crate::http::merchant::create_payment,
        crate::http::merchant::get_payment,
        document
    ),
    components(schemas(CreatePaymentRequest, PaymentObjectSchema, ErrorBody, ErrorDetail)),
    tags((name = "payments", description = "Create and read payments"))
)]
pub struct MerchantApiDoc;

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        MerchantApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "payments",
    responses(
        (status = 200, description = "The OpenAPI 3 document of the merchant API"),
        (status = 401, description = "No acceptable client certificate (`unauthenticated`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable (`unavailable`)", body = ErrorBody),
    )
)]
pub async fn document(_merchant: AuthenticatedMerchant) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
}

pub use document as serve;

#[cfg(test)]
mod tests {
    #[test]
    fn document_lists_every_route_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(super::json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut listed = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                listed.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut routes: Vec<(String, String)> = crate::http::merchant::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        listed.sort();
        routes.sort();
        assert_eq!(listed, routes);
    }

    #[test]
    fn payment_object_schema_names_every_field_of_the_wire_object() {
        let doc: serde_json::Value = serde_json::from_str(super::json()).unwrap();
        let props = doc["components"]["schemas"]["PaymentObject"]["properties"]
            .as_object()
            .unwrap();
        for field in [
            "id",
            "order_id",
            "status",
            "amount",
            "currency",
            "description",
            "pay_url",
            "created_at",
            "expires_at",
            "failure_code",
            "bank_response_code",
            "approval_code",
        ] {
            assert!(props.contains_key(field), "{field}");
        }
    }
}
