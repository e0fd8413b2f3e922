//! End-to-end test of issue 17 item 7 on the lab: `connect` and `proxy` on the laptop
//! reconnect without the control plane (the API server frozen by SIGSTOP while the
//! laptop's link is cut for 6 s), and a session pushed onto the port-forward carrier moves
//! back to the direct carrier once it answers. Also item 9: each state change is printed
//! once, and stopping is not a reconnect. Needs root; CI runs it with
//! `KUBELAN_E2E_REQUIRED=1`.

use std::time::{Duration, Instant};

use kubelan_testkit::{
    Background, Cluster, Lab, curl, lab_available, root_snapshot, signal, wait_for,
};

/// The lab daemon (which runs the API server) stopped with SIGSTOP; SIGCONT when dropped,
/// on every exit path (also a panic), before the lab guard brings the lab down.
struct Frozen(u32);

impl Frozen {
    fn api_server(lab: &Lab) -> Frozen {
        let runtime =
            std::fs::read_to_string(format!("/run/kubelan/labs/{}/runtime.json", lab.name))
                .expect("the lab's runtime.json");
        let v: serde_json::Value = serde_json::from_str(&runtime).expect("runtime.json");
        let pid = u32::try_from(v["daemon_pid"].as_u64().expect("daemon_pid")).unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.contains("lab") && cmdline.contains("daemon"),
            "pid {pid} is not the lab daemon: {cmdline}"
        );
        // The guard exists before the signal, so a failure in between still continues it.
        let frozen = Frozen(pid);
        signal(pid, "STOP");
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// Whether `argv` on the laptop prints something containing `want`, within a short time.
fn laptop_shows(lab: &Lab, argv: &[&str], want: &str) -> bool {
    let out = lab.exec("laptop", argv);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(want)
}

/// Waits (bounded) until `ok` holds; how long that took.
fn time_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    wait_for(what, secs, || ok().then_some(()));
    t.elapsed()
}

/// Lines a session printed about its state, for the "once" checks.
fn state_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("connected via") || l.contains("reconnecting"))
        .collect()
}

