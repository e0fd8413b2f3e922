//! Fuzz target: see `kubelan_sys::fuzz_entry::route_cache`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_sys::fuzz_entry::route_cache(data));
