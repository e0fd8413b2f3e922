//! TCP into the cluster, terminated by the kernel: nftables redirects connections to the
//! routed cluster prefixes to a listener of ours, which relays each one over the session
//! exactly as `kubelan proxy` does. UDP, ICMP echo and everything nftables cannot redirect
//! keep going through the TUN and the userspace stack.
//!
//! ```text
//! table inet kubelan_connect {
//!   counter redirected {}
//!   set cluster4 { type ipv4_addr; flags interval; elements = { <routed prefixes> } }
//!   set skip4    { type ipv4_addr; flags interval; elements = { <pinned addresses> } }
//!   set lan4     { type ipv4_addr; flags interval; elements = { <--lan> } }   # gateway
//!   (and cluster6, skip6, lan6 when the cluster has IPv6 prefixes)
//!   chain output { type nat hook output priority dstnat; policy accept;
//!     meta l4proto tcp ip daddr @cluster4 ip daddr != @skip4 counter name redirected redirect to :P4 }
//!   chain prerouting { type nat hook prerouting priority dstnat; policy accept;   # gateway
//!     meta l4proto tcp ip saddr @lan4 ip daddr @cluster4 ip daddr != @skip4 counter name redirected redirect to :P4 }
//! }
//! ```
//!
//! The listener's policy does not trust the rules alone: a connection is relayed only if
//! its original destination (conntrack's, `SO_ORIGINAL_DST`) is inside a routed prefix and
//! it came from this host (it reached a loopback address, which only the output chain's
//! redirect or a local process can do) or from an allowed LAN source. Anything else — a
//! LAN host dialling the listener's port itself, a forwarded source outside `--lan` — is
//! reset and counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use kubelan_proto::Target;
use kubelan_session::Session;
use kubelan_sys::journal::{ApplyError, HostGuard};
use kubelan_sys::nft::build::{DSTNAT, Field, Ip, Table, count, in_set, l4proto, redirect};
use nftables::schema::NfListObject;
use nftables::types::{NfChainType, NfFamily, NfHook};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::RedirectStatus;
use super::handler::FlowStats;
use crate::dnsrelay::DnsRelay;
use crate::event::{Event, EventSink};

/// The table's name (family `inet`).
pub(crate) const TABLE: &str = "kubelan_connect";
/// Counter of redirected connections (first packets).
pub(crate) const REDIRECTED: &str = "redirected";
/// How often a refused connection may be logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the table redirects, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedirectRules {
    /// The routed cluster prefixes.
    pub cluster: Vec<IpNet>,
    /// Addresses inside them that keep their own path (the API server, the agent).
    pub skip: Vec<IpNet>,
    /// Forwarded traffic from these sources is redirected too (a tunnel gateway's LAN);
    /// empty: only this host's own connections.
    pub lan: Vec<IpNet>,
    /// The IPv4 listener's port.
    pub port4: u16,
    /// The IPv6 listener's port, when the cluster has IPv6 prefixes.
    pub port6: Option<u16>,
}

impl RedirectRules {
    /// The table's objects (the table itself is added by `kubelan_sys::nft::create_table`).
    pub(crate) fn objects(&self) -> Vec<NfListObject<'static>> {
        let t = Table::new(NfFamily::INet, TABLE);
        let mut out = vec![t.counter(REDIRECTED)];
        let mut families = vec![(Ip::V4, "4", self.port4)];
        if let Some(p6) = self.port6 {
            families.push((Ip::V6, "6", p6));
        }
        let gateway = !self.lan.is_empty();
        out.push(t.chain("output", NfChainType::NAT, NfHook::Output, DSTNAT));
        if gateway {
            out.push(t.chain("prerouting", NfChainType::NAT, NfHook::Prerouting, DSTNAT));
        }
        for (ip, sfx, port) in families {
            let (cluster, skip, lan) = (
                format!("cluster{sfx}"),
                format!("skip{sfx}"),
                format!("lan{sfx}"),
            );
            out.push(t.prefix_set(&cluster, ip, &self.cluster));
            let skips = self.skip.iter().any(|n| ip.holds(n));
            if skips {
                out.push(t.prefix_set(&skip, ip, &self.skip));
            }
            let matches = |from_lan: bool| {
                let mut m = vec![l4proto("tcp")];
                if from_lan {
                    m.push(in_set(ip, Field::Saddr, &lan, true));
                }
                m.push(in_set(ip, Field::Daddr, &cluster, true));
                if skips {
                    m.push(in_set(ip, Field::Daddr, &skip, false));
                }
                m.push(count(REDIRECTED));
                m.push(redirect(port));
                m
            };
            out.push(t.rule(
                "output",
                matches(false),
                "kubelan connect: this host's TCP into the cluster, to kubelan's listener",
            ));
            if gateway {
                out.push(t.prefix_set(&lan, ip, &self.lan));
                out.push(t.rule(
                    "prerouting",
                    matches(true),
                    "kubelan gateway: the LAN's TCP into the cluster, to kubelan's listener",
                ));
            }
        }
        out
    }
}

