//! The running stack: the tasks between the TUN device, smoltcp and the [`Handler`].
//!
//! ```text
//!             ┌──────────── ingress task ─────────────┐
//!  TUN ──read─┤ classify: TCP ──► smoltcp (runner task)├──► accept loop (run) ──► Handler::tcp
//!             │           UDP ──► flow table ──────────┼──► Handler::udp
//!             │           echo request ────────────────┼──► Handler::icmp_echo
//!             └────────────────────────────────────────┘
//!  TUN ◄─write── egress task ◄── smoltcp output, UDP replies, echo replies (bounded queues)
//! ```
//!
//! Every task lives in a `JoinSet` owned by [`run`]'s future (or by a task in one), so
//! dropping that future aborts all of them, handler futures included, and closes the TUN
//! device, which removes the interface.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use netstack_smoltcp::StackBuilder;
use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinSet};
use tun_rs::{AsyncDevice, GROTable, VIRTIO_NET_HDR_LEN};

use crate::egress::Egress;
use crate::frag::{Reassembler, Reassembly};
use crate::portmap::{self, FromStack, PortMap};
use crate::stats::bump;
use crate::udp::{Clock, Delivery, UdpFlows, UdpLimits};
use crate::wire::{self, DropReason, Inbound};
use crate::{EchoRequest, Handler, NetstackError, Stats, TcpFlow, Tun, UdpFlow, UdpReplier};

/// Packets queued toward the TUN device from UDP replies and echo replies.
const EGRESS_QUEUE: usize = 1024;
/// RSTs for smoltcp's TIME-WAIT sockets waiting to be fed to it; more are not sent (the
/// socket then just lives its 10 s).
const RESET_QUEUE: usize = 1024;
/// Packets read from the TUN device in one go before other work gets a turn.
const READ_BATCH: usize = 64;
/// Largest IPv4 packet; TUN reads never return more (plus the offload header).
const MAX_PACKET: usize = 65535;
/// Segments one offloaded read may split into: 64 KiB at the smallest MSS the stack
/// announces (MTU 1280) is 53; a UDP super-packet with smaller segments than 512 bytes
/// is dropped (the application's UDP_SEGMENT size, QUIC uses ~1200).
const READ_SEGMENTS: usize = 128;
/// Packets written to the TUN device with one `send_multiple`: consecutive segments of one
/// TCP flow among them leave as one super-packet (64 KiB is 45 segments at MSS 1460).
const WRITE_BATCH: usize = 64;
/// How long a SYN is remembered to recognise its retransmissions.
const SYN_MEMORY_MS: u64 = 75_000;
/// SYNs remembered at most.
const SYN_MEMORY_ENTRIES: usize = 16_384;
/// TCP connections whose smoltcp-side port is remapped at most (see `portmap`).
const PORTMAP_ENTRIES: usize = 262_144;
/// Fragmented packets in reassembly at most (each up to 64 KiB).
const REASSEMBLY_SLOTS: usize = 64;
/// How long a fragmented packet may take to complete (Linux's `ipfrag_time`).
const REASSEMBLY_TIMEOUT_MS: u64 = 30_000;

/// Tuning of the stack. Start from [`Default`] and change what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackConfig {
    /// The TUN device's MTU. smoltcp sends packets of at most this size and announces a TCP
    /// MSS of `mtu - 40`, so the kernel's segments toward us fit too.
    pub mtu: u16,
    /// A UDP flow without a datagram in either direction for this long is forgotten (its
    /// `rx` ends). Default 60 s.
    pub udp_idle_timeout: Duration,
    /// Bytes of each TCP connection's receive and send window (default 256 KiB). smoltcp
    /// has no window auto-tuning and its ACKs come from a userspace loop, so the window
    /// bounds throughput even on the local hop (measured: 64 KiB gave 0.15 Gbit/s up where
    /// 256 KiB gives ~0.7). Memory: every connection holds four buffers of this size
    /// (smoltcp's and netstack-smoltcp's, each way), touched as data passes, until its
    /// socket is freed (10 s after the close when this side closed first).
    pub tcp_buffer_size: usize,
    /// TCP connections at most; SYNs beyond are dropped (the application retries).
    /// Default 4096.
    pub max_tcp_flows: usize,
    /// UDP flows at most; the one idle longest is evicted for a new one. Default 4096.
    pub max_udp_flows: usize,
    /// Datagrams queued per UDP flow toward the handler; more are dropped and counted in
    /// [`Stats::udp_dropped`]. Default 128.
    pub udp_queue_len: usize,
    /// Echo requests waiting for the handler at most; more are dropped. Default 256.
    pub max_echo_in_flight: usize,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            mtu: 1500,
            udp_idle_timeout: Duration::from_secs(60),
            tcp_buffer_size: 256 * 1024,
            max_tcp_flows: 4096,
            max_udp_flows: 4096,
            udp_queue_len: 128,
            max_echo_in_flight: 256,
        }
    }
}

