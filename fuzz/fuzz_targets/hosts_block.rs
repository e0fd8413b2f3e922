//! Fuzz target: see `kubelan_sys::fuzz_entry::hosts_block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_sys::fuzz_entry::hosts_block(data));
