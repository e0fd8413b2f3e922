//! Fuzz target: see `kubelan_session::flow::fuzz_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_session::flow::fuzz_entry(data));
