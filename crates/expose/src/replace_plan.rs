//! The command line of `kubelan replace svc/NAME [LOCAL:]PORT...` and the plan it makes
//! against the Service as read: which relay port takes each replaced Service port, and
//! which local HOST:PORT its connections go to.
//!
//! `PORT` is one of the Service's ports, by number (`80`) or name (`http`); `LOCAL` is
//! where its connections go on this machine, `[HOST:]PORT` as for `kubelan expose`
//! (default: the same port number on 127.0.0.1). `8080:80` sends the Service's port 80 to
//! 127.0.0.1:8080. A trailing `/tcp` or `/udp` picks one protocol of a port number the
//! Service has for both.
//!
//! The relay listens where the Service already sends traffic (its `targetPort`, see
//! [`kubelan_cluster::replace`]): the number itself, or for a named `targetPort` a free
//! port ≥ 20000 that the relay's container declares under that name. Service ports not
//! named on the command line get no listener: pods connecting to them are refused during
//! the session (a warning says so).
//!
//! Pure: the fuzz target `fuzz_entry::replace_spec` covers the parsers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use kubelan_cluster::replace::{ReplacedPort, TargetPort};
use kubelan_cluster::session_objects::{Protocol, RelayListener, carrier_port};

use crate::spec::{ExposedPort, Host, LocalTarget, SpecError, valid_service_name};

/// A Service port as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// By number (`80`).
    Number(u16),
    /// By name (`http`).
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// One `[LOCAL:]PORT[/tcp|/udp]` argument.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortArg {
    /// The Service port.
    pub service: PortRef,
    /// Where its connections go on this machine.
    pub host: Host,
    /// The local port.
    pub local_port: u16,
    /// `Some` when the argument ends in `/tcp` or `/udp`.
    pub protocol: Option<Protocol>,
}

impl fmt::Display for PortArg {
    /// The canonical form: `127.0.0.1:8080:80`, `[::1]:53:dns/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.host, self.local_port, self.service)?;
        if let Some(p) = self.protocol {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// Why a `replace` argument, or its match with the Service, does not work. Each message
/// names the argument and what works.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceSpecError {
    /// The first argument is not `svc/NAME`.
    #[error("{0:?} is not a Service: write svc/NAME (e.g. `kubelan replace svc/web 8080:80`)")]
    Service(String),
    /// No port argument.
    #[error(
        "which ports? give [LOCAL:]PORT for each Service port to take over, e.g. `kubelan replace svc/{0} 8080:80` sends the Service's port 80 to this machine's 8080"
    )]
    NoPorts(String),
    /// The local part does not parse.
    #[error(transparent)]
    Local(#[from] SpecError),
    /// The Service port part is neither a number nor a port name.
    #[error(
        "{arg:?}: {port:?} is not a Service port (a number from 1 to 65535, or the port's name)"
    )]
    PortRef {
        /// The argument.
        arg: String,
        /// The port text.
        port: String,
    },
    /// A port name without a local port.
    #[error("{arg:?}: say which local port serves the Service port {name}, e.g. 8080:{name}")]
    NameNeedsLocal {
        /// The argument.
        arg: String,
        /// The port name.
        name: String,
    },
    /// The Service has no such port.
    #[error("Service {service} has no port {port}; its ports are {have}")]
    NoSuchPort {
        /// The Service.
        service: String,
        /// What the argument named.
        port: String,
        /// The Service's ports (`http 80/TCP, 443/TCP`).
        have: String,
    },
    /// Two arguments name one Service port.
    #[error("Service {service} port {port} is given twice")]
    Twice {
        /// The Service.
        service: String,
        /// The port.
        port: String,
    },
    /// Two Service ports share a `targetPort` but were sent to different local targets.
    #[error(
        "Service {service} ports {a} and {b} send to the same port of its pods, so kubelan cannot tell their connections apart; send both to the same local port"
    )]
    SharedTarget {
        /// The Service.
        service: String,
        /// One port.
        a: String,
        /// The other.
        b: String,
    },
}

/// The Service name of `svc/NAME` (also `service/NAME`, `services/NAME`).
///
/// # Errors
/// [`ReplaceSpecError::Service`] for anything else.
pub fn parse_service(arg: &str) -> Result<String, ReplaceSpecError> {
    let name = ["svc/", "service/", "services/"]
        .iter()
        .find_map(|p| arg.strip_prefix(p))
        .filter(|n| valid_service_name(n))
        .ok_or_else(|| ReplaceSpecError::Service(arg.chars().take(80).collect()))?;
    Ok(name.to_string())
}

