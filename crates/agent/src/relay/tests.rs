use std::collections::HashMap;

use kubelan_proto::Target;
use kubelan_session::carrier::{CarrierDialer, CarrierError, CarrierKind, Dialed};
use kubelan_session::{Acceptor, Session, SessionConfig, SessionState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[test]
fn listen_specs_parse_and_print_back() {
    let tcp = |port, listener| ListenSpec {
        port,
        listener,
        kind: FlowKind::Tcp,
    };
    assert_eq!("8080=1".parse(), Ok(tcp(8080, 1)));
    assert_eq!("8080=1/tcp".parse(), Ok(tcp(8080, 1)));
    let udp: ListenSpec = "5353=4294967295/udp".parse().unwrap();
    assert_eq!(
        (udp.port, udp.listener, udp.kind),
        (5353, u32::MAX, FlowKind::Udp)
    );
    assert_eq!(udp.to_string(), "5353=4294967295/udp");
    for bad in [
        "",
        "8080",
        "=1",
        "8080=",
        "x=1",
        "8080=1/sctp",
        "65536=1",
        "8080=4294967296",
        "+80=1",
        "80=-1",
        "80 =1",
    ] {
        let e = bad.parse::<ListenSpec>().unwrap_err().to_string();
        assert!(e.contains("PORT=ID"), "{bad:?}: {e}");
    }
}

#[test]
fn duplicate_listeners_are_refused() {
    let mut c = RelayConfig::new([0; 32]);
    c.listeners = vec!["80=1".parse().unwrap(), "80=2/udp".parse().unwrap()];
    assert!(c.check().is_ok(), "one port, two protocols");
    c.listeners.push("81=1".parse().unwrap());
    assert!(matches!(c.check(), Err(RelayError::Duplicate(_))));
    c.listeners = vec!["80=1".parse().unwrap(), "80=2".parse().unwrap()];
    assert!(matches!(c.check(), Err(RelayError::Duplicate(_))));
}

#[test]
fn the_token_is_checked_against_its_hash() {
    assert_eq!(
        token_sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let hash = parse_sha256(&token_sha256_hex("s3cret")).unwrap();
    assert!(token_ok(Some(&Token::new("s3cret")), &hash));
    assert!(!token_ok(Some(&Token::new("s3creT")), &hash));
    assert!(!token_ok(None, &hash));
    // An empty secret is no secret.
    let empty = parse_sha256(&token_sha256_hex("")).unwrap();
    assert!(!token_ok(None, &empty));
    assert!(matches!(parse_sha256("abc"), Err(RelayError::TokenHash(3))));
    assert!(parse_sha256(&"g".repeat(64)).is_err());
    assert!(parse_sha256(&"é".repeat(32)).is_err());
}

#[test]
fn the_grace_period_counts_from_the_last_carrier() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut g = Grace::new(s(60), s(10), t0);
    assert_eq!(g.deadline(), Some(t0 + s(60)));
    g.update(0, t0 + s(5));
    assert_eq!(
        g.deadline(),
        Some(t0 + s(60)),
        "still waiting for the first"
    );
    g.update(1, t0 + s(20));
    assert_eq!(g.deadline(), None);
    g.update(2, t0 + s(21));
    g.update(0, t0 + s(30));
    assert_eq!(g.deadline(), Some(t0 + s(40)));
    g.update(0, t0 + s(35));
    assert_eq!(
        g.deadline(),
        Some(t0 + s(40)),
        "a later update does not extend it"
    );
    g.update(1, t0 + s(39));
    assert_eq!(g.deadline(), None);
}

#[test]
fn hellos_are_refused_with_the_reason() {
    let hash = parse_sha256(&token_sha256_hex("s3cret")).unwrap();
    let hello = |token: Option<&str>, caps, versions| Frame::Hello {
        versions,
        caps,
        software: "kubelan 0.1.0".into(),
        token: token.map(Token::new),
    };
    let reason = |r: Result<_, Box<Frame>>| match r.map_err(|f| *f) {
        Err(Frame::Refused { reason, .. }) => Some(reason),
        _ => None,
    };
    let ok = hello(Some("s3cret"), Capabilities::ALL, VersionRange::OURS);
    assert_eq!(
        welcome_for(Some(ok), &hash).unwrap(),
        (1, Capabilities::ALL, "kubelan 0.1.0".to_string())
    );
    let wrong = hello(Some("guess"), Capabilities::ALL, VersionRange::OURS);
    assert_eq!(
        reason(welcome_for(Some(wrong), &hash)),
        Some(RefuseReason::Auth)
    );
    let none = hello(None, Capabilities::ALL, VersionRange::OURS);
    assert_eq!(
        reason(welcome_for(Some(none), &hash)),
        Some(RefuseReason::Auth)
    );
    let newer = hello(
        Some("s3cret"),
        Capabilities::ALL,
        VersionRange { min: 7, max: 9 },
    );
    assert_eq!(
        reason(welcome_for(Some(newer), &hash)),
        Some(RefuseReason::Version)
    );
    let old = hello(
        Some("s3cret"),
        Capabilities::ALL.without(Capabilities::REVERSE),
        VersionRange::OURS,
    );
    assert_eq!(
        reason(welcome_for(Some(old), &hash)),
        Some(RefuseReason::Other)
    );
    assert_eq!(
        reason(welcome_for(Some(Frame::Fin), &hash)),
        Some(RefuseReason::Other)
    );
    assert_eq!(reason(welcome_for(None, &hash)), Some(RefuseReason::Other));
}

/// A carrier straight to the relay's carrier port.
pub(super) struct Plain(pub(super) SocketAddr);

impl CarrierDialer for Plain {
    fn dial(&self) -> futures::future::BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(self.0)
                .await
                .map_err(|e| CarrierError::retry(format!("{}: {e}", self.0)))?;
            Ok(Dialed {
                io: Box::new(tcp),
                kind: CarrierKind::Direct,
                peer: self.0.to_string(),
                keepalive: None,
            })
        })
    }
}

