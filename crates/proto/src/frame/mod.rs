//! Frames: types, encoding and the bounded decoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::types::{
    ErrorKind, FlowError, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_TOKEN_LEN, Target, Token,
};

/// Bytes every [`Frame::Hello`] starts with, so an agent can tell a kubelan client from a
/// stray HTTP request or port scanner at once.
pub const MAGIC: [u8; 4] = *b"KLAN";

/// Largest payload of one [`Frame::Data`].
pub const MAX_DATA: usize = 64 * 1024;
/// Largest payload of one [`Frame::Datagram`] (a full UDP datagram).
pub const MAX_DATAGRAM: usize = 65_535;
/// Largest body of any other frame.
pub const MAX_CONTROL_BODY: usize = 16 * 1024;
/// Length of the header in front of every frame.
pub const DATA_HEADER_LEN: usize = 4;

/// Longest list of CIDRs in [`Facts`].
const MAX_CIDRS: usize = 256;
/// Longest short string (names, versions).
const MAX_SHORT: usize = 255;

mod ty {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const WELCOME: u8 = 0x02;
    pub(super) const REFUSED: u8 = 0x03;
    pub(super) const PING: u8 = 0x04;
    pub(super) const PONG: u8 = 0x05;
    pub(super) const FACTS: u8 = 0x06;
    pub(super) const GOAWAY: u8 = 0x07;
    pub(super) const OPEN: u8 = 0x10;
    pub(super) const OPENED: u8 = 0x11;
    pub(super) const FAILED: u8 = 0x12;
    pub(super) const DATA: u8 = 0x13;
    pub(super) const FIN: u8 = 0x14;
    pub(super) const RESET: u8 = 0x15;
    pub(super) const DATAGRAM: u8 = 0x16;
    pub(super) const INCOMING: u8 = 0x17;
    pub(super) const LISTEN: u8 = 0x18;
    pub(super) const LISTENING: u8 = 0x19;
    pub(super) const LISTEN_FAILED: u8 = 0x1A;
    /// First optional frame type (skipped when unknown).
    pub(super) const FIRST_OPTIONAL: u8 = 0x80;
}

/// Feature bits exchanged in [`Frame::Hello`] and [`Frame::Welcome`]; a feature is used
/// only when both sides set its bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// TCP flows.
    pub const TCP: Capabilities = Capabilities(1);
    /// UDP flows.
    pub const UDP: Capabilities = Capabilities(1 << 1);
    /// DNS flows answered from the agent's cluster cache.
    pub const DNS: Capabilities = Capabilities(1 << 2);
    /// ICMP echo flows performed by the agent ([`FlowKind::Echo`]).
    pub const ECHO: Capabilities = Capabilities(1 << 3);
    /// Flows opened by the agent side toward the client ([`Frame::Incoming`]). From the
    /// client: it understands `Incoming` (it serves such flows or resets them at once).
    /// From the agent: its image also holds `kubelan relay`, the per-session relay that
    /// opens such flows (the agent itself never does).
    pub const REVERSE: Capabilities = Capabilities(1 << 4);
    /// Listeners opened on request ([`Frame::Listen`] on the control stream, answered by
    /// [`Frame::Listening`] or [`Frame::ListenFailed`]). From the agent side: it opens
    /// them (the per-session relay does; the agent never does). From the client: it may
    /// ask. `kubelan run` without `--expose` needs it.
    pub const LISTEN: Capabilities = Capabilities(1 << 5);
    /// Everything this build implements.
    pub const ALL: Capabilities = Capabilities(0b11_1111);

    /// Names of the features, in bit order, for messages.
    const NAMES: [&'static str; 6] = [
        "TCP",
        "UDP",
        "DNS",
        "ICMP echo",
        "reverse flows",
        "listeners on request",
    ];

    /// Bits set in both.
    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits of `self` not set in `other`.
    pub fn without(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & !other.0)
    }

    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The features by name (`TCP, reverse flows`; unknown bits as `bit N`; `none`).
impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for bit in 0..64 {
            if self.0 & (1 << bit) == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match Capabilities::NAMES.get(bit) {
                Some(name) => f.write_str(name)?,
                None => write!(f, "bit {bit}")?,
            }
        }
        Ok(())
    }
}

