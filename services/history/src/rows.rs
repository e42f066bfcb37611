//! Events as rows: an event becomes a row through its JSON form, column by column, so a field
//! added to an event later is simply absent (null) in older rows.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;
use serde_json::Value;

use crate::tables::{Col, Kind::*, Table};

/// One decoded event with where it came from.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: u64,
    pub subject: String,
    pub json: Value,
}

impl Row {
    /// `(date, channel)` of the row's partition.
    pub fn partition(&self, table: &Table) -> (String, String) {
        let ms = self
            .json
            .get("event_time")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let channel = if table.by_channel {
            self.json
                .get("channel")
                .and_then(Value::as_str)
                .filter(|c| clawline_nats::subjects::is_valid_token(c))
                .unwrap_or("_")
                .to_string()
        } else {
            String::new()
        };
        (day(ms), channel)
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time in ms.
pub fn day(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn lookup<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(json);
    }
    path.split('/').try_fold(json, |v, k| v.get(k))
}

fn event_name(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

/// The rows as an Arrow batch for an archive file (the table's stored schema, no partition
/// columns); with `partition`, for the live tail: typed as a query sees the table, the partition
/// columns appended (the tail has no paths).
pub fn to_batch(table: &Table, rows: &[Row], partition: bool) -> arrow::error::Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(table.columns.len() + 2);
    for c in table.columns {
        arrays.push(column(c, rows));
    }
    if !partition {
        return RecordBatch::try_new(table.stored_schema(), arrays);
    }
    let schema = table.schema();
    for (array, field) in arrays.iter_mut().zip(schema.fields()) {
        if array.data_type() != field.data_type() {
            *array = arrow::compute::cast(array, field.data_type())?;
        }
    }
    let parts: Vec<(String, String)> = rows.iter().map(|r| r.partition(table)).collect();
    let mut date = StringBuilder::new();
    let mut channel = StringBuilder::new();
    for (d, ch) in &parts {
        date.append_value(d);
        channel.append_value(ch);
    }
    arrays.push(Arc::new(date.finish()));
    if table.by_channel {
        arrays.push(Arc::new(channel.finish()));
    }
    RecordBatch::try_new(schema, arrays)
}

fn column(c: &Col, rows: &[Row]) -> ArrayRef {
    let value = |r: &Row| -> Option<Value> {
        if c.path == "$seq" {
            return Some(Value::from(r.seq));
        }
        if c.path == "$event" {
            return Some(Value::from(event_name(&r.subject)));
        }
        if let Some(rest) = c.path.strip_prefix("$len/") {
            return lookup(&r.json, rest)
                .and_then(Value::as_array)
                .map(|a| Value::from(a.len()));
        }
        if let Some(rest) = c.path.strip_prefix("$each/") {
            let (list, field) = rest.split_once('/')?;
            let items = lookup(&r.json, list)?.as_array()?;
            return Some(Value::Array(
                items
                    .iter()
                    .map(|i| i.get(field).cloned().unwrap_or(Value::Null))
                    .collect(),
            ));
        }
        lookup(&r.json, c.path).filter(|v| !v.is_null()).cloned()
    };
    match c.kind {
        Str => {
            let mut b = StringBuilder::new();
            for r in rows {
                match value(r) {
                    Some(Value::String(s)) => b.append_value(s),
                    Some(other) => b.append_value(other.to_string()),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        JsonText => {
            let mut b = StringBuilder::new();
            for r in rows {
                match value(r) {
                    Some(v) => b.append_value(v.to_string()),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        U64 => {
            let mut b = UInt64Builder::new();
            for r in rows {
                b.append_option(value(r).and_then(|v| v.as_u64()));
            }
            Arc::new(b.finish())
        }
        U32 => {
            let mut b = UInt32Builder::new();
            for r in rows {
                b.append_option(
                    value(r)
                        .and_then(|v| v.as_u64())
                        .and_then(|v| u32::try_from(v).ok()),
                );
            }
            Arc::new(b.finish())
        }
        I64 => {
            let mut b = Int64Builder::new();
            for r in rows {
                b.append_option(value(r).and_then(|v| v.as_i64()));
            }
            Arc::new(b.finish())
        }
        F64 => {
            let mut b = Float64Builder::new();
            for r in rows {
                b.append_option(value(r).and_then(|v| v.as_f64()));
            }
            Arc::new(b.finish())
        }
        Bool => {
            // Events leave flags out when false (`background`), so absent is false, not unknown.
            let mut b = BooleanBuilder::new();
            for r in rows {
                b.append_value(value(r).and_then(|v| v.as_bool()).unwrap_or(false));
            }
            Arc::new(b.finish())
        }
        TimestampMs => {
            let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
            for r in rows {
                b.append_option(value(r).and_then(|v| v.as_i64()));
            }
            Arc::new(b.finish())
        }
        ListU32 => list_column(UInt32Builder::new(), rows.iter().map(value), |b, i| {
            b.append_option(i.as_u64().and_then(|v| u32::try_from(v).ok()));
        }),
        ListF32 => list_column(Float32Builder::new(), rows.iter().map(value), |b, i| {
            b.append_option(i.as_f64().map(|v| v as f32));
        }),
        ListStr => list_column(
            StringBuilder::new(),
            rows.iter().map(value),
            |b, i| match i {
                Value::String(s) => b.append_value(s),
                Value::Null => b.append_null(),
                other => b.append_value(other.to_string()),
            },
        ),
    }
}

/// A list column from each row's JSON array (null where a row has none), items added by `push`.
fn list_column<B: ArrayBuilder>(
    items: B,
    values: impl Iterator<Item = Option<Value>>,
    push: impl Fn(&mut B, &Value),
) -> ArrayRef {
    let mut b = ListBuilder::new(items);
    for v in values {
        match v {
            Some(Value::Array(items)) => {
                for i in &items {
                    push(b.values(), i);
                }
                b.append(true);
            }
            _ => b.append(false),
        }
    }
    Arc::new(b.finish())
}

/// Any event's msgpack as JSON (named-field msgpack maps directly onto JSON objects).
pub fn decode_json(payload: &[u8]) -> Result<Value, rmp_serde::decode::Error> {
    rmp_serde::from_slice::<Value>(payload)
}