/// Listener ids to local targets.
pub(super) struct Local(pub(super) HashMap<u32, Target>);

impl Acceptor for Local {
    fn target(&self, listener: u32, _: FlowKind, _: SocketAddr) -> Result<Target, FlowError> {
        self.0
            .get(&listener)
            .cloned()
            .ok_or_else(|| FlowError::new(ErrorKind::Policy, "not exposed"))
    }
}

pub(super) const WAIT: Duration = Duration::from_secs(5);

pub(super) async fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

async fn udp_echo() -> SocketAddr {
    let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = u.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = u.recv_from(&mut buf).await {
            let _ = u.send_to(&buf[..n], from).await;
        }
    });
    addr
}

pub(super) fn config(secret: &str) -> RelayConfig {
    let mut c = RelayConfig::new(parse_sha256(&token_sha256_hex(secret)).unwrap());
    c.listeners = vec!["0=1".parse().unwrap(), "0=2/udp".parse().unwrap()];
    c.name = "ns/kubelan-abc".into();
    c
}

pub(super) fn client(
    relay: SocketAddr,
    secret: &str,
    acceptor: Local,
    stop: &CancellationToken,
) -> Session {
    let cfg = SessionConfig {
        token: Some(Token::new(secret)),
        required: Capabilities::REVERSE,
        ..SessionConfig::default()
    };
    Session::start_accepting(
        vec![Arc::new(Plain(relay))],
        cfg,
        Some(Arc::new(acceptor)),
        stop.clone(),
    )
}

async fn expect_reset(addr: SocketAddr) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let _ = c.write_all(b"hello?").await;
    let r = tokio::time::timeout(WAIT, c.read(&mut [0u8; 16]))
        .await
        .expect("an answer in time");
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

