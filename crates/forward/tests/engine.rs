//! The forward engine against the in-process API simulator (`kubelan_apisim::testing`):
//! real kube-rs watches and WebSocket port-forwards over TLS on loopback, "pods" that are
//! TCP servers in this process. No root, no namespaces; the lab end-to-end tests in
//! `crates/kubelan/tests/forward.rs` cover the real thing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubelan_apisim::PodBackend;
use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_forward::spec::BindAddress;
use kubelan_forward::{Event, Events, ForwardError, Options, Running, parse_specs};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Pods are TCP servers here: each answers its own name on a line, then echoes until EOF.
/// Only port 8080 listens ("connection refused" elsewhere).
#[derive(Default)]
struct Pods {
    servers: Mutex<HashMap<String, SocketAddr>>,
    dials: AtomicU64,
}

impl Pods {
    async fn server(self: &Arc<Self>, pod: &str) -> std::io::Result<SocketAddr> {
        if let Some(a) = self.servers.lock().unwrap().get(pod) {
            return Ok(*a);
        }
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let name = pod.to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let name = name.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        self.servers.lock().unwrap().insert(pod.to_string(), addr);
        Ok(addr)
    }
}

struct Backend(Arc<Pods>);

impl PodBackend for Backend {
    fn dial(
        &self,
        _: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<TcpStream>> {
        let pods = self.0.clone();
        let pod = pod.to_string();
        Box::pin(async move {
            pods.dials.fetch_add(1, Ordering::Relaxed);
            if port != 8080 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ));
            }
            let addr = pods.server(&pod).await?;
            TcpStream::connect(addr).await
        })
    }

    fn log_file(&self, _: &str, _: &str, _: &str, _: bool) -> Option<std::path::PathBuf> {
        None
    }
}

struct Env {
    cluster: TestCluster,
    client: kube::Client,
    pods: Arc<Pods>,
}

async fn env() -> Env {
    let pods = Arc::new(Pods::default());
    let cluster = TestCluster::start(TestClusterOptions {
        backend: Arc::new(Backend(pods.clone())),
        ..TestClusterOptions::default()
    })
    .await;
    let client = cluster.client(&cluster.admin_token).await;
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "x", "command": ["x"],
                    "ports": [{"name": "http", "containerPort": 8080}]}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    create_service(
        &client,
        "web",
        json!([{"name": "http", "port": 80, "targetPort": "http"},
        {"name": "refused", "port": 81, "targetPort": 9999},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}]),
    )
    .await;
    let e = Env {
        cluster,
        client,
        pods,
    };
    wait_ready_pods(&e, 2).await;
    e
}

async fn create_service(client: &kube::Client, name: &str, ports: serde_json::Value) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": "web"}, "ports": ports}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
}

async fn ready_pods(e: &Env) -> Vec<String> {
    let pods = Api::<Pod>::namespaced(e.client.clone(), "default")
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    pods.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

async fn wait_ready_pods(e: &Env, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ready_pods(e).await;
        if r.len() == n {
            return r;
        }
        assert!(Instant::now() < deadline, "pods not ready: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn local_only() -> Options {
    Options {
        addresses: vec![BindAddress::Ip("127.0.0.1".parse().unwrap())],
        pod_wait: Duration::from_secs(5),
        ..Options::default()
    }
}

/// Connects, returns the pod's name line, then a round trip of `payload`.
async fn fetch(addr: SocketAddr, payload: &[u8]) -> std::io::Result<(String, Vec<u8>)> {
    let s = TcpStream::connect(addr).await?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no answer in 10 s"))??;
    w.write_all(payload).await?;
    w.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut back))
        .await
        .map_err(|_| std::io::Error::other("no EOF in 10 s"))??;
    Ok((line.trim().to_string(), back))
}

fn local_addr(running: &Running, forward: &str) -> SocketAddr {
    let rows = running.registry.rows();
    let row = rows
        .iter()
        .find(|r| r.forward == forward)
        .expect("forward row");
    row.local[0].parse().unwrap()
}

