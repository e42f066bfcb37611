//! The values of the gateway's flags that are more than a number: durations and sampling
//! defaults.

use std::time::Duration;

/// Parses `250ms`, `2s`, `30m`, `24h` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 2s, 30m, 24h)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// One `--default-param`.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultParam {
    /// `None`: every channel.
    pub channel: Option<String>,
    pub key: String,
    pub value: serde_json::Value,
}

const SAMPLING_KEYS: [&str; 9] = [
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
];

pub(super) fn default_param(text: &str) -> Result<DefaultParam, String> {
    let (target, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected KEY=NUMBER or CHANNEL/KEY=NUMBER"))?;
    let (channel, key) = match target.split_once('/') {
        Some((channel, key)) => {
            if !clawline_nats::subjects::is_valid_token(channel) {
                return Err(format!(
                    "{text:?}: channel {channel:?} must be 1-64 of [A-Za-z0-9_-]"
                ));
            }
            (Some(channel.to_string()), key)
        }
        None => (None, target),
    };
    if !SAMPLING_KEYS.contains(&key) {
        return Err(format!(
            "{text:?}: {key:?} is not a sampling setting ({})",
            SAMPLING_KEYS.join(", ")
        ));
    }
    let value: serde_json::Value = value
        .trim()
        .parse::<serde_json::Number>()
        .map(serde_json::Value::Number)
        .map_err(|_| format!("{text:?}: {value:?} is not a number"))?;
    Ok(DefaultParam {
        channel,
        key: key.to_string(),
        value,
    })
}
