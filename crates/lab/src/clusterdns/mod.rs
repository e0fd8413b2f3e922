//! The lab's kube-dns: a real `dnsmasq` whose records follow the API.
//!
//! The `kube-system/kube-dns` pod runs [`run`] inside its network namespace.
//! It watches Services, EndpointSlices and Pods in all namespaces, turns them
//! into address records with the pure function [`records`], and writes them as
//! one hosts file into a directory that `dnsmasq --hostsdir` watches with
//! inotify. `dnsmasq` itself runs as a supervised child process.
//!
//! # Records
//!
//! Following the "Kubernetes DNS-Based Service Discovery" specification
//! (schema 1.1.0) and the behaviour of CoreDNS's `kubernetes` plugin:
//!
//! * a Service with a cluster IP: `<svc>.<ns>.svc.<domain>` → each of its
//!   cluster IPs (A and AAAA for dual-stack Services);
//! * a headless Service (`clusterIP: None`): `<svc>.<ns>.svc.<domain>` → every
//!   ready endpoint address of its EndpointSlices (found through the
//!   `kubernetes.io/service-name` label), plus `<hostname>.<svc>.<ns>.svc.<domain>`
//!   for endpoints that carry a hostname (StatefulSet pods), or
//!   `<dashed-ip>.<svc>.<ns>.svc.<domain>` for those without one (what CoreDNS
//!   answers, and what makes reverse lookups of headless endpoints work).
//!   An endpoint is ready when its `ready` condition is true or unset; with
//!   `publishNotReadyAddresses` (or the legacy
//!   `service.alpha.kubernetes.io/tolerate-unready-endpoints: "true"`
//!   annotation) every endpoint counts;
//! * every pod IP: `<dashed-ip>.<ns>.pod.<domain>` (`10-244-1-5.default.pod.cluster.local`;
//!   colons become dashes for IPv6). Host-network pods (which do not own their
//!   IP) and finished pods (whose IP may already belong to another pod) get no
//!   record;
//! * ExternalName Services are skipped: a CNAME to an outside name cannot be
//!   followed without an upstream resolver, and hosts files cannot hold CNAMEs;
//! * `dns-version.<domain>` TXT → the schema version (a static dnsmasq flag).
//!
//! Reverse (PTR) lookups answer the first name of an address, so names are
//! ordered by preference: Service names of cluster IPs, then endpoint
//! hostnames, then generated endpoint names, then headless Service names, then
//! pod names; ties are broken alphabetically. SRV records are not served.
//!
//! # dnsmasq
//!
//! The flags (see [`dnsmasq_args`]) were settled by experiment with dnsmasq
//! 2.90:
//!
//! * `--hostsdir` picks up a renamed-in file at once (inotify `IN_MOVED_TO`):
//!   a query sent right after the `rename` already sees the new records, and
//!   records that disappear from the file disappear from the answers. No
//!   signal is needed.
//! * The temporary file must start with a dot: dnsmasq reads *every* new file
//!   in the directory, except names starting with `.` (and a few editor
//!   patterns); a visible temporary file would be read as a second hosts
//!   file and its names would linger after the rename.
//! * `--cache-size` does not matter: hosts-file records are kept outside the
//!   answer cache. With the default (150) 5000 names were all served, and with
//!   `--cache-size=0` updates were seen just the same. The default is kept.
//! * `--local=/<domain>/` answers the cluster domain only from local data
//!   (unknown names get NXDOMAIN); everything else gets REFUSED because there
//!   is no upstream (`--no-resolv`).
//! * `--bogus-priv` answers reverse lookups of unknown private addresses with
//!   NXDOMAIN instead of REFUSED; known addresses still get their PTR.
//! * `--conf-file=/dev/null` keeps the machine's `/etc/dnsmasq.conf` (and
//!   whatever `conf-dir` it names) out of the lab.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::future::Future;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The cluster domain used when none is configured.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The version of the Kubernetes DNS schema served at `dns-version.<domain>`.
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";

/// Name of the hosts file written into [`ClusterDnsOptions::hosts_dir`].
pub const HOSTS_FILE_NAME: &str = "cluster-dns.hosts";

/// Name of the temporary file used for atomic replacement; the leading dot
/// makes dnsmasq ignore it.
const TEMP_FILE_NAME: &str = ".cluster-dns.hosts.tmp";

/// The label of an EndpointSlice naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The legacy annotation with the meaning of `publishNotReadyAddresses`.
const TOLERATE_UNREADY_ANNOTATION: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// How long changes are collected before the records are recomputed.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How long to wait for the first complete listing before writing what is
/// known and starting dnsmasq anyway.
const INITIAL_SYNC_GRACE: Duration = Duration::from_secs(3);

/// How long dnsmasq gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// First delay before restarting a dnsmasq that exited.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Longest delay before restarting a dnsmasq that exited.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A dnsmasq that ran at least this long is considered healthy: its next
/// restart starts again from the shortest delay.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Settings of [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDnsOptions {
    /// The cluster domain, `cluster.local` by default.
    pub domain: String,
    /// The directory dnsmasq watches; created if missing. The records are
    /// written to [`HOSTS_FILE_NAME`] in it.
    pub hosts_dir: PathBuf,
    /// The DNS port, 53 by default.
    pub port: u16,
    /// The address to listen on; `None` listens on every address of the
    /// network namespace.
    pub listen: Option<IpAddr>,
    /// The dnsmasq program, looked up in `PATH` when it has no slash.
    pub dnsmasq: PathBuf,
    /// The TTL of answers, in seconds.
    pub ttl: u32,
}

impl Default for ClusterDnsOptions {
    fn default() -> Self {
        Self {
            domain: DEFAULT_DOMAIN.to_owned(),
            hosts_dir: PathBuf::from("/run/kubelan/cluster-dns"),
            port: 53,
            listen: None,
            dnsmasq: PathBuf::from("dnsmasq"),
            ttl: 5,
        }
    }
}

/// Address records: each address with its names, most preferred name first.
pub type Records = Vec<(IpAddr, Vec<String>)>;

