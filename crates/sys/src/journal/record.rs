//! The journal's records: the state directory, the [`Change`]s a journal holds, the
//! journal file itself, and the [`HostGuard`] that appends to it. Making and undoing the
//! changes lives in [`super::undo`], which calls down into the modules that make them;
//! those modules record here, so nothing in this file calls them.

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
    pub(crate) fn store(&self, path: &Path) -> Result<(), JournalError> {
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

static NEXT_JOURNAL: AtomicU32 = AtomicU32::new(0);

/// Owns a journal and undoes its changes on [`restore`](Self::restore) or drop.
///
/// The undo on drop runs on a helper thread with its own runtime (so it also works when the
/// guard is dropped inside a tokio runtime) and in the network namespace of the thread that
/// drops the guard. Its failures are logged, and the failed changes stay in the journal.
#[derive(Debug)]
pub struct HostGuard {
    pub(super) state_dir: StateDir,
    pub(super) path: PathBuf,
    pub(super) journal: Journal,
    pub(super) finished: bool,
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
