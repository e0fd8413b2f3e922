//! One carrier: handshake on the control stream, then one task per flow stream.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kubelan_proto::{
    ErrorKind, FlowError, FlowKind, Frame, PROTOCOL_VERSION, RefuseReason, Target, VersionRange,
    negotiate,
};
use kubelan_session::flow::{FlowConn, FrameReader, buffer_frame, write_frame};
use kubelan_session::mux::{self, MuxStream, Side};
use kubelan_session::relay;
use kubelan_session::relay::{Outgoing, dial_error, relay_datagrams};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::Agent;
use crate::refusals::Verdict;

/// How long a client may take to send its hello or a flow's `Open`.
const OPEN_WAIT: Duration = Duration::from_secs(10);
/// TCP connect timeout towards pods and services.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A client silent this long (no pings) is gone.
const CLIENT_SILENCE: Duration = Duration::from_secs(15);
/// UDP flows idle this long end.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// Serves one carrier until it ends. `client` is the address it came from (loopback for
/// port-forward carriers), which bounds the logging of its refused flows.
pub(crate) async fn carrier<T>(agent: Arc<Agent>, io: T, peer: String, client: IpAddr)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mux, mut inbound) = mux::spawn(io, Side::Agent);
    let control = match tokio::time::timeout(OPEN_WAIT, inbound.recv()).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            let reason = mux.close_reason().unwrap_or_default();
            tracing::warn!(%peer, %reason, "refused a carrier");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "carrier opened no control stream within 10 s; closing");
            mux.close();
            return;
        }
    };
    let mut control = control;
    control.set_urgent();
    let (rd, mut wr) = tokio::io::split(control);
    let mut reader = FrameReader::new(rd);
    let hello = tokio::time::timeout(OPEN_WAIT, reader.next()).await;
    let (versions, software, client_caps) = match hello {
        Ok(Ok(Some(Frame::Hello {
            versions,
            software,
            caps,
            ..
        }))) => (versions, software, caps),
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(%peer, error = %e, "refused a carrier: not a kubelan client");
            mux.close();
            return;
        }
        other => {
            tracing::warn!(%peer, ?other, "refused a carrier: no hello");
            mux.close();
            return;
        }
    };
    if agent.shutdown.is_cancelled() {
        let _ = write_frame(
            &mut wr,
            &Frame::Refused {
                reason: RefuseReason::ShuttingDown,
                versions: VersionRange::OURS,
                message: "the agent is shutting down; retry in a moment".into(),
            },
        )
        .await;
        mux.close();
        return;
    }
    let version = match negotiate(versions, VersionRange::OURS) {
        Ok(v) => v,
        Err(refusal) => {
            tracing::warn!(%peer, client = %software, "refused: {refusal}");
            let _ = write_frame(
                &mut wr,
                &Frame::Refused {
                    reason: RefuseReason::Version,
                    versions: VersionRange::OURS,
                    message: refusal.message,
                },
            )
            .await;
            let _ = wr.shutdown().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            mux.close();
            return;
        }
    };
    debug_assert!(version <= PROTOCOL_VERSION);
    let welcome = Frame::Welcome {
        version,
        caps: agent.caps.intersect(client_caps),
        software: agent.software.clone(),
        facts: agent.facts(),
    };
    if write_frame(&mut wr, &welcome).await.is_err() {
        mux.close();
        return;
    }
    agent.stats.carriers.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%peer, client = %software, version, "session started");

    // Flows: every further inbound stream.
    let flows_agent = agent.clone();
    let flows_mux = mux.clone();
    let flows = tokio::spawn(async move {
        while let Some(stream) = inbound.recv().await {
            if flows_agent.shutdown.is_cancelled() {
                let mut s = stream;
                let _ = write_frame(
                    &mut s,
                    &Frame::Failed(FlowError::new(
                        ErrorKind::ShuttingDown,
                        "the agent is shutting down; the client reconnects to another replica",
                    )),
                )
                .await;
                continue;
            }
            tokio::spawn(flow(flows_agent.clone(), stream, client));
        }
        flows_mux.close();
    });

    // Control: answer pings, notice silence, announce shutdown.
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut going_away = false;
    loop {
        tokio::select! {
            f = reader.next() => match f {
                Ok(Some(Frame::Ping { nonce })) => {
                    last_heard = Instant::now();
                    if write_frame(&mut wr, &Frame::Pong { nonce }).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Frame::Pong { .. })) => last_heard = Instant::now(),
                Ok(Some(other)) => {
                    tracing::warn!(%peer, frame = other.name(), "unexpected frame on the control stream; closing the carrier");
                    break;
                }
                Ok(None) | Err(_) => break,
            },
            _ = tick.tick() => {
                // Data of other streams proves the client alive as well as a ping does.
                if last_heard.elapsed().min(mux.quiet_for()) > CLIENT_SILENCE {
                    tracing::info!(%peer, "client silent for 15 s; closing its carrier");
                    break;
                }
            }
            () = agent.shutdown.cancelled(), if !going_away => {
                going_away = true;
                let _ = write_frame(&mut wr, &Frame::GoAway {
                    drain_ms: agent.drain.as_millis() as u32,
                    message: "the agent is shutting down".into(),
                }).await;
            }
            () = mux.closed() => break,
        }
    }
    // After a GoAway, flows still running get the drain time; the process exit ends them.
    if !going_away {
        mux.close();
    }
    let _ = flows.await;
    let reason = mux.close_reason().unwrap_or_default();
    mux.close();
    tracing::info!(%peer, %reason, "session ended");
}

