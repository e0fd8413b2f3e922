//! The way back for callbacks: can a pod open a connection to a LAN PC (a registry
//! calling back a service that registered from the office, a webhook to a developer's PC),
//! and which address do pods see for a PC?
//!
//! In node mode the LAN reaches the cluster through the gateway, but a pod's own
//! connections to the LAN leave by the routes of *its* node: without a route to the office
//! LAN on every node (or a default route through something that forwards it) they die at
//! whatever router the node's default route names. And with the gateway's SNAT, pods see
//! every PC as the gateway's address, which registries that record the caller's address
//! then hand out as the PC's.
//!
//! How it is checked: one short-lived probe pod per node (`kubelan doctor --probe-serve`,
//! the agent's image, PSS restricted, `restartPolicy: Never`, its own deadline). Each pod
//! dials the LAN target once (one retry after a timeout) as soon as it starts, and answers
//! one JSON report to whoever connects to it: the address it saw that connection come from
//! and how its dial went. When doctor runs on a LAN PC (`--via`), the target is a listener
//! of doctor itself, so doctor also sees which address the pod's connection arrives from.
//! The verdicts are decided by [`findings`], which does no I/O.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::Verdict;

/// The port a probe pod listens on for doctor's connection (in the pod's own network
/// namespace, above 1024 because it runs as non-root).
pub(crate) const PROBE_PORT: u16 = 18790;

/// How long a probe pod lives at most (its own timer; `activeDeadlineSeconds` backs it).
pub(crate) const POD_LIFETIME: Duration = Duration::from_secs(90);

/// Most connections a probe pod answers before it exits.
const POD_MAX_CONNECTIONS: usize = 8;

/// Most bytes of a pod's report doctor reads.
const MAX_REPORT: u64 = 4096;

/// Most nodes probed (one pod each).
pub(crate) const MAX_NODES: usize = 16;

/// How a probe pod's dial to the LAN target went (the `callback` of its report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub(crate) enum Dial {
    /// Connected; `from` is the pod's side of the connection.
    Reached {
        /// The pod's local address of the connection.
        from: SocketAddr,
    },
    /// The target answered with a reset: the path works, nothing listens on that port.
    Refused,
    /// No answer within the time.
    Timeout {
        /// Seconds waited in all.
        secs: f64,
    },
    /// A router answered "network/host unreachable".
    Unreachable {
        /// The error as the pod's kernel reported it.
        error: String,
    },
    /// Any other error.
    Error {
        /// The error.
        error: String,
    },
}

/// What a probe pod answers on [`PROBE_PORT`]: one JSON object, then it closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PodReport {
    /// The address doctor's connection to the pod came from, as the pod saw it.
    pub(crate) seen: SocketAddr,
    /// The pod's dial to the LAN target.
    pub(crate) callback: Dial,
}

impl PodReport {
    /// The report in the bytes a pod sent (JSON, decoded by serde; bad input is an error).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable probe report: {e}"))
    }
}

/// What doctor got from the probe pod of one node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeResult {
    /// The pod did not start (or was not created): why.
    NoPod(String),
    /// The pod runs but doctor could not read its report: why.
    NoReport(String),
    /// The pod's report, and where its connection arrived from when the target was this
    /// host's own listener (`None`: nothing arrived, or the target was another host).
    Report {
        /// The report.
        report: PodReport,
        /// The peer address doctor's listener saw for this pod's dial.
        arrived: Option<SocketAddr>,
    },
}

/// One node: name, node addresses, what its probe pod said.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeProbe {
    /// Node name.
    pub(crate) node: String,
    /// The node's addresses (to name the source of a masqueraded dial).
    pub(crate) addresses: Vec<IpAddr>,
    /// The probe's outcome.
    pub(crate) result: NodeResult,
}

