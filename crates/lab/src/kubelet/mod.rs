//! The lab's kubelet: one agent per node that registers the Node, renews its Lease, and
//! runs the pods bound to it as real processes in sandboxes on the node's pod bridge.
//!
//! Per pod: a network namespace with a veth on the node's `cni0` bridge and an address from
//! the node's Pod CIDR, a sandbox holder (private mount and UTS namespaces), the standard
//! in-cluster files (`/etc/resolv.conf`, `/etc/hosts`, the service-account token), volumes,
//! and one process per container started from `command`/`args` with the container's
//! environment, restarted by the restart policy with exponential back-off. Readiness and
//! liveness probes (exec, tcpSocket, httpGet) run like the real kubelet's: network probes
//! from the node's namespace to the pod IP.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use ipnet::Ipv4Net;
use kubelan_apisim::resources::{ResourceInfo, find};
use kubelan_apisim::store::Sub;
use kubelan_apisim::{ApiResult, meta};
use kubelan_sys::{Bind, Ident, Namespaces};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ipam::Ipam;
use crate::netops::{self, ProbeResult};
use crate::runtime::{LabContext, PodPlace};
use crate::sandbox::{self, Holder, Kind, SandboxSpec};

/// Annotation that marks a mirror pod (a static pod's API object): not run by the kubelet.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The user kubelan's image runs as (distroless `nonroot`).
const KUBELAN_IMAGE_UID: u32 = 65532;

fn res(group: &str, plural: &str) -> &'static ResourceInfo {
    find(group, "v1", plural).expect("known resource")
}

fn pods() -> &'static ResourceInfo {
    res("", "pods")
}

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
    ctx: Arc<LabContext>,
    node: NodeSpec,
    ipam: Mutex<Ipam>,
    pods: Mutex<HashMap<String, PodHandle>>,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn log_api<T>(what: &str, r: ApiResult<T>) {
    if let Err(e) = r
        && e.code != 404
    {
        tracing::warn!(error = %e.message, "{what}");
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

// ------------------------------------------------------------------ pod worker

struct PodWorker {
    agent: Arc<NodeAgent>,
    pod: Value,
    terminate: CancellationToken,
    force: CancellationToken,
    grace: Arc<AtomicI64>,
}

/// Observable state of one container.
#[derive(Debug, Clone)]
struct ContainerStatus {
    name: String,
    image: String,
    ready: bool,
    started: bool,
    restart_count: u32,
    state: Value,
    last_state: Value,
    /// Whether it will not run again (terminated under its restart policy).
    finished: bool,
    exit_code: i32,
}

impl ContainerStatus {
    fn new(c: &Value) -> Self {
        Self {
            name: meta::str_at(c, &["name"]).to_string(),
            image: meta::str_at(c, &["image"]).to_string(),
            ready: false,
            started: false,
            restart_count: 0,
            state: json!({"waiting": {"reason": "ContainerCreating"}}),
            last_state: json!({}),
            finished: false,
            exit_code: 0,
        }
    }

    fn to_json(&self, uid: &str) -> Value {
        json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("kubelan-lab://{}", self.image),
            "containerID": format!("kubelan-lab://{uid}/{}/{}", self.name, self.restart_count),
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        })
    }
}

/// What a pod's containers share.
struct PodRun {
    ctx: Arc<LabContext>,
    uid: String,
    ns: String,
    name: String,
    pod: Value,
    dir: PathBuf,
    netns: PathBuf,
    node_netns: PathBuf,
    ip: Ipv4Addr,
    holder_ns: Arc<Namespaces>,
    statuses: Mutex<Vec<ContainerStatus>>,
    changed: Notify,
    start_time: String,
    host_ip: Ipv4Addr,
}

