//! dnsmasq: the hosts file it watches, its command line and the supervisor that restarts it.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::records::{normalize_domain, render_hosts};
use super::{ClusterDnsOptions, DNS_SCHEMA_VERSION, HOSTS_FILE_NAME};

/// Name of the temporary file used for atomic replacement; the leading dot
/// makes dnsmasq ignore it.
pub(super) const TEMP_FILE_NAME: &str = ".cluster-dns.hosts.tmp";

/// How long dnsmasq gets to exit after SIGTERM before it is killed.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(2);

/// First delay before restarting a dnsmasq that exited.
pub(super) const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Longest delay before restarting a dnsmasq that exited.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A dnsmasq that ran at least this long is considered healthy: its next
/// restart starts again from the shortest delay.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Writes the hosts file atomically, and only when its content changes.
#[derive(Debug)]
pub struct HostsWriter {
    path: PathBuf,
    temp: PathBuf,
    current: Option<String>,
}

impl HostsWriter {
    /// A writer for [`HOSTS_FILE_NAME`] in `dir`, which must exist.
    ///
    /// A file left there by an earlier run is kept (it is better than nothing
    /// until the first sync) and remembered, so an identical first write is
    /// skipped; a temporary file left by a crash is removed.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let meta = fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        let writer = Self {
            path: dir.join(HOSTS_FILE_NAME),
            temp: dir.join(TEMP_FILE_NAME),
            current: None,
        };
        writer.remove_temp();
        Ok(Self {
            current: fs::read_to_string(&writer.path).ok(),
            ..writer
        })
    }

    /// The path of the hosts file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `records`, returning whether the file changed.
    pub fn write(&mut self, records: &[(IpAddr, Vec<String>)]) -> io::Result<bool> {
        self.write_content(render_hosts(records))
    }

    /// Replaces the file with `content` (temporary file, then `rename`) unless
    /// it already holds exactly that.
    fn write_content(&mut self, content: String) -> io::Result<bool> {
        if self.current.as_deref() == Some(content.as_str()) {
            return Ok(false);
        }
        let result = (|| {
            let mut file = fs::File::create(&self.temp)?;
            file.write_all(content.as_bytes())?;
            file.flush()?;
            drop(file);
            fs::rename(&self.temp, &self.path)
        })();
        if let Err(e) = result {
            self.remove_temp();
            return Err(e);
        }
        self.current = Some(content);
        Ok(true)
    }

    /// Removes the temporary file, if one is left.
    pub fn remove_temp(&self) {
        if let Err(e) = fs::remove_file(&self.temp)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.temp.display(), error = %e, "cannot remove temporary hosts file");
        }
    }
}

/// The dnsmasq command line for `opts` (without the program name); see the
/// [module docs](super) for why each flag is there.
pub fn dnsmasq_args(opts: &ClusterDnsOptions) -> Vec<OsString> {
    let domain = normalize_domain(&opts.domain);
    let mut hostsdir = OsString::from("--hostsdir=");
    hostsdir.push(opts.hosts_dir.as_os_str());
    let mut args: Vec<OsString> = vec![
        "--conf-file=/dev/null".into(),
        "--keep-in-foreground".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        hostsdir,
        format!("--local=/{domain}/").into(),
        "--bogus-priv".into(),
        format!("--port={}", opts.port).into(),
        "--log-facility=-".into(),
        "--pid-file=".into(),
        format!("--local-ttl={}", opts.ttl).into(),
        "--user=root".into(),
        format!("--txt-record=dns-version.{domain},{DNS_SCHEMA_VERSION}").into(),
    ];
    if let Some(listen) = opts.listen {
        args.push(format!("--listen-address={listen}").into());
        args.push("--bind-interfaces".into());
    }
    args
}

/// Waits for the child to exit; never completes when there is none.
pub(super) async fn wait_child(child: &mut Option<Child>) -> io::Result<ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// The supervised dnsmasq process.
pub(super) struct Dnsmasq {
    program: PathBuf,
    args: Vec<OsString>,
    pub(super) child: Option<Child>,
    /// When to (re)start it, if it is not running.
    pub(super) start_at: Option<Instant>,
    started: Instant,
    backoff: Duration,
    pub(super) ever_started: bool,
}

impl Dnsmasq {
    pub(super) fn new(program: PathBuf, args: Vec<OsString>) -> Self {
        Self {
            program,
            args,
            child: None,
            start_at: None,
            started: Instant::now(),
            backoff: RESTART_BACKOFF_MIN,
            ever_started: false,
        }
    }

    /// Starts dnsmasq. Failing the very first time is an error (the program is
    /// probably missing); later failures are retried with backoff.
    pub(super) fn start(&mut self) -> anyhow::Result<()> {
        self.start_at = None;
        let spawned = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if !self.ever_started => {
                return Err(e)
                    .with_context(|| format!("cannot start dnsmasq ({})", self.program.display()));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot restart dnsmasq");
                self.schedule_restart();
                return Ok(());
            }
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_output(out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_output(err));
        }
        tracing::info!(pid = child.id(), "dnsmasq started");
        self.child = Some(child);
        self.started = Instant::now();
        self.ever_started = true;
        Ok(())
    }

    /// Handles the exit of the child.
    pub(super) fn exited(&mut self, status: io::Result<ExitStatus>) {
        self.child = None;
        let ran = self.started.elapsed();
        if ran >= HEALTHY_RUN {
            self.backoff = RESTART_BACKOFF_MIN;
        }
        match status {
            Ok(status) => tracing::warn!(%status, ?ran, "dnsmasq exited; restarting"),
            Err(e) => tracing::warn!(error = %e, ?ran, "lost track of dnsmasq; restarting"),
        }
        self.schedule_restart();
    }

    fn schedule_restart(&mut self) {
        self.start_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RESTART_BACKOFF_MAX);
    }

    /// Stops dnsmasq: SIGTERM by PID, SIGKILL after [`STOP_GRACE`].
    pub(super) async fn stop(&mut self) {
        self.start_at = None;
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                tracing::debug!(error = %e, "cannot send SIGTERM to dnsmasq");
            }
            if let Ok(status) = tokio::time::timeout(STOP_GRACE, child.wait()).await {
                tracing::info!(status = ?status.ok(), "dnsmasq stopped");
                return;
            }
            tracing::warn!("dnsmasq ignored SIGTERM; killing it");
        }
        if let Err(e) = child.kill().await {
            tracing::warn!(error = %e, "cannot kill dnsmasq");
        }
    }
}

/// Forwards dnsmasq's log lines to tracing: problems as warnings, the rest
/// (including its per-reload chatter) at debug level.
async fn forward_output(stream: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let lowered = line.to_ascii_lowercase();
        let problem = ["fail", "error", "cannot", "illegal", "bad ", "refused"]
            .iter()
            .any(|w| lowered.contains(w));
        if problem {
            tracing::warn!(target: "dnsmasq", "{line}");
        } else {
            tracing::debug!(target: "dnsmasq", "{line}");
        }
    }
}
