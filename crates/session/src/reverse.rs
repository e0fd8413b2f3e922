//! Reverse flows: flows the agent side opens toward the client (`kubelan expose`).
//!
//! The per-session relay plays the agent's part on its carriers. When a pod connects to
//! one of its listeners, it opens a stream toward the client ([`open_tcp`],
//! [`open_tcp_optimistic`], [`open_udp`]: the multiplexer's even stream ids) whose first
//! frame is [`Frame::Incoming`]. The client's [`Session`](crate::Session) hands every
//! such stream to [`accept_flow`] when the carrier negotiated
//! [`Capabilities::REVERSE`](kubelan_proto::Capabilities::REVERSE) and the session has an
//! [`Acceptor`]; otherwise it drops the stream at once, which resets it at the relay.
//!
//! ```text
//! pod ─▶ relay listener ─ open_tcp ══ Incoming{listener, kind, peer} ══▶ accept_flow
//!                                  ◀══ Opened{local} | Failed{kind} ══   ├─ Acceptor::target
//!                                  ◀═══════ Data / Fin / Reset ═══════▶  └─ dial, relay_edge ─▶ HOST:PORT
//! ```
//!
//! What to do with a stream is decided from its first frame by a pure function ([`plan`]);
//! the rest is the edges of [`crate::relay`], so a reverse flow cut on either side is a
//! reset on the other, as every flow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kubelan_proto::{ErrorKind, FlowError, FlowKind, Frame, Target};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::flow::{FlowConn, FrameReader, ReadChunk, WriteChunk, buffer_frame, write_frame};
use crate::mux::{MuxHandle, MuxStream, Side};
use crate::relay::{Outgoing, dial_error, relay_datagrams, relay_edge};

/// Maps the flows the agent side opens to the local targets that serve them — the
/// mirror of the proxy's `Connector` (which opens flows into the cluster). The session
/// dials the target it names and relays.
pub trait Acceptor: Send + Sync + 'static {
    /// Where a flow of `kind` from `peer` (a pod) that arrived at the agent side's
    /// `listener` goes: an address, or a name resolved on this machine.
    ///
    /// # Errors
    ///
    /// A [`FlowError`] that the agent side gets as `Failed` (an unknown listener, a kind
    /// this listener does not take); the flow is not opened.
    fn target(&self, listener: u32, kind: FlowKind, peer: SocketAddr) -> Result<Target, FlowError>;

    /// A reverse flow ended, or failed to open: for counters and live tables. Called
    /// once per flow the acceptor was asked about, from the flow's task. The default
    /// does nothing.
    fn ended(&self, report: &FlowReport) {
        let _ = report;
    }
}

/// How one reverse flow went, for [`Acceptor::ended`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowReport {
    /// The agent side's listener.
    pub listener: u32,
    /// TCP or UDP.
    pub kind: FlowKind,
    /// The pod that connected.
    pub peer: SocketAddr,
    /// The local address the flow reached; `None` when it did not open.
    pub local: Option<SocketAddr>,
    /// Bytes (TCP) or datagrams (UDP) from the agent side to the local target.
    pub to_local: u64,
    /// Bytes (TCP) or datagrams (UDP) from the local target to the agent side.
    pub from_local: u64,
    /// Why the flow did not open or was cut; `None` for a clean end.
    pub error: Option<FlowError>,
}

/// Timing of the client's side of reverse flows.
#[derive(Clone, Debug)]
pub struct AcceptLimits {
    /// How long the agent side may take to send a stream's `Incoming`.
    pub incoming_wait: Duration,
    /// How long dialling the local target may take.
    pub dial_timeout: Duration,
    /// A UDP flow with no datagram either way for this long ends.
    pub udp_idle: Duration,
}

impl Default for AcceptLimits {
    fn default() -> AcceptLimits {
        AcceptLimits {
            incoming_wait: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(10),
            udp_idle: Duration::from_secs(60),
        }
    }
}

/// A reverse flow as its `Incoming` frame describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncomingFlow {
    /// The agent side's listener.
    pub listener: u32,
    /// What the flow carries.
    pub kind: FlowKind,
    /// The pod that connected.
    pub peer: SocketAddr,
    /// The agent side sends data before the answer; `Opened` may wait for ours.
    pub optimistic: bool,
}

