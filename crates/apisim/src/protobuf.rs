//! Decoding of the few protobuf request bodies clients send to the simulator.
//!
//! kubectl's typed clients send some requests as `application/vnd.kubernetes.protobuf`:
//! `auth can-i` (SelfSubjectAccessReview), `auth can-i --list` (SelfSubjectRulesReview),
//! `auth whoami` (SelfSubjectReview) and `create token` (TokenRequest). The simulator
//! decodes exactly these into JSON and answers in JSON, which the clients accept. Any other
//! protobuf body gets a 415 that says to use JSON.
//!
//! Wire format: the 4-byte magic `k8s\0`, then a `runtime.Unknown` message (`typeMeta` = 1
//! with `apiVersion` = 1 and `kind` = 2; `raw` = 2), whose `raw` is the object's own message.
//! Every length is bounds-checked; nesting is shallow and fixed, so hostile input cannot
//! recurse.

use serde_json::{Map, Value, json};

/// Content type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The bytes are not a well-formed message.
    #[error("malformed protobuf body: {0}")]
    Malformed(&'static str),
    /// A well-formed body of a kind the simulator only takes as JSON.
    #[error(
        "the kubelan lab's API simulator decodes protobuf only for SelfSubjectAccessReview, SelfSubjectRulesReview, SelfSubjectReview and TokenRequest; send {0} as application/json"
    )]
    Unsupported(String),
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterates the fields of one message.
struct Fields<'a> {
    buf: &'a [u8],
}

fn varint(buf: &[u8]) -> Result<(u64, usize), ProtoError> {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(ProtoError::Malformed("bad varint"))
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Field<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let r = (|| {
            let (key, n) = varint(self.buf)?;
            self.buf = &self.buf[n..];
            let (num, wire) = (key >> 3, key & 7);
            let field = match wire {
                0 => {
                    let (v, n) = varint(self.buf)?;
                    self.buf = &self.buf[n..];
                    Field::Varint(v)
                }
                1 | 5 => {
                    let len = if wire == 1 { 8 } else { 4 };
                    if self.buf.len() < len {
                        return Err(ProtoError::Malformed("truncated fixed-size field"));
                    }
                    self.buf = &self.buf[len..];
                    Field::Fixed
                }
                2 => {
                    let (len, n) = varint(self.buf)?;
                    let rest = &self.buf[n..];
                    let len = usize::try_from(len)
                        .map_err(|_| ProtoError::Malformed("length overflow"))?;
                    if rest.len() < len {
                        return Err(ProtoError::Malformed("truncated length-delimited field"));
                    }
                    self.buf = &rest[len..];
                    Field::Bytes(&rest[..len])
                }
                _ => return Err(ProtoError::Malformed("unsupported wire type")),
            };
            Ok((num, field))
        })();
        if r.is_err() {
            self.buf = &[];
        }
        Some(r)
    }
}

fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

fn text(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not UTF-8"))
}

/// Decodes a message whose fields are all strings (repeated ones become arrays), with the
/// JSON names given by field number.
fn strings(buf: &[u8], names: &[(u64, &str, bool)]) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    for f in fields(buf) {
        let (num, field) = f?;
        let (Some((_, name, repeated)), Field::Bytes(b)) =
            (names.iter().find(|(n, _, _)| *n == num), field)
        else {
            continue;
        };
        let s = Value::String(text(b)?);
        if *repeated {
            if let Some(a) = out
                .entry(name.to_string())
                .or_insert_with(|| Value::Array(vec![]))
                .as_array_mut()
            {
                a.push(s);
            }
        } else {
            out.insert(name.to_string(), s);
        }
    }
    Ok(Value::Object(out))
}

/// The sub-message with field number `num`, if present.
fn message(buf: &[u8], num: u64) -> Result<Option<&[u8]>, ProtoError> {
    let mut found = None;
    for f in fields(buf) {
        if let (n, Field::Bytes(b)) = f?
            && n == num
        {
            found = Some(b);
        }
    }
    Ok(found)
}

fn object_meta(raw: &[u8]) -> Result<Value, ProtoError> {
    match message(raw, 1)? {
        Some(m) => strings(
            m,
            &[
                (1, "name", false),
                (2, "generateName", false),
                (3, "namespace", false),
            ],
        ),
        None => Ok(json!({})),
    }
}