impl PodWorker {
    async fn run(self) {
        let ns = meta::namespace(&self.pod).to_string();
        let name = meta::name(&self.pod).to_string();
        let uid = meta::uid(&self.pod).to_string();
        let ctx = self.agent.ctx.clone();
        if self.terminate.is_cancelled()
            && meta::metadata(&self.pod).get("deletionTimestamp").is_some()
        {
            // Deleted before it ever started here.
            log_api(
                "finish deletion",
                ctx.store.finish_deletion(pods(), &ns, &name, &uid),
            );
            return;
        }
        let sandbox = tokio::select! {
            s = self.create_sandbox() => s,
            _ = self.force.cancelled() => Err(anyhow::anyhow!("pod removed")),
        };
        let (run, holder, veth_ns) = match sandbox {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %format!("{e:#}"), "cannot create pod sandbox");
                let msg = format!("{e:#}");
                log_api(
                    "report sandbox failure",
                    ctx.store.modify(pods(), &ns, &name, Sub::Status, |o| {
                        let mut st = o.get("status").cloned().unwrap_or(json!({}));
                        st["phase"] = json!("Pending");
                        st["conditions"] = json!([{"type": "PodScheduled", "status": "True"}, {"type": "PodReadyToStartContainers", "status": "False", "reason": "FailedCreatePodSandBox", "message": msg}]);
                        o["status"] = st;
                        Ok(())
                    }),
                );
                self.cleanup_network(&uid, None).await;
                tokio::select! {
                    _ = self.terminate.cancelled() => log_api("finish deletion", ctx.store.finish_deletion(pods(), &ns, &name, &uid)),
                    _ = self.force.cancelled() => {}
                }
                return;
            }
        };
        let run = Arc::new(run);
        ctx.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (ns.clone(), name.clone()),
            PodPlace {
                uid: uid.clone(),
                netns: run.netns.clone(),
                dir: run.dir.clone(),
                holder: holder.pid,
                ip: run.ip,
            },
        );
        // Status writer.
        let writer = {
            let run = run.clone();
            let stop = CancellationToken::new();
            let s2 = stop.clone();
            tokio::spawn(async move {
                loop {
                    write_status(&run);
                    tokio::select! {
                        _ = run.changed.notified() => tokio::time::sleep(Duration::from_millis(10)).await,
                        _ = s2.cancelled() => { write_status(&run); return; }
                    }
                }
            });
            stop
        };
        // Init containers, one after the other.
        let stop_containers = CancellationToken::new();
        let init: Vec<Value> = self
            .pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut init_ok = true;
        for c in &init {
            let mut st = ContainerStatus::new(c);
            st.state = json!({"waiting": {"reason": "PodInitializing"}});
            let outcome = tokio::select! {
                r = run_init_container(run.clone(), c.clone(), stop_containers.clone()) => r,
                _ = self.terminate.cancelled() => false,
                _ = self.force.cancelled() => false,
            };
            if !outcome {
                init_ok = false;
                break;
            }
        }
        let mut tasks = Vec::new();
        if init_ok {
            let containers: Vec<Value> = self
                .pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            {
                let mut s = run.statuses.lock().unwrap_or_else(|e| e.into_inner());
                *s = containers.iter().map(ContainerStatus::new).collect();
            }
            run.changed.notify_one();
            for (i, c) in containers.into_iter().enumerate() {
                let run = run.clone();
                let stop = stop_containers.clone();
                let grace = self.grace.clone();
                tasks.push(tokio::spawn(async move {
                    run_container(run, i, c, stop, grace).await
                }));
            }
        }
        tokio::select! {
            _ = self.terminate.cancelled() => {}
            _ = self.force.cancelled() => { self.grace.store(0, Ordering::Relaxed); }
        }
        stop_containers.cancel();
        for t in tasks {
            let _ = t.await;
        }
        writer.cancel();
        ctx.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ns.clone(), name.clone()));
        holder.stop().await;
        self.cleanup_network(&uid, Some((run.ip, veth_ns))).await;
        ctx.auth.revoke_pod_tokens(&uid);
        let _ = std::fs::remove_dir_all(&run.dir);
        if !self.force.is_cancelled() {
            log_api(
                "finish deletion",
                ctx.store.finish_deletion(pods(), &ns, &name, &uid),
            );
        }
        tracing::info!(pod = %format!("{ns}/{name}"), "pod stopped");
    }

    fn host_network(&self) -> bool {
        self.pod
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn pod_netns_name(&self, uid: &str) -> String {
        self.agent
            .ctx
            .paths
            .netns(&format!("p-{}", &uid[..8.min(uid.len())]))
    }

    async fn cleanup_network(&self, uid: &str, allocated: Option<(Ipv4Addr, Option<String>)>) {
        if !self.host_network() {
            let name = self.pod_netns_name(uid);
            if let Err(e) = netops::netns_del(&name).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot delete pod network namespace");
            }
        }
        if let Some((ip, _)) = allocated
            && !self.host_network()
        {
            self.agent
                .ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release(ip);
        }
    }

    async fn create_sandbox(&self) -> anyhow::Result<(PodRun, Holder, Option<String>)> {
        let ctx = &self.agent.ctx;
        let node = &self.agent.node;
        let cfg = &ctx.record.config;
        let pod = &self.pod;
        let ns = meta::namespace(pod).to_string();
        let name = meta::name(pod).to_string();
        let uid = meta::uid(pod).to_string();
        let dir = ctx.paths.pod_dir(&uid);
        std::fs::create_dir_all(&dir)?;
        let node_netns = netops::ns_path(&node.netns);
        let mtu = cfg.network.mtu;
        let (ip, netns, veth) = if self.host_network() {
            (node.address, node_netns.clone(), None)
        } else {
            let ip = self
                .agent
                .ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allocate()
                .with_context(|| {
                    format!(
                        "no free address in node {}'s Pod CIDR {}",
                        node.name, node.pod_cidr
                    )
                })?;
            let gw = Ipv4Addr::from(u32::from(node.pod_cidr.network()) + 1);
            let nsname = self.pod_netns_name(&uid);
            let veth = format!("veth{}", &uid[..8.min(uid.len())]);
            ctx.journal_netns(&nsname)?;
            let setup = async {
                netops::netns_add(&nsname).await?;
                netops::ip_batch(
                    &node.netns,
                    &[
                        format!(
                            "link add {veth} mtu {mtu} type veth peer name eth0 netns {nsname}"
                        ),
                        format!("link set {veth} master cni0 up"),
                        // With br_netfilter, DNAT back to the sending pod is bridged out
                        // of the port it came in on (as the CNI bridge plugin's hairpinMode).
                        format!("link set {veth} type bridge_slave hairpin on"),
                    ],
                )
                .await?;
                netops::ip_batch(
                    &nsname,
                    &[
                        "link set lo up".into(),
                        format!("link set eth0 mtu {mtu} up"),
                        format!("addr add {ip}/32 dev eth0"),
                        format!("route add {gw}/32 dev eth0 scope link"),
                        format!("route add default via {gw} dev eth0 src {ip}"),
                    ],
                )
                .await?;
                // Unprivileged ICMP echo sockets for every group, as containerd 2.x and
                // Docker set up pod sandboxes (the agent pings with one).
                let mut settings = vec![(
                    "net/ipv4/ping_group_range".to_string(),
                    "0 2147483647".to_string(),
                )];
                // The pod's own safe sysctls after the runtime's defaults, as the kubelet
                // applies `securityContext.sysctls` (e.g. a `kubelan replace` relay that
                // listens on a Service's targetPort below 1024).
                settings.extend(pod_sysctls(pod));
                let settings: Vec<(&str, &str)> = settings
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                netops::sysctls(&netops::ns_path(&nsname), &settings).await
            };
            if let Err(e) = setup.await {
                self.agent
                    .ipam
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(ip);
                let _ = netops::netns_del(&nsname).await;
                return Err(e);
            }
            (ip, netops::ns_path(&nsname), Some(veth))
        };
        // Files of the sandbox.
        let spec = pod.get("spec").cloned().unwrap_or(json!({}));
        let hostname = {
            let h = meta::str_at(&spec, &["hostname"]);
            let h = if h.is_empty() { name.as_str() } else { h };
            h.chars().take(63).collect::<String>()
        };
        let subdomain = meta::str_at(&spec, &["subdomain"]);
        let domain = &cfg.cluster.domain;
        let mut names = Vec::new();
        if !subdomain.is_empty() {
            names.push(format!("{hostname}.{subdomain}.{ns}.svc.{domain}"));
        }
        names.push(hostname.clone());
        let mut hosts = sandbox::hosts_file(&hostname, Some(&ip.to_string()), &names);
        if let Some(aliases) = spec.get("hostAliases").and_then(Value::as_array) {
            hosts.push_str("\n# Entries added by HostAliases.\n");
            for a in aliases {
                let names: Vec<&str> = a
                    .get("hostnames")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                hosts.push_str(&format!(
                    "{}\t{}\n",
                    meta::str_at(a, &["ip"]),
                    names.join("\t")
                ));
            }
        }
        let resolv = resolv_conf(&spec, &ns, cfg);
        let mut binds = Vec::new();
        let mut mkdirs = Vec::new();
        // Service-account files.
        let sa_name = meta::str_at(&spec, &["serviceAccountName"]).to_string();
        let sa_name = if sa_name.is_empty() {
            "default".to_string()
        } else {
            sa_name
        };
        let sa_obj = ctx
            .store
            .get(res("", "serviceaccounts"), &ns, &sa_name)
            .ok();
        let automount = spec
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool)
            .or_else(|| {
                sa_obj
                    .as_ref()
                    .and_then(|s| s.get("automountServiceAccountToken"))
                    .and_then(Value::as_bool)
            })
            .unwrap_or(true);
        if automount {
            if sa_obj.is_none() {
                bail!(
                    "error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
                );
            }
            let sa_dir = dir.join("serviceaccount");
            std::fs::create_dir_all(&sa_dir)?;
            let token = ctx
                .auth
                .mint_service_account_token(&ns, &sa_name, Some((&name, &uid)));
            std::fs::write(sa_dir.join("token"), token)?;
            std::fs::write(sa_dir.join("ca.crt"), &ctx.ca_pem)?;
            std::fs::write(sa_dir.join("namespace"), &ns)?;
            set_mode(&sa_dir, 0o755);
            for f in ["token", "ca.crt", "namespace"] {
                set_mode(&sa_dir.join(f), 0o644);
            }
            mkdirs.push(PathBuf::from("/run/secrets/kubernetes.io"));
            binds.push(Bind {
                source: sa_dir,
                target: PathBuf::from("/run/secrets/kubernetes.io/serviceaccount"),
                readonly: true,
            });
        }
        // Volumes.
        let vol_binds = prepare_volumes(ctx, pod, &dir, ip, node.address)?;
        for (target, b) in vol_binds {
            if let Some(parent) = target.parent()
                && parent != Path::new("/")
            {
                mkdirs.push(redirect_var_run(parent));
            }
            binds.push(b);
        }
        let holder = sandbox::start(&SandboxSpec {
            netns: netns.clone(),
            hostname: hostname.clone(),
            dir: dir.clone(),
            kind: Kind::Pod,
            etc_files: vec![
                ("resolv.conf".into(), resolv),
                ("hosts".into(), hosts),
                ("hostname".into(), format!("{hostname}\n")),
            ],
            kubelan_binary: ctx.record.kubelan_binary.clone(),
            binds,
            mkdirs,
        })
        .await?;
        ctx.journal_process(holder.pid, &format!("holder:pod:{ns}/{name}"));
        std::fs::write(dir.join("holder.pid"), holder.pid.to_string())?;
        let holder_ns = holder.namespaces()?;
        let run = PodRun {
            ctx: ctx.clone(),
            uid,
            ns,
            name,
            pod: pod.clone(),
            dir,
            netns,
            node_netns,
            ip,
            holder_ns,
            statuses: Mutex::new(Vec::new()),
            changed: Notify::new(),
            start_time: meta::now_rfc3339(),
            host_ip: node.address,
        };
        Ok((run, holder, veth))
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// `/var/run/...` is `/run/...` (a symlink on the host); mount points under it must be
/// created on the sandbox's private `/run`.
fn redirect_var_run(p: &Path) -> PathBuf {
    match p.strip_prefix("/var/run") {
        Ok(rest) => Path::new("/run").join(rest),
        Err(_) => p.to_path_buf(),
    }
}

