//! `kubelan relay`: the per-session relay of `kubelan expose` (issue 18).
//!
//! One relay runs in the single pod of each session's Job (same image as the agent,
//! Pod Security "restricted": uid 65532, no capabilities, read-only root file system). It
//! listens on the exposed ports (`--listen PORT=ID[/udp]`, where a Service of the session
//! sends the cluster's traffic) and on a carrier port where the client's session lands.
//! Every connection a pod makes to a listener becomes a *reverse flow*: the relay opens a
//! stream toward the client on a live carrier ([`kubelan_session::reverse::open_tcp`],
//! `Incoming { listener, kind, peer }`), the client dials its local target and the bytes
//! are relayed with the shared reset-on-cut relay. With no live carrier, or when the
//! client cannot reach its target, the pod's connection is reset at once. UDP listeners
//! keep one datagram flow per pod peer, ended after an idle time.
//!
//! # The carrier port
//!
//! The carrier is the plain multiplexer over TCP, with no TLS of its own. The client
//! reaches it either as a TCP flow through its existing, mutually authenticated agent
//! session ([`kubelan_session::FlowDialer`]) or through an API-server port-forward to the
//! pod ([`kubelan_session::carrier::PortForwardDialer::with_port`]), so the path from the
//! client's machine into the cluster is always encrypted and authorised; only the hop
//! inside the cluster (agent pod → relay pod) is plain, like the exposed traffic itself
//! (pod → Service → relay). Anyone in the cluster network can connect to the port, so
//! every carrier must prove the session's secret: the client sends it as `Hello.token`,
//! the relay knows only its SHA-256 (`--token-sha256`, from the Job's arguments) and
//! compares in constant time; a wrong or missing token gets `Refused { Auth }`. The pod's
//! readinessProbe is a tcpSocket check on this port.
//!
//! # Lifetime
//!
//! The relay pings each carrier and answers the client's pings; a carrier silent for
//! `dead_after` is dropped. When no carrier has been live for `--grace` (10 s; before the
//! first carrier `--first-grace`, 60 s) the relay exits 0: the Job completes, its
//! `ttlSecondsAfterFinished` deletes it and the garbage collector removes every object
//! of the session. So a crashed or disconnected client leaves nothing behind.
//!
//! For `kubelan replace` (`--restore-service NAME --session ID`), the relay also puts the
//! replaced Service's selector back whenever it stops, grace expiry or SIGTERM alike,
//! before it exits ([`Restorer`]): the garbage collector deletes objects but cannot undo
//! the patch that pointed an existing Service at the relay.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use kubelan_proto::{
    Capabilities, ErrorKind, Facts, FlowError, FlowKind, Frame, RefuseReason, Token, VersionRange,
    negotiate,
};
use kubelan_session::flow::{FrameReader, write_frame};
use kubelan_session::mux::{self, MuxHandle, MuxStream, Side};
use kubelan_session::relay::{edge_opened, listen_edge, relay_edge};
use kubelan_session::reverse;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

// The restore is shared with the client's Ctrl-C path, so it lives in the cluster crate.
pub use kubelan_cluster::replace::restorer::{
    self as restore, RestoreOutcome, RestoreTarget, Restorer,
};

/// The carrier port when none is given.
pub const DEFAULT_CARRIER_PORT: u16 = 7445;

/// `kubelan relay` flags (a hidden subcommand: the session's Job runs it).
#[derive(Args, Debug, Clone)]
pub struct RelayArgs {
    /// A port to listen on and the listener id the client maps to a local target:
    /// `PORT=ID` for TCP, `PORT=ID/udp` for UDP (repeatable).
    #[arg(long = "listen", value_name = "PORT=ID[/udp]")]
    pub listen: Vec<ListenSpec>,
    /// The TCP port the client's carriers connect to (plain; see the module docs).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_CARRIER_PORT)]
    pub carrier_port: u16,
    /// The address every port binds to.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub address: IpAddr,
    /// SHA-256 of the session's secret, 64 hex digits; carriers whose hello carries
    /// another secret are refused.
    #[arg(long, value_name = "HEX", env = "KUBELAN_RELAY_TOKEN_SHA256")]
    pub token_sha256: String,
    /// Seconds without a live carrier after which the relay exits 0.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub grace: u64,
    /// Seconds the first carrier may take to arrive.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub first_grace: u64,
    /// Most flows open at once; connections beyond are reset.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_flows: usize,
    /// Most carriers at once (handshakes included); more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_carriers: usize,
    /// Seconds a UDP flow may stay idle.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub udp_idle: u64,
    /// `kubelan replace`: the Service (in `--namespace`) whose selector the relay puts
    /// back whenever it stops; needs the session's ServiceAccount token.
    #[arg(long, value_name = "NAME", requires = "session")]
    pub restore_service: Option<String>,
    /// The Service's selector before the swap, as a JSON object (else its
    /// `kubelan.io/original` annotation is used).
    #[arg(long, value_name = "JSON", requires = "restore_service")]
    pub restore_selector: Option<String>,
    /// The session's id: the swapped selector is `kubelan.io/session=ID`.
    #[arg(long, value_name = "ID", env = "KUBELAN_SESSION")]
    pub session: Option<String>,
    /// The namespace of `--restore-service` (default: the pod's own): the binary's global
    /// `-n`, else `POD_NAMESPACE`.
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Seconds a restore may take, retries included (keep it below the pod's
    /// terminationGracePeriodSeconds, so a SIGTERM leaves time to finish).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub restore_timeout: u64,
}

/// One listener: a port of the relay pod and the id the client knows it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// The port in the pod (0: any free port, for tests).
    pub port: u16,
    /// The id sent in `Incoming`.
    pub listener: u32,
    /// [`FlowKind::Tcp`] or [`FlowKind::Udp`].
    pub kind: FlowKind,
}

