//! `clawline demo`, bounded, on this machine's CPUs: the closed loop (gateway → reward → batcher →
//! trainer → broadcaster → policy server swap) raises the reward of the answers users get, while
//! no request fails.
//!
//! The policy is the built-in tiny model, warm-started on the bundled corpus, where half the
//! assistant replies decline ("Sorry, I cannot help with that. Maybe ask someone else."): its
//! answers start out helpful about half the time, and the reward model and the users' thumbs
//! prefer the helpful ones. The loop has to shift that mixture from live traffic alone.
//!
//! The canary gate is off here so the test measures the learning loop, not the gate's CPU cost:
//! on 2 cores the canary's evaluations delay promotions, and the trainer (bounded to one version
//! ahead of the served one) waits for them, so the same 1280 requests teach less (+0.07 with the
//! gate vs +0.13 without, debug build). The gate has its own tests in the broadcaster.
//!
//! The margin: the last window's mean reward must beat the first's by more than 0.03 and by more
//! than five standard errors of the difference (each window's standard error is its reward spread
//! over √128), so sampling noise alone cannot pass it (a 5σ event). Measured on 2 cores (debug
//! build, the defaults: KL 0.1 to the starting model): 0.538 → 0.698 and 0.535 → 0.738, about
//! 17 and 24 standard errors.
//!
//! What made it stable: the batcher's window baseline is per reward source. With one baseline of
//! the combined reward, the thumbs (weight 2, from one user in four) swamped everything once most
//! answers were liked: whichever steps happened to come from the user who gives feedback got a
//! large advantage unrelated to their text, and the policy drifted (runs peaked, then fell back).
//! The KL penalty keeps the answers readable ("Hello Chloe! Sure, happy to help.") where without
//! it the reward climbs higher by repeating the reward model's favourite words.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

#[test]
fn the_demo_loop_raises_reward_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clawline"))
        .args(["--log-level", "warn", "demo", "--data-dir"])
        .arg(dir.path())
        .args(["--nats-port", &free_port().to_string(), "--listen", &addr()])
        .args(["--reward-listen", &addr(), "--batcher-listen", &addr()])
        .args(["--sql-listen", &addr(), "--policy-listen", &addr()])
        .args(["--trainer-listen", &addr(), "--broadcaster-listen", &addr()])
        .args(["--device", "cpu", "--no-canary"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    assert_eq!(report["failed"], 0, "{stdout}");
    assert_eq!(report["requests"], 1280);
    let windows = report["windows"].as_array().unwrap();
    let stat = |w: &Value| {
        let n = w["scored"].as_f64().unwrap();
        assert_eq!(n, 128.0, "every answer scored: {stdout}");
        (
            w["mean_reward"].as_f64().unwrap(),
            w["std_reward"].as_f64().unwrap() / n.sqrt(),
        )
    };
    let (first, se_first) = stat(&windows[0]);
    let (last, se_last) = stat(windows.last().unwrap());
    let margin = (5.0 * (se_first.powi(2) + se_last.powi(2)).sqrt()).max(0.03);
    assert!(
        last - first > margin,
        "mean reward {first:.4} → {last:.4}, needed +{margin:.4}\n{stdout}"
    );
    let versions = report["timeline"].as_array().unwrap();
    assert!(versions.len() >= 2, "versions were swapped in: {stdout}");
    let served = &report["interaction_to_served"];
    assert!(
        served["steps"].as_u64().unwrap() > 0 && served["median_s"].as_f64().unwrap() > 0.0,
        "users were served updates trained on their own steps: {stdout}"
    );
    assert!(dir.path().join("demo.svg").is_file());
}
