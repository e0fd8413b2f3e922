//! What `connect`, `gateway` and `status` say, compared byte for byte with `tests/golden/`:
//! one sample of every [`Event`] (both modes, every session state), each event's line for
//! people and its JSON object (`events.txt`); a running connect's status and the preview
//! without one (`status.txt`). The texts are those the binary printed before they moved into
//! this library; `--output json` adds `time` to each event's object, and the binary's own
//! test checks where each event goes. `UPDATE_GOLDEN=1 cargo test -p kubelan-vpn --test
//! render` rewrites the files; review them by hand when they change.

use std::net::IpAddr;
use std::path::PathBuf;

use kubelan_cluster::discovery::{ClusterFacts, Fact, Source};
use kubelan_session::{CarrierInfo, CarrierKind, SessionState};
use kubelan_term::json::Document;
use kubelan_vpn::Event;
use kubelan_vpn::connect::{
    Counters, DnsStatus, Preview, RedirectStatus, RouteStatus, StackCounters, Status, TunStatus,
};
use kubelan_vpn::event::{DnsConfigured, Summary};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    kubelan_testkit::golden::check(&path, actual, "cargo test -p kubelan-vpn --test render");
}

fn samples() -> Vec<Event> {
    let net = |s: &str| s.parse().unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let message = |m: &str| m.to_string();
    let summary = Summary {
        clients: 2,
        flows: 7,
        bytes_up: 1536,
        bytes_down: 3 * 1024 * 1024,
        dns_cluster: 4,
        dns_other: 1,
        ..Summary::default()
    };
    let why = "direct mTLS to 10.4.7.11:30443 (agent kubelan-system/kubelan-agent-x on node1): no answer to pings for 3.0 s";
    let direct = CarrierInfo {
        kind: CarrierKind::Direct,
        peer: "10.4.7.11:30443".into(),
        agent: "kubelan-system/kubelan-agent-x on node1".into(),
        version: 1,
        software: "kubelan 0.1.0".into(),
    };
    vec![
        Event::Cleanup {
            message: message("removed route 172.17.16.0/20 dev kubelan0"),
        },
        Event::Discovering,
        Event::Note {
            message: message("cluster domain: assuming cluster.local"),
        },
        Event::Warning {
            message: message("--exclude 10.0.0.0/8 matches no cluster prefix"),
        },
        Event::Routes {
            tun: "kubelan0".into(),
            routes: vec![
                (net("172.17.16.0/20"), "services: flag".into()),
                (net("172.17.32.0/19"), "pods: node podCIDRs".into()),
            ],
        },
        Event::Dns {
            domain: "cluster.local".into(),
            config: DnsConfigured {
                configured: true,
                backend: "systemd-resolved".into(),
                server: "172.17.16.10".into(),
                routing_domains: vec!["cluster.local".into()],
                search: ["default.svc.", "svc.", ""]
                    .map(|s| format!("{s}cluster.local"))
                    .to_vec(),
                upstreams: vec![],
            },
        },
        Event::NoClusterDns,
        Event::TcpOnStack {
            reason: message("nft: command not found (install nftables)"),
        },
        Event::Ipv6TcpOnStack {
            error: message("address family not supported"),
        },
        Event::Redirect {
            table: "inet kubelan_connect".into(),
            listen: vec!["127.0.0.1:40001".into(), "[::1]:40002".into()],
        },
        Event::Session(SessionState::Connecting),
        Event::Session(SessionState::Failed("the agent refused the session".into())),
        Event::Quitting,
        Event::Disconnecting,
        Event::Restored {
            outcome: message("removed link kubelan0"),
        },
        Event::RestoreIncomplete,
        Event::NoCrashWatcher {
            error: message("pidfd_open: not supported"),
        },
        Event::Ipv6NotForwarded {
            prefix: net("fd00:10::/64"),
        },
        Event::NoClusterDnsForLan,
        Event::Forwarding { already: false },
        Event::Forwarding { already: true },
        Event::Nft {
            table: "kubelan".into(),
            snat: true,
            lan: vec!["172.16.0.0/18".parse().unwrap()],
            cluster: vec![
                "172.17.16.0/20".parse().unwrap(),
                "172.17.32.0/19".parse().unwrap(),
            ],
        },
        Event::Nft {
            table: "kubelan".into(),
            snat: false,
            lan: vec!["172.16.0.0/18".parse().unwrap()],
            cluster: vec!["172.17.16.0/20".parse().unwrap()],
        },
        Event::NodeDns {
            listen: "172.16.1.12:53".parse().unwrap(),
            domain: "cluster.local".into(),
            cluster_dns: ip("172.17.16.10"),
            upstreams: vec![ip("9.9.9.9"), ip("1.1.1.1")],
        },
        Event::LanDns {
            listen: "172.16.1.12:53".parse().unwrap(),
            domain: "cluster.local".into(),
            lans: vec![net("172.16.0.0/18"), net("192.168.10.0/24")],
            upstreams: vec![],
        },
        Event::TunnelReady,
        Event::NodeReady {
            listen: ip("172.16.1.12"),
            domain: "cluster.local".into(),
        },
        Event::Summary(summary),
        Event::LiveSummary(summary),
        Event::LiveSummaryEnd,
        Event::Stopping,
        Event::Persisted {
            unit: "kubelan-gateway.service".into(),
            path: "/etc/systemd/system/kubelan-gateway.service".into(),
        },
        Event::Session(SessionState::Connected {
            carriers: vec![direct],
            down: None,
        }),
        Event::Session(SessionState::Reconnecting { error: why.into() }),
    ]
}