/// Why a `--listen` value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--listen {value:?}: {why} (expected PORT=ID or PORT=ID/udp, e.g. 8080=1)")]
pub struct ListenSpecError {
    value: String,
    why: &'static str,
}

impl FromStr for ListenSpec {
    type Err = ListenSpecError;

    fn from_str(s: &str) -> Result<ListenSpec, ListenSpecError> {
        let err = |why| ListenSpecError {
            value: s.chars().take(64).collect(),
            why,
        };
        let (port, rest) = s.split_once('=').ok_or_else(|| err("no '='"))?;
        let (id, kind) = match rest.split_once('/') {
            None => (rest, FlowKind::Tcp),
            Some((id, "tcp")) => (id, FlowKind::Tcp),
            Some((id, "udp")) => (id, FlowKind::Udp),
            Some(_) => return Err(err("the protocol must be tcp or udp")),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(port) || !digits(id) {
            return Err(err("the port and the id are decimal numbers"));
        }
        Ok(ListenSpec {
            port: port.parse().map_err(|_| err("the port is above 65535"))?,
            listener: id.parse().map_err(|_| err("the id is above 4294967295"))?,
            kind,
        })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.port, self.listener)?;
        if self.kind == FlowKind::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

/// Why the relay cannot start; each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// `--token-sha256` is not 64 hex digits.
    #[error(
        "--token-sha256 must be 64 hex digits (the SHA-256 of the session's secret), got {0} characters"
    )]
    TokenHash(usize),
    /// Two listeners share a port or an id.
    #[error("--listen {0}: two listeners share this port (of one protocol) or id")]
    Duplicate(ListenSpec),
    /// `--restore-selector` is not a JSON object of strings.
    #[error("--restore-selector: {0} (expected a JSON object such as {{\"app\":\"web\"}})")]
    RestoreSelector(#[source] kubelan_cluster::replace::OriginalError),
    /// `--session` is empty.
    #[error("--session must name the session whose selector --restore-service restores")]
    Session,
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source} (another process holds the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

/// Settings of a relay (from [`RelayArgs`], or built by tests).
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Where the carrier port binds.
    pub carrier: SocketAddr,
    /// The listeners, bound on `carrier`'s IP.
    pub listeners: Vec<ListenSpec>,
    /// SHA-256 of the session's secret.
    pub token_sha256: [u8; 32],
    /// Exit after this long without a live carrier.
    pub grace: Duration,
    /// ... before the first carrier.
    pub first_grace: Duration,
    /// Most flows open at once.
    pub max_flows: usize,
    /// Most carriers at once.
    pub max_carriers: usize,
    /// A UDP flow idle this long ends.
    pub udp_idle: Duration,
    /// How long the client may take to answer an `Incoming` (and to say hello).
    pub open_timeout: Duration,
    /// How often the relay pings each carrier.
    pub ping_interval: Duration,
    /// A carrier with nothing from the client for this long is dead.
    pub dead_after: Duration,
    /// Our software, for the welcome (`kubelan 0.1.0`).
    pub software: String,
    /// Our name in the welcome's facts (`ns/pod`).
    pub name: String,
}

