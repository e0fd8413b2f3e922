//! The lab's default workload servers.
//!
//! These functions are the container processes of the lab's default pods
//! (`kubelan lab serve …`). There are two servers:
//!
//! * [`serve_http`]: a small HTTP server (HTTP/1.1 with keep-alive, plus h2c
//!   with prior knowledge) with a handful of routes that are handy for
//!   connectivity checks and benchmarks:
//!
//!   | route            | answer                                                  |
//!   |------------------|---------------------------------------------------------|
//!   | `GET /`          | `200`, `text/plain`, the pod name and a newline         |
//!   | `GET /healthz`   | `200`, `ok`                                             |
//!   | `GET /bytes/<n>` | `200`, `n` bytes (at most 1 GiB), streamed              |
//!   | `POST /sink`     | reads and discards the body, answers its length in bytes |
//!   | `GET /ip`        | the client's address as the server sees it (`ip:port`)  |
//!   | `GET /pod`       | `302` to `http://<this pod's IP>:<port>/`: the client is handed a Pod IP, as with registry-based discovery |
//!   | anything else    | `404` (`405` for a known path with the wrong method)    |
//!
//!   `HEAD` is accepted wherever `GET` is. Every response carries an
//!   `X-Pod-Name` header. The bytes of `/bytes/<n>` follow a fixed pattern:
//!   the byte at offset `i` is `i % 256`, so clients can check integrity.
//!
//! * [`serve_echo`]: a TCP echo server (each connection gets its bytes back
//!   until it half-closes; idle connections are closed after 5 minutes) and a
//!   UDP echo server (each datagram is sent back to its sender).
//!
//! Both are hardened against misbehaving clients: the number of concurrent
//! connections is capped, per-connection buffers are fixed-size, errors on one
//! connection never end the server, and a panicking connection task only loses
//! that connection.
//!
//! Use [`HttpServer`] / [`EchoServer`] directly when the bound address is
//! needed before serving (for example after binding port 0).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The largest body `GET /bytes/<n>` serves: 1 GiB.
pub const MAX_BYTES: u64 = 1 << 30;

/// How long in-flight HTTP requests may keep running after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long an echo connection may stay idle (no bytes either way) before it is closed.
pub const ECHO_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The most connections one server handles at a time; further clients wait in
/// the listen backlog until a slot frees up.
const MAX_CONNECTIONS: usize = 16_384;

/// Listen backlog for the TCP listeners.
const LISTEN_BACKLOG: u32 = 4096;

/// Chunk size of streamed `/bytes/<n>` bodies and of the TCP echo buffer.
const CHUNK: usize = 64 * 1024;

/// Largest UDP datagram the echo server handles.
const MAX_DATAGRAM: usize = 65535;

/// How long a fresh HTTP connection may stay silent before it is dropped.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an HTTP/1 client may take to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (for example when out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Settings of [`serve_http`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The pod name: answered by `GET /` and sent in every `X-Pod-Name` header.
    pub name: String,
}

/// Settings of [`serve_echo`]; at least one of the two must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoOptions {
    /// Address of the TCP echo listener, if any.
    pub tcp: Option<SocketAddr>,
    /// Address of the UDP echo socket, if any.
    pub udp: Option<SocketAddr>,
}

/// Serves HTTP on `opts.listen` until `shutdown` completes.
///
/// On shutdown the listener is closed at once, idle connections are closed,
/// and requests in flight get [`SHUTDOWN_GRACE`] to finish before their
/// connections are dropped.
pub async fn serve_http(
    opts: HttpOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    HttpServer::bind(opts).await?.run(shutdown).await
}

/// Serves TCP and/or UDP echo until `shutdown` completes.
///
/// On shutdown open echo connections are closed at once.
pub async fn serve_echo(
    opts: EchoOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    EchoServer::bind(opts).await?.run(shutdown).await
}

/// An HTTP server whose listener is bound but which is not serving yet.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<HttpState>,
}

/// What every request handler needs.
#[derive(Debug)]
struct HttpState {
    /// The pod name followed by a newline: the body of `GET /`.
    name_body: Bytes,
    /// The pod name as a header value.
    name_header: HeaderValue,
}

