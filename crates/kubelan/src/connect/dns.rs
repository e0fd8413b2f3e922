//! The DNS server of `kubelan connect`: queries to the cluster DNS address that the TUN
//! catches are split — cluster names go through the tunnel to the agent, everything else
//! to the resolvers the machine had before, unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kubelan_dns::split::{self, Route, SplitZones};
use kubelan_session::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long one upstream resolver gets before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// A DNS-over-TCP client that sends nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);

/// Query counters, for `kubelan status`.
#[derive(Debug, Default)]
pub(crate) struct DnsStats {
    pub cluster: AtomicU64,
    pub upstream: AtomicU64,
    pub failed: AtomicU64,
}

/// Answers DNS queries caught on the TUN.
pub(crate) struct DnsRelay {
    pub zones: SplitZones,
    pub session: Session,
    /// The cluster DNS Service, which the agent relays to for names its cache lacks.
    pub cluster_dns: SocketAddr,
    /// The machine's own resolvers (from before `connect`).
    pub upstreams: Vec<SocketAddr>,
    pub stats: Arc<DnsStats>,
}

impl DnsRelay {
    /// The reply to one query, or `None` when the query deserves no answer.
    pub(crate) async fn answer(&self, query: Bytes) -> Option<Bytes> {
        match self.zones.route(&query) {
            Route::Invalid => split::formerr(&query).map(Bytes::from),
            Route::Cluster => {
                self.stats.cluster.fetch_add(1, Ordering::Relaxed);
                match self.session.dns(self.cluster_dns, query.clone()).await {
                    Ok(reply) => Some(reply),
                    Err(e) => {
                        tracing::warn!("cluster DNS query failed: {e}");
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        split::servfail(&query).map(Bytes::from)
                    }
                }
            }
            Route::Upstream => {
                self.stats.upstream.fetch_add(1, Ordering::Relaxed);
                for up in &self.upstreams {
                    match kubelan_dns::forward_udp(&query, *up, UPSTREAM_TIMEOUT).await {
                        Ok(reply) => return Some(Bytes::from(reply)),
                        Err(e) => tracing::debug!(upstream = %up, "DNS upstream failed: {e}"),
                    }
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
