//! End-to-end tests of the stack against the kernel. Each test gets its own network
//! namespace (removed by a guard on success, failure and panic); the code under test runs
//! on a thread that entered it, and the tokio runtime is built on that thread so that its
//! workers are in the namespace too. Nothing is configured in the root namespace, which
//! the last test checks.
//!
//! Needs root, iproute2 (`ip`, `ss`), `ping` and `nft`; skips otherwise, unless
//! `KUBELAN_E2E_REQUIRED=1` (CI), which turns the skip into a failure.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubelan_netstack::{
    BoxFuture, EchoRequest, Handler, NetstackError, StackConfig, Stats, TcpFlow, TunConfig,
    UdpFlow, open_tun, run,
};
use kubelan_testkit::{Netns, exec_in, ip_in, ok, root_or_skip, root_snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::AbortHandle;
use tokio::time::timeout;

const TUN: &str = "kltest0";
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 250, 255, 1);
const ECHO: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 5);
const SILENT: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 6);
const ECHO_PORT: u16 = 7;
/// On this port the handler speaks first and closes first (like an HTTP/1.0 server), so
/// the stack's side of the connection is the one that would enter TIME-WAIT.
const CLOSE_FIRST_PORT: u16 = 13;
const CLOSE_FIRST_GREETING: &[u8] = b"bye\n";
/// On this port the handler sends [`ABORT_FIRST`] bytes, waits for one byte from the
/// application, then sends [`ABORT_SECOND`] bytes and aborts at once (a flow whose
/// tunnel died mid-stream).
const ABORT_PORT: u16 = 14;
const ABORT_FIRST: usize = 64 * 1024;
const ABORT_SECOND: usize = 4 << 20;
/// On this port the handler reads until the end and records how that end looked.
const READ_END_PORT: u16 = 15;
/// An upper bound for any one scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(240);
/// An upper bound for one small network exchange.
const IO: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Environment: skip rules, namespaces, commands.

/// Whether these tests can run here; says why not, or fails when CI requires them.
fn available() -> bool {
    root_or_skip(
        "netstack end-to-end tests",
        &["ip", "ss", "ping", "nft"],
        &["/dev/net/tun"],
    )
}

// ---------------------------------------------------------------------------------------
// The handler under test: TCP and UDP echo, pings answered for ECHO only.

#[derive(Default)]
struct Recorder {
    tcp: Mutex<Vec<(SocketAddr, SocketAddr)>>,
    udp: Mutex<Vec<(SocketAddr, SocketAddr)>>,
    udp_ended: AtomicUsize,
    echo: Mutex<Vec<EchoRequest>>,
    /// How reads on [`READ_END_PORT`] ended: bytes read, then end of stream (`None`) or
    /// the error.
    read_ends: Mutex<Vec<(usize, Option<std::io::ErrorKind>)>>,
    /// Handler futures not dropped yet.
    live: AtomicUsize,
}

/// Counts a handler future as live until it is dropped (finished or aborted).
struct Live(Arc<Recorder>);