impl HttpServer {
    /// Binds the listener described by `opts`.
    ///
    /// Fails when the address cannot be bound or when `opts.name` cannot be
    /// sent as an HTTP header value (for example because it holds a newline).
    pub async fn bind(opts: HttpOptions) -> anyhow::Result<Self> {
        let name_header = HeaderValue::from_str(&opts.name)
            .with_context(|| format!("pod name {:?} is not a valid header value", opts.name))?;
        let listener = bind_tcp(opts.listen)
            .with_context(|| format!("cannot listen for HTTP on {}", opts.listen))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            state: Arc::new(HttpState {
                name_body: Bytes::from(format!("{}\n", opts.name)),
                name_header,
            }),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes; see [`serve_http`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            local_addr,
            state,
        } = self;
        let builder = Arc::new(http_builder());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tracing::info!(%local_addr, "HTTP server listening");

        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = conns.join_next(), if !conns.is_empty() => log_task_end(done),
                accepted = listener.accept(), if conns.len() < MAX_CONNECTIONS => match accepted {
                    Ok((stream, peer)) => {
                        conns.spawn(serve_http_conn(
                            builder.clone(),
                            stream,
                            peer,
                            state.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    Err(e) => accept_failed(&e).await,
                },
            }
        }

        drop(listener);
        // Ignoring the error is fine: it only means no connection is listening.
        let _ = stop_tx.send(true);
        let open = conns.len();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(done) = conns.join_next().await {
                log_task_end(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::info!(
                remaining = conns.len(),
                "HTTP requests still running after the shutdown grace period; dropping them"
            );
        }
        conns.shutdown().await;
        tracing::info!(%local_addr, open_at_shutdown = open, "HTTP server stopped");
        Ok(())
    }
}

/// The connection builder: HTTP/1.1 with keep-alive, and h2c (prior knowledge).
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves one HTTP connection until it ends or the server stops.
async fn serve_http_conn(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<HttpState>,
    stop: watch::Receiver<bool>,
) {
    // Latency matters more than segment count for small request/response exchanges.
    let _ = stream.set_nodelay(true);

    // Drop clients that connect and never speak, without tying up hyper's
    // protocol detection (which has no timeout of its own).
    let mut probe = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut probe)) => {
            match peeked {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        () = stopped(stop.clone()) => return,
    }

    // The address the client reached after any Service DNAT: this pod's own.
    let local = stream.local_addr().ok();
    let service = service_fn(move |req| handle_http(req, peer, local, state.clone()));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        () = stopped(stop) => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection failed while shutting down");
            }
        }
    }
}

/// Completes once the server's stop flag is raised (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Routes one request.
async fn handle_http(
    req: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    state: Arc<HttpState>,
) -> Result<Response<RespBody>, Infallible> {
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    let path = req.uri().path();
    let mut resp = match path {
        "/" if is_get => text(StatusCode::OK, state.name_body.clone()),
        "/healthz" if is_get => text(StatusCode::OK, Bytes::from_static(b"ok")),
        "/ip" if is_get => text(StatusCode::OK, Bytes::from(format!("{peer}\n"))),
        "/pod" if is_get => match local {
            Some(addr) => {
                let mut r = text(
                    StatusCode::FOUND,
                    Bytes::from(format!("see http://{addr}/\n")),
                );
                if let Ok(v) = http::HeaderValue::from_str(&format!("http://{addr}/")) {
                    r.headers_mut().insert(http::header::LOCATION, v);
                }
                r
            }
            None => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(b"no local address\n"),
            ),
        },
        "/sink" if req.method() == Method::POST => sink(req.into_body()).await,
        "/" | "/healthz" | "/ip" | "/pod" => method_not_allowed("GET, HEAD"),
        "/sink" => method_not_allowed("POST"),
        _ => match path.strip_prefix("/bytes/") {
            Some(count) if is_get => bytes_response(count),
            Some(_) => method_not_allowed("GET, HEAD"),
            None => text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
        },
    };
    resp.headers_mut()
        .insert("x-pod-name", state.name_header.clone());
    Ok(resp)
}

