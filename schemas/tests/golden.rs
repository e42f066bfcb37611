//! Golden fixtures pin the wire encoding: a change that alters the bytes of an existing event fails
//! here. Regenerate deliberately with `UPDATE_GOLDEN=1 cargo test -p clawline-schemas`.

use std::path::PathBuf;

use clawline_schemas::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check_golden<T>(name: &str, event: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(event).expect("encode");
    let path = fixture(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &bytes).expect("write fixture");
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        bytes, golden,
        "{name}: encoding changed; if deliberate, UPDATE_GOLDEN=1"
    );
    let decoded: T = decode(&golden).expect("decode golden");
    assert_eq!(&decoded, event);
}

fn step() -> StepRecorded {
    StepRecorded {
        envelope: Envelope::new(
            StepRecorded::id_for("acme", "traj-1", 2, 0),
            "clawline-gateway/0.1.0",
        )
        .at(1_790_000_000_123),
        tenant: "acme".into(),
        channel: "train".into(),
        trajectory_uid: "traj-1".into(),
        prompt_uid: "p-7".into(),
        step_index: 2,
        choice_index: 0,
        is_last: false,
        policy_version: Some(3),
        source: StepSource::Chat,
        request_id: Some("req-1".into()),
        previous_step_id: None,
        implicit_trajectory: false,
        background: false,
        messages: vec![
            Message {
                role: "system".into(),
                content: Some("Be brief.".into()),
                ..Default::default()
            },
            Message {
                role: "user".into(),
                content: Some("Weather in Paris?".into()),
                ..Default::default()
            },
        ],
        tools_json: Some(r#"[{"type":"function","function":{"name":"weather"}}]"#.into()),
        request_params_json: Some(r#"{"temperature":0.7}"#.into()),
        prompt_text: None,
        response_text: String::new(),
        response_tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        }],
        reasoning_text: None,
        finish_reason: Some("tool_calls".into()),
        token_source: TokenSource::Engine,
        prompt_ids: vec![1, 2, 3, 70000],
        response_ids: vec![9, 8],
        response_logprobs: Some(vec![-0.5, -0.25]),
        upstream: Some("http://127.0.0.1:8000/v1".into()),
        upstream_model: Some("tiny".into()),
        latency_ms: Some(12.5),
        ttft_ms: None,
        stream: true,
        reward: None,
        metadata: Some(serde_json::json!({"ground_truth": "42"})),
    }
}

#[test]
fn step_recorded_encoding_is_pinned() {
    check_golden("step_recorded.msgpack", &step());
}

#[test]
fn trajectory_events_encoding_is_pinned() {
    check_golden(
        "trajectory_registered.msgpack",
        &TrajectoryRegistered {
            envelope: Envelope::new(
                "trg_01j000000000000000000000".into(),
                "clawline-gateway/0.1.0",
            )
            .at(1_790_000_000_000),
            tenant: "acme".into(),
            channel: "train".into(),
            trajectory_uid: "traj-1".into(),
            prompt_uid: "p-7".into(),
            metadata: Some(serde_json::json!({"data_source": "gsm8k"})),
            policy_version: None,
        },
    );
    check_golden(
        "trajectory_completed.msgpack",
        &TrajectoryCompleted {
            envelope: Envelope::new(
                TrajectoryCompleted::id_for("acme", "traj-1"),
                "clawline-gateway/0.1.0",
            )
            .at(1_790_000_000_999),
            tenant: "acme".into(),
            channel: "train".into(),
            trajectory_uid: "traj-1".into(),
            prompt_uid: Some("p-7".into()),
            reward: Some(1.0),
            last_step_index: Some(2),
            reason: CompletionReason::Client,
        },
    );
}

