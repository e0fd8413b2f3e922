//! Finding an installed agent and its credentials: ready pods, the Service, the nodes'
//! addresses, and the ordered list of addresses a client can dial for the direct carrier.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::api::{Api, ListParams};

use crate::credentials::Credentials;
use crate::error::{ClusterError, api, status_code};
use crate::names::{AGENT, CARRIER_PORT, CARRIER_PORT_NAME, POD_SELECTOR};
use crate::preflight::{AGENT_HINT, Access, Missing};

/// A ready agent pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPod {
    /// Pod name.
    pub name: String,
    /// Pod IP, once assigned.
    pub ip: Option<IpAddr>,
    /// Node the pod runs on.
    pub node: Option<String>,
}

impl AgentPod {
    pub(crate) fn from_pod(p: &Pod) -> Self {
        Self {
            name: p.metadata.name.clone().unwrap_or_default(),
            ip: p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        }
    }
}

/// The agent's Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentService {
    /// `NodePort`, `LoadBalancer` or `ClusterIP`.
    pub service_type: String,
    /// The carrier port of the Service (7443).
    pub port: u16,
    /// The ClusterIP, unless headless.
    pub cluster_ip: Option<IpAddr>,
    /// The allocated node port of the carrier port.
    pub node_port: Option<u16>,
    /// LoadBalancer ingress IPs.
    pub load_balancer_ips: Vec<IpAddr>,
    /// LoadBalancer ingress host names (not resolved here).
    pub load_balancer_hostnames: Vec<String>,
}

/// A node's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    /// Node name.
    pub name: String,
    /// Whether the node's `Ready` condition is true.
    pub ready: bool,
    /// `InternalIP` addresses.
    pub internal: Vec<IpAddr>,
    /// `ExternalIP` addresses.
    pub external: Vec<IpAddr>,
}

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent's namespace.
    pub namespace: String,
    /// Ready agent pods (at least one).
    pub pods: Vec<AgentPod>,
    /// The Service, if it exists and could be read.
    pub service: Option<AgentService>,
    /// Node addresses (empty when the Service has no node port or nodes may not be listed).
    pub nodes: Vec<NodeAddresses>,
    /// What could not be found out and why (e.g. listing nodes is forbidden).
    pub notes: Vec<String>,
}

/// Whether a pod is Ready and not being deleted.
pub(crate) fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A pod's state in one line, with the reasons a user can act on: unschedulable, image
/// pull errors, crash loops with the last exit, failing readiness.
pub(crate) fn describe_pod(p: &Pod) -> String {
    if p.metadata.deletion_timestamp.is_some() {
        return "terminating".into();
    }
    let Some(status) = &p.status else {
        return "pending".into();
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unschedulable {
        let reason = c.reason.as_deref().unwrap_or("not scheduled");
        return match c.message.as_deref() {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason.to_string(),
        };
    }
    let mut parts = Vec::new();
    for cs in status.container_statuses.iter().flatten() {
        let st = cs.state.as_ref();
        if let Some(w) = st.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or("waiting");
            parts.push(match w.message.as_deref() {
                Some(m) if !m.is_empty() => format!("{reason} ({m})"),
                _ => reason.to_string(),
            });
        } else if st.and_then(|s| s.running.as_ref()).is_some() && !cs.ready {
            parts.push("running, not ready yet (readiness probe /readyz)".into());
        } else if let Some(t) = st.and_then(|s| s.terminated.as_ref()) {
            parts.push(format!(
                "terminated: {} (exit code {})",
                t.reason.as_deref().unwrap_or("Error"),
                t.exit_code
            ));
        }
        if cs.restart_count > 0 {
            let last = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        ", last exit code {}{}",
                        t.exit_code,
                        t.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            parts.push(format!("{} restarts{last}", cs.restart_count));
        }
    }
    if parts.is_empty() {
        parts.push(phase.to_string());
    }
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    format!("{}{node}", parts.join(", "))
}

fn forbidden(access: Access) -> ClusterError {
    ClusterError::Forbidden {
        missing: vec![Missing {
            access,
            reason: None,
        }],
        hint: AGENT_HINT.into(),
    }
}

