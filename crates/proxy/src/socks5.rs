//! A sans-IO SOCKS5 server codec (RFC 1928, with RFC 1929 username/password).
//!
//! Parsers take the bytes received so far and return `Ok(Some((message, consumed)))`,
//! `Ok(None)` when more bytes are needed, or a [`Socks5Error`] whose
//! [`action`](Socks5Error::action) says what to answer before closing. They decide as
//! early as the bytes allow, so feeding a message byte by byte gives the same answer as
//! feeding it whole. Every length on the wire is one byte, so no message is longer than
//! its `MAX_*_LEN` constant and a caller's buffer never needs to grow past that.
//!
//! Encoders append to a `Vec<u8>`; anything a parser returns encodes back to the exact
//! bytes it was parsed from. No function here panics on any input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kubelan_proto::{ErrorKind, MAX_NAME_LEN, Target};

/// The protocol version byte that starts every SOCKS5 message.
pub const VERSION: u8 = 0x05;
/// The version byte of the RFC 1929 username/password sub-negotiation.
pub const AUTH_VERSION: u8 = 0x01;
/// Method: no authentication.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// Method-selection answer meaning "none of your methods is acceptable".
pub const METHOD_NOT_ACCEPTABLE: u8 = 0xFF;

/// Sub-negotiation answer: credentials accepted.
pub const AUTH_SUCCESS: [u8; 2] = [AUTH_VERSION, 0x00];
/// Sub-negotiation answer: credentials rejected (the server closes afterwards).
pub const AUTH_FAILURE: [u8; 2] = [AUTH_VERSION, 0x01];

/// Longest greeting: VER NMETHODS and 255 methods.
pub const MAX_GREETING_LEN: usize = 2 + 255;
/// Longest username/password message: VER ULEN UNAME PLEN PASSWD.
pub const MAX_USER_PASS_LEN: usize = 3 + 255 + 255;
/// Longest request or reply: VER CMD RSV ATYP, a 255-byte name with its length, PORT.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;
/// Longest UDP request header: RSV RSV FRAG ATYP, a 255-byte name with its length, PORT.
pub const MAX_UDP_HEADER_LEN: usize = 4 + 1 + 255 + 2;

const CMD_CONNECT: u8 = 0x01;
const CMD_UDP_ASSOCIATE: u8 = 0x03;

const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// What a parser returns: the message and how many bytes it took, `None` when more bytes
/// are needed, or why the bytes are unacceptable.
pub type ParseResult<T> = Result<Option<(T, usize)>, Socks5Error>;

/// Why a client's bytes were rejected, and (through [`action`](Self::action)) which
/// answer the server sends before it closes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Socks5Error {
    /// The version byte is not 0x05: this is not a SOCKS5 client (or it is out of step).
    #[error("version byte {0:#04x} where SOCKS5 needs 0x05")]
    BadVersion(u8),
    /// The greeting lists no authentication methods (NMETHODS = 0).
    #[error("greeting offers no authentication methods")]
    NoMethods,
    /// The username/password message does not start with version 0x01.
    #[error("username/password version byte {0:#04x} where RFC 1929 needs 0x01")]
    BadAuthVersion(u8),
    /// The username or password is empty (RFC 1929 needs 1 to 255 bytes each).
    #[error("empty username or password")]
    EmptyCredential,
    /// A command other than CONNECT (1) or UDP ASSOCIATE (3), such as BIND (2).
    #[error("command {0:#04x} not supported (only CONNECT and UDP ASSOCIATE are)")]
    UnsupportedCommand(u8),
    /// A reserved byte that must be zero is not.
    #[error("reserved byte is {0:#04x}, must be 0x00")]
    BadReserved(u8),
    /// An address type other than IPv4 (1), domain name (3) or IPv6 (4).
    #[error("address type {0:#04x} not supported (1 = IPv4, 3 = name, 4 = IPv6)")]
    BadAddressType(u8),
    /// A host name that is empty, longer than 253 bytes or not UTF-8.
    #[error("host name is empty, longer than {MAX_NAME_LEN} bytes or not UTF-8")]
    BadDomain,
    /// A UDP datagram with FRAG != 0; fragmentation is not supported, so it is dropped.
    #[error("UDP datagram fragment {0} (fragmentation is not supported)")]
    Fragmented(u8),
    /// A UDP datagram shorter than its own SOCKS header.
    #[error("UDP datagram shorter than its SOCKS header")]
    Truncated,
}