async fn wait_event(
    rx: &mut mpsc::Receiver<Event>,
    secs: u64,
    mut f: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if f(&e) => return e,
            Ok(Some(_)) => {}
            _ => panic!("event not seen within {secs} s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_forward_follows_pod_deletion() {
    let e = env().await;
    let (events, mut rx) = Events::channel(1024);
    let specs = parse_specs(&["svc/web", ":80", ":http"]).unwrap();
    let running = kubelan_forward::start(e.client.clone(), "default", &specs, local_only(), events)
        .await
        .unwrap();
    let addr = local_addr(&running, "svc/web");
    let (pod, echoed) = fetch(addr, b"ping").await.unwrap();
    assert_eq!(echoed, b"ping");
    assert!(pod.starts_with("web-"), "{pod}");
    // Sticky: the next connections go to the same pod.
    for _ in 0..5 {
        assert_eq!(fetch(addr, b"x").await.unwrap().0, pod);
    }
    // Delete it: new connections move to the other replica at once, and keep working
    // while the Deployment replaces it.
    Api::<Pod>::namespaced(e.client.clone(), "default")
        .delete(&pod, &DeleteParams::default())
        .await
        .unwrap();
    let t = Instant::now();
    let mut failures = 0;
    let mut moved_to = None;
    while t.elapsed() < Duration::from_secs(3) {
        match fetch(addr, b"y").await {
            Ok((p, _)) if p != pod => moved_to = Some(p),
            Ok(_) => {}
            Err(_) => failures += 1,
        }
    }
    let moved_to = moved_to.expect("connections moved to another pod");
    assert!(failures <= 3, "{failures} failures during the move");
    wait_ready_pods(&e, 2).await;
    for _ in 0..10 {
        assert_eq!(fetch(addr, b"z").await.unwrap().0, moved_to);
    }
    let totals = running.registry.totals();
    assert_eq!(
        totals.api_connections + totals.api_failures,
        totals.connections,
        "one API connection per local connection, no extra: {totals:?}"
    );
    // The pod change was reported.
    wait_event(
        &mut rx,
        5,
        |ev| matches!(ev, Event::Backend { pod: Some(p), .. } if *p == moved_to),
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_connection_does_not_end_the_session() {
    let e = env().await;
    let (events, mut rx) = Events::channel(1024);
    // Port 81 of the Service goes to 9999 in the pods, where nothing listens.
    let specs = parse_specs(&["svc/web", ":81", ":80"]).unwrap();
    let running = kubelan_forward::start(e.client.clone(), "default", &specs, local_only(), events)
        .await
        .unwrap();
    let rows = running.registry.rows();
    let refused: SocketAddr = rows[0].local[0].parse().unwrap();
    let good: SocketAddr = rows[0].local[1].parse().unwrap();
    // The refused dial resets the local connection (nothing comes back, and no clean
    // end either); quick enough that the reset may even beat `connect` returning.
    let end = match TcpStream::connect(refused).await {
        Ok(mut s) => {
            let mut buf = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
                .await
                .unwrap();
            assert!(buf.is_empty(), "nothing comes back from a refused dial");
            r.map(|_| ())
        }
        Err(e) => Err(e),
    };
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    let ev = wait_event(&mut rx, 5, |ev| {
        matches!(ev, Event::ConnectionFailed { .. })
    })
    .await;
    assert!(
        ev.to_string().contains("nothing listens on port 9999"),
        "{ev}"
    );
    assert_eq!(fetch(good, b"still here").await.unwrap().1, b"still here");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_deployment_targets() {
    let e = env().await;
    let pods = wait_ready_pods(&e, 2).await;
    let (events, _rx) = Events::channel(1024);
    let specs =
        parse_specs(&[&format!("pod/{}", pods[0]), ":http", "deploy/web", ":8080"]).unwrap();
    let running = kubelan_forward::start(e.client.clone(), "default", &specs, local_only(), events)
        .await
        .unwrap();
    let p = local_addr(&running, &format!("pod/{}", pods[0]));
    assert_eq!(fetch(p, b"").await.unwrap().0, pods[0]);
    let d = local_addr(&running, "deploy/web");
    let first = fetch(d, b"").await.unwrap().0;
    Api::<Pod>::namespaced(e.client.clone(), "default")
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((name, _)) = fetch(d, b"").await
            && name != first
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deploy/web did not move off {first}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_fix() {
    let e = env().await;
    let start = |args: &[&str]| {
        let specs = parse_specs(args).unwrap();
        let client = e.client.clone();
        async move {
            let (events, _rx) = Events::channel(16);
            kubelan_forward::start(client, "default", &specs, local_only(), events)
                .await
                .map(|_| ())
                .unwrap_err()
        }
    };
    let err = start(&["svc/nope", "8080:80"]).await;
    assert!(matches!(err, ForwardError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("kubectl get services -n default"),
        "{err}"
    );
    let err = start(&["svc/web", "8080:8080"]).await;
    let msg = err.to_string();
    assert!(
        msg.contains("has no port 8080") && msg.contains("80/TCP (http)"),
        "{msg}"
    );
    let err = start(&["svc/web", "53"]).await;
    assert!(err.to_string().contains("kubelan proxy"), "{err}");
    // A bare name is a pod; the message points at the Service of that name.
    let err = start(&["web", "8080:80"]).await;
    assert!(err.to_string().contains("write `svc/web`"), "{err}");
    // Local port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = start(&["svc/web", &format!("{port}:80")]).await;
    assert!(matches!(err, ForwardError::PortInUse { .. }), "{err}");
    assert!(err.to_string().contains("already in use"), "{err}");
    // No RBAC: the preflight names every missing verb.
    let dev = e
        .cluster
        .auth
        .new_user_token(kubelan_apisim::UserInfo::new("dev", &[]));
    let dev = e.cluster.client(&dev).await;
    let missing = kubelan_cluster::check(
        &dev,
        &kubelan_forward::access::single_access(
            "default",
            &parse_specs(&["svc/web", "80"]).unwrap(),
        ),
    )
    .await
    .unwrap();
    let text: Vec<String> = missing.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|m| m.contains("create pods/portforward in default")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|m| m.contains("watch endpointslices")),
        "{text:?}"
    );
}

/// API connections for a burst of 100 concurrent local connections, and what sharing one
/// WebSocket between connections (the same port listed several times) would change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_100_connections() {
    let e = env().await;
    let (events, _rx) = Events::channel(4096);
    let specs = parse_specs(&["svc/web", ":80"]).unwrap();
    let running = kubelan_forward::start(e.client.clone(), "default", &specs, local_only(), events)
        .await
        .unwrap();
    let addr = local_addr(&running, "svc/web");
    fetch(addr, b"warm").await.unwrap();
    let before = running.registry.totals();
    let dials_before = e.pods.dials.load(Ordering::Relaxed);
    let t = Instant::now();
    let burst: Vec<_> = (0..100)
        .map(|i| tokio::spawn(async move { fetch(addr, format!("{i}").as_bytes()).await }))
        .collect();
    let mut ok = 0;
    for h in burst {
        if h.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    let took = t.elapsed();
    let after = running.registry.totals();
    let api = after.api_connections - before.api_connections;
    let dials = e.pods.dials.load(Ordering::Relaxed) - dials_before;
    eprintln!("burst: {ok}/100 ok in {took:?}, {api} API connections, {dials} pod dials");
    assert_eq!(ok, 100);
    assert_eq!(api, 100, "one WebSocket per local connection");
    assert_eq!(dials, 100, "each dials the pod exactly once");
    running.stop().await;

    // The alternative the protocol allows: one WebSocket listing the port N times. The
    // kubelet dials all N at upgrade, before any client exists.
    let pod = wait_ready_pods(&e, 2).await.remove(0);
    let dials_before = e.pods.dials.load(Ordering::Relaxed);
    let t = Instant::now();
    let shared = kubelan_forward::tunnel::open(
        &e.client,
        "default",
        &pod,
        8080,
        25,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let open_shared = t.elapsed();
    // Every slot's pod connection exists before anything was sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.pods.dials.load(Ordering::Relaxed) - dials_before < 25 {
        assert!(Instant::now() < deadline, "pre-dial");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(shared);
    let t = Instant::now();
    let mut singles = Vec::new();
    for _ in 0..25 {
        singles.push(
            kubelan_forward::tunnel::open(
                &e.client,
                "default",
                &pod,
                8080,
                1,
                Duration::from_secs(10),
            )
            .await
            .unwrap(),
        );
    }
    let open_singles = t.elapsed();
    eprintln!(
        "25 pod connections: one shared WebSocket opened in {open_shared:?} (all 25 dialled at once); 25 WebSockets opened one after another in {open_singles:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_follows_services_and_names() {
    let e = env().await;
    let (events, mut rx) = Events::channel(4096);
    let running = kubelan_forward::start_bulk(
        e.client.clone(),
        &["default".to_string()],
        None,
        Options::default(),
        events,
    )
    .await
    .unwrap();
    let mut names = running.names.clone().unwrap();
    let entries = names.borrow_and_update().clone();
    let web = entries
        .iter()
        .find(|e| e.names.iter().any(|n| n == "web"))
        .expect("web is named");
    assert!(
        web.names
            .contains(&"web.default.svc.cluster.local".to_string())
    );
    // Selector-less Services (their endpoints are not pods) are left out.
    assert!(
        !entries
            .iter()
            .any(|e| e.names.iter().any(|n| n == "kubernetes"))
    );
    // web listens on its own loopback address with its TCP ports only (80 and 81, not 53).
    let row = running
        .registry
        .rows()
        .into_iter()
        .find(|r| r.forward == "default/web")
        .unwrap();
    assert_eq!(row.local.len(), 2, "{row:?}");
    let addr: SocketAddr = row.local[0].parse().unwrap();
    assert_eq!(addr.ip(), web.ip);
    assert!(fetch(addr, b"").await.unwrap().0.starts_with("web-"));
    // A new Service appears with its names within a few seconds; a deleted one goes.
    let t = Instant::now();
    create_service(
        &e.client,
        "web2",
        json!([{"port": 8000, "targetPort": 8080}]),
    )
    .await;
    wait_event(
        &mut rx,
        5,
        |ev| matches!(ev, Event::ServiceAdded { forward, .. } if forward == "default/web2"),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if names
                .borrow_and_update()
                .iter()
                .any(|e| e.names.iter().any(|n| n == "web2"))
            {
                break;
            }
            names.changed().await.unwrap();
        }
    })
    .await
    .expect("web2 named");
    let row = running
        .registry
        .rows()
        .into_iter()
        .find(|r| r.forward == "default/web2")
        .unwrap();
    let addr2: SocketAddr = row.local[0].parse().unwrap();
    // The first connection may wait for the EndpointSlice watch.
    let mut got = None;
    for _ in 0..20 {
        if let Ok((p, _)) = fetch(addr2, b"").await {
            got = Some(p);
            break;
        }
    }
    eprintln!("new Service reachable after {:?}", t.elapsed());
    assert!(got.unwrap().starts_with("web-"));
    Api::<Service>::namespaced(e.client.clone(), "default")
        .delete("web2", &DeleteParams::default())
        .await
        .unwrap();
    wait_event(
        &mut rx,
        5,
        |ev| matches!(ev, Event::ServiceRemoved { forward } if forward == "default/web2"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(addr2).await.is_err(), "listener closed");
    assert!(
        !names
            .borrow()
            .iter()
            .any(|e| e.names.iter().any(|n| n == "web2"))
    );
    running.stop().await;
}

/// `kubelan rbac forward` grants what the preflight checks, for every kind of target and
/// for bulk mode: a user holding only that role passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_forward_role_passes_the_preflight() {
    let e = env().await;
    let yaml = kubelan_cluster::user_rbac(kubelan_cluster::RbacMode::Forward);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let kind = doc["kind"].as_str().unwrap().to_string();
        let (group, version, plural) = match kind.as_str() {
            "ClusterRole" => ("rbac.authorization.k8s.io", "v1", "clusterroles"),
            "RoleBinding" => ("rbac.authorization.k8s.io", "v1", "rolebindings"),
            k => panic!("unexpected {k}"),
        };
        let ar = kube::api::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: kind.clone(),
            plural: plural.into(),
        };
        let obj: kube::api::DynamicObject = serde_json::from_value(doc).unwrap();
        let api: Api<kube::api::DynamicObject> = if kind == "ClusterRole" {
            Api::all_with(e.client.clone(), &ar)
        } else {
            Api::namespaced_with(e.client.clone(), "default", &ar)
        };
        api.create(&PostParams::default(), &obj).await.unwrap();
    }
    let token = e.cluster.auth.new_user_token(kubelan_apisim::UserInfo::new(
        kubelan_cluster::rbac::PLACEHOLDER_USER,
        &[],
    ));
    let jane = e.cluster.client(&token).await;
    let specs = parse_specs(&["svc/web", "80", "pod/x", "81", "deploy/web", "82"]).unwrap();
    let mut wanted = kubelan_forward::access::single_access("default", &specs);
    wanted.extend(kubelan_forward::access::bulk_access(&[
        "default".to_string()
    ]));
    let missing = kubelan_cluster::check(&jane, &wanted).await.unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    // And in a namespace the role is not bound in, everything is missing.
    let other = kubelan_forward::access::bulk_access(&["elsewhere".to_string()]);
    assert_eq!(
        kubelan_cluster::check(&jane, &other).await.unwrap().len(),
        other.len()
    );
}
