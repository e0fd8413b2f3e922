//! Which of the host's routes are worth comparing with the cluster's prefixes: the input
//! of the conflict warnings, apart from the route types themselves ([`crate::local`]) so
//! that those stay below the renderer's input ([`crate::input`]).

use std::net::IpAddr;

use crate::input::ClusterPrefix;
use crate::local::LocalRoute;

/// Devices of network plugins and of kubelan itself: their routes into the cluster's
/// prefixes are the cluster's own, not a conflict.
const CLUSTER_DEVICES: &[&str] = &[
    "kubelan",
    "cni",
    "cali",
    "flannel",
    "vxlan.calico",
    "tunl",
    "cilium_",
    "lxc",
    "weave",
    "kube-ipvs",
];

/// The host's routes worth comparing with the cluster prefixes
/// ([`RoutesInput::other_routes`](crate::RoutesInput::other_routes)): not the default
/// route, not the cluster's own (inside a cluster prefix, through a network plugin's
/// device or via a node, `node_ips`). Destinations come back without host bits.
pub fn other_routes(
    routes: &[LocalRoute],
    prefixes: &[ClusterPrefix],
    node_ips: &[IpAddr],
) -> Vec<LocalRoute> {
    routes
        .iter()
        .filter(|r| r.dst.prefix_len() > 0)
        .filter(|r| {
            let inside = prefixes.iter().any(|p| p.net.contains(&r.dst));
            let plugin = CLUSTER_DEVICES.iter().any(|c| r.dev.starts_with(c));
            let via_node = r.gateway.is_some_and(|g| node_ips.contains(&g));
            !(inside && (plugin || via_node))
        })
        .map(|r| LocalRoute {
            dst: r.dst.trunc(),
            ..r.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::route;

    #[test]
    fn the_clusters_own_routes_and_the_default_route_are_not_others() {
        let prefixes = [ClusterPrefix::new(
            "172.17.32.0/19".parse().unwrap(),
            crate::PrefixKind::Pods,
            "x",
        )];
        let routes = [
            route("0.0.0.0/0", Some("10.4.7.254"), "eth0"),
            route("172.17.33.0/24", None, "cni0"),
            route("172.17.34.0/24", Some("10.4.7.12"), "eth0"),
            route("172.17.35.0/24", Some("10.4.7.99"), "eth0"),
            route("172.16.0.1/16", None, "lan0"),
        ];
        let node_ips = ["10.4.7.12".parse().unwrap()];
        let got: Vec<String> = other_routes(&routes, &prefixes, &node_ips)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "route 172.17.35.0/24 via 10.4.7.99 dev eth0",
                "route 172.16.0.0/16 dev lan0"
            ]
        );
    }
}