fn resolv_conf(spec: &Value, ns: &str, cfg: &crate::config::LabConfig) -> String {
    let policy = meta::str_at(spec, &["dnsPolicy"]);
    let host_net = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let domain = &cfg.cluster.domain;
    let dns_ip = cfg.cluster.dns_service_ip();
    let cluster_first = match policy {
        "None" | "Default" => false,
        "ClusterFirstWithHostNet" => true,
        _ => !host_net,
    };
    let (mut servers, mut searches, mut options) = if cluster_first {
        (
            vec![dns_ip.to_string()],
            vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            vec!["ndots:5".to_string()],
        )
    } else if policy == "None" {
        (vec![], vec![], vec![])
    } else {
        // The node's resolver: lab nodes use the cluster DNS.
        (vec![dns_ip.to_string()], vec![], vec![])
    };
    if let Some(dc) = spec.get("dnsConfig") {
        let strings = |key: &str| -> Vec<String> {
            dc.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        };
        servers.extend(strings("nameservers"));
        searches.extend(strings("searches"));
        for o in dc
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let n = meta::str_at(o, &["name"]);
            let v = meta::str_at(o, &["value"]);
            options.retain(|x| x.split(':').next() != Some(n));
            options.push(if v.is_empty() {
                n.to_string()
            } else {
                format!("{n}:{v}")
            });
        }
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Materialises the pod's volumes in its state directory and returns the bind mounts
/// (mount target, bind) for every container's volume mounts.
fn prepare_volumes(
    ctx: &LabContext,
    pod: &Value,
    dir: &Path,
    ip: Ipv4Addr,
    host_ip: Ipv4Addr,
) -> anyhow::Result<Vec<(PathBuf, Bind)>> {
    let ns = meta::namespace(pod);
    let vols: Vec<Value> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut sources: HashMap<String, PathBuf> = HashMap::new();
    for v in &vols {
        let vname = meta::str_at(v, &["name"]).to_string();
        let vdir = dir.join("volumes").join(&vname);
        std::fs::create_dir_all(&vdir)?;
        set_mode(&vdir, 0o777);
        let mode = |src: &Value| {
            src.get("defaultMode")
                .and_then(Value::as_u64)
                .unwrap_or(0o644) as u32
        };
        if let Some(s) = v.get("secret") {
            let name = meta::str_at(s, &["secretName"]);
            let optional = s.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match ctx.store.get(res("", "secrets"), ns, name) {
                Ok(sec) => write_keys(&vdir, &sec, "data", true, s.get("items"), mode(s))?,
                Err(_) if optional => {}
                Err(_) => bail!(
                    "MountVolume.SetUp failed for volume \"{vname}\" : secret \"{name}\" not found"
                ),
            }
        } else if let Some(c) = v.get("configMap") {
            let name = meta::str_at(c, &["name"]);
            let optional = c.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match ctx.store.get(res("", "configmaps"), ns, name) {
                Ok(cm) => write_keys(&vdir, &cm, "data", false, c.get("items"), mode(c))?,
                Err(_) if optional => {}
                Err(_) => bail!(
                    "MountVolume.SetUp failed for volume \"{vname}\" : configmap \"{name}\" not found"
                ),
            }
        } else if v.get("emptyDir").is_some() {
        } else if let Some(h) = v.get("hostPath") {
            let p = PathBuf::from(meta::str_at(h, &["path"]));
            if !p.exists() {
                bail!(
                    "MountVolume.SetUp failed for volume \"{vname}\" : hostPath {} does not exist (the lab never creates host paths)",
                    p.display()
                );
            }
            sources.insert(vname, p);
            continue;
        } else if let Some(p) = v.get("projected") {
            for src in p
                .get("sources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = src.get("serviceAccountToken") {
                    let sa = meta::str_at(pod, &["spec", "serviceAccountName"]);
                    let token = ctx.auth.mint_service_account_token(
                        ns,
                        if sa.is_empty() { "default" } else { sa },
                        Some((meta::name(pod), meta::uid(pod))),
                    );
                    let path = vdir.join(meta::str_at(t, &["path"]));
                    std::fs::write(&path, token)?;
                    set_mode(&path, 0o644);
                } else if let Some(c) = src.get("configMap") {
                    if let Ok(cm) =
                        ctx.store
                            .get(res("", "configmaps"), ns, meta::str_at(c, &["name"]))
                    {
                        write_keys(&vdir, &cm, "data", false, c.get("items"), 0o644)?;
                    }
                } else if let Some(s) = src.get("secret") {
                    if let Ok(sec) =
                        ctx.store
                            .get(res("", "secrets"), ns, meta::str_at(s, &["name"]))
                    {
                        write_keys(&vdir, &sec, "data", true, s.get("items"), 0o644)?;
                    }
                } else if let Some(d) = src.get("downwardAPI") {
                    write_downward(&vdir, pod, d, ip, host_ip)?;
                }
            }
        } else if let Some(d) = v.get("downwardAPI") {
            write_downward(&vdir, pod, d, ip, host_ip)?;
        } else {
            bail!(
                "volume \"{vname}\": only secret, configMap, emptyDir, hostPath, projected and downwardAPI volumes exist in the kubelan lab"
            );
        }
        sources.insert(vname, vdir);
    }
    // As the kubelet does: volumes the kubelet writes belong to the pod's fsGroup, so a
    // non-root container can read a Secret mounted with mode 0440.
    if let Some(gid) = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_u64)
        .and_then(|g| u32::try_from(g).ok())
    {
        for v in &vols {
            if v.get("hostPath").is_none() {
                chown_group_tree(&dir.join("volumes").join(meta::str_at(v, &["name"])), gid)?;
            }
        }
    }
    let mut binds = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            pod.pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
    {
        for m in c
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let vname = meta::str_at(m, &["name"]);
            let target = PathBuf::from(meta::str_at(m, &["mountPath"]));
            let Some(src) = sources.get(vname) else {
                bail!(
                    "container {} mounts volume \"{vname}\", which the pod does not define",
                    meta::str_at(c, &["name"])
                );
            };
            if !target.is_absolute() {
                bail!("volume mount path {} must be absolute", target.display());
            }
            let top = sandbox::top_level(&target).unwrap_or_default();
            let allowed = ["/etc", "/var", "/usr/local", "/run", "/tmp", "/root"]
                .contains(&top.as_str())
                || (sandbox::EXTRA_ROOTS.contains(&top.as_str()) && Path::new(&top).is_dir());
            if !allowed {
                bail!(
                    "volume mount path {} is outside the directories a lab pod may write ({}, {}); the lab shares the machine's file system and never creates directories on it",
                    target.display(),
                    "/etc, /var, /usr/local, /run, /tmp, /root",
                    sandbox::EXTRA_ROOTS.join(", ")
                );
            }
            let sub = meta::str_at(m, &["subPath"]);
            let source = if sub.is_empty() {
                src.clone()
            } else {
                src.join(sub)
            };
            let target = redirect_var_run(&target);
            if seen.insert(target.clone()) {
                binds.push((
                    target.clone(),
                    Bind {
                        source,
                        target,
                        readonly: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                    },
                ));
            }
        }
    }
    Ok(binds)
}

