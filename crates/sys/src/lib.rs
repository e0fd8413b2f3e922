//! Host-level operations for kubelan: entering Linux namespaces, building a process sandbox
//! (private mount and UTS namespaces inside a network namespace), and identifying processes
//! so that cleanup after a crash kills only what we started.
//!
//! Every change kubelan makes to the host (a TUN link, routes, resolver configuration, a
//! hosts-file block) goes through a [`journal::HostGuard`]: the change is written to a journal
//! in the state directory first, then made, and undone when the guard is restored or dropped.
//! After a crash, the session's crash watcher ([`watch`]) replays its journal at once, and
//! [`journal::reset`] replays whatever journals of dead owners remain. The changes
//! themselves live in [`net`] (routes, links and addresses over rtnetlink), [`dns`] (split DNS
//! through systemd-resolved or `resolv.conf`), [`hosts`] (a marked block in a hosts file),
//! `sysctl`, `nft` and [`socket`] (a control socket file).
//!
//! This is the only crate of the workspace that may use `unsafe`: `pre_exec` hooks, raw
//! namespace system calls and a socket option `nix` lacks (`TCP_WINDOW_CLAMP`) live here
//! behind safe functions. Namespace and process helpers are
//! Linux-only; other systems get [`Error::Unsupported`] or a module-level "not supported"
//! error.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::*;

pub mod dns;
mod error;
mod fsutil;
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
pub mod hosts;
pub mod journal;
#[cfg(target_os = "linux")]
pub mod net;
#[cfg(target_os = "linux")]
pub mod nft;
pub mod process;
pub mod procstat;
pub mod socket;
#[cfg(target_os = "linux")]
pub mod sysctl;
#[cfg(test)]
mod testutil;
pub mod watch;

use std::path::PathBuf;

/// Errors from namespace and process operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace file could not be opened (the namespace or process is gone, or we lack
    /// permission).
    #[error("cannot open namespace {path}: {source} (does it exist, and are you root?)")]
    OpenNamespace {
        /// The namespace file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `setns` failed.
    #[error("cannot enter namespace {what}: {source} (needs root / CAP_SYS_ADMIN)")]
    Setns {
        /// Which namespace.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A helper thread panicked or could not be spawned.
    #[error("namespace helper thread failed: {0}")]
    Thread(String),
    /// Some other I/O error, with what we were doing.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The operation does not exist on this operating system.
    #[error("{0} is only supported on Linux")]
    Unsupported(&'static str),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
