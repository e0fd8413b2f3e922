//! Carriers: the byte streams a session runs over.
//!
//! * [`DirectDialer`]: TCP + mutual TLS straight to the agent (NodePort, LoadBalancer or
//!   pod IP), with the CA and client certificate from the install's Secret pinned.
//! * [`PortForwardDialer`]: a port-forward through the Kubernetes API server to the
//!   agent pod's loopback-only port, authorised by RBAC `pods/portforward`.
//! * [`AutoDialer`]: direct when it answers, else port-forward; while on port-forward it
//!   offers the direct carrier again ([`CarrierDialer::upgrade`]).
//! * [`FlowDialer`](crate::FlowDialer): a TCP flow through another (outer) [`Session`](crate::Session) — how a client
//!   reaches a per-session relay pod through the agent session it already has.
//!
//! Where to dial (the agent's addresses, its pod) comes from a [`Lookup`]: the last answer
//! of the Kubernetes API, used at once, while the API is asked again in parallel with
//! bounded patience. A reconnect therefore needs only the agent and the credentials the
//! session already holds, not the API server.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::portforward::{self, PortForwardIo};
use crate::reconnect::{DialPlan, GiveUp, LookupCache, Purpose, Step};

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
    /// A TCP flow through another session ([`FlowDialer`](crate::FlowDialer)).
    Flow,
}

impl fmt::Display for CarrierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CarrierKind::Direct => "direct mTLS",
            CarrierKind::PortForward => "API-server port-forward",
            CarrierKind::Flow => "flow through the agent session",
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

    /// A carrier preferred over one of kind `current`, to try while `current` runs: the
    /// session calls it now and then and, when it connects, moves new flows to it and
    /// retires `current` once idle. `None` (the default): nothing is preferred.
    fn upgrade(&self, current: CarrierKind) -> Option<BoxFuture<'_, Result<Dialed, CarrierError>>> {
        let _ = current;
        None
    }
}

/// A lookup through the Kubernetes API: what to dial, best first.
pub type Source<A> =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<A>, CarrierError>> + Send + Sync>;

/// Where the direct carrier may connect (pod IPs change when the agent restarts).
pub type EndpointSource = Source<SocketAddr>;

/// How long a lookup through the API may take before a dial goes on without it.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after starting one candidate address the next starts alongside it.
const STAGGER: Duration = Duration::from_millis(250);

/// Most direct attempts overlapping while earlier ones hang (see `DirectDialer::dial_for`).
const OVERLAP: usize = 3;
/// How often an overlapping direct attempt starts.
const OVERLAP_EVERY: Duration = Duration::from_secs(1);

type Answer<A> = watch::Receiver<Option<Result<Vec<A>, String>>>;

struct LookupInner<A> {
    source: Option<Source<A>>,
    timeout: Duration,
    state: Mutex<(LookupCache<A>, Option<Answer<A>>)>,
}

/// The last answer of a lookup through the Kubernetes API, handed out at once while the
/// API is asked again in the background (at most one question at a time, each bounded by
/// a timeout; see `reconnect::LookupCache` for when). Cheap to clone; clones share the
/// answer, so several carriers reconnecting at once ask the API once.
pub struct Lookup<A> {
    inner: Arc<LookupInner<A>>,
}