/// Where doctor runs and what the probe pods dialled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Situation {
    /// The LAN address the pods dialled.
    pub(crate) target: SocketAddr,
    /// The target is doctor's own listener on this host (doctor saw the arrivals).
    pub(crate) target_is_here: bool,
    /// This host's own address towards the cluster (a LAN PC's own address).
    pub(crate) own: Option<IpAddr>,
    /// `--via`: the gateway this LAN host uses.
    pub(crate) via: Option<IpAddr>,
    /// Doctor runs on a node-mode gateway: whether it masquerades LAN traffic.
    pub(crate) gateway_snat: Option<bool>,
    /// The office LAN holding the target, when known (for the fix).
    pub(crate) lan: Option<ipnet::IpNet>,
    /// A next hop on the nodes' network that leads to the LAN, when known (for the fix).
    pub(crate) hop: Option<IpAddr>,
}

/// One line of the report: step, verdict, what, fix.
pub(crate) type Finding = (&'static str, Verdict, String, Option<String>);

fn dial_failure(d: &Dial) -> Option<String> {
    match d {
        Dial::Reached { .. } | Dial::Refused => None,
        Dial::Timeout { secs } => Some(format!("no answer in {secs:.0} s")),
        Dial::Unreachable { error } | Dial::Error { error } => Some(error.clone()),
    }
}

/// The report's lines about callbacks (step `callback`) and the address pods see for LAN
/// hosts (step `address`), from what the probe pods said.
pub(crate) fn findings(s: &Situation, nodes: &[NodeProbe]) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let target = s.target;
    let lan = s
        .lan
        .map(|l| l.trunc().to_string())
        .unwrap_or_else(|| format!("the office LAN (the one holding {})", target.ip()));
    let example_hop = s
        .hop
        .or(s.via)
        .map_or_else(|| "<router>".to_string(), |h| h.to_string());
    let hop = match (s.hop, s.via) {
        (Some(h), Some(v)) if h != v => {
            format!("{h} (or the gateway {v}, which forwards)")
        }
        (Some(h), _) => h.to_string(),
        (None, Some(v)) => format!("the gateway {v} (it forwards) or the router behind it"),
        (None, None) => "a router on the nodes' network that leads to the LAN".into(),
    };
    let mut failing: Vec<&str> = Vec::new();
    for n in nodes {
        let node = n.node.as_str();
        match &n.result {
            NodeResult::NoPod(why) => out.push((
                "callback",
                Verdict::Skip,
                format!("{node}: the probe pod did not start: {why}"),
                None,
            )),
            NodeResult::NoReport(why) => out.push((
                "callback",
                Verdict::Skip,
                format!(
                    "{node}: no report from the probe pod: {why} (the pods checks above tell whether this host reaches that node's pods)"
                ),
                None,
            )),
            NodeResult::Report { report, arrived } => match (&report.callback, arrived) {
                (Dial::Reached { from }, Some(a)) => {
                    let source = if a.ip() == from.ip() {
                        format!("the pod's own address {}", a.ip())
                    } else if n.addresses.contains(&a.ip()) {
                        format!(
                            "{}, {node}'s address (the node masquerades pod traffic that leaves the Pod network)",
                            a.ip()
                        )
                    } else {
                        format!(
                            "{} (translated on the way, not the pod's {})",
                            a.ip(),
                            from.ip()
                        )
                    };
                    out.push((
                        "callback",
                        Verdict::Pass,
                        format!("pods on {node} open connections to {target}; they arrive from {source}"),
                        None,
                    ));
                }
                (Dial::Reached { .. }, None) if s.target_is_here => out.push((
                    "callback",
                    Verdict::Warn,
                    format!(
                        "pods on {node} connected to {target}, but the connection never arrived at this host: something on the way answers for {} (a proxy, or another host with that address)",
                        target.ip()
                    ),
                    None,
                )),
                (Dial::Reached { .. }, None) => out.push((
                    "callback",
                    Verdict::Pass,
                    format!("pods on {node} open connections to {target}"),
                    None,
                )),
                (Dial::Refused, _) => out.push((
                    "callback",
                    Verdict::Pass,
                    format!(
                        "pods on {node} reach {} (refused: it answers, but nothing listens on port {})",
                        target.ip(),
                        target.port()
                    ),
                    None,
                )),
                (d, _) => {
                    let why = dial_failure(d).unwrap_or_default();
                    let cause = match d {
                        Dial::Timeout { .. } => format!(
                            "{node} sends it where it is dropped (its default route?), or a firewall drops it"
                        ),
                        _ => format!(
                            "{node} has no route back to {lan}, and the router its default route names has none either"
                        ),
                    };
                    failing.push(node);
                    out.push((
                        "callback",
                        Verdict::Fail,
                        format!(
                            "pods on {node} cannot open a connection to {target} ({why}): {cause}; callbacks from the cluster (registries, webhooks) to the LAN fail"
                        ),
                        Some(format!(
                            "add a route to {lan} via {hop} on {node}{} (e.g. `ip route add {lan} via {example_hop}`), or run `kubelan expose {}:PORT --name NAME` on a tunnel gateway so pods call a Service instead",
                            if nodes.len() > 1 { " and every other node" } else { "" },
                            target.ip()
                        )),
                    ));
                }
            },
        }
    }
    let reached = nodes.iter().any(|n| {
        matches!(
            &n.result,
            NodeResult::Report { report, .. } if dial_failure(&report.callback).is_none()
        )
    });
    let callbacks_note = if failing.is_empty() {
        ""
    } else {
        ", once the nodes route it back (see callback)"
    };
    // Which address pods see for a LAN host: measured from a LAN PC, else told by the
    // gateway's own rules. Pods on the gateway's own node see the address of its interface
    // towards them (masquerade picks the outgoing interface's), so every node's answer
    // counts, and the gateway's (`--via`) is the one to name.
    let mut seen: Vec<(IpAddr, &str)> = nodes
        .iter()
        .filter_map(|n| match &n.result {
            NodeResult::Report { report, .. } => Some((report.seen.ip(), n.node.as_str())),
            _ => None,
        })
        .collect();
    seen.sort_by_key(|(ip, _)| (Some(*ip) != s.own, Some(*ip) != s.via, *ip));
    let others: Vec<String> = seen
        .iter()
        .skip(1)
        .filter(|(ip, _)| Some(*ip) != seen.first().map(|f| f.0))
        .map(|(ip, node)| format!("pods on {node} see {ip}"))
        .collect();
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(
            "; {}, the address of the gateway's interface towards them",
            others.join(", ")
        )
    };
    let seen = seen.first().map(|f| f.0);
    const REGISTRIES: &str = "a registry that records the caller's address (Eureka, Nacos, Consul, ZooKeeper/Dubbo without an explicit IP)";
    const REGISTER_OWN: &str = "make the application register its own address explicitly (Spring Cloud: spring.cloud.nacos.discovery.ip, eureka.instance.ip-address, spring.cloud.consul.discovery.ip-address; Dubbo: DUBBO_IP_TO_REGISTRY), or run the gateway with --no-snat (every node then needs the route back to the LAN)";
    match (s.own, seen, s.gateway_snat) {
        (Some(own), Some(seen), _) if seen == own => out.push((
            "address",
            Verdict::Info,
            format!(
                "pods see this host as {own}, its own address: {REGISTRIES} hands pods an address that leads back here{callbacks_note}"
            ),
            None,
        )),
        (Some(own), Some(seen), _) => {
            let whose = if Some(seen) == s.via {
                format!("the gateway's address (it masquerades LAN traffic{others})")
            } else {
                match others.strip_prefix("; ") {
                    Some(o) => format!("an address a NAT on the way gives it ({o})"),
                    None => "an address a NAT on the way gives it".to_string(),
                }
            };
            out.push((
                "address",
                Verdict::Info,
                format!(
                    "pods see this host as {seen}, {whose}, not as its own {own}: {REGISTRIES} hands pods {seen}, which does not lead back to this host"
                ),
                Some(REGISTER_OWN.into()),
            ));
        }
        (_, _, Some(true)) => out.push((
            "address",
            Verdict::Info,
            format!(
                "pods see every LAN host as this gateway's address (SNAT): {REGISTRIES} hands pods this gateway's address instead of the PC's"
            ),
            Some(REGISTER_OWN.into()),
        )),
        (_, _, Some(false)) => out.push((
            "address",
            Verdict::Info,
            format!(
                "pods see LAN hosts' own addresses (--no-snat): {REGISTRIES} hands pods addresses that lead back to the PCs{}",
                if reached || failing.is_empty() { "" } else { callbacks_note }
            ),
            None,
        )),
        _ => {}
    }
    out
}