/// What the server does about a [`Socks5Error`] (then it closes the connection, or, for
/// a UDP datagram, drops the datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorAction {
    /// Close without answering (the peer does not speak SOCKS5 or broke framing).
    Close,
    /// Answer the greeting with `05 FF` (no acceptable method).
    RejectMethods,
    /// Answer the username/password message with `01 01`.
    RejectAuth,
    /// Answer the request with this reply code.
    Reply(ReplyCode),
    /// Drop the UDP datagram; the association lives on.
    Drop,
}

impl Socks5Error {
    /// What to answer. Errors from [`parse_udp_header`] always mean
    /// [`ErrorAction::Drop`], whatever this returns for them.
    pub fn action(&self) -> ErrorAction {
        match self {
            Socks5Error::BadVersion(_) | Socks5Error::BadReserved(_) => ErrorAction::Close,
            Socks5Error::NoMethods => ErrorAction::RejectMethods,
            Socks5Error::BadAuthVersion(_) | Socks5Error::EmptyCredential => {
                ErrorAction::RejectAuth
            }
            Socks5Error::UnsupportedCommand(_) => {
                ErrorAction::Reply(ReplyCode::CommandNotSupported)
            }
            Socks5Error::BadAddressType(_) => {
                ErrorAction::Reply(ReplyCode::AddressTypeNotSupported)
            }
            Socks5Error::BadDomain => ErrorAction::Reply(ReplyCode::HostUnreachable),
            Socks5Error::Fragmented(_) | Socks5Error::Truncated => ErrorAction::Drop,
        }
    }
}

impl ErrorAction {
    /// The bytes to send for this action, if any.
    pub fn response(self) -> Option<Vec<u8>> {
        match self {
            ErrorAction::Close | ErrorAction::Drop => None,
            ErrorAction::RejectMethods => Some(method_reply(METHOD_NOT_ACCEPTABLE).to_vec()),
            ErrorAction::RejectAuth => Some(AUTH_FAILURE.to_vec()),
            ErrorAction::Reply(code) => {
                let mut out = Vec::with_capacity(10);
                encode_reply(code, &SocksAddr::UNSPECIFIED, &mut out);
                Some(out)
            }
        }
    }
}

/// The REP field of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// 0x00 succeeded.
    Succeeded,
    /// 0x01 general SOCKS server failure.
    GeneralFailure,
    /// 0x02 connection not allowed by ruleset.
    NotAllowed,
    /// 0x03 network unreachable.
    NetworkUnreachable,
    /// 0x04 host unreachable.
    HostUnreachable,
    /// 0x05 connection refused.
    ConnectionRefused,
    /// 0x06 TTL expired (sent for timeouts).
    TtlExpired,
    /// 0x07 command not supported.
    CommandNotSupported,
    /// 0x08 address type not supported.
    AddressTypeNotSupported,
    /// 0x09..=0xFF, unassigned by RFC 1928 (only seen when parsing replies).
    Unassigned(u8),
}

