//! UDP flows: datagrams keyed by (source, destination), each key one flow with a bounded
//! queue, forgotten after an idle timeout. The table is driven by the ingress task with
//! explicit timestamps, so its rules are tested without a TUN device or a clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::NetstackError;
use crate::egress::Egress;
use crate::wire;

/// Milliseconds since the stack started; stored in atomics shared with the repliers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// What the table and the flow's replier share.
#[derive(Debug)]
pub(crate) struct FlowState {
    /// Last datagram in either direction, in [`Clock`] milliseconds.
    last_active_ms: AtomicU64,
    /// Set when the stack forgot the flow.
    closed: AtomicBool,
}

impl FlowState {
    fn new(now_ms: u64) -> Self {
        Self {
            last_active_ms: AtomicU64::new(now_ms),
            closed: AtomicBool::new(false),
        }
    }

    fn touch(&self, now_ms: u64) {
        self.last_active_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    fn last_active(&self) -> u64 {
        self.last_active_ms.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// Limits of the UDP flow table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpLimits {
    /// Flows kept at most; the one idle longest is evicted for a new one.
    pub(crate) max_flows: usize,
    /// Datagrams queued per flow before new ones are dropped.
    pub(crate) queue_len: usize,
    /// A flow without a datagram either way for this long is forgotten.
    pub(crate) idle_ms: u64,
}

struct Entry {
    datagrams_tx: mpsc::Sender<Bytes>,
    state: Arc<FlowState>,
}

/// What became of a datagram.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Queued on its existing flow.
    Queued,
    /// Dropped: the flow's queue is full.
    QueueFull,
    /// It opened a new flow (and is the first item of `datagrams_rx`).
    NewFlow {
        datagrams_rx: mpsc::Receiver<Bytes>,
        state: Arc<FlowState>,
    },
}

/// The UDP flows, owned by the ingress task.
pub(crate) struct UdpFlows {
    flows: HashMap<(SocketAddr, SocketAddr), Entry>,
    limits: UdpLimits,
}

impl UdpFlows {
    pub(crate) fn new(limits: UdpLimits) -> Self {
        Self {
            flows: HashMap::new(),
            limits: UdpLimits {
                max_flows: limits.max_flows.max(1),
                queue_len: limits.queue_len.max(1),
                idle_ms: limits.idle_ms,
            },
        }
    }

    /// Number of flows in the table.
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// Routes one datagram from `src` to `dst` to its flow, creating the flow if needed.
    pub(crate) fn deliver(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
        now_ms: u64,
    ) -> Delivery {
        let key = (src, dst);
        let payload = match self.flows.get(&key) {
            Some(entry) if self.is_idle(entry, now_ms) => {
                self.forget(&key);
                payload
            }
            Some(entry) => {
                entry.state.touch(now_ms);
                match entry.datagrams_tx.try_send(payload) {
                    Ok(()) => return Delivery::Queued,
                    Err(mpsc::error::TrySendError::Full(_)) => return Delivery::QueueFull,
                    // The handler let go of the flow; this datagram starts a new one.
                    Err(mpsc::error::TrySendError::Closed(payload)) => {
                        self.forget(&key);
                        payload
                    }
                }
            }
            None => payload,
        };

        if self.flows.len() >= self.limits.max_flows {
            self.evict_one();
        }
        let (datagrams_tx, datagrams_rx) = mpsc::channel(self.limits.queue_len);
        // Cannot fail: the channel is new and has room for at least one datagram.
        let _ = datagrams_tx.try_send(payload);
        let state = Arc::new(FlowState::new(now_ms));
        self.flows.insert(
            key,
            Entry {
                datagrams_tx,
                state: state.clone(),
            },
        );
        Delivery::NewFlow {
            datagrams_rx,
            state,
        }
    }

