//! End-to-end tests of issue 3 on the lab: `kubelan install` / `uninstall`, the agent, both
//! carriers, and `kubelan proxy` from the laptop with real clients (curl, raw SOCKS5/UDP).
//! Needs root; CI runs them with `KUBELAN_E2E_REQUIRED=1`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, LogParams};
use kubelan_testkit::{
    Background, Cluster, Lab, curl, kubelan, lab_available, ok, on_host, root_snapshot, wait_for,
};

/// A `kubelan proxy` on the laptop listening on `port`.
fn proxy(lab: &Lab, port: u16, extra: &[&str]) -> Background {
    Background::start(
        lab,
        "laptop",
        "proxy",
        300,
        &format!(
            "kubelan proxy --listen 127.0.0.1:{port} {}",
            extra.join(" ")
        ),
    )
}

/// SOCKS5 UDP ASSOCIATE through the proxy at 127.0.0.1:`port`, one datagram to `dest`.
fn socks_udp_echo(port: u16, dest: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(&[5, 1, 0]).unwrap();
    let mut r = [0u8; 2];
    tcp.read_exact(&mut r).unwrap();
    assert_eq!(r, [5, 0]);
    tcp.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut rep = [0u8; 10];
    tcp.read_exact(&mut rep).unwrap();
    assert_eq!(rep[1], 0, "UDP ASSOCIATE refused: {rep:?}");
    let relay = SocketAddr::from((
        [rep[4], rep[5], rep[6], rep[7]],
        u16::from_be_bytes([rep[8], rep[9]]),
    ));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let SocketAddr::V4(d) = dest else { panic!() };
    let mut pkt = vec![0, 0, 0, 1];
    pkt.extend_from_slice(&d.ip().octets());
    pkt.extend_from_slice(&d.port().to_be_bytes());
    pkt.extend_from_slice(payload);
    udp.send_to(&pkt, relay).unwrap();
    let mut buf = [0u8; 2048];
    let n = udp.recv(&mut buf).expect("UDP reply through the proxy");
    assert!(n >= 10, "short SOCKS UDP reply");
    drop(tcp);
    buf[10..n].to_vec()
}

/// Sends raw bytes to the proxy and returns what it answers before closing.
fn raw_socks(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(bytes).unwrap();
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    out
}

/// The proxy checks, identical for both carriers.
fn proxy_checks(lab: &Lab, cluster: &Cluster, port: u16) {
    let socks = format!("127.0.0.1:{port}");
    let web_pod = cluster.pod_ip("app=web");
    let web_svc = cluster.svc_ip("web");
    for url in [
        "http://web.default.svc.cluster.local/".to_string(),
        "http://web/".to_string(),
        format!("http://{web_pod}/"),
        format!("http://{web_svc}/"),
    ] {
        let (good, out) = curl(
            lab,
            &["--socks5-hostname", &socks, "-w", " %{http_code}", &url],
        );
        assert!(good && out.ends_with(" 200"), "SOCKS5 {url}: {out}");
        let (good, out) = curl(
            lab,
            &[
                "-x",
                &format!("http://{socks}"),
                "-w",
                " %{http_code}",
                &url,
            ],
        );
        assert!(good && out.ends_with(" 200"), "HTTP proxy {url}: {out}");
    }
    // HTTP CONNECT too.
    let (good, out) = curl(
        lab,
        &[
            "-p",
            "-x",
            &format!("http://{socks}"),
            "-w",
            " %{http_code}",
            "http://web.default.svc.cluster.local/",
        ],
    );
    assert!(good && out.ends_with(" 200"), "HTTP CONNECT: {out}");
    // UDP echo through SOCKS5 UDP ASSOCIATE.
    let echo: SocketAddr = format!("{}:7", cluster.svc_ip("echo")).parse().unwrap();
    let got = on_host(lab, "laptop", move || {
        socks_udp_echo(port, echo, b"kubelan-udp")
    });
    assert_eq!(got, b"kubelan-udp");
}

