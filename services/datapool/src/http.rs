//! `POST /sql` behind the API keys: the body is the query (plain text, or JSON `{"sql": …}`);
//! the answer is JSON (`{"columns": [...], "rows": [...]}`) or, with
//! `Accept: application/vnd.apache.arrow.stream`, an Arrow IPC stream. A tenant's key sees only
//! that tenant's rows (and no `batches` / `weights` tables); an admin key sees everything.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clawline_runtime::CancellationToken;
use clawline_runtime::keys::ApiKeys;
use serde_json::{Value, json};

use crate::sql::{Answer, Format, Scope, SqlEngine, SqlError, render};

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

struct Ctx {
    engine: SqlEngine,
    keys: ApiKeys,
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
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/sql", post(sql))
        .with_state(Arc::new(Ctx { engine, keys }))
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
