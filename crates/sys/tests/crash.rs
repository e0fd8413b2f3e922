//! Crash safety: a child process makes host changes through a `HostGuard`, forgets the guard
//! (so no destructor runs) and kills itself with SIGKILL. `reset` must then put everything
//! back: files byte-identical (symlinks as symlinks), routes and links gone. With a crash
//! watcher (this test binary again, as `watcher_child`), nobody needs to run `reset`.

#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kubelan_sys::dns::{self, Backend, DnsPlan};
use kubelan_sys::hosts::{self, HostsEntry};
use kubelan_sys::journal::{Change, HostGuard, Owner, StateDir, reset};
use kubelan_sys::watch;
use kubelan_testkit::{Netns, TempDir, root_available, root_snapshot};

const CHILD_MODE: &str = "KL_SYS_CRASH_CHILD";
const CHILD_DIR: &str = "KL_SYS_CRASH_DIR";
const CHILD_NETNS: &str = "KL_SYS_CRASH_NETNS";
const WATCHER_MODE: &str = "KL_SYS_WATCHER";

const RESOLV: &[u8] =
    b"# written by the test\nsearch corp.example\nnameserver 10.0.0.2\noptions edns0\n";
const HOSTS: &[u8] = b"127.0.0.1 localhost\n::1 localhost ip6-localhost";

fn plan() -> DnsPlan {
    DnsPlan {
        link: "kl0".into(),
        servers: vec!["100.64.0.53".parse().unwrap()],
        routing_domains: vec!["cluster.local".into()],
        search: vec!["svc.cluster.local".into(), "cluster.local".into()],
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The child's side: only does something when started by [`crash`].
#[test]
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let state = StateDir::new(dir.join("state"));
    match mode.as_str() {
        "resolv" => rt().block_on(async {
            let mut guard = HostGuard::begin(&state, "connect").unwrap();
            dns::apply(
                &mut guard,
                &Backend::ResolvConf(dir.join("resolv.conf")),
                &plan(),
            )
            .await
            .unwrap();
            std::mem::forget(guard);
        }),
        "hosts" => {
            let mut guard = HostGuard::begin(&state, "forward").unwrap();
            let entries = [HostsEntry {
                ip: "127.1.0.1".parse().unwrap(),
                names: vec!["web.default.svc.cluster.local".into()],
            }];
            hosts::add_block(&mut guard, &dir.join("hosts"), "forward-crash", &entries).unwrap();
            std::mem::forget(guard);
        }
        "routes" => {
            let netns = std::env::var(CHILD_NETNS).unwrap();
            kubelan_sys::in_netns(&kubelan_sys::netns_path(&netns), move || {
                rt().block_on(async {
                    let mut guard = HostGuard::begin(&state, "connect").unwrap();
                    guard
                        .apply(Change::Link {
                            name: "kl0".into(),
                            ifindex: None,
                        })
                        .await
                        .unwrap();
                    for dst in ["172.17.32.0/19", "172.17.16.0/20"] {
                        guard
                            .apply(Change::Route {
                                dst: dst.parse().unwrap(),
                                dev: "kl0".into(),
                                gateway: None,
                                ifindex: None,
                            })
                            .await
                            .unwrap();
                    }
                    std::mem::forget(guard);
                })
            })
            .unwrap();
        }
        "resolv-watched" | "resolv-watched-sigint" => rt().block_on(async {
            let path = dir.join("resolv.conf");
            let mut guard = HostGuard::begin(&state, "connect").unwrap();
            let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
            // The watcher's own arguments follow `--`, where libtest takes them for filters
            // that match no test.
            cmd.args([
                "watcher_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "--",
            ])
            .env(WATCHER_MODE, "1")
            .env_remove(CHILD_MODE);
            let watcher = watch::spawn(cmd, &guard).unwrap();
            assert!(watcher.uses_pidfd(), "this kernel has pidfd_open");
            std::fs::write(dir.join("watcher.pid"), watcher.pid().unwrap().to_string()).unwrap();
            dns::apply(&mut guard, &Backend::ResolvConf(path.clone()), &plan())
                .await
                .unwrap();
            // The watcher never undoes anything while its owner lives.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert_ne!(std::fs::read(&path).unwrap(), RESOLV, "undone while alive");
            std::mem::forget(guard);
            std::mem::forget(watcher);
            if mode == "resolv-watched-sigint" {
                // Ctrl-C in a terminal: SIGINT to the whole foreground process group. This
                // child has no handler, so it dies as abruptly as with kill -9.
                nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::SIGINT).unwrap();
                // The kernel may hand the signal to another of this process's threads,
                // which acts on it only when next scheduled: give it that time, so the
                // SIGKILL below does not come first (the test would then fail on the
                // wrong signal).
                std::thread::sleep(std::time::Duration::from_secs(10));
            }
        }),
        other => panic!("unknown child mode {other}"),
    }
    // As `kill -9`: no destructors, no cleanup.
    kubelan_sys::signal(std::process::id(), kubelan_sys::SignalKind::SIGKILL);
    loop {
        std::thread::park();
    }
}

