use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::syntax::{dashed, parse_dashed, parse_reverse};
use super::*;

fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cluster_ip_service(ns: &str, name: &str, ips: &[&str]) -> Service {
    service(json!({"metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": ips[0], "clusterIPs": ips,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 9090}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}))
}

fn headless_service(ns: &str, name: &str) -> Service {
    service(json!({"metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "pg", "port": 5432}]}}))
}

/// A slice of `svc` with (address, hostname, ready) endpoints.
fn endpoint_slice(
    ns: &str,
    name: &str,
    svc: &str,
    eps: &[(&str, Option<&str>, Option<bool>)],
) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = eps
        .iter()
        .map(|(addr, host, ready)| {
            let mut e = json!({"addresses": [addr]});
            if let Some(h) = host {
                e["hostname"] = json!(h);
            }
            if let Some(r) = ready {
                e["conditions"] = json!({"ready": r});
            }
            e
        })
        .collect();
    let family = if eps.iter().any(|(a, _, _)| a.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    slice(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "pg", "port": 15432, "protocol": "TCP"}]
    }))
}

fn running_pod(ns: &str, name: &str, ips: &[&str]) -> Pod {
    let list: Vec<serde_json::Value> = ips.iter().map(|i| json!({"ip": i})).collect();
    pod(json!({"metadata": {"name": name, "namespace": ns},
        "status": {"phase": "Running", "podIP": ips[0], "podIPs": list}}))
}

/// A complete cache: web (dual-stack ClusterIP), db (headless StatefulSet-like), ext
/// (ExternalName), alias (ExternalName into the cluster), pods.
fn populated() -> ClusterNames {
    let mut names = ClusterNames::new("cluster.local");
    names.replace_all(
        &[
            cluster_ip_service("default", "web", &["10.96.0.10", "fd00::10"]),
            headless_service("default", "db"),
            service(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "Example.COM."}})),
            service(json!({"metadata": {"name": "alias", "namespace": "shop"},
                "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})),
        ],
        &[endpoint_slice(
            "default",
            "db-x1",
            "db",
            &[
                ("10.244.1.5", Some("db-0"), Some(true)),
                ("10.244.1.6", None, None),
                ("10.244.1.7", Some("db-2"), Some(false)),
                ("10.244.1.8", Some("db-3"), Some(true)),
            ],
        )],
        &[
            running_pod("default", "db-0", &["10.244.1.5"]),
            running_pod("default", "api-1", &["10.244.2.9", "fd00:244::9"]),
        ],
    );
    names
}

fn found(l: Lookup) -> Vec<RecordData> {
    match l {
        Lookup::Found(records) => {
            assert!(records.iter().all(|r| r.ttl == TTL));
            records.into_iter().map(|r| r.data).collect()
        }
        other => panic!("expected records, got {other:?}"),
    }
}

fn a(s: &str) -> RecordData {
    RecordData::address(ip(s))
}

#[test]
fn cluster_ip_service_a_and_aaaa() {
    let names = populated();
    assert_eq!(
        found(names.lookup("web.default.svc.cluster.local", QueryType::A)),
        [a("10.96.0.10")]
    );
    assert_eq!(
        found(names.lookup("web.default.svc.cluster.local", QueryType::Aaaa)),
        [a("fd00::10")]
    );
    assert_eq!(
        found(names.lookup("web.default.svc.cluster.local", QueryType::Any)).len(),
        2
    );
    // Exists, but no record of that type.
    assert_eq!(
        names.lookup("web.default.svc.cluster.local", QueryType::Txt),
        Lookup::NoData
    );
    assert_eq!(
        names.lookup("web.default.svc.cluster.local", QueryType::Other(15)),
        Lookup::NoData
    );
}

#[test]
fn case_and_trailing_dot_do_not_matter() {
    let names = populated();
    for name in [
        "web.default.svc.cluster.local",
        "web.default.svc.cluster.local.",
        "WEB.Default.SVC.Cluster.Local.",
    ] {
        let Lookup::Found(records) = names.lookup(name, QueryType::A) else {
            panic!("{name}");
        };
        assert_eq!(records[0].name, "web.default.svc.cluster.local");
    }
    // The domain given to the cache is normalised too.
    let mut other = ClusterNames::new("Cluster.Local.");
    other.replace_all(
        &[cluster_ip_service("default", "web", &["10.96.0.10"])],
        &[],
        &[],
    );
    assert_eq!(other.domain(), "cluster.local");
    assert!(matches!(
        other.lookup("web.default.svc.cluster.local", QueryType::A),
        Lookup::Found(_)
    ));
}