impl RelayConfig {
    /// Settings from the command line.
    ///
    /// # Errors
    ///
    /// A malformed token hash, duplicate listeners.
    pub fn from_args(args: &RelayArgs) -> Result<RelayConfig, RelayError> {
        let name = match (std::env::var("POD_NAMESPACE"), std::env::var("POD_NAME")) {
            (Ok(ns), Ok(pod)) => format!("{ns}/{pod}"),
            _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "relay".into()),
        };
        let config = RelayConfig {
            carrier: SocketAddr::new(args.address, args.carrier_port),
            listeners: args.listen.clone(),
            token_sha256: parse_sha256(&args.token_sha256)?,
            grace: Duration::from_secs(args.grace),
            first_grace: Duration::from_secs(args.first_grace),
            max_flows: args.max_flows,
            max_carriers: args.max_carriers.max(1),
            udp_idle: Duration::from_secs(args.udp_idle.max(1)),
            name,
            ..RelayConfig::new([0; 32])
        };
        config.check()?;
        Ok(config)
    }

    /// Defaults (loopback carrier on any port, no listeners) for a secret's hash.
    pub fn new(token_sha256: [u8; 32]) -> RelayConfig {
        RelayConfig {
            carrier: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
            listeners: Vec::new(),
            token_sha256,
            grace: Duration::from_secs(10),
            first_grace: Duration::from_secs(60),
            max_flows: 4096,
            max_carriers: 8,
            udp_idle: Duration::from_secs(60),
            open_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            software: format!("kubelan {}", env!("CARGO_PKG_VERSION")),
            name: "relay".into(),
        }
    }

    fn check(&self) -> Result<(), RelayError> {
        for (i, a) in self.listeners.iter().enumerate() {
            let clash = self.listeners[..i].iter().any(|b| {
                a.listener == b.listener || (a.port != 0 && a.port == b.port && a.kind == b.kind)
            });
            if clash {
                return Err(RelayError::Duplicate(*a));
            }
        }
        Ok(())
    }
}

/// SHA-256 of a session secret, as the relay's `--token-sha256` wants it (hex).
pub fn token_sha256_hex(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_sha256(hex: &str) -> Result<[u8; 32], RelayError> {
    let hex = hex.trim();
    let bad = || RelayError::TokenHash(hex.chars().count());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Whether `token` hashes to `sha256`, compared in constant time (the hash is computed
/// whatever the token, and every byte is compared).
fn token_ok(token: Option<&Token>, sha256: &[u8; 32]) -> bool {
    let secret = token.map_or("", Token::expose);
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let diff = digest
        .as_ref()
        .iter()
        .zip(sha256)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0 && token.is_some()
}

/// When the relay gives up on its client: no live carrier for `after` (for `first`
/// before any carrier came). Sans-IO: fed the live count and the time.
#[derive(Debug)]
pub(crate) struct Grace {
    first: Duration,
    after: Duration,
    ever: bool,
    empty_since: Option<Instant>,
}

impl Grace {
    pub(crate) fn new(first: Duration, after: Duration, now: Instant) -> Grace {
        Grace {
            first,
            after,
            ever: false,
            empty_since: Some(now),
        }
    }

    /// `live` carriers are up as of `now`.
    pub(crate) fn update(&mut self, live: usize, now: Instant) {
        if live > 0 {
            self.ever = true;
            self.empty_since = None;
        } else if self.empty_since.is_none() {
            self.empty_since = Some(now);
        }
    }

    /// When to exit unless a carrier comes (`None` while one is live).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let wait = if self.ever { self.after } else { self.first };
        self.empty_since.map(|t| t + wait)
    }
}

/// How [`Relay::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayExit {
    /// No live carrier for the grace period: the session is over.
    Expired,
    /// Stopped from outside (SIGTERM).
    Stopped,
}

/// Counters.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Carriers that passed the handshake.
    pub carriers: AtomicU64,
    /// Carriers refused for a wrong or missing token.
    pub refused_auth: AtomicU64,
    /// Reverse flows the client accepted.
    pub flows: AtomicU64,
    /// Pod connections reset: no carrier, too many flows, or the client's refusal.
    pub reset: AtomicU64,
}

/// Live carriers and open flows, shared by the listeners and the carrier tasks.
struct Hub {
    config: RelayConfig,
    carriers: Mutex<Vec<(u64, MuxHandle)>>,
    live_tx: watch::Sender<usize>,
    next: AtomicUsize,
    next_id: AtomicU64,
    /// Carriers connected (handshakes included).
    connected: AtomicUsize,
    flows: AtomicUsize,
    stats: Arc<RelayStats>,
    /// Every open listener: the command line's, then those opened on request.
    listeners: Mutex<Vec<ListenSpec>>,
    /// Stops the listeners opened on request with the relay.
    stop: CancellationToken,
}

