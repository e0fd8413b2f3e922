//! The lab fixture for end-to-end tests of the `kubelan` binary: labs with unique names
//! that a guard brings down (also on failure and panic), long-running commands on lab hosts
//! stopped by PID, the lab's API through kube-rs, and what a lab or a session could leave
//! behind.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

use crate::cmd::{ok, run, text, wait_for};
use crate::netns::in_netns;
use crate::skip::root_or_skip;

/// The `kubelan` binary under test.
///
/// Cargo builds a package's binaries for its integration tests and says where
/// (`CARGO_BIN_EXE_kubelan`, at run time in recent versions); otherwise it is the
/// `kubelan` beside the test's `deps/` folder, where Cargo puts it.
pub fn kubelan_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_kubelan") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("kubelan"))
        .expect("the test executable lies in <target>/<profile>/deps");
    assert!(
        bin.exists(),
        "{} does not exist: run the test with `cargo test -p kubelan`, which builds it",
        bin.display()
    );
    bin
}

/// The binary under test, as a command to add arguments to.
pub fn kubelan() -> Command {
    Command::new(kubelan_bin())
}

/// Whether lab tests can run here (root, iproute2, nftables, dnsmasq, curl, dig); when
/// they cannot, says why and skips, or fails under `KUBELAN_E2E_REQUIRED=1` (CI).
pub fn lab_available() -> bool {
    root_or_skip(
        "lab end-to-end tests",
        &["ip", "nft", "dnsmasq", "curl", "dig"],
        &[],
    )
}

/// A unique lab name for this test run.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}{n}", std::process::id() % 100_000)
}

/// A running lab, removed when dropped (also on panic).
pub struct Lab {
    /// Its name.
    pub name: String,
    /// Seconds `up` took.
    pub up_seconds: f64,
}

impl Lab {
    /// The office router routes the cluster prefixes to `gateway`: the lines
    /// `kubelan routes --format linux` prints, applied as printed (`replace` instead of
    /// `add`, so that moving to another gateway works).
    pub fn route_office_to(&self, gateway: &str) {
        let printed = self.exec_ok(
            "office-router",
            &[
                "kubelan",
                "routes",
                "--format",
                "linux",
                "--gateway",
                gateway,
            ],
        );
        let lines: Vec<&str> = printed
            .lines()
            .filter(|l| l.starts_with("ip route add "))
            .collect();
        assert!(lines.len() >= 2, "no routes printed:\n{printed}");
        for l in lines {
            let argv: Vec<&str> = l
                .split_whitespace()
                .map(|w| if w == "add" { "replace" } else { w })
                .collect();
            self.exec_ok("office-router", &argv);
        }
    }

    /// Brings a lab up with extra `up` arguments.
    pub fn up(tag: &str, extra: &[&str]) -> Self {
        let name = unique_name(tag);
        let started = Instant::now();
        let mut cmd = kubelan();
        cmd.args(["lab", "up", "--name", &name]).args(extra);
        // The guard exists before `up` runs, so a failed `up` is cleaned up too.
        let mut lab = Lab {
            name,
            up_seconds: 0.0,
        };
        ok(&mut cmd);
        lab.up_seconds = started.elapsed().as_secs_f64();
        lab
    }

    /// `kubelan lab exec <target> -- <argv>`, returning the output.
    pub fn exec(&self, target: &str, argv: &[&str]) -> Output {
        run(kubelan()
            .args(["lab", "exec", "--name", &self.name, target, "--"])
            .args(argv))
    }

    /// Like [`Lab::exec`] but must succeed; returns stdout.
    pub fn exec_ok(&self, target: &str, argv: &[&str]) -> String {
        ok(kubelan()
            .args(["lab", "exec", "--name", &self.name, target, "--"])
            .args(argv))
    }

    /// The machine's kubeconfig of this lab.
    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(ok(kubelan().args(["lab", "kubeconfig", "--name", &self.name])).trim())
    }

    /// A kube-rs client for the lab.
    pub async fn client(&self) -> kube::Client {
        let text = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        let kc = kube::config::Kubeconfig::from_yaml(&text).expect("parse kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }

    /// Removes the lab now (the guard then has nothing left to do).
    pub fn down(&self) -> String {
        ok(kubelan().args(["lab", "down", "--name", &self.name]))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = kubelan()
            .args(["lab", "down", "--name", &self.name])
            .output();
    }
}

/// Everything a lab could leave behind: namespaces, processes in them, state, mounts.
pub fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("kl-{name}-");
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_dir("/run/netns") {
        for e in d.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) {
                out.push(format!("network namespace {n}"));
            }
        }
    }
    let state = PathBuf::from("/run/kubelan/labs").join(name);
    if state.exists() {
        out.push(format!("state directory {}", state.display()));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines() {
        if l.contains(&format!("/kubelan/labs/{name}/"))
            || l.contains(&format!("/run/netns/{prefix}"))
        {
            out.push(format!("mount {l}"));
        }
    }
    // Processes whose command line or environment names the lab.
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if pid.parse::<u32>().is_err() || pid == std::process::id().to_string() {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmd.contains(&format!("--name {name}")) && cmd.contains("lab") {
                out.push(format!("process {pid}: {cmd}"));
            }
        }
    }
    out
}

