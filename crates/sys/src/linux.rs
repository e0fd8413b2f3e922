//! Linux implementation: `setns`, `unshare`, mounts between fork and exec, `/proc` scanning.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Pid, Uid, chdir, mkdir, setgid, setgroups, sethostname, setuid};

use crate::{Error, Result};

/// Directory where `ip netns` keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of a named network namespace (as created by `ip netns add NAME`).
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| Error::OpenNamespace {
            path: path.to_path_buf(),
            source,
        })
}

/// Open namespace handles that a child process (or a helper thread) enters.
///
/// The handles are opened in the parent, so entering them between fork and exec needs no
/// path lookups and no allocation.
#[derive(Debug, Default)]
pub struct Namespaces {
    net: Option<OwnedFd>,
    mnt: Option<OwnedFd>,
    uts: Option<OwnedFd>,
}

impl Namespaces {
    /// The network namespace at `path` (for example [`netns_path`]).
    ///
    /// # Errors
    /// [`Error::OpenNamespace`] when the file cannot be opened.
    pub fn net(path: &Path) -> Result<Self> {
        Ok(Self {
            net: Some(open_ns(path)?),
            ..Self::default()
        })
    }

    /// The network, mount and UTS namespaces of a running process (a sandbox holder).
    ///
    /// # Errors
    /// [`Error::OpenNamespace`] when the process is gone.
    pub fn of_process(pid: u32) -> Result<Self> {
        let dir = PathBuf::from(format!("/proc/{pid}/ns"));
        Ok(Self {
            net: Some(open_ns(&dir.join("net"))?),
            mnt: Some(open_ns(&dir.join("mnt"))?),
            uts: Some(open_ns(&dir.join("uts"))?),
        })
    }

    /// Enters the namespaces from the calling thread (network first, then UTS, then mount).
    fn enter(&self) -> nix::Result<()> {
        if let Some(fd) = &self.net {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)?;
        }
        if let Some(fd) = &self.uts {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWUTS)?;
        }
        if let Some(fd) = &self.mnt {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNS)?;
        }
        Ok(())
    }
}

/// Runs `f` on a fresh OS thread that has entered the network namespace at `netns`.
///
/// Sockets created by `f` belong to that namespace for their whole life, so a listener or a
/// connected stream can be handed back to an async runtime running elsewhere. A fresh thread
/// is used every time so no pooled thread is ever left in a foreign namespace.
///
/// # Errors
/// When the namespace cannot be opened or entered, or the thread fails.
pub fn in_netns<T, F>(netns: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = Namespaces::net(netns)?;
    let what = netns.display().to_string();
    std::thread::Builder::new()
        .name("kubelan-netns".into())
        .spawn(move || -> Result<T> {
            ns.enter().map_err(|e| Error::Setns {
                what,
                source: e.into(),
            })?;
            Ok(f())
        })
        .map_err(|e| Error::Thread(e.to_string()))?
        .join()
        .map_err(|_| Error::Thread("panicked".into()))?
}

/// The user and groups a child process switches to before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// A command type that accepts a `pre_exec` hook (std and tokio commands).
pub trait PreExec {
    /// Installs `f` to run in the child between fork and exec.
    ///
    /// # Safety
    /// `f` must only make async-signal-safe calls: it runs in a forked copy of a possibly
    /// multi-threaded process.
    unsafe fn install_pre_exec<F>(&mut self, f: F)
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static;
}

impl PreExec for std::process::Command {
    unsafe fn install_pre_exec<F>(&mut self, f: F)
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        // SAFETY: forwarded contract.
        unsafe { std::os::unix::process::CommandExt::pre_exec(self, f) };
    }
}

impl PreExec for tokio::process::Command {
    unsafe fn install_pre_exec<F>(&mut self, f: F)
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        // SAFETY: forwarded contract.
        unsafe { self.pre_exec(f) };
    }
}

