//! What the gateway runs with: plain settings (no flag parsing; `clawline up` and tests build
//! them directly), their defaults as named constants, and the `clawline-gateway` flags that fill
//! them (every flag has an env fallback).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clawline_runtime::{LogArgs, NatsArgs};

mod parse;

use parse::default_param;
pub use parse::{DefaultParam, parse_duration};

/// A protocol besides chat completions that an engine may serve itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineProtocol {
    /// Anthropic Messages (`/v1/messages`).
    Messages,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
}

/// Claw-R1's port.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8100);
/// The model-name policy: the client's name when the engine serves it, else the engine's model.
pub const MODEL_NAME: &str = "engine";
pub const GENERATE_MAX_TOKENS: u64 = 1024;
pub const SPOOL_DIR: &str = "./data/spool";
pub const DEFAULT_CHANNEL: &str = "train";
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(2);
pub const REWARD_TIMEOUT: Duration = Duration::from_secs(30);
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
pub const TRAJECTORY_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_TRAJECTORIES: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Settings {
    /// OpenAI-compatible upstream base URL, e.g. http://127.0.0.1:8000/v1. Repeat for several:
    /// requests go round-robin over the healthy ones.
    pub upstreams: Vec<String>,
    /// API key the gateway sends its engines (`Authorization: Bearer …`): a vLLM started with
    /// `--api-key`, or a hosted API while you only collect data. One key for every engine, or one
    /// per `--upstream`, in the same order (repeat the flag). Clients' own keys stay with the
    /// gateway.
    pub upstream_api_key: Vec<String>,
    /// A client request header to pass on to the engines (e.g. `traceparent`, `x-request-id`,
    /// an engine's routing or priority header). Repeat for several. None by default; headers that
    /// describe the connection or the body (Host, Content-Length, Connection, …) are refused, and
    /// `authorization` only when there is no `--upstream-api-key`.
    pub forward_headers: Vec<String>,
    /// A sampling setting for calls that send none: `KEY=NUMBER` for every call, or
    /// `CHANNEL/KEY=NUMBER` for one channel's (which wins over the first). Keys: temperature,
    /// top_p, top_k, min_p, max_tokens, presence_penalty, frequency_penalty, repetition_penalty,
    /// seed. Repeat for several. The step records what the engine got.
    pub default_params: Vec<DefaultParam>,
    /// Which model name goes to the engine. `engine` (default): the client's name when the engine
    /// serves it (its model or a loaded adapter), else the engine's own model, as the engine's
    /// `/v1/models` lists it — agents hard-code names (Claw-R1's `"default"`) that a vLLM-like
    /// engine answers with 404. `client`: the client's name, unchanged. Any other value: that name
    /// for every call. A version the broadcaster serves as an adapter overrides all three.
    pub model_name: String,
    /// `max_tokens` of a `/generate` call that sends none, capped by what the engine's context
    /// (`max_model_len`) leaves after the prompt: the engine's own default would cut the answer
    /// (vLLM's `/v1/completions` stops at 16 tokens).
    pub generate_max_tokens: u64,
    /// Text that marks a turn no user asked for (an agent waking itself), looked for in the user
    /// message that starts the turn; adds to the built-in markers (OpenClaw's heartbeat prompts).
    /// Such steps are recorded with `background: true`, are never read as feedback on the answer
    /// before them, and do not train unless the channel asks (batcher `train_background`). Repeat
    /// for several; `none` turns every marker off. A client can also say so per call with
    /// `x-clawline-background: true`.
    pub background_markers: Vec<String>,
    /// Token-in mode (needs `--tokenizer`): render the chat template here, call the engine's
    /// `/v1/completions` with the prompt's token ids and parse Hermes tool calls here, as Claw-R1's
    /// own gateway does. Exact ids by construction; the engine needs no tool-call parser.
    pub token_in: bool,
    /// Protocols the engines serve themselves: calls in them are forwarded as they are (the
    /// step read from the engine's answer) instead of translated to chat completions.
    pub engine_speaks: Vec<EngineProtocol>,
    pub nats: NatsArgs,
    /// Directory with a Hugging Face `tokenizer.json` and `tokenizer_config.json` (chat_template):
    /// used to tokenize steps when the upstream returns no token ids.
    pub tokenizer: Option<PathBuf>,
    /// API key file: one `KEY TENANT [admin]` a line, `#` comments. Without it the gateway is open
    /// (single user, tenant `default`, every caller admin).
    pub api_keys: Option<PathBuf>,
    /// Where steps wait while NATS is unreachable (append-only, drained in order).
    pub spool_dir: PathBuf,
    /// fsync each spooled event (survives power loss, costs a disk flush per event during outages).
    pub spool_fsync: bool,
    /// Public base URL for the `base_url` that `/init_trajectory` returns; default: the Host header.
    pub public_url: Option<String>,
    /// Channel for steps that name none.
    pub default_channel: String,
    /// Requests per second each API key may send (a key's own `rate=N` in the key file wins);
    /// beyond it: HTTP 429 with `Retry-After`. 0: unlimited.
    pub rate_limit: f64,
    /// Do not follow the streams for the dashboard (`/dashboard` then shows nothing).
    pub no_dashboard: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Upstream request timeout (whole response for non-streaming, between chunks for streaming).
    pub upstream_timeout: Duration,
    /// How long to wait for JetStream's ack before spooling the event instead.
    pub capture_timeout: Duration,
    /// How long `POST /compute_reward` waits for the reward service before answering 504.
    pub reward_timeout: Duration,
    /// A conversation with no call for this long no longer continues (implicit sessions); its
    /// trajectory is completed with reason `idle_timeout`.
    pub session_idle: Duration,
    /// How long a trajectory stays known for completion and feedback after its last activity.
    pub trajectory_ttl: Duration,
    /// Most trajectories kept in memory; the least recently used are forgotten first.
    pub max_trajectories: usize,
}

