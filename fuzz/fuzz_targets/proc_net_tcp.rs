//! Fuzz target: see `kubelan_expose::fuzz_entry::proc_net_tcp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_expose::fuzz_entry::proc_net_tcp(data));