/// What a [`TcpStream`](crate::TcpStream) needs from the stack to end its connection with
/// a reset, and to tell an application's reset from its FIN. One per stack, shared by
/// every stream (one pointer per connection).
#[derive(Debug)]
pub(crate) struct Resets {
    ports: Arc<std::sync::Mutex<PortMap>>,
    egress: Egress,
    /// RSTs for smoltcp, fed to it by the TUN reader.
    to_stack: mpsc::Sender<Vec<u8>>,
    stats: Arc<Stats>,
    clock: Clock,
}

impl Resets {
    /// Resets the connection smoltcp sees as `stack_src` ↔ `dst` on both sides: an RST to
    /// the application right after what smoltcp sent it, RSTs to smoltcp as if from the
    /// application (which frees its socket without a FIN); from the moment this is called
    /// nothing else smoltcp sends on the connection reaches the application. Returns
    /// `false` when the connection cannot be reset that way (see [`PortMap::abort`]).
    pub(crate) async fn abort(&self, stack_src: SocketAddr, dst: SocketAddr) -> bool {
        let plan = lock(&self.ports).abort(stack_src, dst, self.clock.now_ms());
        let Some(plan) = plan else {
            return false;
        };
        bump(&self.stats.tcp_aborted);
        tracing::debug!(app = %plan.app, %dst, "resetting an aborted TCP flow");
        // The application's RST joins the writer's queue behind what smoltcp sent before.
        if let Some(rst) = wire::tcp_reset(dst, plan.app, plan.app_seq) {
            let _ = self.egress.send(rst).await;
        }
        for seq in plan.stack_seqs.into_iter().flatten() {
            if let Some(rst) = wire::tcp_reset(stack_src, dst, seq) {
                let _ = self.to_stack.send(rst).await;
            }
        }
        true
    }

    /// Whether the application reset the connection smoltcp sees as `stack_src` ↔ `dst`.
    pub(crate) fn reset_by_app(&self, stack_src: SocketAddr, dst: SocketAddr) -> bool {
        lock(&self.ports).reset_by_app(stack_src, dst)
    }
}

/// The userspace network stack. See [`run`] (this is the same as [`Stack::run`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Stack;

impl Stack {
    /// Runs the stack on `tun`; see [`run`].
    ///
    /// # Errors
    ///
    /// As [`run`].
    pub async fn run(
        tun: Tun,
        cfg: StackConfig,
        handler: Arc<dyn Handler>,
        stats: Arc<Stats>,
    ) -> Result<(), NetstackError> {
        run(tun, cfg, handler, stats).await
    }
}

