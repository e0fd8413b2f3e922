//! The errors of this crate. Each variant says what went wrong and what to do about it.
//!
//! Every failed Kubernetes API request is sorted here, in one place, by [`classify`]:
//! unreachable, credentials rejected (401), refused (403), not found (404) or another
//! answer. [`ClusterError::explain`] turns such a failure into the variant whose message
//! names the fix, with the context, server and user it concerns; every mode's command line
//! prints that message as it is (one line, no kube-rs debug output).

use std::path::PathBuf;
use std::time::Duration;

use crate::access::{Missing, session_sentence};

/// Errors talking to a cluster, installing the agent or finding it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No kubeconfig file exists and kubelan is not running inside a cluster.
    #[error(
        "no kubeconfig found (looked at {}); set KUBECONFIG or pass --kubeconfig FILE",
        display_paths(.searched)
    )]
    NoKubeconfig {
        /// The paths that were tried.
        searched: Vec<PathBuf>,
    },
    /// A kubeconfig file exists but cannot be read or parsed.
    #[error("cannot read kubeconfig {}: {}; fix the file or pass another one with --kubeconfig", .path.display(), first_line(.source))]
    ReadKubeconfig {
        /// The file.
        path: PathBuf,
        /// What kube-rs reported.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// `--context` names a context the kubeconfig does not have.
    #[error("context {context:?} is not in the kubeconfig (it has: {}); pass --context with one of those, or set current-context", display_list(.available))]
    UnknownContext {
        /// The requested context.
        context: String,
        /// The contexts the kubeconfig has.
        available: Vec<String>,
    },
    /// The kubeconfig has no `current-context` and none was given.
    #[error("the kubeconfig has no current-context; pass --context NAME (available contexts: {})", display_list(.available))]
    NoCurrentContext {
        /// The contexts the kubeconfig has.
        available: Vec<String>,
    },
    /// The selected context cannot be turned into a client configuration (missing
    /// cluster or user entry, unreadable certificate files, ...).
    #[error("cannot use context {context:?}: {}; check its cluster and user entries", first_line(.source))]
    Context {
        /// The context.
        context: String,
        /// What kube-rs reported.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Running inside a pod without a kubeconfig, and the in-cluster configuration failed.
    #[error("no kubeconfig and the in-cluster configuration failed: {0}; pass --kubeconfig FILE")]
    InCluster(#[source] kube::config::InClusterError),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server cannot be reached: no connection, no answer in time, or a TLS
    /// handshake that failed.
    #[error(
        "cannot reach the Kubernetes API at {server} (context {context:?}): {reason}; {}",
        unreachable_remedy(.reason)
    )]
    Unreachable {
        /// The kubeconfig context.
        context: String,
        /// The API server URL.
        server: String,
        /// The innermost cause, short (`connection refused`, `no route to host`, ...).
        reason: String,
        /// What kube-rs reported (boxed: it is large, and this error is rare).
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server rejected the credentials (401), or the kubeconfig's credential
    /// plugin could not produce any.
    #[error(
        "the Kubernetes API at {server} rejected the credentials of user {user:?} (context {context:?}): {message}; log in again, or refresh that user's token or certificate in the kubeconfig"
    )]
    Unauthorized {
        /// The kubeconfig context.
        context: String,
        /// The API server URL.
        server: String,
        /// The kubeconfig user entry of the context.
        user: String,
        /// The server's (or the credential plugin's) message.
        message: String,
    },
    /// The API refused one request (403) that no preflight check covered.
    #[error("the Kubernetes API refused to {action} ({message}); {hint}")]
    Denied {
        /// The request, verb first: `list pods in kubelan-system`.
        action: String,
        /// The server's message.
        message: String,
        /// Which `kubelan rbac MODE` grants it.
        hint: String,
    },
    /// Something a request needed does not exist (404).
    #[error("{action}: not found ({message}); {remedy}")]
    NotFound {
        /// The request, verb first.
        action: String,
        /// The server's message.
        message: String,
        /// How to get it (e.g. `kubelan install`), or what to check.
        remedy: String,
    },
    /// An API request failed otherwise (the server answered with another error).
    #[error("{action}: {}", describe(.source))]
    Api {
        /// What was being done, e.g. `create deployments/kubelan-agent in kubelan-system`.
        action: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The user lacks permissions the operation needs; every missing one is listed.
    #[error("{}", display_missing(.missing, .hint))]
    Forbidden {
        /// The missing permissions.
        missing: Vec<Missing>,
        /// What to do, e.g. which `kubelan rbac` mode prints a Role granting them.
        hint: String,
    },
    /// The user lacks permissions a way-back session (`kubelan expose`, `replace`, `run`)
    /// needs in its namespace; said in one sentence naming every missing verb.
    #[error("{}", session_sentence(.mode, .namespace, .missing))]
    SessionForbidden {
        /// `expose`, `replace` or `run`.
        mode: String,
        /// The session's namespace.
        namespace: String,
        /// The missing permissions.
        missing: Vec<Missing>,
    },
    /// No agent is installed in the namespace.
    #[error(
        "no kubelan agent in namespace {namespace}: run `kubelan install --namespace {namespace}` (or pass the namespace it was installed in)"
    )]
    NotInstalled {
        /// The namespace looked in.
        namespace: String,
    },
    /// The agent exists but none of its pods is ready.
    #[error(
        "the kubelan agent in namespace {namespace} has no ready pod ({detail}); see `kubectl -n {namespace} describe pods -l app.kubernetes.io/name=kubelan-agent`"
    )]
    AgentNotReady {
        /// The namespace.
        namespace: String,
        /// The pods' states.
        detail: String,
    },
    /// Waiting for something timed out.
    #[error("timed out after {} s waiting for {what}; last state: {last}", .after.as_secs())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
        /// The last observed state, with reasons (image pull, crash loop, ...).
        last: String,
    },
    /// The credentials Secret exists but is incomplete or unparsable.
    #[error(
        "secret {namespace}/kubelan-agent is not usable: {detail}; delete it (`kubectl -n {namespace} delete secret kubelan-agent`) and run `kubelan install` again to generate new credentials"
    )]
    BadCredentials {
        /// The namespace.
        namespace: String,
        /// What is wrong.
        detail: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate the agent's certificates: {0}")]
    Generate(#[source] rcgen::Error),
    /// The manifests could not be written as YAML.
    #[error("cannot write the manifests as YAML: {0}")]
    Yaml(#[source] serde_saphyr::SerializeError),
    /// A manifest could not be converted to JSON.
    #[error("cannot convert a manifest to JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A TLS configuration could not be built from the credentials.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The HTTP status code of an API error, if it is one.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The API server requests go to, and as whom: what messages about it name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiTarget {
    /// The kubeconfig context (`in-cluster` for a pod's service account).
    pub context: String,
    /// The API server URL.
    pub server: String,
    /// The kubeconfig user entry the context uses.
    pub user: String,
}

/// How a Kubernetes API request failed, decided from kube-rs' error alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFailure {
    /// No answer from the server: connection refused, no route, timeout, failed TLS
    /// handshake, connection lost. The text is the innermost cause, short.
    Unreachable(String),
    /// The credentials were rejected (401) or the credential plugin failed.
    Unauthorized(String),
    /// The request was refused (403).
    Forbidden(String),
    /// What the request names does not exist (404).
    NotFound(String),
    /// The server answered with another error, or the client failed otherwise.
    Other(String),
}

/// Sorts a kube-rs error into an [`ApiFailure`]; the texts never contain debug output.
pub fn classify(e: &kube::Error) -> ApiFailure {
    use kube::client::UpgradeConnectionError as Upgrade;
    match e {
        kube::Error::Api(s) => by_status(s.code, status_text(s)),
        kube::Error::UpgradeConnection(Upgrade::ProtocolSwitch(code)) => by_status(
            code.as_u16(),
            code.canonical_reason()
                .map_or_else(|| code.to_string(), str::to_string),
        ),
        kube::Error::Auth(a) => ApiFailure::Unauthorized(format!(
            "the kubeconfig's credentials could not be obtained: {}",
            innermost(a)
        )),
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::UpgradeConnection(_) => {
            if let Some(a) = find::<kube::client::AuthError>(e) {
                ApiFailure::Unauthorized(format!(
                    "the kubeconfig's credentials could not be obtained: {}",
                    innermost(a)
                ))
            } else {
                ApiFailure::Unreachable(innermost(e))
            }
        }
        other => ApiFailure::Other(other.to_string()),
    }
}

/// A kube-rs error in a few words, for messages: the server's message and code, or the
/// innermost cause of a failed connection. Never debug output.
pub fn describe(e: &kube::Error) -> String {
    match classify(e) {
        ApiFailure::Unreachable(t) | ApiFailure::Unauthorized(t) | ApiFailure::Other(t) => t,
        ApiFailure::Forbidden(t) => format!("forbidden: {t}"),
        ApiFailure::NotFound(t) => format!("not found: {t}"),
    }
}

fn by_status(code: u16, text: String) -> ApiFailure {
    match code {
        401 => ApiFailure::Unauthorized(text),
        403 => ApiFailure::Forbidden(text),
        404 => ApiFailure::NotFound(text),
        _ => ApiFailure::Other(format!("{text} (HTTP {code})")),
    }
}

fn status_text(s: &kube::core::Status) -> String {
    [&s.message, &s.reason]
        .into_iter()
        .find(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("HTTP {}", s.code))
}

/// The first error of type `T` in `e`'s chain.
fn find<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// The innermost cause of `e`, in words: an OS error by its kind (`connection refused`),
/// anything else as it displays itself.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    if let Some(io) = last.downcast_ref::<std::io::Error>() {
        return io_text(io);
    }
    let text = last.to_string();
    if text == "deadline has elapsed" {
        return "no answer in time".into();
    }
    text
}

fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let known = match e.kind() {
        _ if e.raw_os_error().is_none() => None,
        K::ConnectionRefused => Some("connection refused"),
        K::ConnectionReset => Some("connection reset"),
        K::HostUnreachable => Some("no route to host"),
        K::NetworkUnreachable => Some("network unreachable"),
        K::TimedOut => Some("connection timed out"),
        K::AddrNotAvailable => Some("address not available"),
        _ => None,
    };
    match known {
        Some(t) => t.into(),
        // `Connection refused (os error 111)` → without the number.
        None => {
            let t = e.to_string();
            match t.rfind(" (os error ") {
                Some(i) => t[..i].to_string(),
                None => t,
            }
        }
    }
}

/// What to check when the API server cannot be reached, from the cause.
fn unreachable_remedy(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("certificate") || r.contains("tls") || r.contains("handshake") {
        "the server's certificate does not match the certificate-authority of the kubeconfig's cluster entry (or the address is not that API server): check the cluster entry of the context"
    } else if r.contains("lookup") || r.contains("resolve") || r.contains("name or service") {
        "the server's name does not resolve: check the server of the kubeconfig's cluster entry and this machine's DNS"
    } else {
        "check that this machine reaches that address (VPN, proxy, firewall) and that the kubeconfig's cluster entry names the right server, or pick another context with --context"
    }
}

