//! From API objects to "which pod, which port", the way `kubectl port-forward` and
//! kube-proxy decide it. Pure functions over `k8s-openapi` types; the watchers feed them.
//!
//! - A Service port is picked by its `port` number or its name; its `targetPort` (a number
//!   or a container port *name*, which may resolve to different numbers on different pods)
//!   is not interpreted here: the EndpointSlices already carry the resolved number per
//!   endpoint group, under the Service port's name, as kube-proxy reads them.
//! - An endpoint is usable when its `ready` condition is true (absent means true, as the
//!   API documents) and it points at a Pod (`targetRef`); port-forward needs a pod.
//! - Pods (`pod/NAME`, the pods of a Deployment) are usable when `Running` and not being
//!   deleted; Ready pods are preferred.
//! - The choice is sticky: a forward keeps its pod while it stays usable, and moves only
//!   when it goes away or failed recently ([`choose`]).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::spec::RemotePort;

/// A pod and the port on it that a forward dials.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// Pod name (in the target's namespace).
    pub pod: String,
    /// Port inside the pod.
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pod, self.port)
    }
}

/// A pod that could serve a forward, with how good a choice it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The pod and port.
    pub backend: Backend,
    /// Ready (preferred) or only running.
    pub ready: bool,
}

/// Why a target or one of its ports cannot be forwarded. Each message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The Service has no port matching the request.
    #[error(
        "Service {service} has no port {wanted}; it exposes {}: forward one of these (e.g. `svc/{name} {example}`)",
        list(.available)
    )]
    NoServicePort {
        /// `namespace/name`.
        service: String,
        /// The Service's name.
        name: String,
        /// The port asked for.
        wanted: String,
        /// What it has (`80/TCP (http)`).
        available: Vec<String>,
        /// A valid example port.
        example: String,
    },
    /// The Service port asked for is UDP (or SCTP).
    #[error(
        "port {wanted} of Service {service} is {protocol}, but Kubernetes port-forward carries TCP only; for UDP use `kubelan proxy` (SOCKS5 UDP ASSOCIATE) or `kubelan connect`"
    )]
    ServicePortNotTcp {
        /// `namespace/name`.
        service: String,
        /// The port asked for.
        wanted: String,
        /// Its protocol.
        protocol: String,
    },
    /// An ExternalName Service points outside the cluster: there is no pod to forward to.
    #[error(
        "Service {service} is an ExternalName alias for {external}; it has no pods to forward to (connect to {external} directly)"
    )]
    ExternalName {
        /// `namespace/name`.
        service: String,
        /// Its `externalName`.
        external: String,
    },
    /// No container of the pod (or pod template) declares this port name.
    #[error(
        "{owner} has no container port named {wanted:?}; {}: use a port number or one of these names",
        if .available.is_empty() { "it declares no named ports".to_string() } else { format!("its named ports are {}", list(.available)) }
    )]
    NoContainerPort {
        /// `pod default/x` or `deployment default/x`.
        owner: String,
        /// The name asked for.
        wanted: String,
        /// The names it has.
        available: Vec<String>,
    },
    /// The container port asked for is declared UDP only.
    #[error(
        "port {wanted} of {owner} is declared {protocol} only, but Kubernetes port-forward carries TCP only; for UDP use `kubelan proxy` or `kubelan connect`"
    )]
    ContainerPortNotTcp {
        /// `pod default/x`.
        owner: String,
        /// The port asked for.
        wanted: String,
        /// Its protocol.
        protocol: String,
    },
    /// A Deployment whose selector cannot be written as a label selector.
    #[error(
        "deployment {deployment} has no usable selector ({why}); forward to one of its pods with pod/NAME"
    )]
    Selector {
        /// `namespace/name`.
        deployment: String,
        /// What is wrong.
        why: String,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "no ports".into()
    } else {
        items.join(", ")
    }
}

fn protocol(p: Option<&String>) -> &str {
    p.map_or("TCP", String::as_str)
}

/// The Service port a forward uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortRef {
    /// Its name (empty when the Service has a single unnamed port).
    pub name: String,
    /// Its `port`.
    pub port: u16,
    /// Its `targetPort` as a number, when it is one (used when no EndpointSlice names it).
    pub target_number: Option<u16>,
}

fn describe_port(p: &ServicePort) -> String {
    let mut s = format!("{}/{}", p.port, protocol(p.protocol.as_ref()));
    if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
        s.push_str(&format!(" ({n})"));
    }
    s
}

