//! Source-port remapping between the TUN and smoltcp, so that smoltcp never sees a
//! connection's four-tuple again while it may still hold the previous one in TIME-WAIT.
//!
//! Why: when the stack closes first (the server behind the tunnel closed, an HTTP/1.0
//! response), smoltcp keeps the socket in TIME-WAIT for 10 s, while the application's
//! kernel did a passive close and may reuse the same source port at once. smoltcp then
//! hands the new SYN to the TIME-WAIT socket, which ignores it: the new connection stalls
//! until TIME-WAIT ends (measured: 8 of 8 concurrent clients stuck for ~10 s after ~4 500
//! connections at 1 800 connections/s). A kernel accepts such a SYN; smoltcp cannot.
//!
//! So every new connection (a SYN with a new initial sequence number) gets a fresh port
//! on the smoltcp side, cycling through 64 000 ports per client address: a port comes
//! back only after tens of thousands of connections, long after TIME-WAIT. Packets are
//! rewritten in place with an incremental checksum update (RFC 1624); the flow reported
//! to the handler carries the application's real port.
//!
//! Since the map sees every segment both ways, it also keeps what a reset needs: the next
//! sequence number of each side. [`PortMap::abort`] plans the resets of a connection the
//! caller abandons (smoltcp itself can only close with a FIN), and from then on
//! [`PortMap::stack_segment`] drops what smoltcp still sends on it, so the application never
//! takes a FIN for the end of a stream that was cut.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// First port handed out on the smoltcp side.
const FIRST_PORT: u16 = 1_024;
/// A mapping whose connection saw FIN or RST is forgotten this long after (TIME-WAIT is
/// 10 s in smoltcp; late retransmissions still map back meanwhile).
const CLOSED_KEEP_MS: u64 = 15_000;
/// A mapping without any packet for this long is forgotten (smoltcp's own idle timeout
/// is 2 h).
const IDLE_KEEP_MS: u64 = 2 * 3600 * 1000 + 60_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    mapped: u16,
    isn: u32,
    last_ms: u64,
    closed_ms: Option<u64>,
    /// Sequence number just after smoltcp's FIN, once sent.
    stack_fin_end: Option<u32>,
    /// The application's FIN, once seen and until smoltcp acknowledged it in TIME-WAIT:
    /// the sequence number just after it, and what it acknowledged.
    app_fin: Option<Fin>,
    /// The sequence number after the last byte (or SYN, FIN) the application sent.
    app_next: u32,
    /// The application sent an RST.
    app_reset: bool,
}

/// The reverse mapping of a connection, with what smoltcp's segments on it tell.
#[derive(Debug, Clone, Copy)]
struct Reverse {
    /// The application's port.
    port: u16,
    last_ms: u64,
    /// The sequence number after the last byte (or SYN, FIN) smoltcp sent; `None` until
    /// its SYN-ACK went out.
    stack_next: Option<u32>,
    /// smoltcp's latest acknowledgment number (its receive-next as far as it told).
    stack_ack: Option<u32>,
    /// The caller aborted the connection: smoltcp's segments are dropped, RSTs excepted.
    aborted: bool,
}

impl Reverse {
    fn new(port: u16, now_ms: u64) -> Reverse {
        Reverse {
            port,
            last_ms: now_ms,
            stack_next: None,
            stack_ack: None,
            aborted: false,
        }
    }
}

/// What to do with a segment smoltcp sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FromStack {
    /// Not a connection the map knows: pass it unchanged.
    Unmapped,
    /// Pass it with the application's `port` as destination; with `time_wait`, also
    /// feed smoltcp an RST at that sequence number (see [`PortMap::enters_time_wait`]).
    Pass { port: u16, time_wait: Option<u32> },
    /// The connection was aborted: the application must not get it.
    Drop,
}

/// The resets that end an aborted connection (see [`PortMap::abort`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Abort {
    /// The application's address (its real port).
    pub(crate) app: SocketAddr,
    /// Sequence number of the RST to the application: after everything smoltcp sent it.
    pub(crate) app_seq: u32,
    /// Sequence numbers of the RSTs to smoltcp, as if from the application: after
    /// everything the application sent, and smoltcp's last acknowledgment when that
    /// differs (one of them is in smoltcp's receive window, which is all it asks of an
    /// RST; the other then draws at most a duplicate ACK, which is dropped).
    pub(crate) stack_seqs: [Option<u32>; 2],
}

