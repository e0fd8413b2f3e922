//! Answering: names and addresses looked up in the cache.

use std::net::IpAddr;

use super::entries::{Endpoint, IpIndex, ServiceEntry, ServiceKind, SliceEntry};
use super::syntax::{dashed, normalize, parse_dashed, parse_reverse, relative};
use super::{
    API_SERVER_NAMESPACE, API_SERVER_SERVICE, AddressKind, ClusterNames, DNS_SCHEMA_VERSION,
    Lookup, MAX_CNAME_CHAIN, QueryType, Record, RecordData,
};

/// `Found` with the records of `owner` for `ips` that match `qtype`, else `NoData`.
fn addresses(owner: &str, ips: impl IntoIterator<Item = IpAddr>, qtype: QueryType) -> Lookup {
    let records: Vec<Record> = ips
        .into_iter()
        .map(|ip| Record::new(owner, RecordData::address(ip)))
        .filter(|r| qtype.matches(&r.data))
        .collect();
    if records.is_empty() {
        Lookup::NoData
    } else {
        Lookup::Found(records)
    }
}

/// The outcome of resolving one candidate name to addresses.
enum Resolved {
    Addresses(Vec<IpAddr>),
    Missing,
    Unknown,
}

impl ClusterNames {
    /// Answers `name` (case-insensitive, trailing dot optional) for the cache's own domain.
    pub fn lookup(&self, name: &str, qtype: QueryType) -> Lookup {
        self.lookup_in(&self.domain, name, qtype)
    }

    /// Answers `name` as if the cluster domain were `domain`.
    pub fn lookup_in(&self, domain: &str, name: &str, qtype: QueryType) -> Lookup {
        self.lookup_normalized(&normalize(domain), &normalize(name), qtype, 0)
    }

