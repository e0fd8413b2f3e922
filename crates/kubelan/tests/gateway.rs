//! End-to-end tests of issue 5 on the lab: `kubelan gateway` in node mode on `node1` and in
//! tunnel mode on the office PC `pc2`, serving the office LAN (`pc1`, `pc2`) which has
//! nothing of kubelan: the office router gets the routes `kubelan routes --format linux`
//! prints, the PCs' resolver is the gateway. With the lab's seed-001 fault on, `--no-snat`
//! fails for pods behind the other node and `kubelan doctor` names the cause; SNAT works.
//! Bad input changes nothing; after `kill -9` the gateway's crash watcher restores the
//! host's nft ruleset, sysctls and routes within 2 s. Needs root; CI runs them with `KUBELAN_E2E_REQUIRED=1`.

mod support;

use std::process::Output;

use support::{
    Background, Cluster, Lab, crash_watcher_of, host_snapshot, http_code, kill_9_and_time,
    lab_available, pods_of, root_snapshot,
};

const NODE1: &str = "10.4.7.11";
const PC2: &str = "172.16.1.12";
const LAN: &str = "172.16.0.0/18";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

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
    let dir = tempfile_dir();
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
    support::wait_for("the no-snat gateway to clean up", 15, || {
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

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kubelan-gw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
