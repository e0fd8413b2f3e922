//! End-to-end tests of the proxy on loopback: real clients (curl, hand-built SOCKS5 and
//! HTTP clients) against a `Connector` that dials local sockets.
//!
//! The test connector resolves `*.cluster` names to 127.0.0.1 (keeping the port),
//! refuses port 9 by "policy" and knows no other names.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kubelan_proxy::socks5::{self, ReplyCode, SocksAddr};
use kubelan_proxy::{
    Connector, Credentials, ErrorKind, FlowError, FlowIo, ProxyConfig, ProxyServer, Target, UdpFlow,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const DENIED_PORT: u16 = 9;
const T: Duration = Duration::from_secs(10);

/// Dials local sockets; records every target it was asked for.
#[derive(Default)]
struct LocalConnector {
    seen: Mutex<Vec<Target>>,
}

fn resolve(target: &Target) -> Result<SocketAddr, FlowError> {
    if target.port() == DENIED_PORT {
        return Err(FlowError::new(ErrorKind::Policy, "port 9 is not allowed"));
    }
    match target {
        Target::Addr(a) => Ok(*a),
        Target::Name { host, port } if host.ends_with(".cluster") => {
            Ok(SocketAddr::from(([127, 0, 0, 1], *port)))
        }
        Target::Name { host, .. } => Err(FlowError::new(
            ErrorKind::NoSuchHost,
            format!("{host} is not a cluster name"),
        )),
    }
}

fn io_error(e: std::io::Error) -> FlowError {
    let kind = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
        _ => ErrorKind::Other,
    };
    FlowError::new(kind, e.to_string())
}

/// The target whose flow is cut: [`CUT_AFTER`] bytes arrive, then the flow fails as
/// when the tunnel to the agent dies.
const CUT_HOST: &str = "cut.cluster";
const CUT_AFTER: usize = 100_000;

/// A flow that yields `left` bytes, then fails with `ConnectionAborted`; takes writes.
struct CutFlow {
    left: usize,
}

impl tokio::io::AsyncRead for CutFlow {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the tunnel to the agent closed before the flow ended",
            )));
        }
        let n = self.left.min(buf.remaining());
        buf.put_slice(&vec![b'x'; n]);
        self.left -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for CutFlow {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Connector for LocalConnector {
    fn connect(&self, target: Target) -> BoxFuture<'static, Result<Box<dyn FlowIo>, FlowError>> {
        self.seen.lock().unwrap().push(target.clone());
        if matches!(&target, Target::Name { host, .. } if host == CUT_HOST) {
            return Box::pin(async {
                Ok(Box::new(CutFlow { left: CUT_AFTER }) as Box<dyn FlowIo>)
            });
        }
        Box::pin(async move {
            let addr = resolve(&target)?;
            let s = TcpStream::connect(addr).await.map_err(io_error)?;
            s.set_nodelay(true).map_err(io_error)?;
            Ok(Box::new(s) as Box<dyn FlowIo>)
        })
    }

    fn open_udp(&self, target: Target) -> BoxFuture<'static, Result<UdpFlow, FlowError>> {
        self.seen.lock().unwrap().push(target.clone());
        Box::pin(async move {
            let addr = resolve(&target)?;
            let sock = UdpSocket::bind("127.0.0.1:0").await.map_err(io_error)?;
            sock.connect(addr).await.map_err(io_error)?;
            let (tx, mut to_target) = mpsc::channel::<Bytes>(16);
            let (from_target, rx) = mpsc::channel(16);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    tokio::select! {
                        p = to_target.recv() => match p {
                            Some(p) => { let _ = sock.send(&p).await; }
                            None => break,
                        },
                        r = sock.recv(&mut buf) => {
                            let Ok(n) = r else { continue };
                            if from_target.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            Ok(UdpFlow { tx, rx })
        })
    }
}

struct Proxy {
    addr: SocketAddr,
    server: ProxyServer,
    connector: Arc<LocalConnector>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(config: ProxyConfig) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connector = Arc::new(LocalConnector::default());
    let server = ProxyServer::new(connector.clone(), config);
    let stop = CancellationToken::new();
    let (s, token) = (server.clone(), stop.clone());
    tokio::spawn(async move { s.serve(listener, token).await });
    Proxy {
        addr,
        server,
        connector,
        stop,
    }
}

fn with_auth() -> ProxyConfig {
    let mut c = ProxyConfig::default();
    c.auth = Some("alice:s3cret".parse::<Credentials>().unwrap());
    c
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An HTTP server that describes each request it gets.
async fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap_or("?").to_string())
                        .unwrap_or_default();
                    let proxy_headers = req
                        .headers()
                        .keys()
                        .any(|k| k.as_str().starts_with("proxy-"));
                    let body = format!(
                        "{} {} host={host} proxy-headers={proxy_headers}",
                        req.method(),
                        req.uri()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    addr
}

async fn udp_echo_server() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// Sends `bytes` and returns everything the proxy answers until it closes.
async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_close(&mut s).await
}

