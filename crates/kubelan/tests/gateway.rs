//! End-to-end tests of issue 5 on the lab: `kubelan gateway` in node mode on `node1` and in
//! tunnel mode on the office PC `pc2`, serving the office LAN (`pc1`, `pc2`) which has
//! nothing of kubelan: the office router gets the routes `kubelan routes --format linux`
//! prints, the PCs' resolver is the gateway. With the lab's seed-001 fault on, `--no-snat`
//! fails for pods behind the other node and `kubelan doctor` names the cause; SNAT works.
//! Bad input changes nothing; after `kill -9` the gateway's crash watcher restores the
//! host's nft ruleset, sysctls and routes within 2 s. With the lab's
//! `office.nodes_route_back` on and off, `kubelan doctor` on a PC behind the node gateway
//! (and on the gateway itself) tells whether pods on each node can call an office PC back
//! and which address pods see for the PC, checked against real clients. Needs root; CI
//! runs them with `KUBELAN_E2E_REQUIRED=1`.

use kubelan_testkit::{
    Background, Cluster, Lab, TempDir, crash_watcher_of, host_snapshot, http_code, kill_9_and_time,
    lab_available, pods_of, root_snapshot, text, wait_for,
};

const NODE1: &str = "10.4.7.11";
const NODE2: &str = "10.4.7.12";
const PC1: &str = "172.16.1.11";
const OFFICE_ROUTER: &str = "10.4.7.1";
const PC2: &str = "172.16.1.12";
const LAN: &str = "172.16.0.0/18";

/// What a gateway may change on a host and must put back.
fn host_state(lab: &Lab, host: &str) -> String {
    let mut s = String::new();
    for argv in [
        &["nft", "-s", "list", "ruleset"][..],
        &["sysctl", "-n", "net.ipv4.ip_forward"],
        &["ip", "route"],
        &["ip", "link"],
        &["cat", "/etc/resolv.conf"],
    ] {
        s.push_str(&lab.exec_ok(host, argv));
    }
    s
}

fn use_resolver(lab: &Lab, host: &str, ip: &str) {
    lab.exec_ok(
        host,
        &[
            "sh",
            "-c",
            &format!("printf 'nameserver {ip}\\nsearch default.svc.cluster.local\\noptions timeout:2 attempts:2\\n' > /etc/resolv.conf"),
        ],
    );
}

/// Every way a LAN PC names the cluster works from `host`.
fn lan_reaches_cluster(lab: &Lab, cluster: &Cluster, host: &str) {
    let web_svc = cluster.svc_ip("web");
    let web = pods_of(cluster, "app=web");
    let nodes: std::collections::BTreeSet<_> = web.iter().map(|p| p.1.clone()).collect();
    assert!(
        nodes.len() >= 2,
        "web pods should spread over both nodes: {web:?}"
    );
    for (name, node, ip) in &web {
        assert_eq!(
            http_code(lab, host, &format!("http://{ip}/")),
            "200",
            "{host} → pod {name} on {node}"
        );
    }
    for url in [
        "http://web.default.svc.cluster.local/".to_string(),
        format!("http://{web_svc}/"),
    ] {
        // Several times: the Service balances over pods on both nodes.
        for i in 0..6 {
            assert_eq!(
                http_code(lab, host, &url),
                "200",
                "{host} → {url} (try {i})"
            );
        }
    }
    let db0 = pods_of(cluster, "app=db")
        .into_iter()
        .find(|p| p.0 == "db-0")
        .expect("db-0");
    let dug = lab.exec_ok(
        host,
        &[
            "dig",
            "+short",
            "+time=3",
            "db-0.db.default.svc.cluster.local",
        ],
    );
    assert_eq!(dug.trim(), db0.2, "StatefulSet pod name from {host}");
}