async fn flow(agent: Arc<Agent>, stream: MuxStream, client: IpAddr) {
    let mut reader = FrameReader::new(stream);
    let open = match tokio::time::timeout(OPEN_WAIT, reader.next()).await {
        Ok(Ok(Some(Frame::Open {
            kind,
            target,
            optimistic,
        }))) => Some((kind, target, optimistic)),
        _ => None,
    };
    let (stream, leftover) = reader.into_parts();
    let mut stream = stream;
    let Some((kind, target, optimistic)) = open else {
        let _ = write_frame(
            &mut stream,
            &Frame::Failed(FlowError::new(
                ErrorKind::Protocol,
                "a flow must start with an Open frame",
            )),
        )
        .await;
        return;
    };
    let _active = agent.stats.flow_guard();
    match kind {
        FlowKind::Tcp => tcp_flow(&agent, client, stream, leftover, target, optimistic).await,
        FlowKind::Udp => udp_flow(&agent, client, stream, leftover, target, false).await,
        FlowKind::Dns => udp_flow(&agent, client, stream, leftover, target, true).await,
        FlowKind::Echo => match destinations(&agent, &target).await {
            Ok(addrs) => crate::echo::echo_flow(stream, leftover, addrs[0].ip()).await,
            Err(e) => {
                refused(&agent, client, &target, &e);
                let _ = write_frame(&mut stream, &Frame::Failed(e)).await;
            }
        },
    }
}

/// Counts a flow that failed to open; logs policy refusals within the bounds of
/// [`crate::refusals`] (one line per client and destination per minute, a few lines per
/// minute in all).
pub(crate) fn refused(agent: &Agent, client: IpAddr, target: &Target, e: &FlowError) {
    agent.stats.refused.fetch_add(1, Ordering::Relaxed);
    if e.kind != ErrorKind::Policy {
        tracing::debug!(%target, error = %e, "flow failed");
        return;
    }
    agent.stats.policy_refused.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let mut log = agent
        .refusals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let verdict = match target {
        Target::Addr(a) => log.refusal(client, a.ip(), now),
        Target::Name { host, .. } => log.refusal(client, host, now),
    };
    drop(log);
    if verdict == Verdict::Log {
        tracing::warn!(%client, %target, reason = %e.message, "flow refused by policy");
    }
}

