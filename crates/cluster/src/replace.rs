//! `kubelan replace svc/NAME`: the JSON patches that point an existing Service at a
//! session's relay (the *swap*) and put it back (the *restore*), decided from the Service
//! as read. Sans-IO: the client applies the swap and, on Ctrl-C, the restore; the relay
//! applies the restore whenever it stops (grace expiry or SIGTERM), so a crashed client
//! leaves nothing swapped behind.
//!
//! # What changes, and why only that
//!
//! The swap replaces `spec.selector` by `{"kubelan.io/session": "<id>"}` and adds two
//! annotations; nothing else. The ports stay as they are: the relay listens on the
//! Service's own `targetPort` numbers, and for a *named* `targetPort` its container declares
//! a port of that name, which the EndpointSlice controller resolves like any other pod's.
//! The relay runs as uid 65532 without capabilities, so a `targetPort` below 1024 needs
//! the pod sysctl `net.ipv4.ip_unprivileged_port_start` lowered (one of Kubernetes' "safe"
//! sysctls, allowed by Pod Security `baseline` and `restricted`). We chose that over
//! rewriting `targetPort` to a high relay port because:
//! - the restore touches one field, so a concurrent edit of the ports (a deploy, a Helm
//!   upgrade) is never undone by a stale copy, and the `test` guards one field only;
//! - headless Services keep working: their clients dial the endpoint's port directly,
//!   which is the `targetPort`, so it must not move;
//! - the EndpointSlices keep the same ports, so nothing that reads them (meshes, SRV
//!   records) sees a difference beyond the address.
//!
//! # The annotations: anyone can undo a swap
//!
//! - [`ANNOTATION_REPLACED_BY`]: a sentence naming the session, user and host.
//! - [`ANNOTATION_ORIGINAL`]: `{"session":"<id>","selector":{…}}`, the selector before
//!   the swap ([`Original`]). The relay is also given that selector on its command line
//!   (`--restore-selector`), which wins; the annotation is what a later `kubelan`, or a
//!   person with `kubectl`, restores from when the relay could not (its node died):
//!
//! ```text
//! kubectl get svc web -o jsonpath='{.metadata.annotations.kubelan\.io/original}'
//! kubectl patch svc web --type=json -p '[
//!   {"op":"replace","path":"/spec/selector","value":<the "selector" printed above>},
//!   {"op":"remove","path":"/metadata/annotations/kubelan.io~1original"},
//!   {"op":"remove","path":"/metadata/annotations/kubelan.io~1replaced-by"}]'
//! ```
//!
//! # Byte-identical round trip
//!
//! The restore puts back the selector and removes exactly what the swap added: the two
//! keys, or the whole `annotations` map when the swap created it (the API server never
//! stores an empty map). Kubernetes does not track `metadata.generation` for Services, so
//! after swap and restore the object differs from the original only in `resourceVersion`
//! and `managedFields`.
//!
//! # Races
//!
//! Every patch starts with `test` operations on what it changes, so the API server applies
//! it only to the state it was decided from (422 otherwise; the caller reads again and
//! decides again). The swap also tests `resourceVersion`: the selector it records as the
//! original is exactly the one it replaces. The restore does not, so unrelated edits made
//! during the session are kept; a selector changed by someone else is left alone.

pub mod restorer;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The label that selects a session's relay pod (and a replaced Service's selector).
pub const SESSION_LABEL: &str = crate::names::LABEL_SESSION;
/// Annotation on a replaced Service naming the session, user and host.
pub const ANNOTATION_REPLACED_BY: &str = "kubelan.io/replaced-by";
/// Annotation on a replaced Service holding [`Original`] as JSON.
pub const ANNOTATION_ORIGINAL: &str = "kubelan.io/original";
/// The longest [`Original`] text read (Kubernetes caps all annotations of an object at
/// 256 KiB together).
pub const MAX_ORIGINAL_BYTES: usize = 256 * 1024;

/// A Service's `spec.selector`.
pub type Selector = BTreeMap<String, String>;

