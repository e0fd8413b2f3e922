//! Entry points shared by the cargo-fuzz target (`fuzz/fuzz_targets/connect_status.rs`)
//! and the corpus replay test (`crates/kubelan/tests/fuzz_corpus.rs`). Pure; each must
//! return normally for any input, a panic is a bug.

use crate::connect::Status;

/// A running connect's answer on its control socket, as `kubelan status` reads it: any
/// bytes give a [`Status`] or an error, and a status read is written back unchanged.
pub fn connect_status(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(status) = serde_json::from_value::<Status>(doc) {
        let again = serde_json::to_value(&status).expect("a status serialises");
        let back: Status = serde_json::from_value(again).expect("what was written reads back");
        assert_eq!(back, status);
    }
}