fn write_keys(
    dir: &Path,
    obj: &Value,
    field: &str,
    base64_values: bool,
    items: Option<&Value>,
    mode: u32,
) -> anyhow::Result<()> {
    let empty = serde_json::Map::new();
    let data = obj.get(field).and_then(Value::as_object).unwrap_or(&empty);
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let decode = |v: &Value| -> Vec<u8> {
        let s = v.as_str().unwrap_or("");
        if base64_values {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default()
        } else {
            s.as_bytes().to_vec()
        }
    };
    match items.and_then(Value::as_array) {
        Some(items) => {
            for it in items {
                let k = meta::str_at(it, &["key"]);
                if let Some(v) = data.get(k) {
                    entries.push((meta::str_at(it, &["path"]).to_string(), decode(v)));
                }
            }
        }
        None => entries.extend(data.iter().map(|(k, v)| (k.clone(), decode(v)))),
    }
    if !base64_values && let Some(bin) = obj.get("binaryData").and_then(Value::as_object) {
        for (k, v) in bin {
            entries.push((
                k.clone(),
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or(""))
                    .unwrap_or_default(),
            ));
        }
    }
    for (rel, bytes) in entries {
        if rel.contains("..") {
            bail!("volume item path {rel:?} may not contain '..'");
        }
        let p = dir.join(&rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes)?;
        set_mode(&p, mode);
    }
    Ok(())
}

fn field_ref(pod: &Value, path: &str, ip: Ipv4Addr, host_ip: Ipv4Addr) -> String {
    if let Some(rest) = path
        .strip_prefix("metadata.labels['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return meta::str_at(pod, &["metadata", "labels", rest]).to_string();
    }
    if let Some(rest) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return meta::str_at(pod, &["metadata", "annotations", rest]).to_string();
    }
    match path {
        "status.podIP" | "status.podIPs" => ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "metadata.labels" | "metadata.annotations" => {
            let key = path.trim_start_matches("metadata.");
            meta::metadata(pod)
                .get(key)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        }
        _ => {
            let parts: Vec<&str> = path.split('.').collect();
            match meta::at(pod, &parts) {
                Some(Value::String(s)) => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => String::new(),
            }
        }
    }
}

fn write_downward(
    dir: &Path,
    pod: &Value,
    src: &Value,
    ip: Ipv4Addr,
    host_ip: Ipv4Addr,
) -> anyhow::Result<()> {
    for it in src
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rel = meta::str_at(it, &["path"]);
        if rel.contains("..") {
            bail!("downwardAPI item path {rel:?} may not contain '..'");
        }
        let value = match it.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
            Some(f) => field_ref(pod, f, ip, host_ip),
            None => "0".to_string(),
        };
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, value)?;
        set_mode(&p, 0o644);
    }
    Ok(())
}