/// The selector of a session's relay pod: `{"kubelan.io/session": session}`.
pub fn session_selector(session: &str) -> Selector {
    Selector::from([(SESSION_LABEL.to_string(), session.to_string())])
}

/// The session whose relay a Service's selector points at, if it is exactly a session
/// selector.
pub fn selected_session(svc: &Service) -> Option<&str> {
    let selector = svc.spec.as_ref()?.selector.as_ref()?;
    match selector.iter().next() {
        Some((k, v)) if selector.len() == 1 && k == SESSION_LABEL => Some(v),
        _ => None,
    }
}

/// Who replaces a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacer {
    /// The session's id.
    pub session: String,
    /// The user as the API server knows them.
    pub user: String,
    /// The client machine's host name.
    pub host: String,
}

impl Replacer {
    /// The value of [`ANNOTATION_REPLACED_BY`].
    pub fn replaced_by(&self) -> String {
        format!(
            "kubelan session {} of {} on {}; the selector before is in {ANNOTATION_ORIGINAL}",
            self.session, self.user, self.host
        )
    }
}

/// What [`ANNOTATION_ORIGINAL`] holds: the session that swapped the selector and the
/// selector it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// The session that swapped the selector.
    pub session: String,
    /// The selector before the swap.
    pub selector: Selector,
}

/// Why an [`ANNOTATION_ORIGINAL`] value or a `--restore-selector` flag does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginalError {
    /// Longer than [`MAX_ORIGINAL_BYTES`].
    #[error("it is {0} bytes long, more than any Service's annotations can hold")]
    TooLong(usize),
    /// Not the expected JSON.
    #[error("it is not the JSON kubelan writes ({0})")]
    Json(String),
    /// The selector is empty.
    #[error("its selector is empty")]
    EmptySelector,
    /// The session id is empty or not a label value.
    #[error("its session id {0:?} is not a kubelan session id")]
    Session(String),
}

impl Original {
    /// The annotation's value (compact JSON, keys sorted).
    pub fn to_annotation(&self) -> String {
        // Strings only: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an [`ANNOTATION_ORIGINAL`] value.
    ///
    /// # Errors
    /// [`OriginalError`] when it is too long, not that JSON, has an empty selector or a
    /// session id that is not a label value.
    pub fn parse(text: &str) -> Result<Original, OriginalError> {
        if text.len() > MAX_ORIGINAL_BYTES {
            return Err(OriginalError::TooLong(text.len()));
        }
        let o: Original =
            serde_json::from_str(text).map_err(|e| OriginalError::Json(e.to_string()))?;
        if o.selector.is_empty() {
            return Err(OriginalError::EmptySelector);
        }
        if !is_session_id(&o.session) {
            return Err(OriginalError::Session(o.session.chars().take(80).collect()));
        }
        Ok(o)
    }
}

/// Reads a selector given as a JSON object of strings (the relay's `--restore-selector`).
///
/// # Errors
/// [`OriginalError`] when it is too long, not such an object, or empty.
pub fn parse_selector(text: &str) -> Result<Selector, OriginalError> {
    if text.len() > MAX_ORIGINAL_BYTES {
        return Err(OriginalError::TooLong(text.len()));
    }
    let s: Selector = serde_json::from_str(text).map_err(|e| OriginalError::Json(e.to_string()))?;
    if s.is_empty() {
        return Err(OriginalError::EmptySelector);
    }
    Ok(s)
}

/// A session id as kubelan makes them: a label value of lower-case letters and digits.
fn is_session_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Why a Service cannot be replaced; each names what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReplaceable {
    /// No selector: its endpoints are written by hand or by another controller.
    #[error(
        "Service {service} has no selector, so no pods of its own to take the traffic from; `kubelan replace` swaps a Service's selector (use `kubelan expose` to make a new Service instead)"
    )]
    NoSelector {
        /// The Service.
        service: String,
    },
    /// `type: ExternalName`: a DNS alias with no endpoints.
    #[error(
        "Service {service} is of type ExternalName, a DNS alias with no endpoints; replace the Service it points to instead"
    )]
    ExternalName {
        /// The Service.
        service: String,
    },
    /// No ports (a headless Service may have none): nothing to listen on.
    #[error(
        "Service {service} has no ports, so there is nothing for kubelan to listen on; add the ports to the Service or use `kubelan expose`"
    )]
    NoPorts {
        /// The Service.
        service: String,
    },
    /// A protocol the relay does not carry.
    #[error(
        "Service {service} port {port} is {protocol}; kubelan carries only TCP and UDP, so it cannot replace this Service"
    )]
    Protocol {
        /// The Service.
        service: String,
        /// The Service port.
        port: i32,
        /// Its protocol.
        protocol: String,
    },
    /// A `targetPort` number outside 1–65535 (the API server never stores one).
    #[error("Service {service} port {port} has targetPort {target}, which is not a port number")]
    TargetPort {
        /// The Service.
        service: String,
        /// The Service port.
        port: i32,
        /// The bad target.
        target: i32,
    },
    /// Its selector already points at a session's relay.
    #[error(
        "Service {service} is already replaced by kubelan session {session}; wait for that session to end (`kubectl get job kubelan-{session}` shows it) or ask its user to stop it"
    )]
    AlreadyReplaced {
        /// The Service.
        service: String,
        /// The session its selector names.
        session: String,
    },
}

