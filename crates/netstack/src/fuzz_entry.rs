//! Entry points shared by the cargo-fuzz target (`fuzz/fuzz_targets/netstack_packets.rs`)
//! and the corpus replay test (`crates/kubelan/tests/fuzz_corpus.rs`). Each must return
//! normally for any input; a panic is a bug.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use crate::frag::{Reassembler, Reassembly};
use crate::portmap::{self, PortMap};
use crate::wire::{self, DropReason, Inbound, Ipv4Packet};

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Packets in reassembly at once in [`packets`]: small, so that eviction happens.
const SLOTS: usize = 4;
/// Reassembly timeout in [`packets`], in (simulated) milliseconds.
const TIMEOUT_MS: u64 = 1000;

/// Packets read from the TUN device, i.e. from any local application or LAN host.
///
/// The input is used three ways:
/// 1. as one packet, classified as the stack does; whatever is accepted must lie inside the
///    input, and UDP datagrams and echo requests are rebuilt with the stack's builders (the
///    datagram, and the echo reply with swapped addresses) and must parse back to the same
///    thing with valid checksums;
/// 2. the same packet with its IPv4 header, ICMP and UDP checksums recomputed here, so the
///    fuzzer reaches every header field without having to find checksums; such a packet is
///    never dropped for a bad checksum;
/// 3. as a sequence of records fed to a reassembler with 4 slots: each record is a
///    control byte, a big-endian `u16` length and that many bytes (cut at the end of the
///    input). With bit 0 of the control byte set the bytes are a raw packet; otherwise they
///    are a 16-bit fragment-offset field and the payload of a fragment built here (bit 1:
///    more fragments, bits 2–3: identification, bit 4: UDP or ICMP, bit 5: source). Bits
///    6–7 advance the clock by 400 ms steps. Every reassembled packet must be a valid,
///    unfragmented IPv4 packet made exactly of fragments pushed for it.
pub fn packets(data: &[u8]) {
    check_packet(data);
    if let Some(fixed) = with_fixed_checksums(data) {
        let inbound = check_packet(&fixed);
        assert_ne!(
            inbound,
            Some(DropReason::BadChecksum),
            "recomputed checksums rejected"
        );
    }
    builders(data);
    reassemble(data);
}

/// Classifies one packet and checks what came out; returns the drop reason, if dropped.
fn check_packet(data: &[u8]) -> Option<DropReason> {
    let inside = |s: &[u8]| within(data, s);
    match Ipv4Packet::new_checked(data) {
        Ok(ip) => {
            let hl = ip.header().len();
            assert!((20..=60).contains(&hl), "header length {hl}");
            assert!(inside(ip.as_bytes()), "IPv4 packet outside the input");
            assert_eq!(ip.as_bytes(), &data[..ip.as_bytes().len()], "not a prefix");
            assert_eq!(ip.header().len() + ip.payload().len(), ip.as_bytes().len());
            assert_eq!(
                wire::checksum(ip.header()),
                0,
                "accepted a bad header checksum"
            );
        }
        Err(reason) => assert_eq!(
            wire::classify(data),
            Inbound::Drop(reason),
            "classify disagrees with the IPv4 parser"
        ),
    }
    match wire::classify(data) {
        Inbound::Tcp {
            packet,
            src,
            dst,
            syn,
        } => {
            assert!(inside(packet), "TCP packet outside the input");
            assert!(packet.len() >= 40, "TCP packet of {} bytes", packet.len());
            assert!(src.port() != 0 && dst.port() != 0);
            let ip = Ipv4Packet::new_checked(packet).expect("a TCP packet is valid IPv4");
            assert_eq!(ip.protocol(), PROTO_TCP);
            assert!(!ip.is_fragment());
            port_map(packet, src, dst, syn);
            None
        }
        Inbound::Udp { src, dst, payload } => {
            assert!(inside(payload), "UDP payload outside the input");
            assert!(payload.len() + 28 <= data.len(), "UDP payload too long");
            let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
                panic!("IPv4 packet with IPv6 addresses");
            };
            // The stack rebuilds datagrams with the same addresses and payload.
            let rebuilt =
                wire::udp_datagram(src, dst, payload, 0x1234).expect("a UDP payload fits");
            let Inbound::Udp {
                src: s,
                dst: d,
                payload: p,
            } = wire::classify(&rebuilt)
            else {
                panic!("rebuilt datagram: {:?}", wire::classify(&rebuilt));
            };
            assert_eq!((s, d, p), (src.into(), dst.into(), payload));
            // When the original had a checksum, the UDP part is byte-identical (a valid
            // checksum is unique once zero is sent as all ones).
            let ip = Ipv4Packet::new_checked(data).expect("valid");
            let udp = &ip.payload()[..8 + payload.len()];
            if udp[6..8] != [0, 0] {
                assert_eq!(udp, &rebuilt[20..], "rebuilt UDP header differs");
            }
            None
        }
        Inbound::Echo(e) => {
            assert!(inside(e.payload), "echo payload outside the input");
            assert!(e.payload.len() + 28 <= data.len(), "echo payload too long");
            let reply = wire::echo_reply(e.src, e.dst, e.ident, e.seq, e.payload, 0xbeef);
            assert_eq!(reply.len(), 28 + e.payload.len());
            let ip = Ipv4Packet::new_checked(&reply).expect("an echo reply is valid IPv4");
            assert_eq!(ip.as_bytes().len(), reply.len());
            assert_eq!(
                (ip.src(), ip.dst()),
                (e.dst, e.src),
                "addresses not swapped"
            );
            assert_eq!((ip.protocol(), ip.is_fragment()), (PROTO_ICMP, false));
            let icmp = ip.payload();
            assert_eq!(wire::checksum(icmp), 0, "ICMP checksum of the reply");
            assert_eq!(&icmp[..2], &[0, 0], "not an echo reply");
            assert_eq!(&icmp[4..6], &e.ident.to_be_bytes());
            assert_eq!(&icmp[6..8], &e.seq.to_be_bytes());
            assert_eq!(&icmp[8..], e.payload);
            // Never answered again: the stack does not reply to replies.
            assert_eq!(
                wire::classify(&reply),
                Inbound::Drop(DropReason::IcmpType(0, 0))
            );
            None
        }
        Inbound::Fragment(ip) => {
            assert!(inside(ip.as_bytes()), "fragment outside the input");
            assert!(ip.is_fragment());
            None
        }
        Inbound::Drop(reason) => Some(reason),
    }
}

