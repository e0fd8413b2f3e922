//! Fuzz target: see `kubelan_cluster::fuzz_entry::session_args`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_cluster::fuzz_entry::session_args(data));
