//! Fuzz target: see `kubelan_agent::fuzz_entry::relay_listen`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_agent::fuzz_entry::relay_listen(data));
