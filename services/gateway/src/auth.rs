//! API keys (the key file and its rules live in `clawline_runtime::keys`): HTTP errors for them.

use axum::http::HeaderMap;
pub use clawline_runtime::keys::{ApiKeys, Caller};

use crate::error::ApiError;

/// The caller behind the request's key; 401 when the key is missing or unknown.
pub fn authenticate(keys: &ApiKeys, headers: &HeaderMap) -> Result<Caller, ApiError> {
    keys.authenticate(headers)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

/// 403 unless the caller holds an admin key.
pub trait RequireAdmin {
    fn require_admin(&self) -> Result<(), ApiError>;
}

impl RequireAdmin for Caller {
    fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this endpoint needs an admin API key".into(),
            ))
        }
    }
}