/// Runs the stack on `tun` until this future is dropped (the caller cancels it) or the TUN
/// device fails. Flows go to `handler`; counters to `stats`. Must be polled inside a tokio
/// runtime (multi-thread or current-thread) with IO and time enabled. Dropping the future
/// aborts every task it started and closes the device, which removes the interface.
///
/// # Errors
///
/// Only when the stack cannot go on: [`NetstackError::TunRegister`] at the start,
/// [`NetstackError::TunRead`] / [`NetstackError::TunWrite`] when the device fails (e.g. it
/// was deleted), [`NetstackError::TcpStack`] or [`NetstackError::TaskPanicked`] on internal
/// failures.
pub async fn run(
    tun: Tun,
    cfg: StackConfig,
    handler: Arc<dyn Handler>,
    stats: Arc<Stats>,
) -> Result<(), NetstackError> {
    let name = tun.name().to_owned();
    let device =
        Arc::new(
            AsyncDevice::new(tun.device).map_err(|source| NetstackError::TunRegister {
                name: name.clone(),
                source,
            })?,
        );

    let window = u32::try_from(cfg.tcp_buffer_size)
        .unwrap_or(u32::MAX)
        .max(u32::from(cfg.mtu));
    let (stack, runner, _udp, listener) = StackBuilder::default()
        .enable_tcp(true)
        // UDP and ICMP are handled here: UDP needs per-flow state and cloneable repliers,
        // and smoltcp would answer every ping itself.
        .enable_udp(false)
        .enable_icmp(false)
        .mtu(usize::from(cfg.mtu))
        .tcp_recv_buffer_size(window)
        .tcp_send_buffer_size(window)
        .build()
        .map_err(|source| NetstackError::TcpStack {
            what: "cannot build the smoltcp interface",
            source: Some(source),
        })?;
    let (Some(runner), Some(mut listener)) = (runner, listener) else {
        return Err(NetstackError::TcpStack {
            what: "netstack-smoltcp built no TCP runner",
            source: None,
        });
    };
    let (stack_sink, stack_stream) = stack.split();

    let (packets_tx, packets_rx) = mpsc::channel(EGRESS_QUEUE);
    let (resets_tx, resets_rx) = mpsc::channel(RESET_QUEUE);
    let egress = Egress {
        packets_tx,
        ip_ident: Arc::new(AtomicU16::new(initial_ip_ident())),
    };
    let tcp_active = Arc::new(AtomicUsize::new(0));
    let ports = Arc::new(std::sync::Mutex::new(PortMap::new(PORTMAP_ENTRIES)));
    let clock = Clock::new();
    let resets = Arc::new(Resets {
        ports: ports.clone(),
        egress: egress.clone(),
        to_stack: resets_tx.clone(),
        stats: stats.clone(),
        clock,
    });

    // The long-lived tasks; each returns why it stopped.
    let mut core: JoinSet<NetstackError> = JoinSet::new();
    let mut core_names: HashMap<Id, &'static str> = HashMap::new();
    let id = core
        .spawn(async move {
            match runner.await {
                Ok(()) => NetstackError::TcpStack {
                    what: "the smoltcp runner ended",
                    source: None,
                },
                Err(source) => NetstackError::TcpStack {
                    what: "the smoltcp runner failed",
                    source: Some(source),
                },
            }
        })
        .id();
    core_names.insert(id, "smoltcp runner");
    let ingress = Ingress {
        device: device.clone(),
        name: name.clone(),
        mtu: cfg.mtu,
        stack_sink,
        udp: UdpFlows::new(UdpLimits {
            max_flows: cfg.max_udp_flows,
            queue_len: cfg.udp_queue_len,
            idle_ms: u64::try_from(cfg.udp_idle_timeout.as_millis()).unwrap_or(u64::MAX),
        }),
        syns: SynFilter::new(SYN_MEMORY_ENTRIES, SYN_MEMORY_MS),
        fragments: Reassembler::new(REASSEMBLY_SLOTS, REASSEMBLY_TIMEOUT_MS),
        clock,
        ports: ports.clone(),
        handler: handler.clone(),
        stats: stats.clone(),
        egress,
        resets_rx,
        udp_handlers: JoinSet::new(),
        echo_handlers: JoinSet::new(),
        tcp_active: tcp_active.clone(),
        max_tcp_flows: cfg.max_tcp_flows,
        max_echo_in_flight: cfg.max_echo_in_flight.max(1),
        sweep_every: (cfg.udp_idle_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1)),
    };
    let id = core.spawn(ingress.run()).id();
    core_names.insert(id, "TUN reader");
    let id = core
        .spawn(egress_loop(
            device,
            name,
            stack_stream,
            packets_rx,
            resets_tx,
            stats.clone(),
            (ports.clone(), clock),
        ))
        .id();
    core_names.insert(id, "TUN writer");

    let mut tcp_handlers: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.next() => {
                let Some((stream, src, dst)) = accepted else {
                    return Err(NetstackError::TcpStack { what: "the smoltcp listener closed", source: None });
                };
                bump(&stats.tcp_flows);
                let src = lock(&ports).original(src, dst);
                tracing::debug!(%src, %dst, "new TCP flow");
                let active = ActiveFlow::new(tcp_active.clone(), stats.clone());
                let flow = handler.tcp(TcpFlow::new(src, dst, stream, resets.clone()));
                tcp_handlers.spawn(async move {
                    let _active = active;
                    flow.await;
                });
            }
            Some(stopped) = core.join_next_with_id() => {
                return Err(match stopped {
                    Ok((_, why)) => why,
                    Err(e) => {
                        let what = core_names.get(&e.id()).copied().unwrap_or("stack task");
                        if e.is_panic() {
                            NetstackError::TaskPanicked { what }
                        } else {
                            NetstackError::TcpStack { what: "a stack task was cancelled", source: None }
                        }
                    }
                });
            }
            Some(done) = tcp_handlers.join_next() => log_handler_end(done, "TCP"),
        }
    }
}

