//! The sans-IO half of kube-proxy: from Services, EndpointSlices and node facts to one
//! complete `nft` script (see the module documentation of `kubeproxy` for its layout).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The nftables table this module owns (family `ip`).
pub const TABLE: &str = "kube-proxy";

/// The packet mark bit that asks the `masquerading` chain to masquerade a packet (bit 14,
/// kube-proxy's default `--masquerade-bit`).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Longest chain name we generate (the kernel allows 255 bytes).
pub(super) const CHAIN_NAME_MAX: usize = 200;

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
pub(super) fn chain_name(prefix: &str, base: &str) -> String {
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
