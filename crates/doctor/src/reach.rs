//! Reachability: one ready pod on each node, the cluster DNS ClusterIP and one Service
//! (TCP connections from this host), and the return-path fault: pods on one node answer
//! and pods on another do not, or a Service works only when it picks a pod on the node
//! that did its NAT.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;

use crate::{Report, Verdict};

/// The result of one TCP probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Connected (or the far end answered with a reset: the path works).
    Reached,
    /// No answer in time.
    Timeout,
    /// An error such as "network unreachable" (an ICMP error from a router).
    Error(String),
}

pub(crate) async fn probe_tcp(addr: SocketAddr, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Reached,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Reached,
        Ok(Err(e)) => Probe::Error(e.to_string()),
        Err(_) => Probe::Timeout,
    }
}

pub(crate) fn describe(p: &Probe) -> String {
    match p {
        Probe::Reached => "reached".into(),
        Probe::Timeout => "no answer".into(),
        Probe::Error(e) => e.clone(),
    }
}

/// A pod to probe: name, node, address and port.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) addr: SocketAddr,
}

pub(crate) fn unreachable_fix(p: &Probe, via: Option<IpAddr>) -> String {
    match (p, via) {
        (Probe::Error(e), Some(gw)) if e.contains("unreachable") => format!(
            "a router between here and {gw} has no route to the cluster prefixes: add the routes `kubelan routes --gateway {gw}` prints on the office router"
        ),
        (Probe::Error(e), None) if e.contains("unreachable") => {
            "this host has no route to the cluster prefixes: run `sudo kubelan connect`, or route them to a kubelan gateway".into()
        }
        (_, Some(gw)) => format!(
            "packets leave but nothing comes back: is `kubelan gateway` running on {gw}, and does the cluster route replies back (see the return-path check)?"
        ),
        _ => "packets leave but nothing comes back: check the gateway, the node's firewall and the pod".into(),
    }
}

/// Ready pods with a TCP port (a declared container port, else a readiness probe's).
pub(crate) async fn pod_targets(client: &kube::Client) -> Vec<Target> {
    let Ok(pods) = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in pods.items {
        let Some(spec) = &p.spec else { continue };
        let Some(status) = &p.status else { continue };
        if spec.host_network == Some(true) {
            continue;
        }
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let (Some(ip), Some(node)) = (
            status
                .pod_ip
                .as_deref()
                .and_then(|i| i.parse::<IpAddr>().ok()),
            spec.node_name.clone(),
        ) else {
            continue;
        };
        let port = spec.containers.iter().find_map(|c| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .map(|p| p.container_port)
        });
        let (Some(port), true) = (port.and_then(|p| u16::try_from(p).ok()), ready) else {
            continue;
        };
        out.push(Target {
            name: format!(
                "{}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            ),
            node,
            addr: SocketAddr::new(ip, port),
        });
    }
    out
}

pub(crate) fn first_per_node(targets: &[Target]) -> Vec<Target> {
    let mut seen = std::collections::BTreeSet::new();
    // Prefer workload pods over kube-system ones.
    let mut sorted: Vec<&Target> = targets.iter().collect();
    sorted.sort_by_key(|t| (t.name.starts_with("kube-system/"), t.name.clone()));
    sorted
        .into_iter()
        .filter(|t| seen.insert(t.node.clone()))
        .cloned()
        .collect()
}

/// A Service with a ClusterIP and TCP port whose ready endpoints are on at least two
/// nodes (the return-path check needs one), else any such Service; with its node spread.
pub(crate) async fn spread_service(
    client: &kube::Client,
    targets: &[Target],
) -> Option<(String, SocketAddr, usize)> {
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let mut best: Option<(String, SocketAddr, usize)> = None;
    for s in services.items {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        if ns == "kube-system" || (ns == "default" && name == "kubernetes") {
            continue;
        }
        let Some(spec) = &s.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|i| i.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let Some(port) = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        else {
            continue;
        };
        let Ok(port) = u16::try_from(port.port) else {
            continue;
        };
        let nodes: std::collections::BTreeSet<String> = slices
            .items
            .iter()
            .filter(|sl| {
                sl.metadata.namespace.as_deref() == Some(ns.as_str())
                    && sl
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(kubelan_cluster::names::LABEL_SERVICE_NAME))
                        == Some(&name)
            })
            .flat_map(|sl| sl.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| {
                e.node_name.clone().or_else(|| {
                    let ip: IpAddr = e.addresses.first()?.parse().ok()?;
                    targets
                        .iter()
                        .find(|t| t.addr.ip() == ip)
                        .map(|t| t.node.clone())
                })
            })
            .collect();
        if nodes.is_empty() {
            continue;
        }
        let candidate = (
            format!("{ns}/{name}"),
            SocketAddr::new(ip, port),
            nodes.len(),
        );
        if best.as_ref().is_none_or(|b| candidate.2 > b.2) {
            best = Some(candidate);
        }
    }
    best
}

