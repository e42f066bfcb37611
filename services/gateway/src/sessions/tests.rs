//! Sessions: step indexes, leases, and what continues a conversation.

use serde_json::{Value, json};

use super::*;

fn sessions(idle_ms: u64) -> Sessions {
    Sessions::new(
        Limits {
            session_idle: Duration::from_millis(idle_ms),
            trajectory_ttl: Duration::from_secs(3600),
            max_trajectories: 3,
        },
        crate::background::markers(&[]),
    )
}

fn step(i: u32) -> (u32, String) {
    (i, format!("step-{i}"))
}

#[test]
fn client_named_trajectories_take_indexes_only_inside_their_leases() {
    let s = sessions(60_000);
    s.create("t1", "acme", "train", "p", None, Origin::Client)
        .expect("create");
    assert_eq!(
        s.take_leased_step("t1", "acme").map(|t| t.next_step),
        Err(Untaken::NeedsLease(0))
    );
    // A restarted gateway's lease starts after an earlier run's block.
    s.grant("t1", "acme", 64..66);
    assert_eq!(s.take_leased_step("t1", "acme").unwrap().next_step, 64);
    assert_eq!(s.take_leased_step("t1", "acme").unwrap().next_step, 65);
    assert_eq!(
        s.take_leased_step("t1", "acme").map(|t| t.next_step),
        Err(Untaken::NeedsLease(66))
    );
    // Two calls leased at once: the later block wins, the older one changes nothing.
    s.grant("t1", "acme", 70..72);
    s.grant("t1", "acme", 66..68);
    assert_eq!(s.take_leased_step("t1", "acme").unwrap().next_step, 70);
    assert_eq!(
        s.take_leased_step("t1", "evil").map(|t| t.next_step),
        Err(Untaken::Denied(Denied::NotFound))
    );
    // Trajectories the gateway named need no lease.
    s.create("t2", "acme", "train", "p", None, Origin::Conversation)
        .unwrap();
    assert_eq!(s.take_leased_step("t2", "acme").unwrap().next_step, 0);
}

/// What OpenClaw does to its history between calls: a context message at the end of each
/// call that it never keeps, tool-call arguments re-serialized and tool-call ids renamed.
#[test]
fn an_agents_rewritten_history_still_continues_its_session() {
    let s = sessions(60_000);
    s.create("t1", "acme", "train", "p", None, Origin::Conversation)
        .expect("create");
    let context =
        json!({"role": "user", "content": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>> cwd=/home"});
    let mut sent = vec![
        json!({"role": "system", "content": "You are a helpful agent."}),
        json!({"role": "user", "content": "[Thu 2026-12-03 06:22 UTC] Read notes.txt"}),
        context.clone(),
    ];
    let answer = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_a1", "type": "function", "function": {"name": "read", "arguments": "{\"path\": \"notes.txt\"}"}}]});
    s.remember_turn("t1", "acme", &sent, &answer, step(0), false);

    // The agent's next call: its own history (no context message), its serialization, its ids.
    sent.pop();
    sent.push(json!({"role": "assistant", "content": "", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"notes.txt\"}"}}]}));
    sent.push(json!({"role": "tool", "tool_call_id": "toolu_1", "content": "buy milk"}));
    sent.push(context);
    assert_eq!(
        s.continuing("acme", &sent).map(|t| t.uid),
        Some("t1".into())
    );
    // Other arguments are another call.
    sent[2]["tool_calls"][0]["function"]["arguments"] = json!("{\"path\":\"other.txt\"}");
    assert!(s.continuing("acme", &sent).is_none());
}