/// Which LAN target and where it lives, decided from the flags: `--callback-to` wins,
/// else on a LAN PC (`--via`) doctor's own listener, else nothing to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Dial this address (another host's port).
    Given(SocketAddr),
    /// Dial a listener of doctor on this host's address towards the cluster.
    Here,
    /// No target: doctor runs on the gateway itself without `--callback-to`.
    Unknown,
    /// Not a LAN setup (a laptop): the check does not apply.
    NotApplicable,
}

/// The target for the flags and whether a node-mode gateway runs here.
pub(crate) fn choose_target(
    callback_to: Option<SocketAddr>,
    via: Option<IpAddr>,
    gateway_here: bool,
) -> Target {
    match (callback_to, via, gateway_here) {
        (Some(t), _, _) => Target::Given(t),
        (None, Some(_), _) => Target::Here,
        (None, None, true) => Target::Unknown,
        (None, None, false) => Target::NotApplicable,
    }
}

// ---------------------------------------------------------------------------------------
// The probe pod's side (`kubelan doctor --probe-serve`).

fn classify(e: &std::io::Error) -> Dial {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => Dial::Refused,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Dial::Unreachable {
            error: e.to_string(),
        },
        _ => Dial::Error {
            error: e.to_string(),
        },
    }
}

/// One dial of the LAN target, with one retry after a timeout (twice as long), so that a
/// busy machine is not taken for a broken path. On success the token goes first on the
/// connection, so the listener on the target can tell which pod it is.
async fn dial(target: SocketAddr, token: &str, timeout: Duration) -> Dial {
    let mut waited = Duration::ZERO;
    for t in [timeout, timeout * 2] {
        waited += t;
        match tokio::time::timeout(t, TcpStream::connect(target)).await {
            Ok(Ok(mut s)) => {
                let from = s
                    .local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                let line = format!("{token}\n");
                let _ = tokio::time::timeout(timeout, s.write_all(line.as_bytes())).await;
                let _ = s.shutdown().await;
                return Dial::Reached { from };
            }
            Ok(Err(e)) => return classify(&e),
            Err(_) => {}
        }
    }
    Dial::Timeout {
        secs: waited.as_secs_f64(),
    }
}