#[test]
fn gateway_serves_the_office_lan() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let dir = TempDir::new("gw");
    let config = dir.join("lab.toml");
    std::fs::write(&config, "[faults]\nseed001 = true\n").unwrap();
    let lab = Lab::up("gw", &["--config", config.to_str().unwrap()]);
    let cluster = Cluster::new(&lab);
    let node1_before = host_state(&lab, "node1");

    // Bad input: clear errors, nothing changed.
    for (args, needle) in [
        (vec!["--lan", LAN, "--lan", "172.16.1.0/24"], "overlap"),
        (
            vec!["--lan", LAN, "--dns-listen", "10.9.9.9"],
            "not an address of this host",
        ),
        (vec!["--lan", "172.17.32.0/24"], "overlaps the cluster"),
    ] {
        let mut argv = vec!["kubelan", "gateway", "--mode", "node"];
        argv.extend(args.iter().copied());
        let out = lab.exec("node1", &argv);
        assert!(!out.status.success(), "{argv:?} succeeded");
        assert!(text(&out).contains(needle), "{argv:?}: {}", text(&out));
        assert_eq!(
            host_state(&lab, "node1"),
            node1_before,
            "{argv:?} changed node1"
        );
    }
    {
        let squatter = Background::start(
            &lab,
            "node1",
            "dns53",
            60,
            &format!("kubelan lab serve echo --udp {NODE1}:53"),
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        let out = lab.exec(
            "node1",
            &["kubelan", "gateway", "--mode", "node", "--lan", LAN],
        );
        assert!(!out.status.success());
        assert!(
            text(&out).contains("another DNS server already listens there"),
            "{}",
            text(&out)
        );
        assert_eq!(
            host_state(&lab, "node1"),
            node1_before,
            "port 53 taken changed node1"
        );
        drop(squatter);
    }

    lab.route_office_to(NODE1);
    use_resolver(&lab, "pc1", NODE1);
    use_resolver(&lab, "pc2", NODE1);

    // --no-snat with the seed-001 fault: Service connections that land on the other
    // node's pods lose their replies; doctor names the cause.
    let gw = Background::start(
        &lab,
        "node1",
        "gw-nosnat",
        300,
        &format!("kubelan gateway --mode node --lan {LAN} --no-snat"),
    );
    gw.wait_log("gateway ready", 30);
    let web_svc = cluster.svc_ip("web");
    let codes: Vec<String> = (0..10)
        .map(|_| http_code(&lab, "pc1", &format!("http://{web_svc}/")))
        .collect();
    assert!(
        codes.iter().any(|c| c != "200"),
        "with seed001 and --no-snat some Service requests must fail: {codes:?}"
    );
    let doc = lab.exec("pc1", &["kubelan", "doctor", "--via", NODE1]);
    let report = text(&doc);
    assert!(!doc.status.success(), "doctor passed:\n{report}");
    assert!(
        report.contains("seed-001 return-path fault") && report.contains("masqueradeAll"),
        "doctor did not name the cause:\n{report}"
    );
    drop(gw);
    wait_for("the no-snat gateway to clean up", 15, || {
        (host_state(&lab, "node1") == node1_before).then_some(())
    });

    // Default SNAT: everything works from both PCs; doctor passes.
    let node1_snapshot = host_snapshot(&lab, "node1");
    let gw = Background::start(
        &lab,
        "node1",
        "gw",
        300,
        &format!("kubelan gateway --mode node --lan {LAN}"),
    );
    gw.wait_log("gateway ready", 30);
    lan_reaches_cluster(&lab, &cluster, "pc1");
    lan_reaches_cluster(&lab, &cluster, "pc2");
    let doc = lab.exec("pc1", &["kubelan", "doctor", "--via", NODE1]);
    assert!(doc.status.success(), "doctor failed:\n{}", text(&doc));
    let counters: serde_json::Value = serde_json::from_str(&lab.exec_ok(
        "node1",
        &["nft", "-j", "list", "counters", "table", "ip", "kubelan"],
    ))
    .unwrap();
    let snat_packets = counters["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("counter"))
        .find(|c| c["name"] == "snat")
        .and_then(|c| c["packets"].as_u64());
    assert!(
        snat_packets > Some(0),
        "SNAT counter did not move: {counters}"
    );

    // kill -9: the crash watcher deletes the table and restores forwarding within 2 s,
    // with nobody running anything; `kubelan reset` then has nothing left to do.
    let pid = gw.command_pid();
    assert!(crash_watcher_of(pid).is_some(), "no crash watcher");
    let took = kill_9_and_time(
        &lab,
        "node1",
        pid,
        &["! ls /run/kubelan/journal-* >/dev/null 2>&1"],
        2,
    );
    eprintln!("kill -9 of the node gateway: restored after {:?}", took[0]);
    assert_eq!(host_state(&lab, "node1"), node1_before);
    assert_eq!(host_snapshot(&lab, "node1"), node1_snapshot);
    gw.wait_log("its crash watcher undid them", 5);
    drop(gw);
    let again = lab.exec_ok("node1", &["kubelan", "reset"]);
    assert!(again.contains("nothing to reset"), "{again}");

    // Tunnel mode on pc2, which has no route to the cluster: the agent carries it.
    lab.exec_ok("node1", &["kubelan", "install"]);
    lab.route_office_to(PC2);
    use_resolver(&lab, "pc1", PC2);
    let pc2_before = host_state(&lab, "pc2");
    let pc2_snapshot = host_snapshot(&lab, "pc2");
    let forwarding = || lab.exec_ok("pc2", &["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert_eq!(forwarding().trim(), "0", "a PC does not forward before");
    let gw = Background::start(
        &lab,
        "pc2",
        "gw-tunnel",
        300,
        &format!("kubelan gateway --mode tunnel --lan {LAN}"),
    );
    gw.wait_log("gateway ready", 60);
    gw.wait_log("✓ connected via", 60);
    lan_reaches_cluster(&lab, &cluster, "pc1");
    assert_eq!(forwarding().trim(), "1", "the tunnel gateway forwards");
    // The LAN's TCP was redirected to the gateway's listener (kernel TCP). That listener
    // is no service of its own: dialled directly, from the LAN or from outside it, it
    // resets and counts a refusal.
    let status = |host: &str| -> serde_json::Value {
        serde_json::from_str(&lab.exec_ok(host, &["kubelan", "status", "--output", "json"]))
            .unwrap()
    };
    let st = status("pc2");
    assert_eq!(st["redirect"]["active"], true, "{st}");
    let listen = st["redirect"]["listen"][0].as_str().unwrap().to_string();
    let port = listen.rsplit(':').next().unwrap();
    assert!(st["counters"]["tcp_flows"].as_u64().unwrap() >= 14, "{st}");
    for host in ["pc1", "node1"] {
        assert_eq!(
            http_code(&lab, host, &format!("http://{PC2}:{port}/")),
            "000",
            "{host} got an answer from the redirect listener {listen}"
        );
    }
    let st = status("pc2");
    assert!(st["counters"]["tcp_refused"].as_u64().unwrap() >= 2, "{st}");
    // kill -9 here too: the watcher puts the sysctl back (the TUN and its routes die with
    // the process; the pinned routes and the journal go with the watcher's replay).
    let pid = gw.command_pid();
    assert!(crash_watcher_of(pid).is_some(), "no crash watcher");
    let took = kill_9_and_time(
        &lab,
        "pc2",
        pid,
        &["! ls /run/kubelan/journal-* >/dev/null 2>&1"],
        2,
    );
    eprintln!(
        "kill -9 of the tunnel gateway: restored after {:?}",
        took[0]
    );
    assert_eq!(forwarding().trim(), "0", "forwarding is off again");
    assert_eq!(host_state(&lab, "pc2"), pc2_before);
    assert_eq!(host_snapshot(&lab, "pc2"), pc2_snapshot);
    gw.wait_log("its crash watcher undid them", 5);
    drop(gw);
    let reset = lab.exec_ok("pc2", &["kubelan", "reset"]);
    assert!(reset.contains("nothing to reset"), "{reset}");
    let sockets = lab.exec_ok("pc2", &["ls", "-A", "/run/kubelan"]);
    assert!(!sockets.contains(".sock"), "left behind: {sockets}");

    drop(cluster);
    lab.down();
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
}

/// The lines of a doctor report for one step.
fn step_lines<'a>(report: &'a str, step: &str) -> Vec<&'a str> {
    report
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(step))
        .collect()
}

