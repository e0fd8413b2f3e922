//! Fuzz target: see `kubelan_proto::fuzz_entry::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_proto::fuzz_entry::frames(data));
