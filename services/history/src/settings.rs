//! What the history service runs with: plain settings (`clawline up` and tests build them directly)
//! and the flag groups of `clawline-history` and `clawline sql` that fill them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clawline_runtime::NatsArgs;

use crate::{ArchiveConfig, ArchiveRoot, SqlConfig};

/// Where `POST /sql`, `GET /explain/{step_id}`, `GET /diagnosis` and `/healthz` are by default.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8103);
/// The archive when none is named: the one `clawline up` keeps under its default data dir.
pub const ARCHIVE_DIR: &str = "./data/run/archive";
/// A file rolls after this many messages of a stream...
pub const ROLL_ROWS: usize = 100_000;
/// ...or after this many seconds, whichever comes first.
pub const ROLL_SECS: u64 = 10;
/// Memory one query may use (bytes; DataFusion's memory pool).
pub const SQL_MEMORY_LIMIT: usize = 1 << 30;
/// Longest one query may run (seconds).
pub const SQL_TIMEOUT_SECS: u64 = 30;

/// What `clawline-history serve` runs with: the archiver, `POST /sql`, the explain answers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nats: NatsArgs,
    pub archive: ArchiveConfig,
    /// Limits on one query (its `root` is the archive's).
    pub memory_limit: usize,
    pub sql_timeout: Duration,
    /// API key file (`KEY TENANT [admin]`); without it the SQL endpoint is open.
    pub api_keys: Option<PathBuf>,
}

impl Settings {
    /// The defaults, with the archive at `root`.
    pub fn new(nats: NatsArgs, root: ArchiveRoot) -> Self {
        Self {
            nats,
            archive: ArchiveConfig::new(root),
            memory_limit: SQL_MEMORY_LIMIT,
            sql_timeout: Duration::from_secs(SQL_TIMEOUT_SECS),
            api_keys: None,
        }
    }

    /// How its queries run.
    pub fn sql(&self) -> SqlConfig {
        SqlConfig {
            root: self.archive.root.clone(),
            memory_limit: self.memory_limit,
            timeout: self.sql_timeout,
        }
    }
}

/// Where the archive lives and how it rolls files.
#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {
    /// Root of the Parquet archive (one directory per table, hive-partitioned): a directory, or
    /// `s3://bucket/prefix` on S3-compatible storage (credentials and endpoint from `AWS_*`).
    #[arg(long = "archive-dir", env = "CLAWLINE_ARCHIVE_DIR", default_value = ARCHIVE_DIR)]
    pub root: ArchiveRoot,
    /// Roll a file after this many messages of a stream...
    #[arg(long = "roll-rows", default_value_t = ROLL_ROWS)]
    pub roll_rows: usize,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long = "roll-secs", default_value_t = ROLL_SECS)]
    pub roll_secs: u64,
}

impl ArchiveArgs {
    pub fn config(&self) -> ArchiveConfig {
        ArchiveConfig {
            root: self.root.clone(),
            roll_rows: self.roll_rows.max(1),
            roll_every: Duration::from_secs(self.roll_secs.max(1)),
        }
    }
}

/// Limits on one query.
#[derive(Debug, Clone, Args)]
pub struct QueryLimits {
    /// Memory a query may use (bytes; DataFusion's memory pool).
    #[arg(long = "sql-memory-limit", env = "CLAWLINE_SQL_MEMORY_LIMIT", default_value_t = SQL_MEMORY_LIMIT)]
    pub memory_limit: usize,
    /// Longest a query may run (seconds).
    #[arg(long = "sql-timeout", env = "CLAWLINE_SQL_TIMEOUT", default_value_t = SQL_TIMEOUT_SECS)]
    pub timeout_secs: u64,
}

impl QueryLimits {
    pub fn sql_config(&self, root: ArchiveRoot) -> SqlConfig {
        SqlConfig {
            root,
            memory_limit: self.memory_limit,
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
        }
    }
}

/// `clawline-history serve` flags: the archiver plus `POST /sql`, `GET /explain/{step_id}`,
/// `GET /diagnosis`, and the `clawline.explain` NATS responder the gateway asks.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub archive: ArchiveArgs,
    #[command(flatten)]
    pub limits: QueryLimits,
    /// API key file (`KEY TENANT [admin]`); a tenant's queries see only its rows. Without it the
    /// SQL endpoint is open.
    #[arg(long = "api-keys", env = "CLAWLINE_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// Address of `POST /sql`, `GET /explain/{step_id}`, `GET /diagnosis`, `/healthz`.
    #[arg(long, env = "CLAWLINE_HISTORY_LISTEN", default_value_t = LISTEN)]
    pub listen: SocketAddr,
}

impl ServeArgs {
    pub fn settings(self) -> Settings {
        let sql = self.limits.sql_config(self.archive.root.clone());
        Settings {
            nats: self.nats,
            archive: self.archive.config(),
            memory_limit: sql.memory_limit,
            sql_timeout: sql.timeout,
            api_keys: self.api_keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// The flags' defaults are the settings' defaults (`clawline up` builds settings, the binary
    /// parses flags: the two must start the same service).
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        <Serve as clap::CommandFactory>::command().debug_assert();
        let parsed = Serve::try_parse_from(["serve"]).expect("flags");
        assert_eq!(parsed.args.listen, LISTEN);
        let defaults = Settings::new(NatsArgs::default(), ArchiveRoot::local(ARCHIVE_DIR));
        assert_eq!(
            format!("{:?}", parsed.args.settings()),
            format!("{defaults:?}")
        );
        assert_eq!(
            format!("{:?}", SqlConfig::default()),
            format!("{:?}", defaults.sql())
        );
    }
}
