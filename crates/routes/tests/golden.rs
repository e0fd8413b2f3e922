//! Golden files: every format rendered from fixed inputs, compared byte for byte with
//! `tests/golden/`. The files are the specification of what `kubelan routes` prints;
//! review them by hand when they change. `UPDATE_GOLDEN=1 cargo test -p kubelan-routes`
//! rewrites them.
//!
//! - `<format>.txt`: the lab (Service CIDR 172.17.16.0/20, the two nodes' Pod CIDRs
//!   172.17.32.0/24 and 172.17.33.0/24, gateway 10.4.7.11, office LAN 172.16.0.0/18).
//! - `dualstack/<format>.txt`: IPv4 and IPv6 prefixes (a /19 pod pool: 32 reverse zones)
//!   with gateways of both families.
//! - `bgp-<format>.txt`: `--bgp` for the lab (router 10.4.7.1, nodes node1 and node2);
//!   `bgp-calico-selector.txt` with a node selector.
//! - `warnings.txt`: the warnings of an input with every kind of problem.

use std::path::PathBuf;

use kubelan_routes::{
    BgpFormat, BgpInput, BgpNeighbor, ClusterPrefix, Format, LocalRoute, PrefixKind, RoutesInput,
    bgp_warnings, calico_selector, render, render_bgp, warnings,
};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    kubelan_testkit::golden::check(&path, actual, "cargo test -p kubelan-routes");
}

fn prefix(net: &str, kind: PrefixKind, why: &str) -> ClusterPrefix {
    ClusterPrefix::new(net.parse().unwrap(), kind, why)
}

/// The lab's facts, as `kubelan routes` on the office router sees them.
fn lab() -> RoutesInput {
    RoutesInput {
        prefixes: vec![
            prefix(
                "172.17.16.0/20",
                PrefixKind::Services,
                "ServiceCIDR \"kubernetes\"",
            ),
            prefix(
                "172.17.32.0/24",
                PrefixKind::Pods,
                "spec.podCIDRs of node node1",
            ),
            prefix(
                "172.17.33.0/24",
                PrefixKind::Pods,
                "spec.podCIDRs of node node2",
            ),
        ],
        gateway_v4: Some("10.4.7.11".parse().unwrap()),
        gateway_v6: None,
        dns_target: None,
        cluster_domain: "cluster.local".into(),
        lan: vec!["172.16.0.0/18".parse().unwrap()],
        other_routes: vec![],
    }
}

fn dualstack() -> RoutesInput {
    RoutesInput {
        prefixes: vec![
            prefix(
                "172.17.16.0/20",
                PrefixKind::Services,
                "ServiceCIDR \"kubernetes\"",
            ),
            prefix(
                "fd00:10:96::/112",
                PrefixKind::Services,
                "ServiceCIDR \"kubernetes\"",
            ),
            prefix(
                "172.17.32.0/19",
                PrefixKind::Pods,
                "Calico IPPool \"default-ipv4-ippool\"",
            ),
            prefix(
                "fd00:10:244::/56",
                PrefixKind::Pods,
                "Calico IPPool \"default-ipv6-ippool\"",
            ),
        ],
        gateway_v4: Some("10.4.7.11".parse().unwrap()),
        gateway_v6: Some("fd00:4:7::11".parse().unwrap()),
        dns_target: None,
        cluster_domain: "cluster.local".into(),
        lan: vec!["172.16.0.0/18".parse().unwrap()],
        other_routes: vec![],
    }
}

fn lab_bgp() -> BgpInput {
    BgpInput {
        prefixes: lab().prefixes,
        cluster_as: 64512,
        router_as: 64513,
        router_ip: Some("10.4.7.1".parse().unwrap()),
        neighbors: vec![
            BgpNeighbor {
                name: Some("node1".into()),
                ip: "10.4.7.11".parse().unwrap(),
            },
            BgpNeighbor {
                name: Some("node2".into()),
                ip: "10.4.7.12".parse().unwrap(),
            },
        ],
        node_selector: None,
    }
}

#[test]
fn every_format_for_the_lab() {
    let input = lab();
    for f in Format::all() {
        golden(&format!("{f}.txt"), &render(*f, &input));
    }
    assert!(warnings(&input).is_empty(), "{:?}", warnings(&input));
}

#[test]
fn every_format_dual_stack() {
    let input = dualstack();
    for f in Format::all() {
        golden(&format!("dualstack/{f}.txt"), &render(*f, &input));
    }
    assert!(warnings(&input).is_empty(), "{:?}", warnings(&input));
}

#[test]
fn bgp_for_the_lab() {
    let input = lab_bgp();
    for f in BgpFormat::all() {
        golden(&format!("bgp-{f}.txt"), &render_bgp(*f, &input));
    }
    assert!(bgp_warnings(&input).is_empty());
    let selected = BgpInput {
        node_selector: Some(calico_selector("kubelan/bgp=true").unwrap()),
        ..lab_bgp()
    };
    golden(
        "bgp-calico-selector.txt",
        &render_bgp(BgpFormat::Calico, &selected),
    );
}

#[test]
fn warnings_of_a_troubled_input() {
    let mut input = lab();
    input.prefixes.push(ClusterPrefix {
        guessed: true,
        ..prefix(
            "172.17.32.0/19",
            PrefixKind::Pods,
            "observed 12 pod IPs, widened to /19 (a guess)",
        )
    });
    input.prefixes.push(prefix(
        "fd00:10:244::/56",
        PrefixKind::Pods,
        "--pod-cidr flag",
    ));
    input.prefixes.push(prefix(
        "172.16.32.0/20",
        PrefixKind::Services,
        "--service-cidr flag",
    ));
    input.lan = vec!["172.16.0.0/16".parse().unwrap()];
    input.other_routes = vec![
        LocalRoute {
            dst: "0.0.0.0/0".parse().unwrap(),
            dev: "eth0".into(),
            gateway: Some("10.4.7.254".parse().unwrap()),
        },
        LocalRoute {
            dst: "172.17.33.0/24".parse().unwrap(),
            dev: "eth1".into(),
            gateway: Some("198.51.100.1".parse().unwrap()),
        },
        LocalRoute {
            dst: "172.16.0.0/16".parse().unwrap(),
            dev: "lan0".into(),
            gateway: None,
        },
    ];
    input.cluster_domain = "cluster local".into();
    let text: String = warnings(&input).iter().map(|w| format!("{w}\n")).collect();
    golden("warnings.txt", &text);
    // The contained /24s are left out of the routes, the /19 carries them.
    let linux = render(Format::Linux, &input);
    assert!(!linux.contains("ip route add 172.17.32.0/24"), "{linux}");
    assert!(
        linux.contains("ip route add 172.17.32.0/19 via 10.4.7.11"),
        "{linux}"
    );
    assert!(
        linux.contains("fd00:10:244::/56 left out: no IPv6 gateway address"),
        "{linux}"
    );
    // JSON shape of a warning, for `--output json`.
    let json = serde_json::to_value(&warnings(&input)[0]).unwrap();
    assert_eq!(json["kind"], "lan_overlap");
    assert_eq!(json["lan"], "172.16.0.0/16");
}
