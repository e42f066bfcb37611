//! The Jinja environment chat templates render in, as transformers sets it up for
//! `apply_chat_template` (`trim_blocks`, `lstrip_blocks`, its `tojson`, `raise_exception`,
//! `strftime_now`, Python string methods), and the content format vLLM hands a template.

use minijinja::{Environment, ErrorKind};
use serde_json::Value;

/// A template environment holding `template` as "chat".
pub(super) fn environment(template: String) -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    // As transformers' `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    minijinja_contrib::add_to_environment(&mut env);
    env.add_filter("tojson", tojson);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    // transformers: `datetime.now().strftime(format)`; the clock here is UTC.
    env.add_function("strftime_now", |format: String| {
        strftime(&format, time::OffsetDateTime::now_utc())
    });
    env.add_template_owned("chat", template)?;
    Ok(env)
}

/// How a template expects a message's `content`, as vLLM decides it (`--chat-template-content-format
/// auto`): a template that loops over a message's content gets OpenAI's list of parts, any other
/// a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentFormat {
    String,
    OpenAi,
}

impl ContentFormat {
    /// vLLM reads the template's syntax tree for a `for` loop over `<message>['content']`; this
    /// reads its `{% for … in … %}` tags for an iterable ending in `content`.
    pub(super) fn of(template: &str) -> Self {
        let loops_over_content = template.split("{%").skip(1).any(|tag| {
            let tag = tag.split("%}").next().unwrap_or("");
            let tag = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
            let Some(rest) = tag.strip_prefix("for ") else {
                return false;
            };
            let Some((_, iterable)) = rest.split_once(" in ") else {
                return false;
            };
            // `for part in message['content'] if …`: the iterable ends at a filter, condition
            // or `recursive`.
            let iterable = iterable
                .split(" if ")
                .next()
                .unwrap_or("")
                .split('|')
                .next()
                .unwrap_or("")
                .trim();
            let iterable = iterable.replace(' ', "");
            iterable.ends_with(".content")
                || iterable.ends_with("['content']")
                || iterable.ends_with("[\"content\"]")
        });
        if loops_over_content {
            Self::OpenAi
        } else {
            Self::String
        }
    }
}

/// A chat request's messages and tools as vLLM hands them to the template.
///
/// - Each message is rebuilt with `role` and `content` and only the keys vLLM keeps: an
///   assistant's `tool_calls` and reasoning (`reasoning`, also as `reasoning_content`), a tool
///   result's `tool_call_id`, any message's `name`.
/// - Content in the template's [`ContentFormat`]: in string format `null` is `""` and a list of
///   parts is its text parts joined by newlines; in OpenAI format a string is one text part.
/// - Tool-call `arguments` are the object a JSON string encodes (`{}` for anything else).
/// - `developer` messages become `system` ones where the template knows no developer role, and
///   system messages are then merged into one at the start.
pub(super) fn conversation(
    format: ContentFormat,
    knows_developer: bool,
    messages: &[Value],
) -> Vec<Value> {
    let mut out: Vec<Value> = messages.iter().map(|m| message(format, m)).collect();
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_string);
    if knows_developer || !out.iter().any(|m| role(m).as_deref() == Some("developer")) {
        return out;
    }
    for m in &mut out {
        if role(m).as_deref() == Some("developer") {
            m["role"] = "system".into();
        }
    }
    let systems: Vec<usize> = (0..out.len())
        .filter(|&i| role(&out[i]).as_deref() == Some("system"))
        .collect();
    if systems.len() < 2 && systems.first().is_none_or(|&i| i == 0) {
        return out;
    }
    let text: Vec<String> = systems
        .iter()
        .map(|&i| match &out[i]["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(text_of_part)
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        })
        .filter(|t| !t.is_empty())
        .collect();
    let mut merged = vec![serde_json::json!({"role": "system", "content": text.join("\n\n")})];
    merged.extend(
        out.into_iter()
            .filter(|m| role(m).as_deref() != Some("system")),
    );
    merged
}

fn message(format: ContentFormat, m: &Value) -> Value {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    let parts: Vec<Value> = match m.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(parts)) => parts.clone(),
        Some(other) => vec![other.clone()],
    };
    let content = match format {
        // A tool result is a string whatever the format, unless it holds more than text.
        ContentFormat::String => joined(&parts),
        ContentFormat::OpenAi if role == "tool" && parts.iter().all(is_text_part) => joined(&parts),
        ContentFormat::OpenAi => Value::Array(
            parts
                .iter()
                .map(|p| match text_of_part(p) {
                    Some(text) => serde_json::json!({"type": "text", "text": text}),
                    None => p.clone(),
                })
                .collect(),
        ),
    };
    let mut out = serde_json::Map::new();
    out.insert("role".into(), role.into());
    out.insert("content".into(), content);
    if role == "assistant" {
        match m.get("tool_calls") {
            Some(Value::Array(calls)) if !calls.is_empty() => {
                out.insert(
                    "tool_calls".into(),
                    calls.iter().map(with_object_arguments).collect(),
                );
            }
            _ => {}
        }
        let reasoning = ["reasoning", "reasoning_content"]
            .iter()
            .find_map(|k| m.get(*k).filter(|v| v.is_string()));
        if let Some(r) = reasoning {
            out.insert("reasoning".into(), r.clone());
            out.insert("reasoning_content".into(), r.clone());
        }
    }
    if role == "tool"
        && let Some(id) = m.get("tool_call_id")
    {
        out.insert("tool_call_id".into(), id.clone());
    }
    if let Some(name @ Value::String(_)) = m.get("name") {
        out.insert("name".into(), name.clone());
    }
    Value::Object(out)
}

