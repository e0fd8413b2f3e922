//! The Debian package (issue 21): `scripts/package.sh` packages the binary under test
//! (no second build), the .deb installs into a throwaway root with dpkg (never the
//! machine's own), the installed `kubelan`, `kubectl-lan` and `kubectl_complete-lan` run,
//! man pages, completions and the gateway's unit template are where Debian looks for them,
//! nothing is enabled, removal leaves nothing behind, lintian reports no error, and
//! systemd accepts the gateway's unit (verified and its sandbox scored, offline). Needs
//! root, cargo-deb, dpkg-dev, lintian, zsh, man and systemd-analyze (`scripts/deps.sh`
//! installs them); CI runs it with `KUBELAN_E2E_REQUIRED=1`, so that a missing tool fails
//! rather than skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use kubelan_testkit::{TempDir, kubelan_bin, ok, root_or_skip, run, text};

/// `scripts/package.sh` for the profile of the binary under test; the .deb's path.
fn package() -> PathBuf {
    let bin = kubelan_bin();
    let profile_dir = bin.parent().and_then(Path::file_name).unwrap();
    let profile = match profile_dir.to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = ok(Command::new(workspace.join("scripts/package.sh"))
        .args(["--profile", profile, "--no-build", "--fast"])
        .current_dir(&workspace));
    let deb = PathBuf::from(out.lines().last().unwrap_or_default());
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "package.sh printed no .deb:\n{out}"
    );
    deb
}

/// `dpkg --root ROOT ARGS…`: dpkg with ROOT's own database, so the machine's is never read
/// or written. The dependencies (nftables, iproute2) are not in ROOT, hence
/// `--force-depends`.
fn dpkg(root: &Path, args: &[&str]) -> String {
    ok(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "--force-not-root"])
        .args(args))
}

/// Runs `program ARGS` and returns stdout + stderr, failing the test when it fails.
fn output(program: &Path, args: &[&str]) -> String {
    let out = run(Command::new(program).args(args));
    assert!(
        out.status.success(),
        "{program:?} {args:?}:\n{}",
        text(&out)
    );
    text(&out)
}

/// The installed `_kubelan`, autoloaded from `fpath` by compinit as zsh does with vendor
/// completions (pointed at the binary under test, since /usr/bin/kubelan is not this
/// machine's): Tab after `kubelan con` in an interactive zsh (on a pty) makes `connect`.
fn zsh_completes_from_fpath(installed: &Path, dir: &TempDir) {
    let fpath = dir.join("zsh-fpath");
    std::fs::create_dir_all(&fpath).unwrap();
    let script = std::fs::read_to_string(installed).unwrap();
    let script = script.replace("/usr/bin/kubelan", kubelan_bin().to_str().unwrap());
    std::fs::write(fpath.join("_kubelan"), script).unwrap();
    // `kubelan` must be a command for zsh to complete it: a function stands in.
    let driver = r#"
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z "PS1='> '; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D; kubelan() { :; }"
zpty -n -w z $'kubelan con\t'
out=
for i in {1..100}; do
  zpty -r -t z chunk && out+=$chunk
  [[ $out == *'kubelan connect'* ]] && break
  sleep 0.1
done
zpty -d z
print -r -- "$out"
"#;
    let out = output(
        Path::new("zsh"),
        &["-f", "-c", driver, "zsh", fpath.to_str().unwrap()],
    );
    assert!(
        out.contains("kubelan connect"),
        "zsh did not complete:\n{out}"
    );
}

/// systemd's own checks of the installed gateway unit, offline against `root` (no systemd
/// runs as PID 1 here): `verify` loads an instance as the manager would (every directive
/// known, ExecStart's program there, dependencies resolvable), and `security` scores its
/// sandbox (capabilities, namespaces, system calls): an exposure above 5.0 (`--threshold`
/// counts tenths) fails; it is 4.3 ("OK") today. The root gets the machine's own unit
/// files (the targets the unit depends on by default) and an instance's settings file, as
/// an administrator would write it.
fn systemd_accepts_the_gateway_unit(root: &Path) {
    let units = root.join("lib/systemd/system");
    ok(Command::new("cp").args(["-an", "/lib/systemd/system/.", units.to_str().unwrap()]));
    std::fs::create_dir_all(root.join("etc/kubelan")).unwrap();
    std::fs::copy(
        root.join("usr/share/doc/kubelan/examples/gateway.env"),
        root.join("etc/kubelan/gateway-office.env"),
    )
    .unwrap();
    let root_arg = format!("--root={}", root.display());
    let instance = "kubelan-gateway@office.service";
    let verify =
        run(Command::new("systemd-analyze").args(["verify", "--man=no", &root_arg, instance]));
    // Unknown directives are only warnings for systemd ("ignoring"): any line counts.
    assert!(
        verify.status.success() && text(&verify).trim().is_empty(),
        "systemd-analyze verify {instance}:\n{}",
        text(&verify)
    );
    let security = run(Command::new("systemd-analyze").args([
        "security",
        "--offline=true",
        "--threshold=50",
        &root_arg,
        instance,
    ]));
    let report = text(&security);
    assert!(
        security.status.success(),
        "the unit's sandbox scores above 5.0 (exposure):\n{report}"
    );
    eprintln!(
        "{}",
        report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("no exposure line")
    );
}

