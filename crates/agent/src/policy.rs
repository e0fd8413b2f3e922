//! Destination policy: which addresses the agent dials for clients.
//!
//! The agent dials what the Kubernetes API proves is a pod or a Service, and nothing a
//! namespace user can point it at. Decided in this order, first match wins:
//!
//! 0. **The cluster DNS server**, on port 53 only: the agent's own resolver (its
//!    `--dns-server` or the kubelet's resolv.conf, never a client's choice), even when it
//!    is link-local as NodeLocal DNSCache's 169.254.20.10 is; never on loopback.
//! 1. **Never**, whatever the flags: loopback (the agent's own ports), link-local (cloud
//!    metadata at 169.254.169.254 and fe80::/10), the AWS IPv6 metadata address,
//!    unspecified, multicast and broadcast addresses.
//! 2. **`--allow CIDR`**: an admin's explicit choice wins over everything below, node
//!    addresses included.
//! 3. **Node addresses** — the addresses in Node objects' status, the IPs of `hostNetwork`
//!    pods (their node's), and the endpoints of the `default/kubernetes` Service (the API
//!    server on the control plane) — only with `--allow-node-addresses`, and refused
//!    without it even when they fall inside a Pod or Service prefix. Nodes serve SSH, the
//!    kubelet (10250), etcd: reaching them is not reaching the cluster's workloads.
//! 4. **ClusterIPs and the IPs of pods with their own network namespace**, as the watch
//!    cache knows them.
//! 5. **The cluster's Pod and Service prefixes** (discovered, or from flags).
//! 6. Everything else is refused. An EndpointSlice address counts only as the pod that
//!    owns it (rule 4): anyone who may create a selector-less Service and its slice in
//!    any namespace can list any address there (an office PC, a database outside the
//!    cluster), so a slice by itself proves nothing.
//!
//! Every refusal names its reason and the flag that would allow it (or says that none
//! does). The policy decides from what it is given and touches no socket.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use kubelan_dns::AddressKind;
use kubelan_proto::{Cidr, ErrorKind, FlowError};

/// What the watch cache says an address is: [`AddressKind`] without borrows, with a
/// description for the kinds that can be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// A Service's ClusterIP.
    ServiceIp,
    /// The IP of a pod with its own network namespace.
    Pod,
    /// A node's address (`hostNetwork` pod, API server endpoint), described.
    Node(String),
    /// An EndpointSlice address no pod owns, described.
    Endpoint(String),
    /// Nothing the cache knows.
    Unknown,
}

impl From<AddressKind<'_>> for Known {
    fn from(kind: AddressKind<'_>) -> Known {
        match kind {
            AddressKind::ServiceIp => Known::ServiceIp,
            AddressKind::Pod => Known::Pod,
            AddressKind::HostNetworkPod { namespace, name } => {
                Known::Node(format!("the IP of hostNetwork pod {namespace}/{name}"))
            }
            AddressKind::ApiServerEndpoint => Known::Node(
                "an endpoint of Service default/kubernetes (the API server's node)".into(),
            ),
            AddressKind::Endpoint {
                namespace,
                slice,
                service,
            } => Known::Endpoint(format!(
                "listed by EndpointSlice {namespace}/{slice} (Service {service}) but owned by no pod"
            )),
            AddressKind::Unknown => Known::Unknown,
        }
    }
}

/// "What is this address?" from the watch cache.
pub type KnownAddrs = Arc<dyn Fn(IpAddr) -> Known + Send + Sync>;

/// The destination policy.
#[derive(Clone)]
pub struct Policy {
    /// Pod and Service prefixes (from flags and the cluster), updated by discovery.
    cluster: Arc<RwLock<Vec<Cidr>>>,
    /// Node addresses from Node objects → node name, updated by discovery.
    nodes: Arc<RwLock<HashMap<IpAddr, String>>>,
    /// `--allow` prefixes.
    extra: Vec<Cidr>,
    /// `--allow-node-addresses`.
    allow_nodes: bool,
    /// The cluster DNS server.
    dns: Option<IpAddr>,
    known: Option<KnownAddrs>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("cluster", &self.cluster)
            .field("nodes", &self.nodes)
            .field("extra", &self.extra)
            .field("allow_nodes", &self.allow_nodes)
            .field("dns", &self.dns)
            .finish()
    }
}

const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// How to allow node addresses, for refusal messages.
const NODE_FLAG: &str =
    "`--allow-node-addresses` on the agent (`kubelan install --allow-node-addresses`)";

/// How to allow other addresses, for refusal messages.
const ALLOW_FLAG: &str = "`--allow CIDR` on the agent (`kubelan install --allow CIDR`)";

fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            if a.is_loopback() {
                Some("a loopback address (the agent's own ports)")
            } else if a.is_link_local() {
                Some("link-local (cloud metadata lives there)")
            } else if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            if a.is_loopback() {
                Some("a loopback address (the agent's own ports)")
            } else if a.is_unicast_link_local() || a == AWS_METADATA_V6 {
                Some("link-local or cloud metadata")
            } else if a.is_unspecified() || a.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
    }
}

impl Policy {
    /// A policy allowing `cluster` prefixes, `extra` (`--allow`) and the DNS server;
    /// node addresses are refused until [`Policy::allow_node_addresses`].
    pub fn new(cluster: Vec<Cidr>, extra: Vec<Cidr>, dns: Option<IpAddr>) -> Policy {
        Policy {
            cluster: Arc::new(RwLock::new(cluster)),
            nodes: Arc::new(RwLock::new(HashMap::new())),
            extra,
            allow_nodes: false,
            dns,
            known: None,
        }
    }

    /// Also allows node addresses (`--allow-node-addresses`).
    pub fn allow_node_addresses(mut self, allow: bool) -> Policy {
        self.allow_nodes = allow;
        self
    }

    /// Asks `known` what an address is (the watch cache).
    pub fn with_known(mut self, known: KnownAddrs) -> Policy {
        self.known = Some(known);
        self
    }

    /// Replaces the cluster prefixes (after discovery).
    pub fn set_cluster(&self, cidrs: Vec<Cidr>) {
        *self.cluster.write().expect("policy lock") = cidrs;
    }

    /// Replaces the node addresses (address → node name, from Node objects).
    pub fn set_nodes(&self, nodes: HashMap<IpAddr, String>) {
        *self.nodes.write().expect("policy lock") = nodes;
    }

    /// The cluster prefixes now in force.
    pub fn cluster(&self) -> Vec<Cidr> {
        self.cluster.read().expect("policy lock").clone()
    }

