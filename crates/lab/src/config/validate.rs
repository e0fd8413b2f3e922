//! Checking a parsed configuration as a whole: every problem at once, each naming the field
//! and the fix.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::error::{ConfigError, ConfigIssue};
use super::{
    ClusterConfig, KUBERNETES_MINORS, LabConfig, MAX_HOST_NAME_LEN, MAX_LAB_NAME_LEN, MAX_MTU,
    MAX_NODES, MIN_MTU, NODE_POD_PREFIXES, RESERVED_HOST_NAMES, SERVICE_PREFIXES, UserConfig,
};

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

impl LabConfig {
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
