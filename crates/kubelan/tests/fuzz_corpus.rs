//! Replays the checked-in corpus of every cargo-fuzz target (`fuzz/corpus/<target>/`)
//! through the same entry points on stable Rust, so every CI run exercises each parser with
//! every corpus file and every prefix of it (truncated input is the commonest malformation).

use std::path::Path;

/// A fuzz target: its corpus folder, entry point, and the fewest corpus files it must have.
type Target = (&'static str, fn(&[u8]), usize);

const TARGETS: [Target; 32] = [
    ("selectors", kubelan_lab::fuzz_entry::selectors, 1),
    ("patch", kubelan_lab::fuzz_entry::patch, 1),
    ("lab_config", kubelan_lab::fuzz_entry::lab_config, 1),
    ("dns_answer", kubelan_lab::fuzz_entry::dns_answer, 1),
    ("protobuf", kubelan_lab::fuzz_entry::protobuf, 1),
    ("proto_frames", kubelan_proto::fuzz_entry::frames, 10),
    ("mux_frames", kubelan_proto::fuzz_entry::mux_frames, 10),
    ("socks5", kubelan_proxy::fuzz_entry::socks5, 10),
    ("proxy_auth", kubelan_proxy::fuzz_entry::proxy_auth, 10),
    ("dns_query", kubelan_dns::fuzz_entry::dns_query, 10),
    ("dns_screen", kubelan_dns::fuzz_entry::dns_screen, 10),
    (
        "netstack_packets",
        kubelan_netstack::fuzz_entry::packets,
        10,
    ),
    ("resolv_conf", kubelan_sys::fuzz_entry::resolv_conf, 10),
    ("hosts_block", kubelan_sys::fuzz_entry::hosts_block, 10),
    (
        "discovery_parse",
        kubelan_cluster::fuzz_entry::discovery_parse,
        10,
    ),
    (
        "prefix_split",
        kubelan_cluster::fuzz_entry::prefix_split,
        10,
    ),
    (
        "forward_spec",
        kubelan_forward::fuzz_entry::forward_spec,
        10,
    ),
    ("route_cache", kubelan_sys::fuzz_entry::route_cache, 10),
    ("proc_stat", kubelan_lab::fuzz_entry::proc_stat, 10),
    ("pod_report", kubelan_doctor::fuzz_entry::pod_report, 10),
    ("proc_net_udp", kubelan_doctor::fuzz_entry::proc_net_udp, 10),
    (
        "connect_status",
        kubelan_vpn::fuzz_entry::connect_status,
        10,
    ),
    (
        "session_args",
        kubelan_cluster::fuzz_entry::session_args,
        10,
    ),
    ("expose_spec", kubelan_expose::fuzz_entry::expose_spec, 10),
    ("replace_spec", kubelan_expose::fuzz_entry::replace_spec, 10),
    ("proc_net_tcp", kubelan_expose::fuzz_entry::proc_net_tcp, 10),
    ("relay_listen", kubelan_agent::fuzz_entry::relay_listen, 10),
    ("admission", kubelan_lab::fuzz_entry::admission, 5),
    ("replace_original", kubelan_cluster::replace::fuzz_entry, 10),
    (
        "completion_line",
        kubelan_cluster::fuzz_entry::completion_line,
        10,
    ),
    (
        "portforward_channel",
        kubelan_session::portforward::channel::fuzz_entry,
        10,
    ),
    ("flow_payload", kubelan_session::flow::fuzz_entry, 10),
];

#[test]
fn every_corpus_replays_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, f, min) in TARGETS {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            f(&data);
            for cut in 0..data.len().min(256) {
                f(&data[..cut]);
            }
            n += 1;
        }
        assert!(
            n >= min,
            "corpus for {name} has {n} files, expected at least {min}"
        );
    }
}

#[test]
fn every_fuzz_target_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(name, _, _)| *name == stem),
            "fuzz target {stem} has no corpus replay here; add it to TARGETS"
        );
    }
}