    /// Forgets every flow idle for the timeout; their receivers end once drained.
    pub(crate) fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.flows.len();
        let idle_ms = self.limits.idle_ms;
        self.flows.retain(|_, entry| {
            let keep = now_ms.saturating_sub(entry.state.last_active()) < idle_ms
                && !entry.datagrams_tx.is_closed();
            if !keep {
                entry.state.close();
            }
            keep
        });
        before - self.flows.len()
    }

    fn is_idle(&self, entry: &Entry, now_ms: u64) -> bool {
        now_ms.saturating_sub(entry.state.last_active()) >= self.limits.idle_ms
    }

    fn forget(&mut self, key: &(SocketAddr, SocketAddr)) {
        if let Some(entry) = self.flows.remove(key) {
            entry.state.close();
        }
    }

    /// Removes the flow that has been idle longest (a linear scan, only when the table is full).
    fn evict_one(&mut self) {
        let oldest = self
            .flows
            .iter()
            .min_by_key(|(_, entry)| entry.state.last_active())
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            tracing::debug!(src = %key.0, dst = %key.1, "UDP flow table full, evicting the flow idle longest");
            self.forget(&key);
        }
    }
}

/// One UDP flow: the datagrams an application sends from `src` to `dst`, and a way to
/// answer. The flow ends (`rx` yields `None`) when it was idle in both directions for the
/// configured timeout or was evicted to make room; a later datagram opens a new flow.
#[derive(Debug)]
#[non_exhaustive]
pub struct UdpFlow {
    /// The application's address (the datagrams' source).
    pub src: SocketAddr,
    /// The address the application sends to.
    pub dst: SocketAddr,
    /// Payloads of the datagrams from `src` to `dst`, the first one included.
    pub rx: mpsc::Receiver<Bytes>,
    /// Sends datagrams from `dst` back to `src`.
    pub tx: UdpReplier,
}

/// Sends replies of one [`UdpFlow`]: datagrams from the flow's destination to its source,
/// written into the TUN device. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UdpReplier {
    src: SocketAddr,
    dst: SocketAddr,
    state: Arc<FlowState>,
    egress: Egress,
    clock: Clock,
}

impl UdpReplier {
    pub(crate) fn new(
        src: SocketAddr,
        dst: SocketAddr,
        state: Arc<FlowState>,
        egress: Egress,
        clock: Clock,
    ) -> Self {
        Self {
            src,
            dst,
            state,
            egress,
            clock,
        }
    }

    /// Sends `payload` as one datagram from the flow's destination to its source. Waits
    /// while the queue toward the TUN device is full. A reply counts as activity and keeps
    /// the flow from expiring.
    ///
    /// # Errors
    ///
    /// [`NetstackError::UdpFlowClosed`] when the stack forgot the flow,
    /// [`NetstackError::DatagramTooLarge`] when the payload does not fit into one packet,
    /// [`NetstackError::Ipv6Unsupported`] for IPv6 flows (not created yet), and
    /// [`NetstackError::StackStopped`] when the stack is gone.
    pub async fn send(&self, payload: Bytes) -> Result<(), NetstackError> {
        if self.state.is_closed() {
            return Err(NetstackError::UdpFlowClosed {
                src: self.src,
                dst: self.dst,
            });
        }
        let (SocketAddr::V4(from), SocketAddr::V4(to)) = (self.dst, self.src) else {
            return Err(NetstackError::Ipv6Unsupported {
                addr: self.src.ip(),
            });
        };
        let packet =
            wire::udp_datagram(from, to, &payload, self.egress.next_ip_ident()).map_err(|max| {
                NetstackError::DatagramTooLarge {
                    len: payload.len(),
                    max,
                }
            })?;
        self.egress.send(packet).await?;
        self.state.touch(self.clock.now_ms());
        Ok(())
    }

