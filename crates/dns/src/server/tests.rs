use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};

use super::*;

const DOMAIN: &str = "cluster.local";

fn cache() -> ClusterNames {
    let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).unwrap() };
    let endpoints: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"addresses": [format!("10.244.3.{i}")], "hostname": format!("big-{i}")}))
        .collect();
    let slices: Vec<EndpointSlice> = [
        json!({"metadata": {"name": "db-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}}],
            "ports": [{"name": "pg", "port": 5432}]}),
        json!({"metadata": {"name": "big-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "big"}},
            "addressType": "IPv4", "endpoints": endpoints}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let mut names = ClusterNames::new(DOMAIN);
    names.replace_all(
        &[
            svc(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {"clusterIP": "None"}})),
            svc(json!({"metadata": {"name": "big", "namespace": "default"}, "spec": {"clusterIP": "None"}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}})),
        ],
        &slices,
        &[],
    );
    names
}

fn query_msg(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    query_msg(name, qtype).to_vec().unwrap()
}

fn reply(answer: Answer) -> Message {
    match answer {
        Answer::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ask(name: &str, qtype: RecordType) -> Message {
    reply(answer(&query(name, qtype), &cache(), DOMAIN))
}

#[test]
fn a_record_reply_echoes_the_query() {
    let names = cache();
    let q = query("Web.Default.svc.cluster.local.", RecordType::A);
    let r = reply(answer(&q, &names, DOMAIN));
    assert_eq!(r.metadata.id, 0xbeef);
    assert_eq!(r.metadata.message_type, MessageType::Response);
    assert!(r.metadata.authoritative);
    assert!(r.metadata.recursion_desired);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.queries.len(), 1);
    // The question comes back byte for byte (0x20 case randomisation survives).
    assert_eq!(
        r.queries[0].name.to_ascii(),
        "Web.Default.svc.cluster.local."
    );
    assert_eq!(r.answers.len(), 1);
    assert_eq!(
        r.answers[0].name.to_ascii(),
        "Web.Default.svc.cluster.local."
    );
    assert_eq!(r.answers[0].ttl, TTL);
    assert_eq!(
        r.answers[0].data,
        RData::A(A("10.96.0.10".parse().unwrap()))
    );
    assert!(r.authorities.is_empty());
    assert!(r.edns.is_none());
}

#[test]
fn nxdomain_and_nodata_carry_the_soa() {
    let r = ask("nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.metadata.authoritative);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.authorities[0].name.to_ascii(), "cluster.local.");
    let RData::SOA(soa) = &r.authorities[0].data else {
        panic!("{:?}", r.authorities[0]);
    };
    assert_eq!(soa.minimum, TTL);

    let r = ask("db.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert!(matches!(r.authorities[0].data, RData::SOA(_)));
}

#[test]
fn srv_reply_has_target_addresses() {
    let r = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    let RData::SRV(srv) = &r.answers[0].data else {
        panic!("{:?}", r.answers);
    };
    assert_eq!(srv.port, 80);
    assert_eq!(srv.target.to_ascii(), "web.default.svc.cluster.local.");
    assert_eq!(r.additionals.len(), 1);
    assert_eq!(
        r.additionals[0].name.to_ascii(),
        "web.default.svc.cluster.local."
    );

    let r = ask("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
    let RData::SRV(srv) = &r.answers[0].data else {
        panic!("{:?}", r.answers);
    };
    assert_eq!(srv.target.to_ascii(), "db-0.db.default.svc.cluster.local.");
    assert_eq!(
        r.additionals[0].data,
        RData::A(A("10.244.1.5".parse().unwrap()))
    );
}

#[test]
fn ptr_reply() {
    let r = ask("10.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert!(r.metadata.authoritative);
    let RData::PTR(ptr) = &r.answers[0].data else {
        panic!("{:?}", r.answers);
    };
    assert_eq!(ptr.0.to_ascii(), "web.default.svc.cluster.local.");
    // NODATA for a reverse name carries the reverse zone's SOA.
    let r = ask("10.0.96.10.in-addr.arpa.", RecordType::A);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].name.to_ascii(), "in-addr.arpa.");
}

#[test]
fn cname_to_the_outside_is_forwarded_unless_asked_for() {
    let names = cache();
    assert_eq!(
        answer(
            &query("ext.default.svc.cluster.local.", RecordType::A),
            &names,
            DOMAIN
        ),
        Answer::Forward
    );
    let r = ask("ext.default.svc.cluster.local.", RecordType::CNAME);
    let RData::CNAME(cname) = &r.answers[0].data else {
        panic!("{:?}", r.answers);
    };
    assert_eq!(cname.0.to_ascii(), "example.com.");
}

#[test]
fn what_we_do_not_own_is_forwarded() {
    let names = cache();
    for (name, qtype) in [
        ("example.com.", RecordType::A),
        ("cluster.local.", RecordType::SOA),
        ("cluster.local.", RecordType::NS),
        ("1.1.168.192.in-addr.arpa.", RecordType::PTR),
        ("web.default.svc.cluster.local.", RecordType::AXFR),
        (".", RecordType::NS),
    ] {
        assert_eq!(
            answer(&query(name, qtype), &names, DOMAIN),
            Answer::Forward,
            "{name}"
        );
    }
    // Another class.
    let mut m = query_msg("web.default.svc.cluster.local.", RecordType::A);
    m.queries[0].query_class = DNSClass::CH;
    assert_eq!(
        answer(&m.to_vec().unwrap(), &names, DOMAIN),
        Answer::Forward
    );
    // Labels with bytes cluster names never have.
    let odd = Name::from_labels([&b"we b"[..], b"default", b"svc", b"cluster", b"local"]).unwrap();
    let mut m = query_msg("x.", RecordType::A);
    m.queries[0].name = odd;
    assert_eq!(
        answer(&m.to_vec().unwrap(), &names, DOMAIN),
        Answer::Forward
    );
    // The same cache answers for another domain when asked to.
    assert!(matches!(
        answer(
            &query("web.default.svc.corp.example.", RecordType::A),
            &names,
            "corp.example"
        ),
        Answer::Reply(_)
    ));
    assert_eq!(
        answer(
            &query("web.default.svc.cluster.local.", RecordType::A),
            &names,
            "corp.example"
        ),
        Answer::Forward
    );
}

#[test]
fn malformed_queries() {
    let names = cache();
    assert_eq!(answer(&[], &names, DOMAIN), Answer::Drop);
    assert_eq!(answer(&[1, 2, 3], &names, DOMAIN), Answer::Drop);
    // A response is never answered.
    let mut response = query("web.default.svc.cluster.local.", RecordType::A);
    response[2] |= 0x80;
    assert_eq!(answer(&response, &names, DOMAIN), Answer::Drop);
    // A header announcing a question that is not there.
    let header = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let r = reply(answer(&header, &names, DOMAIN));
    assert_eq!(r.metadata.id, 0x1234);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert!(r.metadata.recursion_desired);
    // No question, two questions.
    let r = reply(answer(
        &[0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &names,
        DOMAIN,
    ));
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    let mut two = query_msg("web.default.svc.cluster.local.", RecordType::A);
    two.add_query(two.queries[0].clone());
    let r = reply(answer(&two.to_vec().unwrap(), &names, DOMAIN));
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Other opcodes (here STATUS) are not implemented.
    let mut status = query("web.default.svc.cluster.local.", RecordType::A);
    status[2] = (status[2] & 0x87) | (2 << 3);
    let r = reply(answer(&status, &names, DOMAIN));
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(r.metadata.op_code, OpCode::Status);
    // Trailing garbage after a complete message is ignored; a cut one is FORMERR.
    let mut long = query("web.default.svc.cluster.local.", RecordType::A);
    let cut = long.len() - 3;
    long.extend_from_slice(b"junk");
    assert!(matches!(answer(&long, &names, DOMAIN), Answer::Reply(_)));
    let r = reply(answer(&long[..cut], &names, DOMAIN));
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn edns_is_echoed_and_versions_checked() {
    let names = cache();
    let mut m = query_msg("web.default.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    m.set_edns(edns.clone());
    let r = reply(answer(&m.to_vec().unwrap(), &names, DOMAIN));
    assert_eq!(r.edns.as_ref().unwrap().max_payload(), EDNS_PAYLOAD);
    assert_eq!(r.answers.len(), 1);

    edns.set_version(1);
    m.set_edns(edns);
    let r = reply(answer(&m.to_vec().unwrap(), &names, DOMAIN));
    // BADVERS (16) shares its number with BADSIG, which is how it decodes.
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.answers.is_empty());
}

#[test]
fn big_answers_are_truncated_over_udp_only() {
    let names = cache();
    let q = query("big.default.svc.cluster.local.", RecordType::A);
    let Answer::Reply(bytes) = answer(&q, &names, DOMAIN) else {
        panic!();
    };
    assert!(bytes.len() <= PLAIN_UDP_LIMIT);
    let r = Message::from_vec(&bytes).unwrap();
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    assert_eq!(r.queries.len(), 1);

    let r = reply(answer_tcp(&q, &names, DOMAIN));
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 100);

    // With EDNS the client gets what fits its buffer, up to 1232 bytes.
    let mut m = query_msg("big.default.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    m.set_edns(edns);
    let Answer::Reply(bytes) = answer(&m.to_vec().unwrap(), &names, DOMAIN) else {
        panic!();
    };
    assert!(bytes.len() <= usize::from(EDNS_PAYLOAD));
}

async fn udp_upstream(reply_with: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            for datagram in reply_with(&buf[..n]) {
                let _ = socket.send_to(&datagram, from).await;
            }
        }
    });
    addr
}

/// A reply to `query` with `rcode` in the low header bits and `extra` flags.
fn fake_reply(query: &[u8], extra_flags: u8) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] |= 0x80 | extra_flags;
    r
}

