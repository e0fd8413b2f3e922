//! End-to-end tests of issue 4 on the lab: `kubelan connect` from the laptop (TUN, routes,
//! split DNS), with real clients (curl, dig, getent, ping, iperf3, a UDP socket), faults
//! (agent pod deleted, kill -9), conflicts with a LAN route, a reduced-MTU path, and
//! `status` / `quit` / `reset`. Needs root; CI runs them with `KUBELAN_E2E_REQUIRED=1`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kubelan_testkit::{
    Background, Cluster, Lab, crash_watcher_of, curl, host_snapshot, kill_9_and_time,
    lab_available, on_host, root_snapshot, wait_for,
};

/// `kubelan connect` on the laptop.
fn connect(lab: &Lab, extra: &str) -> Background {
    Background::start(
        lab,
        "laptop",
        "connect",
        600,
        &format!("kubelan connect {extra}"),
    )
}

fn laptop(lab: &Lab, argv: &[&str]) -> String {
    lab.exec_ok("laptop", argv)
}

/// The laptop's routes through kubelan's TUN.
fn tun_routes(lab: &Lab) -> Vec<String> {
    laptop(lab, &["ip", "route"])
        .lines()
        .filter(|l| l.contains("kubelan0"))
        .map(str::to_string)
        .collect()
}

fn web_pod_ips(cluster: &Cluster) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let list = cluster
        .rt
        .block_on(pods.list(&ListParams::default().labels("app=web")))
        .unwrap();
    list.items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect()
}

/// One UDP datagram to `dest` from the laptop; the echo's answer.
fn udp_echo(lab: &Lab, dest: SocketAddr, payload: &'static [u8]) -> Vec<u8> {
    on_host(lab, "laptop", move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for _ in 0..3 {
            s.send_to(payload, dest).unwrap();
            let mut buf = [0u8; 2048];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        panic!("no UDP echo from {dest}");
    })
}

/// One HTTP/1.0 GET on a fresh connection: the status line, or what went wrong.
fn one_get(addr: SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&got);
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.contains(" 200 ") && text.contains("\r\n\r\n") {
        Ok(line)
    } else {
        Err(format!("answer {line:?} ({} bytes)", got.len()))
    }
}

/// `clients` threads each doing `each` sequential GETs on fresh connections; the failures.
fn short_connections(addr: SocketAddr, clients: usize, each: usize) -> Vec<String> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                (0..each)
                    .filter_map(|_| one_get(addr).err())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| {
            t.join()
                .unwrap_or_else(|_| vec!["client thread panicked".into()])
        })
        .collect()
}

fn http_200(lab: &Lab, url: &str) -> String {
    let (good, out) = curl(lab, &["-w", " %{http_code}", url]);
    assert!(good && out.ends_with(" 200"), "{url}: {out}");
    out
}

/// Runs an iperf3 server pod; returns its IP.
fn iperf_pod(cluster: &Cluster) -> String {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "iperf", "labels": {"app": "iperf"}},
        "spec": {"containers": [{
            "name": "iperf", "image": "networkstatic/iperf3",
            "command": ["iperf3", "-s", "-p", "5201"],
        }]}
    }))
    .unwrap();
    cluster
        .rt
        .block_on(pods.create(&PostParams::default(), &pod))
        .unwrap();
    wait_for("the iperf3 pod to run", 60, || {
        let p = cluster.rt.block_on(pods.get("iperf")).ok()?;
        let st = p.status?;
        (st.phase.as_deref() == Some("Running")).then_some(())?;
        st.pod_ip
    })
}

