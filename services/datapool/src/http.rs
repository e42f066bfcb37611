//! `POST /sql` behind the API keys: the body is the query (plain text, or JSON `{"sql": …}`);
//! the answer is JSON (`{"columns": [...], "rows": [...]}`) or, with
//! `Accept: application/vnd.apache.arrow.stream`, an Arrow IPC stream. A tenant's key sees only
//! that tenant's rows (and no `batches` / `weights` tables); an admin key sees everything. A key's
//! `rate=N` and `max_body=BYTES` hold here as on the gateway (429 with `Retry-After`, 413).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clawline_runtime::CancellationToken;
use clawline_runtime::keys::ApiKeys;
use clawline_runtime::limits::RateLimiter;
use serde_json::{Value, json};

use crate::sql::{Answer, Format, Scope, SqlEngine, SqlError, render};

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The largest query body a key without its own `max_body` may send.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

struct Ctx {
    engine: SqlEngine,
    keys: ApiKeys,
    /// Only keys with their own `rate=` are limited.
    limiter: RateLimiter,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: SqlEngine,
    keys: ApiKeys,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if keys.is_open() {
        tracing::warn!("no --api-keys: the SQL endpoint is open to anyone who can reach it");
    }
    let app = router(engine, keys);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

pub fn router(engine: SqlEngine, keys: ApiKeys) -> Router {
    let readable = keys.largest_max_body().unwrap_or(0).max(DEFAULT_MAX_BODY);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/sql", post(sql))
        .layer(axum::extract::DefaultBodyLimit::max(readable))
        .with_state(Arc::new(Ctx {
            engine,
            keys,
            limiter: RateLimiter::new(None),
        }))
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        ),
    )
        .into_response()
}

async fn sql(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match ctx.keys.authenticate(&headers) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                e.to_string(),
            );
        }
    };
    if let Err(wait) = ctx.limiter.check(&caller) {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("rate limit of {} exceeded", caller.key_id),
        );
        let secs = wait.as_secs_f64().ceil().max(1.0).to_string();
        if let Ok(v) = header::HeaderValue::from_str(&secs) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let limit = caller.max_body.unwrap_or(DEFAULT_MAX_BODY);
    if body.len() > limit {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body larger than {limit} bytes"),
        );
    }
    let text = String::from_utf8_lossy(&body);
    let query = if text.trim_start().starts_with('{') {
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => match v.get("sql").and_then(Value::as_str) {
                Some(q) => q.to_string(),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "JSON body needs a string `sql`".into(),
                    );
                }
            },
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    format!("invalid JSON body: {e}"),
                );
            }
        }
    } else {
        text.to_string()
    };
    if query.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "empty query".into(),
        );
    }
    let scope = if caller.admin {
        Scope::All
    } else {
        Scope::Tenant(caller.tenant.clone())
    };
    let answer = match ctx.engine.query(&query, &scope).await {
        Ok(a) => a,
        Err(e) => return sql_error(e),
    };
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(ARROW_STREAM));
    if wants_arrow {
        match arrow_ipc(&answer) {
            Ok(bytes) => ([(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response(),
            Err(e) => sql_error(e),
        }
    } else {
        match render(&answer, Format::Json) {
            Ok(rows) => {
                let rows: Value = serde_json::from_slice(&rows).unwrap_or(Value::Array(Vec::new()));
                let columns: Vec<Value> = answer
                    .schema
                    .fields()
                    .iter()
                    .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                    .collect();
                axum::Json(json!({"columns": columns, "rows": rows})).into_response()
            }
            Err(e) => sql_error(e),
        }
    }
}

fn sql_error(e: SqlError) -> Response {
    match e {
        SqlError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_request_error", m),
        e @ SqlError::Timeout(_) => {
            error(StatusCode::REQUEST_TIMEOUT, "query_timeout", e.to_string())
        }
        e @ SqlError::Memory(_) => error(
            StatusCode::INSUFFICIENT_STORAGE,
            "query_memory_limit",
            e.to_string(),
        ),
        SqlError::Internal(m) => {
            tracing::error!(error = %m, "query failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", m)
        }
    }
}

fn arrow_ipc(answer: &Answer) -> Result<Vec<u8>, SqlError> {
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &answer.schema)
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    for b in &answer.batches {
        w.write(b).map_err(|e| SqlError::Internal(e.to_string()))?;
    }
    w.finish().map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(out)
}