/// Finds the agent in `namespace`: its ready pods, its Service and (for NodePort and
/// LoadBalancer Services) the nodes' addresses. Listing nodes is optional: when forbidden,
/// it is recorded in `notes` and node addresses are skipped.
///
/// # Errors
/// [`ClusterError::Forbidden`] when pods may not be listed, [`ClusterError::NotInstalled`]
/// when there is neither an agent pod nor the Service, [`ClusterError::AgentNotReady`]
/// when no pod is ready, [`ClusterError::Api`] for other failures.
pub async fn find_agent(client: &kube::Client, namespace: &str) -> Result<AgentInfo, ClusterError> {
    let ns = namespace;
    let mut notes = Vec::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = match pods.list(&ListParams::default().labels(POD_SELECTOR)).await {
        Ok(l) => l.items,
        Err(e) if status_code(&e) == Some(403) => {
            return Err(forbidden(Access::new("list", "", "pods").in_namespace(ns)));
        }
        Err(e) => return Err(api(format!("list pods in {ns}"))(e)),
    };
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = match services.get_opt(AGENT).await {
        Ok(s) => s.map(|s| agent_service(&s)),
        Err(e) if status_code(&e) == Some(403) => {
            notes.push(format!(
                "cannot read the agent's Service (missing: get services/{AGENT} in {ns}); only pod addresses are known"
            ));
            None
        }
        Err(e) => return Err(api(format!("get services/{AGENT} in {ns}"))(e)),
    };
    if list.is_empty() && service.is_none() {
        return Err(ClusterError::NotInstalled {
            namespace: ns.into(),
        });
    }
    let ready: Vec<AgentPod> = list
        .iter()
        .filter(|p| pod_ready(p))
        .map(AgentPod::from_pod)
        .collect();
    if ready.is_empty() {
        let detail = if list.is_empty() {
            "no pods".to_string()
        } else {
            list.iter()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p.metadata.name.as_deref().unwrap_or(""),
                        describe_pod(p)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(ClusterError::AgentNotReady {
            namespace: ns.into(),
            detail,
        });
    }
    let mut nodes = Vec::new();
    if service.as_ref().is_some_and(|s| s.node_port.is_some()) {
        let api_nodes: Api<Node> = Api::all(client.clone());
        match api_nodes.list(&ListParams::default()).await {
            Ok(l) => nodes = l.items.iter().map(node_addresses).collect(),
            Err(e) if status_code(&e) == Some(403) => notes.push(
                "cannot list nodes (missing: list nodes (cluster-wide)); the NodePort is not used"
                    .into(),
            ),
            Err(e) => notes.push(format!("cannot list nodes: {e}; the NodePort is not used")),
        }
    }
    if let Some(s) = &service
        && !s.load_balancer_hostnames.is_empty()
    {
        notes.push(format!(
            "load balancer host names are not resolved: {}",
            s.load_balancer_hostnames.join(", ")
        ));
    }
    Ok(AgentInfo {
        namespace: ns.into(),
        pods: ready,
        service,
        nodes,
        notes,
    })
}

fn agent_service(s: &Service) -> AgentService {
    let spec = s.spec.clone().unwrap_or_default();
    let port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(CARRIER_PORT_NAME))
        .or_else(|| spec.ports.iter().flatten().next());
    let ingress = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    AgentService {
        service_type: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
        port: port
            .and_then(|p| u16::try_from(p.port).ok())
            .unwrap_or(CARRIER_PORT),
        cluster_ip: spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()),
        node_port: port
            .and_then(|p| p.node_port)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0),
        load_balancer_ips: ingress
            .iter()
            .filter_map(|i| i.ip.as_deref())
            .filter_map(|ip| ip.parse().ok())
            .collect(),
        load_balancer_hostnames: ingress.iter().filter_map(|i| i.hostname.clone()).collect(),
    }
}

fn node_addresses(n: &Node) -> NodeAddresses {
    let status = n.status.as_ref();
    let addrs = |kind: &str| -> Vec<IpAddr> {
        status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == kind)
            .filter_map(|a| a.address.parse().ok())
            .collect()
    };
    NodeAddresses {
        name: n.metadata.name.clone().unwrap_or_default(),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        internal: addrs("InternalIP"),
        external: addrs("ExternalIP"),
    }
}

