//! Fuzz target: see `kubelan_doctor::fuzz_entry::proc_net_udp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_doctor::fuzz_entry::proc_net_udp(data));
