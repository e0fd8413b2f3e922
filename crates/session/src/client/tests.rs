use std::sync::atomic::AtomicBool;

use kubelan_proto::Facts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::{CarrierError, Dialed};

fn info(kind: CarrierKind, peer: &str) -> CarrierInfo {
    CarrierInfo {
        kind,
        peer: peer.into(),
        agent: "kubelan-system/kubelan-agent-x on node1".into(),
        version: 1,
        software: "kubelan 0.1.0".into(),
    }
}

#[test]
fn each_state_is_one_line_with_its_reason_once() {
    let direct = info(CarrierKind::Direct, "10.4.7.11:30443");
    let pf = info(
        CarrierKind::PortForward,
        "pod kubelan-system/kubelan-agent-x",
    );
    let why = "direct mTLS to 10.4.7.11:30443 (agent a): no answer to pings for 3.1 s";
    let cases = [
        (SessionState::Connecting, "connecting".to_string()),
        (
            SessionState::Connected {
                carriers: vec![direct.clone()],
                down: None,
            },
            "connected via direct mTLS to 10.4.7.11:30443 (agent kubelan-system/kubelan-agent-x on node1)".to_string(),
        ),
        (
            SessionState::Connected {
                carriers: vec![direct.clone(), pf.clone()],
                down: Some((1, why.into())),
            },
            format!(
                "connected via direct mTLS to 10.4.7.11:30443 (agent kubelan-system/kubelan-agent-x on node1), \
                 API-server port-forward to pod kubelan-system/kubelan-agent-x (agent kubelan-system/kubelan-agent-x on node1); \
                 1 more carrier reconnecting: {why}"
            ),
        ),
        (
            SessionState::Connected {
                carriers: vec![pf],
                down: Some((2, why.into())),
            },
            format!(
                "connected via API-server port-forward to pod kubelan-system/kubelan-agent-x (agent kubelan-system/kubelan-agent-x on node1); \
                 2 more carriers reconnecting: {why}"
            ),
        ),
        (
            SessionState::Reconnecting { error: why.into() },
            format!("reconnecting: {why}"),
        ),
        (
            SessionState::Failed("the agent refused the session: versions 1–1".into()),
            "failed: the agent refused the session: versions 1–1".to_string(),
        ),
    ];
    for (state, text) in cases {
        let shown = state.to_string();
        assert_eq!(shown, text);
        assert!(!shown.contains('\n'), "one line: {shown}");
        assert!(shown.matches(why).count() <= 1, "reason once: {shown}");
        assert!(shown.matches("reconnecting").count() <= 1, "{shown}");
    }
}

#[test]
fn the_state_follows_live_carriers_and_the_latest_failure() {
    let c = info(CarrierKind::Direct, "a:1");
    assert_eq!(
        state_of(vec![], &[Slot::Starting, Slot::Starting]),
        SessionState::Connecting
    );
    assert_eq!(
        state_of(
            vec![],
            &[Slot::Down(3, "late".into()), Slot::Down(1, "early".into())]
        ),
        SessionState::Reconnecting {
            error: "late".into()
        }
    );
    assert_eq!(
        state_of(vec![c.clone()], &[Slot::Up, Slot::Starting]),
        SessionState::Connected {
            carriers: vec![c.clone()],
            down: None
        }
    );
    assert_eq!(
        state_of(
            vec![c.clone()],
            &[
                Slot::Up,
                Slot::Down(7, "x".into()),
                Slot::Down(2, "y".into())
            ]
        ),
        SessionState::Connected {
            carriers: vec![c],
            down: Some((2, "x".into()))
        }
    );
}

#[test]
fn a_flow_without_a_tunnel_names_the_reason_without_the_state_word() {
    let e = no_tunnel(
        Duration::from_secs(15),
        "direct carrier: 10.4.7.11:30443: no answer within 3s",
    );
    assert_eq!(
        e.message,
        "no tunnel to the agent within 15 s: direct carrier: 10.4.7.11:30443: no answer within 3s"
    );
    assert!(!e.message.contains("reconnecting"));
    let e = no_tunnel(Duration::from_millis(1500), "");
    assert_eq!(
        e.message,
        "no tunnel to the agent within 1.5 s (still connecting)"
    );
}

/// What a fake agent saw.
#[derive(Default)]
struct Seen {
    flows: AtomicUsize,
    carriers_open: AtomicUsize,
    /// Makes the agent of one carrier say `GoAway` (and stop answering pings).
    go_away: tokio::sync::Notify,
}

