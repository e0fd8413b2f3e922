//! Guard-and-journal for host changes.
//!
//! Every change kubelan makes to the host is first appended to a journal file in the state
//! directory ([`StateDir`], `/run/kubelan` by default: a tmpfs that disappears at reboot
//! together with the TUN links and routes it describes), and only then made. A
//! [`HostGuard`] owns one journal: [`HostGuard::restore`] undoes its changes in reverse order
//! and deletes the journal, and dropping the guard does the same on a best-effort basis. When
//! the process dies without either (`kill -9`, a panic with `panic = "abort"`, a power cut of
//! the process but not the machine), the journal stays behind: the session's crash watcher
//! ([`crate::watch`]) replays it as soon as its owner is gone, and [`reset`]
//! (`kubelan reset`, and the start of the next `kubelan connect`) does when no watcher did.
//! Replays take the state directory's replay lock, so they never overlap.
//!
//! Undo is idempotent: something that is already gone (a route that vanished with its TUN
//! link, a hosts block someone removed) counts as undone. Files that someone else rewrote
//! after kubelan changed them are left alone, and the report says where the original is.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Where state lives when [`STATE_DIR_ENV`] is not set.
pub const DEFAULT_STATE_DIR: &str = "/run/kubelan";

/// Environment variable that overrides [`DEFAULT_STATE_DIR`].
pub const STATE_DIR_ENV: &str = "KUBELAN_STATE_DIR";

/// Version of the journal file format written by this build.
pub const JOURNAL_VERSION: u32 = 1;

/// The directory holding journals and backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// A state directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `$KUBELAN_STATE_DIR`, or `/run/kubelan` when it is unset or empty.
    pub fn from_env() -> Self {
        match std::env::var_os(STATE_DIR_ENV) {
            Some(p) if !p.is_empty() => Self::new(p),
            _ => Self::new(DEFAULT_STATE_DIR),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (mode 0700) when missing and checks that it is safe to trust:
    /// owned by the current user and writable by nobody else. Journals name files that a
    /// later `kubelan reset`, usually as root, rewrites; a directory others can write to
    /// would let them choose those files.
    ///
    /// # Errors
    /// [`JournalError::StateDir`] when it cannot be created, [`JournalError::UnsafeStateDir`]
    /// when it belongs to someone else or is group/world writable.
    pub fn ensure(&self) -> Result<(), JournalError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|source| JournalError::StateDir {
                path: self.path.clone(),
                source,
            })?;
        let md = std::fs::metadata(&self.path).map_err(|source| JournalError::StateDir {
            path: self.path.clone(),
            source,
        })?;
        let unsafe_dir = |reason: String| JournalError::UnsafeStateDir {
            path: self.path.clone(),
            reason,
        };
        if !md.is_dir() {
            return Err(unsafe_dir("it is not a directory".into()));
        }
        let me = nix::unistd::geteuid().as_raw();
        if md.uid() != me {
            return Err(unsafe_dir(format!(
                "it belongs to uid {}, not to the current user (uid {me})",
                md.uid()
            )));
        }
        if md.permissions().mode() & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "its mode is {:o}, writable by group or others",
                md.permissions().mode() & 0o7777
            )));
        }
        Ok(())
    }

    /// A fresh path for a backup file belonging to the journal at `journal`.
    pub(crate) fn backup_path(&self, journal: &Path, what: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let stem = journal
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem.strip_prefix("journal-").unwrap_or(&stem);
        self.path.join(format!("backup-{stem}-{n}-{what}"))
    }
}

/// Errors reading or writing journals.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory cannot be created or examined.
    #[error(
        "cannot create state directory {path}: {source} (run as root, or set {STATE_DIR_ENV} to a directory you own)"
    )]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The state directory exists but others could tamper with it.
    #[error(
        "state directory {path} is not safe to use: {reason} (it must belong to the current user and be writable only by it; fix its owner and mode or set {STATE_DIR_ENV})"
    )]
    UnsafeStateDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A journal file cannot be written.
    #[error("cannot write journal {path}: {source} (is the state directory full or read-only?)")]
    Write {
        /// The journal file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A journal file cannot be read.
    #[error("cannot read journal {path}: {source}")]
    Read {
        /// The journal file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A journal file is not valid JSON of a known version.
    #[error(
        "journal {path} cannot be parsed: {source} (written by another kubelan version? inspect it and delete it by hand once its changes are undone)"
    )]
    Parse {
        /// The journal file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A journal was written by a newer kubelan.
    #[error(
        "journal {path} has format version {version}, newer than this kubelan understands ({JOURNAL_VERSION}); run `kubelan reset` with the kubelan that wrote it"
    )]
    Version {
        /// The journal file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
}

