//! The lab daemon (`kubelan lab daemon`, started in the background by `lab up`): the API
//! server, the controllers, and per node a kubelet and a kube-proxy, all in one process.
//!
//! Start-up order: host sandboxes → API server (on the control-plane node's address, and on
//! the machine's loopback for tools run outside the lab) → controllers → nodes → system
//! objects and default workloads → readiness (every workload pod Ready and a real DNS query
//! answered from the control-plane node). Progress goes to the `progress` file `lab up`
//! shows, the outcome to `ready` or `failed`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kubelan_apisim::controllers::{self, ControllerConfig, pod_ready};
use kubelan_apisim::pki::ClusterPki;
use kubelan_apisim::resources::{ResourceInfo, find};
use kubelan_apisim::store::Sub;
use kubelan_apisim::{ApiServer, Authenticator, ClusterConfig, ServerInfo, Store, UserInfo, meta};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::LabConfig;
use crate::kubelet::{NodeAgent, NodeSpec};
use crate::kubeproxy::{self, ProxyInput};
use crate::netops;
use crate::runtime::{LabContext, LabPodBackend};
use crate::sandbox::{self, Holder, Kind, SandboxSpec};
use crate::state::{Journal, LabPaths, LabRecord, LabSecrets, RuntimeInfo, write_atomic};
use crate::topology::{self, Plan};
use crate::workloads;

/// Port of the API server on the control-plane node.
pub const API_PORT: u16 = 6443;
/// How long start-up may take before the daemon reports failure.
const START_TIMEOUT: Duration = Duration::from_secs(90);

fn res(group: &str, plural: &str) -> &'static ResourceInfo {
    find(group, "v1", plural).expect("known resource")
}

fn progress(paths: &LabPaths, text: &str) {
    tracing::info!("{text}");
    let _ = write_atomic(&paths.root.join("progress"), text.as_bytes(), 0o644);
}

/// Runs the lab daemon until SIGTERM or SIGINT.
///
/// # Errors
/// When start-up fails (also written to the `failed` file for `lab up`).
pub async fn run(paths: LabPaths) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut holders = Vec::new();
    let result = start(&paths, shutdown.clone(), &mut holders).await;
    let agents = match result {
        Ok(a) => a,
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!("lab start-up failed: {msg}");
            let _ = write_atomic(&paths.failed_file(), msg.as_bytes(), 0o644);
            shutdown.cancel();
            for h in holders {
                h.stop().await;
            }
            return Err(e);
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping the lab daemon");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(8), futures::future::join_all(agents)).await;
    for h in holders {
        h.stop().await;
    }
    let _ = std::fs::remove_file(paths.ready_file());
    Ok(())
}

fn kubeconfig(
    server: &str,
    ca_pem: &str,
    contexts: &[(String, String)],
    namespace: &str,
) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut s = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubelan-lab\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n"
    );
    for (user, token) in contexts {
        s.push_str(&format!("- name: {user}\n  user:\n    token: {token}\n"));
    }
    s.push_str("contexts:\n");
    for (i, (user, _)) in contexts.iter().enumerate() {
        let name = if i == 0 {
            "kubelan-lab".to_string()
        } else {
            format!("kubelan-lab-{user}")
        };
        s.push_str(&format!("- name: {name}\n  context:\n    cluster: kubelan-lab\n    user: {user}\n    namespace: {namespace}\n"));
    }
    s.push_str("current-context: kubelan-lab\npreferences: {}\n");
    s
}

