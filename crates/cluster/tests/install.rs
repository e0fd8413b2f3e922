//! `kubelan install`, `uninstall`, the preflights, the printed RBAC and agent discovery
//! against the in-process API simulator (TLS, tokens, RBAC enforced). A stand-in kubelet
//! marks scheduled pods running and ready (or crash-looping, on demand); no root, no
//! namespaces.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use kubelan_apisim::testing::{PodIps, TestCluster, TestClusterOptions};
use kubelan_apisim::{UserInfo, meta};
use kubelan_cluster::install::{InstallEvent, Outcome};
use kubelan_cluster::preflight::{self, Access};
use kubelan_cluster::rbac::{PLACEHOLDER_USER, RbacMode, user_rbac_in};
use kubelan_cluster::{ClusterError, InstallOptions, ServiceType};
use kubelan_testkit::apply_rbac;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SELECTOR: &str = "app.kubernetes.io/managed-by=kubelan";

struct Sim {
    admin: kube::Client,
    /// When false, the stand-in kubelet reports containers crash-looping instead of ready.
    healthy: Arc<AtomicBool>,
    cluster: TestCluster,
}

impl Sim {
    async fn user(&self, name: &str) -> kube::Client {
        let token = self.cluster.auth.new_user_token(UserInfo::new(name, &[]));
        self.cluster.client(&token).await
    }
}

async fn start() -> Sim {
    let healthy = Arc::new(AtomicBool::new(true));
    // Stand-in kubelet: scheduled pods run and are ready, or crash-loop while `healthy` is off.
    let kubelet = {
        let healthy = healthy.clone();
        move |p: &serde_json::Value, ips: &mut PodIps| {
            let ok = healthy.load(Ordering::Relaxed);
            let state = if ok {
                json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
            } else {
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}})
            };
            let ip = p
                .pointer("/status/podIP")
                .and_then(|v| v.as_str())
                .map(String::from)
                .unwrap_or_else(|| ips.next(meta::str_at(p, &["spec", "nodeName"])));
            Some(json!({"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ok { "True" } else { "False" }}],
                "containerStatuses": [{"name": "agent", "image": "kubelan", "imageID": "",
                    "ready": ok, "restartCount": if ok { 0 } else { 3 }, "state": state}]}))
        }
    };
    let cluster = TestCluster::start(TestClusterOptions {
        kubelet: Some(Arc::new(kubelet)),
        ..TestClusterOptions::default()
    })
    .await;
    Sim {
        admin: cluster.client(&cluster.admin_token).await,
        healthy,
        cluster,
    }
}

fn opts(ns: &str) -> InstallOptions {
    InstallOptions {
        namespace: ns.into(),
        replicas: 2,
        image: "registry.example/kubelan:test".into(),
        service_type: ServiceType::NodePort,
        timeout: Duration::from_secs(20),
        ..InstallOptions::default()
    }
}

/// Collects progress events.
fn recorder() -> (
    Arc<Mutex<Vec<InstallEvent>>>,
    impl Fn(InstallEvent) + Send + Sync,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    (events, move |ev| e.lock().unwrap().push(ev))
}

/// resourceVersion of every object install makes (namespace first), and the Secret's data.
async fn snapshot(c: &kube::Client, ns: &str) -> (Vec<(String, String)>, Secret) {
    let rv =
        |m: &kube::api::ObjectMeta| (m.name.clone().unwrap(), m.resource_version.clone().unwrap());
    let role = if ns == "kubelan-system" {
        "kubelan-agent".to_string()
    } else {
        format!("kubelan-agent-{ns}")
    };
    let secret = Api::<Secret>::namespaced(c.clone(), ns)
        .get("kubelan-agent")
        .await
        .unwrap();
    let v = vec![
        rv(&Api::<Namespace>::all(c.clone())
            .get(ns)
            .await
            .unwrap()
            .metadata),
        rv(&Api::<ServiceAccount>::namespaced(c.clone(), ns)
            .get("kubelan-agent")
            .await
            .unwrap()
            .metadata),
        rv(&Api::<ClusterRole>::all(c.clone())
            .get(&role)
            .await
            .unwrap()
            .metadata),
        rv(&Api::<ClusterRoleBinding>::all(c.clone())
            .get(&role)
            .await
            .unwrap()
            .metadata),
        rv(&secret.metadata),
        rv(&Api::<Service>::namespaced(c.clone(), ns)
            .get("kubelan-agent")
            .await
            .unwrap()
            .metadata),
        rv(&Api::<Deployment>::namespaced(c.clone(), ns)
            .get("kubelan-agent")
            .await
            .unwrap()
            .metadata),
    ];
    (v, secret)
}