/// An error and its causes as one line: each layer once (many errors print their cause
/// and also return it as `source()`), stopping at the first layer that is already a
/// complete sentence: a [`ClusterError`], a kube-rs error (told by [`describe`], never as
/// debug output), or any layer `is_sentence` accepts (the CLI's other typed errors).
pub fn one_line_with(
    e: &(dyn std::error::Error + 'static),
    is_sentence: &dyn Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> String {
    let mut out = String::new();
    let mut cur = Some(e);
    while let Some(layer) = cur {
        let (text, last) = if let Some(k) = layer.downcast_ref::<kube::Error>() {
            (describe(k), true)
        } else if let Some(s) = layer.downcast_ref::<kube::core::Status>() {
            (status_text(s), true)
        } else {
            let last = layer.is::<ClusterError>() || is_sentence(layer);
            (layer.to_string(), last)
        };
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        if last {
            break;
        }
        cur = layer.source();
    }
    out
}

/// [`one_line_with`] with only this crate's and kube-rs' errors taken as complete.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    one_line_with(e, &|_| false)
}

impl ClusterError {
    /// The failure of an API request (`action`, verb first: `list pods in kubelan-system`)
    /// made against `at`, sorted by [`classify`] into the variant that names its fix.
    /// `rbac_hint` says which `kubelan rbac MODE` grants what the mode needs.
    pub fn from_api(
        action: impl Into<String>,
        source: kube::Error,
        at: &ApiTarget,
        rbac_hint: &str,
    ) -> ClusterError {
        let action = action.into();
        match classify(&source) {
            ApiFailure::Unreachable(reason) => ClusterError::Unreachable {
                context: at.context.clone(),
                server: at.server.clone(),
                reason,
                source: Box::new(source),
            },
            ApiFailure::Unauthorized(message) => ClusterError::Unauthorized {
                context: at.context.clone(),
                server: at.server.clone(),
                user: at.user.clone(),
                message,
            },
            ApiFailure::Forbidden(message) => ClusterError::Denied {
                action,
                message,
                hint: rbac_hint.into(),
            },
            ApiFailure::NotFound(message) => ClusterError::NotFound {
                action,
                message,
                remedy: "check the name and the namespace".into(),
            },
            ApiFailure::Other(_) => ClusterError::Api { action, source },
        }
    }

    /// This error with an [`ClusterError::Api`] failure sorted as [`ClusterError::from_api`]
    /// does; other variants already name their fix and are returned unchanged.
    #[must_use]
    pub fn explain(self, at: &ApiTarget, rbac_hint: &str) -> ClusterError {
        match self {
            ClusterError::Api { action, source } => {
                ClusterError::from_api(action, source, at, rbac_hint)
            }
            other => other,
        }
    }

    /// Whether the API server could not be reached or rejected the credentials: nothing
    /// else can work with this kubeconfig until that is fixed.
    pub fn is_fatal_for_kubeconfig(&self) -> bool {
        matches!(
            self,
            ClusterError::Unreachable { .. } | ClusterError::Unauthorized { .. }
        )
    }
}

/// A closure turning a kube error into [`ClusterError::Api`] with `action`.
pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let action = action.into();
    move |source| ClusterError::Api { action, source }
}

