//! Carriers: the byte streams a session runs over.
//!
//! * [`DirectDialer`]: TCP + mutual TLS straight to the agent (NodePort, LoadBalancer or
//!   pod IP), with the CA and client certificate from the install's Secret pinned.
//! * [`PortForwardDialer`]: a port-forward through the Kubernetes API server to the
//!   agent pod's loopback-only port, authorised by RBAC `pods/portforward`.
//! * [`AutoDialer`]: direct when it answers, else port-forward.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A carrier's byte stream.
pub trait CarrierIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> CarrierIo for T {}

/// Which kind of carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CarrierKind {
    /// Mutual TLS straight to the agent.
    Direct,
    /// Port-forward through the API server.
    PortForward,
}

impl fmt::Display for CarrierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CarrierKind::Direct => "direct mTLS",
            CarrierKind::PortForward => "API-server port-forward",
        })
    }
}

/// A connected carrier.
pub struct Dialed {
    /// The byte stream.
    pub io: Box<dyn CarrierIo>,
    /// Which kind.
    pub kind: CarrierKind,
    /// Where it goes, for people (`10.4.7.2:31443`, `pod kubelan-system/kubelan-agent-x`).
    pub peer: String,
    /// Whatever must live as long as the carrier (the port-forward task).
    pub keepalive: Option<Box<dyn Send + Sync>>,
}

impl fmt::Debug for Dialed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialed")
            .field("kind", &self.kind)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Why a carrier could not be set up; the message names the fix where there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CarrierError {
    /// What went wrong and what to do.
    pub message: String,
    /// Retrying cannot help (e.g. the agent refused our protocol version).
    pub fatal: bool,
}

impl CarrierError {
    /// A retryable error.
    pub fn retry(message: impl Into<String>) -> CarrierError {
        CarrierError {
            message: message.into(),
            fatal: false,
        }
    }
}

/// Something that can (re)establish a carrier.
pub trait CarrierDialer: Send + Sync {
    /// Connects once.
    fn dial(&self) -> BoxFuture<'_, Result<Dialed, CarrierError>>;
}

/// Where the direct carrier may connect, looked up again before every dial (pod IPs
/// change when the agent restarts).
pub type EndpointSource =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<SocketAddr>, CarrierError>> + Send + Sync>;

/// TCP + mutual TLS to the agent.
pub struct DirectDialer {
    endpoints: EndpointSource,
    tls: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    connect_timeout: Duration,
}

/// The name in the agent's certificate; clients verify it whatever address they dial.
pub const AGENT_TLS_NAME: &str = "kubelan-agent";

impl DirectDialer {
    /// A dialer trying `endpoints` in order with the given client TLS configuration (which
    /// must pin the agent CA and carry the client certificate).
    pub fn new(endpoints: EndpointSource, tls: Arc<rustls::ClientConfig>) -> DirectDialer {
        DirectDialer {
            endpoints,
            tls: tokio_rustls::TlsConnector::from(tls),
            server_name: rustls::pki_types::ServerName::try_from(AGENT_TLS_NAME)
                .expect("static DNS name"),
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// Static endpoints.
    pub fn fixed(endpoints: Vec<SocketAddr>) -> EndpointSource {
        Arc::new(move || {
            let e = endpoints.clone();
            Box::pin(async move { Ok(e) })
        })
    }

    async fn dial_one(&self, addr: SocketAddr) -> Result<Dialed, String> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{addr}: no answer within {:?}", self.connect_timeout))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            Duration::from_secs(5),
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| format!("{addr}: TLS handshake timed out"))?
        .map_err(|e| {
            format!(
                "{addr}: TLS handshake failed: {e} (the credentials may be from another install; `kubelan install` again or check the Secret)"
            )
        })?;
        Ok(Dialed {
            io: Box::new(tls),
            kind: CarrierKind::Direct,
            peer: addr.to_string(),
            keepalive: None,
        })
    }
}

impl CarrierDialer for DirectDialer {
    fn dial(&self) -> BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move {
            let endpoints = (self.endpoints)().await?;
            if endpoints.is_empty() {
                return Err(CarrierError::retry(
                    "the agent has no reachable direct address (no NodePort, LoadBalancer or ready pod)",
                ));
            }
            let mut errors = Vec::new();
            for addr in endpoints {
                match self.dial_one(addr).await {
                    Ok(d) => return Ok(d),
                    Err(e) => errors.push(e),
                }
            }
            Err(CarrierError::retry(format!(
                "direct carrier: {}",
                errors.join("; ")
            )))
        })
    }
}

/// The agent pod port the port-forward carrier reaches (loopback-only inside the pod).
pub const AGENT_PLAIN_PORT: u16 = 7444;

/// Names the agent pod a port-forward should reach, looked up again before every dial
/// (the agent restarts under a new name).
pub type PodSource =
    Arc<dyn Fn() -> BoxFuture<'static, Result<String, CarrierError>> + Send + Sync>;

/// Port-forward through the API server to a ready agent pod.
pub struct PortForwardDialer {
    client: kube::Client,
    namespace: String,
    pod: PodSource,
}

impl PortForwardDialer {
    /// A dialer for the pod `pod` names in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, pod: PodSource) -> PortForwardDialer {
        PortForwardDialer {
            client,
            namespace: namespace.to_string(),
            pod,
        }
    }
}

struct AbortOnDrop(kube::api::Portforwarder);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl CarrierDialer for PortForwardDialer {
    fn dial(&self) -> BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move {
            let pod = (self.pod)().await?;
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
            let mut pf = tokio::time::timeout(
                Duration::from_secs(10),
                pods.portforward(&pod, &[AGENT_PLAIN_PORT]),
            )
            .await
            .map_err(|_| {
                CarrierError::retry("port-forward: the API server did not answer in 10 s")
            })?
            .map_err(|e| {
                let hint = if e.to_string().contains("403") || e.to_string().contains("forbidden") {
                    format!(
                        " — you need `create pods/portforward` in {} (`kubelan rbac proxy`)",
                        self.namespace
                    )
                } else {
                    String::new()
                };
                CarrierError::retry(format!(
                    "port-forward to {}/{pod}: {e}{hint}",
                    self.namespace
                ))
            })?;
            let io = pf
                .take_stream(AGENT_PLAIN_PORT)
                .ok_or_else(|| CarrierError::retry("port-forward returned no stream"))?;
            Ok(Dialed {
                io: Box::new(io),
                kind: CarrierKind::PortForward,
                peer: format!("pod {}/{pod}", self.namespace),
                keepalive: Some(Box::new(AbortOnDrop(pf))),
            })
        })
    }
}

/// Direct when it answers, else port-forward.
pub struct AutoDialer {
    direct: DirectDialer,
    fallback: PortForwardDialer,
}

impl AutoDialer {
    /// Tries `direct` first, then `fallback`.
    pub fn new(direct: DirectDialer, fallback: PortForwardDialer) -> AutoDialer {
        AutoDialer { direct, fallback }
    }
}

impl CarrierDialer for AutoDialer {
    fn dial(&self) -> BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move {
            match self.direct.dial().await {
                Ok(d) => Ok(d),
                Err(direct_err) => {
                    tracing::debug!(error = %direct_err, "direct carrier unavailable; using port-forward");
                    self.fallback.dial().await.map_err(|e| {
                        CarrierError::retry(format!("{direct_err}; and {}", e.message))
                    })
                }
            }
        })
    }
}