/// The port map (sans-IO; the caller supplies the clock).
#[derive(Debug)]
pub(crate) struct PortMap {
    /// (application address, destination) → mapping.
    by_app: HashMap<(SocketAddr, SocketAddr), Entry>,
    /// (address smoltcp sees, destination) → the application's port and what smoltcp
    /// sent on the connection.
    by_stack: HashMap<(SocketAddr, SocketAddr), Reverse>,
    /// Next port to try, per application address.
    next: HashMap<IpAddr, u16>,
    max_entries: usize,
    /// First port of the range handed out (the range ends at 65535).
    first_port: u16,
}

impl PortMap {
    /// A map holding at most `max_entries` connections.
    pub(crate) fn new(max_entries: usize) -> PortMap {
        PortMap {
            by_app: HashMap::new(),
            by_stack: HashMap::new(),
            next: HashMap::new(),
            max_entries,
            first_port: FIRST_PORT,
        }
    }

    /// Connections mapped now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_app.len()
    }

    /// The port smoltcp should see for a segment `seg` from `src` to `dst`. `syn` is the
    /// initial sequence number of a connection-opening SYN. Notes the application's FIN,
    /// RST and next sequence number. `None` when the map is full (the caller passes the
    /// segment through unchanged).
    pub(crate) fn inbound(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        syn: Option<u32>,
        seg: &Segment,
        now_ms: u64,
    ) -> Option<u16> {
        let key = (src, dst);
        match (self.by_app.get_mut(&key), syn) {
            // A segment of a known connection, or a retransmitted SYN.
            (Some(e), None) => {
                e.last_ms = now_ms;
                if seg.is_closing() && e.closed_ms.is_none() {
                    e.closed_ms = Some(now_ms);
                }
                if let Some(fin) = seg.fin() {
                    e.app_fin = Some(fin);
                }
                if seg.flags & RST != 0 {
                    e.app_reset = true;
                } else if seq_after(seg.end(), e.app_next) {
                    e.app_next = seg.end();
                }
                let mapped = e.mapped;
                if let Some(r) = self
                    .by_stack
                    .get_mut(&(SocketAddr::new(src.ip(), mapped), dst))
                {
                    r.last_ms = now_ms;
                }
                return Some(mapped);
            }
            (Some(e), Some(isn)) if e.isn == isn => {
                e.last_ms = now_ms;
                return Some(e.mapped);
            }
            // A segment of a connection we never saw open: leave it alone.
            (None, None) => return None,
            // A new connection (possibly reusing the ports of an old one).
            (Some(_), Some(_)) | (None, Some(_)) => {}
        }
        let isn = syn?;
        if self.by_app.len() >= self.max_entries {
            self.expire(now_ms);
            if self.by_app.len() >= self.max_entries {
                return None;
            }
        }
        let mapped = self.allocate(src.ip(), dst)?;
        // The old connection's reverse mapping stays until it expires, so its late
        // segments from smoltcp still find their way back.
        self.by_app.insert(
            key,
            Entry {
                mapped,
                isn,
                last_ms: now_ms,
                closed_ms: None,
                stack_fin_end: None,
                app_fin: None,
                app_next: isn.wrapping_add(1),
                app_reset: false,
            },
        );
        self.by_stack.insert(
            (SocketAddr::new(src.ip(), mapped), dst),
            Reverse::new(src.port(), now_ms),
        );
        Some(mapped)
    }

    /// What to do with segment `seg` smoltcp sends from `from` to `to` (`to` carries the
    /// mapped port): the application's port to put back, whether the segment puts its
    /// socket into TIME-WAIT, or nothing for an aborted connection. Notes smoltcp's next
    /// sequence number and acknowledgment, and its FIN or RST.
    pub(crate) fn stack_segment(
        &mut self,
        to: SocketAddr,
        from: SocketAddr,
        seg: &Segment,
        now_ms: u64,
    ) -> FromStack {
        let Some(r) = self.by_stack.get_mut(&(to, from)) else {
            return FromStack::Unmapped;
        };
        if r.aborted && seg.flags & RST == 0 {
            return FromStack::Drop;
        }
        let end = seg.end();
        if r.stack_next.is_none_or(|n| seq_after(end, n)) {
            r.stack_next = Some(end);
        }
        if seg.flags & ACK != 0 {
            r.stack_ack = Some(seg.ack);
        }
        let port = r.port;
        let mut time_wait = None;
        if seg.is_closing() {
            self.closed_by_stack(to, from, seg.fin(), now_ms);
        } else if let Some(ack) = seg.pure_ack()
            && self.enters_time_wait(to, from, ack)
        {
            time_wait = Some(ack);
        }
        FromStack::Pass { port, time_wait }
    }

    /// Plans the end of the connection smoltcp sees as `stack_src` ↔ `dst`, which the
    /// caller abandons without a FIN: from now on smoltcp's segments on it are dropped
    /// (RSTs excepted) and the caller sends the returned resets. `None` when there is
    /// nothing to reset that way: the map does not know the connection (it was full),
    /// smoltcp has not answered the SYN yet, or it was aborted already.
    pub(crate) fn abort(
        &mut self,
        stack_src: SocketAddr,
        dst: SocketAddr,
        now_ms: u64,
    ) -> Option<Abort> {
        let r = self.by_stack.get_mut(&(stack_src, dst))?;
        if r.aborted {
            return None;
        }
        let app_seq = r.stack_next?;
        r.aborted = true;
        let app = SocketAddr::new(stack_src.ip(), r.port);
        let stack_ack = r.stack_ack;
        let e = self
            .by_app
            .get_mut(&(app, dst))
            .filter(|e| e.mapped == stack_src.port());
        let app_next = e.as_ref().map(|e| e.app_next);
        if let Some(e) = e {
            e.closed_ms.get_or_insert(now_ms);
        }
        let stack_seqs = match (app_next, stack_ack) {
            (Some(next), Some(ack)) if next != ack => [Some(next), Some(ack)],
            (Some(next), _) => [Some(next), None],
            (None, ack) => [ack, None],
        };
        Some(Abort {
            app,
            app_seq,
            stack_seqs,
        })
    }

    /// Whether the application reset the connection smoltcp sees as `stack_src` ↔ `dst`
    /// (smoltcp reports that as an end of stream, like a FIN).
    pub(crate) fn reset_by_app(&self, stack_src: SocketAddr, dst: SocketAddr) -> bool {
        self.by_stack
            .get(&(stack_src, dst))
            .and_then(|r| {
                self.by_app
                    .get(&(SocketAddr::new(stack_src.ip(), r.port), dst))
            })
            .is_some_and(|e| e.mapped == stack_src.port() && e.app_reset)
    }

    /// The application's port for a segment smoltcp sends from `from` to `to` (where `to`
    /// carries the mapped port).
    pub(crate) fn outbound(&self, to: SocketAddr, from: SocketAddr) -> Option<u16> {
        self.by_stack.get(&(to, from)).map(|r| r.port)
    }

    /// Notes that smoltcp sent FIN (`fin`) or RST (`None`) on the connection it sees as
    /// `to` ↔ `from`.
    pub(crate) fn closed_by_stack(
        &mut self,
        to: SocketAddr,
        from: SocketAddr,
        fin: Option<Fin>,
        now_ms: u64,
    ) {
        if let Some(e) = self.stack_entry(to, from) {
            if let Some(fin) = fin {
                e.stack_fin_end = Some(fin.end);
            }
            e.closed_ms.get_or_insert(now_ms);
        }
    }

    /// Notes the FIN the application sent on `src` → `dst` (its own addresses); `inbound`
    /// does this for every segment.
    #[cfg(test)]
    pub(crate) fn app_fin(&mut self, src: SocketAddr, dst: SocketAddr, fin: Fin) {
        if let Some(e) = self.by_app.get_mut(&(src, dst)) {
            e.app_fin = Some(fin);
        }
    }

    /// Whether a pure ACK smoltcp sends from `from` to `to` (mapped port) with
    /// acknowledgment number `ack` puts its socket into TIME-WAIT: smoltcp sent its FIN,
    /// the application's FIN acknowledged it (so everything smoltcp sent has arrived; a
    /// simultaneous close, where that is not known, keeps its TIME-WAIT), and this
    /// acknowledges the application's FIN. Answers `true` once per connection.
    ///
    /// Why it matters: smoltcp keeps such a socket for 10 s and netstack-smoltcp visits
    /// every socket on every poll, so after a burst of connections the stack closed first
    /// (HTTP/1.0, a server that closes) thousands of them slowed every other connection
    /// to a crawl (measured: 1.37 → 0.17 Gbit/s for ~10 s after 4 650 connections). The
    /// port map already keeps a new connection off an old four-tuple, which is what
    /// TIME-WAIT protects, so the caller resets the socket instead.
    pub(crate) fn enters_time_wait(&mut self, to: SocketAddr, from: SocketAddr, ack: u32) -> bool {
        let Some(e) = self.stack_entry(to, from) else {
            return false;
        };
        let time_wait = e
            .app_fin
            .is_some_and(|fin| fin.end == ack && e.stack_fin_end == Some(fin.acked));
        if time_wait {
            e.app_fin = None;
        }
        time_wait
    }

    /// The live entry of the connection smoltcp sees as `to` ↔ `from`.
    fn stack_entry(&mut self, to: SocketAddr, from: SocketAddr) -> Option<&mut Entry> {
        let port = self.by_stack.get(&(to, from))?.port;
        self.by_app
            .get_mut(&(SocketAddr::new(to.ip(), port), from))
            .filter(|e| e.mapped == to.port())
    }

    /// The application's address behind a mapped one (for reporting flows).
    pub(crate) fn original(&self, mapped: SocketAddr, dst: SocketAddr) -> SocketAddr {
        match self.outbound(mapped, dst) {
            Some(port) => SocketAddr::new(mapped.ip(), port),
            None => mapped,
        }
    }

    fn allocate(&mut self, ip: IpAddr, dst: SocketAddr) -> Option<u16> {
        let first = self.first_port;
        let span = u32::from(u16::MAX - first) + 1;
        let next = self.next.entry(ip).or_insert(first);
        for _ in 0..span {
            let port = *next;
            *next = if port == u16::MAX { first } else { port + 1 };
            if !self
                .by_stack
                .contains_key(&(SocketAddr::new(ip, port), dst))
            {
                return Some(port);
            }
        }
        None
    }

    /// Forgets closed connections after [`CLOSED_KEEP_MS`] and idle ones after
    /// [`IDLE_KEEP_MS`]. Returns how many were forgotten.
    pub(crate) fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.by_stack.len();
        self.by_app.retain(|_, e| {
            let closed = e
                .closed_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= CLOSED_KEEP_MS);
            !closed && now_ms.saturating_sub(e.last_ms) < IDLE_KEEP_MS
        });
        let live: std::collections::HashSet<(SocketAddr, SocketAddr)> = self
            .by_app
            .iter()
            .map(|((src, dst), e)| (SocketAddr::new(src.ip(), e.mapped), *dst))
            .collect();
        // Reverse mappings of replaced or expired connections linger for CLOSED_KEEP_MS.
        self.by_stack
            .retain(|k, r| live.contains(k) || now_ms.saturating_sub(r.last_ms) < CLOSED_KEEP_MS);
        before - self.by_stack.len()
    }
}

