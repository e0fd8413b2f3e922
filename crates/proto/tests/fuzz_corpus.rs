//! Replays the checked-in corpus of the `proto_frames` fuzz target on stable Rust.

use std::path::Path;

#[test]
fn proto_frames_corpus_replays_without_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/proto_frames");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        kubelan_proto::fuzz_entry::frames(&data);
        for cut in 0..data.len().min(256) {
            kubelan_proto::fuzz_entry::frames(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 10, "corpus for proto_frames has only {n} files");
}