    fn lookup_normalized(
        &self,
        domain: &str,
        name: &str,
        qtype: QueryType,
        depth: usize,
    ) -> Lookup {
        if let Some(ip) = parse_reverse(name) {
            return self.reverse(domain, name, ip, qtype);
        }
        if name.is_empty() {
            return Lookup::NotOurs;
        }
        let Some(rel) = relative(name, domain) else {
            return Lookup::NotOurs;
        };
        let labels: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('.').collect()
        };
        if labels.iter().any(|l| l.is_empty() || l.contains('*')) {
            return Lookup::Unknown;
        }
        let result = match labels.as_slice() {
            ["dns-version"] => {
                let txt = Record::new(name, RecordData::Txt(DNS_SCHEMA_VERSION.to_owned()));
                if qtype.matches(&txt.data) {
                    Lookup::Found(vec![txt])
                } else {
                    Lookup::NoData
                }
            }
            [rest @ .., "svc"] => self.under_svc(domain, name, rest, qtype, depth),
            [dashed_ip, ns, "pod"] => self.pod(name, dashed_ip, ns, qtype),
            _ => Lookup::Unknown,
        };
        if !self.complete && matches!(result, Lookup::NoData | Lookup::NxDomain) {
            Lookup::Unknown
        } else {
            result
        }
    }

    /// Names below `svc.<domain>`; `labels` are the ones before `svc`.
    fn under_svc(
        &self,
        domain: &str,
        name: &str,
        labels: &[&str],
        qtype: QueryType,
        depth: usize,
    ) -> Lookup {
        let (svc_name, ns, rest) = match labels {
            // `svc.<domain>` is an empty non-terminal; `<ns>.svc.<domain>` too when the
            // namespace has Services (namespaces without any are not known to us).
            [] => return Lookup::NoData,
            [ns] if self.services.has_namespace(ns) => return Lookup::NoData,
            [_] => return Lookup::Unknown,
            [rest @ .., svc_name, ns] => (*svc_name, *ns, rest),
        };
        // Every name below here hangs off a Service.
        let Some(svc) = self.services.get(ns, svc_name) else {
            return Lookup::NxDomain;
        };
        match (rest, &svc.kind) {
            ([], ServiceKind::ClusterIp(ips)) => {
                if matches!(qtype, QueryType::Srv) {
                    // CoreDNS lists every port here; the specification has no such record.
                    return Lookup::Unknown;
                }
                addresses(name, ips.iter().copied(), qtype)
            }
            ([], ServiceKind::Headless) => {
                if matches!(qtype, QueryType::Srv) {
                    return Lookup::Unknown;
                }
                let ips = self.ready_addresses(ns, svc_name, svc, |_| true);
                if ips.is_empty() {
                    // Specification 2.4.1: no ready endpoints is NXDOMAIN.
                    Lookup::NxDomain
                } else {
                    addresses(name, ips, qtype)
                }
            }
            ([], ServiceKind::ExternalName(target)) => {
                self.cname(domain, name, target, qtype, depth)
            }
            ([port, proto], ServiceKind::ClusterIp(_) | ServiceKind::Headless)
                if port.len() > 1 && proto.len() > 1 =>
            {
                match (port.strip_prefix('_'), proto.strip_prefix('_')) {
                    (Some(port), Some(proto)) => {
                        self.srv(domain, name, ns, svc_name, svc, port, proto, qtype)
                    }
                    _ => Lookup::Unknown,
                }
            }
            ([label], ServiceKind::Headless) if !label.starts_with('_') => {
                let dashed_ip = parse_dashed(label);
                let ips = self.ready_addresses(ns, svc_name, svc, |e| e.is_named(label, dashed_ip));
                let ips: Vec<IpAddr> = match (dashed_ip, ips.is_empty()) {
                    // An endpoint without hostname is named after each of its addresses.
                    (Some(ip), false) if ips.contains(&ip) => vec![ip],
                    _ => ips,
                };
                if ips.is_empty() {
                    Lookup::NxDomain
                } else {
                    addresses(name, ips, qtype)
                }
            }
            ([label], ServiceKind::ClusterIp(_)) if !label.starts_with('_') => Lookup::NxDomain,
            _ => Lookup::Unknown,
        }
    }

    /// The ready endpoints of a Service (deduplicated, sorted) that pass `filter`.
    fn ready_addresses(
        &self,
        ns: &str,
        svc_name: &str,
        svc: &ServiceEntry,
        filter: impl Fn(&Endpoint) -> bool,
    ) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .slices_of_service(ns, svc_name)
            .flat_map(|slice| slice.endpoints.iter())
            .filter(|e| (e.ready || svc.publish_not_ready) && filter(e))
            .flat_map(|e| e.addresses.iter().copied())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        ips
    }

    fn slices_of_service<'a>(
        &'a self,
        ns: &'a str,
        svc_name: &str,
    ) -> impl Iterator<Item = &'a SliceEntry> + 'a {
        self.slices_of
            .get(ns, svc_name)
            .into_iter()
            .flatten()
            .filter_map(move |slice| self.slices.get(ns, slice))
    }

    /// `_<port>._<proto>.<svc>.<ns>.svc.<domain>`.
    #[allow(clippy::too_many_arguments)]
    fn srv(
        &self,
        domain: &str,
        name: &str,
        ns: &str,
        svc_name: &str,
        svc: &ServiceEntry,
        port: &str,
        proto: &str,
        qtype: QueryType,
    ) -> Lookup {
        let service_fqdn = format!("{svc_name}.{ns}.svc.{domain}");
        let mut targets: Vec<(u16, String)> = Vec::new();
        match svc.kind {
            ServiceKind::Headless => {
                for slice in self.slices_of_service(ns, svc_name) {
                    let Some(p) = slice.ports.iter().find(|p| p.matches(port, proto)) else {
                        continue;
                    };
                    for e in slice
                        .endpoints
                        .iter()
                        .filter(|e| e.ready || svc.publish_not_ready)
                    {
                        match &e.hostname {
                            Some(h) => targets.push((p.port, format!("{h}.{service_fqdn}"))),
                            None => targets.extend(
                                e.addresses
                                    .iter()
                                    .map(|ip| (p.port, format!("{}.{service_fqdn}", dashed(*ip)))),
                            ),
                        }
                    }
                }
            }
            _ => {
                targets.extend(
                    svc.ports
                        .iter()
                        .filter(|p| p.matches(port, proto))
                        .map(|p| (p.port, service_fqdn.clone())),
                );
            }
        }
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Lookup::NxDomain;
        }
        if !matches!(qtype, QueryType::Srv | QueryType::Any) {
            return Lookup::NoData;
        }
        // Equal shares, as CoreDNS does; priority is unused.
        let weight = u16::try_from(100 / targets.len()).unwrap_or(0).max(1);
        Lookup::Found(
            targets
                .into_iter()
                .map(|(port, target)| {
                    Record::new(
                        name,
                        RecordData::Srv {
                            priority: 0,
                            weight,
                            port,
                            target,
                        },
                    )
                })
                .collect(),
        )
    }

    /// An ExternalName Service: the CNAME, then what its target leads to when that is inside
    /// the cluster domain.
    fn cname(
        &self,
        domain: &str,
        name: &str,
        target: &str,
        qtype: QueryType,
        depth: usize,
    ) -> Lookup {
        if target.is_empty() {
            return Lookup::NoData;
        }
        let mut records = vec![Record::new(name, RecordData::Cname(target.to_owned()))];
        if !matches!(qtype, QueryType::Cname)
            && depth < MAX_CNAME_CHAIN
            && relative(target, domain).is_some()
            && let Lookup::Found(more) = self.lookup_normalized(domain, target, qtype, depth + 1)
        {
            records.extend(more);
        }
        Lookup::Found(records)
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>`.
    fn pod(&self, name: &str, dashed_ip: &str, ns: &str, qtype: QueryType) -> Lookup {
        let Some(ip) = parse_dashed(dashed_ip) else {
            return Lookup::Unknown;
        };
        let known = self
            .by_pod_ip
            .get(&ip)
            .is_some_and(|owners| owners.iter().any(|(n, _)| &**n == ns));
        if known {
            addresses(name, [ip], qtype)
        } else {
            Lookup::Unknown
        }
    }

    /// Reverse lookups: cluster IPs and hostnamed endpoints of headless Services.
    fn reverse(&self, domain: &str, name: &str, ip: IpAddr, qtype: QueryType) -> Lookup {
        let mut targets: Vec<String> = Vec::new();
        for (ns, svc_name) in self.by_cluster_ip.get(&ip).into_iter().flatten() {
            if self
                .services
                .get(ns, svc_name)
                .is_some_and(|s| s.cluster_ips().contains(&ip))
            {
                targets.push(format!("{svc_name}.{ns}.svc.{domain}"));
            }
        }
        for (ns, slice_name) in self.by_endpoint_ip.get(&ip).into_iter().flatten() {
            let Some(slice) = self.slices.get(ns, slice_name) else {
                continue;
            };
            let Some(svc) = self.services.get(ns, &slice.service) else {
                continue;
            };
            if svc.kind != ServiceKind::Headless {
                continue;
            }
            for e in slice.endpoints.iter() {
                if let Some(h) = &e.hostname
                    && (e.ready || svc.publish_not_ready)
                    && e.addresses.contains(&ip)
                {
                    targets.push(format!("{h}.{}.{ns}.svc.{domain}", slice.service));
                }
            }
        }
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return if self.by_pod_ip.contains_key(&ip) || self.by_endpoint_ip.contains_key(&ip) {
                Lookup::Unknown
            } else {
                Lookup::NotOurs
            };
        }
        if !matches!(qtype, QueryType::Ptr | QueryType::Any) {
            return Lookup::NoData;
        }
        Lookup::Found(
            targets
                .into_iter()
                .map(|t| Record::new(name, RecordData::Ptr(t)))
                .collect(),
        )
    }

    /// What the API says `ip` is, for the agent's destination policy.
    ///
    /// Node addresses come first: an address a host-network pod or the `kubernetes`
    /// Service's endpoints use is a node's (or the control plane's), whatever else refers
    /// to it. EndpointSlice addresses prove nothing by themselves (anyone who may write a
    /// slice can list any address, and a `targetRef` is just as freely written): an
    /// endpoint counts as a pod only when a pod with its own network namespace owns that
    /// address, which is what [`AddressKind::Pod`] already says; other endpoint addresses
    /// are [`AddressKind::Endpoint`].
    pub fn classify(&self, ip: IpAddr) -> AddressKind<'_> {
        let has = |index: &IpIndex| index.get(&ip).is_some_and(|keys| !keys.is_empty());
        if let Some((ns, name)) = self.by_host_ip.get(&ip).and_then(|k| k.first()) {
            return AddressKind::HostNetworkPod {
                namespace: ns,
                name,
            };
        }
        let api_server = self
            .slices_of_service(API_SERVER_NAMESPACE, API_SERVER_SERVICE)
            .any(|slice| slice.addresses().any(|a| a == ip));
        if api_server {
            return AddressKind::ApiServerEndpoint;
        }
        if has(&self.by_cluster_ip) {
            return AddressKind::ServiceIp;
        }
        if has(&self.by_pod_ip) {
            return AddressKind::Pod;
        }
        if let Some((ns, slice_name)) = self.by_endpoint_ip.get(&ip).and_then(|k| k.first())
            && let Some(slice) = self.slices.get(ns, slice_name)
        {
            return AddressKind::Endpoint {
                namespace: ns,
                slice: slice_name,
                service: &slice.service,
            };
        }
        AddressKind::Unknown
    }

    /// The addresses of a flow target such as `web`, `web.shop`, `web.shop.svc`, a full
    /// cluster name or an IP literal, resolved like a pod in `default_namespace` would
    /// (search path `<ns>.svc.<domain> svc.<domain> <domain>`; a trailing dot makes the name
    /// absolute).
    ///
    /// `None` means the cache cannot say: the name is outside the cluster, unknown to the
    /// cache, an ExternalName alias of an outside name, or has no address; the caller falls
    /// back to an ordinary resolver. IPv4 addresses come first.
    pub fn resolve_host(&self, host: &str, default_namespace: Option<&str>) -> Option<Vec<IpAddr>> {
        let host = host.trim();
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Some(vec![ip]);
        }
        let absolute = host.ends_with('.');
        let name = normalize(host);
        if name.is_empty() {
            return None;
        }
        let domain = &*self.domain;
        let candidates: Vec<String> = if absolute || relative(&name, domain).is_some() {
            vec![name]
        } else {
            let mut list = Vec::with_capacity(3);
            if let Some(ns) = default_namespace.filter(|ns| !ns.is_empty()) {
                list.push(format!("{name}.{}.svc.{domain}", ns.to_ascii_lowercase()));
            }
            list.push(format!("{name}.svc.{domain}"));
            list.push(format!("{name}.{domain}"));
            list
        };
        for candidate in candidates {
            match self.addresses_of(&candidate) {
                Resolved::Addresses(ips) => return Some(ips),
                Resolved::Missing => {}
                Resolved::Unknown => return None,
            }
        }
        None
    }

    fn addresses_of(&self, name: &str) -> Resolved {
        let mut ips = Vec::new();
        let mut alias_only = false;
        for qtype in [QueryType::A, QueryType::Aaaa] {
            match self.lookup(name, qtype) {
                Lookup::Found(records) => {
                    let before = ips.len();
                    ips.extend(records.iter().filter_map(|r| match r.data {
                        RecordData::A(v4) => Some(IpAddr::V4(v4)),
                        RecordData::Aaaa(v6) => Some(IpAddr::V6(v6)),
                        _ => None,
                    }));
                    alias_only |= ips.len() == before;
                }
                // Like a stub resolver, go on with the search list.
                Lookup::NoData => {}
                Lookup::NxDomain => return Resolved::Missing,
                Lookup::Unknown | Lookup::NotOurs => return Resolved::Unknown,
            }
        }
        if !ips.is_empty() {
            Resolved::Addresses(ips)
        } else if alias_only {
            // An ExternalName alias of an outside name: a real resolver follows it.
            Resolved::Unknown
        } else {
            Resolved::Missing
        }
    }
}
