//! Fuzz target: see `kubelan_sys::fuzz_entry::resolv_conf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_sys::fuzz_entry::resolv_conf(data));
