//! Bulk mode's names in the hosts file: one kubelan-owned block per process, journaled so
//! `kubelan reset` removes it after a crash, rewritten as Services come and go.

use std::path::{Path, PathBuf};

use kubelan_sys::hosts::{self, HostsEntry, HostsError};
use kubelan_sys::journal::{self, HostGuard, JournalError, ResetReport, StateDir};

/// Why the hosts block cannot be written; each says the fix.
#[derive(Debug, thiserror::Error)]
pub enum HostsBlockError {
    /// The file is not writable by this user.
    #[error(
        "writing names to {} needs root: run `sudo kubelan forward …`, or add --no-hosts to get the address table without names",
        .path.display()
    )]
    NeedsRoot {
        /// The hosts file.
        path: PathBuf,
    },
    /// The file does not exist.
    #[error("{} does not exist: pass --hosts-file FILE, or --no-hosts", .path.display())]
    Missing {
        /// The hosts file.
        path: PathBuf,
    },
    /// Opening the file failed otherwise.
    #[error("cannot open {} for writing: {error}", .path.display())]
    Open {
        /// The hosts file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The journal of host changes cannot be started.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The kubelan-owned hosts block of this process.
pub struct HostsBlock {
    /// The journal the block is written through; the caller starts a crash watcher on it.
    pub guard: HostGuard,
    /// The hosts file.
    pub path: PathBuf,
    marker: String,
    added: bool,
}

impl HostsBlock {
    /// Checks that `path` can be written, undoes what a kubelan that did not exit left
    /// (its blocks would shadow ours; `cleaned` gets the report when there was any) and
    /// starts the journal.
    ///
    /// # Errors
    /// The file cannot be written, or the journal cannot be started.
    pub async fn prepare(
        path: &Path,
        cleaned: &(dyn Fn(&ResetReport) + Send + Sync),
    ) -> Result<HostsBlock, HostsBlockError> {
        if let Err(e) = std::fs::OpenOptions::new().append(true).open(path) {
            let path = path.to_path_buf();
            return Err(match e.kind() {
                std::io::ErrorKind::PermissionDenied => HostsBlockError::NeedsRoot { path },
                std::io::ErrorKind::NotFound => HostsBlockError::Missing { path },
                _ => HostsBlockError::Open { path, error: e },
            });
        }
        let state = StateDir::from_env();
        let report = journal::reset(&state, false).await;
        if !report.nothing_to_do() {
            cleaned(&report);
        }
        let guard = HostGuard::begin(&state, "forward")?;
        Ok(HostsBlock {
            guard,
            path: path.to_path_buf(),
            marker: format!("forward-{}", std::process::id()),
            added: false,
        })
    }

    /// Writes `entries` as the block (again, if someone removed it by hand).
    ///
    /// # Errors
    /// The hosts file cannot be rewritten.
    pub fn write(&mut self, entries: &[HostsEntry]) -> Result<(), HostsError> {
        if self.added {
            match hosts::update_block(&self.guard, &self.path, &self.marker, entries) {
                // Someone removed it by hand: put it back.
                Err(HostsError::NotFound { .. }) => {}
                r => return r,
            }
        }
        hosts::add_block(&mut self.guard, &self.path, &self.marker, entries)?;
        self.added = true;
        Ok(())
    }

    /// Writes `entries` ([`HostsBlock::write`]) and says so: the event to show.
    ///
    /// # Errors
    /// The hosts file cannot be rewritten.
    pub fn publish(&mut self, entries: &[HostsEntry]) -> Result<crate::Event, HostsError> {
        self.write(entries)?;
        Ok(crate::Event::Hosts {
            path: self.path.display().to_string(),
            entries: entries.len(),
        })
    }
}