/// Where a Service port sends traffic in its pods, which is where the relay listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name; the relay's container declares a port of this name.
    Name(String),
}

/// One port of a replaced Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedPort {
    /// The Service port's name (`None` when the Service has one unnamed port).
    pub name: Option<String>,
    /// The port on the ClusterIP.
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// Where the relay must listen.
    pub target: TargetPort,
}

/// Something that works differently while a Service is replaced; shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceWarning {
    /// `clusterIP: None`: DNS answers the relay pod's address for the session; per-pod
    /// names (`web-0.web`) stop resolving until it ends.
    Headless,
    /// `internalTrafficPolicy: Local`: only pods on the relay's node reach it.
    InternalTrafficLocal,
}

impl fmt::Display for ReplaceWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Headless => {
                "the Service is headless: its DNS name answers the relay pod's address during the session, and per-pod names (like web-0.web) do not resolve until it ends"
            }
            Self::InternalTrafficLocal => {
                "the Service has internalTrafficPolicy Local: only pods on the relay pod's node reach this machine; pods on other nodes get no answer during the session"
            }
        })
    }
}

/// The swap of one Service, decided by [`swap`].
#[derive(Debug, Clone, PartialEq)]
pub struct Swap {
    /// The JSON patch (RFC 6902) to send (`application/json-patch+json`).
    pub patch: Value,
    /// The selector it replaces (the relay's `--restore-selector`).
    pub original: Selector,
    /// The Service's ports: where the relay listens.
    pub ports: Vec<ReplacedPort>,
    /// What works differently during the session.
    pub warnings: Vec<ReplaceWarning>,
}

/// `~` and `/` escaped for a JSON pointer segment (RFC 6901).
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn annotation_path(key: &str) -> String {
    format!("/metadata/annotations/{}", pointer_segment(key))
}

fn service_name(svc: &Service) -> String {
    svc.metadata.name.clone().unwrap_or_default()
}

