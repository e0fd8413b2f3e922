//! kube-rs against the simulator, over TLS on loopback: the client the rest of kubelan uses
//! must accept everything the simulator says. No namespaces or root needed; a stand-in
//! "kubelet" marks pods running and port-forwards land on a local echo server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_apisim::{PodBackend, UserInfo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Port 1 is refused, port 2 goes to a server that sends [`CUT_GREETING`] and resets,
/// every other port to an echo server.
struct EchoBackend(SocketAddr, SocketAddr);

const CUT_GREETING: &[u8] = b"partial";

impl PodBackend for EchoBackend {
    fn dial(
        &self,
        _ns: &str,
        _pod: &str,
        port: u16,
    ) -> futures::future::BoxFuture<'static, std::io::Result<TcpStream>> {
        let (addr, cut) = (self.0, self.1);
        Box::pin(async move {
            if port == 1 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ));
            }
            if port == 2 {
                return TcpStream::connect(cut).await;
            }
            TcpStream::connect(addr).await
        })
    }
    fn log_file(&self, _: &str, _: &str, _: &str, _: bool) -> Option<std::path::PathBuf> {
        None
    }
}

async fn start() -> TestCluster {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = echo.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let cut = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cut_addr = cut.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = cut.accept().await {
            let _ = s.write_all(CUT_GREETING).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = s.set_zero_linger();
        }
    });
    TestCluster::start(TestClusterOptions {
        backend: Arc::new(EchoBackend(echo_addr, cut_addr)),
        ..TestClusterOptions::default()
    })
    .await
}

