//! Feedback rewards. Explicit: what a user said with `POST /v1/feedback`. Implicit: how the user's
//! next message reads the previous answer (correction, thanks, plain follow-up).

use clawline_schemas::{FeedbackKind, FeedbackReceived, ImplicitSignal, Message, Thumbs};
use regex::Regex;
use serde_json::{Value, json};

use crate::config::{FeedbackConfig, ImplicitConfig};
use crate::model::RewardModel;

pub const EXPLICIT_SOURCE: &str = "feedback:explicit";
pub const IMPLICIT_SOURCE: &str = "feedback:implicit";

/// Explicit feedback → reward: a rating wins over thumbs, thumbs over a bare correction; a
/// comment alone carries no reward. Implicit feedback events use the implicit mapping.
pub fn explicit_reward(
    fb: &FeedbackReceived,
    config: &FeedbackConfig,
    implicit: &ImplicitConfig,
) -> Option<(&'static str, f64, Value)> {
    if fb.kind == FeedbackKind::Implicit {
        let signal = fb.implicit?;
        return Some((
            IMPLICIT_SOURCE,
            implicit_value(signal, implicit),
            json!({"signal": signal_name(signal), "from": "event"}),
        ));
    }
    let (value, basis) = if let Some(r) = fb.rating {
        let r = r.clamp(0.0, 1.0);
        (
            config.rating_low + r * (config.rating_high - config.rating_low),
            "rating",
        )
    } else if let Some(t) = fb.thumbs {
        match t {
            Thumbs::Up => (config.thumbs_up, "thumbs_up"),
            Thumbs::Down => (config.thumbs_down, "thumbs_down"),
        }
    } else if fb.correction.is_some() {
        (config.correction, "correction")
    } else {
        return None;
    };
    Some((EXPLICIT_SOURCE, value, json!({"basis": basis})))
}

pub fn implicit_value(signal: ImplicitSignal, config: &ImplicitConfig) -> f64 {
    match signal {
        ImplicitSignal::Correction => config.correction,
        ImplicitSignal::Thanks => config.thanks,
        ImplicitSignal::FollowUp => config.follow_up,
    }
}

pub fn signal_name(signal: ImplicitSignal) -> &'static str {
    match signal {
        ImplicitSignal::Correction => "correction",
        ImplicitSignal::Thanks => "thanks",
        ImplicitSignal::FollowUp => "follow_up",
    }
}

/// The user's new message(s) after the last assistant message: what reacts to the previous answer.
/// `None` when the request does not continue an answer with user text.
pub fn follow_up_text(messages: &[Message]) -> Option<String> {
    let last_assistant = messages.iter().rposition(|m| m.role == "assistant")?;
    let text: Vec<&str> = messages[last_assistant + 1..]
        .iter()
        .filter(|m| m.role == "user")
        .filter_map(|m| m.content.as_deref())
        .map(without_envelope)
        .collect();
    let joined = text.join("\n");
    (!joined.trim().is_empty()).then_some(joined)
}

/// A user message without the envelope agents put before what the user typed: bracketed
/// timestamps and tags (OpenClaw: `[Thu 2026-12-03 06:22 UTC] No. Canberra is the capital.`), so
/// that "No." still opens the message.
fn without_envelope(text: &str) -> &str {
    let mut rest = text.trim_start();
    for _ in 0..3 {
        let Some(inner) = rest.strip_prefix('[') else {
            break;
        };
        match inner.find(']') {
            Some(end) if end <= 80 && !inner[..end].contains('\n') => {
                rest = inner[end + 1..].trim_start();
            }
            _ => break,
        }
    }
    rest
}

/// Classifies follow-up messages by patterns, or by an ONNX classifier when one is configured.
pub struct ImplicitClassifier {
    correction: Vec<Regex>,
    thanks: Vec<Regex>,
    model: Option<(RewardModel, Vec<ImplicitSignal>)>,
    /// `patterns` or `rm:<name>@<sha8>`: part of the reward's version.
    pub version: String,
}

