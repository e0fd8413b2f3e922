//! Fuzz target: see `kubelan_vpn::fuzz_entry::connect_status`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_vpn::fuzz_entry::connect_status(data));
