//! Fuzz target: see `kubelan_cluster::fuzz_entry::completion_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_cluster::fuzz_entry::completion_line(data));
