//! The node's side of the kubelet: the Node object, its Lease and the pod sync loop that
//! starts and stops one pod worker per pod bound to the node.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use ipnet::Ipv4Net;
use kubelan_apisim::meta;
use kubelan_apisim::store::Sub;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::ipam::Ipam;
use crate::runtime::LabContext;

use super::{MIRROR_ANNOTATION, log_api, pods, res};

/// One node of the lab, as its kubelet knows it.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Node address on the node network.
    pub address: Ipv4Addr,
    /// The node's Pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// Network namespace name.
    pub netns: String,
    /// Whether it is the control-plane node.
    pub control_plane: bool,
    /// PID of the node's sandbox holder.
    pub holder: u32,
}

struct PodHandle {
    terminate: CancellationToken,
    force: CancellationToken,
    grace: Arc<AtomicI64>,
    done: CancellationToken,
}

/// The kubelet of one node.
pub struct NodeAgent {
    pub(super) ctx: Arc<LabContext>,
    pub(super) node: NodeSpec,
    pub(super) ipam: Mutex<Ipam>,
    pods: Mutex<HashMap<String, PodHandle>>,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeAgent {
    /// A kubelet for `node`.
    pub fn new(ctx: Arc<LabContext>, node: NodeSpec) -> Arc<Self> {
        Arc::new(Self {
            ipam: Mutex::new(Ipam::new(node.pod_cidr)),
            ctx,
            node,
            pods: Mutex::new(HashMap::new()),
        })
    }

    /// Registers the Node object (status Ready) and its Lease.
    ///
    /// # Errors
    /// When the store refuses the objects.
    pub fn register(&self) -> anyhow::Result<()> {
        let cfg = &self.ctx.record.config;
        let n = &self.node;
        let mut labels = json!({
            "kubernetes.io/hostname": n.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "beta.kubernetes.io/os": "linux",
        });
        if n.control_plane {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": labels, "annotations": {
                "flannel.alpha.coreos.com/backend-type": "host-gw",
                "flannel.alpha.coreos.com/public-ip": n.address.to_string(),
                "node.alpha.kubernetes.io/ttl": "0",
            }},
            "spec": {"podCIDR": n.pod_cidr.to_string(), "podCIDRs": [n.pod_cidr.to_string()]},
        });
        let nodes = res("", "nodes");
        match self.ctx.store.create(nodes, "", node, false) {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => bail!("register node {}: {}", n.name, e.message),
        }
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let now = meta::now_rfc3339();
        let minor = cfg.cluster.kubernetes_minor;
        let version = format!("v1.{minor}.0-kubelan-lab");
        let status = json!({
            "addresses": [{"type": "InternalIP", "address": n.address.to_string()}, {"type": "Hostname", "address": n.name}],
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status (kubelan lab)", "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{:032x}", meta::short_hash(&json!(n.name)).len()),
                "systemUUID": meta::new_uid(),
                "bootID": meta::new_uid(),
                "kernelVersion": kernel.trim(),
                "osImage": "kubelan lab (Linux network namespace)",
                "containerRuntimeVersion": format!("kubelan-lab://{}", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": version,
                "kubeProxyVersion": version,
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
        });
        self.ctx
            .store
            .modify(nodes, "", &n.name, Sub::Status, |o| {
                o["status"] = status;
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("node {} status: {}", n.name, e.message))?;
        self.renew_lease();
        Ok(())
    }

    fn renew_lease(&self) {
        let leases = res("coordination.k8s.io", "leases");
        let name = &self.node.name;
        let now = meta::now_micro();
        if self.ctx.store.get(leases, "kube-node-lease", name).is_err() {
            let lease = json!({"metadata": {"name": name}, "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}});
            log_api(
                "create node lease",
                self.ctx
                    .store
                    .create(leases, "kube-node-lease", lease, false),
            );
        } else {
            log_api(
                "renew node lease",
                self.ctx
                    .store
                    .modify(leases, "kube-node-lease", name, Sub::Main, |o| {
                        o["spec"]["renewTime"] = json!(now);
                        Ok(())
                    }),
            );
        }
    }

    /// Runs the pod sync loop until the daemon shuts down; then stops every pod.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.ctx.store.subscribe();
        let mut lease = tokio::time::interval(Duration::from_secs(10));
        loop {
            self.sync();
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => break,
                _ = lease.tick() => self.renew_lease(),
                ev = rx.recv() => {
                    match ev {
                        Ok(e) if e.res.plural != "pods" => continue,
                        _ => {}
                    }
                    while rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        self.stop_all().await;
    }

    fn sync(self: &Arc<Self>) {
        let mine: Vec<Value> = self
            .ctx
            .store
            .list_all(pods(), None)
            .into_iter()
            .filter(|p| meta::str_at(p, &["spec", "nodeName"]) == self.node.name)
            .filter(|p| {
                let mirror =
                    !meta::str_at(p, &["metadata", "annotations", MIRROR_ANNOTATION]).is_empty();
                if mirror && meta::metadata(p).get("deletionTimestamp").is_some() {
                    // A mirror pod has no processes here: let its deletion complete.
                    log_api(
                        "delete mirror pod",
                        self.ctx.store.finish_deletion(
                            pods(),
                            meta::namespace(p),
                            meta::name(p),
                            meta::uid(p),
                        ),
                    );
                }
                !mirror
            })
            .collect();
        let mut handles = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        handles.retain(|_, h| !h.done.is_cancelled());
        let mut present = std::collections::HashSet::new();
        for p in mine {
            let uid = meta::uid(&p).to_string();
            present.insert(uid.clone());
            let deleting = meta::metadata(&p).get("deletionTimestamp").is_some();
            let grace = meta::metadata(&p)
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            match handles.get(&uid) {
                Some(h) => {
                    if deleting {
                        h.grace.store(grace, Ordering::Relaxed);
                        h.terminate.cancel();
                    }
                }
                None => {
                    let h = PodHandle {
                        terminate: CancellationToken::new(),
                        force: CancellationToken::new(),
                        grace: Arc::new(AtomicI64::new(grace)),
                        done: CancellationToken::new(),
                    };
                    if deleting {
                        h.terminate.cancel();
                    }
                    let worker = PodWorker {
                        agent: self.clone(),
                        pod: p.clone(),
                        terminate: h.terminate.clone(),
                        force: h.force.clone(),
                        grace: h.grace.clone(),
                    };
                    let done = h.done.clone();
                    tokio::spawn(async move {
                        worker.run().await;
                        done.cancel();
                    });
                    handles.insert(uid, h);
                }
            }
        }
        for (uid, h) in handles.iter() {
            if !present.contains(uid) {
                h.force.cancel();
            }
        }
    }

    async fn stop_all(&self) {
        let dones: Vec<CancellationToken> = {
            let handles = self.pods.lock().unwrap_or_else(|e| e.into_inner());
            for h in handles.values() {
                h.grace.store(1, Ordering::Relaxed);
                h.terminate.cancel();
            }
            handles.values().map(|h| h.done.clone()).collect()
        };
        let all = futures::future::join_all(dones.iter().map(|d| d.cancelled()));
        let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
    }
}

pub(super) struct PodWorker {
    pub(super) agent: Arc<NodeAgent>,
    pub(super) pod: Value,
    pub(super) terminate: CancellationToken,
    pub(super) force: CancellationToken,
    pub(super) grace: Arc<AtomicI64>,
}
