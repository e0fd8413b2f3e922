//! End-to-end tests of kubelan as a kubectl user meets it (issue 21): kubectl's global
//! flags before or after the subcommand mean the same; `kubectl lan` runs kubelan and
//! `kubectl lan <Tab>` completes through `kubectl_complete-lan`. Needs root (the lab); CI runs it
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

/// kubectl's minor version when it is 1.x, from `kubectl version --client -o json`.
fn kubectl_minor() -> Option<u32> {
    let (ok, out, _) = run(Command::new("kubectl").args(["version", "--client", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
    let client = &v["clientVersion"];
    if client["major"] != "1" {
        return None;
    }
    // "32", or "32+" on some builds.
    let minor = client["minor"].as_str()?;
    minor.trim_end_matches('+').parse().ok()
}

/// `kubectl lan <Tab>`: kubectl (1.26 and later) runs `kubectl_complete-lan ARG… WORD`
/// from PATH and reads cobra's format (candidates, then `:DIRECTIVE`).
#[test]
fn kubectl_completes_the_lan_plugin_arguments() {
    if !kubelan_testkit::root_or_skip("kubectl plugin completion", &["kubectl"], &[]) {
        return;
    }
    let dir = kubelan_testkit::TempDir::new("plugin-complete");
    for name in ["kubectl-lan", "kubectl_complete-lan"] {
        std::os::unix::fs::symlink(kubelan_testkit::kubelan_bin(), dir.join(name)).unwrap();
    }
    // The protocol, asked directly.
    let completer = || Command::new(dir.join("kubectl_complete-lan"));
    let (ok, out, err) = run(completer().arg("con"));
    assert!(
        ok && err.is_empty(),
        "kubectl_complete-lan con:\n{out}{err}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("connect\t") && lines[1] == ":4",
        "{out}"
    );
    // As cobra programs take it (`__complete` first), the same answer.
    assert_eq!(run(completer().args(["__complete", "con"])).1, out);
    // An empty word: every visible subcommand, no hidden one.
    let (_, all, _) = run(completer().arg(""));
    for sub in ["replace\t", "forward\t", "status\t", "completion\t"] {
        assert!(all.contains(sub), "no {sub}:\n{all}");
    }
    assert!(!all.contains("relay\t") && !all.contains("man\t"), "{all}");
    let (_, flags, _) = run(completer().args(["status", "--con"]));
    assert!(flags.starts_with("--context\t"), "{flags}");

    // Through the machine's kubectl, when it completes plugins.
    match kubectl_minor() {
        Some(minor) if minor >= 26 => {
            let path = format!("{}:{}", dir, std::env::var("PATH").unwrap_or_default());
            let (ok, out, err) = run(Command::new("kubectl")
                .args(["__complete", "lan", "con"])
                .env("PATH", &path));
            assert!(ok, "kubectl __complete lan con:\n{out}{err}");
            let lines: Vec<&str> = out.lines().collect();
            assert!(
                lines.first().is_some_and(|l| l.starts_with("connect"))
                    && lines.last() == Some(&":4"),
                "kubectl __complete lan con:\n{out}{err}"
            );
        }
        minor => eprintln!(
            "skipping `kubectl __complete lan con`: this kubectl (1.{}) predates plugin \
             completion (1.26); kubectl_complete-lan's protocol was checked directly",
            minor.map_or("?".into(), |m| m.to_string())
        ),
    }
}