/// What a flow carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// A TCP connection: [`Frame::Data`], [`Frame::Fin`], [`Frame::Reset`].
    Tcp,
    /// UDP datagrams to one destination: [`Frame::Datagram`].
    Udp,
    /// DNS queries answered by the agent (the target names the upstream the client meant,
    /// normally the cluster DNS Service): [`Frame::Datagram`], one message each.
    Dns,
    /// ICMP echo ("ping") to the target's address (its port is ignored), performed by the
    /// agent with a real echo request. Each [`Frame::Datagram`] is a 2-byte sequence
    /// number followed by the echo data; the agent sends one back, unchanged, for every
    /// reply it receives. Used only when both sides set [`Capabilities::ECHO`].
    Echo,
}

impl FlowKind {
    fn code(self) -> u8 {
        match self {
            FlowKind::Tcp => 1,
            FlowKind::Udp => 2,
            FlowKind::Dns => 3,
            FlowKind::Echo => 4,
        }
    }

    fn from_code(code: u8) -> Option<FlowKind> {
        Some(match code {
            1 => FlowKind::Tcp,
            2 => FlowKind::Udp,
            3 => FlowKind::Dns,
            4 => FlowKind::Echo,
            _ => return None,
        })
    }

    /// A short lower-case label for logs and messages.
    pub fn label(self) -> &'static str {
        match self {
            FlowKind::Tcp => "tcp",
            FlowKind::Udp => "udp",
            FlowKind::Dns => "dns",
            FlowKind::Echo => "echo",
        }
    }
}

/// Why the agent refused a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// No protocol version in common.
    Version,
    /// The credentials did not authorise this client.
    Auth,
    /// The agent is shutting down.
    ShuttingDown,
    /// Anything else (and reasons from newer agents).
    Other,
}

impl RefuseReason {
    fn code(self) -> u8 {
        match self {
            RefuseReason::Version => 1,
            RefuseReason::Auth => 2,
            RefuseReason::ShuttingDown => 3,
            RefuseReason::Other => 255,
        }
    }

    fn from_code(c: u8) -> RefuseReason {
        match c {
            1 => RefuseReason::Version,
            2 => RefuseReason::Auth,
            3 => RefuseReason::ShuttingDown,
            _ => RefuseReason::Other,
        }
    }
}

/// An IP prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected ADDRESS/PREFIX)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} in {s:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix {p:?} in {s:?} must be 0..={max}"))?;
        Ok(Cidr { addr, prefix }.network())
    }
}

impl Cidr {
    /// The same prefix with host bits cleared.
    pub fn network(self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Cidr {
                    addr: ip,
                    prefix: self.prefix,
                }
                .network()
                .addr
                    == self.network().addr
            }
            _ => false,
        }
    }
}

/// What the agent knows about its cluster, sent in [`Frame::Welcome`] and [`Frame::Facts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Cluster DNS domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// Address of the cluster DNS server (the kube-dns Service), when known.
    pub dns_server: Option<SocketAddr>,
    /// Pod network prefixes the agent may dial.
    pub pod_cidrs: Vec<Cidr>,
    /// Service network prefixes the agent may dial.
    pub service_cidrs: Vec<Cidr>,
    /// The agent's pod (`namespace/name`) or host name outside Kubernetes.
    pub agent: String,
    /// The node the agent runs on, when known.
    pub node: String,
}