/// Writes the kubeconfig files: one for the machine (loopback port) and one for lab hosts.
///
/// # Errors
/// When writing fails.
pub fn write_kubeconfigs(
    paths: &LabPaths,
    cfg: &LabConfig,
    secrets: &LabSecrets,
    loopback_port: Option<u16>,
) -> anyhow::Result<String> {
    let mut contexts = vec![("admin".to_string(), secrets.admin_token.clone())];
    contexts.extend(secrets.users.iter().map(|(n, _, t)| (n.clone(), t.clone())));
    let cp = cfg
        .control_plane()
        .context("the lab config has no control-plane node")?;
    let lab_view = kubeconfig(
        &format!("https://{}:{API_PORT}", cp.address),
        &secrets.ca_pem,
        &contexts,
        "default",
    );
    write_atomic(&paths.lab_kubeconfig(), lab_view.as_bytes(), 0o600)?;
    if let Some(port) = loopback_port {
        let host_view = kubeconfig(
            &format!("https://127.0.0.1:{port}"),
            &secrets.ca_pem,
            &contexts,
            "default",
        );
        write_atomic(&paths.kubeconfig(), host_view.as_bytes(), 0o600)?;
    }
    Ok(lab_view)
}

async fn start(
    paths: &LabPaths,
    shutdown: CancellationToken,
    holders: &mut Vec<Holder>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let record = LabRecord::load(paths)?;
    let secrets = LabSecrets::load(paths)?;
    let cfg = record.config.clone();
    let plan = topology::plan(&cfg);
    let mut journal = Journal::open(&paths.journal())?;
    journal.record_process(std::process::id(), "daemon")?;
    let cp = cfg
        .control_plane()
        .context("no control-plane node")?
        .clone();

    // The API object store, its bootstrap objects and tokens.
    let store = Store::new(ClusterConfig {
        service_cidr: cfg.cluster.service_cidr,
        node_port_range: (
            cfg.cluster.node_port_range.first,
            cfg.cluster.node_port_range.last,
        ),
        cluster_domain: cfg.cluster.domain.clone(),
    });
    let cc = ControllerConfig {
        ca_pem: secrets.ca_pem.clone(),
        api_endpoint: (cp.address, API_PORT),
    };
    controllers::bootstrap(&store, &cc).map_err(|e| anyhow::anyhow!("bootstrap: {}", e.message))?;
    let auth = Arc::new(Authenticator::new());
    auth.add_user_token(
        &secrets.admin_token,
        UserInfo::new("kubelan-lab-admin", &["system:masters"]),
    );
    for (name, groups, token) in &secrets.users {
        let g: Vec<&str> = groups.iter().map(String::as_str).collect();
        auth.add_user_token(token, UserInfo::new(name.clone(), &g));
    }
    let ctx = Arc::new(LabContext {
        paths: paths.clone(),
        record: record.clone(),
        store: store.clone(),
        auth: auth.clone(),
        ca_pem: secrets.ca_pem.clone(),
        shutdown: shutdown.clone(),
        journal: Mutex::new(journal),
        pods: Mutex::new(Default::default()),
    });

    // Host sandboxes.
    progress(paths, "starting lab hosts");
    let lab_kubeconfig = write_kubeconfigs(paths, &cfg, &secrets, None)?;
    let mut runtime = RuntimeInfo {
        daemon_pid: std::process::id(),
        ..RuntimeInfo::default()
    };
    let hosts_file = lab_hosts_file(&plan);
    for h in &plan.hosts {
        let spec = SandboxSpec {
            netns: netops::ns_path(&paths.netns(&h.name)),
            hostname: h.name.clone(),
            dir: paths.host_dir(&h.name),
            kind: Kind::Host,
            etc_files: vec![
                ("resolv.conf".into(), h.resolv_conf.clone()),
                ("hosts".into(), hosts_file.clone()),
                ("hostname".into(), format!("{}\n", h.name)),
                ("kubelan/kubeconfig".into(), lab_kubeconfig.clone()),
            ],
            kubelan_binary: record.kubelan_binary.clone(),
            binds: vec![],
            mkdirs: vec![],
        };
        let holder = sandbox::start(&spec)
            .await
            .with_context(|| format!("lab host {}", h.name))?;
        ctx.journal_process(holder.pid, &format!("holder:{}", h.name));
        runtime.holders.insert(h.name.clone(), holder.pid);
        holders.push(holder);
    }

    // API server: on the control-plane node, and on the machine's loopback.
    progress(paths, "starting the API server");
    let pki = ClusterPki {
        ca_pem: secrets.ca_pem.clone(),
        server_cert_pem: secrets.server_cert_pem.clone(),
        server_key_pem: secrets.server_key_pem.clone(),
    };
    let tls = pki.server_config()?;
    let server = ApiServer::new(
        store.clone(),
        auth.clone(),
        Arc::new(LabPodBackend(ctx.clone())),
        ServerInfo {
            minor: cfg.cluster.kubernetes_minor,
            advertise: format!("{}:{API_PORT}", cp.address),
        },
    );
    let cp_ns = netops::ns_path(&paths.netns(&cp.name));
    let node_listener = netops::listen(&cp_ns, SocketAddr::from((Ipv4Addr::UNSPECIFIED, API_PORT)))
        .await
        .with_context(|| format!("listen on {}:{API_PORT} in node {}", cp.address, cp.name))?;
    let loopback = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("listen on the machine's loopback")?;
    runtime.api_port = loopback.local_addr()?.port();
    tokio::spawn(
        server
            .clone()
            .serve(node_listener, tls.clone(), shutdown.clone()),
    );
    tokio::spawn(server.serve(loopback, tls, shutdown.clone()));
    write_kubeconfigs(paths, &cfg, &secrets, Some(runtime.api_port))?;
    runtime.save(paths)?;

    controllers::spawn_all(store.clone(), cc, shutdown.clone());

    // The laptop's own resolver (its ISP's, as it were), on the edge router: names
    // outside the cluster must resolve the same before and after `kubelan connect`.
    let edge_holder = runtime
        .holders
        .get(crate::config::EDGE_ROUTER_NAME)
        .copied()
        .context("no edge router sandbox")?;
    let wan_dns = start_wan_resolver(&ctx, edge_holder, cfg.edge.wan_address)?;

    // Nodes: kubelet and kube-proxy each.
    progress(paths, "registering nodes");
    let mut tasks = vec![tokio::spawn(supervise_until(wan_dns, shutdown.clone()))];
    for n in &cfg.nodes {
        let spec = NodeSpec {
            name: n.name.clone(),
            address: n.address,
            pod_cidr: n.pod_cidr,
            netns: paths.netns(&n.name),
            control_plane: n.control_plane,
            holder: runtime.holders.get(&n.name).copied().unwrap_or(0),
        };
        let agent = NodeAgent::new(ctx.clone(), spec.clone());
        agent.register()?;
        tasks.push(tokio::spawn(agent.run()));
        tokio::spawn(run_kube_proxy(ctx.clone(), spec, !cfg.faults.seed001));
    }

    // System objects, the API server's mirror pod, default workloads.
    let mut objects = workloads::system(&cfg);
    if cfg.workloads.defaults {
        objects.extend(workloads::defaults());
    }
    for (ns, obj) in objects {
        create(&store, ns, obj)?;
    }
    let mirror = workloads::apiserver_mirror_pod(&cfg, &cp.name, &cp.address.to_string());
    let mirror_name = meta::name(&mirror).to_string();
    create(&store, "kube-system", mirror)?;
    mark_mirror_running(&store, &mirror_name, &cp.address.to_string());

    wait_until_ready(&ctx, &cfg).await?;
    write_atomic(&paths.ready_file(), meta::now_rfc3339().as_bytes(), 0o644)?;
    progress(paths, "ready");
    Ok(tasks)
}

