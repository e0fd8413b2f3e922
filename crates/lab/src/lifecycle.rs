//! `kubelan lab up | down | status | exec | kubeconfig`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kubelan_apisim::pki::ClusterPki;
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::config::{LabConfig, validate_lab_name};
use crate::netops;
use crate::state::{self, Journal, JournalEntry, LabPaths, LabRecord, LabSecrets, RuntimeInfo};
use crate::topology::{self, Role};

/// Programs the lab runs, with the Debian package that provides each.
const REQUIRED_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("dnsmasq", "dnsmasq-base"),
    ("sleep", "coreutils"),
];
/// How long `up` waits for the daemon.
const UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of `lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Lab name.
    pub name: String,
    /// Configuration file (default topology when absent).
    pub config: Option<PathBuf>,
    /// Keep what was built when start-up fails (for debugging).
    pub keep_on_failure: bool,
}

/// What `lab up` built.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    /// Lab name.
    pub name: String,
    /// Wall time of `up`.
    pub seconds: f64,
    /// Kubeconfig for this machine.
    pub kubeconfig: PathBuf,
    /// API endpoint inside the lab.
    pub api_in_lab: String,
    /// API endpoint on this machine's loopback.
    pub api_on_machine: String,
}

impl kubelan_term::json::Document for UpReport {
    const TYPE: &'static str = "LabUp";
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file())
}

/// Checks that the lab can run here (root, tools) without changing anything.
///
/// # Errors
/// Names what is missing and how to get it.
pub fn preflight() -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("the kubelan lab needs Linux network namespaces");
    }
    if !kubelan_sys::is_root() {
        bail!(
            "the kubelan lab creates network namespaces and needs root: run it with sudo (e.g. `sudo kubelan lab up`)"
        );
    }
    let missing: Vec<String> = REQUIRED_TOOLS
        .iter()
        .filter(|(p, _)| !which(p))
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the lab needs programs that are not installed: {}; install them with `sudo apt-get install -y {}`",
            missing.join(", "),
            REQUIRED_TOOLS
                .iter()
                .filter(|(p, _)| !which(p))
                .map(|(_, pkg)| *pkg)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

/// Names of existing network namespaces with `prefix`.
fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(kubelan_sys::NETNS_RUN_DIR)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn current_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the kubelan binary")?;
    let s = exe.to_string_lossy();
    let p = PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s));
    Ok(p.canonicalize().unwrap_or(p))
}

fn random_token() -> String {
    use base64::Engine;
    let b: [u8; 32] = rand::random();
    format!(
        "kubelan-lab.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// Builds and starts a lab, reporting progress lines through `progress`.
///
/// # Errors
/// Bad configuration or name, an existing lab, missing privileges or tools (all before
/// anything is created), or a failed start (then everything built is removed again unless
/// `keep_on_failure`).
pub async fn up(opts: &UpOptions, mut progress: impl FnMut(&str)) -> anyhow::Result<UpReport> {
    let started = Instant::now();
    validate_lab_name(&opts.name)?;
    let cfg = match &opts.config {
        Some(p) => LabConfig::load(p)?,
        None => {
            let c = LabConfig::default();
            c.validate()?;
            c
        }
    };
    preflight()?;
    let paths = LabPaths::new(&opts.name);
    if let Some(parent) = paths.root.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let leftovers = namespaces_with_prefix(&paths.prefix());
    if paths.root.exists() || !leftovers.is_empty() {
        bail!(
            "a lab named {:?} already exists (state {}, {} network namespaces); remove it with `sudo kubelan lab down --name {}` or choose another --name",
            opts.name,
            paths.root.display(),
            leftovers.len(),
            opts.name
        );
    }
    match std::fs::create_dir(&paths.root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "a lab named {:?} is being created by another command; pick another --name",
                opts.name
            )
        }
        Err(e) => return Err(e).with_context(|| format!("create {}", paths.root.display())),
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&paths.root, std::fs::Permissions::from_mode(0o700))?;
    }
    let work = async {
        build(&paths, &cfg, &opts.name, &mut progress).await?;
        wait_ready(&paths, &mut progress).await
    };
    // Ctrl-C (or SIGTERM) while building removes what was built, like any other failure.
    let result = tokio::select! {
        r = work => r,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        if !opts.keep_on_failure {
            progress("start-up failed; removing what was built");
            if let Err(de) = down(&opts.name).await {
                return Err(e.context(format!("and cleaning up failed too: {de:#}")));
            }
        }
        return Err(e);
    }
    let runtime = RuntimeInfo::load(&paths).unwrap_or_default();
    let cp = cfg.control_plane().context("no control-plane node")?;
    Ok(UpReport {
        name: opts.name.clone(),
        seconds: started.elapsed().as_secs_f64(),
        kubeconfig: paths.kubeconfig(),
        api_in_lab: format!("https://{}:{}", cp.address, crate::daemon::API_PORT),
        api_on_machine: format!("https://127.0.0.1:{}", runtime.api_port),
    })
}

async fn interrupted() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn build(
    paths: &LabPaths,
    cfg: &LabConfig,
    name: &str,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<()> {
    let record = LabRecord {
        name: name.to_string(),
        config: cfg.clone(),
        created: kubelan_apisim::meta::now_rfc3339(),
        kubelan_binary: current_binary()?,
    };
    record.save(paths)?;
    progress("generating the cluster CA and tokens");
    let cp = cfg.control_plane().context("no control-plane node")?;
    let domain = &cfg.cluster.domain;
    let dns_names = [
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{domain}"),
        "localhost".into(),
        cp.name.clone(),
    ];
    let names: Vec<&str> = dns_names.iter().map(String::as_str).collect();
    let pki = ClusterPki::generate(
        &format!("kubelan-lab-{name}-ca"),
        &names,
        &[
            cp.address.into(),
            cfg.cluster.kubernetes_service_ip().into(),
            std::net::Ipv4Addr::LOCALHOST.into(),
        ],
    )?;
    LabSecrets {
        ca_pem: pki.ca_pem,
        server_cert_pem: pki.server_cert_pem,
        server_key_pem: pki.server_key_pem,
        admin_token: random_token(),
        users: cfg
            .users
            .iter()
            .map(|u| (u.name.clone(), u.groups.clone(), random_token()))
            .collect(),
    }
    .save(paths)?;
    progress("building the network");
    let plan = topology::plan(cfg);
    let mut journal = Journal::open(&paths.journal())?;
    topology::build(&plan, paths, |ns| {
        Ok(journal.record(&JournalEntry::Netns {
            name: ns.to_string(),
        })?)
    })
    .await?;
    progress("starting the lab daemon");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())?;
    let mut cmd = std::process::Command::new(current_binary()?);
    cmd.args(["lab", "daemon", "--name", name])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    kubelan_sys::new_session_on_spawn(&mut cmd);
    let child = cmd.spawn().context("cannot start the lab daemon")?;
    Journal::open(&paths.journal())?.record_process(child.id(), "daemon")?;
    // The daemon is reparented when we exit; reap it if it dies while we wait.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn wait_ready(paths: &LabPaths, progress: &mut impl FnMut(&str)) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if paths.ready_file().exists() {
            return Ok(());
        }
        if let Ok(why) = std::fs::read_to_string(paths.failed_file()) {
            bail!(
                "the lab daemon failed: {why}\nlast lines of {}:\n{}",
                paths.daemon_log().display(),
                tail(&paths.daemon_log(), 15)
            );
        }
        let daemon_alive = Journal::read(&paths.journal())
            .iter()
            .rev()
            .find_map(|e| match e {
                JournalEntry::Process { pid, start, role } if role == "daemon" => Some(
                    kubelan_sys::process_start_time(*pid) == Some(*start)
                        && kubelan_sys::process_alive(*pid),
                ),
                _ => None,
            });
        if daemon_alive == Some(false) {
            bail!(
                "the lab daemon exited during start-up; last lines of {}:\n{}",
                paths.daemon_log().display(),
                tail(&paths.daemon_log(), 15)
            );
        }
        if let Ok(p) = std::fs::read_to_string(paths.root.join("progress"))
            && p != last
        {
            progress(&p);
            last = p;
        }
        if started.elapsed() > UP_TIMEOUT {
            bail!(
                "the lab did not become ready within {}s; last lines of {}:\n{}",
                UP_TIMEOUT.as_secs(),
                paths.daemon_log().display(),
                tail(&paths.daemon_log(), 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `lab down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    /// Lab name.
    pub name: String,
    /// Whether anything of the lab existed.
    pub existed: bool,
    /// Network namespaces deleted.
    pub namespaces: usize,
    /// Processes stopped.
    pub processes: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Removes a lab completely: processes (the daemon, sandbox holders, pod processes and
/// anything else running inside the lab's namespaces), namespaces, state. Idempotent, and
/// works on a lab whose `up` or daemon was killed at any point.
///
/// # Errors
/// Missing privileges, or something that could not be removed (named in the error).
pub async fn down(name: &str) -> anyhow::Result<DownReport> {
    let started = Instant::now();
    validate_lab_name(name)?;
    if !kubelan_sys::is_root() {
        bail!("removing a lab needs root: run `sudo kubelan lab down --name {name}`");
    }
    let paths = LabPaths::new(name);
    let entries = Journal::read(&paths.journal());
    let mut ns_names: Vec<String> = namespaces_with_prefix(&paths.prefix());
    for e in &entries {
        if let JournalEntry::Netns { name } = e
            && !ns_names.contains(name)
            && netops::ns_path(name).exists()
        {
            ns_names.push(name.clone());
        }
    }
    let mut report = DownReport {
        name: name.to_string(),
        existed: paths.root.exists() || !ns_names.is_empty(),
        ..Default::default()
    };
    // 1. Ask the daemon to stop, briefly.
    let recorded: Vec<(u32, u64, String)> = entries
        .iter()
        .filter_map(|e| match e {
            JournalEntry::Process { pid, start, role } => Some((*pid, *start, role.clone())),
            _ => None,
        })
        .collect();
    for (pid, start, role) in recorded.iter().filter(|(_, _, r)| r == "daemon") {
        if kubelan_sys::signal_if_same(*pid, *start, kubelan_sys::SignalKind::SIGTERM) {
            report.processes += 1;
            let deadline = Instant::now() + Duration::from_secs(3);
            while kubelan_sys::process_alive(*pid)
                && kubelan_sys::process_start_time(*pid) == Some(*start)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = role;
        }
    }
    // 2. Kill everything recorded and everything inside the lab's namespaces.
    for (pid, start, _) in &recorded {
        if kubelan_sys::signal_if_same(*pid, *start, kubelan_sys::SignalKind::SIGKILL) {
            report.processes += 1;
        }
    }
    // The daemon may have been creating a pod when it stopped (a namespace added after the
    // first listing, or an orphaned `ip netns add` finishing): sweep until two rounds in a
    // row find nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut quiet = 0;
    let mut names = ns_names;
    while quiet < 2 {
        if names.is_empty() {
            quiet += 1;
        } else {
            quiet = 0;
            report.processes += kill_inside(name, &names).await?;
            let mut failed = Vec::new();
            for ns in &names {
                match netops::netns_del(ns).await {
                    Ok(()) => report.namespaces += 1,
                    Err(e) => failed.push(format!("{ns}: {e:#}")),
                }
            }
            if !failed.is_empty() {
                bail!("could not delete network namespaces: {}", failed.join("; "));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "lab {name} keeps gaining network namespaces ({}); is another command recreating it?",
                names.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        names = namespaces_with_prefix(&paths.prefix());
    }
    // 4. State.
    if paths.root.exists() {
        std::fs::remove_dir_all(&paths.root)
            .with_context(|| format!("remove {}", paths.root.display()))?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// SIGKILLs every process inside the named namespaces until none is left; returns how many
/// were signalled.
async fn kill_inside(lab: &str, names: &[String]) -> anyhow::Result<usize> {
    let ids: HashSet<kubelan_sys::NsId> = names
        .iter()
        .filter_map(|n| kubelan_sys::netns_id(&netops::ns_path(n)).ok())
        .collect();
    let mut killed = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<u32> = if ids.is_empty() {
            Vec::new()
        } else {
            kubelan_sys::pids_in_netns(&ids)
        };
        let pids: Vec<u32> = pids
            .into_iter()
            .filter(|p| *p != std::process::id())
            .collect();
        if pids.is_empty() {
            return Ok(killed);
        }
        for p in &pids {
            if kubelan_sys::signal(*p, kubelan_sys::SignalKind::SIGKILL) {
                killed += 1;
            }
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} inside lab {lab}'s namespaces did not exit after SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One lab host in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    /// Host name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Network namespace.
    pub netns: String,
    /// Addresses (CIDR notation).
    pub addresses: Vec<String>,
    /// Whether its sandbox holder is running.
    pub up: bool,
}

/// One pod in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct PodStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node.
    pub node: String,
    /// Pod IP.
    pub ip: String,
    /// Phase.
    pub phase: String,
    /// Ready containers / all.
    pub ready: String,
    /// Container restarts.
    pub restarts: u64,
}

/// How the cluster sees the laptop, in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct LaptopStatus {
    /// Whether the laptop sits behind the edge router's NAT (`edge.nat`), so that pods
    /// cannot reach it.
    pub behind_nat: bool,
    /// Its address as the API server, nodes, NodePorts and the agent see it.
    pub seen_as: std::net::Ipv4Addr,
}

/// `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    /// Lab name.
    pub name: String,
    /// `running`, `starting`, `failed`, `broken` (daemon gone), or `absent`.
    pub state: String,
    /// Creation time.
    pub created: Option<String>,
    /// Daemon PID and memory.
    pub daemon: Option<ProcessInfo>,
    /// Memory of every lab process (daemon, sandboxes, pods), in KiB.
    pub total_rss_kib: u64,
    /// Number of lab processes.
    pub processes: usize,
    /// API endpoint inside the lab.
    pub api_in_lab: Option<String>,
    /// API endpoint on this machine.
    pub api_on_machine: Option<String>,
    /// Kubeconfig for this machine.
    pub kubeconfig: Option<PathBuf>,
    /// Hosts.
    pub hosts: Vec<HostStatus>,
    /// How the cluster sees the laptop (absent when the lab has no record).
    pub laptop: Option<LaptopStatus>,
    /// Pods (from the API).
    pub pods: Vec<PodStatus>,
    /// Why pods are missing, if the API could not be asked.
    pub api_error: Option<String>,
    /// Start-up failure, if any.
    pub failure: Option<String>,
}

impl kubelan_term::json::Document for LabStatus {
    const TYPE: &'static str = "LabStatus";
}

/// A process of the lab.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    /// PID.
    pub pid: u32,
    /// Resident memory in KiB.
    pub rss_kib: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Reports a lab's state, hosts, pods and memory.
///
/// # Errors
/// When the name is invalid.
pub async fn status(name: &str) -> anyhow::Result<LabStatus> {
    validate_lab_name(name)?;
    let paths = LabPaths::new(name);
    let record = LabRecord::load(&paths).ok();
    let runtime = RuntimeInfo::load(&paths);
    let mut st = LabStatus {
        name: name.to_string(),
        state: "absent".into(),
        created: record.as_ref().map(|r| r.created.clone()),
        daemon: None,
        total_rss_kib: 0,
        processes: 0,
        api_in_lab: None,
        api_on_machine: None,
        kubeconfig: None,
        hosts: vec![],
        laptop: None,
        pods: vec![],
        api_error: None,
        failure: std::fs::read_to_string(paths.failed_file()).ok(),
    };
    let Some(record) = record else {
        if !namespaces_with_prefix(&paths.prefix()).is_empty() {
            st.state = "broken".into();
        }
        return Ok(st);
    };
    let daemon = Journal::read(&paths.journal())
        .into_iter()
        .rev()
        .find_map(|e| match e {
            JournalEntry::Process { pid, start, role } if role == "daemon" => Some((pid, start)),
            _ => None,
        });
    let daemon_alive =
        daemon.is_some_and(|(pid, start)| kubelan_sys::process_start_time(pid) == Some(start));
    st.daemon = daemon.filter(|_| daemon_alive).map(|(pid, _)| ProcessInfo {
        pid,
        rss_kib: rss_kib(pid),
    });
    st.state = if st.failure.is_some() {
        "failed"
    } else if !daemon_alive {
        "broken"
    } else if paths.ready_file().exists() {
        "running"
    } else {
        "starting"
    }
    .into();
    let plan = topology::plan(&record.config);
    st.laptop = Some(LaptopStatus {
        behind_nat: record.config.edge.nat,
        seen_as: record.config.laptop_address_in_cluster(),
    });
    let holders = runtime
        .as_ref()
        .map(|r| r.holders.clone())
        .unwrap_or_default();
    for h in &plan.hosts {
        st.hosts.push(HostStatus {
            name: h.name.clone(),
            role: h.role,
            netns: paths.netns(&h.name),
            addresses: h.ifaces.iter().map(|i| i.addr.to_string()).collect(),
            up: holders
                .get(&h.name)
                .is_some_and(|p| kubelan_sys::process_alive(*p)),
        });
    }
    // Memory of every lab process.
    let ids: HashSet<kubelan_sys::NsId> = namespaces_with_prefix(&paths.prefix())
        .iter()
        .filter_map(|n| kubelan_sys::netns_id(&netops::ns_path(n)).ok())
        .collect();
    let mut pids = kubelan_sys::pids_in_netns(&ids);
    if let Some(d) = &st.daemon {
        pids.push(d.pid);
    }
    st.processes = pids.len();
    st.total_rss_kib = pids.iter().map(|p| rss_kib(*p)).sum();
    if let Some(cp) = record.config.control_plane() {
        st.api_in_lab = Some(format!(
            "https://{}:{}",
            cp.address,
            crate::daemon::API_PORT
        ));
    }
    if let Some(rt) = &runtime {
        st.api_on_machine = Some(format!("https://127.0.0.1:{}", rt.api_port));
        st.kubeconfig = Some(paths.kubeconfig());
    }
    if daemon_alive && paths.kubeconfig().exists() {
        match list_pods(&paths).await {
            Ok(p) => st.pods = p,
            Err(e) => st.api_error = Some(format!("{e:#}")),
        }
    }
    Ok(st)
}

/// A kube-rs client for the lab, from the machine's kubeconfig.
///
/// # Errors
/// When the lab has no kubeconfig or it cannot be loaded.
pub async fn client(paths: &LabPaths) -> anyhow::Result<kube::Client> {
    let text = std::fs::read_to_string(paths.kubeconfig())
        .with_context(|| format!("lab {:?} has no kubeconfig; is it up?", paths.name))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

async fn list_pods(paths: &LabPaths) -> anyhow::Result<Vec<PodStatus>> {
    use k8s_openapi::api::core::v1::Pod;
    let api: kube::Api<Pod> = kube::Api::all(client(paths).await?);
    let list = tokio::time::timeout(Duration::from_secs(5), api.list(&Default::default()))
        .await
        .context("the lab API did not answer within 5 s")??;
    Ok(list
        .items
        .into_iter()
        .map(|p| {
            let st = p.status.unwrap_or_default();
            let cs = st.container_statuses.unwrap_or_default();
            PodStatus {
                namespace: p.metadata.namespace.unwrap_or_default(),
                name: p.metadata.name.unwrap_or_default(),
                node: p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                ip: st.pod_ip.unwrap_or_default(),
                phase: st.phase.unwrap_or_default(),
                ready: format!(
                    "{}/{}",
                    cs.iter().filter(|c| c.ready).count(),
                    cs.len().max(1)
                ),
                restarts: cs.iter().map(|c| c.restart_count as u64).sum(),
            }
        })
        .collect())
}

/// Where `lab exec` runs a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecTarget {
    /// A lab host by name.
    Host(String),
    /// A pod (namespace, name).
    Pod(String, String),
}

impl ExecTarget {
    /// Parses `node1`, `pod/web-abc` (namespace `default`) or `kube-system/kube-dns-abc`.
    pub fn parse(s: &str) -> Self {
        match s.split_once('/') {
            Some(("pod" | "pods" | "po", name)) => Self::Pod("default".into(), name.into()),
            Some((ns, name)) => Self::Pod(ns.into(), name.into()),
            None => Self::Host(s.into()),
        }
    }
}

/// Runs `argv` inside a lab host or pod and returns its exit code. On lab hosts,
/// `KUBECONFIG` points at the lab's kubeconfig (as seen from inside the lab).
///
/// # Errors
/// When the lab, host or pod does not exist, or the command cannot start.
pub async fn exec(name: &str, target: &ExecTarget, argv: &[String]) -> anyhow::Result<i32> {
    validate_lab_name(name)?;
    if !kubelan_sys::is_root() {
        bail!("entering lab namespaces needs root: run `sudo kubelan lab exec ...`");
    }
    let Some((program, args)) = argv.split_first() else {
        bail!("no command given: use `kubelan lab exec HOST -- COMMAND [ARGS...]`");
    };
    let paths = LabPaths::new(name);
    let runtime = RuntimeInfo::load(&paths).with_context(|| {
        format!("lab {name:?} is not running (`sudo kubelan lab up --name {name}`)")
    })?;
    let (pid, is_host) = match target {
        ExecTarget::Host(h) => {
            let pid = *runtime.holders.get(h).with_context(|| {
                format!(
                    "lab {name:?} has no host {h:?}; hosts: {}; for a pod use NAMESPACE/POD or pod/NAME",
                    runtime.holders.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            (pid, true)
        }
        ExecTarget::Pod(ns, pod) => {
            use k8s_openapi::api::core::v1::Pod;
            let api: kube::Api<Pod> = kube::Api::namespaced(client(&paths).await?, ns);
            let p = api
                .get(pod)
                .await
                .with_context(|| format!("pod {ns}/{pod}"))?;
            let uid = p.metadata.uid.unwrap_or_default();
            let pid_text = std::fs::read_to_string(paths.pod_dir(&uid).join("holder.pid"))
                .with_context(|| format!("pod {ns}/{pod} has no running sandbox yet"))?;
            (
                pid_text.trim().parse::<u32>().context("bad holder pid")?,
                false,
            )
        }
    };
    if !kubelan_sys::process_alive(pid) {
        bail!(
            "the sandbox of {target:?} is not running (lab state: `sudo kubelan lab status --name {name}`)"
        );
    }
    let ns = std::sync::Arc::new(kubelan_sys::Namespaces::of_process(pid)?);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    if is_host {
        cmd.env("KUBECONFIG", "/etc/kubelan/kubeconfig");
    }
    cmd.env("KUBELAN_LAB", name);
    // Pods and lab hosts may not see the caller's directory (pods have a private /tmp, for
    // one): use it where it exists, else `/`.
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    kubelan_sys::enter_on_spawn(&mut cmd, ns, kubelan_sys::Cwd::Prefer(&cwd), None)?;
    // Signals are caught before the command starts, so none arriving in between is lost
    // (nor kills this process and leaves the command behind).
    let mut signals = ForwardedSignals::new()?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {program:?} in {target:?}"))?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            sig = signals.next() => {
                // The command stays in this process group so that it can use the terminal;
                // a Ctrl-C typed there already reached it.
                if sig == Signal::SIGINT && terminal_foreground() {
                    continue;
                }
                // `id()` is `None` once the command has been reaped, so a reused PID is
                // never signalled.
                if let Some(id) = child.id().and_then(|id| i32::try_from(id).ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(id), sig);
                }
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(1)))
}

/// The signals `lab exec` passes on to its command: SIGINT, SIGTERM and SIGHUP.
struct ForwardedSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl ForwardedSignals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot catch SIGHUP")?,
        })
    }

    /// The next signal received.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.hup.recv() => Signal::SIGHUP,
        }
    }
}