/// One protocol frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Client → agent, first frame of the control stream.
    Hello {
        /// Versions the client speaks.
        versions: crate::VersionRange,
        /// Features the client supports.
        caps: Capabilities,
        /// Client software, e.g. `kubelan 0.1.0` (for the agent's logs).
        software: String,
        /// The session's secret, for a peer that checks one (the per-session relay);
        /// the agent ignores it. At most [`MAX_TOKEN_LEN`] bytes. (Appended in version 1:
        /// encoded as a string after `software` only when present, so older agents never
        /// see it and older clients send none. A field appended later must come after a
        /// token written even when absent, as an empty one.)
        token: Option<Token>,
    },
    /// Agent → client: session accepted.
    Welcome {
        /// The negotiated version.
        version: u16,
        /// Features both sides support.
        caps: Capabilities,
        /// Agent software, e.g. `kubelan 0.1.0`.
        software: String,
        /// Cluster facts.
        facts: Facts,
    },
    /// Agent → client: session refused; the agent closes the carrier after it.
    Refused {
        /// Reason class.
        reason: RefuseReason,
        /// Versions the agent speaks (so the client can say who must upgrade).
        versions: crate::VersionRange,
        /// Detail for people.
        message: String,
    },
    /// Liveness probe; the peer answers [`Frame::Pong`] with the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Answer to [`Frame::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Agent → client: the cluster facts changed.
    Facts(Facts),
    /// Agent → client: the agent is stopping; open new flows elsewhere, existing flows
    /// get `drain_ms` to finish.
    GoAway {
        /// Milliseconds existing flows may continue.
        drain_ms: u32,
        /// Why.
        message: String,
    },
    /// Client → agent, first frame of a flow stream.
    Open {
        /// What the flow carries.
        kind: FlowKind,
        /// Where it goes.
        target: Target,
        /// The client sends data without waiting for [`Frame::Opened`] and reads it only
        /// before the first data: the agent may hold `Opened` back and send it together
        /// with its first data or `Fin`, saving a message per flow. A `Failed` answer is
        /// never held. (Encoded as bit 0 of a flags byte after the target; older agents
        /// ignore it and answer at once, older clients omit it and get the prompt answer.)
        optimistic: bool,
    },
    /// Agent → client: the flow is open (for TCP: connected to `peer`).
    Opened {
        /// The address the agent reached (a name target resolved).
        peer: SocketAddr,
    },
    /// Agent → client: the flow could not be opened; the stream ends.
    Failed(FlowError),
    /// TCP payload.
    Data(Bytes),
    /// The sender will send no more data (TCP half-close).
    Fin,
    /// The flow was aborted; the stream ends.
    Reset(FlowError),
    /// One UDP datagram or DNS message.
    Datagram(Bytes),
    /// Agent side → client, first frame of a flow stream the agent side opened (a
    /// connection that arrived at one of the per-session relay's listeners). Sent only
    /// when both sides set [`Capabilities::REVERSE`]. The client answers [`Frame::Opened`]
    /// (naming the local address it reached) or [`Frame::Failed`], then the flow carries
    /// what an [`Frame::Open`] flow of the same kind carries.
    Incoming {
        /// Which listener of the agent side the connection arrived at (the relay's
        /// number for one exposed port; the client maps it to a local target).
        listener: u32,
        /// What the flow carries ([`FlowKind::Tcp`] or [`FlowKind::Udp`]; the client
        /// refuses others with [`ErrorKind::Protocol`]).
        kind: FlowKind,
        /// The address the connection came from (a pod), for the client's logs.
        peer: SocketAddr,
        /// The agent side sends data without waiting for the answer, as for
        /// [`Frame::Open::optimistic`]: the client may hold `Opened` back and send it
        /// with its first data. (Bit 0 of a flags byte after `peer`.)
        optimistic: bool,
    },
    /// Client → agent side, on the control stream: open listener `listener` for flows of
    /// `kind` on `port` (all addresses of the relay pod); its connections then arrive as
    /// [`Frame::Incoming`] with that listener number. Sent only when both sides set
    /// [`Capabilities::LISTEN`]. Asking again for a listener that is open on the same
    /// port and kind (after a reconnect) is answered [`Frame::Listening`] again.
    Listen {
        /// The listener's number, chosen by the client (unique in the session).
        listener: u32,
        /// [`FlowKind::Tcp`] or [`FlowKind::Udp`].
        kind: FlowKind,
        /// The port in the relay pod (≥ 1024: the relay has no privileges).
        port: u16,
    },
    /// Agent side → client, on the control stream: listener `listener` is open.
    Listening {
        /// The listener.
        listener: u32,
    },
    /// Agent side → client, on the control stream: listener `listener` could not be
    /// opened (a port in use, a privileged port, a number taken by another port), and why.
    ListenFailed {
        /// The listener.
        listener: u32,
        /// Why.
        error: FlowError,
    },
}

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

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::Refused { .. } => "Refused",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
            Frame::Facts(_) => "Facts",
            Frame::GoAway { .. } => "GoAway",
            Frame::Open { .. } => "Open",
            Frame::Opened { .. } => "Opened",
            Frame::Failed(_) => "Failed",
            Frame::Data(_) => "Data",
            Frame::Fin => "Fin",
            Frame::Reset(_) => "Reset",
            Frame::Datagram(_) => "Datagram",
            Frame::Incoming { .. } => "Incoming",
            Frame::Listen { .. } => "Listen",
            Frame::Listening { .. } => "Listening",
            Frame::ListenFailed { .. } => "ListenFailed",
        }
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

