//! End-to-end tests of issue 17's agent policy and DNS hardening on the lab.
//!
//! Policy: from the laptop through `kubelan proxy`, a selector-less Service whose
//! EndpointSlice lists the office PC (with a `targetRef` naming a real pod), the `kubernetes`
//! Service's endpoint (node1) on ports 22 and 10250, and a hostNetwork pod's IP (node2) are
//! refused with their reason and the flag that would allow them; pods, ClusterIPs and
//! names still work; a burst of 1 000 refused flows adds at most a few log lines to the
//! agent; `kubelan install --allow-node-addresses --allow CIDR` opens exactly those.
//!
//! DNS: 500 ordinary and 500 fifty-question queries, interleaved, from the office PC to a
//! node-mode gateway: every ordinary one NOERROR, every bad one FORMERR, in under 2 s, and
//! the gateway logs nothing for them. Needs root; CI runs them with `KUBELAN_E2E_REQUIRED=1`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, LogParams, PostParams};
use kubelan_testkit::{
    Background, Cluster, Lab, curl, kubelan, lab_available, ok, on_host, pods_of, root_snapshot,
    wait_for,
};
use serde_json::json;

const NODE1: &str = "10.4.7.11";
const NODE2: &str = "10.4.7.12";
const PC1: &str = "172.16.1.11";
const LAN: &str = "172.16.0.0/18";
/// The office PC's server, and the hostNetwork pod's port on node2.
const OFFICE_PORT: u16 = 8080;
const HOSTNET_PORT: u16 = 18080;

/// Creates a namespaced object given as JSON.
fn create<K>(cluster: &Cluster, ns: &str, obj: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj).expect("a valid object");
    let api: Api<K> = Api::namespaced(cluster.client.clone(), ns);
    cluster
        .rt
        .block_on(api.create(&PostParams::default(), &obj))
        .expect("create");
}

/// The objects of the attacks: a selector-less Service for the office PC, and a
/// hostNetwork pod on node2 behind an ordinary Service.
fn attack_objects(cluster: &Cluster) {
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "evil"}})).unwrap();
    cluster
        .rt
        .block_on(namespaces.create(&PostParams::default(), &ns))
        .unwrap();
    let web_pod = pods_of(cluster, "app=web")[0].0.clone();
    create::<Service>(
        cluster,
        "evil",
        json!({"metadata": {"name": "office"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": OFFICE_PORT}]}}),
    );
    create::<EndpointSlice>(
        cluster,
        "evil",
        json!({"metadata": {"name": "office-1", "labels": {"kubernetes.io/service-name": "office"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [PC1], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "namespace": "default", "name": web_pod}}],
            "ports": [{"name": "http", "port": OFFICE_PORT, "protocol": "TCP"}]}),
    );
    create::<Pod>(
        cluster,
        "default",
        json!({"metadata": {"name": "hostnet", "labels": {"app": "hostnet"}},
            "spec": {"nodeName": "node2", "hostNetwork": true, "containers": [{
                "name": "http", "image": "kubelan",
                "args": ["lab", "serve", "http", "--listen", format!("0.0.0.0:{HOSTNET_PORT}")],
                "readinessProbe": {"tcpSocket": {"port": HOSTNET_PORT}, "periodSeconds": 1}}]}}),
    );
    create::<Service>(
        cluster,
        "default",
        json!({"metadata": {"name": "hostnet"},
            "spec": {"selector": {"app": "hostnet"}, "ports": [{"name": "http", "port": HOSTNET_PORT}]}}),
    );
    wait_for("the hostNetwork pod to run with node2's IP", 60, || {
        let ready = pods_of(cluster, "app=hostnet").iter().any(|p| p.2 == NODE2);
        ready.then_some(())
    });
}

/// A SOCKS5 CONNECT to `ip:port` through the proxy on the laptop's 127.0.0.1:`proxy`; the
/// reply code (0 = succeeded, 2 = not allowed by ruleset).
fn socks_connect(proxy: u16, ip: Ipv4Addr, port: u16) -> u8 {
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = vec![5, 1, 0, 5, 1, 0, 1];
    req.extend_from_slice(&ip.octets());
    req.extend_from_slice(&port.to_be_bytes());
    tcp.write_all(&req).unwrap();
    let mut reply = [0u8; 12];
    tcp.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [5, 0], "SOCKS greeting");
    reply[3]
}