/// What to do with a client's [`Frame::Listen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenDecision {
    /// Open it.
    Open,
    /// It is open already (the client asks again after a reconnect): say so again.
    AlreadyOpen,
    /// Refuse, saying why.
    Refuse(String),
}

/// Decides a request to open `want`, given the listeners `open` and the carrier's port.
pub(crate) fn listen_decision(
    open: &[ListenSpec],
    want: ListenSpec,
    carrier_port: u16,
) -> ListenDecision {
    if open.contains(&want) {
        return ListenDecision::AlreadyOpen;
    }
    if !matches!(want.kind, FlowKind::Tcp | FlowKind::Udp) {
        return ListenDecision::Refuse(format!(
            "a relay listens for TCP or UDP, not {:?}",
            want.kind
        ));
    }
    if want.port < 1024 {
        return ListenDecision::Refuse(format!(
            "port {} is privileged and the relay runs without privileges; ask for a port from 1024",
            want.port
        ));
    }
    if want.port == carrier_port && want.kind == FlowKind::Tcp {
        return ListenDecision::Refuse(format!("port {} is the relay's carrier port", want.port));
    }
    if let Some(o) = open.iter().find(|o| o.listener == want.listener) {
        return ListenDecision::Refuse(format!(
            "listener {} is port {} already",
            o.listener, o.port
        ));
    }
    if let Some(o) = open
        .iter()
        .find(|o| o.port == want.port && o.kind == want.kind)
    {
        return ListenDecision::Refuse(format!(
            "port {} is listener {} already",
            o.port, o.listener
        ));
    }
    ListenDecision::Open
}

/// Answers a client's [`Frame::Listen`]: binds the port on the carrier's address and
/// serves it like a command-line listener.
async fn open_listener(hub: &Arc<Hub>, want: ListenSpec) -> Frame {
    let carrier_port = hub.config.carrier.port();
    let decision = {
        let open = hub.listeners.lock().expect("listeners lock");
        listen_decision(&open, want, carrier_port)
    };
    let refuse = |message: String| Frame::ListenFailed {
        listener: want.listener,
        error: FlowError::new(ErrorKind::Policy, message),
    };
    match decision {
        ListenDecision::AlreadyOpen => {
            return Frame::Listening {
                listener: want.listener,
            };
        }
        ListenDecision::Refuse(why) => return refuse(why),
        ListenDecision::Open => {}
    }
    let addr = SocketAddr::new(hub.config.carrier.ip(), want.port);
    let task: futures::future::BoxFuture<'static, ()> = if want.kind == FlowKind::Udp {
        match UdpSocket::bind(addr).await {
            Ok(u) => Box::pin(serve_udp(hub.clone(), want, Arc::new(u))),
            Err(e) => return refuse(format!("binding {addr}: {e}")),
        }
    } else {
        match listen_edge(addr) {
            Ok(l) => Box::pin(serve_tcp(hub.clone(), want, l)),
            Err(e) => return refuse(format!("binding {addr}: {e}")),
        }
    };
    {
        let mut open = hub.listeners.lock().expect("listeners lock");
        // Another carrier may have asked for the same listener meanwhile.
        if listen_decision(&open, want, carrier_port) != ListenDecision::Open {
            return refuse(format!(
                "listener {} changed meanwhile; ask again",
                want.listener
            ));
        }
        open.push(want);
    }
    let stop = hub.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = task => {}
        }
    });
    tracing::info!(listener = want.listener, port = want.port, kind = ?want.kind, "listening on request");
    Frame::Listening {
        listener: want.listener,
    }
}

impl Hub {
    fn add(&self, mux: &MuxHandle) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut c = self.carriers.lock().expect("carriers lock");
        c.push((id, mux.clone()));
        self.live_tx.send_replace(c.len());
        id
    }

    fn remove(&self, id: u64) {
        let mut c = self.carriers.lock().expect("carriers lock");
        c.retain(|(i, _)| *i != id);
        self.live_tx.send_replace(c.len());
    }

    /// A live carrier, round robin.
    fn pick(&self) -> Option<MuxHandle> {
        let c = self.carriers.lock().expect("carriers lock");
        let live: Vec<&MuxHandle> = c
            .iter()
            .map(|(_, m)| m)
            .filter(|m| !m.is_closed())
            .collect();
        if live.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % live.len();
        Some(live[i].clone())
    }

    /// Takes a flow slot, `None` at the limit.
    fn flow_slot(self: &Arc<Hub>) -> Option<FlowSlot> {
        let n = self.flows.fetch_add(1, Ordering::Relaxed);
        if n >= self.config.max_flows {
            self.flows.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(FlowSlot(self.clone()))
    }
}

