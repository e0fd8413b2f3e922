//! `--bgp`: instead of static routes, the office router learns the cluster's routes from
//! the nodes by BGP (Calico in BGP mode).
//!
//! The cluster side keeps Calico's node-to-node mesh (`nodeToNodeMeshEnabled: true`) and
//! adds the office router as one more peer: a global `BGPPeer` (every node peers with it)
//! or one limited by a `nodeSelector`. The nodes advertise their pod address blocks and,
//! through `serviceClusterIPs`, the Service network, so ClusterIPs are reachable too
//! (spread over the nodes when the router does multipath). The router side is eBGP
//! (cluster AS 64512, router AS 64513 by default), accepts only routes inside the
//! cluster's prefixes and advertises nothing back to the nodes.
//!
//! Router configurations are IPv4 only; IPv6 prefixes and neighbors are named in a
//! comment as left out. The Calico manifests carry both families.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::format::BgpFormat;
use crate::input::{ClusterPrefix, PrefixKind, comment_text};
use crate::plan::covering;
use crate::render::Out;
use crate::warnings::Warning;

/// The cluster's AS number unless told otherwise (Calico's default too).
pub const DEFAULT_CLUSTER_AS: u32 = 64512;
/// The office router's AS number unless told otherwise.
pub const DEFAULT_ROUTER_AS: u32 = 64513;

/// A node the router peers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpNeighbor {
    /// The node's name, when known.
    pub name: Option<String>,
    /// Its address (a node InternalIP).
    pub ip: IpAddr,
}

/// The router's neighbours for nodes given as `(name, InternalIPs)`: each node's first
/// IPv4 InternalIP, else its first; a note names each node without one.
pub fn neighbors_of_nodes(
    nodes: impl IntoIterator<Item = (String, Vec<IpAddr>)>,
    notes: &mut Vec<String>,
) -> Vec<BgpNeighbor> {
    let mut out = Vec::new();
    for (name, internal) in nodes {
        let ip = internal
            .iter()
            .find(|ip| ip.is_ipv4())
            .or(internal.first())
            .copied();
        match ip {
            Some(ip) => out.push(BgpNeighbor {
                name: Some(name),
                ip,
            }),
            None => notes.push(format!(
                "node {name} has no InternalIP; pass --bgp-neighbor with its address"
            )),
        }
    }
    out
}

/// What reading the cluster's Calico `BGPConfiguration` "default" gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalicoConfig {
    /// It exists: its `asNumber` and `nodeToNodeMeshEnabled`, when set.
    Found {
        /// `spec.asNumber`.
        as_number: Option<u32>,
        /// `spec.nodeToNodeMeshEnabled`.
        node_to_node_mesh: Option<bool>,
    },
    /// There is none (or no Calico API).
    Missing,
    /// It could not be read: why.
    Unreadable(String),
}

/// The cluster's AS when `--cluster-as` is not given: Calico's, else
/// [`DEFAULT_CLUSTER_AS`]; the notes say where it came from, and that the manifest turns
/// a disabled node-to-node mesh on.
pub fn cluster_as_from_calico(config: &CalicoConfig, notes: &mut Vec<String>) -> u32 {
    match config {
        CalicoConfig::Found {
            as_number,
            node_to_node_mesh,
        } => {
            if *node_to_node_mesh == Some(false) {
                notes.push(
                    "the cluster's BGPConfiguration has nodeToNodeMeshEnabled: false (route reflectors?); the manifest sets it to true: drop that line to keep your topology".into(),
                );
            }
            match as_number {
                Some(a) => {
                    notes.push(format!(
                        "cluster AS {a} from the cluster's Calico BGPConfiguration \"default\""
                    ));
                    *a
                }
                None => DEFAULT_CLUSTER_AS,
            }
        }
        CalicoConfig::Missing => {
            notes.push(format!(
                "no Calico BGPConfiguration \"default\" found (--bgp needs Calico in BGP mode); cluster AS {DEFAULT_CLUSTER_AS} assumed (--cluster-as)"
            ));
            DEFAULT_CLUSTER_AS
        }
        CalicoConfig::Unreadable(e) => {
            notes.push(format!(
                "the Calico BGPConfiguration could not be read ({e}); cluster AS {DEFAULT_CLUSTER_AS} assumed (--cluster-as)"
            ));
            DEFAULT_CLUSTER_AS
        }
    }
}

