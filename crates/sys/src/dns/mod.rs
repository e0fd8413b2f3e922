//! Split DNS: send the cluster domain to kubelan's DNS server and nothing else.
//!
//! One interface ([`detect`], [`apply`]) over one backend per resolver system:
//!
//! - [`Backend::Resolved`] (`linux_resolved.rs`): systemd-resolved with its stub listener in
//!   resolv.conf. The cluster domains become routing domains (`~cluster.local`) of the TUN
//!   link, which is never a default route, so other names keep their usual servers.
//! - [`Backend::ResolvConf`] (`linux_resolvconf.rs`): a plain resolv.conf is replaced by one
//!   that names kubelan's server only; kubelan's server forwards every name outside the
//!   cluster domain to the original nameservers, which [`apply`] returns as upstreams.
//! - Other systems (macOS `/etc/resolver`, Windows NRPT) are not implemented yet and get
//!   [`DnsError::Unsupported`].
//!
//! Every change is recorded in the caller's [`HostGuard`] before it is made.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::journal::record::{Change, HostGuard, JournalError, Outcome};

mod resolv_conf;
pub use resolv_conf::ResolvConf;

#[cfg(target_os = "linux")]
mod linux_resolvconf;
#[cfg(target_os = "linux")]
mod linux_resolved;
#[cfg(not(target_os = "linux"))]
mod unsupported;

#[cfg(target_os = "linux")]
pub use linux_resolvconf::render as render_resolv_conf;

/// The system resolver configuration file.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Where systemd-resolved keeps its runtime files.
pub const RESOLVED_RUNTIME_DIR: &str = "/run/systemd/resolve";

/// The addresses of systemd-resolved's stub listeners.
pub const RESOLVED_STUBS: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53)),
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 54)),
];

/// What to configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPlan {
    /// The link kubelan's DNS server is reached through (the TUN), for per-link resolvers.
    pub link: String,
    /// kubelan's DNS servers.
    pub servers: Vec<IpAddr>,
    /// Domains whose names go to kubelan (`cluster.local`, explicit namespace suffixes).
    pub routing_domains: Vec<String>,
    /// Search domains to add, most specific first (`default.svc.cluster.local
    /// svc.cluster.local cluster.local`).
    pub search: Vec<String>,
}

/// How split DNS is done on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// systemd-resolved with its stub listener in use: per-link DNS via `resolvectl`.
    Resolved(Resolved),
    /// A plain resolv.conf at this path, replaced while kubelan runs.
    ResolvConf(PathBuf),
    /// No implementation for this operating system yet.
    Unsupported,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Resolved(_) => f.write_str("systemd-resolved (per-link DNS)"),
            Self::ResolvConf(p) => write!(f, "{}", p.display()),
            Self::Unsupported => f.write_str("unsupported"),
        }
    }
}

/// How to reach systemd-resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The `resolvectl` program (looked up on `PATH` when it is a bare name).
    pub resolvectl: PathBuf,
    /// resolved's runtime directory (its `resolv.conf` lists the uplink servers).
    pub runtime_dir: PathBuf,
}

impl Resolved {
    /// The system's resolved: `resolvectl` from `PATH`, `/run/systemd/resolve`.
    pub fn system() -> Self {
        Self {
            resolvectl: PathBuf::from("resolvectl"),
            runtime_dir: PathBuf::from(RESOLVED_RUNTIME_DIR),
        }
    }

    /// The servers resolved itself forwards to (the nameservers of
    /// `/run/systemd/resolve/resolv.conf`, without its stubs): where kubelan's DNS server
    /// sends names outside the cluster domain.
    pub fn upstreams(&self) -> Vec<IpAddr> {
        let text = std::fs::read(self.runtime_dir.join("resolv.conf")).unwrap_or_default();
        ResolvConf::parse_bytes(&text)
            .nameservers
            .into_iter()
            .filter(|ip| !RESOLVED_STUBS.contains(ip))
            .collect()
    }

    /// The program name to record in the journal (none for the default).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn recorded_program(&self) -> Option<PathBuf> {
        (self.resolvectl != Path::new("resolvectl")).then(|| self.resolvectl.clone())
    }
}

