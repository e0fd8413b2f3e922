//! Fuzz target: see `kubelan_lab::fuzz_entry::lab_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_lab::fuzz_entry::lab_config(data));
