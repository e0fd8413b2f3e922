//! The bounded, incremental frame decoder.
use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};

use crate::types::{
    ErrorKind, FlowError, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_TOKEN_LEN, Target, Token,
};

use super::{
    Capabilities, Cidr, DATA_HEADER_LEN, Facts, FlowKind, Frame, MAGIC, MAX_CIDRS,
    MAX_CONTROL_BODY, MAX_DATA, MAX_DATAGRAM, MAX_SHORT, RefuseReason, open_flags, ty,
};

/// Why bytes could not be decoded as frames. The stream that produced them must be reset:
/// the decoder does not resynchronise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An unknown, non-optional frame type (the peer speaks a version we did not agree).
    #[error("unknown frame type 0x{0:02x} (peer speaks a newer protocol than negotiated)")]
    UnknownType(u8),
    /// A length above the limit for its frame type.
    #[error("{kind} frame of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Frame kind.
        kind: &'static str,
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A body that ends early or holds an invalid value.
    #[error("malformed {kind} frame: {what}")]
    Malformed {
        /// Frame kind.
        kind: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// The first frame did not start with [`MAGIC`]: not a kubelan peer.
    #[error("the peer is not a kubelan client (no KLAN magic in its hello)")]
    NotKubelan,
}

/// Incremental frame decoder. Feed it the bytes read from one stream; it returns whole
/// frames and never buffers more than one frame's worth (the caller's buffer grows to at
/// most one header plus [`MAX_DATAGRAM`]).
#[derive(Debug, Default)]
pub struct Decoder {
    _private: (),
}

impl Decoder {
    /// A new decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Removes and returns the next whole frame from `buf`, `Ok(None)` when more bytes are
    /// needed. Optional frames of unknown type are consumed and skipped.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for anything that is not a valid frame; the stream must be reset.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        loop {
            if buf.len() < DATA_HEADER_LEN {
                return Ok(None);
            }
            let ty = buf[0];
            let len =
                (usize::from(buf[1]) << 16) | (usize::from(buf[2]) << 8) | usize::from(buf[3]);
            let (kind, max) = limits(ty)?;
            if len > max {
                return Err(DecodeError::TooLong { kind, len, max });
            }
            if buf.len() < DATA_HEADER_LEN + len {
                buf.reserve(DATA_HEADER_LEN + len - buf.len());
                return Ok(None);
            }
            buf.advance(DATA_HEADER_LEN);
            let body = buf.split_to(len);
            if ty >= ty::FIRST_OPTIONAL {
                continue; // rule 4: unknown optional frames are skipped
            }
            return parse(ty, kind, body).map(Some);
        }
    }
}

/// The payload length of the [`Frame::Data`] whose header starts `buf`, or `None` when
/// `buf` does not start with a whole, valid `Data` header (another frame, too few bytes,
/// a length over [`MAX_DATA`]: let [`Decoder::decode`] judge those). Lets a reader take a
/// `Data` frame's payload as it arrives instead of buffering the whole frame.
pub fn data_header(buf: &[u8]) -> Option<usize> {
    let &[t, a, b, c, ..] = buf else {
        return None;
    };
    let len = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
    (t == ty::DATA && len <= MAX_DATA).then_some(len)
}

fn limits(ty: u8) -> Result<(&'static str, usize), DecodeError> {
    Ok(match ty {
        ty::HELLO => ("Hello", MAX_CONTROL_BODY),
        ty::WELCOME => ("Welcome", MAX_CONTROL_BODY),
        ty::REFUSED => ("Refused", MAX_CONTROL_BODY),
        ty::PING => ("Ping", MAX_CONTROL_BODY),
        ty::PONG => ("Pong", MAX_CONTROL_BODY),
        ty::FACTS => ("Facts", MAX_CONTROL_BODY),
        ty::GOAWAY => ("GoAway", MAX_CONTROL_BODY),
        ty::OPEN => ("Open", MAX_CONTROL_BODY),
        ty::OPENED => ("Opened", MAX_CONTROL_BODY),
        ty::FAILED => ("Failed", MAX_CONTROL_BODY),
        ty::DATA => ("Data", MAX_DATA),
        ty::FIN => ("Fin", MAX_CONTROL_BODY),
        ty::RESET => ("Reset", MAX_CONTROL_BODY),
        ty::DATAGRAM => ("Datagram", MAX_DATAGRAM),
        ty::INCOMING => ("Incoming", MAX_CONTROL_BODY),
        ty::LISTEN => ("Listen", MAX_CONTROL_BODY),
        ty::LISTENING => ("Listening", MAX_CONTROL_BODY),
        ty::LISTEN_FAILED => ("ListenFailed", MAX_CONTROL_BODY),
        t if t >= ty::FIRST_OPTIONAL => ("optional", MAX_CONTROL_BODY),
        t => return Err(DecodeError::UnknownType(t)),
    })
}