#[test]
fn install_proxy_faults_uninstall() {
    if !lab_available() {
        return;
    }
    let before = root_snapshot();
    let lab = Lab::up("px", &[]);
    let cluster = Cluster::new(&lab);
    let kc = lab.kubeconfig();
    let kc = kc.to_str().unwrap();

    // install → ready; install again → unchanged.
    let out = ok(kubelan().args(["install", "--kubeconfig", kc, "--timeout", "60"]));
    assert!(out.contains("agent ready"), "{out}");
    let again = ok(kubelan().args(["install", "--kubeconfig", kc, "--timeout", "60"]));
    assert!(
        !again.contains("created") && !again.contains("updated"),
        "second install changed things: {again}"
    );
    let yaml = ok(kubelan().args(["install", "--dry-run"]));
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("RuntimeDefault"),
        "{yaml}"
    );

    // Port-forward carrier.
    let pf = proxy(&lab, 1080, &["--carrier", "port-forward"]);
    pf.wait_log("connected via API-server port-forward", 30);
    proxy_checks(&lab, &cluster, 1080);

    // Direct carrier (mTLS through the NodePort).
    let direct = proxy(&lab, 1081, &["--carrier", "direct"]);
    direct.wait_log("connected via direct mTLS", 30);
    proxy_checks(&lab, &cluster, 1081);

    // Bad input: malformed greeting, BIND, unknown host, policy; other flows still work.
    let (garbage, bind, nosuch, policy) = on_host(&lab, "laptop", || {
        (
            raw_socks(1081, &[5, 0]),
            raw_socks(1081, &[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80]),
            raw_socks(
                1081,
                b"\x05\x01\x00\x05\x01\x00\x03\x1dnosuch.default.svc.cluster.local\x00\x50",
            ),
            raw_socks(1081, &[5, 1, 0, 5, 1, 0, 1, 169, 254, 169, 254, 0, 80]),
        )
    });
    assert_eq!(garbage, [5, 0xff], "greeting without methods");
    assert_eq!(
        bind.get(3),
        Some(&7),
        "BIND → command not supported: {bind:?}"
    );
    let nosuch = &nosuch[2..];
    assert_eq!(
        nosuch.get(1),
        Some(&4),
        "unknown host → host unreachable: {nosuch:?}"
    );
    assert_eq!(
        policy.get(3),
        Some(&2),
        "metadata address → not allowed: {policy:?}"
    );
    let (good, out) = curl(
        &lab,
        &["--socks5-hostname", "127.0.0.1:1081", "http://web/"],
    );
    assert!(good, "after bad input: {out}");
    let (_, out) = curl(
        &lab,
        &[
            "-x",
            "http://127.0.0.1:1081",
            "http://nosuch.default.svc.cluster.local/",
        ],
    );
    assert!(out.contains("no such host"), "HTTP unknown host: {out}");

    // Fault: cut the laptop's link (on the edge router) → detected < 5 s, heals after.
    direct.clear_log();
    let cut = Instant::now();
    lab.exec_ok("edge-router", &["ip", "link", "set", "eth1", "down"]);
    let detected = direct.wait_log("reconnecting", 10);
    eprintln!(
        "carrier loss detected after {:.2} s",
        cut.elapsed().as_secs_f64()
    );
    assert!(
        detected < Duration::from_secs(5),
        "detection took {detected:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    lab.exec_ok("edge-router", &["ip", "link", "set", "eth1", "up"]);
    let healed = Instant::now();
    direct.wait_log("connected via direct mTLS", 20);
    eprintln!(
        "carrier back {:.2} s after the link returned",
        healed.elapsed().as_secs_f64()
    );
    let (good, out) = curl(
        &lab,
        &["--socks5-hostname", "127.0.0.1:1081", "http://web/"],
    );
    assert!(good, "after the link returned: {out}");

    // Fault: delete the agent pod → new requests succeed within 15 s of the new pod Ready.
    let ready_at = cluster.replace_agent_pod();
    for (proxy, port) in [(&pf, 1080), (&direct, 1081)] {
        let _ = proxy;
        let socks = format!("127.0.0.1:{port}");
        let t = wait_for(
            "a request through the proxy after the agent restart",
            30,
            || {
                curl(&lab, &["--socks5-hostname", &socks, "http://web/"])
                    .0
                    .then(Instant::now)
            },
        );
        let after = t.saturating_duration_since(ready_at);
        eprintln!(
            "port {port}: requests succeed {:.2} s after the new agent was Ready",
            after.as_secs_f64()
        );
        assert!(after < Duration::from_secs(15), "took {after:?}");
    }

    // Wrong credentials on the direct carrier → refused and logged by the agent.
    let dir = format!("/tmp/kubelan-wrong-{}", lab.name);
    let _ = std::fs::remove_dir_all(&dir);
    ok(kubelan().args(["agent", "--init-credentials", &dir]));
    let agent_svc = cluster.service("kubelan-system", "kubelan-agent");
    let node_port = agent_svc
        .spec
        .and_then(|s| s.ports?.first()?.node_port)
        .expect("NodePort");
    let wrong = proxy(
        &lab,
        1082,
        &[
            "--agent",
            &format!("10.4.7.11:{node_port}"),
            "--credentials",
            &dir,
        ],
    );
    wrong.wait_log("TLS handshake failed", 20);
    let (good, _) = curl(
        &lab,
        &[
            "-m",
            "3",
            "--socks5-hostname",
            "127.0.0.1:1082",
            "http://web/",
        ],
    );
    assert!(!good, "wrong credentials must not reach the cluster");
    let rt = &cluster.rt;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "kubelan-system");
    let sel = ListParams::default().labels("app.kubernetes.io/name=kubelan-agent");
    let agent_pod = rt.block_on(pods.list(&sel)).unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let logs = rt
        .block_on(pods.logs(&agent_pod, &LogParams::default()))
        .unwrap();
    assert!(
        logs.contains("refused a direct carrier"),
        "agent log: {logs}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(wrong);
    drop(direct);
    drop(pf);

    // uninstall → nothing left.
    ok(kubelan().args(["uninstall", "--kubeconfig", kc]));
    let sel = "app.kubernetes.io/managed-by=kubelan";
    let left: Vec<String> = [
        cluster.names::<Namespace>(sel),
        cluster.names::<Deployment>(sel),
        cluster.names::<Pod>(sel),
        cluster.names::<Service>(sel),
        cluster.names::<Secret>(sel),
        cluster.names::<ServiceAccount>(sel),
        cluster.names::<ClusterRole>(sel),
        cluster.names::<ClusterRoleBinding>(sel),
    ]
    .concat();
    assert!(left.is_empty(), "left after uninstall: {left:?}");

    lab.down();
    assert_eq!(before, root_snapshot(), "the root namespace changed");
}