#[test]
fn connect_end_to_end() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("cn", &[]);
    let cluster = Cluster::new(&lab);
    laptop(&lab, &["kubelan", "install"]);
    let resolv_before = laptop(&lab, &["cat", "/etc/resolv.conf"]);
    let laptop_before = host_snapshot(&lab, "laptop");
    let routes_before = laptop(&lab, &["ip", "route"]);
    let wan_before = laptop(&lab, &["getent", "hosts", "www.wan.example"]);
    assert!(wan_before.starts_with("198.51.100.1 "), "{wan_before}");

    // Before connecting, `status` shows what would be routed and why.
    let st = laptop(&lab, &["kubelan", "status"]);
    assert!(st.contains("not connected"), "{st}");
    assert!(st.contains("ServiceCIDR \"kubernetes\""), "{st}");
    assert!(st.contains("spec.podCIDRs of nodes node1, node2"), "{st}");

    // A LAN route that overlaps the pod network: refused, nothing changed, the fix named.
    laptop(
        &lab,
        &[
            "ip",
            "route",
            "add",
            "172.17.33.0/24",
            "via",
            "198.51.100.1",
        ],
    );
    let out = lab.exec("laptop", &["timeout", "60", "kubelan", "connect"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "connect must refuse: {err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(err.contains("--exclude 172.17.33.0/24"), "{err}");
    assert_eq!(laptop(&lab, &["cat", "/etc/resolv.conf"]), resolv_before);
    assert!(tun_routes(&lab).is_empty());
    // With --exclude it proceeds and leaves that part to the LAN.
    let excl = connect(&lab, "--exclude 172.17.33.0/24 --output json");
    excl.wait_log("\"state\":\"connected\"", 30);
    let routes = tun_routes(&lab);
    assert!(
        routes.iter().any(|r| r.starts_with("172.17.32.0/24 ")),
        "{routes:?}"
    );
    assert!(
        !routes.iter().any(|r| r.starts_with("172.17.33.")),
        "{routes:?}"
    );
    laptop(&lab, &["kubelan", "quit"]);
    drop(excl);
    laptop(&lab, &["ip", "route", "del", "172.17.33.0/24"]);
    assert_eq!(laptop(&lab, &["cat", "/etc/resolv.conf"]), resolv_before);
    assert_eq!(laptop(&lab, &["ip", "route"]), routes_before);

    // Connected: every way of naming a Service or Pod works with no proxy settings.
    let conn = connect(&lab, "");
    let took = conn.wait_log("✓ connected via", 30);
    eprintln!("connected in {took:?}");
    let web_svc = cluster.svc_ip("web");
    for ip in web_pod_ips(&cluster) {
        http_200(&lab, &format!("http://{ip}/"));
    }
    for url in [
        format!("http://{web_svc}/"),
        "http://web.default.svc.cluster.local/".into(),
        "http://web.default/".into(),
        "http://web/".into(),
    ] {
        http_200(&lab, &url);
    }
    // A client handed a Pod IP by the server follows it.
    let (good, out) = curl(&lab, &["-L", "-w", " %{url_effective}", "http://web/pod"]);
    assert!(good, "{out}");
    let followed = out.rsplit(' ').next().unwrap_or("");
    assert!(
        web_pod_ips(&cluster)
            .iter()
            .any(|ip| followed == format!("http://{ip}:80/")),
        "redirect to a pod IP: {out}"
    );
    // DNS: the cluster DNS address directly, StatefulSet pod names, and names outside
    // the cluster unchanged.
    let db2 = cluster
        .rt
        .block_on(Api::<Pod>::namespaced(cluster.client.clone(), "default").get("db-2"))
        .unwrap()
        .status
        .and_then(|s| s.pod_ip)
        .unwrap();
    let dug = laptop(
        &lab,
        &[
            "dig",
            "+short",
            "+time=3",
            "@172.17.16.10",
            "db-2.db.default.svc.cluster.local",
        ],
    );
    assert_eq!(dug.trim(), db2);
    let ptr = laptop(&lab, &["dig", "+short", "+time=3", "-x", &db2]);
    assert!(
        ptr.contains("db-2.db.default.svc.cluster.local"),
        "reverse lookup: {ptr}"
    );
    assert_eq!(
        laptop(&lab, &["getent", "hosts", "www.wan.example"]),
        wan_before
    );
    // ICMP echo, answered only because the pod really answers.
    let pod = web_pod_ips(&cluster)[0].clone();
    let ping = laptop(&lab, &["ping", "-c", "3", "-W", "3", &pod]);
    assert!(ping.contains("3 received"), "{ping}");
    let lost = lab.exec("laptop", &["ping", "-c", "1", "-W", "2", "172.17.33.250"]);
    assert!(
        !lost.status.success(),
        "no pod at 172.17.33.250, so no reply"
    );
    // UDP through the tunnel.
    let echo: SocketAddr = format!("{}:7", cluster.svc_ip("echo")).parse().unwrap();
    assert_eq!(udp_echo(&lab, echo, b"kubelan-udp"), b"kubelan-udp");
    // iperf3 both ways.
    let iperf = iperf_pod(&cluster);
    for reverse in [false, true] {
        let mut argv = vec!["iperf3", "-c", &iperf, "-t", "2", "-J"];
        if reverse {
            argv.push("-R");
        }
        let out = laptop(&lab, &argv);
        let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        eprintln!("iperf3 reverse={reverse}: {:.0} Mbit/s", bps / 1e6);
        assert!(bps > 1e6, "iperf3 reverse={reverse}: {out}");
    }
    // A reduced-MTU path under the carrier: large transfers still complete.
    for (host, dev) in [("laptop", "eth0"), ("edge-router", "eth1")] {
        lab.exec_ok(host, &["ip", "link", "set", dev, "mtu", "1280"]);
    }
    let size = curl(
        &lab,
        &[
            "-m",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "http://web/bytes/20000000",
        ],
    );
    assert_eq!(size.1.trim(), "20000000", "{size:?}");
    for (host, dev) in [("laptop", "eth0"), ("edge-router", "eth1")] {
        lab.exec_ok(host, &["ip", "link", "set", dev, "mtu", "1500"]);
    }

    // `status` while connected: state, provenance, DNS, counters.
    let st: serde_json::Value =
        serde_json::from_str(&laptop(&lab, &["kubelan", "status", "--output", "json"])).unwrap();
    assert_eq!(st["state"], "connected", "{st}");
    assert_eq!(st["apiVersion"], "kubelan.dev/v1", "{st}");
    assert_eq!(st["type"], "ConnectStatus", "{st}");
    assert!(st["routes"].to_string().contains("ServiceCIDR"), "{st}");
    assert_eq!(st["dns"]["configured"], true, "{st}");
    assert!(st["counters"]["tcp_flows"].as_u64().unwrap() > 5, "{st}");
    assert!(st["counters"]["pongs"].as_u64().unwrap() >= 3, "{st}");

    // TCP is terminated by the kernel: nftables redirects it to kubelan's listener, in a
    // table of its own. 5 000 short connections, 50 at a time, are all answered.
    assert_eq!(st["redirect"]["active"], true, "{st}");
    let table = laptop(&lab, &["nft", "list", "table", "inet", "kubelan_connect"]);
    assert!(table.contains("redirect to :"), "{table}");
    let target: SocketAddr = format!("{web_svc}:80").parse().unwrap();
    let started = std::time::Instant::now();
    let failures = on_host(&lab, "laptop", move || short_connections(target, 50, 100));
    eprintln!("5000 short connections at c=50 in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The listener itself is no service: dialled directly, it resets and counts a refusal.
    let listen: SocketAddr = st["redirect"]["listen"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let direct = on_host(&lab, "laptop", move || one_get(listen));
    assert!(
        direct.is_err(),
        "the redirect listener answered a direct connection: {direct:?}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&laptop(&lab, &["kubelan", "status", "--output", "json"])).unwrap();
    assert!(st["counters"]["tcp_refused"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["counters"]["tcp_failed"], 0, "{st}");

    // The agent pod is deleted: the session reconnects, the TUN and routes stay.
    let ifindex = laptop(&lab, &["cat", "/sys/class/net/kubelan0/ifindex"]);
    let routes = tun_routes(&lab);
    let ready_at = cluster.replace_agent_pod();
    wait_for("requests to work again", 15, || {
        curl(&lab, &["-m", "2", "http://web/"]).0.then_some(())
    });
    eprintln!(
        "healed {:?} after the new agent pod was ready",
        ready_at.elapsed()
    );
    assert_eq!(
        laptop(&lab, &["cat", "/sys/class/net/kubelan0/ifindex"]),
        ifindex
    );
    assert_eq!(tun_routes(&lab), routes);

    // kill -9: with nobody running anything, the crash watcher puts the machine back
    // within 2 s: names outside the cluster resolve again, and links, routes, nft,
    // sysctls, resolver and hosts file are as before connect; no socket or journal is left.
    let pid = conn.command_pid();
    let watcher = crash_watcher_of(pid).expect("connect runs a crash watcher");
    let took = kill_9_and_time(
        &lab,
        "laptop",
        pid,
        &[
            "! grep -q 'managed by kubelan' /etc/resolv.conf",
            "! ls /run/kubelan/journal-* >/dev/null 2>&1",
        ],
        2,
    );
    eprintln!(
        "kill -9 of connect: resolver restored after {:?}, every change undone after {:?}",
        took[0], took[1]
    );
    assert!(took[1] < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        laptop(&lab, &["getent", "hosts", "www.wan.example"]),
        wan_before
    );
    assert_eq!(host_snapshot(&lab, "laptop"), laptop_before);
    let state = laptop(&lab, &["ls", "-A", "/run/kubelan"]);
    assert!(
        !state.contains("connect.sock") && !state.contains("journal-"),
        "left in the state directory: {state}"
    );
    conn.wait_log("its crash watcher undid them", 5);
    wait_for("the crash watcher to exit", 5, || {
        (!kubelan_sys::process_alive(watcher)).then_some(())
    });
    let mut conn = conn;
    conn.wait_exit(10);
    drop(conn);
    let reset = laptop(&lab, &["kubelan", "reset"]);
    assert!(reset.contains("nothing to reset"), "{reset}");

    // The watcher dies too (killed with the session): the next connect cleans up first.
    let again = connect(&lab, "");
    again.wait_log("✓ connected via", 30);
    let pid = again.command_pid();
    let watcher = crash_watcher_of(pid).expect("connect runs a crash watcher");
    lab.exec_ok(
        "laptop",
        &["kill", "-9", &watcher.to_string(), &pid.to_string()],
    );
    wait_for("connect to die", 10, || {
        (!kubelan_sys::process_alive(pid)).then_some(())
    });
    drop(again);
    assert_ne!(laptop(&lab, &["cat", "/etc/resolv.conf"]), resolv_before);
    let third = connect(&lab, "");
    third.wait_log("left by an earlier run", 30);
    third.wait_log("✓ connected via", 30);
    http_200(&lab, "http://web/");
    laptop(&lab, &["kubelan", "quit"]);
    drop(third);
    assert_eq!(host_snapshot(&lab, "laptop"), laptop_before);
    assert!(laptop(&lab, &["kubelan", "reset"]).contains("nothing to reset"));
    // And `kubelan reset` alone does it too, as before there was a watcher.
    let fourth = connect(&lab, "");
    fourth.wait_log("✓ connected via", 30);
    let pid = fourth.command_pid();
    let watcher = crash_watcher_of(pid).expect("connect runs a crash watcher");
    lab.exec_ok(
        "laptop",
        &["kill", "-9", &watcher.to_string(), &pid.to_string()],
    );
    wait_for("connect to die", 10, || {
        (!kubelan_sys::process_alive(pid)).then_some(())
    });
    drop(fourth);
    let reset = laptop(&lab, &["kubelan", "reset"]);
    assert!(reset.contains("restored /etc/resolv.conf"), "{reset}");
    assert!(reset.contains("removed socket"), "{reset}");
    assert_eq!(host_snapshot(&lab, "laptop"), laptop_before);
    assert!(laptop(&lab, &["kubelan", "reset"]).contains("nothing to reset"));

    lab.down();
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
}