/// Bits of the flags byte of [`Frame::Open`] and [`Frame::Incoming`].
mod open_flags {
    /// [`super::Frame::Open::optimistic`], [`super::Frame::Incoming::optimistic`].
    pub(super) const OPTIMISTIC: u8 = 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VersionRange;

    fn samples() -> Vec<Frame> {
        let facts = Facts {
            cluster_domain: "cluster.local".into(),
            dns_server: Some("172.17.16.10:53".parse().unwrap()),
            pod_cidrs: vec!["172.17.32.0/19".parse().unwrap()],
            service_cidrs: vec![
                "172.17.16.0/20".parse().unwrap(),
                "fd00::/108".parse().unwrap(),
            ],
            agent: "kubelan-system/kubelan-agent-abc".into(),
            node: "node1".into(),
        };
        vec![
            Frame::Hello {
                versions: VersionRange { min: 1, max: 1 },
                caps: Capabilities::ALL,
                software: "kubelan 0.1.0".into(),
                token: None,
            },
            Frame::Hello {
                versions: VersionRange { min: 1, max: 1 },
                caps: Capabilities::ALL,
                software: "kubelan 0.2.0".into(),
                token: Some(Token::new("f00dfeed".repeat(8))),
            },
            Frame::Hello {
                versions: VersionRange { min: 1, max: 1 },
                caps: Capabilities::TCP,
                software: String::new(),
                token: Some(Token::new("")),
            },
            Frame::Welcome {
                version: 1,
                caps: Capabilities::TCP,
                software: "kubelan 0.1.0".into(),
                facts: facts.clone(),
            },
            Frame::Refused {
                reason: RefuseReason::Version,
                versions: VersionRange { min: 1, max: 1 },
                message: "no".into(),
            },
            Frame::Ping { nonce: 7 },
            Frame::Pong { nonce: u64::MAX },
            Frame::Facts(facts),
            Frame::GoAway {
                drain_ms: 5000,
                message: "bye".into(),
            },
            Frame::Open {
                kind: FlowKind::Tcp,
                target: Target::Name {
                    host: "web.default.svc.cluster.local".into(),
                    port: 80,
                },
                optimistic: true,
            },
            Frame::Open {
                kind: FlowKind::Udp,
                target: Target::Addr("[fd00::1]:7".parse().unwrap()),
                optimistic: false,
            },
            Frame::Open {
                kind: FlowKind::Echo,
                target: Target::Addr("172.17.32.4:0".parse().unwrap()),
                optimistic: false,
            },
            Frame::Opened {
                peer: "172.17.32.4:80".parse().unwrap(),
            },
            Frame::Failed(FlowError::new(
                ErrorKind::Policy,
                "169.254.169.254 is link-local",
            )),
            Frame::Data(Bytes::from_static(b"hello")),
            Frame::Data(Bytes::new()),
            Frame::Fin,
            Frame::Reset(FlowError::new(ErrorKind::Reset, "")),
            Frame::Datagram(Bytes::from(vec![1u8; MAX_DATAGRAM])),
            Frame::Incoming {
                listener: 0,
                kind: FlowKind::Tcp,
                peer: "172.17.32.9:41234".parse().unwrap(),
                optimistic: false,
            },
            Frame::Listen {
                listener: 7,
                kind: FlowKind::Tcp,
                port: 8080,
            },
            Frame::Listen {
                listener: u32::MAX,
                kind: FlowKind::Udp,
                port: u16::MAX,
            },
            Frame::Listening { listener: 7 },
            Frame::ListenFailed {
                listener: 7,
                error: FlowError::new(ErrorKind::Other, "port 8080 is in use"),
            },
            Frame::Incoming {
                listener: u32::MAX,
                kind: FlowKind::Udp,
                peer: "[fd00::9]:5353".parse().unwrap(),
                optimistic: true,
            },
        ]
    }

    fn encoded(f: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        buf
    }

