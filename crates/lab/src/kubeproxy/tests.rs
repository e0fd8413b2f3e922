//! Tests of the kube-proxy rules (pure) and, as root, of loading them into real network
//! namespaces and sending traffic through them.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubelan_sys::{Namespaces, enter_on_spawn};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use super::nft::run_nft;
use super::rules::{CHAIN_NAME_MAX, chain_name};
use super::*;

fn service(value: serde_json::Value) -> Service {
    serde_json::from_value(value).expect("service json")
}

fn slice(value: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(value).expect("slice json")
}

/// `default/web`: ClusterIP 172.17.16.50, port `http` 80/TCP.
fn web(kind: &str) -> Service {
    service(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": kind,
            "clusterIP": "172.17.16.50",
            "clusterIPs": ["172.17.16.50"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                       "targetPort": 8080, "nodePort": 30080}]
        }
    }))
}

/// A slice for `default/web` with two ready endpoints and one that is not ready.
fn web_slice() -> EndpointSlice {
    slice(json!({
        "metadata": {"name": "web-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["172.17.33.11"], "conditions": {"ready": true}},
            {"addresses": ["172.17.33.10"]},
            {"addresses": ["172.17.34.9"], "conditions": {"ready": false}}
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
}

fn input<'a>(services: &'a [Service], slices: &'a [EndpointSlice]) -> ProxyInput<'a> {
    ProxyInput {
        node_ips: vec![Ipv4Addr::new(10, 4, 7, 11)],
        cluster_cidr: "172.17.32.0/19".parse().unwrap(),
        masquerade_external: true,
        services,
        slices,
    }
}

/// The body of chain `name` (its rules, one per line), or `None`.
fn chain<'s>(script: &'s str, name: &str) -> Option<Vec<&'s str>> {
    let start = script.find(&format!("\tchain {name} {{\n"))?;
    let body = &script[start..];
    let body = &body[body.find('\n')? + 1..body.find("\n\t}")?];
    Some(body.lines().map(str::trim).collect())
}

/// The `elements = { … }` of a set or map, or "" when it has none.
fn elements<'s>(script: &'s str, name: &str) -> &'s str {
    let start = script
        .find(&format!(" {name} {{\n"))
        .unwrap_or_else(|| panic!("no set/map {name}"));
    let body = &script[start..];
    let body = &body[..body.find("\n\t}").unwrap()];
    body.split_once("elements = { ")
        .map_or("", |(_, rest)| rest.trim_end_matches(" }"))
}

fn svc_chain(base: &str) -> String {
    chain_name("service-", base)
}

#[test]
fn cluster_ip_with_two_endpoints() {
    let services = [web("ClusterIP")];
    let slices = [web_slice()];
    let script = ruleset(&input(&services, &slices));
    let svc = svc_chain("default/web/tcp/http");
    assert!(svc.starts_with("service-") && svc.ends_with("-default/web/tcp/http"));
    assert_eq!(
        elements(&script, "service-ips"),
        format!("172.17.16.50 . tcp . 80 : goto {svc}")
    );
    assert_eq!(elements(&script, "cluster-ips"), "172.17.16.50");
    let ep10 = chain_name("endpoint-", "default/web/tcp/http__172.17.33.10/8080");
    let ep11 = chain_name("endpoint-", "default/web/tcp/http__172.17.33.11/8080");
    assert_eq!(
        chain(&script, &svc).unwrap(),
        [
            "ip daddr 172.17.16.50 tcp dport 80 ip saddr != 172.17.32.0/19 jump mark-for-masquerade"
                .to_owned(),
            format!("numgen random mod 2 vmap {{ 0 : goto {ep10}, 1 : goto {ep11} }}"),
        ]
    );
    assert_eq!(
        chain(&script, &ep10).unwrap(),
        [
            "ip saddr 172.17.33.10 jump mark-for-masquerade",
            "meta l4proto tcp dnat to 172.17.33.10:8080"
        ]
    );
    assert!(chain(&script, &ep11).is_some());
    // The not-ready endpoint gets nothing; no NodePort for a ClusterIP Service.
    assert!(!script.contains("172.17.34.9"), "{script}");
    assert_eq!(elements(&script, "service-nodeports"), "");
    assert_eq!(elements(&script, "no-endpoint-services"), "");
    assert!(!script.contains("external-"));
    // Hooks and the masquerade machinery.
    for (base_chain, head) in [
        (
            "nat-prerouting",
            "type nat hook prerouting priority -100; policy accept;",
        ),
        (
            "nat-output",
            "type nat hook output priority -100; policy accept;",
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority 100; policy accept;",
        ),
    ] {
        assert_eq!(chain(&script, base_chain).unwrap()[0], head);
    }
    assert_eq!(
        chain(&script, "masquerading").unwrap(),
        [
            "meta mark & 0x00004000 == 0x00000000 return",
            "meta mark set meta mark ^ 0x00004000",
            "masquerade fully-random"
        ]
    );
    // Atomic replacement: declare, delete, define.
    assert!(
        script.contains("table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n")
    );
    assert!(script.ends_with("}\n"));
}