/// A minimal agent: welcome, pongs, and TCP flows that echo.
async fn fake_agent(io: tokio::io::DuplexStream, seen: Arc<Seen>) {
    seen.carriers_open.fetch_add(1, Ordering::SeqCst);
    let (handle, mut inbound) = mux::spawn(io, Side::Agent);
    if let Some(control) = inbound.recv().await {
        let (rd, mut wr) = tokio::io::split(control);
        let mut r = FrameReader::new(rd);
        if let Ok(Some(Frame::Hello { .. })) = r.next().await {
            let welcome = Frame::Welcome {
                version: 1,
                caps: Capabilities::ALL,
                software: "fake".into(),
                facts: Facts {
                    agent: "fake".into(),
                    ..Facts::default()
                },
            };
            if write_frame(&mut wr, &welcome).await.is_ok() {
                let pongs = async {
                    loop {
                        tokio::select! {
                            f = r.next() => match f {
                                Ok(Some(Frame::Ping { nonce })) => {
                                    if write_frame(&mut wr, &Frame::Pong { nonce }).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(Some(_)) => {}
                                _ => break,
                            },
                            () = seen.go_away.notified() => {
                                let bye = Frame::GoAway {
                                    drain_ms: 60_000,
                                    message: "the agent is shutting down".into(),
                                };
                                let _ = write_frame(&mut wr, &bye).await;
                                // Stopping: the control stream is done, flows go on.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                };
                let flows = async {
                    while let Some(s) = inbound.recv().await {
                        seen.flows.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            let mut r = FrameReader::new(s);
                            let Ok(Some(Frame::Open { .. })) = r.next().await else {
                                return;
                            };
                            let (mut s, _) = r.into_parts();
                            let opened = Frame::Opened {
                                peer: "192.0.2.1:80".parse().unwrap(),
                            };
                            if write_frame(&mut s, &opened).await.is_err() {
                                return;
                            }
                            let mut r = FrameReader::new(s);
                            while let Ok(Some(Frame::Data(d))) = r.next().await {
                                let (mut s, left) = r.into_parts();
                                if write_frame(&mut s, &Frame::Data(d)).await.is_err() {
                                    return;
                                }
                                r = FrameReader::with_buffer(s, left);
                            }
                        });
                    }
                };
                tokio::select! {
                    () = pongs => {}
                    () = flows => {}
                    () = handle.closed() => {}
                }
            }
        }
    }
    seen.carriers_open.fetch_sub(1, Ordering::SeqCst);
}

/// Port-forward carriers always; a direct carrier as the upgrade once `direct_ok`.
struct TwoPaths {
    direct_ok: AtomicBool,
    pf: Arc<Seen>,
    direct: Arc<Seen>,
}

fn carrier(kind: CarrierKind, seen: &Arc<Seen>) -> Dialed {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(fake_agent(b, seen.clone()));
    Dialed {
        io: Box::new(a),
        kind,
        peer: format!("{kind:?}"),
        keepalive: None,
    }
}

impl CarrierDialer for TwoPaths {
    fn dial(&self) -> futures::future::BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move { Ok(carrier(CarrierKind::PortForward, &self.pf)) })
    }

    fn upgrade(
        &self,
        current: CarrierKind,
    ) -> Option<futures::future::BoxFuture<'_, Result<Dialed, CarrierError>>> {
        (current == CarrierKind::PortForward).then(|| {
            Box::pin(async move {
                if self.direct_ok.load(Ordering::SeqCst) {
                    Ok(carrier(CarrierKind::Direct, &self.direct))
                } else {
                    Err(CarrierError::retry("direct: no answer"))
                }
            }) as futures::future::BoxFuture<'_, _>
        })
    }
}

fn kinds(s: &Session) -> Vec<CarrierKind> {
    match &*s.state().borrow() {
        SessionState::Connected { carriers, .. } => carriers.iter().map(|c| c.kind).collect(),
        _ => Vec::new(),
    }
}

