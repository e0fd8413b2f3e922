//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/pod_report.rs`,
//! `fuzz/fuzz_targets/proc_net_udp.rs`) and the corpus replay test
//! (`crates/kubelan/tests/fuzz_corpus.rs`). Pure: nothing is read from the host. Each must
//! return normally for any input; a panic is a bug.

/// What a probe pod sends back (any bytes a pod, or anyone on its path, can send):
/// [`crate::callback::PodReport::decode`] returns a report or an error, never panics.
pub fn pod_report(data: &[u8]) {
    if let Ok(report) = crate::callback::PodReport::decode(data) {
        let _ = format!("{report:?}");
    }
}

/// A `/proc/net/udp` text (the gateway's DNS socket is looked up in it): any address
/// found is on port 53's line and neither loopback nor unspecified.
pub fn proc_net_udp(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(ip) = crate::network::dns_listener_in(&text) {
        assert!(!ip.is_loopback() && !ip.is_unspecified());
    }
}
