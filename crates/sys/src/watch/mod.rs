//! The crash watcher: a small process that a session (`kubelan connect`, `kubelan gateway`)
//! starts right after opening its journal, and that replays the journal when the session's
//! process dies without doing so itself (`kill -9`, the OOM killer, a panic that aborts).
//! The machine's DNS, routes, nft table, sysctls and control socket are then back within
//! milliseconds, with nobody running `kubelan reset`.
//!
//! The journal stays the one source of truth: the watcher holds no state of its own, only
//! the journal's path and its owner (PID and start time). It
//! - never undoes anything while its owner lives: it waits for the owner's exit, through a
//!   pidfd on Linux (inherited from the owner, so there is no window in which the PID could
//!   be reused), else by polling the owner's PID and start time;
//! - does not race the owner's clean exit: a clean exit undoes the changes and deletes the
//!   journal before the process ends, so the watcher then finds nothing and exits;
//! - replays under the state directory's replay lock, like [`crate::journal::reset`], so
//!   `kubelan reset` or the next session starting at the same moment never replay the same
//!   journal twice;
//! - sits in its own session and process group, ignoring SIGINT and SIGHUP, so the
//!   terminal's Ctrl-C or hang-up (which the owner handles by restoring) does not end it
//!   first; SIGTERM ends it while it waits;
//! - exits once its owner is gone, whatever it found.
//!
//! If the watcher itself is killed, nothing is lost: the journal is still there for
//! `kubelan reset` and the next session's start, as without a watcher.
//!
//! [`decide`] is the watcher's whole judgement, free of I/O; [`run`] gathers the facts and
//! acts on them; [`spawn`] starts a watcher (Linux).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::journal::{self, Journal, JournalError, Owner, Report};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{ProcessExit, Watcher, inherited_pidfd, spawn};

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::{ProcessExit, Watcher, inherited_pidfd, spawn};

/// Errors starting or setting up a crash watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The watcher program could not be started.
    #[error("cannot start the crash watcher: {0}")]
    Spawn(#[source] std::io::Error),
    /// The descriptor given as the owner's pidfd is not one.
    #[error("descriptor {0} is not an inherited pidfd")]
    NotAPidfd(i32),
    /// There is no crash watcher on this operating system.
    #[error("the crash watcher is only supported on Linux")]
    Unsupported,
}

/// How often the owner is checked when no pidfd is available (kernels before 5.3, or a
/// seccomp policy that refuses `pidfd_open`).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What a watcher watches: one journal and the process that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The journal file.
    pub journal: PathBuf,
    /// Its owner.
    pub owner: Owner,
}

impl Target {
    /// The state directory holding the journal (locks and backups live there).
    pub fn state_dir(&self) -> &Path {
        self.journal.parent().unwrap_or(Path::new("."))
    }
}

/// What the journal looks like when the watcher looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalSeen {
    /// No journal: its owner restored everything and deleted it (or someone replayed it).
    Missing,
    /// A journal of this owner.
    Of(Owner),
    /// It cannot be read (the reason).
    Unreadable(String),
}

impl JournalSeen {
    /// Reads the journal at `path`.
    pub fn read(path: &Path) -> (Self, Option<Journal>) {
        match Journal::load(path) {
            Ok(j) => (Self::Of(j.owner), Some(j)),
            Err(JournalError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                (Self::Missing, None)
            }
            Err(e) => (Self::Unreadable(e.to_string()), None),
        }
    }
}

/// What the watcher does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The owner still runs: keep waiting (a wake-up that is not its exit undoes nothing).
    Wait,
    /// The owner ended and its journal is gone: it cleaned up; exit.
    Done,
    /// The owner died and left its journal: undo the changes, then exit.
    Replay,
    /// The journal is not the owner's or cannot be read: leave it for `kubelan reset`
    /// (the reason), and exit.
    LeaveAlone(String),
}

/// The watcher's judgement, given whether the owner still runs and what the journal holds.
pub fn decide(owner_alive: bool, expected: Owner, journal: &JournalSeen) -> Decision {
    if owner_alive {
        return Decision::Wait;
    }
    match journal {
        JournalSeen::Missing => Decision::Done,
        JournalSeen::Of(owner) if *owner == expected => Decision::Replay,
        JournalSeen::Of(owner) => Decision::LeaveAlone(format!(
            "the journal belongs to pid {} (started at tick {}), not to the watched pid {} (tick {})",
            owner.pid, owner.start_time, expected.pid, expected.start_time
        )),
        JournalSeen::Unreadable(why) => Decision::LeaveAlone(why.clone()),
    }
}

/// How a watch ended.
#[derive(Debug)]
pub enum Ended {
    /// The owner cleaned up after itself.
    CleanExit,
    /// The owner died without cleaning up; its changes were undone (see the report for any
    /// that failed: they stay in the journal for `kubelan reset`).
    Replayed {
        /// What the journal was for (`connect`, `gateway`).
        purpose: String,
        /// What undoing did.
        report: Report,
    },
    /// The owner died and its journal was left alone (why).
    LeftAlone(String),
}