    /// Checks one destination (the port matters only for the DNS server rule).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Policy`] with the reason and the flag that would allow it.
    pub fn check(&self, dest: SocketAddr) -> Result<(), FlowError> {
        let ip = dest.ip().to_canonical();
        let refuse = |message: String| Err(FlowError::new(ErrorKind::Policy, message));
        // The agent's own resolver comes from its flags or the kubelet, never from a
        // client, and may be link-local: NodeLocal DNSCache listens on 169.254.20.10.
        // Port 53 only, and never loopback (the agent's own ports live there).
        if Some(ip) == self.dns && dest.port() == 53 && !ip.is_loopback() {
            return Ok(());
        }
        if let Some(why) = forbidden(ip) {
            return refuse(format!(
                "{ip} is {why}; the agent never dials it, whatever its flags"
            ));
        }
        if self.extra.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        let known = self.known.as_ref().map_or(Known::Unknown, |k| k(ip));
        let node = match (&known, self.nodes.read().expect("policy lock").get(&ip)) {
            (Known::Node(what), _) => Some(what.clone()),
            (_, Some(name)) => Some(format!("node {name}'s address")),
            (_, None) => None,
        };
        if let Some(what) = node {
            return if self.allow_nodes {
                Ok(())
            } else {
                refuse(format!(
                    "{ip} is {what}: a node address, which the agent dials only with {NODE_FLAG}"
                ))
            };
        }
        if matches!(known, Known::ServiceIp | Known::Pod) {
            return Ok(());
        }
        if self
            .cluster
            .read()
            .expect("policy lock")
            .iter()
            .any(|c| c.contains(ip))
        {
            return Ok(());
        }
        match known {
            Known::Endpoint(what) => refuse(format!(
                "{ip} is {what}; a slice alone proves nothing, so the agent dials it only when an admin allows it with {ALLOW_FLAG}"
            )),
            _ => refuse(format!(
                "{ip} is outside the cluster's Pod and Service networks and no pod or Service the API knows; an admin can widen the agent's policy with {ALLOW_FLAG}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    fn p() -> Policy {
        Policy::new(
            vec![
                "172.17.32.0/19".parse().unwrap(),
                "172.17.16.0/20".parse().unwrap(),
            ],
            vec!["192.0.2.0/24".parse().unwrap()],
            Some("172.17.16.10".parse().unwrap()),
        )
    }

    /// A cache that knows a ClusterIP, a pod, a host-network pod inside the Pod prefix
    /// (as some CNIs allow), the API server's endpoint and a selector-less endpoint.
    fn cache(ip: IpAddr) -> Known {
        match ip.to_string().as_str() {
            "10.96.0.7" => Known::ServiceIp,
            "10.244.0.5" => Known::Pod,
            "172.17.32.200" => AddressKind::HostNetworkPod {
                namespace: "kube-system",
                name: "exporter",
            }
            .into(),
            "10.4.7.11" => AddressKind::ApiServerEndpoint.into(),
            "172.16.1.11" => AddressKind::Endpoint {
                namespace: "evil",
                slice: "office-1",
                service: "office",
            }
            .into(),
            _ => Known::Unknown,
        }
    }

    fn refusal(p: &Policy, dest: SocketAddr) -> String {
        let e = p.check(dest).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Policy);
        e.message
    }

    #[test]
    fn cluster_prefixes_dns_and_allow_pass() {
        let p = p();
        for ip in [
            "172.17.32.5",
            "172.17.16.1",
            "192.0.2.9",
            "::ffff:172.17.32.5",
        ] {
            assert!(p.check(at(ip, 80)).is_ok(), "{ip}");
        }
        assert!(p.check(at("172.17.16.10", 53)).is_ok());
    }

    #[test]
    fn everything_else_is_refused_with_the_flag_to_use() {
        let m = refusal(&p(), at("10.4.7.2", 80));
        assert!(m.contains("--allow CIDR"), "{m}");
        assert!(m.contains("kubelan install --allow"), "{m}");
    }

    #[test]
    fn metadata_and_loopback_are_never_allowed_even_with_allow() {
        let p = Policy::new(
            vec![],
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            Some("127.0.0.53".parse().unwrap()),
        )
        .allow_node_addresses(true);
        for ip in [
            "169.254.169.254",
            "127.0.0.1",
            "127.0.0.53",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "0.0.0.0",
        ] {
            let m = refusal(&p, at(ip, 53));
            assert!(m.contains("never dials it"), "{ip}: {m}");
        }
        assert!(p.check(at("8.8.8.8", 53)).is_ok());
    }

    #[test]
    fn the_cache_proves_pods_and_services_but_not_slices() {
        let p = Policy::new(vec![], vec![], None).with_known(Arc::new(cache));
        assert!(p.check(at("10.96.0.7", 443)).is_ok());
        assert!(p.check(at("10.244.0.5", 8080)).is_ok());
        let m = refusal(&p, at("172.16.1.11", 22));
        assert!(
            m.contains("EndpointSlice evil/office-1") && m.contains("--allow CIDR"),
            "{m}"
        );
        assert!(refusal(&p, at("10.96.0.8", 80)).contains("outside"));
    }

    #[test]
    fn node_addresses_need_their_flag_even_inside_a_prefix() {
        let p = p().with_known(Arc::new(cache));
        p.set_nodes(HashMap::from([(
            "10.4.7.12".parse().unwrap(),
            "node2".into(),
        )]));
        for (dest, what) in [
            (at("10.4.7.11", 22), "Service default/kubernetes"),
            (at("10.4.7.11", 10250), "Service default/kubernetes"),
            (at("10.4.7.12", 22), "node node2's address"),
            (
                at("172.17.32.200", 9100),
                "hostNetwork pod kube-system/exporter",
            ),
        ] {
            let m = refusal(&p, dest);
            assert!(
                m.contains(what) && m.contains("--allow-node-addresses"),
                "{dest}: {m}"
            );
        }
        let open = p.clone().allow_node_addresses(true);
        for dest in [
            at("10.4.7.11", 22),
            at("10.4.7.12", 10250),
            at("172.17.32.200", 1),
        ] {
            assert!(open.check(dest).is_ok(), "{dest}");
        }
        // An explicit --allow wins over the node rule.
        let allowed = Policy::new(vec![], vec!["10.4.7.11/32".parse().unwrap()], None)
            .with_known(Arc::new(cache));
        assert!(allowed.check(at("10.4.7.11", 22)).is_ok());
    }

    #[test]
    fn the_dns_server_is_allowed_on_port_53_only() {
        let p = Policy::new(vec![], vec![], Some("10.4.7.11".parse().unwrap()));
        p.set_nodes(HashMap::from([(
            "10.4.7.11".parse().unwrap(),
            "node1".into(),
        )]));
        assert!(p.check(at("10.4.7.11", 53)).is_ok());
        assert!(refusal(&p, at("10.4.7.11", 22)).contains("--allow-node-addresses"));
    }

    #[test]
    fn a_link_local_dns_server_is_allowed_on_port_53_only() {
        // NodeLocal DNSCache: the pods' resolver is link-local.
        let p = Policy::new(vec![], vec![], Some("169.254.20.10".parse().unwrap()));
        assert!(p.check(at("169.254.20.10", 53)).is_ok());
        assert!(refusal(&p, at("169.254.20.10", 80)).contains("link-local"));
        assert!(refusal(&p, at("169.254.169.254", 53)).contains("link-local"));
        // A loopback resolver is never dialled for clients.
        let p = Policy::new(vec![], vec![], Some("127.0.0.53".parse().unwrap()));
        assert!(refusal(&p, at("127.0.0.53", 53)).contains("loopback"));
    }
}
