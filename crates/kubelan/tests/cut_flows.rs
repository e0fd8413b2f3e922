//! End-to-end test of issue 17, item 1, on the lab: a cut flow is a reset, everywhere.
//!
//! A pod serves a 100 MB close-delimited stream (socat: writes the file, then closes).
//! Without faults it arrives byte-exact through `proxy` (SOCKS5), `connect`,
//! `gateway --mode tunnel` (from the office PC pc1) and `forward`. Then the agent pod is
//! deleted while paced clients of the first three are mid-stream, and the stream pod
//! while a client of `forward` is: every client reads a prefix of the stream and then
//! `ECONNRESET`, never a clean end of stream. The clients are small readers in this
//! process, on the lab hosts' network namespaces (a SOCKS5 client for the proxy); each
//! compares what it reads with the file as it goes. Needs root; CI runs it with
//! `KUBELAN_E2E_REQUIRED=1`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kubelan_testkit::{Background, Cluster, Lab, lab_available, on_host, root_snapshot, wait_for};

/// Length of the stream the pod serves.
const STREAM_LEN: usize = 100_000_000;
/// Its port.
const STREAM_PORT: u16 = 9000;
/// The paced clients' rate: slow enough that a cut always comes mid-stream (even after an
/// agent's whole 5 s drain: 6 s × 8 MB/s is half the stream), fast enough to take seconds.
const PACE: usize = 8_000_000;
/// Bytes a paced client has read when the fault is injected.
const FAULT_AFTER: usize = 2_000_000;
/// How long a read may wait before the client gives up (a hang is a failure too).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const PROXY_PORT: u16 = 1080;
const LAN: &str = "172.16.0.0/18";
const PC2: &str = "172.16.1.12";

/// The stream: deterministic, not repeating within 100 MB.
fn stream_data() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(STREAM_LEN + 8);
    while out.len() < STREAM_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(STREAM_LEN);
    out
}

/// The stream's file on this machine (pods mount its directory through hostPath), removed
/// when dropped.
struct StreamFile {
    dir: PathBuf,
}

impl StreamFile {
    fn write(lab: &Lab, data: &[u8]) -> StreamFile {
        let dir = std::env::temp_dir().join(format!("kubelan-cut-{}", lab.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stream.bin"), data).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (p, mode) in [(dir.clone(), 0o755), (dir.join("stream.bin"), 0o644)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        StreamFile { dir }
    }
}

impl Drop for StreamFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the pod `stream` serving the file: `socat -U` writes it to each connection and
/// closes, and never reads from the connection. Returns the pod's IP.
fn stream_pod(cluster: &Cluster, file: &StreamFile) -> String {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "stream", "labels": {"app": "stream"}},
        "spec": {
            "containers": [{
                "name": "socat", "image": "alpine/socat",
                "command": ["socat", "-U", format!("TCP-LISTEN:{STREAM_PORT},reuseaddr,fork"),
                            "OPEN:/tmp/stream/stream.bin,rdonly"],
                "ports": [{"containerPort": STREAM_PORT}],
                "volumeMounts": [{"name": "stream", "mountPath": "/tmp/stream", "readOnly": true}],
            }],
            "volumes": [{"name": "stream", "hostPath": {"path": file.dir.to_str().unwrap()}}],
        }
    }))
    .unwrap();
    cluster
        .rt
        .block_on(pods.create(&PostParams::default(), &pod))
        .unwrap();
    wait_for("the stream pod to run", 60, || {
        let p = cluster.rt.block_on(pods.get("stream")).ok()?;
        let st = p.status?;
        (st.phase.as_deref() == Some("Running")).then_some(())?;
        st.pod_ip
    })
}

fn agent_pod(cluster: &Cluster) -> String {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "kubelan-system");
    let sel = ListParams::default().labels("app.kubernetes.io/name=kubelan-agent");
    cluster.rt.block_on(pods.list(&sel)).unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap()
}

/// One way a client reaches the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// SOCKS5 through `kubelan proxy` on the laptop.
    Proxy,
    /// The pod IP from the laptop, through `kubelan connect`'s TUN.
    Connect,
    /// The pod IP from pc1, routed by the office router to the tunnel gateway on pc2.
    Tunnel,
    /// 127.0.0.1:9000 on the laptop, `kubelan forward pod/stream`.
    Forward,
}

