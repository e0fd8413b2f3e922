//! The sans-IO name cache: Kubernetes objects in, DNS records out.
//!
//! [`ClusterNames`] is fed Services, EndpointSlices and Pods (by the watch task in
//! [`crate::watch`], or directly by tests) and keeps only what answering needs: cluster IPs,
//! named ports, ready endpoint addresses with their hostnames, and pod IPs. It holds no
//! client, socket or clock.
//!
//! # Records
//!
//! Following the Kubernetes DNS-Based Service Discovery specification (schema 1.1.0) and,
//! where the specification leaves room, what CoreDNS's `kubernetes` plugin answers:
//!
//! * `<svc>.<ns>.svc.<domain>` A/AAAA → the cluster IPs of a Service; for a headless
//!   Service (`clusterIP: None`) the addresses of its ready endpoints, NXDOMAIN when it has
//!   none. An endpoint is ready when its `ready` condition is true or unset, or when the
//!   Service publishes not-ready addresses (`publishNotReadyAddresses` or the legacy
//!   `service.alpha.kubernetes.io/tolerate-unready-endpoints` annotation);
//! * `<hostname>.<svc>.<ns>.svc.<domain>` A/AAAA → a ready endpoint of a headless Service
//!   with that `hostname` (StatefulSet pods); endpoints without one are named by their
//!   dashed address (`10-244-1-5`), as CoreDNS does;
//! * `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for named ports: the Service port and
//!   name for a cluster IP, one record per ready endpoint (its port from the slice) for a
//!   headless Service;
//! * ExternalName Services → a CNAME, followed when it points back into the cluster domain;
//! * `<a-b-c-d>.<ns>.pod.<domain>` A (IPv6: colons as dashes) when a pod in that namespace
//!   has that IP. Other well-formed pod names are [`Lookup::Unknown`]: clusters differ
//!   (CoreDNS `pods insecure` answers any address, `pods verified` only known ones), so the
//!   cluster DNS server decides;
//! * PTR (`d.c.b.a.in-addr.arpa`, nibble `ip6.arpa`) for cluster IPs and for ready endpoints
//!   of headless Services that have a hostname;
//! * `dns-version.<domain>` TXT → `1.1.0`.
//!
//! All comparisons are case-insensitive and a trailing dot is optional. Every record has a
//! TTL of [`TTL`] seconds.
//!
//! # Negative answers
//!
//! NXDOMAIN and NODATA are given only for names whose whole subtree the cache models: below
//! `svc.<domain>` everything hangs off a Service, so a missing Service is NXDOMAIN. Shapes we
//! do not model (the zone apex, `<ns>.pod.<domain>`, wildcards, names below an ExternalName
//! Service, …) are [`Lookup::Unknown`] and go to the cluster DNS server, as does every
//! negative answer until the cache is [complete](ClusterNames::is_complete).

mod entries;
mod lookup;
mod syntax;
#[cfg(test)]
mod tests;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use entries::{IpIndex, Nested, index_add, index_remove};
pub(crate) use entries::{
    PodEntry, Reduced, ServiceEntry, SliceEntry, reduce_pod, reduce_service, reduce_slice,
};
use syntax::normalize;
pub(crate) use syntax::{in_domain, normalize_name};

/// The TTL of every record, in seconds: short, because the cache follows the API closely and
/// pod addresses change.
pub const TTL: u32 = 5;

/// The version of the Kubernetes DNS schema served at `dns-version.<domain>`.
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";

/// The cluster domain when none is configured.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The label of an EndpointSlice naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The legacy annotation with the meaning of `publishNotReadyAddresses`.
const TOLERATE_UNREADY_ANNOTATION: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// How many CNAMEs (ExternalName Services pointing at each other) are followed.
const MAX_CNAME_CHAIN: usize = 8;

/// The namespace and name of the Service whose endpoints are the API server's.
const API_SERVER_NAMESPACE: &str = "default";
const API_SERVER_SERVICE: &str = "kubernetes";

/// What an address is, as far as the watch cache knows ([`ClusterNames::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind<'a> {
    /// A Service's ClusterIP.
    ServiceIp,
    /// The IP of a pod with its own network namespace (not `hostNetwork`).
    Pod,
    /// The IP of a `hostNetwork` pod: its node's address.
    HostNetworkPod {
        /// The pod's namespace.
        namespace: &'a str,
        /// The pod's name.
        name: &'a str,
    },
    /// An endpoint of the `default/kubernetes` Service: the API server, usually on a
    /// control-plane node.
    ApiServerEndpoint,
    /// An EndpointSlice address that no pod owns (a selector-less Service's, typically).
    Endpoint {
        /// The slice's namespace.
        namespace: &'a str,
        /// The slice's name.
        slice: &'a str,
        /// The Service the slice belongs to.
        service: &'a str,
    },
    /// Nothing in the cache uses it.
    Unknown,
}

/// The type asked for in a lookup. Types we never serve are kept as [`QueryType::Other`] so
/// that an existing name still gets NODATA rather than NXDOMAIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Canonical name.
    Cname,
    /// Reverse pointer.
    Ptr,
    /// Service location.
    Srv,
    /// Text.
    Txt,
    /// `ANY` (`*`): every record of the name.
    Any,
    /// Any other type, by number.
    Other(u16),
}

