//! Linux side of the crash watcher: a pidfd of the owner, inherited by the watcher; the
//! watcher's own session; waiting for the owner's exit on the pidfd.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;
use nix::sys::signal::{SigHandler, Signal};
use tokio::io::unix::AsyncFd;

use super::{Target, WatchError};
use crate::PreExec;
use crate::journal::HostGuard;

/// A pidfd of the calling process (close-on-exec), or why there is none.
fn pidfd_of_self() -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(std::process::id())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A running crash watcher.
#[derive(Debug)]
pub struct Watcher {
    child: tokio::process::Child,
    pidfd: bool,
}

impl Watcher {
    /// The watcher's PID (`None` once it was reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether it waits on a pidfd (else it polls).
    pub fn uses_pidfd(&self) -> bool {
        self.pidfd
    }
}

/// Starts a crash watcher for `guard`'s journal. `cmd` is the watcher program with its
/// first arguments (kubelan: `/proc/self/exe crash-watcher`); this appends
/// `--journal PATH --owner-pid PID --owner-start TICKS` and, when a pidfd of this process
/// can be opened, `--pidfd FD` (a descriptor the watcher inherits).
///
/// The watcher starts in a new session (no controlling terminal, its own process group),
/// with SIGINT and SIGHUP ignored, stdin and stdout on `/dev/null` and stderr inherited
/// (it reports what it restored there). Every inherited descriptor other than the pidfd
/// and stdio is made close-on-exec first (Linux 5.11+; on older kernels kubelan's own
/// descriptors are close-on-exec already), so the watcher never keeps a TUN, a listening
/// port or a carrier connection of its owner alive.
///
/// # Errors
/// [`WatchError::Spawn`] when the program cannot be started.
pub fn spawn(mut cmd: tokio::process::Command, guard: &HostGuard) -> Result<Watcher, WatchError> {
    let target = Target {
        journal: guard.journal_path().to_path_buf(),
        owner: guard.owner(),
    };
    let pidfd = match pidfd_of_self() {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::debug!(error = %e, "no pidfd (kernel before 5.3?); the watcher polls");
            None
        }
    };
    let keep = pidfd.as_ref().map(AsRawFd::as_raw_fd);
    let mut args: Vec<OsString> = vec![
        "--journal".into(),
        target.journal.clone().into_os_string(),
        "--owner-pid".into(),
        target.owner.pid.to_string().into(),
        "--owner-start".into(),
        target.owner.start_time.to_string().into(),
    ];
    if let Some(fd) = keep {
        args.push("--pidfd".into());
        args.push(fd.to_string().into());
    }
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(false);
    let hook = move || -> io::Result<()> {
        let cloexec_from = |first: u32, last: u32| {
            if first <= last {
                // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our
                // descriptors; errors (old kernels) are ignored on purpose.
                unsafe {
                    libc::syscall(
                        libc::SYS_close_range,
                        first,
                        last,
                        libc::CLOSE_RANGE_CLOEXEC,
                    );
                }
            }
        };
        match keep.and_then(|fd| u32::try_from(fd).ok()) {
            Some(fd) => {
                // SAFETY: F_SETFD on a descriptor we own, in the child only.
                if unsafe { libc::fcntl(fd as RawFd, libc::F_SETFD, 0) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                cloexec_from(3, fd.saturating_sub(1));
                cloexec_from(fd.saturating_add(1), u32::MAX);
            }
            None => cloexec_from(3, u32::MAX),
        }
        nix::unistd::setsid().map_err(io::Error::from)?;
        for sig in [Signal::SIGINT, Signal::SIGHUP] {
            // SAFETY: setting a signal to "ignore" installs no handler code.
            unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) }
                .map_err(io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the hook only issues fcntl, close_range, setsid and sigaction on values
    // prepared before fork; it does not allocate.
    unsafe { cmd.install_pre_exec(hook) };
    let child = cmd.spawn().map_err(WatchError::Spawn)?;
    // Our copy of the pidfd is not needed: the watcher has its own.
    drop(pidfd);
    Ok(Watcher {
        child,
        pidfd: keep.is_some(),
    })
}

/// Takes over the pidfd a watcher inherited as descriptor `fd` (the `--pidfd` argument).
///
/// # Errors
/// [`WatchError::NotAPidfd`] when `fd` is not an open pidfd (a wrong argument must not make
/// the watcher adopt someone else's descriptor).
pub fn inherited_pidfd(fd: RawFd) -> Result<OwnedFd, WatchError> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    if fd < 3 || link != "anon_inode:[pidfd]" {
        return Err(WatchError::NotAPidfd(fd));
    }
    // SAFETY: the descriptor is open, is a pidfd, and nothing else in this process owns it
    // (it was inherited for this purpose).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The exit of a process, awaited on its pidfd.
#[derive(Debug)]
pub struct ProcessExit {
    fd: AsyncFd<OwnedFd>,
}

impl ProcessExit {
    /// Waits on `pidfd` from now on (needs a tokio runtime).
    ///
    /// # Errors
    /// When the descriptor cannot be registered with the runtime.
    pub fn new(pidfd: OwnedFd) -> io::Result<Self> {
        // SAFETY: an `OwnedFd` is open and keeps returning the same descriptor until it is
        // dropped, which only happens with the `AsyncFd`.
        let fd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Returns once the process has exited (the pidfd turns readable and stays so).
    pub async fn wait(&mut self) {
        let _ = self.fd.readable().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_pidfd_is_not_readable_while_we_run_and_a_childs_is_after_it_exits() {
        let Ok(own) = pidfd_of_self() else {
            eprintln!("SKIPPED: no pidfd_open here");
            return;
        };
        let mut own = ProcessExit::new(own).unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), own.wait()).await;
        assert!(waited.is_err(), "our own pidfd says we exited");

        let mut child = std::process::Command::new("sleep")
            .arg("0.1")
            .spawn()
            .unwrap();
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: as in pidfd_of_self.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor from the kernel.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        assert!(inherited_pidfd(fd.as_raw_fd()).is_ok_and(|f| {
            std::mem::forget(f); // still owned by `fd`
            true
        }));
        let mut exit = ProcessExit::new(fd).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), exit.wait())
            .await
            .expect("the child's exit was seen");
        child.wait().unwrap();
    }

    #[test]
    fn a_descriptor_that_is_not_a_pidfd_is_refused() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(matches!(
            inherited_pidfd(f.as_raw_fd()),
            Err(WatchError::NotAPidfd(_))
        ));
        assert!(inherited_pidfd(0).is_err());
        assert!(inherited_pidfd(987_654).is_err());
    }
}