impl ReplyCode {
    /// The wire byte.
    pub fn code(self) -> u8 {
        match self {
            ReplyCode::Succeeded => 0x00,
            ReplyCode::GeneralFailure => 0x01,
            ReplyCode::NotAllowed => 0x02,
            ReplyCode::NetworkUnreachable => 0x03,
            ReplyCode::HostUnreachable => 0x04,
            ReplyCode::ConnectionRefused => 0x05,
            ReplyCode::TtlExpired => 0x06,
            ReplyCode::CommandNotSupported => 0x07,
            ReplyCode::AddressTypeNotSupported => 0x08,
            ReplyCode::Unassigned(c) => c,
        }
    }

    /// From the wire byte.
    pub fn from_code(code: u8) -> ReplyCode {
        match code {
            0x00 => ReplyCode::Succeeded,
            0x01 => ReplyCode::GeneralFailure,
            0x02 => ReplyCode::NotAllowed,
            0x03 => ReplyCode::NetworkUnreachable,
            0x04 => ReplyCode::HostUnreachable,
            0x05 => ReplyCode::ConnectionRefused,
            0x06 => ReplyCode::TtlExpired,
            0x07 => ReplyCode::CommandNotSupported,
            0x08 => ReplyCode::AddressTypeNotSupported,
            c => ReplyCode::Unassigned(c),
        }
    }
}

impl From<ErrorKind> for ReplyCode {
    /// How a failed flow is told to a SOCKS client.
    fn from(kind: ErrorKind) -> ReplyCode {
        match kind {
            ErrorKind::Policy => ReplyCode::NotAllowed,
            ErrorKind::Unreachable => ReplyCode::NetworkUnreachable,
            ErrorKind::NoSuchHost => ReplyCode::HostUnreachable,
            ErrorKind::ConnectionRefused => ReplyCode::ConnectionRefused,
            ErrorKind::Timeout => ReplyCode::TtlExpired,
            _ => ReplyCode::GeneralFailure,
        }
    }
}

/// A host name as carried in a SOCKS5 address: UTF-8, non-empty, and at most
/// [`MAX_NAME_LEN`] bytes once one trailing dot is removed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DomainName(String);

impl DomainName {
    /// Validates a host name.
    ///
    /// # Errors
    ///
    /// [`Socks5Error::BadDomain`] when the name is empty or too long.
    pub fn new(name: impl Into<String>) -> Result<DomainName, Socks5Error> {
        let name = name.into();
        let bare = name.strip_suffix('.').unwrap_or(&name);
        if bare.is_empty() || bare.len() > MAX_NAME_LEN {
            return Err(Socks5Error::BadDomain);
        }
        Ok(DomainName(name))
    }

    /// The name as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_wire(bytes: &[u8]) -> Result<DomainName, Socks5Error> {
        let s = std::str::from_utf8(bytes).map_err(|_| Socks5Error::BadDomain)?;
        DomainName::new(s)
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address as written on the wire, keeping its ATYP (a name stays a name even when
/// it spells an IP literal, so replies can echo what the client sent).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SocksAddr {
    /// ATYP 1 or 4.
    Ip(SocketAddr),
    /// ATYP 3: a name and a port.
    Domain(DomainName, u16),
}

impl SocksAddr {
    /// `0.0.0.0:0`, the bound address of error replies.
    pub const UNSPECIFIED: SocksAddr =
        SocksAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            SocksAddr::Ip(a) => a.port(),
            SocksAddr::Domain(_, port) => *port,
        }
    }

    /// The flow target: names resolve on the far side ([`Target::from_host`] turns IP
    /// literals into [`Target::Addr`]).
    pub fn to_target(&self) -> Target {
        match self {
            SocksAddr::Ip(a) => Target::Addr(*a),
            SocksAddr::Domain(name, port) => Target::from_host(name.as_str(), *port),
        }
    }

    /// Appends ATYP, address and port.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SocksAddr::Ip(SocketAddr::V4(a)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&a.ip().octets());
            }
            SocksAddr::Ip(SocketAddr::V6(a)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&a.ip().octets());
            }
            SocksAddr::Domain(name, _) => {
                out.push(ATYP_DOMAIN);
                // DomainName guarantees 1..=254 bytes.
                out.push(name.0.len() as u8);
                out.extend_from_slice(name.0.as_bytes());
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
    }
}