/// How many network namespaces of lab `name` exist right now.
pub fn namespace_count(name: &str) -> usize {
    let prefix = format!("kl-{name}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0)
}

/// A long-running command on a lab host (`kubelan proxy`, `kubelan connect`), stopped by
/// PID when dropped. Its stdout and stderr are collected for [`Background::log`].
pub struct Background {
    child: Child,
    /// PID of the command (a `timeout` wrapper that bounds its life).
    pub pid: u32,
    log: Arc<Mutex<String>>,
}

impl Background {
    /// Starts `command` (a shell command line) on `host`, bounded to `secs` seconds.
    pub fn start(lab: &Lab, host: &str, tag: &str, secs: u32, command: &str) -> Background {
        // `sh` prints its PID (shared PID namespace) and becomes the command.
        let script = format!("echo $$; exec timeout {secs} {command}");
        let mut child = kubelan()
            .args([
                "lab", "exec", "--name", &lab.name, host, "--", "sh", "-c", &script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn background command");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let pid: u32 = first.trim().parse().expect("background pid");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(out) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (l, tag, mut stream) = (log.clone(), tag.to_string(), stream);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    eprint!("[{tag}] {text}");
                    l.lock().unwrap().push_str(&text);
                }
            });
        }
        Background { child, pid, log }
    }

    /// Forgets what it printed so far (to wait for a line printed again later).
    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the output contains `needle`; returns how long that took.
    pub fn wait_log(&self, needle: &str, secs: u64) -> Duration {
        let t = Instant::now();
        wait_for(&format!("output to contain {needle:?}"), secs, || {
            self.log().contains(needle).then_some(())
        });
        t.elapsed()
    }

    /// The PID of the command itself (the child of the `timeout` wrapper).
    pub fn command_pid(&self) -> u32 {
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.pid, self.pid))
                .unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the command runs under timeout")
    }

    /// Waits (bounded) for it to exit by itself.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        wait_for("the background command to exit", secs, || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let _ = self.child.wait();
    }
}

/// `curl -sS -m 5 ARGS…` on the laptop: whether it succeeded, and what it printed.
pub fn curl(lab: &Lab, args: &[&str]) -> (bool, String) {
    let mut argv = vec!["curl", "-sS", "-m", "5"];
    argv.extend_from_slice(args);
    let out = lab.exec("laptop", &argv);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The network namespace file of lab host `host`.
pub fn netns(lab: &Lab, host: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/kl-{}-{host}", lab.name))
}

/// Runs `f` inside a lab host's network namespace.
pub fn on_host<T: Send + 'static>(
    lab: &Lab,
    host: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    in_netns(&netns(lab, host), f)
}

/// The lab's API through kube-rs (no kubectl needed).
pub struct Cluster {
    /// The runtime the client's calls block on.
    pub rt: tokio::runtime::Runtime,
    /// The lab's admin client.
    pub client: kube::Client,
}

impl Cluster {
    /// Deletes the agent pod and waits (bounded) until its replacement is Ready; returns
    /// when that happened.
    pub fn replace_agent_pod(&self) -> Instant {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "kubelan-system");
        let sel = ListParams::default().labels("app.kubernetes.io/name=kubelan-agent");
        let old = self.rt.block_on(pods.list(&sel)).unwrap().items[0]
            .metadata
            .name
            .clone()
            .unwrap();
        self.rt
            .block_on(pods.delete(&old, &kube::api::DeleteParams::default()))
            .unwrap();
        wait_for("a new ready agent pod", 60, || {
            let list = self.rt.block_on(pods.list(&sel)).ok()?;
            list.items
                .iter()
                .any(|p| {
                    p.metadata.name.as_deref() != Some(old.as_str())
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
                .then(Instant::now)
        })
    }

    /// Deletes pod `ns/name` the way `kubectl delete pod` does (with its grace period).
    pub fn delete_pod(&self, ns: &str, name: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(pods.delete(name, &kube::api::DeleteParams::default()))
            .unwrap();
    }

    /// A client for `lab` on its own current-thread runtime.
    pub fn new(lab: &Lab) -> Cluster {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(lab.client());
        Cluster { rt, client }
    }

    /// The IP of the first pod (any namespace) matching `selector`.
    pub fn pod_ip(&self, selector: &str) -> String {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = self
            .rt
            .block_on(pods.list(&ListParams::default().labels(selector)))
            .unwrap();
        let ip = list.items[0].status.as_ref().and_then(|s| s.pod_ip.clone());
        ip.expect("pod IP")
    }

    /// Service `ns/name`.
    pub fn service(&self, ns: &str, name: &str) -> Service {
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), ns);
        self.rt.block_on(svcs.get(name)).unwrap()
    }

    /// The ClusterIP of Service `default/name`.
    pub fn svc_ip(&self, name: &str) -> String {
        let svc = self.service("default", name);
        svc.spec.and_then(|s| s.cluster_ip).expect("ClusterIP")
    }

    /// Names of objects of kind `K` (all namespaces) with the label selector.
    pub fn names<K>(&self, selector: &str) -> Vec<String>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let list = self
            .rt
            .block_on(api.list(&ListParams::default().labels(selector)))
            .unwrap();
        list.items
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    K::kind(&()),
                    o.meta().name.clone().unwrap_or_default()
                )
            })
            .collect()
    }
}

