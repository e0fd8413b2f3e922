//! The lab's kube-proxy: Service load balancing as nftables rules in a node's network
//! namespace.
//!
//! [`ruleset`] is a pure function from Services, EndpointSlices and a few node facts to a
//! complete `nft` script; [`apply`] loads such a script inside a network namespace. The
//! script owns exactly one table, `table ip kube-proxy` (the name the real nftables
//! kube-proxy uses), and replaces it atomically: it declares the table, deletes it and
//! defines it again, all in one `nft -f` transaction, so packets never see a half-built
//! table and nothing from an older version survives. Connections that are already
//! tracked keep their NAT bindings across a replacement (they live in conntrack, not in
//! the table).
//!
//! # Layout
//!
//! The structure follows the upstream nftables proxier (`pkg/proxy/nftables`):
//!
//! * base chains `nat-prerouting` (hook prerouting, priority -100 = dstnat: traffic that
//!   enters the node, from pods or other hosts) and `nat-output` (hook output, -100:
//!   processes on the node itself) both jump to `services`;
//! * `services` looks up `ip daddr . meta l4proto . th dport` in the verdict map
//!   `service-ips` (ClusterIPs, external IPs, load-balancer IPs), and
//!   `meta l4proto . th dport` in `service-nodeports` when the destination is in the set
//!   `nodeport-ips` (the node's own addresses);
//! * one `service-…` chain per Service port marks traffic for masquerade when its source
//!   lies outside the Pod CIDR, then picks an endpoint with
//!   `numgen random mod N vmap { 0 : goto endpoint-…, … }`;
//! * one `external-…` chain per Service port that has a NodePort (or external IPs) always
//!   marks for masquerade and continues in the `service-…` chain;
//! * one `endpoint-…` chain per endpoint marks hairpin traffic (source = the endpoint
//!   itself) and does `dnat to IP:port`;
//! * `nat-postrouting` (hook postrouting, priority 100 = srcnat) jumps to `masquerading`,
//!   which masquerades packets carrying the mark bit [`MASQUERADE_MARK`] (and clears it);
//! * Service ports without ready endpoints are listed in `no-endpoint-services` /
//!   `no-endpoint-nodeports`, checked for new connections from filter chains on the
//!   input, forward and output hooks (priority -110, before DNAT) and sent to
//!   `reject-chain` (TCP reset, ICMP port unreachable otherwise), so clients fail at once
//!   instead of waiting for a timeout;
//! * ports of a ClusterIP that no Service defines are rejected too (set `cluster-ips`,
//!   checked after DNAT on the forward hook and on the output hook at priority -90).
//!
//! Names: a Service port chain is `service-HASH-<ns>/<name>/<proto>/<port name>`, an
//! endpoint chain `endpoint-HASH-<ns>/<name>/<proto>/<port name>__<ip>/<port>`, where
//! `HASH` is eight base32 characters of a hash of the rest (so names stay unique and
//! visually distinct even if an odd character had to be replaced).
//!
//! ```text
//! table ip kube-proxy
//! delete table ip kube-proxy
//! table ip kube-proxy {
//!     map service-ips {
//!         type ipv4_addr . inet_proto . inet_service : verdict
//!         elements = { 172.17.16.50 . tcp . 80 : goto service-…-default/web/tcp/http }
//!     }
//!     …
//!     chain service-…-default/web/tcp/http {
//!         ip daddr 172.17.16.50 tcp dport 80 ip saddr != 172.17.32.0/19 jump mark-for-masquerade
//!         numgen random mod 2 vmap { 0 : goto endpoint-…, 1 : goto endpoint-… }
//!     }
//!     chain endpoint-…-default/web/tcp/http__172.17.33.10/8080 {
//!         ip saddr 172.17.33.10 jump mark-for-masquerade
//!         meta l4proto tcp dnat to 172.17.33.10:8080
//!     }
//! }
//! ```
//!
//! # Semantics and limits
//!
//! * Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name` in the
//!   Service's namespace, of address type `IPv4`; an endpoint counts when its `ready`
//!   condition is true or unset, and its first address is used (the API says all
//!   addresses of an endpoint are interchangeable). A slice port is matched to a Service
//!   port by name and protocol; its number is the target port. Duplicates across slices
//!   are merged.
//! * TCP and UDP only (SCTP ports are skipped); IPv4 only (IPv6 cluster IPs, slices and
//!   addresses are skipped). Headless and ExternalName Services get no rules.
//! * NodePorts (types NodePort and LoadBalancer) answer on the addresses in
//!   [`ProxyInput::node_ips`]. As upstream, `127.0.0.1:<nodePort>` is not served.
//! * Not implemented: traffic policies (`Local` is treated as `Cluster`), session
//!   affinity, `loadBalancerSourceRanges`, the fallback to serving-but-terminating
//!   endpoints, and flushing stale UDP conntrack entries when endpoints change.
//! * The routing decision for a node-local process happens before the `output` hook, so
//!   `curl <ClusterIP>` on a node works only if the node has some route covering the
//!   Service CIDR (normally its default route). Likewise, for traffic forwarded through a
//!   node the reject for Services without endpoints happens on the forward hook, which a
//!   packet reaches only if the node can route the ClusterIP; without such a route the
//!   kernel answers "unreachable" itself, which fails just as fast.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubelan_sys::{Namespaces, enter_on_spawn};
use tokio::io::AsyncWriteExt as _;

/// The nftables table this module owns (family `ip`).
pub const TABLE: &str = "kube-proxy";

/// The packet mark bit that asks the `masquerading` chain to masquerade a packet (bit 14,
/// kube-proxy's default `--masquerade-bit`).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How long `nft` may take before [`apply`] gives up and kills it.
const NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest chain name we generate (the kernel allows 255 bytes).
const CHAIN_NAME_MAX: usize = 200;

/// Everything [`ruleset`] needs to know about one node and the cluster.
#[derive(Debug, Clone)]
pub struct ProxyInput<'a> {
    /// This node's own addresses: NodePort traffic is accepted on these.
    pub node_ips: Vec<Ipv4Addr>,
    /// The Pod CIDR: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// Masquerade ClusterIP traffic whose source lies outside [`Self::cluster_cidr`].
    /// `false` reproduces the lab's "seed 001" fault: such traffic keeps its source
    /// address, so replies from endpoints on other nodes bypass this node's NAT.
    pub masquerade_external: bool,
    /// All Services of the cluster.
    pub services: &'a [Service],
    /// All EndpointSlices of the cluster.
    pub slices: &'a [EndpointSlice],
}

/// Failure to load a ruleset with [`apply`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The network namespace could not be opened or prepared for entering.
    #[error("kube-proxy: cannot use network namespace: {0}")]
    Namespace(#[from] kubelan_sys::Error),
    /// `nft` could not be started or talked to.
    #[error("kube-proxy: cannot run nft (is nftables installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` rejected the script; nothing was changed (the script is one transaction).
    #[error("kube-proxy: nft failed in {netns} ({status}): {stderr}")]
    Nft {
        /// The network namespace.
        netns: PathBuf,
        /// How `nft` exited.
        status: String,
        /// What `nft` printed on standard error.
        stderr: String,
    },
    /// `nft` did not finish in time and was killed.
    #[error("kube-proxy: nft did not finish within {0:?} in {1}")]
    Timeout(Duration, PathBuf),
}

