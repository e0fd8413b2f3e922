//! Sans-IO packet handling: a validated IPv4 view, the classification of every packet read
//! from the TUN device, and the packets the stack writes itself (ICMP echo replies and UDP
//! datagrams). TCP packets are only checked and passed on; smoltcp parses them again.
//!
//! Nothing here panics on any input: every length is checked before it is used, which the
//! tests check with malformed, truncated and random packets.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Length of an IPv4 header without options.
const IPV4_HEADER_LEN: usize = 20;
/// Length of a UDP header.
const UDP_HEADER_LEN: usize = 8;
/// Length of an ICMP echo header (type, code, checksum, identifier, sequence number).
const ICMP_ECHO_HEADER_LEN: usize = 8;
/// Smallest TCP header.
const TCP_MIN_HEADER_LEN: usize = 20;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// TTL of the packets the stack originates (Linux's default).
const TTL: u8 = 64;

/// The largest UDP payload that fits into one IPv4 packet.
pub(crate) const MAX_UDP_PAYLOAD_V4: usize = u16::MAX as usize - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// Why a packet from the TUN device was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Shorter than its headers or than its length fields say.
    Truncated,
    /// A header field has an impossible value.
    BadHeader,
    /// A checksum does not match.
    BadChecksum,
    /// IPv6 is not supported yet.
    Ipv6,
    /// A fragment that cannot be reassembled: overlapping, inconsistent, or too large.
    Fragment,
    /// Source or destination is broadcast, multicast or unspecified.
    NotUnicast,
    /// An IP protocol other than TCP, UDP and ICMP.
    Protocol(u8),
    /// An ICMP message other than an echo request.
    IcmpType(u8, u8),
}

/// A validated view of an IPv4 packet, trimmed to the length its header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4Packet<'a> {
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4Packet<'a> {
    /// Checks version, header length, total length and header checksum. Trailing bytes
    /// beyond the total length (link padding) are cut off.
    pub(crate) fn new_checked(buf: &'a [u8]) -> Result<Self, DropReason> {
        let Some(&first) = buf.first() else {
            return Err(DropReason::Truncated);
        };
        match first >> 4 {
            4 => {}
            6 => return Err(DropReason::Ipv6),
            _ => return Err(DropReason::BadHeader),
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < IPV4_HEADER_LEN {
            return Err(DropReason::BadHeader);
        }
        if buf.len() < IPV4_HEADER_LEN || buf.len() < header_len {
            return Err(DropReason::Truncated);
        }
        let total_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if total_len < header_len {
            return Err(DropReason::BadHeader);
        }
        if buf.len() < total_len {
            return Err(DropReason::Truncated);
        }
        if checksum(&buf[..header_len]) != 0 {
            return Err(DropReason::BadChecksum);
        }
        Ok(Self {
            buf: &buf[..total_len],
            header_len,
        })
    }

    /// The whole packet (header and payload).
    pub(crate) fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The payload after the header and its options.
    pub(crate) fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }

    /// The header, options included.
    pub(crate) fn header(&self) -> &'a [u8] {
        &self.buf[..self.header_len]
    }

    /// The identification field (which fragments belong together).
    pub(crate) fn ident(&self) -> u16 {
        u16::from_be_bytes([self.buf[4], self.buf[5]])
    }

    /// Whether the "more fragments" flag is set.
    pub(crate) fn more_fragments(&self) -> bool {
        self.buf[6] & 0x20 != 0
    }

    /// Where this fragment's payload starts in the original payload, in bytes.
    pub(crate) fn fragment_offset(&self) -> usize {
        usize::from(u16::from_be_bytes([self.buf[6], self.buf[7]]) & 0x1fff) * 8
    }

    pub(crate) fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[12], self.buf[13], self.buf[14], self.buf[15])
    }

    pub(crate) fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[16], self.buf[17], self.buf[18], self.buf[19])
    }

    pub(crate) fn ttl(&self) -> u8 {
        self.buf[8]
    }

    pub(crate) fn protocol(&self) -> u8 {
        self.buf[9]
    }

    /// Whether this is a fragment (more fragments follow, or a non-zero offset).
    pub(crate) fn is_fragment(&self) -> bool {
        self.more_fragments() || self.fragment_offset() != 0
    }
}

