//! What the user asked for on the command line, parsed and validated without touching the
//! network: `svc/web 8080:80`, `pod/db-0 5432`, `deploy/api :http`, several at once, and the
//! `--address` list.
//!
//! The grammar follows `kubectl port-forward`:
//!
//! ```text
//! specs    = { target port+ }
//! target   = KIND "/" NAME | NAME            (a bare name is a pod, as in kubectl)
//! KIND     = pod | pods | po | svc | service | services
//!          | deploy | deployment | deployments | deployment.apps | deployments.apps
//! port     = REMOTE | LOCAL ":" REMOTE | ":" REMOTE       (optionally "/tcp")
//! REMOTE   = 1..65535 | port name (an IANA service name such as `http`)
//! LOCAL    = 0..65535 (0 or empty: a free port)
//! ```
//!
//! A bare word after a target is a port *name* of that target when it can be one (`svc/web
//! http`); a bare word that starts the list is a pod name. UDP (`7/udp`) is refused
//! here with the modes that carry UDP, because the API server's port-forward is TCP only.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of object a forward targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One pod by name.
    Pod,
    /// A Service: a ready pod behind it, found through its EndpointSlices.
    Service,
    /// A Deployment: a ready pod matching its selector.
    Deployment,
}

impl Kind {
    /// Parses the part before the slash (`svc`, `pods`, `deployment.apps`, ...).
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => Some(Kind::Pod),
            "svc" | "service" | "services" => Some(Kind::Service),
            "deploy" | "deployment" | "deployments" | "deployment.apps" | "deployments.apps" => {
                Some(Kind::Deployment)
            }
            _ => None,
        }
    }

    /// The short form used in output (`pod`, `svc`, `deploy`).
    pub fn short(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Service => "svc",
            Kind::Deployment => "deploy",
        }
    }

    /// The Kubernetes kind name (`Pod`, `Service`, `Deployment`).
    pub fn kind_name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
        }
    }
}

/// `KIND/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetRef {
    /// The kind.
    pub kind: Kind,
    /// The object's name.
    pub name: String,
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.short(), self.name)
    }
}

/// The port on the target side: a number, or a name (a Service port's name, or a container
/// port's name for pods and Deployments).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RemotePort {
    /// A port number.
    Number(u16),
    /// A port name.
    Name(String),
}

impl fmt::Display for RemotePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemotePort::Number(n) => write!(f, "{n}"),
            RemotePort::Name(s) => f.write_str(s),
        }
    }
}

/// The local side of one port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LocalPort {
    /// The same number as the remote port (`80`; for a named remote port, the number it
    /// resolves to).
    Same,
    /// A free port chosen by the system (`:80`, `0:80`).
    Any,
    /// This port (`8080:80`).
    Fixed(u16),
}

/// One `LOCAL:REMOTE` mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The local port.
    pub local: LocalPort,
    /// The remote port.
    pub remote: RemotePort,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            LocalPort::Same => write!(f, "{}", self.remote),
            LocalPort::Any => write!(f, ":{}", self.remote),
            LocalPort::Fixed(p) => write!(f, "{p}:{}", self.remote),
        }
    }
}

/// One target and its port mappings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ForwardSpec {
    /// What to forward to.
    pub target: TargetRef,
    /// Its ports, in the order given.
    pub ports: Vec<PortMapping>,
}

