//! The flags that pick the cluster and the agent, and starting a session from them: the
//! work is `kubelan_session::bootstrap`; this file asks before installing a missing agent
//! and prints what the user should know.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use kubelan_cluster::preflight::INSTALL_HINT;
use kubelan_cluster::{ClusterError, KubeArgs};
use kubelan_session::bootstrap::{self, Bootstrap, BootstrapError, BootstrapNote, Started};
use kubelan_session::{Session, SessionConfig};
use tokio_util::sync::CancellationToken;

/// Which carrier to use.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum CarrierChoice {
    /// Direct mTLS when reachable, else port-forward.
    Auto,
    /// Only direct mutual TLS to the agent's Service / pod.
    Direct,
    /// Only port-forward through the API server.
    PortForward,
}

impl From<CarrierChoice> for bootstrap::CarrierChoice {
    fn from(c: CarrierChoice) -> Self {
        match c {
            CarrierChoice::Auto => Self::Auto,
            CarrierChoice::Direct => Self::Direct,
            CarrierChoice::PortForward => Self::PortForward,
        }
    }
}

/// Flags that pick the cluster and the agent.
#[derive(Args, Debug, Clone)]
pub(crate) struct AgentArgs {
    /// The global `--kubeconfig`, `--context` and `-n`.
    #[arg(skip)]
    pub kube: KubeArgs,
    /// Namespace of the kubelan agent.
    #[arg(long, value_name = "NAMESPACE", default_value = "kubelan-system")]
    pub agent_namespace: String,
    /// Carrier to the agent.
    #[arg(long, value_enum, default_value = "auto")]
    pub carrier: CarrierChoice,
    /// Carriers to keep open at once (spread over agent replicas) [default: one per ready replica, at most 4].
    #[arg(long, value_name = "N")]
    pub carriers: Option<usize>,
    /// Install the agent when it is missing, without asking.
    #[arg(long)]
    pub install: bool,
    /// Use an agent at this address (direct carrier, no Kubernetes API), e.g. one started
    /// with `kubelan agent --standalone`; needs --credentials.
    #[arg(long, value_name = "ADDR", requires = "credentials")]
    pub agent: Option<SocketAddr>,
    /// Directory with ca.crt, client.crt and client.key for --agent.
    #[arg(long, value_name = "DIR")]
    pub credentials: Option<PathBuf>,
}

impl AgentArgs {
    fn options(&self) -> bootstrap::BootstrapOptions {
        bootstrap::BootstrapOptions {
            kube: self.kube.clone(),
            agent_namespace: self.agent_namespace.clone(),
            carrier: self.carrier.into(),
            carriers: self.carriers,
            agent: self.agent,
            credentials: self.credentials.clone(),
        }
    }
}

/// The bootstrap's failure as the error chain the CLI prints (the same layers as when the
/// binary did this work itself).
fn cli_error(e: BootstrapError) -> anyhow::Error {
    match e {
        BootstrapError::Cluster(e) => e.into(),
        BootstrapError::Read { path, source } => {
            anyhow::Error::new(source).context(format!("reading {}", path.display()))
        }
        BootstrapError::Tls { context, source } => anyhow::Error::new(source).context(context),
        e @ BootstrapError::NoCredentials => e.into(),
    }
}

fn say(note: BootstrapNote) {
    eprintln!("{note}");
}

/// Builds the carriers the flags ask for and starts the session. `routed`: prefixes the
/// caller routes into the tunnel (`connect`), never dialed directly.
pub(crate) async fn start(
    args: &AgentArgs,
    shutdown: CancellationToken,
    routed: &[IpNet],
) -> anyhow::Result<Started> {
    let opts = args.options();
    start_with(
        &opts,
        args.install,
        SessionConfig::default(),
        shutdown,
        routed,
    )
    .await
}

/// [`start`] from the library's options, with the session's settings (for example
/// capabilities the agent must have). A missing agent is installed after asking (or at
/// once with `install`, `--install`), then the session starts.
pub(crate) async fn start_with(
    opts: &bootstrap::BootstrapOptions,
    install: bool,
    config: SessionConfig,
    shutdown: CancellationToken,
    routed: &[IpNet],
) -> anyhow::Result<Started> {
    let first = bootstrap::start(opts, config.clone(), shutdown.clone(), routed, &say)
        .await
        .map_err(cli_error)?;
    let namespace = match first {
        Bootstrap::Started(s) => return Ok(s),
        Bootstrap::NotInstalled { namespace } => namespace,
    };
    if !(install || confirm_install(&namespace)?) {
        return Err(ClusterError::NotInstalled { namespace }.into());
    }
    let cc = kubelan_cluster::connect(&opts.kube).await?;
    let target = cc.target();
    let install = kubelan_cluster::InstallOptions {
        namespace: namespace.clone(),
        ..Default::default()
    };
    eprintln!("installing the kubelan agent in {namespace} …");
    let report = kubelan_cluster::install(&cc.client, &install, &|e| {
        eprintln!("  {e}");
    })
    .await
    .map_err(|e| e.explain(&target, INSTALL_HINT))?;
    eprintln!("{}", kubelan_cluster::cli::install_summary(&report));
    match bootstrap::start(opts, config, shutdown, routed, &say)
        .await
        .map_err(cli_error)?
    {
        Bootstrap::Started(s) => Ok(s),
        Bootstrap::NotInstalled { namespace } => {
            Err(ClusterError::NotInstalled { namespace }.into())
        }
    }
}

fn confirm_install(ns: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "the kubelan agent is not installed in {ns}: run `kubelan install` (or pass --install)"
        );
    }
    eprint!("The kubelan agent is not installed in {ns}. Install it now? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Prints session state changes (to stderr) until shutdown.
pub(crate) fn report_state(session: &Session, shutdown: CancellationToken) {
    bootstrap::on_state_change(session, shutdown, |now, _| {
        eprintln!("{}", bootstrap::state_line(now));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_errors_keep_their_cli_wording() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = cli_error(BootstrapError::Read {
            path: "/creds/ca.crt".into(),
            source: io,
        });
        assert_eq!(
            format!("{e:#}"),
            "reading /creds/ca.crt: No such file or directory"
        );
        let e = cli_error(BootstrapError::Cluster(ClusterError::NotInstalled {
            namespace: "ns".into(),
        }));
        assert!(e.is::<ClusterError>());
    }
}