/// The working directory a child gets after entering namespaces.
#[derive(Debug, Clone, Copy)]
pub enum Cwd<'a> {
    /// Keep the parent's (as resolved in the new mount namespace).
    Inherit,
    /// This directory; failing to enter it fails the spawn (a container's `workingDir`).
    Exactly(&'a Path),
    /// This directory if it exists in the new mount namespace, else `/` (an interactive
    /// command that follows the user's directory when it can).
    Prefer(&'a Path),
}

/// Makes `cmd` enter `ns`, then change directory and optionally drop to `ident`, in the
/// child before exec.
///
/// # Errors
/// When the directory contains a NUL byte.
pub fn enter_on_spawn<C: PreExec>(
    cmd: &mut C,
    ns: Arc<Namespaces>,
    cwd: Cwd<'_>,
    ident: Option<Ident>,
) -> Result<()> {
    let (dir, strict) = match cwd {
        Cwd::Inherit => (None, false),
        Cwd::Exactly(p) => (Some(cstring(p)?), true),
        Cwd::Prefer(p) => (Some(cstring(p)?), false),
    };
    let root = c"/";
    let hook = move || -> std::io::Result<()> {
        ns.enter().map_err(step_error("setns"))?;
        if let Some(dir) = &dir {
            match chdir(dir.as_c_str()) {
                Ok(()) => {}
                Err(_) if !strict => chdir(root).map_err(step_error("chdir /"))?,
                Err(e) => return Err(step_error("chdir")(e)),
            }
        }
        if let Some(id) = ident {
            drop_privileges(id)?;
        }
        Ok(())
    };
    // SAFETY: the hook only calls setns, chdir, setgroups, setgid, setuid and write(2) on
    // data prepared before fork; it does not allocate.
    unsafe { cmd.install_pre_exec(hook) };
    Ok(())
}

fn drop_privileges(id: Ident) -> std::io::Result<()> {
    setgroups(&[]).map_err(step_error("setgroups"))?;
    setgid(Gid::from_raw(id.gid)).map_err(step_error("setgid"))?;
    setuid(Uid::from_raw(id.uid)).map_err(step_error("setuid"))?;
    Ok(())
}

/// Makes `cmd` start in a new session (detached from the caller's terminal and process
/// group), for daemons that outlive the command that started them.
pub fn new_session_on_spawn<C: PreExec>(cmd: &mut C) {
    let hook = || -> std::io::Result<()> {
        nix::unistd::setsid().map_err(step_error("setsid"))?;
        Ok(())
    };
    // SAFETY: setsid is async-signal-safe and the hook allocates nothing.
    unsafe { cmd.install_pre_exec(hook) };
}

/// Makes `cmd`'s child receive `signal` when this process dies (`PR_SET_PDEATHSIG`), so
/// that a program `kubelan run` started does not outlive a `kill -9` of kubelan. When this
/// process is already gone by the time the child runs the hook, the child signals itself.
///
/// The kernel sends the signal when the *thread* that forked exits; the callers spawn from
/// a runtime's worker thread, which lives as long as the process.
pub fn die_with_parent_on_spawn<C: PreExec>(cmd: &mut C, signal: Signal) {
    let parent = nix::unistd::getpid();
    let hook = move || -> std::io::Result<()> {
        nix::sys::prctl::set_pdeathsig(signal).map_err(step_error("prctl PR_SET_PDEATHSIG"))?;
        if nix::unistd::getppid() != parent {
            kill(nix::unistd::getpid(), signal).map_err(step_error("kill self"))?;
        }
        Ok(())
    };
    // SAFETY: prctl, getppid, getpid and kill are async-signal-safe; the hook allocates
    // nothing.
    unsafe { cmd.install_pre_exec(hook) };
}

/// Whether the process runs with root's effective user id.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One overlay mount: `target` becomes a copy-on-write view of itself whose changes land in
/// `upper` (with `work` as overlayfs' scratch directory on the same filesystem).
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Directory that is overlaid (also the lower layer).
    pub target: PathBuf,
    /// Where changes are stored.
    pub upper: PathBuf,
    /// Overlayfs work directory, on the same filesystem as `upper`.
    pub work: PathBuf,
}

