//! Round trips, limits and malformed input for every frame type.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::VersionRange;
use crate::types::{ErrorKind, FlowError, MAX_MESSAGE_LEN, Target, Token};

fn samples() -> Vec<Frame> {
    let facts = Facts {
        cluster_domain: "cluster.local".into(),
        dns_server: Some("172.17.16.10:53".parse().unwrap()),
        pod_cidrs: vec!["172.17.32.0/19".parse().unwrap()],
        service_cidrs: vec![
            "172.17.16.0/20".parse().unwrap(),
            "fd00::/108".parse().unwrap(),
        ],
        agent: "kubelan-system/kubelan-agent-abc".into(),
        node: "node1".into(),
    };
    vec![
        Frame::Hello {
            versions: VersionRange { min: 1, max: 1 },
            caps: Capabilities::ALL,
            software: "kubelan 0.1.0".into(),
            token: None,
        },
        Frame::Hello {
            versions: VersionRange { min: 1, max: 1 },
            caps: Capabilities::ALL,
            software: "kubelan 0.2.0".into(),
            token: Some(Token::new("f00dfeed".repeat(8))),
        },
        Frame::Hello {
            versions: VersionRange { min: 1, max: 1 },
            caps: Capabilities::TCP,
            software: String::new(),
            token: Some(Token::new("")),
        },
        Frame::Welcome {
            version: 1,
            caps: Capabilities::TCP,
            software: "kubelan 0.1.0".into(),
            facts: facts.clone(),
        },
        Frame::Refused {
            reason: RefuseReason::Version,
            versions: VersionRange { min: 1, max: 1 },
            message: "no".into(),
        },
        Frame::Ping { nonce: 7 },
        Frame::Pong { nonce: u64::MAX },
        Frame::Facts(facts),
        Frame::GoAway {
            drain_ms: 5000,
            message: "bye".into(),
        },
        Frame::Open {
            kind: FlowKind::Tcp,
            target: Target::Name {
                host: "web.default.svc.cluster.local".into(),
                port: 80,
            },
            optimistic: true,
        },
        Frame::Open {
            kind: FlowKind::Udp,
            target: Target::Addr("[fd00::1]:7".parse().unwrap()),
            optimistic: false,
        },
        Frame::Open {
            kind: FlowKind::Echo,
            target: Target::Addr("172.17.32.4:0".parse().unwrap()),
            optimistic: false,
        },
        Frame::Opened {
            peer: "172.17.32.4:80".parse().unwrap(),
        },
        Frame::Failed(FlowError::new(
            ErrorKind::Policy,
            "169.254.169.254 is link-local",
        )),
        Frame::Data(Bytes::from_static(b"hello")),
        Frame::Data(Bytes::new()),
        Frame::Fin,
        Frame::Reset(FlowError::new(ErrorKind::Reset, "")),
        Frame::Datagram(Bytes::from(vec![1u8; MAX_DATAGRAM])),
        Frame::Incoming {
            listener: 0,
            kind: FlowKind::Tcp,
            peer: "172.17.32.9:41234".parse().unwrap(),
            optimistic: false,
        },
        Frame::Listen {
            listener: 7,
            kind: FlowKind::Tcp,
            port: 8080,
        },
        Frame::Listen {
            listener: u32::MAX,
            kind: FlowKind::Udp,
            port: u16::MAX,
        },
        Frame::Listening { listener: 7 },
        Frame::ListenFailed {
            listener: 7,
            error: FlowError::new(ErrorKind::Other, "port 8080 is in use"),
        },
        Frame::Incoming {
            listener: u32::MAX,
            kind: FlowKind::Udp,
            peer: "[fd00::9]:5353".parse().unwrap(),
            optimistic: true,
        },
    ]
}

fn encoded(f: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    f.encode(&mut buf);
    buf
}

