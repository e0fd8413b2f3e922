//! The errors of changing the host: the kernel-facing modules' own ([`NetError`],
//! [`SysctlError`], [`NftError`], re-exported from `net`, `sysctl` and `nft`) and
//! [`ApplyError`], which wraps them for a journalled change. They sit below both the
//! journal and those modules, which each use the other's functions.

#[cfg(target_os = "linux")]
use std::io;
#[cfg(target_os = "linux")]
use std::path::PathBuf;

use crate::journal::record::JournalError;

#[cfg(target_os = "linux")]
/// Errors from link, address and route operations. Each names the link or prefix and the
/// kernel's error text.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No netlink socket could be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The named interface does not exist (in this network namespace).
    #[error("no network interface named {name:?} (see `ip link`)")]
    NoSuchLink {
        /// The name asked for.
        name: String,
    },
    /// The kernel refused the request.
    #[error("{op}: {source}{hint}")]
    Kernel {
        /// What was asked ("add route 172.17.32.0/19 dev kl0").
        op: String,
        /// The errno.
        #[source]
        source: io::Error,
        /// A remedy for common errnos (may be empty).
        hint: &'static str,
    },
    /// The kernel answered something this code does not understand.
    #[error("{op}: unexpected netlink reply: {detail}")]
    Reply {
        /// What was asked.
        op: String,
        /// The reply.
        detail: String,
    },
    /// The request itself is invalid (a prefix with host bits set, mixed address families).
    #[error("{op}: {reason}")]
    Invalid {
        /// What was asked.
        op: String,
        /// Why it cannot be sent.
        reason: String,
    },
}

#[cfg(target_os = "linux")]
/// Errors reading or writing a kernel parameter.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The key is not a dotted parameter name.
    #[error("{0:?} is not a kernel parameter name (expected e.g. net.ipv4.ip_forward)")]
    BadKey(String),
    /// Reading or writing `/proc/sys/...` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

#[cfg(target_os = "linux")]
/// Errors talking to nftables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` program failed or could not be run.
    #[error("nft: {0} (is the nftables package installed, and do you have CAP_NET_ADMIN?)")]
    Nft(String),
    /// nft refused a batch (its message).
    #[error("nft refused kubelan's rules: {0}")]
    Refused(String),
    /// Its output could not be understood.
    #[error("nft printed something unexpected: {0}")]
    Output(String),
}

/// Errors from [`HostGuard::apply`].
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The journal entry could not be written, so nothing was changed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The kernel refused the change (the journal entry was withdrawn).
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Net(#[from] NetError),
    /// This kind of change carries too little to be made from its record alone.
    #[error("{change} cannot be applied directly; use {instead}")]
    NotApplicable {
        /// The change.
        change: String,
        /// The function that makes it.
        instead: &'static str,
    },
    /// A kernel parameter could not be read or written (the journal entry was withdrawn).
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// nftables refused the change (the journal entry was withdrawn).
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The change does not exist on this operating system.
    #[error("{0} is not supported on this operating system")]
    Unsupported(String),
}
