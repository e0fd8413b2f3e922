use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;
use crate::fsutil;
use crate::hosts::{self, HostsEntry};
use crate::testutil::TempDir;

const HOSTS: &[u8] = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost";

fn entry() -> Vec<HostsEntry> {
    vec![HostsEntry {
        ip: "127.1.0.1".parse().unwrap(),
        names: vec!["web.default".into()],
    }]
}

/// A PID that certainly names no process any more (a reaped child).
fn dead_owner() -> Owner {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    Owner { pid, start_time: 1 }
}

/// Makes the journal look as if its owner died without cleaning up.
fn orphan(guard: HostGuard, owner: Owner) -> PathBuf {
    let path = guard.journal_path().to_path_buf();
    let mut journal = guard.journal.clone();
    std::mem::forget(guard);
    journal.owner = owner;
    journal.store(&path).unwrap();
    path
}

#[test]
fn change_json_is_stable() {
    let cases = [
        (
            Change::Link {
                name: "kl0".into(),
                ifindex: None,
            },
            r#"{"kind":"link","name":"kl0"}"#,
        ),
        (
            Change::Route {
                dst: "172.17.32.0/19".parse().unwrap(),
                dev: "kl0".into(),
                gateway: None,
                ifindex: Some(7),
            },
            r#"{"kind":"route","dst":"172.17.32.0/19","dev":"kl0","ifindex":7}"#,
        ),
        (
            Change::Route {
                dst: "192.0.2.10/32".parse().unwrap(),
                dev: "eth0".into(),
                gateway: Some("10.0.0.1".parse().unwrap()),
                ifindex: None,
            },
            r#"{"kind":"route","dst":"192.0.2.10/32","dev":"eth0","gateway":"10.0.0.1"}"#,
        ),
        (
            Change::ResolvConf {
                path: "/etc/resolv.conf".into(),
                backup: "/run/kubelan/backup-1-resolv.conf".into(),
                written_hash: "sha1:00".into(),
            },
            r#"{"kind":"resolv_conf","path":"/etc/resolv.conf","backup":"/run/kubelan/backup-1-resolv.conf","written_hash":"sha1:00"}"#,
        ),
        (
            Change::ResolvedLink {
                link: "kl0".into(),
                resolvectl: None,
            },
            r#"{"kind":"resolved_link","link":"kl0"}"#,
        ),
        (
            Change::HostsBlock {
                path: "/etc/hosts".into(),
                marker: "forward-12".into(),
                separator_added: false,
            },
            r#"{"kind":"hosts_block","path":"/etc/hosts","marker":"forward-12"}"#,
        ),
        (
            Change::UnixSocket {
                path: "/run/kubelan/connect.sock".into(),
                inode: Some(42),
                ctime_ns: Some(1_700_000_000_000_000_001),
            },
            r#"{"kind":"unix_socket","path":"/run/kubelan/connect.sock","inode":42,"ctime_ns":1700000000000000001}"#,
        ),
        (
            Change::UnixSocket {
                path: "/run/kubelan/connect.sock".into(),
                inode: None,
                ctime_ns: None,
            },
            r#"{"kind":"unix_socket","path":"/run/kubelan/connect.sock"}"#,
        ),
        (
            Change::SystemdUnit {
                path: "/etc/systemd/system/kubelan-gateway.service".into(),
                marker: "# Written by kubelan".into(),
                systemctl: None,
            },
            r##"{"kind":"systemd_unit","path":"/etc/systemd/system/kubelan-gateway.service","marker":"# Written by kubelan"}"##,
        ),
    ];
    for (change, json) in cases {
        assert_eq!(serde_json::to_string(&change).unwrap(), json);
        assert_eq!(serde_json::from_str::<Change>(json).unwrap(), change);
    }
}

#[test]
fn change_lines_are_human() {
    let c = Change::Route {
        dst: "172.17.32.0/19".parse().unwrap(),
        dev: "kl0".into(),
        gateway: None,
        ifindex: None,
    };
    assert_eq!(c.to_string(), "route 172.17.32.0/19 dev kl0");
}

