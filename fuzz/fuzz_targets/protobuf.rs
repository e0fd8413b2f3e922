//! Fuzz target: see `kubelan_lab::fuzz_entry::protobuf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_lab::fuzz_entry::protobuf(data));