/// A bind mount inside the sandbox. Sources may live under a path a tmpfs of the sandbox
/// covers (such as `/run`): binds are made before the tmpfs is moved into place. The mount
/// point is created when missing (a directory for a directory source, an empty file for a file
/// source); it must lie on a private layer (an overlay or tmpfs of the sandbox) so the host
/// is never modified.
#[derive(Debug, Clone)]
pub struct Bind {
    /// Existing file or directory on the host.
    pub source: PathBuf,
    /// Mount point inside the sandbox.
    pub target: PathBuf,
    /// Remount read-only after binding.
    pub readonly: bool,
}

/// What a sandboxed child gets: a network namespace, a private mount namespace with
/// overlays, tmpfs mounts and bind mounts, a fresh `/sys` for its network namespace, and its
/// own host name.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Network namespace to enter (a path such as [`netns_path`]).
    pub netns: PathBuf,
    /// Host name in a private UTS namespace.
    pub hostname: Option<String>,
    /// Copy-on-write views of host directories.
    pub overlays: Vec<Overlay>,
    /// Private, empty tmpfs mounts.
    pub tmpfs: Vec<PathBuf>,
    /// A host directory private to this sandbox, where tmpfs mounts are prepared before
    /// they are moved into place (never visible outside the sandbox's mount namespace).
    pub scratch: PathBuf,
    /// Directories created (with parents) inside the tmpfs mounts or overlays, in order.
    pub mkdirs: Vec<PathBuf>,
    /// Bind mounts, applied last.
    pub binds: Vec<Bind>,
}

struct PreparedBind {
    source: CString,
    target: CString,
    is_dir: bool,
    readonly: bool,
}