/// Errors from split DNS.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The change could not be journaled, so nothing was changed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The plan names no server.
    #[error("split DNS needs at least one DNS server for {link}")]
    NoServers {
        /// The link.
        link: String,
    },
    /// The resolver file does not exist.
    #[error(
        "{path} does not exist, so there is no resolver configuration to extend (create one, or point kubelan at the right file)"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The resolver file was left behind by a kubelan run that did not clean up.
    #[error(
        "{path} is still managed by an earlier kubelan run; run `kubelan reset` to restore the original first"
    )]
    AlreadyManaged {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read, backed up or written.
    #[error("cannot {what} {path}: {source}")]
    File {
        /// What we were doing ("read", "back up", "write").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `resolvectl` could not be started.
    #[error("cannot run {program}: {source} (is systemd-resolved installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `resolvectl` failed.
    #[error("`{command}` failed: {stderr} (is systemd-resolved running, and are you root?)")]
    Resolvectl {
        /// The command line.
        command: String,
        /// Its error output.
        stderr: String,
    },
    /// No backend for this operating system.
    #[error("split DNS is not implemented on this OS yet")]
    Unsupported,
}

/// Chooses the backend for this machine, given its resolver file (normally
/// [`DEFAULT_RESOLV_CONF`]).
///
/// systemd-resolved is used when its runtime directory exists, `resolvectl` is on `PATH`,
/// and resolv.conf points the C library at resolved's stub (a nameserver 127.0.0.53, or a
/// symlink to `stub-resolv.conf`). When resolv.conf is resolved's uplink file
/// (`/run/systemd/resolve/resolv.conf`), programs bypass resolved, so per-link routing would
/// not apply: the file is edited instead.
pub fn detect(resolv_conf: &Path) -> Backend {
    if cfg!(not(target_os = "linux")) {
        return Backend::Unsupported;
    }
    let resolved = Resolved::system();
    let has_resolvectl = find_on_path(&resolved.resolvectl).is_some();
    detect_with(resolv_conf, resolved, has_resolvectl)
}

fn detect_with(resolv_conf: &Path, resolved: Resolved, has_resolvectl: bool) -> Backend {
    if resolved.runtime_dir.is_dir() && has_resolvectl && uses_stub(resolv_conf, &resolved) {
        Backend::Resolved(resolved)
    } else {
        Backend::ResolvConf(resolv_conf.to_path_buf())
    }
}

fn uses_stub(resolv_conf: &Path, resolved: &Resolved) -> bool {
    if let Ok(target) = std::fs::read_link(resolv_conf) {
        let target = resolv_conf.parent().unwrap_or(Path::new("/")).join(target);
        let runtime = std::fs::canonicalize(&resolved.runtime_dir)
            .unwrap_or_else(|_| resolved.runtime_dir.clone());
        let target = std::fs::canonicalize(&target).unwrap_or(target);
        if target.starts_with(&runtime)
            && target.file_name().is_some_and(|n| n == "stub-resolv.conf")
        {
            return true;
        }
    }
    let text = std::fs::read(resolv_conf).unwrap_or_default();
    ResolvConf::parse_bytes(&text)
        .nameservers
        .iter()
        .any(|ip| RESOLVED_STUBS.contains(ip))
}

fn find_on_path(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Configures split DNS for `plan` through `backend`, recording the change in `guard`
/// first. Returns the upstream servers kubelan's DNS server should forward names outside
/// the cluster domain to (never kubelan's own servers).
///
/// # Errors
/// When the plan is empty, the journal cannot be written, the resolver file cannot be
/// backed up or written, `resolvectl` fails (its change is reverted), or the OS has no
/// backend.
pub async fn apply(
    guard: &mut HostGuard,
    backend: &Backend,
    plan: &DnsPlan,
) -> Result<Vec<IpAddr>, DnsError> {
    if plan.servers.is_empty() {
        return Err(DnsError::NoServers {
            link: plan.link.clone(),
        });
    }
    match backend {
        #[cfg(target_os = "linux")]
        Backend::Resolved(resolved) => linux_resolved::apply(guard, resolved, plan).await,
        #[cfg(target_os = "linux")]
        Backend::ResolvConf(path) => linux_resolvconf::apply(guard, path, plan),
        #[cfg(not(target_os = "linux"))]
        Backend::Resolved(_) | Backend::ResolvConf(_) => {
            unsupported::apply(guard, plan).map(|()| Vec::new())
        }
        Backend::Unsupported => Err(DnsError::Unsupported),
    }
}

/// Undoes [`Change::ResolvConf`].
pub(crate) fn undo_resolv_conf(
    path: &Path,
    backup: &Path,
    written_hash: &str,
    change: &Change,
) -> Outcome {
    #[cfg(target_os = "linux")]
    {
        linux_resolvconf::undo(path, backup, written_hash, change)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, backup, written_hash);
        unsupported::undo(change)
    }
}

/// Undoes [`Change::ResolvedLink`].
pub(crate) async fn undo_resolved_link(
    link: &str,
    resolvectl: Option<&Path>,
    change: &Change,
) -> Outcome {
    #[cfg(target_os = "linux")]
    {
        linux_resolved::undo(link, resolvectl, change).await
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (link, resolvectl);
        unsupported::undo(change)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