    #[test]
    fn a_hello_without_a_token_is_the_old_hello_and_a_token_only_appends() {
        let hello = |token: Option<Token>| Frame::Hello {
            versions: VersionRange { min: 1, max: 1 },
            caps: Capabilities(0b1111),
            software: "kubelan 0.1.0".into(),
            token,
        };
        // Byte for byte what clients sent before the token existed.
        let mut old = vec![ty::HELLO, 0, 0, 31];
        old.extend_from_slice(b"KLAN\0\x01\0\x01");
        old.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0f, 0, 13]);
        old.extend_from_slice(b"kubelan 0.1.0");
        assert_eq!(encoded(&hello(None))[..], old[..]);
        assert_eq!(
            Decoder::new()
                .decode(&mut BytesMut::from(&old[..]))
                .unwrap(),
            Some(hello(None)),
            "an older client's hello has no token"
        );
        // With a token, the same body plus the token at its end: an older agent, which
        // ignores trailing bytes (rule 3), reads the same hello.
        let with = encoded(&hello(Some(Token::new("s3cret"))));
        assert_eq!(with[4..4 + 31], old[4..]);
        assert_eq!(&with[4 + 31..], b"\0\x06s3cret");
        assert_eq!(usize::from(with[3]), 31 + 8);
        // A token cut short is an error, not a silently different secret.
        let mut cut = with.clone();
        cut.truncate(cut.len() - 1);
        cut[3] -= 1;
        assert!(Decoder::new().decode(&mut cut).is_err());
    }

    #[test]
    fn a_token_never_shows_in_logs() {
        let f = Frame::Hello {
            versions: VersionRange::OURS,
            caps: Capabilities::ALL,
            software: "kubelan".into(),
            token: Some(Token::new("hunter2")),
        };
        let shown = format!("{f:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Token(<hidden>)"), "{shown}");
    }

    #[test]
    fn incoming_is_required_and_checked() {
        let incoming = Frame::Incoming {
            listener: 7,
            kind: FlowKind::Tcp,
            peer: "10.0.0.1:80".parse().unwrap(),
            optimistic: true,
        };
        let mut buf = encoded(&incoming);
        assert_eq!(buf[0], 0x17);
        assert!(
            buf[0] < ty::FIRST_OPTIONAL,
            "an older client must not skip it"
        );
        assert_eq!(
            Decoder::new().decode(&mut buf).unwrap(),
            Some(incoming.clone())
        );
        // Unknown flow kind: malformed (the stream is reset), never another kind.
        let mut bad = encoded(&incoming);
        bad[8] = 9;
        assert!(matches!(
            Decoder::new().decode(&mut bad),
            Err(DecodeError::Malformed {
                kind: "Incoming",
                what: "unknown flow kind"
            })
        ));
        // The flags byte is part of the frame from the start.
        let mut short = encoded(&incoming);
        short.truncate(short.len() - 1);
        short[3] -= 1;
        assert!(Decoder::new().decode(&mut short).is_err());
    }

    #[test]
    fn capabilities_by_name() {
        assert_eq!(Capabilities::REVERSE.to_string(), "reverse flows");
        assert_eq!(
            Capabilities::ALL.to_string(),
            "TCP, UDP, DNS, ICMP echo, reverse flows, listeners on request"
        );
        assert_eq!(Capabilities(1 << 40 | 1).to_string(), "TCP, bit 40");
        assert_eq!(Capabilities::default().to_string(), "none");
        assert_eq!(
            Capabilities::ALL.without(Capabilities(0b1111)),
            Capabilities(Capabilities::REVERSE.0 | Capabilities::LISTEN.0)
        );
        assert!(Capabilities::ALL.contains(Capabilities::REVERSE));
    }

    #[test]
    fn every_frame_round_trips_whole_and_byte_by_byte() {
        let mut wire = BytesMut::new();
        for f in samples() {
            f.encode(&mut wire);
        }
        let all = wire.clone();
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        while let Some(f) = dec.decode(&mut wire).unwrap() {
            got.push(f);
        }
        assert_eq!(got, samples());
        assert!(wire.is_empty());

        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, samples());
    }

    #[test]
    fn lengths_are_bounded_before_buffering() {
        let mut buf = BytesMut::from(&[ty::DATA, 0x01, 0x00, 0x01][..]);
        let err = Decoder::new().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLong { max: MAX_DATA, .. }),
            "{err}"
        );
        let mut buf = BytesMut::from(&[ty::PING, 0xff, 0xff, 0xff][..]);
        assert!(Decoder::new().decode(&mut buf).is_err());
    }

    #[test]
    fn unknown_types_required_fail_optional_are_skipped() {
        let mut buf = BytesMut::from(&[0x42, 0, 0, 0][..]);
        assert_eq!(
            Decoder::new().decode(&mut buf).unwrap_err(),
            DecodeError::UnknownType(0x42)
        );
        let mut buf = BytesMut::from(&[0x90, 0, 0, 2, 9, 9][..]);
        Frame::Ping { nonce: 1 }.encode(&mut buf);
        assert_eq!(
            Decoder::new().decode(&mut buf).unwrap(),
            Some(Frame::Ping { nonce: 1 })
        );
    }

    #[test]
    fn trailing_fields_from_newer_peers_are_ignored() {
        let mut buf = BytesMut::new();
        Frame::Ping { nonce: 3 }.encode(&mut buf);
        buf.extend_from_slice(&[]);
        // Grow the body by two bytes a newer peer might append.
        buf[3] += 2;
        buf.extend_from_slice(&[0xaa, 0xbb]);
        assert_eq!(
            Decoder::new().decode(&mut buf).unwrap(),
            Some(Frame::Ping { nonce: 3 })
        );
    }

    #[test]
    fn open_from_a_client_without_the_flags_byte_is_not_optimistic() {
        let open = Frame::Open {
            kind: FlowKind::Tcp,
            target: Target::Addr("10.0.0.1:80".parse().unwrap()),
            optimistic: true,
        };
        let mut buf = BytesMut::new();
        open.encode(&mut buf);
        // Drop the flags byte, as a client from before it existed sends the frame.
        buf.truncate(buf.len() - 1);
        buf[3] -= 1;
        assert_eq!(
            Decoder::new().decode(&mut buf).unwrap(),
            Some(Frame::Open {
                kind: FlowKind::Tcp,
                target: Target::Addr("10.0.0.1:80".parse().unwrap()),
                optimistic: false,
            })
        );
    }

    #[test]
    fn unknown_error_codes_decode_as_other() {
        let mut buf = BytesMut::new();
        Frame::Failed(FlowError::new(ErrorKind::Timeout, "x")).encode(&mut buf);
        buf[4] = 200;
        let f = Decoder::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(f, Frame::Failed(FlowError::new(ErrorKind::Other, "x")));
    }

    #[test]
    fn hello_without_magic_is_not_kubelan() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        // 'G' = 0x47 is not a frame type.
        assert!(Decoder::new().decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&[ty::HELLO, 0, 0, 4, b'X', b'L', b'A', b'N'][..]);
        assert_eq!(
            Decoder::new().decode(&mut buf).unwrap_err(),
            DecodeError::NotKubelan
        );
    }

    #[test]
    fn over_long_fields_are_cut_on_encode() {
        let long = "é".repeat(2000);
        let mut buf = BytesMut::new();
        Frame::Failed(FlowError::new(ErrorKind::Other, long)).encode(&mut buf);
        let Some(Frame::Failed(e)) = Decoder::new().decode(&mut buf).unwrap() else {
            panic!()
        };
        assert!(e.message.len() <= MAX_MESSAGE_LEN);
        let mut buf = BytesMut::new();
        Frame::Open {
            kind: FlowKind::Tcp,
            target: Target::Name {
                host: "a".repeat(400),
                port: 1,
            },
            optimistic: false,
        }
        .encode(&mut buf);
        assert!(Decoder::new().decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn data_header_matches_encode() {
        let mut a = BytesMut::new();
        Frame::Data(Bytes::from_static(b"abc")).encode(&mut a);
        let mut h = [0u8; 4];
        encode_data_header(&mut h, 3);
        assert_eq!(&a[..4], &h);
    }

    #[test]
    fn cidr_parsing_and_containment() {
        let c: Cidr = "172.17.32.7/19".parse().unwrap();
        assert_eq!(c.to_string(), "172.17.32.0/19");
        assert!(c.contains("172.17.63.255".parse().unwrap()));
        assert!(!c.contains("172.17.64.0".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }
}