/// One line of the return-path step: verdict, what, fix.
type Finding = (Verdict, String, Option<String>);

/// The return path judged from the pod probes alone: `Some` when they settle it (pods on
/// some nodes answer and on others not, or nothing to compare with a Service), `None`
/// when the Service at `spread` should be probed.
fn return_path_by_pods(
    by_node: &BTreeMap<String, Vec<(Target, Probe)>>,
    spread: Option<&(String, SocketAddr, usize)>,
) -> Option<Option<Finding>> {
    let ok_nodes: Vec<&String> = by_node
        .iter()
        .filter(|(_, ps)| ps.iter().all(|(_, p)| *p == Probe::Reached))
        .map(|(n, _)| n)
        .collect();
    let bad_nodes: Vec<&String> = by_node
        .iter()
        .filter(|(_, ps)| ps.iter().any(|(_, p)| *p != Probe::Reached))
        .map(|(n, _)| n)
        .collect();
    if !ok_nodes.is_empty() && !bad_nodes.is_empty() {
        return Some(Some((
            Verdict::Fail,
            format!(
                "pods on {} answer, pods on {} do not: those nodes have no route back to this client",
                join(&ok_nodes),
                join(&bad_nodes)
            ),
            Some("run the gateway with SNAT (without --no-snat), or add a route to the LAN on every node".into()),
        )));
    }
    let Some((_, _, nodes)) = spread else {
        return Some(None);
    };
    if *nodes < 2 || bad_nodes.len() == by_node.len() {
        return Some(Some((
            Verdict::Skip,
            "needs a Service with ready pods on two nodes and reachable pods".into(),
            None,
        )));
    }
    None
}

/// The return path judged from `tried` connections to Services of which `failed` got no
/// answer (8 of them to `svc` at `addr`, whose pods are on `nodes` nodes), in `secs`.
fn return_path_by_services(
    (svc, addr, nodes): &(String, SocketAddr, usize),
    tried: usize,
    failed: usize,
    secs: f64,
) -> Finding {
    if failed == 0 {
        (
            Verdict::Pass,
            format!(
                "{tried} connections to Services (8 to {svc} at {addr}, pods on {nodes} nodes) all answered in {secs:.1} s"
            ),
            None,
        )
    } else {
        (
            Verdict::Fail,
            format!(
                "{failed} of {tried} connections to Services (8 to {svc} at {addr}) got no answer while every pod answers on its own IP: replies of pods on another node than the one that did the Service NAT go straight back to the client, which drops them (the seed-001 return-path fault)"
            ),
            Some("run the gateway with SNAT (without --no-snat), or set kube-proxy's masqueradeAll: true".into()),
        )
    }
}