/// `clawline-gateway` flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-gateway",
    version,
    about = "OpenAI- and Claw-R1-compatible gateway that records every LLM call on JetStream"
)]
pub struct Args {
    /// Address to listen on (Claw-R1's port by default).
    #[arg(long, env = "CLAWLINE_LISTEN", default_value_t = LISTEN)]
    pub listen: SocketAddr,

    /// OpenAI-compatible upstream base URL, e.g. http://127.0.0.1:8000/v1. Repeat for several:
    /// requests go round-robin over the healthy ones.
    #[arg(
        long = "upstream",
        env = "CLAWLINE_UPSTREAMS",
        value_delimiter = ',',
        required = true
    )]
    pub upstreams: Vec<String>,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Directory with a Hugging Face `tokenizer.json` and `tokenizer_config.json` (chat_template):
    /// used to tokenize steps when the upstream returns no token ids.
    #[arg(long, env = "CLAWLINE_TOKENIZER")]
    pub tokenizer: Option<PathBuf>,

    /// API key file: one `KEY TENANT [admin]` a line, `#` comments. Without it the gateway is open
    /// (single user, tenant `default`, every caller admin).
    #[arg(long = "api-keys", env = "CLAWLINE_API_KEYS")]
    pub api_keys: Option<PathBuf>,

    /// Where steps wait while NATS is unreachable (append-only, drained in order).
    #[arg(
        long = "spool-dir",
        env = "CLAWLINE_SPOOL_DIR",
        default_value = SPOOL_DIR
    )]
    pub spool_dir: PathBuf,

    #[command(flatten)]
    pub log: LogArgs,

    /// Everything else about serving (also `clawline up`'s).
    #[command(flatten)]
    pub serving: ServingArgs,
}

/// The gateway's flags about serving (engines, sessions, limits, timeouts), as a group that
/// `clawline up` offers too: both fill [`Settings`] with [`ServingArgs::apply`].
#[derive(Debug, Clone, clap::Args)]
pub struct ServingArgs {
    /// API key the gateway sends its engines (`Authorization: Bearer …`): a vLLM started with
    /// `--api-key`, or a hosted API while you only collect data. One key for every engine, or one
    /// per `--upstream`, in the same order (repeat the flag). Clients' own keys stay with the
    /// gateway.
    #[arg(
        long = "upstream-api-key",
        env = "CLAWLINE_UPSTREAM_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub upstream_api_key: Vec<String>,

