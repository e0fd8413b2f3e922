//! Fuzz target: see `kubelan_proxy::fuzz_entry::proxy_auth`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_proxy::fuzz_entry::proxy_auth(data));
