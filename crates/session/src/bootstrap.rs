//! Session bootstrap: from the agent's address (the Kubernetes API, or a standalone
//! agent's address and credentials) to carriers spread over the agent's replicas and a
//! running [`Session`]. Shared by every mode that rides the agent (`proxy`, `connect`,
//! `gateway --mode tunnel`, `expose`).
//!
//! A missing agent is an outcome, not a prompt: [`start`] returns
//! [`Bootstrap::NotInstalled`] and the caller decides (the binary asks the user, installs,
//! and calls again).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use kubelan_cluster::error::ApiTarget;
use kubelan_cluster::preflight::AGENT_HINT;
use kubelan_cluster::{ClusterError, Credentials, KubeArgs};
use tokio_util::sync::CancellationToken;

use crate::carrier::{
    AutoDialer, CarrierDialer, DirectDialer, EndpointSource, LOOKUP_TIMEOUT, Lookup, PodSource,
    PortForwardDialer,
};
use crate::{CarrierError, Session, SessionConfig, SessionState};

/// Which carrier to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarrierChoice {
    /// Direct mTLS when reachable, else port-forward.
    Auto,
    /// Only direct mutual TLS to the agent's Service / pod.
    Direct,
    /// Only port-forward through the API server.
    PortForward,
}

/// Where the agent is and how to reach it.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// The cluster.
    pub kube: KubeArgs,
    /// Namespace of the agent.
    pub agent_namespace: String,
    /// Carrier kind.
    pub carrier: CarrierChoice,
    /// Carriers to keep open at once [default: one per ready replica, at most 4].
    pub carriers: Option<usize>,
    /// A standalone agent's address (direct carrier, no Kubernetes API).
    pub agent: Option<SocketAddr>,
    /// Directory with ca.crt, client.crt and client.key for `agent`.
    pub credentials: Option<PathBuf>,
}

/// A running session.
pub struct Started {
    /// The session.
    pub session: Session,
    /// Namespace for bare names (`web` → `web.<ns>`).
    pub namespace: String,
}

/// What [`start`] found.
pub enum Bootstrap {
    /// The session runs (its carriers connect in the background).
    Started(Started),
    /// No agent in the namespace: install it and call again, or give up with
    /// [`ClusterError::NotInstalled`].
    NotInstalled {
        /// The namespace searched.
        namespace: String,
    },
}

/// Something the user should know while the session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapNote {
    /// The agent exists but no replica is ready: the session connects when one is.
    AgentNotReady {
        /// Its namespace.
        namespace: String,
    },
    /// The direct carrier cannot be used (credentials unreadable); port-forward it is.
    DirectUnavailable {
        /// Why.
        error: String,
    },
}

impl std::fmt::Display for BootstrapNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootstrapNote::AgentNotReady { namespace } => write!(
                f,
                "… the agent in {namespace} is not ready yet; the tunnel connects when it is"
            ),
            BootstrapNote::DirectUnavailable { error } => write!(
                f,
                "note: direct carrier unavailable ({error}); using port-forward"
            ),
        }
    }
}

/// Why the session could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The Kubernetes API said no (already explained: the sentence names the fix).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A credentials file of `--credentials` cannot be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The credentials do not make a TLS client configuration.
    #[error("{context}")]
    Tls {
        /// What was loaded.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: kubelan_cluster::tls::TlsError,
    },
    /// `agent` was given without `credentials`.
    #[error("--agent needs --credentials DIR (ca.crt, client.crt, client.key)")]
    NoCredentials,
}

fn read(dir: &Path, file: &str) -> Result<String, BootstrapError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|source| BootstrapError::Read { path, source })
}

/// How many carriers to open: the flag (clamped to 1..=16), else one per ready replica,
/// at most 4.
pub fn carrier_count(flag: Option<usize>, replicas: usize) -> usize {
    flag.unwrap_or(replicas.clamp(1, 4)).clamp(1, 16)
}

/// The pod carrier `i` prefers among the sorted ready replicas, so carriers spread.
pub fn replica_for(i: usize, pods: &[String]) -> Option<&String> {
    (!pods.is_empty()).then(|| &pods[i % pods.len()])
}