/// The whole path in one process: a pod connects to the relay's listener, the flow
/// goes to the client over its carrier and reaches the local echo server; UDP too.
/// Without a client, connections are reset; once the client leaves, the relay exits
/// after the grace period.
#[tokio::test]
async fn pods_reach_the_local_target_through_the_relay() {
    let (tcp_target, udp_target) = (tcp_echo().await, udp_echo().await);
    let mut cfg = config("s3cret");
    cfg.grace = Duration::from_millis(500);
    let relay = Relay::bind(cfg).await.unwrap();
    let (carrier, listen_tcp) = (relay.carrier_addr(), relay.listener_addr(1).unwrap());
    let listen_udp = relay.listener_addr(2).unwrap();
    let stats = relay.stats();
    let relay_stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(relay_stop.clone()));

    // No client yet: the pod's connection is reset, not left hanging.
    expect_reset(listen_tcp).await;

    let stop = CancellationToken::new();
    let local = Local(HashMap::from([
        (1, Target::Addr(tcp_target)),
        (2, Target::Addr(udp_target)),
    ]));
    let session = client(carrier, "s3cret", local, &stop);
    session.wait_connected(WAIT).await.unwrap();
    match &*session.state().borrow() {
        SessionState::Connected { carriers, .. } => {
            assert_eq!(carriers[0].agent, "ns/kubelan-abc");
        }
        other => panic!("{other:?}"),
    }
    for i in 0..3 {
        let mut pod = TcpStream::connect(listen_tcp).await.unwrap();
        let msg = format!("request {i}");
        pod.write_all(msg.as_bytes()).await.unwrap();
        pod.shutdown().await.unwrap();
        let mut back = String::new();
        tokio::time::timeout(WAIT, pod.read_to_string(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    let pod = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for msg in [&b"one"[..], b"two"] {
        pod.send_to(msg, listen_udp).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(WAIT, pod.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (msg, listen_udp));
    }
    assert_eq!(stats.flows.load(Ordering::Relaxed), 4);
    // A client-side Open is refused: the relay dials nothing in the cluster.
    let e = session
        .connect(Target::Addr("127.0.0.1:1".parse().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Policy, "{e}");

    // The client goes away: the relay resets new connections, then ends the session.
    stop.cancel();
    drop(session);
    let t0 = Instant::now();
    let exit = tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
    assert_eq!(exit, RelayExit::Expired);
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert!(stats.reset.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_the_session_fails() {
    let relay = Relay::bind(config("s3cret")).await.unwrap();
    let carrier = relay.carrier_addr();
    let stats = relay.stats();
    let relay_stop = CancellationToken::new();
    tokio::spawn(relay.run(relay_stop.clone()));
    let stop = CancellationToken::new();
    let session = client(carrier, "guess", Local(HashMap::new()), &stop);
    let e = session.wait_connected(WAIT).await.unwrap_err();
    assert!(
        e.message
            .starts_with("the agent refused the session: the session's secret does not match"),
        "{e}"
    );
    assert_eq!(stats.refused_auth.load(Ordering::Relaxed), 1);
    assert_eq!(stats.carriers.load(Ordering::Relaxed), 0);
    stop.cancel();
    relay_stop.cancel();
}

#[tokio::test]
async fn with_no_client_the_relay_exits_after_the_first_grace() {
    let mut cfg = config("s3cret");
    cfg.first_grace = Duration::from_millis(300);
    let relay = Relay::bind(cfg).await.unwrap();
    let t0 = Instant::now();
    let exit = tokio::time::timeout(WAIT, relay.run(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(exit, RelayExit::Expired);
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

/// Only a live carrier keeps the relay: a connection that never says hello does not.
#[tokio::test]
async fn a_silent_connection_does_not_hold_the_relay() {
    let mut cfg = config("s3cret");
    cfg.first_grace = Duration::from_millis(300);
    let relay = Relay::bind(cfg).await.unwrap();
    let _idle = TcpStream::connect(relay.carrier_addr()).await.unwrap();
    let exit = tokio::time::timeout(WAIT, relay.run(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(exit, RelayExit::Expired);
}

#[tokio::test]
async fn flows_beyond_the_limit_are_reset() {
    let target = tcp_echo().await;
    let mut cfg = config("s3cret");
    cfg.max_flows = 1;
    let relay = Relay::bind(cfg).await.unwrap();
    let (carrier, listen) = (relay.carrier_addr(), relay.listener_addr(1).unwrap());
    let relay_stop = CancellationToken::new();
    tokio::spawn(relay.run(relay_stop.clone()));
    let stop = CancellationToken::new();
    let session = client(
        carrier,
        "s3cret",
        Local(HashMap::from([(1, Target::Addr(target))])),
        &stop,
    );
    session.wait_connected(WAIT).await.unwrap();
    let mut first = TcpStream::connect(listen).await.unwrap();
    first.write_all(b"a").await.unwrap();
    let mut one = [0u8; 1];
    first.read_exact(&mut one).await.unwrap();
    expect_reset(listen).await;
    // The first flow is unaffected.
    first.write_all(b"b").await.unwrap();
    first.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"b");
    stop.cancel();
    relay_stop.cancel();
}