// ------------------------------------------------------------------ status

fn write_status(run: &PodRun) {
    let statuses = run
        .statuses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let restart_policy = meta::str_at(&run.pod, &["spec", "restartPolicy"]).to_string();
    let all_started = !statuses.is_empty() && statuses.iter().all(|s| s.started);
    let all_finished = !statuses.is_empty() && statuses.iter().all(|s| s.finished);
    let phase = if all_finished && restart_policy != "Always" {
        if statuses.iter().all(|s| s.exit_code == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if all_started {
        "Running"
    } else {
        "Pending"
    };
    let ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready) && phase == "Running";
    let now = meta::now_rfc3339();
    let cond = |t: &str, ok: bool, reason: &str| {
        let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        if !ok && !reason.is_empty() {
            c["reason"] = json!(reason);
        }
        c
    };
    let not_ready: Vec<String> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .collect();
    let reason = if not_ready.is_empty() {
        ""
    } else if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", true, ""),
        cond("Initialized", true, ""),
        cond("Ready", ready, reason),
        cond("ContainersReady", ready, reason),
        cond("PodScheduled", true, ""),
    ];
    if !ready && !not_ready.is_empty() && phase == "Running" {
        let msg = format!("containers with unready status: [{}]", not_ready.join(" "));
        conditions[2]["message"] = json!(msg);
        conditions[3]["message"] = json!(msg);
    }
    let status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": run.host_ip.to_string(),
        "hostIPs": [{"ip": run.host_ip.to_string()}],
        "podIP": run.ip.to_string(),
        "podIPs": [{"ip": run.ip.to_string()}],
        "startTime": run.start_time,
        "containerStatuses": statuses.iter().map(|s| s.to_json(&run.uid)).collect::<Vec<_>>(),
        "qosClass": "BestEffort",
    });
    let r = run
        .ctx
        .store
        .modify(pods(), &run.ns, &run.name, Sub::Status, |o| {
            if meta::uid(o) != run.uid {
                return Ok(());
            }
            // Keep transition times of conditions whose status did not change.
            let mut st = status.clone();
            if let (Some(old), Some(new)) = (
                o.pointer("/status/conditions").and_then(Value::as_array),
                st.get_mut("conditions").and_then(Value::as_array_mut),
            ) {
                for c in new.iter_mut() {
                    if let Some(p) = old.iter().find(|p| {
                        p.get("type") == c.get("type") && p.get("status") == c.get("status")
                    }) {
                        c["lastTransitionTime"] =
                            p.get("lastTransitionTime").cloned().unwrap_or(Value::Null);
                    }
                }
            }
            o["status"] = st;
            Ok(())
        });
    log_api("update pod status", r);
}

fn update_container(run: &PodRun, idx: usize, f: impl FnOnce(&mut ContainerStatus)) {
    {
        let mut s = run.statuses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = s.get_mut(idx) {
            f(c);
        }
    }
    run.changed.notify_one();
}

// ------------------------------------------------------------------ containers

/// A failure to start a container, with the reason the kubelet would report.
struct StartError {
    reason: &'static str,
    message: String,
}

/// Gives `gid` group ownership of `root` and everything below it.
fn chown_group_tree(root: &Path, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, None, Some(gid))?;
    if root.is_dir() && !root.is_symlink() {
        for entry in std::fs::read_dir(root)? {
            chown_group_tree(&entry?.path(), gid)?;
        }
    }
    Ok(())
}

fn is_kubelan_image(image: &str) -> bool {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = repo
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or(repo, |(r, _)| r);
    repo == "kubelan" || repo.ends_with("/kubelan")
}

/// Expands `$(VAR)` references as Kubernetes does (`$$` escapes; unknown references stay).
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                if let Some(v) = env.get(name) {
                    out.push_str(v);
                } else {
                    out.push_str(&s[i..i + 3 + end]);
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn env_name(svc: &str) -> String {
    svc.to_uppercase().replace('-', "_")
}

fn build_env(run: &PodRun, c: &Value) -> Result<BTreeMap<String, String>, StartError> {
    let ctx = &run.ctx;
    let cfg = &ctx.record.config;
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("HOME".into(), "/root".into());
    let hostname = {
        let h = meta::str_at(&run.pod, &["spec", "hostname"]);
        if h.is_empty() {
            run.name.clone()
        } else {
            h.to_string()
        }
    };
    env.insert("HOSTNAME".into(), hostname);
    // Service environment variables: `kubernetes` always, the namespace's others when
    // service links are enabled.
    let links = run
        .pod
        .pointer("/spec/enableServiceLinks")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let svcs = ctx.store.list_all(res("", "services"), None);
    for s in &svcs {
        let (sns, sname) = (meta::namespace(s), meta::name(s));
        let is_master = sns == "default" && sname == "kubernetes";
        if !(is_master || (links && sns == run.ns)) {
            continue;
        }
        let ip = meta::str_at(s, &["spec", "clusterIP"]);
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let n = env_name(sname);
        let ports = s
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.insert(format!("{n}_SERVICE_HOST"), ip.to_string());
        env.insert(format!("{n}_SERVICE_PORT"), first["port"].to_string());
        for p in &ports {
            let port = p["port"].to_string();
            let proto = meta::str_at(p, &["protocol"]).to_string();
            let pname = meta::str_at(p, &["name"]);
            if !pname.is_empty() {
                env.insert(
                    format!("{n}_SERVICE_PORT_{}", env_name(pname)),
                    port.clone(),
                );
            }
            let lower = proto.to_lowercase();
            let base = format!("{n}_PORT_{port}_{proto}");
            env.insert(base.clone(), format!("{lower}://{ip}:{port}"));
            env.insert(format!("{base}_PROTO"), lower.clone());
            env.insert(format!("{base}_PORT"), port.clone());
            env.insert(format!("{base}_ADDR"), ip.to_string());
        }
        env.insert(
            format!("{n}_PORT"),
            format!(
                "{}://{ip}:{}",
                meta::str_at(first, &["protocol"]).to_lowercase(),
                first["port"]
            ),
        );
    }
    let _ = cfg;
    // envFrom.
    for ef in c
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let prefix = meta::str_at(ef, &["prefix"]);
        let (r, src, b64) = if let Some(s) = ef.get("secretRef") {
            (res("", "secrets"), s, true)
        } else if let Some(s) = ef.get("configMapRef") {
            (res("", "configmaps"), s, false)
        } else {
            continue;
        };
        let name = meta::str_at(src, &["name"]);
        match ctx.store.get(r, &run.ns, name) {
            Ok(o) => {
                for (k, v) in o
                    .get("data")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let s = v.as_str().unwrap_or("");
                    let val = if b64 {
                        String::from_utf8_lossy(
                            &base64::engine::general_purpose::STANDARD
                                .decode(s)
                                .unwrap_or_default(),
                        )
                        .into_owned()
                    } else {
                        s.to_string()
                    };
                    env.insert(format!("{prefix}{k}"), val);
                }
            }
            Err(_) if src.get("optional").and_then(Value::as_bool) == Some(true) => {}
            Err(_) => {
                return Err(StartError {
                    reason: "CreateContainerConfigError",
                    message: format!("{} \"{name}\" not found", r.singular),
                });
            }
        }
    }
    // env, in order, with $(VAR) expansion against what is defined so far.
    for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
        let k = meta::str_at(e, &["name"]).to_string();
        let val = if let Some(v) = e.get("value").and_then(Value::as_str) {
            expand(v, &env)
        } else if let Some(vf) = e.get("valueFrom") {
            if let Some(fr) = vf.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
                field_ref(&run.pod, fr, run.ip, run.host_ip)
            } else if let Some(sk) = vf.get("secretKeyRef").or_else(|| vf.get("configMapKeyRef")) {
                let is_secret = vf.get("secretKeyRef").is_some();
                let r = if is_secret {
                    res("", "secrets")
                } else {
                    res("", "configmaps")
                };
                let name = meta::str_at(sk, &["name"]);
                let key = meta::str_at(sk, &["key"]);
                let optional = sk.get("optional").and_then(Value::as_bool).unwrap_or(false);
                let obj = ctx.store.get(r, &run.ns, name);
                match obj.ok().and_then(|o| {
                    o.pointer(&format!("/data/{key}"))
                        .and_then(Value::as_str)
                        .map(String::from)
                }) {
                    Some(v) if is_secret => String::from_utf8_lossy(
                        &base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .unwrap_or_default(),
                    )
                    .into_owned(),
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(StartError {
                            reason: "CreateContainerConfigError",
                            message: format!(
                                "couldn't find key {key} in {} {}/{name}",
                                if is_secret { "Secret" } else { "ConfigMap" },
                                run.ns
                            ),
                        });
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.insert(k, val);
    }
    Ok(env)
}

