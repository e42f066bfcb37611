//! One error type for every service's HTTP handlers, rendered as an OpenAI-style error body:
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or fails validation; `param` names the offending field.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The upstream answered with an error: its status and body go back to the client as they were.
    #[error("upstream returned {status}")]
    Upstream {
        status: StatusCode,
        body: axum::body::Bytes,
    },
    #[error("no upstream could be reached: {0}")]
    BadGateway(String),
    #[error("the upstream did not answer within {0:?}")]
    GatewayTimeout(std::time::Duration),
    #[error("{0}")]
    Unavailable(String),
    /// The caller's key sent more than its rate; it may try again after this long.
    #[error("rate limit exceeded for this API key; retry after {0:?}")]
    RateLimited(std::time::Duration),
    /// A clawline service behind the gateway (e.g. the reward scorer) did not answer in time.
    #[error("{0}")]
    ServiceTimeout(String),
    /// Something on our side broke; logged once, the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
    /// A service's own answer (e.g. a query that ran out of time or memory): its status, error
    /// type and message as they are.
    #[error("{message}")]
    Status {
        status: StatusCode,
        kind: &'static str,
        message: String,
    },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Upstream { status, .. } => *status,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout(_) | ApiError::ServiceTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Status { status, .. } => *status,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UnsupportedMediaType(_) => "invalid_request_error",
            ApiError::Unauthorized(_) => "authentication_error",
            ApiError::Forbidden(_) => "permission_error",
            ApiError::NotFound(_) => "not_found_error",
            ApiError::Upstream { .. } | ApiError::BadGateway(_) | ApiError::GatewayTimeout(_) => {
                "upstream_error"
            }
            ApiError::Unavailable(_) => "unavailable_error",
            ApiError::RateLimited(_) => "rate_limit_error",
            ApiError::ServiceTimeout(_) => "timeout_error",
            ApiError::Internal(_) => "internal_error",
            ApiError::Status { kind, .. } => kind,
        }
    }
}

/// The body OpenAI clients parse: `{"error": {...}}`.
pub fn error_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> serde_json::Value {
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::Upstream { status, body } => {
                // Pass the engine's error through untouched when it is JSON; wrap it otherwise.
                if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                    return (status, [("content-type", "application/json")], body).into_response();
                }
                let text = String::from_utf8_lossy(&body);
                let message = format!(
                    "upstream returned {status}: {}",
                    text.chars().take(500).collect::<String>()
                );
                (
                    status,
                    Json(error_body(&message, "upstream_error", None, None)),
                )
                    .into_response()
            }
            ApiError::RateLimited(wait) => {
                let message = "rate limit exceeded for this API key";
                let retry = wait.as_secs_f64().ceil().max(1.0).to_string();
                (
                    status,
                    [("retry-after", retry)],
                    Json(error_body(
                        message,
                        "rate_limit_error",
                        None,
                        Some("rate_limit_exceeded"),
                    )),
                )
                    .into_response()
            }
            ApiError::Internal(ref detail) => {
                tracing::error!(error = %detail, "internal error");
                (
                    status,
                    Json(error_body("internal error", "internal_error", None, None)),
                )
                    .into_response()
            }
            ref other => {
                let param = match other {
                    ApiError::BadRequest { param, .. } => param.as_deref(),
                    _ => None,
                };
                (
                    status,
                    Json(error_body(&other.to_string(), other.kind(), param, None)),
                )
                    .into_response()
            }
        }
    }
}

/// Turns axum's JSON extractor rejections into our error shape.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection::*;
        match rejection {
            MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
            }
            other => {
                if other.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit: 0 }
                } else {
                    ApiError::bad_request(format!("invalid JSON body: {}", other.body_text()))
                }
            }
        }
    }
}
