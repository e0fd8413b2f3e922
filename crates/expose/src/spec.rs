//! The command line of `kubelan expose`: `[HOST:]PORT[/udp]...`, `--port SVCPORT`,
//! `--name NAME`, and the plan they make (which relay port and Service port each local
//! target gets).
//!
//! Pure: nothing here touches the network; every parser has a fuzz target
//! (`fuzz_entry::expose_spec`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use kubelan_cluster::session_objects::{Protocol, RelayListener, ServicePortSpec, carrier_port};

/// Where exposed connections go on this side: an address, or a name this machine resolves
/// (`localhost`, a LAN PC's name on a gateway host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A host name (RFC 1123), lower-cased.
    Name(String),
}

impl fmt::Display for Host {
    /// IPv6 in brackets, so that `HOST:PORT` stays readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// One `[HOST:]PORT[/udp]` argument: a local target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalTarget {
    /// The host; `127.0.0.1` when the argument names none.
    pub host: Host,
    /// The port (1–65535).
    pub port: u16,
    /// TCP unless `/udp`.
    pub protocol: Protocol,
}

impl fmt::Display for LocalTarget {
    /// The canonical form of the argument: `127.0.0.1:8080`, `[::1]:53/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

/// Why an argument of `kubelan expose` is not valid. Each message names the argument and
/// shows the form that works.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `kubelan run --port` without `--expose`.
    #[error(
        "--port gives the Service port of an --expose; without --expose the program's ports keep their numbers"
    )]
    PortWithoutExpose,
    /// Empty argument.
    #[error("an empty port argument: give [HOST:]PORT[/udp], e.g. 8080, 127.0.0.1:8080 or 53/udp")]
    Empty,
    /// The part after `/` is not `tcp` or `udp`.
    #[error("{arg:?}: unknown protocol {proto:?}; write PORT for TCP or PORT/udp for UDP")]
    Protocol {
        /// The argument.
        arg: String,
        /// What followed the `/`.
        proto: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("{arg:?}: {port:?} is not a port (a number from 1 to 65535)")]
    Port {
        /// The argument.
        arg: String,
        /// The port text.
        port: String,
    },
    /// An IPv6 address without brackets.
    #[error("{arg:?}: put an IPv6 address in brackets, e.g. [::1]:8080")]
    Ipv6Brackets {
        /// The argument.
        arg: String,
    },
    /// The host is neither an address nor a valid host name.
    #[error("{arg:?}: {host:?} is not an IP address or host name")]
    Host {
        /// The argument.
        arg: String,
        /// The host text.
        host: String,
    },
    /// A `--port` value that is not a port.
    #[error("--port {0:?}: not a port (a number from 1 to 65535)")]
    ServicePort(String),
    /// More `--port` values than port arguments.
    #[error(
        "{ports} --port values for {targets} port arguments: each --port gives the Service port of one argument, in order"
    )]
    TooManyServicePorts {
        /// How many `--port`.
        ports: usize,
        /// How many targets.
        targets: usize,
    },
    /// No port argument at all.
    #[error(
        "nothing to expose: give at least one [HOST:]PORT[/udp], e.g. `kubelan expose 8080 --name dev-api`"
    )]
    NoTargets,
    /// Two arguments would get one Service port and protocol.
    #[error(
        "Service port {port}/{protocol} is given twice; use --port to give each argument its own Service port"
    )]
    DuplicateServicePort {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// `--name` is not a valid Service name.
    #[error(
        "--name {0:?}: a Service name is 1 to 63 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
    )]
    Name(String),
}

fn port(arg: &str, text: &str) -> Result<u16, SpecError> {
    let bad = || SpecError::Port {
        arg: arg.into(),
        port: text.into(),
    };
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(p) => Ok(p),
    }
}

/// A host name as RFC 1123 allows it: dot-separated labels of letters, digits and `-`,
/// each 1–63 characters, not starting or ending with `-`, at most 253 in all; a trailing dot
/// is allowed.
fn valid_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        // All-numeric last label: a mistyped IPv4 address (`10.0.0.300`), not a name.
        && !s.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

