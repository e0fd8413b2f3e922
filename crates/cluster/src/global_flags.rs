//! kubectl's global flags as kubelan takes them: `--kubeconfig`, `--context`, `-n`, `-v` and
//! `-o`, accepted before or after any subcommand (clap's `global`). The binary defines no
//! copy of them in its subcommands; it hands each subcommand the ones it uses.

use std::path::PathBuf;

use clap::{ArgAction, Args, ValueEnum};

use crate::kubeconfig::{KubeArgs, KubeconfigArgs};

/// The global `-o`: `human` (lines, or a live table on a terminal) or `json` (one object,
/// one per line for commands that keep running). The values carry no help of their own,
/// which would spread every `--help` over many more lines (clap prints a value's doc).
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Output {
    #[default]
    Human,
    Json,
}

/// kubectl's global flags, listed apart in every `--help`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Kubeconfig file (a colon-separated list is merged, as kubectl does) [default: ~/.kube/config].
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use [default: the current context].
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (`forward`: repeatable) [default: the context's namespace, else `default`;
    /// install, uninstall, rbac: the agent's, kubelan-system].
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE", action = ArgAction::Append)]
    pub namespace: Vec<String>,
    /// Show more log lines: `-v` adds progress and the Kubernetes client's and HTTP
    /// libraries' own messages, `-vv` debug, `-vvv` everything (KUBELAN_LOG overrides).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Output format, for the commands that print one [default: human].
    #[arg(short, long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<Output>,
}

impl GlobalArgs {
    /// `--kubeconfig` and `--context`.
    pub fn kubeconfig(&self) -> KubeconfigArgs {
        KubeconfigArgs {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    /// The one namespace of `kubelan <command>`, which takes one.
    ///
    /// # Errors
    /// `-n` given several times, as a sentence naming the flag.
    pub fn namespace(&self, command: &str) -> Result<Option<String>, String> {
        match self.namespace.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            more => Err(format!(
                "-n/--namespace was given {} times; `kubelan {command}` takes one (only `forward` takes several)",
                more.len()
            )),
        }
    }

    /// The cluster flags of `kubelan <command>`.
    ///
    /// # Errors
    /// As [`GlobalArgs::namespace`].
    pub fn kube(&self, command: &str) -> Result<KubeArgs, String> {
        Ok(KubeArgs {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace(command)?,
        })
    }
}