#[test]
fn feedback_encoding_is_pinned() {
    check_golden(
        "feedback_received.msgpack",
        &FeedbackReceived {
            envelope: Envelope::new(
                "fbk_01j000000000000000000000".into(),
                "clawline-gateway/0.1.0",
            )
            .at(1_790_000_001_000),
            tenant: "acme".into(),
            trajectory_uid: "traj-1".into(),
            step_id: Some(StepRecorded::id_for("acme", "traj-1", 2, 0)),
            step_index: Some(2),
            kind: FeedbackKind::Explicit,
            thumbs: Some(Thumbs::Down),
            rating: Some(0.25),
            correction: Some("Call the weather tool with city=Paris, FR".into()),
            comment: None,
            implicit: None,
            metadata: None,
        },
    );
}

#[test]
fn reward_encoding_is_pinned() {
    let step_id = StepRecorded::id_for("acme", "traj-1", 2, 0);
    check_golden(
        "reward_assigned.msgpack",
        &RewardAssigned {
            envelope: Envelope {
                event_id: RewardAssigned::id_for(
                    &step_id,
                    "rm:bundled@0123abcd",
                    "0123abcd4567ef89",
                ),
                event_time: 1_790_000_002_000,
                producer: "clawline-reward/0.1.0".into(),
                schema_version: SCHEMA_VERSION,
            },
            tenant: "acme".into(),
            channel: Some("train".into()),
            trajectory_uid: "traj-1".into(),
            scope: RewardScope::Step,
            step_id: Some(step_id.clone()),
            source: "rm:bundled@0123abcd".into(),
            source_version: "0123abcd4567ef89".into(),
            value: 0.75,
            caused_by: step_id,
            details: Some(serde_json::json!({"logits": [1.0986]})),
        },
    );
}

#[test]
fn batch_encoding_is_pinned() {
    let ids = [
        StepRecorded::id_for("acme", "traj-1", 0, 0),
        StepRecorded::id_for("acme", "traj-2", 0, 0),
    ];
    let step = |i: usize, adv: f64| BatchStep {
        step_id: ids[i].clone(),
        tenant: "acme".into(),
        trajectory_uid: format!("traj-{}", i + 1),
        prompt_uid: "p-7".into(),
        step_index: 0,
        group: 0,
        token_source: TokenSource::Engine,
        prompt_ids: vec![1, 2, 3],
        response_ids: vec![4, 5],
        old_logprobs: Some(vec![-0.5, -0.25]),
        reward: 0.5 + adv,
        advantage: adv,
        rewards: vec![("rm:bundled@0123abcd".into(), 0.5 + adv)],
        reward_ids: vec![format!("rwd_{i}")],
        policy_version: Some(3),
        staleness: 1,
        importance_cap: None,
        truncated: false,
        late: false,
    };
    check_golden(
        "batch_formed.msgpack",
        &BatchFormed {
            envelope: Envelope::new(
                BatchFormed::id_for(ids.iter().map(String::as_str)),
                "clawline-batcher/0.1.0",
            )
            .at(1_790_000_003_000),
            channel: "train".into(),
            mode: GroupMode::Prompt,
            policy_version: Some(4),
            groups: vec![BatchGroup {
                key: "p-7".into(),
                tenant: "acme".into(),
                trajectories: 2,
                steps: 2,
                reward_mean: 0.5,
                reward_std: 0.25,
                baseline: 0.5,
            }],
            steps: vec![step(0, 0.25), step(1, -0.25)],
        },
    );
    assert_eq!(
        BatchFormed::id_for(["b", "a"]),
        BatchFormed::id_for(["a", "b"]),
        "member order does not change the id"
    );
}

