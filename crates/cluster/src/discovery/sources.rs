//! The sources discovery reads, in order, each as one async step that returns what it found
//! and records in the notes why it found nothing. Only an unreachable API (or rejected
//! credentials) stops discovery; a missing permission or API moves on to the next source.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::core::ObjectList;
use serde_json::Value;

use super::parse;
use super::prefix::{self, Bounds, POD_BOUNDS, SERVICE_BOUNDS};
use super::{Fact, Source};
use crate::error::{ApiFailure, ClusterError, classify};
use crate::kubeconfig::ClusterClient;
use crate::preflight::{Access, DISCOVERY_HINT};

/// The addresses the invalid-ClusterIP probe asks for: in no sane Service range (0.0.0.0/8
/// is "this network", 100::/64 the IPv6 discard prefix).
const PROBE_IPS: [&str; 2] = ["0.0.0.1", "100::1"];

/// The name of the dry-run probe Service (never stored: the request is a dry run).
const PROBE_NAME: &str = "kubelan-cidr-probe";

/// Most objects read from one list when only observing addresses: a guess does not need
/// every pod of a large cluster.
const OBSERVE_LIMIT: usize = 2000;

/// Page size of those lists.
const PAGE: u32 = 500;

/// Why a source gave nothing, when it is not fatal.
enum Skip {
    /// 403.
    Forbidden,
    /// 404: the API (or the object) does not exist.
    NotFound,
    /// Anything else the server answered, as text.
    Other(String),
}

/// One discovery run: the client, where it points, and the notes so far.
pub(super) struct Discoverer<'a> {
    cluster: &'a ClusterClient,
    pub(super) notes: Vec<String>,
}

impl<'a> Discoverer<'a> {
    pub(super) fn new(cluster: &'a ClusterClient) -> Self {
        Self {
            cluster,
            notes: Vec::new(),
        }
    }