async fn read_until_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(T, s.read(&mut buf))
            .await
            .expect("proxy did not close")
        {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn error_reply(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

fn connect_request(addr: &SocksAddr) -> Vec<u8> {
    let mut out = vec![5, 1, 0];
    addr.encode(&mut out);
    out
}

fn name(host: &str, port: u16) -> SocksAddr {
    SocksAddr::Domain(socks5::DomainName::new(host).unwrap(), port)
}

/// Reads one SOCKS5 reply.
async fn read_reply(s: &mut TcpStream) -> socks5::Reply {
    let mut buf = Vec::new();
    loop {
        if let Some((reply, _)) = socks5::parse_reply(&buf).unwrap() {
            return reply;
        }
        let mut b = [0u8; 1];
        let n = timeout(T, s.read(&mut b)).await.unwrap().unwrap();
        assert_eq!(n, 1, "proxy closed before replying; got {buf:?}");
        buf.push(b[0]);
    }
}

/// Opens a SOCKS5 session (no auth) and asks for `request`, returning the reply.
async fn socks_session(proxy: SocketAddr, request: &[u8]) -> (TcpStream, socks5::Reply) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    s.write_all(request).await.unwrap();
    let reply = read_reply(&mut s).await;
    (s, reply)
}

fn curl_available() -> bool {
    let ok = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping the curl part of this test: curl is not installed");
    }
    ok
}

/// Runs curl (proxy variables from the environment removed) and returns the exit code
/// and output, with the HTTP status appended on its own line.
async fn curl(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One request through the HTTP proxy on a fresh connection.
async fn via_http_proxy(proxy: SocketAddr, req: Request<Empty<Bytes>>) -> Response<String> {
    let s = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, String::from_utf8_lossy(&body).into_owned())
}

fn get(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri).body(Empty::new()).unwrap()
}

#[tokio::test]
async fn curl_through_socks5_resolves_names_on_the_far_side() {
    let proxy = start(ProxyConfig::default()).await;
    let web = http_server().await;
    if !curl_available() {
        return;
    }
    let url = format!("http://web.cluster:{}/hello?x=1", web.port());
    let (code, out) = curl(&["--socks5-hostname", &proxy.addr.to_string(), &url]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("GET /hello?x=1 host=web.cluster:{}", web.port())),
        "{out}"
    );
    assert!(out.ends_with("\n200"), "{out}");
    let seen = proxy.connector.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [Target::Name {
            host: "web.cluster".into(),
            port: web.port()
        }]
    );
    let stats = proxy.server.stats();
    assert_eq!(stats.flows_total, 1);
    assert!(stats.bytes_up > 0 && stats.bytes_down > 0, "{stats}");
}

#[tokio::test]
async fn curl_through_http_proxy_absolute_uri_and_connect() {
    let proxy = start(ProxyConfig::default()).await;
    let web = http_server().await;
    if !curl_available() {
        return;
    }
    let p = format!("http://{}", proxy.addr);
    let url = format!("http://web.cluster:{}/a/b", web.port());
    let (code, out) = curl(&["-x", &p, &url]).await;
    assert_eq!(code, 0, "{out}");
    // Origin form upstream, Host from the URL, no Proxy-* headers forwarded.
    assert!(
        out.starts_with(&format!(
            "GET /a/b host=web.cluster:{} proxy-headers=false",
            web.port()
        )),
        "{out}"
    );
    // -p: tunnel with CONNECT even for http://.
    let (code, out) = curl(&["-p", "-x", &p, &url]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("GET /a/b host=web.cluster:"), "{out}");
    assert!(out.ends_with("\n200"), "{out}");
}

