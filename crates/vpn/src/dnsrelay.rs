//! The split DNS relay of `kubelan connect` and `kubelan gateway`: cluster names (the
//! cluster domain and the reverse zones of the cluster prefixes) go to the cluster DNS —
//! through the tunnel to the agent, or straight to its ClusterIP on a host that reaches it
//! (`gateway --mode node`) — and everything else to the resolvers the machine had before,
//! unchanged. `connect` feeds it the queries its TUN catches; a gateway also serves it on
//! its LAN address to the LAN's clients ([`LanDns`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use ipnet::IpNet;
use kubelan_dns::Screen;
use kubelan_dns::split::{self, Route, SplitZones};
use kubelan_dns::throttle::Tally;
use kubelan_session::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long one upstream resolver gets before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// A DNS-over-TCP client that sends nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);

/// Repeated failures of one kind are logged at most once per this interval, with a count.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Query counters, for `kubelan status`.
#[derive(Debug, Default)]
pub(crate) struct DnsStats {
    pub cluster: AtomicU64,
    pub upstream: AtomicU64,
    pub failed: AtomicU64,
    /// Malformed queries and queries with more than one question, answered FORMERR here.
    pub malformed: AtomicU64,
}

/// One kind of failure, logged through a [`Tally`]: the first at once, then one line per
/// [`FAILURE_LOG_INTERVAL`] with the count and the last reason.
struct FailureLog {
    what: &'static str,
    tally: Tally,
    last_error: String,
    flush_scheduled: bool,
}

/// The relay's failure logs, shared with the task that reports the end of a burst.
#[derive(Clone)]
pub(crate) struct FailureLogs {
    cluster: Arc<Mutex<FailureLog>>,
    upstream: Arc<Mutex<FailureLog>>,
}

impl Default for FailureLogs {
    fn default() -> Self {
        let log = |what| {
            Arc::new(Mutex::new(FailureLog {
                what,
                tally: Tally::new(FAILURE_LOG_INTERVAL),
                last_error: String::new(),
                flush_scheduled: false,
            }))
        };
        Self {
            cluster: log("cluster DNS queries"),
            upstream: log("queries to this host's resolvers"),
        }
    }
}

/// Records one failure in `log`; logs it, or holds it back and makes sure the held-back
/// count is logged when the interval ends.
fn record_failure(log: &Arc<Mutex<FailureLog>>, error: String) {
    let now = Instant::now();
    let Ok(mut l) = log.lock() else { return };
    match l.tally.record(now) {
        Some(1) => tracing::warn!("{} failed: {error}", l.what),
        Some(n) => tracing::warn!(
            "{n} {} failed in the last {} s; the last: {error}",
            l.what,
            FAILURE_LOG_INTERVAL.as_secs()
        ),
        None => {
            l.last_error = error;
            if !l.flush_scheduled
                && let Some(due) = l.tally.due()
            {
                l.flush_scheduled = true;
                let log = log.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(due.into()).await;
                    let Ok(mut l) = log.lock() else { return };
                    l.flush_scheduled = false;
                    if let Some(n) = l.tally.flush(Instant::now()) {
                        tracing::warn!(
                            "{n} more {} failed in the last {} s; the last: {}",
                            l.what,
                            FAILURE_LOG_INTERVAL.as_secs(),
                            l.last_error
                        );
                    }
                });
            }
        }
    }
}

/// How cluster names reach the cluster DNS.
pub(crate) enum ClusterPath {
    /// Through the session to the agent (which answers from its cache, else asks the
    /// cluster DNS).
    Agent(Session),
    /// Straight to the cluster DNS Service from this host (it routes to the cluster).
    Direct,
}

/// Answers DNS queries: cluster names to the cluster, the rest upstream.
pub(crate) struct DnsRelay {
    pub zones: SplitZones,
    pub cluster: ClusterPath,
    /// The cluster DNS Service.
    pub cluster_dns: SocketAddr,
    /// The machine's own resolvers (from before `connect`).
    pub upstreams: Vec<SocketAddr>,
    pub stats: Arc<DnsStats>,
    /// Failures, logged once per interval.
    pub failures: FailureLogs,
}

