//! API keys (the key file and its rules live in `clawline_runtime::keys`): HTTP errors for them.

pub use clawline_runtime::keys::{ApiKeys, Caller};

use crate::error::ApiError;

pub use clawline_runtime::http::authenticate;

/// 403 unless the caller holds an admin key.
pub trait RequireAdmin {
    fn require_admin(&self) -> Result<(), ApiError>;
}

impl RequireAdmin for Caller {
    fn require_admin(&self) -> Result<(), ApiError> {
        clawline_runtime::http::require_admin(self)
    }
}
