//! The host names bulk mode publishes for each Service, sans IO.
//!
//! A Service `web` in namespace `default` is reachable as `web.default`,
//! `web.default.svc` and `web.default.svc.cluster.local`, like from a pod; the bare `web`
//! goes to the first namespace (in `-n` order) that has a Service of that name, as a pod of
//! that namespace would resolve it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use kubelan_sys::hosts::HostsEntry;

/// One forwarded Service and its loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: Ipv4Addr,
}

/// The names of a Service, longest first; `short` adds the bare name.
pub fn service_names(namespace: &str, name: &str, domain: &str, short: bool) -> Vec<String> {
    let domain = domain.trim_matches('.');
    let mut v = Vec::with_capacity(4);
    if !domain.is_empty() {
        v.push(format!("{name}.{namespace}.svc.{domain}"));
    }
    v.push(format!("{name}.{namespace}.svc"));
    v.push(format!("{name}.{namespace}"));
    if short {
        v.push(name.to_string());
    }
    v
}

/// The hosts-file lines for `services`; `namespaces` gives the order that decides who gets
/// bare names. Lines are sorted by namespace order, then name, so the block is stable.
pub fn hosts_entries(
    services: &[Published],
    namespaces: &[String],
    domain: &str,
) -> Vec<HostsEntry> {
    let rank = |ns: &str| {
        namespaces
            .iter()
            .position(|n| n == ns)
            .unwrap_or(usize::MAX)
    };
    let mut sorted: Vec<&Published> = services.iter().collect();
    sorted.sort_by(|a, b| {
        rank(&a.namespace)
            .cmp(&rank(&b.namespace))
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut short_taken: HashSet<&str> = HashSet::new();
    sorted
        .into_iter()
        .map(|p| {
            let short = short_taken.insert(p.name.as_str());
            HostsEntry {
                ip: IpAddr::V4(p.address),
                names: service_names(&p.namespace, &p.name, domain, short),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ns: &str, name: &str, last: u8) -> Published {
        Published {
            namespace: ns.into(),
            name: name.into(),
            address: Ipv4Addr::new(127, 1, 0, last),
        }
    }

    #[test]
    fn names_and_short_name_owner() {
        assert_eq!(
            service_names("default", "web", "cluster.local.", true),
            [
                "web.default.svc.cluster.local",
                "web.default.svc",
                "web.default",
                "web"
            ]
        );
        let ns = vec!["team".to_string(), "default".to_string()];
        let e = hosts_entries(
            &[
                p("default", "web", 1),
                p("team", "web", 2),
                p("default", "db", 3),
            ],
            &ns,
            "cluster.local",
        );
        let lines: Vec<String> = e
            .iter()
            .map(|e| format!("{} {}", e.ip, e.names.join(" ")))
            .collect();
        assert_eq!(
            lines,
            [
                "127.1.0.2 web.team.svc.cluster.local web.team.svc web.team web",
                "127.1.0.3 db.default.svc.cluster.local db.default.svc db.default db",
                "127.1.0.1 web.default.svc.cluster.local web.default.svc web.default",
            ]
        );
    }
}