#[test]
fn a_call_extending_the_last_answer_continues_the_session() {
    let s = sessions(60_000);
    s.create("t1", "acme", "train", "p", None, Origin::Conversation)
        .expect("create");
    let first = vec![json!({"role": "user", "content": "hi"})];
    let answer = json!({"role": "assistant", "content": "hello"});
    s.remember_turn("t1", "acme", &first, &answer, step(0), false);

    let mut next = first.clone();
    next.push(json!({"role": "assistant", "content": "hello ", "tool_calls": null}));
    next.push(json!({"role": "user", "content": "how are you?"}));
    assert_eq!(
        s.continuing("acme", &next).map(|t| t.uid),
        Some("t1".into())
    );
    // Another tenant sending the same history does not join it.
    assert!(s.continuing("other", &next).is_none());
    // A different answer in the history is a different conversation.
    next[1] = json!({"role": "assistant", "content": "bye"});
    assert!(s.continuing("acme", &next).is_none());
    // A fresh conversation has no assistant message and never continues anything.
    assert!(s.continuing("acme", &first).is_none());
}

#[test]
fn step_indexes_count_per_trajectory_and_tenants_are_isolated() {
    let s = sessions(60_000);
    s.create("t1", "acme", "train", "p", None, Origin::Init)
        .expect("create");
    assert_eq!(s.next_step("t1", "acme").expect("step").next_step, 0);
    assert_eq!(s.next_step("t1", "acme").expect("step").next_step, 1);
    assert!(s.next_step("t1", "evil").is_err());
    assert!(
        s.create("t1", "evil", "train", "p", None, Origin::Init)
            .is_err()
    );
}

#[test]
fn idle_sessions_end_and_memory_stays_bounded() {
    let s = sessions(0);
    for i in 0..5 {
        s.create(
            &format!("t{i}"),
            "acme",
            "train",
            "p",
            None,
            if i == 0 {
                Origin::Conversation
            } else {
                Origin::Init
            },
        )
        .expect("create");
    }
    let ended = s.sweep();
    assert_eq!(
        ended.iter().map(|t| t.uid.as_str()).collect::<Vec<_>>(),
        vec!["t0"]
    );
    assert_eq!(s.len(), 3, "capped at max_trajectories");
    assert!(s.sweep().is_empty(), "an ended session is reported once");
}

/// Feedback may name a step alone: the step leads to its trajectory for its tenant, for as long
/// as the trajectory is kept.
#[test]
fn a_recorded_step_leads_to_its_trajectory_until_it_is_forgotten() {
    let s = sessions(60_000);
    for i in 0..4 {
        let uid = format!("t{i}");
        s.create(&uid, "acme", "train", "p", None, Origin::Init)
            .expect("create");
        let t = s.next_step(&uid, "acme").expect("step");
        let id = clawline_schemas::StepRecorded::id_for("acme", &uid, t.next_step, 0);
        s.step_recorded(&uid, "acme", t.next_step, &id, i != 1);
    }
    let id = |uid: &str| clawline_schemas::StepRecorded::id_for("acme", uid, 0, 0);
    assert_eq!(
        s.trajectory_of_step(&id("t3"), "acme").map(|t| t.uid),
        Ok("t3".into())
    );
    assert_eq!(
        s.trajectory_of_step(&id("t1"), "acme").map(|t| t.uid),
        Ok("t1".into()),
        "a background turn's step too"
    );
    assert!(
        s.trajectory_of_step(&id("t3"), "other").is_err(),
        "another tenant's"
    );
    s.sweep();
    assert!(
        s.trajectory_of_step(&id("t0"), "acme").is_err(),
        "t0 went past max_trajectories, and its steps with it"
    );
    assert!(s.lock().by_step.len() == 3, "nothing left behind");
}