impl Live {
    fn new(rec: &Arc<Recorder>) -> Self {
        rec.live.fetch_add(1, Ordering::SeqCst);
        Live(rec.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

struct EchoHandler(Arc<Recorder>);

impl Handler for EchoHandler {
    fn tcp(&self, flow: TcpFlow) -> BoxFuture<'static, ()> {
        self.0.tcp.lock().unwrap().push((flow.src, flow.dst));
        let live = Live::new(&self.0);
        let close_first = flow.dst.port() == CLOSE_FIRST_PORT;
        let rec = self.0.clone();
        Box::pin(async move {
            let _live = live;
            match flow.dst.port() {
                ABORT_PORT => {
                    let mut stream = flow.stream;
                    let _ = stream.write_all(&pattern(ABORT_FIRST, 1)).await;
                    let _ = stream.read_exact(&mut [0u8; 1]).await;
                    let _ = stream.write_all(&pattern(ABORT_SECOND, 2)).await;
                    stream.abort().await;
                    return;
                }
                READ_END_PORT => {
                    let mut stream = flow.stream;
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0;
                    let end = loop {
                        match stream.read(&mut buf).await {
                            Ok(0) => break None,
                            Ok(n) => total += n,
                            Err(e) => break Some(e.kind()),
                        }
                    };
                    rec.read_ends.lock().unwrap().push((total, end));
                    return;
                }
                _ => {}
            }
            let (mut r, mut w) = tokio::io::split(flow.stream);
            if close_first {
                let _ = w.write_all(CLOSE_FIRST_GREETING).await;
                let _ = w.shutdown().await;
                let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
                return;
            }
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
    }

    fn udp(&self, flow: UdpFlow) -> BoxFuture<'static, ()> {
        self.0.udp.lock().unwrap().push((flow.src, flow.dst));
        let live = Live::new(&self.0);
        let rec = self.0.clone();
        let UdpFlow { mut rx, tx, .. } = flow;
        Box::pin(async move {
            let _live = live;
            while let Some(datagram) = rx.recv().await {
                let _ = tx.send(datagram).await;
            }
            rec.udp_ended.fetch_add(1, Ordering::SeqCst);
        })
    }

    fn icmp_echo(&self, req: EchoRequest) -> BoxFuture<'static, bool> {
        let answer = req.dst == IpAddr::V4(ECHO);
        self.0.echo.lock().unwrap().push(req);
        Box::pin(async move { answer })
    }
}

// ---------------------------------------------------------------------------------------
// One scenario: namespace, TUN, stack, and a body that talks to it with kernel sockets.

struct Env {
    ns: String,
    /// Whether the TUN device got segmentation offload.
    offload: bool,
    stats: Arc<Stats>,
    rec: Arc<Recorder>,
    stack: AbortHandle,
}

impl Env {
    /// Runs a command in the namespace (on the blocking pool, so the runtime goes on).
    async fn exec(&self, argv: &[&str]) -> Output {
        let ns = self.ns.clone();
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            exec_in(&ns, &argv)
        })
        .await
        .expect("command task")
    }
}

/// Sets up a namespace with the stack on a TUN device of link MTU `link_mtu` (the stack's
/// MTU is `cfg.mtu`), runs `body`, and tears everything down.
fn scenario<F, Fut>(link_mtu: u16, cfg: StackConfig, body: F)
where
    F: FnOnce(Env) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    scenario_on(TunConfig::new(TUN, link_mtu), cfg, body);
}

/// [`scenario`] on a TUN device opened with `tun_cfg` (named [`TUN`]).
fn scenario_on<F, Fut>(tun_cfg: TunConfig, cfg: StackConfig, body: F)
where
    F: FnOnce(Env) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let link_mtu = tun_cfg.mtu;
    if !available() {
        return;
    }
    let ns = Netns::new("nst");
    let ns_name = ns.name().to_string();
    ns.run_inside(move || {
        let tun = open_tun(&tun_cfg).expect("open TUN");
        let offload = tun.offload();
        assert_eq!(tun.name(), TUN);
        assert!(tun.index() > 0);
        let mtu = link_mtu.to_string();
        ip_in(
            &ns_name,
            &["addr", "add", &format!("{LOCAL}/32"), "dev", TUN],
        );
        ip_in(&ns_name, &["link", "set", TUN, "up", "mtu", &mtu]);
        ip_in(&ns_name, &["route", "add", "10.250.0.0/24", "dev", TUN]);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let stats = Arc::new(Stats::default());
        let rec = Arc::new(Recorder::default());
        runtime.block_on(async move {
            let stack = tokio::spawn(run(
                tun,
                cfg,
                Arc::new(EchoHandler(rec.clone())),
                stats.clone(),
            ));
            let env = Env {
                ns: ns_name,
                offload,
                stats,
                rec,
                stack: stack.abort_handle(),
            };
            let body = timeout(SCENARIO_LIMIT, body(env));
            tokio::pin!(body);
            tokio::pin!(stack);
            tokio::select! {
                done = &mut body => done.expect("scenario timed out"),
                ended = &mut stack => match ended {
                    // The body stopped the stack on purpose; let it finish.
                    Err(e) if e.is_cancelled() => body.await.expect("scenario timed out"),
                    other => panic!("the stack stopped on its own: {other:?}"),
                },
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(5));
    });
    drop(ns);
}

fn config(mtu: u16) -> StackConfig {
    let mut cfg = StackConfig::default();
    cfg.mtu = mtu;
    cfg
}

fn echo_addr() -> SocketAddr {
    SocketAddr::from((ECHO, ECHO_PORT))
}

/// Deterministic, non-repeating test data.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn connect_echo() -> tokio::net::TcpStream {
    timeout(IO, tokio::net::TcpStream::connect(echo_addr()))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Sends `len` bytes through the TCP echo while reading the echo concurrently; checks
/// the content and returns the time it took.
async fn tcp_echo(len: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    let stream = connect_echo().await;
    let (mut r, mut w) = stream.into_split();
    let data = Arc::new(pattern(len, len as u64));
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.expect("write");
        w.shutdown().await.expect("shutdown");
    });
    let mut got = Vec::with_capacity(len);
    timeout(limit, r.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("echo of {len} bytes timed out after {limit:?}"))
        .expect("read");
    timeout(IO, writer)
        .await
        .expect("writer timed out")
        .expect("writer");
    assert_eq!(got.len(), len, "echoed length");
    if let Some(at) = got.iter().zip(data.iter()).position(|(a, b)| a != b) {
        panic!("echo differs at byte {at} of {len}");
    }
    started.elapsed()
}

