//! The error shape of gateway-http.md: `{"error":{"code":"…","message":"…","field":"…"?}}`, with
//! the status each code answers with. Never HTML; bad input is a 4xx.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use payhub_actors::domain::FieldError;
use payhub_actors::store::StoreError;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `invalid_request`, `malformed_json`, `body_too_large`, `unauthenticated`, `not_found`,
    /// `method_not_allowed`, `idempotency_key_reused`, `order_exists`, `unavailable` or
    /// `internal`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, for `invalid_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer of the merchant API.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {}: {}", body.error.code, body.error.message)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code,
                    message: message.into(),
                    field: None,
                },
            },
        }
    }

    pub fn code(&self) -> &'static str {
        self.body.error.code
    }

    /// `422 invalid_request` naming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message);
        e.body.error.field = Some(field.to_string());
        e
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn body_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit_bytes} bytes"),
        )
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `408 request_timeout`: the request took longer than the listener's deadline.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request was not complete in time",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the gateway failed; the request may be retried with the same Idempotency-Key",
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.field, e.reason)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "merchant API: stored data is inconsistent");
                ApiError::internal()
            }
            _ => {
                tracing::warn!(error = %e, "merchant API: database unavailable");
                ApiError::unavailable("the gateway's database is unavailable; retry later")
            }
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::from(e).into()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("Retry-After", "1"));
        }
        response.json(&self.body)
    }
}

/// The default service: any path or method nobody serves gets the error shape, not HTML.
pub async fn no_route(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// A method a resource does not serve: the error shape, with the `Allow` header HTTP asks of a
/// 405 (`allow`: the methods the resource serves).
pub fn method_not_allowed(req: &actix_web::HttpRequest, allow: &'static str) -> HttpResponse {
    let mut res = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
    .error_response();
    res.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    res
}