/// One change to the host, as recorded in a journal. The JSON form (internally tagged by
/// `kind`, snake_case) is stable: a later kubelan must be able to undo what an earlier one
/// recorded. New optional fields default when missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A network link (our TUN) that we created. Applying it only records it (the link is
    /// created elsewhere); undo deletes it if it still exists and is still the same link.
    Link {
        /// Interface name.
        name: String,
        /// Interface index when recorded, so a later link that reuses the name is left alone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ifindex: Option<u32>,
    },
    /// A route in the main table. Undo deletes it; a route that vanished with its link counts
    /// as undone.
    Route {
        /// Destination prefix.
        dst: IpNet,
        /// Output interface.
        dev: String,
        /// Next hop, for a route pinned via a gateway (the API server's /32 outside the
        /// tunnel).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<IpAddr>,
        /// Index of `dev` when the route was added.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ifindex: Option<u32>,
    },
    /// A resolv.conf that we replaced. The backup file holds the original: the same bytes,
    /// mode and owner, or a symlink with the same target when the original was a symlink.
    ResolvConf {
        /// The file we replaced.
        path: PathBuf,
        /// The backup of the original, in the state directory.
        backup: PathBuf,
        /// Hash of what we wrote, to notice when someone else rewrote it since.
        written_hash: String,
    },
    /// Per-link DNS settings we set in systemd-resolved. Undo is `resolvectl revert LINK`.
    ResolvedLink {
        /// The link.
        link: String,
        /// The `resolvectl` program used, when not the one on `PATH`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolvectl: Option<PathBuf>,
    },
    /// A marked block we added to a hosts file. Undo removes exactly that block.
    HostsBlock {
        /// The hosts file.
        path: PathBuf,
        /// The marker naming the block (`# BEGIN kubelan <marker>`).
        marker: String,
        /// Whether we added a newline before the block because the file did not end with
        /// one; undo removes it too so the file is byte-identical.
        #[serde(default, skip_serializing_if = "is_false")]
        separator_added: bool,
    },
    /// A kernel parameter we changed (`net.ipv4.ip_forward`). Undo writes `previous` back
    /// unless someone changed it again since.
    Sysctl {
        /// Dotted key.
        key: String,
        /// The value before.
        previous: String,
        /// The value kubelan wrote.
        value: String,
    },
    /// An nftables table we created (`ip kubelan`). Undo deletes the whole table.
    NftTable {
        /// Family (`ip`, `ip6`, `inet`).
        family: String,
        /// Table name.
        name: String,
    },
    /// A Unix socket file we bound (the control socket of `kubelan connect`). Undo removes
    /// it if it is still a socket and still ours.
    UnixSocket {
        /// The socket file.
        path: PathBuf,
        /// Its inode and change time (nanoseconds since the epoch) once bound, so a later
        /// kubelan's socket at the same path is left alone even when it reuses the inode.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inode: Option<u64>,
        /// See `inode`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ctime_ns: Option<i64>,
    },
    /// A systemd unit we wrote and enabled (`gateway --persist`). Undo stops and disables
    /// it and removes the file, if the file still starts with `marker`.
    SystemdUnit {
        /// The unit file.
        path: PathBuf,
        /// The first line of what we wrote: a file without it is someone else's.
        marker: String,
        /// The `systemctl` program used, when not the one on `PATH`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        systemctl: Option<PathBuf>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Link { name, .. } => write!(f, "link {name}"),
            Self::Route {
                dst, dev, gateway, ..
            } => match gateway {
                Some(gw) => write!(f, "route {dst} via {gw} dev {dev}"),
                None => write!(f, "route {dst} dev {dev}"),
            },
            Self::ResolvConf { path, .. } => write!(f, "resolver configuration {}", path.display()),
            Self::ResolvedLink { link, .. } => {
                write!(f, "systemd-resolved DNS settings of link {link}")
            }
            Self::HostsBlock { path, marker, .. } => {
                write!(f, "hosts block {marker:?} in {}", path.display())
            }
            Self::Sysctl {
                key,
                previous,
                value,
            } => write!(f, "kernel parameter {key} = {value} (was {previous})"),
            Self::NftTable { family, name } => write!(f, "nftables table {family} {name}"),
            Self::UnixSocket { path, .. } => write!(f, "socket {}", path.display()),
            Self::SystemdUnit { path, .. } => {
                write!(f, "the persistent gateway {}", path.display())
            }
        }
    }
}