#[test]
fn state_dir_is_created_private_and_checked() {
    let tmp = TempDir::new("statedir");
    let dir = StateDir::new(tmp.path().join("a/b"));
    dir.ensure().unwrap();
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = dir.ensure().unwrap_err();
    assert!(matches!(err, JournalError::UnsafeStateDir { .. }), "{err}");
    assert!(
        err.to_string().contains("writable by group or others"),
        "{err}"
    );
}

#[test]
fn journal_is_written_first_and_deleted_after_restore() {
    let tmp = TempDir::new("journal");
    let state = StateDir::new(tmp.path().join("state"));
    let hosts_path = tmp.path().join("hosts");
    std::fs::write(&hosts_path, HOSTS).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut guard = HostGuard::begin(&state, "forward").unwrap();
    let journal_path = guard.journal_path().to_path_buf();
    let name = journal_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let me = Owner::current();
    assert!(
        name.starts_with(&format!("journal-{}-{}-", me.pid, me.start_time)),
        "{name}"
    );
    let mode = std::fs::metadata(&journal_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    hosts::add_block(&mut guard, &hosts_path, "f1", &entry()).unwrap();
    let on_disk = Journal::load(&journal_path).unwrap();
    assert_eq!(on_disk.purpose, "forward");
    assert_eq!(on_disk.owner, me);
    assert_eq!(on_disk.changes.len(), 1);
    assert_ne!(std::fs::read(&hosts_path).unwrap(), HOSTS);

    let report = rt.block_on(guard.restore());
    assert!(report.is_clean(), "{report}");
    assert_eq!(std::fs::read(&hosts_path).unwrap(), HOSTS);
    assert!(!journal_path.exists());
    assert!(
        report.to_string().starts_with("removed kubelan's block"),
        "{report}"
    );
}

#[test]
fn drop_undoes_outside_and_inside_a_runtime() {
    let tmp = TempDir::new("drop");
    let state = StateDir::new(tmp.path().join("state"));
    let hosts_path = tmp.path().join("hosts");
    std::fs::write(&hosts_path, HOSTS).unwrap();

    let mut guard = HostGuard::begin(&state, "forward").unwrap();
    hosts::add_block(&mut guard, &hosts_path, "f1", &entry()).unwrap();
    drop(guard);
    assert_eq!(std::fs::read(&hosts_path).unwrap(), HOSTS);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut guard = HostGuard::begin(&state, "forward").unwrap();
        hosts::add_block(&mut guard, &hosts_path, "f2", &entry()).unwrap();
        drop(guard);
    });
    assert_eq!(std::fs::read(&hosts_path).unwrap(), HOSTS);
    assert!(journals(&state).unwrap().is_empty());
}

#[test]
fn reset_leaves_live_owners_alone() {
    let tmp = TempDir::new("live");
    let state = StateDir::new(tmp.path().join("state"));
    let hosts_path = tmp.path().join("hosts");
    std::fs::write(&hosts_path, HOSTS).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut guard = HostGuard::begin(&state, "forward").unwrap();
    hosts::add_block(&mut guard, &hosts_path, "f1", &entry()).unwrap();
    let changed = std::fs::read(&hosts_path).unwrap();

    for force in [false, true] {
        let report = rt.block_on(reset(&state, force));
        assert!(report.nothing_to_do(), "{report}");
        assert!(
            report
                .to_string()
                .contains(&format!("in use by pid {}", std::process::id())),
            "{report}"
        );
        assert_eq!(std::fs::read(&hosts_path).unwrap(), changed);
    }

    // Another live process (init) is left alone unless forced.
    let init = Owner {
        pid: 1,
        start_time: crate::process_start_time(1).unwrap(),
    };
    let path = orphan(guard, init);
    let report = rt.block_on(reset(&state, false));
    assert!(report.to_string().contains("in use by pid 1"), "{report}");
    assert_eq!(std::fs::read(&hosts_path).unwrap(), changed);
    let report = rt.block_on(reset(&state, true));
    assert!(report.is_clean(), "{report}");
    assert!(!report.nothing_to_do());
    assert_eq!(std::fs::read(&hosts_path).unwrap(), HOSTS);
    assert!(!path.exists());
}

