//! Entry points of the cargo-fuzz targets `fuzz/fuzz_targets/expose_spec.rs` and
//! `replace_spec.rs`, and of the corpus
//! replay test (`crates/kubelan/tests/fuzz_corpus.rs`). Must return normally for any input.

use crate::spec::{LocalTarget, plan};

/// `kubelan expose` arguments: each line is tried as a `[HOST:]PORT[/udp]` target (what
/// parses prints in a canonical form that parses to the same target), then the lines are
/// planned as targets with `--port` values taken from lines starting with `=` and the
/// first line starting with `@` as `--name`; a plan's Service ports are unique per
/// protocol, its relay ports unprivileged and its carrier port unused by them.
pub fn expose_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut targets = Vec::new();
    let mut ports = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix('=') {
            ports.push(p.to_string());
            continue;
        }
        if let Some(n) = line.strip_prefix('@') {
            name.get_or_insert_with(|| n.to_string());
            continue;
        }
        if let Ok(t) = line.parse::<LocalTarget>() {
            let back: LocalTarget = t.to_string().parse().expect("a printed target parses");
            assert_eq!(back, t);
        }
        targets.push(line.to_string());
    }
    if let Ok(p) = plan(&targets, &ports, name.as_deref()) {
        for (i, a) in p.ports.iter().enumerate() {
            assert!(a.relay_port >= 1024 && a.relay_port != p.carrier_port);
            assert!(a.port_name().len() <= 15);
            for b in &p.ports[i + 1..] {
                assert!((a.service_port, a.local.protocol) != (b.service_port, b.local.protocol));
            }
        }
    }
}

/// `kubelan replace` arguments: the first line as `svc/NAME`, the others as
/// `[LOCAL:]PORT[/proto]` (what parses prints canonically and parses back to itself), then
/// planned against a Service with a named, a numbered and a UDP port: every listener's
/// port is unique per protocol, not the carrier port, and its container port name is at
/// most 15 characters.
pub fn replace_spec(data: &[u8]) {
    use kubelan_cluster::replace::{ReplacedPort, TargetPort};

    use crate::replace_plan::{parse_port_arg, parse_service, plan_replace};

    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    if let Some(first) = lines.next() {
        let _ = parse_service(first);
    }
    let mut args = Vec::new();
    for line in lines {
        if let Ok(a) = parse_port_arg(line) {
            let back = parse_port_arg(&a.to_string()).expect("a printed argument parses");
            assert_eq!(back, a);
            args.push(a);
        }
    }
    let port = |name: &str, port, protocol: &str, target| ReplacedPort {
        name: Some(name.into()),
        port,
        protocol: protocol.into(),
        target,
    };
    let ports = [
        port("http", 80, "TCP", TargetPort::Name("http".into())),
        port("admin", 9090, "TCP", TargetPort::Number(7445)),
        port("dns", 53, "UDP", TargetPort::Number(53)),
        port("dns-tcp", 53, "TCP", TargetPort::Number(53)),
    ];
    if let Ok(p) = plan_replace("web", &args, &ports) {
        assert_eq!(p.listeners.len(), p.ports.len());
        for (i, a) in p.listeners.iter().enumerate() {
            assert_ne!(a.port, p.carrier_port);
            assert!(!a.port_name.is_empty() && a.port_name.len() <= 15);
            for b in &p.listeners[i + 1..] {
                assert!((a.port, a.protocol) != (b.port, b.protocol));
                assert_ne!(a.port_name, b.port_name);
            }
        }
    }
}

/// `/proc/<pid>/net/tcp{,6}` text and fd link targets (`kubelan run`'s port watch): rows
/// parse or are skipped, never panic; the listening set holds only listening rows whose
/// inodes the tree holds; a watch reports each port once and never an ignored one.
pub fn proc_net_tcp(data: &[u8]) {
    use std::collections::HashSet;

    use crate::ports::{PortWatch, listening, parse_net_tcp, socket_inode};

    let text = String::from_utf8_lossy(data);
    let rows = parse_net_tcp(&text);
    let mut inodes: HashSet<u64> = text.lines().filter_map(socket_inode).collect();
    // Every other row's inode is "held", so the filter is exercised both ways.
    inodes.extend(rows.iter().step_by(2).map(|r| r.inode));
    let ports = listening(&rows, &inodes);
    for (port, ip) in &ports {
        assert!(rows.iter().any(|r| r.local.port() == *port
            && r.local.ip() == *ip
            && r.state == 0x0A
            && inodes.contains(&r.inode)));
    }
    let ignore = rows.first().map(|r| r.local.port());
    let mut watch = PortWatch::new(ignore);
    let first = watch.update(&ports);
    assert!(first.iter().all(|a| Some(a.port()) != ignore));
    assert!(watch.update(&ports).is_empty());
}