struct FlowSlot(Arc<Hub>);

impl Drop for FlowSlot {
    fn drop(&mut self) {
        self.0.flows.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A relay with its ports bound; [`Relay::run`] serves them.
pub struct Relay {
    config: RelayConfig,
    carrier: TcpListener,
    tcp: Vec<(ListenSpec, TcpListener)>,
    udp: Vec<(ListenSpec, UdpSocket)>,
    stats: Arc<RelayStats>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("carrier", &self.carrier.local_addr().ok())
            .field("listeners", &self.config.listeners)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Binds the carrier port and every listener (so a busy port fails at start).
    ///
    /// # Errors
    ///
    /// [`RelayError::Bind`], [`RelayError::Duplicate`].
    pub async fn bind(config: RelayConfig) -> Result<Relay, RelayError> {
        config.check()?;
        let bind_err = |addr| move |source| RelayError::Bind { addr, source };
        let carrier = TcpListener::bind(config.carrier)
            .await
            .map_err(bind_err(config.carrier))?;
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for spec in &config.listeners {
            let addr = SocketAddr::new(config.carrier.ip(), spec.port);
            if spec.kind == FlowKind::Udp {
                udp.push((*spec, UdpSocket::bind(addr).await.map_err(bind_err(addr))?));
            } else {
                tcp.push((*spec, listen_edge(addr).map_err(bind_err(addr))?));
            }
        }
        Ok(Relay {
            config,
            carrier,
            tcp,
            udp,
            stats: Arc::new(RelayStats::default()),
        })
    }

    /// Where the carrier port listens.
    pub fn carrier_addr(&self) -> SocketAddr {
        self.carrier.local_addr().expect("bound")
    }

    /// Where listener `id` listens.
    pub fn listener_addr(&self, id: u32) -> Option<SocketAddr> {
        let tcp = self.tcp.iter().map(|(s, l)| (s, l.local_addr()));
        let udp = self.udp.iter().map(|(s, u)| (s, u.local_addr()));
        tcp.chain(udp)
            .find(|(s, _)| s.listener == id)
            .and_then(|(_, a)| a.ok())
    }

    /// Counters, shared with the running relay.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Serves until no carrier has been live for the grace period, or `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> RelayExit {
        let (live_tx, mut live_rx) = watch::channel(0);
        // Everything below stops with `stop`: carriers and flows end when the relay does.
        let stop = shutdown.child_token();
        let _stop_all = stop.clone().drop_guard();
        let hub = Arc::new(Hub {
            listeners: Mutex::new(self.config.listeners.clone()),
            stop: stop.clone(),
            config: self.config,
            carriers: Mutex::new(Vec::new()),
            live_tx,
            next: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            flows: AtomicUsize::new(0),
            stats: self.stats,
        });
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(accept_carriers(hub.clone(), self.carrier, stop.clone()));
        for (spec, l) in self.tcp {
            tasks.spawn(serve_tcp(hub.clone(), spec, l));
        }
        for (spec, u) in self.udp {
            tasks.spawn(serve_udp(hub.clone(), spec, Arc::new(u)));
        }
        let mut grace = Grace::new(hub.config.first_grace, hub.config.grace, Instant::now());
        loop {
            let deadline = grace.deadline();
            tokio::select! {
                () = shutdown.cancelled() => return RelayExit::Stopped,
                r = live_rx.changed() => {
                    if r.is_err() {
                        return RelayExit::Stopped;
                    }
                    let live = *live_rx.borrow_and_update();
                    grace.update(live, Instant::now());
                }
                () = async {
                    match deadline {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("no client for the grace period; the session is over");
                    return RelayExit::Expired;
                }
            }
        }
    }
}

async fn accept_carriers(hub: Arc<Hub>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (tcp, from) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a carrier failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if hub.connected.fetch_add(1, Ordering::Relaxed) >= hub.config.max_carriers {
            hub.connected.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%from, "too many carriers; closing a new one");
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let hub = hub.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = carrier(&hub, tcp, from) => {}
            }
            hub.connected.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The client's hello, checked: the version to speak and the features both offer, or
/// the refusal to send.
fn welcome_for(
    hello: Option<Frame>,
    sha256: &[u8; 32],
) -> Result<(u16, Capabilities, String), Box<Frame>> {
    let refuse = |reason, message: String| {
        Box::new(Frame::Refused {
            reason,
            versions: VersionRange::OURS,
            message,
        })
    };
    let Some(Frame::Hello {
        versions,
        caps,
        software,
        token,
    }) = hello
    else {
        return Err(refuse(
            RefuseReason::Other,
            "a carrier must start with a hello".into(),
        ));
    };
    if !token_ok(token.as_ref(), sha256) {
        return Err(refuse(
            RefuseReason::Auth,
            "the session's secret does not match this relay's (a relay of another session, \
             or a client whose session ended; start the session again)"
                .into(),
        ));
    }
    let version = negotiate(versions, VersionRange::OURS)
        .map_err(|r| refuse(RefuseReason::Version, r.message))?;
    if !caps.contains(Capabilities::REVERSE) {
        return Err(refuse(
            RefuseReason::Other,
            format!(
                "this is a kubelan relay, which sends flows toward its client; the client \
                 ({software}) does not take them"
            ),
        ));
    }
    Ok((version, Capabilities::ALL.intersect(caps), software))
}

/// Serves one carrier until it dies, is silent too long, or the relay stops.
async fn carrier(hub: &Arc<Hub>, tcp: TcpStream, from: SocketAddr) {
    let cfg = &hub.config;
    let (mux, mut inbound) = mux::spawn(tcp, Side::Agent);
    let _close = CloseOnDrop(mux.clone());
    let Ok(Some(control)) = tokio::time::timeout(cfg.open_timeout, inbound.recv()).await else {
        tracing::debug!(%from, "a carrier opened no control stream");
        return;
    };
    let mut control = control;
    control.set_urgent();
    let (rd, mut wr) = tokio::io::split(control);
    let mut reader = FrameReader::new(rd);
    let hello = match tokio::time::timeout(cfg.open_timeout, reader.next()).await {
        Ok(Ok(f)) => f,
        Ok(Err(_)) | Err(_) => None,
    };
    let (version, caps, software) = match welcome_for(hello, &cfg.token_sha256) {
        Ok(x) => x,
        Err(refusal) => {
            if let Frame::Refused {
                reason: RefuseReason::Auth,
                ..
            } = *refusal
            {
                hub.stats.refused_auth.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(%from, ?refusal, "refused a carrier");
            let _ = write_frame(&mut wr, &refusal).await;
            let _ = wr.shutdown().await;
            // The refusal must reach the client before the carrier closes.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
    };
    let welcome = Frame::Welcome {
        version,
        caps,
        software: cfg.software.clone(),
        facts: Facts {
            agent: cfg.name.clone(),
            ..Facts::default()
        },
    };
    if write_frame(&mut wr, &welcome).await.is_err() {
        return;
    }
    hub.stats.carriers.fetch_add(1, Ordering::Relaxed);
    let id = hub.add(&mux);
    tracing::info!(%from, client = %software, "client connected");
    // The relay takes no flows into the cluster: a client's `Open` is refused.
    let refuse_opens = async {
        while let Some(stream) = inbound.recv().await {
            tokio::spawn(refuse_open(stream));
        }
    };
    let why = tokio::select! {
        why = keep_alive(&mut reader, &mut wr, hub, &mux) => why,
        () = refuse_opens => "the carrier closed".to_string(),
        () = mux.closed() => mux.close_reason().unwrap_or_default(),
    };
    hub.remove(id);
    tracing::info!(%from, reason = %why, "client carrier ended");
}

async fn refuse_open(mut stream: MuxStream) {
    let e = FlowError::new(
        ErrorKind::Policy,
        "this is a kubelan relay: it opens no flows into the cluster (use the agent's session)",
    );
    let _ = write_frame(&mut stream, &Frame::Failed(e)).await;
    let _ = stream.shutdown().await;
}

/// Pings the client, answers its pings and opens the listeners it asks for; returns why
/// the carrier is dead.
async fn keep_alive<R, W>(
    reader: &mut FrameReader<R>,
    wr: &mut W,
    hub: &Arc<Hub>,
    mux: &MuxHandle,
) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let cfg = &hub.config;
    let mut last_heard = Instant::now();
    let mut nonce = 0u64;
    let mut tick = tokio::time::interval(cfg.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Data of other streams proves the client alive as well as a pong does.
                let quiet = last_heard.elapsed().min(mux.quiet_for());
                if quiet > cfg.dead_after {
                    return format!("the client was silent for {:.1} s", quiet.as_secs_f64());
                }
                nonce += 1;
                match tokio::time::timeout(cfg.dead_after, write_frame(wr, &Frame::Ping { nonce })).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return format!("sending a ping: {e}"),
                    Err(_) => return "a ping could not be sent (carrier stalled)".into(),
                }
            }
            f = reader.next() => match f {
                Ok(Some(Frame::Ping { nonce })) => {
                    last_heard = Instant::now();
                    if write_frame(wr, &Frame::Pong { nonce }).await.is_err() {
                        return "answering a ping failed".into();
                    }
                }
                Ok(Some(Frame::Pong { .. })) => last_heard = Instant::now(),
                Ok(Some(Frame::Listen { listener, kind, port })) => {
                    last_heard = Instant::now();
                    let answer = open_listener(hub, ListenSpec { port, listener, kind }).await;
                    if write_frame(wr, &answer).await.is_err() {
                        return "answering a listen request failed".into();
                    }
                }
                Ok(Some(other)) => return format!("unexpected {} frame on the control stream", other.name()),
                Ok(None) => return "the client closed the control stream".into(),
                Err(e) => return format!("control stream: {e}"),
            },
        }
    }
}

