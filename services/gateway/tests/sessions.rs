//! Unmodified clients get trajectories from their conversations; feedback lands on steps.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn ask(h: &Harness, messages: &[Value]) -> (String, Value, String) {
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "mock-model", "messages": messages}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let trajectory = r.headers()["x-clawline-trajectory"]
        .to_str()
        .unwrap()
        .to_string();
    let step_id = r.headers()["x-clawline-step-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = r.json().await.unwrap();
    (trajectory, body["choices"][0]["message"].clone(), step_id)
}

#[tokio::test]
async fn a_call_that_extends_the_last_answer_continues_the_trajectory() {
    let h = Harness::start().await;
    let mut conversation = vec![
        json!({"role": "system", "content": "You help."}),
        json!({"role": "user", "content": "hi"}),
    ];
    let (t1, answer, _) = ask(&h, &conversation).await;
    conversation.push(answer);
    conversation.push(json!({"role": "user", "content": "tell me more"}));
    let (t2, answer, _) = ask(&h, &conversation).await;
    assert_eq!(t1, t2, "same conversation, same trajectory");
    conversation.push(answer);
    conversation.push(json!({"role": "user", "content": "thanks"}));
    let (t3, _, _) = ask(&h, &conversation).await;
    assert_eq!(t1, t3);

    // A new conversation with the same opening is a new trajectory in the same prompt group.
    let (other, _, _) = ask(&h, &conversation[..2]).await;
    assert_ne!(other, t1);
    // Editing an earlier answer branches off: not the same trajectory.
    let mut edited = conversation.clone();
    edited[2] = json!({"role": "assistant", "content": "something else"});
    let (branched, _, _) = ask(&h, &edited).await;
    assert_ne!(branched, t1);

    let steps = h.steps().await;
    let of_t1: Vec<u32> = steps
        .iter()
        .filter(|s| s.trajectory_uid == t1)
        .map(|s| s.step_index)
        .collect();
    assert_eq!(of_t1, vec![0, 1, 2]);
    let first_of_other = steps.iter().find(|s| s.trajectory_uid == other).unwrap();
    assert_eq!(first_of_other.step_index, 0);
    assert_eq!(
        first_of_other.prompt_uid, steps[0].prompt_uid,
        "same opening, same prompt group"
    );
    let registered: Vec<TrajectoryRegistered> = h
        .events("TRAJECTORIES", "clawline.trajectories.registered")
        .await;
    assert_eq!(registered.len(), 3, "one registration per new conversation");
}