#[test]
fn a_hello_without_a_token_is_the_old_hello_and_a_token_only_appends() {
    let hello = |token: Option<Token>| Frame::Hello {
        versions: VersionRange { min: 1, max: 1 },
        caps: Capabilities(0b1111),
        software: "kubelan 0.1.0".into(),
        token,
    };
    // Byte for byte what clients sent before the token existed.
    let mut old = vec![ty::HELLO, 0, 0, 31];
    old.extend_from_slice(b"KLAN\0\x01\0\x01");
    old.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0f, 0, 13]);
    old.extend_from_slice(b"kubelan 0.1.0");
    assert_eq!(encoded(&hello(None))[..], old[..]);
    assert_eq!(
        Decoder::new()
            .decode(&mut BytesMut::from(&old[..]))
            .unwrap(),
        Some(hello(None)),
        "an older client's hello has no token"
    );
    // With a token, the same body plus the token at its end: an older agent, which
    // ignores trailing bytes (rule 3), reads the same hello.
    let with = encoded(&hello(Some(Token::new("s3cret"))));
    assert_eq!(with[4..4 + 31], old[4..]);
    assert_eq!(&with[4 + 31..], b"\0\x06s3cret");
    assert_eq!(usize::from(with[3]), 31 + 8);
    // A token cut short is an error, not a silently different secret.
    let mut cut = with.clone();
    cut.truncate(cut.len() - 1);
    cut[3] -= 1;
    assert!(Decoder::new().decode(&mut cut).is_err());
}

#[test]
fn a_token_never_shows_in_logs() {
    let f = Frame::Hello {
        versions: VersionRange::OURS,
        caps: Capabilities::ALL,
        software: "kubelan".into(),
        token: Some(Token::new("hunter2")),
    };
    let shown = format!("{f:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("Token(<hidden>)"), "{shown}");
}

#[test]
fn incoming_is_required_and_checked() {
    let incoming = Frame::Incoming {
        listener: 7,
        kind: FlowKind::Tcp,
        peer: "10.0.0.1:80".parse().unwrap(),
        optimistic: true,
    };
    let mut buf = encoded(&incoming);
    assert_eq!(buf[0], 0x17);
    assert!(
        buf[0] < ty::FIRST_OPTIONAL,
        "an older client must not skip it"
    );
    assert_eq!(
        Decoder::new().decode(&mut buf).unwrap(),
        Some(incoming.clone())
    );
    // Unknown flow kind: malformed (the stream is reset), never another kind.
    let mut bad = encoded(&incoming);
    bad[8] = 9;
    assert!(matches!(
        Decoder::new().decode(&mut bad),
        Err(DecodeError::Malformed {
            kind: "Incoming",
            what: "unknown flow kind"
        })
    ));
    // The flags byte is part of the frame from the start.
    let mut short = encoded(&incoming);
    short.truncate(short.len() - 1);
    short[3] -= 1;
    assert!(Decoder::new().decode(&mut short).is_err());
}

#[test]
fn capabilities_by_name() {
    assert_eq!(Capabilities::REVERSE.to_string(), "reverse flows");
    assert_eq!(
        Capabilities::ALL.to_string(),
        "TCP, UDP, DNS, ICMP echo, reverse flows, listeners on request"
    );
    assert_eq!(Capabilities(1 << 40 | 1).to_string(), "TCP, bit 40");
    assert_eq!(Capabilities::default().to_string(), "none");
    assert_eq!(
        Capabilities::ALL.without(Capabilities(0b1111)),
        Capabilities(Capabilities::REVERSE.0 | Capabilities::LISTEN.0)
    );
    assert!(Capabilities::ALL.contains(Capabilities::REVERSE));
}

#[test]
fn every_frame_round_trips_whole_and_byte_by_byte() {
    let mut wire = BytesMut::new();
    for f in samples() {
        f.encode(&mut wire);
    }
    let all = wire.clone();
    let mut dec = Decoder::new();
    let mut got = Vec::new();
    while let Some(f) = dec.decode(&mut wire).unwrap() {
        got.push(f);
    }
    assert_eq!(got, samples());
    assert!(wire.is_empty());

    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in all.iter() {
        buf.put_u8(*b);
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, samples());
}

#[test]
fn lengths_are_bounded_before_buffering() {
    let mut buf = BytesMut::from(&[ty::DATA, 0x01, 0x00, 0x01][..]);
    let err = Decoder::new().decode(&mut buf).unwrap_err();
    assert!(
        matches!(err, DecodeError::TooLong { max: MAX_DATA, .. }),
        "{err}"
    );
    let mut buf = BytesMut::from(&[ty::PING, 0xff, 0xff, 0xff][..]);
    assert!(Decoder::new().decode(&mut buf).is_err());
}

#[test]
fn unknown_types_required_fail_optional_are_skipped() {
    let mut buf = BytesMut::from(&[0x42, 0, 0, 0][..]);
    assert_eq!(
        Decoder::new().decode(&mut buf).unwrap_err(),
        DecodeError::UnknownType(0x42)
    );
    let mut buf = BytesMut::from(&[0x90, 0, 0, 2, 9, 9][..]);
    Frame::Ping { nonce: 1 }.encode(&mut buf);
    assert_eq!(
        Decoder::new().decode(&mut buf).unwrap(),
        Some(Frame::Ping { nonce: 1 })
    );
}

#[test]
fn trailing_fields_from_newer_peers_are_ignored() {
    let mut buf = BytesMut::new();
    Frame::Ping { nonce: 3 }.encode(&mut buf);
    buf.extend_from_slice(&[]);
    // Grow the body by two bytes a newer peer might append.
    buf[3] += 2;
    buf.extend_from_slice(&[0xaa, 0xbb]);
    assert_eq!(
        Decoder::new().decode(&mut buf).unwrap(),
        Some(Frame::Ping { nonce: 3 })
    );
}

#[test]
fn open_from_a_client_without_the_flags_byte_is_not_optimistic() {
    let open = Frame::Open {
        kind: FlowKind::Tcp,
        target: Target::Addr("10.0.0.1:80".parse().unwrap()),
        optimistic: true,
    };
    let mut buf = BytesMut::new();
    open.encode(&mut buf);
    // Drop the flags byte, as a client from before it existed sends the frame.
    buf.truncate(buf.len() - 1);
    buf[3] -= 1;
    assert_eq!(
        Decoder::new().decode(&mut buf).unwrap(),
        Some(Frame::Open {
            kind: FlowKind::Tcp,
            target: Target::Addr("10.0.0.1:80".parse().unwrap()),
            optimistic: false,
        })
    );
}

#[test]
fn unknown_error_codes_decode_as_other() {
    let mut buf = BytesMut::new();
    Frame::Failed(FlowError::new(ErrorKind::Timeout, "x")).encode(&mut buf);
    buf[4] = 200;
    let f = Decoder::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(f, Frame::Failed(FlowError::new(ErrorKind::Other, "x")));
}

#[test]
fn hello_without_magic_is_not_kubelan() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
    // 'G' = 0x47 is not a frame type.
    assert!(Decoder::new().decode(&mut buf).is_err());
    let mut buf = BytesMut::from(&[ty::HELLO, 0, 0, 4, b'X', b'L', b'A', b'N'][..]);
    assert_eq!(
        Decoder::new().decode(&mut buf).unwrap_err(),
        DecodeError::NotKubelan
    );
}