impl From<SocketAddr> for SocksAddr {
    fn from(a: SocketAddr) -> SocksAddr {
        SocksAddr::Ip(a)
    }
}

impl fmt::Display for SocksAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksAddr::Ip(a) => write!(f, "{a}"),
            SocksAddr::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }
}

/// `Ok(None)` ("need more bytes") when a read runs off the end.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

fn parse_addr(r: &mut Reader<'_>, atyp: u8) -> Result<Option<SocksAddr>, Socks5Error> {
    let addr = match atyp {
        ATYP_IPV4 => {
            let b = need!(r.take(4));
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            SocksAddr::Ip(SocketAddr::new(ip.into(), need!(r.u16())))
        }
        ATYP_IPV6 => {
            let b = need!(r.take(16));
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            SocksAddr::Ip(SocketAddr::new(Ipv6Addr::from(o).into(), need!(r.u16())))
        }
        ATYP_DOMAIN => {
            let len = need!(r.u8());
            if len == 0 {
                return Err(Socks5Error::BadDomain);
            }
            let name = DomainName::from_wire(need!(r.take(usize::from(len))))?;
            SocksAddr::Domain(name, need!(r.u16()))
        }
        other => return Err(Socks5Error::BadAddressType(other)),
    };
    Ok(Some(addr))
}

/// The client's first message: which authentication methods it offers (1 to 255).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    methods: Vec<u8>,
}

impl Greeting {
    /// A greeting offering these methods; `None` unless there are 1 to 255.
    pub fn new(methods: Vec<u8>) -> Option<Greeting> {
        (1..=255)
            .contains(&methods.len())
            .then_some(Greeting { methods })
    }

    /// The methods in the client's order.
    pub fn methods(&self) -> &[u8] {
        &self.methods
    }

    /// Whether the client offers `method`.
    pub fn offers(&self, method: u8) -> bool {
        self.methods.contains(&method)
    }

    /// The method to select: username/password when the server requires credentials,
    /// no-auth when it does not; [`METHOD_NOT_ACCEPTABLE`] (`05 FF`, then the server
    /// closes) when the client does not offer that method. A client offering only
    /// username/password to a server without credentials is refused too rather than
    /// waved through with any password: it expects its credentials to be checked.
    pub fn choose(&self, auth_required: bool) -> u8 {
        let wanted = if auth_required {
            METHOD_USER_PASS
        } else {
            METHOD_NO_AUTH
        };
        if self.offers(wanted) {
            wanted
        } else {
            METHOD_NOT_ACCEPTABLE
        }
    }

    /// Appends the greeting as a client sends it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        // Greeting::new bounds the count to 1..=255.
        out.push(self.methods.len() as u8);
        out.extend_from_slice(&self.methods);
    }
}

/// Parses the greeting `VER NMETHODS METHODS`.
///
/// # Errors
///
/// [`Socks5Error::BadVersion`] (close) or [`Socks5Error::NoMethods`] (answer `05 FF`).
pub fn parse_greeting(buf: &[u8]) -> ParseResult<Greeting> {
    let mut r = Reader::new(buf);
    let ver = need!(r.u8());
    if ver != VERSION {
        return Err(Socks5Error::BadVersion(ver));
    }
    let n = need!(r.u8());
    if n == 0 {
        return Err(Socks5Error::NoMethods);
    }
    let methods = need!(r.take(usize::from(n))).to_vec();
    Ok(Some((Greeting { methods }, r.pos)))
}

/// The server's method selection `05 METHOD`.
pub fn method_reply(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// RFC 1929 credentials (1 to 255 bytes each, any bytes). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPass {
    username: Vec<u8>,
    password: Vec<u8>,
}

