//! The accept loop, protocol detection and the SOCKS5 TCP side.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::client::{ClientGuard, Counted, FlowGuard, ResetUnlessDone, linger_close};
use crate::limiter::{LoginLimiter, LoginOutcome};
use crate::pending::{Every, Handshake, Pending};
use crate::shared::{AUTH_REPORT_INTERVAL, Shared, now};
use crate::socks5::{self, Command, ReplyCode, Socks5Error, SocksAddr};
use crate::stats::Counters;
use crate::{Connector, ProxyConfig, Stats};

/// How often connections closed at accept for a client limit are reported.
const BUSY_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