struct CloseOnDrop(MuxHandle);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Resets a pod's connection (RST, not FIN: the pod must not take it for an answer).
fn reset(hub: &Hub, tcp: TcpStream) {
    hub.stats.reset.fetch_add(1, Ordering::Relaxed);
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

async fn serve_tcp(hub: Arc<Hub>, spec: ListenSpec, listener: TcpListener) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, port = spec.port, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = hub.flow_slot() else {
            tracing::debug!(%peer, "too many flows; resetting a connection");
            reset(&hub, tcp);
            continue;
        };
        // Before the flow's task runs: what the pod sends meanwhile comes in under a young
        // edge socket's window, not the listener's.
        edge_opened(&tcp);
        let hub = hub.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tcp_flow(&hub, spec.listener, tcp, peer).await;
        });
    }
}

async fn tcp_flow(hub: &Hub, listener: u32, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    // A carrier that died under us is worth one more try on another.
    let mut opened = Err(FlowError::new(ErrorKind::CarrierLost, "no live carrier"));
    for _ in 0..2 {
        let Some(mux) = hub.pick() else { break };
        // Optimistic: the pod's first bytes travel with `Incoming`, no round trip to the
        // client first (bench/expose.sh: p50 503 → 370 µs, 3 708 → 5 304 conn/s). A
        // client that cannot reach its target answers `Failed`; the relay's first read
        // returns it and the pod's connection is reset, as before.
        opened = reverse::open_tcp_optimistic(&mux, listener, peer).await;
        if !matches!(&opened, Err(e) if e.kind == ErrorKind::CarrierLost) {
            break;
        }
    }
    match opened {
        Ok(conn) => {
            hub.stats.flows.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "reverse flow open");
            // An edge socket (`kubelan_session::relay::EDGE_BUDGET`): 1 000 bulk flows
            // from pods with autotuned buffers held 1 GB in this pod's sockets and took
            // the node past `tcp_mem`'s pressure mark, which clamps every socket's window
            // on the node, the carrier's too (docs/benchmarks.md, session 26).
            if let Err(e) = relay_edge(tcp, conn, None).await {
                tracing::debug!(%peer, error = %e, "reverse flow cut");
            }
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "no way to the client; resetting");
            reset(hub, tcp);
        }
    }
}

