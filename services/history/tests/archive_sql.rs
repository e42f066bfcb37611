#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The archive and SQL against a real nats-server, real Parquet files and real DataFusion.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use clawline_history::{Scope, SqlConfig, SqlEngine, SqlError, tables};
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use clawline_schemas::*;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn the_archive_resumes_after_kill_9_with_no_row_twice_and_none_skipped() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    publish_steps(&js, "acme", 0..3000).await;

    let mut first = archiver(&nats, &root, 200);
    wait_checkpoint(&root, "STEPS", 400).await;
    first.kill().unwrap(); // SIGKILL, mid-stream
    first.wait().unwrap();
    assert!(checkpoint(&root, "STEPS") < 3000, "killed before the end");
    // What a kill inside a flush can leave: a temporary file and a file past the checkpoint.
    let part = root.join("steps/date=1970-01-01/channel=train");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(
        part.join("part-STEPS-00000000000000009000-00000000000000009100.parquet"),
        b"torn",
    )
    .unwrap();
    std::fs::write(part.join("junk.tmp"), b"torn").unwrap();

    publish_steps(&js, "acme", 3000..3500).await;
    let mut second = archiver(&nats, &root, 200);
    wait_checkpoint(&root, "STEPS", 3500).await;
    // A second archiver on the same directory is refused while another runs (it would take the
    // running one's flushes for crash leftovers and write every row again).
    let third = Command::new(env!("CARGO_BIN_EXE_clawline-history"))
        .args(["archive", "--nats-url", &nats.url(), "--archive-dir"])
        .arg(&root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused = clawline_runtime::testing::exits_within(
        third,
        Duration::from_secs(10),
        "a second archiver on the same directory",
    )
    .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("--archive-dir") && stderr.contains("in use by another process"),
        "{stderr}"
    );
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(!part.join("junk.tmp").exists());

    let rows = query_json(
        &engine(&root, None),
        "SELECT count(*) AS n, count(DISTINCT step_id) AS ids, min(stream_seq) AS lo, max(stream_seq) AS hi FROM steps",
        &Scope::All,
    )
    .await;
    assert_eq!(
        rows[0],
        json!({"n": 3500, "ids": 3500, "lo": 1, "hi": 3500})
    );
}

const COUNT_IDS: &str = "SELECT count(*) AS n, count(DISTINCT step_id) AS d FROM steps";

#[tokio::test]
async fn a_step_is_queryable_at_once_and_counted_once_when_archived() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let sql = engine(&root, Some(js.clone()));
    publish_steps(&js, "acme", 0..5).await;
    let started = Instant::now();
    let rows = query_json(&sql, "SELECT count(*) AS n FROM steps", &Scope::All).await;
    assert_eq!(rows[0]["n"], 5, "live tail, nothing archived yet");
    assert!(started.elapsed() < Duration::from_secs(2));

    let mut a = archiver(&nats, &root, 3);
    wait_checkpoint(&root, "STEPS", 3).await;
    publish_steps(&js, "acme", 5..7).await;
    // Some rows archived, some in the tail: each counted once.
    assert_eq!(
        query_json(&sql, COUNT_IDS, &Scope::All).await[0],
        json!({"n": 7, "d": 7})
    );
    a.kill().unwrap();
    a.wait().unwrap();

    // A flush under way has written a file past the checkpoint but not moved the checkpoint yet:
    // a query reads the archive as of its checkpoint (that file's rows are the tail's).
    let at = checkpoint(&root, "STEPS");
    let mut files = Vec::new();
    clawline_history::store::walk(&root.join("steps"), &mut files);
    let archived = files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let in_flight = archived.with_file_name(clawline_history::archive::file_name(
        "STEPS",
        at + 1,
        at + 3,
    ));
    std::fs::copy(archived, &in_flight).unwrap();
    assert_eq!(
        query_json(&sql, COUNT_IDS, &Scope::All).await[0],
        json!({"n": 7, "d": 7})
    );
}