/// What the stack does with one packet read from the TUN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound<'a> {
    /// A TCP segment for smoltcp.
    Tcp {
        /// The IP packet, trimmed to its total length.
        packet: &'a [u8],
        /// The sender.
        src: SocketAddr,
        /// The destination.
        dst: SocketAddr,
        /// The initial sequence number when this opens a connection (SYN without ACK).
        syn: Option<u32>,
    },
    /// A UDP datagram.
    Udp {
        /// The sender.
        src: SocketAddr,
        /// The destination.
        dst: SocketAddr,
        /// The datagram's payload.
        payload: &'a [u8],
    },
    /// An ICMP echo request (ping).
    Echo(EchoView<'a>),
    /// A fragment of a larger IPv4 packet, to be reassembled and classified again.
    Fragment(Ipv4Packet<'a>),
    /// Anything the stack does not handle.
    Drop(DropReason),
}

/// A parsed ICMPv4 echo request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EchoView<'a> {
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    pub(crate) ident: u16,
    pub(crate) seq: u16,
    pub(crate) ttl: u8,
    pub(crate) payload: &'a [u8],
}

/// Classifies one packet read from the TUN device.
pub(crate) fn classify(buf: &[u8]) -> Inbound<'_> {
    match classify_v4(buf) {
        Ok(inbound) => inbound,
        Err(reason) => Inbound::Drop(reason),
    }
}

fn classify_v4(buf: &[u8]) -> Result<Inbound<'_>, DropReason> {
    let ip = Ipv4Packet::new_checked(buf)?;
    let (src_ip, dst_ip) = (ip.src(), ip.dst());
    if !is_unicast(src_ip) || !is_unicast(dst_ip) {
        return Err(DropReason::NotUnicast);
    }
    if ip.is_fragment() {
        return Ok(Inbound::Fragment(ip));
    }
    let l4 = ip.payload();
    match ip.protocol() {
        PROTO_TCP => {
            if l4.len() < TCP_MIN_HEADER_LEN {
                return Err(DropReason::Truncated);
            }
            let data_offset = usize::from(l4[12] >> 4) * 4;
            if data_offset < TCP_MIN_HEADER_LEN {
                return Err(DropReason::BadHeader);
            }
            if data_offset > l4.len() {
                return Err(DropReason::Truncated);
            }
            let (src_port, dst_port) = (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            );
            if src_port == 0 || dst_port == 0 {
                return Err(DropReason::BadHeader);
            }
            let flags = l4[13];
            let (syn, ack, rst) = (flags & 0x02 != 0, flags & 0x10 != 0, flags & 0x04 != 0);
            let isn = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            Ok(Inbound::Tcp {
                packet: ip.as_bytes(),
                src: SocketAddr::new(src_ip.into(), src_port),
                dst: SocketAddr::new(dst_ip.into(), dst_port),
                syn: (syn && !ack && !rst).then_some(isn),
            })
        }
        PROTO_UDP => {
            if l4.len() < UDP_HEADER_LEN {
                return Err(DropReason::Truncated);
            }
            let udp_len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if udp_len < UDP_HEADER_LEN {
                return Err(DropReason::BadHeader);
            }
            if udp_len > l4.len() {
                return Err(DropReason::Truncated);
            }
            let datagram = &l4[..udp_len];
            let sum = u16::from_be_bytes([l4[6], l4[7]]);
            // Zero means the sender did not compute a checksum (allowed for IPv4).
            if sum != 0
                && finish(
                    pseudo_header_v4(src_ip, dst_ip, PROTO_UDP, udp_len) + sum_words(datagram),
                ) != 0
            {
                return Err(DropReason::BadChecksum);
            }
            let (src_port, dst_port) = (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            );
            if src_port == 0 || dst_port == 0 {
                return Err(DropReason::BadHeader);
            }
            Ok(Inbound::Udp {
                src: SocketAddr::new(src_ip.into(), src_port),
                dst: SocketAddr::new(dst_ip.into(), dst_port),
                payload: &datagram[UDP_HEADER_LEN..],
            })
        }
        PROTO_ICMP => {
            if l4.len() < ICMP_ECHO_HEADER_LEN {
                return Err(DropReason::Truncated);
            }
            let (kind, code) = (l4[0], l4[1]);
            if kind != ICMP_ECHO_REQUEST || code != 0 {
                return Err(DropReason::IcmpType(kind, code));
            }
            if checksum(l4) != 0 {
                return Err(DropReason::BadChecksum);
            }
            Ok(Inbound::Echo(EchoView {
                src: src_ip,
                dst: dst_ip,
                ident: u16::from_be_bytes([l4[4], l4[5]]),
                seq: u16::from_be_bytes([l4[6], l4[7]]),
                ttl: ip.ttl(),
                payload: &l4[ICMP_ECHO_HEADER_LEN..],
            }))
        }
        other => Err(DropReason::Protocol(other)),
    }
}

