//! Fuzz target: see `kubelan_forward::fuzz_entry::forward_spec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_forward::fuzz_entry::forward_spec(data));