fn parse(ty: u8, kind: &'static str, body: BytesMut) -> Result<Frame, DecodeError> {
    if ty == ty::DATA {
        return Ok(Frame::Data(body.freeze()));
    }
    if ty == ty::DATAGRAM {
        return Ok(Frame::Datagram(body.freeze()));
    }
    let mut r = Reader {
        buf: body.freeze(),
        kind,
    };
    // Trailing bytes after the known fields are ignored (compatibility rule 3).
    Ok(match ty {
        ty::HELLO => {
            let magic = r.bytes(4).map_err(|_| DecodeError::NotKubelan)?;
            if magic[..] != MAGIC {
                return Err(DecodeError::NotKubelan);
            }
            let min = r.u16()?;
            let max = r.u16()?;
            Frame::Hello {
                versions: crate::VersionRange { min, max },
                caps: Capabilities(r.u64()?),
                software: r.string(MAX_SHORT)?,
                // Appended in version 1: absent from older clients (rule 3).
                token: r.opt_string(MAX_TOKEN_LEN)?.map(Token::new),
            }
        }
        ty::WELCOME => Frame::Welcome {
            version: r.u16()?,
            caps: Capabilities(r.u64()?),
            software: r.string(MAX_SHORT)?,
            facts: r.facts()?,
        },
        ty::REFUSED => {
            let reason = RefuseReason::from_code(r.u8()?);
            let min = r.u16()?;
            let max = r.u16()?;
            Frame::Refused {
                reason,
                versions: crate::VersionRange { min, max },
                message: r.string(MAX_MESSAGE_LEN)?,
            }
        }
        ty::PING => Frame::Ping { nonce: r.u64()? },
        ty::PONG => Frame::Pong { nonce: r.u64()? },
        ty::FACTS => Frame::Facts(r.facts()?),
        ty::GOAWAY => Frame::GoAway {
            drain_ms: r.u32()?,
            message: r.string(MAX_MESSAGE_LEN)?,
        },
        ty::OPEN => {
            let kind = r.flow_kind()?;
            let target = r.target()?;
            // The flags byte came later in version 1: absent means none (rule 3).
            let flags = r.opt_u8().unwrap_or(0);
            Frame::Open {
                kind,
                target,
                optimistic: flags & open_flags::OPTIMISTIC != 0,
            }
        }
        ty::OPENED => Frame::Opened {
            peer: r.sockaddr()?,
        },
        ty::FAILED => Frame::Failed(r.error()?),
        ty::FIN => Frame::Fin,
        ty::RESET => Frame::Reset(r.error()?),
        ty::INCOMING => Frame::Incoming {
            listener: r.u32()?,
            kind: r.flow_kind()?,
            peer: r.sockaddr()?,
            optimistic: r.u8()? & open_flags::OPTIMISTIC != 0,
        },
        ty::LISTEN => Frame::Listen {
            listener: r.u32()?,
            kind: r.flow_kind()?,
            port: r.u16()?,
        },
        ty::LISTENING => Frame::Listening { listener: r.u32()? },
        ty::LISTEN_FAILED => Frame::ListenFailed {
            listener: r.u32()?,
            error: r.error()?,
        },
        t => return Err(DecodeError::UnknownType(t)),
    })
}

struct Reader {
    buf: Bytes,
    kind: &'static str,
}

impl Reader {
    fn bad(&self, what: &'static str) -> DecodeError {
        DecodeError::Malformed {
            kind: self.kind,
            what,
        }
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(self.bad("body ends early"))
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    /// A field appended in a later release: `None` when the body ends before it.
    fn opt_u8(&mut self) -> Option<u8> {
        self.buf.has_remaining().then(|| self.buf.get_u8())
    }

    /// A string appended in a later release: `None` when the body ends before it.
    fn opt_string(&mut self, max: usize) -> Result<Option<String>, DecodeError> {
        if self.buf.has_remaining() {
            self.string(max).map(Some)
        } else {
            Ok(None)
        }
    }

    fn flow_kind(&mut self) -> Result<FlowKind, DecodeError> {
        let code = self.u8()?;
        FlowKind::from_code(code).ok_or_else(|| self.bad("unknown flow kind"))
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    fn string(&mut self, max: usize) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(self.bad("string longer than its limit"));
        }
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("string is not UTF-8"))
    }

    fn ip(&mut self) -> Result<IpAddr, DecodeError> {
        match self.u8()? {
            4 => {
                let b = self.bytes(4)?;
                Ok(IpAddr::from([b[0], b[1], b[2], b[3]]))
            }
            6 => {
                let b = self.bytes(16)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(&b);
                Ok(IpAddr::from(a))
            }
            _ => Err(self.bad("unknown address family")),
        }
    }

    fn sockaddr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = self.ip()?;
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    fn target(&mut self) -> Result<Target, DecodeError> {
        match self.u8()? {
            0 => Ok(Target::Addr(self.sockaddr()?)),
            1 => {
                let n = usize::from(self.u8()?);
                if n == 0 || n > MAX_NAME_LEN {
                    return Err(self.bad("host name length out of range"));
                }
                let b = self.bytes(n)?;
                let host = String::from_utf8(b.to_vec())
                    .map_err(|_| self.bad("host name is not UTF-8"))?;
                Ok(Target::Name {
                    host,
                    port: self.u16()?,
                })
            }
            _ => Err(self.bad("unknown target type")),
        }
    }

    fn error(&mut self) -> Result<FlowError, DecodeError> {
        let kind = ErrorKind::from_code(self.u8()?);
        Ok(FlowError {
            kind,
            message: self.string(MAX_MESSAGE_LEN)?,
        })
    }

    fn cidrs(&mut self) -> Result<Vec<Cidr>, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > MAX_CIDRS {
            return Err(self.bad("too many prefixes"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let addr = self.ip()?;
            let prefix = self.u8()?;
            if prefix > if addr.is_ipv4() { 32 } else { 128 } {
                return Err(self.bad("prefix length out of range"));
            }
            out.push(Cidr { addr, prefix });
        }
        Ok(out)
    }

    fn facts(&mut self) -> Result<Facts, DecodeError> {
        let cluster_domain = self.string(MAX_SHORT)?;
        let dns_server = match self.u8()? {
            0 => None,
            1 => Some(self.sockaddr()?),
            _ => return Err(self.bad("bad DNS server flag")),
        };
        Ok(Facts {
            cluster_domain,
            dns_server,
            pod_cidrs: self.cidrs()?,
            service_cidrs: self.cidrs()?,
            agent: self.string(MAX_SHORT)?,
            node: self.string(MAX_SHORT)?,
        })
    }
}