#[tokio::test]
async fn every_table_has_its_schema_with_token_lists_and_text() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let s = step("acme", 1, "Paris.");
    publish_event(&js, subjects::steps("train"), &s)
        .await
        .unwrap();
    let reward = RewardAssigned {
        envelope: Envelope::new(
            RewardAssigned::id_for(&s.envelope.event_id, "rm:x@1", "v"),
            "test",
        )
        .at(now_ms()),
        tenant: "acme".into(),
        channel: Some("train".into()),
        trajectory_uid: s.trajectory_uid.clone(),
        step_id: Some(s.envelope.event_id.clone()),
        source: "rm:x@1".into(),
        value: 0.75,
        caused_by: s.envelope.event_id.clone(),
        ..Default::default()
    };
    publish_event(&js, subjects::rewards("rm"), &reward)
        .await
        .unwrap();
    let fb = FeedbackReceived {
        envelope: Envelope::new("fbk_1".into(), "test").at(now_ms()),
        tenant: "acme".into(),
        trajectory_uid: s.trajectory_uid.clone(),
        step_id: Some(s.envelope.event_id.clone()),
        thumbs: Some(Thumbs::Up),
        ..Default::default()
    };
    publish_event(&js, subjects::FEEDBACK.into(), &fb)
        .await
        .unwrap();
    let weights = WeightsPublished {
        envelope: Envelope::new(WeightsPublished::id_for(3, "ab12"), "test").at(now_ms()),
        version: 3,
        parent: 2,
        format: WeightsFormat::Lora,
        object: "v3/adapter_model.safetensors".into(),
        sha256: "ab12".into(),
        size: 4096,
        ..Default::default()
    };
    publish_event(&js, subjects::WEIGHTS_PUBLISHED.into(), &weights)
        .await
        .unwrap();
    let mut a = archiver(&nats, &root, 1);
    wait_checkpoint(&root, "STEPS", 1).await;
    wait_checkpoint(&root, "TRAJECTORIES", 1).await;
    a.kill().unwrap();
    a.wait().unwrap();

    let sql = engine(&root, Some(js.clone()));
    for table in tables::TABLES {
        let answer = sql
            .query(
                &format!("SELECT * FROM {} LIMIT 0", table.name),
                &Scope::All,
            )
            .await
            .unwrap();
        let names: Vec<&str> = answer
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let expected: Vec<String> = table
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, expected, "{}", table.name);
    }
    let answer = sql
        .query(
            "SELECT prompt_ids, response_logprobs, response_text FROM steps",
            &Scope::All,
        )
        .await
        .unwrap();
    assert_eq!(
        answer.schema.field(0).data_type().to_string(),
        "List(UInt32)"
    );
    assert_eq!(
        answer.schema.field(1).data_type().to_string(),
        "List(Float32)"
    );
    // The engine reads strings as views; answers still carry plain strings.
    assert_eq!(answer.schema.field(2).data_type().to_string(), "Utf8");
    assert!(
        answer
            .batches
            .iter()
            .all(|b| b.column(2).data_type().to_string() == "Utf8")
    );
    let rows = query_json(
        &sql,
        "SELECT step_id, reward, reward_source, response_text, channel FROM step_rewards",
        &Scope::All,
    )
    .await;
    assert_eq!(
        rows,
        vec![
            json!({"step_id": s.envelope.event_id, "reward": 0.75, "reward_source": "rm:x@1", "response_text": "Paris.", "channel": "train"})
        ]
    );
    let rows = query_json(&sql, "SELECT thumbs, step_id FROM feedback", &Scope::All).await;
    assert_eq!(
        rows,
        vec![json!({"thumbs": "up", "step_id": s.envelope.event_id})]
    );
    let rows = query_json(
        &sql,
        "SELECT event, version, parent, format, object, sha256, size FROM weights",
        &Scope::All,
    )
    .await;
    assert_eq!(
        rows,
        vec![
            json!({"event": "published", "version": 3, "parent": 2, "format": "lora",
            "object": "v3/adapter_model.safetensors", "sha256": "ab12", "size": 4096})
        ]
    );
}