/// Makes `cmd` start inside `sandbox`: it enters the network namespace, unshares mount and
/// UTS namespaces, and builds its private file-system view before exec. The host's mount
/// table is never touched: the new mount namespace is made recursively private first.
///
/// # Errors
/// When the network namespace cannot be opened or a path contains a NUL byte. Failures in
/// the child surface as the spawn error, and a one-line reason is written to the child's
/// stderr.
pub fn sandbox_on_spawn<C: PreExec>(cmd: &mut C, sandbox: &Sandbox) -> Result<()> {
    let net = open_ns(&sandbox.netns)?;
    let hostname = sandbox.hostname.as_deref().map(cstring).transpose()?;
    let overlays = sandbox
        .overlays
        .iter()
        .map(|o| {
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                o.target.display(),
                o.upper.display(),
                o.work.display()
            );
            Ok((cstring(&o.target)?, cstring(Path::new(&data))?))
        })
        .collect::<Result<Vec<_>>>()?;
    // A private tmpfs is first mounted at a scratch directory, filled (directories and
    // bind mounts whose targets lie under it), and only then moved over its target. Bind
    // sources therefore stay reachable even when the tmpfs will cover them (the lab's state
    // lives under /run).
    let scratch_of = |target: &Path| -> Option<(PathBuf, PathBuf)> {
        sandbox.tmpfs.iter().enumerate().find_map(|(i, root)| {
            let rest = target.strip_prefix(root).ok()?;
            let scratch = sandbox.scratch.join(format!("tmpfs-{i}"));
            Some((scratch.clone(), scratch.join(rest)))
        })
    };
    let translate = |p: &Path| -> PathBuf {
        scratch_of(p)
            .map(|(_, t)| t)
            .unwrap_or_else(|| p.to_path_buf())
    };
    // Expand "mkdir -p" into the chain of parents now, so the child only calls mkdir.
    let mut mkdirs = Vec::new();
    for dir in &sandbox.mkdirs {
        let (base, full) = match scratch_of(dir) {
            Some((scratch, t)) => (scratch, t),
            None => (PathBuf::from("/"), dir.clone()),
        };
        let mut chain: Vec<&Path> = full
            .ancestors()
            .filter(|p| p.starts_with(&base) && *p != base.as_path())
            .collect();
        chain.reverse();
        for p in chain {
            mkdirs.push(cstring(p)?);
        }
    }
    let binds = sandbox
        .binds
        .iter()
        .map(|b| {
            Ok(PreparedBind {
                source: cstring(&b.source)?,
                target: cstring(translate(&b.target))?,
                is_dir: b.source.is_dir(),
                readonly: b.readonly,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut moves = Vec::new();
    for (i, root) in sandbox.tmpfs.iter().enumerate() {
        let scratch = sandbox.scratch.join(format!("tmpfs-{i}"));
        std::fs::create_dir_all(&scratch).map_err(|source| Error::Io {
            what: format!("create {}", scratch.display()),
            source,
        })?;
        moves.push((scratch, root.clone()));
    }
    // A move whose target covers the scratch directories (such as /run) must come last,
    // or it would hide the scratch mounts still waiting to move.
    moves.sort_by_key(|(scratch, target)| scratch.starts_with(target));
    let moves = moves
        .into_iter()
        .map(|(a, b)| Ok((cstring(a)?, cstring(b)?)))
        .collect::<Result<Vec<_>>>()?;
    let overlay_fs = c"overlay";
    let tmpfs_fs = c"tmpfs";
    let sysfs = c"sysfs";
    let sys_dir = c"/sys";
    let root = c"/";
    let tmpfs_opts = c"mode=0755";

    let hook = move || -> std::io::Result<()> {
        setns(net.as_fd(), CloneFlags::CLONE_NEWNET).map_err(step_error("setns net"))?;
        unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
            .map_err(step_error("unshare mount+uts"))?;
        mount(
            None::<&std::ffi::CStr>,
            root,
            None::<&std::ffi::CStr>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&std::ffi::CStr>,
        )
        .map_err(step_error("make / private"))?;
        for (target, data) in &overlays {
            mount(
                Some(overlay_fs),
                target.as_c_str(),
                Some(overlay_fs),
                MsFlags::empty(),
                Some(data.as_c_str()),
            )
            .map_err(step_error("mount overlay"))?;
        }
        for (scratch, _) in &moves {
            mount(
                Some(tmpfs_fs),
                scratch.as_c_str(),
                Some(tmpfs_fs),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(tmpfs_opts),
            )
            .map_err(step_error("mount tmpfs"))?;
        }
        for dir in &mkdirs {
            match mkdir(dir.as_c_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(step_error("mkdir")(e)),
            }
        }
        for b in &binds {
            if b.is_dir {
                match mkdir(b.target.as_c_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(step_error("mkdir bind target")(e)),
                }
            } else {
                let fd = nix::fcntl::open(
                    b.target.as_c_str(),
                    nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
                    Mode::from_bits_truncate(0o644),
                )
                .map_err(step_error("create bind target"))?;
                drop(fd);
            }
            mount(
                Some(b.source.as_c_str()),
                b.target.as_c_str(),
                None::<&std::ffi::CStr>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&std::ffi::CStr>,
            )
            .map_err(step_error("bind mount"))?;
            if b.readonly {
                mount(
                    None::<&std::ffi::CStr>,
                    b.target.as_c_str(),
                    None::<&std::ffi::CStr>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&std::ffi::CStr>,
                )
                .map_err(step_error("remount read-only"))?;
            }
        }
        for (scratch, target) in &moves {
            mount(
                Some(scratch.as_c_str()),
                target.as_c_str(),
                None::<&std::ffi::CStr>,
                MsFlags::MS_MOVE,
                None::<&std::ffi::CStr>,
            )
            .map_err(step_error("move tmpfs into place"))?;
        }
        // A /sys that shows this network namespace's interfaces (as `ip netns exec` does).
        let _ = umount2(sys_dir, MntFlags::MNT_DETACH);
        mount(
            Some(sysfs),
            sys_dir,
            Some(sysfs),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&std::ffi::CStr>,
        )
        .map_err(step_error("mount sysfs"))?;
        if let Some(name) = &hostname {
            sethostname(OsStr::from_bytes(name.as_bytes())).map_err(step_error("sethostname"))?;
        }
        Ok(())
    };
    // SAFETY: the hook only issues system calls on data prepared above (no allocation, no
    // locks), plus write(2) of static text on failure.
    unsafe { cmd.install_pre_exec(hook) };
    Ok(())
}

/// Returns a mapper that writes "kubelan sandbox: <step> failed (errno N)" to stderr and
/// converts the errno, without allocating.
fn step_error(step: &'static str) -> impl Fn(nix::errno::Errno) -> std::io::Error {
    move |errno| {
        let mut buf = [0u8; 160];
        let mut n = 0;
        for part in [
            b"kubelan sandbox: ".as_slice(),
            step.as_bytes(),
            b" failed (errno ",
        ] {
            let take = part.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&part[..take]);
            n += take;
        }
        let mut digits = [0u8; 10];
        let mut value = errno as i32 as u32;
        let mut d = digits.len();
        loop {
            d -= 1;
            digits[d] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 || d == 0 {
                break;
            }
        }
        for part in [&digits[d..], b")\n".as_slice()] {
            let take = part.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&part[..take]);
            n += take;
        }
        let _ = nix::unistd::write(std::io::stderr(), &buf[..n]);
        std::io::Error::from_raw_os_error(errno as i32)
    }
}

fn cstring(p: impl AsRef<OsStr>) -> Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| Error::Io {
        what: format!("path {:?}", p.as_ref()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "contains a NUL byte"),
    })
}