impl ImplicitClassifier {
    pub fn new(config: &ImplicitConfig, model: Option<RewardModel>) -> anyhow::Result<Self> {
        let compile = |patterns: &[String], what: &str| -> anyhow::Result<Vec<Regex>> {
            patterns
                .iter()
                .map(|p| {
                    Regex::new(p)
                        .map_err(|e| anyhow::anyhow!("implicit.{what}_patterns: `{p}`: {e}"))
                })
                .collect()
        };
        let model = match (model, &config.classifier) {
            (Some(m), Some(c)) => {
                let labels = c
                    .labels
                    .iter()
                    .map(|l| match l.as_str() {
                        "correction" => Ok(ImplicitSignal::Correction),
                        "thanks" => Ok(ImplicitSignal::Thanks),
                        "follow_up" => Ok(ImplicitSignal::FollowUp),
                        other => Err(anyhow::anyhow!(
                            "implicit.classifier.labels: `{other}` is not correction, thanks or follow_up"
                        )),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if labels.len() != m.num_logits {
                    anyhow::bail!(
                        "implicit.classifier: {} labels for a model with {} logits",
                        labels.len(),
                        m.num_logits
                    );
                }
                Some((m, labels))
            }
            _ => None,
        };
        let version = match &model {
            Some((m, _)) => m.source.clone(),
            None => {
                let all = [&config.correction_patterns[..], &config.thanks_patterns[..]].concat();
                format!(
                    "patterns@{}",
                    crate::short_sha(all.join("\u{0}").as_bytes())
                )
            }
        };
        Ok(Self {
            correction: compile(&config.correction_patterns, "correction")?,
            thanks: compile(&config.thanks_patterns, "thanks")?,
            model,
            version,
        })
    }

    pub async fn classify(&self, text: &str) -> Result<ImplicitSignal, String> {
        if let Some((model, labels)) = &self.model {
            let logits = model.logits(text.to_string()).await?;
            let best = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            return Ok(labels
                .get(best)
                .copied()
                .unwrap_or(ImplicitSignal::FollowUp));
        }
        if self.correction.iter().any(|r| r.is_match(text)) {
            Ok(ImplicitSignal::Correction)
        } else if self.thanks.iter().any(|r| r.is_match(text)) {
            Ok(ImplicitSignal::Thanks)
        } else {
            Ok(ImplicitSignal::FollowUp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn default_patterns_read_common_follow_ups() {
        let c = ImplicitClassifier::new(&ImplicitConfig::default(), None).unwrap();
        for (text, want) in [
            ("No, that's wrong. It is 12.", ImplicitSignal::Correction),
            ("That is not right", ImplicitSignal::Correction),
            ("it didn't work", ImplicitSignal::Correction),
            ("Thanks, that works!", ImplicitSignal::Thanks),
            ("perfect", ImplicitSignal::Thanks),
            ("And what about Lyon?", ImplicitSignal::FollowUp),
            ("Know any good restaurants?", ImplicitSignal::FollowUp),
        ] {
            assert_eq!(c.classify(text).await.unwrap(), want, "{text}");
        }
    }

    #[tokio::test]
    async fn an_agents_envelope_does_not_hide_a_correction() {
        let c = ImplicitClassifier::new(&ImplicitConfig::default(), None).unwrap();
        let message = |role: &str, text: &str| Message {
            role: role.into(),
            content: Some(text.into()),
            ..Default::default()
        };
        for (text, want) in [
            (
                "[Thu 2026-12-03 06:22 UTC] No. Canberra is the capital.",
                ImplicitSignal::Correction,
            ),
            (
                "[Thu 2026-12-03 06:23 UTC] Actually, try again.",
                ImplicitSignal::Correction,
            ),
            (
                "[telegram] [Thu 2026-12-03 06:24 UTC] What about Perth?",
                ImplicitSignal::FollowUp,
            ),
        ] {
            let messages = [
                message("user", "Capital of Australia?"),
                message("assistant", "Sydney."),
                message("user", text),
            ];
            let follow_up = follow_up_text(&messages).unwrap();
            assert_eq!(c.classify(&follow_up).await.unwrap(), want, "{text}");
        }
    }

    #[test]
    fn explicit_mapping_prefers_rating_then_thumbs_then_correction() {
        let cfg = FeedbackConfig::default();
        let imp = ImplicitConfig::default();
        let mut fb = FeedbackReceived {
            thumbs: Some(Thumbs::Down),
            rating: Some(0.75),
            ..Default::default()
        };
        assert_eq!(explicit_reward(&fb, &cfg, &imp).unwrap().1, 0.5);
        fb.rating = None;
        assert_eq!(explicit_reward(&fb, &cfg, &imp).unwrap().1, -1.0);
        fb.thumbs = None;
        assert!(explicit_reward(&fb, &cfg, &imp).is_none());
        fb.correction = Some("It is 12".into());
        assert_eq!(explicit_reward(&fb, &cfg, &imp).unwrap().1, -1.0);
    }
}
