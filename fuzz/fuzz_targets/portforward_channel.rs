//! Fuzz target: see `kubelan_session::portforward::channel::fuzz_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_session::portforward::channel::fuzz_entry(data));
