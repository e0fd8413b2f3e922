//! Making and undoing journalled changes: [`HostGuard::apply`], [`HostGuard::restore`], the
//! undo on drop, and [`reset`] of journals whose owners died. This is the one file that
//! calls into the modules that change the host (net, dns, hosts, sysctl, nft, socket, the
//! systemd unit); they only record through [`super::record`].

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::record::{Change, HostGuard, Outcome, Owner, Report, StateDir, finish, journals};
use super::unit;
use crate::error::ApplyError;
use crate::fsutil;

impl HostGuard {
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

/// `kubelan reset`: replays the persistent journals first (stopping a persistent gateway
/// makes it undo its own runtime changes), then the runtime ones.
pub async fn reset_all(force: bool) -> ResetReport {
    let mut report = reset(&unit::persistent_dir(), force).await;
    let runtime = reset(&StateDir::from_env(), force).await;
    report.journals.extend(runtime.journals);
    report.problems.extend(runtime.problems);
    report
}
