//! Column definitions, rows and the cell helpers every printer shares.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

// ---------------------------------------------------------------------------------------------
// Columns and printers
// ---------------------------------------------------------------------------------------------

/// One `TableColumnDefinition`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    pub(super) name: &'static str,
    pub(super) ty: &'static str,
    pub(super) format: &'static str,
    pub(super) description: &'static str,
    pub(super) priority: i32,
}

/// A column shown by plain `kubectl get`.
pub(super) const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A column shown only by `kubectl get -o wide`.
pub(super) const fn wide(
    name: &'static str,
    ty: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

pub(super) const D_NAME: &str = "Name of the object, unique within its namespace (or within the cluster for \
                      cluster-scoped kinds).";
pub(super) const D_AGE: &str = "Time since the object was created (metadata.creationTimestamp).";
pub(super) const D_CONTAINERS: &str = "Names of the containers in the pod template.";
pub(super) const D_IMAGES: &str = "Images of the containers in the pod template.";
pub(super) const D_SELECTOR: &str = "Label selector of the pods this object manages.";

/// The `Name` column every printer starts with.
pub(super) const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: D_NAME,
    priority: 0,
};
pub(super) const AGE: Column = col("Age", "string", D_AGE);

/// Cells (and row conditions) of one row.
pub(super) struct Row {
    pub(super) cells: Vec<Value>,
    pub(super) conditions: Vec<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Self {
        Row {
            cells,
            conditions: Vec::new(),
        }
    }
}
/// Renders a duration the way Kubernetes prints ages (`k8s.io/apimachinery/pkg/util/duration`
/// `HumanDuration`): about two significant units, e.g. `45s`, `3m2s`, `12m`, `5h3m`, `20h`,
/// `2d3h`, `8d`, `2y45d`, `9y`.
///
/// A time less than two seconds in the future counts as `0s` (clock skew); further in the
/// future gives `<invalid>`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.whole_seconds();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 2 * 60 {
        return format!("{seconds}s");
    }
    let minutes = d.whole_minutes();
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = d.whole_hours();
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_remainder(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `"{big}{big_unit}"`, followed by `"{small}{small_unit}"` unless `small` is zero.
fn with_remainder(big: i64, big_unit: &str, small: i64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}
// ---------------------------------------------------------------------------------------------
// Shared cell helpers
// ---------------------------------------------------------------------------------------------

pub(super) fn name_of(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"])
}

/// AGE cell: time since `metadata.creationTimestamp`, `<unknown>` without one.
pub(super) fn age(now: OffsetDateTime, obj: &Value) -> String {
    since(now, at(obj, &["metadata", "creationTimestamp"]))
}

/// Human duration since a timestamp value, `<unknown>` when missing or unparseable.
pub(super) fn since(now: OffsetDateTime, timestamp: Option<&Value>) -> String {
    match timestamp.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_owned(),
    }
}

/// Parses an RFC 3339 timestamp (`metav1.Time` or `metav1.MicroTime`); Go's zero time counts
/// as unset.
pub(super) fn parse_time(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &Rfc3339)
        .ok()
        .filter(|t| *t != datetime!(0001-01-01 0:00 UTC))
}

pub(super) fn time_at(obj: &Value, path: &[&str]) -> Option<OffsetDateTime> {
    at(obj, path).and_then(parse_time)
}

/// The later of two optional times.
pub(super) fn later(
    a: Option<OffsetDateTime>,
    b: Option<OffsetDateTime>,
) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `spec.replicas`, which the API server defaults to 1.
pub(super) fn replicas(obj: &Value) -> i64 {
    int_at(obj, &["spec", "replicas"]).unwrap_or(1)
}

/// The value itself, or `<none>` when empty.
pub(super) fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

/// Container names and images of a pod template, each joined with `,`.
pub(super) fn container_cells(obj: &Value, path: &[&str]) -> (String, String) {
    let containers = list(obj, path);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// A label map as `k=v,...` sorted by key, or `<none>`.
pub(super) fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<(&str, &str)> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return "<none>".to_owned();
    }
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `LabelSelector` as kubectl formats it: `<none>` when it selects everything (or is
/// missing), `<error>` when it is invalid.
pub(super) fn format_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Ok(s) if s.is_empty() => "<none>".to_owned(),
        Ok(s) => s,
        Err(()) => "<error>".to_owned(),
    }
}

/// The string form of a `LabelSelector` (`a=b,c in (d,e),!f`), requirements sorted by key.
pub(super) fn selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(&str, String)> = Vec::new();
    for (key, value) in object_at(selector, &["matchLabels"]).into_iter().flatten() {
        let value = value.as_str().unwrap_or("");
        requirements.push((key.as_str(), format!("{key}={value}")));
    }
    for expression in list(selector, &["matchExpressions"]) {
        let key = str_at(expression, &["key"]);
        let mut values = strings(expression, &["values"]);
        values.sort_unstable();
        let text = match str_at(expression, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key, text));
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(","))
}

// ---------------------------------------------------------------------------------------------
// Loose JSON access: every lookup tolerates missing fields, nulls and wrong types.
// ---------------------------------------------------------------------------------------------

/// The value at `path`, treating `null` as missing.
pub(super) fn at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(obj, |cur, key| cur.get(*key))
        .filter(|v| !v.is_null())
}

pub(super) fn opt_str<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(obj, path).and_then(Value::as_str)
}

/// The string at `path`, or `""`.
pub(super) fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    opt_str(obj, path).unwrap_or("")
}

pub(super) fn as_int(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        .or_else(|| value.as_f64().map(|f| f as i64))
}

pub(super) fn int_at(obj: &Value, path: &[&str]) -> Option<i64> {
    at(obj, path).and_then(as_int)
}

/// The boolean at `path`, `false` when missing.
pub(super) fn flag(obj: &Value, path: &[&str]) -> bool {
    at(obj, path).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at `path`, or an empty slice.
pub(super) fn list<'a>(obj: &'a Value, path: &[&str]) -> &'a [Value] {
    at(obj, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The string entries of the array at `path`.
pub(super) fn strings<'a>(obj: &'a Value, path: &[&str]) -> Vec<&'a str> {
    list(obj, path).iter().filter_map(Value::as_str).collect()
}

pub(super) fn object_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    at(obj, path).and_then(Value::as_object)
}

/// Number of entries of the array or map at `path`.
pub(super) fn len_at(obj: &Value, path: &[&str]) -> i64 {
    let len = match at(obj, path) {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(m)) => m.len(),
        _ => 0,
    };
    i64::try_from(len).unwrap_or(i64::MAX)
}
