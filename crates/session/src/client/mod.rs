//! The client side of a session: keeps carriers up, proves they are alive, opens flows.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kubelan_proto::{
    Capabilities, ErrorKind, Facts, FlowError, FlowKind, Frame, RefuseReason, Target, Token,
    VersionRange,
};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::carrier::{CarrierDialer, CarrierKind};
use crate::flow::{FlowConn, FrameReader, buffer_frame, datagram_channels, write_frame};
use crate::mux::{self, MuxHandle, MuxStream, Side};
use crate::reconnect::ProbeSchedule;
use crate::reverse::{AcceptLimits, Acceptor};

/// Settings and timing of a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Client software name sent in the hello (`kubelan 0.1.0`).
    pub software: String,
    /// Features the agent must have: a carrier whose agent lacks one ends the session
    /// ([`SessionState::Failed`]) with a sentence naming both sides' software and
    /// protocol versions. Empty by default.
    pub required: Capabilities,
    /// The secret sent in every carrier's hello, for a peer that checks one (the
    /// per-session relay of `kubelan expose`); `None` for the agent.
    pub token: Option<Token>,
    /// Timing of flows the agent side opens toward this machine (with an [`Acceptor`]).
    pub accept: AcceptLimits,
    /// How often to ping each carrier.
    pub ping_interval: Duration,
    /// A carrier with no frame from the agent for this long is dead.
    pub dead_after: Duration,
    /// How long a new flow waits for a carrier (and for the agent's answer).
    pub open_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max`, with ±25 % jitter.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// While a carrier runs on a fallback (port-forward), the preferred carrier (direct) is
    /// probed first after this long, then at doubling intervals up to `probe_max`.
    pub probe_min: Duration,
    /// Longest interval between probes of the preferred carrier.
    pub probe_max: Duration,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            software: format!("kubelan {}", env!("CARGO_PKG_VERSION")),
            required: Capabilities::default(),
            token: None,
            accept: AcceptLimits::default(),
            ping_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            open_timeout: Duration::from_secs(15),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            probe_min: Duration::from_secs(5),
            probe_max: Duration::from_secs(15),
        }
    }
}

/// One live carrier, as shown to users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarrierInfo {
    /// Direct or port-forward.
    pub kind: CarrierKind,
    /// Where it goes.
    pub peer: String,
    /// The agent's pod (or host) and node.
    pub agent: String,
    /// Negotiated protocol version.
    pub version: u16,
    /// The agent's software (`kubelan 0.1.0`), from its `Welcome`.
    pub software: String,
}

impl fmt::Display for CarrierInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {} (agent {})", self.kind, self.peer, self.agent)
    }
}

/// What the session is doing; never claims "connected" without a live, answering carrier.
/// Its text ([`fmt::Display`]) is the one line a user sees for each change, with the
/// reason once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Dialing for the first time.
    Connecting,
    /// At least one carrier answers pings.
    Connected {
        /// The carriers that answer.
        carriers: Vec<CarrierInfo>,
        /// When some of the session's other carriers are down: how many, and why the
        /// latest of them failed.
        down: Option<(usize, String)>,
    },
    /// Every carrier is down; retrying.
    Reconnecting {
        /// Why the last attempt or carrier failed.
        error: String,
    },
    /// Retrying cannot help (e.g. incompatible agent); the message says what to do.
    Failed(String),
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionState::Connecting => write!(f, "connecting"),
            SessionState::Connected { carriers, down } => {
                write!(f, "connected via ")?;
                for (i, c) in carriers.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{c}")?;
                }
                if let Some((n, why)) = down {
                    let s = if *n == 1 { "" } else { "s" };
                    write!(f, "; {n} more carrier{s} reconnecting: {why}")?;
                }
                Ok(())
            }
            SessionState::Reconnecting { error } => write!(f, "reconnecting: {error}"),
            SessionState::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// One supervised carrier's standing, for the session state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Slot {
    /// Dialing for the first time.
    #[default]
    Starting,
    /// Its carrier answers.
    Up,
    /// Down and retrying: the failure's sequence number (latest wins) and reason.
    Down(u64, String),
}

/// The session state from the live carriers and each slot's standing.
fn state_of(carriers: Vec<CarrierInfo>, slots: &[Slot]) -> SessionState {
    let mut down = 0;
    let mut latest: Option<(u64, &str)> = None;
    for s in slots {
        if let Slot::Down(seq, why) = s {
            down += 1;
            if latest.is_none_or(|(l, _)| *seq > l) {
                latest = Some((*seq, why));
            }
        }
    }
    let why = latest.map(|(_, w)| w.to_string());
    if !carriers.is_empty() {
        SessionState::Connected {
            carriers,
            down: why.map(|w| (down, w)),
        }
    } else if let Some(error) = why {
        SessionState::Reconnecting { error }
    } else {
        SessionState::Connecting
    }
}

/// Counters of a session.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Flows opened successfully.
    pub flows_opened: AtomicU64,
    /// Flows the agent refused or could not open.
    pub flows_failed: AtomicU64,
    /// Carriers established (including reconnects).
    pub carriers_up: AtomicU64,
    /// Flows the agent side opened toward this machine that were handed to the acceptor.
    pub reverse_flows: AtomicU64,
}

struct Live {
    mux: MuxHandle,
    info: CarrierInfo,
    facts: Facts,
    /// Features both sides support on this carrier.
    caps: Capabilities,
    /// Requests for the carrier's control task ([`Session::listen`]).
    requests: mpsc::UnboundedSender<ControlRequest>,
}

/// Something to ask the agent side on a carrier's control stream.
enum ControlRequest {
    /// [`Frame::Listen`]; the answer goes to `reply`.
    Listen {
        listener: u32,
        kind: FlowKind,
        port: u16,
        reply: oneshot::Sender<Result<(), FlowError>>,
    },
}

struct Shared {
    config: SessionConfig,
    live: Mutex<Vec<Arc<Live>>>,
    next: AtomicUsize,
    state_tx: watch::Sender<SessionState>,
    /// Lock order: `live`, then `slots`.
    slots: Mutex<Vec<Slot>>,
    failures: AtomicU64,
    stats: SessionStats,
    /// Serves the flows the agent side opens (on carriers that negotiated REVERSE).
    acceptor: Option<Arc<dyn Acceptor>>,
}

impl Shared {
    fn publish(&self) {
        let live = self.live.lock().expect("live lock");
        let slots = self.slots.lock().expect("slots lock");
        let state = state_of(live.iter().map(|l| l.info.clone()).collect(), &slots);
        drop(slots);
        drop(live);
        self.state_tx.send_if_modified(|s| {
            // Failed is final; an unchanged state is not news.
            if matches!(s, SessionState::Failed(_)) || *s == state {
                false
            } else {
                *s = state;
                true
            }
        });
    }

    fn set_slot(&self, slot: usize, to: Slot) {
        if let Some(s) = self.slots.lock().expect("slots lock").get_mut(slot) {
            *s = to;
        }
    }

    /// Why the latest carrier failed (empty when none has).
    fn last_error(&self) -> String {
        let slots = self.slots.lock().expect("slots lock");
        slots
            .iter()
            .filter_map(|s| match s {
                Slot::Down(seq, why) => Some((*seq, why)),
                _ => None,
            })
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, why)| why.clone())
            .unwrap_or_default()
    }

    /// A slot's carrier failed with `why`; the slot retries.
    fn slot_down(&self, slot: usize, why: String) {
        let seq = self.failures.fetch_add(1, Ordering::Relaxed);
        self.set_slot(slot, Slot::Down(seq, why));
        self.publish();
    }

    /// `live` answers: new flows may use it.
    fn add_live(&self, slot: usize, live: &Arc<Live>) {
        self.stats.carriers_up.fetch_add(1, Ordering::Relaxed);
        self.live.lock().expect("live lock").push(live.clone());
        self.set_slot(slot, Slot::Up);
        self.publish();
    }

    /// No new flows on `live`.
    fn remove_live(&self, live: &Arc<Live>) {
        self.live
            .lock()
            .expect("live lock")
            .retain(|l| !Arc::ptr_eq(l, live));
    }
}

/// A session with the agent over one or more carriers. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &*self.shared.state_tx.borrow())
            .finish()
    }
}

impl Session {
    /// Starts one supervisor per dialer (each keeps its carrier up until `shutdown`).
    /// Flows the agent side opens toward this machine are refused (reset at once); see
    /// [`Session::start_accepting`].
    pub fn start(
        dialers: Vec<Arc<dyn CarrierDialer>>,
        config: SessionConfig,
        shutdown: CancellationToken,
    ) -> Session {
        Session::start_accepting(dialers, config, None, shutdown)
    }

    /// [`Session::start`], and with an `acceptor` the session serves the flows the
    /// agent side opens toward this machine ([`crate::reverse`]) on every carrier that
    /// negotiated [`Capabilities::REVERSE`]; on other carriers, or with no acceptor, such
    /// flows are reset at once. Put `REVERSE` in [`SessionConfig::required`] when the
    /// session is pointless without them.
    pub fn start_accepting(
        dialers: Vec<Arc<dyn CarrierDialer>>,
        config: SessionConfig,
        acceptor: Option<Arc<dyn Acceptor>>,
        shutdown: CancellationToken,
    ) -> Session {
        let (state_tx, _) = watch::channel(SessionState::Connecting);
        let shared = Arc::new(Shared {
            config,
            live: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            state_tx,
            slots: Mutex::new(vec![Slot::Starting; dialers.len()]),
            failures: AtomicU64::new(0),
            stats: SessionStats::default(),
            acceptor,
        });
        for (slot, dialer) in dialers.into_iter().enumerate() {
            tokio::spawn(supervise(slot, dialer, shared.clone(), shutdown.clone()));
        }
        Session { shared }
    }

    /// Watches the session state.
    pub fn state(&self) -> watch::Receiver<SessionState> {
        self.shared.state_tx.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.shared.stats
    }

    /// The cluster facts of the first live carrier.
    pub fn facts(&self) -> Option<Facts> {
        let live = self.shared.live.lock().expect("live lock");
        live.first().map(|l| l.facts.clone())
    }

    /// The features both sides support on the first live carrier (`None` while no
    /// carrier is up).
    pub fn capabilities(&self) -> Option<Capabilities> {
        let live = self.shared.live.lock().expect("live lock");
        live.first().map(|l| l.caps)
    }

    /// Waits until a carrier is live (or the session failed).
    ///
    /// # Errors
    ///
    /// The session's fatal error, or a timeout naming the last carrier error.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), FlowError> {
        self.pick(timeout).await.map(|_| ())
    }

    async fn pick(&self, timeout: Duration) -> Result<Arc<Live>, FlowError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut state = self.state();
        loop {
            {
                let live = self.shared.live.lock().expect("live lock");
                if !live.is_empty() {
                    let i = self.shared.next.fetch_add(1, Ordering::Relaxed) % live.len();
                    return Ok(live[i].clone());
                }
            }
            if let SessionState::Failed(e) = &*state.borrow_and_update() {
                return Err(FlowError::new(ErrorKind::CarrierLost, e.clone()));
            }
            if tokio::time::timeout_at(deadline, state.changed())
                .await
                .is_err()
            {
                return Err(no_tunnel(timeout, &self.shared.last_error()));
            }
        }
    }

    /// Asks the agent side to open listener `listener` for flows of `kind` on `port`
    /// ([`Frame::Listen`]); its connections then arrive at the acceptor with that
    /// listener number. Asking again for an open listener (after a reconnect) succeeds.
    ///
    /// # Errors
    ///
    /// The relay's refusal (a port in use, privileged or taken), [`ErrorKind::Policy`]
    /// when the peer does not open listeners on request ([`Capabilities::LISTEN`]), or
    /// [`ErrorKind::CarrierLost`] / [`ErrorKind::Timeout`].
    pub async fn listen(&self, listener: u32, kind: FlowKind, port: u16) -> Result<(), FlowError> {
        let timeout = self.shared.config.open_timeout;
        let carrier = self.pick(timeout).await?;
        if !carrier.caps.contains(Capabilities::LISTEN) {
            return Err(FlowError::new(
                ErrorKind::Policy,
                format!(
                    "{} ({}) does not open listeners on request; it needs a newer kubelan",
                    carrier.info.agent, carrier.info.software
                ),
            ));
        }
        let (reply, answer) = oneshot::channel();
        let lost = || {
            FlowError::new(
                ErrorKind::CarrierLost,
                "the carrier ended before the answer",
            )
        };
        carrier
            .requests
            .send(ControlRequest::Listen {
                listener,
                kind,
                port,
                reply,
            })
            .map_err(|_| lost())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(lost()),
            Err(_) => Err(FlowError::new(
                ErrorKind::Timeout,
                format!("no answer to the listen request within {timeout:?}"),
            )),
        }
    }

    /// Opens a flow of `kind` to `target` and waits for the agent's answer.
    ///
    /// # Errors
    ///
    /// The agent's typed refusal, or [`ErrorKind::CarrierLost`] / [`ErrorKind::Timeout`].
    pub async fn open(
        &self,
        kind: FlowKind,
        target: Target,
    ) -> Result<(FrameReader<MuxStream>, SocketAddr), FlowError> {
        let timeout = self.shared.config.open_timeout;
        let carrier = self.pick(timeout).await?;
        if kind == FlowKind::Echo && !carrier.caps.contains(Capabilities::ECHO) {
            return Err(FlowError::new(
                ErrorKind::Other,
                format!(
                    "the agent ({}) cannot ping yet; upgrade it with `kubelan install`",
                    carrier.info.agent
                ),
            ));
        }
        let lost = |e: &dyn fmt::Display| {
            FlowError::new(
                ErrorKind::CarrierLost,
                format!("tunnel to the agent failed: {e}"),
            )
        };
        let mut stream = carrier.mux.open().await.map_err(|e| lost(&e))?;
        let open = Frame::Open {
            kind,
            target,
            optimistic: false,
        };
        write_frame(&mut stream, &open)
            .await
            .map_err(|e| lost(&e))?;
        let mut reader = FrameReader::new(stream);
        let answer = tokio::time::timeout(timeout, reader.next()).await;
        let result = match answer {
            Err(_) => Err(FlowError::new(
                ErrorKind::Timeout,
                format!("the agent did not answer within {timeout:?}"),
            )),
            Ok(Err(e)) => Err(lost(&e)),
            Ok(Ok(None)) => Err(lost(&"stream closed")),
            Ok(Ok(Some(Frame::Opened { peer }))) => Ok(peer),
            Ok(Ok(Some(Frame::Failed(e)))) => Err(e),
            Ok(Ok(Some(other))) => Err(FlowError::new(
                ErrorKind::Protocol,
                format!("the agent answered Open with {}", other.name()),
            )),
        };
        match result {
            Ok(peer) => {
                self.shared
                    .stats
                    .flows_opened
                    .fetch_add(1, Ordering::Relaxed);
                Ok((reader, peer))
            }
            Err(e) => {
                self.shared
                    .stats
                    .flows_failed
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Opens a TCP flow; the result is a byte stream to the target.
    ///
    /// # Errors
    ///
    /// As [`Session::open`].
    pub async fn connect(&self, target: Target) -> Result<FlowConn<MuxStream>, FlowError> {
        let (reader, _) = self.open(FlowKind::Tcp, target).await?;
        let (io, leftover) = reader.into_parts();
        Ok(FlowConn::new(io, leftover))
    }

    /// Opens a TCP flow without waiting for the agent's answer (saves one round trip
    /// through the tunnel): the stream is returned at once, its `Open` frame buffered to
    /// leave with the first data written, or at the first flush or read. The agent may
    /// send its `Opened` along with its first data. If the agent then cannot reach the
    /// target, the first read fails with its reason.
    /// Use only where the caller cannot report a typed refusal anyway, or for targets the
    /// agent advertised as dialable ([`Session::advertised`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::CarrierLost`] when no carrier is up within the open timeout.
    pub async fn connect_optimistic(
        &self,
        target: Target,
    ) -> Result<FlowConn<MuxStream>, FlowError> {
        let carrier = self.pick(self.shared.config.open_timeout).await?;
        let lost = |e: &dyn fmt::Display| {
            FlowError::new(
                ErrorKind::CarrierLost,
                format!("tunnel to the agent failed: {e}"),
            )
        };
        let mut stream = carrier.mux.open().await.map_err(|e| lost(&e))?;
        // Not flushed: the `Open` leaves with the first data the caller writes, or when
        // it first reads (see `FlowConn::opening`).
        buffer_frame(
            &mut stream,
            &Frame::Open {
                kind: FlowKind::Tcp,
                target,
                optimistic: true,
            },
        )
        .await
        .map_err(|e| lost(&e))?;
        self.shared
            .stats
            .flows_opened
            .fetch_add(1, Ordering::Relaxed);
        Ok(FlowConn::opening(stream))
    }

    /// Whether `ip` lies in the Pod or Service prefixes the agent advertised.
    pub fn advertised(&self, ip: std::net::IpAddr) -> bool {
        let live = self.shared.live.lock().expect("live lock");
        live.first().is_some_and(|l| {
            l.facts
                .pod_cidrs
                .iter()
                .chain(&l.facts.service_cidrs)
                .any(|c| c.contains(ip))
        })
    }

    /// Opens a UDP flow; datagrams go through the returned channels (closing `tx` ends
    /// the flow; `rx` closes when the agent ends it or the carrier dies).
    ///
    /// # Errors
    ///
    /// As [`Session::open`].
    pub async fn open_udp(
        &self,
        target: Target,
    ) -> Result<(mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>), FlowError> {
        let (reader, _) = self.open(FlowKind::Udp, target).await?;
        Ok(datagram_channels(reader))
    }

    /// Sends one DNS query through the agent (answered from its cluster cache or its
    /// cluster DNS server) and returns the response message.
    ///
    /// # Errors
    ///
    /// As [`Session::open`], or a timeout after 5 s without an answer.
    pub async fn dns(&self, server: SocketAddr, query: Bytes) -> Result<Bytes, FlowError> {
        let (reader, _) = self.open(FlowKind::Dns, Target::Addr(server)).await?;
        let (mut stream, leftover) = reader.into_parts();
        write_frame(&mut stream, &Frame::Datagram(query))
            .await
            .map_err(|e| FlowError::new(ErrorKind::CarrierLost, e.to_string()))?;
        let mut reader = FrameReader::with_buffer(stream, leftover);
        match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
            Ok(Ok(Some(Frame::Datagram(d)))) => Ok(d),
            Ok(Ok(Some(Frame::Failed(e) | Frame::Reset(e)))) => Err(e),
            Ok(Ok(_)) | Ok(Err(_)) => Err(FlowError::new(
                ErrorKind::CarrierLost,
                "the DNS flow ended without an answer",
            )),
            Err(_) => Err(FlowError::new(
                ErrorKind::Timeout,
                "no DNS answer within 5 s",
            )),
        }
    }
}

