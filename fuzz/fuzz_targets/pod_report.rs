//! Fuzz target: see `kubelan_doctor::fuzz_entry::pod_report`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubelan_doctor::fuzz_entry::pod_report(data));