fn port_u16(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p > 0)
}

/// Finds the Service port `wanted` names (by `port` number, else by name), TCP only.
///
/// # Errors
/// [`ResolveError::NoServicePort`] (listing what the Service exposes),
/// [`ResolveError::ServicePortNotTcp`], [`ResolveError::ExternalName`].
pub fn service_port(svc: &Service, wanted: &RemotePort) -> Result<ServicePortRef, ResolveError> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let service = format!("{ns}/{name}");
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(ResolveError::ExternalName {
            service,
            external: spec.external_name.unwrap_or_default(),
        });
    }
    let ports = spec.ports.unwrap_or_default();
    let matches = |p: &&ServicePort| match wanted {
        RemotePort::Number(n) => i32::from(*n) == p.port,
        RemotePort::Name(s) => p.name.as_deref() == Some(s.as_str()),
    };
    let found: Vec<&ServicePort> = ports.iter().filter(matches).collect();
    let tcp = found
        .iter()
        .find(|p| protocol(p.protocol.as_ref()).eq_ignore_ascii_case("TCP"));
    match (tcp, found.first()) {
        (Some(p), _) => Ok(ServicePortRef {
            name: p.name.clone().unwrap_or_default(),
            port: port_u16(p.port).unwrap_or_default(),
            target_number: match &p.target_port {
                Some(IntOrString::Int(n)) => port_u16(*n),
                Some(IntOrString::String(_)) => None,
                None => port_u16(p.port),
            },
        }),
        (None, Some(p)) => Err(ResolveError::ServicePortNotTcp {
            service,
            wanted: wanted.to_string(),
            protocol: protocol(p.protocol.as_ref()).to_string(),
        }),
        (None, None) => {
            let example = ports
                .iter()
                .find(|p| protocol(p.protocol.as_ref()).eq_ignore_ascii_case("TCP"))
                .map_or_else(
                    || "8080:80".to_string(),
                    |p| {
                        format!(
                            "{}:{}",
                            u32::from(port_u16(p.port).unwrap_or(80)) + 8000,
                            p.port
                        )
                    },
                );
            Err(ResolveError::NoServicePort {
                service,
                name: name.to_string(),
                wanted: wanted.to_string(),
                available: ports.iter().map(describe_port).collect(),
                example,
            })
        }
    }
}

/// Every TCP port of a Service (bulk mode forwards them all).
pub fn service_tcp_ports(svc: &Service) -> Vec<ServicePortRef> {
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let mut out: Vec<ServicePortRef> = Vec::new();
    for p in spec.ports.unwrap_or_default() {
        if !protocol(p.protocol.as_ref()).eq_ignore_ascii_case("TCP") {
            continue;
        }
        let Ok(r) = service_port(svc, &RemotePort::Number(port_u16(p.port).unwrap_or(0))) else {
            continue;
        };
        if r.port != 0 && !out.iter().any(|o| o.port == r.port) {
            out.push(r);
        }
    }
    out
}

/// The ready pods behind a Service port, from the Service's EndpointSlices, sorted by pod
/// name. Endpoints not backed by pods (selector-less Services pointing at other addresses)
/// cannot be port-forwarded and are left out.
pub fn service_candidates<'a>(
    port: &ServicePortRef,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<Candidate> {
    let mut out: BTreeMap<String, Candidate> = BTreeMap::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let number = slice.ports.as_ref().and_then(|ports| {
            ports
                .iter()
                .find(|p| {
                    p.name.as_deref().unwrap_or_default() == port.name
                        && protocol(p.protocol.as_ref()).eq_ignore_ascii_case("TCP")
                })
                .and_then(|p| p.port.and_then(port_u16))
        });
        let Some(number) = number.or(port.target_number) else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.clone().unwrap_or_default();
            if cond.ready == Some(false) || cond.terminating == Some(true) {
                continue;
            }
            let Some(pod) = ep
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| t.name.clone())
            else {
                continue;
            };
            out.insert(
                pod.clone(),
                Candidate {
                    backend: Backend { pod, port: number },
                    ready: true,
                },
            );
        }
    }
    out.into_values().collect()
}

/// How usable a pod is for port-forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodUse {
    /// Not running, or being deleted: the API server would refuse.
    Unusable,
    /// Running but not Ready.
    Running,
    /// Running and Ready.
    Ready,
}