#[test]
fn reconnects_without_the_control_plane_and_back_to_direct() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("rc", &[]);
    let cluster = Cluster::new(&lab);
    lab.exec_ok("laptop", &["kubelan", "install"]);
    let web_svc = cluster.svc_ip("web");
    let node_port = cluster
        .service("kubelan-system", "kubelan-agent")
        .spec
        .and_then(|s| s.ports?.first()?.node_port)
        .expect("the agent's NodePort");

    // Both run on the laptop, where connect routes the pod network into its TUN: the
    // proxy's direct carrier could then reach the agent's pod IP through connect's own
    // carrier. Not the path this test measures, so the laptop drops that (until the end).
    let _no_nesting = Block::add(&lab, "klnest", "ip daddr 172.17.32.0/19 tcp dport 7443");
    let proxy = Background::start(
        &lab,
        "laptop",
        "proxy",
        600,
        "kubelan proxy --listen 127.0.0.1:1080",
    );
    let conn = Background::start(&lab, "laptop", "connect", 600, "kubelan connect");
    proxy.wait_log("✓ connected via direct mTLS", 30);
    conn.wait_log("✓ connected via direct mTLS", 30);
    let socks = ["--socks5-hostname", "127.0.0.1:1080"];
    let via_proxy = |url: &str| {
        let mut args = socks.to_vec();
        args.extend(["-m", "3", url]);
        curl(&lab, &args).0
    };
    let dig = [
        "dig",
        "+short",
        "+time=2",
        "+tries=1",
        "@172.17.16.10",
        "web.default.svc.cluster.local",
    ];
    assert!(via_proxy("http://web.default.svc.cluster.local/"));
    assert!(curl(&lab, &["http://web/"]).0);
    assert!(laptop_shows(&lab, &dig, &web_svc));

    // Control plane down: the API server frozen (accepts TCP, never answers), then the
    // laptop's link cut for 6 s.
    {
        let _frozen = Frozen::api_server(&lab);
        proxy.clear_log();
        conn.clear_log();
        let cut = Instant::now();
        lab.exec_ok("edge-router", &["ip", "link", "set", "eth1", "down"]);
        proxy.wait_log("… reconnecting", 10);
        conn.wait_log("… reconnecting", 10);
        std::thread::sleep(Duration::from_secs(6).saturating_sub(cut.elapsed()));
        lab.exec_ok("edge-router", &["ip", "link", "set", "eth1", "up"]);
        let [proxy_back, conn_back] =
            logged_after(&[&proxy, &conn], "✓ connected via direct mTLS", 20);
        let names = time_until("names through the proxy", 10, || {
            via_proxy("http://web.default.svc.cluster.local/")
        });
        let dns = time_until("cluster DNS through connect", 10, || {
            laptop_shows(&lab, &dig, &web_svc)
        });
        assert!(curl(&lab, &["-m", "3", "http://web/"]).0);
        eprintln!(
            "API frozen, link cut 6 s: proxy on direct {proxy_back:.2} s and connect on direct \
             {conn_back:.2} s after the link returned; then names via proxy {:.2} s and \
             cluster DNS via connect {:.2} s later",
            names.as_secs_f64(),
            dns.as_secs_f64()
        );
        assert!(proxy_back < 5.0, "proxy took {proxy_back:.2} s");
        assert!(conn_back < 5.0, "connect took {conn_back:.2} s");
        for (name, log) in [("proxy", proxy.log()), ("connect", conn.log())] {
            assert!(
                !log.contains("connected via API-server"),
                "{name} reconnected over the direct carrier: {log}"
            );
        }
    }

    // Forced fall-back: only the direct carrier's port (the NodePort) blocked on the
    // laptop, so the sessions move to the port-forward carrier; unblocked, they come back.
    proxy.clear_log();
    conn.clear_log();
    let unblock = Block::add(&lab, "kltest", &format!("tcp dport {node_port}"));
    proxy.wait_log("✓ connected via API-server port-forward", 40);
    conn.wait_log("✓ connected via API-server port-forward", 40);
    assert!(via_proxy("http://web/"), "through the port-forward carrier");
    assert!(curl(&lab, &["-m", "3", "http://web/"]).0);
    // Long enough on port-forward for the probes of direct to reach their longest
    // interval (5 s, 10 s, then 15 s), so the time back is not a lucky early probe.
    std::thread::sleep(Duration::from_secs(20));
    // A download running on the port-forward carrier while the session moves back.
    let long = Background::start(
        &lab,
        "laptop",
        "download",
        120,
        "curl -sS -o /dev/null -w 'download %{http_code} %{size_download}\\n' --limit-rate 2M http://web/bytes/60000000",
    );
    std::thread::sleep(Duration::from_millis(500));
    proxy.clear_log();
    conn.clear_log();
    drop(unblock);
    let [proxy_direct, conn_direct] =
        logged_after(&[&proxy, &conn], "✓ connected via direct mTLS", 35);
    eprintln!(
        "back on direct {proxy_direct:.2} s (proxy) and {conn_direct:.2} s (connect) after the direct port answered again"
    );
    assert!(proxy_direct < 30.0, "proxy took {proxy_direct:.2} s");
    assert!(conn_direct < 30.0, "connect took {conn_direct:.2} s");
    let st: serde_json::Value =
        serde_json::from_str(&lab.exec_ok("laptop", &["kubelan", "status", "--output", "json"]))
            .unwrap();
    assert!(st["carriers"].to_string().contains("direct mTLS"), "{st}");
    assert!(via_proxy("http://web/"));
    // The download that started on the port-forward carrier finishes there, whole.
    let mut long = long;
    long.wait_exit(60);
    assert!(
        long.log().contains("download 200 60000000"),
        "download across the move: {}",
        long.log()
    );

    // Item 9: each state change once, its reason once, and stopping is not a reconnect.
    for (name, log) in [("proxy", proxy.log()), ("connect", conn.log())] {
        assert!(
            !log.contains("carrier down"),
            "{name}: a log line repeats the state: {log}"
        );
        for line in state_lines(&log) {
            assert!(line.matches("reconnecting").count() <= 1, "{name}: {line}");
        }
    }
    let before_quit = conn.log().len();
    lab.exec_ok("laptop", &["kubelan", "quit"]);
    let mut conn = conn;
    conn.wait_exit(20);
    let tail = conn.log()[before_quit..].to_string();
    assert!(!tail.contains("reconnecting"), "quit printed: {tail}");
    let before_stop = proxy.log().len();
    signal(proxy.command_pid(), "TERM");
    let mut proxy = proxy;
    proxy.wait_exit(20);
    let tail = proxy.log()[before_stop..].to_string();
    assert!(tail.contains("proxy stopped"), "{tail}");
    assert!(!tail.contains("reconnecting"), "stopping printed: {tail}");

    lab.down();
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
}

/// Packets the laptop sends that match an nft expression, dropped (in a table of the
/// test's own, inside the lab's laptop namespace) until this is dropped, also on a panic.
struct Block<'a>(&'a Lab, &'static str);

impl<'a> Block<'a> {
    /// Drops the laptop's outgoing packets `matching`, before dstnat (-100), where
    /// connect redirects TCP into the cluster to its own listener and the port changes.
    fn add(lab: &'a Lab, table: &'static str, matching: &str) -> Block<'a> {
        let block = Block(lab, table);
        lab.exec_ok(
            "laptop",
            &[
                "sh",
                "-c",
                &format!(
                    "nft add table inet {table} && \
                     nft add chain inet {table} out '{{ type filter hook output priority -250; }}' && \
                     nft add rule inet {table} out {matching} drop"
                ),
            ],
        );
        block
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .exec("laptop", &["nft", "delete", "table", "inet", self.1]);
    }
}

/// Seconds from now until each session's log contains `needle` (polled every 100 ms;
/// bounded by `secs`).
fn logged_after<const N: usize>(bgs: &[&Background; N], needle: &str, secs: u64) -> [f64; N] {
    let start = Instant::now();
    let mut at = [None; N];
    wait_for(&format!("{needle:?} from every session"), secs, || {
        for (i, bg) in bgs.iter().enumerate() {
            if at[i].is_none() && bg.log().contains(needle) {
                at[i] = Some(start.elapsed().as_secs_f64());
            }
        }
        at.iter().all(Option::is_some).then_some(())
    });
    at.map(|t| t.expect("seen"))
}
