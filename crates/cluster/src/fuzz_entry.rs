//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/discovery_parse.rs`,
//! `fuzz/fuzz_targets/prefix_split.rs`, `fuzz/fuzz_targets/session_args.rs`,
//! `fuzz/fuzz_targets/completion_line.rs`) and the corpus replay test
//! (`crates/kubelan/tests/fuzz_corpus.rs`). Pure: no API server is involved. Each must
//! return normally for any input; a panic is a bug.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::discovery::parse;
use crate::discovery::plan::{RouteOptions, plan_routes};
use crate::discovery::prefix::{intersection, overlaps, subtract, subtract_all};
use crate::discovery::{ClusterFacts, Fact, Source};
use crate::session_objects::{RelayListener, SessionId};

/// What discovery reads from the API server: the input is tried as the message of the
/// API server's refusal of an out-of-range ClusterIP, as a kube-apiserver command line (one
/// argument per line), as Flannel's `net-conf.json`, and, when it is JSON, as what the API
/// returns (a `Status` with that message, a kube-apiserver Pod, Flannel's ConfigMap, a
/// Calico IPPool or list of them, a ServiceCIDR).
///
/// Whatever is found must be a truncated prefix, without duplicates where the parser
/// promises that, and must be found again when written back in the form it was read from.
pub fn discovery_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    probe_message(&text);
    let args: Vec<String> = text.lines().map(str::to_string).collect();
    apiserver_args(&args);
    apiserver_args(&[text.to_string()]);
    flannel(&text);
    calico(&json!({"spec": {"cidr": text}}));
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(message) = v.get("message").and_then(Value::as_str) {
        probe_message(message);
    }
    // A Pod (or a list of them): each container's command followed by its args.
    let pods = v
        .get("items")
        .and_then(Value::as_array)
        .map_or_else(|| vec![&v], |items| items.iter().collect());
    for pod in &pods {
        let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
        for c in containers.into_iter().flatten() {
            let strings = |key: &str| -> Vec<String> {
                c.get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            };
            let mut line = strings("command");
            line.extend(strings("args"));
            apiserver_args(&line);
        }
        calico(pod);
    }
    if let Some(conf) = v.pointer("/data/net-conf.json").and_then(Value::as_str) {
        flannel(conf);
    }
    let (good, bad) = parse::service_cidr_spec(&v);
    let listed = v
        .pointer("/spec/cidrs")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(good.len() + bad.len(), listed, "ServiceCIDR entries lost");
    assert!(good.iter().all(|n| *n == n.trunc()));
}

fn probe_message(message: &str) {
    let ranges = parse::valid_ranges_in_message(message);
    let reason = parse::probe_rejection_reason(message);
    assert!(!reason.is_empty());
    for (i, n) in ranges.iter().enumerate() {
        assert_eq!(*n, n.trunc(), "untruncated range {n}");
        assert!(!ranges[..i].contains(n), "duplicate range {n}");
    }
    if ranges.is_empty() {
        return;
    }
    assert!(
        message
            .to_ascii_lowercase()
            .contains("the range of valid ips is"),
        "ranges without the marker in {message:?}"
    );
    // The same ranges in the wording of current and old API servers.
    let list: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    let current = format!(
        "Service \"kubelan-cidr-probe\" is invalid: spec.clusterIPs: Invalid value: []string{{\"0.0.0.1\"}}: failed to allocate IP 0.0.0.1: the provided IP (0.0.0.1) is not in the valid range. The range of valid IPs is {}",
        list.join(",")
    );
    assert_eq!(parse::valid_ranges_in_message(&current), ranges);
    let old: Vec<String> = list
        .iter()
        .map(|n| format!("provided IP is not in the valid range. The range of valid IPs is {n}."))
        .collect();
    assert_eq!(parse::valid_ranges_in_message(&old.join(" ")), ranges);
}

fn apiserver_args(line: &[String]) {
    let Some(nets) = parse::service_range_flag(line) else {
        return;
    };
    assert!(
        line.iter()
            .any(|a| a.contains("--service-cluster-ip-range")),
        "a flag from nowhere"
    );
    assert!(nets.iter().all(|n| *n == n.trunc()));
    let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
    let kubeadm = [
        "kube-apiserver".to_string(),
        format!("--service-cluster-ip-range={}", list.join(",")),
    ];
    assert_eq!(parse::service_range_flag(&kubeadm), Some(nets.clone()));
    let spaced = [
        "kube-apiserver".to_string(),
        "--service-cluster-ip-range".to_string(),
        list.join(","),
    ];
    if !nets.is_empty() {
        assert_eq!(parse::service_range_flag(&spaced), Some(nets));
    }
}

