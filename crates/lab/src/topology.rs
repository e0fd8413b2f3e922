//! The lab's network: which hosts exist, their interfaces, addresses and routes (a pure
//! plan from the configuration), and building it out of network namespaces, veth pairs and
//! bridges.
//!
//! Layer 2 segments (node network, office LAN, WAN) are bridges in a "switch" namespace;
//! every host is a namespace with one veth per segment it sits on. veths are created
//! directly inside their target namespaces, so nothing ever appears in the machine's root
//! namespace, even for an instant.

use std::net::Ipv4Addr;

use anyhow::Context;
use ipnet::Ipv4Net;

use crate::config::{EDGE_ROUTER_NAME, LAPTOP_NAME, LabConfig, OFFICE_ROUTER_NAME};
use crate::netops;
use crate::state::LabPaths;

/// Name of the switch namespace (holds the segment bridges).
pub const SWITCH: &str = "sw";

/// What a host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A cluster node.
    Node,
    /// A router (office or edge).
    Router,
    /// An office PC.
    Pc,
    /// The remote laptop.
    Laptop,
}

/// A layer-2 segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Segment {
    /// The node network.
    Nodes,
    /// The office LAN.
    Office,
    /// The WAN between the laptop and the edge router.
    Wan,
}

impl Segment {
    fn bridge(self) -> &'static str {
        match self {
            Self::Nodes => "br-nodes",
            Self::Office => "br-office",
            Self::Wan => "br-wan",
        }
    }
}

/// One interface of a host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Iface {
    /// Interface name inside the host (`eth0`, `eth1`).
    pub name: String,
    /// Segment it is plugged into.
    pub segment: Segment,
    /// Address with the segment's prefix.
    pub addr: Ipv4Net,
}

/// A route of a host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// Destination (`0.0.0.0/0` for the default route).
    pub dst: Ipv4Net,
    /// Next hop.
    pub via: Ipv4Addr,
}

/// One lab host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Host {
    /// Host name (also its namespace suffix and host name).
    pub name: String,
    /// What it is.
    pub role: Role,
    /// Interfaces.
    pub ifaces: Vec<Iface>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Whether it forwards packets.
    pub forwarding: bool,
    /// For nodes: the Pod CIDR bridged on `cni0`.
    pub pod_cidr: Option<Ipv4Net>,
    /// `/etc/resolv.conf` of the host.
    pub resolv_conf: String,
    /// nftables script loaded (atomically, as one transaction) into the host's namespace
    /// when it is built: the CNI masquerade table on nodes, the NAT table on the edge
    /// router.
    pub nft: Option<String>,
}

impl Host {
    /// The host's first address.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.ifaces.first().map(|i| i.addr.addr())
    }
}

/// The whole plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// All hosts.
    pub hosts: Vec<Host>,
    /// MTU of every link.
    pub mtu: u32,
}

fn with_prefix(a: Ipv4Addr, net: Ipv4Net) -> Ipv4Net {
    Ipv4Net::new(a, net.prefix_len()).unwrap_or(net)
}