/// What a carrier dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialerKind {
    /// Direct mTLS only.
    Direct,
    /// Direct mTLS, else port-forward.
    Auto,
    /// Port-forward only.
    PortForward,
}

/// The dialer for `choice` when direct credentials are (or are not) available.
pub fn dialer_kind(choice: CarrierChoice, direct_available: bool) -> DialerKind {
    match (direct_available, choice) {
        (true, CarrierChoice::Direct) => DialerKind::Direct,
        (true, CarrierChoice::Auto) => DialerKind::Auto,
        _ => DialerKind::PortForward,
    }
}

/// The agent's direct addresses a carrier may dial: not those inside `routed` (prefixes
/// the caller routes into the tunnel itself, where a "direct" carrier would run inside
/// another carrier).
fn dialable(info: &kubelan_cluster::AgentInfo, routed: &[IpNet]) -> Vec<SocketAddr> {
    kubelan_cluster::direct_endpoints(info)
        .into_iter()
        .filter(|a| !routed.iter().any(|n| n.contains(&a.ip())))
        .collect()
}

/// Builds the carriers `opts` ask for and starts the session. `routed`: prefixes the
/// caller routes into the tunnel (`connect`), never dialed directly.
///
/// # Errors
/// [`BootstrapError`] when the cluster or the credentials say no; a missing agent is
/// [`Bootstrap::NotInstalled`], not an error.
pub async fn start(
    opts: &BootstrapOptions,
    config: SessionConfig,
    shutdown: CancellationToken,
    routed: &[IpNet],
    note: &(dyn Fn(BootstrapNote) + Send + Sync),
) -> Result<Bootstrap, BootstrapError> {
    if let Some(addr) = opts.agent {
        let dir = opts
            .credentials
            .as_ref()
            .ok_or(BootstrapError::NoCredentials)?;
        let creds = Credentials {
            ca_pem: read(dir, "ca.crt")?,
            cert_pem: read(dir, "client.crt")?,
            key_pem: read(dir, "client.key")?,
        };
        let tls = Arc::new(
            creds
                .client_config()
                .map_err(|source| BootstrapError::Tls {
                    context: "loading the client certificate",
                    source,
                })?,
        );
        let n = opts.carriers.unwrap_or(1).clamp(1, 16);
        let dialers: Vec<Arc<dyn CarrierDialer>> = (0..n)
            .map(|_| {
                Arc::new(DirectDialer::new(
                    DirectDialer::fixed(vec![addr]),
                    tls.clone(),
                )) as Arc<dyn CarrierDialer>
            })
            .collect();
        return Ok(Bootstrap::Started(Started {
            session: Session::start(dialers, config, shutdown),
            namespace: opts
                .kube
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        }));
    }
    let cc = kubelan_cluster::connect(&opts.kube).await?;
    let ns = opts.agent_namespace.clone();
    // Every API failure below becomes the sentence that names its fix.
    let target = cc.target();
    let explain = |e: ClusterError| e.explain(&target, AGENT_HINT);
    // What the API says now seeds the carriers; afterwards they reconnect from what they
    // know and ask the API only in parallel.
    let agent = match kubelan_cluster::find_agent(&cc.client, &ns).await {
        Ok(info) => Some(info),
        Err(ClusterError::AgentNotReady { .. }) => {
            note(BootstrapNote::AgentNotReady {
                namespace: ns.clone(),
            });
            None
        }
        Err(ClusterError::NotInstalled { .. }) => {
            return Ok(Bootstrap::NotInstalled { namespace: ns });
        }
        Err(e) => return Err(explain(e).into()),
    };
    let mut pods: Vec<String> = agent
        .iter()
        .flat_map(|a| a.pods.iter().map(|p| p.name.clone()))
        .collect();
    pods.sort();
    let n = carrier_count(opts.carriers, pods.len());
    let direct = if opts.carrier == CarrierChoice::PortForward {
        None
    } else {
        match kubelan_cluster::load_credentials(&cc.client, &ns).await {
            Ok(creds) => {
                let tls =
                    Arc::new(
                        creds
                            .client_config()
                            .map_err(|source| BootstrapError::Tls {
                                context: "loading the agent credentials",
                                source,
                            })?,
                    );
                let client = cc.client.clone();
                let ns2 = ns.clone();
                let routed2 = routed.to_vec();
                let target2 = target.clone();
                let source: EndpointSource = Arc::new(move || {
                    let (client, ns, routed, target) = (
                        client.clone(),
                        ns2.clone(),
                        routed2.clone(),
                        target2.clone(),
                    );
                    Box::pin(async move {
                        let info = kubelan_cluster::find_agent(&client, &ns)
                            .await
                            .map_err(|e| retry(e, &target))?;
                        Ok(dialable(&info, &routed))
                    })
                });
                // One lookup shared by every carrier: reconnecting together, they ask once.
                let endpoints = Lookup::new(source, LOOKUP_TIMEOUT);
                if let Some(info) = &agent {
                    endpoints.seed(dialable(info, routed));
                }
                Some((endpoints, tls))
            }
            Err(e) if opts.carrier == CarrierChoice::Direct => return Err(explain(e).into()),
            Err(e) => {
                note(BootstrapNote::DirectUnavailable {
                    error: explain(e).to_string(),
                });
                None
            }
        }
    };
    let dialers: Vec<Arc<dyn CarrierDialer>> = (0..n)
        .map(|i| -> Arc<dyn CarrierDialer> {
            // Carrier i prefers the i-th ready replica, so carriers spread over replicas.
            let (client, ns2, target2) = (cc.client.clone(), ns.clone(), target.clone());
            let source: PodSource = Arc::new(move || {
                let (client, ns, target) = (client.clone(), ns2.clone(), target2.clone());
                Box::pin(async move {
                    let mut info = kubelan_cluster::find_agent(&client, &ns)
                        .await
                        .map_err(|e| retry(e, &target))?;
                    info.pods.sort_by(|a, b| a.name.cmp(&b.name));
                    let names: Vec<String> = info.pods.iter().map(|p| p.name.clone()).collect();
                    replica_for(i, &names)
                        .map(|p| vec![p.clone()])
                        .ok_or_else(|| CarrierError::retry(format!("no ready agent pod in {ns}")))
                })
            });
            let pod = Lookup::new(source, LOOKUP_TIMEOUT);
            if let Some(p) = replica_for(i, &pods) {
                pod.seed(vec![p.clone()]);
            }
            let pf = PortForwardDialer::new(cc.client.clone(), &ns, pod);
            match (&direct, dialer_kind(opts.carrier, direct.is_some())) {
                (Some((ep, tls)), DialerKind::Direct) => {
                    Arc::new(DirectDialer::new(ep.clone(), tls.clone()))
                }
                (Some((ep, tls)), DialerKind::Auto) => Arc::new(AutoDialer::new(
                    DirectDialer::new(ep.clone(), tls.clone()),
                    pf,
                )),
                _ => Arc::new(pf),
            }
        })
        .collect();
    Ok(Bootstrap::Started(Started {
        session: Session::start(dialers, config, shutdown),
        namespace: cc.namespace,
    }))
}