/// Everything the BGP formats are rendered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpInput {
    /// The cluster's Pod and Service prefixes (the router accepts routes inside them; the
    /// Service ones become Calico's `serviceClusterIPs`).
    pub prefixes: Vec<ClusterPrefix>,
    /// The nodes' AS number.
    pub cluster_as: u32,
    /// The office router's AS number.
    pub router_as: u32,
    /// The office router's address the nodes peer with (Calico's `peerIP`).
    pub router_ip: Option<IpAddr>,
    /// The nodes the router peers with.
    pub neighbors: Vec<BgpNeighbor>,
    /// A Calico selector limiting which nodes peer with the router (see
    /// [`calico_selector`]); `None`: every node.
    pub node_selector: Option<String>,
}

impl BgpInput {
    /// The IPv4 prefixes the router accepts routes inside (without covered ones).
    fn v4_prefixes(&self) -> Vec<IpNet> {
        self.uncovered()
            .map(|p| p.net.trunc())
            .filter(|n| matches!(n, IpNet::V4(_)))
            .collect()
    }

    /// The prefixes no other one covers.
    fn uncovered(&self) -> impl Iterator<Item = &ClusterPrefix> {
        self.prefixes
            .iter()
            .enumerate()
            .filter(|(i, _)| covering(&self.prefixes, *i).is_none())
            .map(|(_, p)| p)
    }

    fn v4_neighbors(&self) -> Vec<&BgpNeighbor> {
        self.neighbors.iter().filter(|n| n.ip.is_ipv4()).collect()
    }
}

/// Whether `asn` can be used on a BGP session (not 0, 23456, 65535 or 4294967295).
pub fn usable_as(asn: u32) -> bool {
    !matches!(asn, 0 | 23456 | 65535 | 4_294_967_295)
}

/// What is wrong or left out in `input`.
pub fn bgp_warnings(input: &BgpInput) -> Vec<Warning> {
    let mut out = Vec::new();
    if input.cluster_as == input.router_as {
        out.push(Warning::BgpSameAs {
            asn: input.cluster_as,
        });
    }
    for asn in [input.cluster_as, input.router_as] {
        if !usable_as(asn) {
            out.push(Warning::BgpUnusableAs { asn });
        }
    }
    if input.router_ip.is_none() {
        out.push(Warning::BgpNoRouterIp);
    }
    if input.v4_neighbors().is_empty() {
        out.push(Warning::BgpNoNeighbors);
    }
    let mut v6: Vec<String> = input
        .prefixes
        .iter()
        .filter(|p| p.net.addr().is_ipv6())
        .map(|p| p.net.trunc().to_string())
        .collect();
    v6.extend(
        input
            .neighbors
            .iter()
            .filter(|n| n.ip.is_ipv6())
            .map(|n| format!("neighbor {}", n.ip)),
    );
    if !v6.is_empty() {
        out.push(Warning::BgpIpv6LeftOut { what: v6 });
    }
    out
}

/// Renders `input` in `format`.
pub fn render_bgp(format: BgpFormat, input: &BgpInput) -> String {
    let mut out = Out::default();
    match format {
        BgpFormat::Calico => calico(&mut out, input),
        BgpFormat::CiscoIos => cisco(&mut out, input),
        BgpFormat::Frr => frr(&mut out, input),
        BgpFormat::Mikrotik => mikrotik(&mut out, input),
        BgpFormat::Junos => junos(&mut out, input),
    }
    out.into_string()
}