/// Transport protocols we proxy (ordered so that output is sorted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The Kubernetes protocol name (`None` means TCP); other protocols are skipped.
    fn parse(protocol: Option<&str>) -> Option<Self> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            _ => None,
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One Service port, resolved to what the rules need.
#[derive(Debug)]
struct SvcPort<'a> {
    namespace: &'a str,
    name: &'a str,
    port_name: &'a str,
    proto: Proto,
    cluster_ip: Ipv4Addr,
    port: u16,
    node_port: Option<u16>,
    /// External IPs and load-balancer ingress IPs (external traffic, always masqueraded).
    external_ips: Vec<Ipv4Addr>,
    /// Ready endpoints as (address, target port), sorted and without duplicates.
    endpoints: Vec<(Ipv4Addr, u16)>,
}

/// A valid, non-zero port number.
fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// The namespace of an object (objects read from the API always have one).
fn namespace_of(ns: Option<&String>) -> &str {
    ns.map_or("default", String::as_str)
}

/// Builds the complete `nft` script for one node: it replaces `table ip kube-proxy` in one
/// transaction. The output only depends on the input's content, not its order.
pub fn ruleset(input: &ProxyInput) -> String {
    let ports = service_ports(input);
    render(input, &ports)
}

/// The script that removes the table (and succeeds when it does not exist).
pub fn remove_script() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Resolves Services and their EndpointSlices into sorted Service ports.
fn service_ports<'a>(input: &ProxyInput<'a>) -> Vec<SvcPort<'a>> {
    // Index the slices once: (namespace, service name) -> slices.
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in input.slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = namespace_of(slice.metadata.namespace.as_ref());
        slices_of
            .entry((ns, service.as_str()))
            .or_default()
            .push(slice);
    }

    let mut out = Vec::new();
    for svc in input.services {
        let (Some(name), Some(spec)) = (svc.metadata.name.as_deref(), svc.spec.as_ref()) else {
            continue;
        };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            continue;
        }
        // The IPv4 cluster IP, if any ("None" = headless and "" = not allocated both fail
        // to parse and are skipped).
        let cluster_ip = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .find_map(|ip| ip.parse::<Ipv4Addr>().ok());
        let Some(cluster_ip) = cluster_ip else {
            continue;
        };
        let has_node_ports = matches!(kind, "NodePort" | "LoadBalancer");
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if kind == "LoadBalancer" {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            external_ips.extend(
                ingress
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
            );
        }
        external_ips.sort_unstable();
        external_ips.dedup();

        let namespace = namespace_of(svc.metadata.namespace.as_ref());
        let slices = slices_of
            .get(&(namespace, name))
            .map_or(&[][..], Vec::as_slice);
        for sp in spec.ports.iter().flatten() {
            let (Some(proto), Some(port)) =
                (Proto::parse(sp.protocol.as_deref()), port_number(sp.port))
            else {
                continue;
            };
            out.push(SvcPort {
                namespace,
                name,
                port_name: sp.name.as_deref().unwrap_or(""),
                proto,
                cluster_ip,
                port,
                node_port: sp
                    .node_port
                    .filter(|_| has_node_ports)
                    .and_then(port_number),
                external_ips: external_ips.clone(),
                endpoints: ready_endpoints(sp, proto, slices),
            });
        }
    }
    out.sort_by(|a, b| {
        (a.namespace, a.name, a.proto, a.port_name, a.port).cmp(&(
            b.namespace,
            b.name,
            b.proto,
            b.port_name,
            b.port,
        ))
    });
    out
}

/// The ready endpoints of one Service port: (first address, target port) from every
/// slice port whose name and protocol match.
fn ready_endpoints(
    sp: &ServicePort,
    proto: Proto,
    slices: &[&EndpointSlice],
) -> Vec<(Ipv4Addr, u16)> {
    let wanted = sp.name.as_deref().unwrap_or("");
    let mut endpoints = BTreeSet::new();
    for slice in slices {
        let target = slice.ports.iter().flatten().find_map(|p| {
            (p.name.as_deref().unwrap_or("") == wanted
                && Proto::parse(p.protocol.as_deref()) == Some(proto))
            .then_some(p.port)
            .flatten()
            .and_then(port_number)
        });
        let Some(target) = target else {
            continue;
        };
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            if let Some(ip) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            {
                endpoints.insert((ip, target));
            }
        }
    }
    endpoints.into_iter().collect()
}

/// Eight base32 characters of a 64-bit FNV-1a hash of `s`.
fn short_hash(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..8)
        .map(|i| char::from(ALPHABET[((h >> (i * 5)) & 31) as usize]))
        .collect()
}

/// `<prefix>HASH-<base>`, with characters nft does not accept in a name replaced by `_`
/// and the result capped in length. The hash covers the original `base`.
fn chain_name(prefix: &str, base: &str) -> String {
    let mut name = format!("{prefix}{}-", short_hash(base));
    name.extend(base.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') {
            c
        } else {
            '_'
        }
    }));
    if name.len() > CHAIN_NAME_MAX {
        // Only ASCII is left, so any byte index is a character boundary.
        name.truncate(CHAIN_NAME_MAX - 3);
        name.push_str("...");
    }
    name
}

impl SvcPort<'_> {
    fn base(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.proto.nft(),
            self.port_name
        )
    }

    fn service_chain(&self) -> String {
        chain_name("service-", &self.base())
    }

    fn external_chain(&self) -> String {
        chain_name("external-", &self.base())
    }

    fn endpoint_chain(&self, ip: Ipv4Addr, port: u16) -> String {
        chain_name("endpoint-", &format!("{}__{ip}/{port}", self.base()))
    }

    fn uses_external_chain(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// Writes a named set or map with its (already sorted) elements.
fn write_collection(
    out: &mut String,
    kind: &str,
    name: &str,
    ty: &str,
    elements: impl Iterator<Item = String>,
) {
    let _ = writeln!(out, "\t{kind} {name} {{\n\t\ttype {ty}");
    let elements: Vec<String> = elements.collect();
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
    }
    out.push_str("\t}\n");
}

/// Writes a chain with its rules.
fn write_chain<S: AsRef<str>>(out: &mut String, name: &str, rules: &[S]) {
    let _ = writeln!(out, "\tchain {name} {{");
    for rule in rules {
        let _ = writeln!(out, "\t\t{}", rule.as_ref());
    }
    out.push_str("\t}\n");
}

