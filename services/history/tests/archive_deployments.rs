#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! An archive and the NATS deployment it belongs to, against a real nats-server, real Parquet
//! files and real DataFusion.

mod common;

use std::time::{Duration, Instant};

use clawline_history::Scope;
use clawline_nats::testing::NatsServer;
use common::*;

/// An archive belongs to the deployment whose streams it archived. Pointed at another NATS (the
/// default `./data/run/archive` beside `--nats-url` of another deployment), a query is refused with
/// both named instead of mixing two histories (the archive's sequences count another stream's
/// messages), and an archiver refuses to write into it.
#[tokio::test]
async fn an_archive_of_another_deployment_is_refused_not_mixed() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    publish_steps(&js, "acme", 0..4).await;
    let mut a = archiver(&nats, &root, 2);
    wait_checkpoint(&root, "STEPS", 4).await;
    a.kill().unwrap();
    a.wait().unwrap();

    let other = NatsServer::start().await;
    let other_js = other.jetstream().await;
    publish_steps(&other_js, "zeta", 0..6).await;
    const COUNT: &str = "SELECT count(*) AS n FROM steps";
    let Err(err) = engine(&root, Some(other_js))
        .query(COUNT, &Scope::All)
        .await
    else {
        panic!("a query mixing two deployments answered");
    };
    let err = err.to_string();
    assert!(
        err.contains("another NATS deployment") && err.contains("--archive-only"),
        "{err}"
    );
    // Its own deployment, or the archive alone, answer as before.
    let own = query_json(&engine(&root, Some(js)), COUNT, &Scope::All).await;
    assert_eq!(own[0]["n"], 4);
    assert_eq!(
        query_json(&engine(&root, None), COUNT, &Scope::All).await[0]["n"],
        4
    );

    let mut b = archiver(&other, &root, 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = b.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the archiver kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    assert_eq!(
        checkpoint(&root, "STEPS"),
        4,
        "nothing of the other stream archived"
    );
}