/// A double-quoted YAML string.
fn yaml_string(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => q.push(' '),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn calico(out: &mut Out, input: &BgpInput) {
    let Some(router) = input.router_ip else {
        out.line("# kubelan: the Calico peer needs the office router's address: pass --router-ip");
        return;
    };
    out.line(format!(
        "# kubelan: the office router {router} (AS {}) learns the cluster's routes from the nodes (AS {}) by BGP",
        input.router_as, input.cluster_as
    ));
    match &input.node_selector {
        Some(sel) => out.line(format!(
            "# the node-to-node mesh stays on; nodes matching {} also peer with the router",
            comment_text(sel)
        )),
        None => out.line(
            "# the node-to-node mesh stays on; every node also peers with the router (a global BGPPeer)",
        ),
    }
    out.line("# if a BGPConfiguration \"default\" exists, merge these fields into it: applying replaces it");
    out.line("# apply with: calicoctl apply -f FILE (or kubectl apply -f FILE with the Calico API server)");
    out.line("apiVersion: projectcalico.org/v3");
    out.line("kind: BGPConfiguration");
    out.line("metadata:");
    out.line("  name: default");
    out.line("spec:");
    out.line("  nodeToNodeMeshEnabled: true");
    out.line(format!("  asNumber: {}", input.cluster_as));
    let services: Vec<IpNet> = input
        .uncovered()
        .filter(|p| p.kind == PrefixKind::Services)
        .map(|p| p.net.trunc())
        .collect();
    if !services.is_empty() {
        out.line("  serviceClusterIPs:");
        for s in &services {
            out.line(format!("  - cidr: {s}"));
        }
    }
    out.line("---");
    out.line("apiVersion: projectcalico.org/v3");
    out.line("kind: BGPPeer");
    out.line("metadata:");
    out.line("  name: kubelan-office-router");
    out.line("spec:");
    out.line(format!("  peerIP: {router}"));
    out.line(format!("  asNumber: {}", input.router_as));
    if let Some(sel) = &input.node_selector {
        out.line(format!("  nodeSelector: {}", yaml_string(sel)));
    }
}

/// A name made of letters, digits, `.`, `_` and `-` only.
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn neighbor_name(n: &BgpNeighbor) -> String {
    match &n.name {
        Some(name) if !name.is_empty() => plain(name),
        _ => plain(&n.ip.to_string()),
    }
}

/// The shared preamble of the router formats; false when there is nothing to configure.
fn router_preamble(out: &mut Out, c: &str, input: &BgpInput, filters: &str, how: &str) -> bool {
    out.line(format!(
        "{c} kubelan: learn the cluster's routes from its nodes by BGP: this router AS {}, the nodes AS {}",
        input.router_as, input.cluster_as
    ));
    let neighbors = input.v4_neighbors();
    for n in &neighbors {
        out.line(format!(
            "{c}   {:<15}  {}",
            n.ip.to_string(),
            n.name.as_deref().map(comment_text).unwrap_or_default()
        ));
    }
    let left_out: Vec<String> = input
        .prefixes
        .iter()
        .filter(|p| p.net.addr().is_ipv6())
        .map(|p| p.net.trunc().to_string())
        .chain(
            input
                .neighbors
                .iter()
                .filter(|n| n.ip.is_ipv6())
                .map(|n| format!("neighbor {}", n.ip)),
        )
        .collect();
    if !left_out.is_empty() {
        out.line(format!("{c} IPv4 only; left out: {}", left_out.join(", ")));
    }
    if neighbors.is_empty() {
        out.line(format!(
            "{c} no IPv4 node address to peer with: pass --bgp-neighbor IP"
        ));
        return false;
    }
    if input.v4_prefixes().is_empty() {
        out.line(format!("{c} no IPv4 cluster prefix to accept routes for"));
        return false;
    }
    out.line(format!("{c} {filters}"));
    out.line(format!("{c} {how}"));
    true
}

/// What the router formats that filter both ways say about it.
const BOTH_WAYS: &str =
    "accepts only routes inside the cluster's prefixes and advertises nothing to the nodes";

/// `ip prefix-list` lines (Cisco and FRR share the syntax).
fn prefix_list(out: &mut Out, input: &BgpInput) {
    for (i, n) in input.v4_prefixes().iter().enumerate() {
        let le = if n.prefix_len() < 32 { " le 32" } else { "" };
        out.line(format!(
            "ip prefix-list KUBELAN-CLUSTER seq {} permit {n}{le}",
            (i + 1) * 5
        ));
    }
}

fn cisco(out: &mut Out, input: &BgpInput) {
    if !router_preamble(
        out,
        "!",
        input,
        BOTH_WAYS,
        "in privileged EXEC mode; if this router runs BGP already, pass its AS with --router-as",
    ) {
        return;
    }
    out.line("configure terminal");
    prefix_list(out, input);
    out.line("route-map KUBELAN-IN permit 10");
    out.line(" match ip address prefix-list KUBELAN-CLUSTER");
    out.line("route-map KUBELAN-OUT deny 10");
    out.line(format!("router bgp {}", input.router_as));
    out.line(" neighbor KUBELAN peer-group");
    out.line(format!(" neighbor KUBELAN remote-as {}", input.cluster_as));
    for n in input.v4_neighbors() {
        out.line(format!(" neighbor {} peer-group KUBELAN", n.ip));
        out.line(format!(
            " neighbor {} description kubelan {}",
            n.ip,
            neighbor_name(n)
        ));
    }
    out.line(" address-family ipv4 unicast");
    out.line("  neighbor KUBELAN activate");
    out.line("  neighbor KUBELAN route-map KUBELAN-IN in");
    out.line("  neighbor KUBELAN route-map KUBELAN-OUT out");
    out.line("  maximum-paths 8");
    out.line(" exit-address-family");
    out.line("end");
    out.line("write memory");
}

fn frr(out: &mut Out, input: &BgpInput) {
    if !router_preamble(
        out,
        "!",
        input,
        BOTH_WAYS,
        "in vtysh, with bgpd=yes in /etc/frr/daemons; if bgpd runs already, pass its AS with --router-as",
    ) {
        return;
    }
    out.line("configure terminal");
    prefix_list(out, input);
    out.line("route-map KUBELAN-IN permit 10");
    out.line(" match ip address prefix-list KUBELAN-CLUSTER");
    out.line("exit");
    out.line("route-map KUBELAN-OUT deny 10");
    out.line("exit");
    out.line(format!("router bgp {}", input.router_as));
    out.line(" neighbor KUBELAN peer-group");
    out.line(format!(" neighbor KUBELAN remote-as {}", input.cluster_as));
    for n in input.v4_neighbors() {
        out.line(format!(" neighbor {} peer-group KUBELAN", n.ip));
        out.line(format!(
            " neighbor {} description kubelan {}",
            n.ip,
            neighbor_name(n)
        ));
    }
    out.line(" address-family ipv4 unicast");
    out.line("  neighbor KUBELAN route-map KUBELAN-IN in");
    out.line("  neighbor KUBELAN route-map KUBELAN-OUT out");
    out.line("  maximum-paths 8");
    out.line(" exit-address-family");
    out.line("exit");
    out.line("end");
    out.line("write memory");
}

fn mikrotik(out: &mut Out, input: &BgpInput) {
    if !router_preamble(
        out,
        "#",
        input,
        "accepts only routes inside the cluster's prefixes (a connection advertises nothing unless output.redistribute says so)",
        "in a RouterOS v7 terminal",
    ) {
        return;
    }
    for n in input.v4_prefixes() {
        out.line(format!(
            "/routing filter rule add chain=kubelan-in rule=\"if (dst in {n}) {{ accept }}\""
        ));
    }
    out.line("/routing filter rule add chain=kubelan-in rule=\"reject\"");
    for n in input.v4_neighbors() {
        out.line(format!(
            "/routing bgp connection add name=kubelan-{} as={} remote.address={} remote.as={} local.role=ebgp input.filter=kubelan-in",
            neighbor_name(n),
            input.router_as,
            n.ip,
            input.cluster_as
        ));
    }
}

fn junos(out: &mut Out, input: &BgpInput) {
    if !router_preamble(
        out,
        "#",
        input,
        BOTH_WAYS,
        "in operational mode; if this router has an AS already, pass it with --router-as",
    ) {
        return;
    }
    out.line("configure");
    out.line(format!(
        "set routing-options autonomous-system {}",
        input.router_as
    ));
    for n in input.v4_prefixes() {
        out.line(format!(
            "set policy-options prefix-list kubelan-cluster {n}"
        ));
    }
    out.line("set policy-options policy-statement kubelan-in term cluster from prefix-list-filter kubelan-cluster orlonger");
    out.line("set policy-options policy-statement kubelan-in term cluster then accept");
    out.line("set policy-options policy-statement kubelan-in then reject");
    out.line("set policy-options policy-statement kubelan-out then reject");
    out.line("set protocols bgp group kubelan type external");
    out.line(format!(
        "set protocols bgp group kubelan peer-as {}",
        input.cluster_as
    ));
    out.line("set protocols bgp group kubelan import kubelan-in");
    out.line("set protocols bgp group kubelan export kubelan-out");
    out.line("set protocols bgp group kubelan multipath");
    for n in input.v4_neighbors() {
        out.line(format!(
            "set protocols bgp group kubelan neighbor {} description \"kubelan {}\"",
            n.ip,
            neighbor_name(n)
        ));
    }
    out.line("commit and-quit");
}

/// A Kubernetes label selector that cannot be turned into a Calico selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Nothing was given.
    #[error(
        "the node selector is empty; give one like kubelan/bgp=true, or leave it out to peer with every node"
    )]
    Empty,
    /// A term of an unknown shape.
    #[error(
        "cannot read {term:?} in the node selector: use key=value, key!=value, key, !key, key in (a,b) or key notin (a,b), separated by commas"
    )]
    Term {
        /// The term.
        term: String,
    },
    /// A key or value with characters labels cannot have.
    #[error(
        "{text:?} in the node selector is not a label key or value (letters, digits, '-', '_', '.'; one '/' in a key)"
    )]
    Invalid {
        /// The key or value.
        text: String,
    },
}