/// The watcher's side: only does something when started by the `resolv-watched` child.
#[test]
fn watcher_child() {
    if std::env::var_os(WATCHER_MODE).is_none() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        let i = args.iter().position(|a| a == name).unwrap();
        args[i + 1].clone()
    };
    let target = watch::Target {
        journal: PathBuf::from(arg("--journal")),
        owner: Owner {
            pid: arg("--owner-pid").parse().unwrap(),
            start_time: arg("--owner-start").parse().unwrap(),
        },
    };
    let pidfd = watch::inherited_pidfd(arg("--pidfd").parse().unwrap()).unwrap();
    match rt().block_on(watch::run(&target, Some(pidfd))) {
        watch::Ended::Replayed { report, .. } => {
            assert!(report.is_clean(), "{report}");
            use std::io::Write;
            // The test that started the owner may have stopped reading.
            let _ = writeln!(std::io::stderr(), "watcher: {report}");
        }
        other => panic!("the watcher found {other:?}"),
    }
}

/// Runs [`crash_child`] in a child process (in its own process group) and checks that it
/// died of SIGKILL.
fn crash(mode: &str, dir: &Path, netns: Option<&str>) {
    crash_by(mode, dir, netns, 9);
}

fn crash_by(mode: &str, dir: &Path, netns: Option<&str>, signal: i32) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(ns) = netns {
        cmd.env(CHILD_NETNS, ns);
    }
    // Only the child's exit status: its pipes stay open as long as a watcher runs.
    let mut child = cmd.spawn().unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    if status.signal() != Some(signal) {
        use std::io::Read;
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    }
    let out = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: stderr.into_bytes(),
    };
    assert_eq!(
        out.status.signal(),
        Some(signal),
        "the child did not get as far as killing itself ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn state(dir: &Path) -> StateDir {
    StateDir::new(dir.join("state"))
}

#[test]
fn resolv_conf_file_is_restored_after_kill_9() {
    let tmp = TempDir::new("resolv");
    let path = tmp.path().join("resolv.conf");
    std::fs::write(&path, RESOLV).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    crash("resolv", tmp.path(), None);
    assert_ne!(std::fs::read(&path).unwrap(), RESOLV);

    let report = rt().block_on(reset(&state(tmp.path()), false));
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.to_string(),
        format!("restored {} from backup", path.display())
    );
    assert_eq!(std::fs::read(&path).unwrap(), RESOLV);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
    let again = rt().block_on(reset(&state(tmp.path()), false));
    assert_eq!(again.to_string(), "nothing to do");
}

#[test]
fn resolv_conf_symlink_is_restored_as_a_symlink_after_kill_9() {
    let tmp = TempDir::new("resolvlink");
    std::fs::write(tmp.path().join("stub-resolv.conf"), RESOLV).unwrap();
    let path = tmp.path().join("resolv.conf");
    std::os::unix::fs::symlink("stub-resolv.conf", &path).unwrap();
    crash("resolv", tmp.path(), None);
    assert!(
        !std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let report = rt().block_on(reset(&state(tmp.path()), false));
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        Path::new("stub-resolv.conf")
    );
    assert_eq!(
        std::fs::read(tmp.path().join("stub-resolv.conf")).unwrap(),
        RESOLV
    );
    assert!(
        rt().block_on(reset(&state(tmp.path()), false))
            .nothing_to_do()
    );
}