/// The agent pod's log.
fn agent_log(cluster: &Cluster) -> String {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "kubelan-system");
    let sel = ListParams::default().labels("app.kubernetes.io/name=kubelan-agent");
    let list = cluster.rt.block_on(pods.list(&sel)).unwrap();
    let mut out = String::new();
    for p in &list.items {
        let name = p.metadata.name.clone().unwrap();
        if let Ok(l) = cluster.rt.block_on(pods.logs(&name, &LogParams::default())) {
            out.push_str(&l);
        }
    }
    out
}

fn refusal_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("flow refused by policy"))
        .collect()
}

/// Through the HTTP proxy: the status code and body of `url`.
fn via_http_proxy(lab: &Lab, url: &str) -> String {
    let (_, out) = curl(
        lab,
        &["-x", "http://127.0.0.1:1080", "-w", " %{http_code}", url],
    );
    out
}

#[test]
fn agent_policy_and_dns_hardening() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("pol", &[]);
    let cluster = Cluster::new(&lab);
    let kc = lab.kubeconfig();
    let kc = kc.to_str().unwrap();
    ok(kubelan().args(["install", "--kubeconfig", kc, "--timeout", "60"]));
    attack_objects(&cluster);
    // A real server on the office PC: only the policy stands between it and the agent.
    let office = Background::start(
        &lab,
        "pc1",
        "office",
        300,
        &format!("kubelan lab serve http --listen {PC1}:{OFFICE_PORT}"),
    );
    let px = Background::start(
        &lab,
        "laptop",
        "proxy",
        300,
        "kubelan proxy --listen 127.0.0.1:1080",
    );
    px.wait_log("connected via", 30);

    // Pods, ClusterIPs and names still work.
    let web_pod = cluster.pod_ip("app=web");
    let web_svc = cluster.svc_ip("web");
    for url in [
        format!("http://{web_pod}/"),
        format!("http://{web_svc}/"),
        "http://web.default.svc.cluster.local/".into(),
    ] {
        let out = via_http_proxy(&lab, &url);
        assert!(out.ends_with(" 200"), "{url}: {out}");
    }

    // Refused, each with its reason and the flag that would allow it.
    for (url, reason, flag) in [
        (
            format!("http://{PC1}:{OFFICE_PORT}/"),
            "EndpointSlice evil/office-1",
            "--allow CIDR",
        ),
        (
            format!("http://office.evil.svc.cluster.local:{OFFICE_PORT}/"),
            "EndpointSlice evil/office-1",
            "--allow CIDR",
        ),
        (
            format!("http://{NODE1}:22/"),
            "node address",
            "--allow-node-addresses",
        ),
        (
            format!("http://{NODE1}:10250/"),
            "node address",
            "--allow-node-addresses",
        ),
        (
            format!("http://{NODE2}:{HOSTNET_PORT}/"),
            "node address",
            "--allow-node-addresses",
        ),
    ] {
        let out = via_http_proxy(&lab, &url);
        eprintln!("{url} → {out}");
        assert!(
            out.ends_with(" 403") && out.contains(reason) && out.contains(flag),
            "{url}: {out}"
        );
    }
    let (pc1, node1, node2) = (
        PC1.parse().unwrap(),
        NODE1.parse().unwrap(),
        NODE2.parse().unwrap(),
    );
    let codes = on_host(&lab, "laptop", move || {
        [
            socks_connect(1080, pc1, OFFICE_PORT),
            socks_connect(1080, node1, 22),
            socks_connect(1080, node1, 10250),
            socks_connect(1080, node2, HOSTNET_PORT),
        ]
    });
    assert_eq!(codes, [2; 4], "SOCKS5: not allowed by ruleset");
    let log = agent_log(&cluster);
    let lines = refusal_lines(&log);
    eprintln!("agent refusal lines:\n{}", lines.join("\n"));
    for needle in [
        "EndpointSlice evil/office-1",
        "hostNetwork pod",
        "--allow-node-addresses",
        "--allow CIDR",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "agent log lacks {needle:?}:\n{}",
            lines.join("\n")
        );
    }

    // A burst of 1 000 refused flows to 1 000 addresses: a few lines, every one counted.
    let before = lines.len();
    let started = Instant::now();
    let refused = on_host(&lab, "laptop", || {
        (0..1000u32)
            .filter(|i| {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 8, 0)) + i);
                socks_connect(1080, ip, 80) == 2
            })
            .count()
    });
    assert_eq!(refused, 1000);
    eprintln!(
        "1 000 refused flows in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(6));
    let log = agent_log(&cluster);
    let after = refusal_lines(&log).len();
    let summaries = log
        .lines()
        .filter(|l| l.contains("were not logged"))
        .count();
    eprintln!("agent refusal lines: {before} before the burst, {after} after; {summaries} summary");
    assert!(
        after <= 5 && after - before <= 1 && summaries <= 1,
        "refusal logging is not bounded: {after} lines, {summaries} summaries:\n{log}"
    );

    // The flags open exactly what they name.
    ok(kubelan().args([
        "install",
        "--kubeconfig",
        kc,
        "--timeout",
        "60",
        "--allow-node-addresses",
        "--allow",
        &format!("{PC1}/32"),
    ]));
    wait_for("the new agent to serve node addresses", 60, || {
        via_http_proxy(&lab, &format!("http://{NODE2}:{HOSTNET_PORT}/"))
            .ends_with(" 200")
            .then_some(())
    });
    let out = via_http_proxy(&lab, &format!("http://{PC1}:{OFFICE_PORT}/"));
    assert!(out.ends_with(" 200"), "--allow {PC1}/32: {out}");
    let out = via_http_proxy(&lab, "http://169.254.169.254/");
    assert!(
        out.ends_with(" 403") && out.contains("never dials it"),
        "metadata: {out}"
    );
    drop(px);
    drop(office);

    dns_flood_against_node_gateway(&lab);

    drop(cluster);
    lab.down();
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
}

