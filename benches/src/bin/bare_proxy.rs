//! The gateway benchmark's yardstick for one extra HTTP hop: a proxy on the gateway's own HTTP
//! stack (axum server, pooled reqwest client with TCP_NODELAY) that forwards a chat call to the
//! engine and returns its answer untouched — no parsing, no capture, no JetStream. Its added
//! latency is what any proxy pays on this machine before it does anything useful.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// The engine's base URL, e.g. `http://127.0.0.1:8000/v1`.
    #[arg(long)]
    upstream: String,
}

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    url: reqwest::Url,
}

async fn forward(State(up): State<Upstream>, body: Bytes) -> Response {
    let answer = up
        .client
        .post(up.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    match answer.bytes().await {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let up = Upstream {
        client: reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()?,
        url: format!("{}/chat/completions", args.upstream.trim_end_matches('/')).parse()?,
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(forward))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(up);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