/// Starts IPv4 identifications somewhere unpredictable-ish (they only need to differ
/// between packets in flight at the same time).
fn initial_ip_ident() -> u16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u16)
        .unwrap_or(0)
}

/// Reports a handler that panicked; normal ends and aborts are silent.
fn log_handler_end(done: Result<(), JoinError>, kind: &str) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::warn!("a {kind} flow handler panicked: {e}");
    }
}

/// Counts a TCP flow as active while its handler runs.
struct ActiveFlow(Arc<AtomicUsize>, Arc<Stats>);

impl ActiveFlow {
    fn new(count: Arc<AtomicUsize>, stats: Arc<Stats>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        stats.tcp_open.fetch_add(1, Ordering::Relaxed);
        Self(count, stats)
    }
}

impl Drop for ActiveFlow {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.tcp_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads the TUN device and dispatches each packet; owns the UDP flows and the handler
/// tasks of UDP and ICMP.
struct Ingress {
    device: Arc<AsyncDevice>,
    name: String,
    mtu: u16,
    stack_sink: SplitSink<netstack_smoltcp::Stack, Vec<u8>>,
    udp: UdpFlows,
    syns: SynFilter,
    fragments: Reassembler,
    clock: Clock,
    ports: Arc<std::sync::Mutex<PortMap>>,
    handler: Arc<dyn Handler>,
    stats: Arc<Stats>,
    egress: Egress,
    /// RSTs from the writer for smoltcp sockets entering TIME-WAIT (see `egress_loop`).
    resets_rx: mpsc::Receiver<Vec<u8>>,
    udp_handlers: JoinSet<()>,
    echo_handlers: JoinSet<()>,
    tcp_active: Arc<AtomicUsize>,
    max_tcp_flows: usize,
    max_echo_in_flight: usize,
    sweep_every: Duration,
}

impl Ingress {
    async fn run(mut self) -> NetstackError {
        match self.run_inner().await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn run_inner(&mut self) -> Result<std::convert::Infallible, NetstackError> {
        // With offload, one read is up to 64 KiB of one flow plus the virtio header, split
        // into `segments`; without, the packet lands in `segments[0]` as it is.
        let mut raw = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
        let segment_len = usize::from(self.mtu).max(1500) + 64;
        let mut segments: Vec<Vec<u8>> = (0..READ_SEGMENTS)
            .map(|i| vec![0u8; if i == 0 { MAX_PACKET } else { segment_len }])
            .collect();
        let mut sizes = vec![0usize; READ_SEGMENTS];
        let mut sweep = tokio::time::interval(self.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.device.recv_multiple(&mut raw, &mut segments, &mut sizes, 0) => {
                    if let Some(n) = self.read_result(received)? {
                        self.on_segments(&segments, &sizes[..n]).await?;
                    }
                    // Drain what else is ready without going back to the reactor.
                    for _ in 1..READ_BATCH {
                        match self.device.try_recv_multiple(&mut raw, &mut segments, &mut sizes, 0) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            received => {
                                if let Some(n) = self.read_result(received)? {
                                    self.on_segments(&segments, &sizes[..n]).await?;
                                }
                            }
                        }
                    }
                }
                _ = sweep.tick() => {
                    let now = self.clock.now_ms();
                    let expired = self.udp.expire(now);
                    if expired > 0 {
                        tracing::debug!(expired, remaining = self.udp.len(), "UDP flows expired");
                    }
                    self.syns.purge(now);
                    lock(&self.ports).expire(now);
                    let incomplete = self.fragments.expire(now);
                    self.stats.dropped.fetch_add(incomplete as u64, Ordering::Relaxed);
                }
                Some(reset) = self.resets_rx.recv() => self.feed_smoltcp(reset).await?,
                Some(done) = self.udp_handlers.join_next() => log_handler_end(done, "UDP"),
                Some(done) = self.echo_handlers.join_next() => log_handler_end(done, "ICMP echo"),
            }
        }
    }