/// Whether an address can be one end of a flow.
fn is_unicast(addr: Ipv4Addr) -> bool {
    !(addr.is_broadcast() || addr.is_multicast() || addr.is_unspecified())
}

/// Builds the echo reply to a request from `request_src` to `request_dst`: the addresses
/// swapped, type 0, the request's identifier, sequence number and payload, both checksums set.
pub(crate) fn echo_reply(
    request_src: Ipv4Addr,
    request_dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    payload: &[u8],
    ip_ident: u16,
) -> Vec<u8> {
    // The request arrived in one packet whose header was at least as long as ours, so the
    // reply always fits; clamp anyway so that no caller can make the length field wrap.
    let payload = &payload[..payload
        .len()
        .min(u16::MAX as usize - IPV4_HEADER_LEN - ICMP_ECHO_HEADER_LEN)];
    let mut packet = ipv4_header(
        request_dst,
        request_src,
        PROTO_ICMP,
        ICMP_ECHO_HEADER_LEN + payload.len(),
        ip_ident,
    );
    let icmp_start = packet.len();
    packet.extend_from_slice(&[ICMP_ECHO_REPLY, 0, 0, 0]);
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    let sum = checksum(&packet[icmp_start..]);
    packet[icmp_start + 2..icmp_start + 4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// Builds an IPv4 UDP datagram; `Err` carries the largest payload that fits.
pub(crate) fn udp_datagram(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    ip_ident: u16,
) -> Result<Vec<u8>, usize> {
    if payload.len() > MAX_UDP_PAYLOAD_V4 {
        return Err(MAX_UDP_PAYLOAD_V4);
    }
    let udp_len = UDP_HEADER_LEN + payload.len();
    let mut packet = ipv4_header(*src.ip(), *dst.ip(), PROTO_UDP, udp_len, ip_ident);
    let udp_start = packet.len();
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    // Fits: checked against MAX_UDP_PAYLOAD_V4 above.
    packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    let sum = finish(
        pseudo_header_v4(*src.ip(), *dst.ip(), PROTO_UDP, udp_len)
            + sum_words(&packet[udp_start..]),
    );
    // A computed zero is sent as all ones; zero on the wire means "no checksum".
    let sum = if sum == 0 { 0xffff } else { sum };
    packet[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
    Ok(packet)
}

/// A bare TCP RST from `src` to `dst` (IPv4 only) with sequence number `seq`: no ACK, no
/// options, no payload, IPv4 identification 0 (it is fed to smoltcp and never leaves the
/// process). `None` for IPv6 addresses.
pub(crate) fn tcp_reset(src: SocketAddr, dst: SocketAddr, seq: u32) -> Option<Vec<u8>> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        return None;
    };
    const TCP_HEADER_LEN: usize = 20;
    let mut packet = ipv4_header(*src.ip(), *dst.ip(), 6, TCP_HEADER_LEN, 0);
    let tcp_start = packet.len();
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    // Acknowledgment 0, data offset 5 words, flags RST, window 0, checksum, urgent 0.
    packet.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x04, 0, 0, 0, 0, 0, 0]);
    let sum = finish(
        pseudo_header_v4(*src.ip(), *dst.ip(), 6, TCP_HEADER_LEN) + sum_words(&packet[tcp_start..]),
    );
    packet[tcp_start + 16..tcp_start + 18].copy_from_slice(&sum.to_be_bytes());
    Some(packet)
}

