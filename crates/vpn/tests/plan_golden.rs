//! Golden files of the host plan: what `connect`, a tunnel gateway and a node gateway would
//! change on a machine, or why they refuse, from fixed facts — compared byte for byte with
//! `tests/golden/plan/`. No root, no network. `UPDATE_GOLDEN=1 cargo test -p kubelan-vpn`
//! rewrites the files; review them by hand when they change.
//!
//! The lab's cluster: Services 172.17.16.0/20 (DNS 172.17.16.10), pods 172.17.32.0/24 and
//! 172.17.33.0/24, domain cluster.local; this machine on 10.4.7.0/24 via eth0.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use kubelan_cluster::discovery::{ClusterFacts, Fact, LocalAddr, LocalRoute, RouteOptions, Source};
use kubelan_vpn::plan::{PlanInput, PlanMode, TunSpec, plan};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/plan")
        .join(name);
    kubelan_testkit::golden::check(&path, actual, "cargo test -p kubelan-vpn");
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn flag(f: &str) -> Source {
    Source::Flag { flag: f.into() }
}

/// The lab's facts.
fn lab() -> ClusterFacts {
    ClusterFacts {
        service_cidrs: vec![Fact::new(net("172.17.16.0/20"), flag("--service-cidr"))],
        pod_cidrs: vec![
            Fact::new(net("172.17.32.0/24"), flag("--pod-cidr")),
            Fact::new(net("172.17.33.0/24"), flag("--pod-cidr")),
        ],
        cluster_domain: Fact::new("cluster.local".to_string(), flag("--cluster-domain")),
        dns_server: Some(Fact::new(
            "172.17.16.10".parse::<IpAddr>().unwrap(),
            flag("--cluster-dns"),
        )),
        notes: Vec::new(),
    }
}

/// This machine: a LAN on eth0 and a default route.
fn machine() -> (Vec<LocalRoute>, Vec<LocalAddr>) {
    (
        vec![
            LocalRoute {
                dst: net("0.0.0.0/0"),
                dev: "eth0".into(),
                gateway: Some("10.4.7.1".parse().unwrap()),
            },
            LocalRoute {
                dst: net("10.4.7.0/24"),
                dev: "eth0".into(),
                gateway: None,
            },
        ],
        vec![LocalAddr {
            dev: "eth0".into(),
            net: net("10.4.7.20/24"),
        }],
    )
}

fn connect(no_dns: bool) -> PlanMode {
    PlanMode::Connect {
        no_dns,
        namespace: "default".into(),
    }
}

/// The plan, or the refusal (warnings first, as they are shown).
fn run(
    facts: &ClusterFacts,
    extra: (Vec<LocalRoute>, Vec<LocalAddr>),
    opts: &RouteOptions,
    mode: PlanMode,
) -> String {
    let (mut routes, mut addrs) = machine();
    routes.extend(extra.0);
    addrs.extend(extra.1);
    let input = PlanInput {
        facts,
        local_routes: &routes,
        local_addrs: &addrs,
        routes: opts,
        tun: TunSpec {
            name: "kubelan0".into(),
            mtu: 1400,
        },
        mode,
    };
    match plan(&input) {
        Ok(p) => p.to_string(),
        Err(e) => {
            let mut out = String::new();
            for w in e.warnings() {
                out.push_str(&format!("warning  {w}\n"));
            }
            out.push_str(&format!("refused  {e}\n"));
            out
        }
    }
}

fn none() -> (Vec<LocalRoute>, Vec<LocalAddr>) {
    (Vec::new(), Vec::new())
}

#[test]
fn connect_routes_the_cluster_and_configures_split_dns() {
    golden(
        "connect.txt",
        &run(&lab(), none(), &RouteOptions::default(), connect(false)),
    );
}

#[test]
fn connect_without_dns_leaves_the_resolver_alone() {
    golden(
        "connect-no-dns.txt",
        &run(&lab(), none(), &RouteOptions::default(), connect(true)),
    );
}

#[test]
fn connect_without_a_known_cluster_dns_says_so() {
    let mut facts = lab();
    facts.dns_server = None;
    golden(
        "connect-dns-missing.txt",
        &run(&facts, none(), &RouteOptions::default(), connect(false)),
    );
}

#[test]
fn a_cluster_dns_outside_the_routed_prefixes_gets_its_own_route() {
    let mut facts = lab();
    facts.dns_server = Some(Fact::new(
        "10.96.0.10".parse().unwrap(),
        flag("--cluster-dns"),
    ));
    golden(
        "connect-dns-route.txt",
        &run(&facts, none(), &RouteOptions::default(), connect(false)),
    );
}

