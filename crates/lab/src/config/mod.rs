//! The lab's configuration: the topology that `kubelan lab up --config lab.toml`
//! builds.
//!
//! A [`LabConfig`] is read from TOML. Every section and almost every key is
//! optional: whatever the file leaves out keeps its value from
//! [`LabConfig::default`]. Lists (`[[nodes]]`, `office.pcs`, `[[users]]`) are
//! replaced as a whole when the file names them. Unknown keys are rejected, so a
//! misspelt key is an error rather than a silently ignored setting.
//!
//! Checking happens in two stages:
//!
//! * parsing ([`LabConfig::from_toml_str`], [`LabConfig::load`]) rejects TOML
//!   syntax errors, unknown keys and values of the wrong kind (for example an
//!   IPv6 network or `"banana"` where an IPv4 network belongs); the message
//!   points at the line and column;
//! * [`LabConfig::validate`] checks the topology as a whole and reports every
//!   problem it finds at once, each naming the field and how to fix it.
//!
//! Both stages run before the lab creates anything.
//!
//! The default topology, as [`LabConfig::to_toml`] prints it:
//!
//! ```toml
//! [cluster]
//! service_cidr = "172.17.16.0/20"
//! pod_cidr = "172.17.32.0/19"
//! domain = "cluster.local"
//! kubernetes_minor = 33
//! node_port_range = "30000-32767"
//!
//! [network]
//! node_cidr = "10.4.7.0/24"
//! office_cidr = "172.16.0.0/18"
//! wan_cidr = "198.51.100.0/24"
//! mtu = 1500
//!
//! [[nodes]]
//! name = "node1"
//! address = "10.4.7.11"
//! pod_cidr = "172.17.32.0/24"
//! control_plane = true
//!
//! [[nodes]]
//! name = "node2"
//! address = "10.4.7.12"
//! pod_cidr = "172.17.33.0/24"
//! control_plane = false
//!
//! [office]
//! router_node_address = "10.4.7.1"
//! router_lan_address = "172.16.0.1"
//! nodes_route_back = true
//!
//! [[office.pcs]]
//! name = "pc1"
//! address = "172.16.1.11"
//!
//! [[office.pcs]]
//! name = "pc2"
//! address = "172.16.1.12"
//!
//! [edge]
//! node_address = "10.4.7.254"
//! wan_address = "198.51.100.1"
//! nat = true
//!
//! [laptop]
//! address = "198.51.100.10"
//!
//! [faults]
//! seed001 = false
//!
//! [workloads]
//! defaults = true
//!
//! [[users]]
//! name = "developer"
//! groups = []
//! ```

mod defaults;
mod error;
mod parse;
#[cfg(test)]
mod tests;
mod validate;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use error::{ConfigError, ConfigIssue};
use parse::{deserialize_addr, deserialize_net};
pub use validate::validate_lab_name;

/// Host name of the office router (fixed; no node or PC may use it).
pub const OFFICE_ROUTER_NAME: &str = "office-router";
/// Host name of the edge router (fixed; no node or PC may use it).
pub const EDGE_ROUTER_NAME: &str = "edge-router";
/// Host name of the laptop on the WAN (fixed; no node or PC may use it).
pub const LAPTOP_NAME: &str = "laptop";
/// The fixed host names of the lab's built-in hosts.
pub const RESERVED_HOST_NAMES: [&str; 3] = [OFFICE_ROUTER_NAME, EDGE_ROUTER_NAME, LAPTOP_NAME];
/// Longest host name (node or PC) accepted; host names become parts of
/// namespace names.
pub const MAX_HOST_NAME_LEN: usize = 15;
/// Most nodes a lab may have.
pub const MAX_NODES: usize = 16;
/// Longest lab name accepted by [`validate_lab_name`].
pub const MAX_LAB_NAME_LEN: usize = 12;

