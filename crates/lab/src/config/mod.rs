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

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
// Defaults
// ---------------------------------------------------------------------------

/// Builds an IPv4 network from literal parts known to be valid.
fn net(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), prefix) {
        Ok(net) => net,
        Err(_) => unreachable!("prefix {prefix} of a built-in default is at most 32"),
    }
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            cluster: ClusterConfig::default(),
            network: NetworkConfig::default(),
            nodes: vec![
                NodeConfig {
                    name: "node1".to_owned(),
                    address: Ipv4Addr::new(10, 4, 7, 11),
                    pod_cidr: net(172, 17, 32, 0, 24),
                    control_plane: true,
                },
                NodeConfig {
                    name: "node2".to_owned(),
                    address: Ipv4Addr::new(10, 4, 7, 12),
                    pod_cidr: net(172, 17, 33, 0, 24),
                    control_plane: false,
                },
            ],
            office: OfficeConfig::default(),
            edge: EdgeConfig::default(),
            laptop: LaptopConfig::default(),
            faults: FaultsConfig::default(),
            workloads: WorkloadsConfig::default(),
            users: vec![UserConfig {
                name: "developer".to_owned(),
                groups: Vec::new(),
            }],
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            service_cidr: net(172, 17, 16, 0, 20),
            pod_cidr: net(172, 17, 32, 0, 19),
            domain: "cluster.local".to_owned(),
            kubernetes_minor: 33,
            node_port_range: PortRange {
                first: 30000,
                last: 32767,
            },
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            node_cidr: net(10, 4, 7, 0, 24),
            office_cidr: net(172, 16, 0, 0, 18),
            wan_cidr: net(198, 51, 100, 0, 24),
            mtu: 1500,
        }
    }
}

impl Default for OfficeConfig {
    fn default() -> Self {
        OfficeConfig {
            router_node_address: Ipv4Addr::new(10, 4, 7, 1),
            router_lan_address: Ipv4Addr::new(172, 16, 0, 1),
            nodes_route_back: true,
            pcs: vec![
                PcConfig {
                    name: "pc1".to_owned(),
                    address: Ipv4Addr::new(172, 16, 1, 11),
                },
                PcConfig {
                    name: "pc2".to_owned(),
                    address: Ipv4Addr::new(172, 16, 1, 12),
                },
            ],
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            node_address: Ipv4Addr::new(10, 4, 7, 254),
            wan_address: Ipv4Addr::new(198, 51, 100, 1),
            nat: true,
        }
    }
}

impl Default for LaptopConfig {
    fn default() -> Self {
        LaptopConfig {
            address: Ipv4Addr::new(198, 51, 100, 10),
        }
    }
}

impl Default for WorkloadsConfig {
    fn default() -> Self {
        WorkloadsConfig { defaults: true }
    }
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

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || format!("expected a port range like \"30000-32767\", found {text:?}");
        let (first, last) = text.split_once('-').ok_or_else(syntax)?;
        let port = |part: &str| -> Result<u16, String> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            part.parse::<u16>().map_err(|_| {
                format!("port {part} in {text:?} is out of range; ports go from 1 to 65535")
            })
        };
        Ok(PortRange {
            first: port(first)?,
            last: port(last)?,
        })
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses an IPv4 network, with messages aimed at someone editing `lab.toml`.
fn parse_net(text: &str) -> Result<Ipv4Net, String> {
    if let Ok(net) = text.parse::<Ipv4Net>() {
        return Ok(net);
    }
    if text.parse::<ipnet::Ipv6Net>().is_ok() || text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(format!(
            "{text:?} is an IPv6 network; IPv6 is not supported yet, use an IPv4 network such as \"10.4.7.0/24\""
        ));
    }
    if let Ok(addr) = text.parse::<Ipv4Addr>() {
        return Err(format!(
            "{text:?} is a single address; write a network with its prefix length, such as \"{addr}/24\""
        ));
    }
    Err(format!(
        "{text:?} is not an IPv4 network; write one in CIDR notation, such as \"10.4.7.0/24\""
    ))
}

/// Parses an IPv4 address, with messages aimed at someone editing `lab.toml`.
fn parse_addr(text: &str) -> Result<Ipv4Addr, String> {
    if let Ok(addr) = text.parse::<Ipv4Addr>() {
        return Ok(addr);
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() || text.parse::<ipnet::Ipv6Net>().is_ok() {
        return Err(format!(
            "{text:?} is an IPv6 address; IPv6 is not supported yet, use an IPv4 address such as \"10.4.7.11\""
        ));
    }
    if let Ok(net) = text.parse::<Ipv4Net>() {
        return Err(format!(
            "{text:?} has a prefix length; write the bare address \"{}\"",
            net.addr()
        ));
    }
    Err(format!(
        "{text:?} is not an IPv4 address; write one such as \"10.4.7.11\""
    ))
}

fn deserialize_net<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ipv4Net, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_net(&text).map_err(serde::de::Error::custom)
}

