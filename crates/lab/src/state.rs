//! The lab's state directory and its crash journal.
//!
//! Everything a lab creates outside its own processes' memory is written to the journal
//! *before* it is created: network namespaces by name, processes by PID and start time. A
//! lab whose `up` or daemon was killed at any point can therefore be removed completely by
//! `kubelan lab down`, which also sweeps namespaces carrying the lab's name prefix.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::LabConfig;

/// Where labs keep their state (`/run`, so a reboot, which also removes the namespaces,
/// starts clean).
pub const STATE_ROOT: &str = "/run/kubelan/labs";

/// The default lab name.
pub const DEFAULT_NAME: &str = "kubelan";

/// Paths of one lab's state.
#[derive(Debug, Clone)]
pub struct LabPaths {
    /// Lab name.
    pub name: String,
    /// State directory.
    pub root: PathBuf,
}

impl LabPaths {
    /// Paths of the lab called `name` under [`STATE_ROOT`] (or `$KUBELAN_LAB_STATE_ROOT`).
    pub fn new(name: &str) -> Self {
        let base = std::env::var_os("KUBELAN_LAB_STATE_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(STATE_ROOT));
        Self {
            name: name.to_string(),
            root: base.join(name),
        }
    }

    /// Prefix of every network namespace of this lab.
    pub fn prefix(&self) -> String {
        format!("kl-{}-", self.name)
    }

    /// Network namespace name of a lab host or sandbox.
    pub fn netns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix())
    }

    /// The lab record (configuration and facts).
    pub fn record(&self) -> PathBuf {
        self.root.join("lab.json")
    }
    /// The crash journal.
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal.jsonl")
    }
    /// Kubeconfig for the machine running the lab (API on loopback).
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    /// Kubeconfig as seen from lab hosts (API at the control-plane node's address).
    pub fn lab_kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig.lab")
    }
    /// The daemon's log.
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    /// Written by the daemon once the lab serves.
    pub fn ready_file(&self) -> PathBuf {
        self.root.join("ready")
    }
    /// Written by the daemon when start-up failed (the error text).
    pub fn failed_file(&self) -> PathBuf {
        self.root.join("failed")
    }
    /// Live facts published by the daemon (API port, sandbox holders).
    pub fn runtime(&self) -> PathBuf {
        self.root.join("runtime.json")
    }
    /// Per-host sandbox directory.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.root.join("hosts").join(host)
    }
    /// Per-pod sandbox directory.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }
    /// Secrets (PKI, tokens).
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets.json")
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalEntry {
    /// A named network namespace (about to be) created.
    Netns {
        /// Its name.
        name: String,
    },
    /// A process started by the lab.
    Process {
        /// PID.
        pid: u32,
        /// Start time in clock ticks, to recognise the PID later.
        start: u64,
        /// What it is (daemon, holder:node1, pod:default/web-…).
        role: String,
    },
}

/// Appends journal entries; each line is written with one `write` on an `O_APPEND` file,
/// so the daemon and the CLI can both append.
#[derive(Debug)]
pub struct Journal {
    file: File,
}

impl Journal {
    /// Opens (creating) the journal at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: OpenOptions::new().create(true).append(true).open(path)?,
        })
    }

    /// Records an entry and flushes it to the file system.
    ///
    /// # Errors
    /// When writing fails.
    pub fn record(&mut self, e: &JournalEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    /// Records the start of a process.
    ///
    /// # Errors
    /// When writing fails.
    pub fn record_process(&mut self, pid: u32, role: &str) -> std::io::Result<()> {
        let start = kubelan_sys::process_start_time(pid).unwrap_or(0);
        self.record(&JournalEntry::Process {
            pid,
            start,
            role: role.to_string(),
        })
    }

    /// Reads all entries; a torn last line (crash mid-write) is ignored.
    pub fn read(path: &Path) -> Vec<JournalEntry> {
        let Ok(f) = File::open(path) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }
}