impl fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target)?;
        for p in &self.ports {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// Why the command line cannot be used. Each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `foo/bar` with a kind we do not forward to.
    #[error(
        "unknown resource type {kind:?} in {arg:?}: use pod/NAME, svc/NAME or deploy/NAME (e.g. `svc/web 8080:80`)"
    )]
    UnknownKind {
        /// The kind as written.
        kind: String,
        /// The argument.
        arg: String,
    },
    /// A name that cannot be a Kubernetes object name.
    #[error(
        "{name:?} is not a valid {kind} name: names are lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
    )]
    BadName {
        /// The kind.
        kind: &'static str,
        /// The name as written.
        name: String,
    },
    /// A port spec before any target.
    #[error("port {arg:?} comes before any target: name the target first, e.g. `svc/web {arg}`")]
    PortWithoutTarget {
        /// The argument.
        arg: String,
    },
    /// A target with no ports after it.
    #[error("{target} has no ports: add at least one, e.g. `{target} 8080:80`")]
    NoPorts {
        /// The target.
        target: String,
    },
    /// A port that is not a number in range or a port name.
    #[error(
        "invalid port {value:?} in {arg:?}: ports are 1-65535 or a port name like `http` (local ports 0-65535, 0 or empty for a free one)"
    )]
    BadPort {
        /// The bad part.
        value: String,
        /// The whole argument.
        arg: String,
    },
    /// `…/udp`: the API server's port-forward carries TCP only.
    #[error(
        "{arg:?} asks for UDP, but Kubernetes port-forward carries TCP only; for UDP use `kubelan proxy` (SOCKS5 UDP ASSOCIATE) or `kubelan connect` (the cluster's networks on this machine)"
    )]
    Udp {
        /// The argument.
        arg: String,
    },
    /// `…/sctp` or another protocol.
    #[error(
        "{arg:?}: protocol {protocol:?} cannot be forwarded; Kubernetes port-forward carries TCP only"
    )]
    Protocol {
        /// The argument.
        arg: String,
        /// The protocol as written.
        protocol: String,
    },
    /// Two mappings want the same local port.
    #[error(
        "local port {port} is used twice ({first} and {second}); give one of them another local port, e.g. `{suggestion}`"
    )]
    DuplicateLocal {
        /// The port.
        port: u16,
        /// The first mapping.
        first: String,
        /// The second mapping.
        second: String,
        /// A fixed second mapping.
        suggestion: String,
    },
    /// An `--address` entry that is neither `localhost` nor an IP address.
    #[error(
        "invalid --address {value:?}: give `localhost` or IP addresses, comma separated (e.g. `--address localhost,10.0.0.5`)"
    )]
    BadAddress {
        /// The entry.
        value: String,
    },
}

/// Whether `s` is a Kubernetes object name (DNS-1123 subdomain).
pub fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `s` is a port name (IANA service name: 1-15 characters, lowercase letters,
/// digits and single inner hyphens, at least one letter).
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn looks_like_port(arg: &str) -> bool {
    arg.starts_with(|c: char| c.is_ascii_digit() || c == ':') || arg.contains(':')
}

fn parse_remote(value: &str, arg: &str) -> Result<RemotePort, SpecError> {
    let bad = || SpecError::BadPort {
        value: value.to_string(),
        arg: arg.to_string(),
    };
    if value.bytes().all(|b| b.is_ascii_digit()) {
        match value.parse::<u16>() {
            Ok(n) if n > 0 => Ok(RemotePort::Number(n)),
            _ => Err(bad()),
        }
    } else if is_port_name(value) {
        Ok(RemotePort::Name(value.to_string()))
    } else {
        Err(bad())
    }
}

/// Parses one port argument (`8080:80`, `:http`, `5432`, `80/tcp`).
///
/// # Errors
/// [`SpecError::BadPort`], [`SpecError::Udp`] or [`SpecError::Protocol`].
pub fn parse_port(arg: &str) -> Result<PortMapping, SpecError> {
    let (body, protocol) = match arg.rsplit_once('/') {
        Some((b, p)) => (b, Some(p)),
        None => (arg, None),
    };
    match protocol.map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => {}
        Some("udp") => {
            return Err(SpecError::Udp {
                arg: arg.to_string(),
            });
        }
        Some(p) => {
            return Err(SpecError::Protocol {
                arg: arg.to_string(),
                protocol: p.to_string(),
            });
        }
    }
    match body.split_once(':') {
        None => Ok(PortMapping {
            local: LocalPort::Same,
            remote: parse_remote(body, arg)?,
        }),
        Some((local, remote)) => {
            let local = if local.is_empty() {
                LocalPort::Any
            } else if local.bytes().all(|b| b.is_ascii_digit()) {
                match local.parse::<u16>() {
                    Ok(0) => LocalPort::Any,
                    Ok(n) => LocalPort::Fixed(n),
                    Err(_) => {
                        return Err(SpecError::BadPort {
                            value: local.to_string(),
                            arg: arg.to_string(),
                        });
                    }
                }
            } else {
                return Err(SpecError::BadPort {
                    value: local.to_string(),
                    arg: arg.to_string(),
                });
            };
            Ok(PortMapping {
                local,
                remote: parse_remote(remote, arg)?,
            })
        }
    }
}