/// A TCP packet from the application through the port map, as the stack's reader and
/// writer use it: its segment is readable and agrees with the packet, and a connection it
/// opens (or whatever it does to one) can be answered by smoltcp, aborted, and then
/// silenced, with resets at the sequence numbers each side reached.
fn port_map(packet: &[u8], src: SocketAddr, dst: SocketAddr, syn: Option<u32>) {
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const RST: u8 = 0x04;
    let seg = portmap::segment(packet).expect("the port map reads every TCP packet");
    let ip = Ipv4Packet::new_checked(packet).expect("valid");
    let tcp = ip.payload();
    let header = usize::from(tcp[12] >> 4) * 4;
    assert_eq!(seg.len as usize, tcp.len() - header, "payload length");
    assert_eq!(seg.flags, tcp[13]);
    let mut map = PortMap::new(4);
    // The packet opens a connection (as a SYN, or as the retransmission of one).
    let isn = syn.unwrap_or(seg.seq.wrapping_sub(1));
    let opening = portmap::Segment {
        flags: 0x02,
        seq: isn,
        ack: 0,
        len: 0,
    };
    let Some(port) = map.inbound(src, dst, Some(isn), &opening, 0) else {
        panic!("an empty map maps a SYN");
    };
    let seen = SocketAddr::new(src.ip(), port);
    assert_eq!(map.original(seen, dst), src);
    let answer = portmap::Segment {
        flags: SYN_ACK,
        seq: seg.ack,
        ack: isn.wrapping_add(1),
        len: 0,
    };
    assert!(matches!(
        map.stack_segment(seen, dst, &answer, 1),
        portmap::FromStack::Pass { .. }
    ));
    map.inbound(src, dst, syn, &seg, 2);
    if syn.is_none() && seg.flags & RST != 0 {
        assert!(map.reset_by_app(seen, dst), "an RST from the application");
    }
    let plan = map
        .abort(seen, dst, 3)
        .expect("a synchronised connection aborts");
    assert_eq!(plan.app, src);
    assert_eq!(
        plan.app_seq,
        answer.end(),
        "the RST follows smoltcp's SYN-ACK"
    );
    assert!(plan.stack_seqs[0].is_some());
    for flags in [ACK, ACK | 0x01, SYN_ACK] {
        let late = portmap::Segment { flags, ..answer };
        assert_eq!(
            map.stack_segment(seen, dst, &late, 4),
            portmap::FromStack::Drop,
            "smoltcp's segments after the abort"
        );
    }
    assert!(map.abort(seen, dst, 5).is_none(), "aborted once");
    for seq in plan.stack_seqs.into_iter().flatten() {
        let rst = wire::tcp_reset(seen, dst, seq).expect("IPv4");
        assert_eq!(
            portmap::segment(&rst).map(|s| (s.flags, s.seq)),
            Some((RST, seq))
        );
    }
}

