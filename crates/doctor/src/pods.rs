//! The callback check's API side: one short-lived probe pod per node (PSS restricted,
//! gone by itself after its deadline), waiting for them, collecting their reports and
//! deleting them; the verdicts come from [`callback::findings`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kubelan_cluster::discovery::ClusterFacts;
use serde_json::json;

use crate::callback;
use crate::{Options, Report, Verdict};

/// A probe pod's state in a few words: phase, then the container's waiting or terminated
/// reason.
pub(crate) fn pod_state(p: &Pod) -> String {
    let Some(status) = &p.status else {
        return "pending".into();
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let why = status.container_statuses.iter().flatten().find_map(|c| {
        let st = c.state.as_ref()?;
        if let Some(w) = &st.waiting {
            return Some(format!(
                "{} {}",
                w.reason.as_deref().unwrap_or(""),
                w.message.as_deref().unwrap_or("")
            ));
        }
        st.terminated.as_ref().map(|t| {
            format!(
                "exited {} {}",
                t.exit_code,
                t.reason.as_deref().unwrap_or("")
            )
        })
    });
    match why {
        Some(w) => format!("{phase}: {}", w.trim()),
        None => phase.to_string(),
    }
}

/// The probe pod for one node, PSS restricted, gone by itself after its deadline.
fn probe_pod(
    name: &str,
    run: &str,
    node: &str,
    image: &str,
    target: SocketAddr,
    token: &str,
    timeout: Duration,
) -> Result<Pod, serde_json::Error> {
    use kubelan_cluster::names::{AGENT_UID, LABEL_MANAGED_BY, LABEL_NAME};
    let restricted = kubelan_cluster::names::restricted_container_security();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {LABEL_NAME: "kubelan-doctor", LABEL_MANAGED_BY: "kubelan", DOCTOR_RUN_LABEL: run},
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": callback::POD_LIFETIME.as_secs() + 30,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "tolerations": [{"operator": "Exists"}],
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": AGENT_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "probe",
                "image": image,
                "args": [
                    "doctor",
                    "--probe-serve", format!("0.0.0.0:{}", callback::PROBE_PORT),
                    "--probe-target", target.to_string(),
                    "--probe-token", token,
                    "--timeout", timeout.as_secs().to_string(),
                ],
                "ports": [{"containerPort": callback::PROBE_PORT, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                "securityContext": restricted,
            }],
        },
    }))
}

/// The label that marks one doctor run's probe pods.
const DOCTOR_RUN_LABEL: &str = "kubelan.io/doctor-run";