/// Starts dnsmasq on the edge router as the WAN's resolver: it answers the names of
/// [`topology::WAN_DNS_ZONE`] and refuses everything else (the lab has no Internet).
fn start_wan_resolver(
    ctx: &Arc<LabContext>,
    edge_holder: u32,
    listen: Ipv4Addr,
) -> anyhow::Result<tokio::process::Child> {
    let ns = Arc::new(kubelan_sys::Namespaces::of_process(edge_holder)?);
    let mut cmd = tokio::process::Command::new("dnsmasq");
    cmd.args(topology::wan_resolver_args(listen))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    kubelan_sys::enter_on_spawn(&mut cmd, ns, kubelan_sys::Cwd::Inherit, None)?;
    let child = cmd
        .spawn()
        .context("cannot start dnsmasq for the WAN resolver (apt-get install dnsmasq-base)")?;
    if let Some(pid) = child.id() {
        ctx.journal_process(pid, "wan-resolver");
    }
    Ok(child)
}

/// Keeps `child` until shutdown, then stops it.
async fn supervise_until(mut child: tokio::process::Child, shutdown: CancellationToken) {
    tokio::select! {
        status = child.wait() => tracing::warn!(?status, "the WAN resolver exited"),
        () = shutdown.cancelled() => {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

fn create(store: &Store, ns: &str, obj: Value) -> anyhow::Result<()> {
    let r = kubelan_apisim::resources::by_kind(
        obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
        obj.get("kind").and_then(Value::as_str).unwrap_or(""),
    )
    .context("unknown kind in the lab's built-in objects")?;
    match store.create(r, ns, obj, false) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => anyhow::bail!("create built-in {} in {ns:?}: {}", r.kind, e.message),
    }
}

fn mark_mirror_running(store: &Store, name: &str, ip: &str) {
    let now = meta::now_rfc3339();
    let _ = store.modify(res("", "pods"), "kube-system", name, Sub::Status, |o| {
        o["status"] = json!({
            "phase": "Running",
            "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": ip, "hostIPs": [{"ip": ip}],
            "startTime": now,
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": [{"name": "kube-apiserver", "image": workloads::KUBELAN_IMAGE, "imageID": "", "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}}, "containerID": "kubelan-lab://kube-apiserver"}],
        });
        Ok(())
    });
}