/// Decides the swap of `svc` (as just read) to `who`'s relay.
///
/// The patch `test`s the `resourceVersion` and the selector that were read, adds
/// [`ANNOTATION_REPLACED_BY`] and [`ANNOTATION_ORIGINAL`] (creating the annotations map if
/// there is none), then replaces the selector by [`session_selector`]. A 422 answer means
/// the Service changed since it was read: read it again and call this again.
///
/// Headless Services can be replaced (see [`ReplaceWarning::Headless`]), and so can named
/// `targetPort`s ([`TargetPort::Name`]).
///
/// # Errors
/// [`NotReplaceable`]: no selector, ExternalName, no ports, SCTP, or already replaced.
pub fn swap(svc: &Service, who: &Replacer) -> Result<Swap, NotReplaceable> {
    let service = service_name(svc);
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(NotReplaceable::ExternalName { service });
    }
    let Some(original) = spec.selector.clone().filter(|s| !s.is_empty()) else {
        return Err(NotReplaceable::NoSelector { service });
    };
    if let Some(session) = selected_session(svc) {
        return Err(NotReplaceable::AlreadyReplaced {
            service,
            session: session.to_string(),
        });
    }
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        if protocol != "TCP" && protocol != "UDP" {
            return Err(NotReplaceable::Protocol {
                service,
                port: p.port,
                protocol,
            });
        }
        let bad_target = |target| NotReplaceable::TargetPort {
            service: service.clone(),
            port: p.port,
            target,
        };
        let target = match &p.target_port {
            // The API server defaults an absent targetPort to the port.
            None => TargetPort::Number(u16::try_from(p.port).map_err(|_| bad_target(p.port))?),
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(u16::try_from(*n).map_err(|_| bad_target(*n))?)
            }
            Some(IntOrString::String(name)) => TargetPort::Name(name.clone()),
        };
        if target == TargetPort::Number(0) {
            return Err(bad_target(0));
        }
        ports.push(ReplacedPort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: u16::try_from(p.port).unwrap_or(0),
            protocol,
            target,
        });
    }
    if ports.is_empty() {
        return Err(NotReplaceable::NoPorts { service });
    }
    let mut warnings = Vec::new();
    if spec.cluster_ip.as_deref() == Some("None") {
        warnings.push(ReplaceWarning::Headless);
    }
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        warnings.push(ReplaceWarning::InternalTrafficLocal);
    }

    let record = Original {
        session: who.session.clone(),
        selector: original.clone(),
    };
    let ours = [
        (ANNOTATION_REPLACED_BY, who.replaced_by()),
        (ANNOTATION_ORIGINAL, record.to_annotation()),
    ];
    let mut ops = Vec::new();
    if let Some(rv) = &svc.metadata.resource_version {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    ops.push(json!({"op": "test", "path": "/spec/selector", "value": original}));
    if svc.metadata.annotations.is_none() {
        let map: BTreeMap<&str, &String> = ours.iter().map(|(k, v)| (*k, v)).collect();
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": map}));
    } else {
        for (k, v) in &ours {
            ops.push(json!({"op": "add", "path": annotation_path(k), "value": v}));
        }
    }
    ops.push(
        json!({"op": "replace", "path": "/spec/selector", "value": session_selector(&who.session)}),
    );
    Ok(Swap {
        patch: Value::Array(ops),
        original,
        ports,
        warnings,
    })
}

/// What [`restore`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreDecision {
    /// The selector is still the session's: the patch puts `original` back.
    Restore {
        /// The selector put back.
        original: Selector,
    },
    /// The selector is the original already (restored before); at most the session's
    /// annotations are left to remove.
    AlreadyRestored,
    /// Someone changed the selector since the swap: it is left alone (at most the
    /// session's annotations are removed).
    ChangedByOthers {
        /// The selector found.
        selector: Option<Selector>,
    },
    /// The selector is not the session's and the original is unknown: already restored,
    /// or changed since; left alone.
    NotOurs {
        /// The selector found.
        selector: Option<Selector>,
    },
    /// The selector is the session's but nothing says what it was before (no
    /// `--restore-selector`, no readable [`ANNOTATION_ORIGINAL`] of this session).
    NoOriginal {
        /// Why the annotation could not be used.
        why: String,
    },
}

/// The restore of one Service, decided by [`restore`].
#[derive(Debug, Clone, PartialEq)]
pub struct Restore {
    /// What was found.
    pub decision: RestoreDecision,
    /// The JSON patch to send, if anything is to change.
    pub patch: Option<Value>,
}