    /// A client request header to pass on to the engines (e.g. `traceparent`, `x-request-id`,
    /// an engine's routing or priority header). Repeat for several. None by default; headers that
    /// describe the connection or the body (Host, Content-Length, Connection, …) are refused, and
    /// `authorization` only when there is no `--upstream-api-key`.
    #[arg(
        long = "forward-header",
        env = "CLAWLINE_FORWARD_HEADERS",
        value_delimiter = ','
    )]
    pub forward_headers: Vec<String>,

    /// A sampling setting for calls that send none: `KEY=NUMBER` for every call, or
    /// `CHANNEL/KEY=NUMBER` for one channel's (which wins over the first). Keys: temperature,
    /// top_p, top_k, min_p, max_tokens, presence_penalty, frequency_penalty, repetition_penalty,
    /// seed. Repeat for several. The step records what the engine got.
    #[arg(long = "default-param", env = "CLAWLINE_DEFAULT_PARAMS", value_delimiter = ',', value_parser = default_param)]
    pub default_params: Vec<DefaultParam>,

    /// Which model name goes to the engine. `engine` (default): the client's name when the engine
    /// serves it (its model or a loaded adapter), else the engine's own model, as the engine's
    /// `/v1/models` lists it — agents hard-code names (Claw-R1's `"default"`) that a vLLM-like
    /// engine answers with 404. `client`: the client's name, unchanged. Any other value: that name
    /// for every call. A version the broadcaster serves as an adapter overrides all three.
    #[arg(
        long = "model-name",
        env = "CLAWLINE_MODEL_NAME",
        default_value = MODEL_NAME
    )]
    pub model_name: String,

    /// `max_tokens` of a `/generate` call that sends none, capped by what the engine's context
    /// (`max_model_len`) leaves after the prompt: the engine's own default would cut the answer
    /// (vLLM's `/v1/completions` stops at 16 tokens).
    #[arg(
        long = "generate-max-tokens",
        env = "CLAWLINE_GENERATE_MAX_TOKENS",
        default_value_t = GENERATE_MAX_TOKENS
    )]
    pub generate_max_tokens: u64,

    /// Text that marks a turn no user asked for (an agent waking itself), looked for in the user
    /// message that starts the turn; adds to the built-in markers (OpenClaw's heartbeat prompts).
    /// Such steps are recorded with `background: true`, are never read as feedback on the answer
    /// before them, and do not train unless the channel asks (batcher `train_background`). Repeat
    /// for several; `none` turns every marker off. A client can also say so per call with
    /// `x-clawline-background: true`.
    #[arg(
        long = "background-marker",
        env = "CLAWLINE_BACKGROUND_MARKERS",
        value_delimiter = '\n'
    )]
    pub background_markers: Vec<String>,

    /// Token-in mode (needs `--tokenizer`): render the chat template here, call the engine's
    /// `/v1/completions` with the prompt's token ids and parse Hermes tool calls here, as Claw-R1's
    /// own gateway does. Exact ids by construction; the engine needs no tool-call parser.
    #[arg(long = "token-in", env = "CLAWLINE_TOKEN_IN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub token_in: bool,

    /// Protocols the engines serve themselves (`messages`: Anthropic Messages, as SGLang, vLLM
    /// and Anthropic's API do): calls in them are forwarded as they are instead of translated to
    /// chat completions. Repeat or comma-separate.
    #[arg(
        long = "engine-speaks",
        env = "CLAWLINE_ENGINE_SPEAKS",
        value_enum,
        value_delimiter = ','
    )]
    pub engine_speaks: Vec<EngineProtocol>,

    /// fsync each spooled event (survives power loss, costs a disk flush per event during outages).
    #[arg(long = "spool-fsync", env = "CLAWLINE_SPOOL_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub spool_fsync: bool,

    /// Public base URL for the `base_url` that `/init_trajectory` returns; default: the Host header.
    #[arg(long = "public-url", env = "CLAWLINE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Channel for steps that name none.
    #[arg(
        long = "default-channel",
        env = "CLAWLINE_DEFAULT_CHANNEL",
        default_value = DEFAULT_CHANNEL
    )]
    pub default_channel: String,

    /// Requests per second each API key may send (a key's own `rate=N` in the key file wins);
    /// beyond it: HTTP 429 with `Retry-After`. 0: unlimited.
    #[arg(
        long = "rate-limit",
        env = "CLAWLINE_RATE_LIMIT",
        default_value_t = 0.0
    )]
    pub rate_limit: f64,

    /// Do not follow the streams for the dashboard (`/dashboard` then shows nothing).
    #[arg(long = "no-dashboard", env = "CLAWLINE_NO_DASHBOARD")]
    pub no_dashboard: bool,

    /// Largest request body accepted, in bytes.
    #[arg(long = "max-body-bytes", env = "CLAWLINE_MAX_BODY_BYTES", default_value_t = MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Upstream request timeout (whole response for non-streaming, between chunks for streaming).
    #[arg(long = "upstream-timeout", env = "CLAWLINE_UPSTREAM_TIMEOUT", value_parser = parse_duration, default_value = "120s")]
    pub upstream_timeout: Duration,

    /// How long to wait for JetStream's ack before spooling the event instead.
    #[arg(long = "capture-timeout", env = "CLAWLINE_CAPTURE_TIMEOUT", value_parser = parse_duration, default_value = "2s")]
    pub capture_timeout: Duration,

    /// How long `POST /compute_reward` waits for the reward service before answering 504.
    #[arg(long = "reward-timeout", env = "CLAWLINE_REWARD_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub reward_timeout: Duration,

    /// A conversation with no call for this long no longer continues (implicit sessions); its
    /// trajectory is completed with reason `idle_timeout`.
    #[arg(long = "session-idle", env = "CLAWLINE_SESSION_IDLE", value_parser = parse_duration, default_value = "30m")]
    pub session_idle: Duration,

    /// How long a trajectory stays known for completion and feedback after its last activity.
    #[arg(long = "trajectory-ttl", env = "CLAWLINE_TRAJECTORY_TTL", value_parser = parse_duration, default_value = "24h")]
    pub trajectory_ttl: Duration,

    /// Most trajectories kept in memory; the least recently used are forgotten first.
    #[arg(
        long = "max-trajectories",
        env = "CLAWLINE_MAX_TRAJECTORIES",
        default_value_t = MAX_TRAJECTORIES
    )]
    pub max_trajectories: usize,
}

