//! Fuzz target: see `kubelan_dns::fuzz_entry::dns_screen`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_dns::fuzz_entry::dns_screen(data));
