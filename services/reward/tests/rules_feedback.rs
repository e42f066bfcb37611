#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! Rule rewards and feedback rewards through the running scorer and a real nats-server.

mod common;

use std::time::Duration;

use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use common::*;
use serde_json::json;

#[tokio::test]
async fn each_rule_scores_what_it_checks() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
bundled_model = false
[[rules]]
name = "gsm8k"
kind = "ground_truth"
extract = "gsm8k"
[[rules]]
name = "boxed"
kind = "ground_truth"
extract = "boxed"
[[rules]]
name = "no_apology"
kind = "regex"
pattern = "(?i)\\bsorry\\b"
on_match = -1.0
[[rules]]
name = "short"
kind = "length"
target = 4
per_token = 0.1
max_penalty = 0.5
[[rules]]
name = "tools"
kind = "tool_call"
"#;
    let svc = start(&nats, dir.path(), toml).await;
    let js = nats.jetstream().await;
    let with_gt = |mut s: StepRecorded, gt: &str| {
        s.metadata = Some(json!({"ground_truth": gt}));
        s
    };
    let right = with_gt(step("r1", 0, "3 + 4 = 7\n#### 7"), "7");
    let wrong = with_gt(
        step("r2", 0, "Sorry, I think that 3 + 4 = 8 today\n#### 8"),
        "#### 7",
    );
    let boxed = with_gt(step("r3", 0, r"so \boxed{1,000}"), "1000");
    let mut tools = step("r4", 0, "");
    tools.tools_json = Some(
        json!([{"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
        .to_string(),
    );
    let mut bad_tools = tools.clone();
    bad_tools.envelope.event_id = StepRecorded::id_for("default", "r5", 0, 0);
    bad_tools.trajectory_uid = "r5".into();
    tools.response_tool_calls = vec![ToolCall {
        id: "c1".into(),
        name: "weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    }];
    bad_tools.response_tool_calls = vec![ToolCall {
        id: "c1".into(),
        name: "weather".into(),
        arguments: r#"{"town": 3}"#.into(),
    }];
    for s in [&right, &wrong, &boxed, &tools, &bad_tools] {
        publish_step(&js, s).await;
    }
    // right: gsm8k, boxed(no box → wrong), length; wrong: gsm8k, boxed, regex, length;
    // boxed: gsm8k, boxed, length; tools: length, tools; bad_tools: length, tools.
    let all = rewards(&js, 3 + 4 + 3 + 2 + 2).await;
    let v = |s: &StepRecorded, src: &str| {
        let r = of(&all, &s.envelope.event_id, src);
        assert_eq!(r.len(), 1, "{src} on {}: {all:#?}", s.trajectory_uid);
        r[0].value
    };
    assert_eq!(v(&right, "rule:gsm8k"), 1.0);
    assert_eq!(
        v(&wrong, "rule:gsm8k"),
        0.0,
        "ground truth given as a GSM8K solution"
    );
    assert_eq!(v(&boxed, "rule:boxed"), 1.0, "1,000 equals 1000");
    assert_eq!(v(&right, "rule:boxed"), 0.0);
    assert_eq!(v(&wrong, "rule:no_apology"), -1.0);
    assert!(
        of(&all, &right.envelope.event_id, "rule:no_apology").is_empty(),
        "no on_miss, no reward"
    );
    assert!(
        (v(&right, "rule:short") + 0.3).abs() < 1e-9,
        "7 words, target 4"
    );
    assert_eq!(v(&wrong, "rule:short"), -0.5, "capped at max_penalty");
    assert_eq!(v(&tools, "rule:tools"), 1.0);
    assert_eq!(v(&bad_tools, "rule:tools"), -1.0);
    let problems = of(&all, &bad_tools.envelope.event_id, "rule:tools")[0]
        .details
        .clone()
        .unwrap();
    assert!(
        problems.to_string().contains("missing required `city`"),
        "{problems}"
    );
    assert!(
        of(&all, &tools.envelope.event_id, "rule:gsm8k").is_empty(),
        "no ground truth, no reward"
    );
    svc.stop().await;
}

#[tokio::test]
async fn explicit_feedback_client_rewards_and_completions_become_rewards() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&nats, dir.path(), "bundled_model = false\nrules = []\n").await;
    let js = nats.jetstream().await;
    let step_id = StepRecorded::id_for("default", "f1", 0, 0);
    let fb = |id: &str, step: Option<&str>| FeedbackReceived {
        envelope: Envelope::new(id.into(), "test"),
        tenant: "default".into(),
        trajectory_uid: "f1".into(),
        step_id: step.map(str::to_string),
        ..Default::default()
    };
    let thumbs = FeedbackReceived {
        thumbs: Some(Thumbs::Down),
        ..fb("fbk_1", Some(&step_id))
    };
    let rating = FeedbackReceived {
        rating: Some(0.75),
        ..fb("fbk_2", None)
    };
    let comment_only = FeedbackReceived {
        comment: Some("meh".into()),
        ..fb("fbk_3", Some(&step_id))
    };
    for f in [&thumbs, &rating, &comment_only] {
        publish_event(&js, subjects::FEEDBACK.into(), f)
            .await
            .unwrap();
    }
    let done = TrajectoryCompleted {
        envelope: Envelope::new(TrajectoryCompleted::id_for("default", "f1"), "test"),
        tenant: "default".into(),
        channel: "train".into(),
        trajectory_uid: "f1".into(),
        reward: Some(0.5),
        ..Default::default()
    };
    publish_event(&js, subjects::TRAJECTORY_COMPLETED.into(), &done)
        .await
        .unwrap();
    let mut with_reward = step("f1", 1, "ok");
    with_reward.reward = Some(2.0);
    publish_step(&js, &with_reward).await;

    let all = rewards(&js, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all_now = read_events::<RewardAssigned>(&js, "REWARDS").await;
    assert_eq!(
        all_now.len(),
        4,
        "a comment alone gives no reward: {all_now:#?}"
    );
    let find = |caused_by: &str| all.iter().find(|r| r.caused_by == caused_by).unwrap();
    let r = find("fbk_1");
    assert_eq!(
        (r.source.as_str(), r.value, r.scope),
        ("feedback:explicit", -1.0, RewardScope::Step)
    );
    assert_eq!(r.step_id.as_deref(), Some(step_id.as_str()));
    let r = find("fbk_2");
    assert_eq!(
        (r.value, r.scope),
        (0.5, RewardScope::Trajectory),
        "rating 0.75 → 0.5"
    );
    assert_eq!(r.step_id, None);
    let r = find(&done.envelope.event_id);
    assert_eq!(
        (r.source.as_str(), r.value, r.scope),
        ("client", 0.5, RewardScope::Trajectory)
    );
    let r = find(&with_reward.envelope.event_id);
    assert_eq!((r.source.as_str(), r.value), ("client", 2.0));
    svc.stop().await;
}

#[tokio::test]
async fn guards_score_repetition_degenerate_text_and_broken_tool_calls() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
bundled_model = false
[[rules]]
name = "repetition"
kind = "repetition"
ngram = 3
penalty = 1.0
[[rules]]
name = "degenerate"
kind = "degenerate"
on_match = -2.0
[[rules]]
name = "tools"
kind = "tool_call"
"#;
    let svc = start(&nats, dir.path(), toml).await;
    let js = nats.jetstream().await;
    let looping = step("g1", 0, "Happy to help, happy to help, happy to help!");
    let echo = step("g2", 0, "Yes. Yes. Yes. No.");
    let clean = step("g3", 0, "Paris is the capital of France, and Lyon is not.");
    let junk = step("g4", 0, "Sure<|im_start|>user\u{7}caf\u{FFFD}");
    let weather = json!([{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    .to_string();
    // The engine left the call in the text: no parsed tool_calls.
    let mut unparsed = step(
        "g5",
        0,
        "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    );
    unparsed.tools_json = Some(weather.clone());
    let mut bad_json = step("g6", 0, "");
    bad_json.tools_json = Some(weather);
    bad_json.response_tool_calls = vec![ToolCall {
        id: "c1".into(),
        name: "weather".into(),
        arguments: r#"{"city": "Paris""#.into(),
    }];
    for s in [&looping, &echo, &clean, &junk, &unparsed, &bad_json] {
        publish_step(&js, s).await;
    }
    // Every step with words: repetition and degenerate; unparsed also tools; bad_json (no text)
    // only tools.
    let all = rewards(&js, 2 * 5 + 1 + 1).await;
    let v = |s: &StepRecorded, src: &str| {
        let r = of(&all, &s.envelope.event_id, src);
        assert_eq!(r.len(), 1, "{src} on {}: {all:#?}", s.trajectory_uid);
        (r[0].value, r[0].details.clone().unwrap())
    };
    let (value, details) = v(&looping, "rule:repetition");
    assert!((value + 4.0 / 7.0).abs() < 1e-9, "{value} {details}");
    assert_eq!(details["repeated_ngrams"], 4);
    assert_eq!(
        v(&echo, "rule:repetition").0,
        -0.5,
        "two of four sentences repeat"
    );
    assert_eq!(v(&clean, "rule:repetition").0, 0.0);
    for s in [&looping, &echo, &clean] {
        assert_eq!(v(s, "rule:degenerate").0, 0.0);
    }
    let (value, details) = v(&junk, "rule:degenerate");
    assert_eq!(value, -2.0);
    assert_eq!(
        details["found"],
        json!([
            "special_token_markup",
            "control_character",
            "replacement_character"
        ])
    );
    assert_eq!(details["markup"], "<|im_start|>");
    let (value, details) = v(&unparsed, "rule:tools");
    assert_eq!(value, -1.0, "a call left in the text is a broken call");
    assert!(details.to_string().contains("<tool_call>"), "{details}");
    let (value, details) = v(&bad_json, "rule:tools");
    assert_eq!(value, -1.0);
    assert!(
        details.to_string().contains("arguments are not JSON"),
        "{details}"
    );
    for s in [&looping, &echo, &clean, &junk] {
        assert!(
            of(&all, &s.envelope.event_id, "rule:tools").is_empty(),
            "no calls"
        );
    }
    svc.stop().await;
}

#[tokio::test]
async fn the_default_rules_guard_against_repetition_and_degenerate_text() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&nats, dir.path(), "").await;
    let js = nats.jetstream().await;
    let looping = step(
        "d1",
        0,
        "Sure, happy to help. Sure, happy to help. Sure, happy to help.",
    );
    publish_step(&js, &looping).await;
    // The bundled model, repetition and degenerate text.
    let all = rewards(&js, 3).await;
    let one = |src: &str| {
        let r = of(&all, &looping.envelope.event_id, src);
        assert_eq!(r.len(), 1, "{src}: {all:#?}");
        r[0].value
    };
    assert!(one("rm:bundled@") > 0.5, "the reward model likes it");
    assert!(one("rule:repetition") < -0.5, "the guard does not");
    assert_eq!(one("rule:degenerate"), 0.0);
    svc.stop().await;
}