impl FromStr for LocalTarget {
    type Err = SpecError;

    /// Parses `PORT`, `HOST:PORT`, `[IPV6]:PORT`, each optionally followed by `/udp` or
    /// `/tcp`.
    fn from_str(arg: &str) -> Result<Self, SpecError> {
        if arg.is_empty() {
            return Err(SpecError::Empty);
        }
        let (rest, protocol) = match arg.rsplit_once('/') {
            None => (arg, Protocol::Tcp),
            Some((rest, p)) => match p.to_ascii_lowercase().as_str() {
                "tcp" => (rest, Protocol::Tcp),
                "udp" => (rest, Protocol::Udp),
                _ => {
                    return Err(SpecError::Protocol {
                        arg: arg.into(),
                        proto: p.into(),
                    });
                }
            },
        };
        let (host, port_text) = if let Some(after) = rest.strip_prefix('[') {
            let (inside, tail) = after.split_once(']').ok_or_else(|| SpecError::Host {
                arg: arg.into(),
                host: rest.into(),
            })?;
            let port_text = tail.strip_prefix(':').ok_or_else(|| SpecError::Port {
                arg: arg.into(),
                port: tail.into(),
            })?;
            let ip = inside
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| SpecError::Host {
                    arg: arg.into(),
                    host: inside.into(),
                })?;
            (Host::Ip(IpAddr::V6(ip)), port_text)
        } else {
            match rest.matches(':').count() {
                0 => (Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), rest),
                1 => {
                    let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
                    let host = if let Ok(ip) = h.parse::<Ipv4Addr>() {
                        Host::Ip(IpAddr::V4(ip))
                    } else if valid_host_name(h) {
                        Host::Name(h.trim_end_matches('.').to_ascii_lowercase())
                    } else {
                        return Err(SpecError::Host {
                            arg: arg.into(),
                            host: h.into(),
                        });
                    };
                    (host, p)
                }
                _ => return Err(SpecError::Ipv6Brackets { arg: arg.into() }),
            }
        };
        Ok(LocalTarget {
            host,
            port: port(arg, port_text)?,
            protocol,
        })
    }
}

/// Whether `name` is a valid Service name (an RFC 1035 label).
pub fn valid_service_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One exposed port: Service port → relay port (listener `id`) → local target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedPort {
    /// The relay's listener id (the index of the argument).
    pub id: u32,
    /// Where its connections go on this side.
    pub local: LocalTarget,
    /// The Service port pods dial.
    pub service_port: u16,
    /// The relay pod's port (≥ 1024: the relay runs without privileges).
    pub relay_port: u16,
}

impl ExposedPort {
    /// The relay's `--listen` entry.
    pub fn listener(&self) -> RelayListener {
        RelayListener {
            id: self.id,
            protocol: self.local.protocol,
            port: self.relay_port,
            port_name: self.port_name(),
        }
    }

    /// The Service port.
    pub fn service_port_spec(&self) -> ServicePortSpec {
        ServicePortSpec {
            name: self.port_name(),
            port: self.service_port,
            target_port: self.relay_port,
            protocol: self.local.protocol,
        }
    }

    /// `tcp-8080`, `udp-53`: names the Service port and the container port (at most 9
    /// characters, within the 15 Kubernetes allows).
    pub fn port_name(&self) -> String {
        format!("{}-{}", self.local.protocol, self.service_port)
    }
}

/// What `kubelan expose` will set up, decided from the command line alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposePlan {
    /// The Service name (`--name`); `None`: the session's Job name `kubelan-<id>`.
    pub name: Option<String>,
    /// The ports, in argument order.
    pub ports: Vec<ExposedPort>,
    /// The relay's carrier port (not one of the relay ports).
    pub carrier_port: u16,
    /// The Service also answers on port 80 for the one port (so `http://NAME` works):
    /// set for a single TCP target without `--port` whose port is not 80.
    pub also_http: bool,
}

