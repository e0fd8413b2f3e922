//! The Event printer.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::cells::{
    Column, NAME, Row, as_int, at, col, int_at, name_of, parse_time, since, str_at, wide,
};

// --- Event ---------------------------------------------------------------------------------

pub(super) const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "Time since the event was last observed.",
    ),
    col("Type", "string", "Type of the event: Normal or Warning."),
    col("Reason", "string", "Short machine-readable reason."),
    col("Object", "string", "The object the event is about."),
    wide(
        "Subobject",
        "string",
        "Part of the object the event is about, such as a container.",
    ),
    wide("Source", "string", "Component that reported the event."),
    col("Message", "string", "Human-readable description."),
    wide(
        "First Seen",
        "string",
        "Time since the event was first observed.",
    ),
    wide("Count", "string", "Number of times the event occurred."),
    Column {
        priority: 1,
        ..NAME
    },
];

/// Prints both `v1` and `events.k8s.io/v1` events; the latter name some fields differently.
pub(super) fn event_row(now: OffsetDateTime, ev: &Value) -> Row {
    let field = |core: &str, events_v1: &str| at(ev, &[core]).or_else(|| at(ev, &[events_v1]));
    let event_time = at(ev, &["eventTime"]);
    let first_seen = match field("firstTimestamp", "deprecatedFirstTimestamp") {
        Some(t) if parse_time(t).is_some() => since(now, Some(t)),
        _ => since(now, event_time),
    };
    let mut last_seen = match field("lastTimestamp", "deprecatedLastTimestamp") {
        Some(t) if parse_time(t).is_some() => since(now, Some(t)),
        _ => first_seen.clone(),
    };
    let mut count = field("count", "deprecatedCount")
        .and_then(as_int)
        .unwrap_or(0);
    if let Some(series) = at(ev, &["series"]).filter(|s| s.is_object()) {
        last_seen = since(now, at(series, &["lastObservedTime"]));
        count = int_at(series, &["count"]).unwrap_or(0);
    } else if count == 0 {
        // Events recorded through the new API leave the count unset: they happened once.
        count = 1;
    }
    let empty = Value::Null;
    let regarding = field("involvedObject", "regarding").unwrap_or(&empty);
    let kind = str_at(regarding, &["kind"]).to_lowercase();
    let target = match str_at(regarding, &["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let source = field("source", "deprecatedSource").unwrap_or(&empty);
    let component = first_non_empty(
        str_at(source, &["component"]),
        str_at(ev, &["reportingController"]),
    );
    let host = first_non_empty(
        str_at(source, &["host"]),
        str_at(ev, &["reportingInstance"]),
    );
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };
    let message = field("message", "note")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    vec![
        json!(last_seen),
        json!(str_at(ev, &["type"])),
        json!(str_at(ev, &["reason"])),
        json!(target),
        json!(str_at(regarding, &["fieldPath"])),
        json!(source),
        json!(message),
        json!(first_seen),
        json!(count),
        json!(name_of(ev)),
    ]
    .into()
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}