fn lab_hosts_file(plan: &Plan) -> String {
    let mut s = sandbox::hosts_file("localhost", None, &[]);
    s.push_str("\n# kubelan lab hosts\n");
    for h in &plan.hosts {
        if let Some(a) = h.address() {
            s.push_str(&format!("{a}\t{}\n", h.name));
        }
    }
    s
}

async fn run_kube_proxy(ctx: Arc<LabContext>, node: NodeSpec, masquerade_external: bool) {
    let mut rx = ctx.store.subscribe();
    let netns = netops::ns_path(&node.netns);
    let cluster_cidr = ctx.record.config.cluster.pod_cidr;
    let mut last = String::new();
    loop {
        let services: Vec<k8s_openapi::api::core::v1::Service> = ctx
            .store
            .list_all(res("", "services"), None)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> = ctx
            .store
            .list_all(res("discovery.k8s.io", "endpointslices"), None)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let script = kubeproxy::ruleset(&ProxyInput {
            node_ips: vec![node.address],
            cluster_cidr,
            masquerade_external,
            services: &services,
            slices: &slices,
        });
        if script != last {
            match kubeproxy::apply(&netns, &script).await {
                Ok(()) => last = script,
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "kube-proxy could not apply rules")
                }
            }
        }
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                ev = rx.recv() => match ev {
                    Ok(e) if e.res.plural == "services" || e.res.plural == "endpointslices" => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(_) => return,
                },
                _ = tokio::time::sleep(Duration::from_secs(30)) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        while rx.try_recv().is_ok() {}
    }
}

/// Pods of workloads that are not ready yet: (namespace/name, why).
fn unready(store: &Store) -> (usize, usize, Vec<String>) {
    let mut total = 0;
    let mut ready = 0;
    let mut waiting = Vec::new();
    for (group, plural) in [("apps", "deployments"), ("apps", "statefulsets")] {
        for w in store.list_all(res(group, plural), None) {
            let want = w
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize;
            let have = w
                .pointer("/status/readyReplicas")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            total += want;
            ready += have.min(want);
            if have < want {
                waiting.push(format!(
                    "{}/{} {have}/{want}",
                    meta::namespace(&w),
                    meta::name(&w)
                ));
            }
        }
    }
    (ready, total, waiting)
}

