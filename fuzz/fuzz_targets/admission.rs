//! Fuzz target: see `kubelan_lab::fuzz_entry::admission`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_lab::fuzz_entry::admission(data));