/// What to do with a stream the agent side opened, decided from its first frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Dial `target` and relay.
    Accept(IncomingFlow, Target),
    /// Answer `Failed` with the error and end the stream (the flow, when the frame said
    /// which, is reported to the acceptor).
    Refuse(Option<IncomingFlow>, FlowError),
}

/// Decides a reverse flow from its first frame (`None`: no frame came in time, or the
/// stream ended or broke first).
pub fn plan(first: Option<Frame>, acceptor: &dyn Acceptor) -> Plan {
    let flow = match first {
        Some(Frame::Incoming {
            listener,
            kind,
            peer,
            optimistic,
        }) => IncomingFlow {
            listener,
            kind,
            peer,
            optimistic,
        },
        other => {
            let what = other.as_ref().map_or("nothing", Frame::name);
            return Plan::Refuse(
                None,
                FlowError::new(
                    ErrorKind::Protocol,
                    format!("a flow toward the client must start with Incoming, not {what}"),
                ),
            );
        }
    };
    if !matches!(flow.kind, FlowKind::Tcp | FlowKind::Udp) {
        return Plan::Refuse(
            Some(flow),
            FlowError::new(
                ErrorKind::Protocol,
                format!(
                    "{} flows toward the client are not supported (only tcp and udp)",
                    flow.kind.label()
                ),
            ),
        );
    }
    match acceptor.target(flow.listener, flow.kind, flow.peer) {
        Ok(target) => Plan::Accept(flow, target),
        Err(e) => Plan::Refuse(Some(flow), e),
    }
}

/// Serves one stream the agent side opened: reads its `Incoming` (waiting at most
/// `limits.incoming_wait`), asks `acceptor` where it goes, dials that, answers
/// `Opened { local }` or `Failed`, and relays until the flow ends. A flow cut on either
/// side resets the other. Reports the outcome to [`Acceptor::ended`].
pub async fn accept_flow<S>(stream: S, acceptor: Arc<dyn Acceptor>, limits: AcceptLimits)
where
    S: ReadChunk + WriteChunk + Send,
{
    let mut reader = FrameReader::new(stream);
    let first = match tokio::time::timeout(limits.incoming_wait, reader.next()).await {
        Ok(Ok(f)) => f,
        Ok(Err(_)) | Err(_) => None,
    };
    let (mut stream, leftover) = reader.into_parts();
    let outcome = match plan(first, acceptor.as_ref()) {
        Plan::Refuse(flow, e) => {
            tracing::debug!(?flow, error = %e, "refused a flow toward this machine");
            let _ = write_frame(&mut stream, &Frame::Failed(e.clone())).await;
            let _ = stream.shutdown().await;
            let Some(flow) = flow else { return };
            report(&flow, None, (0, 0), Some(e))
        }
        Plan::Accept(flow, target) => match flow.kind {
            FlowKind::Udp => accept_udp(stream, leftover, &flow, &target, &limits).await,
            _ => accept_tcp(stream, leftover, &flow, &target, &limits).await,
        },
    };
    acceptor.ended(&outcome);
}

fn report(
    flow: &IncomingFlow,
    local: Option<SocketAddr>,
    (to_local, from_local): (u64, u64),
    error: Option<FlowError>,
) -> FlowReport {
    FlowReport {
        listener: flow.listener,
        kind: flow.kind,
        peer: flow.peer,
        local,
        to_local,
        from_local,
        error,
    }
}

/// The addresses `target` names on this machine, in order.
async fn resolve(target: &Target, wait: Duration) -> Result<Vec<SocketAddr>, FlowError> {
    let host = match target {
        Target::Addr(a) => return Ok(vec![*a]),
        Target::Name { host, port } => (host.as_str(), *port),
    };
    match tokio::time::timeout(wait, tokio::net::lookup_host(host)).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(FlowError::new(
                    ErrorKind::NoSuchHost,
                    format!("{target}: no addresses"),
                ))
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(FlowError::new(
            ErrorKind::NoSuchHost,
            format!("{target}: {e}"),
        )),
        Err(_) => Err(FlowError::new(
            ErrorKind::Timeout,
            format!("{target}: the name did not resolve within {wait:?}"),
        )),
    }
}