/// 1 byte and 16 MiB through the echo at `mtu`, on a TUN device with or without offload.
fn tcp_echo_at(mtu: u16, offload: bool) {
    let mut tun_cfg = TunConfig::new(TUN, mtu);
    tun_cfg.offload = offload;
    scenario_on(tun_cfg, config(mtu), move |env| async move {
        tcp_echo(1, IO).await;
        let before = tun_counters(&env.ns);
        let len = 16 << 20;
        let took = tcp_echo(len, Duration::from_secs(180)).await;
        let mbps = len as f64 / took.as_secs_f64() / 1e6;
        let after = tun_counters(&env.ns);
        // What the stack wrote (the device's rx) and read (its tx), per packet.
        let written = (after.0 - before.0) / (after.1 - before.1).max(1);
        let read = (after.2 - before.2) / (after.3 - before.3).max(1);
        println!(
            "MTU {mtu}, offload {}: 16 MiB echoed (both directions at once) in {took:.2?}: \
             {mbps:.1} MB/s each way; average packet written {written} B, read {read} B",
            env.offload
        );
        let s = env.stats.snapshot();
        assert_eq!(s.tcp_flows, 2);
        assert!(s.packets_in > 16 * 1024 * 1024 / u64::from(mtu), "{s:?}");
        assert_eq!(env.offload, offload, "this kernel has TUN offload");
        if offload {
            // Runs of segments left as super-packets, and the kernel handed its TCP
            // output over unsegmented: both averages exceed what one packet can carry.
            assert!(written > u64::from(mtu), "written {written} B per packet");
            assert!(read > u64::from(mtu), "read {read} B per packet");
        } else {
            assert!(written <= u64::from(mtu) && read <= u64::from(mtu));
        }
    });
}

/// The TUN device's byte and packet counters in `ns`: (rx bytes, rx packets, tx bytes,
/// tx packets). Its rx is what the stack wrote, its tx what the kernel gave the stack.
fn tun_counters(ns: &str) -> (u64, u64, u64, u64) {
    let out = exec_in(ns, &["cat", "/proc/net/dev"]);
    let dev = String::from_utf8_lossy(&out.stdout);
    let line = dev
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim() == TUN))
        .unwrap_or_else(|| panic!("{TUN} missing from /proc/net/dev:\n{dev}"))
        .1;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("counter"))
        .collect();
    (f[0], f[1], f[8], f[9])
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn tcp_echo_mtu_1500() {
    tcp_echo_at(1500, true);
}

#[test]
fn tcp_echo_mtu_1500_without_offload() {
    tcp_echo_at(1500, false);
}

#[test]
fn tcp_echo_mtu_1280() {
    tcp_echo_at(1280, true);
}