/// The process owning a journal: its PID and start time (which together survive PID reuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

impl Owner {
    /// The calling process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the owning process still runs (the same process, not a reuse of its PID).
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time) && process_alive(self.pid)
    }
}

#[cfg(target_os = "linux")]
fn start_time(pid: u32) -> Option<u64> {
    crate::process_start_time(pid)
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    crate::process_alive(pid)
}

#[cfg(not(target_os = "linux"))]
fn start_time(pid: u32) -> Option<u64> {
    process_alive(pid).then_some(0)
}

#[cfg(not(target_os = "linux"))]
fn process_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// The contents of one journal file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// File format version ([`JOURNAL_VERSION`]).
    pub version: u32,
    /// The process that made the changes.
    pub owner: Owner,
    /// What the changes are for (`connect`, `gateway`, `forward`).
    pub purpose: String,
    /// The changes, oldest first.
    pub changes: Vec<Change>,
}

impl Journal {
    /// Reads a journal file.
    ///
    /// # Errors
    /// When it cannot be read, parsed, or has a newer version.
    pub fn load(path: &Path) -> Result<Self, JournalError> {
        let bytes = std::fs::read(path).map_err(|source| JournalError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let journal: Journal =
            serde_json::from_slice(&bytes).map_err(|source| JournalError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if journal.version > JOURNAL_VERSION {
            return Err(JournalError::Version {
                path: path.to_path_buf(),
                version: journal.version,
            });
        }
        Ok(journal)
    }

    /// Writes the journal atomically (temporary file, fsync, rename, fsync of the
    /// directory), mode 0600.
    fn store(&self, path: &Path) -> Result<(), JournalError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("journal serializes");
        bytes.push(b'\n');
        fsutil::write_atomic(path, &bytes, 0o600, None).map_err(|source| JournalError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A journal file found in a state directory.
#[derive(Debug)]
pub struct JournalFile {
    /// Its path.
    pub path: PathBuf,
    /// Its contents, or why they cannot be read.
    pub journal: Result<Journal, JournalError>,
}

/// The journal files in `state_dir`, newest first. A missing directory has none.
///
/// # Errors
/// When the directory exists but cannot be listed.
pub fn journals(state_dir: &StateDir) -> Result<Vec<JournalFile>, JournalError> {
    let dir = match std::fs::read_dir(state_dir.path()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(JournalError::Read {
                path: state_dir.path().to_path_buf(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("journal-") && name.ends_with(".json")) {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        found.push((modified, entry.path()));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    Ok(found
        .into_iter()
        .map(|(_, path)| JournalFile {
            journal: Journal::load(&path),
            path,
        })
        .collect())
}

/// What happened when undoing one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The change was undone ("removed route 172.17.32.0/19 dev kl0").
    Undone(String),
    /// There was nothing left to undo (the route vanished with its link).
    AlreadyGone(String),
    /// The change was deliberately left in place because someone else changed the same
    /// thing since; the message says where the original is kept.
    Kept(String),
    /// Undo failed; the change stays in the journal for a later `kubelan reset`.
    Failed {
        /// The change.
        change: Change,
        /// Why it failed.
        reason: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Undone(s) | Self::AlreadyGone(s) | Self::Kept(s) => f.write_str(s),
            Self::Failed { change, reason } => write!(f, "could not undo {change}: {reason}"),
        }
    }
}

/// What undoing a journal did, one outcome per change, newest change first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The outcomes.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Whether every change was undone (or was already gone, or deliberately kept).
    pub fn is_clean(&self) -> bool {
        !self
            .outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Failed { .. }))
    }

    /// The changes whose undo failed, oldest first (as they are kept in the journal).
    fn failed_changes(&self) -> Vec<Change> {
        self.outcomes
            .iter()
            .rev()
            .filter_map(|o| match o {
                Outcome::Failed { change, .. } => Some(change.clone()),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.outcomes.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{o}")?;
        }
        Ok(())
    }
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
    Net(#[from] crate::net::NetError),
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
    Sysctl(#[from] crate::sysctl::SysctlError),
    /// nftables refused the change (the journal entry was withdrawn).
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Nft(#[from] crate::nft::NftError),
    /// The change does not exist on this operating system.
    #[error("{0} is not supported on this operating system")]
    Unsupported(String),
}

static NEXT_JOURNAL: AtomicU32 = AtomicU32::new(0);

/// Owns a journal and undoes its changes on [`restore`](Self::restore) or drop.
///
/// The undo on drop runs on a helper thread with its own runtime (so it also works when the
/// guard is dropped inside a tokio runtime) and in the network namespace of the thread that
/// drops the guard. Its failures are logged, and the failed changes stay in the journal.
#[derive(Debug)]
pub struct HostGuard {
    state_dir: StateDir,
    path: PathBuf,
    journal: Journal,
    finished: bool,
}

impl HostGuard {
    /// Starts a journal for this process in `state_dir` (creating the directory), for
    /// `purpose` (shown by `kubelan reset` and in file headers: `connect`, `forward`).
    ///
    /// # Errors
    /// When the state directory is unusable or the journal cannot be written.
    pub fn begin(state_dir: &StateDir, purpose: &str) -> Result<Self, JournalError> {
        state_dir.ensure()?;
        let owner = Owner::current();
        let n = NEXT_JOURNAL.fetch_add(1, Ordering::Relaxed);
        let path = state_dir.path().join(format!(
            "journal-{}-{}-{n}.json",
            owner.pid, owner.start_time
        ));
        // Claim the name, so a leftover file with the same name is never overwritten.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| JournalError::Write {
                path: path.clone(),
                source,
            })?;
        let journal = Journal {
            version: JOURNAL_VERSION,
            owner,
            purpose: purpose.to_string(),
            changes: Vec::new(),
        };
        let guard = Self {
            state_dir: state_dir.clone(),
            path,
            journal,
            finished: false,
        };
        if let Err(e) = guard.journal.store(&guard.path) {
            let _ = std::fs::remove_file(&guard.path);
            let mut guard = guard;
            guard.finished = true;
            return Err(e);
        }
        Ok(guard)
    }

    /// The journal file.
    pub fn journal_path(&self) -> &Path {
        &self.path
    }

    /// The state directory.
    pub fn state_dir(&self) -> &StateDir {
        &self.state_dir
    }

    /// The process owning the journal (this one).
    pub fn owner(&self) -> Owner {
        self.journal.owner
    }

    /// The purpose given to [`begin`](Self::begin).
    pub fn purpose(&self) -> &str {
        &self.journal.purpose
    }

    /// The changes made so far, oldest first.
    pub fn changes(&self) -> &[Change] {
        &self.journal.changes
    }

    /// Records `change` in the journal, then makes it. When making it fails, the journal
    /// entry is withdrawn.
    ///
    /// - [`Change::Link`] is only recorded (the TUN is created elsewhere); its interface
    ///   index is looked up when not given.
    /// - [`Change::Route`] adds the route (via the gateway when one is given).
    /// - Resolver and hosts changes carry too little to be made from their record: use
    ///   [`crate::dns::apply`] and [`crate::hosts::add_block`], which record them here.
    ///
    /// # Errors
    /// [`ApplyError::Journal`] when the journal cannot be written (nothing was changed),
    /// [`ApplyError::Net`] when the kernel refuses the change.
    pub async fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        match change {
            Change::Link { name, ifindex } => {
                #[cfg(target_os = "linux")]
                let ifindex = match ifindex {
                    Some(i) => Some(i),
                    None => crate::net::link_index(&name).await.ok(),
                };
                self.record(Change::Link { name, ifindex })?;
                Ok(())
            }
            #[cfg(target_os = "linux")]
            Change::Route {
                dst, dev, gateway, ..
            } => {
                let index = crate::net::link_index(&dev).await?;
                let change = Change::Route {
                    dst,
                    dev: dev.clone(),
                    gateway,
                    ifindex: Some(index),
                };
                self.record(change.clone())?;
                if let Err(e) = crate::net::route_add_index(dst, gateway, index, &dev).await {
                    self.unrecord(&change);
                    return Err(e.into());
                }
                Ok(())
            }
            #[cfg(not(target_os = "linux"))]
            change @ Change::Route { .. } => Err(ApplyError::Unsupported(change.to_string())),
            change @ (Change::ResolvConf { .. } | Change::ResolvedLink { .. }) => {
                Err(ApplyError::NotApplicable {
                    change: change.to_string(),
                    instead: "kubelan_sys::dns::apply",
                })
            }
            change @ Change::HostsBlock { .. } => Err(ApplyError::NotApplicable {
                change: change.to_string(),
                instead: "kubelan_sys::hosts::add_block",
            }),
            change @ Change::Sysctl { .. } => Err(ApplyError::NotApplicable {
                change: change.to_string(),
                instead: "kubelan_sys::sysctl::set",
            }),
            change @ Change::NftTable { .. } => Err(ApplyError::NotApplicable {
                change: change.to_string(),
                instead: "kubelan_sys::nft::create_table",
            }),
            change @ Change::UnixSocket { .. } => Err(ApplyError::NotApplicable {
                change: change.to_string(),
                instead: "kubelan_sys::socket::bind",
            }),
            change @ Change::SystemdUnit { .. } => Err(ApplyError::NotApplicable {
                change: change.to_string(),
                instead: "kubelan_sys::journal::unit::install",
            }),
        }
    }

    /// Appends `change` to the journal and writes it to disk. Call before making the change.
    pub(crate) fn record(&mut self, change: Change) -> Result<(), JournalError> {
        self.journal.changes.push(change);
        if let Err(e) = self.journal.store(&self.path) {
            self.journal.changes.pop();
            return Err(e);
        }
        Ok(())
    }

    /// Replaces the newest entry equal to `old` by `new` (a detail learnt once the change
    /// was made, such as a socket's inode). When the journal cannot be rewritten, the old
    /// entry stays, which still undoes the change.
    pub(crate) fn amend(&mut self, old: &Change, new: Change) {
        if let Some(i) = self.journal.changes.iter().rposition(|c| c == old) {
            let previous = std::mem::replace(&mut self.journal.changes[i], new);
            if let Err(e) = self.journal.store(&self.path) {
                tracing::warn!(error = %e, "cannot amend a journal entry");
                self.journal.changes[i] = previous;
            }
        }
    }

    /// Withdraws the newest entry equal to `change` (the change could not be made).
    pub(crate) fn unrecord(&mut self, change: &Change) {
        if let Some(i) = self.journal.changes.iter().rposition(|c| c == change) {
            self.journal.changes.remove(i);
            if let Err(e) = self.journal.store(&self.path) {
                tracing::warn!(error = %e, "cannot withdraw a journal entry; `kubelan reset` will find nothing to undo for it");
            }
        }
    }

    /// Ends the guard without undoing anything: the journal stays for `kubelan reset`
    /// (changes meant to outlive the process, such as an installed systemd unit).
    pub fn keep(mut self) {
        self.finished = true;
    }

    /// Undoes every change in reverse order and deletes the journal. Changes whose undo
    /// fails stay in the journal for `kubelan reset`.
    pub async fn restore(mut self) -> Report {
        self.finished = true;
        let changes = std::mem::take(&mut self.journal.changes);
        let report = undo_all(changes, self.state_dir.path()).await;
        finish(&self.path, &mut self.journal, &report);
        report
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let changes = std::mem::take(&mut self.journal.changes);
        if changes.is_empty() {
            finish(&self.path, &mut self.journal, &Report::default());
            return;
        }
        let path = self.path.clone();
        let dir = self.state_dir.path().to_path_buf();
        let mut journal = self.journal.clone();
        let worker = std::thread::Builder::new()
            .name("kubelan-undo".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let report = rt.block_on(undo_all(changes, &dir));
                finish(&path, &mut journal, &report);
                Ok::<Report, String>(report)
            });
        let result = match worker {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err("undo thread panicked".into())),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(report) => {
                for o in &report.outcomes {
                    match o {
                        Outcome::Failed { .. } => tracing::warn!("{o}"),
                        _ => tracing::info!("{o}"),
                    }
                }
                if !report.is_clean() {
                    tracing::warn!(journal = %self.path.display(), "some host changes could not be undone; run `kubelan reset` to retry");
                }
            }
            Err(e) => {
                tracing::warn!(journal = %self.path.display(), error = %e, "cannot undo host changes; run `kubelan reset`");
            }
        }
    }
}

/// Deletes the journal after a clean undo, or keeps only the failed changes in it.
pub(crate) fn finish(path: &Path, journal: &mut Journal, report: &Report) {
    journal.changes = report.failed_changes();
    if journal.changes.is_empty() {
        match std::fs::remove_file(path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = fsutil::sync_dir(dir);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(journal = %path.display(), error = %e, "cannot delete journal")
            }
        }
    } else if let Err(e) = journal.store(path) {
        tracing::warn!(error = %e, "cannot rewrite journal");
    }
}

pub(crate) async fn undo_all(changes: Vec<Change>, state_dir: &Path) -> Report {
    let mut outcomes = Vec::with_capacity(changes.len());
    for change in changes.into_iter().rev() {
        outcomes.push(undo(change, state_dir).await);
    }
    Report { outcomes }
}

/// Undoes one change (`state_dir` holds the lock for file edits).
async fn undo(change: Change, state_dir: &Path) -> Outcome {
    match &change {
        #[cfg(target_os = "linux")]
        Change::Link { name, ifindex } => crate::net::undo_link(name, *ifindex, &change).await,
        #[cfg(target_os = "linux")]
        Change::Route {
            dst,
            dev,
            gateway,
            ifindex,
        } => crate::net::undo_route(*dst, dev, *gateway, *ifindex, &change).await,
        #[cfg(not(target_os = "linux"))]
        Change::Link { .. } | Change::Route { .. } => Outcome::Failed {
            reason: "not supported on this operating system".into(),
            change,
        },
        Change::ResolvConf {
            path,
            backup,
            written_hash,
        } => crate::dns::undo_resolv_conf(path, backup, written_hash, &change),
        Change::ResolvedLink { link, resolvectl } => {
            crate::dns::undo_resolved_link(link, resolvectl.as_deref(), &change).await
        }
        Change::HostsBlock {
            path,
            marker,
            separator_added,
        } => crate::hosts::undo_block(path, marker, *separator_added, state_dir, &change),
        #[cfg(target_os = "linux")]
        Change::Sysctl {
            key,
            previous,
            value,
        } => crate::sysctl::undo(key, previous, value, &change),
        #[cfg(target_os = "linux")]
        Change::NftTable { family, name } => crate::nft::undo_table(family, name, &change).await,
        #[cfg(not(target_os = "linux"))]
        Change::Sysctl { .. } | Change::NftTable { .. } => Outcome::Failed {
            reason: "not supported on this operating system".into(),
            change,
        },
        Change::UnixSocket {
            path,
            inode,
            ctime_ns,
        } => crate::socket::undo(path, *inode, *ctime_ns, &change),
        Change::SystemdUnit {
            path,
            marker,
            systemctl,
        } => unit::undo(path, marker, systemctl.as_deref(), &change).await,
    }
}

/// The lock file serialising journal replays in a state directory.
const REPLAY_LOCK: &str = "replay.lock";

/// Takes the replay lock of `state_dir` (blocking). `None` when the directory does not exist
/// (there is nothing to replay) or the lock cannot be taken (replaying without it is what
/// kubelan did before the lock existed: undo is idempotent, only the report may double).
pub(crate) fn replay_lock(state_dir: &Path) -> Option<fsutil::StateLock> {
    match fsutil::StateLock::take(state_dir, REPLAY_LOCK) {
        Ok(l) => Some(l),
        Err(e) => {
            // Missing directory: nothing to replay. Not ours (a user's `kubelan reset` of
            // root's directory): listing it fails next and says so.
            tracing::debug!(dir = %state_dir.display(), error = %e, "no replay lock");
            None
        }
    }
}

/// What `reset` did with one journal.
#[derive(Debug)]
pub struct JournalReset {
    /// The journal file.
    pub path: PathBuf,
    /// Its owner, when it could be read.
    pub owner: Option<Owner>,
    /// Its purpose, when it could be read.
    pub purpose: Option<String>,
    /// What happened.
    pub status: ResetStatus,
}

/// What `reset` did with one journal.
#[derive(Debug)]
pub enum ResetStatus {
    /// Its owner is alive: left alone.
    InUse {
        /// The owner's PID.
        pid: u32,
    },
    /// Its changes were undone (see the report for failures, which stay in the journal).
    Replayed(Report),
    /// It cannot be read; left alone.
    Unreadable(String),
    /// It does not belong to the current user; left alone.
    Foreign(String),
}

/// The result of [`reset`].
#[derive(Debug, Default)]
pub struct ResetReport {
    /// One entry per journal that needed attention.
    pub journals: Vec<JournalReset>,
    /// Problems with the state directory itself.
    pub problems: Vec<String>,
}

impl ResetReport {
    /// Whether nothing needed undoing.
    pub fn nothing_to_do(&self) -> bool {
        self.problems.is_empty()
            && self
                .journals
                .iter()
                .all(|j| matches!(j.status, ResetStatus::InUse { .. }))
    }