#[test]
fn deb_installs_into_a_throwaway_root_and_lintian_reports_no_error() {
    if !root_or_skip(
        "the Debian package",
        &[
            "cargo-deb",
            "dpkg",
            "dpkg-shlibdeps",
            "lintian",
            "bash",
            "zsh",
            "man",
            "systemd-analyze",
        ],
        &[],
    ) {
        return;
    }
    let deb = package();
    let deb_arg = deb.to_str().unwrap();

    // lintian first: its findings say more than a failed install would.
    let lint = run(Command::new("lintian").args(["--fail-on", "none", deb_arg]));
    let lint = text(&lint);
    let errors: Vec<&str> = lint.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian reports errors:\n{lint}");

    let dir = TempDir::new("deb");
    let root = dir.join("root");
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(d)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    dpkg(&root, &["--install", deb_arg]);
    let status = dpkg(&root, &["--status", "kubelan"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    for field in ["Depends: ", "Section: net", "Priority: optional"] {
        assert!(status.contains(field), "no {field:?}:\n{status}");
    }
    for dep in ["nftables", "iproute2", "libc6"] {
        assert!(status.contains(dep), "Depends lacks {dep}:\n{status}");
    }

    // The installed binary, and the kubectl plugin name (argv[0] decides).
    let version = env!("CARGO_PKG_VERSION");
    let kubelan = root.join("usr/bin/kubelan");
    assert_eq!(
        output(&kubelan, &["--version"]).trim(),
        format!("kubelan {version}")
    );
    let link = root.join("usr/bin/kubectl-lan");
    assert_eq!(
        std::fs::read_link(&link).unwrap_or_else(|e| panic!("usr/bin/kubectl-lan: {e}")),
        Path::new("kubelan"),
        "kubectl-lan is a relative link"
    );
    assert_eq!(
        output(&link, &["--version"]).trim(),
        format!("kubectl-lan {version}")
    );
    // kubectl's plugin completion: `kubectl lan con<Tab>` runs `kubectl_complete-lan con`.
    let completer = root.join("usr/bin/kubectl_complete-lan");
    assert_eq!(
        std::fs::read_link(&completer)
            .unwrap_or_else(|e| panic!("usr/bin/kubectl_complete-lan: {e}")),
        Path::new("kubelan"),
        "kubectl_complete-lan is a relative link"
    );
    let answer = output(&completer, &["con"]);
    assert!(
        answer.starts_with("connect\t") && answer.ends_with("\n:4\n"),
        "{answer}"
    );

    // Man pages: compressed, one per subcommand, kubectl-lan's is kubelan's; they render.
    let man1 = root.join("usr/share/man/man1");
    for page in [
        "kubelan.1.gz",
        "kubelan-gateway.1.gz",
        "kubelan-connect.1.gz",
    ] {
        assert!(man1.join(page).is_file(), "no {page}");
    }
    let rendered = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(man1.join("kubectl-lan.1.gz"))
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0"));
    assert!(
        rendered.status.success() && rendered.stderr.is_empty(),
        "man kubectl-lan:\n{}",
        text(&rendered)
    );
    assert!(String::from_utf8_lossy(&rendered.stdout).contains("kubelan"));

    // Completions call the installed binary, not the one they were generated with.
    let completions = [
        "usr/share/bash-completion/completions/kubelan",
        "usr/share/zsh/vendor-completions/_kubelan",
        "usr/share/fish/vendor_completions.d/kubelan.fish",
    ];
    let built = kubelan_bin();
    for file in completions {
        let script =
            std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(script.contains("/usr/bin/kubelan"), "{file}:\n{script}");
        assert!(
            !script.contains(built.to_str().unwrap()),
            "{file} calls the build's binary:\n{script}"
        );
    }
    let bash = root.join(completions[0]);
    let loaded = output(
        Path::new("bash"),
        &[
            "-c",
            &format!("source {} && complete -p kubelan", bash.display()),
        ],
    );
    assert!(
        loaded.contains("_clap_complete_kubelan kubelan"),
        "{loaded}"
    );
    zsh_completes_from_fpath(&root.join(completions[1]), &dir);

    // The gateway's unit template is shipped, and nothing enables or starts it: no
    // maintainer scripts, no links under /etc.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/kubelan-gateway@.service"))
        .expect("the gateway's unit template");
    assert!(
        unit.contains("ExecStart=/usr/bin/kubelan gateway $KUBELAN_GATEWAY_ARGS")
            && unit.contains("EnvironmentFile=/etc/kubelan/gateway-%i.env"),
        "{unit}"
    );
    for script in ["postinst", "prerm", "postrm", "preinst"] {
        assert!(
            !admin.join(format!("info/kubelan.{script}")).exists(),
            "the package has a {script}"
        );
    }
    assert!(!root.join("etc").exists(), "the package installs into /etc");
    for doc in [
        "copyright",
        "changelog.Debian.gz",
        "README.md",
        "examples/gateway.env",
    ] {
        assert!(
            root.join("usr/share/doc/kubelan").join(doc).is_file(),
            "no doc {doc}"
        );
    }

    systemd_accepts_the_gateway_unit(&root);

    // Removal takes every file back.
    dpkg(&root, &["--purge", "kubelan"]);
    for gone in [
        "usr/bin/kubelan",
        "usr/bin/kubectl-lan",
        "usr/bin/kubectl_complete-lan",
        "usr/share/man/man1/kubelan.1.gz",
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(gone)).is_err(),
            "{gone} is left after purge"
        );
    }
}