#[tokio::test]
async fn the_trajectory_header_groups_calls_and_sets_channel_and_prompt() {
    let h = Harness::start().await;
    for i in 0..2 {
        let r = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .header("x-clawline-trajectory", "my-run-1")
            .header("x-clawline-prompt", "q-42")
            .header("x-clawline-channel", "val")
            .json(&chat_body(&format!("independent call {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let steps = h.steps().await;
    assert_eq!(
        steps
            .iter()
            .map(|s| (
                s.step_index,
                s.trajectory_uid.as_str(),
                s.prompt_uid.as_str(),
                s.channel.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![
            (0, "my-run-1", "q-42", "val"),
            (1, "my-run-1", "q-42", "val")
        ]
    );
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-clawline-channel", "bad.channel")
        .json(&chat_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A trajectory id the client chose outlives the gateway: after a restart its calls continue it
/// with new step ids (before, step indexes began at 0 again and JetStream dropped the new steps as
/// duplicates of the old: 4 calls, 2 steps stored).
#[tokio::test]
async fn a_client_named_trajectory_keeps_every_step_across_gateway_restarts() {
    let mut h = Harness::start().await;
    let mut ids = Vec::new();
    for round in 0..3 {
        for i in 0..2 {
            ids.push(call_named(&h, "agent-session-7", &format!("round {round} call {i}")).await);
        }
        h = h.restart_gateway().await;
    }
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 6, "step ids reused: {ids:?}");
    h.wait_for_messages("STEPS", 6).await;
    let steps = h.steps().await;
    assert_eq!(
        steps.iter().map(Event::event_id).collect::<Vec<_>>(),
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "every acknowledged call has its step, in order"
    );
    let indexes: Vec<u32> = steps.iter().map(|s| s.step_index).collect();
    assert!(
        indexes.windows(2).all(|w| w[0] < w[1]),
        "indexes go forward across restarts: {indexes:?}"
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.trajectory_uid == "agent-session-7")
            .count(),
        6
    );
}

#[tokio::test]
async fn an_idle_session_ends_with_an_idle_completion() {
    let h = Harness::with(Options {
        extra_args: vec!["--session-idle".into(), "100ms".into()],
        ..Default::default()
    })
    .await;
    let (t, _, _) = ask(&h, &[json!({"role": "user", "content": "hello"})]).await;
    // The sweeper runs every 10 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    loop {
        let completed: Vec<TrajectoryCompleted> = h
            .events("TRAJECTORIES", "clawline.trajectories.completed")
            .await;
        if let Some(c) = completed.first() {
            assert_eq!(c.trajectory_uid, t);
            assert_eq!(c.reason, CompletionReason::IdleTimeout);
            assert_eq!(c.last_step_index, Some(0));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no idle completion");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn feedback_lands_on_the_step_the_client_names() {
    let h = Harness::start().await;
    let mut conversation = vec![json!({"role": "user", "content": "capital of France?"})];
    let (t, answer, first_step) = ask(&h, &conversation).await;
    conversation.push(answer);
    conversation.push(json!({"role": "user", "content": "and Spain?"}));
    let (_, _, second_step) = ask(&h, &conversation).await;

    let r = h.post("/v1/feedback", json!({"trajectory_uid": t, "step_id": second_step, "thumbs": "down", "correction": "Madrid"})).await;
    assert_eq!(r.status(), 200);
    let r = h
        .post(
            "/v1/feedback",
            json!({"trajectory_uid": t, "step_index": 0, "rating": 4, "rating_scale": 5}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = h
        .post(
            "/v1/feedback",
            json!({"trajectory_uid": t, "comment": "good session overall"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // The answer's step id alone is enough: it names its trajectory.
    let r = h
        .post(
            "/v1/feedback",
            json!({"step_id": first_step, "thumbs": "up"}),
        )
        .await;
    assert_eq!(r.status(), 200);

    let feedback: Vec<FeedbackReceived> = h
        .events("TRAJECTORIES", "clawline.trajectories.feedback")
        .await;
    assert_eq!(feedback.len(), 4);
    assert_eq!(feedback[3].trajectory_uid, t);
    assert_eq!(feedback[3].step_index, Some(0));
    assert_eq!(feedback[3].step_id.as_deref(), Some(first_step.as_str()));
    assert_eq!(feedback[3].thumbs, Some(Thumbs::Up));
    assert_eq!(feedback[0].step_id.as_deref(), Some(second_step.as_str()));
    assert_eq!(feedback[0].step_index, Some(1));
    assert_eq!(feedback[0].thumbs, Some(Thumbs::Down));
    assert_eq!(feedback[0].correction.as_deref(), Some("Madrid"));
    assert_eq!(feedback[1].step_id.as_deref(), Some(first_step.as_str()));
    assert_eq!(feedback[1].rating, Some(0.75));
    assert_eq!(feedback[2].step_id, None, "trajectory-level feedback");
    let steps = h.steps().await;
    assert_eq!(
        steps[1].envelope.event_id, second_step,
        "the header names the recorded step"
    );

    for (body, param) in [
        (json!({"trajectory_uid": t, "rating": 9}), Some("rating")),
        (
            json!({"trajectory_uid": t, "step_index": 5, "thumbs": "up"}),
            Some("step_index"),
        ),
        (
            json!({"trajectory_uid": t, "step_id": "stp_nope", "thumbs": "up"}),
            Some("step_id"),
        ),
        (json!({"trajectory_uid": t}), None),
        (json!({"trajectory_uid": t, "thumbs": "sideways"}), None),
        (json!({"thumbs": "up"}), Some("trajectory_uid")),
    ] {
        let r = h.post("/v1/feedback", body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let err: Value = r.json().await.unwrap();
        if let Some(param) = param {
            assert_eq!(err["error"]["param"], param, "{body}");
        }
    }
    let r = h
        .post(
            "/v1/feedback",
            json!({"trajectory_uid": "unknown", "thumbs": "up"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = h
        .post(
            "/v1/feedback",
            json!({"step_id": "stp_unknown", "thumbs": "up"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let feedback: Vec<FeedbackReceived> = h
        .events("TRAJECTORIES", "clawline.trajectories.feedback")
        .await;
    assert_eq!(feedback.len(), 4, "rejected feedback changes nothing");
}

/// OpenClaw's heartbeat wakes the agent in the user's session every 30 minutes. Its turn stays in
/// the conversation's trajectory but is background: not the user's reaction to the answer before
/// it, and the user's next message reacts to the answer they saw, not to the heartbeat's.
#[tokio::test]
async fn an_agents_heartbeat_is_a_background_turn_of_the_same_conversation() {
    let h = Harness::start().await;
    let mut conversation = vec![
        json!({"role": "system", "content": "You are a personal assistant."}),
        json!({"role": "user", "content": "[Thu 2026-12-03 06:22 UTC] What is on my list?"}),
    ];
    let (t0, answer, s0) = ask(&h, &conversation).await;
    conversation.push(answer);
    // OpenClaw 2026.9's default heartbeat prompt, as it sends it.
    conversation.push(json!({"role": "user", "content": "Follow the heartbeat monitor scratch context when provided. Recurring tasks are automations; create or change their schedules with the automations tool, not heartbeat scratch. Do not infer or repeat old tasks from prior chats. If nothing needs attention, reply HEARTBEAT_OK.\nWhen reading HEARTBEAT.md, use workspace file /home/u/.openclaw/workspace/HEARTBEAT.md (exact case). Do not read docs/heartbeat.md.\nCurrent time: Thursday, December 3rd, 2026 - 06:52 (UTC)"}));
    let (t1, _, s1) = ask(&h, &conversation).await;
    // It had nothing to say, so OpenClaw leaves the exchange out of the history it sends next.
    conversation.truncate(3);
    conversation
        .push(json!({"role": "user", "content": "[Thu 2026-12-03 07:01 UTC] No, that is wrong."}));
    let (t2, _, s2) = ask(&h, &conversation).await;
    assert_eq!(
        (t0.as_str(), t1.as_str()),
        (t2.as_str(), t2.as_str()),
        "one conversation"
    );

    let steps = h.steps().await;
    let step = |id: &str| steps.iter().find(|s| s.event_id() == id).unwrap().clone();
    assert!(!step(&s0).background);
    assert!(step(&s1).background, "the heartbeat is background");
    assert_eq!(
        step(&s1).previous_step_id,
        None,
        "a heartbeat prompt is no feedback"
    );
    assert!(!step(&s2).background);
    assert_eq!(
        step(&s2).previous_step_id.as_deref(),
        Some(s0.as_str()),
        "the correction is feedback on the answer the user saw"
    );

    // Any client can say so; a value that is neither true nor false is refused.
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-clawline-background", "true")
        .json(&chat_body("nightly digest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-clawline-step-id"]
        .to_str()
        .unwrap()
        .to_string();
    h.wait_for_messages("STEPS", 4).await;
    assert!(
        h.steps()
            .await
            .iter()
            .any(|s| s.envelope.event_id == id && s.background)
    );
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-clawline-background", "sometimes")
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "x-clawline-background", "{body}");
    assert_eq!(
        stream_count(&h.js().await, "STEPS").await,
        4,
        "the refused call changed nothing"
    );
}

/// One call as Claude Code makes it: its session id in `x-claude-code-session-id`.
async fn ask_in_session(h: &Harness, session: &str, messages: &[Value]) -> (String, Value, String) {
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-claude-code-session-id", session)
        .json(&json!({"model": "mock-model", "messages": messages}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header = |name: &str| r.headers()[name].to_str().unwrap().to_string();
    let (trajectory, step_id) = (
        header("x-clawline-trajectory"),
        header("x-clawline-step-id"),
    );
    let body: Value = r.json().await.unwrap();
    (trajectory, body["choices"][0]["message"].clone(), step_id)
}

#[tokio::test]
async fn a_history_the_agent_compacted_continues_its_conversation() {
    let h = Harness::start().await;
    let system = json!({"role": "system", "content": "You are Claude Code."});
    let mut history = vec![
        system.clone(),
        json!({"role": "user", "content": "Fix the failing test in parser.rs"}),
    ];
    let (t1, answer, _) = ask_in_session(&h, "sess-1", &history).await;
    history.push(answer);
    // Claude Code asks the model for a summary of the conversation (`/compact`): a background
    // turn of the same conversation.
    let mut summarize = history.clone();
    summarize.push(json!({"role": "user", "content": "Your task is to create a detailed summary of the conversation so far, paying close attention to the user's explicit requests."}));
    let (t2, _, _) = ask_in_session(&h, "sess-1", &summarize).await;
    assert_eq!(t2, t1);
    // (The mock echoes; a model's summary would not repeat the request.)
    let summary = "The user asked to fix a failing parser test; the fix is in parse_header.";
    // Then it goes on from the summary alone: no earlier answer in the history.
    let compacted = vec![
        system.clone(),
        json!({"role": "user", "content": format!("This session is being continued from a previous conversation that ran out of context. The summary below covers the earlier portion of the conversation.\n\n{summary}")}),
        json!({"role": "user", "content": "Now run the tests again."}),
    ];
    let (t3, answer, _) = ask_in_session(&h, "sess-1", &compacted).await;
    assert_eq!(t3, t1, "the compacted history continues the conversation");
    let mut after = compacted.clone();
    after.push(answer);
    after.push(json!({"role": "user", "content": "Thanks."}));
    let (t4, _, _) = ask_in_session(&h, "sess-1", &after).await;
    assert_eq!(t4, t1, "and the turns after it follow");

    // A subagent shares its parent's session id but opens with its own task: its own trajectory.
    let task = [
        system.clone(),
        json!({"role": "user", "content": "Search the repository for parser tests."}),
    ];
    let (sub, _, _) = ask_in_session(&h, "sess-1", &task).await;
    assert_ne!(sub, t1);
    // A summary without the agent's session id, or in another session, starts afresh.
    let (other, _, _) = ask(&h, &compacted).await;
    assert_ne!(other, t1);
    let (elsewhere, _, _) = ask_in_session(&h, "sess-2", &compacted).await;
    assert_ne!(elsewhere, t1);

    let steps = h.steps().await;
    let of_t1: Vec<(u32, bool)> = steps
        .iter()
        .filter(|s| s.trajectory_uid == t1)
        .map(|s| (s.step_index, s.background))
        .collect();
    assert_eq!(
        of_t1,
        [(0, false), (1, true), (2, false), (3, false)],
        "the summary request is the agent's own turn"
    );
    let resumed = steps
        .iter()
        .find(|s| s.trajectory_uid == t1 && s.step_index == 2)
        .unwrap();
    assert!(
        resumed.previous_step_id.is_none(),
        "the summary replaced the answers: no reaction to one of them"
    );
}

#[tokio::test]
async fn openclaw_compaction_keeps_the_conversation_and_its_feedback() {
    let h = Harness::start().await;
    let system = json!({"role": "system", "content": "You are OpenClaw, a personal assistant."});
    let mut history = vec![
        system.clone(),
        json!({"role": "user", "content": "[Thu 2026-12-03 06:22 UTC] Plan my week"}),
    ];
    let (t1, answer, _) = ask(&h, &history).await;
    history.push(answer);
    history.push(
        json!({"role": "user", "content": "[Thu 2026-12-03 06:23 UTC] Add the gym on Tuesday"}),
    );
    let (t2, kept_answer, kept_step) = ask(&h, &history).await;
    assert_eq!(t2, t1);
    // OpenClaw asks for its summary in a request of its own: the agent's turn, not the user's.
    let summarize = [
        json!({"role": "system", "content": "You are a context summarization assistant."}),
        json!({"role": "user", "content": "<conversation>\n[User]: Plan my week\n</conversation>\n\nThe messages above are a conversation to summarize. Create a structured context checkpoint summary that another LLM will use to continue the work."}),
    ];
    let (summary_t, _, _) = ask(&h, &summarize).await;
    // It goes on from the summary and the turns it kept, which end with the latest answer (no
    // session id: OpenClaw sends none to a custom provider).
    let compacted = vec![
        system.clone(),
        json!({"role": "user", "content": "The conversation history before this point was compacted into the following summary:\n\n<summary>\nThe user is planning the week.\n</summary>"}),
        json!({"role": "user", "content": "[Thu 2026-12-03 06:23 UTC] Add the gym on Tuesday"}),
        kept_answer.clone(),
        json!({"role": "user", "content": "[Thu 2026-12-03 06:30 UTC] No, Wednesday."}),
    ];
    let (t3, _, _) = ask(&h, &compacted).await;
    assert_eq!(t3, t1, "the compacted history continues the conversation");
    // A compacted history whose kept turns end with another answer is another conversation.
    let mut stranger = compacted.clone();
    stranger[3] = json!({"role": "assistant", "content": "Something else entirely."});
    let (other, _, _) = ask(&h, &stranger).await;
    assert_ne!(other, t1);

    let steps = h.steps().await;
    let summary_step = steps
        .iter()
        .find(|s| s.trajectory_uid == summary_t)
        .unwrap();
    assert!(
        summary_step.background,
        "the summary request is the agent's own turn"
    );
    let resumed = steps
        .iter()
        .find(|s| s.trajectory_uid == t1 && s.step_index == 2)
        .unwrap();
    assert_eq!(
        resumed.previous_step_id.as_deref(),
        Some(kept_step.as_str()),
        "the correction reacts to the answer the compaction kept"
    );
}
