//! Object metadata helpers: names, timestamps, UIDs, random suffixes, JSON accessors.

use rand::Rng;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The current time as the API server writes `metav1.Time` (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    format_time(OffsetDateTime::now_utc())
}

/// Formats a time as `metav1.Time`.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// The current time as `metav1.MicroTime` (microsecond precision).
pub fn now_micro() -> String {
    let t = OffsetDateTime::now_utc();
    let micros = t.nanosecond() / 1000 * 1000;
    t.replace_nanosecond(micros)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Parses a `metav1.Time`.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// A random RFC 4122 version-4 UID.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::rng().random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 0x0f,
        b[7],
        8 | (b[8] & 0x3),
        b[8] >> 4,
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random suffix of `n` characters for `generateName`.
pub fn random_suffix(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// A short, stable hash of a JSON value rendered in the suffix alphabet (for
/// `pod-template-hash` and controller revisions). FNV-1a over the canonical JSON text.
pub fn short_hash(v: &Value) -> String {
    let text = v.to_string();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut out = String::new();
    for _ in 0..10 {
        out.push(SUFFIX_ALPHABET[(h % SUFFIX_ALPHABET.len() as u64) as usize] as char);
        h /= SUFFIX_ALPHABET.len() as u64;
    }
    out
}

/// Validates a DNS-1123 subdomain (most object names). Returns the problem, if any.
pub fn check_dns1123_subdomain(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = s.split('.').all(|label| is_dns1123_label(label, 253));
    if ok {
        None
    } else {
        Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into(),
        )
    }
}

/// Validates a DNS-1123 label (Service and Namespace names). Returns the problem, if any.
pub fn check_dns1123_label(s: &str) -> Option<String> {
    if is_dns1123_label(s, 63) {
        None
    } else {
        Some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

fn is_dns1123_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `metadata` of an object (empty if absent).
pub fn metadata(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"])
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    str_at(obj, &["metadata", "namespace"])
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    str_at(obj, &["metadata", "uid"])
}

/// A string at a JSON path, or "".
pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    at(obj, path).and_then(Value::as_str).unwrap_or("")
}

/// The value at a JSON path.
pub fn at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = obj;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// A mutable object at a JSON path, creating empty objects on the way. Returns `None` if a
/// non-object value is in the way.
pub fn obj_at_mut<'a>(obj: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = obj;
    for p in path {
        let map = cur.as_object_mut()?;
        cur = map
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if cur.is_null() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut()
}

/// Sets a value at a JSON path, creating objects on the way (no-op if blocked).
pub fn set_at(obj: &mut Value, path: &[&str], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(map) = obj_at_mut(obj, parents) {
        map.insert(last.to_string(), v);
    }
}

/// The owner reference of `obj` that is its controller, if any: (kind, name, uid).
pub fn controller_of(obj: &Value) -> Option<(&str, &str, &str)> {
    metadata(obj)
        .get("ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            (
                r.get("kind").and_then(Value::as_str).unwrap_or(""),
                r.get("name").and_then(Value::as_str).unwrap_or(""),
                r.get("uid").and_then(Value::as_str).unwrap_or(""),
            )
        })
}

/// An owner reference naming `owner` as controller.
pub fn controller_ref(owner: &Value) -> Value {
    serde_json::json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_dns1123_label("web-1").is_none());
        assert!(check_dns1123_label("Web").is_some());
        assert!(check_dns1123_label("-a").is_some());
        assert!(check_dns1123_label(&"a".repeat(64)).is_some());
        assert!(check_dns1123_subdomain("kube-root-ca.crt").is_none());
        assert!(check_dns1123_subdomain("a..b").is_some());
    }

    #[test]
    fn uid_shape() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }

    #[test]
    fn hash_is_stable_and_safe() {
        let v = serde_json::json!({"a": 1});
        assert_eq!(short_hash(&v), short_hash(&v));
        assert!(short_hash(&v).bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
        assert_eq!(random_suffix(5).len(), 5);
    }

    #[test]
    fn time_round_trip() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z'), "{s}");
        assert!(!s.contains('.'), "{s}");
        assert!(parse_time(&s).is_some());
        assert!(now_micro().contains('.') || now_micro().ends_with('Z'));
    }
}
