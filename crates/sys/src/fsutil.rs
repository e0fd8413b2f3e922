//! File helpers shared by the journal and the file-editing changes: atomic replacement that
//! keeps mode and owner, snapshots that tell a symlink from a file, content hashes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha1::{Digest, Sha1};

/// What a path held at one moment, without following a final symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileState {
    /// Nothing there.
    Missing,
    /// A symbolic link and its (unresolved) target.
    Symlink(PathBuf),
    /// A regular file (or anything else that reads as bytes).
    File {
        /// Contents.
        bytes: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner user id.
        uid: u32,
        /// Owner group id.
        gid: u32,
    },
}

impl FileState {
    /// Reads the state of `path`.
    pub(crate) fn read(path: &Path) -> io::Result<Self> {
        let md = match std::fs::symlink_metadata(path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::Missing),
            Err(e) => return Err(e),
        };
        if md.file_type().is_symlink() {
            return Ok(Self::Symlink(std::fs::read_link(path)?));
        }
        Ok(Self::File {
            bytes: std::fs::read(path)?,
            mode: md.permissions().mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        })
    }

    /// The hash of the contents of a regular file (`None` for a symlink or nothing).
    pub(crate) fn content_hash(&self) -> Option<String> {
        match self {
            Self::File { bytes, .. } => Some(content_hash(bytes)),
            _ => None,
        }
    }
}

/// A stable, printable hash of file contents ("sha1:<hex>"). It only tells whether a file is
/// still the one we wrote; it is not a security boundary.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha1::digest(bytes);
    let mut s = String::with_capacity(5 + 40);
    s.push_str("sha1:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn temp_sibling(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}.kubelan-{}-{n}.tmp", std::process::id()))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a directory entry change (a rename or create) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory, written,
/// flushed, given `mode` and `owner`, then renamed over `path` (which replaces a symlink
/// itself, never its target). When `path` is a mount point (a bind-mounted `/etc/hosts` or
/// `/etc/resolv.conf` in a container), rename fails with `EBUSY`; the file is then rewritten
/// in place.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // The umask may have removed bits from `mode`.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => sync_dir(parent_dir(path)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) {
                let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
                f.write_all(bytes)?;
                f.sync_all()
            } else {
                Err(e)
            }
        }
    }
}

/// Makes `path` a symlink to `target` atomically (a temporary link renamed over `path`).
pub(crate) fn symlink_atomic(target: &Path, path: &Path) -> io::Result<()> {
    let tmp = temp_sibling(path);
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_dir(path))
}

/// Puts `state` at `path` (a file with its mode and owner, or a symlink).
pub(crate) fn put_state(path: &Path, state: &FileState) -> io::Result<()> {
    match state {
        FileState::Missing => match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        FileState::Symlink(target) => symlink_atomic(target, path),
        FileState::File {
            bytes,
            mode,
            uid,
            gid,
        } => write_atomic(path, bytes, *mode, Some((*uid, *gid))),
    }
}

/// Saves `state` as a backup file at `backup`: the same bytes, mode and owner for a file, a
/// symlink with the same target for a symlink. The backup is usable as is (`cp -P` puts the
/// original back).
pub(crate) fn save_backup(backup: &Path, state: &FileState) -> io::Result<()> {
    match state {
        FileState::Missing => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "nothing to back up",
        )),
        FileState::Symlink(target) => {
            let _ = std::fs::remove_file(backup);
            std::os::unix::fs::symlink(target, backup)?;
            sync_dir(parent_dir(backup))
        }
        FileState::File {
            bytes,
            mode,
            uid,
            gid,
        } => write_atomic(backup, bytes, *mode, Some((*uid, *gid))),
    }
}

/// Reads a backup written by [`save_backup`].
pub(crate) fn read_backup(backup: &Path) -> io::Result<FileState> {
    match FileState::read(backup)? {
        FileState::Missing => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("backup {} is missing", backup.display()),
        )),
        state => Ok(state),
    }
}

/// The lock serialising edits of shared files (resolv.conf, hosts) by kubelan processes that
/// use one state directory.
pub(crate) const FILES_LOCK: &str = "files.lock";

/// Holds an exclusive advisory lock on a file in the state directory for the duration of a
/// read-modify-write of a shared file, so two kubelan processes never interleave edits.
pub(crate) struct StateLock {
    _lock: nix::fcntl::Flock<File>,
}

impl StateLock {
    /// Takes the lock `name` in `dir` (blocking).
    pub(crate) fn take(dir: &Path, name: &str) -> io::Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(name))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io::Error::from(e))?;
        Ok(Self { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        assert_eq!(
            content_hash(b"abc"),
            "sha1:a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
