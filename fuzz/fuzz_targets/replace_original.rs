//! Fuzz target: see `kubelan_cluster::replace::fuzz_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_cluster::replace::fuzz_entry(data));
