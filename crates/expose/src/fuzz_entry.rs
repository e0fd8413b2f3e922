//! Entry point of the cargo-fuzz target `fuzz/fuzz_targets/expose_spec.rs` and the corpus
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
