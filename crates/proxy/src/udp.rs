//! SOCKS5 UDP ASSOCIATE: a relay socket per association, one [`UdpFlow`] per destination.
//!
//! The association task owns the relay socket and the destination table; each
//! destination gets a task that opens its flow, forwards payloads and wraps replies in
//! the SOCKS UDP header. Destinations close after `udp_idle_timeout` without traffic; all
//! of them close with the TCP control connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{Counted, FlowGuard, linger_close};
use crate::shared::Shared;
use crate::socks5::{self, ReplyCode, SocksAddr};
use crate::{Target, UdpFlow};

/// Datagrams queued per destination while its flow opens or is busy; more are dropped.
const DEST_QUEUE: usize = 64;

/// A destination's entry in the association's table.
struct Dest {
    /// Payloads to the destination task.
    payloads_tx: mpsc::Sender<Bytes>,
    last_used: Instant,
}

pub(crate) async fn associate(
    shared: Arc<Shared>,
    mut control: Counted<TcpStream>,
    peer: SocketAddr,
    local_ip: IpAddr,
    requested: SocksAddr,
    cancel: CancellationToken,
) {
    use tokio::io::AsyncWriteExt;

    let socket = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, "SOCKS5 UDP ASSOCIATE: cannot bind a relay socket on {local_ip}: {e}");
            let mut out = Vec::new();
            socks5::encode_reply(ReplyCode::GeneralFailure, &SocksAddr::UNSPECIFIED, &mut out);
            let _ = control.write_all(&out).await;
            linger_close(&mut control).await;
            return;
        }
    };
    let Ok(relay_addr) = socket.local_addr() else {
        return;
    };
    let mut out = Vec::new();
    socks5::encode_reply(ReplyCode::Succeeded, &SocksAddr::Ip(relay_addr), &mut out);
    if control.write_all(&out).await.is_err() {
        return;
    }
    debug!(%peer, %relay_addr, "SOCKS5 UDP association open");

    let socket = Arc::new(socket);
    // Only the client's host may use the relay; its port is pinned by the request or
    // by the first datagram.
    let client_ip = peer.ip().to_canonical();
    let mut client_addr: Option<SocketAddr> = match &requested {
        SocksAddr::Ip(a) if a.port() != 0 => Some(SocketAddr::new(peer.ip(), a.port())),
        _ => None,
    };
    // Cancelled when this function returns, which ends every destination task.
    let flows_cancel = cancel.child_token();
    let _flows_guard = flows_cancel.clone().drop_guard();
    let mut dests: HashMap<Target, Dest> = HashMap::new();
    let mut datagram = vec![0u8; 65_536];
    let mut ctl = [0u8; 256];
    loop {
        let (n, from) = tokio::select! {
            r = control.read(&mut ctl) => match r {
                // RFC 1928 defines nothing on the control connection after the reply;
                // bytes are ignored, its closing ends the association.
                Ok(1..) => continue,
                Ok(0) | Err(_) => break,
            },
            r = socket.recv_from(&mut datagram) => match r {
                Ok(v) => v,
                Err(e) => {
                    debug!(%peer, "SOCKS5 UDP relay receive error: {e}");
                    continue;
                }
            },
        };
        if from.ip().to_canonical() != client_ip {
            debug!(%peer, %from, "SOCKS5 UDP: dropping a datagram from a stranger");
            continue;
        }
        match client_addr {
            Some(a) if a.port() != from.port() => {
                debug!(%peer, %from, "SOCKS5 UDP: dropping a datagram from another port");
                continue;
            }
            Some(_) => {}
            None => client_addr = Some(from),
        }
        let (addr, header_len) = match socks5::parse_udp_header(&datagram[..n]) {
            Ok(v) => v,
            Err(e) => {
                debug!(%peer, "SOCKS5 UDP: dropping a datagram: {e}");
                continue;
            }
        };
        let payload = Bytes::copy_from_slice(&datagram[header_len..n]);
        shared.counters.up(payload.len());
        let target = addr.to_target();
        let mut payload = Some(payload);
        if let Some(dest) = dests.get_mut(&target) {
            match dest
                .payloads_tx
                .try_send(payload.take().unwrap_or_default())
            {
                Ok(()) => dest.last_used = Instant::now(),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(%peer, %target, "SOCKS5 UDP: destination busy; dropping a datagram");
                }
                // The destination task ended (idle or failed): start again below.
                Err(mpsc::error::TrySendError::Closed(p)) => payload = Some(p),
            }
        }
        let Some(payload) = payload else { continue };
        dests.retain(|_, d| !d.payloads_tx.is_closed());
        if dests.len() >= shared.config.udp_max_destinations.max(1) {
            let idlest = dests
                .iter()
                .min_by_key(|(_, d)| d.last_used)
                .map(|(t, _)| t.clone());
            if let Some(t) = idlest {
                debug!(%peer, target = %t, "SOCKS5 UDP: too many destinations; closing the idlest");
                dests.remove(&t);
            }
        }
        let (payloads_tx, payloads_rx) = mpsc::channel(DEST_QUEUE);
        let _ = payloads_tx.try_send(payload);
        let client = client_addr.unwrap_or(from);
        tokio::spawn(relay_destination(
            shared.clone(),
            socket.clone(),
            client,
            addr,
            target.clone(),
            payloads_rx,
            flows_cancel.clone(),
        ));
        dests.insert(
            target,
            Dest {
                payloads_tx,
                last_used: Instant::now(),
            },
        );
    }
    debug!(%peer, %relay_addr, destinations = dests.len(), "SOCKS5 UDP association closed");
}

/// Opens the flow for one destination and relays until it idles out, fails, is
/// evicted (`payloads_rx` closes) or the association ends.
async fn relay_destination(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    reply_addr: SocksAddr,
    target: Target,
    mut payloads_rx: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
) {
    let opened = tokio::select! {
        _ = cancel.cancelled() => return,
        r = shared.connector.open_udp(target.clone()) => r,
    };
    let UdpFlow { tx, mut rx } = match opened {
        Ok(flow) => flow,
        Err(e) => {
            shared.counters.flow_error(e.kind);
            info!(%client, %target, "SOCKS5 UDP flow failed: {e}");
            return;
        }
    };
    let _flow = FlowGuard::new(shared.clone());
    // Replies carry the destination as the client wrote it (a name stays a name).
    let mut header = Vec::with_capacity(socks5::MAX_UDP_HEADER_LEN);
    socks5::encode_udp_header(&reply_addr, &mut header);
    let idle = shared.config.udp_idle_timeout;
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = &mut idle_timer => {
                debug!(%client, %target, "SOCKS5 UDP destination idle; closing");
                break;
            }
            p = payloads_rx.recv() => {
                let Some(p) = p else { break };
                match tx.try_send(p) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        debug!(%client, %target, "SOCKS5 UDP flow busy; dropping a datagram");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            d = rx.recv() => {
                let Some(d) = d else { break };
                let mut out = Vec::with_capacity(header.len() + d.len());
                out.extend_from_slice(&header);
                out.extend_from_slice(&d);
                match socket.send_to(&out, client).await {
                    Ok(_) => shared.counters.down(d.len()),
                    Err(e) => debug!(%client, %target, "SOCKS5 UDP: cannot send to the client: {e}"),
                }
            }
        }
        idle_timer.as_mut().reset(Instant::now() + idle);
    }
}
