//! The running history service: the archiver, `POST /sql` and the explain answers.

use std::sync::Arc;

use clawline_runtime::{CancellationToken, TaskSet};

use crate::settings::Settings;
use crate::{ArchiveConfig, ArchiveRoot, SqlEngine, archive, explain, http, tables};

/// The archiver and the SQL endpoint on `listener`, until `shutdown`.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let keys = match &settings.api_keys {
        Some(path) => clawline_runtime::keys::ApiKeys::load(path)?,
        None => clawline_runtime::keys::ApiKeys::open(),
    };
    let (client, js) = clawline_runtime::start_nats(&settings.nats, "clawline-history").await?;
    let engine = Arc::new(SqlEngine::new(settings.sql(), Some(js.clone())));
    let explainer = Arc::new(explain::Explainer::new(engine.clone()));
    // In force before the SQL port answers.
    let requests =
        clawline_nats::answer_on(&client, clawline_nats::subjects::EXPLAIN, Some("explain"))
            .await?;
    let mut tasks = TaskSet::new(shutdown.clone());
    tasks.spawn(
        "explain",
        explain::respond(explainer, client, requests, shutdown.clone()),
    );
    tasks.spawn(
        "archiver",
        archive_all(js, settings.archive, shutdown.clone()),
    );
    tasks.spawn("sql", http::serve(listener, engine, keys, shutdown.clone()));
    tasks.join().await
}

/// Archives every stream until `shutdown` (`clawline-history archive`: the archiver alone).
pub async fn archive_all(
    js: async_nats::jetstream::Context,
    config: ArchiveConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config
        .root
        .create()
        .await
        .map_err(|e| anyhow::anyhow!("--archive-dir {}: {e}", config.root))?;
    // One archiver per local archive: a second would take the first one's flush in progress for
    // leftovers of a crash, and write every row again.
    let _lock = match &config.root {
        ArchiveRoot::Local(dir) => Some(
            clawline_runtime::lock_dir(dir)
                .map_err(|e| anyhow::anyhow!("--archive-dir {}: {e}", dir.display()))?,
        ),
        ArchiveRoot::Remote { .. } => None,
    };
    let mut tasks = TaskSet::new(shutdown.clone());
    for stream in tables::archived_streams() {
        tasks.spawn(
            "archive",
            archive::archive_stream(js.clone(), stream, config.clone(), shutdown.clone()),
        );
    }
    tasks.join().await
}