impl QueryType {
    /// The type with this wire number.
    pub fn from_u16(value: u16) -> Self {
        match value {
            1 => Self::A,
            28 => Self::Aaaa,
            5 => Self::Cname,
            12 => Self::Ptr,
            33 => Self::Srv,
            16 => Self::Txt,
            255 => Self::Any,
            other => Self::Other(other),
        }
    }

    /// The wire number of this type.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::A => 1,
            Self::Aaaa => 28,
            Self::Cname => 5,
            Self::Ptr => 12,
            Self::Srv => 33,
            Self::Txt => 16,
            Self::Any => 255,
            Self::Other(other) => other,
        }
    }

    /// Whether a record of type `data` answers this query type.
    fn matches(self, data: &RecordData) -> bool {
        matches!(
            (self, data),
            (Self::Any, _)
                | (Self::A, RecordData::A(_))
                | (Self::Aaaa, RecordData::Aaaa(_))
                | (Self::Cname, RecordData::Cname(_))
                | (Self::Ptr, RecordData::Ptr(_))
                | (Self::Srv, RecordData::Srv { .. })
                | (Self::Txt, RecordData::Txt(_))
        )
    }
}

/// The data of a [`Record`]. Names are lowercase and without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// The canonical name of an alias (ExternalName Services).
    Cname(String),
    /// The name of an address (reverse lookups).
    Ptr(String),
    /// A service location.
    Srv {
        /// Lower is preferred; always 0 here.
        priority: u16,
        /// Relative weight among records of the same priority.
        weight: u16,
        /// The port to connect to.
        port: u16,
        /// The host to connect to.
        target: String,
    },
    /// One text string.
    Txt(String),
}

impl RecordData {
    /// An A or AAAA record for `ip`.
    pub fn address(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::A(v4),
            IpAddr::V6(v6) => Self::Aaaa(v6),
        }
    }
}

/// One resource record of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The owner name: lowercase, without the trailing dot.
    pub name: String,
    /// Time to live in seconds ([`TTL`]).
    pub ttl: u32,
    /// The record data.
    pub data: RecordData,
}

impl Record {
    fn new(name: &str, data: RecordData) -> Self {
        Self {
            name: name.to_owned(),
            ttl: TTL,
            data,
        }
    }
}

/// The cache's answer for a name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The records answering the question, in answer-section order (a CNAME first, then what
    /// it leads to inside the cluster domain).
    Found(Vec<Record>),
    /// The name exists but has no record of the asked type.
    NoData,
    /// The name does not exist in the cluster domain.
    NxDomain,
    /// The name is inside the cluster domain (or a reverse name of a cluster address) but the
    /// cache cannot answer it authoritatively: ask the cluster DNS server.
    Unknown,
    /// The name is outside the cluster domain.
    NotOurs,
}

/// The cluster's DNS names, kept from a watch of Services, EndpointSlices and Pods.
///
/// Updates take `&mut self`; share it as `Arc<RwLock<ClusterNames>>` between the watch task
/// and whoever answers queries. Lookups never allocate more than their answer.
#[derive(Debug, Clone)]
pub struct ClusterNames {
    domain: Box<str>,
    complete: bool,
    services: Nested<ServiceEntry>,
    /// Cluster IP → Services.
    by_cluster_ip: IpIndex,
    slices: Nested<SliceEntry>,
    /// (namespace, Service) → names of its slices.
    slices_of: Nested<Vec<Arc<str>>>,
    /// Endpoint address → slices.
    by_endpoint_ip: IpIndex,
    pods: Nested<PodEntry>,
    /// Pod IP → pods (pods with their own network namespace only).
    by_pod_ip: IpIndex,
    /// Node address → host-network pods on it.
    by_host_ip: IpIndex,
}

impl Default for ClusterNames {
    fn default() -> Self {
        Self::new(DEFAULT_DOMAIN)
    }
}

impl ClusterNames {
    /// An empty, not yet [complete](Self::is_complete) cache answering for `domain`
    /// (`cluster.local`; case and a trailing dot do not matter).
    pub fn new(domain: &str) -> Self {
        Self {
            domain: normalize(domain).into(),
            complete: false,
            services: Nested::default(),
            by_cluster_ip: HashMap::new(),
            slices: Nested::default(),
            slices_of: Nested::default(),
            by_endpoint_ip: HashMap::new(),
            pods: Nested::default(),
            by_pod_ip: HashMap::new(),
            by_host_ip: HashMap::new(),
        }
    }

    /// The cluster domain [`lookup`](Self::lookup) answers for.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether every kind has been listed once. Until then negative answers are
    /// [`Lookup::Unknown`], because a missing object may just not be listed yet.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Marks the cache as holding (or no longer holding) a full listing of every kind.
    pub fn set_complete(&mut self, complete: bool) {
        self.complete = complete;
    }