fn render(input: &ProxyInput, ports: &[SvcPort]) -> String {
    type IpKey = (Ipv4Addr, Proto, u16);
    type PortKey = (Proto, u16);
    let mut cluster_ips = BTreeSet::new();
    let mut service_ips: BTreeMap<IpKey, String> = BTreeMap::new();
    let mut service_nodeports: BTreeMap<PortKey, String> = BTreeMap::new();
    let mut no_endpoint_services: BTreeSet<IpKey> = BTreeSet::new();
    let mut no_endpoint_nodeports: BTreeSet<PortKey> = BTreeSet::new();
    let mut chains = String::with_capacity(ports.len() * 512);
    let mark = format!("{MASQUERADE_MARK:#010x}");
    let cidr = input.cluster_cidr.trunc();

    for sp in ports {
        cluster_ips.insert(sp.cluster_ip);
        if sp.endpoints.is_empty() {
            no_endpoint_services.insert((sp.cluster_ip, sp.proto, sp.port));
            for ip in &sp.external_ips {
                no_endpoint_services.insert((*ip, sp.proto, sp.port));
            }
            if let Some(node_port) = sp.node_port {
                no_endpoint_nodeports.insert((sp.proto, node_port));
            }
            continue;
        }
        // When two Services claim the same key (invalid, but possible input), the first
        // in sorted order wins; the other's chains are written but unreferenced.
        let service_chain = sp.service_chain();
        service_ips
            .entry((sp.cluster_ip, sp.proto, sp.port))
            .or_insert_with(|| format!("goto {service_chain}"));
        if sp.uses_external_chain() {
            let external_chain = sp.external_chain();
            for ip in &sp.external_ips {
                service_ips
                    .entry((*ip, sp.proto, sp.port))
                    .or_insert_with(|| format!("goto {external_chain}"));
            }
            if let Some(node_port) = sp.node_port {
                service_nodeports
                    .entry((sp.proto, node_port))
                    .or_insert_with(|| format!("goto {external_chain}"));
            }
            write_chain(
                &mut chains,
                &external_chain,
                &[
                    "jump mark-for-masquerade".to_owned(),
                    format!("goto {service_chain}"),
                ],
            );
        }

        let mut rules = Vec::with_capacity(2);
        if input.masquerade_external {
            rules.push(format!(
                "ip daddr {} {} dport {} ip saddr != {cidr} jump mark-for-masquerade",
                sp.cluster_ip,
                sp.proto.nft(),
                sp.port
            ));
        }
        let endpoint_chains: Vec<String> = sp
            .endpoints
            .iter()
            .map(|(ip, port)| sp.endpoint_chain(*ip, *port))
            .collect();
        let choices: Vec<String> = endpoint_chains
            .iter()
            .enumerate()
            .map(|(i, chain)| format!("{i} : goto {chain}"))
            .collect();
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            endpoint_chains.len(),
            choices.join(", ")
        ));
        write_chain(&mut chains, &service_chain, &rules);

        for ((ip, port), chain) in sp.endpoints.iter().zip(&endpoint_chains) {
            write_chain(
                &mut chains,
                chain,
                &[
                    format!("ip saddr {ip} jump mark-for-masquerade"),
                    format!("meta l4proto {} dnat to {ip}:{port}", sp.proto.nft()),
                ],
            );
        }
    }

    let node_ips: BTreeSet<Ipv4Addr> = input
        .node_ips
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect();

    let mut out = String::with_capacity(chains.len() + 4096);
    let _ = writeln!(
        out,
        "# kubelan lab kube-proxy: replaces table ip {TABLE} in one transaction\n\
         table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tcomment \"kubelan lab kube-proxy\""
    );
    write_collection(
        &mut out,
        "set",
        "nodeport-ips",
        "ipv4_addr",
        node_ips.iter().map(ToString::to_string),
    );
    write_collection(
        &mut out,
        "set",
        "cluster-ips",
        "ipv4_addr",
        cluster_ips.iter().map(ToString::to_string),
    );
    let ip_map = "ipv4_addr . inet_proto . inet_service : verdict";
    let port_map = "inet_proto . inet_service : verdict";
    write_collection(
        &mut out,
        "map",
        "service-ips",
        ip_map,
        service_ips
            .iter()
            .map(|((ip, proto, port), v)| format!("{ip} . {} . {port} : {v}", proto.nft())),
    );
    write_collection(
        &mut out,
        "map",
        "service-nodeports",
        port_map,
        service_nodeports
            .iter()
            .map(|((proto, port), v)| format!("{} . {port} : {v}", proto.nft())),
    );
    write_collection(
        &mut out,
        "map",
        "no-endpoint-services",
        ip_map,
        no_endpoint_services.iter().map(|(ip, proto, port)| {
            format!("{ip} . {} . {port} : goto reject-chain", proto.nft())
        }),
    );
    write_collection(
        &mut out,
        "map",
        "no-endpoint-nodeports",
        port_map,
        no_endpoint_nodeports
            .iter()
            .map(|(proto, port)| format!("{} . {port} : goto reject-chain", proto.nft())),
    );

    // Base chains. Numeric priorities: nftables 1.0.6 accepts the names `dstnat` and
    // `srcnat` only on the prerouting and postrouting hooks.
    let base = |hook: &str, ty: &str, priority: i32| {
        format!("type {ty} hook {hook} priority {priority}; policy accept;")
    };
    write_chain(
        &mut out,
        "filter-input",
        &[
            base("input", "filter", -110),
            "ct state new jump endpoints-check".into(),
        ],
    );
    write_chain(
        &mut out,
        "filter-forward",
        &[
            base("forward", "filter", -110),
            "ct state new jump endpoints-check".into(),
            "ct state new jump cluster-ips-check".into(),
        ],
    );
    write_chain(
        &mut out,
        "filter-output",
        &[
            base("output", "filter", -110),
            "ct state new jump endpoints-check".into(),
        ],
    );
    write_chain(
        &mut out,
        "filter-output-post-dnat",
        &[
            base("output", "filter", -90),
            "ct state new jump cluster-ips-check".into(),
        ],
    );
    write_chain(
        &mut out,
        "nat-prerouting",
        &[base("prerouting", "nat", -100), "jump services".into()],
    );
    write_chain(
        &mut out,
        "nat-output",
        &[base("output", "nat", -100), "jump services".into()],
    );
    write_chain(
        &mut out,
        "nat-postrouting",
        &[base("postrouting", "nat", 100), "jump masquerading".into()],
    );

    // Regular chains shared by all Services.
    write_chain(
        &mut out,
        "services",
        &[
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        ],
    );
    write_chain(
        &mut out,
        "endpoints-check",
        &[
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        ],
    );
    write_chain(
        &mut out,
        "cluster-ips-check",
        &["ip daddr @cluster-ips goto reject-chain"],
    );
    write_chain(
        &mut out,
        "reject-chain",
        &["meta l4proto tcp reject with tcp reset", "reject"],
    );
    write_chain(
        &mut out,
        "mark-for-masquerade",
        &[format!("meta mark set meta mark | {mark}")],
    );
    write_chain(
        &mut out,
        "masquerading",
        &[
            format!("meta mark & {mark} == 0x00000000 return"),
            format!("meta mark set meta mark ^ {mark}"),
            "masquerade fully-random".to_owned(),
        ],
    );

    out.push_str(&chains);
    out.push_str("}\n");
    out
}

/// Loads `script` (from [`ruleset`] or [`remove_script`]) with `nft -f -` inside the network
/// namespace at `netns`. The script is one transaction: on failure nothing changes.
///
/// # Errors
/// [`ProxyError::Nft`] with nft's standard error when it rejects the script, and the
/// other variants when the namespace or `nft` cannot be used.
pub async fn apply(netns: &Path, script: &str) -> Result<(), ProxyError> {
    run_nft(netns, &["-f", "-"], script).await
}

