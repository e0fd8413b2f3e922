//! Kubernetes objects reduced to what answering needs, and the indexes over them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::syntax::normalize;
use super::{SERVICE_NAME_LABEL, TOLERATE_UNREADY_ANNOTATION};
/// A (namespace, name) pair; the strings are shared by the maps and indexes.
pub(super) type Key = (Arc<str>, Arc<str>);

/// A map keyed by namespace, then name, so that `&str` pairs can look up without allocating.
#[derive(Debug, Clone)]
pub(super) struct Nested<V>(HashMap<Arc<str>, HashMap<Arc<str>, V>>);

impl<V> Default for Nested<V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<V> Nested<V> {
    pub(super) fn get(&self, ns: &str, name: &str) -> Option<&V> {
        self.0.get(ns)?.get(name)
    }

    pub(super) fn get_mut(&mut self, ns: &str, name: &str) -> Option<&mut V> {
        self.0.get_mut(ns)?.get_mut(name)
    }

    pub(super) fn has_namespace(&self, ns: &str) -> bool {
        self.0.contains_key(ns)
    }

    pub(super) fn insert(&mut self, key: &Key, value: V) {
        self.0
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone(), value);
    }

    /// Removes an entry, dropping the namespace map when it empties.
    pub(super) fn remove(&mut self, ns: &str, name: &str) -> Option<V> {
        let inner = self.0.get_mut(ns)?;
        let value = inner.remove(name);
        if inner.is_empty() {
            self.0.remove(ns);
        }
        value
    }

    pub(super) fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }
}

/// An address → owners index.
pub(super) type IpIndex = HashMap<IpAddr, Vec<Key>>;

pub(super) fn index_add(index: &mut IpIndex, ip: IpAddr, key: &Key) {
    let owners = index.entry(ip).or_default();
    if !owners.iter().any(|k| k == key) {
        owners.push(key.clone());
    }
}

pub(super) fn index_remove(index: &mut IpIndex, ip: IpAddr, ns: &str, name: &str) {
    if let Some(owners) = index.get_mut(&ip) {
        owners.retain(|(n, m)| !(&**n == ns && &**m == name));
        if owners.is_empty() {
            index.remove(&ip);
        }
    }
}

/// A port protocol, as used in SRV names (`_tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses a Kubernetes protocol; unset means TCP.
    pub(super) fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None => Some(Self::Tcp),
            Some(p) if p.eq_ignore_ascii_case("tcp") => Some(Self::Tcp),
            Some(p) if p.eq_ignore_ascii_case("udp") => Some(Self::Udp),
            Some(p) if p.eq_ignore_ascii_case("sctp") => Some(Self::Sctp),
            Some(_) => None,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A named port (unnamed ports have no SRV record and are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Port {
    pub(super) name: Box<str>,
    pub(super) protocol: Protocol,
    pub(super) port: u16,
}

impl Port {
    pub(super) fn new(
        name: Option<&str>,
        protocol: Option<&str>,
        port: Option<i32>,
    ) -> Option<Self> {
        let name = name.filter(|n| !n.is_empty())?;
        Some(Self {
            name: name.to_ascii_lowercase().into(),
            protocol: Protocol::parse(protocol)?,
            port: u16::try_from(port?).ok().filter(|p| *p != 0)?,
        })
    }

    pub(super) fn matches(&self, name: &str, protocol: &str) -> bool {
        &*self.name == name && self.protocol.label() == protocol
    }
}

/// What a Service resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ServiceKind {
    /// Its cluster IPs (possibly none yet).
    ClusterIp(Box<[IpAddr]>),
    /// `clusterIP: None`: its ready endpoints.
    Headless,
    /// An alias (lowercase, no trailing dot; empty when unset).
    ExternalName(Box<str>),
}

/// What is kept of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceEntry {
    pub(super) kind: ServiceKind,
    pub(super) ports: Box<[Port]>,
    pub(super) publish_not_ready: bool,
}

impl ServiceEntry {
    pub(super) fn from_service(svc: &Service) -> Self {
        let Some(spec) = svc.spec.as_ref() else {
            return Self {
                kind: ServiceKind::ClusterIp(Box::new([])),
                ports: Box::new([]),
                publish_not_ready: false,
            };
        };
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.as_deref().unwrap_or_default();
            ServiceKind::ExternalName(normalize(target).into())
        } else {
            let ips: Vec<&str> = match &spec.cluster_ips {
                Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
                _ => spec.cluster_ip.as_deref().into_iter().collect(),
            };
            if ips.iter().any(|ip| ip.trim().eq_ignore_ascii_case("none")) {
                ServiceKind::Headless
            } else {
                let mut parsed: Vec<IpAddr> =
                    ips.iter().filter_map(|ip| ip.trim().parse().ok()).collect();
                parsed.dedup();
                ServiceKind::ClusterIp(parsed.into())
            }
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Port::new(p.name.as_deref(), p.protocol.as_deref(), Some(p.port)))
            .collect();
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true)
            || svc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOLERATE_UNREADY_ANNOTATION))
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Self {
            kind,
            ports,
            publish_not_ready,
        }
    }

    pub(super) fn cluster_ips(&self) -> &[IpAddr] {
        match &self.kind {
            ServiceKind::ClusterIp(ips) => ips,
            _ => &[],
        }
    }
}

