//! Cluster discovery against the simulated API server: each source in its turn, the notes
//! left by the ones skipped (missing API, missing permission with its fix), flags, and the
//! errors that stop discovery. No root, no network beyond loopback.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubelan_apisim::UserInfo;
use kubelan_apisim::resources::find;
use kubelan_apisim::store::Sub;
use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_cluster::discovery::{DiscoveryOverrides, Fact, Source, discover, from_flags, why};
use kubelan_cluster::rbac::{PLACEHOLDER_USER, RbacMode, user_rbac_in};
use kubelan_cluster::{ClusterClient, ClusterError};
use kubelan_testkit::apply_rbac;
use serde_json::json;

fn n(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A test cluster and a [`ClusterClient`] for its admin.
struct Sim {
    cluster: TestCluster,
    admin: ClusterClient,
}

impl Sim {
    async fn start(opts: TestClusterOptions) -> Self {
        let cluster = TestCluster::start(opts).await;
        let admin = Self::connect(&cluster, &cluster.admin_token).await;
        Self { cluster, admin }
    }

    async fn connect(cluster: &TestCluster, token: &str) -> ClusterClient {
        ClusterClient {
            client: cluster.client(token).await,
            namespace: "default".into(),
            context: "lab".into(),
            server: format!("https://{}", cluster.addr),
            user: "tester".into(),
        }
    }

    /// A client for a user with no permissions but those bound to `name`.
    async fn user(&self, name: &str) -> ClusterClient {
        let token = self.cluster.auth.new_user_token(UserInfo::new(name, &[]));
        Self::connect(&self.cluster, &token).await
    }

    fn kube(&self) -> kube::Client {
        self.admin.client.clone()
    }

    /// The cluster DNS Service, as kubeadm creates it.
    async fn create_kube_dns(&self) {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": "172.17.16.10", "selector": {"k8s-app": "kube-dns"},
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        Api::<Service>::namespaced(self.kube(), "kube-system")
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
    }

    /// Takes the nodes' Pod CIDRs away (behind the API: they are immutable through it), as
    /// on clusters whose network plugin allocates pod addresses itself.
    fn strip_node_pod_cidrs(&self) {
        let nodes = find("", "v1", "nodes").unwrap();
        for name in ["node1", "node2"] {
            self.cluster
                .store
                .modify(nodes, "", name, Sub::Main, |o| {
                    let spec = o["spec"].as_object_mut().unwrap();
                    spec.remove("podCIDR");
                    spec.remove("podCIDRs");
                    Ok(())
                })
                .unwrap();
        }
    }

    async fn delete_service_cidr_object(&self) {
        Api::<ServiceCIDR>::all(self.kube())
            .delete("kubernetes", &DeleteParams::default())
            .await
            .unwrap();
    }
}

fn has_note(notes: &[String], needle: &str) -> bool {
    notes.iter().any(|n| n.contains(needle))
}

fn none() -> DiscoveryOverrides {
    DiscoveryOverrides::default()
}

const DOMAIN_NOTE: &str = "cluster domain: assuming cluster.local until the agent confirms it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_cidr_object_and_node_pod_cidrs_win() {
    let sim = Sim::start(TestClusterOptions {
        nodes: 3,
        ..TestClusterOptions::default()
    })
    .await;
    sim.create_kube_dns().await;
    let facts = discover(&sim.admin, &none()).await.unwrap();

    assert_eq!(
        facts.service_cidrs,
        [Fact::new(
            n("172.17.16.0/20"),
            Source::ServiceCidrObject {
                name: "kubernetes".into()
            }
        )]
    );
    // node1 and node2 (172.17.32.0/24, .33.0/24) are siblings and merge; node3's
    // 172.17.34.0/24 is adjacent but would need a wider, invented supernet.
    assert_eq!(
        facts.pod_cidrs,
        [
            Fact::new(
                n("172.17.32.0/23"),
                Source::NodePodCidr {
                    nodes: vec!["node1".into(), "node2".into()]
                }
            ),
            Fact::new(
                n("172.17.34.0/24"),
                Source::NodePodCidr {
                    nodes: vec!["node3".into()]
                }
            ),
        ]
    );
    assert_eq!(
        facts.dns_server,
        Some(Fact::new(
            ip("172.17.16.10"),
            Source::DnsService {
                namespace: "kube-system".into(),
                name: "kube-dns".into()
            }
        ))
    );
    assert_eq!(
        facts.cluster_domain,
        Fact::guess("cluster.local".into(), Source::Default)
    );
    // The first sources answered: nothing else was tried.
    assert_eq!(facts.notes.len(), 1, "{:?}", facts.notes);
    assert!(facts.notes[0].starts_with(DOMAIN_NOTE));

    assert_eq!(
        why(&facts, ip("172.17.33.7")).unwrap(),
        "172.17.33.7 is routed because 172.17.32.0/23: spec.podCIDRs of nodes node1, node2"
    );
    let table = facts.to_string();
    assert!(
        table.contains("172.17.16.0/20  services  ServiceCIDR \"kubernetes\""),
        "{table}"
    );
    let v = serde_json::to_value(&facts).unwrap();
    assert_eq!(v["pod_cidrs"][1]["source"]["nodes"], json!(["node3"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_before_1_33_use_the_api_server_flags() {
    let sim = Sim::start(TestClusterOptions {
        minor: 32,
        ..TestClusterOptions::default()
    })
    .await;
    // A kubeadm control plane's mirror pod.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kube-apiserver-node1",
            "labels": {"component": "kube-apiserver", "tier": "control-plane"}},
        "spec": {"nodeName": "node1", "hostNetwork": true, "containers": [{
            "name": "kube-apiserver", "image": "registry.k8s.io/kube-apiserver:v1.32.0",
            "command": ["kube-apiserver", "--advertise-address=10.4.7.11",
                "--service-cluster-ip-range=172.17.16.0/20", "--secure-port=6443"]}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(sim.kube(), "kube-system")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();

    let facts = discover(&sim.admin, &none()).await.unwrap();
    assert_eq!(
        facts.service_cidrs,
        [Fact::new(
            n("172.17.16.0/20"),
            Source::ApiServerFlag {
                pod: "kube-system/kube-apiserver-node1".into()
            }
        )]
    );
    assert!(
        has_note(
            &facts.notes,
            "ServiceCIDR objects: API not served (cluster older than 1.33)"
        ),
        "{:?}",
        facts.notes
    );
    assert!(
        facts.service_cidrs[0]
            .source
            .to_string()
            .starts_with("kube-apiserver --service-cluster-ip-range (pod kube-system/")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_reads_the_range_from_the_api_servers_refusal() {
    let sim = Sim::start(TestClusterOptions::default()).await;
    sim.delete_service_cidr_object().await;
    let services: Api<Service> = Api::all(sim.kube());
    let before = services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();

    let facts = discover(&sim.admin, &none()).await.unwrap();
    assert_eq!(
        facts.service_cidrs,
        [Fact::new(
            n("172.17.16.0/20"),
            Source::InvalidClusterIpProbe
        )]
    );
    assert!(has_note(&facts.notes, "ServiceCIDR objects: none exist"));
    assert!(
        has_note(
            &facts.notes,
            "kube-apiserver flags: no pods labelled component=kube-apiserver in kube-system"
        ),
        "{:?}",
        facts.notes
    );
    // The probe was a dry run: no Service was stored.
    let after = services.list(&ListParams::default()).await.unwrap();
    assert_eq!(after.items.len(), before);
    assert!(
        !after
            .items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("kubelan-cidr-probe"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permissions_are_notes_naming_the_verb_and_later_sources_guess() {
    let sim = Sim::start(TestClusterOptions::default()).await;
    sim.create_kube_dns().await;
    for (name, port) in [("a", 80), ("b", 81)] {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": port}]}
        }))
        .unwrap();
        Api::<Service>::namespaced(sim.kube(), "default")
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
    }
    // `dev` may list Services, nothing else.
    apply_rbac(
        &sim.kube(),
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: svc-lister\nrules:\n  - apiGroups: [\"\"]\n    resources: [\"services\"]\n    verbs: [\"list\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: svc-lister\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: svc-lister\nsubjects:\n  - apiGroup: rbac.authorization.k8s.io\n    kind: User\n    name: jane@example.com\n",
        PLACEHOLDER_USER,
        "dev",
    )
    .await;
    let dev = sim.user("dev").await;
    let facts = discover(&dev, &none()).await.unwrap();
    let notes = &facts.notes;
    for want in [
        "ServiceCIDR objects: skipped, no permission to list servicecidrs.networking.k8s.io (cluster-wide); grant it (`kubelan rbac discovery` prints a role that does)",
        "kube-apiserver flags: skipped, no permission to list pods in kube-system",
        "out-of-range ClusterIP probe: skipped, no permission to create services in default; grant it to enable this fallback",
        "nodes' spec.podCIDRs: skipped, no permission to list nodes (cluster-wide)",
        "Flannel net-conf: skipped, no permission to get configmaps/kube-flannel-cfg in kube-flannel",
        "observed pod IPs: skipped, no permission to list pods (cluster-wide)",
        "Pod CIDR: not found; pass --pod-cidr CIDR",
        "cluster DNS Service: skipped, no permission to get services/kube-dns in kube-system",
    ] {
        assert!(has_note(notes, want), "no note {want:?} in {notes:#?}");
    }

    // The Service range is guessed from the ClusterIPs in use (172.17.16.1 for
    // `kubernetes`, .10 for kube-dns, two allocated ones), within the real range.
    assert_eq!(facts.service_cidrs.len(), 1);
    let guess = &facts.service_cidrs[0];
    assert!(guess.guessed);
    let Source::ObservedClusterIps { count, prefix_len } = guess.source else {
        panic!("{:?}", guess.source);
    };
    assert_eq!((count, prefix_len), (4, guess.value.prefix_len()));
    assert!((20..=24).contains(&prefix_len), "{}", guess.value);
    assert!(n("172.17.16.0/20").contains(&guess.value));
    for s in Api::<Service>::all(sim.kube())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let cip: IpAddr = s.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
        assert!(guess.value.contains(&cip), "{cip} outside {}", guess.value);
    }
    assert!(facts.to_string().contains("(a guess) [guessed]"));
    assert!(facts.pod_cidrs.is_empty());
    // The DNS Service is found by its label instead.
    assert_eq!(facts.dns_server.unwrap().value, ip("172.17.16.10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flannel_net_conf_when_nodes_have_no_pod_cidrs() {
    let sim = Sim::start(TestClusterOptions::default()).await;
    sim.strip_node_pod_cidrs();
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-flannel"}}),
    )
    .unwrap();
    Api::<Namespace>::all(sim.kube())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-flannel-cfg", "labels": {"app": "flannel"}},
        "data": {"net-conf.json": "{\n  \"Network\": \"172.17.32.0/19\",\n  \"Backend\": {\"Type\": \"vxlan\"}\n}\n"}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(sim.kube(), "kube-flannel")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let facts = discover(&sim.admin, &none()).await.unwrap();
    assert_eq!(
        facts.pod_cidrs,
        [Fact::new(
            n("172.17.32.0/19"),
            Source::FlannelNetConf {
                configmap: "kube-flannel/kube-flannel-cfg".into()
            }
        )]
    );
    assert!(has_note(
        &facts.notes,
        "nodes' spec.podCIDRs: none of the 2 node(s) has one"
    ));
    assert!(
        has_note(&facts.notes, "Calico IPPools: Calico is not installed"),
        "{:?}",
        facts.notes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_pod_ips_are_a_bounded_guess_without_host_network_pods() {
    let sim = Sim::start(TestClusterOptions::default()).await;
    sim.strip_node_pod_cidrs();
    let pods: Api<Pod> = Api::namespaced(sim.kube(), "default");
    for (name, node, host) in [
        ("a", "node1", false),
        ("b", "node2", false),
        ("h", "node1", true),
    ] {
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "hostNetwork": host,
                "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ips: Vec<(String, IpAddr)> = loop {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        let ips: Vec<(String, IpAddr)> = list
            .iter()
            .filter_map(|p| {
                let ip = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
                Some((p.metadata.name.clone()?, ip))
            })
            .collect();
        if ips.len() == 3 {
            break ips;
        }
        assert!(tokio::time::Instant::now() < deadline, "pods got no IPs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let facts = discover(&sim.admin, &none()).await.unwrap();
    assert!(has_note(
        &facts.notes,
        "Flannel net-conf: no ConfigMap kube-flannel/kube-flannel-cfg or kube-system/kube-flannel-cfg (Flannel is not installed)"
    ));
    assert_eq!(facts.pod_cidrs.len(), 1, "{:?}", facts.pod_cidrs);
    let guess = &facts.pod_cidrs[0];
    assert!(guess.guessed);
    // 172.17.32.x and 172.17.33.y: the smallest prefix holding both.
    assert_eq!(guess.value, n("172.17.32.0/23"));
    assert_eq!(
        guess.source,
        Source::ObservedPodIps {
            count: 2,
            prefix_len: 23
        }
    );
    for (name, ip) in &ips {
        // The host-network pod has its node's address, which is not a pod network.
        assert_eq!(guess.value.contains(ip), name != "h", "{name} {ip}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_replace_discovery() {
    let sim = Sim::start(TestClusterOptions::default()).await;
    let overrides = DiscoveryOverrides {
        service_cidrs: vec![n("10.96.0.0/12")],
        pod_cidrs: vec![],
        cluster_domain: Some("corp.example.".into()),
        dns_server: Some(ip("10.96.0.10")),
    };
    let facts = discover(&sim.admin, &overrides).await.unwrap();
    let flag = |f: &str| Source::Flag { flag: f.into() };
    assert_eq!(
        facts.service_cidrs,
        [Fact::new(n("10.96.0.0/12"), flag("--service-cidr"))]
    );
    assert_eq!(
        facts.cluster_domain,
        Fact::new("corp.example".into(), flag("--cluster-domain"))
    );
    assert_eq!(
        facts.dns_server,
        Some(Fact::new(ip("10.96.0.10"), flag("--cluster-dns")))
    );
    // Not given: still discovered.
    assert_eq!(facts.pod_cidrs[0].value, n("172.17.32.0/23"));
    assert!(facts.notes.is_empty(), "{:?}", facts.notes);

    // With every fact given, the API is not contacted at all.
    let all = DiscoveryOverrides {
        pod_cidrs: vec![n("10.244.0.0/16")],
        ..overrides
    };
    let facts = discover(&unreachable(), &all).await.unwrap();
    assert_eq!(
        facts.pod_cidrs,
        [Fact::new(n("10.244.0.0/16"), flag("--pod-cidr"))]
    );
}

#[test]
fn facts_from_flags_alone() {
    let flag = |f: &str| Source::Flag { flag: f.into() };
    let o = DiscoveryOverrides {
        service_cidrs: vec![n("10.212.0.5/16"), n("10.212.0.0/16")],
        pod_cidrs: vec![n("10.211.0.0/16")],
        cluster_domain: None,
        dns_server: Some(ip("10.212.0.53")),
    };
    let facts = from_flags(&o);
    // Host bits dropped, duplicates merged, every fact says it came from its flag.
    assert_eq!(
        facts.service_cidrs,
        [Fact::new(n("10.212.0.0/16"), flag("--service-cidr"))]
    );
    assert_eq!(
        facts.pod_cidrs,
        [Fact::new(n("10.211.0.0/16"), flag("--pod-cidr"))]
    );
    assert_eq!(
        facts.dns_server,
        Some(Fact::new(ip("10.212.0.53"), flag("--cluster-dns")))
    );
    // The domain was not given: the default, marked as a guess and noted.
    assert_eq!(facts.cluster_domain.value, "cluster.local");
    assert!(facts.cluster_domain.guessed);
    assert!(
        facts.notes.iter().any(|n| n.contains("--cluster-domain")),
        "{:?}",
        facts.notes
    );
}

/// A client for an address nothing listens on.
fn unreachable() -> ClusterClient {
    let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    ClusterClient {
        client: kube::Client::try_from(config).unwrap(),
        namespace: "default".into(),
        context: "gone".into(),
        server: "https://127.0.0.1:1/".into(),
        user: "nobody".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_or_bad_credentials_end_discovery() {
    let e = discover(&unreachable(), &none()).await.unwrap_err();
    assert!(matches!(e, ClusterError::Unreachable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("context \"gone\"")
            && msg.contains("https://127.0.0.1:1/")
            && msg.contains("connection refused"),
        "{msg}"
    );

    let sim = Sim::start(TestClusterOptions::default()).await;
    let stale = Sim::connect(&sim.cluster, "not-a-token").await;
    let e = discover(&stale, &none()).await.unwrap_err();
    assert!(matches!(e, ClusterError::Unauthorized { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("context \"lab\"")
            && msg.contains("user \"tester\"")
            && msg.contains("log in again"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_discovery_role_is_enough() {
    let sim = Sim::start(TestClusterOptions::default()).await;
    sim.create_kube_dns().await;
    apply_rbac(
        &sim.kube(),
        &user_rbac_in(RbacMode::Discovery, "kubelan-system"),
        PLACEHOLDER_USER,
        "carol",
    )
    .await;
    let carol = sim.user("carol").await;
    let facts = discover(&carol, &none()).await.unwrap();
    assert_eq!(facts.service_cidrs[0].value, n("172.17.16.0/20"));
    assert_eq!(facts.pod_cidrs[0].value, n("172.17.32.0/23"));
    assert_eq!(facts.dns_server.unwrap().value, ip("172.17.16.10"));
    assert_eq!(facts.notes.len(), 1, "{:?}", facts.notes);

    // And the fallbacks it grants work too: Flannel where nodes have no Pod CIDRs.
    sim.strip_node_pod_cidrs();
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-flannel-cfg"},
        "data": {"net-conf.json": "{\"Network\": \"172.17.32.0/19\"}"}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(sim.kube(), "kube-system")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let facts = discover(&carol, &none()).await.unwrap();
    assert_eq!(
        facts.pod_cidrs,
        [Fact::new(
            n("172.17.32.0/19"),
            Source::FlannelNetConf {
                configmap: "kube-system/kube-flannel-cfg".into()
            }
        )]
    );
    assert!(
        !has_note(&facts.notes, "no permission"),
        "{:?}",
        facts.notes
    );
}
