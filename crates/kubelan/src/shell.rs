//! `kubelan completion SHELL`: shell code that asks this binary on each Tab (clap_complete's
//! `CompleteEnv`, as kubectl's scripts call `kubectl __complete`); contexts and namespaces
//! come from the kubeconfig files, never the network, so Services are not completed. Man
//! pages: a hidden `kubelan man DIR`, not an xtask or build script, since the definition
//! lives in this binary; packaging runs the built binary once.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, ValueEnum};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{CompleteEnv, Shells};

/// The variable that asks the binary for completions instead of running a command.
const COMPLETE_VAR: &str = "_KUBELAN_COMPLETE";

/// A shell `kubelan completion` writes code for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

/// The kubeconfig's contexts (`namespaces`: their namespaces), as candidates.
fn from_kubeconfig(namespaces: bool) -> Vec<CompletionCandidate> {
    let explicit = std::env::var_os("KUBECONFIG").map(PathBuf::from);
    let names = kubelan_cluster::kubeconfig::context_names(explicit.as_deref(), namespaces);
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// The command line with its dynamic values.
fn command() -> clap::Command {
    crate::Cli::command()
        .mut_arg("context", |a| {
            a.add(ArgValueCandidates::new(|| from_kubeconfig(false)))
        })
        .mut_arg("namespace", |a| {
            a.add(ArgValueCandidates::new(|| from_kubeconfig(true)))
        })
}

/// Answers a shell's completion request and exits, when this run is one.
pub(crate) fn answer_if_asked() {
    CompleteEnv::with_factory(command)
        .var(COMPLETE_VAR)
        .complete();
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
