//! End-to-end test of `kubelan routes` (issue 5) on the lab: the office router runs
//! `kubelan routes`, enters the `ip route` lines it prints, and the office PC `pc1` then
//! reaches a web pod on each node and the web ClusterIP through node1 (10.4.7.11, which
//! forwards; the nodes route back to the office LAN, and the lab's kube-proxy masquerades
//! traffic to ClusterIPs from outside the Pod CIDR). The dnsmasq block passes
//! `dnsmasq --test` and, run on the router against the cluster DNS (`--dns-target`),
//! answers cluster names and reverse lookups even with `bogus-priv` and `stop-dns-rebind`.
//! Also: the gateway found from `--lan`, an overlap warning, JSON output, and `--bgp`
//! with neighbors from the Node objects. Needs root; CI runs it with
//! `KUBELAN_E2E_REQUIRED=1`.

use std::process::Output;

use kubelan_testkit::{Background, Cluster, Lab, http_code, lab_available, pods_of, root_snapshot};

const ROUTER: &str = "office-router";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kubelan routes ARGS` on the office router; must succeed.
fn routes(lab: &Lab, args: &[&str]) -> Output {
    let mut argv = vec!["kubelan", "routes"];
    argv.extend_from_slice(args);
    let out = lab.exec(ROUTER, &argv);
    assert!(
        out.status.success(),
        "kubelan routes {args:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

fn dig(lab: &Lab, args: &[&str]) -> String {
    let mut argv = vec![
        "dig",
        "+short",
        "+time=2",
        "+tries=2",
        "-p",
        "5353",
        "@127.0.0.1",
    ];
    argv.extend_from_slice(args);
    stdout(&lab.exec(ROUTER, &argv)).trim().to_string()
}

#[test]
fn office_lan_reaches_the_cluster_with_the_printed_routes() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("rt", &[]);
    let cluster = Cluster::new(&lab);
    let web = pods_of(&cluster, "app=web");
    let nodes: std::collections::BTreeSet<&str> = web.iter().map(|p| p.1.as_str()).collect();
    assert!(
        nodes.len() >= 2,
        "web pods should run on both nodes: {web:?}"
    );
    let web_svc = cluster.svc_ip("web");

    // Before: the office has no route to the cluster.
    let (_, _, first_ip) = &web[0];
    assert_eq!(
        http_code(&lab, "pc1", &format!("http://{first_ip}/")),
        "000"
    );

    // The routes for a Linux router, entered line by line as printed.
    let out = routes(
        &lab,
        &[
            "--format",
            "linux",
            "--gateway",
            "10.4.7.11",
            "--lan",
            "172.16.0.0/18",
        ],
    );
    let (text, facts) = (stdout(&out), stderr(&out));
    assert!(
        facts.contains("spec.podCIDRs of nodes node1, node2"),
        "{facts}"
    );
    assert!(facts.contains("ServiceCIDR \"kubernetes\""), "{facts}");
    assert!(!facts.contains("warning:"), "{facts}");
    assert!(
        !text.contains("###"),
        "one format prints no heading:\n{text}"
    );
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        lines.iter().all(|l| l.starts_with("ip route add ")),
        "only comments and ip route lines:\n{text}"
    );
    assert!(
        lines.contains(&"ip route add 172.17.16.0/20 via 10.4.7.11 proto static"),
        "{text}"
    );
    assert!(
        lines.contains(&"ip route add 172.17.32.0/23 via 10.4.7.11 proto static"),
        "{text}"
    );
    for l in &lines {
        let argv: Vec<&str> = l.split_whitespace().collect();
        lab.exec_ok(ROUTER, &argv);
    }

    // pc1 reaches a web pod on each node and the ClusterIP. No SNAT on the way for pod
    // IPs: node1 forwards, and the nodes route back to the office LAN. The ClusterIP works
    // for both backends because the lab's kube-proxy masquerades traffic from outside the
    // Pod CIDR (with the seed-001 fault only node1's pod would answer).
    for (name, node, ip) in &web {
        assert_eq!(
            http_code(&lab, "pc1", &format!("http://{ip}/")),
            "200",
            "pc1 → pod {name} ({ip}) on {node}"
        );
    }
    for _ in 0..4 {
        assert_eq!(
            http_code(&lab, "pc1", &format!("http://{web_svc}/")),
            "200",
            "pc1 → web ClusterIP {web_svc}"
        );
    }

    // dnsmasq: the block is valid config, and forwarding to the cluster DNS (reachable
    // now through the routes) answers names and reverse lookups, also with the options
    // that would otherwise drop them (bogus-priv, stop-dns-rebind).
    let kube_dns = cluster
        .service("kube-system", "kube-dns")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("kube-dns ClusterIP");
    let out = routes(
        &lab,
        &[
            "--format",
            "dnsmasq",
            "--gateway",
            "10.4.7.11",
            "--dns-target",
            &kube_dns,
        ],
    );
    let conf = stdout(&out);
    assert!(
        conf.contains(&format!("server=/cluster.local/{kube_dns}\n")),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("server=/33.17.172.in-addr.arpa/{kube_dns}\n")),
        "{conf}"
    );
    let dir = std::env::temp_dir().join(format!("kubelan-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kubelan.conf");
    std::fs::write(&file, &conf).unwrap();
    let file = file.to_str().unwrap().to_string();
    let test = lab.exec(ROUTER, &["dnsmasq", "--test", "-C", &file]);
    assert!(
        test.status.success(),
        "dnsmasq --test: {}{}\n{conf}",
        stdout(&test),
        stderr(&test)
    );
    {
        let dnsmasq = Background::start(
            &lab,
            ROUTER,
            "dnsmasq",
            120,
            &format!(
                "dnsmasq -k -C {file} --port 5353 --listen-address 127.0.0.1 --bind-interfaces --no-resolv --no-hosts --bogus-priv --stop-dns-rebind --pid-file= --user=root --log-facility=-"
            ),
        );
        dnsmasq.wait_log("started", 10);
        assert_eq!(
            dig(&lab, &["web.default.svc.cluster.local"]),
            web_svc,
            "name through dnsmasq"
        );
        let (_, _, pod_ip) = web.iter().find(|p| p.1 == "node2").unwrap();
        let ptr = dig(&lab, &["-x", pod_ip]);
        assert!(ptr.ends_with(".cluster.local."), "PTR of {pod_ip}: {ptr:?}");
        assert_eq!(
            dig(&lab, &["-x", &web_svc]),
            "web.default.svc.cluster.local."
        );
        // Outside the cluster's zones bogus-priv still answers by itself.
        assert_eq!(dig(&lab, &["-x", "172.17.99.1"]), "");
    }
    let _ = std::fs::remove_dir_all(&dir);

    // Without --gateway, this host's only address in --lan is the gateway.
    let out = routes(&lab, &["--format", "linux", "--lan", "172.16.0.0/18"]);
    assert!(
        stdout(&out).contains("ip route add 172.17.16.0/20 via 172.16.0.1 proto static"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("this host's address in --lan"),
        "{}",
        stderr(&out)
    );
    // No address in --lan: the error names --gateway.
    let out = lab.exec(ROUTER, &["kubelan", "routes", "--lan", "192.168.77.0/24"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--gateway"), "{}", stderr(&out));

    // A LAN that overlaps the cluster is warned about.
    let out = routes(
        &lab,
        &[
            "--format",
            "linux",
            "--gateway",
            "10.4.7.11",
            "--lan",
            "172.17.0.0/16",
        ],
    );
    assert!(
        stderr(&out).contains(
            "warning: the cluster's services prefix 172.17.16.0/20 overlaps the LAN 172.17.0.0/16"
        ),
        "{}",
        stderr(&out)
    );

    // JSON: the renderer's input, the text and the facts.
    let out = routes(
        &lab,
        &[
            "--format",
            "linux,bind",
            "--gateway",
            "10.4.7.11",
            "--output",
            "json",
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["apiVersion"], "kubelan.dev/v1", "docs/json.md");
    assert_eq!(doc["type"], "RoutesReport", "docs/json.md");
    assert_eq!(doc["input"]["gateway_v4"], "10.4.7.11");
    assert_eq!(doc["outputs"][0]["format"], "linux");
    assert_eq!(doc["outputs"][1]["format"], "bind");
    assert!(doc["outputs"][1]["text"].as_str().unwrap().contains(
        "zone \"cluster.local\" { type forward; forward only; forwarders { 10.4.7.11; }; };"
    ));
    assert_eq!(doc["facts"]["service_cidrs"][0]["value"], "172.17.16.0/20");

    // --bgp: neighbors are the nodes' InternalIPs.
    let out = routes(
        &lab,
        &["--bgp", "--router-ip", "10.4.7.1", "--format", "calico,frr"],
    );
    let text = stdout(&out);
    assert!(text.contains("  nodeToNodeMeshEnabled: true\n"), "{text}");
    assert!(text.contains("  peerIP: 10.4.7.1\n"), "{text}");
    assert!(text.contains("  - cidr: 172.17.16.0/20\n"), "{text}");
    assert!(
        text.contains(" neighbor 10.4.7.11 peer-group KUBELAN\n"),
        "{text}"
    );
    assert!(
        text.contains(" neighbor 10.4.7.12 peer-group KUBELAN\n"),
        "{text}"
    );
    assert!(
        text.contains("ip prefix-list KUBELAN-CLUSTER seq 10 permit 172.17.32.0/23 le 32\n"),
        "{text}"
    );
    let out = routes(
        &lab,
        &[
            "--bgp",
            "--format",
            "frr",
            "--bgp-nodes",
            "kubernetes.io/hostname=node2",
        ],
    );
    assert!(!stdout(&out).contains("10.4.7.11"), "{}", stdout(&out));
    assert!(stdout(&out).contains(" neighbor 10.4.7.12 peer-group KUBELAN\n"));

    lab.down();
    drop(lab);
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}