/// Who may use the listener, and for what (sans-IO).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Original destinations that are relayed: the routed prefixes…
    pub cluster: Vec<IpNet>,
    /// …except these.
    pub skip: Vec<IpNet>,
    /// Sources other than this host that may come in (a tunnel gateway's LAN).
    pub lan: Vec<IpNet>,
}

/// Why a connection at the listener was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its original destination is not a routed cluster address: it dialled the
    /// listener's port itself, or a skipped address.
    NotCluster(SocketAddr),
    /// It came from a host that is neither this one nor an allowed LAN source.
    Outsider(IpAddr),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotCluster(a) => write!(
                f,
                "destination {a} is not a routed cluster address (the listener's port is not a service)"
            ),
            Refusal::Outsider(ip) => write!(f, "source {ip} is not this host nor in --lan"),
        }
    }
}

impl Policy {
    /// Whether a connection from `peer`, accepted on `local`, that was headed for
    /// `original`, is relayed.
    pub(crate) fn admit(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        original: SocketAddr,
    ) -> Result<(), Refusal> {
        let own = local.ip().is_loopback();
        if !own && !self.lan.iter().any(|n| n.contains(&peer.ip())) {
            return Err(Refusal::Outsider(peer.ip()));
        }
        let dst = original.ip();
        if !self.cluster.iter().any(|n| n.contains(&dst))
            || self.skip.iter().any(|n| n.contains(&dst))
        {
            return Err(Refusal::NotCluster(original));
        }
        Ok(())
    }
}

/// What the listener relays connections with.
pub(crate) struct Redirector {
    pub policy: Policy,
    session: Session,
    /// TCP to the cluster DNS address is answered by the split-DNS relay.
    dns_addr: Option<SocketAddr>,
    dns: Arc<DnsRelay>,
    stats: Arc<FlowStats>,
    /// Connections refused by the policy.
    pub refused: AtomicU64,
    refusal_log: kubelan_proxy::Every,
}

impl Redirector {
    /// A redirector with no refusals yet.
    pub(crate) fn new(
        policy: Policy,
        session: Session,
        dns_addr: Option<SocketAddr>,
        dns: Arc<DnsRelay>,
        stats: Arc<FlowStats>,
    ) -> Redirector {
        Redirector {
            policy,
            session,
            dns_addr,
            dns,
            stats,
            refused: AtomicU64::new(0),
            refusal_log: kubelan_proxy::Every::new(REFUSAL_LOG_INTERVAL),
        }
    }

    /// Accepts and relays until `shutdown`.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    // Before the flow's task runs: whatever the client sends meanwhile
                    // comes in under a young socket's window, not the listener's.
                    kubelan_session::relay::edge_opened(&tcp);
                    tokio::spawn(self.clone().relay(tcp, peer));
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning; open flows go on.
                    tracing::warn!("connect: accept failed: {e}; retrying in 100 ms");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    async fn relay(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let admitted = tcp
            .local_addr()
            .and_then(|local| {
                kubelan_sys::original_dst(&tcp, local.is_ipv6()).map(|orig| (local, orig))
            })
            .map_err(|e| format!("no original destination: {e}"))
            .and_then(|(local, orig)| {
                self.policy
                    .admit(peer, local, orig)
                    .map(|()| orig)
                    .map_err(|r| r.to_string())
            });
        let dst = match admitted {
            Ok(dst) => dst,
            Err(why) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                if let Some(more) = self.refusal_log.check(std::time::Instant::now()) {
                    let more = if more > 0 {
                        format!(" ({more} more since the last line)")
                    } else {
                        String::new()
                    };
                    tracing::warn!(%peer, "connect: refused a connection at the redirect listener: {why}{more}");
                }
                let _ = tcp.set_zero_linger();
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        if self.dns_addr == Some(dst) {
            self.dns.serve_tcp(tcp).await;
            return;
        }
        let stats = &self.stats;
        stats.tcp.fetch_add(1, Ordering::Relaxed);
        let _open = Open::count(&stats.tcp_open);
        // The kernel has completed the handshake already, so a refusal can only reach the
        // application as a reset: open without waiting for the agent.
        let conn = match self.session.connect_optimistic(Target::Addr(dst)).await {
            Ok(c) => c,
            Err(e) => {
                stats.tcp_failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %dst, "TCP flow failed: {e}");
                let _ = tcp.set_zero_linger();
                return;
            }
        };
        // Only the agent's `Fin` ends a flow cleanly; a cut resets the application's
        // connection (and the flow at the agent), never a clean end of stream.
        // Counted as they move: a flow that ends in a reset (iperf3's do) still counts.
        let meter = kubelan_session::relay::Meter {
            up: &stats.bytes_up,
            down: &stats.bytes_down,
        };
        if let Err(e) = kubelan_session::relay::relay_edge(tcp, conn, Some(meter)).await {
            tracing::debug!(%peer, %dst, "TCP flow cut: {e}");
        }
    }
}

