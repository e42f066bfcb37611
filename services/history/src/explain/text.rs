//! Explanations and diagnoses as text for people (`clawline explain`, `Accept: text/plain`).

use std::fmt::Write as _;

use super::{Diagnosis, Explanation, Status};

/// A step's timeline, one line per stage:
///
/// ```text
/// step stp_… (tenant acme, channel train, trajectory t1)
///   2026-12-03T08:00:00Z  captured    done     captured on channel train, …, answered by policy v2
///   …
/// → waits at batch: not batched yet: waits for trajectory completion (…)
/// ```
pub fn explanation(e: &Explanation) -> String {
    let mut out = format!(
        "step {} (tenant {}, channel {}, trajectory {})\n",
        e.step_id, e.tenant, e.channel, e.trajectory_uid
    );
    for s in &e.stages {
        let time = s.time.as_deref().map(seconds).unwrap_or_default();
        let status = match s.status {
            Status::Done => "done",
            Status::Waiting => "WAITING",
            Status::Failed => "FAILED",
            Status::Unknown => "unknown",
            Status::NotReached => "-",
        };
        let _ = writeln!(
            out,
            "  {time:<20}  {:<10}  {status:<7}  {}",
            s.stage, s.text
        );
    }
    for note in &e.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    let _ = writeln!(out, "→ {}", e.summary);
    out
}

/// The diagnosis, one sentence a line.
pub fn diagnosis(d: &Diagnosis) -> String {
    let mut out = String::new();
    for line in &d.lines {
        let _ = writeln!(out, "{} {line}", if d.ok { "✓" } else { "•" });
    }
    out
}

/// `2026-12-03T08:00:00.123Z` → `2026-12-03T08:00:00Z`: seconds are enough to read a timeline.
fn seconds(rfc3339: &str) -> String {
    match rfc3339.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => rfc3339.to_string(),
    }
}