/// A step that continues another names it; steps without one keep their old bytes.
#[test]
fn previous_step_id_round_trips_and_is_omitted_when_absent() {
    let mut s = step();
    assert_eq!(
        encode(&s).unwrap(),
        std::fs::read(fixture("step_recorded.msgpack")).unwrap()
    );
    s.previous_step_id = Some(StepRecorded::id_for("acme", "traj-1", 1, 0));
    let back: StepRecorded = decode(&encode(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

/// The batcher's partial view decodes every field it reads from a step's bytes as the full event
/// has it: a view field that drifts from the event's name would decode as its default here.
#[test]
fn the_batching_view_reads_what_the_step_holds() {
    let pinned = std::fs::read(fixture("step_recorded.msgpack")).unwrap();
    let view: StepForBatching = decode(&pinned).unwrap();
    assert_eq!(view, StepForBatching::from(step()));
    let mut s = step();
    s.choice_index = 2;
    s.is_last = true;
    s.implicit_trajectory = true;
    s.background = true;
    s.policy_version = Some(7);
    s.token_source = TokenSource::Engine;
    s.response_logprobs = Some(vec![-0.5; s.response_ids.len().max(1)]);
    if s.prompt_ids.is_empty() {
        s.prompt_ids = vec![1, 2];
    }
    if s.response_ids.is_empty() {
        s.response_ids = vec![3];
    }
    let view: StepForBatching = decode(&encode(&s).unwrap()).unwrap();
    let expected = StepForBatching::from(s);
    assert_eq!(view, expected);
    assert_ne!(
        expected,
        StepForBatching {
            event_id: expected.event_id.clone(),
            ..Default::default()
        },
        "the step sets every field the view reads"
    );
}

/// An old reader must accept events written by a newer build with extra fields.
#[test]
fn readers_ignore_fields_they_do_not_know() {
    #[derive(Serialize)]
    struct Newer {
        #[serde(flatten)]
        step: StepRecorded,
        some_future_field: Vec<String>,
    }
    let bytes = rmp_serde::to_vec_named(&Newer {
        step: step(),
        some_future_field: vec!["x".into()],
    })
    .expect("encode");
    let decoded: StepRecorded = decode(&bytes).expect("decode newer event");
    assert_eq!(decoded, step());
}

/// A newer reader must accept events written before an optional field existed.
#[test]
fn missing_optional_fields_take_defaults() {
    #[derive(Serialize)]
    struct Older<'a> {
        event_id: &'a str,
        event_time: i64,
        producer: &'a str,
        schema_version: u16,
        tenant: &'a str,
        channel: &'a str,
        trajectory_uid: &'a str,
        prompt_uid: &'a str,
        step_index: u32,
    }
    let bytes = rmp_serde::to_vec_named(&Older {
        event_id: "stp_x",
        event_time: 1,
        producer: "old",
        schema_version: 1,
        tenant: "t",
        channel: "train",
        trajectory_uid: "a",
        prompt_uid: "b",
        step_index: 4,
    })
    .expect("encode");
    let step: StepRecorded = decode(&bytes).expect("decode older event");
    assert_eq!(step.step_index, 4);
    assert_eq!(step.token_source, TokenSource::Untokenized);
    assert!(step.prompt_ids.is_empty() && step.response_logprobs.is_none());
}

#[test]
fn garbage_is_a_decode_error_not_a_panic() {
    assert!(decode::<StepRecorded>(b"\xc1\xff not msgpack").is_err());
    assert!(decode::<StepRecorded>(&[]).is_err());
    // An event without its envelope is not read as one with an empty envelope: the error names it.
    let mut partial = serde_json::to_value(step()).expect("json");
    let fields = partial.as_object_mut().expect("an object");
    fields.remove("producer");
    let bytes = rmp_serde::to_vec_named(&partial).expect("encode");
    let err = decode::<StepRecorded>(&bytes).expect_err("no producer");
    assert!(err.to_string().contains("producer"), "{err}");
}

#[test]
fn weights_published_encoding_is_pinned() {
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    check_golden(
        "weights_published.msgpack",
        &WeightsPublished {
            envelope: Envelope::new(WeightsPublished::id_for(4, sha), "clawline-trainer/0.1.0")
                .at(1_790_000_003_000),
            version: 4,
            parent: 3,
            format: WeightsFormat::Lora,
            bucket: "weights".into(),
            object: "v4/adapter_model.safetensors".into(),
            sha256: sha.into(),
            size: 123_456,
            base_model: "tiny".into(),
            lora: Some(LoraAdapter {
                r: 8,
                alpha: 16.0,
                target_modules: vec!["q_proj".into(), "v_proj".into()],
            }),
            batch_ids: vec!["bat_1".into(), "bat_2".into()],
            first_batch_seq: 7,
            last_batch_seq: 9,
            metrics: TrainingSummary {
                updates: 2,
                steps: 16,
                tokens: 640,
                loss: -0.01,
                policy_loss: -0.01,
                ratio_mean: 1.0,
                clip_fraction: 0.0,
                kl: 0.0,
                entropy: 2.5,
                grad_norm: 0.7,
                reward_mean: 0.4,
                ..Default::default()
            },
        },
    );
}

#[test]
fn weights_ids_name_version_and_content() {
    assert_eq!(
        WeightsPublished::id_for(4, "ab"),
        WeightsPublished::id_for(4, "ab")
    );
    assert_ne!(
        WeightsPublished::id_for(4, "ab"),
        WeightsPublished::id_for(5, "ab")
    );
    assert_ne!(
        WeightsPublished::id_for(4, "ab"),
        WeightsPublished::id_for(4, "cd")
    );
}

#[test]
fn weights_activation_encodings_are_pinned() {
    let canary = CanaryResult {
        prompts: 8,
        candidate_reward: 0.61,
        serving_reward: 0.58,
        serving_version: 3,
        tolerance: 0.02,
        quality: None,
    };
    check_golden(
        "weights_activated.msgpack",
        &WeightsActivated {
            envelope: Envelope::new("wac_1".into(), "clawline-broadcaster/0.1.0")
                .at(1_790_000_004_000),
            version: 4,
            engine: "policy".into(),
            sha256: "ab12".into(),
            reason: "published".into(),
            seconds: 0.25,
            canary: Some(canary.clone()),
        },
    );
    check_golden(
        "weights_rejected.msgpack",
        &WeightsRejected {
            envelope: Envelope::new("wrj_1".into(), "clawline-broadcaster/0.1.0")
                .at(1_790_000_005_000),
            version: 5,
            engine: "vllm".into(),
            sha256: "cd34".into(),
            reason: "canary: mean reward below the serving version's".into(),
            canary: Some(canary),
        },
    );
}

/// The canary's quality measurements travel in a new fixture; the ones above, without them,
/// keep their bytes, so events written before the measurements existed still decode.
#[test]
fn canary_quality_encoding_is_pinned() {
    let shares = |repetition| DegenerateShares {
        repetition,
        special_tokens: 0.0,
        control_chars: 0.125,
        replacement_chars: 0.0,
        cut_off: 0.5,
    };
    check_golden(
        "weights_rejected_quality.msgpack",
        &WeightsRejected {
            envelope: Envelope::new("wrj_2".into(), "clawline-broadcaster/0.1.0")
                .at(1_790_000_006_000),
            version: 6,
            engine: "policy".into(),
            sha256: "ef56".into(),
            reason: "canary: reference NLL 2.91 vs serving v5's 2.40 (+0.51 > 0.10)".into(),
            canary: Some(CanaryResult {
                prompts: 32,
                candidate_reward: 0.7,
                serving_reward: 0.5,
                serving_version: 5,
                tolerance: 0.02,
                quality: Some(CanaryQuality {
                    candidate_nll: 2.91,
                    serving_nll: 2.4,
                    reference_tokens: 900,
                    max_nll_increase: 0.1,
                    kl: 0.83,
                    kl_tokens: 700,
                    max_kl: 0.1,
                    candidate_degenerate: shares(0.75),
                    serving_degenerate: shares(0.0),
                    max_degenerate_increase: 0.1,
                    candidate_fluency: None,
                    base_fluency: None,
                    max_fluency_increase: None,
                }),
            }),
        },
    );
}