impl UserPass {
    /// Credentials; `None` unless both are 1 to 255 bytes.
    pub fn new(username: Vec<u8>, password: Vec<u8>) -> Option<UserPass> {
        let ok = |v: &Vec<u8>| (1..=255).contains(&v.len());
        (ok(&username) && ok(&password)).then_some(UserPass { username, password })
    }

    /// The username bytes.
    pub fn username(&self) -> &[u8] {
        &self.username
    }

    /// The password bytes.
    pub fn password(&self) -> &[u8] {
        &self.password
    }

    /// Appends the sub-negotiation message as a client sends it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(AUTH_VERSION);
        out.push(self.username.len() as u8);
        out.extend_from_slice(&self.username);
        out.push(self.password.len() as u8);
        out.extend_from_slice(&self.password);
    }
}

impl fmt::Debug for UserPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPass")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Parses the RFC 1929 message `VER ULEN UNAME PLEN PASSWD`.
///
/// # Errors
///
/// [`Socks5Error::BadAuthVersion`] or [`Socks5Error::EmptyCredential`] (answer `01 01`).
pub fn parse_user_pass(buf: &[u8]) -> ParseResult<UserPass> {
    let mut r = Reader::new(buf);
    let ver = need!(r.u8());
    if ver != AUTH_VERSION {
        return Err(Socks5Error::BadAuthVersion(ver));
    }
    let ulen = need!(r.u8());
    if ulen == 0 {
        return Err(Socks5Error::EmptyCredential);
    }
    let username = need!(r.take(usize::from(ulen))).to_vec();
    let plen = need!(r.u8());
    if plen == 0 {
        return Err(Socks5Error::EmptyCredential);
    }
    let password = need!(r.take(usize::from(plen))).to_vec();
    Ok(Some((UserPass { username, password }, r.pos)))
}

/// A supported request command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// CONNECT (0x01): a TCP flow to the destination.
    Connect,
    /// UDP ASSOCIATE (0x03): relay datagrams; the address is where the client will send
    /// from (often `0.0.0.0:0`, meaning "not known yet").
    UdpAssociate,
}

impl Command {
    fn code(self) -> u8 {
        match self {
            Command::Connect => CMD_CONNECT,
            Command::UdpAssociate => CMD_UDP_ASSOCIATE,
        }
    }
}

/// A client request `VER CMD RSV ATYP DST.ADDR DST.PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What the client asks for.
    pub command: Command,
    /// The destination (CONNECT) or the client's UDP source (UDP ASSOCIATE).
    pub addr: SocksAddr,
}

impl Request {
    /// Appends the request as a client sends it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.command.code(), 0]);
        self.addr.encode(out);
    }
}

/// Parses a request.
///
/// # Errors
///
/// See [`Socks5Error::action`]: bad version or reserved byte close; BIND or an unknown
/// command answer 07; an unknown address type answers 08; a bad name answers 04.
pub fn parse_request(buf: &[u8]) -> ParseResult<Request> {
    let mut r = Reader::new(buf);
    let ver = need!(r.u8());
    if ver != VERSION {
        return Err(Socks5Error::BadVersion(ver));
    }
    let command = match need!(r.u8()) {
        CMD_CONNECT => Command::Connect,
        CMD_UDP_ASSOCIATE => Command::UdpAssociate,
        // BIND (0x02) needs the far side to listen; nothing else is defined.
        other => return Err(Socks5Error::UnsupportedCommand(other)),
    };
    let rsv = need!(r.u8());
    if rsv != 0 {
        return Err(Socks5Error::BadReserved(rsv));
    }
    let atyp = need!(r.u8());
    let addr = need!(parse_addr(&mut r, atyp)?);
    Ok(Some((Request { command, addr }, r.pos)))
}

/// A server reply `VER REP RSV ATYP BND.ADDR BND.PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The outcome.
    pub code: ReplyCode,
    /// The bound address (the relay's UDP address for UDP ASSOCIATE).
    pub bound: SocksAddr,
}