#[tokio::test]
async fn bad_queries_get_clear_errors_and_limits_hold() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    for i in 0..400 {
        let text = format!("{i:05}").repeat(200);
        publish_event(&js, subjects::steps("train"), &step("acme", i, &text))
            .await
            .unwrap();
    }
    let sql = engine(&root, Some(js.clone()));
    match sql.query("SELEC 1", &Scope::All).await {
        Err(SqlError::Invalid(m)) => assert!(m.contains("Line: 1") && m.contains("Column"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    match sql.query("SELECT nope FROM steps", &Scope::All).await {
        Err(SqlError::Invalid(m)) => assert!(m.contains("nope"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    for write in [
        "CREATE TABLE x AS SELECT 1",
        "COPY (SELECT 1) TO '/tmp/clawline-x.csv'",
        "DROP VIEW steps",
    ] {
        assert!(
            matches!(
                sql.query(write, &Scope::All).await,
                Err(SqlError::Invalid(_))
            ),
            "{write}"
        );
    }
    let small = SqlEngine::new(
        SqlConfig {
            root: clawline_history::ArchiveRoot::local(&root),
            memory_limit: 256 << 10,
            ..Default::default()
        },
        Some(js.clone()),
    );
    match small
        .query(
            "SELECT count(*) FROM steps a JOIN steps b ON a.response_text = b.response_text",
            &Scope::All,
        )
        .await
    {
        Err(SqlError::Memory(m)) => assert!(!m.is_empty()),
        other => panic!(
            "expected the memory limit, got {:?}",
            other.map(|a| a.batches)
        ),
    }
}

#[tokio::test]
async fn post_sql_scopes_tenants_and_speaks_json_and_arrow() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    publish_steps(&js, "acme", 0..3).await;
    publish_steps(&js, "evil", 10..12).await;
    let keys = clawline_runtime::keys::ApiKeys::parse(
        "ka acme\nke evil\nkadm ops admin\nkr acme rate=0.2\nkb acme max_body=20\n",
    )
    .unwrap();
    let app = clawline_history::http::router(engine(&root, Some(js.clone())), keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sql", listener.local_addr().unwrap());
    tokio::spawn(async move { axum_serve(listener, app).await });
    let http = reqwest::Client::new();
    let ask =
        |key: &'static str, body: &'static str| http.post(&url).bearer_auth(key).body(body).send();

    let r: Value = ask(
        "ka",
        "SELECT tenant, count(*) AS n FROM steps GROUP BY tenant",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        r["rows"],
        json!([{"tenant": "acme", "n": 3}]),
        "a tenant sees only its rows"
    );
    assert_eq!(r["columns"][1]["name"], "n");
    let r: Value = ask("kadm", r#"{"sql": "SELECT count(*) AS n FROM steps"}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["rows"][0]["n"], 5, "admin sees all");
    let r = ask("ka", "SELECT * FROM batches").await.unwrap();
    assert_eq!(r.status(), 400, "no batches table for a tenant");
    let r = ask("ka", "SELEC").await.unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("Line"));
    let r = http.post(&url).body("SELECT 1").send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = http
        .post(&url)
        .bearer_auth("ke")
        .header("accept", clawline_history::http::ARROW_STREAM)
        .body("SELECT step_id FROM steps")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        clawline_history::http::ARROW_STREAM
    );
    let bytes = r.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 2);

    // A key's own rate and body cap hold here too.
    assert_eq!(ask("kr", "SELECT 1").await.unwrap().status(), 200);
    let r = ask("kr", "SELECT 1").await.unwrap();
    assert_eq!(r.status(), 429, "rate=0.2: one, then one every 5 s");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        ask("ka", "SELECT 1").await.unwrap().status(),
        200,
        "other keys unaffected"
    );
    assert_eq!(ask("kb", "SELECT 1").await.unwrap().status(), 200);
    let r = ask("kb", "SELECT 1 AS one, 2 AS two").await.unwrap();
    assert_eq!(r.status(), 413);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("20 bytes")
    );
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    axum::serve(listener, app).await.unwrap();
}

#[tokio::test]
async fn the_sql_command_writes_table_csv_json_and_parquet() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    publish_steps(&js, "acme", 0..3).await;
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clawline-history"))
            .args(["sql", "--nats-url", &nats.url(), "--archive-dir"])
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let q = "SELECT step_index, trajectory_uid FROM steps ORDER BY trajectory_uid";
    let out = clawline_runtime::testing::stdout_of("clawline-history sql", run(&[q]));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("| step_index | trajectory_uid |") && text.contains("t00002"),
        "{text}"
    );
    let out = run(&[q, "--format", "csv"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("step_index,trajectory_uid\n0,t00000\n")
    );
    let out = run(&[q, "--format", "json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rows[2],
        json!({"step_index": 0, "trajectory_uid": "t00002"})
    );
    let file = dir.path().join("out.parquet");
    let out = run(&[q, "--format", "parquet", "--output", file.to_str().unwrap()]);
    assert!(out.status.success());
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&file).unwrap())
            .unwrap();
    use parquet::file::reader::FileReader as _;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 3);
    let out = run(&["SELEC"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Line: 1"));
}
