//! The HTTP edge every service shares: the OpenAI-style error ([`ApiError`], an `IntoResponse`),
//! callers admitted by API key and rate ([`admit`]), admin-only endpoints ([`require_admin`]),
//! and request bodies read within a size cap ([`read_capped`]).

mod error;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

pub use error::{ApiError, error_body};

use crate::keys::{ApiKeys, Caller};
use crate::limits::RateLimiter;

/// The caller behind the request's key (401 without a valid one), within its rate (429 with
/// `Retry-After`).
pub fn admit(
    keys: &ApiKeys,
    limiter: &RateLimiter,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let caller = authenticate(keys, headers)?;
    limiter.check(&caller).map_err(|wait| {
        tracing::debug!(key = %caller.key_id, tenant = %caller.tenant, "rate limited");
        ApiError::RateLimited(wait)
    })?;
    Ok(caller)
}

/// The caller behind the request's key; 401 when the key is missing or unknown.
pub fn authenticate(keys: &ApiKeys, headers: &HeaderMap) -> Result<Caller, ApiError> {
    keys.authenticate(headers)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

/// 403 unless the caller holds an admin key.
pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this endpoint needs an admin API key".into(),
        ))
    }
}

/// The request's body, at most `limit` bytes (a larger one is a 413, refused before it is read
/// when its `Content-Length` says so).
pub async fn read_capped(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = ApiError::PayloadTooLarge { limit };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large);
    }
    let body = Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::bad_request(format!(
                "could not read the request body: {}",
                rejection.body_text()
            ))
        }
    })?;
    if body.len() > limit {
        return Err(too_large);
    }
    Ok(body)
}

/// Parses a JSON body; the error names the position and what was wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}
