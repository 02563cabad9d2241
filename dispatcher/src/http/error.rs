//! API errors: every error returns JSON `{"error": {"code", "message"}}` with a status that
//! says whose fault it is.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use followup_core::ids::TenantId;
use followup_core::store::StoreError;
use serde_json::json;

/// Parses the tenant id of a request path, quoting the text that is not one.
pub fn tenant_in_path(text: &str) -> Result<TenantId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid tenant id {text:?} in the path")))
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The request does not fit the engine's current state, such as a clock run on an engine
    /// under the system clock.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    /// A rate limit was reached; the response carries `Retry-After`.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_seconds: u64 },
    /// The store could not be reached; the request may succeed when retried.
    #[error("the store is unavailable; nothing of this request was stored, retry later")]
    StoreUnavailable,
    /// A provider the request depends on (Stripe) failed or timed out.
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::StoreUnavailable => "store_unavailable",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        // A store that is down fails every request; one line per kind every 30 s is enough.
        let kind = match &error {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Conflict(_) => "conflict",
            StoreError::Fenced { .. } => "fenced",
            StoreError::Crypto(_) => "crypto",
        };
        if let Some(suppressed) =
            crate::telemetry::repeated_errors().allow(&format!("api store error {kind}"))
        {
            tracing::error!(%error, suppressed, "store error while serving a request");
        }
        // The cause names the database's address, which is the operator's business only.
        match error {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{error:#}"), "error while serving a request");
        ApiError::Internal(format!("{error:#}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::TooManyRequests { retry_after_seconds, .. } = self {
            response.insert_header((
                actix_web::http::header::RETRY_AFTER,
                retry_after_seconds.to_string(),
            ));
        }
        response.json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}

/// Responds to a path that matches no route, distinct from a 404 for a missing record so
/// that tests can tell an unknown route from an unknown id.
pub async fn route_not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": {"code": "route_not_found", "message": "no such endpoint; see docs/openapi.yaml"}
    }))
}