    /// How many segments a read produced; `None` when there is nothing to process (an
    /// interrupted read, or an offloaded packet that could not be split, which is dropped
    /// and counted like any other malformed packet). Errors of the device itself end the
    /// stack.
    fn read_result(&self, received: io::Result<usize>) -> Result<Option<usize>, NetstackError> {
        match received {
            Ok(n) => Ok(Some(n.min(READ_SEGMENTS))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            // tun-rs's own checks of the virtio header and the super-packet carry no errno.
            Err(e) if e.raw_os_error().is_none() => {
                tracing::debug!("dropping an offloaded packet that cannot be split: {e}");
                bump(&self.stats.dropped);
                Ok(None)
            }
            Err(source) => Err(NetstackError::TunRead {
                name: self.name.clone(),
                source,
            }),
        }
    }

    async fn on_segments(
        &mut self,
        segments: &[Vec<u8>],
        sizes: &[usize],
    ) -> Result<(), NetstackError> {
        for (segment, &len) in segments.iter().zip(sizes) {
            self.on_packet(&segment[..len.min(segment.len())]).await?;
        }
        Ok(())
    }

    /// Hands a TCP segment (ports as smoltcp knows them) to smoltcp.
    async fn feed_smoltcp(&mut self, packet: Vec<u8>) -> Result<(), NetstackError> {
        match self.stack_sink.send(packet).await {
            Ok(()) => Ok(()),
            // Cannot happen for packets `classify` accepted; drop rather than stop.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                tracing::debug!("smoltcp refused a packet: {e}");
                bump(&self.stats.dropped);
                Ok(())
            }
            Err(source) => Err(NetstackError::TcpStack {
                what: "smoltcp's input closed",
                source: Some(source),
            }),
        }
    }