/// Appends a reply.
pub fn encode_reply(code: ReplyCode, bound: &SocksAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, code.code(), 0]);
    bound.encode(out);
}

/// Parses a reply (the client side; used by tests and tools).
///
/// # Errors
///
/// Bad version, reserved byte, address type or name.
pub fn parse_reply(buf: &[u8]) -> ParseResult<Reply> {
    let mut r = Reader::new(buf);
    let ver = need!(r.u8());
    if ver != VERSION {
        return Err(Socks5Error::BadVersion(ver));
    }
    let code = ReplyCode::from_code(need!(r.u8()));
    let rsv = need!(r.u8());
    if rsv != 0 {
        return Err(Socks5Error::BadReserved(rsv));
    }
    let atyp = need!(r.u8());
    let bound = need!(parse_addr(&mut r, atyp)?);
    Ok(Some((Reply { code, bound }, r.pos)))
}

/// Parses the header of a SOCKS UDP datagram `RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA`,
/// returning the destination and the header length (the payload is `&datagram[len..]`).
///
/// # Errors
///
/// Any error means: drop the datagram ([`Socks5Error::Fragmented`] for FRAG != 0,
/// [`Socks5Error::Truncated`] when it ends inside the header).
pub fn parse_udp_header(datagram: &[u8]) -> Result<(SocksAddr, usize), Socks5Error> {
    let mut r = Reader::new(datagram);
    let parsed: Result<Option<SocksAddr>, Socks5Error> = (|| {
        let rsv = need!(r.take(2));
        if rsv != [0, 0] {
            return Err(Socks5Error::BadReserved(rsv[0] | rsv[1]));
        }
        let frag = need!(r.u8());
        if frag != 0 {
            return Err(Socks5Error::Fragmented(frag));
        }
        let atyp = need!(r.u8());
        parse_addr(&mut r, atyp)
    })();
    match parsed? {
        Some(addr) => Ok((addr, r.pos)),
        None => Err(Socks5Error::Truncated),
    }
}