/// What `lab up` decided, for the daemon and for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabRecord {
    /// Lab name.
    pub name: String,
    /// The effective configuration.
    pub config: LabConfig,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The kubelan binary that pods of kubelan's image run.
    pub kubelan_binary: PathBuf,
}

impl LabRecord {
    /// Loads the record of a lab.
    ///
    /// # Errors
    /// When the lab does not exist or the record is unreadable.
    pub fn load(paths: &LabPaths) -> anyhow::Result<Self> {
        let text = fs::read_to_string(paths.record()).map_err(|e| {
            anyhow::anyhow!(
                "lab {:?} has no record at {} ({e}); is it up? (`kubelan lab status`)",
                paths.name,
                paths.record().display()
            )
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Writes the record.
    ///
    /// # Errors
    /// When writing fails.
    pub fn save(&self, paths: &LabPaths) -> anyhow::Result<()> {
        write_atomic(
            &paths.record(),
            serde_json::to_string_pretty(self)?.as_bytes(),
            0o600,
        )
    }
}

/// Facts the daemon publishes while it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// Daemon PID.
    pub daemon_pid: u32,
    /// Port of the API server on the machine's loopback.
    pub api_port: u16,
    /// Host name → PID of the process holding its namespaces.
    pub holders: std::collections::BTreeMap<String, u32>,
}

impl RuntimeInfo {
    /// Loads the runtime facts, if the daemon has published them.
    pub fn load(paths: &LabPaths) -> Option<Self> {
        serde_json::from_str(&fs::read_to_string(paths.runtime()).ok()?).ok()
    }

    /// Publishes the facts.
    ///
    /// # Errors
    /// When writing fails.
    pub fn save(&self, paths: &LabPaths) -> anyhow::Result<()> {
        write_atomic(
            &paths.runtime(),
            serde_json::to_string_pretty(self)?.as_bytes(),
            0o644,
        )
    }
}

/// Secrets generated at `up`: the cluster PKI and API tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabSecrets {
    /// CA certificate (PEM).
    pub ca_pem: String,
    /// API serving certificate (PEM).
    pub server_cert_pem: String,
    /// API serving key (PEM).
    pub server_key_pem: String,
    /// Token of the lab administrator (`system:masters`).
    pub admin_token: String,
    /// Extra users: (name, groups, token).
    pub users: Vec<(String, Vec<String>, String)>,
}

impl LabSecrets {
    /// Loads the secrets.
    ///
    /// # Errors
    /// When missing or unreadable.
    pub fn load(paths: &LabPaths) -> anyhow::Result<Self> {
        Ok(serde_json::from_str(&fs::read_to_string(paths.secrets())?)?)
    }

    /// Writes the secrets (mode 0600).
    ///
    /// # Errors
    /// When writing fails.
    pub fn save(&self, paths: &LabPaths) -> anyhow::Result<()> {
        write_atomic(
            &paths.secrets(),
            serde_json::to_string(self)?.as_bytes(),
            0o600,
        )
    }
}

/// Writes a file atomically (temporary file in the same directory, then rename).
///
/// # Errors
/// When writing or renaming fails.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    Ok(())
}

/// Names of every lab that has a state directory.
pub fn list_labs() -> Vec<String> {
    let base = std::env::var_os("KUBELAN_LAB_STATE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(STATE_ROOT));
    let mut out: Vec<String> = fs::read_dir(base)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_ignores_torn_line() {
        let dir = std::env::temp_dir().join(format!("kl-journal-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("j");
        let mut j = Journal::open(&p).unwrap();
        j.record(&JournalEntry::Netns {
            name: "kl-a-node1".into(),
        })
        .unwrap();
        j.record_process(std::process::id(), "test").unwrap();
        OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"kind\":\"net")
            .unwrap();
        let entries = Journal::read(&p);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            JournalEntry::Netns {
                name: "kl-a-node1".into()
            }
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names() {
        let p = LabPaths::new("t1");
        assert_eq!(p.netns("node1"), "kl-t1-node1");
        assert!(p.root.ends_with("t1"));
    }
}
