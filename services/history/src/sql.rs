//! SQL over the history with DataFusion: each table is its Parquet files plus the live tail (the
//! messages past the archive's checkpoint, read from JetStream at query time), so a step is
//! queryable seconds after its capture. The two halves meet at the checkpoint read when the query
//! starts, so a flush during the query neither hides nor doubles a row.
//!
//! Queries are read-only (no DDL, DML or statements), bounded by a memory pool and a timeout, and,
//! for a tenant, see only views filtered to that tenant's rows (the unfiltered tables are never
//! registered where the query could name them).

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::*;
use futures::StreamExt;

use crate::archive::{Checkpoint, read_checkpoint};
use crate::store::{ArchiveRoot, View};
use crate::tables::{self, Row, TABLES, Table};

/// Why a query failed; the message is for the user (no stack traces).
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The query is wrong (syntax with its position, unknown table or column, a write).
    #[error("{0}")]
    Invalid(String),
    #[error("the query ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    #[error("the query needs more than the memory limit: {0}")]
    Memory(String),
    #[error("{0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::ResourcesExhausted(m) => SqlError::Memory(m.clone()),
            E::SQL(..) | E::Plan(..) | E::SchemaError(..) | E::NotImplemented(..) => {
                SqlError::Invalid(clean(&e.to_string()))
            }
            E::IoError(_) | E::ObjectStore(_) | E::External(_) | E::Internal(_) => {
                SqlError::Internal(e.to_string())
            }
            _ => SqlError::Invalid(clean(&e.to_string())),
        }
    }
}

/// DataFusion's messages wrap the parser's; keep them one line.
fn clean(message: &str) -> String {
    message.replace('\n', " ").trim().to_string()
}

#[derive(Debug, Clone)]
pub struct SqlConfig {
    pub root: ArchiveRoot,
    pub memory_limit: usize,
    pub timeout: Duration,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            root: ArchiveRoot::local(crate::ARCHIVE_DIR),
            memory_limit: crate::SQL_MEMORY_LIMIT,
            timeout: Duration::from_secs(crate::SQL_TIMEOUT_SECS),
        }
    }
}

/// Who is asking: everything, or one tenant's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Tenant(String),
}

pub struct SqlEngine {
    config: SqlConfig,
    js: Option<jetstream::Context>,
    /// Parquet footers and file statistics, kept across queries (keyed by path, size and
    /// modification time, so a rewritten file is read again). File listings are not cached: a
    /// new archive file is seen by the next query.
    caches: CacheManagerConfig,
}

/// A query's answer.
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl SqlEngine {
    /// With `js`, tables include the live tail; without, only what is archived.
    pub fn new(config: SqlConfig, js: Option<jetstream::Context>) -> Self {
        let caches = match CacheManager::try_new(&CacheManagerConfig::default()) {
            Ok(m) => CacheManagerConfig::default()
                .with_file_metadata_cache(Some(m.get_file_metadata_cache()))
                .with_file_statistics_cache(m.get_file_statistic_cache()),
            Err(_) => CacheManagerConfig::default(),
        };
        Self { config, js, caches }
    }

    /// The JetStream context the live tail is read from (none: only the archive).
    pub fn jetstream(&self) -> Option<&jetstream::Context> {
        self.js.as_ref()
    }

    /// The longest a query may run.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// A planned query's rows, strings as plain `Utf8` (for queries made in code on a
    /// [`Self::context`] session; the caller bounds the time).
    pub async fn collect(&self, df: DataFrame) -> Result<Answer, SqlError> {
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        plain_strings(schema, batches)
    }

    pub async fn query(&self, sql: &str, scope: &Scope) -> Result<Answer, SqlError> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.run(sql, scope))
            .await
            .map_err(|_| SqlError::Timeout(timeout))?
    }

    async fn run(&self, sql: &str, scope: &Scope) -> Result<Answer, SqlError> {
        let ctx = self.context(scope).await?;
        let options = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(sql, options).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        plain_strings(schema, batches)
    }

    /// A fresh session with every table (archive ∪ live tail), scoped to `scope`.
    pub async fn context(&self, scope: &Scope) -> Result<SessionContext, SqlError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.config.memory_limit, 1.0)
            .with_cache_manager(self.caches.clone())
            .build_arc()?;
        // DataFusion's own settings can be tuned with `DATAFUSION_*` variables, e.g.
        // `DATAFUSION_EXECUTION_TARGET_PARTITIONS=8`.
        let config = SessionConfig::from_env()
            .map_err(|e| SqlError::Internal(format!("a DATAFUSION_* variable: {e}")))?
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        crate::functions::register(&ctx);
        let mut tails = std::collections::HashMap::new();
        let mut checkpoints = std::collections::HashMap::new();
        for stream in tables::archived_streams() {
            let checkpoint = read_checkpoint(&self.config.root, stream)
                .await
                .map_err(|e| SqlError::Internal(e.to_string()))?;
            let rows = match &self.js {
                Some(js) => live_tail(js, stream, &checkpoint, &self.config.root).await?,
                None => Vec::new(),
            };
            checkpoints.insert(stream.to_string(), checkpoint.last_seq);
            tails.insert(stream, rows);
        }
        // The archive up to the checkpoints read above, pinned for this query; the tail is the rest.
        let view = self
            .config
            .root
            .register_snapshot(&ctx, &checkpoints)
            .await
            .map_err(|e| SqlError::Internal(format!("{e:#}")))?;
        for table in TABLES {
            if let Scope::Tenant(_) = scope
                && !table.tenant
            {
                continue;
            }
            let rows = &tails[table.stream];
            let archived = self.archived(&ctx, table, &view)?;
            let tail_rows: Vec<Row> = rows
                .iter()
                .filter(|r| (table.subject)(&r.subject))
                .cloned()
                .collect();
            let mut df = archived;
            if !tail_rows.is_empty() {
                let tail = tables::to_batch(table, &tail_rows, true)
                    .map_err(|e| SqlError::Internal(e.to_string()))?;
                let live = MemTable::try_new(table.schema(), vec![vec![tail]])?;
                df = df.union(ctx.read_table(Arc::new(live))?)?;
            }
            if let Scope::Tenant(t) = scope {
                df = df.filter(col("tenant").eq(lit(t.clone())))?;
            }
            ctx.register_table(table.name, df.into_view())?;
        }
        ctx.sql(
            "CREATE VIEW step_rewards AS SELECT s.step_id, s.event_time, s.tenant, s.channel, \
             s.trajectory_uid, s.prompt_uid, s.step_index, s.policy_version, s.token_source, \
             s.response_text, r.reward_id, r.source AS reward_source, r.source_version, \
             r.value AS reward, r.scope AS reward_scope \
             FROM steps s LEFT JOIN rewards r ON r.step_id = s.step_id",
        )
        .await?;
        Ok(ctx)
    }

    /// The table's archived rows (the snapshot's files).
    fn archived(
        &self,
        ctx: &SessionContext,
        table: &Table,
        view: &View,
    ) -> Result<DataFrame, SqlError> {
        let url = view.table_url(table.name)?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(
                table
                    .partition_cols()
                    .into_iter()
                    .map(|p| (p.to_string(), arrow::datatypes::DataType::Utf8))
                    .collect(),
            );
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(table.file_schema());
        let listing = ListingTable::try_new(config)?;
        Ok(ctx.read_table(Arc::new(listing))?)
    }
}