/// Seed 001: pods on one node reachable, on another not; or a Service that works only when
/// the chosen pod sits on the node that did the Service NAT.
pub(crate) async fn check_return_path(
    r: &mut Report<'_>,
    by_node: &BTreeMap<String, Vec<(Target, Probe)>>,
    spread: Option<&(String, SocketAddr, usize)>,
    earlier: (usize, usize),
    timeout: Duration,
) {
    if let Some(settled) = return_path_by_pods(by_node, spread) {
        if let Some((verdict, what, fix)) = settled {
            r.add("return", verdict, what, fix);
        }
        return;
    }
    let Some(spread) = spread else {
        return; // settled above: nothing to probe
    };
    // Several connections so that the Service picks pods on more than one node; the
    // Service probes above count too (a single lost reply is already the fault).
    let started = Instant::now();
    let attempts = 8;
    let results =
        futures::future::join_all((0..attempts).map(|_| probe_tcp(spread.1, timeout))).await;
    let failed = results.iter().filter(|p| **p != Probe::Reached).count() + earlier.1;
    let tried = attempts + earlier.0;
    let (verdict, what, fix) =
        return_path_by_services(spread, tried, failed, started.elapsed().as_secs_f64());
    r.add("return", verdict, what, fix);
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, node: &str) -> Target {
        Target {
            name: name.into(),
            node: node.into(),
            addr: "172.17.32.9:80".parse().unwrap(),
        }
    }

    #[test]
    fn one_pod_per_node_workloads_first() {
        let t = [
            target("kube-system/coredns-1", "node1"),
            target("shop/web-2", "node1"),
            target("shop/web-1", "node2"),
            target("kube-system/coredns-2", "node3"),
        ];
        let picked: Vec<String> = first_per_node(&t).into_iter().map(|t| t.name).collect();
        assert_eq!(
            picked,
            ["shop/web-1", "shop/web-2", "kube-system/coredns-2"].map(String::from)
        );
    }

    #[test]
    fn the_fix_reads_the_probe_and_where_doctor_runs() {
        let unreachable = Probe::Error("Network is unreachable (os error 101)".into());
        let gw = Some("10.4.7.11".parse().unwrap());
        assert!(
            unreachable_fix(&unreachable, gw)
                .starts_with("a router between here and 10.4.7.11 has no route")
        );
        assert!(
            unreachable_fix(&unreachable, None)
                .starts_with("this host has no route to the cluster prefixes")
        );
        assert!(
            unreachable_fix(&Probe::Timeout, gw)
                .contains("is `kubelan gateway` running on 10.4.7.11")
        );
        assert_eq!(
            unreachable_fix(&Probe::Timeout, None),
            "packets leave but nothing comes back: check the gateway, the node's firewall and the pod"
        );
        assert_eq!(describe(&Probe::Reached), "reached");
        assert_eq!(describe(&Probe::Timeout), "no answer");
    }

    fn probed(nodes: &[(&str, Probe)]) -> BTreeMap<String, Vec<(Target, Probe)>> {
        nodes
            .iter()
            .map(|(n, p)| (n.to_string(), vec![(target("shop/web", n), p.clone())]))
            .collect()
    }

    #[test]
    fn pods_answering_on_one_node_only_is_the_return_path_fault() {
        let spread = (
            "shop/web".to_string(),
            "172.17.16.20:80".parse().unwrap(),
            2,
        );
        let mixed = probed(&[("node1", Probe::Reached), ("node2", Probe::Timeout)]);
        let f = return_path_by_pods(&mixed, Some(&spread)).unwrap().unwrap();
        assert_eq!(f.0, Verdict::Fail);
        assert_eq!(
            f.1,
            "pods on node1 answer, pods on node2 do not: those nodes have no route back to this client"
        );
        let all = probed(&[("node1", Probe::Reached), ("node2", Probe::Reached)]);
        assert_eq!(return_path_by_pods(&all, Some(&spread)), None);
        assert_eq!(return_path_by_pods(&all, None), Some(None));
        let one_node = ("shop/web".to_string(), spread.1, 1);
        assert_eq!(
            return_path_by_pods(&all, Some(&one_node))
                .unwrap()
                .unwrap()
                .0,
            Verdict::Skip
        );
        let none = probed(&[("node1", Probe::Timeout), ("node2", Probe::Timeout)]);
        assert_eq!(
            return_path_by_pods(&none, Some(&spread))
                .unwrap()
                .unwrap()
                .0,
            Verdict::Skip
        );
    }

    #[test]
    fn lost_service_replies_are_the_return_path_fault() {
        let spread = (
            "shop/web".to_string(),
            "172.17.16.20:80".parse().unwrap(),
            2,
        );
        let ok = return_path_by_services(&spread, 10, 0, 0.04);
        assert_eq!(
            (ok.0, ok.1.as_str()),
            (
                Verdict::Pass,
                "10 connections to Services (8 to shop/web at 172.17.16.20:80, pods on 2 nodes) all answered in 0.0 s"
            )
        );
        let bad = return_path_by_services(&spread, 10, 4, 1.0);
        assert_eq!(bad.0, Verdict::Fail);
        assert!(bad.1.starts_with("4 of 10 connections"), "{}", bad.1);
        assert!(bad.2.unwrap().contains("masqueradeAll"));
    }
}