#[test]
fn udp_port() {
    let services = [service(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"clusterIP": "172.17.16.10", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "sctp", "port": 99, "protocol": "SCTP"}
        ]}
    }))];
    let slices = [slice(json!({
        "metadata": {"name": "kube-dns-1", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "kube-dns"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.17.33.53"]}],
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                  {"name": "dns-tcp", "port": 5354},
                  {"name": "sctp", "port": 99, "protocol": "SCTP"}]
    }))];
    let script = ruleset(&input(&services, &slices));
    let udp = svc_chain("kube-system/kube-dns/udp/dns");
    let tcp = svc_chain("kube-system/kube-dns/tcp/dns-tcp");
    assert_eq!(
        elements(&script, "service-ips"),
        format!("172.17.16.10 . tcp . 53 : goto {tcp}, 172.17.16.10 . udp . 53 : goto {udp}")
    );
    let ep = chain_name(
        "endpoint-",
        "kube-system/kube-dns/udp/dns__172.17.33.53/5353",
    );
    assert_eq!(
        chain(&script, &udp).unwrap()[0],
        "ip daddr 172.17.16.10 udp dport 53 ip saddr != 172.17.32.0/19 jump mark-for-masquerade"
    );
    assert_eq!(
        chain(&script, &ep).unwrap()[1],
        "meta l4proto udp dnat to 172.17.33.53:5353"
    );
    assert!(script.contains("meta l4proto tcp dnat to 172.17.33.53:5354"));
    assert!(!script.contains("sctp"), "{script}");
}

#[test]
fn node_port() {
    let services = [web("NodePort")];
    let slices = [web_slice()];
    let mut inp = input(&services, &slices);
    inp.node_ips = vec![
        Ipv4Addr::new(10, 4, 7, 12),
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(10, 4, 7, 11),
    ];
    let script = ruleset(&inp);
    let svc = svc_chain("default/web/tcp/http");
    let ext = chain_name("external-", "default/web/tcp/http");
    assert_eq!(elements(&script, "nodeport-ips"), "10.4.7.11, 10.4.7.12");
    assert_eq!(
        elements(&script, "service-nodeports"),
        format!("tcp . 30080 : goto {ext}")
    );
    // The ClusterIP still goes straight to the service chain.
    assert_eq!(
        elements(&script, "service-ips"),
        format!("172.17.16.50 . tcp . 80 : goto {svc}")
    );
    assert_eq!(
        chain(&script, &ext).unwrap(),
        ["jump mark-for-masquerade".to_owned(), format!("goto {svc}")]
    );
    assert_eq!(
        chain(&script, "services").unwrap(),
        [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
        ]
    );
}

#[test]
fn load_balancer_ingress_and_external_ips() {
    let mut svc = web("LoadBalancer");
    svc.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.7".into(), "2001:db8::1".into()]);
    svc.status = Some(
        serde_json::from_value(json!({
            "loadBalancer": {"ingress": [{"ip": "192.0.2.8"}, {"hostname": "lb.example"}]}
        }))
        .unwrap(),
    );
    let services = [svc];
    let slices = [web_slice()];
    let script = ruleset(&input(&services, &slices));
    let ext = chain_name("external-", "default/web/tcp/http");
    let map = elements(&script, "service-ips");
    assert!(
        map.contains(&format!("192.0.2.7 . tcp . 80 : goto {ext}")),
        "{map}"
    );
    assert!(
        map.contains(&format!("192.0.2.8 . tcp . 80 : goto {ext}")),
        "{map}"
    );
    assert!(!script.contains("2001:db8"));
    assert_eq!(
        elements(&script, "service-nodeports"),
        format!("tcp . 30080 : goto {ext}")
    );
}