fn flannel(net_conf: &str) {
    let Ok(nets) = parse::flannel_networks(net_conf) else {
        return;
    };
    assert!((1..=2).contains(&nets.len()), "{nets:?}");
    assert!(nets.iter().all(|n| *n == n.trunc()));
    let again = match nets[..] {
        [a] => json!({"Network": a.to_string(), "Backend": {"Type": "vxlan"}}),
        [a, b] => {
            json!({"Network": a.to_string(), "EnableIPv6": true, "IPv6Network": b.to_string()})
        }
        _ => unreachable!("checked above"),
    };
    assert_eq!(parse::flannel_networks(&again.to_string()), Ok(nets));
}

fn calico(pool: &Value) {
    match parse::calico_pool_cidr(pool) {
        Ok(Some(n)) => {
            assert_eq!(n, n.trunc());
            let again = json!({"spec": {"cidr": n.to_string(), "ipipMode": "Always"}});
            assert_eq!(parse::calico_pool_cidr(&again), Ok(Some(n)));
        }
        Ok(None) => assert_eq!(
            pool.pointer("/spec/disabled").and_then(Value::as_bool),
            Some(true),
            "a pool left out that is not disabled"
        ),
        Err(e) => assert!(!e.is_empty()),
    }
}

/// Prefix subtraction (`--exclude`) as route planning does it. The input builds a prefix
/// and up to 16 excludes: byte 0 picks the family (bit 0), then come the prefix's length
/// byte and address (4 or 16 bytes); each exclude is a control byte (bit 0: the other
/// family, bit 1: an address relative to the prefix, i.e. the prefix's network bits with
/// the given host bits), a length byte and an address. Missing bytes are zero.
///
/// The pieces of `net minus excludes` must be truncated, in order, disjoint, inside `net`,
/// disjoint from every exclude, and together with the excluded parts cover `net` exactly
/// (for IPv4 the addresses are also counted); none could be merged with another. Route
/// planning must route exactly those pieces.
pub fn prefix_split(data: &[u8]) {
    let mut bytes = Bytes(data);
    let v6 = bytes.next() & 1 == 1;
    let net = bytes.prefix(v6, None);
    let mut excludes = Vec::new();
    while !bytes.0.is_empty() && excludes.len() < 16 {
        let ctrl = bytes.next();
        let family = v6 ^ (ctrl & 1 == 1);
        let relative = (ctrl & 2 != 0 && family == v6).then_some(net);
        excludes.push(bytes.prefix(family, relative));
    }
    let pieces = subtract_all(net, &excludes);
    check_pieces(net.trunc(), &excludes, &pieces);
    if let [hole] = excludes[..] {
        let single = subtract(net, hole);
        assert_eq!(single, pieces, "subtract and subtract_all differ");
        let (n, h) = (net.trunc(), hole.trunc());
        if n.contains(&h) && n != h {
            assert_eq!(
                single.len(),
                usize::from(h.prefix_len() - n.prefix_len()),
                "not the minimal rest"
            );
        }
    }
    planned(net, &excludes, &pieces);
}

fn check_pieces(net: IpNet, excludes: &[IpNet], pieces: &[IpNet]) {
    for (i, p) in pieces.iter().enumerate() {
        assert_eq!(*p, p.trunc(), "untruncated piece {p}");
        assert!(net.contains(p), "{p} outside {net}");
        for x in excludes {
            assert!(!overlaps(p, x), "{p} overlaps the exclude {x}");
        }
        if let Some(next) = pieces.get(i + 1) {
            assert!(
                u128_of(p.broadcast()) < u128_of(next.network()),
                "{p} and {next} out of order or overlapping"
            );
        }
    }
    let mut merged = IpNet::aggregate(&pieces.to_vec());
    merged.sort();
    assert_eq!(merged, pieces, "pieces that could be merged");

    // The pieces and the excluded parts tile `net`.
    let mut excluded: Vec<IpNet> = excludes
        .iter()
        .filter_map(|x| intersection(&net, x))
        .collect();
    excluded = IpNet::aggregate(&excluded);
    let mut tiles: Vec<IpNet> = pieces.iter().chain(&excluded).copied().collect();
    tiles.sort();
    let mut expected = Some(u128_of(net.network()));
    for t in &tiles {
        assert_eq!(
            Some(u128_of(t.network())),
            expected,
            "gap or overlap at {t}"
        );
        expected = u128_of(t.broadcast()).checked_add(1);
    }
    let end = u128_of(net.broadcast()).checked_add(1);
    assert_eq!(expected, end, "the pieces do not reach the end of {net}");
    if let IpNet::V4(_) = net {
        let size = |p: &IpNet| 1u64 << (32 - p.prefix_len());
        assert_eq!(
            tiles.iter().map(size).sum::<u64>(),
            size(&net),
            "addresses lost or added"
        );
    }
}