#[test]
fn hosts_block_is_removed_after_kill_9() {
    let tmp = TempDir::new("hosts");
    let path = tmp.path().join("hosts");
    std::fs::write(&path, HOSTS).unwrap();
    crash("hosts", tmp.path(), None);
    let changed = std::fs::read_to_string(&path).unwrap();
    assert!(
        changed.contains("# BEGIN kubelan forward-crash\n"),
        "{changed}"
    );

    let report = rt().block_on(reset(&state(tmp.path()), false));
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.to_string(),
        format!(
            "removed kubelan's block \"forward-crash\" from {}",
            path.display()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), HOSTS);
    assert!(
        rt().block_on(reset(&state(tmp.path()), false))
            .nothing_to_do()
    );
}

#[test]
fn routes_and_link_are_removed_after_kill_9() {
    if !root_available("routes_and_link_are_removed_after_kill_9") {
        return;
    }
    let before = root_snapshot();
    let tmp = TempDir::new("routes");
    {
        let ns = Netns::new("sys");
        ns.ip(&["tuntap", "add", "dev", "kl0", "mode", "tun"]);
        ns.ip(&["link", "set", "kl0", "up"]);
        crash("routes", tmp.path(), Some(ns.name()));
        let routes = ns.ip(&["route", "show", "table", "all"]);
        assert!(
            routes.contains("172.17.32.0/19 dev kl0") && routes.contains("172.17.16.0/20 dev kl0"),
            "{routes}"
        );

        let st = state(tmp.path());
        let report = ns.run(move || async move { reset(&st, false).await });
        assert!(report.is_clean(), "{report}");
        assert_eq!(
            report.to_string(),
            "removed route 172.17.16.0/20 dev kl0\n\
             removed route 172.17.32.0/19 dev kl0\n\
             removed link kl0"
        );
        assert!(!ns.ip(&["link"]).contains("kl0"));
        assert!(
            !ns.ip(&["route", "show", "table", "all"])
                .contains("172.17.")
        );
        let st = state(tmp.path());
        let again = ns.run(move || async move { reset(&st, false).await });
        assert_eq!(again.to_string(), "nothing to do");

        // When the TUN died with the process (the usual case), its routes went with it:
        // reset has nothing left to remove and still succeeds.
        ns.ip(&["tuntap", "add", "dev", "kl0", "mode", "tun"]);
        ns.ip(&["link", "set", "kl0", "up"]);
        crash("routes", tmp.path(), Some(ns.name()));
        ns.ip(&["link", "del", "kl0"]);
        let st = state(tmp.path());
        let report = ns.run(move || async move { reset(&st, false).await });
        assert!(report.is_clean(), "{report}");
        assert!(report.to_string().contains("already gone"), "{report}");
    }
    assert_eq!(before, root_snapshot(), "the root namespace changed");
}

/// Waits (bounded) until `path` holds `bytes` again, with nobody calling `reset`; returns
/// how long that took from now.
fn restored_by_watcher(path: &Path, bytes: &[u8]) -> std::time::Duration {
    let start = std::time::Instant::now();
    while std::fs::read(path).unwrap() != bytes {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "not restored within 2 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    start.elapsed()
}

fn watcher_gone(dir: &Path) {
    let pid: u32 = std::fs::read_to_string(dir.join("watcher.pid"))
        .unwrap()
        .parse()
        .unwrap();
    let start = std::time::Instant::now();
    while kubelan_sys::process_alive(pid) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the watcher did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn the_crash_watcher_restores_resolv_conf_after_kill_9() {
    let tmp = TempDir::new("watched");
    let path = tmp.path().join("resolv.conf");
    std::fs::write(&path, RESOLV).unwrap();
    crash("resolv-watched", tmp.path(), None);
    let took = restored_by_watcher(&path, RESOLV);
    eprintln!("restored {took:?} after the owner's death was seen");
    watcher_gone(tmp.path());
    assert!(
        rt().block_on(reset(&state(tmp.path()), false))
            .nothing_to_do()
    );
}

#[test]
fn the_crash_watcher_survives_ctrl_c_to_the_owners_process_group() {
    let tmp = TempDir::new("watchedint");
    let path = tmp.path().join("resolv.conf");
    std::fs::write(&path, RESOLV).unwrap();
    crash_by("resolv-watched-sigint", tmp.path(), None, 2);
    restored_by_watcher(&path, RESOLV);
    watcher_gone(tmp.path());
    assert!(
        rt().block_on(reset(&state(tmp.path()), false))
            .nothing_to_do()
    );
}