impl<A> Clone for Lookup<A> {
    fn clone(&self) -> Lookup<A> {
        Lookup {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Clone + Send + Sync + 'static> Lookup<A> {
    /// Asks `source`, waiting at most `timeout` for each answer.
    pub fn new(source: Source<A>, timeout: Duration) -> Lookup<A> {
        Lookup {
            inner: Arc::new(LookupInner {
                source: Some(source),
                timeout,
                state: Mutex::new((LookupCache::new(), None)),
            }),
        }
    }

    /// Always `entries`; never asks anything.
    pub fn fixed(entries: Vec<A>) -> Lookup<A> {
        let mut cache = LookupCache::new();
        cache.seed(entries, Instant::now());
        Lookup {
            inner: Arc::new(LookupInner {
                source: None,
                timeout: Duration::ZERO,
                state: Mutex::new((cache, None)),
            }),
        }
    }

    /// Takes an answer the caller already has (from its own lookup at start-up).
    pub fn seed(&self, entries: Vec<A>) {
        let mut st = self.inner.state.lock().expect("lookup lock");
        st.0.seed(entries, Instant::now());
    }

    /// The last answer, and the API's next answer when one is on its way.
    fn begin(&self, purpose: Purpose) -> (Vec<A>, Option<Answer<A>>) {
        let mut st = self.inner.state.lock().expect("lookup lock");
        let cached = st.0.entries().to_vec();
        let Some(source) = self.inner.source.clone() else {
            return (cached, None);
        };
        if st.0.start(purpose, Instant::now()) {
            let (tx, rx) = watch::channel(None);
            st.1 = Some(rx.clone());
            let inner = self.inner.clone();
            // A task of its own: the answer refreshes the cache even when the dial that
            // asked has already succeeded (or was dropped).
            tokio::spawn(async move {
                let result = match tokio::time::timeout(inner.timeout, source()).await {
                    Ok(Ok(list)) => Ok(list),
                    Ok(Err(e)) => Err(e.message),
                    Err(_) => Err(format!(
                        "the Kubernetes API did not answer within {} s",
                        inner.timeout.as_secs_f64()
                    )),
                };
                {
                    let mut st = inner.state.lock().expect("lookup lock");
                    match &result {
                        Ok(list) => st.0.answered(list.clone(), Instant::now()),
                        Err(_) => st.0.failed(),
                    }
                    st.1 = None;
                }
                let _ = tx.send(Some(result));
            });
            return (cached, Some(rx));
        }
        let pending = if st.0.in_flight() { st.1.clone() } else { None };
        (cached, pending)
    }
}

async fn answer<A: Clone>(rx: &mut Answer<A>) -> Result<Vec<A>, String> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().expect("checked"),
        Err(_) => Err("the lookup through the Kubernetes API ended without an answer".into()),
    }
}

/// Dials the candidates `lookup` gives (cached ones at once, the API's answer as soon as
/// it arrives), staggered, first success wins.
async fn dial_candidates<'a, A, F>(
    lookup: &Lookup<A>,
    purpose: Purpose,
    mut dial: F,
) -> Result<Dialed, GiveUp>
where
    A: Clone + PartialEq + Send + Sync + 'static,
    F: FnMut(A) -> BoxFuture<'a, Result<Dialed, String>>,
{
    let (cached, mut pending) = lookup.begin(purpose);
    let mut plan = DialPlan::new(&cached, pending.is_some(), STAGGER);
    let mut dials = FuturesUnordered::new();
    loop {
        let wait = loop {
            match plan.poll(Instant::now()) {
                Step::Dial(a) => dials.push(dial(a)),
                Step::Wait(until) => break until,
                Step::GiveUp(g) => return Err(g),
            }
        };
        let api = async {
            match pending.as_mut() {
                Some(rx) => answer(rx).await,
                None => std::future::pending().await,
            }
        };
        let stagger = async {
            match wait {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(r) = dials.next(), if !dials.is_empty() => match r {
                Ok(d) => return Ok(d),
                Err(e) => plan.dial_failed(e),
            },
            r = api => {
                pending = None;
                match r {
                    Ok(list) => plan.lookup_answered(&list),
                    Err(e) => plan.lookup_failed(e),
                }
            }
            () = stagger => {}
        }
    }
}

/// Runs `attempt` up to `n` times, a new one every `every` while earlier ones are still
/// running; the first success wins, and when every attempt started so far has failed the
/// last failure is the answer.
async fn overlapping<'a, F>(
    n: usize,
    every: Duration,
    mut attempt: F,
) -> Result<Dialed, CarrierError>
where
    F: FnMut() -> BoxFuture<'a, Result<Dialed, CarrierError>>,
{
    let mut running = FuturesUnordered::new();
    running.push(attempt());
    let mut started = 1;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            Some(r) = running.next() => match r {
                Ok(d) => return Ok(d),
                Err(e) if running.is_empty() => return Err(e),
                Err(_) => {}
            },
            _ = tick.tick(), if started < n => {
                running.push(attempt());
                started += 1;
            }
        }
    }
}

