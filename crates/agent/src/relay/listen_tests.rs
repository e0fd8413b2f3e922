//! Listeners opened on request ([`Frame::Listen`]): the decision, and the whole exchange
//! between a client session and a relay in one process.

use std::collections::HashMap;

use kubelan_proto::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tests::{Local, WAIT, client, config, tcp_echo};
use super::*;

fn tcp(port: u16, listener: u32) -> ListenSpec {
    ListenSpec {
        port,
        listener,
        kind: FlowKind::Tcp,
    }
}

#[test]
fn listen_requests_are_decided_against_the_open_listeners() {
    let open = [tcp(8080, 0), tcp(9000, 1)];
    assert_eq!(
        listen_decision(&open, tcp(8080, 0), 7445),
        ListenDecision::AlreadyOpen
    );
    assert_eq!(
        listen_decision(&open, tcp(8081, 2), 7445),
        ListenDecision::Open
    );
    let udp = ListenSpec {
        kind: FlowKind::Udp,
        ..tcp(8080, 2)
    };
    assert_eq!(listen_decision(&open, udp, 7445), ListenDecision::Open);
    for (want, why) in [
        (tcp(80, 2), "privileged"),
        (tcp(7445, 2), "carrier port"),
        (tcp(8081, 1), "listener 1 is port 9000"),
        (tcp(9000, 2), "port 9000 is listener 1"),
    ] {
        match listen_decision(&open, want, 7445) {
            ListenDecision::Refuse(m) => assert!(m.contains(why), "{m}"),
            other => panic!("{want:?}: {other:?}"),
        }
    }
    let dns = ListenSpec {
        kind: FlowKind::Dns,
        ..tcp(8082, 3)
    };
    assert!(matches!(
        listen_decision(&open, dns, 7445),
        ListenDecision::Refuse(_)
    ));
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A client asks a relay started without listeners for one; pods' connections to it
/// reach the client's target. Asking again is fine; a clash is refused with the reason.
#[tokio::test]
async fn a_listener_opened_on_request_serves_like_one_from_the_command_line() {
    let target = tcp_echo().await;
    let mut cfg = config("s3cret");
    cfg.listeners.clear();
    let relay = Relay::bind(cfg).await.unwrap();
    let carrier = relay.carrier_addr();
    let relay_stop = CancellationToken::new();
    let _relay_guard = relay_stop.clone().drop_guard();
    tokio::spawn(relay.run(relay_stop.clone()));
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let session = client(
        carrier,
        "s3cret",
        Local(HashMap::from([(7, Target::Addr(target))])),
        &stop,
    );
    session.wait_connected(WAIT).await.unwrap();
    assert!(
        session
            .capabilities()
            .unwrap()
            .contains(Capabilities::LISTEN)
    );
    let port = free_port();
    session.listen(7, FlowKind::Tcp, port).await.unwrap();
    let mut pod = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    pod.write_all(b"hello").await.unwrap();
    pod.shutdown().await.unwrap();
    let mut back = String::new();
    tokio::time::timeout(WAIT, pod.read_to_string(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, "hello");
    // Again, as after a reconnect: still open.
    session.listen(7, FlowKind::Tcp, port).await.unwrap();
    let e = session.listen(8, FlowKind::Tcp, port).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Policy);
    assert!(e.message.contains("is listener 7 already"), "{e}");
    let e = session.listen(9, FlowKind::Tcp, 80).await.unwrap_err();
    assert!(e.message.contains("privileged"), "{e}");
    // A port taken by another process: the bind error comes back.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let e = session
        .listen(10, FlowKind::Tcp, busy_port)
        .await
        .unwrap_err();
    assert!(e.message.contains("binding"), "{e}");
}