/// Lowest accepted `network.mtu`.
const MIN_MTU: u32 = 576;
/// Highest accepted `network.mtu`.
const MAX_MTU: u32 = 9000;
/// Oldest and newest Kubernetes minor versions the simulator can pretend to be.
const KUBERNETES_MINORS: std::ops::RangeInclusive<u32> = 30..=37;
/// Accepted prefix lengths of `cluster.service_cidr`.
const SERVICE_PREFIXES: std::ops::RangeInclusive<u8> = 12..=28;
/// Accepted prefix lengths of a node's `pod_cidr`.
const NODE_POD_PREFIXES: std::ops::RangeInclusive<u8> = 16..=28;

// ---------------------------------------------------------------------------
// The configuration types
// ---------------------------------------------------------------------------

/// The whole lab topology (`lab.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabConfig {
    /// `[cluster]`: Kubernetes-level settings.
    pub cluster: ClusterConfig,
    /// `[network]`: the lab's IP networks.
    pub network: NetworkConfig,
    /// `[[nodes]]`: the cluster nodes.
    pub nodes: Vec<NodeConfig>,
    /// `[office]`: the office router and the office PCs.
    pub office: OfficeConfig,
    /// `[edge]`: the edge router between the node network and the WAN.
    pub edge: EdgeConfig,
    /// `[laptop]`: a machine out on the WAN.
    pub laptop: LaptopConfig,
    /// `[faults]`: deliberately injected faults.
    pub faults: FaultsConfig,
    /// `[workloads]`: which workloads the lab creates at start-up.
    pub workloads: WorkloadsConfig,
    /// `[[users]]`: extra API users, each with its own bearer token.
    pub users: Vec<UserConfig>,
}

/// `[cluster]`: Kubernetes-level settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Network the simulator allocates ClusterIPs from (prefix /12 to /28).
    #[serde(deserialize_with = "deserialize_net")]
    pub service_cidr: Ipv4Net,
    /// The cluster-wide Pod network; every node's `pod_cidr` lies inside it.
    #[serde(deserialize_with = "deserialize_net")]
    pub pod_cidr: Ipv4Net,
    /// The cluster DNS domain.
    pub domain: String,
    /// The Kubernetes minor version the API server reports (`1.<minor>`).
    pub kubernetes_minor: u32,
    /// Ports NodePort services are allocated from.
    pub node_port_range: PortRange,
}

/// `[network]`: the lab's IP networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The network the nodes, the office router's node leg and the edge
    /// router's node leg share.
    #[serde(deserialize_with = "deserialize_net")]
    pub node_cidr: Ipv4Net,
    /// The office LAN behind the office router.
    #[serde(deserialize_with = "deserialize_net")]
    pub office_cidr: Ipv4Net,
    /// The WAN behind the edge router, where the laptop lives.
    #[serde(deserialize_with = "deserialize_net")]
    pub wan_cidr: Ipv4Net,
    /// MTU of every link in the lab (576 to 9000).
    pub mtu: u32,
}

/// One `[[nodes]]` entry: a cluster node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Host name and Kubernetes node name (a lowercase DNS label of at most
    /// [`MAX_HOST_NAME_LEN`] characters).
    pub name: String,
    /// The node's address on `network.node_cidr`.
    #[serde(deserialize_with = "deserialize_addr")]
    pub address: Ipv4Addr,
    /// The slice of `cluster.pod_cidr` this node's pods get addresses from.
    #[serde(deserialize_with = "deserialize_net")]
    pub pod_cidr: Ipv4Net,
    /// Whether the API server runs on this node (exactly one node has it).
    #[serde(default)]
    pub control_plane: bool,
}

/// `[office]`: the office router and the PCs on the office LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfficeConfig {
    /// The office router's leg on the node network (`network.node_cidr`).
    #[serde(deserialize_with = "deserialize_addr")]
    pub router_node_address: Ipv4Addr,
    /// The office router's leg on the office LAN (`network.office_cidr`); the
    /// PCs' default gateway.
    #[serde(deserialize_with = "deserialize_addr")]
    pub router_lan_address: Ipv4Addr,
    /// Whether the nodes have a route to the office LAN via the office router.
    pub nodes_route_back: bool,
    /// The PCs on the office LAN.
    pub pcs: Vec<PcConfig>,
}