impl ServingArgs {
    /// Puts these flags' values into `settings`.
    pub fn apply(self, settings: &mut Settings) {
        settings.upstream_api_key = self.upstream_api_key;
        settings.forward_headers = self.forward_headers;
        settings.default_params = self.default_params;
        settings.model_name = self.model_name;
        settings.generate_max_tokens = self.generate_max_tokens;
        settings.background_markers = self.background_markers;
        settings.token_in = self.token_in;
        settings.engine_speaks = self.engine_speaks;
        settings.spool_fsync = self.spool_fsync;
        settings.public_url = self.public_url;
        settings.default_channel = self.default_channel;
        settings.rate_limit = self.rate_limit;
        settings.no_dashboard = self.no_dashboard;
        settings.max_body_bytes = self.max_body_bytes;
        settings.upstream_timeout = self.upstream_timeout;
        settings.capture_timeout = self.capture_timeout;
        settings.reward_timeout = self.reward_timeout;
        settings.session_idle = self.session_idle;
        settings.trajectory_ttl = self.trajectory_ttl;
        settings.max_trajectories = self.max_trajectories;
    }
}

impl Args {
    pub fn settings(self) -> Settings {
        let mut settings = Settings::new(self.upstreams);
        settings.nats = self.nats;
        settings.tokenizer = self.tokenizer;
        settings.api_keys = self.api_keys;
        settings.spool_dir = self.spool_dir;
        self.serving.apply(&mut settings);
        settings
    }
}