fn show(selector: Option<&Selector>) -> String {
    match selector {
        None => "none".into(),
        Some(s) => s
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

impl RestoreDecision {
    /// One log line about Service `service` and session `session`.
    pub fn describe(&self, service: &str, session: &str) -> String {
        match self {
            Self::Restore { original } => format!(
                "Service {service}: selector {SESSION_LABEL}={session} put back to {}",
                show(Some(original))
            ),
            Self::AlreadyRestored => {
                format!("Service {service} was already restored (selector is the original again)")
            }
            Self::ChangedByOthers { selector } => format!(
                "Service {service} was changed by someone else since session {session} replaced it (selector now {}, not the session's); left as it is",
                show(selector.as_ref())
            ),
            Self::NotOurs { selector } => format!(
                "Service {service} no longer selects session {session}'s relay (selector {}): already restored, or changed since; left as it is",
                show(selector.as_ref())
            ),
            Self::NoOriginal { why } => format!(
                "Service {service} still selects session {session}'s relay, but its selector before is unknown ({why}); restore it by hand"
            ),
        }
    }
}

/// Decides how to put back `svc` (as just read), replaced by `session`. `known` is the
/// original selector when the caller knows it (the relay's `--restore-selector`, the
/// client's own swap); otherwise [`ANNOTATION_ORIGINAL`] of this session is used.
///
/// The patch `test`s that the selector is still the session's, replaces it by the
/// original, and removes the session's annotations (the whole map when nothing else is
/// in it, tested to be exactly what was read). When the selector is not the session's,
/// the only change is removing the session's own annotations, if present. A 422 answer
/// means the Service changed since it was read: read again and decide again. Idempotent:
/// on a restored Service the decision is [`RestoreDecision::AlreadyRestored`] or
/// [`RestoreDecision::NotOurs`] with no patch.
pub fn restore(svc: &Service, session: &str, known: Option<&Selector>) -> Restore {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    // The annotation is ours only if it names this session.
    let recorded = annotations
        .get(ANNOTATION_ORIGINAL)
        .map(|t| Original::parse(t));
    let ours_recorded = matches!(&recorded, Some(Ok(o)) if o.session == session);
    let original = known.cloned().or_else(|| match &recorded {
        Some(Ok(o)) if o.session == session => Some(o.selector.clone()),
        _ => None,
    });
    let cleanup = if ours_recorded {
        annotation_removal(&annotations)
    } else {
        Vec::new()
    };
    let patch_of = |ops: Vec<Value>| (!ops.is_empty()).then_some(Value::Array(ops));
    if selected_session(svc) != Some(session) {
        let decision = match &original {
            Some(o) if selector.as_ref() == Some(o) => RestoreDecision::AlreadyRestored,
            Some(_) => RestoreDecision::ChangedByOthers { selector },
            None => RestoreDecision::NotOurs { selector },
        };
        return Restore {
            decision,
            patch: patch_of(cleanup),
        };
    }
    let Some(original) = original else {
        let why = match recorded {
            None => format!("no {ANNOTATION_ORIGINAL} annotation"),
            Some(Err(e)) => format!("{ANNOTATION_ORIGINAL}: {e}"),
            Some(Ok(o)) => format!("{ANNOTATION_ORIGINAL} names session {}", o.session),
        };
        return Restore {
            decision: RestoreDecision::NoOriginal { why },
            patch: None,
        };
    };
    let mut ops = vec![
        json!({"op": "test", "path": "/spec/selector", "value": session_selector(session)}),
        json!({"op": "replace", "path": "/spec/selector", "value": original}),
    ];
    ops.extend(cleanup);
    Restore {
        decision: RestoreDecision::Restore { original },
        patch: patch_of(ops),
    }
}

/// The operations that remove the session's annotations from `annotations` (as read):
/// the whole map when nothing else is in it, else each key; each guarded by a `test`.
fn annotation_removal(annotations: &BTreeMap<String, String>) -> Vec<Value> {
    let ours = [ANNOTATION_REPLACED_BY, ANNOTATION_ORIGINAL];
    let present: Vec<&str> = ours
        .into_iter()
        .filter(|k| annotations.contains_key(*k))
        .collect();
    if present.is_empty() {
        return Vec::new();
    }
    if annotations.keys().all(|k| ours.contains(&k.as_str())) {
        return vec![
            json!({"op": "test", "path": "/metadata/annotations", "value": annotations}),
            json!({"op": "remove", "path": "/metadata/annotations"}),
        ];
    }
    let mut ops = Vec::new();
    for k in present {
        let path = annotation_path(k);
        ops.push(json!({"op": "test", "path": path, "value": annotations[k]}));
        ops.push(json!({"op": "remove", "path": path}));
    }
    ops
}

/// Where a swapped Service's traffic stands, read from its EndpointSlices: what every
/// node's kube-proxy programs its rules from (each applies a change within about a second
/// by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointsState {
    /// The relay is the only ready endpoint of its address family: new connections go to
    /// it.
    Moved,
    /// Not yet.
    Pending {
        /// Whether the relay is listed ready.
        relay_listed: bool,
        /// Other ready addresses still listed (the original pods).
        others: usize,
    },
}

impl fmt::Display for EndpointsState {
    /// `the relay is the only endpoint`, `the relay not listed yet, 2 old endpoints still
    /// listed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Moved => f.write_str("the relay is the only endpoint"),
            Self::Pending {
                relay_listed,
                others,
            } => {
                let relay = if *relay_listed {
                    "the relay listed"
                } else {
                    "the relay not listed yet"
                };
                let s = if *others == 1 { "" } else { "s" };
                write!(f, "{relay}, {others} old endpoint{s} still listed")
            }
        }
    }
}