/// The plan for a configuration (which must be valid).
pub fn plan(cfg: &LabConfig) -> Plan {
    let n = &cfg.network;
    let default = Ipv4Net::default();
    let dns = cfg.cluster.dns_service_ip();
    let node_resolv = format!(
        "# kubelan lab node: resolves through the cluster DNS, as many on-premises nodes do.\nnameserver {dns}\noptions ndots:1 timeout:2 attempts:2\n"
    );
    // Like Flannel's ipMasq: pods reaching beyond the Pod CIDR leave with the node's
    // address; pod-to-pod traffic keeps its source.
    let cni = cfg.cluster.pod_cidr;
    let cni_script = format!(
        "table ip lab-cni {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat + 10; policy accept;\n    ip saddr {cni} ip daddr != {cni} ip daddr != 224.0.0.0/4 masquerade\n  }}\n}}\n"
    );
    let mut hosts = Vec::new();
    for node in &cfg.nodes {
        let mut routes = vec![Route {
            dst: default,
            via: cfg.edge.node_address,
        }];
        if cfg.office.nodes_route_back {
            routes.push(Route {
                dst: n.office_cidr,
                via: cfg.office.router_node_address,
            });
        }
        for other in cfg.nodes.iter().filter(|o| o.name != node.name) {
            routes.push(Route {
                dst: other.pod_cidr,
                via: other.address,
            });
        }
        hosts.push(Host {
            name: node.name.clone(),
            role: Role::Node,
            ifaces: vec![Iface {
                name: "eth0".into(),
                segment: Segment::Nodes,
                addr: with_prefix(node.address, n.node_cidr),
            }],
            routes,
            forwarding: true,
            pod_cidr: Some(node.pod_cidr),
            resolv_conf: node_resolv.clone(),
            nft: Some(cni_script.clone()),
        });
    }
    hosts.push(Host {
        name: OFFICE_ROUTER_NAME.into(),
        role: Role::Router,
        ifaces: vec![
            Iface {
                name: "eth0".into(),
                segment: Segment::Nodes,
                addr: with_prefix(cfg.office.router_node_address, n.node_cidr),
            },
            Iface {
                name: "eth1".into(),
                segment: Segment::Office,
                addr: with_prefix(cfg.office.router_lan_address, n.office_cidr),
            },
        ],
        routes: vec![],
        forwarding: true,
        pod_cidr: None,
        resolv_conf: "# office router: no resolver configured\n".into(),
        nft: None,
    });
    let (edge_nodes_if, edge_wan_if) = ("eth0", "eth1");
    hosts.push(Host {
        name: EDGE_ROUTER_NAME.into(),
        role: Role::Router,
        ifaces: vec![
            Iface {
                name: edge_nodes_if.into(),
                segment: Segment::Nodes,
                addr: with_prefix(cfg.edge.node_address, n.node_cidr),
            },
            Iface {
                name: edge_wan_if.into(),
                segment: Segment::Wan,
                addr: with_prefix(cfg.edge.wan_address, n.wan_cidr),
            },
        ],
        routes: vec![],
        forwarding: true,
        pod_cidr: None,
        resolv_conf: "# edge router: no resolver configured\n".into(),
        nft: cfg.edge.nat.then(|| {
            edge_nat_script(
                edge_nodes_if,
                edge_wan_if,
                n.wan_cidr,
                cfg.edge.node_address,
            )
        }),
    });
    for pc in &cfg.office.pcs {
        hosts.push(Host {
            name: pc.name.clone(),
            role: Role::Pc,
            ifaces: vec![Iface {
                name: "eth0".into(),
                segment: Segment::Office,
                addr: with_prefix(pc.address, n.office_cidr),
            }],
            routes: vec![Route {
                dst: default,
                via: cfg.office.router_lan_address,
            }],
            forwarding: false,
            pod_cidr: None,
            resolv_conf: format!(
                "# {}: office PC; no resolver configured yet (point it at a kubelan gateway)\n",
                pc.name
            ),
            nft: None,
        });
    }
    hosts.push(Host {
        name: LAPTOP_NAME.into(),
        role: Role::Laptop,
        ifaces: vec![Iface {
            name: "eth0".into(),
            segment: Segment::Wan,
            addr: with_prefix(cfg.laptop.address, n.wan_cidr),
        }],
        routes: vec![Route {
            dst: default,
            via: cfg.edge.wan_address,
        }],
        forwarding: false,
        pod_cidr: None,
        resolv_conf: format!(
            "# laptop: its ISP's resolver (dnsmasq on the edge router)\nnameserver {}\nsearch {WAN_DNS_ZONE}\noptions timeout:2 attempts:2\n",
            cfg.edge.wan_address
        ),
        nft: None,
    });
    Plan { hosts, mtu: n.mtu }
}

/// The edge router's `kubelan-lab` table with `edge.nat` on: the laptop sits behind a
/// NAT, as a laptop at home or in a café does.
///
/// - What the WAN sends towards the node network leaves with the edge router's fixed
///   node-network address. `snat to` rather than `masquerade`: masquerade's conntrack
///   entries are flushed when their interface goes down, and the lab's tests cut links.
/// - The node network cannot open connections towards the WAN: NAT alone would not stop
///   that, since the WAN's addresses stay routable from the nodes (their default route
///   is this router). They are rejected at once, so clients fail fast as everywhere in
///   the lab; replies and ICMP errors of the WAN's own connections pass (conntrack).
/// - A reply that conntrack finds invalid (for example out of its TCP window after a
///   cut) is not translated back, so it would be addressed to this router itself, which
///   would answer with a reset that kills the laptop's connection on the node's side.
///   It is dropped instead, and the node retransmits.
fn edge_nat_script(
    nodes_if: &str,
    wan_if: &str,
    wan_cidr: Ipv4Net,
    node_address: Ipv4Addr,
) -> String {
    format!(
        "table ip kubelan-lab {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    iifname \"{nodes_if}\" oifname \"{wan_if}\" reject with icmp type admin-prohibited
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{nodes_if}\" ct state invalid drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {wan_cidr} oifname \"{nodes_if}\" snat to {node_address}
  }}
}}
"
    )
}