    /// Whether everything that needed undoing was undone.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
            && self.journals.iter().all(|j| match &j.status {
                ResetStatus::InUse { .. } => true,
                ResetStatus::Replayed(r) => r.is_clean(),
                ResetStatus::Unreadable(_) | ResetStatus::Foreign(_) => false,
            })
    }

    /// The human lines of the report.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.problems.clone();
        for j in &self.journals {
            let who = match (&j.purpose, &j.owner) {
                (Some(p), Some(o)) => format!(" ({p}, pid {})", o.pid),
                _ => String::new(),
            };
            match &j.status {
                ResetStatus::InUse { pid } => lines.push(format!(
                    "{}{who}: in use by pid {pid}, left alone",
                    j.path.display()
                )),
                ResetStatus::Replayed(report) => {
                    lines.extend(report.outcomes.iter().map(|o| o.to_string()))
                }
                ResetStatus::Unreadable(why) | ResetStatus::Foreign(why) => {
                    lines.push(format!("{}: left alone: {why}", j.path.display()))
                }
            }
        }
        if lines.is_empty() {
            lines.push("nothing to do".into());
        }
        lines
    }
}

impl fmt::Display for ResetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

/// Undoes what crashed runs left behind: replays, newest first, every journal in
/// `state_dir` whose owner is dead (with `force`, every journal except this process's own),
/// undoing its changes in reverse order and deleting it. Journals of live owners are listed
/// as in use and left alone. Running it twice is harmless: the second run has nothing to do.
pub async fn reset(state_dir: &StateDir, force: bool) -> ResetReport {
    let mut report = ResetReport::default();
    // One replay at a time: the crash watcher of a dead session, `kubelan reset` and the
    // start of the next session may all find the same journal.
    let _lock = replay_lock(state_dir.path());
    let files = match journals(state_dir) {
        Ok(f) => f,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    let me = Owner::current();
    let euid = nix::unistd::geteuid().as_raw();
    for file in files {
        let journal = match file.journal {
            Ok(j) => j,
            Err(e) => {
                report.journals.push(JournalReset {
                    path: file.path,
                    owner: None,
                    purpose: None,
                    status: ResetStatus::Unreadable(e.to_string()),
                });
                continue;
            }
        };
        let entry = |status| JournalReset {
            path: file.path.clone(),
            owner: Some(journal.owner),
            purpose: Some(journal.purpose.clone()),
            status,
        };
        if let Ok(md) = std::fs::symlink_metadata(&file.path)
            && (md.uid() != euid || !md.file_type().is_file())
        {
            report.journals.push(entry(ResetStatus::Foreign(format!(
                "owned by uid {}, not by the current user (uid {euid})",
                md.uid()
            ))));
            continue;
        }
        let ours = journal.owner == me;
        let in_use = if force {
            ours
        } else {
            ours || journal.owner.is_alive()
        };
        if in_use {
            report.journals.push(entry(ResetStatus::InUse {
                pid: journal.owner.pid,
            }));
            continue;
        }
        let mut journal = journal;
        let changes = std::mem::take(&mut journal.changes);
        let was_empty = changes.is_empty();
        let undone = undo_all(changes, state_dir.path()).await;
        finish(&file.path, &mut journal, &undone);
        if !was_empty {
            report.journals.push(JournalReset {
                path: file.path,
                owner: Some(journal.owner),
                purpose: Some(journal.purpose.clone()),
                status: ResetStatus::Replayed(undone),
            });
        }
    }
    report
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
pub mod unit;