    async fn on_packet(&mut self, packet: &[u8]) -> Result<(), NetstackError> {
        bump(&self.stats.packets_in);
        let reassembled;
        let inbound = match wire::classify(packet) {
            Inbound::Fragment(fragment) => match self.fragments.push(fragment, self.clock.now_ms())
            {
                Reassembly::Incomplete => return Ok(()),
                Reassembly::Dropped(reason) => Inbound::Drop(reason),
                Reassembly::Complete(whole) => {
                    reassembled = whole;
                    match wire::classify(&reassembled) {
                        // Reassembly clears the fragment fields; this cannot repeat.
                        Inbound::Fragment(_) => Inbound::Drop(DropReason::Fragment),
                        inbound => inbound,
                    }
                }
            },
            inbound => inbound,
        };
        match inbound {
            Inbound::Tcp {
                packet,
                src,
                dst,
                syn,
            } => {
                let mut packet = packet.to_vec();
                if let Some(isn) = syn {
                    // The limit first: a SYN dropped for it must not be remembered, or its
                    // retransmission would be taken for a duplicate once there is room.
                    if self.tcp_active.load(Ordering::Relaxed) >= self.max_tcp_flows {
                        tracing::debug!(%src, %dst, "too many TCP flows, dropping SYN");
                        bump(&self.stats.dropped);
                        return Ok(());
                    }
                    if self
                        .syns
                        .is_retransmission(src, dst, isn, self.clock.now_ms())
                    {
                        // netstack-smoltcp makes a new listening socket for every SYN; one
                        // made for a retransmitted SYN never gets its connection and would
                        // later take over another connection to the same destination.
                        // smoltcp retransmits the SYN-ACK itself, so nothing is lost.
                        tracing::trace!(%src, %dst, "dropping retransmitted SYN");
                        return Ok(());
                    }
                }
                let now = self.clock.now_ms();
                let mapped = portmap::segment(&packet)
                    .and_then(|seg| lock(&self.ports).inbound(src, dst, syn, &seg, now));
                if let Some(port) = mapped {
                    portmap::set_src_port(&mut packet, port);
                }
                self.feed_smoltcp(packet).await?;
            }
            Inbound::Udp { src, dst, payload } => {
                let now = self.clock.now_ms();
                match self
                    .udp
                    .deliver(src, dst, Bytes::copy_from_slice(payload), now)
                {
                    Delivery::Queued => {}
                    Delivery::QueueFull => bump(&self.stats.udp_dropped),
                    Delivery::NewFlow {
                        datagrams_rx,
                        state,
                    } => {
                        bump(&self.stats.udp_flows);
                        tracing::debug!(%src, %dst, "new UDP flow");
                        let flow = UdpFlow {
                            src,
                            dst,
                            rx: datagrams_rx,
                            tx: UdpReplier::new(src, dst, state, self.egress.clone(), self.clock),
                        };
                        self.udp_handlers.spawn(self.handler.udp(flow));
                    }
                }
            }
            Inbound::Echo(echo) => {
                bump(&self.stats.icmp_requests);
                if self.echo_handlers.len() >= self.max_echo_in_flight {
                    tracing::debug!(src = %echo.src, dst = %echo.dst, "too many echo requests in flight, dropping");
                    bump(&self.stats.dropped);
                    return Ok(());
                }
                let payload = Bytes::copy_from_slice(echo.payload);
                let answer = self.handler.icmp_echo(EchoRequest {
                    src: echo.src.into(),
                    dst: echo.dst.into(),
                    ident: echo.ident,
                    seq: echo.seq,
                    payload: payload.clone(),
                    ttl: echo.ttl,
                });
                let (egress, stats) = (self.egress.clone(), self.stats.clone());
                let (src, dst, ident, seq) = (echo.src, echo.dst, echo.ident, echo.seq);
                self.echo_handlers.spawn(async move {
                    if answer.await {
                        let reply = wire::echo_reply(
                            src,
                            dst,
                            ident,
                            seq,
                            &payload,
                            egress.next_ip_ident(),
                        );
                        if egress.send(reply).await.is_ok() {
                            bump(&stats.icmp_replies);
                        }
                    }
                });
            }
            Inbound::Drop(reason) => {
                tracing::trace!(?reason, len = packet.len(), "dropping packet");
                bump(&self.stats.dropped);
            }
            // Turned into a whole packet or a drop above.
            Inbound::Fragment(_) => bump(&self.stats.dropped),
        }
        Ok(())
    }
}

