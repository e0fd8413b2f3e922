//! A marked block of names in a hosts file (`kubelan forward` puts each forwarded Service's
//! names on its own loopback address).
//!
//! The block is appended between `# BEGIN kubelan <marker>` and `# END kubelan <marker>`
//! lines and recorded in the caller's [`HostGuard`] first. Undo removes exactly that block
//! (and the newline added before it when the file did not end with one), so a file nobody
//! else touched is byte-identical afterwards; lines others added around it stay.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::fsutil::{self, FILES_LOCK, FileState, StateLock};
use crate::journal::record::{Change, HostGuard, JournalError, Outcome};

/// The system hosts file.
pub const DEFAULT_HOSTS: &str = "/etc/hosts";

/// One line of the block: an address and its names (also `forward`'s JSON `addresses`
/// event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostsEntry {
    /// The address.
    pub ip: IpAddr,
    /// Its names (`web.default.svc.cluster.local web.default`).
    pub names: Vec<String>,
}

/// Errors editing a hosts file.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// The change could not be journaled, so nothing was changed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The marker cannot be used on a comment line.
    #[error("invalid hosts block marker {0:?}: it must be 1 to 200 characters on one line")]
    InvalidMarker(String),
    /// A host name cannot be written to a hosts file.
    #[error("invalid host name {0:?}: names must be non-empty and contain no spaces or '#'")]
    InvalidName(String),
    /// The hosts file does not exist.
    #[error("{path} does not exist")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A block with this marker is already in the file.
    #[error(
        "{path} already has a kubelan block {marker:?} (another kubelan is running, or a crashed one left it: run `kubelan reset`)"
    )]
    MarkerInUse {
        /// The file.
        path: PathBuf,
        /// The marker.
        marker: String,
    },
    /// No block with this marker is in the file.
    #[error("{path} has no kubelan block {marker:?} (was it removed by hand?)")]
    NotFound {
        /// The file.
        path: PathBuf,
        /// The marker.
        marker: String,
    },
    /// The file could not be read or written.
    #[error("cannot {what} {path}: {source}")]
    File {
        /// What we were doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn begin_line(marker: &str) -> String {
    format!("# BEGIN kubelan {marker}")
}

fn end_line(marker: &str) -> String {
    format!("# END kubelan {marker}")
}

pub(crate) fn check(marker: &str, entries: &[HostsEntry]) -> Result<(), HostsError> {
    if marker.is_empty() || marker.len() > 200 || marker.contains(['\n', '\r']) {
        return Err(HostsError::InvalidMarker(marker.into()));
    }
    for name in entries.iter().flat_map(|e| &e.names) {
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '#') {
            return Err(HostsError::InvalidName(name.clone()));
        }
    }
    Ok(())
}

/// The block's text, ending with a newline.
pub fn render_block(marker: &str, entries: &[HostsEntry]) -> String {
    let mut out = begin_line(marker);
    out.push_str("\n# managed by kubelan; `kubelan reset` removes this block\n");
    for e in entries.iter().filter(|e| !e.names.is_empty()) {
        out.push_str(&format!("{}\t{}\n", e.ip, e.names.join(" ")));
    }
    out.push_str(&end_line(marker));
    out.push('\n');
    out
}

/// Appends `block` to `original`; says whether a newline had to be added first.
pub(crate) fn insert(original: &[u8], block: &str) -> (Vec<u8>, bool) {
    let separator = !original.is_empty() && !original.ends_with(b"\n");
    let mut out = original.to_vec();
    if separator {
        out.push(b'\n');
    }
    out.extend_from_slice(block.as_bytes());
    (out, separator)
}

/// The byte range of whole lines `begin..=end` of the block, when both lines are present.
/// The block starts at the last begin line before its end line: a stray begin line
/// earlier in the file (whose end line was deleted) is not part of our block.
pub(crate) fn find(text: &[u8], marker: &str) -> Option<(usize, usize)> {
    let begin = begin_line(marker);
    let end = end_line(marker);
    let mut start = None;
    let mut pos = 0;
    while pos < text.len() {
        let line_end = text[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| pos + i);
        let next = (line_end + 1).min(text.len());
        let line = &text[pos..line_end];
        if line == begin.as_bytes() {
            start = Some(pos);
        } else if let Some(s) = start
            && line == end.as_bytes()
        {
            return Some((s, next));
        }
        pos = line_end + 1;
    }
    None
}

/// `text` without the block; `None` when the block is not there.
pub(crate) fn remove(text: &[u8], marker: &str, separator_added: bool) -> Option<Vec<u8>> {
    let (mut start, end) = find(text, marker)?;
    // The newline we added goes only if nothing follows the block: otherwise it now ends
    // the original's last line, before someone else's lines.
    if separator_added && end == text.len() && start > 0 && text[start - 1] == b'\n' {
        start -= 1;
    }
    let mut out = text[..start].to_vec();
    out.extend_from_slice(&text[end..]);
    Some(out)
}