/// Identity of a network namespace: device and inode of its nsfs file.
pub type NsId = (u64, u64);

/// The identity of the network namespace at `path` (a named netns or `/proc/PID/ns/net`).
///
/// # Errors
/// When the file cannot be examined.
pub fn netns_id(path: &Path) -> Result<NsId> {
    let md = std::fs::metadata(path).map_err(|source| Error::Io {
        what: format!("stat {}", path.display()),
        source,
    })?;
    Ok((md.dev(), md.ino()))
}

/// All processes whose network namespace is one of `ids`.
pub fn pids_in_netns(ids: &HashSet<NsId>) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(id) = netns_id(&entry.path().join("ns/net"))
            && ids.contains(&id)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`).
/// Stored next to a PID, it tells whether the PID still names the process we started.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Sends `signal` to `pid` if, and only if, it is still the process that started at
/// `start_time`. Returns whether the signal was delivered.
pub fn signal_if_same(pid: u32, start_time: u64, signal: Signal) -> bool {
    if process_start_time(pid) != Some(start_time) {
        return false;
    }
    kill(Pid::from_raw(pid as i32), signal).is_ok()
}

/// Sends `signal` to `pid` (used for processes found through their network namespace,
/// which are ours by construction).
pub fn signal(pid: u32, signal: Signal) -> bool {
    kill(Pid::from_raw(pid as i32), signal).is_ok()
}

/// Whether a process exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

pub use nix::sys::signal::Signal as SignalKind;

/// Raises the soft limit on open files to the hard limit (proxies and agents hold two
/// sockets per flow; the usual soft limit of 1024 would cap them at ~500 flows). Returns
/// the new soft limit; failures leave the limit as it was.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// The destination a connection had before nftables redirected it to this host (the
/// conntrack entry's original tuple: `SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for an
/// IPv6 socket). For a connection that was not redirected this is the socket's own local
/// address.
///
/// # Errors
/// The OS error, e.g. `ENOENT` when conntrack holds no entry for the connection.
pub fn original_dst<S: AsFd>(socket: &S, ipv6: bool) -> std::io::Result<std::net::SocketAddr> {
    use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};
    if ipv6 {
        let raw = getsockopt(socket, sockopt::Ip6tOriginalDst)?;
        Ok(std::net::SocketAddr::V6(SockaddrIn6::from(raw).into()))
    } else {
        let raw = getsockopt(socket, sockopt::OriginalDst)?;
        Ok(std::net::SocketAddr::V4(SockaddrIn::from(raw).into()))
    }
}