/// An IANA service name as Kubernetes validates port names: 1–15 lower-case letters,
/// digits and `-`, at least one letter, no `-` at either end or twice in a row.
fn valid_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Parses one `[LOCAL:]PORT[/tcp|/udp]` argument.
///
/// # Errors
/// A [`ReplaceSpecError`] naming the argument.
pub fn parse_port_arg(arg: &str) -> Result<PortArg, ReplaceSpecError> {
    if arg.is_empty() {
        return Err(SpecError::Empty.into());
    }
    let (rest, protocol) = match arg.rsplit_once('/') {
        None => (arg, None),
        Some((rest, p)) => match p.to_ascii_lowercase().as_str() {
            "tcp" => (rest, Some(Protocol::Tcp)),
            "udp" => (rest, Some(Protocol::Udp)),
            _ => {
                return Err(SpecError::Protocol {
                    arg: arg.into(),
                    proto: p.into(),
                }
                .into());
            }
        },
    };
    // The Service port is after the last ':' (an IPv6 host is in brackets, and a bare
    // port has no ':').
    let (local, port_text) = match rest.rsplit_once(':') {
        Some((l, p)) if !p.contains(']') => (Some(l), p),
        _ => (None, rest),
    };
    let service = if !port_text.is_empty() && port_text.bytes().all(|b| b.is_ascii_digit()) {
        match port_text.parse::<u16>() {
            Ok(n) if n > 0 => PortRef::Number(n),
            _ => {
                return Err(ReplaceSpecError::PortRef {
                    arg: arg.into(),
                    port: port_text.into(),
                });
            }
        }
    } else if valid_port_name(port_text) {
        PortRef::Name(port_text.into())
    } else {
        return Err(ReplaceSpecError::PortRef {
            arg: arg.into(),
            port: port_text.chars().take(80).collect(),
        });
    };
    let (host, local_port) = match (local, &service) {
        (None, PortRef::Number(n)) => (Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), *n),
        (None, PortRef::Name(name)) => {
            return Err(ReplaceSpecError::NameNeedsLocal {
                arg: arg.into(),
                name: name.clone(),
            });
        }
        (Some(l), _) => {
            let t: LocalTarget = l.parse().map_err(|e| match e {
                // Name the whole argument, not its local part.
                SpecError::Empty => SpecError::Port {
                    arg: arg.into(),
                    port: String::new(),
                },
                e => e,
            })?;
            (t.host, t.port)
        }
    };
    Ok(PortArg {
        service,
        host,
        local_port,
        protocol,
    })
}

/// What `kubelan replace` sets up, decided from the arguments and the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacePlan {
    /// The Service.
    pub service: String,
    /// One entry per relay listener: its id, the local target, the (first) Service port it
    /// serves and the relay port (for the acceptor and the table).
    pub ports: Vec<ExposedPort>,
    /// The relay's `--listen` entries and container ports (same ids as [`Self::ports`]).
    pub listeners: Vec<RelayListener>,
    /// The relay's carrier port (not one of the listener ports).
    pub carrier_port: u16,
    /// Service ports that get no listener (`443/TCP (https)`): refused during the session.
    pub unreplaced: Vec<String>,
}

fn protocol_of(p: &ReplacedPort) -> Protocol {
    if p.protocol.eq_ignore_ascii_case("UDP") {
        Protocol::Udp
    } else {
        Protocol::Tcp
    }
}

fn show_port(p: &ReplacedPort) -> String {
    match &p.name {
        Some(n) => format!("{}/{} ({n})", p.port, p.protocol),
        None => format!("{}/{}", p.port, p.protocol),
    }
}

