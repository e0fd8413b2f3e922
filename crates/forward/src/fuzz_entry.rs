//! The entry point of the `forward_spec` cargo-fuzz target (`fuzz/fuzz_targets/forward_spec.rs`)
//! and of its corpus replay (`crates/kubelan/tests/fuzz_corpus.rs`). Pure; must return
//! normally for any input.

use crate::spec::{parse_addresses, parse_specs, spec_words};

/// The command line of `kubelan forward`: the input is split into arguments at NUL, newline
/// and space bytes (lossy UTF-8). Whatever parses must print back (`Display`) to arguments
/// that parse to the same specs; every error must have a message; `--address` values parse
/// or fail without panicking.
pub fn forward_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let args: Vec<&str> = text
        .split(['\0', '\n', ' '])
        .filter(|a| !a.is_empty())
        .collect();
    match parse_specs(&args) {
        Ok(specs) => {
            assert!(!specs.is_empty() || args.is_empty());
            let printed = spec_words(&specs);
            let again = parse_specs(&printed).unwrap_or_else(|e| {
                panic!("{printed:?} (printed from {args:?}) does not parse: {e}")
            });
            assert_eq!(again, specs, "round trip of {args:?} via {printed:?}");
            for s in &specs {
                assert!(!s.ports.is_empty());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let _ = parse_addresses(&args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        for s in [
            "svc/web 8080:80",
            "svc/web\x00http\x00svc/db\x005432\x00pod/x\x00:9000",
            "web-0 80 deploy/api 8080:http/tcp",
            "svc/echo 7/udp",
            "8080:80",
            "svc/web",
            "",
            "svc/a 80 b.c 81",
            "svc/a 80 p 81",
            "\u{ff}/x 1",
        ] {
            forward_spec(s.as_bytes());
        }
    }
}
