//! An in-process test cluster for other crates' tests and benchmarks (feature `testing`).
//!
//! [`TestCluster::start`] runs the simulator's API server over TLS on a loopback port, with
//! its own PKI, an [`Authenticator`] holding an admin token, the controllers, a few Ready
//! nodes and a stand-in "kubelet" that gives scheduled pods an IP, writes their status and
//! finishes their deletion. Nothing needs root or namespaces; dropping the [`TestCluster`]
//! stops the server, the controllers and the kubelet.
//!
//! ```no_run
//! # async fn f() {
//! use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
//! let cluster = TestCluster::start(TestClusterOptions::default()).await;
//! let client = cluster.client(&cluster.admin_token).await;
//! # drop(client);
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::controllers::{self, ControllerConfig};
use crate::pki::ClusterPki;
use crate::resources::find;
use crate::store::Sub;
use crate::{
    ApiServer, Authenticator, ClusterConfig, PodBackend, ServerInfo, Store, UserInfo, meta,
};

/// What the stand-in kubelet does with one scheduled pod (`spec.nodeName` set, not being
/// deleted) on each 30 ms pass: the pod as stored and the pod IP allocator in, the new
/// `status` out (`None` leaves the pod alone; an unchanged status writes nothing).
pub type PodStatusFn = Arc<dyn Fn(&Value, &mut PodIps) -> Option<Value> + Send + Sync>;

/// Hands out pod IPs from the pod CIDR of the pod's node: `172.17.{31 + k}.{n}` on `nodeK`,
/// with `n` counting up from 11 across the cluster.
#[derive(Debug)]
pub struct PodIps {
    last: u32,
}

impl PodIps {
    /// The next pod IP for a pod on `node`.
    pub fn next(&mut self, node: &str) -> String {
        self.last += 1;
        format!("172.17.{}.{}", 31 + node_index(node), self.last)
    }

    /// The InternalIP of `node` (`10.4.7.{10 + K}` for `nodeK`): the IP of its
    /// host-network pods.
    pub fn node_ip(&self, node: &str) -> String {
        format!("10.4.7.{}", 10 + node_index(node))
    }
}

/// `K` of `nodeK` (1 for other names).
fn node_index(node: &str) -> u32 {
    node.strip_prefix("node")
        .and_then(|k| k.parse::<u32>().ok())
        .unwrap_or(1)
}

/// The default kubelet: the first time it sees a scheduled pod without an IP it gives it
/// one (the node's InternalIP for `hostNetwork` pods, as a real kubelet does) and marks it
/// `Running` and Ready; after that it leaves the pod alone.
pub fn ready_once(pod: &Value, ips: &mut PodIps) -> Option<Value> {
    if pod.pointer("/status/podIP").is_some() {
        return None;
    }
    let node = meta::str_at(pod, &["spec", "nodeName"]);
    let ip = if pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        ips.node_ip(node)
    } else {
        ips.next(node)
    };
    Some(
        json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}]}),
    )
}

/// A [`PodBackend`] for a cluster whose pods have no network: every dial is refused and
/// no pod has logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPodNetwork;

impl PodBackend for NoPodNetwork {
    fn dial(&self, _: &str, _: &str, _: u16) -> BoxFuture<'static, std::io::Result<TcpStream>> {
        Box::pin(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "no pod network in this test cluster",
            ))
        })
    }

    fn log_file(&self, _: &str, _: &str, _: &str, _: bool) -> Option<std::path::PathBuf> {
        None
    }
}

/// How to build a [`TestCluster`].
#[derive(Clone)]
pub struct TestClusterOptions {
    /// Ready nodes `node1`..`nodeN`; `nodeK` has pod CIDR `172.17.{31 + K}.0/24` and
    /// InternalIP `10.4.7.{10 + K}`. Default 2.
    pub nodes: u8,
    /// Where `pods/portforward` connections and pod logs go. Default [`NoPodNetwork`].
    pub backend: Arc<dyn PodBackend>,
    /// The stand-in kubelet's per-pod status; `None` runs no kubelet (pods stay pending
    /// and deleted pods stay terminating). Default [`ready_once`].
    pub kubelet: Option<PodStatusFn>,
    /// The Kubernetes minor version the API server reports and serves (resources newer
    /// than it answer 404, e.g. ServiceCIDRs before 33). Default 33.
    pub minor: u32,
}

impl Default for TestClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 2,
            backend: Arc::new(NoPodNetwork),
            kubelet: Some(Arc::new(ready_once)),
            minor: 33,
        }
    }
}

impl std::fmt::Debug for TestClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClusterOptions")
            .field("nodes", &self.nodes)
            .field("kubelet", &self.kubelet.is_some())
            .field("minor", &self.minor)
            .finish_non_exhaustive()
    }
}

