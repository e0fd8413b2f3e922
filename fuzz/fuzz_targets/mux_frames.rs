//! Fuzz target: see `kubelan_proto::mux::fuzz_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_proto::fuzz_entry::mux_frames(data));