/// Runs `nft ARGS` in `netns` with `script` on standard input.
async fn run_nft(netns: &Path, args: &[&str], script: &str) -> Result<(), ProxyError> {
    let ns = Arc::new(Namespaces::net(netns)?);
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    enter_on_spawn(&mut cmd, ns, kubelan_sys::Cwd::Inherit, None)?;
    let mut child = cmd.spawn().map_err(ProxyError::Spawn)?;
    let stdin = child.stdin.take();
    let run = async move {
        // Feed the script while collecting stderr, so a chatty nft cannot deadlock us.
        let feed = async move {
            if let Some(mut stdin) = stdin {
                stdin.write_all(script.as_bytes()).await?;
                stdin.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(ProxyError::Spawn)?;
        if output.status.success() {
            return Ok(());
        }
        // A write error (nft exited early) matters less than what nft said.
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if let Err(e) = fed
            && stderr.is_empty()
        {
            stderr = format!("writing the script failed: {e}");
        }
        Err(ProxyError::Nft {
            netns: netns.to_path_buf(),
            status: output.status.to_string(),
            stderr,
        })
    };
    // On timeout the future, and with it the child, is dropped: kill_on_drop kills it.
    tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| ProxyError::Timeout(NFT_TIMEOUT, netns.to_path_buf()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).expect("service json")
    }

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).expect("slice json")
    }

    /// `default/web`: ClusterIP 172.17.16.50, port `http` 80/TCP.
    fn web(kind: &str) -> Service {
        service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": kind,
                "clusterIP": "172.17.16.50",
                "clusterIPs": ["172.17.16.50"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                           "targetPort": 8080, "nodePort": 30080}]
            }
        }))
    }

    /// A slice for `default/web` with two ready endpoints and one that is not ready.
    fn web_slice() -> EndpointSlice {
        slice(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["172.17.33.11"], "conditions": {"ready": true}},
                {"addresses": ["172.17.33.10"]},
                {"addresses": ["172.17.34.9"], "conditions": {"ready": false}}
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
    }

    fn input<'a>(services: &'a [Service], slices: &'a [EndpointSlice]) -> ProxyInput<'a> {
        ProxyInput {
            node_ips: vec![Ipv4Addr::new(10, 4, 7, 11)],
            cluster_cidr: "172.17.32.0/19".parse().unwrap(),
            masquerade_external: true,
            services,
            slices,
        }
    }

    /// The body of chain `name` (its rules, one per line), or `None`.
    fn chain<'s>(script: &'s str, name: &str) -> Option<Vec<&'s str>> {
        let start = script.find(&format!("\tchain {name} {{\n"))?;
        let body = &script[start..];
        let body = &body[body.find('\n')? + 1..body.find("\n\t}")?];
        Some(body.lines().map(str::trim).collect())
    }

    /// The `elements = { … }` of a set or map, or "" when it has none.
    fn elements<'s>(script: &'s str, name: &str) -> &'s str {
        let start = script
            .find(&format!(" {name} {{\n"))
            .unwrap_or_else(|| panic!("no set/map {name}"));
        let body = &script[start..];
        let body = &body[..body.find("\n\t}").unwrap()];
        body.split_once("elements = { ")
            .map_or("", |(_, rest)| rest.trim_end_matches(" }"))
    }

    fn svc_chain(base: &str) -> String {
        chain_name("service-", base)
    }

    #[test]
    fn cluster_ip_with_two_endpoints() {
        let services = [web("ClusterIP")];
        let slices = [web_slice()];
        let script = ruleset(&input(&services, &slices));
        let svc = svc_chain("default/web/tcp/http");
        assert!(svc.starts_with("service-") && svc.ends_with("-default/web/tcp/http"));
        assert_eq!(
            elements(&script, "service-ips"),
            format!("172.17.16.50 . tcp . 80 : goto {svc}")
        );
        assert_eq!(elements(&script, "cluster-ips"), "172.17.16.50");
        let ep10 = chain_name("endpoint-", "default/web/tcp/http__172.17.33.10/8080");
        let ep11 = chain_name("endpoint-", "default/web/tcp/http__172.17.33.11/8080");
        assert_eq!(
            chain(&script, &svc).unwrap(),
            [
                "ip daddr 172.17.16.50 tcp dport 80 ip saddr != 172.17.32.0/19 jump mark-for-masquerade"
                    .to_owned(),
                format!("numgen random mod 2 vmap {{ 0 : goto {ep10}, 1 : goto {ep11} }}"),
            ]
        );
        assert_eq!(
            chain(&script, &ep10).unwrap(),
            [
                "ip saddr 172.17.33.10 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 172.17.33.10:8080"
            ]
        );
        assert!(chain(&script, &ep11).is_some());
        // The not-ready endpoint gets nothing; no NodePort for a ClusterIP Service.
        assert!(!script.contains("172.17.34.9"), "{script}");
        assert_eq!(elements(&script, "service-nodeports"), "");
        assert_eq!(elements(&script, "no-endpoint-services"), "");
        assert!(!script.contains("external-"));
        // Hooks and the masquerade machinery.
        for (base_chain, head) in [
            (
                "nat-prerouting",
                "type nat hook prerouting priority -100; policy accept;",
            ),
            (
                "nat-output",
                "type nat hook output priority -100; policy accept;",
            ),
            (
                "nat-postrouting",
                "type nat hook postrouting priority 100; policy accept;",
            ),
        ] {
            assert_eq!(chain(&script, base_chain).unwrap()[0], head);
        }
        assert_eq!(
            chain(&script, "masquerading").unwrap(),
            [
                "meta mark & 0x00004000 == 0x00000000 return",
                "meta mark set meta mark ^ 0x00004000",
                "masquerade fully-random"
            ]
        );
        // Atomic replacement: declare, delete, define.
        assert!(
            script.contains(
                "table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n"
            )
        );
        assert!(script.ends_with("}\n"));
    }

    #[test]
    fn udp_port() {
        let services = [service(json!({
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "172.17.16.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "sctp", "port": 99, "protocol": "SCTP"}
            ]}
        }))];
        let slices = [slice(json!({
            "metadata": {"name": "kube-dns-1", "namespace": "kube-system",
                         "labels": {"kubernetes.io/service-name": "kube-dns"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["172.17.33.53"]}],
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 5354},
                      {"name": "sctp", "port": 99, "protocol": "SCTP"}]
        }))];
        let script = ruleset(&input(&services, &slices));
        let udp = svc_chain("kube-system/kube-dns/udp/dns");
        let tcp = svc_chain("kube-system/kube-dns/tcp/dns-tcp");
        assert_eq!(
            elements(&script, "service-ips"),
            format!("172.17.16.10 . tcp . 53 : goto {tcp}, 172.17.16.10 . udp . 53 : goto {udp}")
        );
        let ep = chain_name(
            "endpoint-",
            "kube-system/kube-dns/udp/dns__172.17.33.53/5353",
        );
        assert_eq!(
            chain(&script, &udp).unwrap()[0],
            "ip daddr 172.17.16.10 udp dport 53 ip saddr != 172.17.32.0/19 jump mark-for-masquerade"
        );
        assert_eq!(
            chain(&script, &ep).unwrap()[1],
            "meta l4proto udp dnat to 172.17.33.53:5353"
        );
        assert!(script.contains("meta l4proto tcp dnat to 172.17.33.53:5354"));
        assert!(!script.contains("sctp"), "{script}");
    }

    #[test]
    fn node_port() {
        let services = [web("NodePort")];
        let slices = [web_slice()];
        let mut inp = input(&services, &slices);
        inp.node_ips = vec![
            Ipv4Addr::new(10, 4, 7, 12),
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(10, 4, 7, 11),
        ];
        let script = ruleset(&inp);
        let svc = svc_chain("default/web/tcp/http");
        let ext = chain_name("external-", "default/web/tcp/http");
        assert_eq!(elements(&script, "nodeport-ips"), "10.4.7.11, 10.4.7.12");
        assert_eq!(
            elements(&script, "service-nodeports"),
            format!("tcp . 30080 : goto {ext}")
        );
        // The ClusterIP still goes straight to the service chain.
        assert_eq!(
            elements(&script, "service-ips"),
            format!("172.17.16.50 . tcp . 80 : goto {svc}")
        );
        assert_eq!(
            chain(&script, &ext).unwrap(),
            ["jump mark-for-masquerade".to_owned(), format!("goto {svc}")]
        );
        assert_eq!(
            chain(&script, "services").unwrap(),
            [
                "ip daddr . meta l4proto . th dport vmap @service-ips",
                "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
            ]
        );
    }

    #[test]
    fn load_balancer_ingress_and_external_ips() {
        let mut svc = web("LoadBalancer");
        svc.spec.as_mut().unwrap().external_ips =
            Some(vec!["192.0.2.7".into(), "2001:db8::1".into()]);
        svc.status = Some(
            serde_json::from_value(json!({
                "loadBalancer": {"ingress": [{"ip": "192.0.2.8"}, {"hostname": "lb.example"}]}
            }))
            .unwrap(),
        );
        let services = [svc];
        let slices = [web_slice()];
        let script = ruleset(&input(&services, &slices));
        let ext = chain_name("external-", "default/web/tcp/http");
        let map = elements(&script, "service-ips");
        assert!(
            map.contains(&format!("192.0.2.7 . tcp . 80 : goto {ext}")),
            "{map}"
        );
        assert!(
            map.contains(&format!("192.0.2.8 . tcp . 80 : goto {ext}")),
            "{map}"
        );
        assert!(!script.contains("2001:db8"));
        assert_eq!(
            elements(&script, "service-nodeports"),
            format!("tcp . 30080 : goto {ext}")
        );
    }

    #[test]
    fn service_without_endpoints_is_rejected() {
        let services = [web("NodePort")];
        let unready = [slice(json!({
            "metadata": {"name": "web-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["172.17.33.10"], "conditions": {"ready": false}}],
            "ports": [{"name": "http", "port": 8080}]
        }))];
        for slices in [&[][..], &unready[..]] {
            let script = ruleset(&input(&services, slices));
            assert_eq!(elements(&script, "service-ips"), "");
            assert_eq!(elements(&script, "service-nodeports"), "");
            assert_eq!(
                elements(&script, "no-endpoint-services"),
                "172.17.16.50 . tcp . 80 : goto reject-chain"
            );
            assert_eq!(
                elements(&script, "no-endpoint-nodeports"),
                "tcp . 30080 : goto reject-chain"
            );
            assert_eq!(elements(&script, "cluster-ips"), "172.17.16.50");
            assert!(!script.contains("chain service-"), "{script}");
            assert!(!script.contains("chain endpoint-"), "{script}");
            assert_eq!(
                chain(&script, "reject-chain").unwrap(),
                ["meta l4proto tcp reject with tcp reset", "reject"]
            );
            for hook in ["filter-input", "filter-forward", "filter-output"] {
                assert!(
                    chain(&script, hook)
                        .unwrap()
                        .contains(&"ct state new jump endpoints-check"),
                    "{hook}"
                );
            }
        }
    }

    #[test]
    fn headless_and_external_name_get_nothing() {
        let services = [
            service(json!({
                "metadata": {"name": "db", "namespace": "default"},
                "spec": {"clusterIP": "None", "clusterIPs": ["None"],
                         "ports": [{"name": "pg", "port": 5432}]}
            })),
            service(json!({
                "metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com",
                         "ports": [{"port": 80}]}
            })),
        ];
        let slices = [slice(json!({
            "metadata": {"name": "db-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["172.17.33.20"]}],
            "ports": [{"name": "pg", "port": 5432}]
        }))];
        let script = ruleset(&input(&services, &slices));
        assert_eq!(script, ruleset(&input(&[], &[])));
        for name in [
            "cluster-ips",
            "service-ips",
            "service-nodeports",
            "no-endpoint-services",
            "no-endpoint-nodeports",
        ] {
            assert_eq!(elements(&script, name), "", "{name}");
        }
    }

    #[test]
    fn masquerade_external_off_keeps_hairpin_and_node_port_masquerade() {
        let services = [web("NodePort")];
        let slices = [web_slice()];
        let mut inp = input(&services, &slices);
        inp.masquerade_external = false;
        let script = ruleset(&inp);
        assert!(!script.contains("ip saddr !="), "{script}");
        let svc = chain(&script, &svc_chain("default/web/tcp/http")).unwrap();
        assert_eq!(svc.len(), 1);
        assert!(svc[0].starts_with("numgen random mod 2 vmap"));
        let ep = chain_name("endpoint-", "default/web/tcp/http__172.17.33.10/8080");
        assert_eq!(
            chain(&script, &ep).unwrap()[0],
            "ip saddr 172.17.33.10 jump mark-for-masquerade"
        );
        let ext = chain_name("external-", "default/web/tcp/http");
        assert_eq!(chain(&script, &ext).unwrap()[0], "jump mark-for-masquerade");
    }

    #[test]
    fn output_is_deterministic() {
        let mut services = vec![web("NodePort")];
        services.push(service(json!({
            "metadata": {"name": "api", "namespace": "team"},
            "spec": {"clusterIP": "172.17.16.77", "ports": [{"port": 443, "targetPort": 6443}]}
        })));
        let mut slices = vec![web_slice()];
        slices.push(slice(json!({
            "metadata": {"name": "api-1", "namespace": "team",
                         "labels": {"kubernetes.io/service-name": "api"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["172.17.35.3"]}, {"addresses": ["172.17.33.3"]}],
            "ports": [{"port": 6443}]
        })));
        // The same endpoint repeated in a second slice is merged.
        let mut dup = web_slice();
        dup.metadata.name = Some("web-def".into());
        slices.push(dup);
        let a = ruleset(&input(&services, &slices));
        services.reverse();
        slices.reverse();
        let b = ruleset(&input(&services, &slices));
        assert_eq!(a, b);
        assert_eq!(a.matches("dnat to 172.17.33.10:8080").count(), 1);
        // An unnamed port is matched to an unnamed slice port.
        assert!(
            a.contains("meta l4proto tcp dnat to 172.17.33.3:6443"),
            "{a}"
        );
        assert!(a.contains("-team/api/tcp/ {"), "{a}");
    }

    fn odd_services() -> Vec<Service> {
        vec![
            service(json!({"metadata": {"name": "nospec"}})),
            service(json!({"spec": {"clusterIP": "172.17.16.1"}})),
            service(json!({"metadata": {"name": "noports"}, "spec": {"clusterIP": "172.17.16.2"}})),
            service(json!({"metadata": {"name": "pending"}, "spec": {"clusterIP": ""}})),
            service(json!({"metadata": {"name": "v6"},
                           "spec": {"clusterIP": "fd00::5", "ports": [{"port": 80}]}})),
            service(json!({"metadata": {"name": "dual", "namespace": "default"},
                           "spec": {"clusterIPs": ["fd00::6", "172.17.16.6"],
                                    "ports": [{"port": 0}, {"port": 70000}, {"port": 81}]}})),
            service(
                json!({"metadata": {"name": "Odd Name!", "namespace": "x\"y"},
                           "spec": {"clusterIP": "172.17.16.7", "ports": [{"name": "p q", "port": 1}]}}),
            ),
        ]
    }

    fn odd_slices() -> Vec<EndpointSlice> {
        vec![
            slice(
                json!({"metadata": {"name": "nolabels"}, "addressType": "IPv4", "endpoints": []}),
            ),
            slice(json!({"metadata": {"namespace": "default",
                                      "labels": {"kubernetes.io/service-name": "dual"}},
                         "addressType": "IPv6",
                         "endpoints": [{"addresses": ["fd00::9"]}], "ports": [{"port": 80}]})),
            slice(json!({"metadata": {"namespace": "default",
                                      "labels": {"kubernetes.io/service-name": "dual"}},
                         "addressType": "IPv4",
                         "endpoints": [{"addresses": []}, {"addresses": ["garbage"]},
                                       {"addresses": ["172.17.33.66"]}]})),
            slice(json!({"metadata": {"namespace": "default",
                                      "labels": {"kubernetes.io/service-name": "dual"}},
                         "addressType": "IPv4",
                         "endpoints": [{"addresses": ["172.17.33.67"]}],
                         "ports": [{"port": -1}, {"name": "other", "port": 81}]})),
            slice(json!({"metadata": {"namespace": "x\"y",
                                      "labels": {"kubernetes.io/service-name": "Odd Name!"}},
                         "addressType": "IPv4",
                         "endpoints": [{"addresses": ["172.17.33.68"]}],
                         "ports": [{"name": "p q", "port": 2}]})),
        ]
    }

    #[test]
    fn odd_input_does_not_panic() {
        let (services, slices) = (odd_services(), odd_slices());
        let script = ruleset(&input(&services, &slices));
        // Only `dual` (port 81, no usable endpoints) and the odd one survive.
        assert_eq!(
            elements(&script, "no-endpoint-services"),
            "172.17.16.6 . tcp . 81 : goto reject-chain"
        );
        let odd = chain_name("service-", "x\"y/Odd Name!/tcp/p q");
        assert!(odd.ends_with("-x_y/Odd_Name_/tcp/p_q"), "{odd}");
        assert!(chain(&script, &odd).is_some(), "{script}");
        assert!(!script.contains("x\"y"), "{script}");
        // Very long names are capped, and stay distinct through the hash.
        let long_a = chain_name("endpoint-", &"a".repeat(300));
        let long_b = chain_name("endpoint-", &format!("{}b", "a".repeat(299)));
        assert_eq!(long_a.len(), CHAIN_NAME_MAX);
        assert_ne!(long_a, long_b);
    }

    #[test]
    fn remove_script_names_the_table() {
        assert_eq!(
            remove_script(),
            "table ip kube-proxy\ndelete table ip kube-proxy\n"
        );
    }

    /// Tests that need root: they build their own network namespaces (named
    /// `klkp-<pid>-<test>-…`), never touch the machine's own namespace, and remove
    /// everything through a drop guard, also on failure.
    mod netns {
        use super::*;
        use std::io::Read as _;
        use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
        use std::process::Command;
        use std::time::Instant;

        use kubelan_sys::{in_netns, netns_path};

        fn root() -> bool {
            let root = nix::unistd::Uid::effective().is_root();
            if !root {
                eprintln!("skipping: this test needs root (network namespaces and nftables)");
            }
            root
        }

        /// Network namespaces created by one test; deleted on drop.
        struct Lab {
            prefix: String,
            names: Vec<String>,
        }

        impl Lab {
            fn new(test: &str) -> Self {
                Self {
                    prefix: format!("klkp-{}-{test}-", std::process::id()),
                    names: Vec::new(),
                }
            }

            /// Creates namespace `<prefix><short>` with `lo` up and returns its name.
            fn add(&mut self, short: &str) -> String {
                let name = format!("{}{short}", self.prefix);
                self.names.push(name.clone());
                run("ip", &["netns", "add", &name]);
                ip(&name, &["link", "set", "lo", "up"]);
                name
            }
        }

        impl Drop for Lab {
            fn drop(&mut self) {
                for name in self.names.iter().rev() {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            }
        }

        fn run(program: &str, args: &[&str]) {
            let out = Command::new(program).args(args).output().expect(program);
            assert!(
                out.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// `ip -n NS ARGS`: always inside one of our namespaces.
        fn ip(ns: &str, args: &[&str]) {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            run("ip", &all);
        }

        fn sysctl(ns: &str, key: &str, value: &str) {
            let file = format!("/proc/sys/{}", key.replace('.', "/"));
            let value = value.to_owned();
            in_netns(&netns_path(ns), move || std::fs::write(file, value))
                .expect("enter netns")
                .expect("write sysctl");
        }

        /// `nft ARGS` inside `ns`, returning its standard output.
        fn nft_output(ns: &str, args: &[&str]) -> String {
            let mut cmd = Command::new("nft");
            cmd.args(args);
            let nsfd = Arc::new(Namespaces::net(&netns_path(ns)).expect("netns"));
            enter_on_spawn(&mut cmd, nsfd, kubelan_sys::Cwd::Inherit, None).expect("enter");
            let out = cmd.output().expect("nft");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// A Service with a TCP port (80 → 8080, NodePort 30080) and a UDP port
        /// (53 → 5353), and a slice with the given ready endpoints.
        fn fixture(
            ns: &str,
            name: &str,
            cluster_ip: &str,
            node_port: Option<u16>,
            endpoints: &[&str],
        ) -> (Service, EndpointSlice) {
            let mut tcp = json!({"name": "http", "port": 80, "targetPort": 8080});
            if let Some(np) = node_port {
                tcp["nodePort"] = json!(np);
            }
            let svc = service(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
                    "clusterIP": cluster_ip,
                    "ports": [tcp, {"name": "dns", "port": 53, "protocol": "UDP",
                                    "targetPort": 5353}]
                }
            }));
            let eps: Vec<_> = endpoints
                .iter()
                .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
                .collect();
            let sl = slice(json!({
                "metadata": {"name": format!("{name}-1"), "namespace": ns,
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "endpoints": eps,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "dns", "port": 5353, "protocol": "UDP"}]
            }));
            (svc, sl)
        }

        /// `count` Services (up to 4000) with NodePorts on every other one, 3 endpoints
        /// each.
        fn many(count: u16) -> (Vec<Service>, Vec<EndpointSlice>) {
            (0..count)
                .map(|i| {
                    let n = i + 1;
                    let cip = format!("172.17.{}.{}", 16 + n / 256, n % 256);
                    let eps: Vec<String> = (0..3)
                        .map(|e| format!("172.17.{}.{}", 33 + e, 2 + i % 250))
                        .collect();
                    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
                    let np = (i % 2 == 0).then_some(30000 + i);
                    fixture("bench", &format!("svc{i}"), &cip, np, &eps)
                })
                .unzip()
        }

        #[tokio::test]
        async fn nft_check_mode_accepts_generated_scripts() {
            if !root() {
                return;
            }
            let mut lab = Lab::new("check");
            let ns = lab.add("n");
            let path = netns_path(&ns);
            let (svcs, slices) = many(5);
            let mut lb = web("LoadBalancer");
            lb.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.7".into()]);
            let (odd_svcs, odd_slices) = (odd_services(), odd_slices());
            let dns = [service(json!({
                "metadata": {"name": "kube-dns", "namespace": "kube-system"},
                "spec": {"clusterIP": "172.17.16.10", "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"}]}
            }))];
            let scripts = [
                ruleset(&input(&[], &[])),
                ruleset(&input(&svcs, &slices)),
                ruleset(&input(&[web("NodePort")], &[web_slice()])),
                ruleset(&input(&[web("NodePort")], &[])),
                ruleset(&input(&[lb], &[web_slice()])),
                ruleset(&input(&odd_svcs, &odd_slices)),
                ruleset(&input(&dns, &[])),
                ruleset(&ProxyInput {
                    masquerade_external: false,
                    ..input(&svcs, &slices)
                }),
                remove_script(),
            ];
            for script in &scripts {
                if let Err(e) = run_nft(&path, &["-c", "-f", "-"], script).await {
                    panic!("{e}\n{script}");
                }
            }
            // Check mode changed nothing.
            assert!(!nft_output(&ns, &["list", "ruleset"]).contains("kube-proxy"));
        }

        #[tokio::test]
        async fn apply_replaces_atomically_and_reports_errors() {
            if !root() {
                return;
            }
            let mut lab = Lab::new("apply");
            let ns = lab.add("n");
            let path = netns_path(&ns);

            // Removing a table that does not exist is fine.
            apply(&path, &remove_script())
                .await
                .expect("remove nothing");

            let (svcs, slices) = many(20);
            let started = Instant::now();
            let script = ruleset(&input(&svcs, &slices));
            let generate = started.elapsed();
            let mut times = Vec::new();
            for round in 0..5 {
                // Alternate the fault flag so every round really changes the table.
                let script = ruleset(&ProxyInput {
                    masquerade_external: round % 2 == 0,
                    ..input(&svcs, &slices)
                });
                let t = Instant::now();
                apply(&path, &script).await.expect("apply");
                times.push(t.elapsed());
            }
            let listed = nft_output(&ns, &["list", "table", "ip", "kube-proxy"]);
            // 20 Services x 2 ports, 3 endpoints each, NodePorts on 10 Services (TCP only).
            assert_eq!(listed.matches("\tchain service-").count(), 40);
            assert_eq!(listed.matches("\tchain endpoint-").count(), 120);
            assert_eq!(listed.matches("\tchain external-").count(), 10);
            assert_eq!(listed.matches("\tchain ").count(), 40 + 120 + 10 + 13);
            // The last round (4) had masquerade_external = true.
            assert_eq!(listed.matches("ip saddr != 172.17.32.0/19").count(), 40);
            let big = many(1000);
            let t = Instant::now();
            let big_script = ruleset(&input(&big.0, &big.1));
            let generate_big = t.elapsed();
            println!(
                "kubeproxy: 20 Services ({} bytes): ruleset {generate:?}, apply {times:?}; \
                 1000 Services ({} bytes): ruleset {generate_big:?}",
                script.len(),
                big_script.len()
            );

            // A bad script fails with nft's message and leaves the table as it was.
            let err = apply(
                &path,
                "table ip kube-proxy {\n\tchain x {\n\t\tbogus rule\n\t}\n}\n",
            )
            .await
            .unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, ProxyError::Nft { .. }), "{msg}");
            assert!(msg.contains("Error"), "{msg}");
            assert_eq!(
                nft_output(&ns, &["list", "table", "ip", "kube-proxy"]),
                listed
            );

            apply(&path, &remove_script()).await.expect("remove");
            assert!(!nft_output(&ns, &["list", "ruleset"]).contains("kube-proxy"));

            let missing = netns_path(&format!("{}missing", lab.prefix));
            let err = apply(&missing, &script).await.unwrap_err();
            assert!(matches!(err, ProxyError::Namespace(_)), "{err}");
        }

        /// What one attempt to talk to a Service gave: the reply, or the error kind and
        /// how long it took to fail.
        type Outcome = Result<String, (std::io::ErrorKind, Duration)>;

        const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

        fn tcp_once(addr: SocketAddrV4) -> Outcome {
            let started = Instant::now();
            let fail = |e: std::io::Error| (e.kind(), started.elapsed());
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::V4(addr), ATTEMPT_TIMEOUT).map_err(fail)?;
            s.set_read_timeout(Some(ATTEMPT_TIMEOUT)).map_err(fail)?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).map_err(fail)?;
            Ok(reply.trim().to_owned())
        }

        fn udp_once(addr: SocketAddrV4) -> Outcome {
            let started = Instant::now();
            let fail = |e: std::io::Error| (e.kind(), started.elapsed());
            let s = UdpSocket::bind("0.0.0.0:0").map_err(fail)?;
            s.set_read_timeout(Some(ATTEMPT_TIMEOUT)).map_err(fail)?;
            s.connect(addr).map_err(fail)?;
            s.send(b"?").map_err(fail)?;
            let mut buf = [0u8; 128];
            let n = s.recv(&mut buf).map_err(fail)?;
            Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
        }

        /// Makes `count` attempts with `once` from inside namespace `ns` (on a thread of
        /// its own, off the async runtime). Each attempt is bounded by ATTEMPT_TIMEOUT.
        async fn attempts(
            ns: &str,
            addr: &str,
            count: usize,
            once: fn(SocketAddrV4) -> Outcome,
        ) -> Vec<Outcome> {
            let path = netns_path(ns);
            let addr: SocketAddrV4 = addr.parse().unwrap();
            tokio::task::spawn_blocking(move || {
                in_netns(&path, move || (0..count).map(|_| once(addr)).collect())
            })
            .await
            .expect("join")
            .expect("enter netns")
        }

        /// All attempts succeeded; returns the replies ("<pod> <peer address>").
        fn all_ok(what: &str, outcomes: Vec<Outcome>) -> Vec<String> {
            outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|e| panic!("{what}: attempt failed: {e:?}")))
                .collect()
        }

        /// Every attempt failed with "connection refused" in well under a second.
        fn all_refused_fast(what: &str, outcomes: Vec<Outcome>) {
            for o in outcomes {
                match o {
                    Err((std::io::ErrorKind::ConnectionRefused, took))
                        if took < Duration::from_secs(1) => {}
                    other => panic!("{what}: expected a fast refusal, got {other:?}"),
                }
            }
        }

        /// Starts a TCP server on :8080 and a UDP server on :5353 inside pod namespace
        /// `ns`; both answer "<tag> <peer address>". The tasks end with the runtime.
        fn serve(ns: &str, tag: &'static str) -> Vec<tokio::task::JoinHandle<()>> {
            let (tcp, udp) = in_netns(&netns_path(ns), || {
                let tcp = std::net::TcpListener::bind("0.0.0.0:8080").expect("bind tcp");
                let udp = UdpSocket::bind("0.0.0.0:5353").expect("bind udp");
                (tcp, udp)
            })
            .expect("enter pod netns");
            tcp.set_nonblocking(true).unwrap();
            udp.set_nonblocking(true).unwrap();
            let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
            let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
            let t = tokio::spawn(async move {
                while let Ok((mut s, peer)) = tcp.accept().await {
                    let _ = s
                        .write_all(format!("{tag} {}\n", peer.ip()).as_bytes())
                        .await;
                }
            });
            let u = tokio::spawn(async move {
                let mut buf = [0u8; 16];
                while let Ok((_, peer)) = udp.recv_from(&mut buf).await {
                    let _ = udp
                        .send_to(format!("{tag} {}", peer.ip()).as_bytes(), peer)
                        .await;
                }
            });
            vec![t, u]
        }

        /// Node 10.4.7.11 (eth0) with bridge cni0 172.17.33.1/24 and two pods
        /// (172.17.33.10 = pod-a, 172.17.33.11 = pod-b, /32 with a default route via
        /// the node), a client 10.4.7.200 that routes the Service CIDR via the node, and
        /// a default route on the node into a sink namespace (so nothing leaves the lab).
        /// Bridge netfilter is on (the kernel default), so the pod ports need hairpin mode.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn real_traffic_through_a_node() {
            if root() {
                traffic_scenario("traffic", true).await;
            }
        }

        /// The same with `net.bridge.bridge-nf-call-iptables=0` on the node: every pod
        /// packet is routed by the node (no hairpin mode needed).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn real_traffic_through_a_node_without_bridge_netfilter() {
            if root() {
                traffic_scenario("traffic-l3", false).await;
            }
        }

        async fn traffic_scenario(test: &str, bridge_netfilter: bool) {
            let mut lab = Lab::new(test);
            let node = lab.add("node");
            let pod_a = lab.add("pod-a");
            let pod_b = lab.add("pod-b");
            let client = lab.add("client");
            let sink = lab.add("sink");

            ip(&node, &["link", "add", "cni0", "type", "bridge"]);
            ip(&node, &["addr", "add", "172.17.33.1/24", "dev", "cni0"]);
            ip(&node, &["link", "set", "cni0", "up"]);
            ip(
                &node,
                &[
                    "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &client,
                ],
            );
            ip(&node, &["addr", "add", "10.4.7.11/24", "dev", "eth0"]);
            ip(&node, &["link", "set", "eth0", "up"]);
            // The node's default route leads into a namespace that drops everything
            // (forwarding is off there), as a stand-in for the node's uplink.
            ip(
                &node,
                &[
                    "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", &sink,
                ],
            );
            ip(&node, &["addr", "add", "192.0.2.1/24", "dev", "uplink"]);
            ip(&node, &["link", "set", "uplink", "up"]);
            ip(&node, &["route", "add", "default", "via", "192.0.2.2"]);
            ip(&sink, &["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
            ip(&sink, &["link", "set", "eth0", "up"]);
            sysctl(&sink, "net.ipv4.ip_forward", "0");
            sysctl(&node, "net.ipv4.ip_forward", "1");
            if !bridge_netfilter {
                sysctl(&node, "net.bridge.bridge-nf-call-iptables", "0");
            }
            ip(&client, &["addr", "add", "10.4.7.200/24", "dev", "eth0"]);
            ip(&client, &["link", "set", "eth0", "up"]);
            ip(
                &client,
                &["route", "add", "172.17.16.0/20", "via", "10.4.7.11"],
            );
            for (pod, veth, addr) in [
                (&pod_a, "veth-a", "172.17.33.10/32"),
                (&pod_b, "veth-b", "172.17.33.11/32"),
            ] {
                ip(
                    &node,
                    &[
                        "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod,
                    ],
                );
                ip(&node, &["link", "set", veth, "master", "cni0", "up"]);
                // As the CNI bridge plugin's `hairpinMode`: with br_netfilter (on by
                // default), a pod reaching itself through a Service is DNATed at the
                // bridge and sent back out its own port, which needs hairpin mode.
                if bridge_netfilter {
                    ip(
                        &node,
                        &["link", "set", veth, "type", "bridge_slave", "hairpin", "on"],
                    );
                }
                ip(pod, &["addr", "add", addr, "dev", "eth0"]);
                ip(pod, &["link", "set", "eth0", "up"]);
                ip(
                    pod,
                    &[
                        "route",
                        "add",
                        "172.17.33.1",
                        "dev",
                        "eth0",
                        "scope",
                        "link",
                    ],
                );
                ip(
                    pod,
                    &[
                        "route",
                        "add",
                        "default",
                        "via",
                        "172.17.33.1",
                        "dev",
                        "eth0",
                    ],
                );
            }
            let forwarding = in_netns(&netns_path(&node), || {
                std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            });
            assert_eq!(forwarding.unwrap().unwrap().trim(), "1");

            let mut servers = serve(&pod_a, "pod-a");
            servers.extend(serve(&pod_b, "pod-b"));

            let (web, web_slice) = fixture(
                "default",
                "web",
                "172.17.16.50",
                Some(30080),
                &["172.17.33.10", "172.17.33.11"],
            );
            let (empty, empty_slice) =
                fixture("default", "empty", "172.17.16.60", Some(30090), &[]);
            let services = [web, empty];
            let slices = [web_slice, empty_slice];
            let mut proxy = ProxyInput {
                node_ips: vec![Ipv4Addr::new(10, 4, 7, 11)],
                cluster_cidr: "172.17.32.0/19".parse().unwrap(),
                masquerade_external: true,
                services: &services,
                slices: &slices,
            };
            let node_path = netns_path(&node);
            apply(&node_path, &ruleset(&proxy)).await.expect("apply");

            // Client -> ClusterIP: both pods answer; the source outside the Pod CIDR is
            // masqueraded to the node's cni0 address.
            let replies = all_ok(
                "client->ClusterIP",
                attempts(&client, "172.17.16.50:80", 20, tcp_once).await,
            );
            assert!(
                replies.contains(&"pod-a 172.17.33.1".to_owned()),
                "{replies:?}"
            );
            assert!(
                replies.contains(&"pod-b 172.17.33.1".to_owned()),
                "{replies:?}"
            );
            assert!(
                replies.iter().all(|r| r.ends_with(" 172.17.33.1")),
                "{replies:?}"
            );

            // UDP goes through the same way.
            let replies = all_ok(
                "client->ClusterIP/udp",
                attempts(&client, "172.17.16.50:53", 10, udp_once).await,
            );
            assert!(replies.iter().all(|r| r.starts_with("pod-")), "{replies:?}");

            // NodePort from another host.
            let replies = all_ok(
                "client->NodePort",
                attempts(&client, "10.4.7.11:30080", 10, tcp_once).await,
            );
            assert!(
                replies.iter().all(|r| r.ends_with(" 172.17.33.1")),
                "{replies:?}"
            );

            // Pod -> Service keeps the pod's address, except hairpin (answered by the
            // calling pod itself), which is masqueraded.
            let replies = all_ok(
                "pod-a->ClusterIP",
                attempts(&pod_a, "172.17.16.50:80", 20, tcp_once).await,
            );
            for r in &replies {
                assert!(
                    r == "pod-b 172.17.33.10" || r == "pod-a 172.17.33.1",
                    "{replies:?}"
                );
            }
            assert!(
                replies.iter().any(|r| r.starts_with("pod-a")),
                "{replies:?}"
            );
            assert!(
                replies.iter().any(|r| r.starts_with("pod-b")),
                "{replies:?}"
            );

            // A process on the node (output hook).
            let replies = all_ok(
                "node->ClusterIP",
                attempts(&node, "172.17.16.50:80", 5, tcp_once).await,
            );
            assert!(replies.iter().all(|r| r.starts_with("pod-")), "{replies:?}");
            let replies = all_ok(
                "node->NodePort",
                attempts(&node, "10.4.7.11:30080", 5, tcp_once).await,
            );
            assert!(replies.iter().all(|r| r.starts_with("pod-")), "{replies:?}");

            // No endpoints, or a port the Service does not define: refused at once.
            all_refused_fast(
                "client->empty",
                attempts(&client, "172.17.16.60:80", 3, tcp_once).await,
            );
            all_refused_fast(
                "client->undefined port",
                attempts(&client, "172.17.16.50:81", 3, tcp_once).await,
            );
            all_refused_fast(
                "client->empty NodePort",
                attempts(&client, "10.4.7.11:30090", 3, tcp_once).await,
            );
            all_refused_fast(
                "node->empty",
                attempts(&node, "172.17.16.60:80", 3, tcp_once).await,
            );
            all_refused_fast(
                "pod-a->empty",
                attempts(&pod_a, "172.17.16.60:80", 3, tcp_once).await,
            );
            // UDP to a Service without endpoints: ICMP port unreachable.
            all_refused_fast(
                "client->empty/udp",
                attempts(&client, "172.17.16.60:53", 3, udp_once).await,
            );

            // The "seed 001" fault: the client's address reaches the pods unchanged;
            // NodePort traffic is still masqueraded.
            proxy.masquerade_external = false;
            apply(&node_path, &ruleset(&proxy)).await.expect("re-apply");
            let replies = all_ok(
                "client->ClusterIP (fault)",
                attempts(&client, "172.17.16.50:80", 10, tcp_once).await,
            );
            assert!(
                replies.iter().all(|r| r.ends_with(" 10.4.7.200")),
                "{replies:?}"
            );
            let replies = all_ok(
                "client->NodePort (fault)",
                attempts(&client, "10.4.7.11:30080", 5, tcp_once).await,
            );
            assert!(
                replies.iter().all(|r| r.ends_with(" 172.17.33.1")),
                "{replies:?}"
            );

            for s in servers {
                s.abort();
            }
        }
    }
}