/// Whether `pod` can take a port-forward.
pub fn pod_use(pod: &Pod) -> PodUse {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodUse::Unusable;
    }
    let Some(status) = pod.status.as_ref() else {
        return PodUse::Unusable;
    };
    if status.phase.as_deref() != Some("Running") {
        return PodUse::Unusable;
    }
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        PodUse::Ready
    } else {
        PodUse::Running
    }
}

/// The container port `wanted` names on a pod spec. A number needs no declaration (as in
/// kubectl), unless the spec declares it for UDP or SCTP only.
///
/// # Errors
/// [`ResolveError::NoContainerPort`], [`ResolveError::ContainerPortNotTcp`].
pub fn container_port(
    spec: Option<&k8s_openapi::api::core::v1::PodSpec>,
    owner: &str,
    wanted: &RemotePort,
) -> Result<u16, ResolveError> {
    let declared: Vec<_> = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .flat_map(|c| c.ports.iter().flatten())
                .collect()
        })
        .unwrap_or_default();
    let not_tcp = |protocols: Vec<&str>| -> Option<String> {
        (!protocols.is_empty() && !protocols.iter().any(|p| p.eq_ignore_ascii_case("TCP")))
            .then(|| protocols[0].to_string())
    };
    match wanted {
        RemotePort::Number(n) => {
            let protocols: Vec<&str> = declared
                .iter()
                .filter(|p| p.container_port == i32::from(*n))
                .map(|p| protocol(p.protocol.as_ref()))
                .collect();
            match not_tcp(protocols) {
                Some(protocol) => Err(ResolveError::ContainerPortNotTcp {
                    owner: owner.into(),
                    wanted: wanted.to_string(),
                    protocol,
                }),
                None => Ok(*n),
            }
        }
        RemotePort::Name(name) => {
            let named: Vec<_> = declared
                .iter()
                .filter(|p| p.name.as_deref() == Some(name.as_str()))
                .collect();
            if let Some(p) = named
                .iter()
                .find(|p| protocol(p.protocol.as_ref()).eq_ignore_ascii_case("TCP"))
                && let Some(n) = port_u16(p.container_port)
            {
                return Ok(n);
            }
            if let Some(protocol) = not_tcp(
                named
                    .iter()
                    .map(|p| protocol(p.protocol.as_ref()))
                    .collect(),
            ) {
                return Err(ResolveError::ContainerPortNotTcp {
                    owner: owner.into(),
                    wanted: wanted.to_string(),
                    protocol,
                });
            }
            let mut available: Vec<String> = declared
                .iter()
                .filter_map(|p| {
                    p.name.as_ref().map(|n| {
                        format!(
                            "{n} ({}/{})",
                            p.container_port,
                            protocol(p.protocol.as_ref())
                        )
                    })
                })
                .collect();
            available.dedup();
            Err(ResolveError::NoContainerPort {
                owner: owner.into(),
                wanted: name.clone(),
                available,
            })
        }
    }
}

/// Pods that can serve `wanted`, best first (Ready before Running, then by name). Pods that
/// do not declare a named port are left out.
pub fn pod_candidates<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    wanted: &RemotePort,
) -> Vec<Candidate> {
    let mut out: Vec<(PodUse, Candidate)> = pods
        .into_iter()
        .filter_map(|p| {
            let usable = pod_use(p);
            if usable == PodUse::Unusable {
                return None;
            }
            let name = p.metadata.name.clone()?;
            let port = container_port(p.spec.as_ref(), "", wanted).ok()?;
            Some((
                usable,
                Candidate {
                    backend: Backend { pod: name, port },
                    ready: usable == PodUse::Ready,
                },
            ))
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.backend.pod.cmp(&b.1.backend.pod))
    });
    out.into_iter().map(|(_, c)| c).collect()
}

/// A Deployment's selector as a label-selector string for list/watch.
///
/// # Errors
/// [`ResolveError::Selector`] when it is missing, empty, or has an unknown operator.
pub fn deployment_selector(d: &Deployment) -> Result<String, ResolveError> {
    let name = format!(
        "{}/{}",
        d.metadata.namespace.as_deref().unwrap_or("default"),
        d.metadata.name.as_deref().unwrap_or_default()
    );
    let sel = d.spec.as_ref().map(|s| &s.selector);
    label_selector(sel).map_err(|why| ResolveError::Selector {
        deployment: name,
        why,
    })
}