/// Why a name belongs to an address; the order is the order of preference for
/// reverse lookups (dnsmasq answers a PTR query with the first name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NameKind {
    /// `<svc>.<ns>.svc.<domain>` of a cluster IP.
    ClusterIp,
    /// `<hostname>.<svc>.<ns>.svc.<domain>` of an endpoint with a hostname.
    EndpointHostname,
    /// `<dashed-ip>.<svc>.<ns>.svc.<domain>` of an endpoint without one.
    EndpointGenerated,
    /// `<svc>.<ns>.svc.<domain>` of a headless Service's endpoint.
    Headless,
    /// `<dashed-ip>.<ns>.pod.<domain>`.
    Pod,
}

/// Computes the cluster's address records from the API objects.
///
/// The result is sorted by address; each address lists its names once, most
/// preferred first (see the [module docs](self)). Objects with missing or
/// malformed fields are skipped, as are names that are not valid DNS names, so
/// any input gives a usable hosts file. The `domain` is lowercased and loses
/// surrounding dots.
pub fn records(
    domain: &str,
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &[Pod],
) -> Records {
    compute_records(domain, services, slices, pods)
}

/// [`records`] over anything that borrows the objects (such as the `Arc`s of
/// a reflector store), so the watcher does not need to clone them.
fn compute_records<S, E, P>(domain: &str, services: &[S], slices: &[E], pods: &[P]) -> Records
where
    S: Borrow<Service>,
    E: Borrow<EndpointSlice>,
    P: Borrow<Pod>,
{
    let domain = normalize_domain(domain);
    let mut by_ip: BTreeMap<IpAddr, Vec<(NameKind, String)>> = BTreeMap::new();
    let mut add = |ip: IpAddr, kind: NameKind, name: String| {
        if is_dns_name(&name) {
            by_ip.entry(ip).or_default().push((kind, name));
        }
    };

    // EndpointSlices by (namespace, service name).
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let slice = slice.borrow();
        let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.as_deref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        slices_of.entry((ns, svc.as_str())).or_default().push(slice);
    }

    for svc in services {
        let svc = svc.borrow();
        let (Some(name), Some(ns), Some(spec)) = (
            svc.metadata.name.as_deref(),
            svc.metadata.namespace.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let service_name = format!("{}.{}.svc.{domain}", lower(name), lower(ns));
        let cluster_ips: Vec<&str> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        let headless = cluster_ips.iter().any(|ip| ip.eq_ignore_ascii_case("None"));
        if !headless {
            for ip in cluster_ips
                .iter()
                .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            {
                add(ip, NameKind::ClusterIp, service_name.clone());
            }
            continue;
        }

        let all_count = spec.publish_not_ready_addresses == Some(true)
            || svc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOLERATE_UNREADY_ANNOTATION))
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        for slice in slices_of.get(&(ns, name)).into_iter().flatten() {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready && !all_count {
                    continue;
                }
                let hostname = endpoint.hostname.as_deref().filter(|h| is_label(h));
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                {
                    add(ip, NameKind::Headless, service_name.clone());
                    match hostname {
                        Some(host) => add(
                            ip,
                            NameKind::EndpointHostname,
                            format!("{}.{service_name}", lower(host)),
                        ),
                        None => add(
                            ip,
                            NameKind::EndpointGenerated,
                            format!("{}.{service_name}", dashed(ip)),
                        ),
                    }
                }
            }
        }
    }

    for pod in pods {
        let pod = pod.borrow();
        let Some(ns) = pod.metadata.namespace.as_deref() else {
            continue;
        };
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            continue;
        }
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
        let ips: Vec<&str> = match status.pod_ips.as_ref() {
            Some(list) if !list.is_empty() => listed.collect(),
            _ => status.pod_ip.as_deref().into_iter().collect(),
        };
        for ip in ips.iter().filter_map(|ip| ip.trim().parse::<IpAddr>().ok()) {
            add(
                ip,
                NameKind::Pod,
                format!("{}.{}.pod.{domain}", dashed(ip), lower(ns)),
            );
        }
    }

    by_ip
        .into_iter()
        .map(|(ip, mut names)| {
            names.sort();
            let mut seen = HashSet::new();
            let names = names
                .into_iter()
                .filter_map(|(_, name)| seen.insert(name.clone()).then_some(name))
                .collect();
            (ip, names)
        })
        .collect()
}