/// The first `web` pod on `node`.
fn web_pod_on(cluster: &Cluster, node: &str) -> String {
    pods_of(cluster, "app=web")
        .into_iter()
        .find(|p| p.1 == node)
        .unwrap_or_else(|| panic!("no web pod on {node}"))
        .0
}

/// What `GET /ip` of `url` answers on `target` (a host or pod/NAME): the client's address
/// as the server saw it, without the port; empty when it could not connect.
fn seen_ip(lab: &Lab, target: &str, url: &str) -> String {
    let out = lab.exec(target, &["curl", "-sS", "--max-time", "5", url]);
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    body.rsplit_once(':')
        .map(|(ip, _)| ip.to_string())
        .unwrap_or(body)
}

#[test]
fn doctor_checks_callbacks_from_pods_to_the_lan() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let dir = TempDir::new("gw");
    for route_back in [true, false] {
        let config = dir.join(format!("lab-route-back-{route_back}.toml"));
        std::fs::write(
            &config,
            format!("[office]\nnodes_route_back = {route_back}\n"),
        )
        .unwrap();
        let lab = Lab::up(
            if route_back { "cbon" } else { "cboff" },
            &["--config", config.to_str().unwrap()],
        );
        let cluster = Cluster::new(&lab);
        if !route_back {
            // The gateway host itself reaches the LAN, as a gateway must (replies to the
            // PCs leave by it); the other node has only its default route.
            lab.exec_ok(
                "node1",
                &["ip", "route", "replace", LAN, "via", OFFICE_ROUTER],
            );
        }
        lab.route_office_to(NODE1);
        // A PC's own server, for the real clients below and `--callback-to`.
        let server = Background::start(
            &lab,
            "pc1",
            "pc1-http",
            300,
            &format!("kubelan lab serve http --listen {PC1}:8080"),
        );
        wait_for("pc1's server", 10, || {
            (http_code(&lab, "pc1", &format!("http://{PC1}:8080/")) == "200").then_some(())
        });
        let on_node1 = format!("pod/{}", web_pod_on(&cluster, "node1"));
        let on_node2 = format!("pod/{}", web_pod_on(&cluster, "node2"));
        // A pod on the other node than the gateway (pods on the gateway's own node see
        // its bridge address).
        let web2_ip = pods_of(&cluster, "app=web")
            .into_iter()
            .find(|p| p.1 == "node2")
            .unwrap()
            .2;

        let gw = Background::start(
            &lab,
            "node1",
            "gw",
            300,
            &format!("kubelan gateway --mode node --lan {LAN}"),
        );
        gw.wait_log("gateway ready", 30);
        let started = std::time::Instant::now();
        let doc = lab.exec("pc1", &["kubelan", "doctor", "--via", NODE1]);
        eprintln!(
            "doctor --via with callbacks (nodes_route_back = {route_back}) took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let report = text(&doc);
        eprintln!("{report}");
        let callback = step_lines(&report, "callback");
        let address = step_lines(&report, "address");
        assert_eq!(callback.len(), 2, "one callback line per node:\n{report}");
        // What real clients say: pods see the PC as the gateway (SNAT)...
        assert_eq!(
            seen_ip(&lab, "pc1", &format!("http://{web2_ip}/ip")),
            NODE1,
            "a pod sees pc1 as the gateway"
        );
        assert!(
            address.len() == 1
                && address[0].contains(&format!(
                    "pods see this host as {NODE1}, the gateway's address"
                ))
                && address[0].contains(&format!("not as its own {PC1}")),
            "address:\n{report}"
        );
        assert!(report.contains("--no-snat"), "{report}");
        // ... and pods on node1 call pc1 back, arriving with node1's address.
        assert_eq!(
            seen_ip(&lab, &on_node1, &format!("http://{PC1}:8080/ip")),
            NODE1
        );
        assert!(
            callback[0].starts_with("✓")
                && callback[0].contains(&format!("pods on node1 open connections to {PC1}:"))
                && callback[0].contains(&format!("arrive from {NODE1}, node1's address")),
            "node1:\n{report}"
        );
        let node2_call = seen_ip(&lab, &on_node2, &format!("http://{PC1}:8080/ip"));
        if route_back {
            assert_eq!(node2_call, NODE2, "pods on node2 reach pc1");
            assert!(
                callback[1].starts_with("✓")
                    && callback[1].contains(&format!("arrive from {NODE2}, node2's address")),
                "node2:\n{report}"
            );
            assert!(doc.status.success(), "doctor failed:\n{report}");
        } else {
            assert_eq!(node2_call, "", "pods on node2 must not reach pc1");
            assert!(
                callback[1].starts_with("✗")
                    && callback[1]
                        .contains(&format!("pods on node2 cannot open a connection to {PC1}:"))
                    && callback[1].contains("node2 has no route back to 172.16.0.0/18"),
                "node2:\n{report}"
            );
            let fix = report
                .lines()
                .skip_while(|l| !l.starts_with("✗ callback"))
                .nth(1)
                .unwrap_or_default();
            assert!(
                fix.contains(&format!(
                    "fix: add a route to 172.16.0.0/18 via the gateway {NODE1}"
                )) && fix.contains(&format!("`kubelan expose {PC1}:PORT")),
                "fix:\n{report}"
            );
            assert!(!doc.status.success(), "doctor passed:\n{report}");
            // On the gateway itself, at a PC's real port: the fix names the router it uses.
            let doc = lab.exec(
                "node1",
                &["kubelan", "doctor", "--callback-to", &format!("{PC1}:8080")],
            );
            let report = text(&doc);
            eprintln!("{report}");
            let callback = step_lines(&report, "callback");
            assert!(
                callback.len() == 2 && callback[0].starts_with("✓") && callback[1].starts_with("✗"),
                "on the gateway:\n{report}"
            );
            assert!(
                report.contains(&format!(
                    "fix: add a route to 172.16.0.0/18 via {OFFICE_ROUTER} on node2"
                )),
                "on the gateway:\n{report}"
            );
            assert!(
                report.contains("pods see every LAN host as this gateway's address (SNAT)"),
                "on the gateway:\n{report}"
            );
        }
        drop(gw);

        if route_back {
            // Without SNAT pods see the PC's own address, and doctor says so.
            wait_for("the gateway to clean up", 15, || {
                (!lab
                    .exec_ok("node1", &["nft", "list", "tables"])
                    .contains("kubelan"))
                .then_some(())
            });
            let gw = Background::start(
                &lab,
                "node1",
                "gw-nosnat",
                300,
                &format!("kubelan gateway --mode node --lan {LAN} --no-snat"),
            );
            gw.wait_log("gateway ready", 30);
            assert_eq!(seen_ip(&lab, "pc1", &format!("http://{web2_ip}/ip")), PC1);
            let doc = lab.exec("pc1", &["kubelan", "doctor", "--via", NODE1]);
            let report = text(&doc);
            let address = step_lines(&report, "address");
            assert!(
                address.len() == 1
                    && address[0]
                        .contains(&format!("pods see this host as {PC1}, its own address")),
                "address without SNAT:\n{report}"
            );
            drop(gw);
        }
        // The probe pods are gone.
        wait_for("the probe pods to go", 15, || {
            cluster
                .names::<k8s_openapi::api::core::v1::Pod>("app.kubernetes.io/name=kubelan-doctor")
                .is_empty()
                .then_some(())
        });
        drop(server);
        drop(cluster);
        lab.down();
    }
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
}
