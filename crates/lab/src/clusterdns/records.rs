//! The sans-IO half of the cluster DNS: Services, EndpointSlices and Pods to address
//! records and the hosts file that holds them (see the module documentation of `clusterdns`).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label of an EndpointSlice naming its Service.
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The legacy annotation with the meaning of `publishNotReadyAddresses`.
pub(super) const TOLERATE_UNREADY_ANNOTATION: &str =
    "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// Address records: each address with its names, most preferred name first.
pub type Records = Vec<(IpAddr, Vec<String>)>;

/// Why a name belongs to an address; the order is the order of preference for
/// reverse lookups (dnsmasq answers a PTR query with the first name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NameKind {
    /// `<svc>.<ns>.svc.<domain>` of a cluster IP.
    ClusterIp,
    /// `<hostname>.<svc>.<ns>.svc.<domain>` of an endpoint with a hostname.
    EndpointHostname,
    /// `<dashed-ip>.<svc>.<ns>.svc.<domain>` of an endpoint without one.
    EndpointGenerated,
    /// `<svc>.<ns>.svc.<domain>` of a headless Service's endpoint.
    Headless,
    /// `<dashed-ip>.<ns>.pod.<domain>`.
    Pod,
}

/// Computes the cluster's address records from the API objects.
///
/// The result is sorted by address; each address lists its names once, most
/// preferred first (see the [module docs](super)). Objects with missing or
/// malformed fields are skipped, as are names that are not valid DNS names, so
/// any input gives a usable hosts file. The `domain` is lowercased and loses
/// surrounding dots.
pub fn records(
    domain: &str,
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &[Pod],
) -> Records {
    compute_records(domain, services, slices, pods)
}

/// [`records`] over anything that borrows the objects (such as the `Arc`s of
/// a reflector store), so the watcher does not need to clone them.
pub(super) fn compute_records<S, E, P>(
    domain: &str,
    services: &[S],
    slices: &[E],
    pods: &[P],
) -> Records
where
    S: Borrow<Service>,
    E: Borrow<EndpointSlice>,
    P: Borrow<Pod>,
{
    let domain = normalize_domain(domain);
    let mut by_ip: BTreeMap<IpAddr, Vec<(NameKind, String)>> = BTreeMap::new();
    let mut add = |ip: IpAddr, kind: NameKind, name: String| {
        if is_dns_name(&name) {
            by_ip.entry(ip).or_default().push((kind, name));
        }
    };

    // EndpointSlices by (namespace, service name).
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let slice = slice.borrow();
        let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.as_deref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        slices_of.entry((ns, svc.as_str())).or_default().push(slice);
    }

    for svc in services {
        let svc = svc.borrow();
        let (Some(name), Some(ns), Some(spec)) = (
            svc.metadata.name.as_deref(),
            svc.metadata.namespace.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let service_name = format!("{}.{}.svc.{domain}", lower(name), lower(ns));
        let cluster_ips: Vec<&str> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        let headless = cluster_ips.iter().any(|ip| ip.eq_ignore_ascii_case("None"));
        if !headless {
            for ip in cluster_ips
                .iter()
                .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            {
                add(ip, NameKind::ClusterIp, service_name.clone());
            }
            continue;
        }

        let all_count = spec.publish_not_ready_addresses == Some(true)
            || svc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOLERATE_UNREADY_ANNOTATION))
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        for slice in slices_of.get(&(ns, name)).into_iter().flatten() {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready && !all_count {
                    continue;
                }
                let hostname = endpoint.hostname.as_deref().filter(|h| is_label(h));
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                {
                    add(ip, NameKind::Headless, service_name.clone());
                    match hostname {
                        Some(host) => add(
                            ip,
                            NameKind::EndpointHostname,
                            format!("{}.{service_name}", lower(host)),
                        ),
                        None => add(
                            ip,
                            NameKind::EndpointGenerated,
                            format!("{}.{service_name}", dashed(ip)),
                        ),
                    }
                }
            }
        }
    }

    for pod in pods {
        let pod = pod.borrow();
        let Some(ns) = pod.metadata.namespace.as_deref() else {
            continue;
        };
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            continue;
        }
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
        let ips: Vec<&str> = match status.pod_ips.as_ref() {
            Some(list) if !list.is_empty() => listed.collect(),
            _ => status.pod_ip.as_deref().into_iter().collect(),
        };
        for ip in ips.iter().filter_map(|ip| ip.trim().parse::<IpAddr>().ok()) {
            add(
                ip,
                NameKind::Pod,
                format!("{}.{}.pod.{domain}", dashed(ip), lower(ns)),
            );
        }
    }

    by_ip
        .into_iter()
        .map(|(ip, mut names)| {
            names.sort();
            let mut seen = HashSet::new();
            let names = names
                .into_iter()
                .filter_map(|(_, name)| seen.insert(name.clone()).then_some(name))
                .collect();
            (ip, names)
        })
        .collect()
}

/// Lowercases and trims whitespace and dots from a domain.
pub(super) fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_matches('.').to_ascii_lowercase()
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// An address with its separators replaced by dashes: `10-244-1-5`, `fd00--5`.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Whether `s` is one DNS label of the characters a hosts file can carry.
fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` is a dotted DNS name made of [`is_label`] labels.
pub(super) fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Renders records as a hosts file: one `IP name [name…]` line per address.
pub fn render_hosts(records: &[(IpAddr, Vec<String>)]) -> String {
    let mut out = String::from("# written by kubelan lab cluster-dns; do not edit\n");
    for (ip, names) in records {
        if names.is_empty() {
            continue;
        }
        out.push_str(&ip.to_string());
        for name in names {
            out.push(' ');
            out.push_str(name);
        }
        out.push('\n');
    }
    out
}