#[test]
fn over_long_fields_are_cut_on_encode() {
    let long = "é".repeat(2000);
    let mut buf = BytesMut::new();
    Frame::Failed(FlowError::new(ErrorKind::Other, long)).encode(&mut buf);
    let Some(Frame::Failed(e)) = Decoder::new().decode(&mut buf).unwrap() else {
        panic!()
    };
    assert!(e.message.len() <= MAX_MESSAGE_LEN);
    let mut buf = BytesMut::new();
    Frame::Open {
        kind: FlowKind::Tcp,
        target: Target::Name {
            host: "a".repeat(400),
            port: 1,
        },
        optimistic: false,
    }
    .encode(&mut buf);
    assert!(Decoder::new().decode(&mut buf).unwrap().is_some());
}

#[test]
fn data_header_matches_encode() {
    let mut a = BytesMut::new();
    Frame::Data(Bytes::from_static(b"abc")).encode(&mut a);
    let mut h = [0u8; 4];
    encode_data_header(&mut h, 3);
    assert_eq!(&a[..4], &h);
    assert_eq!(data_header(&a), Some(3));
    assert_eq!(data_header(&h), Some(3));
}

#[test]
fn data_header_reads_only_whole_valid_data_headers() {
    let mut h = [0u8; 4];
    encode_data_header(&mut h, MAX_DATA);
    assert_eq!(data_header(&h), Some(MAX_DATA));
    assert_eq!(data_header(&h[..3]), None, "a cut header");
    assert_eq!(data_header(&[]), None);
    let mut fin = BytesMut::new();
    Frame::Fin.encode(&mut fin);
    assert_eq!(data_header(&fin), None, "another frame");
    let too_long = [h[0], 0x01, 0x00, 0x01]; // MAX_DATA + 1
    assert_eq!(data_header(&too_long), None, "the decoder rejects it");
    assert!(
        Decoder::new()
            .decode(&mut BytesMut::from(&too_long[..]))
            .is_err()
    );
}

#[test]
fn cidr_parsing_and_containment() {
    let c: Cidr = "172.17.32.7/19".parse().unwrap();
    assert_eq!(c.to_string(), "172.17.32.0/19");
    assert!(c.contains("172.17.63.255".parse().unwrap()));
    assert!(!c.contains("172.17.64.0".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()));
    assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    assert!("10.0.0.0".parse::<Cidr>().is_err());
}
