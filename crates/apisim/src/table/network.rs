//! Printers of Services and networking kinds.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::cells::{
    AGE, Column, NAME, Row, age, at, col, format_labels, format_selector, int_at, list, name_of,
    object_at, opt_str, str_at, strings, wide,
};

// --- Service -------------------------------------------------------------------------------

pub(super) const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "How the service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName.",
    ),
    col(
        "Cluster-IP",
        "string",
        "The virtual IP address assigned to the service.",
    ),
    col(
        "External-IP",
        "string",
        "External addresses: load-balancer ingress points and spec.externalIPs.",
    ),
    col(
        "Port(s)",
        "string",
        "Ports exposed by the service, with node ports where allocated.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Label selector of the pods that back the service.",
    ),
];

pub(super) fn service_row(now: OffsetDateTime, svc: &Value) -> Row {
    // The API server defaults spec.type to ClusterIP.
    let svc_type = opt_str(svc, &["spec", "type"]).unwrap_or("ClusterIP");
    let cluster_ip = list(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_str(svc, &["spec", "clusterIP"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let external_ips: Vec<&str> = strings(svc, &["spec", "externalIPs"]);
    let external = match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_owned()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut all: Vec<&str> = lb_ingress(svc).into_iter().collect();
            all.extend(external_ips.iter().copied());
            if all.is_empty() {
                "<pending>".to_owned()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    };
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]).unwrap_or(0);
            let protocol = opt_str(p, &["protocol"]).unwrap_or("TCP");
            match int_at(p, &["nodePort"]).unwrap_or(0) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    };
    vec![
        json!(name_of(svc)),
        json!(svc_type),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        json!(age(now, svc)),
        json!(format_labels(object_at(svc, &["spec", "selector"]))),
    ]
    .into()
}

/// Load-balancer ingress points (IP, else hostname), sorted and de-duplicated.
fn lb_ingress(obj: &Value) -> BTreeSet<&str> {
    list(obj, &["status", "loadBalancer", "ingress"])
        .iter()
        .filter_map(|i| {
            [str_at(i, &["ip"]), str_at(i, &["hostname"])]
                .into_iter()
                .find(|s| !s.is_empty())
        })
        .collect()
}

// --- networking ----------------------------------------------------------------------------

pub(super) const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "Ready addresses and ports of the endpoints.",
    ),
    AGE,
];

/// How many entries list-like cells show before ` + N more...`.
const MAX_LISTED: usize = 3;

pub(super) fn endpoints_row(now: OffsetDateTime, ep: &Value) -> Row {
    let subsets = list(ep, &["subsets"]);
    let text = if subsets.is_empty() {
        "<none>".to_owned()
    } else {
        let mut shown: Vec<String> = Vec::new();
        let mut more = false;
        let mut count: usize = 0;
        for subset in subsets {
            let addresses = list(subset, &["addresses"]);
            let ports = list(subset, &["ports"]);
            // Headless services may have no ports: list the bare addresses.
            let ports: Vec<Option<i64>> = if ports.is_empty() {
                vec![None]
            } else {
                ports
                    .iter()
                    .map(|p| Some(int_at(p, &["port"]).unwrap_or(0)))
                    .collect()
            };
            for port in ports {
                count = count.saturating_add(addresses.len());
                for address in addresses {
                    if shown.len() == MAX_LISTED {
                        more = true;
                        break;
                    }
                    let ip = str_at(address, &["ip"]);
                    shown.push(match port {
                        None => ip.to_owned(),
                        Some(port) => join_host_port(ip, port),
                    });
                }
            }
        }
        let joined = shown.join(",");
        if more {
            format!("{joined} + {} more...", count.saturating_sub(MAX_LISTED))
        } else {
            joined
        }
    };
    vec![json!(name_of(ep)), json!(text), json!(age(now, ep))].into()
}

/// `host:port`, with IPv6 hosts in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(super) const ENDPOINTSLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "Type of the addresses in the slice: IPv4, IPv6 or FQDN.",
    ),
    col("Ports", "string", "Ports of the endpoints in the slice."),
    col(
        "Endpoints",
        "string",
        "Addresses of the endpoints in the slice.",
    ),
    AGE,
];

