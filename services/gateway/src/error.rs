//! The gateway's HTTP errors: the shared OpenAI-style error of every service's HTTP edge.

pub use clawline_runtime::http::{ApiError, error_body};