/// Resolves and policy-checks a target, returning the addresses to try in order.
async fn destinations(agent: &Agent, target: &Target) -> Result<Vec<SocketAddr>, FlowError> {
    let addrs = match target {
        Target::Addr(a) => vec![*a],
        Target::Name { host, port } => agent
            .resolve(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, *port))
            .collect(),
    };
    let mut allowed = Vec::new();
    let mut first_refusal = None;
    for a in addrs {
        match agent.policy.check(a) {
            Ok(()) => allowed.push(a),
            Err(e) => {
                first_refusal.get_or_insert(e);
            }
        }
    }
    match (allowed.is_empty(), first_refusal) {
        (false, _) => Ok(allowed),
        (true, Some(e)) => Err(match target {
            Target::Name { host, .. } => FlowError::new(e.kind, format!("{host}: {}", e.message)),
            Target::Addr(_) => e,
        }),
        (true, None) => Err(FlowError::new(
            ErrorKind::NoSuchHost,
            format!("{target}: no addresses"),
        )),
    }
}

/// Dials `target` and relays. An `optimistic` client does not wait for `Opened`, so it
/// is not flushed on its own: it leaves with the first data from the target (or its
/// close), one carrier message instead of two.
async fn tcp_flow(
    agent: &Agent,
    client: IpAddr,
    mut stream: MuxStream,
    leftover: bytes::BytesMut,
    target: Target,
    optimistic: bool,
) {
    let result = async {
        let addrs = destinations(agent, &target).await?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(DIAL_TIMEOUT, relay::dial_edge(addr)).await {
                Ok(Ok(s)) => return Ok((s, addr)),
                Ok(Err(e)) => last = Some(dial_error(addr, &e)),
                Err(_) => {
                    last = Some(FlowError::new(
                        ErrorKind::Timeout,
                        format!("{addr}: no answer within {DIAL_TIMEOUT:?}"),
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| FlowError::new(ErrorKind::NoSuchHost, "no address")))
    }
    .await;
    let (tcp, addr) = match result {
        Ok(x) => x,
        Err(e) => {
            refused(agent, client, &target, &e);
            let _ = write_frame(&mut stream, &Frame::Failed(e)).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let opened = Frame::Opened { peer: addr };
    let sent = if optimistic {
        buffer_frame(&mut stream, &opened).await
    } else {
        write_frame(&mut stream, &opened).await
    };
    if sent.is_err() {
        let _ = tcp.set_zero_linger();
        return;
    }
    relay_tcp(agent, tcp, addr, FlowConn::new(stream, leftover)).await;
}

/// Relays an opened flow and its destination's socket until both ended (a cut on either
/// side resets the other: `kubelan_session::relay::relay_edge`, which also keeps the
/// socket's receive buffer at its share of the agent's), counting the bytes.
async fn relay_tcp<S>(agent: &Agent, tcp: TcpStream, addr: SocketAddr, conn: FlowConn<S>)
where
    S: kubelan_session::ReadChunk + kubelan_session::WriteChunk,
{
    match relay::relay_edge(tcp, conn, None).await {
        Ok((down, up)) => {
            agent.stats.bytes_up.fetch_add(up, Ordering::Relaxed);
            agent.stats.bytes_down.fetch_add(down, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(%addr, error = %e, "flow cut"),
    }
}

async fn udp_flow(
    agent: &Agent,
    client: IpAddr,
    mut stream: MuxStream,
    leftover: bytes::BytesMut,
    target: Target,
    dns: bool,
) {
    let dest = match destinations(agent, &target).await {
        Ok(a) => a[0],
        Err(e) => {
            refused(agent, client, &target, &e);
            let _ = write_frame(&mut stream, &Frame::Failed(e)).await;
            return;
        }
    };
    let bind: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) if s.connect(dest).await.is_ok() => s,
        Ok(_) | Err(_) => {
            let e = FlowError::new(
                ErrorKind::Unreachable,
                format!("{dest}: cannot open a UDP socket"),
            );
            let _ = write_frame(&mut stream, &Frame::Failed(e)).await;
            return;
        }
    };
    relay_datagrams(
        stream,
        leftover,
        &sock,
        dest,
        UDP_IDLE,
        |d| {
            if dns {
                dns_outgoing(agent, d)
            } else {
                Outgoing::Send(d)
            }
        },
        |d| Some(Bytes::copy_from_slice(d)),
    )
    .await;
}

/// One DNS query from a client: FORMERR at once when it fails the screen (never relayed,
/// so no client can make the cluster DNS server or this flow wait on it), an answer from
/// the watch cache, or on to the cluster DNS server.
fn dns_outgoing(agent: &Agent, query: Bytes) -> Outgoing {
    match kubelan_dns::screen(&query) {
        kubelan_dns::Screen::Query(_) => match agent.answer_dns(&query) {
            Some(reply) => Outgoing::Reply(Bytes::from(reply)),
            None => Outgoing::Send(query),
        },
        kubelan_dns::Screen::FormErr(reply) => Outgoing::Reply(Bytes::from(reply)),
        kubelan_dns::Screen::Drop => Outgoing::Skip,
    }
}

/// Parses the first nameserver of a resolv.conf text.
pub(crate) fn resolv_conf_nameserver(text: &str) -> Option<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;
    use std::sync::atomic::AtomicBool;

    use bytes::BytesMut;
    use kubelan_proto::{Capabilities, Facts};
    use kubelan_session::carrier::{CarrierDialer, CarrierKind, Dialed};
    use kubelan_session::{CarrierError, Session, SessionConfig, SessionState};
    use tokio::io::AsyncReadExt;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::policy::Policy;
    use crate::{Agent, AgentStats};

    fn agent() -> Arc<Agent> {
        Arc::new(Agent {
            software: "kubelan test".into(),
            policy: Policy::new(vec!["192.0.2.0/24".parse().unwrap()], vec![], None),
            names: None,
            domain: "cluster.local".into(),
            dns_server: None,
            facts: RwLock::new(Facts {
                cluster_domain: "cluster.local".into(),
                agent: "test/agent".into(),
                ..Facts::default()
            }),
            stats: AgentStats::default(),
            refusals: std::sync::Mutex::new(crate::refusals::RefusalLog::default()),
            shutdown: CancellationToken::new(),
            drain: Duration::from_secs(1),
            ready: AtomicBool::new(true),
            caps: Capabilities::ALL,
        })
    }

    async fn client_mux(agent: Arc<Agent>) -> kubelan_session::mux::MuxHandle {
        let (a, b) = tokio::io::duplex(256 * 1024);
        tokio::spawn(carrier(agent, b, "test".into(), [10, 0, 0, 1].into()));
        mux::spawn(a, Side::Client).0
    }

    #[tokio::test]
    async fn newer_client_is_refused_naming_both_versions() {
        let m = client_mux(agent()).await;
        let mut control = m.open().await.unwrap();
        let hello = Frame::Hello {
            versions: VersionRange { min: 5, max: 6 },
            caps: Capabilities::ALL,
            software: "kubelan 9.0".into(),
            token: None,
        };
        write_frame(&mut control, &hello).await.unwrap();
        let mut r = FrameReader::new(control);
        match r.next().await.unwrap() {
            Some(Frame::Refused {
                reason: RefuseReason::Version,
                versions,
                message,
            }) => {
                assert_eq!(versions, VersionRange::OURS);
                assert!(
                    message.contains("5–6") && message.contains("agent is older"),
                    "{message}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    async fn welcomed(agent: Arc<Agent>) -> kubelan_session::mux::MuxHandle {
        let m = client_mux(agent).await;
        let mut control = m.open().await.unwrap();
        let hello = Frame::Hello {
            versions: VersionRange::OURS,
            caps: Capabilities::ALL,
            software: "kubelan test".into(),
            token: None,
        };
        write_frame(&mut control, &hello).await.unwrap();
        let mut r = FrameReader::new(control);
        assert!(matches!(
            r.next().await.unwrap(),
            Some(Frame::Welcome { version: 1, .. })
        ));
        // Keep the control stream open for the rest of the test.
        tokio::spawn(async move {
            let _keep = r;
            std::future::pending::<()>().await
        });
        m
    }

    async fn open(m: &kubelan_session::mux::MuxHandle, target: Target) -> Option<Frame> {
        let mut s = m.open().await.unwrap();
        write_frame(
            &mut s,
            &Frame::Open {
                kind: FlowKind::Tcp,
                target,
                optimistic: false,
            },
        )
        .await
        .unwrap();
        FrameReader::new(s).next().await.unwrap()
    }

    #[tokio::test]
    async fn policy_refusals_are_typed_and_other_flows_continue() {
        let a = agent();
        let m = welcomed(a.clone()).await;
        for t in ["127.0.0.1:22", "169.254.169.254:80", "10.9.9.9:80"] {
            match open(&m, Target::Addr(t.parse().unwrap())).await {
                Some(Frame::Failed(e)) => assert_eq!(e.kind, ErrorKind::Policy, "{t}: {e}"),
                other => panic!("{t}: {other:?}"),
            }
        }
        // A flow whose first frame is garbage (an oversized Data header) is answered with a
        // protocol error; the carrier keeps serving.
        let mut s = m.open().await.unwrap();
        s.write_all(&[0x13, 0xff, 0xff, 0xff]).await.unwrap();
        s.flush().await.unwrap();
        let mut buf = BytesMut::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_buf(&mut buf)).await;
        assert!(matches!(
            kubelan_proto::Decoder::new().decode(&mut buf),
            Ok(Some(Frame::Failed(FlowError {
                kind: ErrorKind::Protocol,
                ..
            })))
        ));
        match open(&m, Target::Addr("127.0.0.1:1".parse().unwrap())).await {
            Some(Frame::Failed(e)) => assert_eq!(e.kind, ErrorKind::Policy),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.stats.refused.load(Ordering::Relaxed), 4);
        assert_eq!(a.stats.policy_refused.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn policy_refusals_are_logged_within_bounds_and_all_counted() {
        let a = agent();
        let m = welcomed(a.clone()).await;
        for _ in 0..50 {
            match open(&m, Target::Addr("10.9.9.9:80".parse().unwrap())).await {
                Some(Frame::Failed(e)) => {
                    assert!(e.message.contains("--allow CIDR"), "{e}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(a.stats.policy_refused.load(Ordering::Relaxed), 50);
        let mut log = a.refusals.lock().unwrap();
        assert_eq!(
            log.summary(Instant::now()),
            Some(49),
            "one line, 49 held back"
        );
    }

    #[test]
    fn bad_dns_queries_get_formerr_and_are_never_relayed() {
        use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
        use hickory_proto::rr::{Name, RecordType};
        let a = agent();
        let mut q = Message::new(0x0bad, MessageType::Query, OpCode::Query);
        for i in 0..50 {
            let name = Name::from_ascii(format!("n{i}.default.svc.cluster.local.")).unwrap();
            q.add_query(Query::query(name, RecordType::A));
        }
        let many = Bytes::from(q.to_vec().unwrap());
        match dns_outgoing(&a, many) {
            Outgoing::Reply(r) => {
                let r = Message::from_vec(&r).unwrap();
                assert_eq!(r.metadata.id, 0x0bad);
                assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
            }
            _ => panic!("a 50-question query must be answered FORMERR here"),
        }
        assert!(matches!(
            dns_outgoing(&a, Bytes::from_static(&[0x0b, 0xad, 1, 0, 0, 1])),
            Outgoing::Skip
        ));
        q.queries.truncate(1);
        assert!(matches!(
            dns_outgoing(&a, Bytes::from(q.to_vec().unwrap())),
            Outgoing::Send(_)
        ));
    }

    /// Dials in-memory carriers served by a test agent; counts dials.
    struct MemDialer(Arc<Agent>, Arc<std::sync::atomic::AtomicUsize>);

    impl CarrierDialer for MemDialer {
        fn dial(&self) -> futures::future::BoxFuture<'_, Result<Dialed, CarrierError>> {
            Box::pin(async move {
                self.1.fetch_add(1, Ordering::Relaxed);
                let (a, b) = tokio::io::duplex(64 * 1024);
                tokio::spawn(carrier(
                    self.0.clone(),
                    b,
                    "mem".into(),
                    [10, 0, 0, 2].into(),
                ));
                Ok(Dialed {
                    io: Box::new(a),
                    kind: CarrierKind::Direct,
                    peer: "mem".into(),
                    keepalive: None,
                })
            })
        }
    }

    #[tokio::test]
    async fn session_reports_states_and_reconnects_after_goaway() {
        let a = agent();
        let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let cfg = SessionConfig {
            backoff_min: Duration::from_millis(20),
            ..SessionConfig::default()
        };
        let s = Session::start(
            vec![Arc::new(MemDialer(a.clone(), dials.clone()))],
            cfg,
            stop.clone(),
        );
        s.wait_connected(Duration::from_secs(5)).await.unwrap();
        assert!(matches!(
            *s.state().borrow(),
            SessionState::Connected { .. }
        ));
        assert_eq!(s.facts().unwrap().agent, "test/agent");
        let e = s
            .connect(Target::Addr("127.0.0.1:9".parse().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Policy);
        // Optimistic: the refusal arrives as the first read's error, with its reason.
        let mut c = s
            .connect_optimistic(Target::Addr("127.0.0.1:9".parse().unwrap()))
            .await
            .unwrap();
        c.write_all(b"early data").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 16];
        let err = c.read(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        // The agent drains: the session sees GoAway, reports reconnecting, and redials.
        a.shutdown.cancel();
        let mut st = s.state();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(*st.borrow_and_update(), SessionState::Reconnecting { .. }) {
                st.changed().await.unwrap();
            }
        })
        .await
        .expect("reconnecting reported");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(dials.load(Ordering::Relaxed) >= 2, "the session redials");
        // A draining agent refuses new sessions, so the state never claims "connected".
        assert!(!matches!(
            *s.state().borrow(),
            SessionState::Connected { .. }
        ));
        stop.cancel();
    }

    #[tokio::test]
    async fn dns_flows_are_answered_from_the_cluster_cache() {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RData, RecordType};
        let mut names = kubelan_dns::ClusterNames::new("cluster.local");
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "192.0.2.80", "clusterIPs": ["192.0.2.80"], "ports": [{"port": 80}]}
        }))
        .unwrap();
        names.apply_service(&svc);
        names.set_complete(true);
        let mut agent = Arc::into_inner(agent()).unwrap();
        agent.names = Some(Arc::new(RwLock::new(names)));
        let a = Arc::new(agent);
        let stop = CancellationToken::new();
        let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = Session::start(
            vec![Arc::new(MemDialer(a, dials))],
            SessionConfig::default(),
            stop.clone(),
        );
        let mut q = Message::new(0x1234, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        // The DNS server address only has to pass policy; the cache answers, nothing is sent.
        let reply = s
            .dns(
                "192.0.2.53:53".parse().unwrap(),
                bytes::Bytes::from(q.to_vec().unwrap()),
            )
            .await
            .unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        let addrs: Vec<_> = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(addrs, ["192.0.2.80"]);
        stop.cancel();
    }

    /// The welcome names what both sides offer; an agent hiding REVERSE (an image
    /// without `kubelan relay`) fails a session that needs it, naming both versions.
    #[tokio::test]
    async fn the_welcome_offers_what_both_sides_support() {
        let m = client_mux(agent()).await;
        let mut control = m.open().await.unwrap();
        let hello = Frame::Hello {
            versions: VersionRange::OURS,
            caps: Capabilities(Capabilities::TCP.0 | Capabilities::REVERSE.0),
            software: "kubelan test".into(),
            token: None,
        };
        write_frame(&mut control, &hello).await.unwrap();
        match FrameReader::new(control).next().await.unwrap() {
            Some(Frame::Welcome { caps, .. }) => {
                assert_eq!(
                    caps,
                    Capabilities(Capabilities::TCP.0 | Capabilities::REVERSE.0)
                );
            }
            other => panic!("{other:?}"),
        }

        let mut old = Arc::into_inner(agent()).unwrap();
        old.caps = Capabilities::ALL.without(Capabilities::REVERSE);
        let stop = CancellationToken::new();
        let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cfg = SessionConfig {
            required: Capabilities::REVERSE,
            ..SessionConfig::default()
        };
        let s = Session::start(
            vec![Arc::new(MemDialer(Arc::new(old), dials))],
            cfg,
            stop.clone(),
        );
        let e = s.wait_connected(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            e.message.starts_with(
                "the agent test/agent (kubelan test, protocol 1) does not support reverse flows"
            ),
            "{e}"
        );
        assert!(e.message.contains(env!("CARGO_PKG_VERSION")), "{e}");
        stop.cancel();
    }
}
