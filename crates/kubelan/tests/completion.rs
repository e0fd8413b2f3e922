//! `kubelan completion SHELL` (issue 21): the scripts load in bash, zsh and fish, and
//! bash and fish, asked as a Tab would ask, offer the subcommands and the kubeconfig's
//! contexts; on the lab, bash's Tab offers the cluster's Services and namespaces, and an
//! API server that does not answer costs at most the deadline, with the kubeconfig's
//! names. And `kubelan man DIR`: every page renders without a warning from man.
//! zsh, fish and man must be installed (scripts/deps.sh); CI runs as root with
//! `KUBELAN_E2E_REQUIRED=1`, so that a missing shell fails rather than skips.

use std::process::Command;
use std::time::{Duration, Instant};

use kubelan_testkit::{Lab, TempDir, kubelan_bin, lab_available, root_or_skip, root_snapshot};

/// `shell -c script` with `$KUBELAN` the binary under test: (success, stdout + stderr).
fn shell(shell: &str, script: &str, kubeconfig: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(shell);
    cmd.args(["-c", script])
        .env("KUBELAN", kubelan_bin())
        .env_remove("KUBELAN_COMPLETION_TIMEOUT_MS");
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env_remove("KUBECONFIG"),
    };
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {shell}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:1\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: lab-east\n  context:\n    cluster: a\n    user: u\n    namespace: team-east\n- name: lab-west\n  context:\n    cluster: a\n    user: u\ncurrent-context: lab-east\n";

/// Bash's completion function for `words` with the cursor on the last one, as a Tab runs it.
fn bash_completes(words: &[&str], kubeconfig: Option<&str>) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source <(\"$KUBELAN\" completion bash) && complete -p kubelan && \
         COMP_WORDS=({words}) && COMP_CWORD={cword} && COMP_TYPE=9 && \
         _clap_complete_kubelan kubelan '{cur}' '{prev}' && echo \"reply: ${{COMPREPLY[*]}}\"",
        words = quoted.join(" "),
        cword = words.len() - 1,
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let (ok, out) = shell("bash", &script, kubeconfig);
    assert!(ok, "bash completion failed:\n{out}");
    out
}

#[test]
fn bash_completes_subcommands_flags_and_contexts() {
    let out = bash_completes(&["kubelan", "con"], None);
    assert!(out.contains("-F _clap_complete_kubelan kubelan"), "{out}");
    assert!(out.contains("reply: connect"), "{out}");
    let out = bash_completes(&["kubelan", "status", "--kube"], None);
    assert!(out.contains("reply: --kubeconfig"), "{out}");

    let dir = TempDir::new("complete");
    let kc = dir.join("config");
    std::fs::write(&kc, KUBECONFIG).unwrap();
    let kc = kc.to_str().unwrap();
    let out = bash_completes(&["kubelan", "--context", "lab-"], Some(kc));
    assert!(out.contains("reply: lab-east lab-west"), "{out}");
    let out = bash_completes(&["kubelan", "status", "-n", "te"], Some(kc));
    assert!(out.contains("reply: team-east"), "{out}");
}