/// `text` with the block replaced by `block`; `None` when the block is not there.
pub(crate) fn replace(text: &[u8], marker: &str, block: &str) -> Option<Vec<u8>> {
    let (start, end) = find(text, marker)?;
    let mut out = text[..start].to_vec();
    out.extend_from_slice(block.as_bytes());
    out.extend_from_slice(&text[end..]);
    Some(out)
}

fn file_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> HostsError + 'a {
    move |source| HostsError::File {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a hosts file through symlinks: the real path and its state.
fn read_real(path: &Path) -> Result<(PathBuf, FileState), HostsError> {
    let real = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HostsError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(file_err("resolve", path)(e)),
    };
    let state = FileState::read(&real).map_err(file_err("read", &real))?;
    Ok((real, state))
}

/// A hosts file that exists: its bytes and what to keep when rewriting it.
struct Existing {
    bytes: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Existing {
    /// Replaces the file at `real` with `new`, keeping its mode and owner.
    fn replace_with(&self, real: &Path, new: &[u8]) -> std::io::Result<()> {
        fsutil::write_atomic(real, new, self.mode, Some((self.uid, self.gid)))
    }
}

/// Checks a block request, takes the state directory's file lock (held while the lock
/// value lives) and reads the hosts file at `path` (following symlinks), which must exist.
fn open_locked(
    guard: &HostGuard,
    path: &Path,
    marker: &str,
    entries: &[HostsEntry],
) -> Result<(StateLock, PathBuf, Existing), HostsError> {
    check(marker, entries)?;
    let state = guard.state_dir().path();
    let lock = StateLock::take(state, FILES_LOCK).map_err(file_err("lock", state))?;
    let (real, state) = read_real(path)?;
    match state {
        FileState::File {
            bytes,
            mode,
            uid,
            gid,
        } => Ok((
            lock,
            real,
            Existing {
                bytes,
                mode,
                uid,
                gid,
            },
        )),
        _ => Err(HostsError::Missing { path: real }),
    }
}

/// Adds a block named `marker` with `entries` to the hosts file at `path`, recording it in
/// `guard` first. `marker` must be unique among running kubelans (include the PID or the
/// command's name).
///
/// # Errors
/// When the marker or a name is invalid, the file is missing or already has the marker, or
/// the journal or the file cannot be written.
pub fn add_block(
    guard: &mut HostGuard,
    path: &Path,
    marker: &str,
    entries: &[HostsEntry],
) -> Result<(), HostsError> {
    let (_lock, real, file) = open_locked(guard, path, marker, entries)?;
    if find(&file.bytes, marker).is_some() {
        return Err(HostsError::MarkerInUse {
            path: real,
            marker: marker.into(),
        });
    }
    let (new, separator_added) = insert(&file.bytes, &render_block(marker, entries));
    let change = Change::HostsBlock {
        path: real.clone(),
        marker: marker.into(),
        separator_added,
    };
    guard.record(change.clone())?;
    if let Err(e) = file.replace_with(&real, &new) {
        guard.unrecord(&change);
        return Err(file_err("write", &real)(e));
    }
    Ok(())
}

/// Replaces the entries of the existing block `marker` (Services came or went). The journal
/// entry made by [`add_block`] still describes how to undo it.
///
/// # Errors
/// When the block is not in the file or the file cannot be written.
pub fn update_block(
    guard: &HostGuard,
    path: &Path,
    marker: &str,
    entries: &[HostsEntry],
) -> Result<(), HostsError> {
    let (_lock, real, file) = open_locked(guard, path, marker, entries)?;
    let Some(new) = replace(&file.bytes, marker, &render_block(marker, entries)) else {
        return Err(HostsError::NotFound {
            path: real,
            marker: marker.into(),
        });
    };
    file.replace_with(&real, &new)
        .map_err(file_err("write", &real))
}

/// Undoes [`Change::HostsBlock`].
pub(crate) fn undo_block(
    path: &Path,
    marker: &str,
    separator_added: bool,
    state_dir: &Path,
    change: &Change,
) -> Outcome {
    let failed = |reason: String| Outcome::Failed {
        change: change.clone(),
        reason,
    };
    let _lock = StateLock::take(state_dir, FILES_LOCK).ok();
    let (bytes, mode, uid, gid) = match FileState::read(path) {
        Ok(FileState::File {
            bytes,
            mode,
            uid,
            gid,
        }) => (bytes, mode, uid, gid),
        Ok(_) => {
            return Outcome::AlreadyGone(format!(
                "{} is gone, and with it kubelan's block {marker:?}",
                path.display()
            ));
        }
        Err(e) => return failed(format!("cannot read {}: {e}", path.display())),
    };
    let Some(new) = remove(&bytes, marker, separator_added) else {
        return Outcome::AlreadyGone(format!(
            "kubelan's block {marker:?} in {} was already gone",
            path.display()
        ));
    };
    match fsutil::write_atomic(path, &new, mode, Some((uid, gid))) {
        Ok(()) => Outcome::Undone(format!(
            "removed kubelan's block {marker:?} from {}",
            path.display()
        )),
        Err(e) => failed(format!("cannot write {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kubelan forward`'s JSON `addresses` event lists the entries in this shape.
    #[test]
    fn an_entry_serialises_as_ip_and_names() {
        let e = HostsEntry {
            ip: "127.1.0.1".parse().unwrap(),
            names: vec!["web.default".into()],
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"ip":"127.1.0.1","names":["web.default"]}"#
        );
    }

    fn entries() -> Vec<HostsEntry> {
        vec![
            HostsEntry {
                ip: "127.1.0.1".parse().unwrap(),
                names: vec!["web.default.svc.cluster.local".into(), "web.default".into()],
            },
            HostsEntry {
                ip: "127.1.0.2".parse().unwrap(),
                names: vec!["db.default".into()],
            },
        ]
    }

    fn round_trip(original: &[u8]) {
        let block = render_block("forward-1", &entries());
        let (with, sep) = insert(original, &block);
        assert!(find(&with, "forward-1").is_some());
        assert_eq!(
            remove(&with, "forward-1", sep).unwrap(),
            original,
            "{:?}",
            String::from_utf8_lossy(original)
        );
    }

    #[test]
    fn removal_is_byte_identical() {
        round_trip(b"127.0.0.1 localhost\n::1 localhost\n");
        round_trip(b"127.0.0.1 localhost");
        round_trip(b"");
        round_trip(b"\n\n");
        round_trip(b"127.0.0.1 localhost\r\n# BEGIN kubelan other\n# END kubelan other\n");
        round_trip(b"\xff\xfe not utf-8\n");
    }

    #[test]
    fn others_lines_after_the_block_stay() {
        let original = b"127.0.0.1 localhost";
        let (mut with, sep) = insert(original, &render_block("a", &entries()));
        assert!(sep);
        with.extend_from_slice(b"10.0.0.1 added-later\n");
        assert_eq!(
            remove(&with, "a", sep).unwrap(),
            b"127.0.0.1 localhost\n10.0.0.1 added-later\n"
        );
    }

    #[test]
    fn only_the_exact_marker_matches() {
        let (with, _) = insert(b"", &render_block("a-10", &entries()));
        assert!(find(&with, "a-1").is_none());
        assert!(remove(&with, "a-1", false).is_none());
        // A block whose end line was deleted is left alone.
        let damaged = b"# BEGIN kubelan x\n1.2.3.4 y\n";
        assert!(remove(damaged, "x", false).is_none());
    }

    /// Found by the `hosts_block` fuzz target: a begin line without its end line (the end
    /// was deleted by hand) used to be taken as the start of the block added after it, so
    /// undo removed the stray line and everything up to our block.
    #[test]
    fn a_stray_begin_line_is_not_part_of_the_block() {
        round_trip(b"127.0.0.1 localhost\n# BEGIN kubelan forward-1\n10.0.0.1 kept\n");
        round_trip(b"# BEGIN kubelan forward-1");
        round_trip(b"# BEGIN kubelan forward-1\n# BEGIN kubelan forward-1\n");
        let stray = b"# BEGIN kubelan forward-1\n1.2.3.4 mine\n";
        let (with, sep) = insert(stray, &render_block("forward-1", &entries()));
        let (start, _) = find(&with, "forward-1").unwrap();
        assert_eq!(start, stray.len());
        assert_eq!(remove(&with, "forward-1", sep).unwrap(), stray);
    }

    #[test]
    fn block_text() {
        assert_eq!(
            render_block("f", &entries()),
            "# BEGIN kubelan f\n# managed by kubelan; `kubelan reset` removes this block\n\
             127.1.0.1\tweb.default.svc.cluster.local web.default\n127.1.0.2\tdb.default\n\
             # END kubelan f\n"
        );
    }

    #[test]
    fn bad_markers_and_names_are_refused() {
        assert!(matches!(
            check("a\nb", &[]),
            Err(HostsError::InvalidMarker(_))
        ));
        let bad = [HostsEntry {
            ip: "127.0.0.1".parse().unwrap(),
            names: vec!["a b".into()],
        }];
        assert!(matches!(check("m", &bad), Err(HostsError::InvalidName(_))));
    }
}