/// Route planning with the prefix as the only cluster prefix and no local routes: it
/// routes exactly the pieces, and pins exactly the addresses inside them.
fn planned(net: IpNet, excludes: &[IpNet], pieces: &[IpNet]) {
    let facts = ClusterFacts {
        service_cidrs: vec![Fact::new(net, Source::InvalidClusterIpProbe)],
        pod_cidrs: Vec::new(),
        cluster_domain: Fact::guess("cluster.local".into(), Source::Default),
        dns_server: None,
        notes: Vec::new(),
    };
    let never_route: Vec<IpAddr> = [net.addr(), net.network(), net.broadcast()]
        .into_iter()
        .chain(excludes.iter().map(IpNet::addr))
        .collect();
    let opts = RouteOptions {
        exclude: excludes.to_vec(),
        force_route: Vec::new(),
        never_route: never_route.clone(),
    };
    let plan = plan_routes(&facts, &[], &[], &opts).expect("no local routes, no conflicts");
    let routed: Vec<IpNet> = plan.routes.iter().map(|r| r.dst).collect();
    if net.prefix_len() == 0 {
        assert!(routed.is_empty(), "a default route was planned");
        return;
    }
    assert_eq!(routed, pieces, "planned routes are not the pieces");
    for ip in &never_route {
        let inside = pieces.iter().any(|p| p.contains(ip));
        assert_eq!(plan.pinned.contains(ip), inside, "pinning of {ip}");
    }
}

fn u128_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Reads the fuzz input front to back; zeros once it is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    /// A length byte and an address; with `relative`, the address's network bits are
    /// taken from that prefix.
    fn prefix(&mut self, v6: bool, relative: Option<IpNet>) -> IpNet {
        let len = self.next();
        let addr = if v6 {
            let mut a = [0u8; 16];
            a.iter_mut().for_each(|b| *b = self.next());
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            let a = [self.next(), self.next(), self.next(), self.next()];
            IpAddr::V4(Ipv4Addr::from(a))
        };
        let addr = match (relative, addr) {
            (Some(IpNet::V4(n)), IpAddr::V4(a)) => IpAddr::V4(
                (u32::from(n.network()) | (u32::from(a) & u32::from(n.hostmask()))).into(),
            ),
            (Some(IpNet::V6(n)), IpAddr::V6(a)) => IpAddr::V6(
                (u128::from(n.network()) | (u128::from(a) & u128::from(n.hostmask()))).into(),
            ),
            _ => addr,
        };
        let max = if v6 { 129 } else { 33 };
        IpNet::new(addr, len % max).expect("length in range")
    }
}

/// The values a session writes into its relay's Job and reads back: each line of the input
/// is tried as a `--listen` value ([`RelayListener`]) and as a [`SessionId`]; whatever
/// parses must be written back in the same canonical form and parse to the same value.
pub fn session_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines().chain([text.as_ref()]) {
        if let Ok(l) = line.parse::<RelayListener>() {
            let back: RelayListener = l.to_string().parse().expect("a written listener parses");
            assert_eq!(back, l);
            assert!(l.port != 0);
        }
        if let Ok(id) = SessionId::parse(line) {
            assert_eq!(id.as_str(), line);
            let name = id.job_name();
            assert!(
                name.len() <= 63
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
        }
    }
}

/// A command line being completed (`kubelan_cluster::completion`), one word per
/// whitespace-separated piece: reading its cluster flags never panics, a value found is
/// non-empty, and the scope written back as `--kubeconfig=… --context=… --namespace=…`
/// reads the same. Every word as the word being typed: each Service candidate starts with
/// it, and none is offered for a word that cannot name a Service. As kubectl's plugin
/// completion words (one per line), the answer is one line per candidate and the directive.
pub fn completion_line(data: &[u8]) {
    use crate::completion::{Scope, may_name_a_service, service_candidates};
    let text = String::from_utf8_lossy(data);
    let words: Vec<&str> = text.split_whitespace().collect();
    let scope = Scope::from_args(&words, None);
    let mut back = Vec::new();
    if let Some(k) = &scope.kubeconfig {
        assert!(!k.as_os_str().is_empty());
        back.push(format!("--kubeconfig={}", k.display()));
    }
    for (flag, value) in [("context", &scope.context), ("namespace", &scope.namespace)] {
        if let Some(v) = value {
            assert!(!v.is_empty());
            back.push(format!("--{flag}={v}"));
        }
    }
    assert_eq!(Scope::from_args(&back, None), scope, "{back:?}");
    let names: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    // kubectl's plugin protocol: a word is typed, and the answer ends with the directive
    // after at most one line per candidate.
    let plugin = crate::completion::plugin_words(text.split('\n').map(String::from).collect());
    assert!(!plugin.is_empty());
    let lines: Vec<(String, Option<String>)> = plugin
        .into_iter()
        .map(|w| (w, Some(text.to_string())))
        .collect();
    let answer = crate::completion::plugin_answer(&lines);
    assert!(answer.ends_with(":4\n") && answer.lines().count() <= lines.len() + 1);
    for current in words.iter().copied().chain([""]) {
        let found = service_candidates(current, &names);
        assert!(found.is_empty() || may_name_a_service(current), "{current}");
        for c in found {
            assert!(c.starts_with(current), "{c} for {current}");
        }
    }
}
