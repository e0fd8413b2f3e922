//! A systemd unit as a journalled host change (`kubelan gateway --persist`): written and
//! enabled through a [`HostGuard`] whose journal is kept in the *persistent* state
//! directory (the unit outlives the process and reboots, so its record must too), and
//! undone by `kubelan reset` like every other change.
//!
//! The session's own leftover cleanup only replays the runtime state directory, so a
//! gateway started by the unit never removes the unit that started it.

use std::path::{Path, PathBuf};

use super::record::{Change, HostGuard, JournalError, Outcome, STATE_DIR_ENV, StateDir};

/// Where journals of changes that outlive reboots live when [`PERSIST_DIR_ENV`] is unset
/// (and `KUBELAN_STATE_DIR` is unset too).
pub const DEFAULT_PERSIST_DIR: &str = "/var/lib/kubelan";

/// Environment variable that overrides [`DEFAULT_PERSIST_DIR`].
pub const PERSIST_DIR_ENV: &str = "KUBELAN_PERSIST_DIR";

/// The persistent state directory: `$KUBELAN_PERSIST_DIR`, else `persist/` inside
/// `$KUBELAN_STATE_DIR` when that is set (a test's or a user's own state), else
/// `/var/lib/kubelan`.
pub fn persistent_dir() -> StateDir {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var(PERSIST_DIR_ENV) {
        return StateDir::new(p);
    }
    match var(STATE_DIR_ENV) {
        Some(p) => StateDir::new(PathBuf::from(p).join("persist")),
        None => StateDir::new(DEFAULT_PERSIST_DIR),
    }
}

/// Why a unit could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// The journal could not be written (nothing was changed).
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The unit file could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The unit file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `systemctl` could not be run.
    #[error(
        "cannot run systemctl: --persist needs systemd (run the gateway in the foreground, or from your own service manager)"
    )]
    Spawn(#[source] std::io::Error),
    /// `systemctl` failed.
    #[error("systemctl {args}: {stderr}")]
    Systemctl {
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
}

async fn systemctl(program: &Path, args: &[&str]) -> Result<(), UnitError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(UnitError::Spawn)?;
    if !out.status.success() {
        return Err(UnitError::Systemctl {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn unit_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Records the unit in `guard`'s journal, writes `content` (whose first line is its
/// marker) to `path`, reloads systemd and enables and starts the unit. `systemctl`: the
/// program, when not the one on `PATH`.
///
/// # Errors
/// [`UnitError`]; the journal then still names the unit, so the guard's restore (or
/// `kubelan reset`) removes what was written.
pub async fn install(
    guard: &mut HostGuard,
    path: &Path,
    content: &str,
    systemctl_program: Option<&Path>,
) -> Result<(), UnitError> {
    let marker = content.lines().next().unwrap_or_default().to_string();
    guard.record(Change::SystemdUnit {
        path: path.to_path_buf(),
        marker,
        systemctl: systemctl_program.map(Path::to_path_buf),
    })?;
    std::fs::write(path, content).map_err(|source| UnitError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let program = systemctl_program.unwrap_or(Path::new("systemctl"));
    systemctl(program, &["daemon-reload"]).await?;
    systemctl(program, &["enable", "--now", &unit_name(path)]).await?;
    Ok(())
}

/// `program` when it can run: an explicit path that exists, or `systemctl` on `PATH`.
fn available(program: Option<&Path>) -> Option<PathBuf> {
    match program {
        Some(p) => p.is_file().then(|| p.to_path_buf()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("systemctl"))
                .find(|p| p.is_file())
        }),
    }
}

/// Stops, disables and removes the unit at `path` if it is still ours.
pub(crate) async fn undo(
    path: &Path,
    marker: &str,
    program: Option<&Path>,
    change: &Change,
) -> Outcome {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Outcome::AlreadyGone(format!(
                "the persistent gateway {} was already removed",
                path.display()
            ));
        }
        Err(e) => {
            return Outcome::Failed {
                change: change.clone(),
                reason: e.to_string(),
            };
        }
    };
    if !text.starts_with(marker) || marker.is_empty() {
        return Outcome::Kept(format!("left {}: not written by kubelan", path.display()));
    }
    let systemctl_at = available(program);
    let unit = unit_name(path);
    let result = async {
        if let Some(p) = &systemctl_at {
            systemctl(p, &["disable", "--now", &unit]).await?;
        }
        std::fs::remove_file(path).map_err(|source| UnitError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(p) = &systemctl_at {
            systemctl(p, &["daemon-reload"]).await?;
        }
        Ok::<(), UnitError>(())
    }
    .await;
    match result {
        Ok(()) => Outcome::Undone(format!(
            "stopped and removed the persistent gateway {}",
            path.display()
        )),
        Err(e) => Outcome::Failed {
            change: change.clone(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::journal::reset;

    /// A temporary directory with a fake `systemctl` that logs its arguments.
    fn scratch(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("kl-unit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::set_permissions(dir.join("state"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let fake = dir.join("systemctl");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$@\" >> {}/calls\n", dir.display()),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, fake)
    }

    const UNIT: &str =
        "# Written by `kubelan gateway --persist`; `sudo kubelan reset` removes it.\n[Unit]\n";

    #[tokio::test]
    async fn an_installed_unit_is_kept_past_the_process_and_undone_by_reset() {
        let (dir, fake) = scratch("install");
        let state = StateDir::new(dir.join("state"));
        let path = dir.join("kubelan-gateway.service");
        let mut guard = HostGuard::begin(&state, "gateway --persist").unwrap();
        install(&mut guard, &path, UNIT, Some(&fake)).await.unwrap();
        // The installing process ends at once: the journal outlives its guard, owned by a
        // dead process.
        let journal_path = guard.journal_path().to_path_buf();
        let mut journal = guard.journal.clone();
        guard.keep();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        journal.owner = super::super::Owner {
            pid: child.id(),
            start_time: 1,
        };
        child.wait().unwrap();
        journal.store(&journal_path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), UNIT);
        let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
        assert_eq!(
            calls,
            "daemon-reload\nenable --now kubelan-gateway.service\n"
        );
        // `kubelan reset` replays it: stops, disables and removes the unit.
        let report = reset(&state, false).await;
        assert!(report.is_clean(), "{report}");
        let lines = report.lines();
        assert_eq!(
            lines,
            [format!(
                "stopped and removed the persistent gateway {}",
                path.display()
            )]
        );
        assert!(!path.exists());
        let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
        assert!(
            calls.ends_with("disable --now kubelan-gateway.service\ndaemon-reload\n"),
            "{calls}"
        );
        assert!(reset(&state, false).await.nothing_to_do());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_unit_someone_else_rewrote_is_left_alone() {
        let (dir, fake) = scratch("foreign");
        let path = dir.join("kubelan-gateway.service");
        std::fs::write(&path, "[Unit]\nDescription=someone else's\n").unwrap();
        let change = Change::SystemdUnit {
            path: path.clone(),
            marker: UNIT.lines().next().unwrap().into(),
            systemctl: Some(fake.clone()),
        };
        let o = undo(&path, UNIT.lines().next().unwrap(), Some(&fake), &change).await;
        assert!(o.to_string().contains("not written by kubelan"), "{o}");
        assert!(path.exists());
        assert!(!dir.join("calls").exists());
        std::fs::remove_file(&path).unwrap();
        let o = undo(&path, UNIT.lines().next().unwrap(), Some(&fake), &change).await;
        assert!(matches!(o, Outcome::AlreadyGone(_)), "{o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
