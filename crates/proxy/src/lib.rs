//! The local front-end of `kubelan proxy`: a SOCKS5 and HTTP proxy on one TCP port.
//!
//! Applications on the developer machine point at this port (`curl --socks5-hostname`,
//! `HTTPS_PROXY=http://…`, browsers). Each accepted connection is classified by its first
//! byte — `0x05` is SOCKS5, an ASCII letter starts an HTTP request line, anything else is
//! closed — and every destination it asks for becomes a flow opened through a
//! [`Connector`]. The connector is the tunnel to the cluster (the agent resolves names
//! and dials); this crate never sees it, which is what lets the tests run against plain
//! local sockets.
//!
//! ```text
//!  app ──SOCKS5/HTTP──▶ ProxyServer ──Connector::connect / open_udp──▶ tunnel ──▶ cluster
//! ```
//!
//! * [`socks5`] is a sans-IO codec (RFC 1928 + RFC 1929) that the server drives and
//!   the fuzzer exercises (`fuzz_entry`, feature `fuzz`).
//! * HTTP uses hyper: `CONNECT host:port` tunnels, absolute-URI requests
//!   (`GET http://web.default.svc/…`) are forwarded in origin form.
//! * SOCKS5 UDP ASSOCIATE relays datagrams through [`Connector::open_udp`], one flow per
//!   destination.
//! * With credentials configured, failed logins are throttled per source address
//!   ([`LoginLimits`]): growing delays, then a lockout, logged in aggregate.
//! * Host names are never resolved here: they travel as [`Target::Name`] and resolve on
//!   the far side, so cluster DNS names work without touching the machine's resolver.

mod auth;
mod client;
mod http;
mod limiter;
mod pending;
mod server;
mod session_connector;
pub mod setup;
mod shared;
pub mod socks5;
mod stats;
mod udp;

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
pub use kubelan_proto::{ErrorKind, FlowError, Target};

pub use auth::{Credentials, CredentialsError, file_mode_problem};
pub use limiter::LoginLimits;
pub use pending::Every;
pub use server::{ProxyServer, serve};
pub use session_connector::SessionConnector;
pub use stats::Stats;

/// A byte stream to a flow's destination (a tunnel stream, or a socket in tests).
pub trait FlowIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> FlowIo for T {}

/// A datagram flow to one destination.
#[derive(Debug)]
pub struct UdpFlow {
    /// Datagrams to the target (one payload per message, no SOCKS header).
    pub tx: tokio::sync::mpsc::Sender<Bytes>,
    /// Datagrams from the target; the channel closing means the flow ended.
    pub rx: tokio::sync::mpsc::Receiver<Bytes>,
}

/// Opens flows to targets; implemented by the tunnel to the cluster.
pub trait Connector: Send + Sync + 'static {
    /// Opens a TCP flow to `target`.
    ///
    /// # Errors
    ///
    /// A [`FlowError`] whose [`ErrorKind`] decides the SOCKS reply code or HTTP status.
    fn connect(&self, target: Target) -> BoxFuture<'static, Result<Box<dyn FlowIo>, FlowError>>;

    /// Opens a UDP flow to `target`.
    ///
    /// # Errors
    ///
    /// A [`FlowError`]; the datagrams that asked for the flow are dropped.
    fn open_udp(&self, target: Target) -> BoxFuture<'static, Result<UdpFlow, FlowError>>;
}

/// Settings of a [`ProxyServer`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Credentials clients must present (SOCKS5 username/password, HTTP Basic
    /// `Proxy-Authorization`); `None` lets every local client in.
    pub auth: Option<Credentials>,
    /// How failed logins are throttled per source address (only with `auth`).
    pub login_limits: LoginLimits,
    /// How long a client may take to send its SOCKS5 handshake or HTTP request head.
    pub handshake_timeout: Duration,
    /// Most clients served at once; connections above it are closed at once.
    pub max_clients: usize,
    /// Most connections one source (an IPv4 address or IPv6 /64; loopback is not
    /// counted) may have in their handshake at once; more are closed at accept, so that
    /// one LAN machine cannot hold the proxy's client slots with silent connections.
    pub max_handshakes_per_source: usize,
    /// A UDP destination with no datagram either way for this long is closed.
    pub udp_idle_timeout: Duration,
    /// Most destinations one UDP association keeps open (the idlest one is closed to
    /// make room).
    pub udp_max_destinations: usize,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            auth: None,
            login_limits: LoginLimits::default(),
            handshake_timeout: Duration::from_secs(10),
            max_clients: 20_000,
            max_handshakes_per_source: 64,
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_destinations: 256,
        }
    }
}