/// The UDP flows of one listener by pod peer: the flow's generation (so an ended flow
/// removes only itself) and where its datagrams go.
type UdpFlows = Arc<Mutex<HashMap<SocketAddr, (u64, mpsc::Sender<Bytes>)>>>;

/// Datagrams of one UDP listener: one reverse flow per pod peer.
async fn serve_udp(hub: Arc<Hub>, spec: ListenSpec, sock: Arc<UdpSocket>) {
    let flows: UdpFlows = Arc::default();
    let mut generation = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier sends surface here; nothing to do with them.
                tracing::debug!(error = %e, port = spec.port, "UDP receive failed");
                continue;
            }
        };
        let d = Bytes::copy_from_slice(&buf[..n]);
        let existing = flows.lock().expect("udp flows").get(&peer).cloned();
        if let Some((_, tx)) = existing {
            // UDP: drop when the flow is slow.
            let _ = tx.try_send(d);
            continue;
        }
        let Some(slot) = hub.flow_slot() else {
            hub.stats.reset.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        generation += 1;
        let (tx, rx) = mpsc::channel(64);
        let _ = tx.try_send(d);
        flows
            .lock()
            .expect("udp flows")
            .insert(peer, (generation, tx));
        let (hub, sock, flows, gen_) = (hub.clone(), sock.clone(), flows.clone(), generation);
        tokio::spawn(async move {
            let _slot = slot;
            udp_flow(&hub, spec.listener, &sock, peer, rx).await;
            let mut f = flows.lock().expect("udp flows");
            if f.get(&peer).is_some_and(|(g, _)| *g == gen_) {
                f.remove(&peer);
            }
        });
    }
}

