//! `kubelan completion SHELL` (issue 21): the scripts load in bash, zsh and fish, and
//! bash and fish, asked as a Tab would ask, offer the subcommands and the kubeconfig's
//! contexts. And `kubelan man DIR`: every page renders without a warning from man.
//! zsh, fish and man must be installed (scripts/deps.sh); CI runs as root with
//! `KUBELAN_E2E_REQUIRED=1`, so that a missing shell fails rather than skips.

use std::process::Command;

use kubelan_testkit::{TempDir, kubelan_bin, root_or_skip};

/// `shell -c script` with `$KUBELAN` the binary under test: (success, stdout + stderr).
fn shell(shell: &str, script: &str, kubeconfig: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(shell);
    cmd.args(["-c", script]).env("KUBELAN", kubelan_bin());
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