/// HTTP status code of `url` fetched on lab host `host` ("000" when it could not connect).
pub fn http_code(lab: &Lab, host: &str, url: &str) -> String {
    let out = lab.exec(
        host,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            url,
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Pods of `default` matching `selector`: (name, node, pod IP), scheduled and addressed
/// ones only.
pub fn pods_of(cluster: &Cluster, selector: &str) -> Vec<(String, String, String)> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let list = cluster
        .rt
        .block_on(api.list(&ListParams::default().labels(selector)))
        .unwrap();
    list.items
        .iter()
        .filter_map(|p| {
            Some((
                p.metadata.name.clone()?,
                p.spec.as_ref()?.node_name.clone()?,
                p.status.as_ref()?.pod_ip.clone()?,
            ))
        })
        .collect()
}

/// What a session may change on a lab host and must put back byte for byte: links, routes
/// (every table, both families), the nft ruleset, forwarding and per-interface sysctls,
/// the resolver configuration and hosts file.
pub fn host_snapshot(lab: &Lab, host: &str) -> String {
    let mut s = String::new();
    for argv in [
        &["ip", "link"][..],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
        &["ip", "rule"],
        &["nft", "-s", "list", "ruleset"],
        &[
            "sh",
            "-c",
            "sysctl -a 2>/dev/null | grep -E '^net\\.ipv4\\.ip_forward|^net\\.ipv(4|6)\\.conf\\.(all|default)\\.'",
        ],
        &["cat", "/etc/resolv.conf"],
        &["cat", "/etc/hosts"],
    ] {
        s.push_str(&format!(
            "== {}\n{}",
            argv.join(" "),
            lab.exec_ok(host, argv)
        ));
    }
    s
}

/// The crash watcher of the kubelan process `owner` (its PID), if one runs.
pub fn crash_watcher_of(owner: u32) -> Option<u32> {
    let needle = "crash-watcher\0--journal\0";
    let owner_arg = format!("\0--owner-pid\0{owner}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmdline);
        (cmd.contains(needle) && cmd.contains(&owner_arg)).then_some(pid)
    })
}

/// `kill -9 PID` on `host`, then, measured on the host itself from the kill, how long until
/// each shell condition in `restored` holds (in order, polled every 5 ms, each for at most
/// `secs` seconds). Nothing else runs meanwhile: the host must restore itself.
pub fn kill_9_and_time(
    lab: &Lab,
    host: &str,
    pid: u32,
    restored: &[&str],
    secs: u32,
) -> Vec<Duration> {
    let mut script = format!("kill -9 {pid}; s=$(date +%s%N)");
    for cond in restored {
        script.push_str(&format!(
            "; i=0; until {cond}; do i=$((i+1)); if [ $i -gt {} ]; then echo 'timed out: {}'; exit 1; fi; sleep 0.005; done; echo $(( ($(date +%s%N) - s) / 1000 ))",
            secs * 200,
            cond.replace('\'', "")
        ));
    }
    let out = lab.exec_ok(host, &["sh", "-c", &script]);
    out.lines()
        .map(|l| {
            Duration::from_micros(
                l.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("restore timing: {out}")),
            )
        })
        .collect()
}

/// kubectl on the laptop (the lab's admin kubeconfig); panics on failure.
pub fn kubectl_ok(lab: &Lab, args: &[&str]) -> String {
    let mut argv = vec!["kubectl"];
    argv.extend_from_slice(args);
    lab.exec_ok("laptop", &argv)
}

/// A web pod (`default/NAME`) to run clients in.
pub fn client_pod(lab: &Lab) -> String {
    let name = kubectl_ok(
        lab,
        &[
            "get",
            "pod",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    format!("default/{}", name.trim())
}

/// Every object of a way-back session (expose, replace, run) left in `ns`: Jobs, pods,
/// Services, Leases and the per-session RBAC.
pub fn session_objects(lab: &Lab, ns: &str) -> Vec<String> {
    kubectl_ok(
        lab,
        &[
            "get",
            "jobs,pods,services,leases,serviceaccounts,roles,rolebindings",
            "-n",
            ns,
            "-l",
            "kubelan.io/session",
            "-o",
            "name",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// A `kubelan` command on the laptop that must fail with exactly one `error` line: all it
/// printed.
pub fn refused(lab: &Lab, args: &[&str]) -> String {
    let mut argv = vec!["timeout", "60", "kubelan"];
    argv.extend_from_slice(args);
    let out = lab.exec("laptop", &argv);
    let t = text(&out);
    assert!(!out.status.success(), "kubelan {args:?} succeeded: {t}");
    assert_eq!(
        t.trim().lines().filter(|l| l.starts_with("error")).count(),
        1,
        "kubelan {args:?}: {t}"
    );
    t
}