/// The probe pod: dial `target` once, answer the report to at most
/// 8 connections on `listen`, exit after 90 s (the probe pod's lifetime).
///
/// # Errors
/// When `listen` cannot be bound.
pub async fn serve_probe(
    listen: SocketAddr,
    target: SocketAddr,
    token: String,
    timeout: Duration,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let (result_tx, result_rx) = tokio::sync::watch::channel(None::<Dial>);
    tokio::spawn(async move {
        let d = dial(target, &token, timeout).await;
        let _ = result_tx.send(Some(d));
    });
    let deadline = tokio::time::Instant::now() + POD_LIFETIME;
    let mut served = 0;
    while served < POD_MAX_CONNECTIONS {
        let Ok(accepted) = tokio::time::timeout_at(deadline, listener.accept()).await else {
            break;
        };
        let Ok((mut conn, peer)) = accepted else {
            continue;
        };
        served += 1;
        let mut rx = result_rx.clone();
        tokio::spawn(async move {
            // The dial takes at most 3 × timeout; wait a little longer than that.
            let wait = timeout * 3 + Duration::from_secs(2);
            let callback = match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
                Ok(Ok(d)) => d.clone().unwrap_or(Dial::Error {
                    error: "no result".into(),
                }),
                _ => Dial::Error {
                    error: "the dial did not finish".into(),
                },
            };
            let report = PodReport {
                seen: peer,
                callback,
            };
            if let Ok(mut text) = serde_json::to_vec(&report) {
                text.push(b'\n');
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.write_all(&text)).await;
                let _ = conn.shutdown().await;
            }
        });
    }
    // Let the last answers go out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Doctor's side: the listener on a LAN PC, and reading a pod's report.