#[test]
fn api_server_and_agent_addresses_inside_the_cluster_are_pinned() {
    let opts = RouteOptions {
        never_route: vec!["172.17.16.1".parse().unwrap(), "10.4.7.11".parse().unwrap()],
        ..Default::default()
    };
    golden(
        "connect-pinned.txt",
        &run(&lab(), none(), &opts, connect(false)),
    );
}

/// A LAN route over the pods of node2: refused, naming the flags.
fn overlap() -> (Vec<LocalRoute>, Vec<LocalAddr>) {
    (
        vec![LocalRoute {
            dst: net("172.17.33.0/24"),
            dev: "eth1".into(),
            gateway: None,
        }],
        vec![LocalAddr {
            dev: "eth1".into(),
            net: net("172.17.33.5/24"),
        }],
    )
}

#[test]
fn overlapping_local_networks_are_refused_before_any_change() {
    golden(
        "connect-conflict.txt",
        &run(&lab(), overlap(), &RouteOptions::default(), connect(false)),
    );
}

#[test]
fn exclude_and_force_route_resolve_an_overlap() {
    let exclude = RouteOptions {
        exclude: vec![net("172.17.33.0/24")],
        ..Default::default()
    };
    golden(
        "connect-exclude.txt",
        &run(&lab(), overlap(), &exclude, connect(false)),
    );
    let force = RouteOptions {
        force_route: vec![net("172.17.33.0/24")],
        ..Default::default()
    };
    golden(
        "connect-force-route.txt",
        &run(&lab(), overlap(), &force, connect(false)),
    );
}

#[test]
fn excluding_everything_leaves_nothing_to_route() {
    let opts = RouteOptions {
        exclude: vec![net("172.17.0.0/16")],
        ..Default::default()
    };
    golden(
        "connect-nothing.txt",
        &run(&lab(), none(), &opts, connect(false)),
    );
}

#[test]
fn a_tunnel_gateway_forwards_its_lans_and_serves_dns_on_them() {
    let mode = PlanMode::TunnelGateway {
        lans: vec![net("172.16.0.0/18")],
        no_dns: false,
    };
    golden(
        "tunnel-gateway.txt",
        &run(&lab(), none(), &RouteOptions::default(), mode),
    );
    let mode = PlanMode::TunnelGateway {
        lans: vec![net("172.16.0.0/18")],
        no_dns: true,
    };
    golden(
        "tunnel-gateway-no-dns.txt",
        &run(&lab(), none(), &RouteOptions::default(), mode),
    );
}

#[test]
fn a_lan_inside_the_cluster_is_refused() {
    let mode = PlanMode::TunnelGateway {
        lans: vec![net("172.17.32.0/23")],
        no_dns: false,
    };
    golden(
        "tunnel-gateway-lan-overlap.txt",
        &run(&lab(), none(), &RouteOptions::default(), mode),
    );
}

#[test]
fn a_node_gateway_forwards_with_snat_and_serves_dns() {
    let node = |snat, no_dns| PlanMode::NodeGateway {
        lans: vec![net("172.16.0.0/18"), net("192.168.10.0/24")],
        snat,
        no_dns,
    };
    golden(
        "node-gateway.txt",
        &run(&lab(), none(), &RouteOptions::default(), node(true, false)),
    );
    golden(
        "node-gateway-no-snat-no-dns.txt",
        &run(&lab(), none(), &RouteOptions::default(), node(false, true)),
    );
}

#[test]
fn a_node_gateway_forwards_ipv4_only() {
    let mut facts = lab();
    facts
        .pod_cidrs
        .push(Fact::new(net("fd00:10:244::/56"), flag("--pod-cidr")));
    let mode = PlanMode::NodeGateway {
        lans: vec![net("172.16.0.0/18"), net("fd00:aa::/64")],
        snat: true,
        no_dns: false,
    };
    golden(
        "node-gateway-ipv6.txt",
        &run(&facts, none(), &RouteOptions::default(), mode),
    );
    let v6 = ClusterFacts {
        service_cidrs: vec![Fact::new(net("fd00:10:96::/112"), flag("--service-cidr"))],
        pod_cidrs: vec![],
        ..lab()
    };
    let mode = PlanMode::NodeGateway {
        lans: vec![net("172.16.0.0/18")],
        snat: true,
        no_dns: false,
    };
    golden(
        "node-gateway-v6-only.txt",
        &run(&v6, none(), &RouteOptions::default(), mode),
    );
}
