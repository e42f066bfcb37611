//! `clawline-mock-vllm --listen 127.0.0.1:8000`: the mock engine as a process (benchmarks, demos).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clawline_mock_vllm::{MockConfig, default_tokenizer_dir, serve_forever};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// Milliseconds to wait before each answer.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Milliseconds between streamed chunks.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Reject vLLM's `return_token_ids` like OpenAI's API does.
    #[arg(long)]
    no_token_ids: bool,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A fixed reply for every request.
    #[arg(long)]
    reply: Option<String>,
    /// Answer `tools` with tool calls, as vLLM does with `--enable-auto-tool-choice
    /// --tool-call-parser hermes`; without it a request with `tools` is answered 400, as vLLM's.
    #[arg(long)]
    tool_call_parser: Option<String>,
    /// Require `Authorization: Bearer KEY`, as `vllm serve --api-key`.
    #[arg(long)]
    api_key: Option<String>,
    /// Script an agent task: call tool NAME with ARGS (JSON) once, e.g.
    /// `--call-tool 'Bash={"command":"ls"}'`.
    #[arg(long, value_name = "NAME=ARGS")]
    call_tool: Option<String>,
    /// Serve Anthropic Messages at /v1/messages too, as SGLang does.
    #[arg(long)]
    messages: bool,
    /// Serve OpenAI Responses at /v1/responses too, as vLLM does (keeping no responses).
    #[arg(long)]
    responses: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!(
        "mock vllm listening on http://{}/v1",
        listener.local_addr()?
    );
    let config = MockConfig {
        delay: Duration::from_millis(args.delay_ms),
        token_delay: Duration::from_millis(args.token_delay_ms),
        token_ids: !args.no_token_ids,
        reply: args.reply,
        tool_parser: args.tool_call_parser.is_some(),
        call_tool: args
            .call_tool
            .as_deref()
            .and_then(|c| c.split_once('='))
            .map(|(n, a)| (n.to_string(), a.to_string())),
        api_key: args.api_key,
        messages: args.messages,
        responses: args.responses,
        ..Default::default()
    };
    serve_forever(
        listener,
        config,
        &args.tokenizer.unwrap_or_else(default_tokenizer_dir),
    )
    .await
}