#[tokio::test]
async fn http_keep_alive_across_hosts_and_upstream_reuse() {
    let proxy = start(ProxyConfig::default()).await;
    let web = http_server().await;
    let s = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    for host in ["a.cluster", "a.cluster", "b.cluster", "a.cluster"] {
        let authority = format!("{host}:{}", web.port());
        let req = Request::get(format!("http://{authority}/k"))
            .header("host", &authority)
            .header("proxy-connection", "keep-alive")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let want = format!("GET /k host={authority} proxy-headers=false");
        assert_eq!(body, want.as_bytes());
    }
    // a, a (reused), b, a: three upstream connections over one client connection.
    assert_eq!(proxy.server.stats().flows_total, 3);
}

#[tokio::test]
async fn http_requests_that_are_not_proxy_requests_get_400() {
    let proxy = start(ProxyConfig::default()).await;
    let origin = Request::get("/index.html")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = via_http_proxy(proxy.addr, origin).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.body().contains("this port is a proxy"),
        "{}",
        resp.body()
    );
    let resp = via_http_proxy(proxy.addr, get("https://web.cluster/")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.body().contains("CONNECT"), "{}", resp.body());
}

#[tokio::test]
async fn policy_and_unknown_hosts_map_to_socks_codes_and_http_statuses() {
    let proxy = start(ProxyConfig::default()).await;
    let (_, reply) = socks_session(proxy.addr, &connect_request(&name("web.cluster", 9))).await;
    assert_eq!(reply.code, ReplyCode::NotAllowed);
    let (_, reply) = socks_session(proxy.addr, &connect_request(&name("nope.example", 80))).await;
    assert_eq!(reply.code, ReplyCode::HostUnreachable);
    // Exact bytes of a refused CONNECT.
    let mut raw = vec![5, 1, 0];
    raw.extend(connect_request(&SocksAddr::Ip(
        "127.0.0.1:9".parse().unwrap(),
    )));
    assert_eq!(
        exchange(proxy.addr, &raw).await,
        [&[5, 0][..], &error_reply(2)].concat()
    );
    // Nothing listens on port 1: connection refused (05).
    let (_, reply) = socks_session(proxy.addr, &connect_request(&name("x.cluster", 1))).await;
    assert_eq!(reply.code, ReplyCode::ConnectionRefused);

    let resp = via_http_proxy(proxy.addr, get("http://web.cluster:9/")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.body().contains("policy"), "{}", resp.body());
    let resp = via_http_proxy(proxy.addr, get("http://nope.example/")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(
        resp.body()
            .contains("no such host in the cluster: nope.example:80"),
        "{}",
        resp.body()
    );
    let connect = Request::connect("nope.example:443")
        .body(Empty::new())
        .unwrap();
    let resp = via_http_proxy(proxy.addr, connect).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let errors = proxy.server.stats().errors;
    assert!(errors.contains(&(ErrorKind::Policy, 3)), "{errors:?}");
    assert!(errors.contains(&(ErrorKind::NoSuchHost, 3)), "{errors:?}");
}

#[tokio::test]
async fn malformed_socks5_gets_the_rfc_reply_bytes() {
    let proxy = start(ProxyConfig::default()).await;
    let p = proxy.addr;
    // Greeting with zero methods: "no acceptable methods".
    assert_eq!(exchange(p, &[5, 0]).await, [5, 0xFF]);
    // Only GSSAPI offered.
    assert_eq!(exchange(p, &[5, 1, 1]).await, [5, 0xFF]);
    // BIND: command not supported.
    let bind = [5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80];
    assert_eq!(
        exchange(p, &bind).await,
        [&[5, 0][..], &error_reply(7)].concat()
    );
    // Unknown command 0x09.
    let cmd9 = [5, 1, 0, 5, 9, 0, 1, 127, 0, 0, 1, 0, 80];
    assert_eq!(
        exchange(p, &cmd9).await,
        [&[5, 0][..], &error_reply(7)].concat()
    );
    // Unknown address type: 08.
    let atyp = [5, 1, 0, 5, 1, 0, 9, 127, 0, 0, 1, 0, 80];
    assert_eq!(
        exchange(p, &atyp).await,
        [&[5, 0][..], &error_reply(8)].concat()
    );
    // Non-UTF-8 host name: 04.
    let bad_name = [5, 1, 0, 5, 1, 0, 3, 2, 0xFF, 0xFE, 0, 80];
    assert_eq!(
        exchange(p, &bad_name).await,
        [&[5, 0][..], &error_reply(4)].concat()
    );
    // Wrong version in the request, non-zero reserved byte: closed without a reply.
    assert_eq!(
        exchange(p, &[5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80]).await,
        [5, 0]
    );
    assert_eq!(
        exchange(p, &[5, 1, 0, 5, 1, 7, 1, 1, 2, 3, 4, 0, 80]).await,
        [5, 0]
    );
    // Truncated request, then the client half-closes: no reply, just closed.
    let mut s = TcpStream::connect(p).await.unwrap();
    s.write_all(&[5, 1, 0, 5, 1, 0, 3, 10, b'a']).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_until_close(&mut s).await, [5, 0]);
    // Neither SOCKS5 nor HTTP (a TLS ClientHello, SOCKS4): closed without a byte.
    assert_eq!(exchange(p, &[0x16, 3, 1, 0, 5]).await, b"");
    assert_eq!(exchange(p, &[4, 1, 0, 80, 127, 0, 0, 1, 0]).await, b"");
    assert!(proxy.server.stats().bad_clients >= 8);
}