/// Offset of the TCP header in an IPv4 packet, when the packet is long enough for ports
/// and checksum.
fn tcp_offset(packet: &[u8]) -> Option<usize> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    (packet.len() >= ihl + 20 && packet[0] >> 4 == 4 && packet.get(9) == Some(&6)).then_some(ihl)
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Whether sequence number `a` comes after `b` (RFC 1982 serial arithmetic).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A FIN segment, as far as TIME-WAIT is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fin {
    /// The sequence number just after the FIN (what its ACK acknowledges).
    pub(crate) end: u32,
    /// The segment's acknowledgment number.
    pub(crate) acked: u32,
}

/// What the map reads of a TCP segment: its flags, sequence and acknowledgment numbers
/// and payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) flags: u8,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) len: u32,
}

impl Segment {
    /// The sequence number after this segment (its payload, SYN and FIN).
    pub(crate) fn end(&self) -> u32 {
        let controls = u32::from(self.flags & SYN != 0) + u32::from(self.flags & FIN != 0);
        self.seq.wrapping_add(self.len).wrapping_add(controls)
    }

    /// FIN or RST set.
    pub(crate) fn is_closing(&self) -> bool {
        self.flags & (FIN | RST) != 0
    }

    /// Its FIN, if it carries one.
    pub(crate) fn fin(&self) -> Option<Fin> {
        (self.flags & FIN != 0).then(|| Fin {
            end: self.seq.wrapping_add(self.len).wrapping_add(1),
            acked: self.ack,
        })
    }

