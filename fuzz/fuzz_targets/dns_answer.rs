//! Fuzz target: see `kubelan_lab::fuzz_entry::dns_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_lab::fuzz_entry::dns_answer(data));