#[tokio::test]
async fn early_data_after_the_request_reaches_the_target() {
    let proxy = start(ProxyConfig::default()).await;
    let echo = echo_server().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Greeting, request and payload in one write, as optimistic clients do.
    let mut all = vec![5, 1, 0];
    all.extend(connect_request(&SocksAddr::Ip(echo)));
    all.extend_from_slice(b"hello");
    s.write_all(&all).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(read_reply(&mut s).await.code, ReplyCode::Succeeded);
    let mut got = [0u8; 5];
    timeout(T, s.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"hello");
}

#[tokio::test]
async fn http_connect_passes_bytes_sent_behind_the_request_and_the_end() {
    let proxy = start(ProxyConfig::default()).await;
    let echo = echo_server().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // The request and the tunnel's first bytes in one write: hyper reads both, and the
    // bytes past the request must still reach the target, ahead of everything later.
    let req = format!(
        "CONNECT echo.cluster:{0} HTTP/1.1\r\nHost: echo.cluster:{0}\r\n\r\nearly ",
        echo.port()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        timeout(T, s.read_exact(&mut b)).await.unwrap().unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 200 Connection established\r\n"),
        "{head}"
    );
    s.write_all(b"late").await.unwrap();
    s.shutdown().await.unwrap();
    // The echo server closes once it has echoed everything: the end passed both ways.
    let mut rest = Vec::new();
    timeout(T, s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest, b"early late");
}

#[tokio::test]
async fn socks5_auth_required_wrong_and_right() {
    let proxy = start(with_auth()).await;
    let echo = echo_server().await;
    let p = proxy.addr;
    // No username/password method offered.
    assert_eq!(exchange(p, &[5, 1, 0]).await, [5, 0xFF]);
    // Wrong password.
    let wrong = [&[5u8, 2, 0, 2, 1, 5][..], b"alice", &[5], b"wrong"].concat();
    assert_eq!(exchange(p, &wrong).await, [5, 2, 1, 1]);
    // Right password, then a working flow.
    let mut s = TcpStream::connect(p).await.unwrap();
    let right = [&[5u8, 2, 0, 2, 1, 5][..], b"alice", &[6], b"s3cret"].concat();
    s.write_all(&right).await.unwrap();
    let mut m = [0u8; 4];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 2, 1, 0]);
    s.write_all(&connect_request(&SocksAddr::Ip(echo)))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await.code, ReplyCode::Succeeded);
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(proxy.server.stats().auth_failures, 2);

    let web = http_server().await;
    if !curl_available() {
        return;
    }
    let url = format!("http://web.cluster:{}/", web.port());
    let sp = proxy.addr.to_string();
    let (code, out) = curl(&["--socks5-hostname", &sp, "-U", "alice:s3cret", &url]).await;
    assert_eq!(code, 0, "{out}");
    let (code, _) = curl(&["--socks5-hostname", &sp, "-U", "alice:nope", &url]).await;
    assert_ne!(code, 0);
}