/// OpenClaw's heartbeat, as recorded from OpenClaw 2026.9.6: the heartbeat call has its own system
/// prompt and sends the heartbeat prompt; when it had nothing to say the next user turn's history
/// leaves the exchange out, and when it did, the history keeps `[timestamp] [OpenClaw heartbeat
/// poll]` and its answer. Either way the conversation goes on, and the user's message continues
/// the step whose answer they saw last.
#[test]
fn a_conversation_goes_on_across_heartbeats_kept_or_dropped() {
    let s = sessions(60_000);
    s.create("t1", "acme", "train", "p", None, Origin::Conversation)
        .expect("create");
    let context = json!({"role": "user", "content": [{"type": "text", "text": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\nActive exec sessions: none"}]});
    let user_system =
        json!({"role": "system", "content": "You are OpenClaw. ## Silent Replies: NO_REPLY"});
    let heartbeat_system =
        json!({"role": "system", "content": "You are OpenClaw. ## Conversation Context"});
    let hi = json!({"role": "user", "content": "[Thu 2026-12-03 14:45 UTC] hi there"});
    let hello = json!({"role": "assistant", "content": "Hello, noted."});
    s.remember_turn(
        "t1",
        "acme",
        &[user_system.clone(), hi.clone(), context.clone()],
        &hello,
        step(0),
        false,
    );

    let heartbeat_prompt = json!({"role": "user", "content": "Follow the heartbeat monitor scratch context when provided. Recurring tasks are automations; create or change their schedules with the automations tool, not heartbeat scratch. Do not infer or repeat old tasks from prior chats. If nothing needs attention, reply NO_REPLY.\nCurrent time: Thursday, December 3rd, 2026 - 2:49 PM (UTC)\nReference UTC: 2026-12-03 14:49 UTC"});
    let heartbeat: Vec<Value> = vec![
        heartbeat_system.clone(),
        hi.clone(),
        hello.clone(),
        heartbeat_prompt.clone(),
        context.clone(),
    ];
    let continued = s
        .continuing("acme", &heartbeat)
        .expect("the heartbeat joins the conversation");
    assert_eq!(continued.last_step, Some(step(0)));
    s.remember_turn(
        "t1",
        "acme",
        &heartbeat,
        &json!({"role": "assistant", "content": "NO_REPLY"}),
        step(1),
        true,
    );

    // Nothing to say: the next turn's history leaves the heartbeat out.
    let after_silent = vec![
        user_system.clone(),
        hi.clone(),
        hello.clone(),
        json!({"role": "user", "content": "[Thu 2026-12-03 14:51 UTC] what did you check?"}),
        context.clone(),
    ];
    let t = s
        .continuing("acme", &after_silent)
        .expect("continues past a dropped heartbeat");
    assert_eq!((t.uid.as_str(), t.last_step), ("t1", Some(step(0))));
    s.remember_turn("t1", "acme", &after_silent, &hello, step(2), false);

    // Something to say: the history keeps the poll marker and the heartbeat's answer.
    let mut history = after_silent[..4].to_vec();
    history.push(hello.clone());
    let mut call = history.clone();
    call[0] = heartbeat_system;
    call.extend([heartbeat_prompt, context.clone()]);
    let alert =
        json!({"role": "assistant", "content": "Reminder: the notes file has 3 unread items."});
    s.remember_turn("t1", "acme", &call, &alert, step(3), true);
    history.extend([
        json!({"role": "user", "content": "[Thu 2026-12-03 14:53 UTC] [OpenClaw heartbeat poll]"}),
        alert,
    ]);
    history
        .push(json!({"role": "user", "content": "[Thu 2026-12-03 14:53 UTC] what did you find?"}));
    history.push(context);
    let t = s
        .continuing("acme", &history)
        .expect("continues past a kept heartbeat");
    assert_eq!(
        (t.uid.as_str(), t.last_step),
        ("t1", Some(step(3))),
        "the user answers the alert"
    );
    // Until the user's next turn, the history without the heartbeat continues too; that turn
    // moves the session on, and the history from before it continues nothing.
    let mut dropped = after_silent[..4].to_vec();
    dropped.extend([
        hello.clone(),
        json!({"role": "user", "content": "[Thu 2026-12-03 14:54 UTC] anything new?"}),
    ]);
    assert_eq!(
        s.continuing("acme", &dropped).and_then(|t| t.last_step),
        Some(step(2))
    );
    s.remember_turn("t1", "acme", &history, &hello, step(4), false);
    assert!(s.continuing("acme", &dropped).is_none());
}