/// TCP + mutual TLS to the agent.
pub struct DirectDialer {
    endpoints: Lookup<SocketAddr>,
    tls: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    connect_timeout: Duration,
}

/// The name in the agent's certificate; clients verify it whatever address they dial.
pub const AGENT_TLS_NAME: &str = "kubelan-agent";

impl DirectDialer {
    /// A dialer trying `endpoints` (best first, staggered) with the given client TLS
    /// configuration (which must pin the agent CA and carry the client certificate).
    pub fn new(endpoints: Lookup<SocketAddr>, tls: Arc<rustls::ClientConfig>) -> DirectDialer {
        DirectDialer {
            endpoints,
            tls: tokio_rustls::TlsConnector::from(tls),
            server_name: rustls::pki_types::ServerName::try_from(AGENT_TLS_NAME)
                .expect("static DNS name"),
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// Static endpoints.
    pub fn fixed(endpoints: Vec<SocketAddr>) -> Lookup<SocketAddr> {
        Lookup::fixed(endpoints)
    }

    /// Connects to the first endpoint that answers; for `purpose` see [`Purpose`].
    ///
    /// To reconnect, a new attempt starts every [`OVERLAP_EVERY`] while the earlier ones
    /// still hang (at most [`OVERLAP`]): a path that swallowed packets and comes back is
    /// then found by a fresh SYN within about a second, not at the kernel's next
    /// retransmission of an old one (1 s, then 3 s after the first). Attempts that fail
    /// outright end the dial at once. A probe makes one attempt.
    async fn dial_for(&self, purpose: Purpose) -> Result<Dialed, CarrierError> {
        let attempts = if purpose == Purpose::Dial { OVERLAP } else { 1 };
        overlapping(attempts, OVERLAP_EVERY, || self.attempt(purpose)).await
    }

    /// One pass over the endpoints.
    fn attempt(&self, purpose: Purpose) -> BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move {
            dial_candidates(&self.endpoints, purpose, |addr| {
                Box::pin(self.dial_one(addr))
            })
            .await
            .map_err(|g| CarrierError::retry(direct_give_up(g)))
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

/// Why the direct carrier could not connect, in one sentence.
fn direct_give_up(g: GiveUp) -> String {
    match (g.dial_errors.is_empty(), g.lookup_error) {
        (true, None) => {
            "the agent has no reachable direct address (no NodePort, LoadBalancer or ready pod)"
                .into()
        }
        (true, Some(e)) => format!("direct carrier: no known address of the agent and {e}"),
        (false, None) => format!("direct carrier: {}", g.dial_errors.join("; ")),
        (false, Some(e)) => format!(
            "direct carrier: {} (no newer addresses: {e})",
            g.dial_errors.join("; ")
        ),
    }
}

impl CarrierDialer for DirectDialer {
    fn dial(&self) -> BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(self.dial_for(Purpose::Dial))
    }
}

/// The agent pod port the port-forward carrier reaches (loopback-only inside the pod).
pub const AGENT_PLAIN_PORT: u16 = 7444;

/// Names the agent pod(s) a port-forward should reach, best first (the agent restarts
/// under a new name).
pub type PodSource = Source<String>;

/// Port-forward through the API server to a ready agent pod (or, with
/// [`PortForwardDialer::with_port`], to another pod's port, such as a per-session
/// relay's carrier port). The carrier is a [`PortForwardIo`] over the WebSocket.
pub struct PortForwardDialer {
    client: kube::Client,
    namespace: String,
    pods: Lookup<String>,
    port: u16,
    rbac_command: String,
}

/// How long the API server may take to answer a port-forward upgrade.
const PORT_FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

impl PortForwardDialer {
    /// A dialer for the pods `pods` names in `namespace` (the last known name is tried at
    /// once while the API is asked again).
    pub fn new(client: kube::Client, namespace: &str, pods: Lookup<String>) -> PortForwardDialer {
        PortForwardDialer {
            client,
            namespace: namespace.to_string(),
            pods,
            port: AGENT_PLAIN_PORT,
            rbac_command: "kubelan rbac proxy".to_string(),
        }
    }

    /// Forwards to `port` of the pods instead of [`AGENT_PLAIN_PORT`].
    #[must_use]
    pub fn with_port(mut self, port: u16) -> PortForwardDialer {
        self.port = port;
        self
    }

    /// The command a refusal (403) names as the fix (`kubelan rbac expose`); by default
    /// `kubelan rbac proxy`, the agent's.
    #[must_use]
    pub fn with_rbac_command(mut self, command: &str) -> PortForwardDialer {
        self.rbac_command = command.to_string();
        self
    }

    async fn dial_one(&self, pod: String) -> Result<Dialed, String> {
        let ns = &self.namespace;
        let pf = tokio::time::timeout(
            PORT_FORWARD_TIMEOUT,
            portforward::upgrade(&self.client, ns, &pod, self.port, 1),
        )
        .await
        .map_err(|_| {
            format!(
                "port-forward to {ns}/{pod}: the API server did not answer in {} s",
                PORT_FORWARD_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "port-forward to {ns}/{pod}: the API server refused it ({}) — you need `create pods/portforward` in {ns} (`{}`)",
                s.message, self.rbac_command
            ),
            kube::Error::Api(s) => format!(
                "port-forward to {ns}/{pod}: the API server answered {}: {}",
                s.code, s.message
            ),
            _ => format!("port-forward to {ns}/{pod}: {e}"),
        })?;
        let peer = if self.port == AGENT_PLAIN_PORT {
            format!("pod {ns}/{pod}")
        } else {
            format!("pod {ns}/{pod} port {}", self.port)
        };
        Ok(Dialed {
            io: Box::new(PortForwardIo::new(pf)),
            kind: CarrierKind::PortForward,
            peer,
            keepalive: None,
        })
    }
}

impl CarrierDialer for PortForwardDialer {
    fn dial(&self) -> BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move {
            dial_candidates(&self.pods, Purpose::Dial, |pod| {
                Box::pin(self.dial_one(pod))
            })
            .await
            .map_err(|g| {
                CarrierError::retry(match (g.dial_errors.is_empty(), g.lookup_error) {
                    (true, Some(e)) => e,
                    (true, None) => format!("no ready agent pod in {}", self.namespace),
                    (false, _) => g.dial_errors.join("; "),
                })
            })
        })
    }
}

/// How long the auto dialer waits after a failed direct attempt before trying direct
/// again while the port-forward is still being set up.
const DIRECT_RETRY: Duration = Duration::from_millis(500);

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
            let mut direct_err = match self.direct.dial_for(Purpose::Dial).await {
                Ok(d) => return Ok(d),
                Err(e) => e,
            };
            tracing::debug!(error = %direct_err, "direct carrier unavailable; trying port-forward");
            // The port-forward goes through the API server, which may be slow or frozen:
            // keep trying direct meanwhile, so a returning path wins at once.
            let mut fallback = self.fallback.dial();
            loop {
                let retry = async {
                    tokio::time::sleep(DIRECT_RETRY).await;
                    self.direct.dial_for(Purpose::Dial).await
                };
                tokio::select! {
                    r = &mut fallback => {
                        return r.map_err(|e| {
                            CarrierError::retry(format!("{}; and {}", direct_err.message, e.message))
                        });
                    }
                    r = retry => match r {
                        Ok(d) => return Ok(d),
                        Err(e) => direct_err = e,
                    },
                }
            }
        })
    }

    fn upgrade(&self, current: CarrierKind) -> Option<BoxFuture<'_, Result<Dialed, CarrierError>>> {
        (current == CarrierKind::PortForward)
            .then(|| Box::pin(self.direct.dial_for(Purpose::Probe)) as BoxFuture<'_, _>)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn dialed(peer: u16) -> Dialed {
        let (a, _b) = tokio::io::duplex(64);
        Dialed {
            io: Box::new(a),
            kind: CarrierKind::Direct,
            peer: peer.to_string(),
            keepalive: None,
        }
    }

    /// A lookup answering `answer` after `delay` (never, when `None`); counts questions.
    fn source(answer: Option<(Duration, Vec<u16>)>, asked: Arc<AtomicUsize>) -> Source<u16> {
        Arc::new(move || {
            asked.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            Box::pin(async move {
                match answer {
                    Some((delay, list)) => {
                        tokio::time::sleep(delay).await;
                        Ok(list)
                    }
                    None => std::future::pending().await,
                }
            })
        })
    }

    /// Dials: `good` connects, everything else is refused after `fail_after` (never
    /// answers when `None`).
    fn dial_to(
        good: u16,
        fail_after: Option<Duration>,
    ) -> impl FnMut(u16) -> BoxFuture<'static, Result<Dialed, String>> {
        move |a| {
            Box::pin(async move {
                if a == good {
                    return Ok(dialed(a));
                }
                match fail_after {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        Err(format!("{a}: refused"))
                    }
                    None => std::future::pending().await,
                }
            })
        }
    }

    /// An API server that answers every request with `status` and a `Status` body.
    async fn api_answering(status: u16, message: &'static str) -> kube::Client {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": message, "code": status,
                })
                .to_string();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A refused port-forward names the permission and the mode's `kubelan rbac` command;
    /// other refusals give the API server's code and message.
    #[tokio::test]
    async fn a_refused_port_forward_names_the_modes_rbac_command() {
        let client = api_answering(403, r#"pods "relay" is forbidden"#).await;
        let dialer = PortForwardDialer::new(client, "team", Lookup::fixed(vec!["relay".into()]))
            .with_port(7450)
            .with_rbac_command("kubelan rbac expose");
        let e = dialer.dial().await.unwrap_err();
        assert!(!e.fatal);
        assert!(
            e.message
                .contains("you need `create pods/portforward` in team (`kubelan rbac expose`)"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains(r#"pods "relay" is forbidden"#),
            "{}",
            e.message
        );
        let client = api_answering(404, r#"pods "relay" not found"#).await;
        let dialer = PortForwardDialer::new(client, "team", Lookup::fixed(vec!["relay".into()]));
        let e = dialer.dial().await.unwrap_err();
        assert_eq!(
            e.message,
            r#"port-forward to team/relay: the API server answered 404: pods "relay" not found"#
        );
    }

    #[tokio::test]
    async fn a_frozen_api_does_not_hold_a_dial_to_a_known_address() {
        let asked = Arc::new(AtomicUsize::new(0));
        let lookup = Lookup::new(source(None, asked.clone()), Duration::from_secs(5));
        lookup.seed(vec![1, 2]);
        // Seeded moments ago: no question. The first address swallows packets; the
        // second starts after the stagger and wins.
        let t = Instant::now();
        let d = dial_candidates(&lookup, Purpose::Dial, dial_to(2, None))
            .await
            .unwrap();
        assert_eq!(d.peer, "2");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // Later (a reconnect), the API is asked in parallel, but the dial does not wait.
        tokio::time::sleep(DIAL_REFRESH_AFTER_TEST).await;
        let t = Instant::now();
        let d = dial_candidates(&lookup, Purpose::Dial, dial_to(1, None))
            .await
            .unwrap();
        assert_eq!(d.peer, "1");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 1, "asked in the background");
        // A second reconnect while that question hangs does not ask again.
        let _ = dial_candidates(&lookup, Purpose::Dial, dial_to(1, None)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    const DIAL_REFRESH_AFTER_TEST: Duration = Duration::from_millis(1100);

    #[tokio::test]
    async fn addresses_from_the_api_are_dialed_as_soon_as_they_arrive() {
        let asked = Arc::new(AtomicUsize::new(0));
        let lookup = Lookup::new(
            source(Some((Duration::from_millis(100), vec![7])), asked.clone()),
            Duration::from_secs(5),
        );
        // Nothing cached: waits for the API, then dials what it said.
        let d = dial_candidates(&lookup, Purpose::Dial, dial_to(7, None))
            .await
            .unwrap();
        assert_eq!(d.peer, "7");
        // The agent moved: the cached address hangs, the API's new one is dialed when it
        // arrives, without waiting for the old one to time out.
        let lookup = Lookup::new(
            source(Some((Duration::from_millis(100), vec![8])), asked.clone()),
            Duration::from_secs(5),
        );
        lookup.seed(vec![7]);
        tokio::time::sleep(DIAL_REFRESH_AFTER_TEST).await;
        let t = Instant::now();
        let d = dial_candidates(&lookup, Purpose::Dial, dial_to(8, None))
            .await
            .unwrap();
        assert_eq!(d.peer, "8");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn with_nothing_known_and_a_frozen_api_a_dial_gives_up_after_the_timeout() {
        let asked = Arc::new(AtomicUsize::new(0));
        let lookup = Lookup::new(source(None, asked.clone()), Duration::from_millis(200));
        let t = Instant::now();
        let g = dial_candidates(&lookup, Purpose::Dial, dial_to(1, None))
            .await
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(
            direct_give_up(g),
            "direct carrier: no known address of the agent and the Kubernetes API did not answer within 0.2 s"
        );
        // Known addresses that fail, and the API down: both said once.
        lookup.seed(vec![3, 4]);
        tokio::time::sleep(DIAL_REFRESH_AFTER_TEST).await;
        let g = dial_candidates(
            &lookup,
            Purpose::Dial,
            dial_to(1, Some(Duration::from_millis(10))),
        )
        .await
        .unwrap_err();
        assert_eq!(
            direct_give_up(g),
            "direct carrier: 3: refused; 4: refused (no newer addresses: the Kubernetes API did not answer within 0.2 s)"
        );
    }

    #[tokio::test]
    async fn a_path_that_swallowed_packets_is_found_by_a_fresh_attempt() {
        // The first attempt's packets were lost (it hangs); the path is back for the
        // second, started a second later alongside it.
        let n = AtomicUsize::new(0);
        let t = Instant::now();
        let d = overlapping(3, Duration::from_millis(200), || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if i == 0 {
                    std::future::pending().await
                } else {
                    Ok(dialed(u16::try_from(i).unwrap()))
                }
            })
        })
        .await
        .unwrap();
        assert_eq!(d.peer, "1");
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        // An attempt that fails outright ends the dial at once: no overlapping retries.
        let n = AtomicUsize::new(0);
        let e = overlapping(3, Duration::from_millis(200), || {
            n.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err(CarrierError::retry("refused")) })
        })
        .await
        .unwrap_err();
        assert_eq!(e.message, "refused");
        assert_eq!(n.load(Ordering::SeqCst), 1);
        // Attempts that all hang, then fail: at most `n`, the last failure reported.
        let n = AtomicUsize::new(0);
        let e = overlapping(3, Duration::from_millis(50), || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err(CarrierError::retry(format!("timeout {i}")))
            })
        })
        .await
        .unwrap_err();
        assert_eq!(e.message, "timeout 2");
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_probe_does_not_ask_the_api_while_its_answer_is_recent() {
        let asked = Arc::new(AtomicUsize::new(0));
        let lookup = Lookup::new(
            source(Some((Duration::ZERO, vec![5])), asked.clone()),
            Duration::from_secs(5),
        );
        lookup.seed(vec![5]);
        tokio::time::sleep(DIAL_REFRESH_AFTER_TEST).await;
        for _ in 0..3 {
            let d = dial_candidates(&lookup, Purpose::Probe, dial_to(5, None))
                .await
                .unwrap();
            assert_eq!(d.peer, "5");
        }
        assert_eq!(asked.load(Ordering::SeqCst), 0);
    }
}