#[test]
fn service_without_endpoints_is_rejected() {
    let services = [web("NodePort")];
    let unready = [slice(json!({
        "metadata": {"name": "web-x", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.17.33.10"], "conditions": {"ready": false}}],
        "ports": [{"name": "http", "port": 8080}]
    }))];
    for slices in [&[][..], &unready[..]] {
        let script = ruleset(&input(&services, slices));
        assert_eq!(elements(&script, "service-ips"), "");
        assert_eq!(elements(&script, "service-nodeports"), "");
        assert_eq!(
            elements(&script, "no-endpoint-services"),
            "172.17.16.50 . tcp . 80 : goto reject-chain"
        );
        assert_eq!(
            elements(&script, "no-endpoint-nodeports"),
            "tcp . 30080 : goto reject-chain"
        );
        assert_eq!(elements(&script, "cluster-ips"), "172.17.16.50");
        assert!(!script.contains("chain service-"), "{script}");
        assert!(!script.contains("chain endpoint-"), "{script}");
        assert_eq!(
            chain(&script, "reject-chain").unwrap(),
            ["meta l4proto tcp reject with tcp reset", "reject"]
        );
        for hook in ["filter-input", "filter-forward", "filter-output"] {
            assert!(
                chain(&script, hook)
                    .unwrap()
                    .contains(&"ct state new jump endpoints-check"),
                "{hook}"
            );
        }
    }
}

#[test]
fn headless_and_external_name_get_nothing() {
    let services = [
        service(json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"],
                     "ports": [{"name": "pg", "port": 5432}]}
        })),
        service(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com",
                     "ports": [{"port": 80}]}
        })),
    ];
    let slices = [slice(json!({
        "metadata": {"name": "db-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.17.33.20"]}],
        "ports": [{"name": "pg", "port": 5432}]
    }))];
    let script = ruleset(&input(&services, &slices));
    assert_eq!(script, ruleset(&input(&[], &[])));
    for name in [
        "cluster-ips",
        "service-ips",
        "service-nodeports",
        "no-endpoint-services",
        "no-endpoint-nodeports",
    ] {
        assert_eq!(elements(&script, name), "", "{name}");
    }
}

#[test]
fn masquerade_external_off_keeps_hairpin_and_node_port_masquerade() {
    let services = [web("NodePort")];
    let slices = [web_slice()];
    let mut inp = input(&services, &slices);
    inp.masquerade_external = false;
    let script = ruleset(&inp);
    assert!(!script.contains("ip saddr !="), "{script}");
    let svc = chain(&script, &svc_chain("default/web/tcp/http")).unwrap();
    assert_eq!(svc.len(), 1);
    assert!(svc[0].starts_with("numgen random mod 2 vmap"));
    let ep = chain_name("endpoint-", "default/web/tcp/http__172.17.33.10/8080");
    assert_eq!(
        chain(&script, &ep).unwrap()[0],
        "ip saddr 172.17.33.10 jump mark-for-masquerade"
    );
    let ext = chain_name("external-", "default/web/tcp/http");
    assert_eq!(chain(&script, &ext).unwrap()[0], "jump mark-for-masquerade");
}

