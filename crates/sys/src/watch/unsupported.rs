//! Systems other than Linux: no crash watcher; `kubelan reset` and the next session's start
//! replay journals as before.

use std::os::fd::{OwnedFd, RawFd};

use super::WatchError;
use crate::journal::HostGuard;

/// A running crash watcher (never, here).
#[derive(Debug)]
pub struct Watcher {
    _never: (),
}

impl Watcher {
    /// The watcher's PID.
    pub fn pid(&self) -> Option<u32> {
        None
    }

    /// Whether it waits on a pidfd.
    pub fn uses_pidfd(&self) -> bool {
        false
    }
}

/// Not supported here.
///
/// # Errors
/// Always [`WatchError::Unsupported`].
pub fn spawn(_cmd: tokio::process::Command, _guard: &HostGuard) -> Result<Watcher, WatchError> {
    Err(WatchError::Unsupported)
}

/// Not supported here.
///
/// # Errors
/// Always [`WatchError::Unsupported`].
pub fn inherited_pidfd(_fd: RawFd) -> Result<OwnedFd, WatchError> {
    Err(WatchError::Unsupported)
}

/// The exit of a process (never awaited here).
#[derive(Debug)]
pub struct ProcessExit {
    _never: (),
}

impl ProcessExit {
    /// Not supported here.
    ///
    /// # Errors
    /// Always.
    pub fn new(_pidfd: OwnedFd) -> std::io::Result<Self> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// Never returns.
    pub async fn wait(&mut self) {
        std::future::pending::<()>().await
    }
}