#[tokio::test]
async fn forward_udp_waits_for_the_matching_id() {
    let server = udp_upstream(|q| {
        let mut wrong = fake_reply(q, 0);
        wrong[0] ^= 0xff;
        vec![wrong, q.to_vec(), fake_reply(q, 0)]
    })
    .await;
    let q = query("example.com.", RecordType::A);
    let r = forward_udp(&q, server, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(r, fake_reply(&q, 0));
}

#[tokio::test]
async fn forward_udp_times_out() {
    let server = udp_upstream(|_| Vec::new()).await;
    let q = query("example.com.", RecordType::A);
    let started = std::time::Instant::now();
    let e = forward_udp(&q, server, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(2));
    let e = forward_udp(&[1, 2], server, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

// Paused time: the runtime moves its clock to the next timer whenever it has nothing else
// to do, so the counts below do not depend on how busy the machine is.
#[tokio::test(start_paused = true)]
async fn forward_udp_sends_again_when_a_datagram_is_lost() {
    // The server loses every first copy of a query and answers the second.
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let server = udp_upstream(move |q| {
        if count.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            Vec::new()
        } else {
            vec![fake_reply(q, 0)]
        }
    })
    .await;
    let q = query("example.com.", RecordType::A);
    let started = tokio::time::Instant::now();
    let r = forward_udp(&q, server, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(r, fake_reply(&q, 0));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= RESEND_AFTER);

    // Bounded by the deadline: within 200 ms the query goes out once, and then no more.
    seen.store(0, Ordering::SeqCst);
    let silent = udp_upstream({
        let seen = seen.clone();
        move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            Vec::new()
        }
    })
    .await;
    let e = forward_udp(&q, silent, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    tokio::time::sleep(RESEND_AFTER * 2).await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // Over two seconds: sent at 0, 0.7 and 1.4 s.
    let e = forward_udp(&q, silent, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn forward_udp_retries_truncated_replies_over_tcp() {
    // UDP and TCP on the same port, as DNS servers are.
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&fake_reply(&buf[..n], 0x02), from).await;
        }
    });
    tokio::spawn(async move {
        let (mut s, _) = tcp.accept().await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut q).await.unwrap();
        let mut r = fake_reply(&q, 0);
        r.extend_from_slice(b"full");
        let mut framed = u16::try_from(r.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&r);
        s.write_all(&framed).await.unwrap();
    });
    let q = query("example.com.", RecordType::A);
    let r = forward_udp(&q, addr, Duration::from_secs(2)).await.unwrap();
    assert!(r.ends_with(b"full"));
}
