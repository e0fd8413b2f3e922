//! IPv4 reassembly. The kernel fragments UDP datagrams larger than the TUN device's MTU
//! (and anything a LAN host sends without DF); without reassembly such datagrams would be
//! lost. Sans-IO: fragments and timestamps in, whole packets out.
//!
//! Strict on purpose: overlapping or inconsistent fragments drop the whole packet (as
//! RFC 5722 requires for IPv6), and memory is bounded by the number of packets in
//! reassembly times the largest IPv4 packet.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::wire::{self, DropReason, Ipv4Packet};

/// Largest IPv4 packet.
const MAX_PACKET: usize = u16::MAX as usize;

/// What a fragment led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reassembly {
    /// Kept; the packet is not complete yet.
    Incomplete,
    /// This fragment completed the packet.
    Complete(Vec<u8>),
    /// The fragment (and the packet it belongs to) was dropped.
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ident: u16,
}

struct Pending {
    /// The header of the fragment at offset 0, once seen.
    header: Option<Vec<u8>>,
    /// Payload pieces by their offset; they never overlap.
    pieces: Vec<(usize, Vec<u8>)>,
    /// Payload length, known from the last fragment.
    total: Option<usize>,
    received: usize,
    started_ms: u64,
}

/// Packets in reassembly.
pub(crate) struct Reassembler {
    pending: HashMap<Key, Pending>,
    max_pending: usize,
    timeout_ms: u64,
}

impl Reassembler {
    /// At most `max_pending` packets at once (the oldest is dropped for a new one); a
    /// packet not complete after `timeout_ms` is dropped.
    pub(crate) fn new(max_pending: usize, timeout_ms: u64) -> Self {
        Self {
            pending: HashMap::new(),
            max_pending: max_pending.max(1),
            timeout_ms,
        }
    }

    /// Adds one fragment.
    pub(crate) fn push(&mut self, fragment: Ipv4Packet<'_>, now_ms: u64) -> Reassembly {
        let key = Key {
            src: fragment.src(),
            dst: fragment.dst(),
            protocol: fragment.protocol(),
            ident: fragment.ident(),
        };
        let offset = fragment.fragment_offset();
        let data = fragment.payload();
        let end = offset + data.len();
        let last = !fragment.more_fragments();
        // All but the last fragment carry a multiple of 8 bytes; nothing may end beyond
        // what fits into one packet behind the smallest header.
        if (!last && (data.is_empty() || !data.len().is_multiple_of(8))) || end > MAX_PACKET - 20 {
            self.pending.remove(&key);
            return Reassembly::Dropped(DropReason::Fragment);
        }

        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_pending {
            self.evict_oldest();
        }
        let entry = self.pending.entry(key).or_insert_with(|| Pending {
            header: None,
            pieces: Vec::new(),
            total: None,
            received: 0,
            started_ms: now_ms,
        });

        if let Some(verdict) = entry.check(offset, end, last) {
            if verdict == Reassembly::Incomplete {
                return verdict; // an exact duplicate
            }
            self.pending.remove(&key);
            return verdict;
        }
        if last {
            entry.total = Some(end);
        }
        if offset == 0 {
            entry.header = Some(fragment.header().to_vec());
        }
        entry.pieces.push((offset, data.to_vec()));
        entry.received += data.len();

        match (&entry.header, entry.total) {
            (Some(header), Some(total)) if entry.received == total => {
                if header.len() + total > MAX_PACKET {
                    self.pending.remove(&key);
                    return Reassembly::Dropped(DropReason::Fragment);
                }
                let Some(mut done) = self.pending.remove(&key) else {
                    return Reassembly::Incomplete;
                };
                Reassembly::Complete(done.assemble())
            }
            _ => Reassembly::Incomplete,
        }
    }

    /// How many packets are in reassembly.
    #[cfg(any(fuzzing, feature = "fuzz"))]
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Drops packets not completed in time; returns how many.
    pub(crate) fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.pending.len();
        let timeout_ms = self.timeout_ms;
        self.pending
            .retain(|_, p| now_ms.saturating_sub(p.started_ms) < timeout_ms);
        before - self.pending.len()
    }

    fn evict_oldest(&mut self) {
        if let Some(key) = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.started_ms)
            .map(|(k, _)| *k)
        {
            self.pending.remove(&key);
        }
    }
}