impl Mode {
    fn host(self) -> &'static str {
        match self {
            Mode::Tunnel => "pc1",
            _ => "laptop",
        }
    }

    /// Connects to the stream in this mode (on the client's host).
    fn open(self, pod_ip: &str) -> std::io::Result<TcpStream> {
        let pod: SocketAddr = format!("{pod_ip}:{STREAM_PORT}").parse().unwrap();
        let s = match self {
            Mode::Proxy => socks5_connect(SocketAddr::from(([127, 0, 0, 1], PROXY_PORT)), pod)?,
            Mode::Connect | Mode::Tunnel => TcpStream::connect_timeout(&pod, READ_TIMEOUT)?,
            Mode::Forward => TcpStream::connect(("127.0.0.1", STREAM_PORT))?,
        };
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(s)
    }
}

/// A SOCKS5 CONNECT (no authentication) to `dst` through the proxy at `proxy`.
fn socks5_connect(proxy: SocketAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.write_all(&[5, 1, 0])?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method)?;
    assert_eq!(method, [5, 0], "SOCKS5 method");
    let SocketAddr::V4(d) = dst else {
        panic!("IPv4 only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&d.ip().octets());
    req.extend_from_slice(&d.port().to_be_bytes());
    s.write_all(&req)?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply)?;
    assert_eq!(reply[..2], [5, 0], "SOCKS5 CONNECT refused: {reply:?}");
    Ok(s)
}

/// What a client got.
#[derive(Debug)]
struct Outcome {
    mode: Mode,
    /// Bytes read.
    bytes: usize,
    /// Every byte read was the stream's byte at that offset.
    exact: bool,
    /// How the stream ended: `Ok` at a clean end of stream, else the error's kind.
    end: Result<(), std::io::ErrorKind>,
    took: Duration,
}

/// Reads the stream in `mode` on its host until its end or an error, at most `pace`
/// bytes per second, comparing as it goes; `read` counts the bytes for the caller. With
/// `poke` it first sends one byte, which the stream server never reads.
fn fetch(
    lab: &Lab,
    mode: Mode,
    pod_ip: &str,
    data: &Arc<Vec<u8>>,
    pace: Option<usize>,
    poke: bool,
    read: &Arc<AtomicUsize>,
) -> Outcome {
    let (pod_ip, data, read) = (pod_ip.to_string(), data.clone(), read.clone());
    on_host(lab, mode.host(), move || {
        let started = Instant::now();
        let mut s = mode
            .open(&pod_ip)
            .unwrap_or_else(|e| panic!("{mode:?}: cannot connect: {e}"));
        if poke {
            s.write_all(b"!").unwrap();
        }
        let mut buf = vec![0u8; 64 * 1024];
        let (mut bytes, mut exact) = (0usize, true);
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    let want = data.get(bytes..bytes + n);
                    exact &= want == Some(&buf[..n]);
                    bytes += n;
                    read.store(bytes, Ordering::Relaxed);
                    if let Some(rate) = pace {
                        let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                Err(e) => break Err(e.kind()),
            }
        };
        Outcome {
            mode,
            bytes,
            exact,
            end,
            took: started.elapsed(),
        }
    })
}

/// Clients of `modes` at the pace, all at once; once each has read [`FAULT_AFTER`] bytes,
/// `fault` runs. Returns what each got.
fn cut_mid_stream(
    lab: &Lab,
    modes: &[Mode],
    pod_ip: &str,
    data: &Arc<Vec<u8>>,
    poke: bool,
    fault: impl FnOnce(),
) -> Vec<Outcome> {
    std::thread::scope(|scope| {
        let clients: Vec<_> = modes
            .iter()
            .map(|&mode| {
                let read = Arc::new(AtomicUsize::new(0));
                let counter = read.clone();
                let handle =
                    scope.spawn(move || fetch(lab, mode, pod_ip, data, Some(PACE), poke, &counter));
                (read, handle)
            })
            .collect();
        wait_for("every paced client to be mid-stream", 30, || {
            clients
                .iter()
                .all(|(read, h)| read.load(Ordering::Relaxed) >= FAULT_AFTER || h.is_finished())
                .then_some(())
        });
        fault();
        clients
            .into_iter()
            .map(|(_, h)| h.join().expect("client thread"))
            .collect()
    })
}