/// Looks at the owner and the journal once, under the replay lock, and acts: replays the
/// journal when the owner is dead and left it. `None` while the owner lives.
pub async fn check(target: &Target) -> Option<Ended> {
    let _lock = journal::replay_lock(target.state_dir());
    let alive = target.owner.is_alive();
    let (seen, loaded) = JournalSeen::read(&target.journal);
    match decide(alive, target.owner, &seen) {
        Decision::Wait => None,
        Decision::Done => Some(Ended::CleanExit),
        Decision::LeaveAlone(why) => Some(Ended::LeftAlone(why)),
        Decision::Replay => {
            let mut journal = loaded?;
            let changes = std::mem::take(&mut journal.changes);
            let report = journal::undo_all(changes, target.state_dir()).await;
            journal::finish(&target.journal, &mut journal, &report);
            Some(Ended::Replayed {
                purpose: journal.purpose,
                report,
            })
        }
    }
}

/// Waits until the owner is gone, then does what [`decide`] says. `pidfd` is a pidfd of the
/// owner (see [`spawn`]); without one, the owner is polled every [`POLL_INTERVAL`].
pub async fn run(target: &Target, pidfd: Option<std::os::fd::OwnedFd>) -> Ended {
    let mut exit = pidfd.and_then(|fd| match ProcessExit::new(fd) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "cannot wait on the owner's pidfd; polling instead");
            None
        }
    });
    loop {
        match &mut exit {
            Some(e) => e.wait().await,
            None => tokio::time::sleep(POLL_INTERVAL).await,
        }
        if let Some(ended) = check(target).await {
            return ended;
        }
        if exit.is_some() {
            // The pidfd said the owner ended, yet it looks alive: trust the PID and start
            // time from now on.
            exit = None;
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::journal::{HostGuard, StateDir};
    use crate::testutil::TempDir;

    const OWNER: Owner = Owner {
        pid: 4242,
        start_time: 1000,
    };

    #[test]
    fn never_undoes_while_the_owner_lives() {
        for seen in [
            JournalSeen::Missing,
            JournalSeen::Of(OWNER),
            JournalSeen::Unreadable("bad".into()),
        ] {
            assert_eq!(decide(true, OWNER, &seen), Decision::Wait, "{seen:?}");
        }
    }

    #[test]
    fn a_clean_exit_leaves_nothing_to_do() {
        assert_eq!(decide(false, OWNER, &JournalSeen::Missing), Decision::Done);
    }

    #[test]
    fn a_crash_replays_the_owners_journal_only() {
        assert_eq!(
            decide(false, OWNER, &JournalSeen::Of(OWNER)),
            Decision::Replay
        );
        // Same PID, another process (the PID was reused): not ours to undo.
        let reused = Owner {
            start_time: 2000,
            ..OWNER
        };
        assert!(matches!(
            decide(false, OWNER, &JournalSeen::Of(reused)),
            Decision::LeaveAlone(why) if why.contains("pid 4242")
        ));
        assert!(matches!(
            decide(false, OWNER, &JournalSeen::Unreadable("cannot parse".into())),
            Decision::LeaveAlone(why) if why == "cannot parse"
        ));
    }

    fn dead_owner() -> Owner {
        // A process that has exited: its PID and start time no longer match a live one.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start_time = crate::process_start_time(pid).unwrap_or(1);
        child.wait().unwrap();
        Owner { pid, start_time }
    }

    fn journal_of(state: &StateDir, owner: Owner) -> PathBuf {
        // A journal with one change and a dead owner, as a crash leaves it.
        let mut guard = HostGuard::begin(state, "connect").unwrap();
        let path = guard.journal_path().to_path_buf();
        let sock = state.path().join("connect.sock");
        drop(crate::socket::bind(&mut guard, &sock).unwrap());
        std::mem::forget(guard);
        let mut text: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        text["owner"] = serde_json::to_value(owner).unwrap();
        std::fs::write(&path, serde_json::to_vec(&text).unwrap()).unwrap();
        path
    }

    #[tokio::test]
    async fn check_replays_a_dead_owners_journal_and_then_finds_nothing() {
        let tmp = TempDir::new("watch");
        let state = StateDir::new(tmp.path().join("state"));
        let owner = dead_owner();
        let journal = journal_of(&state, owner);
        let target = Target { journal, owner };
        match check(&target).await {
            Some(Ended::Replayed { purpose, report }) => {
                assert_eq!(purpose, "connect");
                assert!(report.is_clean(), "{report}");
                assert!(report.to_string().contains("removed socket"), "{report}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!target.journal.exists());
        assert!(!state.path().join("connect.sock").exists());
        assert!(matches!(check(&target).await, Some(Ended::CleanExit)));
        assert!(journal::reset(&state, false).await.nothing_to_do());
    }

    #[tokio::test]
    async fn check_waits_while_the_owner_lives() {
        let tmp = TempDir::new("watchlive");
        let state = StateDir::new(tmp.path().join("state"));
        let owner = Owner::current();
        let journal = journal_of(&state, owner);
        let target = Target {
            journal: journal.clone(),
            owner,
        };
        assert!(check(&target).await.is_none());
        assert!(journal.exists());
        assert!(state.path().join("connect.sock").exists());
    }
}