/// Connections the stack closes first do not leave smoltcp sockets in TIME-WAIT: each is
/// reset as it enters it (a burst of such sockets slowed every other connection), the
/// application still sees a clean close, and the next connections work.
#[test]
fn time_wait_sockets_are_reset() {
    scenario(1500, config(1500), |env| async move {
        const N: u64 = 200;
        for i in 0..N {
            let mut s = timeout(
                IO,
                tokio::net::TcpStream::connect(SocketAddr::from((ECHO, CLOSE_FIRST_PORT))),
            )
            .await
            .expect("connect timed out")
            .expect("connect");
            let mut got = Vec::new();
            timeout(IO, s.read_to_end(&mut got))
                .await
                .unwrap_or_else(|_| panic!("connection {i}: no close from the stack"))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(got, CLOSE_FIRST_GREETING, "connection {i}");
            s.shutdown().await.expect("shutdown");
        }
        // The last RSTs are fed to smoltcp right after the last ACKs.
        let deadline = Instant::now() + IO;
        while env.stats.snapshot().tcp_time_wait_reset < N && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = env.stats.snapshot();
        assert_eq!(s.tcp_time_wait_reset, N, "{s:?}");
        // The application's side closed cleanly: nothing of these connections is left
        // in the namespace's kernel (no RST reached it, which would show as errors above).
        let ss = env
            .exec(&["ss", "-Htn", "state", "all", "dport", "= :13"])
            .await;
        let left = String::from_utf8_lossy(&ss.stdout).lines().count();
        assert!(left <= 1, "kernel sockets left: {left}");
        tcp_echo(64 * 1024, IO).await;
    });
}

/// A flow the handler aborts ends in a reset at the application, never in a clean end
/// of stream: it reads what reached it, then `ECONNRESET`. Nothing of the connection is
/// left on either side, and the stack goes on serving.
#[test]
fn aborted_flows_reset_the_application() {
    scenario(1500, config(1500), |env| async move {
        for round in 0..3 {
            let mut s = timeout(
                IO,
                tokio::net::TcpStream::connect(SocketAddr::from((ECHO, ABORT_PORT))),
            )
            .await
            .expect("connect timed out")
            .expect("connect");
            let mut first = vec![0u8; ABORT_FIRST];
            timeout(IO, s.read_exact(&mut first))
                .await
                .expect("first part timed out")
                .expect("first part");
            assert!(
                first == pattern(ABORT_FIRST, 1),
                "round {round}: first part"
            );
            s.write_all(b"k").await.expect("write");
            // The second part is cut wherever the abort found it: a prefix arrives, then
            // the reset (the abort discards what was still queued toward us).
            let second = pattern(ABORT_SECOND, 2);
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let end = timeout(IO, async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break Ok(()),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => break Err(e),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: neither end nor reset after {} bytes",
                    got.len()
                )
            });
            let err = end.expect_err(&format!(
                "round {round}: a clean end of stream after {} of {ABORT_SECOND} bytes",
                got.len()
            ));
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset,
                "round {round}"
            );
            assert!(
                got.len() < ABORT_SECOND,
                "round {round}: all {} bytes",
                got.len()
            );
            assert!(second.starts_with(&got), "round {round}: not a prefix");
        }
        let deadline = Instant::now() + IO;
        while env.stats.snapshot().tcp_aborted < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(env.stats.snapshot().tcp_aborted, 3);
        let ss = env
            .exec(&[
                "ss",
                "-Htn",
                "state",
                "all",
                "dport",
                &format!("= :{ABORT_PORT}"),
            ])
            .await;
        let left = String::from_utf8_lossy(&ss.stdout).into_owned();
        assert!(left.trim().is_empty(), "kernel sockets left: {left}");
        tcp_echo(64 * 1024, IO).await;
    });
}

/// The handler tells an application's reset (an error) from its FIN (end of stream);
/// netstack-smoltcp alone reports both as the end of stream.
#[test]
fn resets_from_the_application_are_errors() {
    scenario(1500, config(1500), |env| async move {
        let dst = SocketAddr::from((ECHO, READ_END_PORT));
        // Closed with a FIN.
        let mut s = connect_to(dst).await;
        s.write_all(b"0123456789").await.expect("write");
        s.shutdown().await.expect("shutdown");
        // Reset: SO_LINGER 0, then close.
        let mut s2 = connect_to(dst).await;
        s2.write_all(b"01234").await.expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        s2.set_zero_linger().expect("SO_LINGER");
        drop(s2);
        let deadline = Instant::now() + IO;
        while env.rec.read_ends.lock().unwrap().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut ends = env.rec.read_ends.lock().unwrap().clone();
        ends.sort();
        assert_eq!(
            ends,
            vec![(5, Some(std::io::ErrorKind::ConnectionReset)), (10, None)]
        );
        drop(s);
    });
}

