//! Arg groups shared by every binary: flatten them into a service's `Config`.

use clap::{Args, ValueEnum};

/// Where a service looks for NATS when it is told nothing: a nats-server on this machine.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL (JetStream enabled); a cluster's nodes comma-separated
    /// (`nats://a:4222,nats://b:4222`) so the service fails over between them.
    #[arg(
        long = "nats-url",
        env = "CLAWLINE_NATS_URL",
        default_value = DEFAULT_NATS_URL
    )]
    pub url: String,
    /// Stream replicas when this service creates the topology (1 on one machine, 3 on a cluster).
    #[arg(
        long = "nats-replicas",
        env = "CLAWLINE_NATS_REPLICAS",
        default_value_t = 1
    )]
    pub replicas: usize,
    #[command(flatten)]
    pub auth: NatsAuth,
}

/// How a service proves itself to NATS and checks the server: user/password, a token, an nkey
/// seed or a credentials file, and TLS. Secrets are best passed through the environment (flags
/// show in `ps`); none is ever logged.
impl Default for NatsArgs {
    /// The flags' defaults: the local nats-server, one replica, no credentials.
    fn default() -> Self {
        Self {
            url: DEFAULT_NATS_URL.into(),
            replicas: 1,
            auth: NatsAuth::default(),
        }
    }
}

impl NatsArgs {
    /// The servers at `url` with the defaults otherwise.
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

#[derive(Clone, Args, Default)]
pub struct NatsAuth {
    /// A credentials file (user JWT + nkey seed, as `nsc` writes it).
    #[arg(long = "nats-creds", env = "CLAWLINE_NATS_CREDS",
          conflicts_with_all = ["nkey", "user", "token"])]
    pub creds: Option<std::path::PathBuf>,
    /// A file holding a user nkey seed (`SU…`).
    #[arg(long = "nats-nkey", env = "CLAWLINE_NATS_NKEY", conflicts_with_all = ["user", "token"])]
    pub nkey: Option<std::path::PathBuf>,
    #[arg(
        long = "nats-user",
        env = "CLAWLINE_NATS_USER",
        requires = "password",
        conflicts_with = "token"
    )]
    pub user: Option<String>,
    #[arg(
        long = "nats-password",
        env = "CLAWLINE_NATS_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
    #[arg(
        long = "nats-token",
        env = "CLAWLINE_NATS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// CA certificate(s), PEM, the server's certificate must chain to; turns TLS on.
    #[arg(long = "nats-tls-ca", env = "CLAWLINE_NATS_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate, PEM, for servers that verify clients (with --nats-tls-key).
    #[arg(
        long = "nats-tls-cert",
        env = "CLAWLINE_NATS_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    #[arg(
        long = "nats-tls-key",
        env = "CLAWLINE_NATS_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsAuth")
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl NatsAuth {
    /// `options` with these credentials and TLS settings; a bad file is named by its flag.
    pub async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> anyhow::Result<async_nats::ConnectOptions> {
        if let Some(path) = &self.creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| anyhow::anyhow!("--nats-creds {}: {e}", path.display()))?;
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--nats-nkey {}: {e}", path.display()))?;
            let seed = seed.trim().to_string();
            anyhow::ensure!(
                seed.starts_with("SU"),
                "--nats-nkey {}: not a user nkey seed (it starts with SU)",
                path.display()
            );
            options = options.nkey(seed);
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.tls_ca {
            anyhow::ensure!(ca.is_file(), "--nats-tls-ca {}: no such file", ca.display());
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            for (flag, path) in [("--nats-tls-cert", cert), ("--nats-tls-key", key)] {
                anyhow::ensure!(path.is_file(), "{flag} {}: no such file", path.display());
            }
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }
}

impl NatsArgs {
    /// Connection options for a client called `name`: credentials, TLS, a 5 s connect timeout.
    pub async fn options(&self, name: &str) -> anyhow::Result<async_nats::ConnectOptions> {
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(std::time::Duration::from_secs(5));
        self.auth.apply(options).await
    }

    /// The servers of `--nats-url`, each checked.
    pub fn servers(&self) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| anyhow::anyhow!("--nats-url {u}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .and_then(|v| {
                anyhow::ensure!(!v.is_empty(), "--nats-url: no server given");
                Ok(v)
            })
    }

    pub fn topology(&self) -> clawline_nats::TopologyOptions {
        clawline_nats::TopologyOptions {
            replicas: self.replicas,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object a line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long = "log-format", env = "CLAWLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is unset.
    #[arg(long = "log-level", env = "CLAWLINE_LOG_LEVEL", default_value = "info")]
    pub level: String,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}