/// A DNS query for `names` (type A, class IN, RD set).
fn dns_query(id: u16, names: &[String]) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00]);
    q.extend_from_slice(&u16::try_from(names.len()).unwrap().to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for name in names {
        for label in name.split('.') {
            q.push(u8::try_from(label.len()).unwrap());
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
    }
    q
}

/// What the flood got back.
#[derive(Debug, Default)]
struct Flood {
    /// (bad query?, RCODE) → count.
    codes: HashMap<(bool, u8), usize>,
    missing: usize,
    seconds: f64,
}

/// 500 ordinary and 500 fifty-question queries, interleaved, at most 64 outstanding.
fn flood(server: SocketAddr) -> Flood {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let good = vec!["web.default.svc.cluster.local".to_string()];
    let bad: Vec<String> = (0..50)
        .map(|j| format!("q{j}.web.default.svc.cluster.local"))
        .collect();
    let queries: Vec<(u16, bool, Vec<u8>)> = (1..=1000u16)
        .map(|id| {
            let is_bad = id % 2 == 0;
            (id, is_bad, dns_query(id, if is_bad { &bad } else { &good }))
        })
        .collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut next = 0;
    let mut pending: HashMap<u16, bool> = HashMap::new();
    let mut out = Flood::default();
    let mut buf = [0u8; 4096];
    while (next < queries.len() || !pending.is_empty()) && Instant::now() < deadline {
        while next < queries.len() && pending.len() < 64 {
            let (id, is_bad, q) = &queries[next];
            sock.send(q).unwrap();
            pending.insert(*id, *is_bad);
            next += 1;
        }
        if let Ok(n) = sock.recv(&mut buf)
            && n >= 12
            && let Some(is_bad) = pending.remove(&u16::from_be_bytes([buf[0], buf[1]]))
        {
            *out.codes.entry((is_bad, buf[3] & 0x0f)).or_default() += 1;
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    out.missing = pending.len() + queries.len() - next;
    out
}

fn dns_flood_against_node_gateway(lab: &Lab) {
    let gw = Background::start(
        lab,
        "node1",
        "gw",
        120,
        &format!("kubelan gateway --mode node --lan {LAN}"),
    );
    gw.wait_log("gateway ready", 30);
    gw.clear_log();
    let server: SocketAddr = format!("{NODE1}:53").parse().unwrap();
    let result = on_host(lab, "pc1", move || flood(server));
    eprintln!("DNS flood from pc1: {result:?}");
    std::thread::sleep(Duration::from_secs(1));
    let log = gw.log();
    assert_eq!(result.missing, 0, "unanswered queries: {result:?}");
    assert_eq!(
        result.codes.get(&(false, 0)),
        Some(&500),
        "every ordinary query NOERROR: {result:?}"
    );
    assert_eq!(
        result.codes.get(&(true, 1)),
        Some(&500),
        "every fifty-question query FORMERR: {result:?}"
    );
    assert!(result.seconds < 2.0, "took {:.2} s", result.seconds);
    assert!(
        log.lines().count() <= 3,
        "the gateway logged during the flood:\n{log}"
    );
    drop(gw);
}