/// The port map, also after a panic elsewhere (its state stays consistent).
fn lock(m: &std::sync::Mutex<PortMap>) -> std::sync::MutexGuard<'_, PortMap> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes smoltcp's output and our own replies into the TUN device, in batches: what is
/// ready when the first packet arrives goes out with it, and on an offloading device
/// consecutive segments of one TCP flow in a batch become one super-packet.
async fn egress_loop(
    device: Arc<AsyncDevice>,
    name: String,
    mut stack_stream: SplitStream<netstack_smoltcp::Stack>,
    mut packets_rx: mpsc::Receiver<Vec<u8>>,
    resets_tx: mpsc::Sender<Vec<u8>>,
    stats: Arc<Stats>,
    (ports, clock): (Arc<std::sync::Mutex<PortMap>>, Clock),
) -> NetstackError {
    let offload = device.tcp_gso();
    let mut batch = WriteBatch::new(offload);
    let mut gro = GROTable::default();
    // smoltcp's packets go back to the application's own port (see `portmap`). A pure ACK
    // that puts a smoltcp socket into TIME-WAIT is followed by an RST to smoltcp, as if
    // from the application, which frees the socket (see `PortMap::enters_time_wait`).
    // Segments of a connection the handler aborted (`TcpStream::abort`) are dropped: the
    // application got an RST instead.
    let from_stack = |batch: &mut WriteBatch, mut packet: Vec<u8>| {
        if let Some((from, to)) = portmap::tcp_addrs(&packet)
            && let Some(seg) = portmap::segment(&packet)
        {
            let verdict = lock(&ports).stack_segment(to, from, &seg, clock.now_ms());
            match verdict {
                FromStack::Unmapped => {}
                FromStack::Drop => return,
                FromStack::Pass { port, time_wait } => {
                    if let Some(ack) = time_wait
                        && let Some(reset) = wire::tcp_reset(to, from, ack)
                        && resets_tx.try_send(reset).is_ok()
                    {
                        bump(&stats.tcp_time_wait_reset);
                    }
                    portmap::set_dst_port(&mut packet, port);
                }
            }
        }
        batch.push(&packet);
    };
    let output_failed = |source| NetstackError::TcpStack {
        what: "smoltcp's output failed",
        source: Some(source),
    };
    let output_closed = || NetstackError::TcpStack {
        what: "smoltcp's output closed",
        source: None,
    };
    loop {
        tokio::select! {
            out = stack_stream.next() => match out {
                Some(Ok(packet)) => from_stack(&mut batch, packet),
                Some(Err(source)) => return output_failed(source),
                None => return output_closed(),
            },
            Some(packet) = packets_rx.recv() => batch.push(&packet),
        }
        // Whatever else is ready joins the batch. smoltcp emits one segment per connection
        // each time its runner polls, and the runner yields between polls, so on an
        // offloading device this task yields too for as long as each turn brings more:
        // a bulk transfer then leaves in runs of segments that become one super-packet,
        // and a lone packet leaves after one turn without new output.
        let mut turns = 0;
        loop {
            let before = batch.len();
            while batch.len() < WRITE_BATCH {
                match stack_stream.next().now_or_never() {
                    Some(Some(Ok(packet))) => from_stack(&mut batch, packet),
                    Some(Some(Err(source))) => return output_failed(source),
                    Some(None) => return output_closed(),
                    None => break,
                }
            }
            while batch.len() < WRITE_BATCH {
                match packets_rx.try_recv() {
                    Ok(packet) => batch.push(&packet),
                    Err(_) => break,
                }
            }
            if !offload || batch.len() >= WRITE_BATCH || (turns > 0 && batch.len() == before) {
                break;
            }
            turns += 1;
            tokio::task::yield_now().await;
        }
        let packets = batch.len() as u64;
        match device
            .send_multiple(&mut gro, batch.packets(), VIRTIO_NET_HDR_LEN)
            .await
        {
            Ok(_) => {
                stats.packets_out.fetch_add(packets, Ordering::Relaxed);
            }
            // tun-rs writes every packet of the batch and reports the last error.
            Err(e) if is_transient_write_error(&e) => {
                tracing::debug!(packets, "TUN device refused a packet: {e}");
                bump(&stats.dropped);
            }
            // tun-rs refused to coalesce the batch (its checks carry no errno): nothing was
            // written; TCP sends again, and the device is fine.
            Err(e) if e.raw_os_error().is_none() => {
                tracing::debug!(packets, "dropping a batch tun-rs could not coalesce: {e}");
                stats.dropped.fetch_add(packets, Ordering::Relaxed);
            }
            Err(source) => return NetstackError::TunWrite { name, source },
        }
        batch.clear();
    }
}

/// Packets waiting to be written, each after room for the virtio header. The buffers are
/// kept between batches.
struct WriteBatch {
    buffers: Vec<Vec<u8>>,
    len: usize,
    /// Capacity of a new buffer: tun-rs appends the segments that follow to the first one
    /// of a run in place and never grows a buffer, so with offload every buffer has room
    /// for a whole super-packet (64 KiB each, in memory only as far as a batch fills it).
    capacity: usize,
}