/// The answer to `GET /bytes/<count>`.
fn bytes_response(count: &str) -> Response<RespBody> {
    let Ok(len) = count.parse::<u64>() else {
        return text(
            StatusCode::BAD_REQUEST,
            Bytes::from_static(b"expected /bytes/<count> with a decimal count\n"),
        );
    };
    if len > MAX_BYTES {
        return text(
            StatusCode::BAD_REQUEST,
            Bytes::from(format!("at most {MAX_BYTES} bytes per request\n")),
        );
    }
    let mut resp = Response::new(RespBody::Pattern { remaining: len });
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// Reads and discards a request body, answering the number of bytes read.
async fn sink(mut body: Incoming) -> Response<RespBody> {
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    total = total.saturating_add(data.len() as u64);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, received = total, "failed to read a /sink body");
                return text(
                    StatusCode::BAD_REQUEST,
                    Bytes::from_static(b"failed to read the request body\n"),
                );
            }
        }
    }
    text(StatusCode::OK, Bytes::from(format!("{total}\n")))
}

/// A plain-text response.
fn text(status: StatusCode, body: Bytes) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::Full(Some(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A `405` answer listing the allowed methods.
fn method_not_allowed(allow: &'static str) -> Response<RespBody> {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        Bytes::from_static(b"method not allowed\n"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// The response bodies this server sends.
#[derive(Debug)]
enum RespBody {
    /// A body held in memory, sent as one frame.
    Full(Option<Bytes>),
    /// The rest of a `/bytes/<n>` pattern: `remaining` more bytes.
    Pattern { remaining: u64 },
}

/// One chunk of the `/bytes/<n>` pattern, shared by all responses.
fn pattern_chunk() -> &'static Bytes {
    static CHUNK_BYTES: OnceLock<Bytes> = OnceLock::new();
    // `i as u8` keeps the low byte on purpose: the pattern is `i % 256`.
    CHUNK_BYTES.get_or_init(|| Bytes::from((0..CHUNK).map(|i| i as u8).collect::<Vec<u8>>()))
}

impl hyper::body::Body for RespBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            RespBody::Full(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Pattern { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                // Chunks always start at a multiple of CHUNK (a multiple of
                // 256), so every chunk starts at pattern offset 0.
                let len = usize::try_from(*remaining).map_or(CHUNK, |r| r.min(CHUNK));
                *remaining -= len as u64;
                Poll::Ready(Some(Ok(Frame::data(pattern_chunk().slice(..len)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(body) => body.is_none(),
            RespBody::Pattern { remaining } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
            RespBody::Pattern { remaining } => SizeHint::with_exact(*remaining),
        }
    }
}

/// Echo servers whose sockets are bound but which are not serving yet.
#[derive(Debug)]
pub struct EchoServer {
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
}

impl EchoServer {
    /// Binds the sockets described by `opts`; fails when neither is set.
    pub async fn bind(opts: EchoOptions) -> anyhow::Result<Self> {
        if opts.tcp.is_none() && opts.udp.is_none() {
            anyhow::bail!("the echo server needs a TCP or a UDP address (or both)");
        }
        let tcp = match opts.tcp {
            Some(addr) => Some(
                bind_tcp(addr).with_context(|| format!("cannot listen for TCP echo on {addr}"))?,
            ),
            None => None,
        };
        let udp = match opts.udp {
            Some(addr) => Some(
                UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind UDP echo socket on {addr}"))?,
            ),
            None => None,
        };
        Ok(Self { tcp, udp })
    }

    /// The address of the TCP echo listener, if there is one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the UDP echo socket, if there is one.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Serves until `shutdown` completes; see [`serve_echo`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        if let Some(addr) = self.tcp_addr() {
            tracing::info!(%addr, "TCP echo server listening");
        }
        if let Some(addr) = self.udp_addr() {
            tracing::info!(%addr, "UDP echo server listening");
        }
        let tcp = async {
            match self.tcp {
                Some(listener) => tcp_echo_loop(listener).await,
                None => std::future::pending().await,
            }
        };
        let udp = async {
            match self.udp {
                Some(socket) => udp_echo_loop(socket).await,
                None => std::future::pending().await,
            }
        };
        // Both loops run until dropped: dropping the TCP loop drops its
        // JoinSet, which aborts the open connections.
        tokio::select! {
            () = shutdown => {}
            never = tcp => match never {},
            never = udp => match never {},
        }
        tracing::info!("echo server stopped");
        Ok(())
    }
}

/// Accepts TCP echo connections forever.
async fn tcp_echo_loop(listener: TcpListener) -> Infallible {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            Some(done) = conns.join_next(), if !conns.is_empty() => log_task_end(done),
            accepted = listener.accept(), if conns.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(async move {
                        if let Err(e) = echo_tcp_conn(stream).await {
                            tracing::debug!(%peer, error = %e, "TCP echo connection ended with an error");
                        }
                    });
                }
                Err(e) => accept_failed(&e).await,
            },
        }
    }
}