/// Caps the window `socket` advertises to its peer (`TCP_WINDOW_CLAMP`, bytes), and so what
/// the peer may have in flight toward it. Lowering the cap also lowers the kernel's
/// receive-window threshold (`rcv_ssthresh`), which a smaller `SO_RCVBUF` alone leaves
/// where it grew; raising it lets the window grow again as the buffer allows.
///
/// # Errors
/// The OS error (`EINVAL` for a socket that is not TCP, for instance).
pub fn set_tcp_window_clamp<S: AsFd>(socket: &S, bytes: u32) -> std::io::Result<()> {
    let value = nix::libc::c_int::try_from(bytes).unwrap_or(nix::libc::c_int::MAX);
    // SAFETY: the descriptor is borrowed for the call; the option value is a live c_int
    // and the length passed is its size.
    let rc = unsafe {
        nix::libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_WINDOW_CLAMP,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The cap [`set_tcp_window_clamp`] set on `socket` (the kernel's own when none was set).
///
/// # Errors
/// The OS error.
pub fn tcp_window_clamp<S: AsFd>(socket: &S) -> std::io::Result<u32> {
    let mut value: nix::libc::c_int = 0;
    let mut len = std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t;
    // SAFETY: as above; the kernel writes at most `len` bytes into `value`.
    let rc = unsafe {
        nix::libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_WINDOW_CLAMP,
            std::ptr::from_mut(&mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(u32::try_from(value).unwrap_or(0))
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Allocations of this size or more are mapped and unmapped on their own by glibc (see
/// [`tune_allocator`]); smaller ones come from its heap. It must not exceed the userspace
/// TCP stack's per-connection buffers (256 KiB, `kubelan_netstack::StackConfig`), which
/// have to stay mapped. It must not be lower either: at 128 KiB the carrier's receive
/// buffers (a 64 KiB read plus a partial frame, doubled by `BytesMut`: 132 KiB) were
/// mapped, faulted in page by page and unmapped for every 128 KiB a flow received.
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Free bytes at the top of one of glibc's heaps above which it gives them back to the
/// system (see [`tune_allocator`]). glibc's default, 128 KiB, is less than two of a relay's
/// 64 KiB buffers: while bulk flows ran, every few buffers freed were handed back
/// (`madvise`) and the next ones faulted their pages in again, zeroed.
const TRIM_THRESHOLD: i32 = 8 * 1024 * 1024;

/// Makes freed buffers go back to the system. glibc raises its mmap threshold each time
/// a mapped block is freed, after which the userspace TCP stack's per-connection buffers
/// (256 KiB each) come from the heap and stay resident after the connection is gone:
/// `kubelan connect` grew to 1.7 GiB after 9 000 connections, with nothing leaked. A fixed
/// threshold keeps such buffers mapped (untouched pages cost nothing) and returns them on
/// free: the same run settles at 20 MiB. No-op on other C libraries.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread
    // that allocates concurrently exists (at the start of main).
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap set is the cap read back, lowered and raised again.
    #[test]
    fn a_tcp_window_clamp_is_set_and_read_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        for bytes in [80 * 1024, 20 * 1024, 640 * 1024] {
            set_tcp_window_clamp(&tcp, bytes).unwrap();
            assert_eq!(tcp_window_clamp(&tcp).unwrap(), bytes);
        }
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(
            set_tcp_window_clamp(&udp, 80 * 1024).is_err(),
            "not a TCP socket"
        );
    }

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id();
        let a = process_start_time(me).expect("own stat");
        assert_eq!(Some(a), process_start_time(me));
        assert!(process_alive(me));
        assert!(!signal_if_same(me, a.wrapping_add(1), Signal::SIGCONT));
    }

    #[test]
    fn missing_namespace_is_a_clear_error() {
        let err = Namespaces::net(Path::new("/run/netns/kubelan-does-not-exist")).unwrap_err();
        assert!(err.to_string().contains("kubelan-does-not-exist"), "{err}");
    }

    #[test]
    fn own_netns_contains_self() {
        let id = netns_id(Path::new("/proc/self/ns/net")).expect("own netns");
        let pids = pids_in_netns(&HashSet::from([id]));
        assert!(pids.contains(&std::process::id()));
    }

    #[test]
    fn step_error_keeps_errno() {
        let e = step_error("test step")(nix::errno::Errno::ENOENT);
        assert_eq!(e.raw_os_error(), Some(libc_enoent()));
    }

    fn libc_enoent() -> i32 {
        nix::errno::Errno::ENOENT as i32
    }
}