    fn client(&self) -> kube::Client {
        self.cluster.client.clone()
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Sorts an error into a reason to skip the source, or the end of discovery when the
    /// API cannot be reached or refuses the credentials.
    fn skip(&self, e: kube::Error) -> Result<Skip, ClusterError> {
        match classify(&e) {
            ApiFailure::Forbidden(_) => Ok(Skip::Forbidden),
            ApiFailure::NotFound(_) => Ok(Skip::NotFound),
            ApiFailure::Other(m) => Ok(Skip::Other(m)),
            ApiFailure::Unreachable(_) | ApiFailure::Unauthorized(_) => {
                Err(ClusterError::from_api(
                    "discover the cluster",
                    e,
                    &self.cluster.target(),
                    DISCOVERY_HINT,
                ))
            }
        }
    }

    /// Records a skipped source: `topic: reason`, with the permission and its fix for 403s.
    fn skipped(&mut self, topic: &str, skip: Skip, access: &Access, in_role: bool) {
        let note = match skip {
            Skip::Forbidden => forbidden_note(topic, access, in_role),
            Skip::NotFound => format!("{topic}: not found"),
            Skip::Other(m) => format!("{topic}: {m}"),
        };
        self.note(note);
    }

    // ---- Service CIDRs -------------------------------------------------------------------

    /// ServiceCIDR objects (`networking.k8s.io/v1`, else `v1beta1` of 1.31 and 1.32).
    pub(super) async fn service_cidr_objects(&mut self) -> Result<Vec<Fact<IpNet>>, ClusterError> {
        const TOPIC: &str = "ServiceCIDR objects";
        let objects = match self.list_service_cidr_objects().await? {
            Ok(o) => o,
            Err(Skip::NotFound) => {
                self.note(format!("{TOPIC}: API not served (cluster older than 1.33)"));
                return Ok(Vec::new());
            }
            Err(s) => {
                let access = Access::new("list", "networking.k8s.io", "servicecidrs");
                self.skipped(TOPIC, s, &access, true);
                return Ok(Vec::new());
            }
        };
        let mut facts: Vec<Fact<IpNet>> = Vec::new();
        for (name, obj) in &objects {
            let (good, bad) = parse::service_cidr_spec(obj);
            for b in bad {
                self.note(format!(
                    "{TOPIC}: ServiceCIDR {name:?} has an unparsable CIDR {b}"
                ));
            }
            for net in good {
                if !facts.iter().any(|f| f.value == net) {
                    facts.push(Fact::new(
                        net,
                        Source::ServiceCidrObject { name: name.clone() },
                    ));
                }
            }
        }
        if facts.is_empty() {
            self.note(format!("{TOPIC}: none exist"));
        }
        Ok(facts)
    }

    /// `--service-cluster-ip-range` of kube-apiserver static pods (kubeadm and similar).
    pub(super) async fn api_server_flags(&mut self) -> Result<Vec<Fact<IpNet>>, ClusterError> {
        const TOPIC: &str = "kube-apiserver flags";
        let access = Access::new("list", "", "pods").in_namespace("kube-system");
        let api: Api<Pod> = Api::namespaced(self.client(), "kube-system");
        let pods = match api
            .list(&ListParams::default().labels("component=kube-apiserver"))
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                let s = self.skip(e)?;
                self.skipped(TOPIC, s, &access, true);
                return Ok(Vec::new());
            }
        };
        if pods.is_empty() {
            self.note(format!(
                "{TOPIC}: no pods labelled component=kube-apiserver in kube-system (managed or embedded control plane)"
            ));
            return Ok(Vec::new());
        }
        for p in &pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let Some(spec) = &p.spec else { continue };
            for c in &spec.containers {
                let line: Vec<String> = c
                    .command
                    .iter()
                    .flatten()
                    .chain(c.args.iter().flatten())
                    .cloned()
                    .collect();
                if let Some(nets) = parse::service_range_flag(&line)
                    && !nets.is_empty()
                {
                    let pod = format!("kube-system/{name}");
                    return Ok(nets
                        .into_iter()
                        .map(|n| Fact::new(n, Source::ApiServerFlag { pod: pod.clone() }))
                        .collect());
                }
            }
        }
        self.note(format!(
            "{TOPIC}: {} kube-apiserver pod(s), none with a usable --service-cluster-ip-range",
            pods.len()
        ));
        Ok(Vec::new())
    }

    /// A dry-run Service with a ClusterIP outside any range: the API server's rejection
    /// names the valid range. Nothing is stored.
    pub(super) async fn invalid_cluster_ip_probe(
        &mut self,
    ) -> Result<Vec<Fact<IpNet>>, ClusterError> {
        const TOPIC: &str = "out-of-range ClusterIP probe";
        let ns = self.cluster.namespace.clone();
        let access = Access::new("create", "", "services").in_namespace(&ns);
        let api: Api<Service> = Api::namespaced(self.client(), &ns);
        let params = PostParams {
            dry_run: true,
            field_manager: Some("kubelan".into()),
        };
        let mut facts: Vec<Fact<IpNet>> = Vec::new();
        let mut why_not = Vec::new();
        for ip in PROBE_IPS {
            let probe = Service {
                metadata: ObjectMeta {
                    name: Some(PROBE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(ServiceSpec {
                    cluster_ip: Some(ip.into()),
                    cluster_ips: Some(vec![ip.into()]),
                    ports: Some(vec![ServicePort {
                        port: 80,
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            match api.create(&params, &probe).await {
                Ok(_) => why_not.push(format!(
                    "the API server accepted ClusterIP {ip} (dry run), so its range is unknown"
                )),
                Err(kube::Error::Api(s)) if s.code == 422 => {
                    let ranges = parse::valid_ranges_in_message(&s.message);
                    if ranges.is_empty() {
                        why_not.push(format!(
                            "{ip}: {}",
                            parse::probe_rejection_reason(&s.message)
                        ));
                    }
                    for net in ranges {
                        if !facts.iter().any(|f| f.value == net) {
                            facts.push(Fact::new(net, Source::InvalidClusterIpProbe));
                        }
                    }
                }
                Err(e) => {
                    let s = self.skip(e)?;
                    self.skipped(TOPIC, s, &access, false);
                    return Ok(facts);
                }
            }
        }
        if facts.is_empty() {
            self.note(format!("{TOPIC}: {}", why_not.join("; ")));
        }
        Ok(facts)
    }

    /// The ClusterIPs of existing Services, widened into a guessed range.
    pub(super) async fn observed_cluster_ips(&mut self) -> Result<Vec<Fact<IpNet>>, ClusterError> {
        const TOPIC: &str = "observed ClusterIPs";
        let access = Access::new("list", "", "services");
        let api: Api<Service> = Api::all(self.client());
        let services = match self.list_some(&api).await? {
            Ok(s) => s,
            Err(skip) => {
                self.skipped(TOPIC, skip, &access, true);
                return Ok(Vec::new());
            }
        };
        let ips: Vec<IpAddr> = services
            .iter()
            .filter_map(|s| s.spec.as_ref())
            .flat_map(|spec| {
                spec.cluster_ips
                    .clone()
                    .unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect())
            })
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty() {
            self.note(format!("{TOPIC}: no Service has a ClusterIP"));
        }
        Ok(widened(&ips, SERVICE_BOUNDS, |count, prefix_len| {
            Source::ObservedClusterIps { count, prefix_len }
        }))
    }

    // ---- Pod CIDRs -----------------------------------------------------------------------

    /// The nodes' `spec.podCIDRs`, merged where they are exact neighbours.
    pub(super) async fn node_pod_cidrs(&mut self) -> Result<Vec<Fact<IpNet>>, ClusterError> {
        const TOPIC: &str = "nodes' spec.podCIDRs";
        let access = Access::new("list", "", "nodes");
        let nodes = match Api::<Node>::all(self.client())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                let s = self.skip(e)?;
                self.skipped(TOPIC, s, &access, true);
                return Ok(Vec::new());
            }
        };
        let mut tagged: Vec<(IpNet, String)> = Vec::new();
        let mut without = 0;
        for n in &nodes {
            let name = n.metadata.name.clone().unwrap_or_default();
            let spec = n.spec.clone().unwrap_or_default();
            let cidrs = spec
                .pod_cidrs
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| spec.pod_cidr.into_iter().collect());
            let parsed: Vec<IpNet> = cidrs.iter().filter_map(|c| c.parse().ok()).collect();
            if parsed.is_empty() {
                without += 1;
            }
            tagged.extend(parsed.into_iter().map(|c| (c, name.clone())));
        }
        if tagged.is_empty() {
            self.note(format!(
                "{TOPIC}: none of the {} node(s) has one (the network plugin allocates pod addresses itself)",
                nodes.len()
            ));
            return Ok(Vec::new());
        }
        if without > 0 {
            self.note(format!(
                "{TOPIC}: {without} of {} node(s) have none; their pods may be unreachable (pass --pod-cidr to add their range)",
                nodes.len()
            ));
        }
        Ok(prefix::aggregate_tagged(&tagged)
            .into_iter()
            .map(|(net, nodes)| Fact::new(net, Source::NodePodCidr { nodes }))
            .collect())
    }

    /// Calico's IPPools (`crd.projectcalico.org/v1`), enabled ones only.
    pub(super) async fn calico_ip_pools(&mut self) -> Result<Vec<Fact<IpNet>>, ClusterError> {
        const TOPIC: &str = "Calico IPPools";
        let access = Access::new("list", "crd.projectcalico.org", "ippools");
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("crd.projectcalico.org", "v1", "IPPool"),
            "ippools",
        );
        let api: Api<DynamicObject> = Api::all_with(self.client(), &ar);
        let pools = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                match self.skip(e)? {
                    Skip::NotFound => self.note(format!("{TOPIC}: Calico is not installed")),
                    s => self.skipped(TOPIC, s, &access, true),
                }
                return Ok(Vec::new());
            }
        };
        let mut facts = Vec::new();
        for p in &pools {
            let name = p.metadata.name.clone().unwrap_or_default();
            match parse::calico_pool_cidr(&p.data) {
                Ok(Some(net)) => facts.push(Fact::new(net, Source::CalicoIpPool { name })),
                Ok(None) => self.note(format!("{TOPIC}: {name:?} is disabled")),
                Err(e) => self.note(format!("{TOPIC}: {name:?} {e}")),
            }
        }
        if facts.is_empty() && pools.is_empty() {
            self.note(format!("{TOPIC}: none exist"));
        }
        Ok(facts)
    }

    /// Flannel's `net-conf.json` (ConfigMap `kube-flannel-cfg` in `kube-flannel`, else in
    /// `kube-system` as older manifests put it).
    pub(super) async fn flannel_net_conf(&mut self) -> Result<Vec<Fact<IpNet>>, ClusterError> {
        const TOPIC: &str = "Flannel net-conf";
        const NAME: &str = "kube-flannel-cfg";
        let mut missing = Vec::new();
        for ns in ["kube-flannel", "kube-system"] {
            let access = Access::new("get", "", "configmaps")
                .named(NAME)
                .in_namespace(ns);
            let api: Api<ConfigMap> = Api::namespaced(self.client(), ns);
            let cm = match api.get(NAME).await {
                Ok(cm) => cm,
                Err(e) => {
                    match self.skip(e)? {
                        Skip::NotFound => missing.push(format!("{ns}/{NAME}")),
                        s => self.skipped(TOPIC, s, &access, true),
                    }
                    continue;
                }
            };
            let configmap = format!("{ns}/{NAME}");
            let Some(conf) = cm.data.as_ref().and_then(|d| d.get("net-conf.json")) else {
                self.note(format!(
                    "{TOPIC}: ConfigMap {configmap} has no net-conf.json"
                ));
                continue;
            };
            match parse::flannel_networks(conf) {
                Ok(nets) => {
                    return Ok(nets
                        .into_iter()
                        .map(|n| {
                            Fact::new(
                                n,
                                Source::FlannelNetConf {
                                    configmap: configmap.clone(),
                                },
                            )
                        })
                        .collect());
                }
                Err(e) => self.note(format!("{TOPIC}: ConfigMap {configmap}: {e}")),
            }
        }
        if missing.len() == 2 {
            self.note(format!(
                "{TOPIC}: no ConfigMap {} (Flannel is not installed)",
                missing.join(" or ")
            ));
        }
        Ok(Vec::new())
    }

    /// The IPs of pods that have their own (not the node's) network, widened into a guess.
    pub(super) async fn observed_pod_ips(&mut self) -> Result<Vec<Fact<IpNet>>, ClusterError> {
        const TOPIC: &str = "observed pod IPs";
        let access = Access::new("list", "", "pods");
        let api: Api<Pod> = Api::all(self.client());
        let pods = match self.list_some(&api).await? {
            Ok(p) => p,
            Err(skip) => {
                self.skipped(TOPIC, skip, &access, false);
                return Ok(Vec::new());
            }
        };
        let ips: Vec<IpAddr> = pods
            .iter()
            .filter(|p| {
                !p.spec
                    .as_ref()
                    .and_then(|s| s.host_network)
                    .unwrap_or(false)
            })
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| {
                let all: Vec<String> = s.pod_ips.iter().flatten().map(|i| i.ip.clone()).collect();
                if all.is_empty() {
                    s.pod_ip.clone().into_iter().collect()
                } else {
                    all
                }
            })
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty() {
            self.note(format!("{TOPIC}: no pod with its own IP"));
        }
        Ok(widened(&ips, POD_BOUNDS, |count, prefix_len| {
            Source::ObservedPodIps { count, prefix_len }
        }))
    }

    // ---- DNS -----------------------------------------------------------------------------

    /// The ClusterIP of `kube-system/kube-dns`, else of a kube-system Service labelled
    /// `k8s-app=kube-dns` (CoreDNS charts name it `coredns`, RKE2 `rke2-coredns-...`).
    pub(super) async fn dns_service(&mut self) -> Result<Option<Fact<IpAddr>>, ClusterError> {
        const TOPIC: &str = "cluster DNS Service";
        const NS: &str = "kube-system";
        let api: Api<Service> = Api::namespaced(self.client(), NS);
        let mut candidates = Vec::new();
        match api.get("kube-dns").await {
            Ok(s) => candidates.push(s),
            Err(e) => match self.skip(e)? {
                Skip::NotFound => {}
                s => self.skipped(
                    TOPIC,
                    s,
                    &Access::new("get", "", "services")
                        .named("kube-dns")
                        .in_namespace(NS),
                    true,
                ),
            },
        }
        if candidates.is_empty() {
            match api
                .list(&ListParams::default().labels("k8s-app=kube-dns"))
                .await
            {
                Ok(l) => candidates = l.items,
                Err(e) => {
                    let s = self.skip(e)?;
                    self.skipped(
                        TOPIC,
                        s,
                        &Access::new("list", "", "services").in_namespace(NS),
                        true,
                    );
                }
            }
        }
        for s in &candidates {
            let ip = s
                .spec
                .as_ref()
                .and_then(|spec| spec.cluster_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            if let Some(ip) = ip {
                return Ok(Some(Fact::new(
                    ip,
                    Source::DnsService {
                        namespace: NS.into(),
                        name: s.metadata.name.clone().unwrap_or_default(),
                    },
                )));
            }
        }
        self.note(format!(
            "{TOPIC}: no Service {NS}/kube-dns or labelled k8s-app=kube-dns with a ClusterIP; pass --dns-server"
        ));
        Ok(None)
    }

    /// `(name, object as JSON)` of every ServiceCIDR, from `v1`, or from `v1beta1` when
    /// `v1` is not served. `Skip::NotFound`: neither is.
    async fn list_service_cidr_objects(
        &self,
    ) -> Result<Result<Vec<(String, Value)>, Skip>, ClusterError> {
        match Api::<ServiceCIDR>::all(self.client())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => {
                return Ok(Ok(l
                    .items
                    .into_iter()
                    .map(|o| {
                        let name = o.metadata.name.clone().unwrap_or_default();
                        (name, serde_json::to_value(o).unwrap_or_default())
                    })
                    .collect()));
            }
            Err(e) => match self.skip(e)? {
                Skip::NotFound => {}
                s => return Ok(Err(s)),
            },
        }
        let beta = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.k8s.io", "v1beta1", "ServiceCIDR"),
            "servicecidrs",
        );
        match Api::<DynamicObject>::all_with(self.client(), &beta)
            .list(&ListParams::default())
            .await
        {
            Ok(l) => Ok(Ok(l
                .items
                .into_iter()
                .map(|o| (o.metadata.name.clone().unwrap_or_default(), o.data))
                .collect())),
            Err(e) => self.skip(e).map(Err),
        }
    }

    /// Lists up to [`OBSERVE_LIMIT`] objects, page by page. The outer error ends discovery;
    /// the inner one skips the source.
    async fn list_some<K>(&self, api: &Api<K>) -> Result<Result<Vec<K>, Skip>, ClusterError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut out = Vec::new();
        let mut lp = ListParams::default().limit(PAGE);
        loop {
            let page: ObjectList<K> = match api.list(&lp).await {
                Ok(p) => p,
                Err(e) => return self.skip(e).map(Err),
            };
            out.extend(page.items);
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() && out.len() < OBSERVE_LIMIT => {
                    lp = lp.continue_token(&c);
                }
                _ => break,
            }
        }
        out.truncate(OBSERVE_LIMIT);
        Ok(Ok(out))
    }
}

