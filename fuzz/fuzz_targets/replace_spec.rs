//! Fuzz target: see `kubelan_expose::fuzz_entry::replace_spec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_expose::fuzz_entry::replace_spec(data));
