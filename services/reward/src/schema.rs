//! Tool-call validity: each call names a declared tool and its arguments are a JSON object that
//! matches the tool's parameter schema (the JSON Schema subset tool declarations use).

use serde_json::Value;

/// What is wrong with the tool calls, given the request's `tools`; empty when all are valid.
pub fn check_tool_calls(tools_json: Option<&str>, calls: &[(&str, &str)]) -> Vec<String> {
    let tools: Vec<Value> = tools_json
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let mut problems = Vec::new();
    for (name, arguments) in calls {
        let declared = tools
            .iter()
            .find(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(*name));
        let Some(declared) = declared else {
            problems.push(format!("`{name}` is not a declared tool"));
            continue;
        };
        let args: Value = match serde_json::from_str(arguments) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("`{name}`: arguments are not JSON: {e}"));
                continue;
            }
        };
        if !args.is_object() {
            problems.push(format!("`{name}`: arguments must be a JSON object"));
            continue;
        }
        if let Some(schema) = declared.pointer("/function/parameters") {
            validate(schema, &args, name, &mut problems);
        }
    }
    problems
}

/// The JSON Schema subset tool declarations use: `type` (one or a list), `properties`,
/// `required`, `additionalProperties: false`, `enum`, `const`, `items`, `minimum`/`maximum`,
/// `minLength`/`maxLength`, `minItems`/`maxItems`, `anyOf`/`oneOf`. Other keywords are ignored.
pub fn validate(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.is_empty() && !names.iter().any(|t| type_matches(t, value)) {
            problems.push(format!(
                "{path}: expected {}, found {}",
                names.join(" or "),
                type_name(value)
            ));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        problems.push(format!(
            "{path}: {value} is not one of {}",
            Value::Array(options.clone())
        ));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        problems.push(format!("{path}: must be {constant}"));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let fits = branches.iter().any(|b| {
                let mut sub = Vec::new();
                validate(b, value, path, &mut sub);
                sub.is_empty()
            });
            if !fits {
                problems.push(format!("{path}: matches none of {key}"));
            }
        }
    }
    let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        problems.push(format!("{path}: missing required `{r}`"));
                    }
                }
            }
            for (k, v) in map {
                match properties.and_then(|p| p.get(k)) {
                    Some(sub) => validate(sub, v, &format!("{path}.{k}"), problems),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        problems.push(format!("{path}: unexpected property `{k}`"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), problems);
                }
            }
            let n = items.len() as f64;
            if bound("minItems").is_some_and(|m| n < m) || bound("maxItems").is_some_and(|m| n > m)
            {
                problems.push(format!("{path}: {} items is out of bounds", items.len()));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if bound("minimum").is_some_and(|m| x < m) || bound("maximum").is_some_and(|m| x > m) {
                problems.push(format!("{path}: {x} is out of range"));
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as f64;
            if bound("minLength").is_some_and(|m| n < m)
                || bound("maxLength").is_some_and(|m| n > m)
            {
                problems.push(format!("{path}: length {n} is out of bounds"));
            }
        }
        _ => {}
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => {
            v.as_i64().is_some()
                || v.as_u64().is_some()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_checked_against_their_schema() {
        let tools = r#"[{"type":"function","function":{"name":"weather","parameters":{
            "type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer","minimum":1}},
            "required":["city"],"additionalProperties":false}}}]"#;
        assert!(
            check_tool_calls(Some(tools), &[("weather", r#"{"city":"Paris","days":2}"#)])
                .is_empty()
        );
        let bad = check_tool_calls(
            Some(tools),
            &[
                ("weather", r#"{"days":0,"x":1}"#),
                ("nope", "{}"),
                ("weather", "{not json"),
            ],
        );
        let joined = bad.join("\n");
        for expected in [
            "missing required `city`",
            "out of range",
            "unexpected property `x`",
            "`nope` is not a declared tool",
            "not JSON",
        ] {
            assert!(joined.contains(expected), "{expected} not in {joined}");
        }
    }
}