/// Lowercases and trims whitespace and dots from a domain.
fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_matches('.').to_ascii_lowercase()
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// An address with its separators replaced by dashes: `10-244-1-5`, `fd00--5`.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Whether `s` is one DNS label of the characters a hosts file can carry.
fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` is a dotted DNS name made of [`is_label`] labels.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Renders records as a hosts file: one `IP name [name…]` line per address.
pub fn render_hosts(records: &[(IpAddr, Vec<String>)]) -> String {
    let mut out = String::from("# written by kubelan lab cluster-dns; do not edit\n");
    for (ip, names) in records {
        if names.is_empty() {
            continue;
        }
        out.push_str(&ip.to_string());
        for name in names {
            out.push(' ');
            out.push_str(name);
        }
        out.push('\n');
    }
    out
}

/// Writes the hosts file atomically, and only when its content changes.
#[derive(Debug)]
pub struct HostsWriter {
    path: PathBuf,
    temp: PathBuf,
    current: Option<String>,
}

impl HostsWriter {
    /// A writer for [`HOSTS_FILE_NAME`] in `dir`, which must exist.
    ///
    /// A file left there by an earlier run is kept (it is better than nothing
    /// until the first sync) and remembered, so an identical first write is
    /// skipped; a temporary file left by a crash is removed.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let meta = fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        let writer = Self {
            path: dir.join(HOSTS_FILE_NAME),
            temp: dir.join(TEMP_FILE_NAME),
            current: None,
        };
        writer.remove_temp();
        Ok(Self {
            current: fs::read_to_string(&writer.path).ok(),
            ..writer
        })
    }

    /// The path of the hosts file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `records`, returning whether the file changed.
    pub fn write(&mut self, records: &[(IpAddr, Vec<String>)]) -> io::Result<bool> {
        self.write_content(render_hosts(records))
    }

    /// Replaces the file with `content` (temporary file, then `rename`) unless
    /// it already holds exactly that.
    fn write_content(&mut self, content: String) -> io::Result<bool> {
        if self.current.as_deref() == Some(content.as_str()) {
            return Ok(false);
        }
        let result = (|| {
            let mut file = fs::File::create(&self.temp)?;
            file.write_all(content.as_bytes())?;
            file.flush()?;
            drop(file);
            fs::rename(&self.temp, &self.path)
        })();
        if let Err(e) = result {
            self.remove_temp();
            return Err(e);
        }
        self.current = Some(content);
        Ok(true)
    }

    /// Removes the temporary file, if one is left.
    pub fn remove_temp(&self) {
        if let Err(e) = fs::remove_file(&self.temp)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.temp.display(), error = %e, "cannot remove temporary hosts file");
        }
    }
}

/// The dnsmasq command line for `opts` (without the program name); see the
/// [module docs](self) for why each flag is there.
pub fn dnsmasq_args(opts: &ClusterDnsOptions) -> Vec<OsString> {
    let domain = normalize_domain(&opts.domain);
    let mut hostsdir = OsString::from("--hostsdir=");
    hostsdir.push(opts.hosts_dir.as_os_str());
    let mut args: Vec<OsString> = vec![
        "--conf-file=/dev/null".into(),
        "--keep-in-foreground".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        hostsdir,
        format!("--local=/{domain}/").into(),
        "--bogus-priv".into(),
        format!("--port={}", opts.port).into(),
        "--log-facility=-".into(),
        "--pid-file=".into(),
        format!("--local-ttl={}", opts.ttl).into(),
        "--user=root".into(),
        format!("--txt-record=dns-version.{domain},{DNS_SCHEMA_VERSION}").into(),
    ];
    if let Some(listen) = opts.listen {
        args.push(format!("--listen-address={listen}").into());
        args.push("--bind-interfaces".into());
    }
    args
}

/// Which watched kind an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Services = 0,
    EndpointSlices = 1,
    Pods = 2,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Services, Kind::EndpointSlices, Kind::Pods];

    fn name(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices",
            Kind::Pods => "pods",
        }
    }
}

/// One item of the merged watch streams.
enum WatchUpdate {
    /// The store of `Kind` changed; `listed` when a full listing just completed.
    Changed { kind: Kind, listed: bool },
    /// The watch of `Kind` failed; it is retried with backoff.
    Failed { kind: Kind, error: String },
}

/// Turns a reflector stream into [`WatchUpdate`]s.
fn updates<K, S>(kind: Kind, stream: S) -> impl Stream<Item = WatchUpdate> + Send + 'static
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    stream.map(move |item| match item {
        Ok(event) => WatchUpdate::Changed {
            kind,
            listed: matches!(event, watcher::Event::InitDone),
        },
        Err(e) => WatchUpdate::Failed {
            kind,
            error: e.to_string(),
        },
    })
}

/// Runs the cluster DNS until `shutdown` completes.
///
/// Watches the API through `client`, keeps the hosts file in
/// `opts.hosts_dir` current (changes land within about 100 ms of the watch
/// event) and supervises dnsmasq, restarting it with backoff when it exits.
/// dnsmasq starts once the first complete listing is written, or after a few
/// seconds if the API is slow. On shutdown dnsmasq gets SIGTERM, then SIGKILL
/// after 2 s, and the temporary file is removed.
///
/// Fails when the domain is invalid, the directory cannot be prepared, or
/// dnsmasq cannot be started the first time; later failures are logged and
/// retried.
pub async fn run(
    opts: ClusterDnsOptions,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let domain = normalize_domain(&opts.domain);
    if !is_dns_name(&domain) {
        anyhow::bail!("invalid cluster domain {:?}", opts.domain);
    }
    fs::create_dir_all(&opts.hosts_dir)
        .with_context(|| format!("cannot create {}", opts.hosts_dir.display()))?;
    let mut writer = HostsWriter::new(&opts.hosts_dir)
        .with_context(|| format!("cannot use {}", opts.hosts_dir.display()))?;

    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let config = watcher::Config::default();
    let svc_stream = watcher(Api::<Service>::all(client.clone()), config.clone())
        .modify(|s| s.meta_mut().managed_fields = None)
        .default_backoff()
        .reflect(svc_writer);
    let slice_stream = watcher(Api::<EndpointSlice>::all(client.clone()), config.clone())
        .modify(|s| s.meta_mut().managed_fields = None)
        .default_backoff()
        .reflect(slice_writer);
    let pod_stream = watcher(Api::<Pod>::all(client), config)
        .modify(slim_pod)
        .default_backoff()
        .reflect(pod_writer);
    let mut events = futures::stream::select_all([
        updates(Kind::Services, svc_stream).boxed(),
        updates(Kind::EndpointSlices, slice_stream).boxed(),
        updates(Kind::Pods, pod_stream).boxed(),
    ]);

    let program = opts.dnsmasq.clone();
    let args = dnsmasq_args(&ClusterDnsOptions {
        domain: domain.clone(),
        ..opts.clone()
    });
    let mut dnsmasq = Dnsmasq::new(program, args);

    let mut listed = [false; 3];
    let mut synced = false;
    let mut write_at: Option<Instant> = None;
    let mut grace_until: Option<Instant> = Some(Instant::now() + INITIAL_SYNC_GRACE);
    let mut last = Records::new();
    let mut shutdown = std::pin::pin!(shutdown);

    let result = loop {
        // `select!` builds every branch's future even when its condition is
        // false, so timers get a harmless fallback instead of an unwrap.
        let write_deadline = write_at.unwrap_or_else(Instant::now);
        let grace_deadline = grace_until.unwrap_or_else(Instant::now);
        let start_deadline = dnsmasq.start_at.unwrap_or_else(Instant::now);
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            Some(update) = events.next() => match update {
                WatchUpdate::Changed { kind, listed: done } => {
                    if done && !listed[kind as usize] {
                        listed[kind as usize] = true;
                        tracing::debug!(kind = kind.name(), "initial listing complete");
                    }
                    if !synced && listed.iter().all(|l| *l) {
                        synced = true;
                        grace_until = None;
                        write_at = Some(Instant::now());
                    } else if synced && write_at.is_none() {
                        write_at = Some(Instant::now() + DEBOUNCE);
                    }
                }
                WatchUpdate::Failed { kind, error } => {
                    tracing::warn!(kind = kind.name(), %error, "watch failed; retrying with backoff");
                }
            },
            () = tokio::time::sleep_until(grace_deadline), if grace_until.is_some() => {
                grace_until = None;
                synced = true;
                write_at = Some(Instant::now());
                let missing: Vec<&str> = Kind::ALL
                    .iter()
                    .filter(|k| !listed[**k as usize])
                    .map(|k| k.name())
                    .collect();
                tracing::warn!(?missing, "API listing incomplete; serving what is known so far");
            }
            () = tokio::time::sleep_until(write_deadline), if write_at.is_some() => {
                write_at = None;
                let next = current_records(&domain, &services, &slices, &pods);
                match writer.write(&next) {
                    Ok(changed) => {
                        if changed {
                            log_change(&last, &next);
                        }
                        last = next;
                    }
                    Err(e) => {
                        tracing::error!(path = %writer.path().display(), error = %e, "cannot write the hosts file; retrying");
                        write_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
                if !dnsmasq.ever_started && dnsmasq.start_at.is_none() && dnsmasq.child.is_none() {
                    dnsmasq.start_at = Some(Instant::now());
                }
            }
            () = tokio::time::sleep_until(start_deadline), if dnsmasq.start_at.is_some() => {
                if let Err(e) = dnsmasq.start() {
                    break Err(e);
                }
            }
            status = wait_child(&mut dnsmasq.child) => dnsmasq.exited(status),
        }
    };

    dnsmasq.stop().await;
    writer.remove_temp();
    result
}

/// Drops the parts of a pod the records do not need, to keep the store small.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        host_network: spec.host_network,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..PodStatus::default()
    });
}

/// The records for the stores' current content.
fn current_records(
    domain: &str,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pods: &Store<Pod>,
) -> Records {
    compute_records(domain, &services.state(), &slices.state(), &pods.state())
}

/// Logs a one-line summary of a record-set change.
fn log_change(old: &Records, new: &Records) {
    let pairs = |records: &Records| -> HashSet<(IpAddr, String)> {
        records
            .iter()
            .flat_map(|(ip, names)| names.iter().map(move |n| (*ip, n.clone())))
            .collect()
    };
    let (old_pairs, new_pairs) = (pairs(old), pairs(new));
    let added = new_pairs.difference(&old_pairs).count();
    let removed = old_pairs.difference(&new_pairs).count();
    let names: HashSet<&str> = new
        .iter()
        .flat_map(|(_, names)| names.iter().map(String::as_str))
        .collect();
    tracing::info!(
        addresses = new.len(),
        names = names.len(),
        records = new_pairs.len(),
        added,
        removed,
        "cluster DNS records updated"
    );
}

/// Waits for the child to exit; never completes when there is none.
async fn wait_child(child: &mut Option<Child>) -> io::Result<ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// The supervised dnsmasq process.
struct Dnsmasq {
    program: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    /// When to (re)start it, if it is not running.
    start_at: Option<Instant>,
    started: Instant,
    backoff: Duration,
    ever_started: bool,
}

impl Dnsmasq {
    fn new(program: PathBuf, args: Vec<OsString>) -> Self {
        Self {
            program,
            args,
            child: None,
            start_at: None,
            started: Instant::now(),
            backoff: RESTART_BACKOFF_MIN,
            ever_started: false,
        }
    }

    /// Starts dnsmasq. Failing the very first time is an error (the program is
    /// probably missing); later failures are retried with backoff.
    fn start(&mut self) -> anyhow::Result<()> {
        self.start_at = None;
        let spawned = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if !self.ever_started => {
                return Err(e)
                    .with_context(|| format!("cannot start dnsmasq ({})", self.program.display()));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot restart dnsmasq");
                self.schedule_restart();
                return Ok(());
            }
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_output(out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_output(err));
        }
        tracing::info!(pid = child.id(), "dnsmasq started");
        self.child = Some(child);
        self.started = Instant::now();
        self.ever_started = true;
        Ok(())
    }

    /// Handles the exit of the child.
    fn exited(&mut self, status: io::Result<ExitStatus>) {
        self.child = None;
        let ran = self.started.elapsed();
        if ran >= HEALTHY_RUN {
            self.backoff = RESTART_BACKOFF_MIN;
        }
        match status {
            Ok(status) => tracing::warn!(%status, ?ran, "dnsmasq exited; restarting"),
            Err(e) => tracing::warn!(error = %e, ?ran, "lost track of dnsmasq; restarting"),
        }
        self.schedule_restart();
    }

    fn schedule_restart(&mut self) {
        self.start_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RESTART_BACKOFF_MAX);
    }

    /// Stops dnsmasq: SIGTERM by PID, SIGKILL after [`STOP_GRACE`].
    async fn stop(&mut self) {
        self.start_at = None;
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                tracing::debug!(error = %e, "cannot send SIGTERM to dnsmasq");
            }
            if let Ok(status) = tokio::time::timeout(STOP_GRACE, child.wait()).await {
                tracing::info!(status = ?status.ok(), "dnsmasq stopped");
                return;
            }
            tracing::warn!("dnsmasq ignored SIGTERM; killing it");
        }
        if let Err(e) = child.kill().await {
            tracing::warn!(error = %e, "cannot kill dnsmasq");
        }
    }
}

/// Forwards dnsmasq's log lines to tracing: problems as warnings, the rest
/// (including its per-reload chatter) at debug level.
async fn forward_output(stream: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let lowered = line.to_ascii_lowercase();
        let problem = ["fail", "error", "cannot", "illegal", "bad ", "refused"]
            .iter()
            .any(|w| lowered.contains(w));
        if problem {
            tracing::warn!(target: "dnsmasq", "{line}");
        } else {
            tracing::debug!(target: "dnsmasq", "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap as Map;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.to_owned()),
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        }
    }

    fn cluster_ip_service(ns: &str, name: &str, ips: &[&str]) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: ips.first().map(|s| (*s).to_owned()),
                cluster_ips: Some(ips.iter().map(|s| (*s).to_owned()).collect()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn headless_service(ns: &str, name: &str, publish_not_ready: bool) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_owned()),
                cluster_ips: Some(vec!["None".to_owned()]),
                publish_not_ready_addresses: publish_not_ready.then_some(true),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// An endpoint: address, hostname, ready condition (`None` = unset).
    type Ep<'a> = (&'a str, Option<&'a str>, Option<bool>);

    fn slice(ns: &str, name: &str, service: &str, family: &str, eps: &[Ep<'_>]) -> EndpointSlice {
        let mut metadata = meta(ns, name);
        metadata.labels = Some(Map::from([(
            SERVICE_NAME_LABEL.to_owned(),
            service.to_owned(),
        )]));
        EndpointSlice {
            metadata,
            address_type: family.to_owned(),
            endpoints: eps
                .iter()
                .map(|(ip, host, ready)| Endpoint {
                    addresses: vec![(*ip).to_owned()],
                    hostname: host.map(str::to_owned),
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: None,
        }
    }

    fn pod(ns: &str, name: &str, ips: &[&str]) -> Pod {
        Pod {
            metadata: meta(ns, name),
            status: Some(PodStatus {
                phase: Some("Running".to_owned()),
                pod_ip: ips.first().map(|s| (*s).to_owned()),
                pod_ips: Some(
                    ips.iter()
                        .map(|ip| PodIP {
                            ip: (*ip).to_owned(),
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names_of<'a>(records: &'a Records, addr: &str) -> Vec<&'a str> {
        records
            .iter()
            .find(|(ip, _)| *ip == self::ip(addr))
            .map(|(_, names)| names.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn cluster_ip_services_in_several_namespaces() {
        let services = [
            cluster_ip_service("default", "kubernetes", &["10.96.0.1"]),
            cluster_ip_service("kube-system", "kube-dns", &["10.96.0.10"]),
            cluster_ip_service("shop", "web", &["10.96.5.5", "fd00:96::5"]),
        ];
        let got = records("cluster.local", &services, &[], &[]);
        assert_eq!(
            got,
            vec![
                (
                    ip("10.96.0.1"),
                    vec!["kubernetes.default.svc.cluster.local".to_owned()]
                ),
                (
                    ip("10.96.0.10"),
                    vec!["kube-dns.kube-system.svc.cluster.local".to_owned()]
                ),
                (
                    ip("10.96.5.5"),
                    vec!["web.shop.svc.cluster.local".to_owned()]
                ),
                (
                    ip("fd00:96::5"),
                    vec!["web.shop.svc.cluster.local".to_owned()]
                ),
            ]
        );
    }

    #[test]
    fn headless_service_with_hostnames() {
        let services = [headless_service("default", "db", false)];
        let slices = [slice(
            "default",
            "db-abc",
            "db",
            "IPv4",
            &[
                ("10.244.1.5", Some("db-0"), Some(true)),
                ("10.244.2.7", Some("db-1"), None),
                ("10.244.3.9", None, Some(true)),
            ],
        )];
        let got = records("cluster.local.", &services, &slices, &[]);
        assert_eq!(
            names_of(&got, "10.244.1.5"),
            [
                "db-0.db.default.svc.cluster.local",
                "db.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            names_of(&got, "10.244.2.7"),
            [
                "db-1.db.default.svc.cluster.local",
                "db.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            names_of(&got, "10.244.3.9"),
            [
                "10-244-3-9.db.default.svc.cluster.local",
                "db.default.svc.cluster.local"
            ]
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn not_ready_endpoints_are_left_out() {
        let services = [headless_service("default", "db", false)];
        let slices = [slice(
            "default",
            "db-abc",
            "db",
            "IPv4",
            &[
                ("10.244.1.5", Some("db-0"), Some(true)),
                ("10.244.1.6", Some("db-1"), Some(false)),
            ],
        )];
        let got = records("cluster.local", &services, &slices, &[]);
        assert_eq!(got.len(), 1);
        assert!(names_of(&got, "10.244.1.6").is_empty());
    }

    #[test]
    fn publish_not_ready_addresses_includes_them() {
        let mut legacy = headless_service("default", "legacy", false);
        legacy.metadata.annotations = Some(Map::from([(
            TOLERATE_UNREADY_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]));
        let services = [headless_service("default", "db", true), legacy];
        let slices = [
            slice(
                "default",
                "db-abc",
                "db",
                "IPv4",
                &[("10.244.1.6", Some("db-1"), Some(false))],
            ),
            slice(
                "default",
                "legacy-abc",
                "legacy",
                "IPv4",
                &[("10.244.1.7", None, Some(false))],
            ),
        ];
        let got = records("cluster.local", &services, &slices, &[]);
        assert_eq!(
            names_of(&got, "10.244.1.6"),
            [
                "db-1.db.default.svc.cluster.local",
                "db.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            names_of(&got, "10.244.1.7"),
            [
                "10-244-1-7.legacy.default.svc.cluster.local",
                "legacy.default.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn slices_only_match_their_own_namespace_and_family() {
        let services = [
            headless_service("a", "db", false),
            headless_service("b", "db", false),
        ];
        let slices = [
            slice("a", "db-1", "db", "IPv4", &[("10.1.0.1", None, None)]),
            slice("b", "db-1", "db", "IPv6", &[("fd00::b", Some("x"), None)]),
            slice("b", "db-2", "db", "FQDN", &[("example.com", None, None)]),
            slice("c", "db-1", "db", "IPv4", &[("10.3.0.1", None, None)]),
        ];
        let got = records("cluster.local", &services, &slices, &[]);
        assert_eq!(
            names_of(&got, "10.1.0.1"),
            ["10-1-0-1.db.a.svc.cluster.local", "db.a.svc.cluster.local"]
        );
        assert_eq!(
            names_of(&got, "fd00::b"),
            ["x.db.b.svc.cluster.local", "db.b.svc.cluster.local"]
        );
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn pods_get_dashed_names() {
        let mut host_net = pod("kube-system", "node-agent", &["172.18.0.2"]);
        host_net.spec = Some(PodSpec {
            host_network: Some(true),
            ..PodSpec::default()
        });
        let mut finished = pod("default", "job-x", &["10.244.9.9"]);
        finished.status.as_mut().unwrap().phase = Some("Succeeded".to_owned());
        let pods = [
            pod("default", "web-1", &["10.244.1.5", "fd00:244::5"]),
            pod("shop", "cart-1", &["10.244.2.8"]),
            host_net,
            finished,
        ];
        let got = records("cluster.local", &[], &[], &pods);
        assert_eq!(
            got,
            vec![
                (
                    ip("10.244.1.5"),
                    vec!["10-244-1-5.default.pod.cluster.local".to_owned()]
                ),
                (
                    ip("10.244.2.8"),
                    vec!["10-244-2-8.shop.pod.cluster.local".to_owned()]
                ),
                (
                    ip("fd00:244::5"),
                    vec!["fd00-244--5.default.pod.cluster.local".to_owned()]
                ),
            ]
        );
    }

    #[test]
    fn endpoint_names_come_before_pod_names_and_order_is_stable() {
        let services = [
            headless_service("default", "db", false),
            cluster_ip_service("default", "web", &["10.96.0.20"]),
        ];
        let slices = [slice(
            "default",
            "db-abc",
            "db",
            "IPv4",
            &[
                ("10.244.1.6", Some("db-1"), Some(true)),
                ("10.244.1.5", Some("db-0"), Some(true)),
            ],
        )];
        let pods = [
            pod("default", "db-1", &["10.244.1.6"]),
            pod("default", "db-0", &["10.244.1.5"]),
        ];
        let got = records("cluster.local", &services, &slices, &pods);
        assert_eq!(
            names_of(&got, "10.244.1.5"),
            [
                "db-0.db.default.svc.cluster.local",
                "db.default.svc.cluster.local",
                "10-244-1-5.default.pod.cluster.local"
            ]
        );
        let ips: Vec<IpAddr> = got.iter().map(|(ip, _)| *ip).collect();
        assert_eq!(ips, [ip("10.96.0.20"), ip("10.244.1.5"), ip("10.244.1.6")]);

        // Input order does not matter.
        let mut rev_services = services.clone();
        rev_services.reverse();
        let mut rev_pods = pods.clone();
        rev_pods.reverse();
        assert_eq!(
            records("cluster.local", &rev_services, &slices, &rev_pods),
            got
        );
    }

    #[test]
    fn malformed_objects_are_skipped() {
        let mut external = cluster_ip_service("default", "ext", &[]);
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".to_owned());
        external.spec.as_mut().unwrap().external_name = Some("example.com".to_owned());
        let mut no_ns = cluster_ip_service("x", "nons", &["10.96.0.30"]);
        no_ns.metadata.namespace = None;
        let services = [
            external,
            no_ns,
            cluster_ip_service("default", "bad ip", &["10.96.0.31"]),
            cluster_ip_service("default", "garbage", &["not-an-ip"]),
            cluster_ip_service("default", "pending", &[""]),
            Service::default(),
        ];
        let mut unlabeled = slice("default", "s", "x", "IPv4", &[("10.1.1.1", None, None)]);
        unlabeled.metadata.labels = None;
        let pods = [Pod::default(), pod("default", "p", &["nonsense"])];
        let got = records("cluster.local", &services, &[unlabeled], &pods);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn hosts_file_rendering() {
        let recs = vec![
            (
                ip("10.96.0.1"),
                vec!["kubernetes.default.svc.cluster.local".to_owned()],
            ),
            (
                ip("10.244.1.5"),
                vec![
                    "a.x.svc.cluster.local".to_owned(),
                    "b.x.svc.cluster.local".to_owned(),
                ],
            ),
            (ip("10.244.1.6"), vec![]),
        ];
        let text = render_hosts(&recs);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "10.96.0.1 kubernetes.default.svc.cluster.local",
                "10.244.1.5 a.x.svc.cluster.local b.x.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn writer_is_atomic_and_skips_identical_content() {
        let dir = temp_dir("writer");
        let mut writer = HostsWriter::new(&dir).unwrap();
        let recs = vec![(ip("10.96.0.1"), vec!["a.b.svc.cluster.local".to_owned()])];
        assert!(writer.write(&recs).unwrap());
        assert!(!writer.write(&recs).unwrap());
        let on_disk = fs::read_to_string(dir.join(HOSTS_FILE_NAME)).unwrap();
        assert!(on_disk.contains("10.96.0.1 a.b.svc.cluster.local\n"));
        assert!(!dir.join(TEMP_FILE_NAME).exists());

        // A new writer remembers the content already on disk.
        fs::write(dir.join(TEMP_FILE_NAME), "stale").unwrap();
        let mut again = HostsWriter::new(&dir).unwrap();
        assert!(!dir.join(TEMP_FILE_NAME).exists());
        assert!(!again.write(&recs).unwrap());
        assert!(again.write(&[]).unwrap());
        fs::remove_dir_all(&dir).unwrap();

        assert!(HostsWriter::new(&dir).is_err());
    }

    #[test]
    fn dnsmasq_command_line() {
        let opts = ClusterDnsOptions {
            domain: "Cluster.Local.".to_owned(),
            hosts_dir: PathBuf::from("/run/dns"),
            port: 5353,
            listen: Some(ip("10.96.0.10")),
            ..ClusterDnsOptions::default()
        };
        let args: Vec<String> = dnsmasq_args(&opts)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        for expected in [
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--hostsdir=/run/dns",
            "--local=/cluster.local/",
            "--port=5353",
            "--local-ttl=5",
            "--listen-address=10.96.0.10",
            "--bind-interfaces",
            "--txt-record=dns-version.cluster.local,1.1.0",
        ] {
            assert!(
                args.iter().any(|a| a == expected),
                "{expected} missing: {args:?}"
            );
        }
        let all = dnsmasq_args(&ClusterDnsOptions::default());
        assert!(!all.iter().any(|a| a == "--bind-interfaces"));
    }

    /// A fresh directory under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kubelan-clusterdns-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn have(program: &str, arg: &str) -> bool {
        std::process::Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// `dig @127.0.0.1 -p PORT +short [args…]`, returning stdout, or the status
    /// line (`NXDOMAIN`, `REFUSED`…) with `+short` left out when `status` is set.
    async fn dig(port: u16, args: &[&str], status: bool) -> String {
        let mut cmd = tokio::process::Command::new("dig");
        cmd.arg("@127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .args(["+time=1", "+tries=2"]);
        if !status {
            cmd.arg("+short");
        }
        let out = cmd.args(args).output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if status {
            text.split("status: ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .unwrap_or("")
                .to_owned()
        } else {
            text.trim().to_owned()
        }
    }

    /// Polls `dig` until it answers `want`, for at most `within`.
    /// A loopback port free right now for UDP *and* TCP: dnsmasq binds both, and a port
    /// picked for UDP alone was sometimes taken for TCP (CI failure: dnsmasq never came up).
    fn free_dns_port() -> u16 {
        for _ in 0..100 {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
        panic!("no loopback port is free for both UDP and TCP");
    }

    async fn wait_answer(port: u16, args: &[&str], want: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let got = dig(port, args, false).await;
            if got == want || std::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn dnsmasq_serves_and_follows_the_hosts_file() {
        if !have("dnsmasq", "--version") {
            println!("skipping: dnsmasq is not installed");
            return;
        }
        if !have("dig", "-v") {
            println!("skipping: dig is not installed");
            return;
        }
        let dir = temp_dir("dnsmasq");
        let mut writer = HostsWriter::new(&dir).unwrap();
        let services = [
            cluster_ip_service("default", "web", &["10.96.0.20"]),
            headless_service("default", "db", false),
        ];
        let slices = [slice(
            "default",
            "db-abc",
            "db",
            "IPv4",
            &[("10.244.1.5", Some("db-0"), Some(true))],
        )];
        writer
            .write(&records("cluster.local", &services, &slices, &[]))
            .unwrap();

        // A high port that is free right now; retried with another if dnsmasq
        // loses the race for it.
        let mut attempt = 0;
        let (mut sup, port) = loop {
            attempt += 1;
            let port = free_dns_port();
            let opts = ClusterDnsOptions {
                hosts_dir: dir.clone(),
                port,
                listen: Some(ip("127.0.0.1")),
                ..ClusterDnsOptions::default()
            };
            let mut sup = Dnsmasq::new(opts.dnsmasq.clone(), dnsmasq_args(&opts));
            sup.start().unwrap();
            let answer = wait_answer(
                port,
                &["web.default.svc.cluster.local"],
                "10.96.0.20",
                Duration::from_secs(3),
            )
            .await;
            if answer == "10.96.0.20" {
                break (sup, port);
            }
            sup.stop().await;
            assert!(attempt < 3, "dnsmasq did not answer: {answer:?}");
        };

        assert_eq!(
            dig(port, &["db-0.db.default.svc.cluster.local"], false).await,
            "10.244.1.5"
        );
        assert_eq!(
            dig(port, &["-x", "10.244.1.5"], false).await,
            "db-0.db.default.svc.cluster.local."
        );
        assert_eq!(
            dig(port, &["TXT", "dns-version.cluster.local"], false).await,
            "\"1.1.0\""
        );
        assert_eq!(
            dig(port, &["nope.default.svc.cluster.local"], true).await,
            "NXDOMAIN"
        );
        let outside = dig(port, &["example.com"], true).await;
        assert!(
            outside == "REFUSED" || outside == "NXDOMAIN",
            "outside name answered {outside:?}"
        );

        // Change the web service's IP and add a new one: visible within 2 s.
        let services = [
            cluster_ip_service("default", "web", &["10.96.0.21"]),
            cluster_ip_service("shop", "cart", &["10.96.0.22"]),
            headless_service("default", "db", false),
        ];
        let started = std::time::Instant::now();
        assert!(
            writer
                .write(&records("cluster.local", &services, &slices, &[]))
                .unwrap()
        );
        let web = wait_answer(
            port,
            &["web.default.svc.cluster.local"],
            "10.96.0.21",
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(web, "10.96.0.21");
        assert_eq!(
            dig(port, &["cart.shop.svc.cluster.local"], false).await,
            "10.96.0.22"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            dig(port, &["-x", "10.96.0.20"], true).await,
            "NXDOMAIN",
            "the old address should be gone"
        );

        // Removing records takes effect as well.
        assert!(writer.write(&[]).unwrap());
        let gone = wait_answer(
            port,
            &["cart.shop.svc.cluster.local"],
            "",
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(gone, "");

        sup.stop().await;
        assert!(sup.child.is_none());
        writer.remove_temp();
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A minimal fake API server: lists with fixed content, and watches that
    /// stay open; the Service watch streams whatever the test sends.
    mod fake_api {
        use bytes::Bytes;
        use futures::StreamExt as _;
        use http_body_util::combinators::UnsyncBoxBody;
        use http_body_util::{BodyExt as _, Full, StreamBody};
        use hyper::body::Frame;
        use serde_json::{Value, json};
        use std::convert::Infallible;
        use std::net::SocketAddr;
        use std::sync::{Arc, Mutex};
        use tokio::sync::mpsc;

        type Body = UnsyncBoxBody<Bytes, Infallible>;
        type Events = mpsc::UnboundedReceiver<Value>;

        /// The running fake: where it listens and how to feed Service events.
        pub(super) struct FakeApi {
            pub(super) addr: SocketAddr,
            pub(super) service_events: mpsc::UnboundedSender<Value>,
            task: tokio::task::JoinHandle<()>,
        }

        impl Drop for FakeApi {
            fn drop(&mut self) {
                self.task.abort();
            }
        }

        pub(super) fn service(name: &str, ip: &str, version: u32) -> Value {
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "default", "resourceVersion": version.to_string()},
                "spec": {"clusterIP": ip, "clusterIPs": [ip]},
            })
        }

        fn pod(name: &str, ip: &str) -> Value {
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            })
        }

        pub(super) async fn start() -> FakeApi {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (service_events, rx) = mpsc::unbounded_channel();
            let events = Arc::new(Mutex::new(Some(rx)));
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let events = events.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let events = events.clone();
                            async move { Ok::<_, Infallible>(answer(&req, &events)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            FakeApi {
                addr,
                service_events,
                task,
            }
        }

        fn answer(
            req: &http::Request<hyper::body::Incoming>,
            events: &Mutex<Option<Events>>,
        ) -> http::Response<Body> {
            let watch = req.uri().query().unwrap_or("").contains("watch=true");
            let (api_version, kind, items) = match req.uri().path() {
                "/api/v1/services" => (
                    "v1",
                    "ServiceList",
                    vec![service("kubernetes", "10.96.0.1", 1)],
                ),
                "/api/v1/pods" => ("v1", "PodList", vec![pod("web-0", "10.244.0.5")]),
                "/apis/discovery.k8s.io/v1/endpointslices" => {
                    ("discovery.k8s.io/v1", "EndpointSliceList", vec![])
                }
                _ => {
                    let mut resp = http::Response::new(Full::new(Bytes::new()).boxed_unsync());
                    *resp.status_mut() = http::StatusCode::NOT_FOUND;
                    return resp;
                }
            };
            if !watch {
                let list = json!({
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                });
                return http::Response::new(
                    Full::new(Bytes::from(list.to_string())).boxed_unsync(),
                );
            }
            let feed = if kind == "ServiceList" {
                events.lock().unwrap().take()
            } else {
                None
            };
            let stream = match feed {
                Some(rx) => futures::stream::unfold(rx, |mut rx| async move {
                    let event = rx.recv().await?;
                    let line = format!("{event}\n");
                    Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx))
                })
                .boxed(),
                None => futures::stream::pending().boxed(),
            };
            http::Response::new(StreamBody::new(stream).boxed_unsync())
        }
    }

    #[tokio::test]
    async fn run_follows_the_api() {
        if !have("dnsmasq", "--version") || !have("dig", "-v") {
            println!("skipping: dnsmasq or dig is not installed");
            return;
        }
        let api = fake_api::start().await;
        let config = kube::Config::new(format!("http://{}", api.addr).parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let dir = temp_dir("run");
        let port = free_dns_port();
        let opts = ClusterDnsOptions {
            hosts_dir: dir.clone(),
            port,
            listen: Some(ip("127.0.0.1")),
            ..ClusterDnsOptions::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(opts, client, async {
            let _ = stopped.await;
        }));

        let first = wait_answer(
            port,
            &["kubernetes.default.svc.cluster.local"],
            "10.96.0.1",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(first, "10.96.0.1");
        assert_eq!(
            dig(port, &["10-244-0-5.default.pod.cluster.local"], false).await,
            "10.244.0.5"
        );

        let steps = [
            (
                "ADDED",
                fake_api::service("web", "10.96.0.20", 2),
                "10.96.0.20",
            ),
            (
                "MODIFIED",
                fake_api::service("web", "10.96.0.21", 3),
                "10.96.0.21",
            ),
            ("DELETED", fake_api::service("web", "10.96.0.21", 4), ""),
        ];
        for (kind, object, want) in steps {
            let sent = std::time::Instant::now();
            api.service_events
                .send(serde_json::json!({"type": kind, "object": object}))
                .unwrap();
            let got = wait_answer(
                port,
                &["web.default.svc.cluster.local"],
                want,
                Duration::from_secs(2),
            )
            .await;
            assert_eq!(got, want, "after {kind}");
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "{kind} took too long"
            );
        }

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run did not stop")
            .unwrap()
            .unwrap();
        assert!(!dir.join(TEMP_FILE_NAME).exists());
        assert_eq!(
            dig(port, &["kubernetes.default.svc.cluster.local"], true).await,
            ""
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn supervisor_restarts_with_backoff_and_stops() {
        // Any long-running program stands in for dnsmasq here.
        let mut sup = Dnsmasq::new(PathBuf::from("sleep"), vec!["30".into()]);
        sup.start().unwrap();
        sup.child.as_mut().unwrap().start_kill().unwrap();
        let status = wait_child(&mut sup.child).await;
        let before = Instant::now();
        sup.exited(status);
        assert!(sup.child.is_none());
        let first = sup.start_at.unwrap() - before;
        assert!(
            first <= RESTART_BACKOFF_MIN + Duration::from_millis(50),
            "{first:?}"
        );

        sup.start().unwrap();
        assert!(sup.start_at.is_none());
        sup.child.as_mut().unwrap().start_kill().unwrap();
        let status = wait_child(&mut sup.child).await;
        let before = Instant::now();
        sup.exited(status);
        let second = sup.start_at.unwrap() - before;
        assert!(second > first, "{second:?} should exceed {first:?}");

        sup.start().unwrap();
        let started = std::time::Instant::now();
        sup.stop().await;
        assert!(sup.child.is_none() && sup.start_at.is_none());
        assert!(
            started.elapsed() < STOP_GRACE,
            "SIGTERM should have sufficed"
        );
    }

    #[tokio::test]
    async fn missing_dnsmasq_is_reported() {
        let mut sup = Dnsmasq::new(
            PathBuf::from("/nonexistent/kubelan-no-such-dnsmasq"),
            Vec::new(),
        );
        assert!(sup.start().is_err());
    }
}