fn pod_problems(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for p in store.list_all(res("", "pods"), None) {
        if pod_ready(&p) {
            continue;
        }
        let mut why: BTreeMap<String, String> = BTreeMap::new();
        for c in p
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(w) = c.pointer("/state/waiting") {
                why.insert(
                    meta::str_at(c, &["name"]).into(),
                    format!(
                        "{} {}",
                        meta::str_at(w, &["reason"]),
                        meta::str_at(w, &["message"])
                    ),
                );
            }
        }
        for c in p
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if meta::str_at(c, &["status"]) == "False" && !meta::str_at(c, &["message"]).is_empty()
            {
                why.insert(
                    meta::str_at(c, &["type"]).into(),
                    meta::str_at(c, &["message"]).into(),
                );
            }
        }
        out.push(format!(
            "{}/{} ({}): {}",
            meta::namespace(&p),
            meta::name(&p),
            meta::str_at(&p, &["status", "phase"]),
            why.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    out
}

/// The names cluster DNS must answer, with the addresses it must answer with: every
/// Service's ClusterIP and every endpoint hostname of headless Services (StatefulSet pods).
fn expected_dns(store: &Store, domain: &str) -> Vec<(String, Vec<Ipv4Addr>)> {
    let mut out = Vec::new();
    for svc in store.list_all(res("", "services"), None) {
        let (ns, name) = (meta::namespace(&svc), meta::name(&svc));
        let ip = meta::str_at(&svc, &["spec", "clusterIP"]);
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            out.push((format!("{name}.{ns}.svc.{domain}"), vec![ip]));
        }
    }
    for slice in store.list_all(res("discovery.k8s.io", "endpointslices"), None) {
        let svc = meta::str_at(
            &slice,
            &["metadata", "labels", "kubernetes.io/service-name"],
        );
        let ns = meta::namespace(&slice);
        for ep in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let host = meta::str_at(ep, &["hostname"]);
            let ready = ep
                .pointer("/conditions/ready")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let ip = ep
                .pointer("/addresses/0")
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok());
            if let (false, true, Some(ip)) = (host.is_empty(), ready, ip) {
                out.push((format!("{host}.{svc}.{ns}.svc.{domain}"), vec![ip]));
            }
        }
    }
    out
}

/// Asks cluster DNS for every expected name from the control-plane node; returns the first
/// name whose answer differs.
async fn dns_mismatch(
    netns: &Path,
    server: Ipv4Addr,
    expected: Vec<(String, Vec<Ipv4Addr>)>,
) -> Option<String> {
    let netns = netns.to_path_buf();
    tokio::task::spawn_blocking(move || {
        for (name, want) in expected {
            match dns_query_a(&netns, server, &name, Duration::from_millis(500)) {
                Ok(mut got) => {
                    got.sort();
                    if got != want {
                        return Some(format!("{name} answers {got:?}, expected {want:?}"));
                    }
                }
                Err(e) => return Some(format!("{name}: {e:#}")),
            }
        }
        None
    })
    .await
    .unwrap_or_else(|e| Some(e.to_string()))
}

