use tracing_subscriber::EnvFilter;

use crate::{LogArgs, LogFormat};

/// Installs the global subscriber: filter from `RUST_LOG` (else `--log-level`), pretty or JSON lines
/// on stderr. Calling it twice is harmless (the second call does nothing).
pub fn init_tracing(args: &LogArgs) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},async_nats=warn,ort=warn", args.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