/// Appends the header of a SOCKS UDP datagram (FRAG 0) for `addr`.
pub fn encode_udp_header(addr: &SocksAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    addr.encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` one byte at a time; every strict prefix must need more bytes.
    fn bytewise<T: PartialEq + fmt::Debug>(
        parse: fn(&[u8]) -> ParseResult<T>,
        bytes: &[u8],
    ) -> ParseResult<T> {
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]) {
                Ok(None) => {}
                decided => {
                    assert_eq!(decided, parse(bytes), "prefix {cut} decided differently");
                    return decided;
                }
            }
        }
        parse(bytes)
    }

    #[test]
    fn greeting_and_method_choice() {
        let (g, n) = parse_greeting(&[5, 2, 0, 2, 0xAA]).unwrap().unwrap();
        assert_eq!(n, 4);
        assert_eq!(g.methods(), &[0, 2]);
        assert_eq!(g.choose(false), METHOD_NO_AUTH);
        assert_eq!(g.choose(true), METHOD_USER_PASS);
        let (g, _) = parse_greeting(&[5, 1, 0]).unwrap().unwrap();
        assert_eq!(g.choose(true), METHOD_NOT_ACCEPTABLE);
        let (g, _) = parse_greeting(&[5, 1, 2]).unwrap().unwrap();
        assert_eq!(g.choose(false), METHOD_NOT_ACCEPTABLE);
        assert_eq!(g.choose(true), METHOD_USER_PASS);
        let (g, _) = parse_greeting(&[5, 1, 0x80]).unwrap().unwrap();
        assert_eq!(g.choose(false), METHOD_NOT_ACCEPTABLE);
        assert_eq!(method_reply(METHOD_NOT_ACCEPTABLE), [5, 0xFF]);
    }

    #[test]
    fn greeting_errors() {
        let e = parse_greeting(&[5, 0]).unwrap_err();
        assert_eq!(e, Socks5Error::NoMethods);
        assert_eq!(e.action().response().unwrap(), vec![5, 0xFF]);
        let e = parse_greeting(&[4, 1, 0]).unwrap_err();
        assert_eq!(e.action(), ErrorAction::Close);
        assert_eq!(e.action().response(), None);
        assert_eq!(parse_greeting(&[]), Ok(None));
        assert_eq!(parse_greeting(&[5, 3, 0, 1]), Ok(None));
    }

    #[test]
    fn user_pass() {
        let msg = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        let (up, n) = bytewise(parse_user_pass, &msg).unwrap().unwrap();
        assert_eq!(
            (up.username(), up.password(), n),
            (&b"bob"[..], &b"pw"[..], 8)
        );
        assert!(!format!("{up:?}").contains("pw\""));
        let mut out = Vec::new();
        up.encode(&mut out);
        assert_eq!(out, msg);
        for bad in [
            &[2u8, 1, b'a', 1, b'b'][..],
            &[1, 0, 1, b'b'],
            &[1, 1, b'a', 0],
        ] {
            let e = bytewise(parse_user_pass, bad).unwrap_err();
            assert_eq!(e.action().response().unwrap(), AUTH_FAILURE);
        }
        assert_eq!(AUTH_SUCCESS, [1, 0]);
    }

    #[test]
    fn requests_of_every_address_type_bytewise() {
        let cases: Vec<(Vec<u8>, Request)> = vec![
            (
                vec![5, 1, 0, 1, 10, 0, 0, 7, 0x1F, 0x90],
                Request {
                    command: Command::Connect,
                    addr: SocksAddr::Ip("10.0.0.7:8080".parse().unwrap()),
                },
            ),
            (
                [&[5u8, 3, 0, 4][..], &[0; 15], &[1, 0, 53]].concat(),
                Request {
                    command: Command::UdpAssociate,
                    addr: SocksAddr::Ip("[::1]:53".parse().unwrap()),
                },
            ),
            (
                [&[5u8, 1, 0, 3, 11][..], b"web.default", &[0, 80]].concat(),
                Request {
                    command: Command::Connect,
                    addr: SocksAddr::Domain(DomainName::new("web.default").unwrap(), 80),
                },
            ),
        ];
        for (bytes, want) in cases {
            let mut extra = bytes.clone();
            extra.extend_from_slice(b"early data");
            let (got, n) = bytewise(parse_request, &extra).unwrap().unwrap();
            assert_eq!((got.clone(), n), (want, bytes.len()));
            let mut out = Vec::new();
            got.encode(&mut out);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn request_errors_map_to_reply_bytes() {
        let reply = |code: u8| vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0];
        let bind = [5, 2, 0, 1, 1, 2, 3, 4, 0, 80];
        let e = bytewise(parse_request, &bind).unwrap_err();
        assert_eq!(e, Socks5Error::UnsupportedCommand(2));
        assert_eq!(e.action().response().unwrap(), reply(7));
        let e = bytewise(parse_request, &[5, 9, 0, 1]).unwrap_err();
        assert_eq!(e.action().response().unwrap(), reply(7));
        let e = bytewise(parse_request, &[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]).unwrap_err();
        assert_eq!(e, Socks5Error::BadAddressType(9));
        assert_eq!(e.action().response().unwrap(), reply(8));
        let e = bytewise(parse_request, &[5, 1, 1, 1, 1, 2, 3, 4, 0, 80]).unwrap_err();
        assert_eq!(e.action(), ErrorAction::Close);
        let e = bytewise(parse_request, &[4, 1, 0, 1]).unwrap_err();
        assert_eq!(e.action(), ErrorAction::Close);
        for bad_name in [
            &[5u8, 1, 0, 3, 0, 0, 80][..],
            &[5, 1, 0, 3, 2, 0xFF, 0xFE, 0, 80],
        ] {
            let e = bytewise(parse_request, bad_name).unwrap_err();
            assert_eq!(e, Socks5Error::BadDomain);
            assert_eq!(e.action().response().unwrap(), reply(4));
        }
        let long = [&[5u8, 1, 0, 3, 254][..], &[b'a'; 254], &[0, 80]].concat();
        assert_eq!(parse_request(&long), Err(Socks5Error::BadDomain));
        let dotted = [&[5u8, 1, 0, 3, 254][..], &[b'a'; 253], b".", &[0, 80]].concat();
        assert!(parse_request(&dotted).unwrap().is_some());
    }

    #[test]
    fn every_reply_code() {
        let kinds = [
            (ErrorKind::Policy, 2),
            (ErrorKind::Unreachable, 3),
            (ErrorKind::NoSuchHost, 4),
            (ErrorKind::ConnectionRefused, 5),
            (ErrorKind::Timeout, 6),
            (ErrorKind::CarrierLost, 1),
            (ErrorKind::Reset, 1),
            (ErrorKind::Protocol, 1),
            (ErrorKind::ShuttingDown, 1),
            (ErrorKind::Other, 1),
        ];
        for (kind, code) in kinds {
            assert_eq!(ReplyCode::from(kind).code(), code, "{kind:?}");
        }
        for c in 0..=255u8 {
            let code = ReplyCode::from_code(c);
            assert_eq!(code.code(), c);
            let mut out = Vec::new();
            let bound = SocksAddr::Ip("192.0.2.1:1080".parse().unwrap());
            encode_reply(code, &bound, &mut out);
            assert_eq!(out, [5, c, 0, 1, 192, 0, 2, 1, 0x04, 0x38]);
            let (reply, n) = bytewise(parse_reply, &out).unwrap().unwrap();
            assert_eq!((reply, n), (Reply { code, bound }, 10));
        }
    }

    #[test]
    fn udp_header() {
        let name = SocksAddr::Domain(DomainName::new("dns.kube-system").unwrap(), 53);
        for addr in [name, SocksAddr::Ip("10.96.0.10:53".parse().unwrap())] {
            let mut d = Vec::new();
            encode_udp_header(&addr, &mut d);
            let hlen = d.len();
            d.extend_from_slice(b"payload");
            let (got, n) = parse_udp_header(&d).unwrap();
            assert_eq!((&got, n, &d[n..]), (&addr, hlen, &b"payload"[..]));
            for cut in 0..hlen {
                assert_eq!(parse_udp_header(&d[..cut]), Err(Socks5Error::Truncated));
            }
        }
        let e = parse_udp_header(&[0, 0, 1, 1, 1, 2, 3, 4, 0, 53]).unwrap_err();
        assert_eq!(
            (e.clone(), e.action()),
            (Socks5Error::Fragmented(1), ErrorAction::Drop)
        );
        assert!(parse_udp_header(&[0, 1, 0, 1, 1, 2, 3, 4, 0, 53]).is_err());
        assert!(parse_udp_header(&[0, 0, 0, 7, 1, 2, 3, 4, 0, 53]).is_err());
        // An empty payload is a valid datagram.
        assert!(parse_udp_header(&[0, 0, 0, 1, 1, 2, 3, 4, 0, 53]).is_ok());
    }

    #[test]
    fn names_become_targets_and_ip_literals_addresses() {
        let a = SocksAddr::Domain(DomainName::new("web.default.svc.").unwrap(), 80);
        assert_eq!(
            a.to_target(),
            Target::Name {
                host: "web.default.svc".into(),
                port: 80
            }
        );
        let a = SocksAddr::Domain(DomainName::new("10.1.2.3").unwrap(), 80);
        assert_eq!(a.to_target(), Target::Addr("10.1.2.3:80".parse().unwrap()));
    }
}