/// Whether `part` lies inside `whole` (the parsers hand out sub-slices of their input).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr_range(), part.as_ptr_range());
    part.is_empty() || (w.start <= p.start && p.end <= w.end)
}

/// The stack's builders with addresses, ports and payload taken from the input.
fn builders(data: &[u8]) {
    if data.len() < 12 {
        return;
    }
    let addr = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let src = SocketAddrV4::new(addr(&data[0..4]), port(&data[8..10]));
    let dst = SocketAddrV4::new(addr(&data[4..8]), port(&data[10..12]));
    let payload = &data[12..];
    let datagram = wire::udp_datagram(src, dst, payload, 7).expect("the input fits");
    assert_eq!(datagram.len(), 28 + payload.len());
    let unicast = |a: &Ipv4Addr| !(a.is_broadcast() || a.is_multicast() || a.is_unspecified());
    let expected = if !unicast(src.ip()) || !unicast(dst.ip()) {
        Inbound::Drop(DropReason::NotUnicast)
    } else if src.port() == 0 || dst.port() == 0 {
        Inbound::Drop(DropReason::BadHeader)
    } else {
        Inbound::Udp {
            src: src.into(),
            dst: dst.into(),
            payload,
        }
    };
    assert_eq!(wire::classify(&datagram), expected, "built datagram");
}

/// A copy of `data` with the IPv4 header checksum and, for unfragmented packets, the ICMP
/// or UDP checksum recomputed (a zero UDP checksum, "none", is kept); `None` when `data`
/// has no complete IPv4 header.
fn with_fixed_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let first = *data.first()?;
    let hl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || hl < 20 || data.len() < hl {
        return None;
    }
    let mut p = data.to_vec();
    p[10..12].fill(0);
    let sum = ones_complement(&[&p[..hl]]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let fragment = p[6] & 0x20 != 0 || u16::from_be_bytes([p[6], p[7]]) & 0x1fff != 0;
    if total < hl + 8 || total > p.len() || fragment {
        return Some(p);
    }
    let l4 = hl..total;
    match p[9] {
        PROTO_ICMP => {
            p[hl + 2..hl + 4].fill(0);
            let sum = ones_complement(&[&p[l4.clone()]]);
            p[hl + 2..hl + 4].copy_from_slice(&sum.to_be_bytes());
        }
        PROTO_UDP => {
            let udp_len = usize::from(u16::from_be_bytes([p[hl + 4], p[hl + 5]]));
            if (8..=l4.len()).contains(&udp_len) && p[hl + 6..hl + 8] != [0, 0] {
                p[hl + 6..hl + 8].fill(0);
                let len = (udp_len as u16).to_be_bytes();
                let pseudo = [0, PROTO_UDP, len[0], len[1]];
                let sum = ones_complement(&[&p[12..20], &pseudo, &p[hl..hl + udp_len]]);
                let sum = if sum == 0 { 0xffff } else { sum };
                p[hl + 6..hl + 8].copy_from_slice(&sum.to_be_bytes());
            }
        }
        _ => {}
    }
    Some(p)
}

/// RFC 1071 over several parts, each of even length except possibly the last; written
/// independently of `wire::checksum` so that the two check each other.
fn ones_complement(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    !(sum as u16)
}

/// Which packet a fragment belongs to.
type Key = (Ipv4Addr, Ipv4Addr, u8, u16);

/// A fragment that was pushed into the reassembler.
struct Pushed {
    key: Key,
    offset: usize,
    more: bool,
    header: Vec<u8>,
    payload: Vec<u8>,
}