/// Decides from a Service's EndpointSlices (`kubernetes.io/service-name=<svc>`, as
/// listed) whether its traffic has moved to the relay at `relay_ip`. Only slices of the
/// relay's address family count (a dual-stack Service's other family is not ours to
/// judge; FQDN slices never are). An endpoint is ready unless its `ready` condition is
/// `false` (unset means ready, as kube-proxy reads it).
pub fn endpoints_state(slices: &[EndpointSlice], relay_ip: std::net::IpAddr) -> EndpointsState {
    let family = if relay_ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let mut relay_listed = false;
    let mut others = 0;
    let ready = slices
        .iter()
        .filter(|s| s.address_type == family)
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
    for endpoint in ready {
        for address in &endpoint.addresses {
            match address.parse::<std::net::IpAddr>() {
                Ok(a) if a == relay_ip => relay_listed = true,
                _ => others += 1,
            }
        }
    }
    if relay_listed && others == 0 {
        EndpointsState::Moved
    } else {
        EndpointsState::Pending {
            relay_listed,
            others,
        }
    }
}

/// Fuzz entry (`fuzz/fuzz_targets/replace_original.rs` and the corpus replay): the input
/// as an [`ANNOTATION_ORIGINAL`] value and as a `--restore-selector`; whatever parses
/// prints back to itself, and restoring a Service swapped with it decides `Restore` with
/// the parsed selector. Must return normally for any input.
#[cfg(any(fuzzing, test, feature = "fuzz"))]
pub fn fuzz_entry(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(o) = Original::parse(&text) {
        let again = Original::parse(&o.to_annotation()).expect("printed original parses");
        assert_eq!(again, o);
        let svc = swapped_service(&o);
        let r = restore(&svc, &o.session, None);
        assert_eq!(
            r.decision,
            RestoreDecision::Restore {
                original: o.selector.clone()
            }
        );
        assert!(r.patch.is_some());
    }
    if let Ok(s) = parse_selector(&text) {
        let printed = serde_json::to_string(&s).expect("strings serialise");
        assert_eq!(parse_selector(&printed).as_ref(), Ok(&s));
    }
}

/// A Service as a swap by `o.session` leaves it (for the fuzz entry).
#[cfg(any(fuzzing, test, feature = "fuzz"))]
fn swapped_service(o: &Original) -> Service {
    let mut svc = Service::default();
    svc.metadata.name = Some("fuzz".into());
    svc.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_ORIGINAL.to_string(),
        o.to_annotation(),
    )]));
    svc.spec = Some(k8s_openapi::api::core::v1::ServiceSpec {
        selector: Some(session_selector(&o.session)),
        ..Default::default()
    });
    svc
}

#[cfg(test)]
mod tests;
