//! Facts about the nodes for the commands that print or check routing (`kubelan routes`,
//! `kubelan doctor`): each node's addresses, and the cluster's Calico BGP configuration.
//! Read as untyped objects, so a field a decoder does not know never hides a node.

use std::net::IpAddr;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

/// A node and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    /// The node's name.
    pub name: String,
    /// Its `InternalIP` addresses (what a router peers with or routes through).
    pub internal: Vec<IpAddr>,
    /// Every address of `status.addresses` that is an IP, any type, in order.
    pub all: Vec<IpAddr>,
}

impl NodeAddresses {
    /// The addresses of a Node object (`metadata.name`, `status.addresses`); addresses
    /// that are not IPs (hostnames) are left out.
    pub fn of(node: &Value) -> Self {
        let addresses = || node["status"]["addresses"].as_array().into_iter().flatten();
        let ip = |a: &Value| a["address"].as_str()?.parse::<IpAddr>().ok();
        Self {
            name: node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            internal: addresses()
                .filter(|a| a["type"] == "InternalIP")
                .filter_map(ip)
                .collect(),
            all: addresses().filter_map(ip).collect(),
        }
    }
}

/// The nodes matching `selector` (a Kubernetes label selector; `None`: every node).
///
/// # Errors
/// The API's error (a 403 when listing nodes is not granted).
pub async fn list_nodes(
    client: &kube::Client,
    selector: Option<&str>,
) -> Result<Vec<NodeAddresses>, kube::Error> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Node"), "nodes");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let list = api.list(&lp).await?;
    Ok(list
        .items
        .iter()
        .map(|n| {
            let mut v = n.data.clone();
            v["metadata"]["name"] = n.metadata.name.clone().unwrap_or_default().into();
            NodeAddresses::of(&v)
        })
        .collect())
}

/// The cluster's Calico `BGPConfiguration` "default", as far as `kubelan routes --bgp`
/// needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalicoBgp {
    /// `spec.asNumber`: the nodes' AS.
    pub as_number: Option<u32>,
    /// `spec.nodeToNodeMeshEnabled`.
    pub node_to_node_mesh: Option<bool>,
}

impl CalicoBgp {
    /// The fields of a `BGPConfiguration` object.
    pub fn of(config: &Value) -> Self {
        Self {
            as_number: config["spec"]["asNumber"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok()),
            node_to_node_mesh: config["spec"]["nodeToNodeMeshEnabled"].as_bool(),
        }
    }
}

/// The cluster's Calico `BGPConfiguration` "default"; `None` when there is none (or no
/// Calico API).
///
/// # Errors
/// The API's error, other than "not found".
pub async fn calico_bgp_configuration(
    client: &kube::Client,
) -> Result<Option<CalicoBgp>, kube::Error> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("crd.projectcalico.org", "v1", "BGPConfiguration"),
        "bgpconfigurations",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    match api.get_opt("default").await {
        Ok(Some(o)) => Ok(Some(CalicoBgp::of(&o.data))),
        Ok(None) => Ok(None),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nodes_addresses_by_type() {
        let n = NodeAddresses::of(&json!({
            "metadata": {"name": "node1"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "node1"},
                {"type": "InternalIP", "address": "10.4.7.11"},
                {"type": "ExternalIP", "address": "198.51.100.11"},
                {"type": "InternalIP", "address": "fd00::11"},
                {"type": "InternalIP", "address": "not an ip"},
            ]},
        }));
        assert_eq!(n.name, "node1");
        assert_eq!(
            n.internal,
            ["10.4.7.11", "fd00::11"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        assert_eq!(n.all.len(), 3);
        let empty = NodeAddresses::of(&json!({"status": {"addresses": "odd"}}));
        assert_eq!((empty.name.as_str(), empty.all.len()), ("", 0));
    }

    #[test]
    fn calico_fields_out_of_range_are_unknown() {
        let c =
            CalicoBgp::of(&json!({"spec": {"asNumber": 64513, "nodeToNodeMeshEnabled": false}}));
        assert_eq!(
            c,
            CalicoBgp {
                as_number: Some(64513),
                node_to_node_mesh: Some(false)
            }
        );
        let c = CalicoBgp::of(&json!({"spec": {"asNumber": 5_000_000_000u64}}));
        assert_eq!(c.as_number, None);
    }
}