    /// How many Services, EndpointSlices and Pods are kept (pods without an address and
    /// slices without a Service are not).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.services.len(), self.slices.len(), self.pods.len())
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: &Service) {
        if let Some(reduced) = reduce_service(svc) {
            self.put_service(reduced);
        }
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let (ns, name) = (namespace.to_ascii_lowercase(), name.to_ascii_lowercase());
        if let Some(old) = self.services.remove(&ns, &name) {
            for ip in old.cluster_ips() {
                index_remove(&mut self.by_cluster_ip, *ip, &ns, &name);
            }
        }
    }

    pub(crate) fn put_service(&mut self, reduced: Reduced<ServiceEntry>) {
        let key = reduced.key;
        self.delete_service(&key.0, &key.1);
        if let Some(entry) = reduced.entry {
            for ip in entry.cluster_ips() {
                index_add(&mut self.by_cluster_ip, *ip, &key);
            }
            self.services.insert(&key, entry);
        }
    }

    /// Adds or replaces an EndpointSlice (`discovery.k8s.io/v1`).
    pub fn apply_endpoint_slice(&mut self, slice: &EndpointSlice) {
        if let Some(reduced) = reduce_slice(slice) {
            self.put_slice(reduced);
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) {
        let (ns, name) = (namespace.to_ascii_lowercase(), name.to_ascii_lowercase());
        let Some(old) = self.slices.remove(&ns, &name) else {
            return;
        };
        for ip in old.addresses() {
            index_remove(&mut self.by_endpoint_ip, ip, &ns, &name);
        }
        if let Some(list) = self.slices_of.get_mut(&ns, &old.service) {
            list.retain(|s| **s != *name);
            if list.is_empty() {
                self.slices_of.remove(&ns, &old.service);
            }
        }
    }

    pub(crate) fn put_slice(&mut self, reduced: Reduced<SliceEntry>) {
        let key = reduced.key;
        self.delete_endpoint_slice(&key.0, &key.1);
        if let Some(entry) = reduced.entry {
            for ip in entry.addresses() {
                index_add(&mut self.by_endpoint_ip, ip, &key);
            }
            let service_key = (key.0.clone(), entry.service.clone());
            match self.slices_of.get_mut(&key.0, &entry.service) {
                Some(list) => list.push(key.1.clone()),
                None => self.slices_of.insert(&service_key, vec![key.1.clone()]),
            }
            self.slices.insert(&key, entry);
        }
    }

    /// Adds or replaces a Pod.
    pub fn apply_pod(&mut self, pod: &Pod) {
        if let Some(reduced) = reduce_pod(pod) {
            self.put_pod(reduced);
        }
    }

    /// Removes a Pod.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let (ns, name) = (namespace.to_ascii_lowercase(), name.to_ascii_lowercase());
        if let Some(old) = self.pods.remove(&ns, &name) {
            let index = old.index(&mut self.by_pod_ip, &mut self.by_host_ip);
            for ip in &old.ips {
                index_remove(index, *ip, &ns, &name);
            }
        }
    }

    pub(crate) fn put_pod(&mut self, reduced: Reduced<PodEntry>) {
        let key = reduced.key;
        self.delete_pod(&key.0, &key.1);
        if let Some(entry) = reduced.entry {
            let index = entry.index(&mut self.by_pod_ip, &mut self.by_host_ip);
            for ip in &entry.ips {
                index_add(index, *ip, &key);
            }
            self.pods.insert(&key, entry);
        }
    }

    /// Forgets everything and marks the cache incomplete (a watcher restart with no listing
    /// at hand).
    pub fn clear(&mut self) {
        *self = Self::new(&self.domain);
    }

    /// Replaces the whole content with a full listing and marks the cache complete.
    pub fn replace_all(&mut self, services: &[Service], slices: &[EndpointSlice], pods: &[Pod]) {
        self.replace_services(services.iter().filter_map(reduce_service));
        self.replace_slices(slices.iter().filter_map(reduce_slice));
        self.replace_pods(pods.iter().filter_map(reduce_pod));
        self.complete = true;
    }

    /// Replaces every Service with a fresh listing.
    pub(crate) fn replace_services(
        &mut self,
        listing: impl IntoIterator<Item = Reduced<ServiceEntry>>,
    ) {
        self.services = Nested::default();
        self.by_cluster_ip.clear();
        for reduced in listing {
            self.put_service(reduced);
        }
    }

    /// Replaces every EndpointSlice with a fresh listing.
    pub(crate) fn replace_slices(
        &mut self,
        listing: impl IntoIterator<Item = Reduced<SliceEntry>>,
    ) {
        self.slices = Nested::default();
        self.slices_of = Nested::default();
        self.by_endpoint_ip.clear();
        for reduced in listing {
            self.put_slice(reduced);
        }
    }

    /// Replaces every Pod with a fresh listing.
    pub(crate) fn replace_pods(&mut self, listing: impl IntoIterator<Item = Reduced<PodEntry>>) {
        self.pods = Nested::default();
        self.by_pod_ip.clear();
        self.by_host_ip.clear();
        for reduced in listing {
            self.put_pod(reduced);
        }
    }
}
