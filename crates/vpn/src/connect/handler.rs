//! What `kubelan connect` does with the flows its userspace stack hands it: TCP and UDP
//! go through the session to the agent, DNS to the cluster DNS address is answered by
//! the split-DNS relay, ICMP echo is answered only when the agent's real ping is.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use kubelan_netstack::{EchoRequest, Handler, TcpFlow, UdpFlow};
use kubelan_proto::Target;
use kubelan_session::Session;

use crate::dnsrelay::DnsRelay;

/// How long a ping through the agent may take before the request counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Flow counters, for `kubelan status`.
#[derive(Debug, Default)]
pub(crate) struct FlowStats {
    pub tcp: AtomicU64,
    pub tcp_failed: AtomicU64,
    /// Redirected TCP flows open now (the userspace stack counts its own).
    pub tcp_open: AtomicU64,
    pub udp: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub pings: AtomicU64,
    pub pongs: AtomicU64,
}

/// The handler behind the TUN.
pub(crate) struct TunHandler {
    pub session: Session,
    /// Where the machine's resolver sends cluster queries (the cluster DNS Service IP).
    pub dns_addr: Option<SocketAddr>,
    pub dns: Arc<DnsRelay>,
    pub stats: Arc<FlowStats>,
}

impl TunHandler {
    fn is_dns(&self, dst: SocketAddr) -> bool {
        self.dns_addr == Some(dst)
    }
}

impl Handler for TunHandler {
    fn tcp(&self, flow: TcpFlow) -> BoxFuture<'static, ()> {
        if self.is_dns(flow.dst) {
            let dns = self.dns.clone();
            return Box::pin(async move { dns.serve_tcp(flow.stream).await });
        }
        let session = self.session.clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            stats.tcp.fetch_add(1, Ordering::Relaxed);
            let mut local = flow.stream;
            // The local stack has already completed the handshake, so a refusal can only
            // reach the application as a reset: open without waiting for the agent.
            let mut remote = match session.connect_optimistic(Target::Addr(flow.dst)).await {
                Ok(c) => c,
                Err(e) => {
                    stats.tcp_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(src = %flow.src, dst = %flow.dst, "TCP flow failed: {e}");
                    local.abort().await;
                    return;
                }
            };
            // The flow is the relay's `RelayEnd` side; the local stack's stream takes no
            // last-bytes hint and sends its FIN after the queued bytes on its own.
            match kubelan_session::relay::copy_bidirectional(&mut remote, &mut local).await {
                Ok((down, up)) => {
                    stats.bytes_up.fetch_add(up, Ordering::Relaxed);
                    stats.bytes_down.fetch_add(down, Ordering::Relaxed);
                }
                Err(e) => {
                    // Only the agent's `Fin` ends a flow cleanly. A cut (carrier lost, the
                    // destination or the application reset, the agent refused) resets the
                    // application's connection, so nothing takes it for the end of the
                    // stream; dropping `remote` resets the flow at the agent.
                    tracing::debug!(src = %flow.src, dst = %flow.dst, "TCP flow cut: {e}");
                    local.abort().await;
                }
            }
        })
    }

    fn udp(&self, flow: UdpFlow) -> BoxFuture<'static, ()> {
        let UdpFlow {
            src,
            dst,
            mut rx,
            tx,
            ..
        } = flow;
        if self.is_dns(dst) {
            let dns = self.dns.clone();
            return Box::pin(async move {
                // Queries of one flow are answered concurrently (resolvers send A and AAAA
                // at once); the stack ends `rx` when the flow goes idle.
                while let Some(query) = rx.recv().await {
                    let (dns, tx) = (dns.clone(), tx.clone());
                    tokio::spawn(async move {
                        if let Some(reply) = dns.answer(query).await {
                            let _ = tx.send(reply).await;
                        }
                    });
                }
            });
        }
        let session = self.session.clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            stats.udp.fetch_add(1, Ordering::Relaxed);
            let (to_agent, mut from_agent) = match session.open_udp(Target::Addr(dst)).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(%src, %dst, "UDP flow failed: {e}");
                    return;
                }
            };
            loop {
                tokio::select! {
                    d = rx.recv() => match d {
                        Some(d) => {
                            stats.bytes_up.fetch_add(d.len() as u64, Ordering::Relaxed);
                            if to_agent.send(d).await.is_err() { break }
                        }
                        None => break,
                    },
                    d = from_agent.recv() => match d {
                        Some(d) => {
                            stats.bytes_down.fetch_add(d.len() as u64, Ordering::Relaxed);
                            if tx.send(d).await.is_err() { break }
                        }
                        None => break,
                    },
                }
            }
        })
    }

    fn icmp_echo(&self, req: EchoRequest) -> BoxFuture<'static, bool> {
        let session = self.session.clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            stats.pings.fetch_add(1, Ordering::Relaxed);
            let dst: IpAddr = req.dst;
            match session.ping(dst, req.seq, &req.payload, PING_TIMEOUT).await {
                Ok(true) => {
                    stats.pongs.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::debug!(%dst, "ping failed: {e}");
                    false
                }
            }
        })
    }
}