fn container_ident(
    pod: &Value,
    c: &Value,
    kubelan_image: bool,
) -> Result<Option<Ident>, StartError> {
    let get = |path: &[&str]| -> Option<&Value> {
        meta::at(c, &["securityContext"])
            .and_then(|sc| meta::at(sc, path))
            .or_else(|| {
                meta::at(pod, &["spec", "securityContext"]).and_then(|sc| meta::at(sc, path))
            })
    };
    let uid = get(&["runAsUser"])
        .and_then(Value::as_u64)
        .map(|u| u as u32);
    let gid = get(&["runAsGroup"])
        .and_then(Value::as_u64)
        .map(|g| g as u32);
    let non_root = get(&["runAsNonRoot"])
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let uid = match uid {
        Some(u) => Some(u),
        // kubelan's image declares USER 65532; other images run as root.
        None if kubelan_image && non_root => Some(KUBELAN_IMAGE_UID),
        None if kubelan_image => None,
        None => None,
    };
    if non_root && uid.unwrap_or(0) == 0 {
        return Err(StartError {
            reason: "CreateContainerConfigError",
            message: "container has runAsNonRoot and image will run as root".into(),
        });
    }
    Ok(uid.map(|u| Ident {
        uid: u,
        gid: gid.unwrap_or(u),
    }))
}

/// Resolves the argv of a container (command/args with the image's entrypoint).
fn argv(c: &Value, env: &BTreeMap<String, String>) -> Result<(Vec<String>, bool), StartError> {
    let image = meta::str_at(c, &["image"]);
    let kubelan = is_kubelan_image(image);
    let list = |k: &str| -> Vec<String> {
        c.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| expand(s, env))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut command = list("command");
    let args = list("args");
    if command.is_empty() {
        if kubelan {
            command = vec!["kubelan".into()];
        } else {
            return Err(StartError {
                reason: "CreateContainerError",
                message: format!(
                    "the kubelan lab does not run image {image:?}: containers run programs from the machine's file system, so set `command` (only kubelan's own image has a known entrypoint)"
                ),
            });
        }
    }
    command.extend(args);
    Ok((command, kubelan))
}

async fn spawn_container(
    run: &PodRun,
    c: &Value,
    log_path: &Path,
) -> Result<tokio::process::Child, StartError> {
    let env = build_env(run, c)?;
    let (argv, kubelan) = argv(c, &env)?;
    let ident = container_ident(&run.pod, c, kubelan)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| StartError {
            reason: "RunContainerError",
            message: format!("cannot open log {}: {e}", log_path.display()),
        })?;
    let log2 = log.try_clone().map_err(|e| StartError {
        reason: "RunContainerError",
        message: e.to_string(),
    })?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .process_group(0)
        .kill_on_drop(true);
    let cwd = meta::str_at(c, &["workingDir"]);
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    kubelan_sys::enter_on_spawn(
        &mut cmd,
        run.holder_ns.clone(),
        kubelan_sys::Cwd::Exactly(Path::new(cwd)),
        ident,
    )
    .map_err(|e| StartError {
        reason: "RunContainerError",
        message: e.to_string(),
    })?;
    let child = cmd.spawn().map_err(|e| StartError {
        reason: "RunContainerError",
        message: format!("failed to start container process {:?}: {e}", argv[0]),
    })?;
    if let Some(pid) = child.id() {
        run.ctx.journal_process(
            pid,
            &format!(
                "container:{}/{}/{}",
                run.ns,
                run.name,
                meta::str_at(c, &["name"])
            ),
        );
    }
    Ok(child)
}

fn signal_group(child: &tokio::process::Child, sig: kubelan_sys::SignalKind) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

async fn stop_process(
    child: &mut tokio::process::Child,
    grace: i64,
) -> Option<std::process::ExitStatus> {
    signal_group(child, kubelan_sys::SignalKind::SIGTERM);
    let grace = Duration::from_secs(grace.clamp(0, 300) as u64);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(r) => {
            signal_group(child, kubelan_sys::SignalKind::SIGKILL);
            r.ok()
        }
        Err(_) => {
            signal_group(child, kubelan_sys::SignalKind::SIGKILL);
            child.wait().await.ok()
        }
    }
}