pub(super) fn endpointslice_row(now: OffsetDateTime, slice: &Value) -> Row {
    let ports: Vec<String> = list(slice, &["ports"])
        .iter()
        .map(|p| match (int_at(p, &["port"]), opt_str(p, &["name"])) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => "*".to_owned(),
        })
        .collect();
    let addresses: Vec<String> = list(slice, &["endpoints"])
        .iter()
        .flat_map(|e| strings(e, &["addresses"]))
        .map(str::to_owned)
        .collect();
    vec![
        json!(name_of(slice)),
        json!(str_at(slice, &["addressType"])),
        json!(list_with_more(&ports)),
        json!(list_with_more(&addresses)),
        json!(age(now, slice)),
    ]
    .into()
}

/// The first few entries joined with `,`, then ` + N more...`; `<unset>` when empty.
fn list_with_more(all: &[String]) -> String {
    if all.is_empty() {
        return "<unset>".to_owned();
    }
    let shown = all[..all.len().min(MAX_LISTED)].join(",");
    if all.len() > MAX_LISTED {
        format!("{shown} + {} more...", all.len() - MAX_LISTED)
    } else {
        shown
    }
}

pub(super) const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "Name of the IngressClass that handles this ingress.",
    ),
    col("Hosts", "string", "Hosts the ingress rules match."),
    col(
        "Address",
        "string",
        "Load-balancer ingress points of the ingress.",
    ),
    col("Ports", "string", "Ports the ingress is served on."),
    AGE,
];

pub(super) fn ingress_row(now: OffsetDateTime, ing: &Value) -> Row {
    let rules = list(ing, &["spec", "rules"]);
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX_LISTED {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_owned()
    } else if more {
        format!(
            "{} + {} more...",
            hosts.join(","),
            rules.len().saturating_sub(MAX_LISTED)
        )
    } else {
        hosts.join(",")
    };
    let address = lb_ingress(ing).into_iter().collect::<Vec<_>>().join(",");
    let ports = if list(ing, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        json!(name_of(ing)),
        json!(opt_str(ing, &["spec", "ingressClassName"]).unwrap_or("<none>")),
        json!(hosts),
        json!(address),
        json!(ports),
        json!(age(now, ing)),
    ]
    .into()
}

pub(super) const INGRESSCLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that implements this class.",
    ),
    col(
        "Parameters",
        "string",
        "Object holding extra configuration for the controller.",
    ),
    AGE,
];

pub(super) fn ingressclass_row(now: OffsetDateTime, class: &Value) -> Row {
    let parameters = match object_at(class, &["spec", "parameters"]) {
        None => "<none>".to_owned(),
        Some(_) => {
            let mut p = str_at(class, &["spec", "parameters", "kind"]).to_owned();
            if let Some(group) = opt_str(class, &["spec", "parameters", "apiGroup"]) {
                p.push('.');
                p.push_str(group);
            }
            p.push('/');
            p.push_str(str_at(class, &["spec", "parameters", "name"]));
            p
        }
    };
    vec![
        json!(name_of(class)),
        json!(str_at(class, &["spec", "controller"])),
        json!(parameters),
        json!(age(now, class)),
    ]
    .into()
}

pub(super) const NETWORKPOLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "Label selector of the pods the policy applies to.",
    ),
    AGE,
];

pub(super) fn networkpolicy_row(now: OffsetDateTime, np: &Value) -> Row {
    // spec.podSelector is not a pointer in Go: a missing one is the empty selector.
    let empty = Value::Object(Map::new());
    let selector = at(np, &["spec", "podSelector"]).unwrap_or(&empty);
    vec![
        json!(name_of(np)),
        json!(format_selector(Some(selector))),
        json!(age(now, np)),
    ]
    .into()
}

pub(super) const SERVICECIDR_COLUMNS: &[Column] = &[
    NAME,
    col(
        "CIDRs",
        "string",
        "IP ranges from which service cluster IPs are allocated.",
    ),
    AGE,
];

pub(super) fn servicecidr_row(now: OffsetDateTime, cidr: &Value) -> Row {
    vec![
        json!(name_of(cidr)),
        json!(strings(cidr, &["spec", "cidrs"]).join(",")),
        json!(age(now, cidr)),
    ]
    .into()
}