fn parse_target(arg: &str) -> Result<TargetRef, SpecError> {
    let (kind, name) = match arg.split_once('/') {
        Some((k, n)) => (
            Kind::parse(k).ok_or_else(|| SpecError::UnknownKind {
                kind: k.to_string(),
                arg: arg.to_string(),
            })?,
            n,
        ),
        None => (Kind::Pod, arg),
    };
    if !is_object_name(name) {
        return Err(SpecError::BadName {
            kind: kind.kind_name(),
            name: name.to_string(),
        });
    }
    Ok(TargetRef {
        kind,
        name: name.to_string(),
    })
}

/// The command-line words that print `specs` back (each spec's `Display`, split at spaces).
#[cfg(any(fuzzing, test, feature = "fuzz"))]
pub(crate) fn spec_words(specs: &[ForwardSpec]) -> Vec<String> {
    specs
        .iter()
        .flat_map(|s| {
            s.to_string()
                .split(' ')
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Parses the positional arguments of `kubelan forward` into specs.
///
/// Rules, in order: an argument with a digit or `:` first, or any `:`, is a port of the
/// current target; `KIND/NAME` starts a target; `NAME/PROTO` (`dns/udp`) is a named port
/// with a protocol; a bare word is a port name of the current target when it can be one,
/// else a pod (so write `pod/NAME` for a pod after other targets).
///
/// # Errors
/// The first [`SpecError`] found, naming the argument and what to write instead.
pub fn parse_specs<S: AsRef<str>>(args: &[S]) -> Result<Vec<ForwardSpec>, SpecError> {
    let mut specs: Vec<ForwardSpec> = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        let is_port = if looks_like_port(arg) {
            true
        } else if let Some((kind, rest)) = arg.split_once('/') {
            Kind::parse(kind).is_none() && is_port_name(kind) && !rest.contains('/') && {
                let p = rest.to_ascii_lowercase();
                p == "tcp" || p == "udp" || p == "sctp"
            }
        } else {
            !specs.is_empty() && is_port_name(arg)
        };
        if is_port {
            let Some(spec) = specs.last_mut() else {
                return Err(SpecError::PortWithoutTarget {
                    arg: arg.to_string(),
                });
            };
            spec.ports.push(parse_port(arg)?);
            continue;
        }
        if let Some(prev) = specs.last()
            && prev.ports.is_empty()
        {
            return Err(SpecError::NoPorts {
                target: prev.target.to_string(),
            });
        }
        specs.push(ForwardSpec {
            target: parse_target(arg)?,
            ports: Vec::new(),
        });
    }
    if let Some(last) = specs.last()
        && last.ports.is_empty()
    {
        return Err(SpecError::NoPorts {
            target: last.target.to_string(),
        });
    }
    check_duplicates(&specs)?;
    Ok(specs)
}

/// The local port a mapping will use when it is known before resolving names.
pub fn known_local(m: &PortMapping) -> Option<u16> {
    match (&m.local, &m.remote) {
        (LocalPort::Fixed(p), _) => Some(*p),
        (LocalPort::Same, RemotePort::Number(n)) => Some(*n),
        _ => None,
    }
}

fn check_duplicates(specs: &[ForwardSpec]) -> Result<(), SpecError> {
    let mut seen: Vec<(u16, String)> = Vec::new();
    for spec in specs {
        for m in &spec.ports {
            let Some(port) = known_local(m) else { continue };
            let here = format!("{} {m}", spec.target);
            if let Some((_, first)) = seen.iter().find(|(p, _)| *p == port) {
                return Err(SpecError::DuplicateLocal {
                    port,
                    first: first.clone(),
                    second: here,
                    suggestion: format!(
                        "{} {}:{}",
                        spec.target,
                        if port <= 55535 {
                            port + 10000
                        } else {
                            port - 10000
                        },
                        m.remote
                    ),
                });
            }
            seen.push((port, here));
        }
    }
    Ok(())
}

/// Where to listen: `localhost` (127.0.0.1, and ::1 when the machine has it) or one
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindAddress {
    /// 127.0.0.1, plus ::1 when it can be bound (as kubectl does).
    Localhost,
    /// Exactly this address.
    Ip(IpAddr),
}

impl BindAddress {
    /// The addresses to bind: each with whether failing to bind it is an error.
    pub fn addresses(self) -> Vec<(IpAddr, bool)> {
        match self {
            BindAddress::Localhost => vec![
                (IpAddr::V4(Ipv4Addr::LOCALHOST), true),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), false),
            ],
            BindAddress::Ip(ip) => vec![(ip, true)],
        }
    }
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddress::Localhost => f.write_str("localhost"),
            BindAddress::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Parses `--address` values (each may be a comma-separated list); duplicates are dropped.
///
/// # Errors
/// [`SpecError::BadAddress`] for an entry that is neither `localhost` nor an IP address.
pub fn parse_addresses<S: AsRef<str>>(values: &[S]) -> Result<Vec<BindAddress>, SpecError> {
    let mut out = Vec::new();
    for v in values {
        for part in v.as_ref().split(',') {
            let part = part.trim();
            let a = if part.eq_ignore_ascii_case("localhost") {
                BindAddress::Localhost
            } else {
                let ip = part
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| SpecError::BadAddress {
                        value: part.to_string(),
                    })?;
                BindAddress::Ip(ip)
            };
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    if out.is_empty() {
        out.push(BindAddress::Localhost);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(args: &[&str]) -> ForwardSpec {
        let mut v = parse_specs(args).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn kubectl_forms() {
        let s = one(&["svc/web", "8080:80"]);
        assert_eq!(s.target.kind, Kind::Service);
        assert_eq!(s.target.name, "web");
        assert_eq!(
            s.ports,
            vec![PortMapping {
                local: LocalPort::Fixed(8080),
                remote: RemotePort::Number(80)
            }]
        );
        let s = one(&["pod/db-0", "5432", ":http", "0:9000", "18080:http/tcp"]);
        assert_eq!(s.target.kind, Kind::Pod);
        let locals: Vec<_> = s.ports.iter().map(|p| p.local).collect();
        assert_eq!(
            locals,
            [
                LocalPort::Same,
                LocalPort::Any,
                LocalPort::Any,
                LocalPort::Fixed(18080)
            ]
        );
        assert_eq!(s.ports[1].remote, RemotePort::Name("http".into()));
        for k in ["deploy", "deployment", "deployments.apps", "Deploy"] {
            assert_eq!(
                one(&[&format!("{k}/api"), "80"]).target.kind,
                Kind::Deployment
            );
        }
        // A bare name is a pod, as in kubectl.
        assert_eq!(one(&["web-1", "80"]).target.kind, Kind::Pod);
    }

    #[test]
    fn several_targets_and_port_names() {
        let v = parse_specs(&[
            "svc/web", "8080:80", "http", "svc/db", "5432", "pod/x", "9000",
        ])
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].ports.len(), 2);
        assert_eq!(v[0].ports[1].remote, RemotePort::Name("http".into()));
        assert_eq!(v[1].target.name, "db");
        assert_eq!(v[2].target.kind, Kind::Pod);
        // A name right after a target is its port name.
        let s = one(&["svc/web", "http"]);
        assert_eq!(s.ports[0].remote, RemotePort::Name("http".into()));
        // A bare word that cannot be a port name starts a pod target.
        let v = parse_specs(&["svc/web", "80", "my.pod", "81"]).unwrap();
        assert_eq!(
            v[1].target,
            TargetRef {
                kind: Kind::Pod,
                name: "my.pod".into()
            }
        );
    }

    #[test]
    fn bad_input_names_the_fix() {
        let e = parse_specs(&["svc/web"]).unwrap_err();
        assert!(e.to_string().contains("svc/web 8080:80"), "{e}");
        let e = parse_specs(&["8080:80"]).unwrap_err();
        assert!(matches!(e, SpecError::PortWithoutTarget { .. }), "{e}");
        let e = parse_specs(&["job/x", "80"]).unwrap_err();
        assert!(e.to_string().contains("svc/NAME"), "{e}");
        let e = parse_specs(&["svc/Web", "80"]).unwrap_err();
        assert!(matches!(e, SpecError::BadName { .. }), "{e}");
        for bad in [
            "0", "65536", "80:0", "x:80", "80:", "a_b", "99999:80", "-http",
        ] {
            assert!(
                matches!(parse_port(bad), Err(SpecError::BadPort { .. })),
                "{bad}: {:?}",
                parse_port(bad)
            );
        }
        let e = parse_specs(&["svc/echo", "7/udp"]).unwrap_err();
        assert!(matches!(e, SpecError::Udp { .. }));
        assert!(
            e.to_string().contains("kubelan proxy") && e.to_string().contains("kubelan connect")
        );
        let e = parse_specs(&["svc/echo", "dns/udp"]).unwrap_err();
        assert!(matches!(e, SpecError::Udp { .. }), "{e}");
        assert!(matches!(
            parse_port("80/sctp"),
            Err(SpecError::Protocol { .. })
        ));
        let e = parse_specs(&["svc/a", "8080:80", "svc/b", "8080"]).unwrap_err();
        assert!(
            matches!(e, SpecError::DuplicateLocal { port: 8080, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("svc/b 18080:8080"), "{e}");
        let e = parse_specs(&["svc/a", "svc/b", "80"]).unwrap_err();
        assert!(matches!(e, SpecError::NoPorts { .. }), "{e}");
    }

    #[test]
    fn display_round_trips() {
        let v = parse_specs(&[
            "web-0", "80", "svc/web", ":http", "7070:7", "deploy/x", "0:1",
        ])
        .unwrap();
        let text = spec_words(&v);
        assert_eq!(
            text.join(" "),
            "pod/web-0 80 svc/web :http 7070:7 deploy/x :1"
        );
        assert_eq!(parse_specs(&text).unwrap(), v);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addresses::<&str>(&[]).unwrap(),
            vec![BindAddress::Localhost]
        );
        let a = parse_addresses(&["localhost,10.0.0.5", "::1", "[fe80::1]", "localhost"]).unwrap();
        assert_eq!(a.len(), 4);
        assert!(matches!(
            parse_addresses(&["example.com"]),
            Err(SpecError::BadAddress { .. })
        ));
        assert!(BindAddress::Localhost.addresses()[0].1);
        assert!(!BindAddress::Localhost.addresses()[1].1);
    }

    #[test]
    fn names() {
        assert!(is_object_name("web-1.example"));
        assert!(!is_object_name("-web") && !is_object_name("a..b") && !is_object_name(""));
        assert!(is_port_name("http") && is_port_name("h2c-1"));
        assert!(
            !is_port_name("1234") && !is_port_name("a--b") && !is_port_name("sixteen-chars-xx")
        );
    }
}