impl Settings {
    /// Whether the engines serve `protocol` themselves (`--engine-speaks`).
    pub fn engine_speaks(&self, protocol: EngineProtocol) -> bool {
        self.engine_speaks.contains(&protocol)
    }

    /// Serving from `upstreams` (OpenAI-compatible base URLs) with every default.
    pub fn new(upstreams: Vec<String>) -> Self {
        Self {
            upstreams,
            upstream_api_key: Vec::new(),
            forward_headers: Vec::new(),
            default_params: Vec::new(),
            model_name: MODEL_NAME.into(),
            generate_max_tokens: GENERATE_MAX_TOKENS,
            background_markers: Vec::new(),
            token_in: false,
            engine_speaks: Vec::new(),
            nats: NatsArgs::default(),
            tokenizer: None,
            api_keys: None,
            spool_dir: SPOOL_DIR.into(),
            spool_fsync: true,
            public_url: None,
            default_channel: DEFAULT_CHANNEL.into(),
            rate_limit: 0.0,
            no_dashboard: false,
            max_body_bytes: MAX_BODY_BYTES,
            upstream_timeout: UPSTREAM_TIMEOUT,
            capture_timeout: CAPTURE_TIMEOUT,
            reward_timeout: REWARD_TIMEOUT,
            session_idle: SESSION_IDLE,
            trajectory_ttl: TRAJECTORY_TTL,
            max_trajectories: MAX_TRAJECTORIES,
        }
    }

    /// Fills the sampling settings `request` (a call on `channel`) does not send.
    pub fn apply_default_params(
        &self,
        channel: &str,
        request: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        let for_channel = self
            .default_params
            .iter()
            .filter(|d| d.channel.as_deref() == Some(channel));
        let everywhere = self.default_params.iter().filter(|d| d.channel.is_none());
        for d in for_channel.chain(everywhere) {
            let sent = request.get(&d.key).is_some_and(|v| !v.is_null())
                || (d.key == "max_tokens"
                    && request
                        .get("max_completion_tokens")
                        .is_some_and(|v| !v.is_null()));
            if !sent {
                request.insert(d.key.clone(), d.value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the settings' defaults (`clawline up` builds settings, the binary
    /// parses flags: the two must start the same service).
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        <Args as clap::CommandFactory>::command().debug_assert();
        let parsed =
            Args::try_parse_from(["clawline-gateway", "--upstream", "http://127.0.0.1:1/v1"])
                .expect("flags")
                .settings();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", Settings::new(vec!["http://127.0.0.1:1/v1".into()]))
        );
    }

    #[test]
    fn default_params_fill_what_a_call_does_not_send() {
        let config = Args::try_parse_from([
            "clawline-gateway",
            "--upstream",
            "http://127.0.0.1:1/v1",
            "--default-param",
            "temperature=1.0,max_tokens=512",
            "--default-param",
            "val/temperature=0",
        ])
        .expect("config")
        .settings();
        let filled = |channel: &str, request: serde_json::Value| {
            let mut map = request.as_object().cloned().unwrap_or_default();
            config.apply_default_params(channel, &mut map);
            serde_json::Value::Object(map)
        };
        assert_eq!(
            filled("train", serde_json::json!({"temperature": 0.2})),
            serde_json::json!({"temperature": 0.2, "max_tokens": 512})
        );
        assert_eq!(
            filled("val", serde_json::json!({"max_completion_tokens": 9})),
            serde_json::json!({"temperature": 0, "max_completion_tokens": 9})
        );
        for bad in [
            "temp=1",
            "temperature=hot",
            "a.b/temperature=1",
            "temperature",
        ] {
            let err = Args::try_parse_from([
                "clawline-gateway",
                "--upstream",
                "http://127.0.0.1:1/v1",
                "--default-param",
                bad,
            ])
            .expect_err(bad);
            assert!(err.to_string().contains("--default-param"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn a_missing_upstream_is_a_cli_error_naming_the_flag() {
        let err = Args::try_parse_from(["clawline-gateway"]).expect_err("must fail");
        assert!(err.to_string().contains("--upstream"), "{err}");
    }
}