/// The DNS zone the WAN's resolver (on the edge router) serves to the laptop.
pub const WAN_DNS_ZONE: &str = "wan.example";

/// dnsmasq arguments of the WAN's resolver listening on `listen`: `edge.wan.example`
/// and `www.wan.example` resolve, other names of the zone are NXDOMAIN, and names
/// outside it are refused (there is no upstream).
pub fn wan_resolver_args(listen: std::net::Ipv4Addr) -> Vec<String> {
    vec![
        "--conf-file=/dev/null".into(),
        "--keep-in-foreground".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--pid-file=".into(),
        "--user=root".into(),
        format!("--listen-address={listen}"),
        "--bind-interfaces".into(),
        format!("--local=/{WAN_DNS_ZONE}/"),
        format!("--host-record=edge.{WAN_DNS_ZONE},{listen}"),
        format!("--host-record=www.{WAN_DNS_ZONE},{listen}"),
    ]
}

/// Creates the namespaces, bridges, links, addresses, routes, sysctls and the CNI
/// masquerade rule of `plan`. Each namespace is written to the journal before it is
/// created (through `journal_netns`).
///
/// # Errors
/// When any step fails; what was created stays recorded for `lab down`.
pub async fn build(
    plan: &Plan,
    paths: &LabPaths,
    mut journal_netns: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let sw = paths.netns(SWITCH);
    let mut names = vec![sw.clone()];
    names.extend(plan.hosts.iter().map(|h| paths.netns(&h.name)));
    for ns in &names {
        journal_netns(ns)?;
        netops::netns_add(ns)
            .await
            .with_context(|| format!("create network namespace {ns}"))?;
    }
    let mtu = plan.mtu;
    // Switch: one bridge per segment, one port per host interface.
    let mut sw_cmds: Vec<String> = [Segment::Nodes, Segment::Office, Segment::Wan]
        .iter()
        .flat_map(|s| {
            [
                format!("link add {} mtu {mtu} type bridge", s.bridge()),
                format!("link set {} up", s.bridge()),
            ]
        })
        .collect();
    let mut port = 0;
    for h in &plan.hosts {
        for i in &h.ifaces {
            let p = format!("p{port}");
            port += 1;
            sw_cmds.push(format!(
                "link add {p} mtu {mtu} type veth peer name {} netns {}",
                i.name,
                paths.netns(&h.name)
            ));
            sw_cmds.push(format!("link set {p} master {} up", i.segment.bridge()));
        }
    }
    netops::ip_batch(&sw, &sw_cmds).await?;
    // Hosts, in parallel.
    let jobs = plan.hosts.iter().map(|h| build_host(plan, paths, h));
    for r in futures::future::join_all(jobs).await {
        r?;
    }
    Ok(())
}