/// Fuzzing entry points (used by `fuzz/fuzz_targets/socks5.rs`,
/// `fuzz/fuzz_targets/proxy_auth.rs` and the corpus replay test).
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry {
    use base64::Engine as _;

    use crate::Credentials;
    use crate::socks5::{self, ParseResult};

    /// Parses `data` as a credentials file, a `user:password` argument and an HTTP
    /// `Proxy-Authorization` value; whatever parses must accept exactly itself, in both
    /// the SOCKS5 and the HTTP Basic form, and never show its password in `Debug`.
    pub fn proxy_auth(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        for parsed in [Credentials::from_file_text(&text), text.parse()] {
            let Ok(c) = parsed else { continue };
            let (user, pass) = (c.username().as_bytes(), c.password().as_bytes());
            assert!(c.matches(user, pass));
            let mut longer = pass.to_vec();
            longer.push(b'x');
            assert!(!c.matches(user, &longer));
            assert!(!c.matches(user, &pass[..pass.len() - 1]));
            let b64 = base64::engine::general_purpose::STANDARD.encode([user, b":", pass].concat());
            assert!(c.matches_basic(format!("Basic {b64}").as_bytes()));
            let shown = format!("{c:?}");
            let hidden = format!(
                "Credentials {{ username: {:?}, password: \"<hidden>\" }}",
                c.username()
            );
            assert_eq!(shown, hidden, "Debug must not show the password");
        }
        let c = Credentials::new("fuzz", "secret").expect("valid");
        let _ = c.matches_basic(data);
    }

    type Parser<T> = fn(&[u8]) -> ParseResult<T>;

    /// Drives every SOCKS5 parser over `data` (whole and byte by byte), checks that a
    /// parser decides at the same byte and the same way however the input is split,
    /// and that everything parsed encodes back to the bytes it came from.
    pub fn socks5(data: &[u8]) {
        check(data, socks5::parse_greeting, |g, out| g.encode(out));
        check(data, socks5::parse_user_pass, |u, out| u.encode(out));
        check(data, socks5::parse_request, |r, out| r.encode(out));
        check(data, socks5::parse_reply, |r, out| {
            socks5::encode_reply(r.code, &r.bound, out)
        });
        if let Ok((addr, len)) = socks5::parse_udp_header(data) {
            let mut out = Vec::new();
            socks5::encode_udp_header(&addr, &mut out);
            assert_eq!(out, data[..len], "UDP header round trip");
            let _ = addr.to_target();
        }
        if let Err(e) = socks5::parse_udp_header(data) {
            let _ = e.action().response();
        }
    }

    fn check<T: PartialEq + std::fmt::Debug>(
        data: &[u8],
        parse: Parser<T>,
        encode: fn(&T, &mut Vec<u8>),
    ) {
        let whole = parse(data);
        // Byte by byte: the first prefix that decides must decide like the whole input.
        let mut decided_at = None;
        for cut in 0..=data.len() {
            let r = parse(&data[..cut]);
            if r != Ok(None) {
                assert_eq!(r, whole, "prefix {cut} decided differently");
                decided_at = Some(cut);
                break;
            }
        }
        match &whole {
            Ok(Some((msg, len))) => {
                assert_eq!(decided_at, Some(*len), "message length");
                let mut out = Vec::new();
                encode(msg, &mut out);
                assert_eq!(out, data[..*len], "round trip");
            }
            Ok(None) => assert_eq!(decided_at, None),
            Err(e) => {
                let _ = e.action().response();
            }
        }
    }
}
