//! How the client of `expose`, `replace` and `run` reaches the session's relay pod: through
//! a session to the kubelan agent (a flow to the relay's pod IP), or a port-forward
//! through the API server. [`connect`] connects to the API, picks the way per [`Via`] and
//! returns the client and the [`ExposeOptions`] every way-back mode starts from.

use std::future::Future;
use std::time::Duration;

use kubelan_cluster::session_objects::Mode;
use kubelan_cluster::{ClusterClient, ClusterError, KubeArgs};
use kubelan_session::bootstrap::{BootstrapOptions, CarrierChoice};
use kubelan_session::{Session, SessionConfig, SessionState};
use tokio_util::sync::CancellationToken;

use crate::ExposeOptions;

/// How long the agent's session may take to connect before [`Via::Auto`] gives up on it.
pub const OUTER_WAIT: Duration = Duration::from_secs(20);

/// How the client reaches the relay pod (`--via`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Through the agent when it is installed and connects, else a port-forward.
    Auto,
    /// Only through the agent.
    Agent,
    /// Only a port-forward to the relay pod through the API server.
    PortForward,
}

/// What the user should know about the way chosen (printed before the session's events;
/// its text is the line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViaNote {
    /// No usable agent: a port-forward instead.
    NoAgent {
        /// The agent's namespace.
        namespace: String,
    },
    /// The agent did not connect within [`OUTER_WAIT`]: a port-forward instead.
    AgentSlow {
        /// The agent's namespace.
        namespace: String,
    },
}

impl std::fmt::Display for ViaNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViaNote::NoAgent { namespace } => write!(
                f,
                "no usable kubelan agent in {namespace}; reaching the relay by port-forward"
            ),
            ViaNote::AgentSlow { namespace } => write!(
                f,
                "the kubelan agent in {namespace} did not connect within {} s; reaching the relay by port-forward",
                OUTER_WAIT.as_secs()
            ),
        }
    }
}

/// Why the way to the relay is not there; `E` is the session starter's error.
#[derive(Debug, thiserror::Error)]
pub enum ViaError<E> {
    /// Connecting to the API, or finding the agent (with [`Via::Agent`]), failed.
    #[error(transparent)]
    Cluster(ClusterError),
    /// Starting the agent session failed.
    #[error("{0}")]
    Start(E),
    /// The agent session failed.
    #[error("{0}")]
    Failed(String),
    /// The agent session did not connect in time (with [`Via::Agent`]).
    #[error(
        "the kubelan agent in {namespace} did not connect within {} s; `kubelan doctor` checks the path, or use `--via port-forward`",
        OUTER_WAIT.as_secs()
    )]
    Slow {
        /// The agent's namespace.
        namespace: String,
    },
}

/// The flags every way-back command shares, without clap.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// Kubeconfig, context and the Service's namespace.
    pub kube: KubeArgs,
    /// The agent's namespace.
    pub agent_namespace: String,
    /// `--image`.
    pub image: Option<String>,
    /// How long to wait for the relay pod.
    pub ready_timeout: Duration,
    /// `--via`.
    pub via: Via,
    /// This host's name, written on the session's objects.
    pub client_host: String,
    /// The command line, written on the session's objects.
    pub command: String,
    /// Which command runs the session.
    pub mode: Mode,
}

impl SessionRequest {
    /// The agent session a way-back mode starts: one carrier (it carries a handful of
    /// flows to one relay), direct mutual TLS when reachable, else port-forward.
    pub fn bootstrap_options(&self) -> BootstrapOptions {
        BootstrapOptions {
            kube: self.kube.clone(),
            agent_namespace: self.agent_namespace.clone(),
            carrier: CarrierChoice::Auto,
            carriers: Some(1),
            agent: None,
            credentials: None,
        }
    }
}

/// Connects to the API and, per `req.via`, to the agent: the client and the options of a
/// session. `start` starts the agent session (the caller's bootstrap, which may ask before
/// installing); it lives until `stop` is cancelled. The relay runs the agent's image
/// unless `--image` names another, so the agent must then have reverse flows.
///
/// # Errors
/// See [`ViaError`]; with [`Via::Auto`] a missing or slow agent is a [`ViaNote`] instead.
pub async fn connect<E, F, Fut>(
    req: &SessionRequest,
    start: F,
    stop: CancellationToken,
    note: &(dyn Fn(ViaNote) + Send + Sync),
) -> Result<(ClusterClient, ExposeOptions), ViaError<E>>
where
    F: FnOnce(SessionConfig, CancellationToken) -> Fut,
    Fut: Future<Output = Result<Session, E>>,
{
    let cc = kubelan_cluster::connect(&req.kube)
        .await
        .map_err(ViaError::Cluster)?;
    let outer = agent_session(req, &cc, start, stop, note).await?;
    let options = ExposeOptions {
        client: cc.client.clone(),
        namespace: cc.namespace.clone(),
        agent_namespace: req.agent_namespace.clone(),
        image: req.image.clone(),
        ready_timeout: req.ready_timeout,
        client_host: req.client_host.clone(),
        command: req.command.clone(),
        outer,
        mode: req.mode,
        on_serving: None,
    };
    Ok((cc, options))
}

/// The agent session the relay is reached through, or `None` for a port-forward.
async fn agent_session<E, F, Fut>(
    req: &SessionRequest,
    cc: &ClusterClient,
    start: F,
    stop: CancellationToken,
    note: &(dyn Fn(ViaNote) + Send + Sync),
) -> Result<Option<Session>, ViaError<E>>
where
    F: FnOnce(SessionConfig, CancellationToken) -> Fut,
    Fut: Future<Output = Result<Session, E>>,
{
    if req.via == Via::PortForward {
        return Ok(None);
    }
    let auto = req.via == Via::Auto;
    let ns = req.agent_namespace.as_str();
    match kubelan_cluster::find_agent(&cc.client, ns).await {
        Ok(_) => {}
        Err(e) if auto => {
            tracing::debug!("agent in {ns}: {e}");
            note(ViaNote::NoAgent {
                namespace: ns.to_string(),
            });
            return Ok(None);
        }
        Err(e) => {
            return Err(ViaError::Cluster(cc.explain(
                e,
                "`kubelan install` installs the agent, or use `--via port-forward`",
            )));
        }
    }
    // An agent without reverse flows means a relay without `kubelan relay`.
    let config = SessionConfig {
        required: if req.image.is_none() {
            kubelan_proto::Capabilities::REVERSE
        } else {
            kubelan_proto::Capabilities::default()
        },
        ..SessionConfig::default()
    };
    let session = start(config, stop).await.map_err(ViaError::Start)?;
    let mut state = session.state();
    let connected = tokio::time::timeout(OUTER_WAIT, async {
        loop {
            let s = state.borrow_and_update().clone();
            match s {
                SessionState::Connected { .. } => return Ok(()),
                SessionState::Failed(why) => return Err(why),
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err("the agent session stopped".to_string());
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => Ok(Some(session)),
        Ok(Err(why)) => Err(ViaError::Failed(why)),
        Err(_) if auto => {
            note(ViaNote::AgentSlow {
                namespace: ns.to_string(),
            });
            Ok(None)
        }
        Err(_) => Err(ViaError::Slow {
            namespace: ns.to_string(),
        }),
    }
}