impl ExposePlan {
    /// The Service's ports: one per exposed port, and `http` (80) for the single TCP port
    /// when [`ExposePlan::also_http`] is set (same relay port, so the same local target).
    pub fn service_port_specs(&self) -> Vec<ServicePortSpec> {
        let mut specs: Vec<ServicePortSpec> = self
            .ports
            .iter()
            .map(ExposedPort::service_port_spec)
            .collect();
        if let (true, Some(p)) = (self.also_http, self.ports.first()) {
            specs.push(ServicePortSpec {
                name: "http".into(),
                port: 80,
                target_port: p.relay_port,
                protocol: p.local.protocol,
            });
        }
        specs
    }

    /// `8080/tcp → 127.0.0.1:8080` per Service port, for people.
    pub fn describe_ports(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("{}/{} → {}", p.service_port, p.local.protocol, p.local))
            .collect();
        if let (true, Some(p)) = (self.also_http, self.ports.first()) {
            v.push(format!("80/{} → {}", p.local.protocol, p.local));
        }
        v
    }
}

/// The relay port for Service port `p`: the same number when it is unprivileged, else
/// 20000 + p (so `expose 80` listens on 20080 in the pod, with no sysctl needed).
pub fn relay_port(p: u16) -> u16 {
    if p >= 1024 { p } else { 20000 + p }
}

/// The plan of `kubelan run`: [`plan`] of its `--expose` and `--port`, or without
/// `--expose` [`plan_without_ports`] (then `--port` has nothing to apply to).
///
/// # Errors
/// As [`plan`]; [`SpecError::PortWithoutExpose`].
pub fn plan_for_run(
    expose: &[String],
    ports: &[String],
    name: Option<&str>,
) -> Result<ExposePlan, SpecError> {
    if !expose.is_empty() {
        return plan(expose, ports, name);
    }
    if !ports.is_empty() {
        return Err(SpecError::PortWithoutExpose);
    }
    plan_without_ports(name)
}

/// The plan of `kubelan run` without `--expose`: no port yet (the program's ports are
/// added as it opens them, see [`discovered`]).
///
/// # Errors
/// [`SpecError::Name`] for an invalid `--name`.
pub fn plan_without_ports(name: Option<&str>) -> Result<ExposePlan, SpecError> {
    if let Some(n) = name
        && !valid_service_name(n)
    {
        return Err(SpecError::Name(n.chars().take(80).collect()));
    }
    Ok(ExposePlan {
        name: name.map(str::to_string),
        ports: Vec::new(),
        carrier_port: carrier_port(&[]),
        also_http: false,
    })
}

/// The exposed port for a TCP port the program listens on at `local`: listener `id`, the
/// same Service port, and the relay port [`relay_port`] gives; `None` when that relay port
/// is the carrier's.
pub fn discovered(id: u32, local: std::net::SocketAddr, carrier_port: u16) -> Option<ExposedPort> {
    let relay = relay_port(local.port());
    (relay != carrier_port).then(|| ExposedPort {
        id,
        local: LocalTarget {
            host: Host::Ip(local.ip()),
            port: local.port(),
            protocol: Protocol::Tcp,
        },
        service_port: local.port(),
        relay_port: relay,
    })
}