/// The listener redirected connections arrive at: loopback for `connect`, every address
/// for a gateway (its LAN clients'), an ephemeral port. Accepted connections inherit its
/// receive buffer (and the window scale it implies) and its announced segment size.
fn edge_listener(v6: bool, gateway: bool) -> std::io::Result<TcpListener> {
    let ip: IpAddr = match (v6, gateway) {
        (false, false) => Ipv4Addr::LOCALHOST.into(),
        (false, true) => Ipv4Addr::UNSPECIFIED.into(),
        (true, false) => Ipv6Addr::LOCALHOST.into(),
        (true, true) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = kubelan_session::relay::edge_socket(v6)?;
    if v6 {
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    // The segment size this host's own clients are told (a LAN client's own is no
    // bigger): see `EDGE_MSS`.
    socket2::SockRef::from(&socket).set_tcp_mss(kubelan_session::relay::EDGE_MSS)?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.listen(4096)
}

/// One open flow in a gauge, for as long as it lives.
struct Open<'a>(&'a AtomicU64);

impl<'a> Open<'a> {
    fn count(gauge: &'a AtomicU64) -> Open<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Open(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Binds the listeners, installs the table through the guard and starts relaying.
/// Returns what `status` shows. When nftables is missing or refuses, TCP stays on the
/// TUN path (slower) and a warning names the fix; a journal that cannot be written stops
/// connect before anything changes.
pub(crate) async fn start(
    guard: &mut HostGuard,
    redirector: Arc<Redirector>,
    events: &EventSink,
    shutdown: CancellationToken,
) -> anyhow::Result<RedirectStatus> {
    let gateway = !redirector.policy.lan.is_empty();
    let has_v6 = redirector
        .policy
        .cluster
        .iter()
        .any(|n| matches!(n, IpNet::V6(_)));
    let bind = |v6: bool| edge_listener(v6, gateway);
    let fallback = |why: String| {
        events(Event::TcpOnStack {
            reason: why.clone(),
        });
        RedirectStatus {
            active: false,
            table: None,
            listen: None,
            reason: Some(why),
        }
    };
    let v4 = match bind(false) {
        Ok(l) => l,
        Err(e) => return Ok(fallback(format!("cannot listen for redirected TCP: {e}"))),
    };
    let v6 = if has_v6 {
        match bind(true) {
            Ok(l) => Some(l),
            Err(e) => {
                events(Event::Ipv6TcpOnStack {
                    error: e.to_string(),
                });
                None
            }
        }
    } else {
        None
    };
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    let rules = RedirectRules {
        cluster: redirector.policy.cluster.clone(),
        skip: redirector.policy.skip.clone(),
        lan: redirector.policy.lan.clone(),
        port4: port(&v4),
        port6: v6.as_ref().map(port),
    };
    match kubelan_sys::nft::create_table(guard, NfFamily::INet, TABLE, rules.objects()).await {
        Ok(()) => {}
        Err(ApplyError::Nft(e)) => return Ok(fallback(format!("{e} (install nftables)"))),
        Err(e) => return Err(e.into()),
    }
    let mut listen = Vec::new();
    for l in std::iter::once(v4).chain(v6) {
        if let Ok(a) = l.local_addr() {
            listen.push(a.to_string());
        }
        tokio::spawn(redirector.clone().serve(l, shutdown.clone()));
    }
    events(Event::Redirect {
        table: format!("inet {TABLE}"),
        listen: listen.clone(),
    });
    Ok(RedirectStatus {
        active: true,
        table: Some(format!("inet {TABLE}")),
        listen: Some(listen),
        reason: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local client of the listener is told an Ethernet-sized segment, not loopback's
    /// 64 KiB (which makes its kernel reserve megabytes of send buffer per upload).
    #[tokio::test]
    async fn local_clients_are_told_an_ethernet_segment_size() {
        let listener = edge_listener(false, false).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_accepted, _) = listener.accept().await.unwrap();
        let mss = socket2::SockRef::from(&client).tcp_mss().unwrap();
        assert!(
            mss <= kubelan_session::relay::EDGE_MSS,
            "the client uses {mss}-byte segments"
        );
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn policy(lan: &[&str]) -> Policy {
        Policy {
            cluster: vec![
                "10.96.0.0/12".parse().unwrap(),
                "10.244.0.0/16".parse().unwrap(),
            ],
            skip: vec!["10.96.0.1/32".parse().unwrap()],
            lan: lan.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn this_hosts_connections_to_the_cluster_are_relayed() {
        let p = policy(&[]);
        let lo = a("127.0.0.1:40000");
        assert_eq!(
            p.admit(a("192.168.1.5:5555"), lo, a("10.244.1.7:80")),
            Ok(())
        );
        assert_eq!(p.admit(a("127.0.0.1:5555"), lo, a("10.96.0.10:53")), Ok(()));
    }

    #[test]
    fn the_listeners_own_port_and_skipped_addresses_are_refused() {
        let p = policy(&[]);
        let lo = a("127.0.0.1:40000");
        // Dialled directly: its original destination is the listener itself.
        assert_eq!(
            p.admit(a("127.0.0.1:5555"), lo, lo),
            Err(Refusal::NotCluster(lo))
        );
        assert_eq!(
            p.admit(a("127.0.0.1:5555"), lo, a("10.96.0.1:443")),
            Err(Refusal::NotCluster(a("10.96.0.1:443")))
        );
        assert_eq!(
            p.admit(a("127.0.0.1:5555"), lo, a("8.8.8.8:443")),
            Err(Refusal::NotCluster(a("8.8.8.8:443")))
        );
    }

    #[test]
    fn a_gateway_serves_its_lan_and_nobody_else() {
        let p = policy(&["172.16.1.0/24"]);
        let lan_side = a("172.16.1.1:40000");
        assert_eq!(
            p.admit(a("172.16.1.11:5555"), lan_side, a("10.244.1.7:80")),
            Ok(())
        );
        assert_eq!(
            p.admit(a("172.16.2.11:5555"), lan_side, a("10.244.1.7:80")),
            Err(Refusal::Outsider("172.16.2.11".parse().unwrap()))
        );
        // A LAN PC dialling the listener's port: not a cluster destination.
        assert_eq!(
            p.admit(a("172.16.1.11:5555"), lan_side, lan_side),
            Err(Refusal::NotCluster(lan_side))
        );
        // Without --lan, only loopback-accepted connections are this host's.
        assert!(
            policy(&[])
                .admit(a("172.16.1.11:5555"), lan_side, a("10.244.1.7:80"))
                .is_err()
        );
    }

    fn rules(lan: &[&str], port6: Option<u16>) -> String {
        let r = RedirectRules {
            cluster: vec![
                "10.96.0.0/12".parse().unwrap(),
                "fd00:10::/108".parse().unwrap(),
            ],
            skip: vec!["10.96.0.1/32".parse().unwrap()],
            lan: lan.iter().map(|n| n.parse().unwrap()).collect(),
            port4: 40001,
            port6,
        };
        serde_json::to_string(&r.objects()).unwrap()
    }

    #[test]
    fn connect_redirects_only_its_own_tcp() {
        let j = rules(&[], None);
        assert!(j.contains(r#""hook":"output""#), "{j}");
        assert!(!j.contains("prerouting"), "{j}");
        assert!(j.contains(r#"{"redirect":{"port":40001}}"#), "{j}");
        assert!(j.contains(r#""right":"@skip4""#), "{j}");
        assert!(
            j.contains(r#"{"meta":{"key":"l4proto"}},"right":"tcp""#),
            "{j}"
        );
        // No IPv6 listener: no IPv6 rule.
        assert!(!j.contains("cluster6"), "{j}");
    }

    #[test]
    fn a_gateway_also_redirects_its_lan_and_ipv6_gets_its_own_port() {
        let j = rules(&["172.16.1.0/24"], Some(40002));
        assert!(j.contains(r#""hook":"prerouting""#), "{j}");
        assert!(j.contains(r#""right":"@lan4""#), "{j}");
        assert!(j.contains(r#"{"redirect":{"port":40002}}"#), "{j}");
        assert!(
            j.contains(r#"{"prefix":{"addr":"fd00:10::","len":108}}"#),
            "{j}"
        );
        // No IPv6 address to skip: no skip6 set and no match on it.
        assert!(!j.contains("skip6"), "{j}");
    }
}
