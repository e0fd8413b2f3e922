//! `run_watchers` against the in-process API simulator over TLS: objects created through
//! the API become names in the cache, and go away when deleted. A stand-in kubelet gives
//! scheduled pods an IP and marks them ready, so the simulator's controllers fill in the
//! EndpointSlices.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_dns::{Answer, ClusterNames, Lookup, QueryType, RecordData};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A simulated cluster (one node, no pod network) and an admin client for it; stops when
/// dropped.
struct Cluster {
    client: kube::Client,
    _cluster: TestCluster,
}

async fn start() -> Cluster {
    let cluster = TestCluster::start(TestClusterOptions {
        nodes: 1,
        ..TestClusterOptions::default()
    })
    .await;
    Cluster {
        client: cluster.client(&cluster.admin_token).await,
        _cluster: cluster,
    }
}

/// Polls `f` on the cache until it returns `Some`, for up to 15 s.
async fn wait_for<T>(
    what: &str,
    names: &RwLock<ClusterNames>,
    mut f: impl FnMut(&ClusterNames) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f(&names.read().unwrap_or_else(PoisonError::into_inner)) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn addresses(lookup: Lookup) -> Option<Vec<IpAddr>> {
    match lookup {
        Lookup::Found(records) => Some(
            records
                .into_iter()
                .filter_map(|r| match r.data {
                    RecordData::A(ip) => Some(IpAddr::V4(ip)),
                    RecordData::Aaaa(ip) => Some(IpAddr::V6(ip)),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

#[tokio::test]
async fn watched_objects_become_names() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let names = Arc::new(RwLock::new(ClusterNames::new("cluster.local")));
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    let shutdown = CancellationToken::new();
    let watchers = tokio::spawn(kubelan_dns::run_watchers(
        client.clone(),
        names.clone(),
        ready_tx,
        shutdown.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(15), ready_rx.wait_for(|r| *r))
        .await
        .expect("watchers synced in time")
        .unwrap();
    assert!(names.read().unwrap().is_complete());
    // The simulator's own `kubernetes` Service is there from the start.
    assert!(
        addresses(
            names
                .read()
                .unwrap()
                .lookup("kubernetes.default.svc.cluster.local", QueryType::A)
        )
        .is_some()
    );

    // A Deployment behind a ClusterIP Service.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "kubelan", "ports": [{"name": "http", "containerPort": 80}]}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let cluster_ip: IpAddr = web.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    let found = wait_for("web to resolve", &names, |n| {
        addresses(n.lookup("web.default.svc.cluster.local", QueryType::A))
    })
    .await;
    assert_eq!(found, [cluster_ip]);
    {
        let n = names.read().unwrap();
        assert_eq!(
            n.resolve_host("web", Some("default")),
            Some(vec![cluster_ip])
        );
        assert!(matches!(
            n.lookup("_http._tcp.web.default.svc.cluster.local", QueryType::Srv),
            Lookup::Found(_)
        ));
        // The same through the wire-level server.
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let Answer::Reply(bytes) = kubelan_dns::answer(&q.to_vec().unwrap(), &n, "cluster.local")
        else {
            panic!("no reply");
        };
        let reply = Message::from_vec(&bytes).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        let IpAddr::V4(v4) = cluster_ip else {
            panic!("IPv4 service CIDR");
        };
        assert_eq!(
            reply.answers[0].data,
            RData::A(hickory_proto::rr::rdata::A(v4))
        );
    }
    // Pod names follow the pods.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let web_pod_ip: IpAddr = loop {
        let list = pods.list(&Default::default()).await.unwrap();
        if let Some(ip) = list
            .items
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref())
            .next()
        {
            break ip.parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dashed = web_pod_ip.to_string().replace('.', "-");
    let pod_name = format!("{dashed}.default.pod.cluster.local");
    let found = wait_for("the pod name", &names, |n| {
        addresses(n.lookup(&pod_name, QueryType::A))
    })
    .await;
    assert_eq!(found, [web_pod_ip]);

    // A headless Service with a StatefulSet: stable per-pod names.
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    statefulsets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                  "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "kubelan", "ports": [{"containerPort": 5432}]}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let db1 = wait_for("db-1.db to resolve", &names, |n| {
        addresses(n.lookup("db-1.db.default.svc.cluster.local", QueryType::A))
    })
    .await;
    let db1_pod = pods.get("db-1").await.unwrap();
    let db1_ip: IpAddr = db1_pod.status.unwrap().pod_ip.unwrap().parse().unwrap();
    assert_eq!(db1, [db1_ip]);
    {
        let n = names.read().unwrap();
        assert_eq!(
            n.resolve_host("db-1.db", Some("default")),
            Some(vec![db1_ip])
        );
        let reverse = match db1_ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
            }
            IpAddr::V6(_) => unreachable!("IPv4 pod CIDR"),
        };
        let Lookup::Found(ptr) = n.lookup(&reverse, QueryType::Ptr) else {
            panic!("no PTR for {db1_ip}");
        };
        assert_eq!(
            ptr[0].data,
            RecordData::Ptr("db-1.db.default.svc.cluster.local".into())
        );
    }
    let both = wait_for("both db pods behind db", &names, |n| {
        addresses(n.lookup("db.default.svc.cluster.local", QueryType::A)).filter(|a| a.len() == 2)
    })
    .await;
    assert!(both.contains(&db1_ip));

    // Deleting takes the names away.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("web to disappear", &names, |n| {
        (n.lookup("web.default.svc.cluster.local", QueryType::A) == Lookup::NxDomain).then_some(())
    })
    .await;
    services
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("db-1.db to disappear", &names, |n| {
        (n.lookup("db-1.db.default.svc.cluster.local", QueryType::A) == Lookup::NxDomain)
            .then_some(())
    })
    .await;
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the web pod name to go", &names, |n| {
        (n.lookup(&pod_name, QueryType::A) == Lookup::Unknown).then_some(())
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), watchers)
        .await
        .expect("watchers stop on shutdown")
        .unwrap()
        .unwrap();
}