#[test]
fn every_event_says_its_golden_line_and_json() {
    let mut out = String::new();
    for e in samples() {
        // The JSON output's key order (sorted), as the binary prints it.
        let json = e
            .to_document()
            .map_or_else(|_| "(text only)".into(), |v| v.to_string());
        out.push_str(&format!("{e}\n{json}\n"));
    }
    golden("events.txt", &out);
}

/// Every event with a JSON form is a `ConnectEvent` document.
#[test]
fn every_json_event_is_a_versioned_document() {
    for e in samples() {
        if let Ok(v) = e.to_document() {
            assert_eq!(v["apiVersion"], "kubelan.dev/v1", "{v}");
            assert_eq!(v["type"], "ConnectEvent", "{v}");
            assert!(v["event"].is_string(), "{v}");
        }
    }
}

/// `kubelan status`: a running connect (DNS configured, TCP redirected), the same with
/// neither, and the preview without a connect (routes it would add, or why it would refuse).
#[test]
fn status_says_its_golden_lines() {
    let route = |prefix: &str, why: &str| RouteStatus {
        prefix: prefix.into(),
        why: why.into(),
    };
    let mut running = Status {
        pid: 4242,
        since: "2026-01-02T03:04:05Z".into(),
        state: "connected".into(),
        detail: "connected via port-forward to kubelan-system/kubelan-agent-x".into(),
        carriers: vec!["port-forward to kubelan-system/kubelan-agent-x".into()],
        tun: TunStatus {
            name: "kubelan0".into(),
            mtu: 1400,
        },
        routes: vec![
            route("172.17.16.0/20", "services: flag"),
            route("172.17.32.0/19", "pods: node podCIDRs"),
        ],
        pinned: vec!["10.4.7.11/32".into()],
        facts: serde_json::Value::Null,
        dns: DnsStatus::Configured(DnsConfigured {
            configured: true,
            backend: "resolv.conf".into(),
            server: "172.17.16.10".into(),
            routing_domains: vec!["cluster.local".into()],
            search: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
            upstreams: vec!["9.9.9.9".into(), "1.1.1.1".into()],
        }),
        redirect: RedirectStatus {
            active: true,
            table: Some("inet kubelan_connect".into()),
            listen: Some(vec!["127.0.0.1:40001".into(), "[::1]:40002".into()]),
            reason: None,
        },
        counters: Counters {
            tcp_flows: 12,
            tcp_failed: 1,
            tcp_refused: 2,
            tcp_open: 3,
            udp_flows: 4,
            bytes_up: 1536,
            bytes_down: 65536,
            pings: 5,
            pongs: 4,
            dns_cluster: 9,
            dns_upstream: 6,
            dns_failed: 1,
            ..Counters::default()
        },
        stack: StackCounters::default(),
    };
    let mut text = running.to_string();
    running.dns = DnsStatus::NotConfigured { configured: false };
    running.redirect = RedirectStatus {
        active: false,
        table: None,
        listen: None,
        reason: Some("nft: command not found (install nftables)".into()),
    };
    running.pinned.clear();
    text += &format!("--\n{running}");
    let flag = |f: &str| Source::Flag { flag: f.into() };
    let mut preview = Preview {
        state: "not connected",
        context: "lab".into(),
        server: "https://10.4.7.11:6443".into(),
        facts: ClusterFacts {
            service_cidrs: vec![Fact::new(
                "172.17.16.0/20".parse().unwrap(),
                flag("--service-cidr"),
            )],
            pod_cidrs: vec![Fact::new(
                "172.17.32.0/19".parse().unwrap(),
                flag("--pod-cidr"),
            )],
            cluster_domain: Fact::new("cluster.local".to_string(), flag("--cluster-domain")),
            dns_server: None,
            notes: Vec::new(),
        },
        planned_routes: vec![
            route("172.17.16.0/20", "services: --service-cidr"),
            route("172.17.32.0/19", "pods: --pod-cidr"),
        ],
        conflicts: Vec::new(),
    };
    text += &format!("--\n{preview}");
    preview.planned_routes.clear();
    preview.conflicts = vec!["172.17.32.0/19 overlaps the local route 172.17.0.0/16 dev eth1 (pass --exclude or --force-route)".into()];
    text += &format!("--\n{preview}");
    golden("status.txt", &text);
    // `status --output json`: both documents carry the version and their type, beside
    // the fields they always had.
    assert_document(&running, "ConnectStatus", "pid");
    assert_document(&preview, "ConnectPreview", "planned_routes");
}

/// `doc` as `--output json` prints it: `apiVersion`, `type` (`docs/json.md`) and `field`.
fn assert_document(doc: &impl Document, kind: &str, field: &str) {
    let v = doc.to_document().unwrap();
    assert_eq!(v["apiVersion"], "kubelan.dev/v1", "{v}");
    assert_eq!(v["type"], kind, "{v}");
    assert!(v.get(field).is_some(), "{v}");
}