/// A running simulated cluster; everything it started stops when it is dropped.
#[derive(Debug)]
pub struct TestCluster {
    /// The API server's store, for reading or editing objects behind the API's back.
    pub store: Arc<Store>,
    /// The token authenticator: mint more users' tokens with
    /// [`Authenticator::new_user_token`].
    pub auth: Arc<Authenticator>,
    /// The API server's TLS address on loopback.
    pub addr: SocketAddr,
    /// The cluster CA certificate (PEM) that signed the server certificate.
    pub ca: String,
    /// A token for user `admin` in group `system:masters`.
    pub admin_token: String,
    _stop: DropGuard,
}

impl TestCluster {
    /// Starts the cluster: store, PKI (server certificate for `localhost` and `127.0.0.1`),
    /// controllers, nodes, kubelet and the API server (Kubernetes `1.<opts.minor>`,
    /// advertised as `10.4.7.11:6443`; Service CIDR `172.17.16.0/20`, also as the
    /// `kubernetes` ServiceCIDR object). Must run inside a Tokio runtime.
    ///
    /// # Panics
    /// When any of that fails to start; this is a test helper.
    pub async fn start(opts: TestClusterOptions) -> Self {
        let store = Store::new(ClusterConfig {
            service_cidr: "172.17.16.0/20".parse().unwrap(),
            node_port_range: (30000, 32767),
            cluster_domain: "cluster.local".into(),
        });
        let pki = ClusterPki::generate("test-ca", &["localhost"], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        let cfg = ControllerConfig {
            ca_pem: pki.ca_pem.clone(),
            api_endpoint: ("10.4.7.11".parse().unwrap(), 6443),
        };
        controllers::bootstrap(&store, &cfg).unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        for k in 1..=u32::from(opts.nodes) {
            let (name, cidr) = (format!("node{k}"), format!("172.17.{}.0/24", 31 + k));
            store
                .create(
                    nodes,
                    "",
                    json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
                    false,
                )
                .unwrap();
            store
                .modify(nodes, "", &name, Sub::Status, |o| {
                    o["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "InternalIP", "address": format!("10.4.7.{}", 10 + k)}]});
                    Ok(())
                })
                .unwrap();
        }
        let stop = CancellationToken::new();
        controllers::spawn_all(store.clone(), cfg, stop.clone());
        if let Some(status) = opts.kubelet {
            tokio::spawn(kubelet(store.clone(), status, stop.clone()));
        }
        let auth = Arc::new(Authenticator::new());
        let admin_token = auth.new_user_token(UserInfo::new("admin", &["system:masters"]));
        let server = ApiServer::new(
            store.clone(),
            auth.clone(),
            opts.backend,
            ServerInfo {
                minor: opts.minor,
                advertise: "10.4.7.11:6443".into(),
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server.serve(listener, pki.server_config().unwrap(), stop.clone()));
        Self {
            store,
            auth,
            addr,
            ca: pki.ca_pem,
            admin_token,
            _stop: stop.drop_guard(),
        }
    }

    /// A kubeconfig (cluster, user and context `lab`, namespace `default`) that reaches
    /// this cluster as the holder of `token`.
    pub fn kubeconfig_yaml(&self, token: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: u\n    namespace: default\ncurrent-context: lab\n",
            self.addr
        )
    }

    /// A kube-rs client built from [`kubeconfig_yaml`](Self::kubeconfig_yaml)`(token)`.
    ///
    /// # Panics
    /// When kube-rs rejects the kubeconfig.
    pub async fn client(&self, token: &str) -> kube::Client {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let kc = Kubeconfig::from_yaml(&self.kubeconfig_yaml(token)).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }
}

/// The stand-in kubelet: finishes pod deletions and applies `status` to scheduled pods,
/// every 30 ms until `stop`.
async fn kubelet(store: Arc<Store>, status: PodStatusFn, stop: CancellationToken) {
    let pods = find("", "v1", "pods").unwrap();
    let mut ips = PodIps { last: 10 };
    while !stop.is_cancelled() {
        for p in store.list_all(pods, None) {
            let (ns, name) = (meta::namespace(&p).to_string(), meta::name(&p).to_string());
            if meta::metadata(&p).get("deletionTimestamp").is_some() {
                let _ = store.finish_deletion(pods, &ns, &name, meta::uid(&p));
                continue;
            }
            if meta::str_at(&p, &["spec", "nodeName"]).is_empty() {
                continue;
            }
            if let Some(s) = status(&p, &mut ips) {
                let _ = store.modify(pods, &ns, &name, Sub::Status, |o| {
                    o["status"] = s;
                    Ok(())
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}
