//! Export: a query's rows as Parquet or JSON lines plus a `_manifest.json` with provenance (the
//! leading `_` keeps dataset readers — pyarrow, pandas, Spark — from taking it for data).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clawline_schemas::now_ms;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::replay::rows;
use crate::sql::{Format, Scope, SqlEngine, render};

/// The provenance file's name: readers of a dataset directory skip names starting with `_`.
pub const MANIFEST: &str = "_manifest.json";

/// Writes `query`'s rows to `dir` as `data.parquet` or `data.jsonl`, plus `_manifest.json`.
pub async fn export(
    engine: &SqlEngine,
    query: &str,
    format: Format,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let answer = engine
        .query(query, &Scope::All)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (name, bytes) = match format {
        Format::Parquet => (
            "data.parquet",
            render(&answer, Format::Parquet).map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        Format::Json => {
            let rows: Vec<Value> = serde_json::from_slice(
                &render(&answer, Format::Json).map_err(|e| anyhow::anyhow!("{e}"))?,
            )?;
            let mut out = Vec::new();
            for r in rows {
                serde_json::to_writer(&mut out, &r)?;
                out.push(b'\n');
            }
            ("data.jsonl", out)
        }
        other => anyhow::bail!("--format {other:?}: export writes parquet or jsonl"),
    };
    let path = dir.join(name);
    std::fs::write(&path, &bytes).with_context(|| format!("{}", path.display()))?;
    let row_count: usize = answer.batches.iter().map(|b| b.num_rows()).sum();
    let columns: BTreeSet<String> = answer
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let wrapped = |select: &str| format!("SELECT {select} FROM ({query}) AS q");
    let mut provenance = serde_json::Map::new();
    if columns.contains("stream_seq") {
        let r = rows(
            engine,
            &wrapped("min(stream_seq) AS first, max(stream_seq) AS last"),
        )
        .await?;
        provenance.insert(
            "stream_sequences".into(),
            r.into_iter().next().unwrap_or(Value::Null),
        );
    }
    if columns.contains("policy_version") {
        let r = rows(engine, &wrapped("DISTINCT policy_version")).await?;
        let versions: Vec<Value> = r
            .into_iter()
            .filter_map(|v| v.get("policy_version").cloned())
            .collect();
        provenance.insert("policy_versions".into(), Value::Array(versions));
    }
    if columns.contains("step_id") {
        let r = rows(
            engine,
            &format!(
                "SELECT DISTINCT source, source_version FROM rewards WHERE source LIKE 'rm:%' \
                 AND step_id IN (SELECT step_id FROM ({query}) AS q) ORDER BY source"
            ),
        )
        .await?;
        provenance.insert("reward_models".into(), Value::Array(r));
    }
    let manifest = json!({
        "query": query,
        "created_at_ms": now_ms(),
        "format": name.rsplit('.').next(),
        "rows": row_count,
        "columns": answer.schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string()})).collect::<Vec<_>>(),
        "provenance": provenance,
        "files": [{
            "name": name,
            "rows": row_count,
            "bytes": bytes.len(),
            "sha256": hex::encode(Sha256::digest(&bytes)),
        }],
        "producer": format!("clawline-history/{}", env!("CARGO_PKG_VERSION")),
    });
    let manifest_path = dir.join(MANIFEST);
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest_path)
}
