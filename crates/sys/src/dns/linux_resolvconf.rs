//! The resolv.conf backend: the file is backed up (exact bytes, mode and owner, or the
//! symlink itself), then atomically replaced by one that names kubelan's DNS server, keeps the
//! original search domains and options, and says who manages it. kubelan's server forwards
//! every name outside the cluster domain to the original nameservers, so nothing is hijacked.

use std::net::IpAddr;
use std::path::Path;

use super::{DnsError, DnsPlan, ResolvConf};
use crate::fsutil::{self, FILES_LOCK, FileState, StateLock};
use crate::journal::record::{Change, HostGuard, Outcome};

/// The first line of every file we write; also how we recognise one left behind.
const HEADER_PREFIX: &str = "# managed by kubelan";

/// The resolv.conf kubelan writes: a header naming the owner, kubelan's servers, the plan's
/// search domains followed by the original ones, and the original `options` and `sortlist`
/// lines.
pub fn render(original: &ResolvConf, plan: &DnsPlan, purpose: &str, pid: u32) -> String {
    let mut out = format!(
        "{HEADER_PREFIX} {purpose} (pid {pid}) \u{2014} `kubelan reset` restores the original\n"
    );
    for ip in &plan.servers {
        out.push_str(&format!("nameserver {ip}\n"));
    }
    let mut search: Vec<&str> = Vec::new();
    for d in plan.search.iter().chain(&original.search) {
        if !search.contains(&d.as_str()) {
            search.push(d);
        }
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for line in original.sortlist.iter().chain(&original.options) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn file_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DnsError + 'a {
    move |source| DnsError::File {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` for `plan`; returns the original nameservers (without ours).
pub(super) fn apply(
    guard: &mut HostGuard,
    path: &Path,
    plan: &DnsPlan,
) -> Result<Vec<IpAddr>, DnsError> {
    let _lock = StateLock::take(guard.state_dir().path(), FILES_LOCK)
        .map_err(file_err("lock", guard.state_dir().path()))?;
    let original = FileState::read(path).map_err(file_err("read", path))?;
    let text = match &original {
        FileState::Missing => {
            return Err(DnsError::Missing {
                path: path.to_path_buf(),
            });
        }
        FileState::File { bytes, .. } => bytes.clone(),
        // A dangling symlink reads as empty: no upstreams, no search domains.
        FileState::Symlink(_) => std::fs::read(path).unwrap_or_default(),
    };
    if text.starts_with(HEADER_PREFIX.as_bytes()) {
        return Err(DnsError::AlreadyManaged {
            path: path.to_path_buf(),
        });
    }
    let parsed = ResolvConf::parse_bytes(&text);
    let upstreams: Vec<IpAddr> = parsed
        .nameservers
        .iter()
        .copied()
        .filter(|ip| !plan.servers.contains(ip))
        .collect();
    let content = render(&parsed, plan, guard.purpose(), std::process::id());

    let backup = guard
        .state_dir()
        .backup_path(guard.journal_path(), "resolv.conf");
    fsutil::save_backup(&backup, &original).map_err(file_err("back up", path))?;
    let change = Change::ResolvConf {
        path: path.to_path_buf(),
        backup: backup.clone(),
        written_hash: fsutil::content_hash(content.as_bytes()),
    };
    if let Err(e) = guard.record(change.clone()) {
        let _ = std::fs::remove_file(&backup);
        return Err(e.into());
    }
    let (mode, owner) = match &original {
        FileState::File { mode, uid, gid, .. } => (*mode, Some((*uid, *gid))),
        _ => (0o644, None),
    };
    if let Err(e) = fsutil::write_atomic(path, content.as_bytes(), mode, owner) {
        guard.unrecord(&change);
        let _ = std::fs::remove_file(&backup);
        return Err(file_err("write", path)(e));
    }
    Ok(upstreams)
}

fn same_content(a: &FileState, b: &FileState) -> bool {
    match (a, b) {
        (FileState::File { bytes: x, .. }, FileState::File { bytes: y, .. }) => x == y,
        (FileState::Symlink(x), FileState::Symlink(y)) => x == y,
        (FileState::Missing, FileState::Missing) => true,
        _ => false,
    }
}

/// Puts the original back unless someone else rewrote the file since we wrote it.
pub(super) fn undo(path: &Path, backup: &Path, written_hash: &str, change: &Change) -> Outcome {
    let failed = |reason: String| Outcome::Failed {
        change: change.clone(),
        reason,
    };
    let _lock = backup
        .parent()
        .and_then(|dir| StateLock::take(dir, FILES_LOCK).ok());
    let current = match FileState::read(path) {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot read {}: {e}", path.display())),
    };
    let ours = current.content_hash().as_deref() == Some(written_hash);
    let original = match fsutil::read_backup(backup) {
        Ok(o) => o,
        Err(e) if ours => {
            return failed(format!(
                "cannot read the backup {}: {e}; {} still holds kubelan's version",
                backup.display(),
                path.display()
            ));
        }
        Err(_) => {
            return Outcome::AlreadyGone(format!(
                "{} no longer holds kubelan's version and there is no backup; nothing to restore",
                path.display()
            ));
        }
    };
    if same_content(&current, &original) {
        let _ = std::fs::remove_file(backup);
        return Outcome::AlreadyGone(format!("{} already holds the original", path.display()));
    }
    if ours || current == FileState::Missing {
        if let Err(e) = fsutil::put_state(path, &original) {
            return failed(format!(
                "cannot restore {} from {}: {e}",
                path.display(),
                backup.display()
            ));
        }
        let _ = std::fs::remove_file(backup);
        return Outcome::Undone(format!("restored {} from backup", path.display()));
    }
    Outcome::Kept(format!(
        "kept {}: it was rewritten by someone else after kubelan changed it; the original is saved at {}",
        path.display(),
        backup.display()
    ))
}
