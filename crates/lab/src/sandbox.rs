//! Sandboxes: the namespaces of one lab host or pod, held open by a small "holder" process
//! (like a pod's pause container).
//!
//! A sandbox is a network namespace plus a private mount and UTS namespace in which `/etc`,
//! `/var` and `/usr/local` are copy-on-write views of the machine's directories (changes
//! land in the sandbox's state directory, never on the host), `/run` is a private tmpfs,
//! `/usr/local/bin/kubelan` is the current kubelan binary, and the host name is the host's
//! or pod's name. Commands run "on" a lab host or in a pod by entering the holder's
//! namespaces.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use anyhow::Context;
use kubelan_sys::{Bind, Namespaces, Overlay, Sandbox};

/// Directories overlaid in every sandbox.
const BASE_OVERLAYS: &[&str] = &["/etc", "/var", "/usr/local"];
/// Further top-level directories a pod volume may be mounted under (overlaid on demand).
pub const EXTRA_ROOTS: &[&str] = &["/opt", "/srv", "/mnt", "/home"];

/// Whether the sandbox is a lab host (a machine) or a pod (a container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A lab machine: shares the host's `/tmp` and `/root` (like `ip netns exec`).
    Host,
    /// A pod: private `/tmp` and `/root` as well.
    Pod,
}

/// How to build a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Network namespace path.
    pub netns: PathBuf,
    /// Host name.
    pub hostname: String,
    /// State directory of the sandbox (upper layers, logs).
    pub dir: PathBuf,
    /// Host or pod.
    pub kind: Kind,
    /// Files placed in the sandbox's `/etc` (path relative to `/etc`, content).
    pub etc_files: Vec<(String, String)>,
    /// The kubelan binary, mounted at `/usr/local/bin/kubelan`.
    pub kubelan_binary: PathBuf,
    /// Further bind mounts (service-account files, volumes).
    pub binds: Vec<Bind>,
    /// Directories to create (after the tmpfs mounts) before binding.
    pub mkdirs: Vec<PathBuf>,
}

/// A running holder process.
#[derive(Debug)]
pub struct Holder {
    /// Its PID.
    pub pid: u32,
    child: tokio::process::Child,
}

impl Holder {
    /// The holder's namespaces, for entering them.
    ///
    /// # Errors
    /// When the holder is gone.
    pub fn namespaces(&self) -> anyhow::Result<Arc<Namespaces>> {
        Ok(Arc::new(Namespaces::of_process(self.pid)?))
    }

    /// Stops the holder (its mount namespace goes with it).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn overlay_for(dir: &Path, target: &str) -> Overlay {
    let key = target.trim_start_matches('/').replace('/', "_");
    Overlay {
        target: PathBuf::from(target),
        upper: dir.join("fs").join(&key).join("upper"),
        work: dir.join("fs").join(&key).join("work"),
    }
}

/// Top-level directory of an absolute path (`/opt/x/y` → `/opt`).
pub fn top_level(path: &Path) -> Option<String> {
    let first = path.components().nth(1)?;
    Some(format!("/{}", first.as_os_str().to_str()?))
}

/// Starts a holder for `spec`. The sandbox exists when this returns.
///
/// # Errors
/// When directories cannot be prepared or the holder cannot set the sandbox up (the
/// reason is also in `holder.log` in the sandbox directory).
pub async fn start(spec: &SandboxSpec) -> anyhow::Result<Holder> {
    std::fs::create_dir_all(&spec.dir)?;
    let mut overlays: Vec<Overlay> = BASE_OVERLAYS
        .iter()
        .map(|t| overlay_for(&spec.dir, t))
        .collect();
    // Volumes under other roots get an overlay of that root.
    for b in &spec.binds {
        if let Some(top) = top_level(&b.target)
            && EXTRA_ROOTS.contains(&top.as_str())
            && Path::new(&top).is_dir()
            && !overlays.iter().any(|o| o.target == Path::new(&top))
        {
            overlays.push(overlay_for(&spec.dir, &top));
        }
    }
    for o in &overlays {
        std::fs::create_dir_all(&o.upper)?;
        std::fs::create_dir_all(&o.work)?;
    }
    let etc_upper = &overlays[0].upper;
    for (rel, content) in &spec.etc_files {
        let p = etc_upper.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, content).with_context(|| format!("write {}", p.display()))?;
    }
    let mut tmpfs = vec![PathBuf::from("/run")];
    if spec.kind == Kind::Pod {
        tmpfs.push(PathBuf::from("/tmp"));
        tmpfs.push(PathBuf::from("/root"));
    }
    let mut binds = vec![Bind {
        source: spec.kubelan_binary.clone(),
        target: PathBuf::from("/usr/local/bin/kubelan"),
        readonly: true,
    }];
    binds.extend(spec.binds.iter().cloned());
    let sandbox = Sandbox {
        netns: spec.netns.clone(),
        hostname: Some(spec.hostname.clone()),
        overlays,
        tmpfs,
        scratch: spec.dir.join("fs").join("scratch"),
        // The kubelan binary's mount point (created in the /usr/local overlay if missing).
        mkdirs: std::iter::once(PathBuf::from("/usr/local/bin"))
            .chain(spec.mkdirs.iter().cloned())
            .collect(),
        binds,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.dir.join("holder.log"))?;
    let mut cmd = tokio::process::Command::new("sleep");
    cmd.arg("infinity")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(false);
    kubelan_sys::sandbox_on_spawn(&mut cmd, &sandbox)?;
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start the sandbox for {} (see {})",
            spec.hostname,
            spec.dir.join("holder.log").display()
        )
    })?;
    let pid = child.id().context("holder exited at once")?;
    Ok(Holder { pid, child })
}

/// `/etc/hosts` of a sandbox.
pub fn hosts_file(hostname: &str, ip: Option<&str>, extra_names: &[String]) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file (kubelan lab).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        let mut names: Vec<&str> = extra_names.iter().map(String::as_str).collect();
        if !names.contains(&hostname) {
            names.push(hostname);
        }
        s.push_str(&format!("{ip}\t{}\n", names.join("\t")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_levels() {
        assert_eq!(top_level(Path::new("/opt/a/b")).as_deref(), Some("/opt"));
        assert_eq!(top_level(Path::new("/")), None);
        assert!(hosts_file("web-1", Some("172.17.32.5"), &[]).ends_with("172.17.32.5\tweb-1\n"));
        let sts = hosts_file(
            "db-0",
            Some("172.17.32.6"),
            &["db-0.db.default.svc.cluster.local".into(), "db-0".into()],
        );
        assert!(
            sts.ends_with("172.17.32.6\tdb-0.db.default.svc.cluster.local\tdb-0\n"),
            "{sts}"
        );
    }
}