fn label_key(k: &str) -> Result<&str, SelectorError> {
    let ok = !k.is_empty()
        && k.len() <= 316
        && k.matches('/').count() <= 1
        && !k.starts_with('/')
        && !k.ends_with('/')
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(k)
    } else {
        Err(SelectorError::Invalid { text: k.into() })
    }
}

fn label_value(v: &str) -> Result<&str, SelectorError> {
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(v)
    } else {
        Err(SelectorError::Invalid { text: v.into() })
    }
}

/// Splits at commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Translates a Kubernetes label selector (what `kubectl get nodes -l` takes, e.g.
/// `kubelan/bgp=true,zone in (a,b)`) into Calico's selector syntax for a `BGPPeer`'s
/// `nodeSelector` (`kubelan/bgp == 'true' && zone in { 'a', 'b' }`). Calico's node
/// resources carry the Kubernetes nodes' labels, so both select the same nodes.
///
/// # Errors
/// [`SelectorError`] for an empty selector, a term of another shape, or a key or value
/// with characters labels cannot have.
pub fn calico_selector(selector: &str) -> Result<String, SelectorError> {
    if selector.trim().is_empty() {
        return Err(SelectorError::Empty);
    }
    let mut out = Vec::new();
    for term in terms(selector) {
        let t = term.trim();
        let bad = || SelectorError::Term { term: t.into() };
        if let Some(open) = t.find('(') {
            let inner = t[open + 1..].strip_suffix(')').ok_or_else(bad)?;
            let head: Vec<&str> = t[..open].split_whitespace().collect();
            let [key, op] = head[..] else {
                return Err(bad());
            };
            let key = label_key(key)?;
            let values = inner
                .split(',')
                .map(|v| label_value(v.trim()).map(|v| format!("'{v}'")))
                .collect::<Result<Vec<_>, _>>()?;
            let set = format!("{{ {} }}", values.join(", "));
            match op {
                "in" => out.push(format!("{key} in {set}")),
                "notin" => out.push(format!("{key} not in {set}")),
                _ => return Err(bad()),
            }
        } else if let Some((k, v)) = t.split_once("!=") {
            out.push(format!(
                "{} != '{}'",
                label_key(k.trim())?,
                label_value(v.trim())?
            ));
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            out.push(format!(
                "{} == '{}'",
                label_key(k.trim())?,
                label_value(v.trim())?
            ));
        } else if let Some(k) = t.strip_prefix('!') {
            out.push(format!("!has({})", label_key(k.trim())?));
        } else if t.contains(char::is_whitespace) {
            return Err(bad());
        } else {
            out.push(format!("has({})", label_key(t)?));
        }
    }
    Ok(out.join(" && "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_neighbor_per_node_ipv4_first() {
        let mut notes = Vec::new();
        let n = neighbors_of_nodes(
            [
                (
                    "node1".to_string(),
                    vec!["fd00::11".parse().unwrap(), "10.4.7.11".parse().unwrap()],
                ),
                ("node2".to_string(), vec!["fd00::12".parse().unwrap()]),
                ("node3".to_string(), vec![]),
            ],
            &mut notes,
        );
        let got: Vec<String> = n.iter().map(|n| n.ip.to_string()).collect();
        assert_eq!(got, ["10.4.7.11", "fd00::12"]);
        assert_eq!(
            notes,
            ["node node3 has no InternalIP; pass --bgp-neighbor with its address"]
        );
    }

    #[test]
    fn the_cluster_as_comes_from_calico_else_the_default_with_a_note() {
        let mut notes = Vec::new();
        let found = CalicoConfig::Found {
            as_number: Some(64600),
            node_to_node_mesh: Some(false),
        };
        assert_eq!(cluster_as_from_calico(&found, &mut notes), 64600);
        assert_eq!(notes.len(), 2);
        assert!(
            notes[0].contains("nodeToNodeMeshEnabled: false"),
            "{notes:?}"
        );
        notes.clear();
        assert_eq!(
            cluster_as_from_calico(&CalicoConfig::Missing, &mut notes),
            DEFAULT_CLUSTER_AS
        );
        assert!(
            notes[0].starts_with("no Calico BGPConfiguration"),
            "{notes:?}"
        );
        notes.clear();
        let unreadable = CalicoConfig::Unreadable("forbidden".into());
        assert_eq!(
            cluster_as_from_calico(&unreadable, &mut notes),
            DEFAULT_CLUSTER_AS
        );
        assert!(notes[0].contains("(forbidden)"), "{notes:?}");
        let bare = CalicoConfig::Found {
            as_number: None,
            node_to_node_mesh: None,
        };
        notes.clear();
        assert_eq!(
            cluster_as_from_calico(&bare, &mut notes),
            DEFAULT_CLUSTER_AS
        );
        assert!(notes.is_empty());
    }

    use super::*;

    #[test]
    fn selectors() {
        let cases = [
            ("kubelan/bgp=true", "kubelan/bgp == 'true'"),
            ("rack==a", "rack == 'a'"),
            ("rack != a", "rack != 'a'"),
            ("bgp", "has(bgp)"),
            ("!bgp", "!has(bgp)"),
            (
                "topology.kubernetes.io/zone in (a, b),role notin (gpu)",
                "topology.kubernetes.io/zone in { 'a', 'b' } && role not in { 'gpu' }",
            ),
            ("env=", "env == ''"),
        ];
        for (k8s, calico) in cases {
            assert_eq!(calico_selector(k8s).as_deref(), Ok(calico), "{k8s}");
        }
        assert_eq!(calico_selector(" "), Err(SelectorError::Empty));
        for bad in [
            "a=b'c", "a in b", "a (b)", "a in (b", "x y", "a=\"b\"", "a/b/c=d", ",",
        ] {
            assert!(calico_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn same_as_and_missing_router_are_warned() {
        let input = BgpInput {
            prefixes: vec![ClusterPrefix::new(
                "fd00::/64".parse().unwrap(),
                PrefixKind::Pods,
                "x",
            )],
            cluster_as: 65000,
            router_as: 65000,
            router_ip: None,
            neighbors: vec![],
            node_selector: None,
        };
        let w = bgp_warnings(&input);
        assert!(w.contains(&Warning::BgpSameAs { asn: 65000 }));
        assert!(w.contains(&Warning::BgpNoRouterIp));
        assert!(w.contains(&Warning::BgpNoNeighbors));
        assert!(w.contains(&Warning::BgpIpv6LeftOut {
            what: vec!["fd00::/64".into()]
        }));
        for f in BgpFormat::all() {
            let out = render_bgp(*f, &input);
            assert!(
                out.lines()
                    .all(|l| l.starts_with('#') || l.starts_with('!')),
                "{f}: {out}"
            );
        }
    }
}
