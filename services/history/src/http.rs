//! `POST /sql`, `GET /explain/{step_id}` and `GET /diagnosis` (see `explain`), behind the API
//! keys. `POST /sql`: the body is the query (plain text, or JSON `{"sql": …}`);
//! the answer is JSON (`{"columns": [...], "rows": [...]}`) or, with
//! `Accept: application/vnd.apache.arrow.stream`, an Arrow IPC stream. A tenant's key sees only
//! that tenant's rows (and no `batches` / `weights` tables); an admin key sees everything. A key's
//! `rate=N` and `max_body=BYTES` hold here as on the gateway (429 with `Retry-After`, 413).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clawline_runtime::CancellationToken;
use clawline_runtime::http::ApiError;
use clawline_runtime::keys::{ApiKeys, Caller};
use clawline_runtime::limits::RateLimiter;
use serde_json::{Value, json};

use crate::explain::{Explainer, text};
use crate::sql::{Answer, Format, Scope, SqlEngine, SqlError, render};

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The largest query body a key without its own `max_body` may send.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

struct Ctx {
    engine: Arc<SqlEngine>,
    explainer: Explainer,
    keys: ApiKeys,
    /// Only keys with their own `rate=` are limited.
    limiter: RateLimiter,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: impl Into<Arc<SqlEngine>>,
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

pub fn router(engine: impl Into<Arc<SqlEngine>>, keys: ApiKeys) -> Router {
    let engine = engine.into();
    let readable = keys.largest_max_body().unwrap_or(0).max(DEFAULT_MAX_BODY);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/sql", post(sql))
        .route("/explain/{step_id}", get(explain_step))
        .route("/diagnosis", get(diagnosis))
        .layer(axum::extract::DefaultBodyLimit::max(readable))
        .with_state(Arc::new(Ctx {
            explainer: Explainer::new(engine.clone()),
            engine,
            keys,
            limiter: RateLimiter::new(None),
        }))
}

/// The caller behind the request's key (401 without a valid one), within its rate (429).
fn admit(ctx: &Ctx, headers: &HeaderMap) -> Result<Caller, ApiError> {
    clawline_runtime::http::admit(&ctx.keys, &ctx.limiter, headers)
}

fn scope_of(caller: &Caller) -> Scope {
    if caller.admin {
        Scope::All
    } else {
        Scope::Tenant(caller.tenant.clone())
    }
}

/// Whether the client asked for text (`Accept: text/plain`) rather than JSON.
fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/plain"))
}

/// `GET /explain/{step_id}`: the step's timeline (404 for an unknown step or another tenant's).
async fn explain_step(
    State(ctx): State<Arc<Ctx>>,
    Path(step_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = admit(&ctx, &headers)?;
    Ok(
        match ctx.explainer.step(&step_id, &scope_of(&caller)).await {
            Ok(e) if wants_text(&headers) => text::explanation(&e).into_response(),
            Ok(e) => axum::Json(e).into_response(),
            Err(e) => explain_error(&e),
        },
    )
}

/// `GET /diagnosis`: what keeps the policy from learning, in plain sentences.
async fn diagnosis(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = admit(&ctx, &headers)?;
    Ok(match ctx.explainer.diagnose(&scope_of(&caller)).await {
        Ok(d) if wants_text(&headers) => text::diagnosis(&d).into_response(),
        Ok(d) => axum::Json(d).into_response(),
        Err(e) => explain_error(&e),
    })
}

fn explain_error(e: &crate::explain::ExplainError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %e, "explain failed");
    }
    (status, axum::Json(e.body())).into_response()
}

async fn sql(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = admit(&ctx, &headers)?;
    let limit = caller.max_body.unwrap_or(DEFAULT_MAX_BODY);
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let text = String::from_utf8_lossy(&body);
    let query = if text.trim_start().starts_with('{') {
        let v: Value = clawline_runtime::http::parse_json(text.as_bytes())?;
        v.get("sql")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_param("sql", "JSON body needs a string `sql`"))?
            .to_string()
    } else {
        text.to_string()
    };
    if query.trim().is_empty() {
        return Err(ApiError::bad_request("empty query"));
    }
    let scope = scope_of(&caller);
    let answer = ctx.engine.query(&query, &scope).await.map_err(sql_error)?;
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(ARROW_STREAM));
    if wants_arrow {
        let bytes = arrow_ipc(&answer).map_err(sql_error)?;
        return Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response());
    }
    let rows = render(&answer, Format::Json).map_err(sql_error)?;
    let rows: Value = serde_json::from_slice(&rows).unwrap_or(Value::Array(Vec::new()));
    let columns: Vec<Value> = answer
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    Ok(axum::Json(json!({"columns": columns, "rows": rows})).into_response())
}

fn sql_error(e: SqlError) -> ApiError {
    let status = |status, kind, message| ApiError::Status {
        status,
        kind,
        message,
    };
    match e {
        SqlError::Invalid(m) => ApiError::bad_request(m),
        e @ SqlError::Timeout(_) => {
            status(StatusCode::REQUEST_TIMEOUT, "query_timeout", e.to_string())
        }
        e @ SqlError::Memory(_) => status(
            StatusCode::INSUFFICIENT_STORAGE,
            "query_memory_limit",
            e.to_string(),
        ),
        SqlError::Internal(m) => {
            tracing::error!(error = %m, "query failed");
            status(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", m)
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