#[test]
fn output_is_deterministic() {
    let mut services = vec![web("NodePort")];
    services.push(service(json!({
        "metadata": {"name": "api", "namespace": "team"},
        "spec": {"clusterIP": "172.17.16.77", "ports": [{"port": 443, "targetPort": 6443}]}
    })));
    let mut slices = vec![web_slice()];
    slices.push(slice(json!({
        "metadata": {"name": "api-1", "namespace": "team",
                     "labels": {"kubernetes.io/service-name": "api"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.17.35.3"]}, {"addresses": ["172.17.33.3"]}],
        "ports": [{"port": 6443}]
    })));
    // The same endpoint repeated in a second slice is merged.
    let mut dup = web_slice();
    dup.metadata.name = Some("web-def".into());
    slices.push(dup);
    let a = ruleset(&input(&services, &slices));
    services.reverse();
    slices.reverse();
    let b = ruleset(&input(&services, &slices));
    assert_eq!(a, b);
    assert_eq!(a.matches("dnat to 172.17.33.10:8080").count(), 1);
    // An unnamed port is matched to an unnamed slice port.
    assert!(
        a.contains("meta l4proto tcp dnat to 172.17.33.3:6443"),
        "{a}"
    );
    assert!(a.contains("-team/api/tcp/ {"), "{a}");
}

fn odd_services() -> Vec<Service> {
    vec![
        service(json!({"metadata": {"name": "nospec"}})),
        service(json!({"spec": {"clusterIP": "172.17.16.1"}})),
        service(json!({"metadata": {"name": "noports"}, "spec": {"clusterIP": "172.17.16.2"}})),
        service(json!({"metadata": {"name": "pending"}, "spec": {"clusterIP": ""}})),
        service(json!({"metadata": {"name": "v6"},
                       "spec": {"clusterIP": "fd00::5", "ports": [{"port": 80}]}})),
        service(json!({"metadata": {"name": "dual", "namespace": "default"},
                       "spec": {"clusterIPs": ["fd00::6", "172.17.16.6"],
                                "ports": [{"port": 0}, {"port": 70000}, {"port": 81}]}})),
        service(
            json!({"metadata": {"name": "Odd Name!", "namespace": "x\"y"},
                       "spec": {"clusterIP": "172.17.16.7", "ports": [{"name": "p q", "port": 1}]}}),
        ),
    ]
}

fn odd_slices() -> Vec<EndpointSlice> {
    vec![
        slice(json!({"metadata": {"name": "nolabels"}, "addressType": "IPv4", "endpoints": []})),
        slice(json!({"metadata": {"namespace": "default",
                                  "labels": {"kubernetes.io/service-name": "dual"}},
                     "addressType": "IPv6",
                     "endpoints": [{"addresses": ["fd00::9"]}], "ports": [{"port": 80}]})),
        slice(json!({"metadata": {"namespace": "default",
                                  "labels": {"kubernetes.io/service-name": "dual"}},
                     "addressType": "IPv4",
                     "endpoints": [{"addresses": []}, {"addresses": ["garbage"]},
                                   {"addresses": ["172.17.33.66"]}]})),
        slice(json!({"metadata": {"namespace": "default",
                                  "labels": {"kubernetes.io/service-name": "dual"}},
                     "addressType": "IPv4",
                     "endpoints": [{"addresses": ["172.17.33.67"]}],
                     "ports": [{"port": -1}, {"name": "other", "port": 81}]})),
        slice(json!({"metadata": {"namespace": "x\"y",
                                  "labels": {"kubernetes.io/service-name": "Odd Name!"}},
                     "addressType": "IPv4",
                     "endpoints": [{"addresses": ["172.17.33.68"]}],
                     "ports": [{"name": "p q", "port": 2}]})),
    ]
}

#[test]
fn odd_input_does_not_panic() {
    let (services, slices) = (odd_services(), odd_slices());
    let script = ruleset(&input(&services, &slices));
    // Only `dual` (port 81, no usable endpoints) and the odd one survive.
    assert_eq!(
        elements(&script, "no-endpoint-services"),
        "172.17.16.6 . tcp . 81 : goto reject-chain"
    );
    let odd = chain_name("service-", "x\"y/Odd Name!/tcp/p q");
    assert!(odd.ends_with("-x_y/Odd_Name_/tcp/p_q"), "{odd}");
    assert!(chain(&script, &odd).is_some(), "{script}");
    assert!(!script.contains("x\"y"), "{script}");
    // Very long names are capped, and stay distinct through the hash.
    let long_a = chain_name("endpoint-", &"a".repeat(300));
    let long_b = chain_name("endpoint-", &format!("{}b", "a".repeat(299)));
    assert_eq!(long_a.len(), CHAIN_NAME_MAX);
    assert_ne!(long_a, long_b);
}

#[test]
fn remove_script_names_the_table() {
    assert_eq!(
        remove_script(),
        "table ip kube-proxy\ndelete table ip kube-proxy\n"
    );
}

/// Tests that need root: they build their own network namespaces (named
/// `klkp-<pid>-<test>-…`), never touch the machine's own namespace, and remove
/// everything through a drop guard, also on failure.
mod netns {
    use super::*;
    use std::io::Read as _;
    use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
    use std::process::Command;
    use std::time::Instant;

    use kubelan_sys::{in_netns, netns_path};

    fn root() -> bool {
        let root = nix::unistd::Uid::effective().is_root();
        if !root {
            eprintln!("skipping: this test needs root (network namespaces and nftables)");
        }
        root
    }

    /// Network namespaces created by one test; deleted on drop.
    struct Lab {
        prefix: String,
        names: Vec<String>,
    }

    impl Lab {
        fn new(test: &str) -> Self {
            Self {
                prefix: format!("klkp-{}-{test}-", std::process::id()),
                names: Vec::new(),
            }
        }

        /// Creates namespace `<prefix><short>` with `lo` up and returns its name.
        fn add(&mut self, short: &str) -> String {
            let name = format!("{}{short}", self.prefix);
            self.names.push(name.clone());
            run("ip", &["netns", "add", &name]);
            ip(&name, &["link", "set", "lo", "up"]);
            name
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            for name in self.names.iter().rev() {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }

    fn run(program: &str, args: &[&str]) {
        let out = Command::new(program).args(args).output().expect(program);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -n NS ARGS`: always inside one of our namespaces.
    fn ip(ns: &str, args: &[&str]) {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    fn sysctl(ns: &str, key: &str, value: &str) {
        let file = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        in_netns(&netns_path(ns), move || std::fs::write(file, value))
            .expect("enter netns")
            .expect("write sysctl");
    }

    /// `nft ARGS` inside `ns`, returning its standard output.
    fn nft_output(ns: &str, args: &[&str]) -> String {
        let mut cmd = Command::new("nft");
        cmd.args(args);
        let nsfd = Arc::new(Namespaces::net(&netns_path(ns)).expect("netns"));
        enter_on_spawn(&mut cmd, nsfd, kubelan_sys::Cwd::Inherit, None).expect("enter");
        let out = cmd.output().expect("nft");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A Service with a TCP port (80 → 8080, NodePort 30080) and a UDP port
    /// (53 → 5353), and a slice with the given ready endpoints.
    fn fixture(
        ns: &str,
        name: &str,
        cluster_ip: &str,
        node_port: Option<u16>,
        endpoints: &[&str],
    ) -> (Service, EndpointSlice) {
        let mut tcp = json!({"name": "http", "port": 80, "targetPort": 8080});
        if let Some(np) = node_port {
            tcp["nodePort"] = json!(np);
        }
        let svc = service(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
                "clusterIP": cluster_ip,
                "ports": [tcp, {"name": "dns", "port": 53, "protocol": "UDP",
                                "targetPort": 5353}]
            }
        }));
        let eps: Vec<_> = endpoints
            .iter()
            .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
            .collect();
        let sl = slice(json!({
            "metadata": {"name": format!("{name}-1"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}]
        }));
        (svc, sl)
    }

    /// `count` Services (up to 4000) with NodePorts on every other one, 3 endpoints
    /// each.
    fn many(count: u16) -> (Vec<Service>, Vec<EndpointSlice>) {
        (0..count)
            .map(|i| {
                let n = i + 1;
                let cip = format!("172.17.{}.{}", 16 + n / 256, n % 256);
                let eps: Vec<String> = (0..3)
                    .map(|e| format!("172.17.{}.{}", 33 + e, 2 + i % 250))
                    .collect();
                let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
                let np = (i % 2 == 0).then_some(30000 + i);
                fixture("bench", &format!("svc{i}"), &cip, np, &eps)
            })
            .unzip()
    }

    #[tokio::test]
    async fn nft_check_mode_accepts_generated_scripts() {
        if !root() {
            return;
        }
        let mut lab = Lab::new("check");
        let ns = lab.add("n");
        let path = netns_path(&ns);
        let (svcs, slices) = many(5);
        let mut lb = web("LoadBalancer");
        lb.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.7".into()]);
        let (odd_svcs, odd_slices) = (odd_services(), odd_slices());
        let dns = [service(json!({
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "172.17.16.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))];
        let scripts = [
            ruleset(&input(&[], &[])),
            ruleset(&input(&svcs, &slices)),
            ruleset(&input(&[web("NodePort")], &[web_slice()])),
            ruleset(&input(&[web("NodePort")], &[])),
            ruleset(&input(&[lb], &[web_slice()])),
            ruleset(&input(&odd_svcs, &odd_slices)),
            ruleset(&input(&dns, &[])),
            ruleset(&ProxyInput {
                masquerade_external: false,
                ..input(&svcs, &slices)
            }),
            remove_script(),
        ];
        for script in &scripts {
            if let Err(e) = run_nft(&path, &["-c", "-f", "-"], script).await {
                panic!("{e}\n{script}");
            }
        }
        // Check mode changed nothing.
        assert!(!nft_output(&ns, &["list", "ruleset"]).contains("kube-proxy"));
    }

    #[tokio::test]
    async fn apply_replaces_atomically_and_reports_errors() {
        if !root() {
            return;
        }
        let mut lab = Lab::new("apply");
        let ns = lab.add("n");
        let path = netns_path(&ns);

        // Removing a table that does not exist is fine.
        apply(&path, &remove_script())
            .await
            .expect("remove nothing");

        let (svcs, slices) = many(20);
        let started = Instant::now();
        let script = ruleset(&input(&svcs, &slices));
        let generate = started.elapsed();
        let mut times = Vec::new();
        for round in 0..5 {
            // Alternate the fault flag so every round really changes the table.
            let script = ruleset(&ProxyInput {
                masquerade_external: round % 2 == 0,
                ..input(&svcs, &slices)
            });
            let t = Instant::now();
            apply(&path, &script).await.expect("apply");
            times.push(t.elapsed());
        }
        let listed = nft_output(&ns, &["list", "table", "ip", "kube-proxy"]);
        // 20 Services x 2 ports, 3 endpoints each, NodePorts on 10 Services (TCP only).
        assert_eq!(listed.matches("\tchain service-").count(), 40);
        assert_eq!(listed.matches("\tchain endpoint-").count(), 120);
        assert_eq!(listed.matches("\tchain external-").count(), 10);
        assert_eq!(listed.matches("\tchain ").count(), 40 + 120 + 10 + 13);
        // The last round (4) had masquerade_external = true.
        assert_eq!(listed.matches("ip saddr != 172.17.32.0/19").count(), 40);
        let big = many(1000);
        let t = Instant::now();
        let big_script = ruleset(&input(&big.0, &big.1));
        let generate_big = t.elapsed();
        println!(
            "kubeproxy: 20 Services ({} bytes): ruleset {generate:?}, apply {times:?}; \
             1000 Services ({} bytes): ruleset {generate_big:?}",
            script.len(),
            big_script.len()
        );

        // A bad script fails with nft's message and leaves the table as it was.
        let err = apply(
            &path,
            "table ip kube-proxy {\n\tchain x {\n\t\tbogus rule\n\t}\n}\n",
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ProxyError::Nft { .. }), "{msg}");
        assert!(msg.contains("Error"), "{msg}");
        assert_eq!(
            nft_output(&ns, &["list", "table", "ip", "kube-proxy"]),
            listed
        );

        apply(&path, &remove_script()).await.expect("remove");
        assert!(!nft_output(&ns, &["list", "ruleset"]).contains("kube-proxy"));

        let missing = netns_path(&format!("{}missing", lab.prefix));
        let err = apply(&missing, &script).await.unwrap_err();
        assert!(matches!(err, ProxyError::Namespace(_)), "{err}");
    }

    /// What one attempt to talk to a Service gave: the reply, or the error kind and
    /// how long it took to fail.
    type Outcome = Result<String, (std::io::ErrorKind, Duration)>;

    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

    fn tcp_once(addr: SocketAddrV4) -> Outcome {
        let started = Instant::now();
        let fail = |e: std::io::Error| (e.kind(), started.elapsed());
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::V4(addr), ATTEMPT_TIMEOUT).map_err(fail)?;
        s.set_read_timeout(Some(ATTEMPT_TIMEOUT)).map_err(fail)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(fail)?;
        Ok(reply.trim().to_owned())
    }

    fn udp_once(addr: SocketAddrV4) -> Outcome {
        let started = Instant::now();
        let fail = |e: std::io::Error| (e.kind(), started.elapsed());
        let s = UdpSocket::bind("0.0.0.0:0").map_err(fail)?;
        s.set_read_timeout(Some(ATTEMPT_TIMEOUT)).map_err(fail)?;
        s.connect(addr).map_err(fail)?;
        s.send(b"?").map_err(fail)?;
        let mut buf = [0u8; 128];
        let n = s.recv(&mut buf).map_err(fail)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    }

    /// Makes `count` attempts with `once` from inside namespace `ns` (on a thread of
    /// its own, off the async runtime). Each attempt is bounded by ATTEMPT_TIMEOUT.
    async fn attempts(
        ns: &str,
        addr: &str,
        count: usize,
        once: fn(SocketAddrV4) -> Outcome,
    ) -> Vec<Outcome> {
        let path = netns_path(ns);
        let addr: SocketAddrV4 = addr.parse().unwrap();
        tokio::task::spawn_blocking(move || {
            in_netns(&path, move || (0..count).map(|_| once(addr)).collect())
        })
        .await
        .expect("join")
        .expect("enter netns")
    }

    /// All attempts succeeded; returns the replies ("<pod> <peer address>").
    fn all_ok(what: &str, outcomes: Vec<Outcome>) -> Vec<String> {
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|e| panic!("{what}: attempt failed: {e:?}")))
            .collect()
    }

    /// Every attempt failed with "connection refused" in well under a second.
    fn all_refused_fast(what: &str, outcomes: Vec<Outcome>) {
        for o in outcomes {
            match o {
                Err((std::io::ErrorKind::ConnectionRefused, took))
                    if took < Duration::from_secs(1) => {}
                other => panic!("{what}: expected a fast refusal, got {other:?}"),
            }
        }
    }

    /// Starts a TCP server on :8080 and a UDP server on :5353 inside pod namespace
    /// `ns`; both answer "<tag> <peer address>". The tasks end with the runtime.
    fn serve(ns: &str, tag: &'static str) -> Vec<tokio::task::JoinHandle<()>> {
        let (tcp, udp) = in_netns(&netns_path(ns), || {
            let tcp = std::net::TcpListener::bind("0.0.0.0:8080").expect("bind tcp");
            let udp = UdpSocket::bind("0.0.0.0:5353").expect("bind udp");
            (tcp, udp)
        })
        .expect("enter pod netns");
        tcp.set_nonblocking(true).unwrap();
        udp.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
        let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
        let t = tokio::spawn(async move {
            while let Ok((mut s, peer)) = tcp.accept().await {
                let _ = s
                    .write_all(format!("{tag} {}\n", peer.ip()).as_bytes())
                    .await;
            }
        });
        let u = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            while let Ok((_, peer)) = udp.recv_from(&mut buf).await {
                let _ = udp
                    .send_to(format!("{tag} {}", peer.ip()).as_bytes(), peer)
                    .await;
            }
        });
        vec![t, u]
    }

    /// Node 10.4.7.11 (eth0) with bridge cni0 172.17.33.1/24 and two pods
    /// (172.17.33.10 = pod-a, 172.17.33.11 = pod-b, /32 with a default route via
    /// the node), a client 10.4.7.200 that routes the Service CIDR via the node, and
    /// a default route on the node into a sink namespace (so nothing leaves the lab).
    /// Bridge netfilter is on (the kernel default), so the pod ports need hairpin mode.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_traffic_through_a_node() {
        if root() {
            traffic_scenario("traffic", true).await;
        }
    }

    /// The same with `net.bridge.bridge-nf-call-iptables=0` on the node: every pod
    /// packet is routed by the node (no hairpin mode needed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_traffic_through_a_node_without_bridge_netfilter() {
        if root() {
            traffic_scenario("traffic-l3", false).await;
        }
    }

    async fn traffic_scenario(test: &str, bridge_netfilter: bool) {
        let mut lab = Lab::new(test);
        let node = lab.add("node");
        let pod_a = lab.add("pod-a");
        let pod_b = lab.add("pod-b");
        let client = lab.add("client");
        let sink = lab.add("sink");

        ip(&node, &["link", "add", "cni0", "type", "bridge"]);
        ip(&node, &["addr", "add", "172.17.33.1/24", "dev", "cni0"]);
        ip(&node, &["link", "set", "cni0", "up"]);
        ip(
            &node,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &client,
            ],
        );
        ip(&node, &["addr", "add", "10.4.7.11/24", "dev", "eth0"]);
        ip(&node, &["link", "set", "eth0", "up"]);
        // The node's default route leads into a namespace that drops everything
        // (forwarding is off there), as a stand-in for the node's uplink.
        ip(
            &node,
            &[
                "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", &sink,
            ],
        );
        ip(&node, &["addr", "add", "192.0.2.1/24", "dev", "uplink"]);
        ip(&node, &["link", "set", "uplink", "up"]);
        ip(&node, &["route", "add", "default", "via", "192.0.2.2"]);
        ip(&sink, &["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        ip(&sink, &["link", "set", "eth0", "up"]);
        sysctl(&sink, "net.ipv4.ip_forward", "0");
        sysctl(&node, "net.ipv4.ip_forward", "1");
        if !bridge_netfilter {
            sysctl(&node, "net.bridge.bridge-nf-call-iptables", "0");
        }
        ip(&client, &["addr", "add", "10.4.7.200/24", "dev", "eth0"]);
        ip(&client, &["link", "set", "eth0", "up"]);
        ip(
            &client,
            &["route", "add", "172.17.16.0/20", "via", "10.4.7.11"],
        );
        for (pod, veth, addr) in [
            (&pod_a, "veth-a", "172.17.33.10/32"),
            (&pod_b, "veth-b", "172.17.33.11/32"),
        ] {
            ip(
                &node,
                &[
                    "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod,
                ],
            );
            ip(&node, &["link", "set", veth, "master", "cni0", "up"]);
            // As the CNI bridge plugin's `hairpinMode`: with br_netfilter (on by
            // default), a pod reaching itself through a Service is DNATed at the
            // bridge and sent back out its own port, which needs hairpin mode.
            if bridge_netfilter {
                ip(
                    &node,
                    &["link", "set", veth, "type", "bridge_slave", "hairpin", "on"],
                );
            }
            ip(pod, &["addr", "add", addr, "dev", "eth0"]);
            ip(pod, &["link", "set", "eth0", "up"]);
            ip(
                pod,
                &[
                    "route",
                    "add",
                    "172.17.33.1",
                    "dev",
                    "eth0",
                    "scope",
                    "link",
                ],
            );
            ip(
                pod,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "172.17.33.1",
                    "dev",
                    "eth0",
                ],
            );
        }
        let forwarding = in_netns(&netns_path(&node), || {
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        });
        assert_eq!(forwarding.unwrap().unwrap().trim(), "1");

        let mut servers = serve(&pod_a, "pod-a");
        servers.extend(serve(&pod_b, "pod-b"));

        let (web, web_slice) = fixture(
            "default",
            "web",
            "172.17.16.50",
            Some(30080),
            &["172.17.33.10", "172.17.33.11"],
        );
        let (empty, empty_slice) = fixture("default", "empty", "172.17.16.60", Some(30090), &[]);
        let services = [web, empty];
        let slices = [web_slice, empty_slice];
        let mut proxy = ProxyInput {
            node_ips: vec![Ipv4Addr::new(10, 4, 7, 11)],
            cluster_cidr: "172.17.32.0/19".parse().unwrap(),
            masquerade_external: true,
            services: &services,
            slices: &slices,
        };
        let node_path = netns_path(&node);
        apply(&node_path, &ruleset(&proxy)).await.expect("apply");

        // Client -> ClusterIP: both pods answer; the source outside the Pod CIDR is
        // masqueraded to the node's cni0 address.
        let replies = all_ok(
            "client->ClusterIP",
            attempts(&client, "172.17.16.50:80", 20, tcp_once).await,
        );
        assert!(
            replies.contains(&"pod-a 172.17.33.1".to_owned()),
            "{replies:?}"
        );
        assert!(
            replies.contains(&"pod-b 172.17.33.1".to_owned()),
            "{replies:?}"
        );
        assert!(
            replies.iter().all(|r| r.ends_with(" 172.17.33.1")),
            "{replies:?}"
        );

        // UDP goes through the same way.
        let replies = all_ok(
            "client->ClusterIP/udp",
            attempts(&client, "172.17.16.50:53", 10, udp_once).await,
        );
        assert!(replies.iter().all(|r| r.starts_with("pod-")), "{replies:?}");

        // NodePort from another host.
        let replies = all_ok(
            "client->NodePort",
            attempts(&client, "10.4.7.11:30080", 10, tcp_once).await,
        );
        assert!(
            replies.iter().all(|r| r.ends_with(" 172.17.33.1")),
            "{replies:?}"
        );

        // Pod -> Service keeps the pod's address, except hairpin (answered by the
        // calling pod itself), which is masqueraded.
        let replies = all_ok(
            "pod-a->ClusterIP",
            attempts(&pod_a, "172.17.16.50:80", 20, tcp_once).await,
        );
        for r in &replies {
            assert!(
                r == "pod-b 172.17.33.10" || r == "pod-a 172.17.33.1",
                "{replies:?}"
            );
        }
        assert!(
            replies.iter().any(|r| r.starts_with("pod-a")),
            "{replies:?}"
        );
        assert!(
            replies.iter().any(|r| r.starts_with("pod-b")),
            "{replies:?}"
        );

        // A process on the node (output hook).
        let replies = all_ok(
            "node->ClusterIP",
            attempts(&node, "172.17.16.50:80", 5, tcp_once).await,
        );
        assert!(replies.iter().all(|r| r.starts_with("pod-")), "{replies:?}");
        let replies = all_ok(
            "node->NodePort",
            attempts(&node, "10.4.7.11:30080", 5, tcp_once).await,
        );
        assert!(replies.iter().all(|r| r.starts_with("pod-")), "{replies:?}");

        // No endpoints, or a port the Service does not define: refused at once.
        all_refused_fast(
            "client->empty",
            attempts(&client, "172.17.16.60:80", 3, tcp_once).await,
        );
        all_refused_fast(
            "client->undefined port",
            attempts(&client, "172.17.16.50:81", 3, tcp_once).await,
        );
        all_refused_fast(
            "client->empty NodePort",
            attempts(&client, "10.4.7.11:30090", 3, tcp_once).await,
        );
        all_refused_fast(
            "node->empty",
            attempts(&node, "172.17.16.60:80", 3, tcp_once).await,
        );
        all_refused_fast(
            "pod-a->empty",
            attempts(&pod_a, "172.17.16.60:80", 3, tcp_once).await,
        );
        // UDP to a Service without endpoints: ICMP port unreachable.
        all_refused_fast(
            "client->empty/udp",
            attempts(&client, "172.17.16.60:53", 3, udp_once).await,
        );

        // The "seed 001" fault: the client's address reaches the pods unchanged;
        // NodePort traffic is still masqueraded.
        proxy.masquerade_external = false;
        apply(&node_path, &ruleset(&proxy)).await.expect("re-apply");
        let replies = all_ok(
            "client->ClusterIP (fault)",
            attempts(&client, "172.17.16.50:80", 10, tcp_once).await,
        );
        assert!(
            replies.iter().all(|r| r.ends_with(" 10.4.7.200")),
            "{replies:?}"
        );
        let replies = all_ok(
            "client->NodePort (fault)",
            attempts(&client, "10.4.7.11:30080", 5, tcp_once).await,
        );
        assert!(
            replies.iter().all(|r| r.ends_with(" 172.17.33.1")),
            "{replies:?}"
        );

        for s in servers {
            s.abort();
        }
    }
}
