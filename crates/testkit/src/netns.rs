//! Shared helpers for kubelan-sys integration tests: private network namespaces that are
//! removed on drop (also on failure and panic), running async netlink code inside them,
//! temporary directories, and a snapshot of the root namespace.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether tests that need root can run; prints SKIP when not, and fails instead when
/// `KUBELAN_E2E_REQUIRED=1`.
pub(crate) fn root_available(test: &str) -> bool {
    let has_ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let why = if !kubelan_sys::is_root() {
        Some("not root")
    } else if !has_ip {
        Some("iproute2 (`ip`) is missing")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            if std::env::var("KUBELAN_E2E_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("{test} is required here but cannot run: {why}");
            }
            eprintln!("SKIP {test}: needs root and iproute2 ({why})");
            false
        }
    }
}

/// Runs `cmd`, which must succeed; returns stdout.
pub(crate) fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace `kl-sys-<pid>-<n>`, deleted on drop.
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with its loopback up.
    pub(crate) fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kl-sys-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file.
    pub(crate) fn path(&self) -> PathBuf {
        kubelan_sys::netns_path(&self.name)
    }

    /// Runs `ip -n NAME args…` (must succeed); returns stdout.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        ok(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs the future made by `f` on a fresh thread inside the namespace, on a
    /// current-thread runtime built there (so every netlink socket is created inside).
    pub(crate) fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        kubelan_sys::in_netns(&self.path(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f())
        })
        .expect("the closure inside the namespace failed (see its panic above)")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A fresh temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates it.
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kl-sys-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The root namespace's links, addresses and routes, as `ip` prints them.
pub(crate) fn root_snapshot() -> String {
    let mut s = String::new();
    for args in [
        &["-o", "link"][..],
        &["-o", "addr"],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
    ] {
        s.push_str(&format!("== ip {}\n", args.join(" ")));
        s.push_str(&ok(Command::new("ip").args(args)));
    }
    s
}
