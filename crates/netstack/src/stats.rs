//! Counters of the stack, shared with the caller (for `kubelan status` and tests).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the stack updates while it runs. Share one `Arc<Stats>` with [`run`](crate::run)
/// and read it at any time; [`Stats::snapshot`] gives plain numbers.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Packets read from the TUN device.
    pub packets_in: AtomicU64,
    /// Packets written to the TUN device.
    pub packets_out: AtomicU64,
    /// TCP connections handed to the handler.
    pub tcp_flows: AtomicU64,
    /// TCP connections whose handler is still running (a gauge).
    pub tcp_open: AtomicU64,
    /// smoltcp sockets reset as they entered TIME-WAIT (the stack closed first; see the
    /// stack's documentation), instead of being kept for 10 s.
    pub tcp_time_wait_reset: AtomicU64,
    /// TCP connections the handler aborted (`TcpStream::abort`): reset on both sides
    /// instead of closed with a FIN.
    pub tcp_aborted: AtomicU64,
    /// UDP flows handed to the handler.
    pub udp_flows: AtomicU64,
    /// UDP datagrams dropped because their flow's queue was full.
    pub udp_dropped: AtomicU64,
    /// ICMP echo requests seen.
    pub icmp_requests: AtomicU64,
    /// ICMP echo replies written (requests the handler answered with `true`).
    pub icmp_replies: AtomicU64,
    /// Packets the stack dropped itself: malformed, unsupported (IPv6, other protocols,
    /// ICMP other than echo requests, broadcast or multicast), fragments that could not be
    /// reassembled, over a limit (TCP flows, echo requests in flight), or refused by the
    /// TUN device on write.
    pub dropped: AtomicU64,
}

/// The values of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// See [`Stats::packets_in`].
    pub packets_in: u64,
    /// See [`Stats::packets_out`].
    pub packets_out: u64,
    /// See [`Stats::tcp_flows`].
    pub tcp_flows: u64,
    /// See [`Stats::tcp_open`].
    pub tcp_open: u64,
    /// See [`Stats::tcp_time_wait_reset`].
    pub tcp_time_wait_reset: u64,
    /// See [`Stats::tcp_aborted`].
    pub tcp_aborted: u64,
    /// See [`Stats::udp_flows`].
    pub udp_flows: u64,
    /// See [`Stats::udp_dropped`].
    pub udp_dropped: u64,
    /// See [`Stats::icmp_requests`].
    pub icmp_requests: u64,
    /// See [`Stats::icmp_replies`].
    pub icmp_replies: u64,
    /// See [`Stats::dropped`].
    pub dropped: u64,
}

impl Stats {
    /// Reads all counters (each one atomically; together they are not one consistent cut).
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            packets_in: get(&self.packets_in),
            packets_out: get(&self.packets_out),
            tcp_flows: get(&self.tcp_flows),
            tcp_open: get(&self.tcp_open),
            tcp_time_wait_reset: get(&self.tcp_time_wait_reset),
            tcp_aborted: get(&self.tcp_aborted),
            udp_flows: get(&self.udp_flows),
            udp_dropped: get(&self.udp_dropped),
            icmp_requests: get(&self.icmp_requests),
            icmp_replies: get(&self.icmp_replies),
            dropped: get(&self.dropped),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
