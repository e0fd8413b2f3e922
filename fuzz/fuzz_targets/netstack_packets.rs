//! Fuzz target: see `kubelan_netstack::fuzz_entry::packets`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_netstack::fuzz_entry::packets(data));