/// Why a client that was cut did not get what it should: a prefix of the stream, then a
/// reset. `None` when it did.
fn cut_problem(o: &Outcome) -> Option<String> {
    eprintln!(
        "{:?} cut: {} bytes in {:.1} s, then {:?}",
        o.mode,
        o.bytes,
        o.took.as_secs_f64(),
        o.end
    );
    if o.end != Err(std::io::ErrorKind::ConnectionReset) {
        return Some(format!(
            "{:?}: the cut stream ended with {:?} after {} of {STREAM_LEN} bytes, not a reset",
            o.mode, o.end, o.bytes
        ));
    }
    if o.bytes < FAULT_AFTER || o.bytes >= STREAM_LEN {
        return Some(format!(
            "{:?}: {} bytes: the cut did not come mid-stream",
            o.mode, o.bytes
        ));
    }
    (!o.exact).then(|| format!("{:?}: what arrived is not the stream's start", o.mode))
}

#[test]
fn cut_flows_are_resets_in_every_mode() {
    if !lab_available() {
        return;
    }
    let started = Instant::now();
    let root_before = root_snapshot();
    let lab = Lab::up("cut", &[]);
    let cluster = Cluster::new(&lab);
    let data = Arc::new(stream_data());
    let file = StreamFile::write(&lab, &data);
    lab.exec_ok("laptop", &["kubelan", "install"]);
    let pod_ip = stream_pod(&cluster, &file);

    let proxy = Background::start(
        &lab,
        "laptop",
        "proxy",
        600,
        &format!("kubelan proxy --listen 127.0.0.1:{PROXY_PORT}"),
    );
    let connect = Background::start(&lab, "laptop", "connect", 600, "kubelan connect");
    lab.route_office_to(PC2);
    let gateway = Background::start(
        &lab,
        "pc2",
        "gw-tunnel",
        600,
        &format!("kubelan gateway --mode tunnel --lan {LAN}"),
    );
    let forward = Background::start(
        &lab,
        "laptop",
        "forward",
        600,
        &format!("kubelan forward pod/stream {STREAM_PORT}:{STREAM_PORT} -o json"),
    );
    proxy.wait_log("connected via", 60);
    connect.wait_log("✓ connected via", 60);
    gateway.wait_log("gateway ready", 60);
    gateway.wait_log("✓ connected via", 60);
    forward.wait_log("\"event\":\"ready\"", 60);
    eprintln!(
        "lab, agent, stream pod and the four modes up after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Without faults: the whole stream, byte-exact, then a clean end, in every mode.
    let none = Arc::new(AtomicUsize::new(0));
    for mode in [Mode::Proxy, Mode::Connect, Mode::Tunnel, Mode::Forward] {
        let o = fetch(&lab, mode, &pod_ip, &data, None, false, &none);
        eprintln!(
            "{mode:?}: {} bytes in {:.2} s ({:.0} MB/s), {:?}",
            o.bytes,
            o.took.as_secs_f64(),
            o.bytes as f64 / o.took.as_secs_f64() / 1e6,
            o.end
        );
        assert_eq!(o.end, Ok(()), "{mode:?}: the stream did not end cleanly");
        assert_eq!(o.bytes, STREAM_LEN, "{mode:?}: length");
        assert!(o.exact, "{mode:?}: content differs");
    }

    // The agent pod is deleted mid-stream: proxy, connect and the tunnel gateway reset
    // their clients.
    let agent = agent_pod(&cluster);
    let cut = cut_mid_stream(
        &lab,
        &[Mode::Proxy, Mode::Connect, Mode::Tunnel],
        &pod_ip,
        &data,
        false,
        || cluster.delete_pod("kubelan-system", &agent),
    );
    let mut problems: Vec<String> = cut.iter().filter_map(cut_problem).collect();

    // The stream pod is deleted mid-stream: forward resets its client. The client sends
    // one byte the server never reads, so the server's death resets its connection (the
    // kernel does that for a socket closed with unread input); a server that had read
    // everything would close with a FIN, which no relay can tell from the end of the
    // stream (a direct connection would see the same).
    let cut = cut_mid_stream(&lab, &[Mode::Forward], &pod_ip, &data, true, || {
        cluster.delete_pod("default", "stream")
    });
    problems.extend(cut_problem(&cut[0]));
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        forward.log().to_lowercase().contains("connection reset"),
        "forward reports the cut"
    );

    drop((proxy, connect, gateway, forward));
    drop(cluster);
    lab.down();
    drop(file);
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}
