//! Fuzz target: see `kubelan_lab::fuzz_entry::proc_stat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_lab::fuzz_entry::proc_stat(data));