#[test]
fn headless_service_answers_ready_endpoints() {
    let names = populated();
    // db-2 is not ready; the endpoint without conditions counts as ready.
    assert_eq!(
        found(names.lookup("db.default.svc.cluster.local", QueryType::A)),
        [a("10.244.1.5"), a("10.244.1.6"), a("10.244.1.8")]
    );
    assert_eq!(
        names.lookup("db.default.svc.cluster.local", QueryType::Aaaa),
        Lookup::NoData
    );
}

#[test]
fn headless_without_ready_endpoints_is_nxdomain() {
    let mut names = populated();
    names.apply_endpoint_slice(&endpoint_slice(
        "default",
        "db-x1",
        "db",
        &[("10.244.1.5", Some("db-0"), Some(false))],
    ));
    assert_eq!(
        names.lookup("db.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("db-0.db.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    // publishNotReadyAddresses makes every endpoint count.
    let mut svc = headless_service("default", "db");
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    names.apply_service(&svc);
    assert_eq!(
        found(names.lookup("db-0.db.default.svc.cluster.local", QueryType::A)),
        [a("10.244.1.5")]
    );
}

#[test]
fn endpoint_hostnames_and_generated_names() {
    let names = populated();
    assert_eq!(
        found(names.lookup("db-0.db.default.svc.cluster.local", QueryType::A)),
        [a("10.244.1.5")]
    );
    assert_eq!(
        found(names.lookup("DB-3.db.default.svc.cluster.local.", QueryType::A)),
        [a("10.244.1.8")]
    );
    // Not ready.
    assert_eq!(
        names.lookup("db-2.db.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    // An endpoint without hostname is named by its dashed address.
    assert_eq!(
        found(names.lookup("10-244-1-6.db.default.svc.cluster.local", QueryType::A)),
        [a("10.244.1.6")]
    );
    // ... but one with a hostname is not.
    assert_eq!(
        names.lookup("10-244-1-5.db.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("db-9.db.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    // Below a ClusterIP Service nothing exists.
    assert_eq!(
        names.lookup("x.web.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
}

#[test]
fn ipv6_headless_endpoints() {
    let mut names = populated();
    names.apply_endpoint_slice(&endpoint_slice(
        "default",
        "db-v6",
        "db",
        &[("fd00:244::5", Some("db-0"), Some(true))],
    ));
    assert_eq!(
        found(names.lookup("db-0.db.default.svc.cluster.local", QueryType::Aaaa)),
        [a("fd00:244::5")]
    );
    assert_eq!(
        found(names.lookup("db-0.db.default.svc.cluster.local", QueryType::A)),
        [a("10.244.1.5")]
    );
    assert_eq!(
        found(names.lookup("db.default.svc.cluster.local", QueryType::Aaaa)),
        [a("fd00:244::5")]
    );
}

#[test]
fn srv_records() {
    let names = populated();
    let srv = |port, target: &str, weight| RecordData::Srv {
        priority: 0,
        weight,
        port,
        target: target.to_owned(),
    };
    assert_eq!(
        found(names.lookup("_http._tcp.web.default.svc.cluster.local", QueryType::Srv)),
        [srv(80, "web.default.svc.cluster.local", 100)]
    );
    assert_eq!(
        found(names.lookup("_dns._udp.web.default.svc.cluster.local", QueryType::Srv)),
        [srv(53, "web.default.svc.cluster.local", 100)]
    );
    // Wrong protocol or unknown port name: nothing there.
    assert_eq!(
        names.lookup("_dns._tcp.web.default.svc.cluster.local", QueryType::Srv),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("_nope._tcp.web.default.svc.cluster.local", QueryType::Srv),
        Lookup::NxDomain
    );
    // The name exists; an A query gets NODATA.
    assert_eq!(
        names.lookup("_http._tcp.web.default.svc.cluster.local", QueryType::A),
        Lookup::NoData
    );
    // Headless: one record per ready endpoint, with the slice's (target) port.
    assert_eq!(
        found(names.lookup("_PG._TCP.db.default.svc.cluster.local", QueryType::Srv)),
        [
            srv(15432, "10-244-1-6.db.default.svc.cluster.local", 33),
            srv(15432, "db-0.db.default.svc.cluster.local", 33),
            srv(15432, "db-3.db.default.svc.cluster.local", 33),
        ]
    );
    // `_tcp.<svc>` alone is an empty non-terminal we leave to the cluster DNS.
    assert_eq!(
        names.lookup("_tcp.web.default.svc.cluster.local", QueryType::Srv),
        Lookup::Unknown
    );
}

#[test]
fn external_name_is_a_cname() {
    let names = populated();
    assert_eq!(
        found(names.lookup("ext.default.svc.cluster.local", QueryType::A)),
        [RecordData::Cname("example.com".into())]
    );
    assert_eq!(
        found(names.lookup("ext.default.svc.cluster.local", QueryType::Cname)),
        [RecordData::Cname("example.com".into())]
    );
    // Into the cluster: followed.
    assert_eq!(
        found(names.lookup("alias.shop.svc.cluster.local", QueryType::A)),
        [
            RecordData::Cname("web.default.svc.cluster.local".into()),
            a("10.96.0.10")
        ]
    );
    assert_eq!(
        names.lookup("x.ext.default.svc.cluster.local", QueryType::A),
        Lookup::Unknown
    );
}

#[test]
fn cname_loops_end() {
    let mut names = populated();
    for (name, target) in [
        ("a", "b.default.svc.cluster.local"),
        ("b", "a.default.svc.cluster.local"),
    ] {
        names.apply_service(&service(
            json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": target}}),
        ));
    }
    let records = found(names.lookup("a.default.svc.cluster.local", QueryType::A));
    assert_eq!(records.len(), MAX_CNAME_CHAIN + 1);
}

#[test]
fn pod_names() {
    let names = populated();
    assert_eq!(
        found(names.lookup("10-244-1-5.default.pod.cluster.local", QueryType::A)),
        [a("10.244.1.5")]
    );
    assert_eq!(
        found(names.lookup("fd00-244--9.default.pod.cluster.local", QueryType::Aaaa)),
        [a("fd00:244::9")]
    );
    assert_eq!(
        names.lookup("10-244-1-5.default.pod.cluster.local", QueryType::Aaaa),
        Lookup::NoData
    );
    // Another namespace, an unknown address, a malformed name: the cluster DNS decides
    // (`pods insecure` answers any address).
    assert_eq!(
        names.lookup("10-244-1-5.other.pod.cluster.local", QueryType::A),
        Lookup::Unknown
    );
    assert_eq!(
        names.lookup("10-1-1-1.default.pod.cluster.local", QueryType::A),
        Lookup::Unknown
    );
    assert_eq!(
        names.lookup("10-1-1.default.pod.cluster.local", QueryType::A),
        Lookup::Unknown
    );
    assert_eq!(
        names.lookup("default.pod.cluster.local", QueryType::A),
        Lookup::Unknown
    );
}

#[test]
fn host_network_and_finished_pods_have_no_names() {
    let mut names = ClusterNames::new("cluster.local");
    names.replace_all(
        &[],
        &[],
        &[
            pod(json!({"metadata": {"name": "h", "namespace": "default"}, "spec": {"hostNetwork": true, "containers": []},
                "status": {"phase": "Running", "podIP": "10.0.0.1"}})),
            pod(json!({"metadata": {"name": "f", "namespace": "default"},
                "status": {"phase": "Succeeded", "podIP": "10.244.0.2"}})),
            pod(json!({"metadata": {"name": "p", "namespace": "default"}, "status": {"phase": "Pending"}})),
        ],
    );
    // The host-network pod is kept (its address is a node's) but has no name.
    assert_eq!(names.counts(), (0, 0, 1));
    assert_eq!(
        names.lookup("10-0-0-1.default.pod.cluster.local", QueryType::A),
        Lookup::Unknown
    );
    assert_eq!(
        names.classify(ip("10.0.0.1")),
        AddressKind::HostNetworkPod {
            namespace: "default",
            name: "h"
        }
    );
    assert_eq!(names.classify(ip("10.244.0.2")), AddressKind::Unknown);
}

#[test]
fn ptr_records() {
    let names = populated();
    let ptr = |s: &str| RecordData::Ptr(s.to_owned());
    assert_eq!(
        found(names.lookup("10.0.96.10.in-addr.arpa", QueryType::Ptr)),
        [ptr("web.default.svc.cluster.local")]
    );
    let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(
        found(names.lookup(v6, QueryType::Ptr)),
        [ptr("web.default.svc.cluster.local")]
    );
    assert_eq!(
        found(names.lookup("5.1.244.10.IN-ADDR.ARPA.", QueryType::Ptr)),
        [ptr("db-0.db.default.svc.cluster.local")]
    );
    assert_eq!(
        names.lookup("5.1.244.10.in-addr.arpa", QueryType::A),
        Lookup::NoData
    );
    // A pod without a hostname, an unready endpoint: known addresses the cluster DNS may
    // still name.
    assert_eq!(
        names.lookup("9.2.244.10.in-addr.arpa", QueryType::Ptr),
        Lookup::Unknown
    );
    assert_eq!(
        names.lookup("6.1.244.10.in-addr.arpa", QueryType::Ptr),
        Lookup::Unknown
    );
    assert_eq!(
        names.lookup("7.1.244.10.in-addr.arpa", QueryType::Ptr),
        Lookup::Unknown
    );
    // Not a cluster address, not a full reverse name.
    assert_eq!(
        names.lookup("1.1.168.192.in-addr.arpa", QueryType::Ptr),
        Lookup::NotOurs
    );
    assert_eq!(
        names.lookup("244.10.in-addr.arpa", QueryType::Ptr),
        Lookup::NotOurs
    );
    assert_eq!(
        names.lookup("256.1.244.10.in-addr.arpa", QueryType::Ptr),
        Lookup::NotOurs
    );
}

#[test]
fn schema_version() {
    let names = populated();
    assert_eq!(
        found(names.lookup("dns-version.cluster.local", QueryType::Txt)),
        [RecordData::Txt("1.1.0".into())]
    );
    assert_eq!(
        names.lookup("dns-version.cluster.local", QueryType::A),
        Lookup::NoData
    );
}

#[test]
fn negative_answers_only_where_we_own_the_shape() {
    let names = populated();
    assert_eq!(
        names.lookup("nope.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("web.nope.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("a.b.nope.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    // Empty non-terminals.
    assert_eq!(
        names.lookup("svc.cluster.local", QueryType::A),
        Lookup::NoData
    );
    assert_eq!(
        names.lookup("default.svc.cluster.local", QueryType::A),
        Lookup::NoData
    );
    // Shapes we do not model.
    for name in [
        "cluster.local",
        "nope.svc.cluster.local",
        "pod.cluster.local",
        "web.default.cluster.local",
        "*.default.svc.cluster.local",
        "a.b.c.web.default.svc.cluster.local",
        "x..svc.cluster.local",
    ] {
        assert_eq!(names.lookup(name, QueryType::A), Lookup::Unknown, "{name}");
    }
    // SRV on a bare Service name: CoreDNS extension, not modelled.
    assert_eq!(
        names.lookup("web.default.svc.cluster.local", QueryType::Srv),
        Lookup::Unknown
    );
    for name in ["example.com", "cluster.local.example.com", "", ".", "local"] {
        assert_eq!(
            names.lookup(name, QueryType::A),
            Lookup::NotOurs,
            "{name:?}"
        );
    }
}

#[test]
fn negative_answers_wait_for_a_complete_cache() {
    let mut names = ClusterNames::new("cluster.local");
    names.apply_service(&cluster_ip_service("default", "web", &["10.96.0.10"]));
    assert!(!names.is_complete());
    assert!(matches!(
        names.lookup("web.default.svc.cluster.local", QueryType::A),
        Lookup::Found(_)
    ));
    assert_eq!(
        names.lookup("nope.default.svc.cluster.local", QueryType::A),
        Lookup::Unknown
    );
    assert_eq!(
        names.lookup("web.default.svc.cluster.local", QueryType::Txt),
        Lookup::Unknown
    );
    names.set_complete(true);
    assert_eq!(
        names.lookup("nope.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    names.clear();
    assert!(!names.is_complete());
    assert_eq!(
        names.lookup("web.default.svc.cluster.local", QueryType::A),
        Lookup::Unknown
    );
}

#[test]
fn updates_and_deletes() {
    let mut names = populated();
    // A new cluster IP replaces the old one everywhere, PTR included.
    names.apply_service(&cluster_ip_service("default", "web", &["10.96.0.99"]));
    assert_eq!(
        found(names.lookup("web.default.svc.cluster.local", QueryType::A)),
        [a("10.96.0.99")]
    );
    assert_eq!(
        names.lookup("10.0.96.10.in-addr.arpa", QueryType::Ptr),
        Lookup::NotOurs
    );
    assert!(matches!(
        names.lookup("99.0.96.10.in-addr.arpa", QueryType::Ptr),
        Lookup::Found(_)
    ));
    names.delete_service("default", "web");
    assert_eq!(
        names.lookup("web.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("99.0.96.10.in-addr.arpa", QueryType::Ptr),
        Lookup::NotOurs
    );

    names.delete_endpoint_slice("default", "db-x1");
    assert_eq!(
        names.lookup("db.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("5.1.244.10.in-addr.arpa", QueryType::Ptr),
        Lookup::Unknown
    );

    names.delete_pod("default", "db-0");
    assert_eq!(
        names.lookup("5.1.244.10.in-addr.arpa", QueryType::Ptr),
        Lookup::NotOurs
    );
    assert_eq!(
        names.lookup("10-244-1-5.default.pod.cluster.local", QueryType::A),
        Lookup::Unknown
    );

    // A pod that finishes loses its name.
    let mut api = running_pod("default", "api-1", &["10.244.2.9"]);
    api.status.as_mut().unwrap().phase = Some("Failed".into());
    names.apply_pod(&api);
    assert_eq!(
        names.lookup("10-244-2-9.default.pod.cluster.local", QueryType::A),
        Lookup::Unknown
    );
    // Deleting what is not there is fine.
    names.delete_pod("nope", "nope");
    names.delete_endpoint_slice("nope", "nope");
    names.delete_service("nope", "nope");
}

#[test]
fn a_slice_moving_to_another_service() {
    let mut names = populated();
    names.apply_service(&headless_service("default", "db2"));
    names.apply_endpoint_slice(&endpoint_slice(
        "default",
        "db-x1",
        "db2",
        &[("10.244.1.5", Some("db-0"), Some(true))],
    ));
    assert_eq!(
        names.lookup("db.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        found(names.lookup("db-0.db2.default.svc.cluster.local", QueryType::A)),
        [a("10.244.1.5")]
    );
}

#[test]
fn relist_replaces_state() {
    let mut names = populated();
    names.replace_all(
        &[cluster_ip_service("prod", "api", &["10.96.1.1"])],
        &[],
        &[running_pod("prod", "api-0", &["10.244.9.9"])],
    );
    assert!(names.is_complete());
    assert_eq!(names.counts(), (1, 0, 1));
    assert_eq!(
        names.lookup("web.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("db-0.db.default.svc.cluster.local", QueryType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        names.lookup("10.0.96.10.in-addr.arpa", QueryType::Ptr),
        Lookup::NotOurs
    );
    assert_eq!(
        names.lookup("5.1.244.10.in-addr.arpa", QueryType::Ptr),
        Lookup::NotOurs
    );
    assert!(matches!(
        names.lookup("api.prod.svc.cluster.local", QueryType::A),
        Lookup::Found(_)
    ));
    assert!(matches!(
        names.lookup("10-244-9-9.prod.pod.cluster.local", QueryType::A),
        Lookup::Found(_)
    ));

    // A relist of one kind leaves the others alone.
    names.replace_pods([]);
    assert_eq!(names.counts(), (1, 0, 0));
    assert!(matches!(
        names.lookup("api.prod.svc.cluster.local", QueryType::A),
        Lookup::Found(_)
    ));
}

#[test]
fn resolve_host_follows_the_search_path() {
    let names = populated();
    let v = |list: &[&str]| Some(list.iter().map(|s| ip(s)).collect::<Vec<_>>());
    assert_eq!(
        names.resolve_host("web", Some("default")),
        v(&["10.96.0.10", "fd00::10"])
    );
    assert_eq!(names.resolve_host("web", Some("shop")), None);
    assert_eq!(names.resolve_host("web", None), None);
    assert_eq!(
        names.resolve_host("web.default", Some("shop")),
        v(&["10.96.0.10", "fd00::10"])
    );
    assert_eq!(
        names.resolve_host("web.default.svc", None),
        v(&["10.96.0.10", "fd00::10"])
    );
    assert_eq!(
        names.resolve_host("WEB.default.svc.cluster.local.", None),
        v(&["10.96.0.10", "fd00::10"])
    );
    assert_eq!(
        names.resolve_host("db-0.db.default.svc.cluster.local", None),
        v(&["10.244.1.5"])
    );
    assert_eq!(
        names.resolve_host("db-0.db", Some("default")),
        v(&["10.244.1.5"])
    );
    assert_eq!(
        names.resolve_host("db", Some("default")),
        v(&["10.244.1.5", "10.244.1.6", "10.244.1.8"])
    );
    assert_eq!(
        names.resolve_host("alias.shop", None),
        v(&["10.96.0.10", "fd00::10"])
    );
    assert_eq!(
        names.resolve_host("10-244-2-9.default.pod", None),
        v(&["10.244.2.9"])
    );
    // ExternalName to the outside, outside names, unknown names: a real resolver decides.
    assert_eq!(names.resolve_host("ext.default", None), None);
    assert_eq!(names.resolve_host("example.com", Some("default")), None);
    assert_eq!(names.resolve_host("nope", Some("default")), None);
    assert_eq!(names.resolve_host("web.", Some("default")), None);
    assert_eq!(names.resolve_host("", Some("default")), None);
    // Literals.
    assert_eq!(names.resolve_host("10.1.2.3", None), v(&["10.1.2.3"]));
    assert_eq!(names.resolve_host("[fd00::1]", None), v(&["fd00::1"]));
}

#[test]
fn objects_without_names_or_labels_are_ignored() {
    let mut names = ClusterNames::new("cluster.local");
    names.apply_service(&service(
        json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "10.0.0.1"}}),
    ));
    names.apply_endpoint_slice(&slice(
        json!({"metadata": {"name": "s", "namespace": "default"},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.1.1"]}]}),
    ));
    names.apply_endpoint_slice(&slice(
        json!({"metadata": {"name": "f", "namespace": "default",
        "labels": {"kubernetes.io/service-name": "x"}},
        "addressType": "FQDN", "endpoints": [{"addresses": ["example.com"]}]}),
    ));
    names.apply_service(&service(
        json!({"metadata": {"name": "bad", "namespace": "default"},
        "spec": {"clusterIP": "not-an-ip", "ports": [{"name": "p", "port": 70000}]}}),
    ));
    assert_eq!(names.counts(), (1, 1, 0));
    names.set_complete(true);
    assert_eq!(
        names.lookup("bad.default.svc.cluster.local", QueryType::A),
        Lookup::NoData
    );
    assert_eq!(
        names.lookup("_p._tcp.bad.default.svc.cluster.local", QueryType::Srv),
        Lookup::NxDomain
    );
}

#[test]
fn reverse_and_dashed_parsers() {
    assert_eq!(parse_reverse("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
    assert_eq!(parse_reverse("04.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
    assert_eq!(parse_reverse("+4.3.2.1.in-addr.arpa"), None);
    assert_eq!(parse_reverse("4.3.2.1.0.in-addr.arpa"), None);
    assert_eq!(parse_reverse("in-addr.arpa"), None);
    assert_eq!(parse_reverse(".ip6.arpa"), None);
    assert_eq!(parse_dashed("1-2-3-4"), Some(ip("1.2.3.4")));
    assert_eq!(parse_dashed("fd00--1"), Some(ip("fd00::1")));
    assert_eq!(parse_dashed("1-2-3-256"), None);
    assert_eq!(parse_dashed("::ffff:1.2.3.4"), None);
    assert_eq!(parse_dashed(""), None);
    assert_eq!(dashed(ip("fd00::1")), "fd00--1");
}

#[test]
fn addresses_are_classified_by_what_the_api_proves() {
    let mut names = populated();
    for addr in ["10.96.0.10", "fd00::10"] {
        assert_eq!(names.classify(ip(addr)), AddressKind::ServiceIp, "{addr}");
    }
    // Pod IPs; an endpoint address owned by a pod is a pod's.
    for addr in ["10.244.1.5", "10.244.2.9", "fd00:244::9"] {
        assert_eq!(names.classify(ip(addr)), AddressKind::Pod, "{addr}");
    }
    // An endpoint address no pod owns proves nothing.
    assert_eq!(
        names.classify(ip("10.244.1.6")),
        AddressKind::Endpoint {
            namespace: "default",
            slice: "db-x1",
            service: "db"
        }
    );
    for addr in ["10.96.0.11", "192.0.2.1", "169.254.169.254"] {
        assert_eq!(names.classify(ip(addr)), AddressKind::Unknown, "{addr}");
    }
    names.delete_service("default", "web");
    assert_eq!(names.classify(ip("10.96.0.10")), AddressKind::Unknown);
}

#[test]
fn selector_less_endpoints_and_node_addresses_are_not_pods() {
    let mut names = populated();
    // A selector-less Service whose slice lists an office PC, with a targetRef naming a real
    // pod: the pod does not own that address, so it stays an endpoint address.
    names.apply_service(&cluster_ip_service("evil", "office", &["10.96.0.99"]));
    names.apply_endpoint_slice(&slice(json!({
        "metadata": {"name": "office-1", "namespace": "evil",
            "labels": {"kubernetes.io/service-name": "office"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.16.1.11"],
            "targetRef": {"kind": "Pod", "namespace": "default", "name": "db-0"}}],
        "ports": [{"name": "ssh", "port": 22}]
    })));
    assert_eq!(
        names.classify(ip("172.16.1.11")),
        AddressKind::Endpoint {
            namespace: "evil",
            slice: "office-1",
            service: "office"
        }
    );
    // The API server's endpoints are the control plane's node address.
    names.apply_service(&cluster_ip_service("default", "kubernetes", &["10.96.0.1"]));
    names.apply_endpoint_slice(&endpoint_slice(
        "default",
        "kubernetes",
        "kubernetes",
        &[("10.4.7.11", None, Some(true))],
    ));
    assert_eq!(
        names.classify(ip("10.4.7.11")),
        AddressKind::ApiServerEndpoint
    );
    assert_eq!(names.classify(ip("10.96.0.1")), AddressKind::ServiceIp);
    // A host-network pod behind a Service: its node's address, even though a slice lists it.
    names.apply_pod(&pod(json!({
        "metadata": {"name": "exporter-x", "namespace": "monitoring"},
        "spec": {"hostNetwork": true, "containers": []},
        "status": {"phase": "Running", "podIP": "10.4.7.12", "podIPs": [{"ip": "10.4.7.12"}]}
    })));
    names.apply_endpoint_slice(&endpoint_slice(
        "monitoring",
        "exporter-1",
        "exporter",
        &[("10.4.7.12", None, Some(true))],
    ));
    assert_eq!(
        names.classify(ip("10.4.7.12")),
        AddressKind::HostNetworkPod {
            namespace: "monitoring",
            name: "exporter-x"
        }
    );
    // It moves off host networking (same name, new spec): the index follows.
    names.apply_pod(&running_pod("monitoring", "exporter-x", &["10.244.3.3"]));
    assert_eq!(names.classify(ip("10.244.3.3")), AddressKind::Pod);
    assert!(matches!(
        names.classify(ip("10.4.7.12")),
        AddressKind::Endpoint { .. }
    ));
    names.delete_pod("monitoring", "exporter-x");
    assert!(matches!(
        names.classify(ip("10.244.3.3")),
        AddressKind::Unknown
    ));
}
