//! Fuzz target: see `kubelan_cluster::fuzz_entry::prefix_split`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_cluster::fuzz_entry::prefix_split(data));
