//! Encoding frames: anything constructed can be emitted (over-long fields are cut).
use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, BytesMut};

use crate::types::{FlowError, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_TOKEN_LEN, Target};

use super::{
    Cidr, DATA_HEADER_LEN, Facts, Frame, MAGIC, MAX_CIDRS, MAX_DATA, MAX_DATAGRAM, MAX_SHORT,
    open_flags, ty,
};

impl Frame {
    /// Appends the encoded frame to `out`. Fields longer than their wire limit are cut
    /// (messages at a char boundary), so anything constructed can be emitted.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0); // header, patched below
        let ty = match self {
            Frame::Hello {
                versions,
                caps,
                software,
                token,
            } => {
                out.put_slice(&MAGIC);
                out.put_u16(versions.min);
                out.put_u16(versions.max);
                out.put_u64(caps.0);
                put_str(out, software, MAX_SHORT);
                if let Some(t) = token {
                    put_str(out, t.expose(), MAX_TOKEN_LEN);
                }
                ty::HELLO
            }
            Frame::Welcome {
                version,
                caps,
                software,
                facts,
            } => {
                out.put_u16(*version);
                out.put_u64(caps.0);
                put_str(out, software, MAX_SHORT);
                put_facts(out, facts);
                ty::WELCOME
            }
            Frame::Refused {
                reason,
                versions,
                message,
            } => {
                out.put_u8(reason.code());
                out.put_u16(versions.min);
                out.put_u16(versions.max);
                put_str(out, message, MAX_MESSAGE_LEN);
                ty::REFUSED
            }
            Frame::Ping { nonce } => {
                out.put_u64(*nonce);
                ty::PING
            }
            Frame::Pong { nonce } => {
                out.put_u64(*nonce);
                ty::PONG
            }
            Frame::Facts(f) => {
                put_facts(out, f);
                ty::FACTS
            }
            Frame::GoAway { drain_ms, message } => {
                out.put_u32(*drain_ms);
                put_str(out, message, MAX_MESSAGE_LEN);
                ty::GOAWAY
            }
            Frame::Open {
                kind,
                target,
                optimistic,
            } => {
                out.put_u8(kind.code());
                put_target(out, target);
                out.put_u8(if *optimistic {
                    open_flags::OPTIMISTIC
                } else {
                    0
                });
                ty::OPEN
            }
            Frame::Opened { peer } => {
                put_sockaddr(out, peer);
                ty::OPENED
            }
            Frame::Failed(e) => {
                put_error(out, e);
                ty::FAILED
            }
            Frame::Data(d) => {
                out.put_slice(&d[..d.len().min(MAX_DATA)]);
                ty::DATA
            }
            Frame::Fin => ty::FIN,
            Frame::Reset(e) => {
                put_error(out, e);
                ty::RESET
            }
            Frame::Datagram(d) => {
                out.put_slice(&d[..d.len().min(MAX_DATAGRAM)]);
                ty::DATAGRAM
            }
            Frame::Incoming {
                listener,
                kind,
                peer,
                optimistic,
            } => {
                out.put_u32(*listener);
                out.put_u8(kind.code());
                put_sockaddr(out, peer);
                out.put_u8(if *optimistic {
                    open_flags::OPTIMISTIC
                } else {
                    0
                });
                ty::INCOMING
            }
            Frame::Listen {
                listener,
                kind,
                port,
            } => {
                out.put_u32(*listener);
                out.put_u8(kind.code());
                out.put_u16(*port);
                ty::LISTEN
            }
            Frame::Listening { listener } => {
                out.put_u32(*listener);
                ty::LISTENING
            }
            Frame::ListenFailed { listener, error } => {
                out.put_u32(*listener);
                put_error(out, error);
                ty::LISTEN_FAILED
            }
        };
        let len = out.len() - start - DATA_HEADER_LEN;
        let header = header(ty, len);
        out[start..start + DATA_HEADER_LEN].copy_from_slice(&header);
    }
}

fn header(ty: u8, len: usize) -> [u8; 4] {
    let len = len as u32;
    [ty, (len >> 16) as u8, (len >> 8) as u8, len as u8]
}

/// Writes the header of a [`Frame::Data`] of `len` payload bytes into `out[..4]`, so a
/// relay can read payload straight into `buf[4..]` and send header and payload with one
/// write, without copying.
///
/// # Panics
///
/// If `len` exceeds [`MAX_DATA`] or `out` is shorter than [`DATA_HEADER_LEN`].
pub fn encode_data_header(out: &mut [u8], len: usize) {
    assert!(len <= MAX_DATA, "data frame payload {len} exceeds MAX_DATA");
    out[..DATA_HEADER_LEN].copy_from_slice(&header(ty::DATA, len));
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str(out: &mut BytesMut, s: &str, max: usize) {
    let s = cut(s, max);
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn put_ip(out: &mut BytesMut, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out.put_u8(4);
            out.put_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.put_u8(6);
            out.put_slice(&a.octets());
        }
    }
}

fn put_sockaddr(out: &mut BytesMut, a: &SocketAddr) {
    put_ip(out, &a.ip());
    out.put_u16(a.port());
}

fn put_target(out: &mut BytesMut, t: &Target) {
    match t {
        Target::Addr(a) => {
            out.put_u8(0);
            put_sockaddr(out, a);
        }
        Target::Name { host, port } => {
            out.put_u8(1);
            let h = cut(host, MAX_NAME_LEN);
            out.put_u8(h.len() as u8);
            out.put_slice(h.as_bytes());
            out.put_u16(*port);
        }
    }
}

fn put_error(out: &mut BytesMut, e: &FlowError) {
    out.put_u8(e.kind.code());
    put_str(out, &e.message, MAX_MESSAGE_LEN);
}

fn put_cidrs(out: &mut BytesMut, cidrs: &[Cidr]) {
    let cidrs = &cidrs[..cidrs.len().min(MAX_CIDRS)];
    out.put_u16(cidrs.len() as u16);
    for c in cidrs {
        put_ip(out, &c.addr);
        out.put_u8(c.prefix.min(if c.addr.is_ipv4() { 32 } else { 128 }));
    }
}

fn put_facts(out: &mut BytesMut, f: &Facts) {
    put_str(out, &f.cluster_domain, MAX_SHORT);
    match &f.dns_server {
        None => out.put_u8(0),
        Some(a) => {
            out.put_u8(1);
            put_sockaddr(out, a);
        }
    }
    put_cidrs(out, &f.pod_cidrs);
    put_cidrs(out, &f.service_cidrs);
    put_str(out, &f.agent, MAX_SHORT);
    put_str(out, &f.node, MAX_SHORT);
}