impl WriteBatch {
    fn new(offload: bool) -> Self {
        Self {
            buffers: Vec::new(),
            len: 0,
            capacity: if offload {
                MAX_PACKET + 2 * VIRTIO_NET_HDR_LEN
            } else {
                0
            },
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, packet: &[u8]) {
        if self.len == self.buffers.len() {
            self.buffers.push(Vec::with_capacity(self.capacity));
        }
        let buffer = &mut self.buffers[self.len];
        buffer.clear();
        buffer.resize(VIRTIO_NET_HDR_LEN, 0);
        buffer.extend_from_slice(packet);
        self.len += 1;
    }

    fn packets(&mut self) -> &mut [Vec<u8>] {
        &mut self.buffers[..self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// Write errors that concern one packet or a passing state (link down, no memory), after
/// which the device still works.
fn is_transient_write_error(e: &io::Error) -> bool {
    const EIO: i32 = 5;
    const ENOMEM: i32 = 12;
    const EINVAL: i32 = 22;
    const EMSGSIZE: i32 = 90;
    const ENOBUFS: i32 = 105;
    e.kind() == io::ErrorKind::Interrupted
        || matches!(
            e.raw_os_error(),
            Some(EIO | ENOMEM | EINVAL | EMSGSIZE | ENOBUFS)
        )
}

/// Remembers recent SYNs (by connection and initial sequence number) to recognise
/// retransmissions of a SYN that smoltcp already has.
struct SynFilter {
    seen: HashMap<(SocketAddr, SocketAddr), (u32, u64)>,
    max_entries: usize,
    memory_ms: u64,
}

impl SynFilter {
    fn new(max_entries: usize, memory_ms: u64) -> Self {
        Self {
            seen: HashMap::new(),
            max_entries,
            memory_ms,
        }
    }

    /// Whether this SYN repeats one seen recently; records it otherwise.
    fn is_retransmission(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        isn: u32,
        now_ms: u64,
    ) -> bool {
        if let Some(&(seen_isn, at)) = self.seen.get(&(src, dst))
            && seen_isn == isn
            && now_ms.saturating_sub(at) < self.memory_ms
        {
            return true;
        }
        if self.seen.len() >= self.max_entries {
            self.purge(now_ms);
        }
        if self.seen.len() < self.max_entries {
            self.seen.insert((src, dst), (isn, now_ms));
        }
        false
    }

    fn purge(&mut self, now_ms: u64) {
        let memory_ms = self.memory_ms;
        self.seen
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) < memory_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_retransmissions_are_recognised() {
        let a: SocketAddr = "10.250.255.1:40000".parse().unwrap();
        let b: SocketAddr = "10.250.0.5:7".parse().unwrap();
        let mut f = SynFilter::new(2, 1000);
        assert!(!f.is_retransmission(a, b, 42, 0));
        assert!(f.is_retransmission(a, b, 42, 999));
        // A new connection on the same ports has a new initial sequence number.
        assert!(!f.is_retransmission(a, b, 43, 1000));
        assert!(f.is_retransmission(a, b, 43, 1001));
        // Forgotten after the memory time.
        assert!(!f.is_retransmission(a, b, 43, 2001));
        // Bounded: a full table records nothing new until entries age out.
        let c: SocketAddr = "10.250.255.1:40001".parse().unwrap();
        let d: SocketAddr = "10.250.255.1:40002".parse().unwrap();
        assert!(!f.is_retransmission(c, b, 1, 2002));
        assert!(!f.is_retransmission(d, b, 1, 2003));
        assert!(!f.is_retransmission(d, b, 1, 2004));
        assert_eq!(f.seen.len(), 2);
    }

    #[test]
    fn default_config_is_sane() {
        let c = StackConfig::default();
        assert_eq!(c.udp_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.mtu, 1500);
        assert!(c.tcp_buffer_size >= 64 * 1024);
    }
}
