//! The accept loop, protocol detection and the SOCKS5 TCP side.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::limiter::{Admission, LoginLimiter, LoginOutcome};
use crate::pending::{Every, Handshake, Pending};
use crate::socks5::{self, Command, ReplyCode, Socks5Error, SocksAddr};
use crate::stats::{ClientGuard, Counted, Counters, FlowGuard};
use crate::{Connector, Credentials, ProxyConfig, Stats};

/// How often failed logins are summarised in the log (one line per interval at most,
/// plus the first failure of an interval on its own).
const AUTH_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// How often connections closed at accept for a client limit are reported.
const BUSY_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What every client task shares.
pub(crate) struct Shared {
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) config: ProxyConfig,
    pub(crate) counters: Counters,
    /// Failed-login throttling (consulted only when credentials are required).
    limiter: Mutex<LoginLimiter>,
    /// Failed logins whose answer is being held back (bounded, so that holding answers
    /// cannot pin an unbounded number of sockets).
    held: tokio::sync::Semaphore,
    /// Handshakes open per source.
    pending: Arc<Pending>,
    /// The warning about connections closed at accept (client limits), once per interval.
    busy_log: Every,
}

/// The clock the limiter runs on (tokio's, so paused-time tests control it).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Shared {
    fn limiter(&self) -> MutexGuard<'_, LoginLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a connection from `peer` may be served at all (no: its source failed to
    /// log in too often and is waiting out a delay or a lockout).
    pub(crate) fn admit(&self, peer: SocketAddr) -> bool {
        if self.config.auth.is_none() {
            return true;
        }
        let admission = self.limiter().admit(peer.ip(), now());
        match admission {
            Admission::Allowed => true,
            Admission::Throttled { .. } => {
                self.counters.throttled();
                false
            }
        }
    }

    /// Checks credentials presented by `peer` through the limiter: unevaluated while
    /// the source is blocked, and failures recorded, counted and logged in aggregate.
    /// With no credentials configured every login is accepted.
    pub(crate) fn login(
        &self,
        peer: SocketAddr,
        username: &[u8],
        check: impl FnOnce(&Credentials) -> bool,
    ) -> LoginOutcome {
        let Some(creds) = self.config.auth.as_ref() else {
            return LoginOutcome::Accepted;
        };
        let outcome = self.limiter().try_login(peer.ip(), now(), || check(creds));
        match outcome {
            LoginOutcome::Accepted => {}
            LoginOutcome::Throttled { .. } => self.counters.throttled(),
            LoginOutcome::Rejected { announce, .. } => {
                self.counters.auth_failure();
                if announce {
                    // The username is the client's text: Debug-escape it for the log.
                    let user = String::from_utf8_lossy(username);
                    let user: String = user.chars().take(64).collect();
                    warn!(
                        %peer,
                        user = ?user,
                        "proxy: failed login (wrong username or password); further failures are summarised every {} s",
                        AUTH_REPORT_INTERVAL.as_secs()
                    );
                }
            }
        }
        outcome
    }

    /// Waits `hold` before a failure is answered, when few answers are held already (a
    /// client that waits for its answer is slowed; the source is blocked either way).
    pub(crate) async fn hold_failure(&self, hold: Duration) {
        if hold.is_zero() {
            return;
        }
        if let Ok(_permit) = self.held.try_acquire() {
            tokio::time::sleep(hold).await;
        }
    }

    /// Logs what the limiter saw since the last report.
    fn report_logins(&self) {
        let report = self.limiter().take_report(now());
        if let Some(report) = report {
            warn!("proxy: {report}");
        }
    }
}

/// The proxy: accepts clients on a listener and serves SOCKS5 and HTTP on it.
///
/// Cloning is cheap; clones share counters.
#[derive(Clone)]
pub struct ProxyServer {
    shared: Arc<Shared>,
}