fn deserialize_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ipv4Addr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_addr(&text).map_err(serde::de::Error::custom)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem [`LabConfig::validate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The offending field, as a path into the TOML file (`network.node_cidr`,
    /// `nodes[1].address`, …; list indexes count from 0).
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.field, self.problem, self.fix)
    }
}

/// Errors loading or checking a lab configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read lab config {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        error: std::io::Error,
    },
    /// The text is not valid TOML, has unknown keys or values of the wrong
    /// kind. The message includes the line and column.
    #[error("{}", parse_message(path.as_deref(), error))]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The TOML parser's error.
        error: Box<toml::de::Error>,
    },
    /// The configuration parsed but describes an impossible lab; every
    /// problem found is listed.
    #[error("{}", issues_message(.0))]
    Invalid(Vec<ConfigIssue>),
    /// A lab name (`--name`) is not acceptable.
    #[error(
        "invalid lab name {name:?}: {problem} (fix: use 1 to {MAX_LAB_NAME_LEN} characters: lowercase \
         letters, digits and '-', starting with a letter)"
    )]
    InvalidLabName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// The validation problems, when this is [`ConfigError::Invalid`] (empty
    /// otherwise).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            _ => &[],
        }
    }
}

fn parse_message(path: Option<&Path>, error: &toml::de::Error) -> String {
    let error = error.to_string();
    let error = error.trim_end();
    match path {
        Some(path) => format!("invalid lab config {}:\n{error}", path.display()),
        None => format!("invalid lab config:\n{error}"),
    }
}

fn issues_message(issues: &[ConfigIssue]) -> String {
    let mut text = match issues.len() {
        1 => "invalid lab config: 1 problem:".to_owned(),
        n => format!("invalid lab config: {n} problems:"),
    };
    for issue in issues {
        text.push_str("\n  ");
        text.push_str(&issue.to_string());
    }
    text
}

// ---------------------------------------------------------------------------
// Loading and saving
// ---------------------------------------------------------------------------

impl LabConfig {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<LabConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let config = Self::parse(&text).map_err(|error| ConfigError::Parse {
            path: Some(path.to_owned()),
            error: Box::new(error),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates configuration text.
    pub fn from_toml_str(text: &str) -> Result<LabConfig, ConfigError> {
        let config = Self::parse(text).map_err(|error| ConfigError::Parse {
            path: None,
            error: Box::new(error),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str) -> Result<LabConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// The configuration as TOML text, complete with every default, suitable
    /// for printing or saving and for reading back with [`LabConfig::load`].
    pub fn to_toml(&self) -> String {
        match toml::to_string_pretty(self) {
            Ok(text) => text,
            // Every field is a string, number, boolean, table or list of
            // tables, all of which TOML can represent.
            Err(error) => unreachable!("a lab config always serializes to TOML: {error}"),
        }
    }

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

    /// Checks the whole configuration and reports every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let issues = self.issues();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(issues))
        }
    }

    /// Every problem [`LabConfig::validate`] would report (empty when the
    /// configuration is valid).
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let mut check = Checker::default();
        check.networks(self);
        check.cluster(&self.cluster);
        check.mtu(self.network.mtu);
        check.nodes(self);
        check.host_names(self);
        check.addresses(self);
        check.users(&self.users);
        check.issues
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Collects validation problems.
#[derive(Default)]
struct Checker {
    issues: Vec<ConfigIssue>,
}

/// Whether two networks share at least one address.
fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The problem with `name` as a lowercase DNS label of at most `max` bytes,
/// if any.
fn dns_label_problem(name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "{name:?} contains {bad:?}; only lowercase letters, digits and '-' are allowed"
        ));
    }
    if name.len() > max {
        return Some(format!(
            "{name:?} is {} characters long, more than {max}",
            name.len()
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some(format!("{name:?} starts or ends with '-'"));
    }
    None
}

impl Checker {
    fn add(
        &mut self,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.issues.push(ConfigIssue {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// A network written with host bits set.
    fn canonical(&mut self, field: &str, net: Ipv4Net) {
        if net != net.trunc() {
            self.add(
                field,
                format!("{net} has host bits set"),
                format!("write the network it belongs to, {}", net.trunc()),
            );
        }
    }

    /// The five lab-wide networks: canonical and pairwise disjoint.
    fn networks(&mut self, config: &LabConfig) {
        let networks = [
            ("cluster.service_cidr", config.cluster.service_cidr),
            ("cluster.pod_cidr", config.cluster.pod_cidr),
            ("network.node_cidr", config.network.node_cidr),
            ("network.office_cidr", config.network.office_cidr),
            ("network.wan_cidr", config.network.wan_cidr),
        ];
        for (field, net) in networks {
            self.canonical(field, net);
        }
        for (i, (field, net)) in networks.iter().enumerate() {
            for (other_field, other) in &networks[..i] {
                if overlaps(net.trunc(), other.trunc()) {
                    self.add(
                        *field,
                        format!("{} overlaps {other_field} ({})", net.trunc(), other.trunc()),
                        format!("choose a network that shares no address with {other_field}"),
                    );
                }
            }
        }
    }

    fn cluster(&mut self, cluster: &ClusterConfig) {
        let prefix = cluster.service_cidr.prefix_len();
        if !SERVICE_PREFIXES.contains(&prefix) {
            self.add(
                "cluster.service_cidr",
                format!(
                    "prefix length /{prefix} is outside /{} to /{}",
                    SERVICE_PREFIXES.start(),
                    SERVICE_PREFIXES.end()
                ),
                format!(
                    "use a prefix length between /{} and /{}, such as /20",
                    SERVICE_PREFIXES.start(),
                    SERVICE_PREFIXES.end()
                ),
            );
        }

        let domain = &cluster.domain;
        let domain_problem = if domain.is_empty() {
            Some("is empty".to_owned())
        } else if domain.len() > 253 {
            Some(format!(
                "is {} characters long, more than 253",
                domain.len()
            ))
        } else {
            domain
                .split('.')
                .find_map(|label| dns_label_problem(label, 63))
                .map(|problem| format!("has a bad label: {problem}"))
        };
        if let Some(problem) = domain_problem {
            self.add(
                "cluster.domain",
                format!("{domain:?} {problem}"),
                "use dot-separated lowercase DNS labels without a trailing dot, such as \"cluster.local\"",
            );
        }

        let minor = cluster.kubernetes_minor;
        if !KUBERNETES_MINORS.contains(&minor) {
            self.add(
                "cluster.kubernetes_minor",
                format!("Kubernetes 1.{minor} is not supported"),
                format!(
                    "use a minor version from {} to {}, such as 33",
                    KUBERNETES_MINORS.start(),
                    KUBERNETES_MINORS.end()
                ),
            );
        }

        let range = cluster.node_port_range;
        if range.first == 0 {
            self.add(
                "cluster.node_port_range",
                format!("{range} starts at port 0, which is not a usable port"),
                "start the range at port 1 or above, such as \"30000-32767\"",
            );
        }
        if range.first >= range.last {
            self.add(
                "cluster.node_port_range",
                format!("{range} does not go from a lower to a higher port"),
                "write the lower port first, such as \"30000-32767\"",
            );
        }
    }

    fn mtu(&mut self, mtu: u32) {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            self.add(
                "network.mtu",
                format!("{mtu} is outside {MIN_MTU} to {MAX_MTU}"),
                format!("use an MTU from {MIN_MTU} to {MAX_MTU}, such as 1500"),
            );
        }
    }

    fn nodes(&mut self, config: &LabConfig) {
        let nodes = &config.nodes;
        if nodes.is_empty() {
            self.add(
                "nodes",
                "there are no nodes",
                "add at least one [[nodes]] entry with control_plane = true",
            );
        } else if nodes.len() > MAX_NODES {
            self.add(
                "nodes",
                format!("there are {} nodes, more than {MAX_NODES}", nodes.len()),
                format!("remove [[nodes]] entries until at most {MAX_NODES} remain"),
            );
        }
        if !nodes.is_empty() {
            let control: Vec<&str> = nodes
                .iter()
                .filter(|node| node.control_plane)
                .map(|node| node.name.as_str())
                .collect();
            match control.len() {
                0 => self.add(
                    "nodes",
                    "no node has control_plane = true, so the API server has nowhere to run",
                    "set control_plane = true on exactly one node",
                ),
                1 => {}
                n => self.add(
                    "nodes",
                    format!(
                        "{n} nodes have control_plane = true ({}), but the API server runs on one",
                        control.join(", ")
                    ),
                    "set control_plane = true on exactly one node",
                ),
            }
        }

        let pod_cidr = config.cluster.pod_cidr.trunc();
        for (i, node) in nodes.iter().enumerate() {
            let field = format!("nodes[{i}].pod_cidr");
            let net = node.pod_cidr;
            self.canonical(&field, net);
            let prefix = net.prefix_len();
            if !NODE_POD_PREFIXES.contains(&prefix) {
                self.add(
                    &field,
                    format!(
                        "node {:?}: prefix length /{prefix} is outside /{} to /{}",
                        node.name,
                        NODE_POD_PREFIXES.start(),
                        NODE_POD_PREFIXES.end()
                    ),
                    format!(
                        "use a prefix length between /{} and /{}, such as /24",
                        NODE_POD_PREFIXES.start(),
                        NODE_POD_PREFIXES.end()
                    ),
                );
            }
            if !pod_cidr.contains(&net.trunc()) {
                self.add(
                    &field,
                    format!(
                        "node {:?}: {} is not inside cluster.pod_cidr ({pod_cidr})",
                        node.name,
                        net.trunc()
                    ),
                    format!("choose a subnet of {pod_cidr}"),
                );
            }
            for (j, other) in nodes[..i].iter().enumerate() {
                if overlaps(net.trunc(), other.pod_cidr.trunc()) {
                    self.add(
                        &field,
                        format!(
                            "node {:?}: {} overlaps nodes[{j}].pod_cidr ({}) of node {:?}",
                            node.name,
                            net.trunc(),
                            other.pod_cidr.trunc(),
                            other.name
                        ),
                        "give every node its own, disjoint pod_cidr",
                    );
                }
            }
        }
    }

    fn host_names(&mut self, config: &LabConfig) {
        let hosts = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (format!("nodes[{i}].name"), node.name.as_str()))
            .chain(
                config
                    .office
                    .pcs
                    .iter()
                    .enumerate()
                    .map(|(i, pc)| (format!("office.pcs[{i}].name"), pc.name.as_str())),
            );
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (field, name) in hosts {
            if let Some(problem) = dns_label_problem(name, MAX_HOST_NAME_LEN) {
                self.add(
                    &field,
                    format!("host name {problem}"),
                    format!(
                        "use a lowercase DNS label of 1 to {MAX_HOST_NAME_LEN} characters: \
                         letters, digits and inner '-', such as \"node3\""
                    ),
                );
            }
            if RESERVED_HOST_NAMES.contains(&name) {
                self.add(
                    &field,
                    format!("host name {name:?} is reserved for the lab's built-in host"),
                    format!(
                        "choose a name other than {}",
                        RESERVED_HOST_NAMES.map(|n| format!("{n:?}")).join(", ")
                    ),
                );
            } else if let Some(first) = seen.get(name) {
                self.add(
                    &field,
                    format!("host name {name:?} is already used by {first}"),
                    "give every node and PC a different name",
                );
            } else {
                seen.insert(name, field);
            }
        }
    }

    fn addresses(&mut self, config: &LabConfig) {
        let node_net = ("network.node_cidr", config.network.node_cidr.trunc());
        let office_net = ("network.office_cidr", config.network.office_cidr.trunc());
        let wan_net = ("network.wan_cidr", config.network.wan_cidr.trunc());

        let mut addresses: Vec<(String, Ipv4Addr, (&str, Ipv4Net))> = Vec::new();
        for (i, node) in config.nodes.iter().enumerate() {
            addresses.push((format!("nodes[{i}].address"), node.address, node_net));
        }
        addresses.push((
            "office.router_node_address".to_owned(),
            config.office.router_node_address,
            node_net,
        ));
        addresses.push((
            "office.router_lan_address".to_owned(),
            config.office.router_lan_address,
            office_net,
        ));
        for (i, pc) in config.office.pcs.iter().enumerate() {
            addresses.push((format!("office.pcs[{i}].address"), pc.address, office_net));
        }
        addresses.push((
            "edge.node_address".to_owned(),
            config.edge.node_address,
            node_net,
        ));
        addresses.push((
            "edge.wan_address".to_owned(),
            config.edge.wan_address,
            wan_net,
        ));
        addresses.push(("laptop.address".to_owned(), config.laptop.address, wan_net));

        let mut seen: HashMap<Ipv4Addr, &str> = HashMap::new();
        for (field, addr, (net_field, net)) in &addresses {
            if !net.contains(addr) {
                self.add(
                    field,
                    format!("{addr} is not inside {net_field} ({net})"),
                    format!("pick an address inside {net}, or change {net_field}"),
                );
            } else if net.prefix_len() <= 30 && *addr == net.network() {
                self.add(
                    field,
                    format!("{addr} is the network address of {net_field} ({net})"),
                    format!("pick a host address of {net}, not its first address"),
                );
            } else if net.prefix_len() <= 30 && *addr == net.broadcast() {
                self.add(
                    field,
                    format!("{addr} is the broadcast address of {net_field} ({net})"),
                    format!("pick a host address of {net}, not its last address"),
                );
            }
            match seen.get(addr) {
                Some(first) => self.add(
                    field,
                    format!("{addr} is already used by {first}"),
                    "give every host leg a different address",
                ),
                None => {
                    seen.insert(*addr, field);
                }
            }
        }
    }

    fn users(&mut self, users: &[UserConfig]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, user) in users.iter().enumerate() {
            let field = format!("users[{i}].name");
            let name = user.name.as_str();
            if name.trim().is_empty() {
                self.add(
                    &field,
                    "user name is empty",
                    "give the user a name, such as \"alice\"",
                );
            } else if name.starts_with("system:") {
                self.add(
                    &field,
                    format!("user name {name:?} starts with \"system:\", which is reserved for Kubernetes components"),
                    "choose a name without the \"system:\" prefix",
                );
            }
            match seen.get(name) {
                Some(first) => self.add(
                    &field,
                    format!("user name {name:?} is already used by users[{first}]"),
                    "give every user a different name",
                ),
                None => {
                    seen.insert(name, i);
                }
            }
            for (j, group) in user.groups.iter().enumerate() {
                if group.trim().is_empty() {
                    self.add(
                        format!("users[{i}].groups[{j}]"),
                        format!("user {name:?} has an empty group name"),
                        "remove the empty entry or name the group",
                    );
                }
            }
        }
    }
}

/// Checks a lab name (`kubelan lab up --name`): 1 to [`MAX_LAB_NAME_LEN`]
/// characters, lowercase letters, digits and '-', starting with a letter. The
/// name becomes part of network-namespace names such as `kl-<name>-node1`.
pub fn validate_lab_name(name: &str) -> Result<(), ConfigError> {
    let problem = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        Some(format!("it contains {bad:?}"))
    } else if name.len() > MAX_LAB_NAME_LEN {
        Some(format!(
            "it is {} characters long, more than {MAX_LAB_NAME_LEN}",
            name.len()
        ))
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it does not start with a letter".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ConfigError::InvalidLabName {
            name: name.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of every issue `config` has.
    fn fields(config: &LabConfig) -> Vec<String> {
        config
            .issues()
            .into_iter()
            .map(|issue| issue.field)
            .collect()
    }

    /// Asserts that `config` has an issue naming `field`.
    #[track_caller]
    fn assert_issue(config: &LabConfig, field: &str) {
        let issues = config.issues();
        assert!(
            issues.iter().any(|issue| issue.field == field),
            "expected an issue for {field}, got: {issues:#?}"
        );
        for issue in &issues {
            assert!(
                !issue.problem.is_empty() && !issue.fix.is_empty(),
                "{issue:?}"
            );
        }
    }

    fn v4net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn v4(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn parse_err(text: &str) -> String {
        match LabConfig::from_toml_str(text) {
            Err(error @ ConfigError::Parse { .. }) => error.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn config_default_is_valid() {
        let config = LabConfig::default();
        assert_eq!(config.issues(), Vec::new());
        config.validate().unwrap();
        assert_eq!(config.cluster.kubernetes_service_ip(), v4("172.17.16.1"));
        assert_eq!(config.cluster.dns_service_ip(), v4("172.17.16.10"));
        assert_eq!(config.control_plane().unwrap().name, "node1");
        assert_eq!(config.node("node2").unwrap().address, v4("10.4.7.12"));
        assert!(config.node("node3").is_none());
    }

    #[test]
    fn config_default_matches_the_issue() {
        let c = LabConfig::default();
        assert_eq!(c.cluster.service_cidr, v4net("172.17.16.0/20"));
        assert_eq!(c.cluster.pod_cidr, v4net("172.17.32.0/19"));
        assert_eq!(c.cluster.domain, "cluster.local");
        assert_eq!(c.cluster.kubernetes_minor, 33);
        assert_eq!(c.cluster.node_port_range.to_string(), "30000-32767");
        assert_eq!(c.network.node_cidr, v4net("10.4.7.0/24"));
        assert_eq!(c.network.office_cidr, v4net("172.16.0.0/18"));
        assert_eq!(c.network.wan_cidr, v4net("198.51.100.0/24"));
        assert_eq!(c.network.mtu, 1500);
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[1].pod_cidr, v4net("172.17.33.0/24"));
        assert!(!c.nodes[1].control_plane);
        assert_eq!(c.office.router_node_address, v4("10.4.7.1"));
        assert_eq!(c.office.router_lan_address, v4("172.16.0.1"));
        assert_eq!(c.office.pcs[1].address, v4("172.16.1.12"));
        assert!(c.office.nodes_route_back);
        assert_eq!(c.edge.node_address, v4("10.4.7.254"));
        assert_eq!(c.edge.wan_address, v4("198.51.100.1"));
        assert!(c.edge.nat, "the laptop is behind a NAT by default");
        assert_eq!(c.laptop.address, v4("198.51.100.10"));
        assert_eq!(c.laptop_address_in_cluster(), v4("10.4.7.254"));
        assert!(!c.faults.seed001);
        assert!(c.workloads.defaults);
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].name, "developer");
        assert!(c.users[0].groups.is_empty());
    }

    #[test]
    fn config_toml_round_trip() {
        let config = LabConfig::default();
        let text = config.to_toml();
        assert!(text.contains("service_cidr = \"172.17.16.0/20\""), "{text}");
        assert!(text.contains("node_port_range = \"30000-32767\""), "{text}");
        assert_eq!(LabConfig::from_toml_str(&text).unwrap(), config);

        let mut changed = LabConfig::default();
        changed.faults.seed001 = true;
        changed.edge.nat = false;
        changed.workloads.defaults = false;
        changed.office.pcs.clear();
        changed.users.push(UserConfig {
            name: "ops".to_owned(),
            groups: vec!["system:masters".to_owned(), "ops".to_owned()],
        });
        changed.nodes[1].name = "worker-2".to_owned();
        let text = changed.to_toml();
        assert_eq!(LabConfig::from_toml_str(&text).unwrap(), changed, "{text}");
    }

    #[test]
    fn config_empty_and_partial_files_use_defaults() {
        assert_eq!(LabConfig::from_toml_str("").unwrap(), LabConfig::default());
        let config = LabConfig::from_toml_str(
            "[network]\nmtu = 9000\n\n[faults]\nseed001 = true\n\n[[users]]\nname = \"alice\"\n",
        )
        .unwrap();
        assert_eq!(config.network.mtu, 9000);
        assert_eq!(config.network.node_cidr, v4net("10.4.7.0/24"));
        assert!(config.faults.seed001);
        assert_eq!(config.users.len(), 1);
        assert_eq!(config.users[0].name, "alice");
        assert_eq!(config.nodes, LabConfig::default().nodes);
    }

    #[test]
    fn config_edge_nat_switch() {
        let config = LabConfig::from_toml_str("[edge]\nnat = false\n").unwrap();
        assert!(!config.edge.nat);
        assert_eq!(config.edge.node_address, v4("10.4.7.254"));
        assert_eq!(config.laptop_address_in_cluster(), v4("198.51.100.10"));
        // A record written before the switch existed reads as behind the NAT.
        let old = "[edge]\nnode_address = \"10.4.7.254\"\nwan_address = \"198.51.100.1\"\n";
        assert!(LabConfig::from_toml_str(old).unwrap().edge.nat);
        let message = parse_err("[edge]\nnat = \"yes\"\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("bool"), "{message}");
    }

    #[test]
    fn config_unknown_keys_are_rejected() {
        let message = parse_err("[cluster]\nservice_cird = \"172.17.16.0/20\"\n");
        assert!(message.contains("unknown field"), "{message}");
        assert!(message.contains("service_cird"), "{message}");
        assert!(message.contains("line 2"), "{message}");

        let message = parse_err("colour = \"blue\"\n");
        assert!(message.contains("unknown field"), "{message}");
        assert!(message.contains("colour"), "{message}");

        let message = parse_err(
            "[[nodes]]\nname = \"n1\"\naddress = \"10.4.7.11\"\npod_cidr = \"172.17.32.0/24\"\nrole = \"x\"\n",
        );
        assert!(message.contains("role"), "{message}");
    }

    #[test]
    fn config_syntax_errors_show_line_and_column() {
        let message = parse_err("[network]\nmtu = = 1500\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("column"), "{message}");
    }

    #[test]
    fn config_bad_values_are_parse_errors_with_clear_messages() {
        let message = parse_err("[cluster]\nservice_cidr = \"fd00::/108\"\n");
        assert!(message.contains("IPv6 is not supported yet"), "{message}");
        assert!(message.contains("line 2"), "{message}");

        let message = parse_err("[laptop]\naddress = \"2001:db8::1\"\n");
        assert!(message.contains("IPv6 is not supported yet"), "{message}");

        let message = parse_err("[network]\nnode_cidr = \"10.4.7.0\"\n");
        assert!(message.contains("10.4.7.0/24"), "{message}");

        let message = parse_err("[laptop]\naddress = \"198.51.100.10/24\"\n");
        assert!(message.contains("\"198.51.100.10\""), "{message}");

        let message = parse_err("[network]\nwan_cidr = \"banana\"\n");
        assert!(message.contains("not an IPv4 network"), "{message}");

        let message = parse_err("[cluster]\nnode_port_range = \"30000\"\n");
        assert!(message.contains("port range"), "{message}");

        let message = parse_err("[cluster]\nnode_port_range = \"30000-70000\"\n");
        assert!(message.contains("out of range"), "{message}");

        let message = parse_err("[network]\nmtu = \"big\"\n");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn config_reports_every_problem_at_once() {
        let text = r#"
[cluster]
service_cidr = "172.17.16.5/20"
kubernetes_minor = 12

[network]
mtu = 100

[[nodes]]
name = "Node_1"
address = "10.9.9.9"
pod_cidr = "172.17.32.0/24"

[[users]]
name = "system:admin"
"#;
        let error = LabConfig::from_toml_str(text).unwrap_err();
        let fields: Vec<&str> = error.issues().iter().map(|i| i.field.as_str()).collect();
        for field in [
            "cluster.service_cidr",
            "cluster.kubernetes_minor",
            "network.mtu",
            "nodes",
            "nodes[0].name",
            "nodes[0].address",
            "users[0].name",
        ] {
            assert!(fields.contains(&field), "{field} missing from {fields:?}");
        }
        let message = error.to_string();
        assert!(message.starts_with(&format!("invalid lab config: {} problems:", fields.len())));
        assert_eq!(message.lines().count(), fields.len() + 1, "{message}");
        assert!(message.contains("172.17.16.0/20"), "{message}");
    }

    #[test]
    fn config_load_reads_and_reports_files() {
        let dir = std::env::temp_dir().join(format!("kubelan-lab-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let good = dir.join("good.toml");
        std::fs::write(&good, LabConfig::default().to_toml()).unwrap();
        assert_eq!(LabConfig::load(&good).unwrap(), LabConfig::default());

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[network]\nmtu = 1500\nmtu = 1400\n").unwrap();
        let message = LabConfig::load(&bad).unwrap_err().to_string();
        assert!(message.contains("bad.toml"), "{message}");
        assert!(message.contains("line 3"), "{message}");

        let invalid = dir.join("invalid.toml");
        std::fs::write(&invalid, "[network]\nmtu = 1\n").unwrap();
        let error = LabConfig::load(&invalid).unwrap_err();
        assert_eq!(error.issues()[0].field, "network.mtu");

        let missing = dir.join("missing.toml");
        let error = LabConfig::load(&missing).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains("missing.toml"));

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_networks_must_be_canonical() {
        let mut c = LabConfig::default();
        c.network.node_cidr = v4net("10.4.7.5/24");
        let issues = c.issues();
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert_eq!(issues[0].field, "network.node_cidr");
        assert!(issues[0].fix.contains("10.4.7.0/24"), "{issues:#?}");

        for field in [
            "cluster.pod_cidr",
            "network.office_cidr",
            "network.wan_cidr",
        ] {
            let mut c = LabConfig::default();
            match field {
                "cluster.pod_cidr" => c.cluster.pod_cidr = v4net("172.17.32.1/19"),
                "network.office_cidr" => c.network.office_cidr = v4net("172.16.0.1/18"),
                _ => c.network.wan_cidr = v4net("198.51.100.7/24"),
            }
            assert_eq!(fields(&c), vec![field.to_owned()]);
        }

        let mut c = LabConfig::default();
        c.nodes[0].pod_cidr = v4net("172.17.32.9/24");
        assert_eq!(fields(&c), vec!["nodes[0].pod_cidr".to_owned()]);
    }

    #[test]
    fn config_networks_must_not_overlap() {
        let mut c = LabConfig::default();
        c.cluster.service_cidr = v4net("172.17.32.0/20");
        assert_issue(&c, "cluster.pod_cidr");

        let mut c = LabConfig::default();
        c.network.office_cidr = v4net("10.0.0.0/8");
        assert_issue(&c, "network.office_cidr");

        let mut c = LabConfig::default();
        c.network.wan_cidr = v4net("172.16.0.0/24");
        assert_issue(&c, "network.wan_cidr");
        let issue = c
            .issues()
            .into_iter()
            .find(|i| i.field == "network.wan_cidr")
            .unwrap();
        assert!(issue.problem.contains("network.office_cidr"), "{issue:?}");
    }

    #[test]
    fn config_cluster_rules() {
        let mut c = LabConfig::default();
        c.cluster.service_cidr = v4net("172.17.16.0/29");
        assert_issue(&c, "cluster.service_cidr");
        c.cluster.service_cidr = v4net("172.0.0.0/11");
        assert_issue(&c, "cluster.service_cidr");
        c.cluster.service_cidr = v4net("172.17.16.0/28");
        c.validate().unwrap();
        assert_eq!(c.cluster.dns_service_ip(), v4("172.17.16.10"));

        let mut c = LabConfig::default();
        c.cluster.kubernetes_minor = 29;
        assert_issue(&c, "cluster.kubernetes_minor");
        c.cluster.kubernetes_minor = 38;
        assert_issue(&c, "cluster.kubernetes_minor");
        c.cluster.kubernetes_minor = 37;
        c.validate().unwrap();

        let mut c = LabConfig::default();
        c.cluster.node_port_range = PortRange { first: 0, last: 10 };
        assert_issue(&c, "cluster.node_port_range");
        c.cluster.node_port_range = PortRange {
            first: 32767,
            last: 30000,
        };
        assert_issue(&c, "cluster.node_port_range");
        c.cluster.node_port_range = PortRange {
            first: 80,
            last: 80,
        };
        assert_issue(&c, "cluster.node_port_range");

        for domain in ["", "Cluster.local", "cluster.local.", "a..b", "-x.local"] {
            let mut c = LabConfig::default();
            c.cluster.domain = domain.to_owned();
            assert_issue(&c, "cluster.domain");
        }
    }

    #[test]
    fn config_mtu_range() {
        for (mtu, ok) in [(575, false), (576, true), (9000, true), (9001, false)] {
            let mut c = LabConfig::default();
            c.network.mtu = mtu;
            assert_eq!(c.issues().is_empty(), ok, "mtu {mtu}");
            if !ok {
                assert_issue(&c, "network.mtu");
            }
        }
    }

    #[test]
    fn config_node_pod_cidrs() {
        let mut c = LabConfig::default();
        c.nodes[1].pod_cidr = v4net("172.18.0.0/24");
        assert_issue(&c, "nodes[1].pod_cidr");

        let mut c = LabConfig::default();
        c.nodes[1].pod_cidr = v4net("172.17.32.128/25");
        assert_issue(&c, "nodes[1].pod_cidr");

        let mut c = LabConfig::default();
        c.nodes[1].pod_cidr = v4net("172.17.33.0/29");
        assert_issue(&c, "nodes[1].pod_cidr");

        let mut c = LabConfig::default();
        c.cluster.pod_cidr = v4net("172.0.0.0/12");
        c.cluster.service_cidr = v4net("10.96.0.0/12");
        c.nodes[0].pod_cidr = v4net("172.0.0.0/16");
        c.nodes[1].pod_cidr = v4net("172.2.0.0/15");
        assert_issue(&c, "nodes[1].pod_cidr");
        c.nodes[1].pod_cidr = v4net("172.2.0.0/16");
        c.validate().unwrap();
    }

    #[test]
    fn config_node_count_and_control_plane() {
        let mut c = LabConfig::default();
        c.nodes.clear();
        assert_eq!(fields(&c), vec!["nodes".to_owned()]);

        let mut c = LabConfig {
            nodes: (0..17)
                .map(|i| NodeConfig {
                    name: format!("node{}", i + 1),
                    address: Ipv4Addr::new(10, 4, 7, 11 + i),
                    pod_cidr: Ipv4Net::new(Ipv4Addr::new(172, 17, 32 + i, 0), 24).unwrap(),
                    control_plane: i == 0,
                })
                .collect(),
            ..LabConfig::default()
        };
        assert_eq!(fields(&c), vec!["nodes".to_owned()]);
        c.nodes.pop();
        c.validate().unwrap();

        let mut c = LabConfig::default();
        c.nodes[0].control_plane = false;
        assert_eq!(fields(&c), vec!["nodes".to_owned()]);

        let mut c = LabConfig::default();
        c.nodes[1].control_plane = true;
        assert_eq!(fields(&c), vec!["nodes".to_owned()]);
        assert!(c.issues()[0].problem.contains("node1, node2"));
    }

    #[test]
    fn config_node_addresses() {
        let mut c = LabConfig::default();
        c.nodes[1].address = v4("10.4.8.12");
        assert_eq!(fields(&c), vec!["nodes[1].address".to_owned()]);

        let mut c = LabConfig::default();
        c.nodes[1].address = v4("10.4.7.11");
        assert_eq!(fields(&c), vec!["nodes[1].address".to_owned()]);
        assert!(c.issues()[0].problem.contains("nodes[0].address"));

        let mut c = LabConfig::default();
        c.nodes[1].address = v4("10.4.7.0");
        assert_eq!(fields(&c), vec!["nodes[1].address".to_owned()]);
        assert!(c.issues()[0].problem.contains("network address"));

        let mut c = LabConfig::default();
        c.nodes[1].address = v4("10.4.7.255");
        assert_eq!(fields(&c), vec!["nodes[1].address".to_owned()]);
        assert!(c.issues()[0].problem.contains("broadcast"));
    }

    #[test]
    fn config_host_names() {
        for bad in [
            "",
            "Node1",
            "node_1",
            "-node",
            "node-",
            "a-very-long-name",
            "nödé",
        ] {
            let mut c = LabConfig::default();
            c.nodes[1].name = bad.to_owned();
            assert_eq!(fields(&c), vec!["nodes[1].name".to_owned()], "{bad:?}");
        }
        let mut c = LabConfig::default();
        c.nodes[1].name = "fifteen-chars-x".to_owned();
        c.validate().unwrap();

        let mut c = LabConfig::default();
        c.office.pcs[0].name = "node1".to_owned();
        assert_eq!(fields(&c), vec!["office.pcs[0].name".to_owned()]);

        let mut c = LabConfig::default();
        c.office.pcs[1].name = "pc1".to_owned();
        assert_eq!(fields(&c), vec!["office.pcs[1].name".to_owned()]);

        for reserved in RESERVED_HOST_NAMES {
            let mut c = LabConfig::default();
            c.nodes[1].name = reserved.to_owned();
            assert_eq!(fields(&c), vec!["nodes[1].name".to_owned()], "{reserved}");
        }
    }

    #[test]
    fn config_router_pc_edge_laptop_addresses() {
        type Change = fn(&mut LabConfig);
        let cases: [(&str, Change); 7] = [
            ("office.router_node_address", |c| {
                c.office.router_node_address = v4("172.16.0.2")
            }),
            ("office.router_lan_address", |c| {
                c.office.router_lan_address = v4("10.4.7.2")
            }),
            ("office.pcs[1].address", |c| {
                c.office.pcs[1].address = v4("172.16.64.1")
            }),
            ("edge.node_address", |c| {
                c.edge.node_address = v4("198.51.100.2")
            }),
            ("edge.wan_address", |c| {
                c.edge.wan_address = v4("10.4.7.253")
            }),
            ("laptop.address", |c| {
                c.laptop.address = v4("198.51.100.255")
            }),
            ("laptop.address", |c| c.laptop.address = v4("198.51.100.1")),
        ];
        for (field, change) in cases {
            let mut c = LabConfig::default();
            change(&mut c);
            assert_eq!(fields(&c), vec![field.to_owned()]);
        }
    }

    #[test]
    fn config_users() {
        let mut c = LabConfig::default();
        c.users[0].name = String::new();
        assert_eq!(fields(&c), vec!["users[0].name".to_owned()]);

        let mut c = LabConfig::default();
        c.users[0].name = "system:kube-proxy".to_owned();
        assert_eq!(fields(&c), vec!["users[0].name".to_owned()]);

        let mut c = LabConfig::default();
        c.users.push(c.users[0].clone());
        assert_eq!(fields(&c), vec!["users[1].name".to_owned()]);

        let mut c = LabConfig::default();
        c.users[0].groups = vec!["ok".to_owned(), String::new()];
        assert_eq!(fields(&c), vec!["users[0].groups[1]".to_owned()]);

        let mut c = LabConfig::default();
        c.users.clear();
        c.validate().unwrap();
    }

    #[test]
    fn config_error_display() {
        let error = ConfigError::Invalid(vec![
            ConfigIssue {
                field: "a.b".to_owned(),
                problem: "bad".to_owned(),
                fix: "make it good".to_owned(),
            },
            ConfigIssue {
                field: "c".to_owned(),
                problem: "worse".to_owned(),
                fix: "remove it".to_owned(),
            },
        ]);
        assert_eq!(
            error.to_string(),
            "invalid lab config: 2 problems:\n  a.b: bad (fix: make it good)\n  c: worse (fix: remove it)"
        );
    }

    #[test]
    fn config_port_range_parsing() {
        let range: PortRange = "30000-32767".parse().unwrap();
        assert_eq!(
            range,
            PortRange {
                first: 30000,
                last: 32767
            }
        );
        assert_eq!(range.len(), 2768);
        assert!(range.contains(30000) && range.contains(32767) && !range.contains(32768));
        assert!(!range.is_empty());
        assert!("30000".parse::<PortRange>().is_err());
        assert!("a-b".parse::<PortRange>().is_err());
        assert!("-5".parse::<PortRange>().is_err());
        assert!("1-65536".parse::<PortRange>().is_err());
    }

    #[test]
    fn config_lab_names() {
        for good in ["a", "lab", "my-lab-2", "abcdefghijkl"] {
            validate_lab_name(good).unwrap();
        }
        for bad in [
            "",
            "abcdefghijklm",
            "Lab",
            "2lab",
            "-lab",
            "my_lab",
            "lab.1",
            "läb",
        ] {
            let error = validate_lab_name(bad).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidLabName { .. }),
                "{bad:?}: {error:?}"
            );
            assert!(error.to_string().contains("fix:"), "{error}");
        }
    }
}
