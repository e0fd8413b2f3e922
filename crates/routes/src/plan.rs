//! From the input to what every format prints: the routes (prefixes not covered by
//! another one, with the gateway of their family) and the reverse zones (without
//! duplicates or zones inside other zones).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::input::{ClusterPrefix, RoutesInput};
use crate::zones::{ReverseZone, reverse_zones};

/// One route to print.
#[derive(Debug, Clone)]
pub(crate) struct Route<'a> {
    pub(crate) prefix: &'a ClusterPrefix,
    pub(crate) net: IpNet,
    pub(crate) via: IpAddr,
}

/// The reverse zones printed for one prefix.
#[derive(Debug, Clone)]
pub(crate) struct PrefixZones<'a> {
    pub(crate) prefix: &'a ClusterPrefix,
    pub(crate) zones: Vec<ReverseZone>,
    pub(crate) exact: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Plan<'a> {
    /// Routes, in input order.
    pub(crate) routes: Vec<Route<'a>>,
    /// Prefixes left out because another one covers them: (inner, outer).
    pub(crate) contained: Vec<(&'a ClusterPrefix, &'a ClusterPrefix)>,
    /// Prefixes left out because there is no gateway of their family.
    pub(crate) no_gateway: Vec<&'a ClusterPrefix>,
    /// Reverse zones per prefix (prefixes whose zones all lie in earlier ones omitted).
    pub(crate) zones: Vec<PrefixZones<'a>>,
}

#[cfg(test)]
impl Plan<'_> {
    /// Every reverse zone, in print order.
    pub(crate) fn all_zones(&self) -> impl Iterator<Item = &ReverseZone> {
        self.zones.iter().flat_map(|z| z.zones.iter())
    }
}

/// The prefix that covers the one at index `i`, if any: a strictly wider one, or an
/// equal one listed earlier.
pub(crate) fn covering(prefixes: &[ClusterPrefix], i: usize) -> Option<&ClusterPrefix> {
    let net = prefixes.get(i)?.net.trunc();
    prefixes.iter().enumerate().find_map(|(j, q)| {
        let qn = q.net.trunc();
        let covers = if qn == net { j < i } else { qn.contains(&net) };
        (j != i && covers).then_some(q)
    })
}

pub(crate) fn plan(input: &RoutesInput) -> Plan<'_> {
    let mut out = Plan::default();
    let prefixes = &input.prefixes;
    for (i, p) in prefixes.iter().enumerate() {
        if let Some(outer) = covering(prefixes, i) {
            out.contained.push((p, outer));
            continue;
        }
        let net = p.net.trunc();
        match input.gateway_for(&net) {
            Some(via) => out.routes.push(Route {
                prefix: p,
                net,
                via,
            }),
            None => out.no_gateway.push(p),
        }
    }

    let mut seen: Vec<ReverseZone> = Vec::new();
    for (i, p) in prefixes.iter().enumerate() {
        if covering(prefixes, i).is_some() {
            continue;
        }
        let rz = reverse_zones(p.net);
        let zones: Vec<ReverseZone> = rz
            .zones
            .into_iter()
            .filter(|z| !seen.iter().any(|s| s.net.contains(&z.net)))
            .collect();
        // A wide zone of this prefix makes earlier, narrower ones redundant.
        seen.retain(|s| !zones.iter().any(|z| z.net.contains(&s.net)));
        for pz in &mut out.zones {
            pz.zones
                .retain(|s| !zones.iter().any(|z| z.net.contains(&s.net)));
        }
        seen.extend(zones.iter().cloned());
        out.zones.push(PrefixZones {
            prefix: p,
            zones,
            exact: rz.exact,
        });
    }
    out.zones.retain(|z| !z.zones.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::PrefixKind;

    fn p(net: &str, kind: PrefixKind) -> ClusterPrefix {
        ClusterPrefix::new(net.parse().unwrap(), kind, "test")
    }

    #[test]
    fn contained_and_duplicate_prefixes_are_left_out() {
        let input = RoutesInput {
            prefixes: vec![
                p("172.17.33.0/24", PrefixKind::Pods),
                p("172.17.32.0/19", PrefixKind::Pods),
                p("172.17.32.0/19", PrefixKind::Services),
                p("fd00::/64", PrefixKind::Pods),
            ],
            gateway_v4: Some("10.4.7.11".parse().unwrap()),
            ..RoutesInput::default()
        };
        let plan = plan(&input);
        let routes: Vec<String> = plan.routes.iter().map(|r| r.net.to_string()).collect();
        assert_eq!(routes, vec!["172.17.32.0/19"]);
        assert_eq!(plan.routes[0].prefix.kind, PrefixKind::Pods);
        let contained: Vec<(String, String)> = plan
            .contained
            .iter()
            .map(|(a, b)| (a.net.to_string(), b.net.to_string()))
            .collect();
        assert_eq!(
            contained,
            vec![
                ("172.17.33.0/24".into(), "172.17.32.0/19".into()),
                ("172.17.32.0/19".into(), "172.17.32.0/19".into())
            ]
        );
        assert_eq!(plan.no_gateway.len(), 1);
        assert_eq!(plan.zones.iter().map(|z| z.zones.len()).sum::<usize>(), 33);
    }

    #[test]
    fn zones_inside_wider_zones_are_dropped() {
        let input = RoutesInput {
            prefixes: vec![
                p("172.17.16.0/20", PrefixKind::Services),
                p("172.17.64.0/18", PrefixKind::Pods),
            ],
            ..RoutesInput::default()
        };
        let plan = plan(&input);
        let zones: Vec<&str> = plan.all_zones().map(|z| z.name.as_str()).collect();
        assert_eq!(zones, vec!["17.172.in-addr.arpa"]);
        assert!(!plan.zones[0].exact);
        assert_eq!(plan.zones[0].prefix.kind, PrefixKind::Pods);
    }
}