async fn dial_tcp(target: &Target, wait: Duration) -> Result<(TcpStream, SocketAddr), FlowError> {
    let mut last = None;
    for addr in resolve(target, wait).await? {
        // An edge socket (see `relay::EDGE_BUDGET`): with many bulk flows toward this
        // machine, autotuned buffers on the local targets' connections would take the
        // host's TCP memory past `tcp_mem`'s pressure mark.
        match tokio::time::timeout(wait, crate::relay::dial_edge(addr)).await {
            Ok(Ok(s)) => return Ok((s, addr)),
            Ok(Err(e)) => last = Some(dial_error(addr, &e)),
            Err(_) => {
                last = Some(FlowError::new(
                    ErrorKind::Timeout,
                    format!("{addr}: no answer within {wait:?}"),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| FlowError::new(ErrorKind::NoSuchHost, "no address")))
}

/// Dials the local target and relays. For an optimistic flow `Opened` is not flushed by
/// itself: it leaves with the target's first bytes (or its close).
async fn accept_tcp<S>(
    mut stream: S,
    leftover: BytesMut,
    flow: &IncomingFlow,
    target: &Target,
    limits: &AcceptLimits,
) -> FlowReport
where
    S: ReadChunk + WriteChunk,
{
    let (tcp, addr) = match dial_tcp(target, limits.dial_timeout).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(%target, error = %e, "a flow toward this machine found no local target");
            let _ = write_frame(&mut stream, &Frame::Failed(e.clone())).await;
            let _ = stream.shutdown().await;
            return report(flow, None, (0, 0), Some(e));
        }
    };
    let _ = tcp.set_nodelay(true);
    let opened = Frame::Opened { peer: addr };
    let sent = if flow.optimistic {
        buffer_frame(&mut stream, &opened).await
    } else {
        write_frame(&mut stream, &opened).await
    };
    if let Err(e) = sent {
        let _ = tcp.set_zero_linger();
        let e = FlowError::new(ErrorKind::CarrierLost, e.to_string());
        return report(flow, Some(addr), (0, 0), Some(e));
    }
    match relay_edge(tcp, FlowConn::new(stream, leftover), None).await {
        Ok((from_local, to_local)) => report(flow, Some(addr), (to_local, from_local), None),
        Err(e) => {
            tracing::debug!(%addr, error = %e, "flow toward this machine cut");
            let e = FlowError::new(ErrorKind::Reset, e.to_string());
            report(flow, Some(addr), (0, 0), Some(e))
        }
    }
}

/// One connected UDP socket per flow, datagrams relayed until the flow ends or idles.
async fn accept_udp<S>(
    mut stream: S,
    leftover: BytesMut,
    flow: &IncomingFlow,
    target: &Target,
    limits: &AcceptLimits,
) -> FlowReport
where
    S: ReadChunk + WriteChunk,
{
    let sock = async {
        let addr = resolve(target, limits.dial_timeout).await?[0];
        let bind: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)
            .await
            .map_err(|e| dial_error(addr, &e))?;
        sock.connect(addr).await.map_err(|e| dial_error(addr, &e))?;
        Ok::<_, FlowError>((sock, addr))
    }
    .await;
    let (sock, addr) = match sock {
        Ok(x) => x,
        Err(e) => {
            let _ = write_frame(&mut stream, &Frame::Failed(e.clone())).await;
            let _ = stream.shutdown().await;
            return report(flow, None, (0, 0), Some(e));
        }
    };
    let (from_local, to_local) = relay_datagrams(
        stream,
        leftover,
        &sock,
        addr,
        limits.udp_idle,
        Outgoing::Send,
        |d| Some(Bytes::copy_from_slice(d)),
    )
    .await;
    report(flow, Some(addr), (to_local, from_local), None)
}

/// Opens a stream toward the client and writes `Incoming` (flushed unless `optimistic`).
async fn open_stream(
    mux: &MuxHandle,
    listener: u32,
    kind: FlowKind,
    peer: SocketAddr,
    optimistic: bool,
) -> Result<MuxStream, FlowError> {
    if mux.side() != Side::Agent {
        return Err(FlowError::new(
            ErrorKind::Protocol,
            "flows toward the client are opened on the agent side of a carrier",
        ));
    }
    let lost = |e: &dyn std::fmt::Display| {
        FlowError::new(
            ErrorKind::CarrierLost,
            format!("the carrier to the client failed: {e}"),
        )
    };
    let mut stream = mux.open().await.map_err(|e| lost(&e))?;
    let incoming = Frame::Incoming {
        listener,
        kind,
        peer,
        optimistic,
    };
    let written = if optimistic {
        buffer_frame(&mut stream, &incoming).await
    } else {
        write_frame(&mut stream, &incoming).await
    };
    written.map_err(|e| lost(&e))?;
    Ok(stream)
}

