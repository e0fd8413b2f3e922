//! Private network namespaces for tests, removed on drop (also on failure and panic), and
//! running code inside a namespace.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd::{ok, run};

/// Where `ip netns` keeps its namespace files.
const NETNS_DIR: &str = "/run/netns";

/// A network namespace `kl-<tag>-<pid>-<n>` with its loopback up, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace (`ip netns add`) and brings its loopback up. `tag` says
    /// which suite made it, so a leftover can be traced.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kl-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ok(Command::new("ip").args(["netns", "add", &name]));
        // The guard exists from here on, so a failure below still removes the namespace.
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n NAME args…`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        ip_in(&self.name, args)
    }

    /// Runs `argv` inside the namespace (`ip netns exec`); returns its output whatever
    /// its exit status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        exec_in(&self.name, argv)
    }

    /// Runs `f` on a new thread inside the namespace; a panic there fails the test here.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.path(), f)
    }

    /// Runs the future made by `f` on a fresh thread inside the namespace, on a
    /// current-thread runtime built there (so every socket, netlink ones included, is
    /// created inside).
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        self.run_inside(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `ip -n NS args…` in namespace `ns` (by name), which must succeed; returns stdout.
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    ok(Command::new("ip").args(["-n", ns]).args(args))
}

/// Runs `argv` inside namespace `ns` (by name, `ip netns exec`); returns its output
/// whatever its exit status.
pub fn exec_in(ns: &str, argv: &[&str]) -> Output {
    run(Command::new("ip").args(["netns", "exec", ns]).args(argv))
}

/// Runs `f` on a new thread that entered the network namespace at `path`; a panic there
/// (or failing to enter) fails the test on the calling thread.
pub fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let ns =
            std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