impl Session {
    /// Sends one ICMP echo request to `dst` from the agent (a real ping inside the
    /// cluster) and waits up to `timeout` for the reply. `Ok(true)` when the reply came,
    /// `Ok(false)` when it did not come in time.
    ///
    /// # Errors
    ///
    /// As [`Session::open`]; the agent's refusal (policy, or ping not permitted in its
    /// pod) comes back typed.
    pub async fn ping(
        &self,
        dst: std::net::IpAddr,
        seq: u16,
        data: &[u8],
        timeout: Duration,
    ) -> Result<bool, FlowError> {
        let (reader, _) = self
            .open(FlowKind::Echo, Target::Addr(SocketAddr::new(dst, 0)))
            .await?;
        let (mut stream, leftover) = reader.into_parts();
        let mut body = Vec::with_capacity(2 + data.len());
        body.extend_from_slice(&seq.to_be_bytes());
        body.extend_from_slice(data);
        write_frame(&mut stream, &Frame::Datagram(Bytes::from(body)))
            .await
            .map_err(|e| FlowError::new(ErrorKind::CarrierLost, e.to_string()))?;
        let mut reader = FrameReader::with_buffer(stream, leftover);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, reader.next()).await {
                Ok(Ok(Some(Frame::Datagram(d)))) => {
                    if d.len() >= 2 && d[..2] == seq.to_be_bytes() && d[2..] == *data {
                        return Ok(true);
                    }
                }
                Ok(Ok(Some(Frame::Failed(e) | Frame::Reset(e)))) => return Err(e),
                Ok(Ok(_) | Err(_)) | Err(_) => return Ok(false),
            }
        }
    }
}