/// The first line of an error's message: YAML parsers add a multi-line excerpt of the
/// file, which would break the one-line rule (the line and column are on the first line).
fn first_line(e: &dyn std::error::Error) -> String {
    let text = e.to_string();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

fn display_paths(p: &[PathBuf]) -> String {
    if p.is_empty() {
        return "nothing".into();
    }
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn display_list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// One missing permission is one line; several are listed one per line, as a preflight
/// finds them all at once.
fn display_missing(m: &[Missing], hint: &str) -> String {
    if let [one] = m {
        return format!("insufficient permissions: {one}; {hint}");
    }
    let mut s = String::from("insufficient permissions:");
    for m in m {
        s.push_str("\n  ");
        s.push_str(&m.to_string());
    }
    s.push_str("\nhint: ");
    s.push_str(hint);
    s
}

/// Errors building a TLS configuration from PEM credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A credentials file cannot be read.
    #[error("cannot read {}: {source}; is the Secret kubelan-agent mounted there?", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// PEM text holds no usable certificate or key.
    #[error(
        "invalid {what}: {detail}; regenerate the credentials (delete Secret kubelan-agent, run `kubelan install`)"
    )]
    Pem {
        /// Which item (`CA certificate`, `client key`, ...).
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// rustls rejected the certificate, key or configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("cannot verify client certificates with this CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn at() -> ApiTarget {
        ApiTarget {
            context: "prod".into(),
            server: "https://10.4.7.11:6443/".into(),
            user: "jane".into(),
        }
    }

    fn status(code: u16, message: &str, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            status: Some(kube::core::response::StatusSummary::Failure),
            code,
            message: message.into(),
            reason: reason.into(),
            metadata: None,
            details: None,
        }))
    }

    /// An error as hyper-util wraps a failed TCP connect: a chain ending in the OS error.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct ClientError(#[source] ConnectError);

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error")]
    struct ConnectError(#[source] io::Error);

    fn connect_failure(kind: io::ErrorKind, errno: i32) -> kube::Error {
        let os = io::Error::from_raw_os_error(errno);
        assert_eq!(os.kind(), kind);
        kube::Error::Service(Box::new(ClientError(ConnectError(os))))
    }

    fn explained(e: kube::Error) -> String {
        ClusterError::from_api(
            "list pods in kubelan-system",
            e,
            &at(),
            crate::preflight::AGENT_HINT,
        )
        .to_string()
    }

    #[test]
    fn unreachable_names_the_address_and_what_to_check() {
        assert_eq!(
            explained(connect_failure(io::ErrorKind::ConnectionRefused, 111)),
            "cannot reach the Kubernetes API at https://10.4.7.11:6443/ (context \"prod\"): connection refused; check that this machine reaches that address (VPN, proxy, firewall) and that the kubeconfig's cluster entry names the right server, or pick another context with --context"
        );
        assert!(
            explained(connect_failure(io::ErrorKind::HostUnreachable, 113))
                .contains("(context \"prod\"): no route to host; check that this machine reaches")
        );
        let tls = kube::Error::Service(Box::new(io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        )));
        let msg = explained(tls);
        assert!(
            msg.contains(": invalid peer certificate: UnknownIssuer; the server's certificate does not match the certificate-authority"),
            "{msg}"
        );
    }

    #[test]
    fn rejected_credentials_name_context_and_user() {
        assert_eq!(
            explained(status(401, "Unauthorized", "Unauthorized")),
            "the Kubernetes API at https://10.4.7.11:6443/ rejected the credentials of user \"jane\" (context \"prod\"): Unauthorized; log in again, or refresh that user's token or certificate in the kubeconfig"
        );
        // The port-forward WebSocket upgrade refused with 401.
        let upgrade = kube::Error::UpgradeConnection(
            kube::client::UpgradeConnectionError::ProtocolSwitch(http::StatusCode::UNAUTHORIZED),
        );
        assert!(explained(upgrade).starts_with("the Kubernetes API at https://10.4.7.11:6443/ rejected the credentials of user \"jane\""));
    }

    #[test]
    fn refused_requests_name_verb_resource_and_rbac_mode() {
        assert_eq!(
            explained(status(
                403,
                "pods is forbidden: User \"jane\" cannot list resource \"pods\"",
                "Forbidden"
            )),
            "the Kubernetes API refused to list pods in kubelan-system (pods is forbidden: User \"jane\" cannot list resource \"pods\"); `kubelan rbac proxy` (or `kubelan rbac connect`, the same rules) prints a Role granting what using the agent needs; ask an admin of the agent's namespace to bind it to you"
        );
        // A preflight's single missing permission is one line too.
        let one = ClusterError::Forbidden {
            missing: vec![Missing {
                access: crate::preflight::Access::new("list", "", "pods").in_namespace("ns"),
                reason: None,
            }],
            hint: crate::preflight::AGENT_HINT.into(),
        };
        assert_eq!(
            one.to_string(),
            "insufficient permissions: missing: list pods in ns; `kubelan rbac proxy` (or `kubelan rbac connect`, the same rules) prints a Role granting what using the agent needs; ask an admin of the agent's namespace to bind it to you"
        );
    }

    #[test]
    fn missing_things_say_what_and_how_to_get_them() {
        assert_eq!(
            explained(status(
                404,
                "namespaces \"kubelan-system\" not found",
                "NotFound"
            )),
            "list pods in kubelan-system: not found (namespaces \"kubelan-system\" not found); check the name and the namespace"
        );
        assert_eq!(
            ClusterError::NotInstalled {
                namespace: "kubelan-system".into()
            }
            .to_string(),
            "no kubelan agent in namespace kubelan-system: run `kubelan install --namespace kubelan-system` (or pass the namespace it was installed in)"
        );
    }

    #[test]
    fn kubeconfig_problems_name_the_flag() {
        let e = ClusterError::UnknownContext {
            context: "gone".into(),
            available: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            "context \"gone\" is not in the kubeconfig (it has: a, b); pass --context with one of those, or set current-context"
        );
    }

    #[test]
    fn a_broken_kubeconfig_is_one_line_with_its_position() {
        let source =
            kube::config::Kubeconfig::from_yaml("apiVersion: v1\nclusters: [this is: not\n")
                .unwrap_err();
        let e = ClusterError::ReadKubeconfig {
            path: "/home/jane/.kube/config".into(),
            source,
        };
        let msg = e.to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(
            msg.starts_with("cannot read kubeconfig /home/jane/.kube/config: ")
                && msg.contains("line 2")
                && msg.ends_with("; fix the file or pass another one with --kubeconfig"),
            "{msg}"
        );
    }

    #[test]
    fn other_answers_are_short_and_never_debug_output() {
        let msg = explained(status(
            500,
            "etcdserver: request timed out",
            "InternalError",
        ));
        assert_eq!(
            msg,
            "list pods in kubelan-system: etcdserver: request timed out (HTTP 500)"
        );
        for e in [
            status(401, "Unauthorized", "Unauthorized"),
            status(500, "boom", "InternalError"),
            connect_failure(io::ErrorKind::ConnectionRefused, 111),
        ] {
            let d = describe(&e);
            assert!(!d.contains("Status {") && !d.contains("Some("), "{d}");
        }
    }

    #[test]
    fn one_line_keeps_each_layer_once_and_stops_at_typed_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("starting the proxy: {0}")]
        struct Outer(#[source] ClusterError);
        let inner = ClusterError::from_api(
            "list pods in kubelan-system",
            status(401, "Unauthorized", "Unauthorized"),
            &at(),
            "",
        );
        let text = inner.to_string();
        let line = one_line(&Outer(inner));
        // The cause is printed by `Outer` and returned as its source: once only.
        assert_eq!(line, format!("starting the proxy: {text}"));
        assert_eq!(line.matches("rejected the credentials").count(), 1);
        // A raw kube-rs error in a chain is described, not dumped.
        #[derive(Debug, thiserror::Error)]
        #[error("watching pods")]
        struct Watch(#[source] kube::Error);
        assert_eq!(
            one_line(&Watch(status(403, "forbidden", "Forbidden"))),
            "watching pods: forbidden: forbidden"
        );
    }
}