/// One office PC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcConfig {
    /// Host name (a lowercase DNS label of at most [`MAX_HOST_NAME_LEN`]
    /// characters).
    pub name: String,
    /// The PC's address on `network.office_cidr`.
    #[serde(deserialize_with = "deserialize_addr")]
    pub address: Ipv4Addr,
}

/// `[edge]`: the edge router between the node network and the WAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// The edge router's leg on the node network (`network.node_cidr`).
    #[serde(deserialize_with = "deserialize_addr")]
    pub node_address: Ipv4Addr,
    /// The edge router's leg on the WAN (`network.wan_cidr`).
    #[serde(deserialize_with = "deserialize_addr")]
    pub wan_address: Ipv4Addr,
    /// Whether the laptop sits behind the edge router's NAT, as a laptop at home or in a
    /// café does: its connections leave with `node_address` as their source, and nothing
    /// on the node network can open a connection to the WAN. Off, the edge router only
    /// routes, and pods reach the laptop's own address.
    pub nat: bool,
}

/// `[laptop]`: a machine out on the WAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaptopConfig {
    /// The laptop's address on `network.wan_cidr`.
    #[serde(deserialize_with = "deserialize_addr")]
    pub address: Ipv4Addr,
}

/// `[faults]`: deliberately injected faults, all off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// The fault of "seed 001": kube-proxy does not masquerade traffic that
    /// comes from outside the Pod CIDR, so when the chosen pod runs on another
    /// node, its replies go straight back instead of through the node that did
    /// the DNAT, and the client drops them.
    pub seed001: bool,
}

/// `[workloads]`: which workloads the lab creates at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadsConfig {
    /// Create the default workloads: `default/web`, `default/echo`,
    /// `default/db` and `kube-system/kube-dns`.
    pub defaults: bool,
}

/// One `[[users]]` entry: an extra API user with its own bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name as the API server sees it (must not start with `system:`).
    pub name: String,
    /// Groups the user belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An inclusive range of ports, written `"first-last"` in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
}

// ---------------------------------------------------------------------------
// Derived values and helpers
// ---------------------------------------------------------------------------

/// The address `offset` places after the start of `net`'s network.
fn nth_address(net: Ipv4Net, offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(offset))
}

impl ClusterConfig {
    /// ClusterIP of the `default/kubernetes` service: the first host address
    /// of `service_cidr` (172.17.16.1 by default).
    ///
    /// Only meaningful for a validated configuration.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        nth_address(self.service_cidr, 1)
    }

    /// ClusterIP of the cluster DNS service: the tenth host address of
    /// `service_cidr` (172.17.16.10 by default).
    ///
    /// Only meaningful for a validated configuration.
    pub fn dns_service_ip(&self) -> Ipv4Addr {
        nth_address(self.service_cidr, 10)
    }
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How many ports the range holds (0 when `first > last`).
    pub fn len(&self) -> usize {
        if self.first > self.last {
            0
        } else {
            usize::from(self.last - self.first) + 1
        }
    }

    /// Whether the range holds no port at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LabConfig {
    /// The node the API server runs on (the first one with `control_plane`
    /// set; a validated configuration has exactly one).
    pub fn control_plane(&self) -> Option<&NodeConfig> {
        self.nodes.iter().find(|node| node.control_plane)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The laptop's address as the cluster (API server, nodes, NodePorts, the agent)
    /// sees it: the edge router's node-network address when the laptop is behind its NAT
    /// (`edge.nat`), the laptop's own otherwise.
    pub fn laptop_address_in_cluster(&self) -> Ipv4Addr {
        if self.edge.nat {
            self.edge.node_address
        } else {
            self.laptop.address
        }
    }
}
