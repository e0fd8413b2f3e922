//! End-to-end tests of kubelan as a kubectl user meets it (issue 21): kubectl's global
//! flags before or after the subcommand mean the same. Needs root (the lab); CI runs it
//! with `KUBELAN_E2E_REQUIRED=1`.

use std::path::Path;
use std::process::Command;

use kubelan_testkit::{Lab, kubelan, lab_available, root_snapshot};

/// `kubelan ARGS` on this machine, with no `KUBECONFIG` of the caller's: (success, stdout,
/// stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .env_remove("KUBECONFIG")
        .output()
        .expect("running kubelan");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The kubeconfig's current context.
fn current_context(kubeconfig: &Path) -> String {
    kube::config::Kubeconfig::read_from(kubeconfig)
        .expect("the lab's kubeconfig")
        .current_context
        .expect("a current context")
}

#[test]
fn global_flags_before_and_after_the_subcommand_mean_the_same() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("kc", &[]);
    let kc = lab.kubeconfig();
    let kc = kc.to_str().unwrap();
    let ctx = current_context(Path::new(kc));
    let globals = ["--kubeconfig", kc, "--context", &ctx, "-n", "default"];

    let before = run(kubelan().args(globals).args(["status", "-o", "json"]));
    let after = run(kubelan().args(["status", "-o", "json"]).args(globals));
    assert!(
        before.0,
        "kubelan --kubeconfig … status failed:\n{}",
        before.2
    );
    assert_eq!(before, after, "the same flags on either side of `status`");
    let facts: serde_json::Value = serde_json::from_str(&before.1).expect("status JSON");
    // Not connected: the preview document (docs/json.md).
    assert_eq!(facts["apiVersion"], "kubelan.dev/v1", "{facts:#}");
    assert_eq!(facts["type"], "ConnectPreview", "{facts:#}");
    assert!(
        before.1.contains(&ctx),
        "status names the context {ctx}: {facts:#}"
    );

    // The flags reach the command on both sides: an unknown context fails the same way.
    let wrong = ["--kubeconfig", kc, "--context", "no-such-context"];
    let before = run(kubelan().args(wrong).arg("status"));
    let after = run(kubelan().arg("status").args(wrong));
    assert!(
        !before.0 && before.2.contains("no-such-context"),
        "{}",
        before.2
    );
    assert_eq!(before, after);

    lab.down();
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}

/// kubectl's plugin: `kubectl-lan` on PATH (here a link to the binary under test).
#[test]
fn kubectl_finds_and_runs_the_lan_plugin() {
    if !lab_available() || !kubelan_testkit::root_or_skip("kubectl plugin", &["kubectl"], &[]) {
        return;
    }
    let dir = kubelan_testkit::TempDir::new("plugin");
    std::os::unix::fs::symlink(kubelan_testkit::kubelan_bin(), dir.join("kubectl-lan")).unwrap();
    let path = format!("{}:{}", dir, std::env::var("PATH").unwrap_or_default());
    let kubectl = || {
        let mut c = Command::new("kubectl");
        c.env("PATH", &path);
        c
    };
    let (ok, out, err) = run(kubectl().args(["plugin", "list"]));
    assert!(ok, "kubectl plugin list:\n{out}{err}");
    assert!(
        out.contains(&dir.join("kubectl-lan").display().to_string()),
        "{out}"
    );

    let (ok, out, _) = run(kubectl().args(["lan", "status", "--help"]));
    assert!(ok && out.contains("Usage: kubectl lan status"), "{out}");

    let root_before = root_snapshot();
    let lab = Lab::up("kp", &[]);
    let kc = lab.kubeconfig();
    let (ok, via_kubectl, err) = run(kubectl()
        .args(["lan", "status", "-o", "json", "--kubeconfig"])
        .arg(&kc));
    assert!(ok, "kubectl lan status failed:\n{err}");
    let (_, direct, _) = run(kubelan()
        .args(["status", "-o", "json", "--kubeconfig"])
        .arg(&kc));
    assert_eq!(via_kubectl, direct, "kubectl lan status is kubelan status");
    lab.down();
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}