/// Opens a flow of `kind` toward the client on the carrier `mux` (its agent side) for a
/// connection from `peer` that arrived at `listener`, and waits up to `wait` for the
/// client's answer: the local address it reached, and the stream after the answer. Use
/// it only on a carrier whose client set
/// [`Capabilities::REVERSE`](kubelan_proto::Capabilities::REVERSE); another client resets
/// the stream.
///
/// # Errors
///
/// The client's typed `Failed` (its local target refused, say), [`ErrorKind::Timeout`],
/// or [`ErrorKind::CarrierLost`].
pub async fn open_incoming(
    mux: &MuxHandle,
    listener: u32,
    kind: FlowKind,
    peer: SocketAddr,
    wait: Duration,
) -> Result<(FrameReader<MuxStream>, SocketAddr), FlowError> {
    let stream = open_stream(mux, listener, kind, peer, false).await?;
    let mut reader = FrameReader::new(stream);
    match tokio::time::timeout(wait, reader.next()).await {
        Err(_) => Err(FlowError::new(
            ErrorKind::Timeout,
            format!("the client did not answer within {wait:?}"),
        )),
        Ok(Ok(Some(Frame::Opened { peer: local }))) => Ok((reader, local)),
        Ok(Ok(Some(Frame::Failed(e)))) => Err(e),
        Ok(Ok(Some(other))) => Err(FlowError::new(
            ErrorKind::Protocol,
            format!("the client answered Incoming with {}", other.name()),
        )),
        // A client that does not take flows toward it drops the stream: a reset.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(FlowError::new(
            ErrorKind::Reset,
            "the client does not accept flows toward it",
        )),
        Ok(Err(e)) => Err(FlowError::new(ErrorKind::CarrierLost, e.to_string())),
        Ok(Ok(None)) => Err(FlowError::new(
            ErrorKind::CarrierLost,
            "the carrier to the client closed",
        )),
    }
}

/// [`open_incoming`] for TCP: the byte stream to the client's local target, and the
/// address it reached.
///
/// # Errors
///
/// As [`open_incoming`].
pub async fn open_tcp(
    mux: &MuxHandle,
    listener: u32,
    peer: SocketAddr,
    wait: Duration,
) -> Result<(FlowConn<MuxStream>, SocketAddr), FlowError> {
    let (reader, local) = open_incoming(mux, listener, FlowKind::Tcp, peer, wait).await?;
    let (io, leftover) = reader.into_parts();
    Ok((FlowConn::new(io, leftover), local))
}

/// Opens a TCP flow toward the client without waiting for its answer (one carrier
/// round trip less per connection): `Incoming` leaves with the first bytes written, or
/// at the first flush or read. If the client cannot reach its local target, the first
/// read fails with its reason (reset the pod's connection then).
///
/// # Errors
///
/// [`ErrorKind::CarrierLost`] when the carrier is closed.
pub async fn open_tcp_optimistic(
    mux: &MuxHandle,
    listener: u32,
    peer: SocketAddr,
) -> Result<FlowConn<MuxStream>, FlowError> {
    let stream = open_stream(mux, listener, FlowKind::Tcp, peer, true).await?;
    Ok(FlowConn::opening(stream))
}