async fn wait_for<T, F: FnMut() -> futures::future::BoxFuture<'static, Option<T>>>(
    what: &str,
    secs: u64,
    mut f: F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_end_to_end() {
    let c = start().await;
    let client = c.client(&c.admin_token).await;

    // Version and nodes with pod CIDRs.
    let v = client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    let cidrs: Vec<String> = list
        .items
        .iter()
        .map(|n| n.spec.as_ref().unwrap().pod_cidrs.clone().unwrap()[0].clone())
        .collect();
    assert_eq!(cidrs, ["172.17.32.0/24", "172.17.33.0/24"]);

    // Deployment + Service → ready pods and an EndpointSlice listing them.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
          "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "kubelan", "ports": [{"name": "http", "containerPort": 80}]}]}}}
    })).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(
        api_code(
            deploys
                .create(&PostParams::default(), &d)
                .await
                .unwrap_err()
        ),
        409
    );
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let s: Service = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
    )
    .unwrap();
    let created = svcs.create(&PostParams::default(), &s).await.unwrap();
    assert!(
        created
            .spec
            .unwrap()
            .cluster_ip
            .unwrap()
            .starts_with("172.17.")
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let ready_ips = {
        let slices = slices.clone();
        wait_for("two ready endpoints", 10, move || {
            let slices = slices.clone();
            Box::pin(async move {
                let l = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                    .await
                    .ok()?;
                let ips: Vec<String> = l
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .map(|e| e.addresses[0].clone())
                    .collect();
                (ips.len() == 2).then_some(ips)
            })
        })
        .await
    };
    let web_pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web_pods.items.len(), 2);
    assert!(
        web_pods
            .items
            .iter()
            .all(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Running"))
    );

    // Deleting a pod: the replacement has a new name and IP; the slice follows.
    let victim = web_pods.items[0].metadata.name.clone().unwrap();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    {
        let slices = slices.clone();
        let old = ready_ips.clone();
        let victim = victim.clone();
        let pods = pods.clone();
        wait_for("replacement pod in the slice", 10, move || {
            let (slices, old, victim, pods) =
                (slices.clone(), old.clone(), victim.clone(), pods.clone());
            Box::pin(async move {
                let l = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                    .await
                    .ok()?;
                let ips: Vec<String> = l
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .map(|e| e.addresses[0].clone())
                    .collect();
                let names: Vec<String> = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect();
                (ips.len() == 2 && ips != old && !names.contains(&victim)).then_some(())
            })
        })
        .await;
    }

    // A watch sees create, update and delete in order, resuming from a list's version.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) if o.metadata.name.as_deref() == Some("w") => seen.push("added"),
            WatchEvent::Modified(o) if o.metadata.name.as_deref() == Some("w") => {
                assert_eq!(o.data.unwrap()["a"], "2");
                seen.push("modified")
            }
            WatchEvent::Deleted(o) if o.metadata.name.as_deref() == Some("w") => {
                seen.push("deleted")
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["added", "modified", "deleted"]);

    // Server-side apply creates, then updates.
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v"}});
    let pp = PatchParams::apply("kubelan-test");
    cms.patch("applied", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    let applied2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "w"}});
    let out = cms
        .patch("applied", &pp, &Patch::Apply(&applied2))
        .await
        .unwrap();
    assert_eq!(out.data.unwrap()["k"], "w");
    // JSON patch with a failing test → 422; missing → 404; invalid → 422.
    let bad = json_patch::Patch(
        serde_json::from_value(json!([{"op": "test", "path": "/data/k", "value": "nope"}]))
            .unwrap(),
    );
    assert_eq!(
        api_code(
            cms.patch("applied", &PatchParams::default(), &Patch::<()>::Json(bad))
                .await
                .unwrap_err()
        ),
        422
    );
    assert_eq!(api_code(cms.get("missing").await.unwrap_err()), 404);
    let invalid: ConfigMap = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}),
    )
    .unwrap();
    assert_eq!(
        api_code(
            cms.create(&PostParams::default(), &invalid)
                .await
                .unwrap_err()
        ),
        422
    );

    // Port-forward: 1 MiB echoed intact; a refused port reports its error.
    let target = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let mut pf = pods.portforward(&target, &[80]).await.unwrap();
    let mut stream = pf.take_stream(80).unwrap();
    let payload: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let sent = payload.clone();
    let writer = async move {
        wr.write_all(&sent).await.unwrap();
    };
    let reader = async move {
        let mut got = vec![0u8; 1024 * 1024];
        rd.read_exact(&mut got).await.unwrap();
        got
    };
    let (_, got) = tokio::time::timeout(
        Duration::from_secs(20),
        futures::future::join(writer, reader),
    )
    .await
    .unwrap();
    assert!(got == payload, "1 MiB echoed intact");
    drop(stream);
    let mut refused = pods.portforward(&target, &[1]).await.unwrap();
    let err = refused.take_error(1).unwrap().await.unwrap();
    assert!(err.contains("connection refused"), "{err}");
    // A pod connection that is reset (not closed) is reported too, after its data, as
    // the kubelet does: that is how a client tells a cut stream from a finished one.
    let mut cut = pods.portforward(&target, &[2]).await.unwrap();
    let mut stream = cut.take_stream(2).unwrap();
    let errors = cut.take_error(2).unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    assert_eq!(got, CUT_GREETING);
    let err = tokio::time::timeout(Duration::from_secs(10), errors)
        .await
        .unwrap()
        .unwrap();
    assert!(err.to_lowercase().contains("connection reset"), "{err}");

    // Authentication and authorization.
    let nobody = c.client("not-a-token").await;
    assert_eq!(
        api_code(
            Api::<Pod>::namespaced(nobody, "default")
                .list(&ListParams::default())
                .await
                .unwrap_err()
        ),
        401
    );
    let dev_token = c.auth.new_user_token(UserInfo::new("dev", &[]));
    let dev = c.client(&dev_token).await;
    let e = Api::<Pod>::namespaced(dev.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message
                    .contains("User \"dev\" cannot list resource \"pods\""),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods", "subresource": "portforward"}}})).unwrap();
    let out = Api::<SelfSubjectAccessReview>::all(dev)
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    assert!(!out.status.unwrap().allowed);
    let out = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    assert!(out.status.unwrap().allowed);

    // The reflector-based watcher (what kubelan's own components use) syncs.
    let w = kube::runtime::watcher(
        Api::<Pod>::all(client.clone()),
        kube::runtime::watcher::Config::default(),
    );
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        kube::runtime::WatchStreamExt::applied_objects(w)
            .boxed()
            .try_next(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(first.is_some());
}

/// What cluster discovery relies on, over HTTP: ServiceCIDRs exist from 1.33 only (404
/// before, as from a real API server of that version), and a dry-run Service with an
/// out-of-range ClusterIP is refused with kube-apiserver's wording, naming the range, and
/// stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ranges_as_discovery_reads_them() {
    use k8s_openapi::api::networking::v1::ServiceCIDR;

    let c = TestCluster::start(TestClusterOptions {
        minor: 32,
        ..TestClusterOptions::default()
    })
    .await;
    let client = c.client(&c.admin_token).await;
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.minor, "32");
    let cidrs: Api<ServiceCIDR> = Api::all(client.clone());
    assert_eq!(
        api_code(cidrs.list(&ListParams::default()).await.unwrap_err()),
        404
    );
    let groups = client.list_api_groups().await.unwrap();
    assert!(!groups.groups.iter().any(|g| g.name == "networking.k8s.io"));
    drop(c);

    let c = TestCluster::start(TestClusterOptions::default()).await;
    let client = c.client(&c.admin_token).await;
    let list = Api::<ServiceCIDR>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        list.items[0].spec.as_ref().unwrap().cidrs.as_ref().unwrap()[0],
        "172.17.16.0/20"
    );

    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let probe = |ip: &str| -> Service {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "probe"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]}}))
        .unwrap()
    };
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let kube::Error::Api(s) = svcs.create(&dry, &probe("0.0.0.1")).await.unwrap_err() else {
        panic!("expected an API error");
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "Service \"probe\" is invalid: spec.clusterIPs: Invalid value: []string{\"0.0.0.1\"}: failed to allocate IP 0.0.0.1: the provided IP (0.0.0.1) is not in the valid range. The range of valid IPs is 172.17.16.0/20"
    );
    let kube::Error::Api(s) = svcs.create(&dry, &probe("100::1")).await.unwrap_err() else {
        panic!("expected an API error");
    };
    assert!(
        s.message
            .ends_with("IPv6 is not configured on this cluster"),
        "{}",
        s.message
    );
    // A dry run that succeeds stores nothing either.
    svcs.create(&dry, &probe("172.17.16.77")).await.unwrap();
    assert!(svcs.get_opt("probe").await.unwrap().is_none());
}