/// The answer with string views cast to plain strings: the engine reads the archive's strings as
/// views because it joins and groups them faster, but what leaves it (column types in JSON, Arrow
/// and Parquet answers, export manifests) keeps the `Utf8` type every client reads.
fn plain_strings(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Answer, SqlError> {
    use arrow::datatypes::{DataType, Schema};
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Utf8View)
    {
        return Ok(Answer { schema, batches });
    }
    let plain = |s: &Schema| -> SchemaRef {
        let fields = s.fields().iter().map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            _ => f.as_ref().clone(),
        });
        Arc::new(Schema::new_with_metadata(
            fields.collect::<Vec<_>>(),
            s.metadata().clone(),
        ))
    };
    let internal = |e: arrow::error::ArrowError| SqlError::Internal(e.to_string());
    let batches = batches
        .into_iter()
        .map(|b| {
            // Each batch keeps its own fields' nullability, which its columns already satisfy.
            let own = plain(&b.schema());
            let columns = b
                .columns()
                .iter()
                .zip(own.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?;
            RecordBatch::try_new(own, columns).map_err(internal)
        })
        .collect::<Result<Vec<_>, SqlError>>()?;
    Ok(Answer {
        schema: plain(&schema),
        batches,
    })
}

/// The messages of `stream` after `after`, up to the stream's last one now.
async fn live_tail(
    js: &jetstream::Context,
    stream: &str,
    checkpoint: &Checkpoint,
    root: &ArchiveRoot,
) -> Result<Vec<Row>, SqlError> {
    let after = checkpoint.last_seq;
    let unavailable =
        |e: String| SqlError::Internal(format!("reading the live tail of {stream}: {e}"));
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let info = s.info().await.map_err(|e| unavailable(e.to_string()))?;
    checkpoint
        .check_stream(root, stream, crate::archive::created_nanos(info))
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    let last = info.state.last_sequence;
    if last <= after {
        return Ok(Vec::new());
    }
    let consumer = s
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut rows = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| unavailable(e.to_string()))?;
        let (seq, pending) = m
            .info()
            .map(|i| (i.stream_sequence, i.pending))
            .unwrap_or((last, 0));
        if let Ok(json) = tables::decode_json(&m.payload) {
            rows.push(Row {
                seq,
                subject: m.subject.to_string(),
                json,
            });
        }
        // The last message may have been deleted: stop when nothing is pending either.
        if seq >= last || pending == 0 {
            break;
        }
    }
    Ok(rows)
}

/// Output formats of `clawline sql` and `POST /sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    Csv,
    /// A JSON array of row objects.
    Json,
    Parquet,
}

/// The answer encoded as `format`.
pub fn render(answer: &Answer, format: Format) -> Result<Vec<u8>, SqlError> {
    let internal = |e: &dyn std::fmt::Display| SqlError::Internal(e.to_string());
    let mut out = Vec::new();
    match format {
        Format::Table => {
            let text = arrow::util::pretty::pretty_format_batches(&answer.batches)
                .map_err(|e| internal(&e))?;
            out.extend_from_slice(text.to_string().as_bytes());
            out.push(b'\n');
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &answer.batches {
                w.write(b).map_err(|e| internal(&e))?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            for b in &answer.batches {
                w.write(b).map_err(|e| internal(&e))?;
            }
            w.finish().map_err(|e| internal(&e))?;
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
        }
        Format::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, answer.schema.clone(), None)
                .map_err(|e| internal(&e))?;
            for b in &answer.batches {
                w.write(b).map_err(|e| internal(&e))?;
            }
            w.close().map_err(|e| internal(&e))?;
        }
    }
    Ok(out)
}