/// A flow's error when no carrier came up in time: the reason once, not wrapped in the
/// session state's own words (the state line says "reconnecting" already).
fn no_tunnel(timeout: Duration, last_error: &str) -> FlowError {
    let waited = timeout.as_secs_f64();
    FlowError::new(
        ErrorKind::CarrierLost,
        if last_error.is_empty() {
            format!("no tunnel to the agent within {waited} s (still connecting)")
        } else {
            format!("no tunnel to the agent within {waited} s: {last_error}")
        },
    )
}

fn jitter(d: Duration) -> Duration {
    let f = rand::rng().random_range(0.75..1.25);
    d.mul_f64(f)
}

async fn supervise(
    slot: usize,
    dialer: Arc<dyn CarrierDialer>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let cfg = shared.config.clone();
    let mut backoff = cfg.backoff_min;
    loop {
        let started = Instant::now();
        // Shutdown first: stopping is not a carrier failure and must not read as one.
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            r = run_slot(slot, dialer.as_ref(), &shared, &shutdown) => r,
        };
        match outcome {
            Ok(()) => return,
            // The state line says it; a log line would say it twice.
            Err(e) if e.fatal => {
                tracing::debug!(slot, error = %e.message, "session cannot continue");
                shared.set_slot(slot, Slot::Down(u64::MAX, e.message.clone()));
                shared
                    .state_tx
                    .send_replace(SessionState::Failed(e.message));
                return;
            }
            Err(e) => {
                tracing::debug!(slot, error = %e.message, "carrier down; reconnecting");
                if shutdown.is_cancelled() {
                    return;
                }
                shared.slot_down(slot, e.message);
            }
        }
        // A carrier that lived a while resets the backoff.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = cfg.backoff_min;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

/// How a carrier's control stream ended without the carrier dying.
#[derive(Debug)]
enum ControlEnd {
    /// The session is stopping.
    Shutdown,
    /// The agent is stopping (`GoAway`): flows running on the carrier may finish within
    /// `drain`; new flows must go elsewhere.
    GoingAway { drain: Duration, message: String },
}

/// A carrier after its handshake: its control stream is served by a task of its own.
struct Up {
    live: Arc<Live>,
    /// The control task: how it ended, or `Err(why)` when the carrier died.
    control: tokio::task::JoinHandle<Result<ControlEnd, String>>,
    /// Whatever must live as long as the carrier (the port-forward).
    _keepalive: Option<Box<dyn Send + Sync>>,
}

impl Drop for Up {
    fn drop(&mut self) {
        self.live.mux.close();
        self.control.abort();
    }
}

impl Up {
    /// Waits until the control stream ends: how, or the reason the carrier died. Call it
    /// until it returns, not after.
    async fn ended(&mut self) -> Result<ControlEnd, String> {
        match (&mut self.control).await {
            Ok(r) => r,
            Err(e) => Err(format!("control task ended: {e}")),
        }
    }
}

/// Keeps one slot's carrier up until it dies (`Err`) or shutdown (`Ok`): dials, and while
/// on a fallback carrier probes the preferred one, moving to it when it answers.
async fn run_slot(
    slot: usize,
    dialer: &dyn CarrierDialer,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Result<(), crate::CarrierError> {
    let cfg = &shared.config;
    let dialed = dialer.dial().await?;
    let mut current = establish(dialed, shared, shutdown).await?;
    shared.add_live(slot, &current.live);
    tracing::debug!(slot, carrier = %current.live.info, "carrier up");
    let mut probes = ProbeSchedule::new(Instant::now(), cfg.probe_min, cfg.probe_max);
    loop {
        let upgrade = dialer.upgrade(current.live.info.kind);
        let due = probes.due();
        let probe = async {
            match upgrade {
                Some(dial) => {
                    tokio::time::sleep_until(due.into()).await;
                    dial.await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = current.ended() => {
                shared.remove_live(&current.live);
                let (drain, message) = match r {
                    Ok(ControlEnd::Shutdown) => return Ok(()),
                    Err(e) => {
                        return Err(crate::CarrierError::retry(format!("{}: {e}", current.live.info)));
                    }
                    Ok(ControlEnd::GoingAway { drain, message }) => (drain, message),
                };
                // The agent is stopping: flows on this carrier get its drain time, new
                // flows wait for the carrier dialled now (another replica, or the agent's
                // replacement once it is ready).
                let why = format!("{}: the agent is going away: {message}", current.live.info);
                tracing::debug!(slot, "{why}; draining its flows for {drain:?}");
                shared.slot_down(slot, why.clone());
                let next = match dialer.dial().await {
                    Ok(dialed) => establish(dialed, shared, shutdown).await,
                    Err(e) => Err(e),
                };
                let old = match next {
                    Ok(next) => std::mem::replace(&mut current, next),
                    Err(e) => {
                        tokio::spawn(drain_then_close(current, drain));
                        return Err(crate::CarrierError { message: format!("{why}; {}", e.message), ..e });
                    }
                };
                tokio::spawn(drain_then_close(old, drain));
                shared.add_live(slot, &current.live);
                probes.reset(Instant::now());
            }
            r = probe => {
                let better = match r {
                    Ok(dialed) => establish(dialed, shared, shutdown).await,
                    Err(e) => Err(e),
                };
                match better {
                    Ok(better) => {
                        tracing::debug!(slot, from = %current.live.info, to = %better.live.info, "moving to the preferred carrier");
                        let old = std::mem::replace(&mut current, better);
                        // New flows go to the new carrier from now on; the old one stays
                        // up until the flows on it end.
                        shared.remove_live(&old.live);
                        shared.add_live(slot, &current.live);
                        tokio::spawn(retire(old));
                        probes.reset(Instant::now());
                    }
                    Err(e) => {
                        tracing::debug!(slot, error = %e.message, "the preferred carrier does not answer yet");
                        probes.failed(Instant::now(), rand::rng().random_range(0.75..1.25));
                    }
                }
            }
        }
    }
}

/// How often a retired carrier is checked for flows still running on it.
const RETIRE_CHECK: Duration = Duration::from_secs(1);

/// Keeps a carrier that no longer takes new flows until its last flow ends (or it dies),
/// then closes it.
async fn retire(mut old: Up) {
    let mut tick = tokio::time::interval(RETIRE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = old.ended() => {
                tracing::debug!(carrier = %old.live.info, "retired carrier ended: {r:?}");
                if let Ok(ControlEnd::GoingAway { drain, .. }) = r {
                    drain_then_close(old, drain).await;
                }
                return;
            }
            _ = tick.tick() => {
                // Only the control stream left: idle.
                if old.live.mux.open_streams() <= 1 {
                    tracing::debug!(carrier = %old.live.info, "retired carrier idle; closing it");
                    return;
                }
            }
        }
    }
}

/// Keeps a carrier whose agent said it is going away until its flows end, its drain time
/// is over or it dies, then closes it (flows still running then are cut, as the agent's
/// exit would cut them).
async fn drain_then_close(old: Up, drain: Duration) {
    let deadline = tokio::time::sleep(drain);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(RETIRE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut deadline => return,
            () = old.live.mux.closed() => return,
            _ = tick.tick() => {
                // The control stream was dropped when the GoAway ended it: no stream
                // left means no flow left.
                if old.live.mux.open_streams() == 0 {
                    return;
                }
            }
        }
    }
}

/// Handshakes on a dialed carrier and starts its control task.
async fn establish(
    dialed: crate::Dialed,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Result<Up, crate::CarrierError> {
    use crate::CarrierError;
    let cfg = &shared.config;
    let kind = dialed.kind;
    let peer = dialed.peer.clone();
    let keepalive = dialed.keepalive;
    let (mux, inbound) = mux::spawn(dialed.io, Side::Client);
    // Closes the carrier if the handshake fails; the `Up` closes it afterwards.
    let close = CloseOnDrop(Some(mux.clone()));
    let mut control = mux
        .open()
        .await
        .map_err(|e| CarrierError::retry(format!("{peer}: {e}")))?;
    control.set_urgent();
    write_frame(
        &mut control,
        &Frame::Hello {
            versions: VersionRange::OURS,
            caps: Capabilities::ALL,
            software: cfg.software.clone(),
            token: cfg.token.clone(),
        },
    )
    .await
    .map_err(|e| CarrierError::retry(format!("{peer}: sending hello: {e}")))?;
    let (rd, wr) = tokio::io::split(control);
    let mut reader = FrameReader::new(rd);
    let first = tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .map_err(|_| {
            CarrierError::retry(format!(
                "{peer}: the agent did not answer the hello within 10 s"
            ))
        })?
        .map_err(|e| CarrierError::retry(format!("{peer}: reading the agent's answer: {e}")))?;
    let (version, facts, caps, software) = match first {
        Some(Frame::Welcome {
            version,
            facts,
            caps,
            software,
        }) => (version, facts, caps.intersect(Capabilities::ALL), software),
        Some(Frame::Refused {
            reason, message, ..
        }) => {
            return Err(CarrierError {
                message: format!("the agent refused the session: {message}"),
                fatal: matches!(reason, RefuseReason::Version | RefuseReason::Auth),
            });
        }
        Some(other) => {
            return Err(CarrierError::retry(format!(
                "{peer}: the agent answered the hello with {}",
                other.name()
            )));
        }
        None => {
            return Err(CarrierError::retry(format!(
                "{peer}: the agent closed the tunnel during the handshake (an agent older \
                 than this kubelan does that; upgrade it with `kubelan install`)"
            )));
        }
    };
    let agent = if facts.node.is_empty() {
        facts.agent.clone()
    } else {
        format!("{} on {}", facts.agent, facts.node)
    };
    let missing = cfg.required.without(caps);
    if !missing.is_empty() {
        return Err(CarrierError {
            message: lacks_capabilities(&facts.agent, &software, version, missing, &cfg.software),
            fatal: true,
        });
    }
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let live = Arc::new(Live {
        requests,
        mux: mux.clone(),
        info: CarrierInfo {
            kind,
            peer,
            agent,
            version,
            software,
        },
        facts,
        caps,
    });
    // Streams the agent side opens: served with REVERSE and an acceptor, else reset at
    // once. One task per carrier; it ends with the carrier (the mux drops its sender).
    let acceptor = shared
        .acceptor
        .clone()
        .filter(|_| caps.contains(Capabilities::REVERSE));
    tokio::spawn(serve_inbound(
        inbound,
        acceptor,
        cfg.accept.clone(),
        shared.clone(),
    ));
    let task_live = live.clone();
    let cfg = cfg.clone();
    let shutdown = shutdown.clone();
    let control = tokio::spawn(async move {
        let mut reader = reader;
        let mut wr = wr;
        let r = keep_alive(
            &task_live,
            &mut reader,
            &mut wr,
            requests_rx,
            &cfg,
            &shutdown,
        )
        .await;
        // A draining carrier stays open for its flows; `drain_then_close` closes it.
        if !matches!(r, Ok(ControlEnd::GoingAway { .. })) {
            task_live.mux.close();
        }
        r
    });
    close.disarm();
    Ok(Up {
        live,
        control,
        _keepalive: keepalive,
    })
}

async fn keep_alive<R, W>(
    live: &Live,
    reader: &mut FrameReader<R>,
    wr: &mut W,
    mut requests: mpsc::UnboundedReceiver<ControlRequest>,
    cfg: &SessionConfig,
    shutdown: &CancellationToken,
) -> Result<ControlEnd, String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    // Listen requests waiting for their answer, by listener; dropped (the caller sees the
    // carrier lost) when the control stream ends.
    let mut pending: std::collections::HashMap<u32, oneshot::Sender<Result<(), FlowError>>> =
        std::collections::HashMap::new();
    let mut last_heard = Instant::now();
    let mut nonce = 0u64;
    let mut tick = tokio::time::interval(cfg.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Data of other streams proves the carrier alive as well as a pong does.
                let quiet = last_heard.elapsed().min(live.mux.quiet_for());
                if quiet > cfg.dead_after {
                    return Err(format!(
                        "no answer to pings for {:.1} s",
                        quiet.as_secs_f64()
                    ));
                }
                nonce += 1;
                // A ping that cannot even be written within the dead time means the
                // carrier is stuck.
                match tokio::time::timeout(cfg.dead_after, write_frame(wr, &Frame::Ping { nonce })).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("sending ping: {e}")),
                    Err(_) => return Err("ping could not be sent (carrier stalled)".into()),
                }
            }
            frame = reader.next() => match frame {
                Ok(Some(Frame::Pong { .. })) => last_heard = Instant::now(),
                Ok(Some(Frame::Ping { nonce })) => {
                    last_heard = Instant::now();
                    let _ = write_frame(wr, &Frame::Pong { nonce }).await;
                }
                Ok(Some(Frame::Facts(_))) => last_heard = Instant::now(),
                Ok(Some(Frame::Listening { listener })) => {
                    last_heard = Instant::now();
                    if let Some(reply) = pending.remove(&listener) {
                        let _ = reply.send(Ok(()));
                    }
                }
                Ok(Some(Frame::ListenFailed { listener, error })) => {
                    last_heard = Instant::now();
                    if let Some(reply) = pending.remove(&listener) {
                        let _ = reply.send(Err(error));
                    }
                }
                Ok(Some(Frame::GoAway { drain_ms, message })) => {
                    return Ok(ControlEnd::GoingAway {
                        drain: Duration::from_millis(u64::from(drain_ms)),
                        message,
                    });
                }
                Ok(Some(other)) => {
                    return Err(format!("unexpected {} frame on the control stream", other.name()));
                }
                Ok(None) => return Err("the agent closed the control stream".into()),
                Err(e) => return Err(format!("control stream: {e}")),
            },
            Some(req) = requests.recv() => match req {
                ControlRequest::Listen { listener, kind, port, reply } => {
                    if let Err(e) = write_frame(wr, &Frame::Listen { listener, kind, port }).await {
                        return Err(format!("sending a listen request: {e}"));
                    }
                    // A newer request for the same listener replaces the older one, whose
                    // caller then sees the carrier lost and may ask again.
                    pending.insert(listener, reply);
                }
            },
            () = live.mux.closed() => return Err("the carrier closed".into()),
            () = shutdown.cancelled() => return Ok(ControlEnd::Shutdown),
        }
    }
}