impl ProxyServer {
    /// A proxy that opens flows through `connector`.
    pub fn new(connector: Arc<dyn Connector>, config: ProxyConfig) -> ProxyServer {
        let limits = config.login_limits.clone();
        let held = tokio::sync::Semaphore::new(limits.max_held);
        let limiter = Mutex::new(LoginLimiter::new(limits, now()));
        let pending = Pending::new(config.max_handshakes_per_source);
        ProxyServer {
            shared: Arc::new(Shared {
                connector,
                config,
                counters: Counters::default(),
                limiter,
                held,
                pending,
                busy_log: Every::new(BUSY_LOG_INTERVAL),
            }),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Serves clients from `listener` until `shutdown` is cancelled, then closes every
    /// client and returns once their tasks have ended.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        // Accepted sockets inherit it (Linux), saving a system call per client.
        if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
            debug!("proxy: cannot set TCP_NODELAY on the listener: {e}");
        }
        let tracker = TaskTracker::new();
        if self.shared.config.auth.is_some() {
            let (shared, stop) = (self.shared.clone(), shutdown.clone());
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(AUTH_REPORT_INTERVAL) => shared.report_logins(),
                    }
                }
                shared.report_logins();
            });
        }
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(v) => v,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning; clients keep running.
                    warn!("proxy: accept failed: {e}; retrying in 100 ms");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            // A source that failed to log in too often is closed before anything is
            // spent on it: no task, no buffer, no log line (the limiter counts it).
            if !self.shared.admit(peer) {
                drop(stream);
                continue;
            }
            let max = self.shared.config.max_clients;
            if self.shared.counters.clients() >= max as u64 {
                self.shared.counters.rejected_client();
                if let Some(more) = self.shared.busy_log.check(now()) {
                    warn!(%peer, "proxy: {max} clients already connected (the limit); closing new ones ({more} more since the last line)");
                }
                continue;
            }
            let Some(handshake) = self.shared.pending.begin(peer.ip()) else {
                self.shared.counters.rejected_client();
                if let Some(more) = self.shared.busy_log.check(now()) {
                    let per = self.shared.config.max_handshakes_per_source;
                    warn!(%peer, "proxy: this source has {per} connections in their handshake already (the limit); closing new ones ({more} more since the last line)");
                }
                continue;
            };
            let guard = ClientGuard::new(self.shared.clone());
            let shared = self.shared.clone();
            let cancel = shutdown.child_token();
            tracker.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = handle_client(shared, stream, peer, handshake, cancel.clone()) => {}
                }
                drop(guard);
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// Serves clients from `listener` through `connector` until `shutdown` is cancelled
/// (see [`ProxyServer::serve`]; use [`ProxyServer`] to read [`Stats`] meanwhile).
pub async fn serve(
    listener: TcpListener,
    connector: Arc<dyn Connector>,
    config: ProxyConfig,
    shutdown: CancellationToken,
) {
    ProxyServer::new(connector, config)
        .serve(listener, shutdown)
        .await
}

async fn handle_client(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    handshake: Handshake,
    cancel: CancellationToken,
) {
    // Small writes (handshakes, interactive protocols) must not wait for Nagle. Linux
    // accepted sockets inherit TCP_NODELAY from the listener (set in `serve`).
    if !cfg!(target_os = "linux")
        && let Err(e) = stream.set_nodelay(true)
    {
        debug!(%peer, "proxy: cannot set TCP_NODELAY: {e}");
    }
    // One deadline for the whole handshake, from accept to the parsed request.
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let mut stream = Counted::new(stream, shared.clone());
    // The first bytes decide the protocol; they stay in `first` for its parser.
    let mut first = vec![0u8; FIRST_READ];
    match tokio::time::timeout_at(deadline, stream.read(&mut first)).await {
        Ok(Ok(n @ 1..)) => first.truncate(n),
        Ok(Ok(_)) | Ok(Err(_)) => return,
        Err(_) => {
            shared.counters.bad_client();
            debug!(%peer, "proxy: client sent nothing within the handshake timeout; closing");
            return;
        }
    }
    match first[0] {
        socks5::VERSION => {
            serve_socks5(shared, stream, first, peer, deadline, handshake, cancel).await
        }
        b if b.is_ascii_alphabetic() => {
            stream.unread(first);
            crate::http::serve_http(shared, stream, peer, handshake, cancel).await
        }
        other => {
            shared.counters.bad_client();
            info!(
                %peer,
                "proxy: first byte {other:#04x} is neither SOCKS5 (0x05) nor an HTTP request; closing"
            );
        }
    }
}