/// Decodes a protobuf request body into the JSON form of the same object.
///
/// # Errors
/// [`ProtoError::Malformed`] for bad bytes, [`ProtoError::Unsupported`] for other kinds.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::Malformed(
        "missing the k8s protobuf magic prefix",
    ))?;
    let type_meta = message(rest, 1)?.ok_or(ProtoError::Malformed("missing typeMeta"))?;
    let tm = strings(type_meta, &[(1, "apiVersion", false), (2, "kind", false)])?;
    let api_version = tm
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = tm
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let raw = message(rest, 2)?.unwrap_or(&[]);
    let mut obj = match kind.as_str() {
        "SelfSubjectAccessReview" => {
            let spec = message(raw, 2)?.unwrap_or(&[]);
            let mut s = Map::new();
            if let Some(ra) = message(spec, 1)? {
                let names = [
                    (1, "namespace", false),
                    (2, "verb", false),
                    (3, "group", false),
                    (4, "version", false),
                    (5, "resource", false),
                    (6, "subresource", false),
                    (7, "name", false),
                ];
                s.insert("resourceAttributes".into(), strings(ra, &names)?);
            }
            if let Some(nra) = message(spec, 2)? {
                s.insert(
                    "nonResourceAttributes".into(),
                    strings(nra, &[(1, "path", false), (2, "verb", false)])?,
                );
            }
            json!({"spec": s})
        }
        "SelfSubjectRulesReview" => {
            let spec = message(raw, 2)?.unwrap_or(&[]);
            json!({"spec": strings(spec, &[(1, "namespace", false)])?})
        }
        "SelfSubjectReview" => json!({}),
        "TokenRequest" => {
            let spec = message(raw, 2)?.unwrap_or(&[]);
            let mut s = strings(spec, &[(1, "audiences", true)])?;
            for f in fields(spec) {
                if let (4, Field::Varint(v)) = f? {
                    s["expirationSeconds"] = json!(v);
                }
            }
            if let Some(r) = message(spec, 3)? {
                s["boundObjectRef"] = strings(
                    r,
                    &[
                        (1, "kind", false),
                        (2, "apiVersion", false),
                        (3, "name", false),
                        (4, "uid", false),
                    ],
                )?;
            }
            json!({"spec": s})
        }
        other => {
            return Err(ProtoError::Unsupported(if other.is_empty() {
                "the object".into()
            } else {
                other.to_string()
            }));
        }
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    obj["metadata"] = object_meta(raw)?;
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(num: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![(num << 3 | 2) as u8];
        out.push(b.len() as u8);
        out.extend_from_slice(b);
        out
    }

    fn unknown(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), ld(1, &tm), ld(2, raw)].concat()
    }

    #[test]
    fn self_subject_access_review() {
        let ra = [
            ld(1, b"default"),
            ld(2, b"create"),
            ld(5, b"pods"),
            ld(6, b"portforward"),
        ]
        .concat();
        let raw = ld(2, &ld(1, &ra));
        let v = decode(&unknown(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &raw,
        ))
        .unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "create");
        assert_eq!(
            v["spec"]["resourceAttributes"]["subresource"],
            "portforward"
        );
    }

    #[test]
    fn token_request() {
        let spec = [ld(1, b"api"), ld(1, b"vault"), vec![4 << 3, 0x90, 0x1c]].concat();
        let v = decode(&unknown(
            "authentication.k8s.io/v1",
            "TokenRequest",
            &ld(2, &spec),
        ))
        .unwrap();
        assert_eq!(v["spec"]["audiences"], json!(["api", "vault"]));
        assert_eq!(v["spec"]["expirationSeconds"], 3600);
    }

    #[test]
    fn bad_input() {
        assert!(matches!(decode(b"nope"), Err(ProtoError::Malformed(_))));
        assert!(
            matches!(decode(&unknown("v1", "Pod", &[])), Err(ProtoError::Unsupported(k)) if k == "Pod")
        );
        let good = unknown(
            "authorization.k8s.io/v1",
            "SelfSubjectRulesReview",
            &ld(2, &ld(1, b"ns")),
        );
        assert_eq!(decode(&good).unwrap()["spec"]["namespace"], "ns");
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        assert!(decode(&[MAGIC, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]].concat()).is_err());
    }
}
