//! Shared helpers for end-to-end tests on the lab: run the `kubelan` binary, bring labs up
//! and down with a guard, snapshot the root network namespace.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) fn kubelan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubelan"))
}

/// Whether lab tests can run here; when they cannot, say why. CI sets
/// `KUBELAN_E2E_REQUIRED=1`, which turns a skip into a failure.
pub(crate) fn lab_available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let tools: Vec<&str> = ["ip", "nft", "dnsmasq", "curl", "dig"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .collect();
    let why = if !root {
        Some("not root".to_string())
    } else if !tools.is_empty() {
        Some(format!("missing {}", tools.join(", ")))
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            if std::env::var("KUBELAN_E2E_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("lab end-to-end tests are required here but cannot run: {why}");
            }
            eprintln!(
                "SKIPPED: lab end-to-end test needs root and iproute2, nftables, dnsmasq, curl, dig ({why})"
            );
            false
        }
    }
}

/// A unique lab name for this test run.
pub(crate) fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}{n}", std::process::id() % 100_000)
}

/// Runs a command and returns its output, failing the test with stderr when it cannot run.
pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub(crate) fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running lab, removed when dropped (also on panic).
pub(crate) struct Lab {
    /// Its name.
    pub(crate) name: String,
    /// Seconds `up` took.
    pub(crate) up_seconds: f64,
}

impl Lab {
    /// Brings a lab up with extra `up` arguments.
    pub(crate) fn up(tag: &str, extra: &[&str]) -> Self {
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
    pub(crate) fn exec(&self, target: &str, argv: &[&str]) -> Output {
        run(kubelan()
            .args(["lab", "exec", "--name", &self.name, target, "--"])
            .args(argv))
    }

    /// Like [`Lab::exec`] but must succeed; returns stdout.
    pub(crate) fn exec_ok(&self, target: &str, argv: &[&str]) -> String {
        ok(kubelan()
            .args(["lab", "exec", "--name", &self.name, target, "--"])
            .args(argv))
    }

    /// The machine's kubeconfig of this lab.
    pub(crate) fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(ok(kubelan().args(["lab", "kubeconfig", "--name", &self.name])).trim())
    }

    /// A kube-rs client for the lab.
    pub(crate) async fn client(&self) -> kube::Client {
        let text = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        let kc = kube::config::Kubeconfig::from_yaml(&text).expect("parse kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }

    /// Removes the lab now (the guard then has nothing left to do).
    pub(crate) fn down(&self) -> String {
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

/// What must be identical in the root network namespace before and after a test.
pub(crate) fn root_snapshot() -> String {
    let mut s = String::new();
    for args in [
        &["link"][..],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["rule"],
        &["-4", "addr"],
        &["-6", "addr"],
    ] {
        let out = Command::new("ip").args(args).output().expect("ip");
        s.push_str(&format!(
            "== ip {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let nft = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("nft");
    s.push_str(&format!(
        "== nft list ruleset\n{}",
        String::from_utf8_lossy(&nft.stdout)
    ));
    for key in [
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/send_redirects",
        "net/ipv4/conf/default/send_redirects",
    ] {
        s.push_str(&format!(
            "== {key} = {}",
            std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_default()
        ));
    }
    s
}

/// Everything a lab could leave behind: namespaces, processes in them, state, mounts.
pub(crate) fn leftovers(name: &str) -> Vec<String> {
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

/// Polls `f` until it returns `Some`, at most `secs` seconds.
pub(crate) fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many network namespaces of lab `name` exist right now.
pub(crate) fn namespace_count(name: &str) -> usize {
    let prefix = format!("kl-{name}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0)
}