/// Whether this process is in the foreground process group of a controlling terminal, where
/// the terminal's own signals (Ctrl-C) reach every process of the group.
fn terminal_foreground() -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| foreground_from_stat(&s))
        .unwrap_or(false)
}

pub(crate) use kubelan_sys::procstat::foreground_from_stat;

/// Path of a lab's kubeconfig (`lab_view`: as seen from lab hosts).
///
/// # Errors
/// When the lab does not exist.
pub fn kubeconfig(name: &str, lab_view: bool) -> anyhow::Result<PathBuf> {
    validate_lab_name(name)?;
    let paths = LabPaths::new(name);
    let p = if lab_view {
        paths.lab_kubeconfig()
    } else {
        paths.kubeconfig()
    };
    if !p.exists() {
        bail!(
            "lab {name:?} is not running (no {}); start it with `sudo kubelan lab up --name {name}`",
            p.display()
        );
    }
    Ok(p)
}

/// Every lab with state on this machine.
pub fn list() -> Vec<String> {
    state::list_labs()
}

#[cfg(test)]
mod tests {
    use kubelan_term::json::Document;

    use super::*;

    /// `lab up` and `lab status` with `--output json`: versioned documents (docs/json.md).
    #[tokio::test]
    async fn json_documents_are_versioned() {
        let up = UpReport {
            name: "t".into(),
            seconds: 1.5,
            kubeconfig: "/tmp/kc".into(),
            api_in_lab: "https://10.4.7.10:6443".into(),
            api_on_machine: "https://127.0.0.1:40000".into(),
        };
        let v = up.to_document().unwrap();
        assert_eq!(v["apiVersion"], "kubelan.dev/v1");
        assert_eq!(v["type"], "LabUp");
        assert_eq!(v["seconds"], 1.5);
        // A lab that does not exist has a status too (`absent`).
        let v = status("jsonabsent").await.unwrap().to_document().unwrap();
        assert_eq!(v["apiVersion"], "kubelan.dev/v1");
        assert_eq!(v["type"], "LabStatus");
        assert_eq!(v["state"], "absent");
    }
}