/// Addresses for the direct (TLS) carrier, best first: LoadBalancer IPs, then the NodePort
/// on ready nodes (ExternalIPs before InternalIPs; nodes running an agent pod first, which
/// saves a hop), then the pods' IPs. Without duplicates.
pub fn direct_endpoints(info: &AgentInfo) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |a: SocketAddr| {
        if seen.insert(a) {
            out.push(a);
        }
    };
    if let Some(s) = &info.service {
        for ip in &s.load_balancer_ips {
            push(SocketAddr::new(*ip, s.port));
        }
        if let Some(np) = s.node_port {
            let hosts_agent =
                |n: &NodeAddresses| info.pods.iter().any(|p| p.node.as_deref() == Some(&n.name));
            let mut nodes: Vec<&NodeAddresses> = info.nodes.iter().filter(|n| n.ready).collect();
            // Stable: keeps the API's order within each group.
            nodes.sort_by_key(|n| !hosts_agent(n));
            for n in &nodes {
                for ip in &n.external {
                    push(SocketAddr::new(*ip, np));
                }
            }
            for n in &nodes {
                for ip in &n.internal {
                    push(SocketAddr::new(*ip, np));
                }
            }
        }
    }
    for p in &info.pods {
        if let Some(ip) = p.ip {
            push(SocketAddr::new(ip, CARRIER_PORT));
        }
    }
    out
}

/// Reads the client credentials from the Secret `kubelan-agent` in `namespace`. Reading it
/// is the permission to use the agent's direct carrier.
///
/// # Errors
/// [`ClusterError::Forbidden`] naming `get secrets/kubelan-agent in <namespace>` and the
/// `kubelan rbac proxy` hint; [`ClusterError::NotInstalled`] when it does not exist;
/// [`ClusterError::BadCredentials`] when keys are missing.
pub async fn load_credentials(
    client: &kube::Client,
    namespace: &str,
) -> Result<Credentials, ClusterError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(AGENT).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(ClusterError::NotInstalled {
                namespace: namespace.into(),
            });
        }
        Err(e) if status_code(&e) == Some(403) => {
            return Err(forbidden(
                Access::new("get", "", "secrets")
                    .named(AGENT)
                    .in_namespace(namespace),
            ));
        }
        Err(e) => return Err(api(format!("get secrets/{AGENT} in {namespace}"))(e)),
    };
    Credentials::from_secret_data(&secret.data.unwrap_or_default()).map_err(|detail| {
        ClusterError::BadCredentials {
            namespace: namespace.into(),
            detail,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> AgentInfo {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        AgentInfo {
            namespace: "ns".into(),
            pods: vec![AgentPod {
                name: "a".into(),
                ip: Some(ip("172.17.33.5")),
                node: Some("node2".into()),
            }],
            service: Some(AgentService {
                service_type: "LoadBalancer".into(),
                port: 7443,
                cluster_ip: Some(ip("172.17.16.20")),
                node_port: Some(31000),
                load_balancer_ips: vec![ip("203.0.113.7")],
                load_balancer_hostnames: vec![],
            }),
            nodes: vec![
                NodeAddresses {
                    name: "node1".into(),
                    ready: true,
                    internal: vec![ip("10.4.7.11")],
                    external: vec![],
                },
                NodeAddresses {
                    name: "node2".into(),
                    ready: true,
                    internal: vec![ip("10.4.7.12")],
                    external: vec![ip("198.51.100.12")],
                },
                NodeAddresses {
                    name: "node3".into(),
                    ready: false,
                    internal: vec![ip("10.4.7.13")],
                    external: vec![],
                },
            ],
            notes: vec![],
        }
    }

    #[test]
    fn endpoints_in_preference_order() {
        let got: Vec<String> = direct_endpoints(&info())
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "203.0.113.7:7443",
                "198.51.100.12:31000",
                "10.4.7.12:31000",
                "10.4.7.11:31000",
                "172.17.33.5:7443"
            ]
        );
        let mut cluster_ip = info();
        cluster_ip.service = None;
        let got: Vec<String> = direct_endpoints(&cluster_ip)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["172.17.33.5:7443"]);
    }

    #[test]
    fn pod_states_name_reasons() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "spec": {"nodeName": "node1", "containers": []},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
            }]}
        }))
        .unwrap();
        assert_eq!(
            describe_pod(&p),
            "ImagePullBackOff (Back-off pulling image) on node1"
        );
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/2 nodes match the node selector"}]}
        }))
        .unwrap();
        assert_eq!(
            describe_pod(&p),
            "Unschedulable: 0/2 nodes match the node selector"
        );
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}
            }]}
        }))
        .unwrap();
        assert_eq!(
            describe_pod(&p),
            "CrashLoopBackOff, 3 restarts, last exit code 2 (Error)"
        );
        assert!(!pod_ready(&p));
    }
}
