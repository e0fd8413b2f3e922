//! Unix socket files (the control socket of `kubelan connect`), bound through the host guard
//! so that no socket file outlives its process: a clean exit removes it with the rest of the
//! guard's changes, and after a crash the crash watcher or `kubelan reset` does.
//!
//! The socket is recorded before it is bound and its inode added once it exists; undo
//! removes the file only while it is still a socket with that inode, so the socket of a
//! later kubelan at the same path is never taken away.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::journal::record::{Change, HostGuard, JournalError, Outcome};

/// Errors binding a socket through the guard.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The journal entry could not be written, so nothing was bound.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Binding failed (the journal entry was withdrawn).
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Binds a listening Unix socket at `path`, recorded in `guard` first. The path must be free
/// (remove a stale socket before).
///
/// # Errors
/// [`SocketError::Journal`] when the journal cannot be written (nothing was bound),
/// [`SocketError::Bind`] when the socket cannot be bound.
pub fn bind(guard: &mut HostGuard, path: &Path) -> Result<UnixListener, SocketError> {
    let recorded = Change::UnixSocket {
        path: path.to_path_buf(),
        inode: None,
        ctime_ns: None,
    };
    guard.record(recorded.clone())?;
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(source) => {
            guard.unrecord(&recorded);
            return Err(SocketError::Bind {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if let Ok(md) = std::fs::symlink_metadata(path) {
        guard.amend(
            &recorded,
            Change::UnixSocket {
                path: path.to_path_buf(),
                inode: Some(md.ino()),
                ctime_ns: Some(ctime_ns(&md)),
            },
        );
    }
    Ok(listener)
}

fn ctime_ns(md: &std::fs::Metadata) -> i64 {
    md.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.ctime_nsec())
}

/// Undoes [`Change::UnixSocket`].
pub(crate) fn undo(
    path: &Path,
    inode: Option<u64>,
    ctime: Option<i64>,
    change: &Change,
) -> Outcome {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Outcome::AlreadyGone(format!("socket {} was already gone", path.display()));
        }
        Err(e) => {
            return Outcome::Failed {
                change: change.clone(),
                reason: e.to_string(),
            };
        }
    };
    let other = !md.file_type().is_socket()
        || inode.is_some_and(|i| i != md.ino())
        || ctime.is_some_and(|t| t != ctime_ns(&md));
    if other {
        return Outcome::AlreadyGone(format!(
            "socket {} was already gone (the path now holds something else, left alone)",
            path.display()
        ));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Outcome::Undone(format!("removed socket {}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Outcome::AlreadyGone(format!("socket {} was already gone", path.display()))
        }
        Err(e) => Outcome::Failed {
            change: change.clone(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::StateDir;
    use crate::testutil::TempDir;

    #[tokio::test]
    async fn bound_socket_is_journalled_and_removed_on_restore() {
        let tmp = TempDir::new("sock");
        let state = StateDir::new(tmp.path().join("state"));
        let mut guard = HostGuard::begin(&state, "connect").unwrap();
        let path = tmp.path().join("connect.sock");
        let listener = bind(&mut guard, &path).unwrap();
        assert!(matches!(
            guard.changes(),
            [Change::UnixSocket { inode: Some(_), .. }]
        ));
        drop(listener);
        let report = guard.restore().await;
        assert_eq!(
            report.to_string(),
            format!("removed socket {}", path.display())
        );
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_failed_bind_is_withdrawn() {
        let tmp = TempDir::new("sockfail");
        let state = StateDir::new(tmp.path().join("state"));
        let mut guard = HostGuard::begin(&state, "connect").unwrap();
        let path = tmp.path().join("taken");
        std::fs::write(&path, b"not a socket").unwrap();
        let err = bind(&mut guard, &path).unwrap_err();
        assert!(err.to_string().contains("cannot listen on"), "{err}");
        assert!(guard.changes().is_empty());
        guard.restore().await;
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }

    #[tokio::test]
    async fn another_socket_at_the_same_path_is_left_alone() {
        let tmp = TempDir::new("sockother");
        let state = StateDir::new(tmp.path().join("state"));
        let mut guard = HostGuard::begin(&state, "connect").unwrap();
        let path = tmp.path().join("connect.sock");
        drop(bind(&mut guard, &path).unwrap());
        let recorded = guard.changes()[0].clone();
        let Change::UnixSocket {
            inode, ctime_ns, ..
        } = recorded.clone()
        else {
            panic!("{recorded:?}")
        };
        // The owner crashed; a later kubelan replaced the stale socket with its own (the
        // file system may hand it the same inode number).
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let _theirs = UnixListener::bind(&path).unwrap();
        let outcome = undo(&path, inode, ctime_ns, &recorded);
        assert!(matches!(outcome, Outcome::AlreadyGone(_)), "{outcome}");
        assert!(outcome.to_string().contains("left alone"), "{outcome}");
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        let report = guard.restore().await;
        assert!(report.is_clean(), "{report}");
        assert!(path.exists(), "restore took the other socket");
    }
}