impl DnsRelay {
    /// The reply to one query, or `None` when the query deserves no answer. Queries that
    /// fail [`kubelan_dns::screen`] are answered FORMERR here, without asking anyone.
    pub(crate) async fn answer(&self, query: Bytes) -> Option<Bytes> {
        let question = match kubelan_dns::screen(&query) {
            Screen::Query(q) => q,
            Screen::FormErr(reply) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return Some(Bytes::from(reply));
            }
            Screen::Drop => return None,
        };
        match self.zones.route_question(&question) {
            Route::Invalid => split::formerr(&query).map(Bytes::from),
            Route::Cluster => {
                self.stats.cluster.fetch_add(1, Ordering::Relaxed);
                let reply = match &self.cluster {
                    ClusterPath::Agent(session) => session
                        .dns(self.cluster_dns, query.clone())
                        .await
                        .map_err(|e| e.to_string()),
                    ClusterPath::Direct => {
                        kubelan_dns::forward_udp(&query, self.cluster_dns, UPSTREAM_TIMEOUT)
                            .await
                            .map(Bytes::from)
                            .map_err(|e| format!("{}: {e}", self.cluster_dns))
                    }
                };
                match reply {
                    Ok(reply) => Some(reply),
                    Err(e) => {
                        record_failure(&self.failures.cluster, e);
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        split::servfail(&query).map(Bytes::from)
                    }
                }
            }
            Route::Upstream => {
                self.stats.upstream.fetch_add(1, Ordering::Relaxed);
                let mut errors = Vec::new();
                for up in &self.upstreams {
                    match kubelan_dns::forward_udp(&query, *up, UPSTREAM_TIMEOUT).await {
                        Ok(reply) => return Some(Bytes::from(reply)),
                        Err(e) => errors.push(format!("{up}: {e}")),
                    }
                }
                // Without resolvers SERVFAIL is the plan (said at start), not a failure.
                if !errors.is_empty() {
                    record_failure(&self.failures.upstream, errors.join("; "));
                }
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                split::servfail(&query).map(Bytes::from)
            }
        }
    }

    /// Serves DNS over one TCP connection (two-byte length prefix per message) until the
    /// client closes it or stays silent for [`TCP_IDLE`].
    pub(crate) async fn serve_tcp<S>(&self, mut stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let Some(reply) = self.answer(Bytes::from(query)).await else {
                return;
            };
            let Ok(n) = u16::try_from(reply.len()) else {
                return;
            };
            let mut out = Vec::with_capacity(reply.len() + 2);
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(&reply);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// The DNS service a gateway offers its LAN: the relay, for clients of the LAN only.
pub(crate) struct LanDns {
    pub relay: Arc<DnsRelay>,
    /// Who is served; others get REFUSED.
    pub allowed: Vec<IpNet>,
    /// Clients that asked something (bounded, for the summary).
    pub clients: Mutex<BTreeSet<IpAddr>>,
    /// Queries answered for the LAN.
    pub queries: AtomicU64,
    /// Queries refused because the client is outside the LAN.
    pub refused: AtomicU64,
}

/// At most this many distinct clients are remembered for the summary.
const MAX_CLIENTS_TRACKED: usize = 65_536;
/// At most this many UDP queries are answered at once; more wait.
const MAX_INFLIGHT: usize = 512;

impl LanDns {
    pub(crate) fn new(relay: Arc<DnsRelay>, allowed: Vec<IpNet>) -> Self {
        Self {
            relay,
            allowed,
            clients: Mutex::new(BTreeSet::new()),
            queries: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn admit(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        if !self.allowed.iter().any(|n| n.contains(&client)) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut seen) = self.clients.lock()
            && seen.len() < MAX_CLIENTS_TRACKED
        {
            seen.insert(client);
        }
        true
    }

    /// Distinct clients seen so far.
    pub(crate) fn clients_seen(&self) -> usize {
        self.clients.lock().map_or(0, |s| s.len())
    }
}

/// The gateway's DNS sockets on its LAN address, bound before anything on the host changes.
pub(crate) struct LanSockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

/// Binds UDP and TCP port `addr` (53 on the LAN address).
///
/// # Errors
/// When the port is taken or the address is not this host's, naming the fix.
pub(crate) async fn bind_lan(addr: SocketAddr) -> anyhow::Result<LanSockets> {
    let explain = |proto: &str, e: std::io::Error| {
        let fix = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "another DNS server already listens there (`ss -lnp 'sport = :{port}'` names it): stop it, serve on another address with --dns-listen, or pass --no-dns",
                port = addr.port()
            ),
            std::io::ErrorKind::AddrNotAvailable => {
                "that address is not on any interface of this host (--dns-listen)".to_string()
            }
            std::io::ErrorKind::PermissionDenied => "ports below 1024 need root".to_string(),
            _ => String::new(),
        };
        anyhow::anyhow!("cannot serve DNS on {proto} {addr}: {e}; {fix}")
    };
    let udp = UdpSocket::bind(addr).await.map_err(|e| explain("UDP", e))?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|e| explain("TCP", e))?;
    Ok(LanSockets { udp, tcp })
}

/// Serves DNS on the LAN sockets until `shutdown`.
pub(crate) fn serve_lan(
    sockets: LanSockets,
    lan: Arc<LanDns>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let udp = Arc::new(sockets.udp);
        let tcp = sockets.tcp;
        let slots = Arc::new(Semaphore::new(MAX_INFLIGHT));
        let mut buf = vec![0u8; 65_535];
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = udp.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let query = Bytes::copy_from_slice(&buf[..n]);
                    if !lan.admit(from.ip()) {
                        if let Some(reply) = split::refused(&query) {
                            let _ = udp.send_to(&reply, from).await;
                        }
                        continue;
                    }
                    // Malformed queries are answered here and never take a slot.
                    match kubelan_dns::screen(&query) {
                        Screen::Query(_) => {}
                        Screen::FormErr(reply) => {
                            lan.relay.stats.malformed.fetch_add(1, Ordering::Relaxed);
                            let _ = udp.send_to(&reply, from).await;
                            continue;
                        }
                        Screen::Drop => continue,
                    }
                    let Ok(permit) = slots.clone().acquire_owned().await else { return };
                    let (udp, lan) = (udp.clone(), lan.clone());
                    tokio::spawn(async move {
                        if let Some(reply) = lan.relay.answer(query).await {
                            let _ = udp.send_to(&reply, from).await;
                        }
                        drop(permit);
                    });
                }
                r = tcp.accept() => {
                    let Ok((stream, from)) = r else { continue };
                    if !lan.admit(from.ip()) {
                        continue;
                    }
                    let lan = lan.clone();
                    tokio::spawn(async move { lan.relay.serve_tcp(stream).await });
                }
            }
        }
    })
}

/// Reads the host's resolvers from `path`.
pub fn host_resolvers(path: &std::path::Path, except: &[IpAddr]) -> anyhow::Result<Vec<IpAddr>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading this host's resolvers from {}", path.display()))?;
    Ok(kubelan_sys::dns::ResolvConf::parse_bytes(&bytes)
        .nameservers
        .into_iter()
        .filter(|ip| !except.contains(ip))
        .collect())
}
