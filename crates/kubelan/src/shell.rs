//! `kubelan completion SHELL`: shell code that asks this binary on each Tab (clap_complete's
//! `CompleteEnv`, as kubectl's scripts call `kubectl __complete`). Contexts come from the
//! kubeconfig files; namespaces from them and, like kubectl, from the cluster, as do the
//! Services of `replace` and `forward`, under a short deadline that falls back to the files
//! alone (`kubelan_cluster::completion`). Run as `kubectl_complete-lan`, the binary answers
//! kubectl's plugin completion instead. Man pages: a hidden `kubelan man DIR`, not an xtask
//! or build script, since the definition lives in this binary; packaging runs the built
//! binary once.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use clap::{CommandFactory, ValueEnum};
use clap_complete::engine::{ArgValueCandidates, ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{CompleteEnv, Shells};
use kubelan_cluster::completion::{self, Scope};
use kubelan_cluster::kubeconfig::context_names;

/// The variable that asks the binary for completions instead of running a command.
const COMPLETE_VAR: &str = "_KUBELAN_COMPLETE";

/// The name kubectl (1.26 and later) runs to complete `kubectl lan …`.
const KUBECTL_COMPLETER: &str = "kubectl_complete-lan";

/// A shell `kubelan completion` writes code for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

fn candidates(names: Vec<String>) -> Vec<CompletionCandidate> {
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// The command line with its dynamic values, for the cluster `scope` names.
fn command(scope: Scope) -> clap::Command {
    let scope = Arc::new(scope);
    let (ctx_scope, ns_scope, svc_scope) = (scope.clone(), scope.clone(), scope);
    let services = move |current: &std::ffi::OsStr| {
        let current = current.to_string_lossy();
        let names = match completion::timeout() {
            Some(t) if completion::may_name_a_service(&current) => {
                completion::services(&svc_scope, t)
            }
            _ => Vec::new(),
        };
        candidates(completion::service_candidates(&current, &names))
    };
    crate::Cli::command()
        .mut_arg("context", |a| {
            a.add(ArgValueCandidates::new(move || {
                candidates(context_names(ctx_scope.kubeconfig.as_deref(), false))
            }))
        })
        .mut_arg("namespace", |a| {
            a.add(ArgValueCandidates::new(move || {
                let files = context_names(ns_scope.kubeconfig.as_deref(), true);
                let cluster = completion::timeout()
                    .map(|t| completion::namespaces(&ns_scope, t))
                    .unwrap_or_default();
                candidates(completion::merge(files, cluster))
            }))
        })
        // `mut_arg` moves an argument to the end, which would renumber `replace`'s
        // positionals: their indexes are made explicit.
        .mut_subcommand("replace", |c| {
            c.mut_arg("service", |a| {
                a.index(1).add(ArgValueCompleter::new(services.clone()))
            })
            .mut_arg("ports", |a| a.index(2))
        })
        .mut_subcommand("forward", |c| {
            c.mut_arg("targets", |a| a.add(ArgValueCompleter::new(services)))
        })
}

/// The cluster flags of the command line a shell asks about: the words after `--` and the
/// program's name.
fn scope_of(args: &[OsString]) -> Scope {
    let words: Vec<String> = args
        .iter()
        .skip_while(|a| *a != "--")
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Scope::from_args(&words, std::env::var_os("KUBECONFIG"))
}

/// Answers a shell's completion request and exits, when this run is one.
pub(crate) fn answer_if_asked() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = args.first().map(Path::new).and_then(Path::file_name);
    if argv0.is_some_and(|n| n == KUBECTL_COMPLETER) {
        answer_kubectl(&args[1..]);
    }
    if std::env::var_os(COMPLETE_VAR).is_none() {
        return;
    }
    let scope = scope_of(&args);
    CompleteEnv::with_factory(move || command(scope.clone()))
        .var(COMPLETE_VAR)
        .complete();
}

/// kubectl's plugin completion: `kubectl_complete-lan ARG… WORD` prints the candidates
/// for WORD in kubectl's format (`kubelan_cluster::completion::plugin_answer`) and exits.
fn answer_kubectl(args: &[OsString]) -> ! {
    let text: Vec<String> = args
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let words = completion::plugin_words(text);
    let scope = Scope::from_args(&words, std::env::var_os("KUBECONFIG"));
    let mut cmd = command(scope).name("kubectl-lan").bin_name("kubectl lan");
    let line: Vec<OsString> = std::iter::once("kubectl-lan".into())
        .chain(words.into_iter().map(OsString::from))
        .collect();
    let index = line.len() - 1;
    let cwd = std::env::current_dir().ok();
    let found = clap_complete::engine::complete(&mut cmd, line, index, cwd.as_deref());
    let found: Vec<(String, Option<String>)> = found
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let help = c.get_help().map(ToString::to_string);
            (c.get_value().to_string_lossy().into_owned(), help)
        })
        .collect();
    use std::io::Write as _;
    let answer = completion::plugin_answer(&found);
    let _ = std::io::stdout().lock().write_all(answer.as_bytes());
    std::process::exit(0)
}

/// Prints `shell`'s code that completes `kubelan` by calling this very binary.
pub(crate) fn completion(shell: Shell) -> anyhow::Result<()> {
    let name = shell.to_possible_value().expect("no skipped shells");
    let shells = Shells::builtins();
    let completer = shells
        .completer(name.get_name())
        .expect("clap_complete knows every shell of Shell");
    let exe = std::env::current_exe()?;
    let mut out = std::io::stdout().lock();
    completer.write_registration(
        COMPLETE_VAR,
        "kubelan",
        "kubelan",
        &exe.to_string_lossy(),
        &mut out,
    )?;
    Ok(())
}

/// Writes the man pages of kubelan and of each visible subcommand into `dir`
/// (`kubelan.1`, `kubelan-connect.1`, `kubelan-lab-up.1`, …).
pub(crate) fn man(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(crate::Cli::command(), dir)?;
    Ok(())
}
#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap_complete::engine::ArgValueCompleter;

    /// Each subcommand's positionals, in order, subcommands by name, with whether a completer asks the cluster.
    fn positionals(mut c: clap::Command) -> Vec<(String, String, bool)> {
        c.build();
        let mut all: Vec<(String, String, bool)> = Vec::new();
        for sub in c.get_subcommands() {
            let mut ps: Vec<_> = sub.get_positionals().collect();
            ps.sort_by_key(|p| p.get_index());
            for p in ps {
                let dynamic = p.get::<ArgValueCompleter>().is_some();
                all.push((sub.get_name().into(), p.get_id().to_string(), dynamic));
            }
        }
        // `mut_subcommand` moves a subcommand to the end too (its display order stays).
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn completion_sees_the_positionals_the_parser_sees() {
        let scope = kubelan_cluster::completion::Scope::default();
        let completing = positionals(super::command(scope));
        let parsing = positionals(crate::Cli::command());
        let names = |v: &[(String, String, bool)]| {
            v.iter()
                .map(|(s, p, _)| format!("{s} {p}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&completing), names(&parsing));
        let dynamic: Vec<_> = completing.iter().filter(|p| p.2).collect();
        assert_eq!(
            names(&dynamic.into_iter().cloned().collect::<Vec<_>>()),
            ["forward targets", "replace service"]
        );
    }
}
