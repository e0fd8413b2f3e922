//! Replays the checked-in fuzz corpus (`fuzz/corpus/dns_query/`) through the fuzz entry
//! point on stable Rust, so every CI run exercises it.

use std::path::Path;

/// A fuzz target: its corpus folder name and entry point.
type Target = (&'static str, fn(&[u8]));

#[test]
fn corpus_replays_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let targets: [Target; 1] = [("dns_query", kubelan_dns::fuzz_entry::dns_query)];
    for (name, f) in targets {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            f(&data);
            // Every prefix too: truncated input is the commonest malformation.
            for cut in 0..data.len().min(256) {
                f(&data[..cut]);
            }
            n += 1;
        }
        assert!(n > 0, "corpus for {name} is empty");
    }
}