    /// Whether the stack has forgotten this flow (replies would fail).
    pub fn is_closed(&self) -> bool {
        self.state.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 250, 255, 1], port))
    }

    const DST: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 250, 0, 5)),
        53,
    );

    fn table(max_flows: usize, queue_len: usize) -> UdpFlows {
        UdpFlows::new(UdpLimits {
            max_flows,
            queue_len,
            idle_ms: 1000,
        })
    }

    fn new_flow(d: Delivery) -> (mpsc::Receiver<Bytes>, Arc<FlowState>) {
        match d {
            Delivery::NewFlow {
                datagrams_rx,
                state,
            } => (datagrams_rx, state),
            other => panic!("expected a new flow, got {other:?}"),
        }
    }

    #[test]
    fn same_key_same_flow_until_idle() {
        let mut t = table(16, 8);
        let (mut rx, state) = new_flow(t.deliver(addr(1000), DST, Bytes::from_static(b"a"), 0));
        assert!(matches!(
            t.deliver(addr(1000), DST, Bytes::from_static(b"b"), 500),
            Delivery::Queued
        ));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"a"));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"b"));
        // Another source port is another flow.
        let _other = new_flow(t.deliver(addr(1001), DST, Bytes::from_static(b"c"), 600));
        assert_eq!(t.len(), 2);
        // 1000 ms after the last datagram the flow is gone; a datagram opens a new one.
        assert_eq!(t.expire(1499), 0);
        assert_eq!(t.expire(1500), 1);
        assert!(state.is_closed());
        assert!(rx.try_recv().is_err());
        assert!(rx.is_closed());
        let (_rx2, state2) = new_flow(t.deliver(addr(1000), DST, Bytes::from_static(b"d"), 1600));
        assert!(!state2.is_closed());
    }

    #[test]
    fn idle_flow_is_replaced_even_before_the_sweep() {
        let mut t = table(16, 8);
        let (_rx, state) = new_flow(t.deliver(addr(1000), DST, Bytes::new(), 0));
        let (_rx2, _) = new_flow(t.deliver(addr(1000), DST, Bytes::new(), 5000));
        assert!(state.is_closed());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn replies_keep_a_flow_alive() {
        let mut t = table(16, 8);
        let (_rx, state) = new_flow(t.deliver(addr(1000), DST, Bytes::new(), 0));
        state.touch(900); // what UdpReplier::send does
        assert_eq!(t.expire(1500), 0);
        assert_eq!(t.expire(1900), 1);
    }

    #[test]
    fn full_queue_drops() {
        let mut t = table(16, 2);
        let (mut rx, _) = new_flow(t.deliver(addr(1000), DST, Bytes::from_static(b"1"), 0));
        assert!(matches!(
            t.deliver(addr(1000), DST, Bytes::from_static(b"2"), 1),
            Delivery::Queued
        ));
        assert!(matches!(
            t.deliver(addr(1000), DST, Bytes::from_static(b"3"), 2),
            Delivery::QueueFull
        ));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"1"));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"2"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn table_is_bounded_and_evicts_the_longest_idle() {
        let mut t = table(3, 4);
        let (_a, a) = new_flow(t.deliver(addr(1), DST, Bytes::new(), 10));
        let (_b, b) = new_flow(t.deliver(addr(2), DST, Bytes::new(), 20));
        let (_c, c) = new_flow(t.deliver(addr(3), DST, Bytes::new(), 30));
        // Flow a is used again, so b is now the one idle longest.
        assert!(matches!(
            t.deliver(addr(1), DST, Bytes::new(), 40),
            Delivery::Queued
        ));
        let (_d, d) = new_flow(t.deliver(addr(4), DST, Bytes::new(), 50));
        assert_eq!(t.len(), 3);
        assert!(b.is_closed());
        assert!(!a.is_closed() && !c.is_closed() && !d.is_closed());
    }

    #[test]
    fn dropped_receiver_starts_a_new_flow() {
        let mut t = table(16, 4);
        let (rx, state) = new_flow(t.deliver(addr(1), DST, Bytes::new(), 0));
        drop(rx);
        let _ = new_flow(t.deliver(addr(1), DST, Bytes::new(), 1));
        assert!(state.is_closed());
        assert_eq!(t.len(), 1);
    }
}