async fn wait_until_ready(ctx: &Arc<LabContext>, cfg: &LabConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let cp = cfg.control_plane().context("no control-plane node")?;
    let cp_ns = netops::ns_path(&ctx.paths.netns(&cp.name));
    let dns = cfg.cluster.dns_service_ip();
    let mut dns_problem = String::new();
    loop {
        let (ready, total, waiting) = unready(&ctx.store);
        if waiting.is_empty() {
            progress(
                &ctx.paths,
                &format!("pods ready {ready}/{total}; checking cluster DNS"),
            );
            // "Ready" means cluster DNS serves what the API holds, not just that it runs.
            match dns_mismatch(&cp_ns, dns, expected_dns(&ctx.store, &cfg.cluster.domain)).await {
                None => return Ok(()),
                Some(p) => dns_problem = p,
            }
        } else {
            progress(
                &ctx.paths,
                &format!(
                    "pods ready {ready}/{total} (waiting for {})",
                    waiting.join(", ")
                ),
            );
        }
        if started.elapsed() > START_TIMEOUT {
            let problems = pod_problems(&ctx.store);
            anyhow::bail!(
                "the lab did not become ready within {}s: workloads waiting: [{}]; pods: {}",
                START_TIMEOUT.as_secs(),
                waiting.join(", "),
                if problems.is_empty() {
                    format!("all ready; cluster DNS: {dns_problem}")
                } else {
                    problems.join(" | ")
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one DNS query for `name` (type A) to `server` from inside `netns` and returns the
/// addresses in the answer.
///
/// # Errors
/// When the namespace cannot be entered, nothing answers, or the answer is malformed.
pub fn dns_query_a(
    netns: &Path,
    server: Ipv4Addr,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Ipv4Addr>> {
    let id: u16 = rand::random();
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        anyhow::ensure!(!label.is_empty() && label.len() < 64, "bad name {name:?}");
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let netns = netns.to_path_buf();
    let resp = kubelan_sys::in_netns(&netns, move || -> std::io::Result<Vec<u8>> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.set_read_timeout(Some(timeout))?;
        s.send_to(&q, (server, 53))?;
        let mut buf = vec![0u8; 1500];
        let n = s.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })??;
    parse_a_answers(&resp, id)
}

fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *b.get(i)? as usize;
        if len == 0 {
            return Some(i + 1);
        }
        if len & 0xC0 == 0xC0 {
            return Some(i + 2);
        }
        i += 1 + len;
    }
    None
}

/// Parses a DNS response to query `id`: the A records of its answer section.
///
/// # Errors
/// When the response is for another query, has an error code, or is malformed.
pub fn parse_a_answers(b: &[u8], id: u16) -> anyhow::Result<Vec<Ipv4Addr>> {
    anyhow::ensure!(b.len() >= 12, "short DNS answer");
    anyhow::ensure!(
        u16::from_be_bytes([b[0], b[1]]) == id,
        "DNS answer for another query"
    );
    let rcode = b[3] & 0x0f;
    anyhow::ensure!(rcode == 0, "DNS rcode {rcode}");
    let qd = u16::from_be_bytes([b[4], b[5]]) as usize;
    let an = u16::from_be_bytes([b[6], b[7]]) as usize;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i).context("malformed question")? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(b, i).context("malformed answer")?;
        let h = b.get(i..i + 10).context("truncated answer")?;
        let ty = u16::from_be_bytes([h[0], h[1]]);
        let len = u16::from_be_bytes([h[8], h[9]]) as usize;
        let data = b.get(i + 10..i + 10 + len).context("truncated record")?;
        if ty == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_answer_and_rejects_garbage() {
        // Response to id 0x1234 for "a." with one A record 10.0.0.1 (name by pointer).
        let mut r = vec![
            0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ];
        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1]);
        assert_eq!(
            parse_a_answers(&r, 0x1234).unwrap(),
            vec![Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert!(parse_a_answers(&r, 0x9999).is_err());
        assert!(parse_a_answers(&r[..20], 0x1234).is_err());
        let mut nx = r.clone();
        nx[3] = 0x83;
        assert!(parse_a_answers(&nx, 0x1234).is_err());
        for n in 0..r.len() {
            let _ = parse_a_answers(&r[..n], 0x1234);
        }
    }

    #[test]
    fn kubeconfig_has_contexts() {
        let k = kubeconfig(
            "https://10.4.7.11:6443",
            "PEM",
            &[
                ("admin".into(), "t1".into()),
                ("developer".into(), "t2".into()),
            ],
            "default",
        );
        assert!(k.contains("current-context: kubelan-lab"));
        assert!(k.contains("name: kubelan-lab-developer"));
        kube::config::Kubeconfig::from_yaml(&k).unwrap();
    }
}