impl Pending {
    /// Checks a new piece against what is known: `Some(Incomplete)` for an exact duplicate
    /// (ignored), `Some(Dropped)` when the packet must be dropped, `None` to keep it.
    fn check(&self, offset: usize, end: usize, last: bool) -> Option<Reassembly> {
        let drop = Some(Reassembly::Dropped(DropReason::Fragment));
        if let Some(total) = self.total {
            if end > total || (last && end != total) {
                return drop;
            }
        } else if last && self.pieces.iter().any(|(s, d)| s + d.len() > end) {
            return drop;
        }
        for (start, data) in &self.pieces {
            let piece_end = start + data.len();
            if offset < piece_end && *start < end {
                return if *start == offset && piece_end == end {
                    Some(Reassembly::Incomplete)
                } else {
                    drop
                };
            }
        }
        None
    }

    /// The whole packet: the first fragment's header with length, flags, offset and
    /// checksum fixed, then the pieces in order. Only called when complete.
    fn assemble(&mut self) -> Vec<u8> {
        let header = self.header.take().unwrap_or_default();
        let total = self.total.unwrap_or(0);
        self.pieces.sort_unstable_by_key(|(start, _)| *start);
        let mut packet = Vec::with_capacity(header.len() + total);
        packet.extend_from_slice(&header);
        for (_, data) in &self.pieces {
            packet.extend_from_slice(data);
        }
        // Checked by the caller: fits into 16 bits.
        let len = packet.len() as u16;
        packet[2..4].copy_from_slice(&len.to_be_bytes());
        packet[6] = 0;
        packet[7] = 0;
        packet[10] = 0;
        packet[11] = 0;
        let sum = wire::checksum(&packet[..header.len()]);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
        packet
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;

    use super::*;
    use crate::wire::{Inbound, classify};

    const A: Ipv4Addr = Ipv4Addr::new(10, 250, 255, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 5);

    /// Splits a packet (20-byte header) into fragments of at most `mtu` bytes, as a router
    /// would.
    fn fragment(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let header = &packet[..20];
        let payload = &packet[20..];
        let step = (mtu - 20) / 8 * 8;
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < payload.len() {
            let end = (offset + step).min(payload.len());
            let mut f = header.to_vec();
            f.extend_from_slice(&payload[offset..end]);
            let len = f.len() as u16;
            f[2..4].copy_from_slice(&len.to_be_bytes());
            let more = if end < payload.len() { 0x2000 } else { 0 };
            let flags = more | (offset / 8) as u16;
            f[6..8].copy_from_slice(&flags.to_be_bytes());
            f[10] = 0;
            f[11] = 0;
            let sum = wire::checksum(&f[..20]);
            f[10..12].copy_from_slice(&sum.to_be_bytes());
            out.push(f);
            offset = end;
        }
        out
    }

    fn datagram(len: usize, ident: u16) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        wire::udp_datagram(
            SocketAddrV4::new(A, 40000),
            SocketAddrV4::new(B, 53),
            &payload,
            ident,
        )
        .expect("fits")
    }

    fn push_all(r: &mut Reassembler, frags: &[Vec<u8>]) -> Vec<Reassembly> {
        frags
            .iter()
            .map(|f| {
                let Inbound::Fragment(ip) = classify(f) else {
                    panic!("not a fragment: {:?}", classify(f));
                };
                r.push(ip, 0)
            })
            .collect()
    }