/// Size of the first read from a client (a SOCKS5 greeting and request fit; an HTTP
/// request line usually does, the rest is read by the HTTP server).
const FIRST_READ: usize = 512;

/// Why a SOCKS5 handshake ended early.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Socks(#[from] Socks5Error),
    #[error("client closed the connection during the handshake")]
    Eof,
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error("client offers no acceptable authentication method")]
    NoMethod,
    #[error("wrong username or password")]
    AuthFailed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads until `parse` decides, keeping any bytes after the message in `buf`.
async fn read_message<T, S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> socks5::ParseResult<T>,
) -> Result<T, HandshakeError> {
    let mut chunk = [0u8; 512];
    loop {
        if let Some((msg, n)) = parse(buf)? {
            buf.drain(..n);
            return Ok(msg);
        }
        // Parsers decide within their MAX_*_LEN (< 520 bytes), so `buf` stays small.
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Eof);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn socks5_handshake<S>(
    shared: &Shared,
    client: &mut S,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
) -> Result<socks5::Request, HandshakeError>
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let greeting = read_message(client, buf, socks5::parse_greeting).await?;
    let auth = shared.config.auth.as_ref();
    let method = greeting.choose(auth.is_some());
    client.write_all(&socks5::method_reply(method)).await?;
    if method == socks5::METHOD_NOT_ACCEPTABLE {
        // Not a guess (no credentials were tried): counted, not throttled; the client
        // says "no acceptable authentication method" by itself.
        if auth.is_some() {
            shared.counters.auth_failure();
            debug!(%peer, "SOCKS5: client offers no username/password method but the proxy requires credentials");
        } else {
            shared.counters.bad_client();
            debug!(%peer, "SOCKS5: client offers only username/password but the proxy has no credentials configured");
        }
        return Err(HandshakeError::NoMethod);
    }
    if method == socks5::METHOD_USER_PASS {
        let up = read_message(client, buf, socks5::parse_user_pass).await?;
        match shared.login(peer, up.username(), |c| {
            c.matches(up.username(), up.password())
        }) {
            LoginOutcome::Accepted => client.write_all(&socks5::AUTH_SUCCESS).await?,
            LoginOutcome::Rejected { hold, .. } => {
                shared.hold_failure(hold).await;
                client.write_all(&socks5::AUTH_FAILURE).await?;
                return Err(HandshakeError::AuthFailed);
            }
            LoginOutcome::Throttled { .. } => {
                client.write_all(&socks5::AUTH_FAILURE).await?;
                return Err(HandshakeError::AuthFailed);
            }
        }
    }
    read_message(client, buf, socks5::parse_request).await
}

/// Closes after a final answer without losing it: a close with unread input makes the
/// kernel send a reset, which can destroy the answer in flight. So: send FIN, then read
/// and discard briefly until the client closes too.
pub(crate) async fn linger_close<S: AsyncRead + tokio::io::AsyncWrite + Unpin>(client: &mut S) {
    if client.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 1024];
        let mut total = 0usize;
        while total < 64 * 1024 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

async fn send_reply<S: tokio::io::AsyncWrite + Unpin>(
    client: &mut S,
    code: ReplyCode,
    bound: &SocksAddr,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(22);
    socks5::encode_reply(code, bound, &mut out);
    client.write_all(&out).await
}

async fn serve_socks5(
    shared: Arc<Shared>,
    mut client: Counted<TcpStream>,
    mut buf: Vec<u8>,
    peer: SocketAddr,
    deadline: Instant,
    pending: Handshake,
    cancel: CancellationToken,
) {
    let timeout = shared.config.handshake_timeout;
    let handshake = socks5_handshake(&shared, &mut client, &mut buf, peer);
    let err = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(request)) => {
            // The request is read: the source's handshake slot is free again.
            drop(pending);
            return match request.command {
                Command::Connect => connect(shared, client, peer, request.addr, buf).await,
                Command::UdpAssociate => {
                    let local_ip = match client.get_ref().local_addr() {
                        Ok(a) => a.ip(),
                        Err(e) => {
                            return debug!(%peer, "proxy: client socket has no local address: {e}");
                        }
                    };
                    let addr = request.addr;
                    crate::udp::associate(shared, client, peer, local_ip, addr, cancel).await
                }
            };
        }
        Ok(Err(e)) => e,
        Err(_) => HandshakeError::Timeout(timeout),
    };
    match &err {
        HandshakeError::AuthFailed | HandshakeError::NoMethod => {}
        HandshakeError::Eof | HandshakeError::Io(_) => return debug!(%peer, "SOCKS5: {err}"),
        _ => {
            shared.counters.bad_client();
            info!(%peer, "SOCKS5: bad handshake: {err}; closing");
        }
    }
    if let HandshakeError::Socks(e) = &err
        && let Some(bytes) = e.action().response()
    {
        let _ = client.write_all(&bytes).await;
    }
    linger_close(&mut client).await;
}

