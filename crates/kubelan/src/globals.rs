//! The flags every subcommand takes before or after its name, as kubectl's global flags
//! (`kubelan_cluster::global_flags`): subcommands do not define them; after parsing,
//! [`apply`] hands each subcommand the ones it uses.
//!
//! Like kubectl, the cluster flags (`--kubeconfig`, `--context`, `-n`) and `-v` are accepted
//! and ignored where they mean nothing (`kubectl version -n x` works); like kubectl, which
//! knows `-o` only on commands that print formats, `-o` is refused where there is no
//! format to choose, with an error naming the flag.

use kubelan_cluster::KubeArgs;
use kubelan_cluster::global_flags::GlobalArgs;

use crate::{Command, Output};

/// Hands `command` the global flags it uses; the error (one sentence naming the flag) is
/// for a flag it cannot take: several `-n`, or `-o` where there is no format.
pub(crate) fn apply(g: &GlobalArgs, command: &mut Command) -> Result<(), String> {
    let output = g.output.unwrap_or_default();
    // The cluster and the output of a command that takes both.
    let both = |kube: &mut KubeArgs, out: &mut Output, name| -> Result<bool, String> {
        (*kube, *out) = (g.kube(name)?, output);
        Ok(true)
    };
    let session = |s: &mut crate::expose::SessionArgs, out: Option<&mut Output>, name| {
        (s.kube, s.namespace) = (g.kubeconfig(), g.namespace(name)?);
        Ok::<_, String>(out.map(|o| *o = output).is_some())
    };
    let agent_ns =
        |name, default: &String| Ok::<_, String>(g.namespace(name)?.unwrap_or(default.clone()));
    let takes_output = match command {
        Command::Forward(a) => {
            (a.kube, a.namespace, a.output) = (g.kubeconfig(), g.namespace.clone(), output);
            true
        }
        Command::Expose(a) => session(&mut a.session, Some(&mut a.output), "expose")?,
        Command::Replace(a) => session(&mut a.session, Some(&mut a.output), "replace")?,
        Command::Run(a) => session(&mut a.session, None, "run")?,
        Command::Proxy(a) => g.kube("proxy").map(|k| a.tunnel.kube = k).map(|()| false)?,
        Command::Connect(a) => both(&mut a.tunnel.kube, &mut a.output, "connect")?,
        Command::Gateway(a) => both(&mut a.connect.tunnel.kube, &mut a.connect.output, "gateway")?,
        Command::Doctor(a) => both(&mut a.kube, &mut a.output, "doctor")?,
        Command::Routes(a) => both(&mut a.kube, &mut a.output, "routes")?,
        Command::Status(a) => both(&mut a.kube, &mut a.output, "status")?,
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
        Command::Quit
        | Command::Reset { .. }
        | Command::Agent(_)
        | Command::CrashWatcher(_)
        | Command::Completion { .. }
        | Command::Man { .. } => false,
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

    /// The command `line` parses to, global flags applied, as text to compare.
    fn parsed(line: &str) -> Result<String, String> {
        let mut cli =
            crate::Cli::try_parse_from(line.split_whitespace()).map_err(|e| e.to_string())?;
        super::apply(&cli.globals, &mut cli.command)?;
        Ok(format!("{:?}", cli.command))
    }

    #[test]
    fn global_flags_mean_the_same_before_and_after_the_subcommand() {
        let globals = "--kubeconfig /k.yaml --context ctx -n team";
        let modes = "forward svc/web 8080:80,expose 8080,replace svc/web 8080:80,run -- true,proxy,\
            connect,gateway --mode node --lan 10.1.0.0/24,doctor,routes,status,install,uninstall,rbac";
        for mode in modes.split(',') {
            let (name, rest) = mode.split_once(' ').unwrap_or((mode, ""));
            let before = parsed(&format!("kubelan {globals} {mode}")).expect(mode);
            let after = parsed(&format!("kubelan {name} {globals} {rest}"));
            assert_eq!(after, Ok(before.clone()), "{mode}");
            // The flags reached the subcommand (rbac takes only the namespace).
            assert!(before.contains("\"team\""), "{mode}: {before}");
            let cluster = before.contains("/k.yaml") && before.contains("\"ctx\"");
            assert!(cluster || name == "rbac", "{mode}: {before}");
            assert!(
                !parsed(&format!("kubelan {mode}"))
                    .unwrap()
                    .contains("\"team\"")
            );
        }
    }

    #[test]
    fn output_and_namespace_rules() {
        for mode in ["status", "routes", "doctor", "connect", "lab status"] {
            let a = parsed(&format!("kubelan -o json {mode}")).unwrap();
            assert_eq!(
                Ok(a.clone()),
                parsed(&format!("kubelan {mode} --output json"))
            );
            assert!(a.contains("output: Json"), "{a}");
        }
        for line in ["-o json proxy", "install -o human", "lab down -o json"] {
            let e = parsed(&format!("kubelan {line}")).unwrap_err();
            assert!(e.starts_with("-o/--output"), "{line}: {e}");
        }
        let install = parsed("kubelan install").unwrap();
        assert!(
            install.contains("namespace: \"kubelan-system\""),
            "{install}"
        );
        let install = parsed("kubelan -n ops install").unwrap();
        assert!(install.contains("namespace: \"ops\""), "{install}");
        let fwd = parsed("kubelan forward -n a -n b").unwrap();
        assert!(fwd.contains("namespace: [\"a\", \"b\"]"), "{fwd}");
        // Given on both sides, clap keeps the subcommand side's (kubectl: the last wins).
        let fwd = parsed("kubelan -n a forward -n b").unwrap();
        assert!(fwd.contains("namespace: [\"b\"]"), "{fwd}");
        let e = parsed("kubelan status -n a -n b").unwrap_err();
        assert!(e.contains("-n/--namespace was given 2 times"), "{e}");
        // Ignored where it means nothing, as kubectl does.
        assert!(parsed("kubelan reset -n x --context c").is_ok());
    }
}
