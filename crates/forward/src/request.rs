//! The command line of `kubelan forward` checked as a whole, before anything connects.

use crate::error::ForwardError;
use crate::spec::{BindAddress, ForwardSpec, parse_addresses, parse_specs};

/// What `kubelan forward` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The named targets; none: bulk mode (every Service of the namespaces).
    pub specs: Vec<ForwardSpec>,
    /// `-n`, each once, in the order given (empty: the context's namespace).
    pub namespaces: Vec<String>,
    /// `--address`.
    pub addresses: Vec<BindAddress>,
}

impl Request {
    /// Bulk mode: no named targets.
    pub fn bulk(&self) -> bool {
        self.specs.is_empty()
    }
}

/// Checks the targets and flags together: flags of bulk mode (`selector`, `no_hosts`)
/// need no targets, `--address` and a single namespace need them.
///
/// # Errors
/// The first target, address or flag combination that cannot work, naming the fix.
pub fn check_request(
    targets: &[String],
    namespaces: &[String],
    addresses: &[String],
    selector: bool,
    no_hosts: bool,
) -> Result<Request, ForwardError> {
    let specs = parse_specs(targets)?;
    let bulk = specs.is_empty();
    if bulk && !addresses.is_empty() {
        return Err(ForwardError::AddressInBulk);
    }
    if !bulk && selector {
        return Err(ForwardError::SelectorWithTargets);
    }
    if !bulk && no_hosts {
        return Err(ForwardError::NoHostsWithTargets);
    }
    let mut unique: Vec<String> = Vec::new();
    for n in namespaces {
        if !unique.contains(n) {
            unique.push(n.clone());
        }
    }
    if !bulk && unique.len() > 1 {
        return Err(ForwardError::SeveralNamespaces {
            count: unique.len(),
        });
    }
    let addresses = parse_addresses(addresses)?;
    Ok(Request {
        specs,
        namespaces: unique,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bulk_and_named_flags_do_not_mix() {
        let r = check_request(&[], &s(&["a", "b", "a"]), &[], true, true).unwrap();
        assert!(r.bulk());
        assert_eq!(r.namespaces, ["a", "b"]);
        let named = s(&["svc/web", "8080:80"]);
        let r = check_request(&named, &s(&["a", "a"]), &s(&["localhost"]), false, false).unwrap();
        assert!(!r.bulk());
        assert_eq!(r.namespaces, ["a"]);
        assert!(matches!(
            check_request(&[], &[], &s(&["localhost"]), false, false),
            Err(ForwardError::AddressInBulk)
        ));
        assert!(matches!(
            check_request(&named, &[], &[], true, false),
            Err(ForwardError::SelectorWithTargets)
        ));
        assert!(matches!(
            check_request(&named, &[], &[], false, true),
            Err(ForwardError::NoHostsWithTargets)
        ));
        assert!(matches!(
            check_request(&named, &s(&["a", "b"]), &[], false, false),
            Err(ForwardError::SeveralNamespaces { count: 2 })
        ));
    }
}