/// Names of everything left with kubelan's managed-by label in `ns` and cluster-wide.
async fn leftovers(c: &kube::Client, ns: &str) -> Vec<String> {
    let lp = ListParams::default().labels(SELECTOR);
    let mut out = Vec::new();
    macro_rules! collect {
        ($api:expr, $kind:literal) => {
            for o in $api.list(&lp).await.unwrap().items {
                out.push(format!("{} {}", $kind, o.metadata.name.unwrap()));
            }
        };
    }
    collect!(Api::<Namespace>::all(c.clone()), "namespace");
    collect!(Api::<ClusterRole>::all(c.clone()), "clusterrole");
    collect!(
        Api::<ClusterRoleBinding>::all(c.clone()),
        "clusterrolebinding"
    );
    if Api::<Namespace>::all(c.clone())
        .get_opt(ns)
        .await
        .unwrap()
        .is_some()
    {
        collect!(
            Api::<ServiceAccount>::namespaced(c.clone(), ns),
            "serviceaccount"
        );
        collect!(Api::<Secret>::namespaced(c.clone(), ns), "secret");
        collect!(Api::<Service>::namespaced(c.clone(), ns), "service");
        collect!(Api::<Deployment>::namespaced(c.clone(), ns), "deployment");
        collect!(Api::<Pod>::namespaced(c.clone(), ns), "pod");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_reinstall_uninstall() {
    let sim = start().await;
    let c = &sim.admin;
    let ns = "kubelan-system";

    let (events, progress) = recorder();
    let report = kubelan_cluster::install(c, &opts(ns), &progress)
        .await
        .unwrap();
    let outcomes: Vec<_> = report.objects.iter().map(|o| (o.kind, o.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            ("namespace", Outcome::Created),
            ("serviceaccount", Outcome::Created),
            ("clusterrole", Outcome::Created),
            ("clusterrolebinding", Outcome::Created),
            ("secret", Outcome::Created),
            ("service", Outcome::Created),
            ("deployment", Outcome::Created),
        ]
    );
    assert_eq!(report.pods.len(), 2);
    assert!(
        report
            .pods
            .iter()
            .all(|p| p.ip.is_some() && p.node.is_some())
    );
    {
        let ev = events.lock().unwrap();
        assert_eq!(ev[0], InstallEvent::CheckingPermissions);
        // Progress while waiting depends on how fast the stand-in kubelet is; when it
        // shows up, it counts the right replicas.
        assert!(ev.iter().all(|e| match e {
            InstallEvent::Waiting { desired, .. } => *desired == 2,
            _ => true,
        }));
        assert!(matches!(ev.last(), Some(InstallEvent::Ready { .. })));
    }
    let summary = kubelan_cluster::cli::install_summary(&report);
    assert!(
        summary.starts_with("created namespace kubelan-system, serviceaccount kubelan-agent"),
        "{summary}"
    );

    // The namespace is restricted and marked as ours; the pods run under the SA.
    let n = Api::<Namespace>::all(c.clone()).get(ns).await.unwrap();
    assert_eq!(
        n.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let pods = Api::<Pod>::namespaced(c.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/name=kubelan-agent"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    assert_eq!(
        pods.items[0]
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .as_deref(),
        Some("kubelan-agent")
    );

    // Re-install: nothing changes, credentials are not rotated.
    let (before, secret_before) = snapshot(c, ns).await;
    let report = kubelan_cluster::install(c, &opts(ns), &|_| {})
        .await
        .unwrap();
    assert!(
        report
            .objects
            .iter()
            .all(|o| o.outcome == Outcome::Unchanged),
        "{:?}",
        report.objects
    );
    let (after, secret_after) = snapshot(c, ns).await;
    assert_eq!(before, after);
    assert_eq!(secret_before.data, secret_after.data);

    // Agent discovery and credentials.
    let info = kubelan_cluster::find_agent(c, ns).await.unwrap();
    assert_eq!(info.pods.len(), 2);
    let svc = info.service.clone().unwrap();
    assert_eq!(svc.service_type, "NodePort");
    let np = svc.node_port.unwrap();
    assert!((30000..=32767).contains(&np));
    assert_eq!(info.nodes.len(), 2);
    let eps = kubelan_cluster::direct_endpoints(&info);
    assert_eq!(eps.len(), 4, "{eps:?}");
    assert!(eps[..2].iter().all(|a| a.port() == np));
    assert!(eps[2..].iter().all(|a| a.port() == 7443));
    let creds = kubelan_cluster::load_credentials(c, ns).await.unwrap();
    let data = secret_after.data.unwrap();
    assert_eq!(creds.key_pem.as_bytes(), data["client.key"].0.as_slice());
    mutual_tls_works(&creds, &data).await;

    // A changed option updates only what it touches.
    let mut more = opts(ns);
    more.replicas = 3;
    let report = kubelan_cluster::install(c, &more, &|_| {}).await.unwrap();
    let changed: Vec<_> = report
        .objects
        .iter()
        .filter(|o| o.outcome != Outcome::Unchanged)
        .map(|o| (o.kind, o.outcome))
        .collect();
    assert_eq!(changed, [("deployment", Outcome::Updated)]);
    assert_eq!(report.pods.len(), 3);

    // Uninstall removes everything, including the namespace install created.
    let (_events, progress) = recorder();
    let report = kubelan_cluster::uninstall(c, ns, Duration::from_secs(20), &progress)
        .await
        .unwrap();
    let deleted: Vec<_> = report.deleted.iter().map(|o| o.kind).collect();
    assert_eq!(
        deleted,
        [
            "deployment",
            "service",
            "secret",
            "serviceaccount",
            "clusterrolebinding",
            "clusterrole",
            "namespace"
        ]
    );
    assert!(report.namespace_kept.is_none());
    // (Whether a "pods remaining" progress line appears depends on timing; the leftovers
    // check below is what matters.)
    assert_eq!(leftovers(c, ns).await, Vec::<String>::new());
    assert!(
        Api::<Namespace>::all(c.clone())
            .get_opt(ns)
            .await
            .unwrap()
            .is_none()
    );
    // Again: nothing to do.
    let report = kubelan_cluster::uninstall(c, ns, Duration::from_secs(5), &|_| {})
        .await
        .unwrap();
    assert!(report.deleted.is_empty());
    let e = kubelan_cluster::find_agent(c, ns).await.unwrap_err();
    assert!(matches!(e, ClusterError::NotInstalled { .. }), "{e}");
    assert!(e.to_string().contains("kubelan install"), "{e}");
}

/// The agent's server configuration (from files laid out as the pod mounts them) and a
/// client configuration (from the Secret as a client loads it) complete a mutual-TLS
/// handshake under the fixed name; a client with another install's certificate is refused.
async fn mutual_tls_works(
    creds: &kubelan_cluster::Credentials,
    data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>,
) {
    let dir = std::env::temp_dir().join(format!("kubelan-cluster-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (key, file) in [
        ("ca.crt", "ca.crt"),
        ("agent.crt", "tls.crt"),
        ("agent.key", "tls.key"),
    ] {
        std::fs::write(dir.join(file), &data[key].0).unwrap();
    }
    let server = Arc::new(kubelan_cluster::tls::server_config_from_dir(&dir).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    let handshake = |client: rustls::ClientConfig| {
        let server = server.clone();
        async move {
            let (a, b) = tokio::io::duplex(4096);
            let acceptor = tokio_rustls::TlsAcceptor::from(server);
            let srv = tokio::spawn(async move {
                let mut s = acceptor.accept(b).await?;
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await?;
                s.write_all(&buf).await?;
                s.flush().await?;
                Ok::<_, std::io::Error>(())
            });
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let res = async {
                let mut c = connector
                    .connect(kubelan_cluster::tls::agent_server_name(), a)
                    .await?;
                c.write_all(b"ping").await?;
                c.flush().await?;
                let mut buf = [0u8; 4];
                c.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(buf)
            }
            .await;
            let srv = srv.await.unwrap();
            (res, srv)
        }
    };
    let (res, srv) = handshake(creds.client_config().unwrap()).await;
    assert_eq!(&res.unwrap(), b"ping");
    srv.unwrap();
    let stranger = kubelan_cluster::AgentCredentials::generate("elsewhere").unwrap();
    let mut wrong = stranger.client();
    wrong.ca_pem = creds.ca_pem.clone(); // trusts the agent, but its own cert is foreign
    let (res, srv) = handshake(wrong.client_config().unwrap()).await;
    assert!(res.is_err() || srv.is_err());
    assert!(
        srv.is_err(),
        "the agent must refuse a foreign client certificate"
    );
    // A client pinning another install's CA refuses this agent.
    let mut pinned_elsewhere = creds.clone();
    pinned_elsewhere.ca_pem = stranger.ca_pem.clone();
    let (res, _) = handshake(pinned_elsewhere.client_config().unwrap()).await;
    assert!(
        res.is_err(),
        "the client must refuse an agent of another CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_namespace_is_kept_and_names_do_not_clash() {
    let sim = start().await;
    let c = &sim.admin;
    let ns = "team";
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "mine"}})).unwrap(),
    )
    .await
    .unwrap();

    let mut o = opts(ns);
    o.replicas = 1;
    o.service_type = ServiceType::ClusterIp;
    let report = kubelan_cluster::install(c, &o, &|_| {}).await.unwrap();
    assert_eq!(report.objects[0].outcome, Outcome::Unchanged);
    assert_eq!(report.objects[2].name, "kubelan-agent-team");
    // The existing namespace was not labelled or annotated.
    assert!(
        nss.get(ns)
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
            .is_empty()
    );
    // A second install in the default namespace coexists.
    kubelan_cluster::install(c, &opts("kubelan-system"), &|_| {})
        .await
        .unwrap();
    let crb = Api::<ClusterRoleBinding>::all(c.clone())
        .get("kubelan-agent-team")
        .await
        .unwrap();
    assert_eq!(crb.subjects.unwrap()[0].namespace.as_deref(), Some(ns));

    // ClusterIP: only pod addresses for the direct carrier.
    let info = kubelan_cluster::find_agent(c, ns).await.unwrap();
    assert!(info.nodes.is_empty());
    let eps = kubelan_cluster::direct_endpoints(&info);
    assert_eq!(eps.len(), 1);
    assert!(matches!(eps[0].ip(), IpAddr::V4(ip) if ip.octets()[..2] == [172, 17]));

    let report = kubelan_cluster::uninstall(c, ns, Duration::from_secs(20), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        report.namespace_kept.as_deref(),
        Some("kubelan install did not create it")
    );
    assert!(nss.get_opt(ns).await.unwrap().is_some());
    assert!(cms.get_opt("mine").await.unwrap().is_some());
    assert!(
        Api::<ServiceAccount>::namespaced(c.clone(), ns)
            .get_opt("default")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        leftovers(c, ns)
            .await
            .iter()
            .filter(|l| l.contains("team"))
            .count(),
        0,
        "{:?}",
        leftovers(c, ns).await
    );
    // The other install is untouched.
    assert!(
        kubelan_cluster::find_agent(c, "kubelan-system")
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_reports_pod_reasons() {
    let sim = start().await;
    sim.healthy.store(false, Ordering::Relaxed);
    let mut o = opts("kubelan-system");
    o.replicas = 1;
    o.timeout = Duration::from_secs(3);
    let (events, progress) = recorder();
    let e = kubelan_cluster::install(&sim.admin, &o, &progress)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ClusterError::Timeout { .. }), "{msg}");
    assert!(
        msg.contains("CrashLoopBackOff") && msg.contains("0/1 ready"),
        "{msg}"
    );
    assert!(msg.contains("kubectl -n kubelan-system"), "{msg}");
    assert!(events.lock().unwrap().iter().any(|e| matches!(e,
        InstallEvent::Pod { state, .. } if state.contains("CrashLoopBackOff") && state.contains("3 restarts"))));
    // The agent exists but is not ready: discovery says so.
    let e = kubelan_cluster::find_agent(&sim.admin, "kubelan-system")
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::AgentNotReady { .. }), "{e}");
    assert!(e.to_string().contains("CrashLoopBackOff"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permissions_are_listed() {
    let sim = start().await;
    let dev = sim.user("dev").await;
    let e = kubelan_cluster::install(&dev, &opts("kubelan-system"), &|_| {})
        .await
        .unwrap_err();
    let msg = e.to_string();
    let ClusterError::Forbidden { missing, .. } = &e else {
        panic!("{msg}")
    };
    assert_eq!(
        missing.len(),
        preflight::install_access("kubelan-system", true).len(),
        "{msg}"
    );
    for line in [
        "missing: create clusterrolebindings.rbac.authorization.k8s.io (cluster-wide)",
        "missing: create namespaces (cluster-wide)",
        "missing: patch deployments.apps in kubelan-system",
        "missing: get namespaces/kubelan-system (cluster-wide)",
        "kubelan rbac install",
    ] {
        assert!(msg.contains(line), "{line:?} not in:\n{msg}");
    }
    // Nothing was created.
    assert!(
        Api::<Namespace>::all(sim.admin.clone())
            .get_opt("kubelan-system")
            .await
            .unwrap()
            .is_none()
    );

    // A namespace admin (the built-in `admin` role bound in an existing namespace) lacks only
    // the cluster-wide parts.
    let admin = sim.admin.clone();
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "team")
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "ns-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nsadmin"}]})).unwrap())
        .await
        .unwrap();
    let nsadmin = sim.user("nsadmin").await;
    let missing = preflight::check(&nsadmin, &preflight::install_access("team", false))
        .await
        .unwrap();
    let missing: Vec<String> = missing.iter().map(|m| m.access.to_string()).collect();
    assert_eq!(
        missing,
        [
            "get namespaces/team (cluster-wide)",
            "get clusterroles.rbac.authorization.k8s.io/kubelan-agent-team (cluster-wide)",
            "create clusterroles.rbac.authorization.k8s.io (cluster-wide)",
            "patch clusterroles.rbac.authorization.k8s.io/kubelan-agent-team (cluster-wide)",
            "get clusterrolebindings.rbac.authorization.k8s.io/kubelan-agent-team (cluster-wide)",
            "create clusterrolebindings.rbac.authorization.k8s.io (cluster-wide)",
            "patch clusterrolebindings.rbac.authorization.k8s.io/kubelan-agent-team (cluster-wide)",
        ]
    );

    // Agent clients without permissions: the error names the Secret and the rbac hint.
    kubelan_cluster::install(&admin, &opts("kubelan-system"), &|_| {})
        .await
        .unwrap();
    let e = kubelan_cluster::load_credentials(&dev, "kubelan-system")
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("missing: get secrets/kubelan-agent in kubelan-system"),
        "{msg}"
    );
    assert!(msg.contains("kubelan rbac proxy"), "{msg}");
    let e = kubelan_cluster::find_agent(&dev, "kubelan-system")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("missing: list pods in kubelan-system"),
        "{e}"
    );
    let e = kubelan_cluster::load_credentials(&admin, "elsewhere")
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::NotInstalled { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_rbac_grants_what_the_preflights_check() {
    let sim = start().await;
    let admin = &sim.admin;

    // `kubelan rbac install` is enough to install and uninstall, into a new namespace.
    apply_rbac(
        admin,
        &user_rbac_in(RbacMode::Install, "kubelan-system"),
        PLACEHOLDER_USER,
        "installer",
    )
    .await;
    let installer = sim.user("installer").await;
    let report = kubelan_cluster::install(&installer, &opts("kubelan-system"), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.pods.len(), 2);

    // `kubelan rbac proxy` is enough to use the agent.
    apply_rbac(
        admin,
        &user_rbac_in(RbacMode::Proxy, "kubelan-system"),
        PLACEHOLDER_USER,
        "alice",
    )
    .await;
    let alice = sim.user("alice").await;
    let missing = preflight::check(&alice, &preflight::agent_access("kubelan-system"))
        .await
        .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    kubelan_cluster::load_credentials(&alice, "kubelan-system")
        .await
        .unwrap();
    let info = kubelan_cluster::find_agent(&alice, "kubelan-system")
        .await
        .unwrap();
    assert!(info.notes.is_empty(), "{:?}", info.notes);
    assert_eq!(info.nodes.len(), 2);
    // ... but not to read other Secrets.
    let other = preflight::check(
        &alice,
        &[Access::new("get", "", "secrets")
            .named("other")
            .in_namespace("kubelan-system")],
    )
    .await
    .unwrap();
    assert_eq!(other.len(), 1);

    // Without the optional node reader, discovery still works and says what it skipped.
    apply_rbac(
        admin,
        &user_rbac_in(RbacMode::Proxy, "kubelan-system")
            .split("---\n")
            .take(2)
            .collect::<Vec<_>>()
            .join("---\n"),
        PLACEHOLDER_USER,
        "bob",
    )
    .await;
    let bob = sim.user("bob").await;
    let info = kubelan_cluster::find_agent(&bob, "kubelan-system")
        .await
        .unwrap();
    assert!(info.nodes.is_empty());
    assert!(info.notes[0].contains("list nodes"), "{:?}", info.notes);
    assert_eq!(kubelan_cluster::direct_endpoints(&info).len(), 2);

    // `kubelan rbac discovery` and `forward` grant their read-only needs.
    apply_rbac(
        admin,
        &user_rbac_in(RbacMode::Discovery, "kubelan-system"),
        PLACEHOLDER_USER,
        "carol",
    )
    .await;
    apply_rbac(
        admin,
        &user_rbac_in(RbacMode::Forward, "kubelan-system"),
        PLACEHOLDER_USER,
        "carol",
    )
    .await;
    let carol = sim.user("carol").await;
    let wanted = [
        Access::new("list", "", "nodes"),
        Access::new("list", "networking.k8s.io", "servicecidrs"),
        Access::new("get", "", "pods").in_namespace("kube-system"),
        Access::new("create", "", "pods")
            .subresource("portforward")
            .in_namespace("default"),
        Access::new("watch", "discovery.k8s.io", "endpointslices").in_namespace("default"),
        Access::new("watch", "", "services").in_namespace("default"),
    ];
    assert!(preflight::check(&carol, &wanted).await.unwrap().is_empty());
    // Forward is bound per namespace.
    let denied = preflight::check(
        &carol,
        &[Access::new("create", "", "pods")
            .subresource("portforward")
            .in_namespace("kube-system")],
    )
    .await
    .unwrap();
    assert_eq!(denied.len(), 1);

    let report = kubelan_cluster::uninstall(
        &installer,
        "kubelan-system",
        Duration::from_secs(20),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.deleted.len(), 7);
    assert_eq!(
        leftovers(admin, "kubelan-system").await,
        Vec::<String>::new()
    );
}

/// `kubelan rbac expose|replace|run`, bound in one namespace, is exactly what the session
/// preflights check there; elsewhere the preflight names every missing verb in one sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_session_rbac_grants_what_the_session_preflights_check() {
    let sim = start().await;
    for (mode, user) in [
        (RbacMode::Expose, "erin"),
        (RbacMode::Replace, "rita"),
        (RbacMode::Run, "ruth"),
    ] {
        apply_rbac(
            &sim.admin,
            &user_rbac_in(mode, "kubelan-system"),
            PLACEHOLDER_USER,
            user,
        )
        .await;
    }
    let erin = sim.user("erin").await;
    let rita = sim.user("rita").await;
    let ruth = sim.user("ruth").await;
    let ok = |c: &kube::Client, mode: &'static str, wanted: Vec<Access>| {
        let c = c.clone();
        async move { preflight::require_session(&c, mode, "default", &wanted).await }
    };
    ok(&erin, "expose", preflight::expose_access("default"))
        .await
        .unwrap();
    ok(
        &rita,
        "replace",
        preflight::replace_access("default", "web"),
    )
    .await
    .unwrap();
    ok(&ruth, "run", preflight::run_access("default"))
        .await
        .unwrap();
    // Expose does not grant replace's or run's extra verbs.
    let e = ok(
        &erin,
        "replace",
        preflight::replace_access("default", "web"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "kubelan replace in namespace default needs patch jobs.batch, patch services/web, \
         get leases.coordination.k8s.io, create leases.coordination.k8s.io, create \
         serviceaccounts, create \
         roles.rbac.authorization.k8s.io and create rolebindings.rbac.authorization.k8s.io, \
         which you lack; `kubelan rbac replace` prints a ClusterRole granting them: ask an \
         admin of default to bind it to you there with a RoleBinding"
    );
    assert!(
        ok(&erin, "run", preflight::run_access("default"))
            .await
            .unwrap_err()
            .to_string()
            .starts_with("kubelan run in namespace default needs patch services, which")
    );
    // The binding is per namespace.
    let e = preflight::require_session(
        &erin,
        "expose",
        "kube-system",
        &preflight::expose_access("kube-system"),
    )
    .await
    .unwrap_err();
    let ClusterError::SessionForbidden { missing, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(missing.len(), preflight::expose_access("kube-system").len());
    assert!(!e.to_string().contains('\n'), "{e}");
}