/// A failure to find the agent while (re)connecting, as the carrier's retryable error.
fn retry(e: ClusterError, target: &ApiTarget) -> CarrierError {
    CarrierError::retry(e.explain(target, AGENT_HINT).to_string())
}

/// A state change as users see it: a mark (`✓` connected, `✗` failed, `…` on the way)
/// and the state's one line.
pub fn state_line(state: &SessionState) -> String {
    let mark = match state {
        SessionState::Connected { .. } => "✓",
        SessionState::Failed(_) => "✗",
        _ => "…",
    };
    format!("{mark} {state}")
}

/// Calls `f` with each new session state (and its one-line text) until shutdown; nothing
/// after shutdown began (stopping is not a state change of the session).
pub fn on_state_change(
    session: &Session,
    shutdown: CancellationToken,
    mut f: impl FnMut(&SessionState, &str) + Send + 'static,
) {
    let mut rx = session.state();
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let now = rx.borrow_and_update().clone();
            let line = now.to_string();
            if shutdown.is_cancelled() {
                return;
            }
            if line != last {
                f(&now, &line);
                last = line;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use kubelan_cluster::{AgentInfo, AgentPod, AgentService, NodeAddresses};

    use super::*;

    #[test]
    fn carriers_spread_over_the_ready_replicas() {
        // One per ready replica, at most 4; none ready yet: one.
        assert_eq!(carrier_count(None, 0), 1);
        assert_eq!(carrier_count(None, 3), 3);
        assert_eq!(carrier_count(None, 9), 4);
        // The flag wins, within 1..=16.
        assert_eq!(carrier_count(Some(0), 3), 1);
        assert_eq!(carrier_count(Some(6), 1), 6);
        assert_eq!(carrier_count(Some(99), 1), 16);
        let pods: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let picked: Vec<&str> = (0..4)
            .map(|i| replica_for(i, &pods).unwrap().as_str())
            .collect();
        assert_eq!(picked, ["a", "b", "c", "a"]);
        assert_eq!(replica_for(2, &[]), None);
    }

    #[test]
    fn the_carrier_kind_follows_the_flag_and_the_credentials() {
        use CarrierChoice::*;
        assert_eq!(dialer_kind(Auto, true), DialerKind::Auto);
        assert_eq!(dialer_kind(Direct, true), DialerKind::Direct);
        assert_eq!(dialer_kind(PortForward, true), DialerKind::PortForward);
        // Without credentials, auto falls back to port-forward.
        assert_eq!(dialer_kind(Auto, false), DialerKind::PortForward);
        assert_eq!(dialer_kind(PortForward, false), DialerKind::PortForward);
    }

    #[tokio::test]
    async fn a_standalone_agent_without_credentials_is_refused() {
        let opts = BootstrapOptions {
            kube: KubeArgs::default(),
            agent_namespace: "kubelan-system".into(),
            carrier: CarrierChoice::Direct,
            carriers: None,
            agent: Some("127.0.0.1:7443".parse().unwrap()),
            credentials: Some(PathBuf::from("/nonexistent/kubelan-creds")),
        };
        let r = start(
            &opts,
            SessionConfig::default(),
            CancellationToken::new(),
            &[],
            &|_| {},
        )
        .await;
        let Err(e) = r else {
            panic!("started without credentials")
        };
        assert_eq!(e.to_string(), "reading /nonexistent/kubelan-creds/ca.crt");
    }

    #[test]
    fn addresses_routed_into_the_tunnel_are_not_dialed_directly() {
        let info = AgentInfo {
            namespace: "kubelan-system".into(),
            pods: vec![AgentPod {
                name: "kubelan-agent-x".into(),
                ip: Some("172.17.32.5".parse().unwrap()),
                node: Some("node1".into()),
            }],
            service: Some(AgentService {
                service_type: "NodePort".into(),
                port: 7443,
                cluster_ip: Some("172.17.16.77".parse().unwrap()),
                node_port: Some(30443),
                load_balancer_ips: vec![],
                load_balancer_hostnames: vec![],
            }),
            nodes: vec![NodeAddresses {
                name: "node1".into(),
                ready: true,
                internal: vec!["10.4.7.11".parse().unwrap()],
                external: vec![],
            }],
            notes: vec![],
        };
        let all: Vec<String> = dialable(&info, &[]).iter().map(|a| a.to_string()).collect();
        assert_eq!(all, ["10.4.7.11:30443", "172.17.32.5:7443"]);
        let routed: Vec<IpNet> = vec!["172.17.32.0/19".parse().unwrap()];
        let some: Vec<String> = dialable(&info, &routed)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(some, ["10.4.7.11:30443"]);
    }

    #[test]
    fn notes_and_state_changes_read_as_one_line_each() {
        let note = BootstrapNote::AgentNotReady {
            namespace: "kubelan-system".into(),
        };
        assert_eq!(
            note.to_string(),
            "… the agent in kubelan-system is not ready yet; the tunnel connects when it is"
        );
        let note = BootstrapNote::DirectUnavailable {
            error: "reading ca.crt: denied".into(),
        };
        assert_eq!(
            note.to_string(),
            "note: direct carrier unavailable (reading ca.crt: denied); using port-forward"
        );
        assert_eq!(state_line(&SessionState::Connecting), "… connecting");
        let failed = SessionState::Failed("too old".into());
        assert_eq!(state_line(&failed), "✗ failed: too old");
    }
}
