//! `clawline up` after its nats-server died: it starts it again and nothing is lost.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// The pid of the nats-server `up` (pid `parent`) runs, from `/proc`.
fn nats_server_child(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces, so read after the last ')'.
            let (head, tail) = stat.rsplit_once(')')?;
            let ppid: u32 = tail.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent && head.ends_with("(nats-server")).then_some(pid)
        })
}

/// nats-server killed under `clawline up`: every call is still answered, `up` starts nats-server
/// again by itself, and the steps captured meanwhile (spooled by the gateway) arrive exactly once.
#[tokio::test]
async fn clawline_up_restarts_a_killed_nats_server_and_loses_no_step() {
    let run = Running::start().await;
    let (http, url) = (&run.http, &run.url);
    let (nats_port, http_port, child) = (run.nats_port, run.http_port, run.child);
    let chat = |text: String| {
        http.post(format!("{url}/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
            .send()
    };
    assert_eq!(chat("before".into()).await.unwrap().status(), 200);
    assert_eq!(stored_steps(nats_port).await, 1);

    let nats = nats_server_child(child.0.id()).expect("up runs a nats-server");
    let killed = Command::new("kill")
        .args(["-KILL", &nats.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for i in 0..10 {
        let r = chat(format!("during {i}")).await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "call {i} failed while nats-server was down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let restarted = nats_server_child(child.0.id()).is_some_and(|pid| pid != nats);
        if restarted
            && tokio::time::timeout(Duration::from_secs(2), stored_steps(nats_port))
                .await
                .is_ok_and(|n| n == 11)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server not back with every step within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Exactly once: the spool is drained and nothing arrives a second time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored_steps(nats_port).await, 11);
    // The rest of the pipeline came back too: every step scored once, every step queryable once.
    wait_rewards(nats_port, 11).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = sql(
            http,
            http_port,
            "SELECT count(*) AS n, count(DISTINCT step_id) AS ids FROM steps",
        )
        .await;
        if rows["rows"][0]["n"] == 11 {
            assert_eq!(rows["rows"][0]["ids"], 11, "{rows}");
            break;
        }
        assert!(Instant::now() < deadline, "SQL sees {rows}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(child).await;
}
