//! The client side of a session: keeps carriers up, proves they are alive, opens flows.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kubelan_proto::{
    Capabilities, ErrorKind, Facts, FlowError, FlowKind, Frame, RefuseReason, Target, VersionRange,
};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::carrier::{CarrierDialer, CarrierKind};
use crate::flow::{FlowConn, FrameReader, buffer_frame, write_frame};
use crate::mux::{self, MuxHandle, MuxStream, Side};

/// Timing of a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Client software name sent in the hello (`kubelan 0.1.0`).
    pub software: String,
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
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            software: format!("kubelan {}", env!("CARGO_PKG_VERSION")),
            ping_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            open_timeout: Duration::from_secs(15),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
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
}

impl fmt::Display for CarrierInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {} (agent {})", self.kind, self.peer, self.agent)
    }
}

/// What the session is doing; never claims "connected" without a live, answering carrier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Dialing for the first time.
    Connecting,
    /// At least one carrier answers pings.
    Connected(Vec<CarrierInfo>),
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
            SessionState::Connected(c) => {
                write!(f, "connected via ")?;
                for (i, c) in c.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
            SessionState::Reconnecting { error } => write!(f, "reconnecting: {error}"),
            SessionState::Failed(e) => write!(f, "failed: {e}"),
        }
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
}

struct Live {
    mux: MuxHandle,
    info: CarrierInfo,
    facts: Facts,
    /// Features both sides support on this carrier.
    caps: Capabilities,
}

struct Shared {
    config: SessionConfig,
    live: Mutex<Vec<Arc<Live>>>,
    next: AtomicUsize,
    state_tx: watch::Sender<SessionState>,
    last_error: Mutex<String>,
    stats: SessionStats,
}