fn exit_info(status: Option<std::process::ExitStatus>) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => (c, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            _ => (1, None),
        },
        None => (1, None),
    }
}

struct Probe {
    spec: Value,
    successes: u32,
    failures: u32,
    next: tokio::time::Instant,
}

impl Probe {
    fn new(spec: Option<&Value>, started: tokio::time::Instant) -> Option<Self> {
        let spec = spec?.clone();
        let delay = spec
            .get("initialDelaySeconds")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Some(Self {
            spec,
            successes: 0,
            failures: 0,
            next: started + Duration::from_secs(delay),
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs(
            self.spec
                .get("periodSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(10)
                .max(1),
        )
    }

    fn threshold(&self, k: &str, def: u64) -> u32 {
        self.spec
            .get(k)
            .and_then(Value::as_u64)
            .unwrap_or(def)
            .max(1) as u32
    }
}

async fn run_probe(run: &PodRun, c: &Value, p: &Value) -> ProbeResult {
    let timeout = Duration::from_secs(
        p.get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1),
    );
    let port_of = |v: Option<&Value>| -> Option<u16> {
        match v? {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s.parse().ok().or_else(|| {
                c.get("ports")?
                    .as_array()?
                    .iter()
                    .find(|cp| meta::str_at(cp, &["name"]) == s)?
                    .get("containerPort")?
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
            }),
            _ => None,
        }
    };
    if let Some(h) = p.get("httpGet") {
        let Some(port) = port_of(h.get("port")) else {
            return ProbeResult::Failure("httpGet probe has no valid port".into());
        };
        let host: Ipv4Addr = meta::str_at(h, &["host"]).parse().unwrap_or(run.ip);
        let path = meta::str_at(h, &["path"]);
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        return netops::probe(
            &run.node_netns,
            SocketAddr::from((host, port)),
            Some(path),
            timeout,
        )
        .await;
    }
    if let Some(t) = p.get("tcpSocket") {
        let Some(port) = port_of(t.get("port")) else {
            return ProbeResult::Failure("tcpSocket probe has no valid port".into());
        };
        let host: Ipv4Addr = meta::str_at(t, &["host"]).parse().unwrap_or(run.ip);
        return netops::probe(
            &run.node_netns,
            SocketAddr::from((host, port)),
            None,
            timeout,
        )
        .await;
    }
    if let Some(e) = p.get("exec") {
        let cmd: Vec<String> = e
            .get("command")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if cmd.is_empty() {
            return ProbeResult::Failure("exec probe has no command".into());
        }
        let env = build_env(run, c).unwrap_or_default();
        let mut command = tokio::process::Command::new(&cmd[0]);
        command
            .args(&cmd[1..])
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if kubelan_sys::enter_on_spawn(
            &mut command,
            run.holder_ns.clone(),
            kubelan_sys::Cwd::Exactly(Path::new("/")),
            None,
        )
        .is_err()
        {
            return ProbeResult::Failure("cannot enter the pod".into());
        }
        return match tokio::time::timeout(timeout, async { command.spawn()?.wait().await }).await {
            Ok(Ok(s)) if s.success() => ProbeResult::Success,
            Ok(Ok(s)) => ProbeResult::Failure(format!("command {cmd:?} exited with {s}")),
            Ok(Err(e)) => ProbeResult::Failure(format!("command {cmd:?}: {e}")),
            Err(_) => ProbeResult::Failure(format!("command {cmd:?} timed out after {timeout:?}")),
        };
    }
    ProbeResult::Failure("probe has no handler (exec, httpGet or tcpSocket)".into())
}

async fn run_init_container(run: Arc<PodRun>, c: Value, stop: CancellationToken) -> bool {
    let name = meta::str_at(&c, &["name"]).to_string();
    let log = run.dir.join(format!("{name}.log"));
    let mut attempt = 0u32;
    loop {
        let child = spawn_container(&run, &c, &log).await;
        let ok = match child {
            Ok(mut ch) => tokio::select! {
                s = ch.wait() => s.map(|s| s.success()).unwrap_or(false),
                _ = stop.cancelled() => { stop_process(&mut ch, 1).await; return false; }
            },
            Err(e) => {
                tracing::warn!(pod = %format!("{}/{}", run.ns, run.name), container = %name, reason = e.reason, "{}", e.message);
                false
            }
        };
        if ok {
            return true;
        }
        if meta::str_at(&run.pod, &["spec", "restartPolicy"]) == "Never" {
            return false;
        }
        attempt += 1;
        let backoff = Duration::from_secs((1u64 << attempt.min(5)).min(30));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return false,
        }
    }
}

async fn run_container(
    run: Arc<PodRun>,
    idx: usize,
    c: Value,
    stop: CancellationToken,
    grace: Arc<AtomicI64>,
) {
    let name = meta::str_at(&c, &["name"]).to_string();
    let log = run.dir.join(format!("{name}.log"));
    let restart_policy = meta::str_at(&run.pod, &["spec", "restartPolicy"]).to_string();
    let mut crashes = 0u32;
    loop {
        let started_wall = meta::now_rfc3339();
        let mut child = match spawn_container(&run, &c, &log).await {
            Ok(ch) => ch,
            Err(e) => {
                tracing::warn!(pod = %format!("{}/{}", run.ns, run.name), container = %name, reason = e.reason, "{}", e.message);
                update_container(&run, idx, |s| {
                    s.state = json!({"waiting": {"reason": e.reason, "message": e.message}})
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        let started = tokio::time::Instant::now();
        let has_readiness = c.get("readinessProbe").is_some();
        update_container(&run, idx, |s| {
            s.started = true;
            s.ready = !has_readiness;
            s.state = json!({"running": {"startedAt": started_wall}});
        });
        let mut readiness = Probe::new(c.get("readinessProbe"), started);
        let mut liveness = Probe::new(c.get("livenessProbe"), started);
        let mut killed_by_liveness = None;
        let status = loop {
            let next_probe = [
                readiness.as_ref().map(|p| p.next),
                liveness.as_ref().map(|p| p.next),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(started + Duration::from_secs(3600 * 24));
            tokio::select! {
                s = child.wait() => break s.ok(),
                _ = stop.cancelled() => {
                    let g = grace.load(Ordering::Relaxed);
                    let s = stop_process(&mut child, g).await;
                    update_container(&run, idx, |st| {
                        let (code, _) = exit_info(s);
                        st.ready = false;
                        st.state = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": started_wall, "finishedAt": meta::now_rfc3339()}});
                    });
                    return;
                }
                _ = tokio::time::sleep_until(next_probe) => {
                    let now = tokio::time::Instant::now();
                    if let Some(p) = readiness.as_mut().filter(|p| p.next <= now) {
                        let r = run_probe(&run, &c, &p.spec.clone()).await;
                        p.next = tokio::time::Instant::now() + p.period();
                        let ready_now = match r {
                            ProbeResult::Success => { p.failures = 0; p.successes += 1; (p.successes >= p.threshold("successThreshold", 1)).then_some(true) }
                            ProbeResult::Failure(why) => {
                                p.successes = 0; p.failures += 1;
                                tracing::debug!(pod = %format!("{}/{}", run.ns, run.name), container = %name, "readiness probe failed: {why}");
                                (p.failures >= p.threshold("failureThreshold", 3)).then_some(false)
                            }
                        };
                        if let Some(ready) = ready_now {
                            let changed = run.statuses.lock().unwrap_or_else(|e| e.into_inner()).get(idx).is_some_and(|s| s.ready != ready);
                            if changed {
                                update_container(&run, idx, |s| s.ready = ready);
                            }
                        }
                    }
                    if let Some(p) = liveness.as_mut().filter(|p| p.next <= now) {
                        let r = run_probe(&run, &c, &p.spec.clone()).await;
                        p.next = tokio::time::Instant::now() + p.period();
                        match r {
                            ProbeResult::Success => p.failures = 0,
                            ProbeResult::Failure(why) => {
                                p.failures += 1;
                                if p.failures >= p.threshold("failureThreshold", 3) {
                                    tracing::info!(pod = %format!("{}/{}", run.ns, run.name), container = %name, "liveness probe failed, restarting: {why}");
                                    killed_by_liveness = Some(why);
                                    let g = run.pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
                                    break stop_process(&mut child, g).await;
                                }
                            }
                        }
                    }
                }
            }
        };
        let (code, signal) = exit_info(status);
        let ran = started.elapsed();
        let finished = meta::now_rfc3339();
        let reason = if killed_by_liveness.is_some() {
            "Error"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let mut term = json!({"exitCode": code, "reason": reason, "startedAt": started_wall, "finishedAt": finished});
        if let Some(sig) = signal {
            term["signal"] = json!(sig);
        }
        let restart = match restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        // Keep the previous instance's log for `kubectl logs --previous`.
        let _ = std::fs::rename(&log, run.dir.join(format!("{name}.previous.log")));
        if !restart {
            update_container(&run, idx, |s| {
                s.ready = false;
                s.finished = true;
                s.exit_code = code;
                s.state = json!({"terminated": term});
            });
            // Wait for the pod to be deleted.
            stop.cancelled().await;
            return;
        }
        if ran > Duration::from_secs(60) {
            crashes = 0;
        }
        let backoff = Duration::from_millis((1000u64 << crashes.min(5)).min(30_000));
        crashes += 1;
        let message = format!(
            "back-off {}s restarting failed container={name} pod={}_{}({})",
            backoff.as_secs().max(1),
            run.name,
            run.ns,
            run.uid
        );
        update_container(&run, idx, |s| {
            s.ready = false;
            s.restart_count += 1;
            s.last_state = json!({"terminated": term});
            s.state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}});
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The network-namespaced sysctls Kubernetes calls safe (allowed by Pod Security
/// `baseline` and `restricted`, enabled in every kubelet).
const SAFE_NET_SYSCTLS: [&str; 9] = [
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The pod's `spec.securityContext.sysctls` that the lab applies in its network namespace,
/// as `/proc/sys` paths: only [`SAFE_NET_SYSCTLS`] (others are ignored; the lab enables no
/// unsafe ones), values of printable ASCII without `/`.
fn pod_sysctls(pod: &Value) -> Vec<(String, String)> {
    pod.pointer("/spec/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let name = s.get("name")?.as_str()?;
            let value = s.get("value")?.as_str()?;
            let ok = SAFE_NET_SYSCTLS.contains(&name)
                && !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| (b' '..=b'~').contains(&b) && b != b'/');
            ok.then(|| (name.replace('.', "/"), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_safe_pod_sysctls_are_applied() {
        let pod = serde_json::json!({"spec": {"securityContext": {"sysctls": [
            {"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"},
            {"name": "net.ipv4.ip_forward", "value": "1"},
            {"name": "kernel.shm_rmid_forced", "value": "1"},
            {"name": "net.ipv4.tcp_syncookies", "value": "../x"},
        ]}}});
        assert_eq!(
            super::pod_sysctls(&pod),
            [(
                "net/ipv4/ip_unprivileged_port_start".to_string(),
                "80".to_string()
            )]
        );
        assert!(super::pod_sysctls(&serde_json::json!({})).is_empty());
    }

    use super::*;

    #[test]
    fn expansion() {
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("é$(A", &env), "é$(A");
    }

    #[test]
    fn images() {
        assert!(is_kubelan_image("kubelan"));
        assert!(is_kubelan_image("ghcr.io/kubelan/kubelan:0.1.0"));
        assert!(is_kubelan_image("localhost:5000/kubelan"));
        assert!(!is_kubelan_image("busybox"));
        assert!(!is_kubelan_image("ghcr.io/kubelan/kubelan-other:1"));
    }

    #[test]
    fn dns_policies() {
        let cfg = crate::config::LabConfig::default();
        let first = resolv_conf(&json!({}), "shop", &cfg);
        assert_eq!(
            first,
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 172.17.16.10\noptions ndots:5\n"
        );
        let host = resolv_conf(&json!({"hostNetwork": true}), "shop", &cfg);
        assert_eq!(host, "nameserver 172.17.16.10\n");
        let host_cf = resolv_conf(
            &json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            "shop",
            &cfg,
        );
        assert_eq!(host_cf, first);
        let none = resolv_conf(
            &json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            "shop",
            &cfg,
        );
        assert_eq!(
            none,
            "search a.b\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn run_as_non_root() {
        let pod = json!({"spec": {"securityContext": {"runAsNonRoot": true}}});
        let c = json!({"name": "c"});
        assert_eq!(
            container_ident(&pod, &c, true).ok().flatten(),
            Some(Ident {
                uid: 65532,
                gid: 65532
            })
        );
        assert!(container_ident(&pod, &c, false).is_err());
        let c2 = json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 2000}});
        assert_eq!(
            container_ident(&json!({}), &c2, false).ok().flatten(),
            Some(Ident {
                uid: 1000,
                gid: 2000
            })
        );
    }
}
