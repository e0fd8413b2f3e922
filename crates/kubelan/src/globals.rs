//! The flags every subcommand takes before or after its name, as kubectl's global flags
//! (`kubelan_cluster::global_flags`): subcommands do not define them; after parsing,
//! [`apply`] hands each subcommand the ones it uses.
//!
//! Like kubectl, the cluster flags (`--kubeconfig`, `--context`, `-n`) and `-v` are accepted
//! and ignored where they mean nothing (`kubectl version -n x` works); like kubectl, which
//! knows `-o` only on commands that print formats, `-o` is refused where there is no
//! format to choose, with an error naming the flag.

use kubelan_cluster::global_flags::GlobalArgs;

use crate::{Command, Output};

/// Hands `command` the global flags it uses; the error (one sentence naming the flag) is
/// for a flag it cannot take: several `-n`, or `-o` where there is no format.
pub(crate) fn apply(g: &GlobalArgs, command: &mut Command) -> Result<(), String> {
    let output = g.output.unwrap_or_default();
    let session = |s: &mut crate::expose::SessionArgs, name| -> Result<(), String> {
        s.kube = g.kubeconfig();
        s.namespace = g.namespace(name)?;
        Ok(())
    };
    let agent_ns =
        |name, default: &String| Ok::<_, String>(g.namespace(name)?.unwrap_or(default.clone()));
    let takes_output = match command {
        Command::Forward(a) => {
            (a.kube, a.namespace, a.output) = (g.kubeconfig(), g.namespace.clone(), output);
            true
        }
        Command::Expose(a) => {
            session(&mut a.session, "expose")?;
            a.output = output;
            true
        }
        Command::Replace(a) => {
            session(&mut a.session, "replace")?;
            a.output = output;
            true
        }
        Command::Run(a) => session(&mut a.session, "run").map(|()| false)?,
        Command::Proxy(a) => g.kube("proxy").map(|k| a.tunnel.kube = k).map(|()| false)?,
        Command::Connect(a) => {
            (a.tunnel.kube, a.output) = (g.kube("connect")?, output);
            true
        }
        Command::Gateway(a) => {
            (a.connect.tunnel.kube, a.connect.output) = (g.kube("gateway")?, output);
            true
        }
        Command::Doctor(a) => {
            (a.kube, a.output) = (g.kube("doctor")?, output);
            true
        }
        Command::Routes(a) => {
            (a.kube, a.output) = (g.kube("routes")?, output);
            true
        }
        Command::Status(a) => {
            (a.kube, a.output) = (g.kube("status")?, output);
            true
        }
        Command::Install(a) => {
            (a.kube, a.namespace) = (g.kubeconfig(), agent_ns("install", &a.namespace)?);
            false
        }
        Command::Uninstall(a) => {
            (a.kube, a.namespace) = (g.kubeconfig(), agent_ns("uninstall", &a.namespace)?);
            false
        }
        Command::Rbac(a) => {
            a.namespace = agent_ns("rbac", &a.namespace)?;
            false
        }
        Command::Relay(a) => {
            let pod_ns = std::env::var("POD_NAMESPACE").ok();
            a.namespace = g.namespace("relay")?.or(pod_ns);
            false
        }
        Command::Lab(a) => a.set_json(output == Output::Json),
        Command::Quit | Command::Reset { .. } | Command::Agent(_) | Command::CrashWatcher(_) => {
            false
        }
    };
    if g.output.is_some() && !takes_output {
        return Err(
            "-o/--output: this command prints no format to choose; leave the flag out".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::Cli;

    /// The command `argv` parses to, global flags applied, as text to compare.
    fn parsed(argv: &[&str]) -> Result<String, String> {
        let mut cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        super::apply(&cli.globals, &mut cli.command)?;
        Ok(format!("{:?}", cli.command))
    }

    const GLOBALS: &[&str] = &["--kubeconfig", "/k.yaml", "--context", "ctx", "-n", "team"];

    /// Every mode with the arguments it needs.
    const MODES: &[&[&str]] = &[
        &["forward", "svc/web", "8080:80"],
        &["expose", "8080"],
        &["replace", "svc/web", "8080:80"],
        &["run", "--", "true"],
        &["proxy"],
        &["connect"],
        &["gateway", "--mode", "node", "--lan", "10.1.0.0/24"],
        &["doctor"],
        &["routes"],
        &["status"],
        &["install"],
        &["uninstall"],
        &["rbac"],
    ];

    #[test]
    fn global_flags_mean_the_same_before_and_after_the_subcommand() {
        for mode in MODES {
            let (name, rest) = mode.split_first().unwrap();
            let before: Vec<&str> = ["kubelan"]
                .iter()
                .chain(GLOBALS)
                .chain(mode.iter())
                .copied()
                .collect();
            let after: Vec<&str> = ["kubelan", name]
                .iter()
                .chain(GLOBALS)
                .chain(rest)
                .copied()
                .collect();
            let before = parsed(&before).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(Ok(before.clone()), parsed(&after), "{mode:?}");
            // The flags reached the subcommand (rbac takes only the namespace).
            assert!(before.contains("\"team\""), "{mode:?}: {before}");
            if *name != "rbac" {
                assert!(
                    before.contains("/k.yaml") && before.contains("\"ctx\""),
                    "{mode:?}: {before}"
                );
            }
            let plain = parsed(&[&["kubelan"][..], mode].concat()).unwrap();
            assert!(!plain.contains("\"team\""), "{mode:?}: {plain}");
        }
    }

    #[test]
    fn output_is_global_where_a_command_has_formats_and_refused_elsewhere() {
        for mode in ["status", "routes", "doctor", "connect"] {
            let a = parsed(&["kubelan", "-o", "json", mode]).unwrap();
            assert_eq!(
                Ok(a.clone()),
                parsed(&["kubelan", mode, "--output", "json"])
            );
            assert!(a.contains("output: Json"), "{a}");
        }
        let lab = parsed(&["kubelan", "-o", "json", "lab", "status"]).unwrap();
        assert!(lab.contains("output: Json"), "{lab}");
        for argv in [
            &["kubelan", "-o", "json", "proxy"][..],
            &["kubelan", "install", "-o", "human"],
            &["kubelan", "lab", "down", "-o", "json"],
        ] {
            let e = parsed(argv).unwrap_err();
            assert!(e.starts_with("-o/--output"), "{argv:?}: {e}");
        }
    }

    #[test]
    fn namespaces_install_defaults_and_several_only_for_forward() {
        let install = parsed(&["kubelan", "install"]).unwrap();
        assert!(
            install.contains("namespace: \"kubelan-system\""),
            "{install}"
        );
        let install = parsed(&["kubelan", "-n", "ops", "install"]).unwrap();
        assert!(install.contains("namespace: \"ops\""), "{install}");
        let fwd = parsed(&["kubelan", "forward", "-n", "a", "-n", "b"]).unwrap();
        assert!(fwd.contains("namespace: [\"a\", \"b\"]"), "{fwd}");
        // clap keeps the subcommand side's values of a global flag given on both sides
        // (kubectl: the last one wins).
        let fwd = parsed(&["kubelan", "-n", "a", "forward", "-n", "b"]).unwrap();
        assert!(fwd.contains("namespace: [\"b\"]"), "{fwd}");
        let e = parsed(&["kubelan", "status", "-n", "a", "-n", "b"]).unwrap_err();
        assert!(e.contains("-n/--namespace was given 2 times"), "{e}");
        // Ignored where it means nothing, as kubectl does.
        assert!(parsed(&["kubelan", "reset", "-n", "x", "--context", "c"]).is_ok());
    }
}