    /// For a pure ACK (ACK the only flag, no payload): its acknowledgment number.
    pub(crate) fn pure_ack(&self) -> Option<u32> {
        (self.flags == ACK && self.len == 0).then_some(self.ack)
    }
}

/// The segment of an IPv4 TCP packet.
pub(crate) fn segment(packet: &[u8]) -> Option<Segment> {
    let o = tcp_offset(packet)?;
    let data_offset = usize::from(packet[o + 12] >> 4) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let len = total.checked_sub(o + data_offset)?;
    let word = |at: usize| {
        u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
    };
    Some(Segment {
        flags: packet[o + 13],
        seq: word(o + 4),
        ack: word(o + 8),
        len: u32::try_from(len).ok()?,
    })
}

/// Rewrites the 16-bit field at `at` to `value`, updating the TCP checksum at `sum`.
fn rewrite(packet: &mut [u8], at: usize, sum: usize, value: u16) {
    let old = u16::from_be_bytes([packet[at], packet[at + 1]]);
    if old == value {
        return;
    }
    packet[at..at + 2].copy_from_slice(&value.to_be_bytes());
    let hc = u16::from_be_bytes([packet[sum], packet[sum + 1]]);
    // RFC 1624, eq. 3: HC' = ~(~HC + ~m + m').
    let mut acc = u32::from(!hc) + u32::from(!old) + u32::from(value);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    packet[sum..sum + 2].copy_from_slice(&(!(acc as u16)).to_be_bytes());
}

