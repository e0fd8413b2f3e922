//! The crash watcher of `connect`, `gateway` and `forward` (its hosts block): a small
//! `kubelan crash-watcher` process started right after the session opens its journal, which
//! undoes the session's changes when the session dies without doing so (`kill -9`, the OOM
//! killer). The judgement and the OS work live in `kubelan_sys::watch`; this file starts it
//! and, in the watcher process, says what it did.

use std::io::Write;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use kubelan_sys::journal::{HostGuard, Owner};
use kubelan_sys::watch::{self, Ended, Target, Watcher};

use crate::event::{Event, EventSink};

/// What the session that starts a crash watcher passes it.
#[derive(Debug, Clone)]
pub struct WatcherOptions {
    /// The journal to replay when its owner dies.
    pub journal: PathBuf,
    /// The owner's PID.
    pub owner_pid: u32,
    /// The owner's start time (clock ticks since boot, `/proc/PID/stat` field 22).
    pub owner_start: u64,
    /// An inherited pidfd of the owner; without it the owner is polled.
    pub pidfd: Option<i32>,
}

/// Starts the crash watcher for `guard`'s journal. Without one (it cannot be started) the
/// session goes on and says that `kubelan reset` is the way back after a crash.
pub(crate) fn start(guard: &HostGuard, events: &EventSink) -> Option<Watcher> {
    try_start(guard)
        .map_err(|error| events(Event::NoCrashWatcher { error }))
        .ok()
}

/// Starts the crash watcher for `guard`'s journal, or says why it cannot.
///
/// # Errors
/// Why the watcher process could not be started.
pub fn try_start(guard: &HostGuard) -> Result<Watcher, String> {
    // The running binary itself, even when its file was replaced or deleted since.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0("kubelan").arg("crash-watcher");
    match watch::spawn(tokio::process::Command::from(cmd), guard) {
        Ok(w) => {
            tracing::debug!(pid = ?w.pid(), pidfd = w.uses_pidfd(), "crash watcher started");
            Ok(w)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Writes a line to stderr; the terminal may be gone (the watcher outlives it), which is no
/// reason to fail.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `kubelan crash-watcher`: waits for the owner's end, replays its journal if it died
/// without cleaning up, and exits.
///
/// # Errors
/// When the signal handler or the watching task fails.
pub async fn run(args: WatcherOptions) -> anyhow::Result<ExitCode> {
    let owner = Owner {
        pid: args.owner_pid,
        start_time: args.owner_start,
    };
    let target = Target {
        journal: args.journal,
        owner,
    };
    let pidfd = args.pidfd.and_then(|fd| match watch::inherited_pidfd(fd) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(error = %e, "polling the owner instead");
            None
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let journal = target.journal.clone();
    let mut task = tokio::spawn(async move { watch::run(&target, pidfd).await });
    let ended = loop {
        tokio::select! {
            r = &mut task => break r?,
            _ = term.recv() => {
                // Asked to stop while the owner runs (it restores on its own, as when a
                // service manager stops both). A replay in progress is finished first.
                if owner.is_alive() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    match ended {
        Ended::CleanExit => Ok(ExitCode::SUCCESS),
        Ended::Replayed { purpose, report } => {
            say(&format!(
                "kubelan {purpose} (pid {}) ended without undoing its changes; its crash watcher undid them:",
                owner.pid
            ));
            for o in &report.outcomes {
                say(&format!("  {o}"));
            }
            if report.is_clean() {
                Ok(ExitCode::SUCCESS)
            } else {
                say("some changes could not be undone; `sudo kubelan reset` retries");
                Ok(ExitCode::FAILURE)
            }
        }
        Ended::LeftAlone(why) => {
            say(&format!(
                "kubelan (pid {}) ended; its crash watcher left {} alone: {why}. `sudo kubelan reset` shows what is left",
                owner.pid,
                journal.display()
            ));
            Ok(ExitCode::FAILURE)
        }
    }
}