async fn udp_flow(
    hub: &Hub,
    listener: u32,
    sock: &UdpSocket,
    peer: SocketAddr,
    mut from_pod: mpsc::Receiver<Bytes>,
) {
    let Some(mux) = hub.pick() else {
        hub.stats.reset.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (to_client, mut from_client) =
        match reverse::open_udp(&mux, listener, peer, hub.config.open_timeout).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no UDP flow to the client");
                hub.stats.reset.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
    hub.stats.flows.fetch_add(1, Ordering::Relaxed);
    let idle = hub.config.udp_idle;
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            d = from_pod.recv() => match d {
                Some(d) => {
                    if to_client.send(d).await.is_err() {
                        return;
                    }
                    deadline = tokio::time::Instant::now() + idle;
                }
                None => return,
            },
            d = from_client.recv() => match d {
                Some(d) => {
                    let _ = sock.send_to(&d, peer).await;
                    deadline = tokio::time::Instant::now() + idle;
                }
                None => return,
            },
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Serves until the session is over or `shutdown`, then (for `kubelan replace`) puts the
/// replaced Service back, whatever ended the session.
pub async fn serve(
    relay: Relay,
    shutdown: CancellationToken,
    restorer: Option<&Restorer>,
) -> (RelayExit, Option<RestoreOutcome>) {
    let exit = relay.run(shutdown).await;
    tracing::info!(?exit, "relay stopped");
    let restored = match restorer {
        Some(r) => Some(r.restore().await),
        None => None,
    };
    (exit, restored)
}

/// The restore settings of `args` (`None` without `--restore-service`); the namespace
/// defaults to `default_namespace`.
///
/// # Errors
///
/// [`RelayError::RestoreSelector`], [`RelayError::Session`].
pub fn restore_target(
    args: &RelayArgs,
    default_namespace: &str,
) -> Result<Option<RestoreTarget>, RelayError> {
    let Some(service) = &args.restore_service else {
        return Ok(None);
    };
    let session = args
        .session
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or(RelayError::Session)?;
    let original = args
        .restore_selector
        .as_deref()
        .map(kubelan_cluster::replace::parse_selector)
        .transpose()
        .map_err(RelayError::RestoreSelector)?;
    Ok(Some(RestoreTarget {
        namespace: args
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| default_namespace.to_string()),
        service: service.clone(),
        session,
        original,
        timeout: Duration::from_secs(args.restore_timeout.max(1)),
    }))
}

/// `kubelan relay`: binds, serves until the session is over or SIGTERM, restores a
/// replaced Service, exits 0.
///
/// With `--restore-service`, the relay first makes sure it may read and patch that
/// Service (waiting up to `--first-grace` for the session's RBAC) and only then opens its
/// ports, so the pod turns ready, and the client swaps the Service, only when the relay
/// can put it back.
///
/// # Errors
///
/// Bad flags, a port that cannot be bound, no in-cluster credentials or no permission to
/// restore the Service.
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let config = RelayConfig::from_args(&args)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::wait_for_signal().await;
        stop.cancel();
    });
    // Checked before any connection, so a bad flag fails at once.
    restore_target(&args, "default")?;
    let restorer = match &args.restore_service {
        None => None,
        Some(_) => {
            let client = kube::Client::try_default().await.map_err(|e| {
                anyhow::anyhow!(
                    "--restore-service needs the API server and the session's ServiceAccount token in the pod ({e}); the session's Job mounts them"
                )
            })?;
            let target = restore_target(&args, client.default_namespace())?
                .expect("--restore-service is set");
            Some(Restorer::new(client, target))
        }
    };
    if let Some(r) = &restorer
        && let Err(e) = r.wait_until_able(config.first_grace, &shutdown).await
    {
        // Not ready, so no client swapped the Service; restore anyway in case one did.
        r.restore().await;
        anyhow::bail!(
            "the relay cannot restore Service {}/{}, so it does not serve: {e}",
            r.target().namespace,
            r.target().service
        );
    }
    let relay = Relay::bind(config).await?;
    let listeners: Vec<String> = args
        .listen
        .iter()
        .map(|s| match relay.listener_addr(s.listener) {
            Some(a) => format!("{a}={}", s.listener),
            None => s.to_string(),
        })
        .collect();
    tracing::info!(carrier = %relay.carrier_addr(), ?listeners, "relay listening");
    serve(relay, shutdown, restorer.as_ref()).await;
    Ok(())
}

#[cfg(test)]
mod listen_tests;
#[cfg(test)]
mod tests;