/// Builds the plan of `kubelan expose TARGET... [--port SVCPORT]... [--name NAME]`.
/// The i-th `--port` is the Service port of the i-th target; the others keep their local
/// port number.
///
/// # Errors
/// A [`SpecError`] naming the bad argument.
pub fn plan(
    targets: &[String],
    service_ports: &[String],
    name: Option<&str>,
) -> Result<ExposePlan, SpecError> {
    if targets.is_empty() {
        return Err(SpecError::NoTargets);
    }
    if service_ports.len() > targets.len() {
        return Err(SpecError::TooManyServicePorts {
            ports: service_ports.len(),
            targets: targets.len(),
        });
    }
    if let Some(n) = name
        && !valid_service_name(n)
    {
        return Err(SpecError::Name(n.chars().take(80).collect()));
    }
    let mut ports: Vec<ExposedPort> = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let local: LocalTarget = t.parse()?;
        let service_port = match service_ports.get(i) {
            Some(p) => port(p, p).map_err(|_| SpecError::ServicePort(p.clone()))?,
            None => local.port,
        };
        if ports
            .iter()
            .any(|e| e.service_port == service_port && e.local.protocol == local.protocol)
        {
            return Err(SpecError::DuplicateServicePort {
                port: service_port,
                protocol: local.protocol,
            });
        }
        ports.push(ExposedPort {
            id: u32::try_from(i).unwrap_or(u32::MAX),
            relay_port: relay_port(service_port),
            service_port,
            local,
        });
    }
    let used: Vec<u16> = ports.iter().map(|p| p.relay_port).collect();
    let also_http = service_ports.is_empty()
        && matches!(&ports[..], [p] if p.local.protocol == Protocol::Tcp && p.service_port != 80);
    Ok(ExposePlan {
        name: name.map(str::to_string),
        carrier_port: carrier_port(&used),
        ports,
        also_http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn t(s: &str) -> LocalTarget {
        s.parse().unwrap()
    }

    #[test]
    fn discovered_ports_plan_like_arguments() {
        let p = plan_without_ports(Some("auto")).unwrap();
        assert!(p.ports.is_empty());
        assert!(plan_without_ports(Some("Bad_Name")).is_err());
        let d = discovered(3, "127.0.0.1:80".parse().unwrap(), p.carrier_port).unwrap();
        assert_eq!((d.id, d.service_port, d.relay_port), (3, 80, 20080));
        assert_eq!(d.local, t("127.0.0.1:80"));
        assert_eq!(d.port_name(), "tcp-80");
        assert!(discovered(4, "[::1]:7445".parse().unwrap(), 7445).is_none());
    }

    #[test]
    fn targets_parse() {
        let lo = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            t("8080"),
            LocalTarget {
                host: lo.clone(),
                port: 8080,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(t("53/udp").protocol, Protocol::Udp);
        assert_eq!(t("53/UDP").protocol, Protocol::Udp);
        assert_eq!(t("8080/tcp"), t("8080"));
        assert_eq!(
            t("172.16.1.11:8080").host,
            Host::Ip("172.16.1.11".parse().unwrap())
        );
        assert_eq!(
            t("[::1]:8080").host,
            Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(t("[fe80::1]:53/udp").to_string(), "[fe80::1]:53/udp");
        assert_eq!(
            t("PC1.office.lan.:80").host,
            Host::Name("pc1.office.lan".into())
        );
        assert_eq!(t("localhost:8080").to_string(), "localhost:8080");
        assert_eq!(t("65535").port, 65535);
    }

    #[test]
    fn bad_targets_say_what_to_write() {
        let e = |s: &str| s.parse::<LocalTarget>().unwrap_err();
        assert_eq!(e(""), SpecError::Empty);
        assert!(matches!(e("0"), SpecError::Port { .. }));
        assert!(matches!(e("65536"), SpecError::Port { .. }));
        assert!(matches!(e("+80"), SpecError::Port { .. }));
        assert!(matches!(e("host:"), SpecError::Port { .. }));
        assert!(matches!(e("80/sctp"), SpecError::Protocol { .. }));
        assert!(matches!(e("::1:8080"), SpecError::Ipv6Brackets { .. }));
        assert!(matches!(e("[::1]8080"), SpecError::Port { .. }));
        assert!(matches!(e("[::1:8080"), SpecError::Host { .. }));
        assert!(matches!(e("[1.2.3.4]:80"), SpecError::Host { .. }));
        assert!(matches!(e("10.0.0.300:80"), SpecError::Host { .. }));
        assert!(matches!(e("-bad-:80"), SpecError::Host { .. }));
        assert!(matches!(e(":80"), SpecError::Host { .. }));
        assert!(matches!(e("a b:80"), SpecError::Host { .. }));
        assert_eq!(
            e("::1:8080").to_string(),
            "\"::1:8080\": put an IPv6 address in brackets, e.g. [::1]:8080"
        );
        assert_eq!(
            e("80/sctp").to_string(),
            "\"80/sctp\": unknown protocol \"sctp\"; write PORT for TCP or PORT/udp for UDP"
        );
    }

    #[test]
    fn one_tcp_port_also_answers_on_80() {
        let p = plan(&s(&["8080"]), &[], Some("dev-api")).unwrap();
        let ports: Vec<(String, u16, u16)> = p
            .service_port_specs()
            .into_iter()
            .map(|x| (x.name, x.port, x.target_port))
            .collect();
        assert_eq!(
            ports,
            [("tcp-8080".into(), 8080, 8080), ("http".into(), 80, 8080)]
        );
        assert_eq!(p.describe_ports().len(), 2);
        for (targets, svc) in [
            (&["80"][..], &[][..]),
            (&["53/udp"], &[]),
            (&["8080", "9090"], &[]),
            (&["8080"], &["9000"]),
        ] {
            let p = plan(&s(targets), &s(svc), None).unwrap();
            assert!(!p.also_http, "{targets:?} {svc:?}");
            assert_eq!(p.service_port_specs().len(), targets.len());
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn plans_give_each_target_a_service_port_and_relay_port() {
        let p = plan(
            &s(&["8080", "53/udp", "pc1:80"]),
            &s(&["", ""][..0]),
            Some("dev-api"),
        )
        .unwrap();
        let got: Vec<_> = p
            .ports
            .iter()
            .map(|e| {
                (
                    e.id,
                    e.service_port,
                    e.relay_port,
                    e.port_name(),
                    e.listener().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 8080, 8080, "tcp-8080".into(), "8080=0".into()),
                (1, 53, 20053, "udp-53".into(), "20053=1/udp".into()),
                (2, 80, 20080, "tcp-80".into(), "20080=2".into()),
            ]
        );
        assert_eq!(p.carrier_port, 7445);
        let sp = p.ports[1].service_port_spec();
        assert_eq!(
            (sp.port, sp.target_port, sp.protocol),
            (53, 20053, Protocol::Udp)
        );
        // --port applies in order; a relay port equal to the default carrier moves it.
        let p = plan(&s(&["3000", "7445"]), &s(&["80"]), None).unwrap();
        assert_eq!(p.ports[0].service_port, 80);
        assert_eq!(p.ports[1].service_port, 7445);
        assert_eq!(p.carrier_port, 7446);
        assert_eq!(p.name, None);
        // The same port over TCP and UDP is two Service ports.
        assert!(plan(&s(&["53", "53/udp"]), &[], None).is_ok());
    }

    #[test]
    fn bad_plans() {
        assert_eq!(plan(&[], &[], None), Err(SpecError::NoTargets));
        assert!(matches!(
            plan(&s(&["8080"]), &s(&["80", "81"]), None),
            Err(SpecError::TooManyServicePorts {
                ports: 2,
                targets: 1
            })
        ));
        assert_eq!(
            plan(&s(&["8080"]), &s(&["http"]), None),
            Err(SpecError::ServicePort("http".into()))
        );
        assert!(matches!(
            plan(&s(&["8080", "127.0.0.2:8080"]), &[], None),
            Err(SpecError::DuplicateServicePort { port: 8080, .. })
        ));
        for bad in ["Dev", "1abc", "a_b", "abc-", "", &"a".repeat(64)] {
            assert!(
                matches!(plan(&s(&["80"]), &[], Some(bad)), Err(SpecError::Name(_))),
                "{bad}"
            );
        }
        assert!(plan(&s(&["80"]), &[], Some("a")).is_ok());
    }
}