/// [`open_incoming`] for UDP: datagrams to the client's local target go through the
/// returned sender (dropping it ends the flow), its answers come out of the receiver
/// (closed when the client ends the flow or the carrier dies).
///
/// # Errors
///
/// As [`open_incoming`].
pub async fn open_udp(
    mux: &MuxHandle,
    listener: u32,
    peer: SocketAddr,
    wait: Duration,
) -> Result<(mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>), FlowError> {
    let (reader, _) = open_incoming(mux, listener, FlowKind::Udp, peer, wait).await?;
    Ok(crate::flow::datagram_channels(reader))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    use kubelan_proto::{Capabilities, Facts, Token};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::carrier::{CarrierDialer, CarrierError, CarrierKind, Dialed};
    use crate::mux;
    use crate::relay::relay_tcp;
    use crate::{Session, SessionConfig, SessionState};

    /// Listener ids to local targets; records every report.
    #[derive(Default)]
    struct Local {
        targets: HashMap<u32, (FlowKind, Target)>,
        reports: Mutex<Vec<FlowReport>>,
    }

    impl Acceptor for Local {
        fn target(
            &self,
            listener: u32,
            kind: FlowKind,
            _peer: SocketAddr,
        ) -> Result<Target, FlowError> {
            match self.targets.get(&listener) {
                Some((k, t)) if *k == kind => Ok(t.clone()),
                _ => Err(FlowError::new(
                    ErrorKind::Policy,
                    format!("listener {listener} is not exposed for {}", kind.label()),
                )),
            }
        }

        fn ended(&self, report: &FlowReport) {
            self.reports.lock().unwrap().push(report.clone());
        }
    }

    /// A relay's side of carriers over in-memory pipes: welcomes with `caps` and hands
    /// each carrier's multiplexer (and the hello's token) to the test.
    struct FakeRelay {
        caps: Capabilities,
        carriers: mpsc::UnboundedSender<(MuxHandle, Option<Token>)>,
    }

    /// Serves a relay's side of one carrier: welcomes with `caps`, hands the carrier's
    /// multiplexer (and the hello's token) to `tx`, answers pings.
    async fn serve_relay<T>(
        io: T,
        caps: Capabilities,
        tx: mpsc::UnboundedSender<(MuxHandle, Option<Token>)>,
    ) where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (handle, mut inbound) = mux::spawn(io, Side::Agent);
        let Some(control) = inbound.recv().await else {
            return;
        };
        let (rd, mut wr) = tokio::io::split(control);
        let mut r = FrameReader::new(rd);
        let Ok(Some(Frame::Hello { token, .. })) = r.next().await else {
            return;
        };
        let welcome = Frame::Welcome {
            version: 1,
            caps,
            software: "kubelan 0.0.9".into(),
            facts: Facts {
                agent: "ns/relay-x".into(),
                ..Facts::default()
            },
        };
        if write_frame(&mut wr, &welcome).await.is_err() {
            return;
        }
        let _ = tx.send((handle.clone(), token));
        while let Ok(Some(f)) = r.next().await {
            if let Frame::Ping { nonce } = f
                && write_frame(&mut wr, &Frame::Pong { nonce }).await.is_err()
            {
                break;
            }
        }
        handle.close();
    }

    impl CarrierDialer for FakeRelay {
        fn dial(&self) -> futures::future::BoxFuture<'_, Result<Dialed, CarrierError>> {
            let (a, b) = tokio::io::duplex(256 * 1024);
            tokio::spawn(serve_relay(b, self.caps, self.carriers.clone()));
            Box::pin(async move {
                Ok(Dialed {
                    io: Box::new(a),
                    kind: CarrierKind::Direct,
                    peer: "relay".into(),
                    keepalive: None,
                })
            })
        }
    }

    /// An agent's side of one carrier: TCP flows to what they name, relayed.
    async fn serve_agent(io: tokio::io::DuplexStream) {
        let (handle, mut inbound) = mux::spawn(io, Side::Agent);
        let Some(control) = inbound.recv().await else {
            return;
        };
        let (rd, mut wr) = tokio::io::split(control);
        let mut r = FrameReader::new(rd);
        let Ok(Some(Frame::Hello { .. })) = r.next().await else {
            return;
        };
        let welcome = Frame::Welcome {
            version: 1,
            caps: Capabilities::ALL,
            software: "kubelan 0.0.9".into(),
            facts: Facts::default(),
        };
        if write_frame(&mut wr, &welcome).await.is_err() {
            return;
        }
        tokio::spawn(async move {
            while let Some(s) = inbound.recv().await {
                tokio::spawn(async move {
                    let mut r = FrameReader::new(s);
                    let Ok(Some(Frame::Open {
                        target: Target::Addr(a),
                        ..
                    })) = r.next().await
                    else {
                        return;
                    };
                    let (mut s, left) = r.into_parts();
                    let Ok(tcp) = TcpStream::connect(a).await else {
                        return;
                    };
                    if write_frame(&mut s, &Frame::Opened { peer: a })
                        .await
                        .is_ok()
                    {
                        let _ = relay_tcp(tcp, FlowConn::new(s, left)).await;
                    }
                });
            }
        });
        while let Ok(Some(f)) = r.next().await {
            if let Frame::Ping { nonce } = f
                && write_frame(&mut wr, &Frame::Pong { nonce }).await.is_err()
            {
                break;
            }
        }
        handle.close();
    }

    struct FakeAgent;

    impl CarrierDialer for FakeAgent {
        fn dial(&self) -> futures::future::BoxFuture<'_, Result<Dialed, CarrierError>> {
            let (a, b) = tokio::io::duplex(256 * 1024);
            tokio::spawn(serve_agent(b));
            Box::pin(async move {
                Ok(Dialed {
                    io: Box::new(a),
                    kind: CarrierKind::Direct,
                    peer: "agent".into(),
                    keepalive: None,
                })
            })
        }
    }

    struct Setup {
        session: Session,
        relay: MuxHandle,
        token: Option<Token>,
        stop: CancellationToken,
    }

    async fn setup(
        caps: Capabilities,
        acceptor: Option<Arc<dyn Acceptor>>,
        config: SessionConfig,
    ) -> Setup {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let dialer = Arc::new(FakeRelay { caps, carriers: tx });
        let session = Session::start_accepting(vec![dialer], config, acceptor, stop.clone());
        let (relay, token) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a carrier in time")
            .expect("a carrier");
        session
            .wait_connected(Duration::from_secs(5))
            .await
            .unwrap();
        Setup {
            session,
            relay,
            token,
            stop,
        }
    }

    const PEER: &str = "10.1.2.3:40000";
    const WAIT: Duration = Duration::from_secs(5);

    fn peer() -> SocketAddr {
        PEER.parse().unwrap()
    }

    async fn local_tcp() -> (TcpListener, Arc<Local>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut local = Local::default();
        local.targets.insert(
            7,
            (FlowKind::Tcp, Target::Addr(listener.local_addr().unwrap())),
        );
        (listener, Arc::new(local))
    }

    #[test]
    fn a_stream_is_planned_from_its_first_frame() {
        let mut local = Local::default();
        let target = Target::Name {
            host: "localhost".into(),
            port: 8080,
        };
        local.targets.insert(7, (FlowKind::Tcp, target.clone()));
        let incoming = |listener, kind| Frame::Incoming {
            listener,
            kind,
            peer: peer(),
            optimistic: false,
        };
        let flow = |listener, kind| IncomingFlow {
            listener,
            kind,
            peer: peer(),
            optimistic: false,
        };
        assert_eq!(
            plan(Some(incoming(7, FlowKind::Tcp)), &local),
            Plan::Accept(flow(7, FlowKind::Tcp), target)
        );
        for (first, flow) in [
            (
                Some(incoming(8, FlowKind::Tcp)),
                Some(flow(8, FlowKind::Tcp)),
            ),
            (
                Some(incoming(7, FlowKind::Udp)),
                Some(flow(7, FlowKind::Udp)),
            ),
            (
                Some(incoming(7, FlowKind::Dns)),
                Some(flow(7, FlowKind::Dns)),
            ),
            (
                Some(incoming(7, FlowKind::Echo)),
                Some(flow(7, FlowKind::Echo)),
            ),
            (Some(Frame::Fin), None),
            (None, None),
        ] {
            match plan(first.clone(), &local) {
                Plan::Refuse(f, e) => {
                    assert_eq!(f, flow, "{first:?}");
                    assert!(!e.message.is_empty());
                }
                other => panic!("{first:?}: {other:?}"),
            }
        }
    }

    /// A reverse TCP flow reaches the local target; cut on either side, the other side
    /// sees a reset, never a clean end.
    #[tokio::test]
    async fn a_reverse_tcp_flow_relays_and_a_cut_on_either_side_is_a_reset() {
        let (listener, local) = local_tcp().await;
        let s = setup(
            Capabilities::ALL,
            Some(local.clone()),
            SessionConfig::default(),
        )
        .await;
        for relay_side_cuts in [true, false] {
            let (mut conn, reached) = open_tcp(&s.relay, 7, peer(), WAIT).await.unwrap();
            assert_eq!(reached, listener.local_addr().unwrap());
            let (mut dest, _) = listener.accept().await.unwrap();
            conn.write_all(b"ping").await.unwrap();
            conn.flush().await.unwrap();
            let mut buf = [0u8; 4];
            dest.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            dest.write_all(b"pong").await.unwrap();
            conn.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
            if relay_side_cuts {
                // The relay's pod connection died: dropping the flow resets it.
                drop(conn);
                let end = tokio::time::timeout(WAIT, dest.read(&mut buf))
                    .await
                    .unwrap();
                assert_eq!(
                    end.map_err(|e| e.kind()),
                    Err(std::io::ErrorKind::ConnectionReset)
                );
            } else {
                dest.set_zero_linger().unwrap();
                drop(dest);
                let end = tokio::time::timeout(WAIT, conn.read(&mut buf))
                    .await
                    .unwrap();
                assert_eq!(
                    end.map_err(|e| e.kind()),
                    Err(std::io::ErrorKind::ConnectionReset)
                );
            }
        }
        tokio::time::timeout(WAIT, async {
            while local.reports.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let reports = local.reports.lock().unwrap().clone();
        for r in &reports {
            assert_eq!((r.listener, r.kind, r.peer), (7, FlowKind::Tcp, peer()));
            assert_eq!(r.local, Some(listener.local_addr().unwrap()));
            assert_eq!(r.error.as_ref().map(|e| e.kind), Some(ErrorKind::Reset));
        }
        assert_eq!(s.session.stats().reverse_flows.load(Ordering::Relaxed), 2);
        s.stop.cancel();
    }

    #[tokio::test]
    async fn a_clean_reverse_flow_ends_with_fins_and_counts_bytes() {
        let (listener, local) = local_tcp().await;
        let s = setup(
            Capabilities::ALL,
            Some(local.clone()),
            SessionConfig::default(),
        )
        .await;
        let (mut conn, _) = open_tcp(&s.relay, 7, peer(), WAIT).await.unwrap();
        let (mut dest, _) = listener.accept().await.unwrap();
        conn.write_all(b"request").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut got = Vec::new();
        dest.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        dest.write_all(b"answer!!").await.unwrap();
        dest.shutdown().await.unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer!!");
        tokio::time::timeout(WAIT, async {
            while local.reports.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let r = local.reports.lock().unwrap()[0].clone();
        assert_eq!((r.to_local, r.from_local, r.error), (7, 8, None));
        s.stop.cancel();
    }

    #[tokio::test]
    async fn refusals_come_back_typed() {
        let (listener, mut local) = local_tcp().await;
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        Arc::get_mut(&mut local)
            .unwrap()
            .targets
            .insert(9, (FlowKind::Tcp, Target::Addr(closed)));
        let s = setup(
            Capabilities::ALL,
            Some(local.clone()),
            SessionConfig::default(),
        )
        .await;
        let e = open_tcp(&s.relay, 8, peer(), WAIT).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Policy, "{e}");
        let e = open_tcp(&s.relay, 9, peer(), WAIT).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionRefused, "{e}");
        let e = open_udp(&s.relay, 7, peer(), WAIT).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Policy, "{e}");
        // The carrier goes on serving.
        let (_conn, _) = open_tcp(&s.relay, 7, peer(), WAIT).await.unwrap();
        drop(listener);
        s.stop.cancel();
    }

    /// With no acceptor, or on a carrier that did not negotiate REVERSE, a stream the
    /// relay opens is reset at once.
    #[tokio::test]
    async fn reverse_flows_are_reset_unless_accepted() {
        let (_listener, local) = local_tcp().await;
        let cases: [(Capabilities, Option<Arc<dyn Acceptor>>); 2] = [
            (Capabilities::ALL, None),
            (
                Capabilities::ALL.without(Capabilities::REVERSE),
                Some(local),
            ),
        ];
        for (caps, acceptor) in cases {
            let s = setup(caps, acceptor, SessionConfig::default()).await;
            let e = open_tcp(&s.relay, 7, peer(), WAIT).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Reset, "{e}");
            assert_eq!(s.session.stats().reverse_flows.load(Ordering::Relaxed), 0);
            // The session is unaffected.
            assert!(matches!(
                *s.session.state().borrow(),
                SessionState::Connected { .. }
            ));
            s.stop.cancel();
        }
    }

    #[tokio::test]
    async fn a_required_capability_the_peer_lacks_fails_the_session_naming_both_versions() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let dialer = Arc::new(FakeRelay {
            caps: Capabilities::ALL.without(Capabilities::REVERSE),
            carriers: tx,
        });
        let config = SessionConfig {
            software: "kubelan 0.2.0".into(),
            required: Capabilities::REVERSE,
            ..SessionConfig::default()
        };
        let session = Session::start(vec![dialer], config, stop.clone());
        let e = session.wait_connected(WAIT).await.unwrap_err();
        assert_eq!(
            e.message,
            "the agent ns/relay-x (kubelan 0.0.9, protocol 1) does not support reverse flows, \
             which this kubelan (kubelan 0.2.0, protocol 1) needs: upgrade the agent with \
             `kubelan install` (the same kubelan version as this machine)"
        );
        assert!(matches!(*session.state().borrow(), SessionState::Failed(_)));
        stop.cancel();
    }

    #[tokio::test]
    async fn the_token_goes_in_the_hello_and_capabilities_are_shown() {
        let config = SessionConfig {
            token: Some(Token::new("s3cret")),
            ..SessionConfig::default()
        };
        let s = setup(Capabilities::ALL, None, config).await;
        assert_eq!(s.token, Some(Token::new("s3cret")));
        assert_eq!(s.session.capabilities(), Some(Capabilities::ALL));
        s.stop.cancel();
    }

    #[tokio::test]
    async fn a_reverse_udp_flow_relays_datagrams() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let mut local = Local::default();
        local
            .targets
            .insert(5, (FlowKind::Udp, Target::Addr(echo_addr)));
        let s = setup(
            Capabilities::ALL,
            Some(Arc::new(local)),
            SessionConfig::default(),
        )
        .await;
        let (tx, mut rx) = open_udp(&s.relay, 5, peer(), WAIT).await.unwrap();
        for msg in [&b"one"[..], b"two"] {
            tx.send(Bytes::copy_from_slice(msg)).await.unwrap();
            let got = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&got[..], msg);
        }
        s.stop.cancel();
    }

    /// The inner session rides a TCP flow of the outer one to the relay's carrier port;
    /// reverse flows then reach the local target through both.
    #[tokio::test]
    async fn a_session_runs_over_a_flow_of_another_session() {
        let relay_port = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = relay_port.local_addr().unwrap();
        let (tx, mut carriers) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = relay_port.accept().await {
                tokio::spawn(serve_relay(tcp, Capabilities::ALL, tx.clone()));
            }
        });
        let stop = CancellationToken::new();
        let outer = Session::start(
            vec![Arc::new(FakeAgent)],
            SessionConfig::default(),
            stop.clone(),
        );
        let (listener, local) = local_tcp().await;
        let dialer = Arc::new(crate::FlowDialer::new(outer, Target::Addr(relay_addr)));
        let inner = Session::start_accepting(
            vec![dialer],
            SessionConfig {
                required: Capabilities::REVERSE,
                ..SessionConfig::default()
            },
            Some(local),
            stop.clone(),
        );
        inner.wait_connected(WAIT).await.unwrap();
        match &*inner.state().borrow() {
            SessionState::Connected { carriers, .. } => {
                assert_eq!(carriers[0].kind, CarrierKind::Flow);
                assert_eq!(carriers[0].peer, relay_addr.to_string());
            }
            other => panic!("{other:?}"),
        }
        let (relay, _) = carriers.recv().await.unwrap();
        let (mut conn, _) = open_tcp(&relay, 7, peer(), WAIT).await.unwrap();
        let (mut dest, _) = listener.accept().await.unwrap();
        conn.write_all(b"through both").await.unwrap();
        conn.flush().await.unwrap();
        let mut buf = [0u8; 12];
        dest.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"through both");
        stop.cancel();
    }

    /// An optimistic flow sends its data with `Incoming`; a refusal is the first read's
    /// error.
    #[tokio::test]
    async fn an_optimistic_reverse_flow_relays_or_fails_at_the_first_read() {
        let (listener, local) = local_tcp().await;
        let s = setup(Capabilities::ALL, Some(local), SessionConfig::default()).await;
        let mut conn = open_tcp_optimistic(&s.relay, 7, peer()).await.unwrap();
        conn.write_all(b"early").await.unwrap();
        conn.flush().await.unwrap();
        let (mut dest, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 5];
        dest.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"early");
        dest.write_all(b"reply").await.unwrap();
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"reply");
        let mut refused = open_tcp_optimistic(&s.relay, 8, peer()).await.unwrap();
        refused.write_all(b"x").await.unwrap();
        refused.flush().await.unwrap();
        let e = tokio::time::timeout(WAIT, refused.read(&mut buf))
            .await
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("not exposed"), "{e}");
        s.stop.cancel();
    }
}