/// Echoes one TCP connection until the client half-closes, then closes our side.
async fn echo_tcp_conn(mut stream: TcpStream) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = idle_limited(stream.read(&mut buf)).await?;
        if n == 0 {
            return idle_limited(stream.shutdown()).await;
        }
        idle_limited(stream.write_all(&buf[..n])).await?;
    }
}

/// Runs one echo I/O step, failing it after [`ECHO_IDLE_TIMEOUT`] without progress.
async fn idle_limited<T>(step: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(ECHO_IDLE_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")))
}

/// Echoes UDP datagrams forever.
async fn udp_echo_loop(socket: UdpSocket) -> Infallible {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut failures: u32 = 0;
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                failures = 0;
                if let Err(e) = socket.send_to(&buf[..n], peer).await {
                    tracing::debug!(%peer, error = %e, "failed to echo a UDP datagram");
                }
            }
            Err(e) => {
                // Mostly ICMP errors reported on the socket; harmless. Slow down
                // only if they never stop, so a persistent error cannot spin.
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, "UDP echo receive failed");
                if failures > 100 {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

/// Creates a TCP listener with address reuse and a deep backlog.
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Logs a failed `accept` and pauses briefly so a persistent failure cannot spin.
async fn accept_failed(error: &io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Logs a connection task that panicked; normal ends are silent.
fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "connection task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// A running server under test: its address, its stop switch and its task.
    struct Running {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    async fn start_http(name: &str) -> Running {
        let server = HttpServer::bind(HttpOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            name: name.to_owned(),
        })
        .await
        .unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }

    /// A parsed HTTP/1.1 response.
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends one request on a fresh connection (`Connection: close`) and reads the answer.
    async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Resp {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
            .await
            .unwrap()
            .unwrap();
        parse_response(&raw)
    }

    fn parse_response(raw: &[u8]) -> Resp {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        Resp {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        }
    }

    #[tokio::test]
    async fn http_routes() {
        let server = start_http("web-7d4b9-abcde").await;
        let addr = server.addr;

        let root = request(addr, "GET", "/", b"").await;
        assert_eq!(root.status, 200);
        assert_eq!(root.body, b"web-7d4b9-abcde\n");
        assert_eq!(root.header("x-pod-name"), Some("web-7d4b9-abcde"));
        assert!(
            root.header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );

        let health = request(addr, "GET", "/healthz", b"").await;
        assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]));

        let big = request(addr, "GET", "/bytes/1048576", b"").await;
        assert_eq!(big.status, 200);
        assert_eq!(big.body.len(), 1_048_576);
        assert_eq!(big.header("content-length"), Some("1048576"));
        assert!(big.body.iter().enumerate().all(|(i, b)| *b == i as u8));
        assert_eq!(big.header("x-pod-name"), Some("web-7d4b9-abcde"));

        let odd = request(addr, "GET", "/bytes/70001", b"").await;
        assert_eq!(odd.body.len(), 70001);
        assert!(odd.body.iter().enumerate().all(|(i, b)| *b == i as u8));
        assert_eq!(request(addr, "GET", "/bytes/0", b"").await.body.len(), 0);
        assert_eq!(request(addr, "GET", "/bytes/nope", b"").await.status, 400);
        let too_big = format!("/bytes/{}", MAX_BYTES + 1);
        assert_eq!(request(addr, "GET", &too_big, b"").await.status, 400);

        let ip = request(addr, "GET", "/ip", b"").await;
        assert_eq!(ip.status, 200);
        let seen: SocketAddr = std::str::from_utf8(&ip.body)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(seen.ip(), addr.ip());
        assert_ne!(seen.port(), addr.port());

        let sink = request(addr, "POST", "/sink", &vec![7u8; 300_000]).await;
        assert_eq!((sink.status, sink.body.as_slice()), (200, &b"300000\n"[..]));

        let missing = request(addr, "GET", "/nope", b"").await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.header("x-pod-name"), Some("web-7d4b9-abcde"));
        assert_eq!(request(addr, "POST", "/", b"x").await.status, 405);
        assert_eq!(request(addr, "GET", "/sink", b"").await.status, 405);

        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn http_keep_alive_and_garbage() {
        let server = start_http("pod-a").await;
        let addr = server.addr;

        // Two requests on one connection.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        stream.write_all(req).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
        assert!(text.ends_with("pod-a\n"));

        // Garbage and early hang-ups must not hurt the server.
        for junk in [&b"\x00\x01\x02 garbage\r\n\r\n"[..], b"GET", b""] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(junk).await.unwrap();
            drop(s);
        }
        assert_eq!(request(addr, "GET", "/", b"").await.status, 200);

        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn http_shutdown_closes_idle_connections_quickly() {
        let server = start_http("pod-b").await;
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0);

        let started = std::time::Instant::now();
        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        // The idle keep-alive connection has been closed by the server.
        let n = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn http_shutdown_bounds_in_flight_requests() {
        let server = start_http("pod-c").await;
        // A 1 GiB download nobody reads: it cannot finish within the grace period.
        let mut slow = TcpStream::connect(server.addr).await.unwrap();
        slow.write_all(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        slow.read_exact(&mut buf).await.unwrap();

        let started = std::time::Instant::now();
        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
        let took = started.elapsed();
        assert!(
            took >= SHUTDOWN_GRACE - Duration::from_millis(100),
            "{took:?}"
        );
        assert!(took < SHUTDOWN_GRACE + Duration::from_secs(1), "{took:?}");
    }

    #[tokio::test]
    async fn http2_prior_knowledge_with_curl() {
        if std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("skipping: curl is not installed");
            return;
        }
        let server = start_http("pod-h2").await;
        let url = format!("http://{}/", server.addr);
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--http2-prior-knowledge",
                "-w",
                "%{http_version}",
                &url,
            ])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not support") {
            println!("skipping: this curl has no HTTP/2 support");
        } else {
            assert_eq!(
                text,
                "pod-h2\n2",
                "stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn bad_pod_name_is_an_error() {
        let err = HttpServer::bind(HttpOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            name: "bad\nname".to_owned(),
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
    }

    #[tokio::test]
    async fn echo_tcp_and_udp() {
        let server = EchoServer::bind(EchoOptions {
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            udp: Some("127.0.0.1:0".parse().unwrap()),
        })
        .await
        .unwrap();
        let tcp_addr = server.tcp_addr().unwrap();
        let udp_addr = server.udp_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));

        // 1 MiB over TCP, written and read concurrently.
        let data: Vec<u8> = (0..1_048_576u32)
            .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
            .collect();
        let stream = TcpStream::connect(tcp_addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let to_send = data.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&to_send).await.unwrap();
            wr.shutdown().await.unwrap();
        });
        let mut echoed = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        writer.await.unwrap();
        assert_eq!(echoed.len(), data.len());
        assert!(echoed == data, "echoed bytes differ");

        // UDP: a few datagrams, including a large one.
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(udp_addr).await.unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for size in [1usize, 1200, 60_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            client.send(&payload).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], payload.as_slice());
        }

        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn echo_needs_an_address() {
        assert!(EchoServer::bind(EchoOptions::default()).await.is_err());
    }
}