#[tokio::test]
async fn http_auth_required_wrong_and_right() {
    let proxy = start(with_auth()).await;
    let web = http_server().await;
    let url = format!("http://web.cluster:{}/", web.port());
    let resp = via_http_proxy(proxy.addr, get(&url)).await;
    assert_eq!(resp.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(
        resp.headers()["proxy-authenticate"],
        "Basic realm=\"kubelan\""
    );
    let wrong = Request::get(&url)
        .header("proxy-authorization", "Basic YWxpY2U6bm9wZQ==")
        .body(Empty::new())
        .unwrap();
    let resp = via_http_proxy(proxy.addr, wrong).await;
    assert_eq!(resp.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    let right = Request::get(&url)
        .header("proxy-authorization", "Basic YWxpY2U6czNjcmV0")
        .body(Empty::new())
        .unwrap();
    let resp = via_http_proxy(proxy.addr, right).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The credentials stop at the proxy.
    assert!(
        resp.body().contains("proxy-headers=false"),
        "{}",
        resp.body()
    );

    if !curl_available() {
        return;
    }
    let p = format!("http://{}", proxy.addr);
    let (code, out) = curl(&["-x", &p, "--proxy-user", "alice:s3cret", &url]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("\n200"), "{out}");
    let (_, out) = curl(&["-x", &p, "--proxy-user", "alice:nope", &url]).await;
    assert!(out.ends_with("\n407"), "{out}");
}

#[tokio::test]
async fn udp_associate_round_trip() {
    let proxy = start(ProxyConfig::default()).await;
    let echo = udp_echo_server().await;
    let (mut ctl, reply) = socks_session(proxy.addr, &[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let SocksAddr::Ip(relay) = reply.bound else {
        panic!("relay address is not an IP: {reply:?}");
    };
    assert_eq!(relay.ip(), proxy.addr.ip());
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 65_536];
    // By address and by name: the reply header repeats the destination as written.
    for (dest, payload) in [
        (SocksAddr::Ip(echo), &b"by address"[..]),
        (name("dns.cluster", echo.port()), b"by name"),
    ] {
        let mut d = Vec::new();
        socks5::encode_udp_header(&dest, &mut d);
        d.extend_from_slice(payload);
        client.send_to(&d, relay).await.unwrap();
        let (n, from) = timeout(T, client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, relay);
        assert_eq!(&buf[..n], &d[..]);
    }
    // Fragments are dropped.
    let mut frag = vec![0, 0, 1];
    SocksAddr::Ip(echo).encode(&mut frag);
    frag.extend_from_slice(b"fragment");
    client.send_to(&frag, relay).await.unwrap();
    // A second socket of the same host is not the client (the port is pinned).
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut d = Vec::new();
    socks5::encode_udp_header(&SocksAddr::Ip(echo), &mut d);
    d.extend_from_slice(b"stranger");
    other.send_to(&d, relay).await.unwrap();
    let quiet = Duration::from_millis(300);
    assert!(timeout(quiet, client.recv_from(&mut buf)).await.is_err());
    assert!(timeout(quiet, other.recv_from(&mut buf)).await.is_err());
    let stats = proxy.server.stats();
    assert_eq!((stats.flows_open, stats.flows_total), (2, 2), "{stats}");

    // Closing the control connection ends the association and its flows.
    ctl.shutdown().await.unwrap();
    drop(ctl);
    for _ in 0..100 {
        if proxy.server.stats().flows_open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.server.stats().flows_open, 0);
    let mut d = Vec::new();
    socks5::encode_udp_header(&SocksAddr::Ip(echo), &mut d);
    client.send_to(&d, relay).await.unwrap();
    assert!(timeout(quiet, client.recv_from(&mut buf)).await.is_err());
}

#[tokio::test]
async fn other_flows_continue_while_a_client_sends_garbage() {
    let proxy = start(ProxyConfig::default()).await;
    let echo = echo_server().await;
    let p = proxy.addr;
    let garbage = async {
        for i in 0..20u8 {
            let mut s = TcpStream::connect(p).await.unwrap();
            let junk: Vec<u8> = (0..4096u32)
                .map(|j| (j as u8).wrapping_mul(31) ^ i)
                .collect();
            let first = [5u8, 0x05, b'G', 0x00][usize::from(i % 4)];
            let _ = s.write_all(&[first]).await;
            let _ = s.write_all(&junk).await;
            let _ = read_until_close(&mut s).await;
        }
    };
    // A client that connects and says nothing stays parked without harm.
    let _idle = TcpStream::connect(p).await.unwrap();
    let transfer = async {
        let (mut s, reply) = socks_session(p, &connect_request(&SocksAddr::Ip(echo))).await;
        assert_eq!(reply.code, ReplyCode::Succeeded);
        let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut back = Vec::with_capacity(data.len());
        let recv = r.read_to_end(&mut back);
        let (_, n) = tokio::join!(send, recv);
        assert_eq!(n.unwrap(), data.len());
        assert!(back == data, "echoed bytes differ");
    };
    timeout(T, async { tokio::join!(garbage, transfer) })
        .await
        .unwrap();
}

#[tokio::test]
async fn silent_clients_time_out_and_the_client_cap_holds() {
    let mut config = ProxyConfig::default();
    config.handshake_timeout = Duration::from_millis(300);
    config.max_clients = 2;
    let proxy = start(config).await;
    let mut a = TcpStream::connect(proxy.addr).await.unwrap();
    // A partial greeting is no better than silence.
    let mut b = TcpStream::connect(proxy.addr).await.unwrap();
    b.write_all(&[5]).await.unwrap();
    for _ in 0..100 {
        if proxy.server.stats().clients == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Over the cap: closed at once.
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(read_until_close(&mut c).await, b"");
    assert_eq!(proxy.server.stats().rejected_clients, 1);
    let started = tokio::time::Instant::now();
    assert_eq!(read_until_close(&mut a).await, b"");
    assert_eq!(read_until_close(&mut b).await, b"");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(proxy.server.stats().bad_clients, 2);
}

#[tokio::test]
async fn shutdown_closes_clients_and_returns() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(kubelan_proxy::serve(
        listener,
        Arc::new(LocalConnector::default()),
        ProxyConfig::default(),
        stop.clone(),
    ));
    let echo = echo_server().await;
    let (mut s, reply) = socks_session(addr, &connect_request(&SocksAddr::Ip(echo))).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    stop.cancel();
    timeout(T, serving).await.unwrap().unwrap();
    // The flow was cut by the stop, not ended by its target: a reset, not a clean end.
    let end = timeout(T, s.read(&mut [0u8; 16])).await.unwrap();
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

/// Reads until the end of stream or an error: the bytes, and the error if there was one.
async fn read_to_end_or_error(s: &mut TcpStream) -> (usize, Option<std::io::ErrorKind>) {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match timeout(T, s.read(&mut buf))
            .await
            .expect("neither end nor error")
        {
            Ok(0) => return (total, None),
            Ok(n) => total += n,
            Err(e) => return (total, Some(e.kind())),
        }
    }
}

/// A read that ended in a reset, after at most the bytes before the cut (the reset
/// discards what the proxy's socket still had queued).
fn assert_cut((bytes, end): (usize, Option<std::io::ErrorKind>), what: &str) {
    assert_eq!(
        end,
        Some(std::io::ErrorKind::ConnectionReset),
        "{what}: a clean end of stream after {bytes} bytes"
    );
    assert!(bytes <= CUT_AFTER, "{what}: {bytes} bytes");
}

/// A flow cut mid-stream (the tunnel died) reaches the client as a reset, through SOCKS5
/// and HTTP CONNECT: never as a clean end of stream, which a close-delimited download
/// would take for its end.
#[tokio::test]
async fn a_cut_flow_resets_the_client() {
    let proxy = start(ProxyConfig::default()).await;
    let (mut s, reply) = socks_session(proxy.addr, &connect_request(&name(CUT_HOST, 1))).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    assert_cut(read_to_end_or_error(&mut s).await, "SOCKS5");

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!("CONNECT {CUT_HOST}:1 HTTP/1.1\r\nHost: {CUT_HOST}:1\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        timeout(T, s.read_exact(&mut b)).await.unwrap().unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_cut(read_to_end_or_error(&mut s).await, "HTTP CONNECT");

    // A flow that ends cleanly still ends with a FIN after all its bytes.
    let echo = echo_server().await;
    let (mut s, reply) = socks_session(proxy.addr, &connect_request(&SocksAddr::Ip(echo))).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    s.write_all(b"bye").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_end_or_error(&mut s).await, (3, None));
}

/// A connection to the proxy from the loopback address `from` (the limiter tells
/// sources apart by address; all of 127/8 is local on Linux).
async fn connect_from(proxy: SocketAddr, from: std::net::IpAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(proxy).await
}

/// A SOCKS5 username/password login from `from`: `Some(true)` accepted, `Some(false)`
/// answered `01 01`, `None` closed without an answer (refused at accept). An accepted
/// login goes on to a CONNECT to `echo`, which must echo.
async fn socks_login(
    proxy: SocketAddr,
    from: std::net::IpAddr,
    pass: &str,
    echo: SocketAddr,
) -> Option<bool> {
    let mut s = connect_from(proxy, from).await.ok()?;
    let hello = [
        &[5u8, 1, 2, 1, 5][..],
        b"alice",
        &[pass.len() as u8],
        pass.as_bytes(),
    ]
    .concat();
    s.write_all(&hello).await.ok()?;
    let mut m = [0u8; 4];
    timeout(T, s.read_exact(&mut m))
        .await
        .expect("the proxy answers or closes")
        .ok()?;
    assert_eq!(m[..3], [5, 2, 1]);
    if m[3] != 0 {
        return Some(false);
    }
    s.write_all(&connect_request(&SocksAddr::Ip(echo)))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await.code, ReplyCode::Succeeded);
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    Some(true)
}

/// One HTTP proxy request from `from` with `Proxy-Authorization: Basic b64`; `None`
/// when the proxy closed without answering.
async fn http_login(
    proxy: SocketAddr,
    from: std::net::IpAddr,
    basic: &str,
    url: &str,
) -> Option<Response<String>> {
    let s = connect_from(proxy, from).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(url)
        .header("proxy-authorization", format!("Basic {basic}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = timeout(T, sender.send_request(req)).await.unwrap().ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Response::from_parts(
        parts,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

#[tokio::test]
async fn socks5_without_a_common_method_gets_ff() {
    // No credentials configured, the client offers only username/password.
    let open = start(ProxyConfig::default()).await;
    assert_eq!(exchange(open.addr, &[5, 1, 2]).await, [5, 0xFF]);
    // Credentials configured, the client offers only no-auth (and GSSAPI).
    let closed = start(with_auth()).await;
    assert_eq!(exchange(closed.addr, &[5, 2, 0, 1]).await, [5, 0xFF]);
    // Neither counts as a guess: the same source still has all its free failures.
    let echo = echo_server().await;
    let lo = std::net::IpAddr::from([127, 0, 0, 1]);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        assert_eq!(
            socks_login(closed.addr, lo, "wrong", echo).await,
            Some(false)
        );
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "a free failure was held"
        );
    }
}

#[tokio::test]
async fn failed_logins_are_throttled_per_source_and_others_keep_working() {
    let mut config = with_auth();
    let limits = &mut config.login_limits;
    limits.first_delay = Duration::from_millis(100);
    limits.max_delay = Duration::from_millis(200);
    limits.lockout_after = 6;
    limits.lockout = Duration::from_secs(60);
    let proxy = start(config).await;
    let (p, echo) = (proxy.addr, echo_server().await);
    let attacker = std::net::IpAddr::from([127, 0, 0, 1]);
    let user = std::net::IpAddr::from([127, 0, 0, 2]);

    // 300 wrong passwords, one after the other as a guessing script sends them, with a
    // right login from another address every tenth attempt.
    let started = std::time::Instant::now();
    let (mut answered, mut refused, mut held) = (0, 0, Duration::ZERO);
    for i in 0..300 {
        let t = std::time::Instant::now();
        match socks_login(p, attacker, &format!("guess{i}"), echo).await {
            Some(false) => answered += 1,
            None => refused += 1,
            Some(true) => panic!("a wrong password was accepted"),
        }
        if i == 3 {
            held = t.elapsed();
        }
        if i % 10 == 0 {
            assert_eq!(
                socks_login(p, user, "s3cret", echo).await,
                Some(true),
                "the right client failed during the attack (attempt {i})"
            );
        }
    }
    let took = started.elapsed();
    eprintln!("300 wrong SOCKS5 passwords: {answered} answered, {refused} refused, {took:?}");
    // Three free failures, then held answers (100, 200, 200 ms), then the sixth failure
    // locks the source out: everything after it is closed at accept, unevaluated.
    assert!(
        held >= Duration::from_millis(100),
        "4th failure answered after {held:?}"
    );
    assert_eq!(answered, 6, "{answered} answered");
    assert_eq!(refused, 294);
    let stats = proxy.server.stats();
    assert_eq!(stats.auth_failures, 6, "{stats}");
    assert!(stats.throttled >= 294, "{stats}");

    // HTTP goes through the same limiter: the locked source gets nothing, right
    // password or not; another source is throttled on its own and gets 407s.
    let web = http_server().await;
    let url = format!("http://web.cluster:{}/", web.port());
    assert!(
        http_login(p, attacker, "YWxpY2U6czNjcmV0", &url)
            .await
            .is_none(),
        "a locked-out source was served over HTTP"
    );
    let other = std::net::IpAddr::from([127, 0, 0, 3]);
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(match http_login(p, other, "YWxpY2U6bm9wZQ==", &url).await {
            Some(r) => {
                if r.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
                    assert_eq!(r.headers()["proxy-authenticate"], "Basic realm=\"kubelan\"");
                }
                r.status().as_u16()
            }
            None => 0,
        });
    }
    assert_eq!(codes, [407, 407, 407, 407, 407, 407, 0, 0, 0, 0]);
    let resp = http_login(p, user, "YWxpY2U6czNjcmV0", &url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn http_failures_are_held_and_block_the_source_meanwhile() {
    let mut config = with_auth();
    config.login_limits.first_delay = Duration::from_millis(500);
    let proxy = start(config).await;
    let web = http_server().await;
    let url = format!("http://web.cluster:{}/", web.port());
    let request = |basic: &str| {
        Request::get(&url)
            .header("proxy-authorization", format!("Basic {basic}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let open = || async {
        let s = TcpStream::connect(proxy.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    };
    let (mut a, mut b) = (open().await, open().await);
    // Three free failures on one keep-alive connection, answered at once.
    for _ in 0..3 {
        let resp = a.send_request(request("YWxpY2U6bm9wZQ==")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    }
    // The fourth is held; meanwhile the source is blocked, even with the right password
    // on a connection it opened before: 429, and the connection is closed.
    let t = std::time::Instant::now();
    let fourth = tokio::spawn(a.send_request(request("YWxpY2U6bm9wZQ==")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = b.send_request(request("YWxpY2U6czNjcmV0")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["connection"], "close");
    let resp = fourth.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "the fourth failure was answered after {:?}",
        t.elapsed()
    );
    // Once the delay is over the right password works again.
    let resp = via_http_proxy(
        proxy.addr,
        Request::get(&url)
            .header("proxy-authorization", "Basic YWxpY2U6czNjcmV0")
            .body(Empty::new())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}