/// What is kept of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) addresses: Box<[IpAddr]>,
    /// Lowercase.
    pub(super) hostname: Option<Box<str>>,
    pub(super) ready: bool,
}

impl Endpoint {
    /// Whether `label` names this endpoint: its hostname, or the dashed form of an address
    /// when it has none.
    pub(super) fn is_named(&self, label: &str, dashed_ip: Option<IpAddr>) -> bool {
        match &self.hostname {
            Some(h) => &**h == label,
            None => dashed_ip.is_some_and(|ip| self.addresses.contains(&ip)),
        }
    }
}

/// What is kept of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceEntry {
    /// The Service it belongs to (lowercase).
    pub(super) service: Arc<str>,
    pub(super) endpoints: Box<[Endpoint]>,
    pub(super) ports: Box<[Port]>,
}

impl SliceEntry {
    /// `None` for slices without the service-name label (nothing refers to them).
    pub(super) fn from_slice(slice: &EndpointSlice) -> Option<Self> {
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)
            .filter(|s| !s.is_empty())?;
        let ip_slice = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
        let endpoints = slice
            .endpoints
            .iter()
            .filter(|_| ip_slice)
            .filter_map(|e| {
                let addresses: Box<[IpAddr]> = e
                    .addresses
                    .iter()
                    .filter_map(|a| a.trim().parse().ok())
                    .collect();
                (!addresses.is_empty()).then(|| Endpoint {
                    addresses,
                    hostname: e
                        .hostname
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(|h| h.to_ascii_lowercase().into()),
                    ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                })
            })
            .collect();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Port::new(p.name.as_deref(), p.protocol.as_deref(), p.port))
            .collect();
        Some(Self {
            service: service.to_ascii_lowercase().into(),
            endpoints,
            ports,
        })
    }

    pub(super) fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().copied())
    }
}

/// What is kept of a Pod: its addresses, and whether they are its node's (`hostNetwork`).
///
/// A host-network pod's addresses are its node's: they get no DNS name and are indexed
/// apart, so that the agent's policy can tell node addresses from pod addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodEntry {
    pub(super) ips: Box<[IpAddr]>,
    pub(super) host_network: bool,
}

impl PodEntry {
    /// `None` for pods that have no address (pending or finished).
    pub(super) fn from_pod(pod: &Pod) -> Option<Self> {
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let mut ips: Vec<IpAddr> = match &status.pod_ips {
            Some(list) if !list.is_empty() => list
                .iter()
                .filter_map(|p| p.ip.trim().parse().ok())
                .collect(),
            _ => status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.trim().parse().ok())
                .into_iter()
                .collect(),
        };
        ips.dedup();
        (!ips.is_empty()).then(|| Self {
            ips: ips.into(),
            host_network,
        })
    }

    /// The index this pod's addresses belong in.
    pub(super) fn index<'a>(
        &self,
        pods: &'a mut IpIndex,
        host: &'a mut IpIndex,
    ) -> &'a mut IpIndex {
        if self.host_network { host } else { pods }
    }
}

/// An object reduced to what the cache keeps, ready to insert; `entry` is `None` when the
/// object contributes no records (it is still removed under its key).
#[derive(Debug, Clone)]
pub(crate) struct Reduced<T> {
    pub(super) key: Key,
    pub(super) entry: Option<T>,
}

impl<T> Reduced<T> {
    /// The (namespace, name) of the object.
    pub(crate) fn key(&self) -> (&str, &str) {
        (&self.key.0, &self.key.1)
    }
}

/// The (namespace, name) of an object, lowercased; `None` without both.
fn key_of(meta: &ObjectMeta) -> Option<Key> {
    let ns = meta.namespace.as_deref().filter(|n| !n.is_empty())?;
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    Some((
        ns.to_ascii_lowercase().into(),
        name.to_ascii_lowercase().into(),
    ))
}

/// Reduces a Service to what the cache keeps.
pub(crate) fn reduce_service(svc: &Service) -> Option<Reduced<ServiceEntry>> {
    Some(Reduced {
        key: key_of(&svc.metadata)?,
        entry: Some(ServiceEntry::from_service(svc)),
    })
}

/// Reduces an EndpointSlice to what the cache keeps.
pub(crate) fn reduce_slice(slice: &EndpointSlice) -> Option<Reduced<SliceEntry>> {
    Some(Reduced {
        key: key_of(&slice.metadata)?,
        entry: SliceEntry::from_slice(slice),
    })
}

/// Reduces a Pod to what the cache keeps.
pub(crate) fn reduce_pod(pod: &Pod) -> Option<Reduced<PodEntry>> {
    Some(Reduced {
        key: key_of(&pod.metadata)?,
        entry: PodEntry::from_pod(pod),
    })
}
