//! Values carried inside frames: flow targets, typed failure reasons, cluster facts.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Where a flow goes: an address, or a name the agent resolves inside the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// An IP address and port (Pod IP, ClusterIP, ...).
    Addr(SocketAddr),
    /// A host name and port, resolved by the agent (cluster DNS names such as
    /// `web.default.svc.cluster.local`). At most [`MAX_NAME_LEN`] bytes.
    Name {
        /// Host name, without a trailing dot.
        host: String,
        /// Destination port.
        port: u16,
    },
}

/// Longest host name a [`Target::Name`] may carry (the DNS limit).
pub const MAX_NAME_LEN: usize = 253;

impl Target {
    /// The destination port.
    pub fn port(&self) -> u16 {
        match self {
            Target::Addr(a) => a.port(),
            Target::Name { port, .. } => *port,
        }
    }

    /// Builds a target from a host string (an IP literal becomes [`Target::Addr`]).
    pub fn from_host(host: &str, port: u16) -> Target {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name {
                host: host.trim_end_matches('.').to_string(),
                port,
            },
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a flow could not be opened or was cut, as both ends understand it.
///
/// Codes are stable on the wire; a code this build does not know decodes as
/// [`ErrorKind::Other`] so that newer agents can add reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The agent's destination policy refused the target.
    Policy,
    /// The name does not exist in the cluster (or anywhere the agent may resolve).
    NoSuchHost,
    /// The destination answered with a TCP reset (nothing listens on that port).
    ConnectionRefused,
    /// The destination did not answer in time.
    Timeout,
    /// No route to the destination (ICMP unreachable, network down).
    Unreachable,
    /// The flow was reset by the other side after it was open.
    Reset,
    /// The carrier under the flow died (the session reconnects; retry the flow).
    CarrierLost,
    /// The peer broke the protocol (bad frame, wrong order).
    Protocol,
    /// The agent is shutting down and accepts no new flows.
    ShuttingDown,
    /// Anything else (including codes from newer peers).
    Other,
}

impl ErrorKind {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            ErrorKind::Policy => 1,
            ErrorKind::NoSuchHost => 2,
            ErrorKind::ConnectionRefused => 3,
            ErrorKind::Timeout => 4,
            ErrorKind::Unreachable => 5,
            ErrorKind::Reset => 6,
            ErrorKind::CarrierLost => 7,
            ErrorKind::Protocol => 8,
            ErrorKind::ShuttingDown => 9,
            ErrorKind::Other => 255,
        }
    }

    /// From a wire code; unknown codes become [`ErrorKind::Other`].
    pub fn from_code(code: u8) -> ErrorKind {
        match code {
            1 => ErrorKind::Policy,
            2 => ErrorKind::NoSuchHost,
            3 => ErrorKind::ConnectionRefused,
            4 => ErrorKind::Timeout,
            5 => ErrorKind::Unreachable,
            6 => ErrorKind::Reset,
            7 => ErrorKind::CarrierLost,
            8 => ErrorKind::Protocol,
            9 => ErrorKind::ShuttingDown,
            _ => ErrorKind::Other,
        }
    }

    /// A short lower-case label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Policy => "refused by policy",
            ErrorKind::NoSuchHost => "no such host",
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Reset => "reset",
            ErrorKind::CarrierLost => "carrier lost",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::ShuttingDown => "agent shutting down",
            ErrorKind::Other => "failed",
        }
    }
}

/// A typed flow failure with a human message (which names the fix where there is one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.label())]
pub struct FlowError {
    /// The reason class, which proxies map to SOCKS/HTTP replies.
    pub kind: ErrorKind,
    /// Detail for people; at most [`MAX_MESSAGE_LEN`] bytes on the wire.
    pub message: String,
}

/// Longest message carried in an error or refusal (longer ones are cut at a char boundary).
pub const MAX_MESSAGE_LEN: usize = 1024;

impl FlowError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> FlowError {
        FlowError {
            kind,
            message: message.into(),
        }
    }
}

/// Longest [`Token`] on the wire.
pub const MAX_TOKEN_LEN: usize = 255;

/// A session's secret, sent in [`crate::Frame::Hello`] to a peer that checks one (the
/// per-session relay). Its `Debug` output hides it, so frames can be logged; compare it
/// with a constant-time check, not `==`, where a guess must not learn from timing.
/// Longer than [`MAX_TOKEN_LEN`] bytes it is cut on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }

    /// The secret itself (to send or to check; never to log).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}