#[test]
fn reset_replays_dead_owners_once() {
    let tmp = TempDir::new("dead");
    let state = StateDir::new(tmp.path().join("state"));
    let hosts_path = tmp.path().join("hosts");
    std::fs::write(&hosts_path, HOSTS).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut guard = HostGuard::begin(&state, "forward").unwrap();
    hosts::add_block(&mut guard, &hosts_path, "f1", &entry()).unwrap();
    hosts::add_block(&mut guard, &hosts_path, "f2", &entry()).unwrap();
    let path = orphan(guard, dead_owner());

    let report = rt.block_on(reset(&state, false));
    assert!(report.is_clean(), "{report}");
    let lines = report.lines();
    assert_eq!(lines.len(), 2, "{report}");
    // Newest first.
    assert!(lines[0].contains("\"f2\""), "{report}");
    assert!(lines[1].contains("\"f1\""), "{report}");
    assert_eq!(std::fs::read(&hosts_path).unwrap(), HOSTS);
    assert!(!path.exists());

    let again = rt.block_on(reset(&state, false));
    assert!(again.nothing_to_do());
    assert_eq!(again.to_string(), "nothing to do");
}

#[test]
fn failed_undo_stays_in_the_journal() {
    let tmp = TempDir::new("failed");
    let state = StateDir::new(tmp.path().join("state"));
    let file = tmp.path().join("resolv.conf");
    std::fs::write(&file, "written by kubelan\n").unwrap();
    let guard = HostGuard::begin(&state, "connect").unwrap();
    let path = guard.journal_path().to_path_buf();
    let mut journal = guard.journal.clone();
    std::mem::forget(guard);
    let change = Change::ResolvConf {
        path: file.clone(),
        backup: tmp.path().join("state/missing-backup"),
        written_hash: fsutil::content_hash(b"written by kubelan\n"),
    };
    journal.owner = dead_owner();
    journal.changes = vec![change.clone()];
    journal.store(&path).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let report = rt.block_on(reset(&state, false));
    assert!(!report.is_clean(), "{report}");
    assert!(report.to_string().contains("could not undo"), "{report}");
    assert_eq!(Journal::load(&path).unwrap().changes, vec![change]);
}

#[test]
fn unreadable_journals_are_reported_and_kept() {
    let tmp = TempDir::new("junk");
    let state = StateDir::new(tmp.path().join("state"));
    state.ensure().unwrap();
    let junk = state.path().join("journal-1-2-3.json");
    std::fs::write(&junk, "{ not json").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let report = rt.block_on(reset(&state, true));
    assert!(!report.is_clean());
    assert!(report.to_string().contains("cannot be parsed"), "{report}");
    assert!(junk.exists());
}

#[test]
fn a_missing_state_dir_means_nothing_to_do() {
    let tmp = TempDir::new("none");
    let state = StateDir::new(tmp.path().join("never-created"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(rt.block_on(reset(&state, false)).nothing_to_do());
}

#[test]
fn file_changes_cannot_be_applied_from_their_record() {
    let tmp = TempDir::new("notapplicable");
    let state = StateDir::new(tmp.path().join("state"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut guard = HostGuard::begin(&state, "x").unwrap();
    let err = rt
        .block_on(guard.apply(Change::HostsBlock {
            path: "/etc/hosts".into(),
            marker: "m".into(),
            separator_added: false,
        }))
        .unwrap_err();
    assert!(err.to_string().contains("hosts::add_block"), "{err}");
    assert!(guard.changes().is_empty());
}