async fn connect(
    shared: Arc<Shared>,
    mut client: Counted<TcpStream>,
    peer: SocketAddr,
    addr: SocksAddr,
    early_data: Vec<u8>,
) {
    let target = addr.to_target();
    let mut flow = match shared.connector.connect(target.clone()).await {
        Ok(flow) => flow,
        Err(e) => {
            shared.counters.flow_error(e.kind);
            info!(%peer, %target, "SOCKS5 CONNECT failed: {e}");
            let _ = send_reply(
                &mut client,
                ReplyCode::from(e.kind),
                &SocksAddr::UNSPECIFIED,
            )
            .await;
            linger_close(&mut client).await;
            return;
        }
    };
    let _flow = FlowGuard::new(shared.clone());
    // From the success reply on, the client takes the connection for the flow's: it ends
    // with a FIN only when the flow does.
    let mut client = ResetUnlessDone::new(client);
    // The bound address is the agent's business; clients ignore it for CONNECT.
    if send_reply(
        client.get_mut(),
        ReplyCode::Succeeded,
        &SocksAddr::UNSPECIFIED,
    )
    .await
    .is_err()
    {
        return;
    }
    if !early_data.is_empty()
        && (flow.write_all(&early_data).await.is_err() || flow.flush().await.is_err())
    {
        return;
    }
    // Let other clients run first: a client that sends as soon as it has the reply
    // (most protocols) usually has by then, so its first bytes leave with the `Open`
    // of an optimistic flow in one message. With nothing else to do this returns at once.
    tokio::task::yield_now().await;
    match client.relay(&mut flow).await {
        Ok((up, down)) => debug!(%peer, %target, up, down, "SOCKS5 flow closed"),
        Err(e) => debug!(%peer, %target, "SOCKS5 flow cut, client reset: {e}"),
    }
}

/// A client's connection carrying a flow: reset when dropped (SO_LINGER 0, then the
/// close sends an RST and discards what was still queued) unless [`relay`](Self::relay)
/// ended cleanly. Only the flow's real end (the agent's `Fin`) thus reaches the client as
/// a FIN; a relay that fails (the tunnel died, the destination or the client reset) or is
/// dropped (the proxy stops), or a flow that breaks before it, resets the client's
/// connection, so that nothing takes the cut for the end of the stream (a close-delimited
/// download would look complete). The normal end costs nothing.
pub(crate) struct ResetUnlessDone {
    client: Counted<TcpStream>,
    done: bool,
}

impl ResetUnlessDone {
    pub(crate) fn new(client: Counted<TcpStream>) -> ResetUnlessDone {
        ResetUnlessDone {
            client,
            done: false,
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut Counted<TcpStream> {
        &mut self.client
    }

    /// Relays the connection and `flow` until both ended; the flow, dropped by the caller
    /// after an error, is reset at the agent.
    ///
    /// # Errors
    ///
    /// The relay's first I/O error.
    pub(crate) async fn relay(
        &mut self,
        flow: &mut Box<dyn crate::FlowIo>,
    ) -> io::Result<(u64, u64)> {
        let result = kubelan_session::relay::copy_bidirectional(&mut self.client, flow).await;
        self.done = result.is_ok();
        result
    }
}

impl Drop for ResetUnlessDone {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.client.get_ref().set_zero_linger()
        {
            debug!("proxy: cannot reset a cut client connection: {e}");
        }
    }
}
