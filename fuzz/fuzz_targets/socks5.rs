//! Fuzz target: see `kubelan_proxy::fuzz_entry::socks5`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_proxy::fuzz_entry::socks5(data));
