//! Frames: types, encoding and the bounded decoder.

mod decode;
mod encode;
#[cfg(test)]
mod tests;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use crate::types::{FlowError, Target, Token};

pub use decode::{DecodeError, Decoder, data_header};
pub use encode::encode_data_header;
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
        /// the agent ignores it. At most [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN) bytes. (Appended in version 1:
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
        /// refuses others with [`ErrorKind::Protocol`](crate::ErrorKind::Protocol)).
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

/// Bits of the flags byte of [`Frame::Open`] and [`Frame::Incoming`].
mod open_flags {
    /// [`super::Frame::Open::optimistic`], [`super::Frame::Incoming::optimistic`].
    pub(super) const OPTIMISTIC: u8 = 1;
}
