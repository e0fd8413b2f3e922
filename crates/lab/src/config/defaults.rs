//! The default lab: every value a `lab.toml` may leave out.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{
    ClusterConfig, EdgeConfig, FaultsConfig, LabConfig, LaptopConfig, NetworkConfig, NodeConfig,
    OfficeConfig, PcConfig, PortRange, UserConfig, WorkloadsConfig,
};

// ---------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------

/// Builds an IPv4 network from literal parts known to be valid.
fn net(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), prefix) {
        Ok(net) => net,
        Err(_) => unreachable!("prefix {prefix} of a built-in default is at most 32"),
    }
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            cluster: ClusterConfig::default(),
            network: NetworkConfig::default(),
            nodes: vec![
                NodeConfig {
                    name: "node1".to_owned(),
                    address: Ipv4Addr::new(10, 4, 7, 11),
                    pod_cidr: net(172, 17, 32, 0, 24),
                    control_plane: true,
                },
                NodeConfig {
                    name: "node2".to_owned(),
                    address: Ipv4Addr::new(10, 4, 7, 12),
                    pod_cidr: net(172, 17, 33, 0, 24),
                    control_plane: false,
                },
            ],
            office: OfficeConfig::default(),
            edge: EdgeConfig::default(),
            laptop: LaptopConfig::default(),
            faults: FaultsConfig::default(),
            workloads: WorkloadsConfig::default(),
            users: vec![UserConfig {
                name: "developer".to_owned(),
                groups: Vec::new(),
            }],
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            service_cidr: net(172, 17, 16, 0, 20),
            pod_cidr: net(172, 17, 32, 0, 19),
            domain: "cluster.local".to_owned(),
            kubernetes_minor: 33,
            node_port_range: PortRange {
                first: 30000,
                last: 32767,
            },
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            node_cidr: net(10, 4, 7, 0, 24),
            office_cidr: net(172, 16, 0, 0, 18),
            wan_cidr: net(198, 51, 100, 0, 24),
            mtu: 1500,
        }
    }
}

impl Default for OfficeConfig {
    fn default() -> Self {
        OfficeConfig {
            router_node_address: Ipv4Addr::new(10, 4, 7, 1),
            router_lan_address: Ipv4Addr::new(172, 16, 0, 1),
            nodes_route_back: true,
            pcs: vec![
                PcConfig {
                    name: "pc1".to_owned(),
                    address: Ipv4Addr::new(172, 16, 1, 11),
                },
                PcConfig {
                    name: "pc2".to_owned(),
                    address: Ipv4Addr::new(172, 16, 1, 12),
                },
            ],
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            node_address: Ipv4Addr::new(10, 4, 7, 254),
            wan_address: Ipv4Addr::new(198, 51, 100, 1),
            nat: true,
        }
    }
}

impl Default for LaptopConfig {
    fn default() -> Self {
        LaptopConfig {
            address: Ipv4Addr::new(198, 51, 100, 10),
        }
    }
}

impl Default for WorkloadsConfig {
    fn default() -> Self {
        WorkloadsConfig { defaults: true }
    }
}
