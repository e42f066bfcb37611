#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! Replay, import and export against a real nats-server and real DataFusion (and pyarrow).

mod common;

use std::path::Path;
use std::process::Command;

use clawline_history::Scope;
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use clawline_schemas::*;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn replaying_twice_adds_the_steps_once_with_their_provenance() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let sql = engine(&dir.path().join("archive"), Some(js.clone()));
    publish_steps(&js, "acme", 0..5).await;
    let query = "SELECT step_id FROM steps WHERE channel = 'train' AND response_ids[2] < 3";
    let r = clawline_history::replay::replay(&sql, &js, query, "offline", 10_000.0, "test")
        .await
        .unwrap();
    assert_eq!(
        (r.selected, r.published, r.already_replayed, r.missing),
        (3, 3, 0, 0)
    );
    let r = clawline_history::replay::replay(&sql, &js, query, "offline", 10_000.0, "test")
        .await
        .unwrap();
    assert_eq!(
        (r.published, r.already_replayed),
        (0, 3),
        "the second run adds nothing"
    );
    let rows = query_json(
        &sql,
        "SELECT s.replay_of, s.source, s.response_ids, o.response_ids AS original_ids, s.metadata \
         FROM steps s JOIN steps o ON o.step_id = s.replay_of WHERE s.channel = 'offline' ORDER BY s.replay_of",
        &Scope::All,
    )
    .await;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["source"], "replayed");
        assert_eq!(
            row["response_ids"], row["original_ids"],
            "the captured tokens, unchanged"
        );
        let meta: Value = serde_json::from_str(row["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(meta["replay_query"], query);
    }
    let done = query_json(
        &sql,
        "SELECT count(*) AS n FROM trajectories WHERE channel = 'offline' AND event = 'completed'",
        &Scope::All,
    )
    .await;
    assert_eq!(
        done[0]["n"], 3,
        "replayed trajectories are complete for the batcher"
    );
    let err = clawline_history::replay::replay(&sql, &js, "SELECT 1 AS x", "offline", 1.0, "t")
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("step_id"), "{err:#}");
}

#[tokio::test]
async fn import_lands_every_good_line_and_names_the_bad_ones() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logs.jsonl");
    let good = |q: &str, a: &str| {
        json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "reward": 1.0, "metadata": {"src": "crm"}}).to_string()
    };
    let lines = [
        good("2+2?", "4"),
        "{not json".to_string(),
        good("Capital of France?", "Paris"),
        json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(),
        json!({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "reward": "high"}).to_string(),
        String::new(),
        good("Color of the sky?", "Blue"),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let tok = clawline_runtime::tokenize::ChatTokenizer::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/tokenizer"),
    )
    .unwrap();
    let r = clawline_history::import::import(&js, &file, "imported", "acme", Some(&tok), "test")
        .await
        .unwrap();
    assert_eq!(r.imported, 3);
    let bad: Vec<u64> = r.bad.iter().map(|(n, _)| *n).collect();
    assert_eq!(bad, vec![2, 4, 5], "{:?}", r.bad);
    assert!(r.bad[1].1.contains("assistant"), "{:?}", r.bad);
    let sql = engine(&dir.path().join("archive"), Some(js.clone()));
    let rows = query_json(&sql, "SELECT source, token_source, is_last, reward, cardinality(prompt_ids) > 0 AS has_ids, response_text FROM steps ORDER BY response_text", &Scope::All).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        json!({"source": "imported", "token_source": "retokenized", "is_last": true, "reward": 1.0, "has_ids": true, "response_text": "4"})
    );
    // The same file again: the same ids, stored once.
    clawline_history::import::import(&js, &file, "imported", "acme", Some(&tok), "test")
        .await
        .unwrap();
    let n = query_json(&sql, "SELECT count(*) AS n FROM steps", &Scope::All).await;
    assert_eq!(n[0]["n"], 3);
}

#[tokio::test]
async fn export_writes_a_dataset_with_a_manifest_that_pyarrow_reads() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    publish_steps(&js, "acme", 0..4).await;
    let s = step("acme", 0, "an answer");
    let reward = RewardAssigned {
        envelope: Envelope {
            event_id: RewardAssigned::id_for(
                &s.envelope.event_id,
                "rm:x@12345678",
                "1234567812345678",
            ),
            event_time: now_ms(),
            ..Default::default()
        },
        tenant: "acme".into(),
        trajectory_uid: s.trajectory_uid.clone(),
        step_id: Some(s.envelope.event_id.clone()),
        source: "rm:x@12345678".into(),
        source_version: "1234567812345678".into(),
        value: 0.5,
        caused_by: s.envelope.event_id.clone(),
        ..Default::default()
    };
    publish_event(&js, subjects::rewards("rm"), &reward)
        .await
        .unwrap();
    let sql = engine(&dir.path().join("archive"), Some(js.clone()));
    let out = dir.path().join("dataset");
    let query = "SELECT step_id, policy_version, stream_seq, prompt_ids, response_ids, response_text FROM steps";
    let manifest_path =
        clawline_history::export::export(&sql, query, clawline_history::Format::Parquet, &out)
            .await
            .unwrap();
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["rows"], 4);
    assert_eq!(manifest["query"], query);
    assert_eq!(manifest["provenance"]["policy_versions"], json!([2]));
    assert_eq!(
        manifest["provenance"]["stream_sequences"],
        json!({"first": 1, "last": 4})
    );
    assert_eq!(
        manifest["provenance"]["reward_models"],
        json!([{"source": "rm:x@12345678", "source_version": "1234567812345678"}])
    );
    let file = out.join(manifest["files"][0]["name"].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    use sha2::Digest as _;
    assert_eq!(
        manifest["files"][0]["sha256"],
        hex::encode(sha2::Sha256::digest(&bytes))
    );

    // The export directory is a dataset as the Python data stack opens one: the file, the
    // directory (the manifest beside the data is not taken for data), and pandas.
    let python = clawline_runtime::testing::python();
    let out = Command::new(python)
        .args(["-c", "import sys, pyarrow.parquet as pq, pyarrow.dataset as ds, pandas as pd\n\
t = pq.read_table(sys.argv[1]); d = ds.dataset(sys.argv[2]).to_table(); df = pd.read_parquet(sys.argv[2])\n\
assert d.num_rows == t.num_rows == len(df), (d.num_rows, len(df))\n\
print(t.num_rows, t.schema.field('response_ids').type, df['response_text'][0])"])
        .arg(&file)
        .arg(file.parent().unwrap())
        .output()
        .unwrap();
    let out = clawline_runtime::testing::stdout_of("pyarrow and pandas", out);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "4 list<item: uint32> an answer"
    );
}