/// The image for probe pods: `--probe-image`, else the installed agent's, else this
/// version's agent image.
async fn probe_image(client: &kube::Client, flag: Option<&str>) -> String {
    use k8s_openapi::api::apps::v1::Deployment;
    use kubelan_cluster::names::{AGENT, DEFAULT_IMAGE, DEFAULT_NAMESPACE};
    if let Some(i) = flag {
        return i.to_string();
    }
    let installed = Api::<Deployment>::namespaced(client.clone(), DEFAULT_NAMESPACE)
        .get(AGENT)
        .await
        .ok()
        .and_then(|d| d.spec?.template.spec?.containers.into_iter().next()?.image);
    installed.unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

/// Callbacks, pod → LAN host, from one probe pod per node; and which address pods see for
/// LAN hosts. Creates the pods in the namespace and always deletes them.
pub(crate) async fn check_callbacks(
    r: &mut Report<'_>,
    cc: &kubelan_cluster::ClusterClient,
    args: &Options,
    facts: &ClusterFacts,
    gateway_snat: Option<bool>,
    timeout: Duration,
) {
    use callback::{NodeProbe, NodeResult, Situation, Target};
    if args.skip_callback {
        return;
    }
    let mut situation = Situation {
        target: SocketAddr::from(([0, 0, 0, 0], 0)),
        target_is_here: false,
        own: None,
        via: args.via,
        gateway_snat,
        lan: None,
        hop: None,
    };
    let mut arrivals = None;
    let report_all = |r: &mut Report<'_>, s: &Situation, nodes: &[NodeProbe]| {
        for (step, verdict, what, fix) in callback::findings(s, nodes) {
            r.add(step, verdict, what, fix);
        }
    };
    match callback::choose_target(args.callback_to, args.via, gateway_snat.is_some()) {
        Target::NotApplicable => return,
        Target::Unknown => {
            r.add(
                "callback",
                Verdict::Skip,
                "to check that pods can call LAN hosts (registry callbacks, webhooks), pass --callback-to PC:PORT, or run `kubelan doctor --via GATEWAY` on a LAN PC".into(),
                None,
            );
            report_all(r, &situation, &[]);
            return;
        }
        Target::Given(t) => {
            situation.target = t;
            // The most specific route to it that is not the default one: the LAN and the
            // next hop this host uses for it.
            if let Ok(routes) = kubelan_sys::net::routes().await
                && let Some(rt) = routes
                    .iter()
                    .filter(|rt| rt.table == 254 && rt.dst.contains(&t.ip()))
                    .filter(|rt| rt.dst.prefix_len() > 0)
                    .max_by_key(|rt| rt.dst.prefix_len())
            {
                situation.lan = Some(rt.dst);
                situation.hop = rt.gateway;
            }
        }
        Target::Here => {
            let towards = facts
                .prefixes()
                .map(|(_, f)| f.value)
                .next()
                .map(|p| p.hosts().next().unwrap_or(p.addr()));
            let Some(own) = towards.and_then(crate::network::own_address_towards) else {
                r.add(
                    "callback",
                    Verdict::Skip,
                    "cannot tell this host's address towards the cluster; pass --callback-to"
                        .into(),
                    None,
                );
                return;
            };
            match callback::Arrivals::listen(own).await {
                Ok(a) => {
                    situation.target = a.addr;
                    arrivals = Some(a);
                }
                Err(e) => {
                    r.add(
                        "callback",
                        Verdict::Skip,
                        format!("cannot listen on {own}: {e}; pass --callback-to"),
                        None,
                    );
                    return;
                }
            }
            situation.target_is_here = true;
            situation.own = Some(own);
            situation.lan = kubelan_sys::net::addresses()
                .await
                .ok()
                .and_then(|a| a.into_iter().find(|a| a.net.addr() == own))
                .map(|a| a.net.trunc())
                .filter(|n| n.prefix_len() < n.max_prefix_len());
        }
    }

    // The nodes, at most MAX_NODES of them.
    let nodes = match kubelan_cluster::discovery::nodes::list_nodes(&cc.client, None).await {
        Ok(l) => l,
        Err(e) => {
            r.add(
                "callback",
                Verdict::Skip,
                format!("cannot list nodes: {e}"),
                None,
            );
            return;
        }
    };
    let mut nodes: Vec<(String, Vec<IpAddr>)> =
        nodes.into_iter().map(|n| (n.name, n.all)).collect();
    nodes.sort();
    if nodes.len() > callback::MAX_NODES {
        r.add(
            "callback",
            Verdict::Info,
            format!(
                "probing the first {} of {} nodes",
                callback::MAX_NODES,
                nodes.len()
            ),
            None,
        );
        nodes.truncate(callback::MAX_NODES);
    }
    let image = probe_image(&cc.client, args.probe_image.as_deref()).await;
    let pods: Api<Pod> = Api::namespaced(cc.client.clone(), &cc.namespace);
    let run = format!("{:08x}", rand::random::<u32>());
    let mut results: BTreeMap<String, NodeResult> = BTreeMap::new();
    let mut created: Vec<(String, String, String)> = Vec::new(); // node, pod, token
    for (i, (node, _)) in nodes.iter().enumerate() {
        let name = format!("kubelan-doctor-{run}-{i}");
        let token = format!("{run}-{i}-{:016x}", rand::random::<u64>());
        let pod = match probe_pod(&name, &run, node, &image, situation.target, &token, timeout) {
            Ok(p) => p,
            Err(e) => {
                results.insert(node.clone(), NodeResult::NoPod(e.to_string()));
                continue;
            }
        };
        match pods.create(&kube::api::PostParams::default(), &pod).await {
            Ok(_) => created.push((node.clone(), name, token)),
            Err(e) => {
                let forbidden = matches!(&e, kube::Error::Api(s) if s.code == 403);
                r.add(
                    "callback",
                    Verdict::Skip,
                    format!(
                        "cannot create the probe pods in namespace {}: {e}",
                        cc.namespace
                    ),
                    Some(if forbidden {
                        format!("grant create, get and delete on pods in namespace {} (or pass -n with one you may use), or pass --skip-callback", cc.namespace)
                    } else {
                        "pass --skip-callback to leave it out".into()
                    }),
                );
                delete_probe_pods(&pods, &created).await;
                report_all(r, &situation, &[]);
                return;
            }
        }
    }

    // Wait until every pod runs with an address, or has ended, within a bound.
    let startup = Duration::from_secs(45);
    let started = Instant::now();
    let mut running: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut states: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if let Ok(list) = pods
            .list(&ListParams::default().labels(&format!("{DOCTOR_RUN_LABEL}={run}")))
            .await
        {
            for p in list.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                let status = p.status.as_ref();
                let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
                let ip = status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|i| i.parse::<IpAddr>().ok());
                if let ("Running", Some(ip)) = (phase, ip) {
                    running.insert(name.clone(), ip);
                }
                states.insert(name, pod_state(&p));
            }
        }
        let ended = |n: &String| {
            states
                .get(n)
                .is_some_and(|s| s.starts_with("Failed") || s.starts_with("Succeeded"))
        };
        if created
            .iter()
            .all(|(_, name, _)| running.contains_key(name) || ended(name))
            || started.elapsed() > startup
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Each running pod's report, all at once.
    let budget = timeout * 3 + Duration::from_secs(5);
    let fetched = futures::future::join_all(created.iter().map(|(_, name, _)| {
        let ip = running.get(name).copied();
        async move {
            match ip {
                Some(ip) => Some(
                    callback::fetch_report(SocketAddr::new(ip, callback::PROBE_PORT), budget).await,
                ),
                None => None,
            }
        }
    }))
    .await;
    let arrived = match arrivals.as_mut() {
        Some(a) => a.collect(created.len(), Duration::from_secs(2)).await,
        None => BTreeMap::new(),
    };
    for ((node, name, token), report) in created.iter().zip(fetched) {
        let result = match report {
            None => NodeResult::NoPod(format!(
                "{} after {:.0} s (image {image})",
                states.get(name).map_or("not seen", String::as_str),
                started.elapsed().as_secs_f64()
            )),
            Some(Err(e)) => NodeResult::NoReport(format!(
                "{}:{}: {e}",
                running.get(name).map(IpAddr::to_string).unwrap_or_default(),
                callback::PROBE_PORT
            )),
            Some(Ok(report)) => NodeResult::Report {
                report,
                arrived: arrived.get(token).copied(),
            },
        };
        results.insert(node.clone(), result);
    }
    delete_probe_pods(&pods, &created).await;
    drop(arrivals);
    let probes: Vec<NodeProbe> = nodes
        .into_iter()
        .filter_map(|(node, addresses)| {
            let result = results.remove(&node)?;
            Some(NodeProbe {
                node,
                addresses,
                result,
            })
        })
        .collect();
    report_all(r, &situation, &probes);
}

async fn delete_probe_pods(pods: &Api<Pod>, created: &[(String, String, String)]) {
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    futures::future::join_all(created.iter().map(|(_, name, _)| pods.delete(name, &dp))).await;
}