/// Doctor's listener on this host: records the first line (a token) and the peer of each
/// connection, at most 64 connections, until dropped.
pub(crate) struct Arrivals {
    /// The address pods dial.
    pub(crate) addr: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<(String, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl Arrivals {
    /// Listens on `ip` (an ephemeral port).
    pub(crate) async fn listen(ip: IpAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            for _ in 0..64 {
                let Ok((mut conn, peer)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::with_capacity(64);
                    let mut limited = (&mut conn).take(64);
                    if tokio::time::timeout(Duration::from_secs(3), limited.read_to_end(&mut buf))
                        .await
                        .is_ok()
                    {
                        let token = String::from_utf8_lossy(&buf).trim().to_string();
                        let _ = tx.send((token, peer)).await;
                    }
                });
            }
        });
        Ok(Self { addr, rx, task })
    }

    /// Tokens seen so far → peer address, waiting up to `grace` for late ones.
    pub(crate) async fn collect(
        &mut self,
        want: usize,
        grace: Duration,
    ) -> BTreeMap<String, SocketAddr> {
        let mut out = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + grace;
        while out.len() < want {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((token, peer))) => {
                    out.insert(token, peer);
                }
                _ => break,
            }
        }
        out
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to a probe pod and reads its report: a few attempts (the pod may be running
/// before it listens), all within `budget`.
pub(crate) async fn fetch_report(pod: SocketAddr, budget: Duration) -> Result<PodReport, String> {
    let deadline = tokio::time::Instant::now() + budget;
    let mut last = String::from("no answer");
    for _ in 0..6 {
        let attempt = async {
            let mut s = TcpStream::connect(pod).await.map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            (&mut s)
                .take(MAX_REPORT)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| e.to_string())?;
            PodReport::decode(&buf)
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => last = e,
            Err(_) => return Err(format!("{last} within {:.0} s", budget.as_secs_f64())),
        }
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(500)))
            .await
            .is_err()
        {
            break;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A LAN PC (`--via 10.4.7.11`) whose listener is the target.
    fn on_pc() -> Situation {
        Situation {
            target: sa("172.16.1.11:40000"),
            target_is_here: true,
            own: Some(ip("172.16.1.11")),
            via: Some(ip("10.4.7.11")),
            gateway_snat: None,
            lan: Some("172.16.0.0/18".parse().unwrap()),
            hop: None,
        }
    }

    fn report(seen: &str, callback: Dial) -> PodReport {
        PodReport {
            seen: sa(seen),
            callback,
        }
    }

    fn node(name: &str, addr: &str, result: NodeResult) -> NodeProbe {
        NodeProbe {
            node: name.into(),
            addresses: vec![ip(addr)],
            result,
        }
    }

    fn reached(seen: &str, from: &str, arrived: &str) -> NodeResult {
        NodeResult::Report {
            report: report(
                seen,
                Dial::Reached {
                    from: sa(&format!("{from}:33000")),
                },
            ),
            arrived: Some(sa(&format!("{arrived}:33000"))),
        }
    }

    #[test]
    fn nodes_that_route_back_pass_and_name_the_masquerading_node() {
        let nodes = [
            node(
                "node1",
                "10.4.7.11",
                // The gateway's own node: its bridge address.
                reached("172.17.32.1:5000", "172.17.32.9", "10.4.7.11"),
            ),
            node(
                "node2",
                "10.4.7.12",
                reached("10.4.7.11:5001", "172.17.33.9", "10.4.7.12"),
            ),
        ];
        let f = findings(&on_pc(), &nodes);
        assert_eq!(f.len(), 3, "{f:#?}");
        assert!(
            f[..2]
                .iter()
                .all(|l| l.0 == "callback" && l.1 == Verdict::Pass)
        );
        assert!(
            f[1].2.contains("arrive from 10.4.7.12, node2's address"),
            "{}",
            f[1].2
        );
        // SNAT on the gateway: pods see the gateway, and the fix names what to change.
        let (step, verdict, what, fix) = &f[2];
        assert_eq!((*step, *verdict), ("address", Verdict::Info));
        assert!(
            what.starts_with("pods see this host as 10.4.7.11, the gateway's address (it masquerades LAN traffic; pods on node1 see 172.17.32.1, the address of the gateway's interface towards them), not as its own 172.16.1.11"),
            "{what}"
        );
        assert!(fix.as_deref().unwrap().contains("--no-snat"));
    }

    #[test]
    fn a_node_without_the_route_fails_with_a_fix_naming_route_and_expose() {
        let nodes = [
            node(
                "node1",
                "10.4.7.11",
                reached("172.16.1.11:5000", "172.17.32.9", "172.17.32.9"),
            ),
            node(
                "node2",
                "10.4.7.12",
                NodeResult::Report {
                    report: report(
                        "172.16.1.11:5001",
                        Dial::Unreachable {
                            error: "No route to host (os error 113)".into(),
                        },
                    ),
                    arrived: None,
                },
            ),
        ];
        let f = findings(&on_pc(), &nodes);
        assert_eq!(f[0].1, Verdict::Pass);
        assert!(
            f[0].2.contains("the pod's own address 172.17.32.9"),
            "{}",
            f[0].2
        );
        let (_, verdict, what, fix) = &f[1];
        assert_eq!(*verdict, Verdict::Fail);
        assert_eq!(
            what,
            "pods on node2 cannot open a connection to 172.16.1.11:40000 (No route to host (os error 113)): node2 has no route back to 172.16.0.0/18, and the router its default route names has none either; callbacks from the cluster (registries, webhooks) to the LAN fail"
        );
        let fix = fix.as_deref().unwrap();
        assert!(
            fix.starts_with("add a route to 172.16.0.0/18 via the gateway 10.4.7.11")
                && fix.contains("kubelan expose 172.16.1.11:PORT"),
            "{fix}"
        );
        // No SNAT: pods see the PC itself, but the registry's address only helps once the
        // nodes route it back.
        let (step, verdict, what, fix) = &f[2];
        assert_eq!((*step, *verdict), ("address", Verdict::Info));
        assert!(
            what.contains("as 172.16.1.11, its own address") && what.contains("see callback"),
            "{what}"
        );
        assert!(fix.is_none());
    }

    #[test]
    fn a_timeout_a_refusal_and_missing_pods_read_differently() {
        let mut s = on_pc();
        s.target_is_here = false;
        s.target = sa("172.16.1.12:8080");
        s.hop = Some(ip("10.4.7.1"));
        let nodes = [
            node(
                "a",
                "10.0.0.1",
                NodeResult::Report {
                    report: report("10.4.7.11:1", Dial::Refused),
                    arrived: None,
                },
            ),
            node(
                "b",
                "10.0.0.2",
                NodeResult::Report {
                    report: report("10.4.7.11:2", Dial::Timeout { secs: 6.0 }),
                    arrived: None,
                },
            ),
            node(
                "c",
                "10.0.0.3",
                NodeResult::NoPod("ImagePullBackOff".into()),
            ),
            node("d", "10.0.0.4", NodeResult::NoReport("timed out".into())),
        ];
        let f = findings(&s, &nodes);
        assert_eq!(f[0].1, Verdict::Pass);
        assert!(f[0].2.contains("refused"), "{}", f[0].2);
        assert_eq!(f[1].1, Verdict::Fail);
        assert!(f[1].2.contains("no answer in 6 s"), "{}", f[1].2);
        assert!(
            f[1].3.as_deref().unwrap().contains(
                "via 10.4.7.1 (or the gateway 10.4.7.11, which forwards) on b and every other node"
            ),
            "{:?}",
            f[1].3
        );
        assert_eq!(f[2].1, Verdict::Skip);
        assert!(f[2].2.contains("ImagePullBackOff"));
        assert_eq!(f[3].1, Verdict::Skip);
    }

    #[test]
    fn a_connection_that_never_arrives_here_is_a_warning() {
        let nodes = [node(
            "node1",
            "10.4.7.11",
            NodeResult::Report {
                report: report(
                    "172.16.1.11:1",
                    Dial::Reached {
                        from: sa("172.17.32.9:1"),
                    },
                ),
                arrived: None,
            },
        )];
        let f = findings(&on_pc(), &nodes);
        assert_eq!(f[0].1, Verdict::Warn);
        assert!(f[0].2.contains("never arrived"), "{}", f[0].2);
    }

    #[test]
    fn on_the_gateway_itself_the_address_comes_from_its_snat_rule() {
        let s = Situation {
            target: sa("172.16.1.11:8080"),
            target_is_here: false,
            own: None,
            via: None,
            gateway_snat: Some(true),
            lan: None,
            hop: None,
        };
        let f = findings(&s, &[]);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].2.contains("this gateway's address (SNAT)"),
            "{}",
            f[0].2
        );
        let s = Situation {
            gateway_snat: Some(false),
            ..s
        };
        let f = findings(&s, &[]);
        assert!(f[0].2.contains("own addresses (--no-snat)"), "{}", f[0].2);
        // An unknown LAN is named by the target.
        let nodes = [node(
            "n",
            "10.0.0.1",
            NodeResult::Report {
                report: report(
                    "10.0.0.9:1",
                    Dial::Error {
                        error: "boom".into(),
                    },
                ),
                arrived: None,
            },
        )];
        let f = findings(&s, &nodes);
        assert!(
            f[0].3.as_deref().unwrap().starts_with(
                "add a route to the office LAN (the one holding 172.16.1.11) via a router"
            ),
            "{:?}",
            f[0].3
        );
    }

    #[test]
    fn the_target_follows_the_flags() {
        let t = sa("172.16.1.11:80");
        assert_eq!(choose_target(Some(t), None, true), Target::Given(t));
        assert_eq!(
            choose_target(None, Some(ip("10.4.7.11")), false),
            Target::Here
        );
        assert_eq!(choose_target(None, None, true), Target::Unknown);
        assert_eq!(choose_target(None, None, false), Target::NotApplicable);
    }

    #[test]
    fn reports_round_trip_and_garbage_is_an_error() {
        for r in [
            report(
                "10.4.7.11:5",
                Dial::Reached {
                    from: sa("172.17.32.9:1"),
                },
            ),
            report("10.4.7.11:5", Dial::Refused),
            report("10.4.7.11:5", Dial::Timeout { secs: 3.0 }),
            report("10.4.7.11:5", Dial::Unreachable { error: "x".into() }),
        ] {
            let bytes = serde_json::to_vec(&r).unwrap();
            assert_eq!(PodReport::decode(&bytes).unwrap(), r);
            for cut in 0..bytes.len() {
                assert!(PodReport::decode(&bytes[..cut]).is_err());
            }
        }
        assert!(PodReport::decode(b"\xff\xfe{").is_err());
        assert!(PodReport::decode(br#"{"seen":"x","callback":{"result":"nope"}}"#).is_err());
    }

    #[tokio::test]
    async fn a_probe_pod_reports_its_dial_and_the_caller() {
        // Everything on loopback: a listener standing in for the LAN PC, the probe server.
        let mut arrivals = Arrivals::listen(ip("127.0.0.1")).await.unwrap();
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let server = tokio::spawn(serve_probe(
            listen,
            arrivals.addr,
            "tok-1".into(),
            Duration::from_secs(2),
        ));
        let r = fetch_report(listen, Duration::from_secs(10)).await.unwrap();
        assert_eq!(r.seen.ip(), ip("127.0.0.1"));
        assert!(matches!(r.callback, Dial::Reached { .. }), "{r:?}");
        let got = arrivals.collect(1, Duration::from_secs(3)).await;
        assert!(got.contains_key("tok-1"), "{got:?}");
        server.abort();

        // A port nothing listens on: refused.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        assert_eq!(
            dial(closed_addr, "t", Duration::from_secs(1)).await,
            Dial::Refused
        );
    }
}