/// The text parts of `parts` joined by newlines.
fn joined(parts: &[Value]) -> Value {
    Value::String(
        parts
            .iter()
            .filter_map(text_of_part)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn is_text_part(part: &Value) -> bool {
    part.is_string() || part.get("type").and_then(Value::as_str) == Some("text")
}

/// A tool call with its `function.arguments` as an object: the one a JSON string encodes, the
/// object given, or `{}` for anything else.
fn with_object_arguments(call: &Value) -> Value {
    let mut call = call.clone();
    if let Some(function) = call.get_mut("function").and_then(Value::as_object_mut) {
        let arguments = match function.get("arguments") {
            Some(Value::String(text)) => serde_json::from_str::<Value>(text)
                .ok()
                .filter(Value::is_object),
            Some(object @ Value::Object(_)) => Some(object.clone()),
            _ => None,
        };
        function.insert(
            "arguments".into(),
            arguments.unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        );
    }
    call
}

/// Tool definitions as vLLM hands them to the template (its request model dumped): `type`, then
/// `function` with `name`, `description` and `parameters` (`null` where missing) and `strict`
/// where set; other keys are dropped.
pub(super) fn tools(tools: &Value) -> Value {
    let Value::Array(list) = tools else {
        return tools.clone();
    };
    Value::Array(
        list.iter()
            .map(|tool| {
                let Some(function) = tool.get("function").and_then(Value::as_object) else {
                    return tool.clone();
                };
                let field = |k: &str| function.get(k).cloned().unwrap_or(Value::Null);
                let mut f = serde_json::Map::new();
                f.insert("name".into(), field("name"));
                f.insert("description".into(), field("description"));
                f.insert("parameters".into(), field("parameters"));
                if let Some(strict) = function.get("strict").filter(|v| !v.is_null()) {
                    f.insert("strict".into(), strict.clone());
                }
                serde_json::json!({
                    "type": tool.get("type").cloned().unwrap_or_else(|| "function".into()),
                    "function": f,
                })
            })
            .collect(),
    )
}

/// The text of a content part: a bare string, or the text of a text-like part (`text`,
/// `input_text`, `output_text`, `refusal`, `thinking`, as vLLM reads them).
fn text_of_part(part: &Value) -> Option<&str> {
    let key = match part {
        Value::String(s) => return Some(s),
        Value::Object(p) => match p.get("type").and_then(Value::as_str)? {
            "text" | "input_text" | "output_text" => "text",
            "refusal" => "refusal",
            "thinking" => "thinking",
            _ => return None,
        },
        _ => return None,
    };
    part.get(key).and_then(Value::as_str)
}

/// Python's `strftime` for the directives that do not depend on a locale beyond C's.
pub(super) fn strftime(format: &str, t: time::OffsetDateTime) -> String {
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let day = DAYS[t.weekday().number_days_from_monday() as usize];
    let month = MONTHS[u8::from(t.month()) as usize - 1];
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('a') => out.push_str(&day[..3]),
            Some('A') => out.push_str(day),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('d') => out.push_str(&format!("{:02}", t.day())),
            Some('e') => out.push_str(&format!("{:2}", t.day())),
            Some('m') => out.push_str(&format!("{:02}", u8::from(t.month()))),
            Some('y') => out.push_str(&format!("{:02}", t.year().rem_euclid(100))),
            Some('Y') => out.push_str(&t.year().to_string()),
            Some('H') => out.push_str(&format!("{:02}", t.hour())),
            Some('I') => out.push_str(&format!("{hour12:02}")),
            Some('M') => out.push_str(&format!("{:02}", t.minute())),
            Some('S') => out.push_str(&format!("{:02}", t.second())),
            Some('p') => out.push_str(if t.hour() < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{:03}", t.ordinal())),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            // Unknown directives stay as written, as glibc leaves them.
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(minijinja::Value::from_safe_string(out))
}

/// Writes `v` as Python's `json.dumps` does (`ensure_ascii=False`; separators `", "`/`": "`, or
/// `","` and newlines with `indent`).
fn python_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, level + 1);
                python_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, level + 1);
                python_string(k, out);
                out.push_str(": ");
                python_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        Value::String(s) => python_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string as Python writes it with `ensure_ascii=False`: only `"`, `\\` and control
/// characters escaped.
fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn strftime_writes_what_python_writes() {
        let t = time::Date::from_calendar_date(2026, time::Month::December, 3)
            .unwrap()
            .with_hms(7, 5, 9)
            .unwrap()
            .assume_utc();
        // Python: datetime(2026, 12, 3, 7, 5, 9).strftime(...)
        assert_eq!(strftime("%d %b %Y", t), "03 Dec 2026");
        assert_eq!(
            strftime("%A %B %e %y %H:%M:%S %I%p %j %% %Q", t),
            "Thursday December  3 26 07:05:09 07AM 337 % %Q"
        );
    }

    #[test]
    fn a_template_looping_over_content_gets_parts() {
        let loops = "{% for m in messages %}{%- for part in m['content'] -%}{{ part.text }}{% endfor %}{% endfor %}";
        assert_eq!(ContentFormat::of(loops), ContentFormat::OpenAi);
        let dotted = "{% for message in messages %}{% for c in message.content if c.type == 'text' %}{% endfor %}{% endfor %}";
        assert_eq!(ContentFormat::of(dotted), ContentFormat::OpenAi);
        let plain = "{% for message in messages %}{{ message['content'] }}{% endfor %}";
        assert_eq!(ContentFormat::of(plain), ContentFormat::String);
    }
}