/// Observed addresses as guessed facts.
fn widened(
    ips: &[IpAddr],
    bounds: (Bounds, Bounds),
    source: impl Fn(usize, u8) -> Source,
) -> Vec<Fact<IpNet>> {
    prefix::widen(ips, bounds)
        .into_iter()
        .map(|w| Fact::guess(w.net, source(w.count, w.net.prefix_len())))
        .collect()
}

/// `topic: skipped, no permission to <verb> <resource> <scope>; ...fix`.
pub(super) fn forbidden_note(topic: &str, access: &Access, in_role: bool) -> String {
    let fix = if in_role {
        "grant it (`kubelan rbac discovery` prints a role that does)"
    } else {
        "grant it to enable this fallback"
    };
    format!("{topic}: skipped, no permission to {access}; {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_notes_name_the_verb_and_the_fix() {
        assert_eq!(
            forbidden_note(
                "nodes' spec.podCIDRs",
                &Access::new("list", "", "nodes"),
                true
            ),
            "nodes' spec.podCIDRs: skipped, no permission to list nodes (cluster-wide); grant it (`kubelan rbac discovery` prints a role that does)"
        );
        assert_eq!(
            forbidden_note(
                "out-of-range ClusterIP probe",
                &Access::new("create", "", "services").in_namespace("dev"),
                false
            ),
            "out-of-range ClusterIP probe: skipped, no permission to create services in dev; grant it to enable this fallback"
        );
        assert!(
            forbidden_note(
                "Calico IPPools",
                &Access::new("list", "crd.projectcalico.org", "ippools"),
                true
            )
            .contains("list ippools.crd.projectcalico.org (cluster-wide)")
        );
    }
}