/// The session cannot use an agent without `missing`: one sentence naming both sides'
/// software and protocol versions and the fix.
fn lacks_capabilities(
    agent: &str,
    agent_software: &str,
    version: u16,
    missing: Capabilities,
    ours: &str,
) -> String {
    let agent = if agent.is_empty() {
        "the agent".to_string()
    } else {
        format!("the agent {agent}")
    };
    let theirs = if agent_software.is_empty() {
        "unknown software".to_string()
    } else {
        agent_software.to_string()
    };
    format!(
        "{agent} ({theirs}, protocol {version}) does not support {missing}, which this kubelan \
         ({ours}, protocol {}) needs: upgrade the agent with `kubelan install` (the same \
         kubelan version as this machine)",
        VersionRange::OURS
    )
}

/// Serves the streams the agent side opens on one carrier until it ends: each goes to
/// `acceptor`, or is dropped at once (a reset at the agent side) when there is none.
async fn serve_inbound(
    mut inbound: mpsc::UnboundedReceiver<MuxStream>,
    acceptor: Option<Arc<dyn Acceptor>>,
    limits: AcceptLimits,
    shared: Arc<Shared>,
) {
    while let Some(stream) = inbound.recv().await {
        let Some(acceptor) = &acceptor else {
            drop(stream);
            continue;
        };
        shared.stats.reverse_flows.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(crate::reverse::accept_flow(
            stream,
            acceptor.clone(),
            limits.clone(),
        ));
    }
}

struct CloseOnDrop(Option<MuxHandle>);

impl CloseOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.close();
        }
    }
}

#[cfg(test)]
mod tests;