/// Sets the source port of an IPv4 TCP packet (no-op for anything else).
pub(crate) fn set_src_port(packet: &mut [u8], port: u16) {
    if let Some(o) = tcp_offset(packet) {
        rewrite(packet, o, o + 16, port);
    }
}

/// Sets the destination port of an IPv4 TCP packet (no-op for anything else).
pub(crate) fn set_dst_port(packet: &mut [u8], port: u16) {
    if let Some(o) = tcp_offset(packet) {
        rewrite(packet, o + 2, o + 16, port);
    }
}

/// The (source, destination) of an IPv4 TCP packet.
pub(crate) fn tcp_addrs(packet: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let o = tcp_offset(packet)?;
    let ip = |at: usize| IpAddr::from([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]]);
    let port = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    Some((
        SocketAddr::new(ip(12), port(o)),
        SocketAddr::new(ip(16), port(o + 2)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// An IPv4 TCP packet from `src` to `dst` with sequence `seq`, acknowledgment `ack`,
    /// TCP `flags` and `payload` bytes (checksum left zero).
    fn tcp_packet(
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: usize,
    ) -> Vec<u8> {
        let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
            unreachable!()
        };
        let total = 40 + payload;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
        p.extend_from_slice(&s.ip().octets());
        p.extend_from_slice(&d.ip().octets());
        p.extend_from_slice(&src.port().to_be_bytes());
        p.extend_from_slice(&dst.port().to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ack.to_be_bytes());
        p.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.resize(total, 7);
        p
    }

    const FIN_ACK: u8 = FIN | ACK;

    /// A segment without FIN or RST, and one with FIN (what the map's `closing` is about).
    const OTHER: Segment = Segment {
        flags: ACK,
        seq: 0,
        ack: 0,
        len: 0,
    };
    const CLOSE: Segment = Segment {
        flags: FIN_ACK,
        seq: 0,
        ack: 0,
        len: 0,
    };

    fn seg(seq: u32, ack: u32, flags: u8, len: u32) -> Segment {
        Segment {
            flags,
            seq,
            ack,
            len,
        }
    }

    #[test]
    fn segments_are_read_from_packets() {
        let (x, y) = (a("10.0.0.2:40000"), a("10.211.0.2:80"));
        let read = |seq, ack, flags, payload| segment(&tcp_packet(x, y, seq, ack, flags, payload));
        let f = |end, acked| Some(Fin { end, acked });
        assert_eq!(read(100, 5, FIN_ACK, 0).unwrap().fin(), f(101, 5));
        assert_eq!(read(u32::MAX, 5, FIN_ACK, 10).unwrap().fin(), f(10, 5));
        assert_eq!(read(100, 5, ACK, 0).unwrap().fin(), None);
        assert_eq!(read(100, 5, ACK, 0).unwrap().pure_ack(), Some(5));
        assert_eq!(
            read(100, 5, ACK, 1).unwrap().pure_ack(),
            None,
            "carries data"
        );
        assert_eq!(
            read(100, 5, FIN_ACK, 0).unwrap().pure_ack(),
            None,
            "carries FIN"
        );
        assert_eq!(read(100, 5, ACK, 7).unwrap().end(), 107);
        assert_eq!(read(100, 0, SYN, 0).unwrap().end(), 101, "SYN counts");
        assert_eq!(
            read(u32::MAX, 5, FIN_ACK, 1).unwrap().end(),
            1,
            "FIN counts, wraps"
        );
        assert!(read(100, 5, RST, 0).unwrap().is_closing());
        assert!(!read(100, 5, ACK, 0).unwrap().is_closing());
        assert_eq!(segment(&[0x45, 0, 0]), None);
        assert_eq!(segment(&[]), None);
    }

    #[test]
    fn time_wait_is_recognised_only_when_the_stack_closed_first() {
        let mut m = PortMap::new(100);
        let dst = a("10.211.0.2:80");
        let mut open = |port: u16, isn: u32| {
            let app = SocketAddr::new("10.0.0.2".parse().unwrap(), port);
            let p = m.inbound(app, dst, Some(isn), &OTHER, 0).unwrap();
            (app, SocketAddr::new(app.ip(), p))
        };
        let (app, seen) = open(40000, 1000);
        let (app2, seen2) = open(40001, 7);
        let (app3, seen3) = open(40002, 9);
        let (app4, seen4) = open(40003, 11);
        let fin = |end, acked| Some(Fin { end, acked });

        // The stack closes first (its FIN ends at 300); the application's FIN ends at
        // 5001 and acknowledges 300; the ACK of it enters TIME-WAIT, once.
        m.closed_by_stack(seen, dst, fin(300, 1), 1);
        assert!(
            !m.enters_time_wait(seen, dst, 5001),
            "no FIN from the application yet"
        );
        m.app_fin(
            app,
            dst,
            Fin {
                end: 5001,
                acked: 300,
            },
        );
        assert!(
            !m.enters_time_wait(seen, dst, 5000),
            "acknowledges less than the FIN"
        );
        assert!(m.enters_time_wait(seen, dst, 5001));
        assert!(!m.enters_time_wait(seen, dst, 5001), "only once");

        // The application closes first: the stack's ACK of its FIN comes before the
        // stack's own FIN, so nothing is in TIME-WAIT on the stack's side.
        m.app_fin(
            app2,
            dst,
            Fin {
                end: 900,
                acked: 50,
            },
        );
        assert!(!m.enters_time_wait(seen2, dst, 900));
        m.closed_by_stack(seen2, dst, fin(51, 901), 3);

        // Simultaneous close: the application's FIN did not acknowledge the stack's, so
        // what the stack sent may still need retransmitting; TIME-WAIT stays.
        m.closed_by_stack(seen3, dst, fin(400, 1), 4);
        m.app_fin(
            app3,
            dst,
            Fin {
                end: 10,
                acked: 399,
            },
        );
        assert!(!m.enters_time_wait(seen3, dst, 10));

        // A stack RST is not a FIN.
        m.closed_by_stack(seen4, dst, None, 5);
        m.app_fin(app4, dst, Fin { end: 10, acked: 0 });
        assert!(!m.enters_time_wait(seen4, dst, 10));
        // Unknown connections are never in TIME-WAIT.
        assert!(!m.enters_time_wait(a("10.0.0.9:1"), dst, 1));
    }

    /// An aborted connection: the resets sit right after what each side sent, and from
    /// then on nothing smoltcp sends reaches the application but RSTs.
    #[test]
    fn abort_plans_exact_resets_and_silences_the_stack() {
        let mut m = PortMap::new(100);
        let (app, dst) = (a("10.0.0.2:40000"), a("10.211.0.2:80"));
        let port = m
            .inbound(app, dst, Some(1000), &seg(1000, 0, SYN, 0), 0)
            .unwrap();
        let seen = SocketAddr::new(app.ip(), port);
        // Before smoltcp answered the SYN there is nothing to reset with.
        assert_eq!(m.abort(seen, dst, 1), None);
        let pass = FromStack::Pass {
            port: 40000,
            time_wait: None,
        };
        assert_eq!(
            m.stack_segment(seen, dst, &seg(5000, 1001, SYN | ACK, 0), 1),
            pass
        );
        m.inbound(app, dst, None, &seg(1001, 5001, ACK, 10), 2);
        assert_eq!(
            m.stack_segment(seen, dst, &seg(5001, 1011, ACK, 100), 3),
            pass
        );
        // A retransmission does not move smoltcp's next sequence number back.
        assert_eq!(
            m.stack_segment(seen, dst, &seg(5001, 1011, ACK, 50), 4),
            pass
        );
        assert!(!m.reset_by_app(seen, dst));

        let plan = m
            .abort(seen, dst, 5)
            .expect("a known, synchronised connection");
        assert_eq!(
            plan,
            Abort {
                app,
                app_seq: 5101,
                stack_seqs: [Some(1011), None],
            }
        );
        assert_eq!(m.abort(seen, dst, 6), None, "only once");
        // What smoltcp sends afterwards (its FIN when the stream is dropped, data, ACKs)
        // is dropped; its RSTs (answers once its socket is gone) pass.
        for s in [
            seg(5101, 1011, FIN_ACK, 0),
            seg(5101, 1011, ACK, 10),
            seg(5101, 1011, ACK, 0),
        ] {
            assert_eq!(m.stack_segment(seen, dst, &s, 7), FromStack::Drop, "{s:?}");
        }
        assert_eq!(m.stack_segment(seen, dst, &seg(1011, 0, RST, 0), 7), pass);
        // The mapping is closed: it expires like any closed connection.
        m.expire(5 + CLOSED_KEEP_MS);
        assert_eq!(m.outbound(seen, dst), None);

        // smoltcp has not acknowledged all the application sent: RSTs at both.
        let app2 = a("10.0.0.2:40001");
        let p2 = m
            .inbound(app2, dst, Some(7), &seg(7, 0, SYN, 0), 0)
            .unwrap();
        let seen2 = SocketAddr::new(app2.ip(), p2);
        m.stack_segment(seen2, dst, &seg(90, 8, SYN | ACK, 0), 1);
        m.inbound(app2, dst, None, &seg(8, 91, ACK, 100), 2);
        m.inbound(app2, dst, None, &seg(108, 91, ACK, 100), 2);
        let plan = m.abort(seen2, dst, 3).unwrap();
        assert_eq!((plan.app_seq, plan.stack_seqs), (91, [Some(208), Some(8)]));

        // Unknown connections have nothing to abort.
        assert_eq!(m.abort(a("10.0.0.9:1"), dst, 3), None);
    }

    #[test]
    fn resets_from_the_application_are_remembered() {
        let mut m = PortMap::new(100);
        let dst = a("10.211.0.2:80");
        let (app, other) = (a("10.0.0.2:40000"), a("10.0.0.2:40001"));
        let p = m.inbound(app, dst, Some(1), &seg(1, 0, SYN, 0), 0).unwrap();
        let q = m
            .inbound(other, dst, Some(1), &seg(1, 0, SYN, 0), 0)
            .unwrap();
        m.inbound(app, dst, None, &seg(2, 0, RST, 0), 1);
        m.inbound(other, dst, None, &seg(2, 0, FIN_ACK, 0), 1);
        assert!(m.reset_by_app(SocketAddr::new(app.ip(), p), dst));
        assert!(
            !m.reset_by_app(SocketAddr::new(other.ip(), q), dst),
            "a FIN is no reset"
        );
        assert!(!m.reset_by_app(a("10.0.0.9:1"), dst));
    }

    /// The writer's one call per smoltcp segment says when to free a TIME-WAIT socket.
    #[test]
    fn stack_segments_report_time_wait() {
        let mut m = PortMap::new(100);
        let (app, dst) = (a("10.0.0.2:40000"), a("10.211.0.2:80"));
        let p = m
            .inbound(app, dst, Some(1000), &seg(1000, 0, SYN, 0), 0)
            .unwrap();
        let seen = SocketAddr::new(app.ip(), p);
        m.stack_segment(seen, dst, &seg(99, 1001, SYN | ACK, 0), 1);
        // smoltcp closes first (FIN ends at 300), the application's FIN acknowledges it.
        m.stack_segment(seen, dst, &seg(100, 1001, FIN_ACK, 199), 2);
        m.inbound(app, dst, None, &seg(1001, 300, FIN_ACK, 0), 3);
        assert_eq!(
            m.stack_segment(seen, dst, &seg(300, 1002, ACK, 0), 4),
            FromStack::Pass {
                port: 40000,
                time_wait: Some(1002)
            }
        );
        assert_eq!(
            m.stack_segment(a("10.0.0.9:1"), dst, &seg(1, 1, ACK, 0), 4),
            FromStack::Unmapped
        );
    }

    #[test]
    fn reused_ports_get_fresh_stack_ports() {
        let mut m = PortMap::new(100);
        let (app, dst) = (a("10.0.0.2:40000"), a("10.211.0.2:80"));
        let p1 = m.inbound(app, dst, Some(1000), &OTHER, 0).unwrap();
        assert_eq!(
            m.inbound(app, dst, Some(1000), &OTHER, 1),
            Some(p1),
            "SYN retransmission"
        );
        assert_eq!(m.inbound(app, dst, None, &OTHER, 2), Some(p1));
        assert_eq!(m.outbound(SocketAddr::new(app.ip(), p1), dst), Some(40000));
        assert_eq!(m.original(SocketAddr::new(app.ip(), p1), dst), app);
        m.inbound(app, dst, None, &CLOSE, 3);
        // The application reuses the port at once: a new stack-side port.
        let p2 = m.inbound(app, dst, Some(555), &OTHER, 4).unwrap();
        assert_ne!(p1, p2);
        // Late segments of the old connection still map back until it expires.
        assert_eq!(m.outbound(SocketAddr::new(app.ip(), p1), dst), Some(40000));
        assert_eq!(m.expire(4 + CLOSED_KEEP_MS), 1);
        assert_eq!(m.outbound(SocketAddr::new(app.ip(), p1), dst), None);
        assert_eq!(m.outbound(SocketAddr::new(app.ip(), p2), dst), Some(40000));
        // Unknown connections pass unchanged.
        assert_eq!(m.inbound(a("10.0.0.3:1"), dst, None, &OTHER, 5), None);
    }

    #[test]
    fn closed_and_idle_connections_expire_and_the_map_is_bounded() {
        let mut m = PortMap::new(2);
        let dst = a("10.211.0.2:80");
        m.inbound(a("10.0.0.2:1"), dst, Some(1), &OTHER, 0).unwrap();
        m.inbound(a("10.0.0.2:2"), dst, Some(1), &OTHER, 0).unwrap();
        assert!(
            m.inbound(a("10.0.0.2:3"), dst, Some(1), &OTHER, 1)
                .is_none(),
            "full"
        );
        m.inbound(a("10.0.0.2:1"), dst, None, &CLOSE, 2);
        assert_eq!(m.len(), 2);
        assert!(
            m.inbound(a("10.0.0.2:3"), dst, Some(1), &OTHER, 2 + CLOSED_KEEP_MS)
                .is_some()
        );
        assert_eq!(m.len(), 2);
        m.expire(IDLE_KEEP_MS + CLOSED_KEEP_MS + 10);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn ports_cycle_without_reusing_live_ones() {
        let mut m = PortMap::new(200_000);
        m.first_port = 65_000;
        let dst = a("10.211.0.2:80");
        let mut seen = std::collections::HashSet::new();
        for i in 0..1_000u32 {
            let port = (i % 300) as u16 + 1;
            if let Some(p) = m.inbound(
                SocketAddr::new([10, 0, 0, 2].into(), port),
                dst,
                Some(i),
                &OTHER,
                0,
            ) {
                seen.insert(p);
            }
        }
        // Every stack-side port in use is distinct and within the range.
        assert!(seen.iter().all(|p| *p >= 65_000));
        assert_eq!(seen.len(), usize::from(u16::MAX - 65_000) + 1);
    }

    #[test]
    fn rewriting_keeps_the_checksum_valid() {
        // IPv4 + TCP SYN 10.0.0.2:40000 -> 10.211.0.2:80 with a correct checksum.
        let mut p = tcp_packet(a("10.0.0.2:40000"), a("10.211.0.2:80"), 1, 0, 0x02, 0);
        let sum = tcp_checksum(&p);
        p[36..38].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(tcp_checksum(&p), 0, "valid before");
        set_src_port(&mut p, 15_123);
        assert_eq!(tcp_addrs(&p).unwrap().0, a("10.0.0.2:15123"));
        assert_eq!(tcp_checksum(&p), 0, "valid after the source port changed");
        set_dst_port(&mut p, 8080);
        assert_eq!(
            tcp_checksum(&p),
            0,
            "valid after the destination port changed"
        );
        assert!(!segment(&p).unwrap().is_closing());
        p[33] = 0x11; // FIN+ACK
        assert!(segment(&p).unwrap().is_closing());
        // Anything else is left alone.
        let mut short = vec![0x45, 0, 0, 20];
        set_src_port(&mut short, 1);
        assert_eq!(short, [0x45, 0, 0, 20]);
    }

    /// The TCP checksum over the pseudo-header and segment; 0 when the stored one is right.
    fn tcp_checksum(p: &[u8]) -> u16 {
        let seg = &p[20..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(seg);
        let mut acc = 0u32;
        for c in pseudo.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
}
