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

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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

/// A (namespace, name) pair; the strings are shared by the maps and indexes.
type Key = (Arc<str>, Arc<str>);

/// A map keyed by namespace, then name, so that `&str` pairs can look up without allocating.
#[derive(Debug, Clone)]
struct Nested<V>(HashMap<Arc<str>, HashMap<Arc<str>, V>>);

impl<V> Default for Nested<V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<V> Nested<V> {
    fn get(&self, ns: &str, name: &str) -> Option<&V> {
        self.0.get(ns)?.get(name)
    }

    fn get_mut(&mut self, ns: &str, name: &str) -> Option<&mut V> {
        self.0.get_mut(ns)?.get_mut(name)
    }

    fn has_namespace(&self, ns: &str) -> bool {
        self.0.contains_key(ns)
    }

    fn insert(&mut self, key: &Key, value: V) {
        self.0
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone(), value);
    }

    /// Removes an entry, dropping the namespace map when it empties.
    fn remove(&mut self, ns: &str, name: &str) -> Option<V> {
        let inner = self.0.get_mut(ns)?;
        let value = inner.remove(name);
        if inner.is_empty() {
            self.0.remove(ns);
        }
        value
    }

    fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }
}

/// An address → owners index.
type IpIndex = HashMap<IpAddr, Vec<Key>>;

fn index_add(index: &mut IpIndex, ip: IpAddr, key: &Key) {
    let owners = index.entry(ip).or_default();
    if !owners.iter().any(|k| k == key) {
        owners.push(key.clone());
    }
}

fn index_remove(index: &mut IpIndex, ip: IpAddr, ns: &str, name: &str) {
    if let Some(owners) = index.get_mut(&ip) {
        owners.retain(|(n, m)| !(&**n == ns && &**m == name));
        if owners.is_empty() {
            index.remove(&ip);
        }
    }
}

/// A port protocol, as used in SRV names (`_tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses a Kubernetes protocol; unset means TCP.
    fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None => Some(Self::Tcp),
            Some(p) if p.eq_ignore_ascii_case("tcp") => Some(Self::Tcp),
            Some(p) if p.eq_ignore_ascii_case("udp") => Some(Self::Udp),
            Some(p) if p.eq_ignore_ascii_case("sctp") => Some(Self::Sctp),
            Some(_) => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A named port (unnamed ports have no SRV record and are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: Box<str>,
    protocol: Protocol,
    port: u16,
}

impl Port {
    fn new(name: Option<&str>, protocol: Option<&str>, port: Option<i32>) -> Option<Self> {
        let name = name.filter(|n| !n.is_empty())?;
        Some(Self {
            name: name.to_ascii_lowercase().into(),
            protocol: Protocol::parse(protocol)?,
            port: u16::try_from(port?).ok().filter(|p| *p != 0)?,
        })
    }

    fn matches(&self, name: &str, protocol: &str) -> bool {
        &*self.name == name && self.protocol.label() == protocol
    }
}

/// What a Service resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ServiceKind {
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
    kind: ServiceKind,
    ports: Box<[Port]>,
    publish_not_ready: bool,
}

impl ServiceEntry {
    fn from_service(svc: &Service) -> Self {
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

    fn cluster_ips(&self) -> &[IpAddr] {
        match &self.kind {
            ServiceKind::ClusterIp(ips) => ips,
            _ => &[],
        }
    }
}

/// What is kept of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    addresses: Box<[IpAddr]>,
    /// Lowercase.
    hostname: Option<Box<str>>,
    ready: bool,
}

impl Endpoint {
    /// Whether `label` names this endpoint: its hostname, or the dashed form of an address
    /// when it has none.
    fn is_named(&self, label: &str, dashed_ip: Option<IpAddr>) -> bool {
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
    service: Arc<str>,
    endpoints: Box<[Endpoint]>,
    ports: Box<[Port]>,
}

impl SliceEntry {
    /// `None` for slices without the service-name label (nothing refers to them).
    fn from_slice(slice: &EndpointSlice) -> Option<Self> {
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

    fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
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
    ips: Box<[IpAddr]>,
    host_network: bool,
}

impl PodEntry {
    /// `None` for pods that have no address (pending or finished).
    fn from_pod(pod: &Pod) -> Option<Self> {
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
    fn index<'a>(&self, pods: &'a mut IpIndex, host: &'a mut IpIndex) -> &'a mut IpIndex {
        if self.host_network { host } else { pods }
    }
}

/// An object reduced to what the cache keeps, ready to insert; `entry` is `None` when the
/// object contributes no records (it is still removed under its key).
#[derive(Debug, Clone)]
pub(crate) struct Reduced<T> {
    key: Key,
    entry: Option<T>,
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

/// Lowercases a name and drops one trailing dot.
fn normalize(name: &str) -> String {
    name.trim()
        .strip_suffix('.')
        .unwrap_or(name.trim())
        .to_ascii_lowercase()
}

/// The part of `name` before `.<domain>`: `Some("")` for the domain itself, `None` outside.
fn relative<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if domain.is_empty() {
        return Some(name);
    }
    if name == domain {
        return Some("");
    }
    name.strip_suffix(domain)?.strip_suffix('.')
}

/// An address with its separators replaced by dashes: `10-244-1-5`, `fd00--5`.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Parses a dashed address (`10-244-1-5`, `fd00--5`).
fn parse_dashed(label: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = label.split('-').collect();
    if parts.len() == 4 && parts.iter().all(|p| is_decimal_octet(p)) {
        let octets: Vec<u8> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        let octets: [u8; 4] = octets.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if label.contains('.') {
        return None;
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn is_decimal_octet(s: &str) -> bool {
    (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// The address of a reverse-lookup name (`4.3.2.1.in-addr.arpa`, nibble `ip6.arpa`).
fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 || !parts.iter().all(|p| is_decimal_octet(p)) {
            return None;
        }
        let mut octets = [0u8; 4];
        for (i, part) in parts.iter().rev().enumerate() {
            octets[i] = part.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut value: u128 = 0;
    for nibble in nibbles.iter().rev() {
        let mut chars = nibble.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return None;
        };
        value = (value << 4) | u128::from(c.to_digit(16)?);
    }
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

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

/// [`normalize`] for the server module.
pub(crate) fn normalize_name(name: &str) -> String {
    normalize(name)
}

/// Whether `name` is inside the cluster domain `domain` (both normalized).
pub(crate) fn in_domain(name: &str, domain: &str) -> bool {
    relative(name, domain).is_some()
}

#[cfg(test)]
mod tests;