/// A `LabelSelector` as a string (`a=b,c in (d,e),!f`).
///
/// # Errors
/// When it is missing, empty (would select everything) or uses an unknown operator.
pub fn label_selector(sel: Option<&LabelSelector>) -> Result<String, String> {
    let Some(sel) = sel else {
        return Err("no selector".into());
    };
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => return Err(format!("unknown operator {op:?}")),
        });
    }
    if parts.is_empty() {
        return Err("the selector is empty".into());
    }
    Ok(parts.join(","))
}

/// Picks the pod for the next connections: the current one while it is still a candidate
/// and has not failed recently, else the best candidate that has not failed recently, else
/// (every candidate failed recently) the best one anyway. Ready candidates win over
/// running-only ones.
pub fn choose(
    current: Option<&Backend>,
    candidates: &[Candidate],
    failed_recently: impl Fn(&str) -> bool,
) -> Option<Backend> {
    let best_ready = candidates.iter().any(|c| c.ready);
    let eligible = |c: &&Candidate| c.ready || !best_ready;
    if let Some(cur) = current
        && candidates
            .iter()
            .filter(eligible)
            .any(|c| &c.backend == cur && !failed_recently(&cur.pod))
    {
        return Some(cur.clone());
    }
    candidates
        .iter()
        .filter(eligible)
        .find(|c| !failed_recently(&c.backend.pod))
        .or_else(|| candidates.iter().find(eligible))
        .map(|c| c.backend.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": ports}
        }))
        .unwrap()
    }

    fn slice(ports: serde_json::Value, eps: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": ports, "endpoints": eps
        }))
        .unwrap()
    }

    fn ep(pod: &str, ready: Option<bool>, terminating: bool) -> serde_json::Value {
        let mut cond = json!({"terminating": terminating});
        if let Some(r) = ready {
            cond["ready"] = json!(r);
        }
        json!({"addresses": ["10.0.0.1"], "conditions": cond, "targetRef": {"kind": "Pod", "name": pod}})
    }

    #[test]
    fn service_port_by_number_or_name_tcp_only() {
        let s = svc(json!([
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "tcp", "port": 7, "protocol": "TCP", "targetPort": 7007},
            {"name": "udp", "port": 7, "protocol": "UDP", "targetPort": 7007},
            {"name": "dns", "port": 53, "protocol": "UDP"}
        ]));
        let p = service_port(&s, &RemotePort::Number(80)).unwrap();
        assert_eq!(
            (p.name.as_str(), p.port, p.target_number),
            ("http", 80, None)
        );
        let p = service_port(&s, &RemotePort::Number(7)).unwrap();
        assert_eq!((p.name.as_str(), p.target_number), ("tcp", Some(7007)));
        let p = service_port(&s, &RemotePort::Name("http".into())).unwrap();
        assert_eq!(p.port, 80);
        let e = service_port(&s, &RemotePort::Name("udp".into())).unwrap_err();
        assert!(matches!(e, ResolveError::ServicePortNotTcp { .. }));
        assert!(e.to_string().contains("kubelan proxy"), "{e}");
        let e = service_port(&s, &RemotePort::Number(53)).unwrap_err();
        assert!(matches!(e, ResolveError::ServicePortNotTcp { .. }), "{e}");
        let e = service_port(&s, &RemotePort::Number(8080)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("default/web has no port 8080")
                && msg.contains("80/TCP (http)")
                && msg.contains("7/UDP (udp)")
                && msg.contains("`svc/web 8080:80`"),
            "{msg}"
        );
        assert_eq!(
            service_tcp_ports(&s)
                .iter()
                .map(|p| p.port)
                .collect::<Vec<_>>(),
            [80, 7]
        );
        let ext: Service = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "a"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}
        }))
        .unwrap();
        assert!(matches!(
            service_port(&ext, &RemotePort::Number(80)),
            Err(ResolveError::ExternalName { .. })
        ));
        assert!(service_tcp_ports(&ext).is_empty());
    }

    #[test]
    fn endpoint_slices_give_ready_pods_and_resolved_ports() {
        let s = svc(json!([{"name": "http", "port": 80, "targetPort": "http"}]));
        let port = service_port(&s, &RemotePort::Number(80)).unwrap();
        // Two groups: pods whose `http` port is 8080, and one whose is 9090.
        let a = slice(
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
            json!([
                ep("web-b", Some(true), false),
                ep("web-a", None, false),
                ep("web-c", Some(false), false),
                ep("web-d", Some(true), true)
            ]),
        );
        let b = slice(
            json!([{"name": "http", "port": 9090}]),
            json!([ep("web-e", Some(true), false)]),
        );
        let c = service_candidates(&port, [&a, &b]);
        let got: Vec<String> = c.iter().map(|c| c.backend.to_string()).collect();
        assert_eq!(got, ["web-a:8080", "web-b:8080", "web-e:9090"]);
        // An endpoint that is not a pod cannot be port-forwarded.
        let ip_only = slice(
            json!([{"name": "http", "port": 80}]),
            json!([{"addresses": ["192.0.2.1"], "conditions": {"ready": true}}]),
        );
        assert!(service_candidates(&port, [&ip_only]).is_empty());
        // A slice without the port (other Service ports) gives nothing for it.
        let other = slice(
            json!([{"name": "metrics", "port": 9100}]),
            json!([ep("web-a", Some(true), false)]),
        );
        assert!(service_candidates(&port, [&other]).is_empty());
    }

    fn pod(name: &str, phase: &str, ready: bool, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn pods_named_ports_and_readiness() {
        let ports = json!([{"name": "http", "containerPort": 8080}, {"name": "echo-udp", "containerPort": 7, "protocol": "UDP"}]);
        let p = pod("a", "Running", true, ports.clone());
        assert_eq!(pod_use(&p), PodUse::Ready);
        assert_eq!(
            container_port(
                p.spec.as_ref(),
                "pod default/a",
                &RemotePort::Name("http".into())
            ),
            Ok(8080)
        );
        assert_eq!(
            container_port(p.spec.as_ref(), "pod default/a", &RemotePort::Number(9999)),
            Ok(9999)
        );
        let e =
            container_port(p.spec.as_ref(), "pod default/a", &RemotePort::Number(7)).unwrap_err();
        assert!(matches!(e, ResolveError::ContainerPortNotTcp { .. }), "{e}");
        let e = container_port(
            p.spec.as_ref(),
            "pod default/a",
            &RemotePort::Name("echo-udp".into()),
        )
        .unwrap_err();
        assert!(matches!(e, ResolveError::ContainerPortNotTcp { .. }), "{e}");
        let e = container_port(
            p.spec.as_ref(),
            "pod default/a",
            &RemotePort::Name("grpc".into()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("http (8080/TCP)"), "{e}");
        let pods = [
            pod("c", "Running", false, ports.clone()),
            pod("b", "Running", true, ports.clone()),
            pod("a", "Pending", false, ports.clone()),
            pod("d", "Running", true, json!([])),
        ];
        let c = pod_candidates(&pods, &RemotePort::Name("http".into()));
        let got: Vec<(String, bool)> = c.iter().map(|c| (c.backend.to_string(), c.ready)).collect();
        assert_eq!(
            got,
            [("b:8080".to_string(), true), ("c:8080".to_string(), false)]
        );
        let c = pod_candidates(&pods, &RemotePort::Number(80));
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].backend.pod, "b");
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "x", "operator": "NotIn", "values": ["c"]},
                {"key": "y", "operator": "Exists"},
                {"key": "z", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(
            label_selector(Some(&sel)).unwrap(),
            "app=web,tier in (a,b),x notin (c),y,!z"
        );
        assert!(label_selector(Some(&LabelSelector::default())).is_err());
        assert!(label_selector(None).is_err());
    }

    #[test]
    fn choice_is_sticky_and_avoids_failed_pods() {
        let c = |pod: &str, ready: bool| Candidate {
            backend: Backend {
                pod: pod.into(),
                port: 80,
            },
            ready,
        };
        let b = |pod: &str| Backend {
            pod: pod.into(),
            port: 80,
        };
        let cands = [c("a", true), c("b", true)];
        assert_eq!(choose(None, &cands, |_| false), Some(b("a")));
        assert_eq!(choose(Some(&b("b")), &cands, |_| false), Some(b("b")));
        // The current pod went away.
        assert_eq!(choose(Some(&b("z")), &cands, |_| false), Some(b("a")));
        // It failed recently: move, unless nothing else is left.
        assert_eq!(choose(Some(&b("a")), &cands, |p| p == "a"), Some(b("b")));
        assert_eq!(choose(Some(&b("a")), &cands, |_| true), Some(b("a")));
        // Ready wins over running-only; running-only is used when nothing is ready.
        assert_eq!(
            choose(Some(&b("r")), &[c("r", false), c("s", true)], |_| false),
            Some(b("s"))
        );
        assert_eq!(choose(None, &[c("r", false)], |_| false), Some(b("r")));
        assert_eq!(choose(Some(&b("a")), &[], |_| false), None);
    }
}