/// Plans `kubelan replace svc/<service> ARGS` for the Service's `ports` (as
/// [`kubelan_cluster::replace::swap`] read them).
///
/// # Errors
/// A [`ReplaceSpecError`]: no arguments, a port the Service does not have, one named
/// twice, or two Service ports with one `targetPort` sent to different local targets.
pub fn plan_replace(
    service: &str,
    args: &[PortArg],
    ports: &[ReplacedPort],
) -> Result<ReplacePlan, ReplaceSpecError> {
    if args.is_empty() {
        return Err(ReplaceSpecError::NoPorts(service.into()));
    }
    // (Service port index, local target) for every argument.
    let mut chosen: Vec<(usize, LocalTarget)> = Vec::new();
    for a in args {
        let matched: Vec<usize> = ports
            .iter()
            .enumerate()
            .filter(|(_, p)| match &a.service {
                PortRef::Number(n) => p.port == *n,
                PortRef::Name(n) => p.name.as_deref() == Some(n),
            })
            .filter(|(_, p)| a.protocol.is_none_or(|want| protocol_of(p) == want))
            .map(|(i, _)| i)
            .collect();
        if matched.is_empty() {
            return Err(ReplaceSpecError::NoSuchPort {
                service: service.into(),
                port: a.service.to_string()
                    + &a.protocol.map(|p| format!("/{p}")).unwrap_or_default(),
                have: ports.iter().map(show_port).collect::<Vec<_>>().join(", "),
            });
        }
        for i in matched {
            if chosen.iter().any(|(j, _)| *j == i) {
                return Err(ReplaceSpecError::Twice {
                    service: service.into(),
                    port: show_port(&ports[i]),
                });
            }
            chosen.push((
                i,
                LocalTarget {
                    host: a.host.clone(),
                    port: a.local_port,
                    protocol: protocol_of(&ports[i]),
                },
            ));
        }
    }
    // One listener per (targetPort, protocol); its Service ports must agree on the target.
    let mut groups: Vec<(TargetPort, Protocol, usize, LocalTarget)> = Vec::new();
    for (i, local) in &chosen {
        let p = &ports[*i];
        let key = (p.target.clone(), protocol_of(p));
        match groups.iter().find(|g| (g.0.clone(), g.1) == key) {
            Some(g) if g.3 != *local => {
                return Err(ReplaceSpecError::SharedTarget {
                    service: service.into(),
                    a: show_port(&ports[g.2]),
                    b: show_port(p),
                });
            }
            Some(_) => {}
            None => groups.push((key.0, key.1, *i, local.clone())),
        }
    }
    // Numbered targets listen on their number; named ones on free ports from 20000 up.
    let numbered: Vec<u16> = groups
        .iter()
        .filter_map(|g| match g.0 {
            TargetPort::Number(n) => Some(n),
            TargetPort::Name(_) => None,
        })
        .collect();
    let mut next_free = 20000u16;
    let mut used = numbered.clone();
    let mut out_ports = Vec::new();
    let mut listeners = Vec::new();
    let named: Vec<&str> = groups
        .iter()
        .filter_map(|g| match &g.0 {
            TargetPort::Name(n) => Some(n.as_str()),
            TargetPort::Number(_) => None,
        })
        .collect();
    for (id, (target, protocol, first, local)) in groups.iter().enumerate() {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        let (port, port_name) = match target {
            TargetPort::Number(n) => {
                // A container port name of our own that no named target uses.
                let name = [
                    format!("{protocol}-{n}"),
                    format!("kl-{protocol}-{n}"),
                    format!("kl{id}-{protocol}-{n}"),
                ]
                .into_iter()
                .find(|c| !named.contains(&c.as_str()))
                .unwrap_or_default();
                (*n, name)
            }
            TargetPort::Name(name) => {
                while used.contains(&next_free) {
                    next_free = next_free.saturating_add(1);
                }
                used.push(next_free);
                (next_free, name.clone())
            }
        };
        listeners.push(RelayListener {
            id,
            protocol: *protocol,
            port,
            port_name,
        });
        out_ports.push(ExposedPort {
            id,
            local: local.clone(),
            service_port: ports[*first].port,
            relay_port: port,
        });
    }
    let served: Vec<(TargetPort, Protocol)> = groups.iter().map(|g| (g.0.clone(), g.1)).collect();
    let unreplaced = ports
        .iter()
        .filter(|p| !served.contains(&(p.target.clone(), protocol_of(p))))
        .map(show_port)
        .collect();
    Ok(ReplacePlan {
        service: service.into(),
        carrier_port: carrier_port(&used),
        ports: out_ports,
        listeners,
        unreplaced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(s: &str) -> PortArg {
        parse_port_arg(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn port(name: Option<&str>, port: u16, protocol: &str, target: TargetPort) -> ReplacedPort {
        ReplacedPort {
            name: name.map(String::from),
            port,
            protocol: protocol.into(),
            target,
        }
    }

    #[test]
    fn arguments_parse() {
        let lo = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            arg("8080:80"),
            PortArg {
                service: PortRef::Number(80),
                host: lo.clone(),
                local_port: 8080,
                protocol: None
            }
        );
        assert_eq!(arg("80").local_port, 80);
        assert_eq!(arg("80").host, lo);
        assert_eq!(arg("3000:http").service, PortRef::Name("http".into()));
        assert_eq!(arg("53/udp").protocol, Some(Protocol::Udp));
        let a = arg("172.16.1.11:8080:80");
        assert_eq!(a.host, Host::Ip("172.16.1.11".parse().unwrap()));
        assert_eq!(a.to_string(), "172.16.1.11:8080:80");
        assert_eq!(arg("[::1]:9000:grpc").to_string(), "[::1]:9000:grpc");
        assert_eq!(
            arg("pc1.lan:8080:80/TCP").to_string(),
            "pc1.lan:8080:80/tcp"
        );
        assert_eq!(parse_service("svc/web").unwrap(), "web");
        assert_eq!(parse_service("service/web").unwrap(), "web");
        for bad in ["web", "deploy/web", "svc/", "svc/Web", "svc/a_b"] {
            assert!(parse_service(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_arguments_say_what_to_write() {
        let e = |s: &str| parse_port_arg(s).unwrap_err();
        assert!(matches!(e("http"), ReplaceSpecError::NameNeedsLocal { .. }));
        assert!(e("http").to_string().contains("8080:http"));
        assert!(matches!(e("8080:0"), ReplaceSpecError::PortRef { .. }));
        assert!(matches!(e("8080:70000"), ReplaceSpecError::PortRef { .. }));
        assert!(matches!(e("8080:Http"), ReplaceSpecError::PortRef { .. }));
        assert!(matches!(e("8080:a--b"), ReplaceSpecError::PortRef { .. }));
        assert!(matches!(e("0:80"), ReplaceSpecError::Local(_)));
        assert!(matches!(e(":80"), ReplaceSpecError::Local(_)));
        assert!(matches!(e("::1:8080:80"), ReplaceSpecError::Local(_)));
        assert!(matches!(e("8080/udp:80"), ReplaceSpecError::Local(_)));
        assert!(matches!(e("80/sctp"), ReplaceSpecError::Local(_)));
        assert!(matches!(e(""), ReplaceSpecError::Local(_)));
    }

    #[test]
    fn plans_listen_where_the_service_sends() {
        let ports = [
            port(Some("http"), 80, "TCP", TargetPort::Name("http".into())),
            port(Some("admin"), 9090, "TCP", TargetPort::Number(9090)),
            port(Some("dns"), 53, "UDP", TargetPort::Number(5353)),
            port(Some("https"), 443, "TCP", TargetPort::Number(8443)),
        ];
        let p = plan_replace(
            "web",
            &[arg("8080:80"), arg("9090"), arg("5300:dns")],
            &ports,
        )
        .unwrap();
        let got: Vec<_> = p
            .listeners
            .iter()
            .map(|l| (l.to_string(), l.port_name.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("20000=0".to_string(), "http".to_string()),
                ("9090=1".into(), "tcp-9090".into()),
                ("5353=2/udp".into(), "udp-5353".into()),
            ]
        );
        assert_eq!(p.ports[0].local.to_string(), "127.0.0.1:8080");
        assert_eq!(p.ports[0].service_port, 80);
        assert_eq!(p.ports[2].local.to_string(), "127.0.0.1:5300/udp");
        assert_eq!(p.carrier_port, 7445);
        assert_eq!(p.unreplaced, ["443/TCP (https)"]);
    }

    #[test]
    fn plans_refuse_what_cannot_work() {
        let ports = [
            port(Some("http"), 80, "TCP", TargetPort::Number(8080)),
            port(Some("alt"), 8000, "TCP", TargetPort::Number(8080)),
            port(Some("dns"), 53, "UDP", TargetPort::Number(53)),
            port(Some("dns-tcp"), 53, "TCP", TargetPort::Number(53)),
        ];
        let e = plan_replace("web", &[arg("81")], &ports).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Service web has no port 81; its ports are 80/TCP (http), 8000/TCP (alt), 53/UDP (dns), 53/TCP (dns-tcp)"
        );
        assert!(matches!(
            plan_replace("web", &[arg("80"), arg("9000:http")], &ports),
            Err(ReplaceSpecError::Twice { .. })
        ));
        assert!(matches!(
            plan_replace("web", &[arg("3000:80"), arg("3001:8000")], &ports),
            Err(ReplaceSpecError::SharedTarget { .. })
        ));
        assert!(matches!(
            plan_replace("web", &[], &ports),
            Err(ReplaceSpecError::NoPorts(_))
        ));
        // Two Service ports with one target, sent to one local port: one listener.
        let p = plan_replace("web", &[arg("3000:80"), arg("3000:8000")], &ports).unwrap();
        assert_eq!(p.listeners.len(), 1);
        // A port number the Service has for TCP and UDP: both, or one with /proto.
        let p = plan_replace("web", &[arg("5353:53")], &ports).unwrap();
        assert_eq!(p.listeners.len(), 2);
        assert_eq!(p.ports[1].local.protocol, Protocol::Tcp);
        let p = plan_replace("web", &[arg("5353:53/udp")], &ports).unwrap();
        assert_eq!(p.listeners.len(), 1);
        assert_eq!(p.listeners[0].to_string(), "53=0/udp");
        // A listener on the default carrier port moves the carrier.
        let ports = [port(None, 7445, "TCP", TargetPort::Number(7445))];
        let p = plan_replace("web", &[arg("7445")], &ports).unwrap();
        assert_eq!(p.carrier_port, 7446);
    }
}