/// The lab's Services and a namespace only the cluster knows, on Tab; the cluster is the
/// one the command line names.
#[test]
fn bash_asks_the_cluster_for_services_and_namespaces() {
    if !lab_available() || !root_or_skip("cluster completion", &["kubectl"], &[]) {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("cmp", &[]);
    let kc = lab.kubeconfig();
    // kubectl apply (JSON): the lab's API decodes protobuf, which `kubectl create` sends,
    // only for a few kinds.
    let objects = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: only-in-cluster\n---\n\
        apiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  namespace: only-in-cluster\n\
        spec:\n  ports:\n  - port: 80\n";
    let (ok, out) = kubelan_testkit::kubectl(&kc, &["apply", "-f", "-"], Some(objects));
    assert!(ok, "kubectl apply:\n{out}");
    let kc = kc.to_str().unwrap();

    let out = bash_completes(&["kubelan", "replace", "svc/w"], Some(kc));
    assert!(out.contains("reply: svc/web\n"), "{out}");
    let out = bash_completes(
        &["kubelan", "forward", "svc/web", "8080:80", "svc/"],
        Some(kc),
    );
    assert!(out.contains("svc/web") && out.contains("svc/db"), "{out}");
    let out = bash_completes(&["kubelan", "-n", "only-"], Some(kc));
    assert!(out.contains("reply: only-in-cluster\n"), "{out}");
    let out = bash_completes(&["kubelan", "status", "--namespace", ""], Some(kc));
    assert!(
        out.contains("kube-system") && out.contains("only-in-cluster"),
        "{out}"
    );
    // The command line's --kubeconfig and -n choose the cluster and the namespace.
    let line = [
        "kubelan",
        "--kubeconfig",
        kc,
        "replace",
        "-n",
        "only-in-cluster",
        "svc/",
    ];
    let out = bash_completes(&line, None);
    assert!(out.contains("reply: svc/api\n"), "{out}");
    // kubectl's plugin completion asks the same cluster (`kubectl lan -n … replace svc/<Tab>`).
    let dir = TempDir::new("complete-plugin");
    let completer = dir.join("kubectl_complete-lan");
    std::os::unix::fs::symlink(kubelan_bin(), &completer).unwrap();
    let out = Command::new(&completer)
        .args([
            "--kubeconfig",
            kc,
            "-n",
            "only-in-cluster",
            "replace",
            "svc/",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out, "svc/api\n:4\n");

    lab.down();
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}

/// An API server that refuses or never answers: the kubeconfig's names, within the deadline.
#[test]
fn an_unreachable_cluster_costs_at_most_the_deadline() {
    let dir = TempDir::new("complete-down");
    // A listener that never accepts: the kernel completes the TCP handshake, then the TLS
    // handshake waits forever (a blackholed API server, on loopback).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (port, what) in [(1, "refused"), (silent_port, "silent")] {
        let kc = dir.join(format!("config-{port}"));
        std::fs::write(
            &kc,
            KUBECONFIG.replace("127.0.0.1:1", &format!("127.0.0.1:{port}")),
        )
        .unwrap();
        let kc = kc.to_str().unwrap();
        let started = Instant::now();
        let out = bash_completes(&["kubelan", "status", "-n", "te"], Some(kc));
        let took = started.elapsed();
        assert!(out.contains("reply: team-east\n"), "{what}: {out}");
        let out = bash_completes(&["kubelan", "replace", "svc/"], Some(kc));
        assert!(out.contains("reply: \n"), "{what}: {out}");
        let total = started.elapsed();
        eprintln!("{what} API server: -n in {took:?}, both Tabs in {total:?}");
        // The default deadline is 1 s per Tab; bash and the process take the rest.
        assert!(
            took < Duration::from_millis(2500),
            "{what}: -n took {took:?}"
        );
        assert!(
            total < Duration::from_secs(5),
            "{what}: two Tabs took {total:?}"
        );
    }
    drop(silent);
}

#[test]
fn zsh_fish_and_powershell_scripts_load() {
    if !root_or_skip("completion shells", &["zsh", "fish"], &[]) {
        return;
    }
    // -u: root's compinit would otherwise ask about directories other users own.
    let (ok, out) = shell(
        "zsh",
        "autoload -U compinit && compinit -u && source <(\"$KUBELAN\" completion zsh) && echo loaded",
        None,
    );
    assert!(ok && out.trim_end().ends_with("loaded"), "zsh:\n{out}");
    let (ok, out) = shell(
        "fish",
        "\"$KUBELAN\" completion fish | source; and complete -C 'kubelan con'",
        None,
    );
    assert!(ok && out.contains("connect"), "fish:\n{out}");
    let (ok, out) = shell("sh", "\"$KUBELAN\" completion powershell", None);
    assert!(ok && out.contains("Register-ArgumentCompleter"), "{out}");
}

#[test]
fn every_man_page_renders_without_warnings() {
    if !root_or_skip("man pages", &["man", "groff"], &[]) {
        return;
    }
    let dir = TempDir::new("man");
    let out = Command::new(kubelan_bin())
        .args(["man"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    // kubelan, its visible subcommands, lab's and serve's.
    assert!(pages.len() > 25, "{pages:?}");
    for sub in [
        "kubelan.1",
        "kubelan-connect.1",
        "kubelan-lab-up.1",
        "kubelan-completion.1",
    ] {
        assert!(pages.contains(&dir.join(sub)), "no {sub}: {pages:?}");
    }
    for page in &pages {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "man --warnings -l {}:\n{stderr}",
            page.display()
        );
        // man marks bold by overstriking (`N\bN`): keep the last of each pair.
        let text = String::from_utf8_lossy(&out.stdout);
        let plain: String = text.split('\u{8}').fold(String::new(), |mut acc, part| {
            if !acc.is_empty() && !part.is_empty() {
                acc.pop();
            }
            acc + part
        });
        assert!(
            plain.contains("NAME") && plain.contains("SYNOPSIS"),
            "{plain}"
        );
    }
}