/// An IPv4 header without options, followed by nothing yet; `payload_len` must leave the
/// total length within 16 bits (the callers check).
fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
    ident: u16,
) -> Vec<u8> {
    let total_len = (IPV4_HEADER_LEN + payload_len) as u16;
    let mut packet = Vec::with_capacity(usize::from(total_len));
    packet.extend_from_slice(&[0x45, 0]);
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&ident.to_be_bytes());
    // No flags: a router on a narrower path may fragment what we send.
    packet.extend_from_slice(&[0, 0, TTL, protocol, 0, 0]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The sum of the IPv4 pseudo header used by TCP and UDP checksums.
fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> u64 {
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = protocol;
    pseudo[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    sum_words(&pseudo)
}

/// Sum of big-endian 16-bit words; an odd last byte is padded with zero.
fn sum_words(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum into 16 bits and complements it.
fn finish(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum (RFC 1071) of `data`; zero when `data` contains a correct checksum.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    finish(sum_words(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 250, 255, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 5);

    /// An echo request as `ping` sends it, built by hand.
    fn echo_request(payload: &[u8]) -> Vec<u8> {
        let mut p = ipv4_header(A, B, PROTO_ICMP, 8 + payload.len(), 7);
        let start = p.len();
        p.extend_from_slice(&[ICMP_ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 9]);
        p.extend_from_slice(payload);
        let sum = checksum(&p[start..]);
        p[start + 2..start + 4].copy_from_slice(&sum.to_be_bytes());
        p
    }

    #[test]
    fn tcp_reset_is_a_valid_rst() {
        let (src, dst) = (SocketAddr::from((A, 40000)), SocketAddr::from((B, 80)));
        let p = tcp_reset(src, dst, 0xdead_beef).expect("IPv4");
        assert_eq!(p.len(), 40);
        assert_eq!(checksum(&p[..20]), 0, "IP header checksum");
        let tcp = &p[20..];
        assert_eq!(
            finish(pseudo_header_v4(A, B, PROTO_TCP, 20) + sum_words(tcp)),
            0,
            "TCP checksum"
        );
        assert_eq!(&tcp[..4], &[0x9c, 0x40, 0, 80]);
        assert_eq!(&tcp[4..8], &0xdead_beef_u32.to_be_bytes());
        assert_eq!(tcp[13], 0x04, "RST only");
        match classify(&p) {
            Inbound::Tcp {
                src: s,
                dst: d,
                syn,
                ..
            } => {
                assert_eq!((s, d, syn), (src, dst, None));
            }
            other => panic!("not TCP: {other:?}"),
        }
        assert!(tcp_reset("[::1]:1".parse().unwrap(), dst, 1).is_none());
    }

    fn tcp_syn() -> Vec<u8> {
        let mut p = ipv4_header(A, B, PROTO_TCP, 20, 1);
        p.extend_from_slice(&[
            0x9c, 0x40, 0, 7, 0, 0, 0, 42, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
        ]);
        p.extend_from_slice(&[0, 0, 0, 0]);
        p
    }

    /// Known-good header from RFC 1071 style examples (Wikipedia's IPv4 header checksum).
    #[test]
    fn ipv4_header_checksum_matches_reference() {
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
    }

    #[test]
    fn echo_request_is_parsed() {
        let p = echo_request(b"abcdefgh!");
        let Inbound::Echo(e) = classify(&p) else {
            panic!("not an echo: {:?}", classify(&p));
        };
        assert_eq!(
            (e.src, e.dst, e.ident, e.seq, e.ttl),
            (A, B, 0x1234, 9, TTL)
        );
        assert_eq!(e.payload, b"abcdefgh!");
    }

    #[test]
    fn echo_reply_is_correct() {
        let r = echo_reply(A, B, 0x1234, 9, b"abcdefgh!", 99);
        let ip = Ipv4Packet::new_checked(&r).expect("valid IPv4");
        assert_eq!((ip.src(), ip.dst(), ip.protocol()), (B, A, PROTO_ICMP));
        let icmp = ip.payload();
        assert_eq!(checksum(icmp), 0, "ICMP checksum");
        assert_eq!(&icmp[..2], &[ICMP_ECHO_REPLY, 0]);
        assert_eq!(&icmp[4..8], &[0x12, 0x34, 0, 9]);
        assert_eq!(&icmp[8..], b"abcdefgh!");
        // A reply is not a request: the stack never answers its own replies.
        assert_eq!(
            classify(&r),
            Inbound::Drop(DropReason::IcmpType(ICMP_ECHO_REPLY, 0))
        );
    }

    #[test]
    fn udp_round_trip() {
        for len in [0usize, 1, 2, 3, 1400, 9000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let src = SocketAddrV4::new(B, 53);
            let dst = SocketAddrV4::new(A, 40000);
            let p = udp_datagram(src, dst, &payload, 3).expect("fits");
            match classify(&p) {
                Inbound::Udp {
                    src: s,
                    dst: d,
                    payload: pl,
                } => {
                    assert_eq!((s, d), (src.into(), dst.into()));
                    assert_eq!(pl, &payload[..]);
                }
                other => panic!("len {len}: {other:?}"),
            }
        }
        assert_eq!(
            udp_datagram(
                SocketAddrV4::new(B, 1),
                SocketAddrV4::new(A, 2),
                &vec![0; MAX_UDP_PAYLOAD_V4 + 1],
                0
            ),
            Err(MAX_UDP_PAYLOAD_V4)
        );
        assert!(
            udp_datagram(
                SocketAddrV4::new(B, 1),
                SocketAddrV4::new(A, 2),
                &vec![0; MAX_UDP_PAYLOAD_V4],
                0
            )
            .is_ok()
        );
    }

    #[test]
    fn udp_checksum_is_checked_and_zero_means_none() {
        let mut p =
            udp_datagram(SocketAddrV4::new(A, 5), SocketAddrV4::new(B, 6), b"xy", 0).expect("fits");
        let last = p.len() - 1;
        p[last] ^= 1;
        assert_eq!(classify(&p), Inbound::Drop(DropReason::BadChecksum));
        p[26] = 0;
        p[27] = 0;
        assert!(matches!(classify(&p), Inbound::Udp { .. }));
    }

    #[test]
    fn tcp_syn_is_recognised() {
        let p = tcp_syn();
        match classify(&p) {
            Inbound::Tcp {
                packet,
                src,
                dst,
                syn,
            } => {
                assert_eq!(packet, &p[..]);
                assert_eq!(src, SocketAddr::new(A.into(), 40000));
                assert_eq!(dst, SocketAddr::new(B.into(), 7));
                assert_eq!(syn, Some(42));
            }
            other => panic!("{other:?}"),
        }
        let mut ack = p.clone();
        ack[33] = 0x12; // SYN+ACK
        assert!(matches!(classify(&ack), Inbound::Tcp { syn: None, .. }));
    }

    #[test]
    fn trailing_padding_is_trimmed() {
        let mut p = tcp_syn();
        let len = p.len();
        p.extend_from_slice(&[0xee; 6]);
        match classify(&p) {
            Inbound::Tcp { packet, .. } => assert_eq!(packet.len(), len),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_packets_are_dropped() {
        let good = echo_request(b"payload");
        assert_eq!(classify(&[]), Inbound::Drop(DropReason::Truncated));
        for cut in 0..good.len() {
            assert!(
                matches!(classify(&good[..cut]), Inbound::Drop(_)),
                "truncated to {cut}"
            );
        }
        let mut v6 = good.clone();
        v6[0] = 0x60;
        assert_eq!(classify(&v6), Inbound::Drop(DropReason::Ipv6));
        let mut bad_version = good.clone();
        bad_version[0] = 0x55;
        assert_eq!(classify(&bad_version), Inbound::Drop(DropReason::BadHeader));
        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        assert_eq!(classify(&short_ihl), Inbound::Drop(DropReason::BadHeader));
        let mut long_ihl = good.clone();
        long_ihl[0] = 0x4f; // 60-byte header, longer than the packet's total length
        assert!(matches!(classify(&long_ihl), Inbound::Drop(_)));
        let mut bad_sum = good.clone();
        bad_sum[10] ^= 0xff;
        assert_eq!(classify(&bad_sum), Inbound::Drop(DropReason::BadChecksum));
        let mut bad_icmp_sum = good.clone();
        bad_icmp_sum[22] ^= 0xff;
        assert_eq!(
            classify(&bad_icmp_sum),
            Inbound::Drop(DropReason::BadChecksum)
        );
        let unreachable = {
            let mut p = ipv4_header(A, B, PROTO_ICMP, 8, 0);
            p.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
            p
        };
        assert_eq!(
            classify(&unreachable),
            Inbound::Drop(DropReason::IcmpType(3, 1))
        );
        let mut gre = ipv4_header(A, B, 47, 4, 0);
        gre.extend_from_slice(&[0; 4]);
        assert_eq!(classify(&gre), Inbound::Drop(DropReason::Protocol(47)));
        let frag = {
            let mut p = echo_request(b"x");
            p[6] = 0x20; // more fragments
            p[10] = 0;
            p[11] = 0;
            let sum = checksum(&p[..20]);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p
        };
        assert!(matches!(classify(&frag), Inbound::Fragment(_)));
        let broadcast = echo_reply(Ipv4Addr::BROADCAST, A, 1, 1, b"", 0);
        assert_eq!(classify(&broadcast), Inbound::Drop(DropReason::NotUnicast));
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random bytes, and valid packets with random bytes changed, never panic.
    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seeds = [
            echo_request(b"0123456789"),
            tcp_syn(),
            udp_datagram(
                SocketAddrV4::new(A, 5),
                SocketAddrV4::new(B, 6),
                b"hello",
                1,
            )
            .expect("fits"),
        ];
        let mut accepted = 0usize;
        for i in 0..200_000 {
            let buf: Vec<u8> = if i % 2 == 0 {
                let len = (rng.next() % 80) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut p = seeds[i % seeds.len()].clone();
                for _ in 0..=(rng.next() % 3) {
                    let at = (rng.next() as usize) % p.len();
                    p[at] = rng.next() as u8;
                }
                p.truncate((rng.next() as usize) % (p.len() + 4));
                p
            };
            if !matches!(classify(&buf), Inbound::Drop(_)) {
                accepted += 1;
            }
        }
        // Some mutated packets stay valid (bytes in payloads); the point is no panic.
        assert!(accepted > 0);
    }
}