fn reassemble(data: &[u8]) {
    let mut r = Reassembler::new(SLOTS, TIMEOUT_MS);
    let mut log: Vec<Pushed> = Vec::new();
    let mut now = 0u64;
    let mut rest = data;
    while let [ctrl, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        now += u64::from(ctrl >> 6) * 400;
        let before = r.pending_count();
        let expired = r.expire(now);
        assert!(expired <= before && r.pending_count() == before - expired);

        let built;
        let packet = if ctrl & 1 == 1 {
            body
        } else {
            built = build_fragment(*ctrl, body);
            &built[..]
        };
        let Inbound::Fragment(ip) = wire::classify(packet) else {
            if ctrl & 1 == 0 {
                // A fragment built here is always classified as one (unless it is none).
                let ip = Ipv4Packet::new_checked(packet).expect("a built fragment is valid");
                assert!(!ip.is_fragment(), "{:?}", wire::classify(packet));
            }
            continue;
        };
        let pushed = Pushed {
            key: (ip.src(), ip.dst(), ip.protocol(), ip.ident()),
            offset: ip.fragment_offset(),
            more: ip.more_fragments(),
            header: ip.header().to_vec(),
            payload: ip.payload().to_vec(),
        };
        let verdict = r.push(ip, now);
        assert!(
            r.pending_count() <= SLOTS,
            "reassembly table over its bound"
        );
        if let Reassembly::Complete(whole) = &verdict {
            check_reassembled(whole, &pushed, &log);
        }
        log.push(pushed);
    }
}

/// A fragment from a record: `body` is the 16-bit offset field and the payload.
fn build_fragment(ctrl: u8, body: &[u8]) -> Vec<u8> {
    let (field, payload) = match body {
        [a, b, payload @ ..] => (u16::from_be_bytes([*a, *b]), payload),
        _ => (0, body),
    };
    let payload = &payload[..payload.len().min(usize::from(u16::MAX) - 20)];
    let flags = (field & 0x1fff) | if ctrl & 2 != 0 { 0x2000 } else { 0 };
    let proto = if ctrl & 0x10 != 0 {
        PROTO_ICMP
    } else {
        PROTO_UDP
    };
    let src = Ipv4Addr::new(10, 244, 1, 5 + ((ctrl >> 5) & 1));
    let dst = Ipv4Addr::new(10, 96, 0, 10);
    let mut p = Vec::with_capacity(20 + payload.len());
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&u16::from((ctrl >> 2) & 3).to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = ones_complement(&[&p[..20]]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A reassembled packet is a valid unfragmented IPv4 packet for the key of the fragment
/// that completed it, whose header is that of a fragment at offset 0 (length, flags and
/// checksum aside) and whose payload is made, without gaps, of pushed fragments' payloads
/// at their offsets, ending with a last fragment.
fn check_reassembled(whole: &[u8], last_pushed: &Pushed, log: &[Pushed]) {
    let ip = Ipv4Packet::new_checked(whole).expect("a reassembled packet is valid IPv4");
    assert_eq!(ip.as_bytes().len(), whole.len(), "trailing bytes");
    assert!(!ip.is_fragment(), "reassembled packet is still a fragment");
    let key = (ip.src(), ip.dst(), ip.protocol(), ip.ident());
    assert_eq!(key, last_pushed.key, "completed another packet");
    assert!(
        !matches!(wire::classify(whole), Inbound::Fragment(_)),
        "classified as a fragment again"
    );
    let ours = || {
        log.iter()
            .chain(std::iter::once(last_pushed))
            .filter(|f| f.key == key)
    };
    let payload = ip.payload();
    let at = |f: &Pushed| -> Option<Range<usize>> {
        let range = f.offset..f.offset + f.payload.len();
        (payload.get(range.clone()) == Some(&f.payload[..])).then_some(range)
    };
    assert!(
        at(last_pushed).is_some(),
        "the completing fragment is not in place"
    );
    assert!(
        ours().any(|f| !f.more && at(f).is_some_and(|r| r.end == payload.len())),
        "no last fragment ends the payload"
    );
    let header = ip.header();
    let same_header = |h: &[u8]| {
        h.len() == header.len()
            && h.iter()
                .zip(header)
                .enumerate()
                .all(|(i, (a, b))| matches!(i, 2 | 3 | 6 | 7 | 10 | 11) || a == b)
    };
    assert!(
        ours().any(|f| f.offset == 0 && same_header(&f.header) && at(f).is_some()),
        "the header is not that of the first fragment"
    );
    // Every byte comes from a fragment in place: positions reachable from 0 by pieces.
    let mut reachable = vec![false; payload.len() + 1];
    reachable[0] = true;
    for pos in 0..payload.len() {
        if !reachable[pos] {
            continue;
        }
        for f in ours().filter(|f| f.offset == pos && !f.payload.is_empty()) {
            if let Some(r) = at(f) {
                reachable[r.end] = true;
            }
        }
    }
    assert!(
        reachable[payload.len()],
        "the payload is not made of fragments"
    );
}