impl Shared {
    fn publish(&self) {
        let live = self.live.lock().expect("live lock");
        let state = if !live.is_empty() {
            SessionState::Connected(live.iter().map(|l| l.info.clone()).collect())
        } else {
            let e = self.last_error.lock().expect("error lock").clone();
            if matches!(*self.state_tx.borrow(), SessionState::Failed(_)) {
                return;
            }
            if self.stats.carriers_up.load(Ordering::Relaxed) == 0 && e.is_empty() {
                SessionState::Connecting
            } else {
                SessionState::Reconnecting { error: e }
            }
        };
        self.state_tx.send_if_modified(|s| {
            if *s != state {
                *s = state;
                true
            } else {
                false
            }
        });
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
    pub fn start(
        dialers: Vec<Arc<dyn CarrierDialer>>,
        config: SessionConfig,
        shutdown: CancellationToken,
    ) -> Session {
        let (state_tx, _) = watch::channel(SessionState::Connecting);
        let shared = Arc::new(Shared {
            config,
            live: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            state_tx,
            last_error: Mutex::new(String::new()),
            stats: SessionStats::default(),
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
                let e = self.shared.last_error.lock().expect("error lock").clone();
                return Err(FlowError::new(
                    ErrorKind::CarrierLost,
                    if e.is_empty() {
                        format!("no tunnel to the agent within {timeout:?} (still connecting)")
                    } else {
                        format!("no tunnel to the agent within {timeout:?}; reconnecting: {e}")
                    },
                ));
            }
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

/// Bridges a datagram flow to channels with one task.
fn datagram_channels(
    reader: FrameReader<MuxStream>,
) -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    let (to_agent_tx, mut to_agent_rx) = mpsc::channel::<Bytes>(256);
    let (from_agent_tx, from_agent_rx) = mpsc::channel::<Bytes>(256);
    let (stream, leftover) = reader.into_parts();
    let (rd, mut wr) = tokio::io::split(stream);
    tokio::spawn(async move {
        let mut reader = FrameReader::with_buffer(rd, leftover);
        loop {
            tokio::select! {
                out = to_agent_rx.recv() => match out {
                    Some(d) => {
                        if write_frame(&mut wr, &Frame::Datagram(d)).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        let _ = write_frame(&mut wr, &Frame::Fin).await;
                        break;
                    }
                },
                inp = reader.next() => match inp {
                    Ok(Some(Frame::Datagram(d))) => {
                        // UDP semantics: drop when the consumer is slow.
                        let _ = from_agent_tx.try_send(d);
                    }
                    _ => break,
                },
            }
        }
    });
    (to_agent_tx, from_agent_rx)
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
        if shutdown.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            r = run_carrier(slot, dialer.as_ref(), &shared, &shutdown) => r,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(()) => return,
            Err(e) if e.fatal => {
                tracing::error!(slot, error = %e.message, "session cannot continue");
                *shared.last_error.lock().expect("error lock") = e.message.clone();
                shared
                    .state_tx
                    .send_replace(SessionState::Failed(e.message));
                return;
            }
            Err(e) => {
                tracing::warn!(slot, error = %e.message, "carrier down; reconnecting");
                *shared.last_error.lock().expect("error lock") = e.message;
                shared.publish();
            }
        }
        // A carrier that lived a while resets the backoff.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = cfg.backoff_min;
        }
        tokio::select! {
            () = tokio::time::sleep(jitter(backoff)) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

/// Dials, handshakes and keeps one carrier alive until it dies (`Err`) or shutdown (`Ok`).
async fn run_carrier(
    slot: usize,
    dialer: &dyn CarrierDialer,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Result<(), crate::CarrierError> {
    use crate::CarrierError;
    let cfg = &shared.config;
    let dialed = dialer.dial().await?;
    let kind = dialed.kind;
    let peer = dialed.peer.clone();
    let _keepalive = dialed.keepalive;
    let (mux, _inbound) = mux::spawn(dialed.io, Side::Client);
    let _close = CloseOnDrop(mux.clone());
    let mut control = mux
        .open()
        .await
        .map_err(|e| CarrierError::retry(format!("{peer}: {e}")))?;
    write_frame(
        &mut control,
        &Frame::Hello {
            versions: VersionRange::OURS,
            caps: Capabilities::ALL,
            software: cfg.software.clone(),
        },
    )
    .await
    .map_err(|e| CarrierError::retry(format!("{peer}: sending hello: {e}")))?;
    let (rd, mut wr) = tokio::io::split(control);
    let mut reader = FrameReader::new(rd);
    let first = tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .map_err(|_| {
            CarrierError::retry(format!(
                "{peer}: the agent did not answer the hello within 10 s"
            ))
        })?
        .map_err(|e| CarrierError::retry(format!("{peer}: reading the agent's answer: {e}")))?;
    let (version, facts, caps) = match first {
        Some(Frame::Welcome {
            version,
            facts,
            caps,
            ..
        }) => (version, facts, caps.intersect(Capabilities::ALL)),
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
    let live = Arc::new(Live {
        mux: mux.clone(),
        info: CarrierInfo {
            kind,
            peer: peer.clone(),
            agent,
            version,
        },
        facts,
        caps,
    });
    shared.stats.carriers_up.fetch_add(1, Ordering::Relaxed);
    shared.live.lock().expect("live lock").push(live.clone());
    shared.publish();
    tracing::info!(slot, carrier = %live.info, "carrier up");

    let result = keep_alive(&live, &mut reader, &mut wr, cfg, shutdown).await;

    shared
        .live
        .lock()
        .expect("live lock")
        .retain(|l| !Arc::ptr_eq(l, &live));
    mux.close();
    match result {
        Ok(()) => {
            shared.publish();
            Ok(())
        }
        Err(e) => Err(CarrierError::retry(format!("{}: {e}", live.info))),
    }
}

async fn keep_alive<R, W>(
    live: &Live,
    reader: &mut FrameReader<R>,
    wr: &mut W,
    cfg: &SessionConfig,
    shutdown: &CancellationToken,
) -> Result<(), String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut last_heard = Instant::now();
    let mut nonce = 0u64;
    let mut tick = tokio::time::interval(cfg.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if last_heard.elapsed() > cfg.dead_after {
                    return Err(format!(
                        "no answer to pings for {:.1} s",
                        last_heard.elapsed().as_secs_f64()
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
                Ok(Some(Frame::GoAway { message, .. })) => {
                    return Err(format!("the agent is going away: {message}"));
                }
                Ok(Some(other)) => {
                    return Err(format!("unexpected {} frame on the control stream", other.name()));
                }
                Ok(None) => return Err("the agent closed the control stream".into()),
                Err(e) => return Err(format!("control stream: {e}")),
            },
            () = live.mux.closed() => return Err("the carrier closed".into()),
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

struct CloseOnDrop(MuxHandle);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
