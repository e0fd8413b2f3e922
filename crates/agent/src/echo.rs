//! ICMP echo flows: the agent pings for the client with an unprivileged ICMP socket
//! (`SOCK_DGRAM` + `IPPROTO_ICMP`), so a `ping` on the client's side is answered only
//! when the destination really answers inside the cluster.
//!
//! Unprivileged ICMP sockets need the process's group inside the pod's
//! `net.ipv4.ping_group_range` (containerd 2.x and Docker set `0 2147483647` by default;
//! elsewhere it is the pod sysctl of that name). The kernel fills in the identifier and
//! the checksum and only delivers replies to this socket's own requests.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use kubelan_proto::{ErrorKind, FlowError, Frame};
use kubelan_session::flow::write_frame;
use kubelan_session::mux::MuxStream;
use kubelan_session::relay::{Outgoing, dial_error, relay_datagrams};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// An echo flow ends after this long without a request from the client.
const ECHO_IDLE: Duration = Duration::from_secs(10);
/// Largest echo data the agent sends (the rest of a bigger request is refused).
const MAX_ECHO_DATA: usize = 65_000;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// Opens an unprivileged ICMP socket for `dst`'s family.
fn ping_socket(dst: IpAddr) -> io::Result<UdpSocket> {
    let (domain, proto) = match dst {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(proto))?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(std::net::UdpSocket::from(sock))
}

/// Builds the ICMP echo request (header with zero identifier and checksum, which the
/// kernel fills in) for one client datagram: `seq` (2 bytes) + data.
pub(crate) fn echo_request(dst: IpAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    if datagram.len() < 2 || datagram.len() - 2 > MAX_ECHO_DATA {
        return None;
    }
    let ty = if dst.is_ipv4() {
        ECHO_REQUEST_V4
    } else {
        ECHO_REQUEST_V6
    };
    let mut pkt = Vec::with_capacity(6 + datagram.len());
    pkt.extend_from_slice(&[ty, 0, 0, 0, 0, 0]);
    pkt.extend_from_slice(datagram);
    Some(pkt)
}

/// Turns an ICMP message read from the ping socket into the datagram for the client
/// (`seq` + data), or `None` when it is not an echo reply.
pub(crate) fn echo_reply(v4: bool, msg: &[u8]) -> Option<Bytes> {
    let reply = if v4 { ECHO_REPLY_V4 } else { ECHO_REPLY_V6 };
    if msg.len() < 8 || msg[0] != reply || msg[1] != 0 {
        return None;
    }
    Some(Bytes::copy_from_slice(&msg[6..]))
}

/// Serves one echo flow to `target` (already opened by the client).
/// The destination passed the agent's policy already.
pub(crate) async fn echo_flow(mut stream: MuxStream, leftover: bytes::BytesMut, dst: IpAddr) {
    let sock = match ping_socket(dst) {
        Ok(s) => s,
        Err(e) => {
            let message = if e.kind() == io::ErrorKind::PermissionDenied {
                "the agent may not send ICMP echo: its group is outside the pod's \
                 net.ipv4.ping_group_range (containerd 2.x sets `0 2147483647` by default; \
                 otherwise set that sysctl in the agent pod's securityContext)"
                    .to_string()
            } else {
                format!("cannot open an ICMP socket: {e}")
            };
            tracing::warn!(%dst, "ping refused: {message}");
            let _ = write_frame(
                &mut stream,
                &Frame::Failed(FlowError::new(ErrorKind::Other, message)),
            )
            .await;
            return;
        }
    };
    let peer = SocketAddr::new(dst, 0);
    if let Err(e) = sock.connect(peer).await {
        let _ = write_frame(&mut stream, &Frame::Failed(dial_error(peer, &e))).await;
        return;
    }
    relay_datagrams(
        stream,
        leftover,
        &sock,
        peer,
        ECHO_IDLE,
        |d| match echo_request(dst, &d) {
            Some(pkt) => Outgoing::Send(Bytes::from(pkt)),
            None => Outgoing::Skip,
        },
        |msg| echo_reply(dst.is_ipv4(), msg),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_shapes() {
        let v4: IpAddr = "172.17.32.4".parse().unwrap();
        let req = echo_request(v4, &[0, 7, b'h', b'i']).unwrap();
        assert_eq!(req, [8, 0, 0, 0, 0, 0, 0, 7, b'h', b'i']);
        assert!(echo_request(v4, &[1]).is_none(), "no sequence number");
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(echo_request(v6, &[0, 1]).unwrap()[0], 128);

        let reply = [0, 0, 0x12, 0x34, 0xab, 0xcd, 0, 7, b'h', b'i'];
        assert_eq!(
            echo_reply(true, &reply).unwrap(),
            Bytes::from_static(&[0, 7, b'h', b'i'])
        );
        assert!(echo_reply(true, &reply[..7]).is_none(), "truncated");
        assert!(
            echo_reply(false, &reply).is_none(),
            "v4 reply type on a v6 flow"
        );
        let mut unreachable = reply;
        unreachable[0] = 3;
        assert!(echo_reply(true, &unreachable).is_none());
    }

    /// Loopback ping through a real ping socket, when this host permits it.
    #[tokio::test]
    async fn pings_loopback_when_permitted() {
        let dst: IpAddr = "127.0.0.1".parse().unwrap();
        let Ok(sock) = ping_socket(dst) else {
            eprintln!("SKIP: ICMP sockets not permitted here (net.ipv4.ping_group_range)");
            return;
        };
        let pkt = echo_request(dst, &[0, 9, 1, 2, 3]).unwrap();
        sock.send_to(&pkt, SocketAddr::new(dst, 0)).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert_eq!(
            echo_reply(true, &buf[..n]).unwrap(),
            Bytes::from_static(&[0, 9, 1, 2, 3])
        );
    }
}