    #[test]
    fn reassembles_in_any_order() {
        let whole = datagram(4000, 7);
        let mut frags = fragment(&whole, 1500);
        assert_eq!(frags.len(), 3);
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let shuffled: Vec<Vec<u8>> = order.iter().map(|&i| frags[i].clone()).collect();
            let mut r = Reassembler::new(4, 30_000);
            let results = push_all(&mut r, &shuffled);
            assert_eq!(
                results[..2],
                [Reassembly::Incomplete, Reassembly::Incomplete]
            );
            assert_eq!(
                results[2],
                Reassembly::Complete(whole.clone()),
                "order {order:?}"
            );
            assert!(r.pending.is_empty());
        }
        // A duplicate fragment is ignored.
        let mut r = Reassembler::new(4, 30_000);
        frags.insert(1, frags[0].clone());
        let results = push_all(&mut r, &frags);
        assert_eq!(results[3], Reassembly::Complete(whole));
    }

    #[test]
    fn reassembled_datagram_classifies() {
        let whole = datagram(9000, 9);
        let mut r = Reassembler::new(4, 30_000);
        let last = push_all(&mut r, &fragment(&whole, 1280))
            .pop()
            .expect("fragments");
        let Reassembly::Complete(packet) = last else {
            panic!("{last:?}");
        };
        match classify(&packet) {
            Inbound::Udp { payload, .. } => assert_eq!(payload.len(), 9000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlaps_and_inconsistencies_drop_the_packet() {
        let whole = datagram(4000, 11);
        let frags = fragment(&whole, 1500);
        // The second fragment again, moved 8 bytes: overlaps the first.
        let mut shifted = frags[1].clone();
        let flags = u16::from_be_bytes([shifted[6], shifted[7]]) - 1;
        shifted[6..8].copy_from_slice(&flags.to_be_bytes());
        shifted[10] = 0;
        shifted[11] = 0;
        let sum = wire::checksum(&shifted[..20]);
        shifted[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut r = Reassembler::new(4, 30_000);
        let results = push_all(&mut r, &[frags[0].clone(), shifted, frags[1].clone()]);
        assert_eq!(results[1], Reassembly::Dropped(DropReason::Fragment));
        assert!(matches!(results[2], Reassembly::Incomplete), "starts over");

        // Two different "last" fragments.
        let mut r = Reassembler::new(4, 30_000);
        let mut short_last = frags[2].clone();
        short_last.truncate(short_last.len() - 8);
        let len = short_last.len() as u16;
        short_last[2..4].copy_from_slice(&len.to_be_bytes());
        short_last[10] = 0;
        short_last[11] = 0;
        let sum = wire::checksum(&short_last[..20]);
        short_last[10..12].copy_from_slice(&sum.to_be_bytes());
        let results = push_all(&mut r, &[frags[2].clone(), short_last]);
        assert_eq!(results[1], Reassembly::Dropped(DropReason::Fragment));
    }

    #[test]
    fn bounded_and_expiring() {
        let mut r = Reassembler::new(2, 1000);
        for ident in 0..5u16 {
            let frags = fragment(&datagram(3000, ident), 1500);
            let Inbound::Fragment(ip) = classify(&frags[0]) else {
                panic!("not a fragment");
            };
            assert_eq!(r.push(ip, u64::from(ident)), Reassembly::Incomplete);
            assert!(r.pending.len() <= 2);
        }
        assert_eq!(r.expire(999), 0);
        assert_eq!(r.expire(1004), 2);
    }

    /// Random fragments never panic and never grow the table beyond its bound.
    #[test]
    fn random_fragments_never_panic() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut r = Reassembler::new(8, 1000);
        let base = fragment(&datagram(3000, 1), 600);
        for i in 0..50_000u64 {
            let mut f = base[(next() as usize) % base.len()].clone();
            // Random identification (few values, so that packets collide), flags and offset.
            f[5] = (next() % 4) as u8;
            f[6] = (next() as u8) & 0x3f;
            f[7] = next() as u8;
            let cut = 20 + (next() as usize) % (f.len() - 19);
            f.truncate(cut);
            let len = f.len() as u16;
            f[2..4].copy_from_slice(&len.to_be_bytes());
            f[10] = 0;
            f[11] = 0;
            let sum = wire::checksum(&f[..20]);
            f[10..12].copy_from_slice(&sum.to_be_bytes());
            if let Inbound::Fragment(ip) = classify(&f)
                && let Reassembly::Complete(p) = r.push(ip, i / 100)
            {
                let _ = classify(&p);
            }
            assert!(r.pending.len() <= 8);
            r.expire(i / 100);
        }
    }
}
