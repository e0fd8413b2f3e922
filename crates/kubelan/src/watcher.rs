//! `kubelan crash-watcher` flags, and starting a watcher for `forward`'s hosts block; the
//! work is `kubelan_vpn::watcher` (and `kubelan_sys::watch`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kubelan_sys::journal::HostGuard;
use kubelan_sys::watch::Watcher;
use kubelan_vpn::Event;
use kubelan_vpn::watcher::WatcherOptions;

/// `kubelan crash-watcher` flags (passed by the session that starts it).
#[derive(Args, Debug)]
pub(crate) struct WatcherArgs {
    /// The journal to replay when its owner dies.
    #[arg(long, value_name = "FILE")]
    journal: PathBuf,
    /// The owner's PID.
    #[arg(long, value_name = "PID")]
    owner_pid: u32,
    /// The owner's start time (clock ticks since boot, `/proc/PID/stat` field 22).
    #[arg(long, value_name = "TICKS")]
    owner_start: u64,
    /// An inherited pidfd of the owner; without it the owner is polled.
    #[arg(long, value_name = "FD")]
    pidfd: Option<i32>,
}

/// Starts the crash watcher for `guard`'s journal. Without one (it cannot be started) the
/// session goes on and says that `kubelan reset` is the way back after a crash.
pub(crate) fn start(guard: &HostGuard) -> Option<Watcher> {
    // Said as `connect` and `gateway` say it (their event, on stderr either way).
    let warn = |error| crate::events::printer(false)(Event::NoCrashWatcher { error });
    kubelan_vpn::watcher::try_start(guard).map_err(warn).ok()
}

/// `kubelan crash-watcher`.
pub(crate) async fn run(args: WatcherArgs) -> anyhow::Result<ExitCode> {
    kubelan_vpn::watcher::run(WatcherOptions {
        journal: args.journal,
        owner_pid: args.owner_pid,
        owner_start: args.owner_start,
        pidfd: args.pidfd,
    })
    .await
}