async fn build_host(plan: &Plan, paths: &LabPaths, h: &Host) -> anyhow::Result<()> {
    let ns = paths.netns(&h.name);
    let mut cmds = vec!["link set lo up".to_string()];
    for i in &h.ifaces {
        cmds.push(format!("addr add {} dev {}", i.addr, i.name));
        cmds.push(format!("link set {} up", i.name));
    }
    if let Some(pc) = h.pod_cidr {
        let gw = Ipv4Net::new(Ipv4Addr::from(u32::from(pc.network()) + 1), pc.prefix_len())?;
        cmds.push(format!("link add cni0 mtu {} type bridge", plan.mtu));
        cmds.push(format!("addr add {gw} dev cni0"));
        cmds.push("link set cni0 up".into());
    }
    for r in &h.routes {
        cmds.push(format!("route add {} via {}", r.dst, r.via));
    }
    netops::ip_batch(&ns, &cmds).await?;
    if h.forwarding {
        let mut settings = vec![
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/send_redirects", "0"),
            ("net/ipv4/conf/default/send_redirects", "0"),
        ];
        if h.pod_cidr.is_some() {
            settings.push(("net/ipv4/conf/cni0/send_redirects", "0"));
        }
        netops::sysctls(&netops::ns_path(&ns), &settings).await?;
    }
    if let Some(script) = &h.nft {
        crate::kubeproxy::apply(&netops::ns_path(&ns), script)
            .await
            .with_context(|| format!("nftables rules of {}", h.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan() {
        let p = plan(&LabConfig::default());
        let names: Vec<&str> = p.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node1",
                "node2",
                "office-router",
                "edge-router",
                "pc1",
                "pc2",
                "laptop"
            ]
        );
        let node1 = &p.hosts[0];
        assert_eq!(node1.address(), Some(Ipv4Addr::new(10, 4, 7, 11)));
        assert!(node1.routes.contains(&Route {
            dst: "172.17.33.0/24".parse().unwrap(),
            via: Ipv4Addr::new(10, 4, 7, 12)
        }));
        assert!(node1.routes.contains(&Route {
            dst: "172.16.0.0/18".parse().unwrap(),
            via: Ipv4Addr::new(10, 4, 7, 1)
        }));
        assert!(node1.resolv_conf.contains("nameserver 172.17.16.10"));
        let laptop = p.hosts.iter().find(|h| h.name == "laptop").unwrap();
        assert_eq!(
            laptop.routes,
            vec![Route {
                dst: Ipv4Net::default(),
                via: Ipv4Addr::new(198, 51, 100, 1)
            }]
        );
        // Nothing outside the nodes routes to the Pod or Service CIDRs.
        for h in p.hosts.iter().filter(|h| h.role != Role::Node) {
            for r in &h.routes {
                assert!(
                    r.dst.prefix_len() == 0 || !r.dst.contains(&Ipv4Addr::new(172, 17, 32, 1)),
                    "{}: {r:?}",
                    h.name
                );
            }
        }
        let routers: Vec<&Host> = p.hosts.iter().filter(|h| h.role == Role::Router).collect();
        assert!(
            routers.iter().all(|r| r.routes.is_empty() && r.forwarding),
            "routers have no default route"
        );
        // Nodes masquerade pods leaving the Pod CIDR.
        let cni = node1.nft.as_deref().unwrap();
        assert!(cni.contains("table ip lab-cni"), "{cni}");
        assert!(
            cni.contains("ip saddr 172.17.32.0/19 ip daddr != 172.17.32.0/19"),
            "{cni}"
        );
    }

    #[test]
    fn laptop_behind_nat_by_default() {
        let p = plan(&LabConfig::default());
        let edge = p.hosts.iter().find(|h| h.name == "edge-router").unwrap();
        let nft = edge
            .nft
            .as_deref()
            .expect("the edge router has the NAT table");
        let lines: Vec<&str> = nft.lines().map(str::trim).collect();
        for want in [
            "table ip kubelan-lab {",
            // The WAN's traffic leaves on the node network with the fixed address.
            "ip saddr 198.51.100.0/24 oifname \"eth0\" snat to 10.4.7.254",
            // Replies pass; anything else from the node network to the WAN is refused.
            "ct state established,related accept",
            "iifname \"eth0\" oifname \"eth1\" reject with icmp type admin-prohibited",
            "iifname \"eth0\" ct state invalid drop",
        ] {
            assert!(lines.contains(&want), "{want:?} missing from:\n{nft}");
        }
        let accept = lines
            .iter()
            .position(|l| l.starts_with("ct state established"));
        let reject = lines.iter().position(|l| l.contains(" reject "));
        assert!(
            accept < reject,
            "replies are accepted before the reject:\n{nft}"
        );
        assert!(!nft.contains("masquerade"), "{nft}");
        // The interfaces named are the edge router's legs on those segments.
        assert_eq!(edge.ifaces[0].name, "eth0");
        assert_eq!(edge.ifaces[0].segment, Segment::Nodes);
        assert_eq!(edge.ifaces[1].name, "eth1");
        assert_eq!(edge.ifaces[1].segment, Segment::Wan);
        // Only nodes and the edge router load rules.
        for h in &p.hosts {
            assert_eq!(
                h.nft.is_some(),
                h.role == Role::Node || h.name == "edge-router",
                "{}",
                h.name
            );
        }
    }

    #[test]
    fn nat_off_leaves_the_edge_router_a_plain_router() {
        let mut cfg = LabConfig::default();
        cfg.edge.nat = false;
        cfg.network.wan_cidr = "203.0.113.0/25".parse().unwrap();
        cfg.edge.wan_address = Ipv4Addr::new(203, 0, 113, 1);
        cfg.laptop.address = Ipv4Addr::new(203, 0, 113, 10);
        let p = plan(&cfg);
        let edge = p.hosts.iter().find(|h| h.name == "edge-router").unwrap();
        assert_eq!(edge.nft, None);
        cfg.edge.nat = true;
        let p = plan(&cfg);
        let edge = p.hosts.iter().find(|h| h.name == "edge-router").unwrap();
        assert!(
            edge.nft
                .as_deref()
                .unwrap()
                .contains("ip saddr 203.0.113.0/25 oifname \"eth0\" snat to 10.4.7.254"),
            "{:?}",
            edge.nft
        );
    }
}