async fn echo(c: &mut FlowConn<MuxStream>, msg: &[u8]) {
    c.write_all(msg).await.unwrap();
    c.flush().await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(buf, msg);
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn moves_new_flows_to_the_preferred_carrier_and_retires_the_old_one_when_idle() {
    let paths = Arc::new(TwoPaths {
        direct_ok: AtomicBool::new(false),
        pf: Arc::new(Seen::default()),
        direct: Arc::new(Seen::default()),
    });
    let stop = CancellationToken::new();
    let cfg = SessionConfig {
        probe_min: Duration::from_millis(50),
        probe_max: Duration::from_millis(100),
        ..SessionConfig::default()
    };
    let s = Session::start(
        vec![paths.clone() as Arc<dyn CarrierDialer>],
        cfg,
        stop.clone(),
    );
    s.wait_connected(Duration::from_secs(5)).await.unwrap();
    assert_eq!(kinds(&s), [CarrierKind::PortForward]);
    let target = Target::Addr("192.0.2.1:80".parse().unwrap());
    let mut old_flow = s.connect(target.clone()).await.unwrap();
    echo(&mut old_flow, b"before").await;
    // Direct does not answer: probes fail, the session stays where it is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kinds(&s), [CarrierKind::PortForward]);

    paths.direct_ok.store(true, Ordering::SeqCst);
    until("the session on direct", || {
        kinds(&s) == [CarrierKind::Direct]
    })
    .await;
    // New flows use direct; the flow on the old carrier keeps running.
    let mut new_flow = s.connect(target).await.unwrap();
    echo(&mut new_flow, b"new").await;
    assert_eq!(paths.direct.flows.load(Ordering::SeqCst), 1, "the new flow");
    assert_eq!(
        paths.pf.flows.load(Ordering::SeqCst),
        1,
        "the old flow only"
    );
    echo(&mut old_flow, b"still there").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        paths.pf.carriers_open.load(Ordering::SeqCst),
        1,
        "the old carrier stays while a flow runs on it"
    );
    echo(&mut old_flow, b"after 1.5 s").await;
    // Its last flow ends: the old carrier closes.
    drop(old_flow);
    until("the old carrier closed", || {
        paths.pf.carriers_open.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(kinds(&s), [CarrierKind::Direct]);
    echo(&mut new_flow, b"direct unaffected").await;
    stop.cancel();
}

#[tokio::test]
async fn a_going_away_agent_drains_its_flows_while_new_ones_use_a_new_carrier() {
    let paths = Arc::new(TwoPaths {
        direct_ok: AtomicBool::new(false),
        pf: Arc::new(Seen::default()),
        direct: Arc::new(Seen::default()),
    });
    let stop = CancellationToken::new();
    let s = Session::start(
        vec![paths.clone() as Arc<dyn CarrierDialer>],
        SessionConfig::default(),
        stop.clone(),
    );
    let mut states = s.state();
    let said = Arc::new(std::sync::Mutex::new(Vec::new()));
    let said2 = said.clone();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let line = states.borrow_and_update().to_string();
            said2.lock().unwrap().push(line);
        }
    });
    s.wait_connected(Duration::from_secs(5)).await.unwrap();
    let target = Target::Addr("192.0.2.1:80".parse().unwrap());
    let mut old_flow = s.connect(target.clone()).await.unwrap();
    echo(&mut old_flow, b"before").await;

    paths.pf.go_away.notify_one();
    until("a second carrier", || {
        paths.pf.carriers_open.load(Ordering::SeqCst) == 2
    })
    .await;
    s.wait_connected(Duration::from_secs(5)).await.unwrap();
    // The flow on the draining carrier goes on; new flows take the new carrier.
    echo(&mut old_flow, b"during the drain").await;
    let mut new_flow = s.connect(target).await.unwrap();
    echo(&mut new_flow, b"new").await;
    assert_eq!(paths.pf.flows.load(Ordering::SeqCst), 2);
    // Its last flow ended: the draining carrier closes before its drain time is over.
    drop(old_flow);
    until("the draining carrier closed", || {
        paths.pf.carriers_open.load(Ordering::SeqCst) == 1
    })
    .await;
    echo(&mut new_flow, b"unaffected").await;
    stop.cancel();
    let said = said.lock().unwrap().clone();
    assert!(
        said.iter()
            .any(|l| l.starts_with("reconnecting:") && l.contains("the agent is going away")),
        "{said:?}"
    );
}

#[tokio::test]
async fn a_shutdown_is_not_a_reconnect() {
    let paths = Arc::new(TwoPaths {
        direct_ok: AtomicBool::new(true),
        pf: Arc::new(Seen::default()),
        direct: Arc::new(Seen::default()),
    });
    let stop = CancellationToken::new();
    let s = Session::start(
        vec![paths.clone() as Arc<dyn CarrierDialer>],
        SessionConfig::default(),
        stop.clone(),
    );
    let mut rx = s.state();
    let seen = tokio::spawn(async move {
        let mut states = vec![rx.borrow_and_update().clone()];
        while rx.changed().await.is_ok() {
            states.push(rx.borrow_and_update().clone());
            if states.len() > 10 {
                break;
            }
        }
        states
    });
    s.wait_connected(Duration::from_secs(5)).await.unwrap();
    stop.cancel();
    until("the carrier closed", || {
        paths.pf.carriers_open.load(Ordering::SeqCst) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    let states = tokio::time::timeout(Duration::from_secs(1), seen)
        .await
        .map(|r| r.unwrap())
        .unwrap_or_default();
    // Nothing is published for a shutdown: no "reconnecting", no carrier "down".
    assert!(
        states.iter().all(|st| matches!(
            st,
            SessionState::Connecting | SessionState::Connected { down: None, .. }
        )),
        "{states:?}"
    );
    assert!(
        matches!(states.last(), Some(SessionState::Connected { .. })),
        "{states:?}"
    );
}