async fn connect_to(dst: SocketAddr) -> tokio::net::TcpStream {
    timeout(IO, tokio::net::TcpStream::connect(dst))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// smoltcp announces an MSS that fits the stack's MTU even when the link's is larger.
#[test]
fn announced_mss_follows_stack_mtu() {
    scenario(1500, config(1280), |env| async move {
        let mut stream = connect_echo().await;
        stream.write_all(b"mss?").await.expect("write");
        let mut buf = [0u8; 4];
        timeout(IO, stream.read_exact(&mut buf))
            .await
            .expect("echo timed out")
            .expect("read");
        let ss = env
            .exec(&[
                "ss",
                "-tinH",
                "state",
                "established",
                "dst",
                &echo_addr().to_string(),
            ])
            .await;
        let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
        let mss: u32 = ss
            .split_whitespace()
            .find_map(|w| w.strip_prefix("mss:"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no mss in ss output: {ss}"));
        assert_eq!(mss, 1280 - 40, "kernel's send MSS toward the stack: {ss}");
    });
}

#[test]
fn fifty_concurrent_tcp_connections() {
    scenario(1500, config(1500), |env| async move {
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..50u32 {
            clients.spawn(async move {
                let mut stream = connect_echo().await;
                let local = stream.local_addr().expect("local addr");
                let msg = format!("hello {i}");
                stream.write_all(msg.as_bytes()).await.expect("write");
                stream.shutdown().await.expect("shutdown");
                let mut got = String::new();
                timeout(IO, stream.read_to_string(&mut got))
                    .await
                    .expect("echo timed out")
                    .expect("read");
                assert_eq!(got, msg);
                local
            });
        }
        let mut locals = BTreeSet::new();
        while let Some(local) = clients.join_next().await {
            locals.insert(local.expect("client"));
        }
        assert_eq!(locals.len(), 50);
        let flows = env.rec.tcp.lock().unwrap().clone();
        assert_eq!(flows.len(), 50, "{flows:?}");
        for (src, dst) in &flows {
            assert_eq!(*dst, echo_addr());
            assert_eq!(src.ip(), IpAddr::V4(LOCAL));
        }
        let srcs: BTreeSet<SocketAddr> = flows.iter().map(|(src, _)| *src).collect();
        assert_eq!(srcs, locals, "flow sources are the clients' addresses");
    });
}

/// When the kernel retransmits a SYN (its SYN-ACK was lost), the connection is still
/// one flow, and the next connection to the same destination is labelled right.
/// (netstack-smoltcp alone makes a second, never-connected listening socket for the
/// retransmitted SYN, which later takes over another connection to that destination.)
#[test]
fn retransmitted_syn_opens_one_flow() {
    scenario(1500, config(1500), |env| async move {
        let nft = |rule: &'static str| {
            let env = &env;
            async move {
                let out = env.exec(&["nft", rule]).await;
                assert!(
                    out.status.success(),
                    "nft {rule}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        };
        nft("add table ip kl_test").await;
        nft("add chain ip kl_test input { type filter hook input priority 0; policy accept; }")
            .await;
        nft("add chain ip kl_test output { type filter hook output priority 0; policy accept; }")
            .await;
        // Lose every SYN-ACK for a while, so that the kernel retransmits its SYN (after 1 s).
        nft("add rule ip kl_test input ip saddr 10.250.0.5 tcp flags & (syn | ack) == (syn | ack) drop")
            .await;
        nft(
            "add rule ip kl_test output ip daddr 10.250.0.5 tcp flags & (syn | ack) == syn counter",
        )
        .await;
        let connecting = tokio::spawn(timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(echo_addr()),
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nft("flush chain ip kl_test input").await;
        let mut stream = connecting
            .await
            .expect("connect task")
            .expect("connect timed out")
            .expect("connect");
        stream.write_all(b"first").await.expect("write");
        let mut buf = [0u8; 5];
        timeout(IO, stream.read_exact(&mut buf))
            .await
            .expect("echo timed out")
            .expect("read");
        let counted = nft("list chain ip kl_test output").await;
        let syns: u64 = counted
            .split("packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in {counted}"));
        assert!(
            syns >= 2,
            "the kernel did not retransmit its SYN: {counted}"
        );

        let mut second = connect_echo().await;
        second.write_all(b"second").await.expect("write");
        let mut buf = [0u8; 6];
        timeout(IO, second.read_exact(&mut buf))
            .await
            .expect("echo timed out")
            .expect("read");
        let flows = env.rec.tcp.lock().unwrap().clone();
        assert_eq!(
            flows,
            vec![
                (stream.local_addr().expect("local"), echo_addr()),
                (second.local_addr().expect("local"), echo_addr()),
            ],
            "one flow per connection, each with its own source"
        );
    });
}

#[test]
fn udp_flows_are_reused_and_expire() {
    let mut cfg = config(1500);
    cfg.udp_idle_timeout = Duration::from_secs(1);
    scenario(1500, cfg, |env| async move {
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
            .await
            .expect("bind");
        let dst = SocketAddr::from((ECHO, 5353));
        let round_trip = |msg: &'static [u8]| {
            let socket = &socket;
            async move {
                socket.send_to(msg, dst).await.expect("send");
                let mut buf = [0u8; 64];
                let (n, from) = timeout(IO, socket.recv_from(&mut buf))
                    .await
                    .expect("no UDP echo")
                    .expect("recv");
                assert_eq!(&buf[..n], msg);
                assert_eq!(from, dst);
            }
        };
        round_trip(b"one").await;
        round_trip(b"two").await;
        {
            let flows = env.rec.udp.lock().unwrap();
            assert_eq!(flows.len(), 1, "the second datagram reuses the flow");
            let local = socket.local_addr().expect("local");
            assert_eq!(flows[0].0, SocketAddr::from((LOCAL, local.port())));
            assert_eq!(flows[0].1, dst);
        }
        // Idle for longer than the timeout: the stack ends the flow (its rx ends) ...
        let deadline = Instant::now() + Duration::from_secs(5);
        while env.rec.udp_ended.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the idle UDP flow did not end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // ... and the next datagram opens a new one.
        round_trip(b"three").await;
        assert_eq!(env.rec.udp.lock().unwrap().len(), 2);
        let s = env.stats.snapshot();
        assert_eq!((s.udp_flows, s.udp_dropped), (2, 0), "{s:?}");
    });
}

/// Datagrams larger than the MTU arrive as IP fragments; they are reassembled, and the
/// replies (written as one packet) reach the application whole.
#[test]
fn large_udp_datagrams_round_trip() {
    scenario(1280, config(1280), |env| async move {
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
            .await
            .expect("bind");
        let dst = SocketAddr::from((ECHO, 4000));
        let mut buf = vec![0u8; 65536];
        for len in [1252, 1253, 4000, 9000, 65507] {
            let data = pattern(len, len as u64);
            socket.send_to(&data, dst).await.expect("send");
            let (n, from) = timeout(IO, socket.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no echo of a {len}-byte datagram"))
                .expect("recv");
            assert_eq!((n, from), (len, dst));
            assert!(buf[..n] == data[..], "{len}-byte datagram changed");
        }
        let s = env.stats.snapshot();
        assert_eq!((s.udp_flows, s.udp_dropped), (1, 0), "{s:?}");
    });
}

#[test]
fn pings_are_answered_only_when_the_handler_says_so() {
    scenario(1500, config(1500), |env| async move {
        let answered = env
            .exec(&[
                "ping",
                "-n",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                "10.250.0.5",
            ])
            .await;
        assert!(
            answered.status.success(),
            "ping 10.250.0.5 failed: {}",
            String::from_utf8_lossy(&answered.stdout)
        );
        let silent = env
            .exec(&["ping", "-n", "-c", "1", "-W", "1", "10.250.0.6"])
            .await;
        assert!(
            !silent.status.success(),
            "ping 10.250.0.6 must time out: {}",
            String::from_utf8_lossy(&silent.stdout)
        );
        let s = env.stats.snapshot();
        assert_eq!((s.icmp_requests, s.icmp_replies), (3, 2), "{s:?}");
        let requests = env.rec.echo.lock().unwrap().clone();
        assert!(requests.iter().all(|r| r.src == IpAddr::V4(LOCAL)));
        assert_eq!(
            requests
                .iter()
                .filter(|r| r.dst == IpAddr::V4(SILENT))
                .count(),
            1
        );
        assert!(requests.iter().all(|r| r.ttl > 0 && !r.payload.is_empty()));
    });
}

#[test]
fn dropping_the_stack_stops_everything() {
    scenario(1500, config(1500), |env| async move {
        let mut stream = connect_echo().await;
        stream.write_all(b"before").await.expect("write");
        let mut buf = [0u8; 6];
        timeout(IO, stream.read_exact(&mut buf))
            .await
            .expect("echo timed out")
            .expect("read");
        let udp = tokio::net::UdpSocket::bind("0.0.0.0:0")
            .await
            .expect("bind");
        udp.send_to(b"x", (ECHO, 53)).await.expect("send");
        timeout(IO, udp.recv_from(&mut buf))
            .await
            .expect("no UDP echo")
            .expect("recv");
        assert_eq!(
            env.rec.live.load(Ordering::SeqCst),
            2,
            "TCP and UDP handlers run"
        );

        env.stack.abort();

        // Every handler future is dropped ...
        let deadline = Instant::now() + IO;
        while env.rec.live.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "handler tasks outlived the stack"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ... and the TUN device is closed, which removes the interface and its routes.
        let deadline = Instant::now() + IO;
        while env
            .exec(&["ip", "link", "show", TUN])
            .await
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "the TUN interface outlived the stack"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The old connection gets no more echoes.
        let _ = stream.write_all(b"after!").await;
        let read = timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(
            !matches!(read, Ok(Ok(n)) if n > 0),
            "echo after the stack was dropped"
        );
        println!("old connection after the stack was dropped: {read:?}");
        // A new connection fails quickly.
        let started = Instant::now();
        let connect = timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(echo_addr()),
        )
        .await;
        assert!(
            !matches!(connect, Ok(Ok(_))),
            "connected after the stack was dropped"
        );
        println!(
            "new connection after the stack was dropped: {:?} after {:?}",
            connect.map(|r| r.map(|_| ())),
            started.elapsed()
        );
    });
}

#[test]
fn open_tun_refuses_a_taken_name() {
    if !available() {
        return;
    }
    let ns = Netns::new("nst");
    ns.run_inside(|| {
        let err = open_tun(&TunConfig::new("lo", 1500)).expect_err("lo exists");
        assert!(matches!(err, NetstackError::NameInUse { .. }), "{err}");
        let err = open_tun(&TunConfig::new("much-too-long-name", 1500)).expect_err("too long");
        assert!(matches!(err, NetstackError::InvalidTunName { .. }), "{err}");
        // A kernel-chosen name works, and the device goes away with the value.
        let tun = open_tun(&TunConfig::new("", 1400)).expect("open TUN");
        assert!(!tun.name().is_empty());
        assert_eq!(tun.mtu(), 1400);
        let name = tun.name().to_owned();
        let links = ok(Command::new("ip").args(["-o", "link", "show", &name]));
        assert!(links.contains("mtu 1400"), "{links}");
        assert!(
            links.contains("state DOWN"),
            "left down for the caller: {links}"
        );
        let addrs = ok(Command::new("ip").args(["-o", "addr", "show", "dev", &name]));
        assert!(
            addrs.is_empty(),
            "no addresses on a new TUN device: {addrs}"
        );
        drop(tun);
        assert!(
            !Command::new("ip")
                .args(["link", "show", &name])
                .output()
                .expect("ip")
                .status
                .success(),
            "TUN device {name} outlived its handle"
        );
    });
}

#[test]
fn root_namespace_is_untouched() {
    if !available() {
        return;
    }
    let before = root_snapshot();
    scenario(1400, config(1400), |env| async move {
        tcp_echo(100_000, Duration::from_secs(30)).await;
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
            .await
            .expect("bind");
        socket.send_to(b"u", (ECHO, 9)).await.expect("send");
        let mut buf = [0u8; 8];
        timeout(IO, socket.recv_from(&mut buf))
            .await
            .expect("no UDP echo")
            .expect("recv");
        let ping = env
            .exec(&["ping", "-n", "-c", "1", "-W", "1", "10.250.0.5"])
            .await;
        assert!(ping.status.success());
    });
    let after = root_snapshot();
    assert_eq!(before, after, "the root network namespace changed");
}
