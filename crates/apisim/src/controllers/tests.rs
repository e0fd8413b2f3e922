use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::meta;
use crate::store::{ClusterConfig, DeleteOptions, Store, Sub};

use super::deployments::deployments;
use super::endpoints::endpoints;
use super::gc::garbage_collect;
use super::namespaces::namespaces;
use super::replicasets::replicasets;
use super::scheduler::schedule;
use super::statefulsets::statefulsets;
use super::util::{is_deleting, pods, r};
use super::{ControllerConfig, bootstrap};

pub(super) fn setup() -> Arc<Store> {
    let s = Store::new(ClusterConfig {
        service_cidr: "172.17.16.0/20".parse().unwrap(),
        node_port_range: (30000, 32767),
        cluster_domain: "cluster.local".into(),
    });
    bootstrap(
        &s,
        &ControllerConfig {
            ca_pem: "PEM".into(),
            api_endpoint: ("10.4.7.11".parse().unwrap(), 6443),
        },
    )
    .unwrap();
    for n in ["node1", "node2"] {
        s.create(
            r("", "nodes"),
            "",
            json!({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}),
            false,
        )
        .unwrap();
        s.modify(r("", "nodes"), "", n, Sub::Status, |o| {
            o["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
            Ok(())
        })
        .unwrap();
    }
    s
}

/// Stands in for kubelets: every bound pod becomes Running and Ready with an IP.
pub(super) fn kubelet(s: &Store) {
    for (i, p) in s.list_all(pods(), None).iter().enumerate() {
        if meta::str_at(p, &["spec", "nodeName"]).is_empty() || is_deleting(p) {
            if is_deleting(p) {
                s.finish_deletion(pods(), meta::namespace(p), meta::name(p), meta::uid(p))
                    .unwrap();
            }
            continue;
        }
        s.modify(pods(), meta::namespace(p), meta::name(p), Sub::Status, |o| {
            if o.pointer("/status/podIP").is_none() {
                o["status"] = json!({"phase": "Running", "podIP": format!("172.17.32.{}", 10 + i),
                    "conditions": [{"type": "Ready", "status": "True"}]});
            }
            Ok(())
        })
        .unwrap();
    }
}

fn settle(s: &Store) {
    for _ in 0..12 {
        schedule(s);
        replicasets(s);
        deployments(s);
        statefulsets(s);
        kubelet(s);
        endpoints(s);
        garbage_collect(s);
        namespaces(s, "PEM");
    }
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]}}}})
}

#[test]
fn bootstrap_objects() {
    let s = setup();
    let k = s.get(r("", "services"), "default", "kubernetes").unwrap();
    assert_eq!(k["spec"]["clusterIP"], "172.17.16.1");
    assert!(
        s.get(r("networking.k8s.io", "servicecidrs"), "", "kubernetes")
            .is_ok()
    );
    namespaces(&s, "PEM");
    assert!(
        s.get(r("", "serviceaccounts"), "kube-system", "default")
            .is_ok()
    );
    assert_eq!(
        s.get(r("", "configmaps"), "default", "kube-root-ca.crt")
            .unwrap()["data"]["ca.crt"],
        "PEM"
    );
}

#[test]
fn deployment_to_pods_spread_and_endpoints() {
    let s = setup();
    s.create(
        r("apps", "deployments"),
        "default",
        deployment("web", 2),
        false,
    )
    .unwrap();
    s.create(r("", "services"), "default", json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}), false).unwrap();
    settle(&s);
    let ps = s.list_all(pods(), Some("default"));
    assert_eq!(ps.len(), 2);
    let nodes: HashSet<&str> = ps
        .iter()
        .map(|p| meta::str_at(p, &["spec", "nodeName"]))
        .collect();
    assert_eq!(nodes.len(), 2, "replicas spread over both nodes");
    let d = s.get(r("apps", "deployments"), "default", "web").unwrap();
    assert_eq!(d["status"]["availableReplicas"], 2);
    let slices = s.list_all(r("discovery.k8s.io", "endpointslices"), Some("default"));
    let web: Vec<&Value> = slices
        .iter()
        .filter(|x| meta::str_at(x, &["metadata", "labels", "kubernetes.io/service-name"]) == "web")
        .collect();
    assert_eq!(web.len(), 1);
    assert_eq!(web[0]["ports"][0]["port"], 8080);
    assert_eq!(web[0]["endpoints"].as_array().unwrap().len(), 2);
    // Delete one pod: a replacement appears and endpoints follow.
    let victim = meta::name(&ps[0]).to_string();
    s.delete(pods(), "default", &victim, &DeleteOptions::default())
        .unwrap();
    settle(&s);
    let ps2 = s.list_all(pods(), Some("default"));
    assert_eq!(ps2.len(), 2);
    assert!(ps2.iter().all(|p| meta::name(p) != victim));
    // Template change rolls to a new replica set.
    s.modify(r("apps", "deployments"), "default", "web", Sub::Main, |o| {
        o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i2");
        Ok(())
    })
    .unwrap();
    settle(&s);
    let ps3 = s.list_all(pods(), Some("default"));
    assert_eq!(ps3.len(), 2);
    assert!(
        ps3.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "i2")
    );
    // Deleting the deployment collects replica sets and pods.
    s.delete(
        r("apps", "deployments"),
        "default",
        "web",
        &DeleteOptions::default(),
    )
    .unwrap();
    settle(&s);
    assert!(s.list_all(pods(), Some("default")).is_empty());
    assert!(
        s.list_all(r("apps", "replicasets"), Some("default"))
            .is_empty()
    );
}

fn slices_of(s: &Store, svc: &str) -> Vec<Value> {
    s.list_all(r("discovery.k8s.io", "endpointslices"), Some("default"))
        .into_iter()
        .filter(|x| meta::str_at(x, &["metadata", "labels", "kubernetes.io/service-name"]) == svc)
        .collect()
}

#[test]
fn slices_stay_when_the_selector_goes_and_follow_it_back() {
    let s = setup();
    s.create(
        r("apps", "deployments"),
        "default",
        deployment("web", 1),
        false,
    )
    .unwrap();
    s.create(r("", "services"), "default", json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}), false).unwrap();
    settle(&s);
    let before = slices_of(&s, "web");
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["endpoints"].as_array().unwrap().len(), 1);
    // Selector removed: the slice (with its endpoint) and the Endpoints stay.
    s.modify(r("", "services"), "default", "web", Sub::Main, |o| {
        o["spec"].as_object_mut().unwrap().remove("selector");
        Ok(())
    })
    .unwrap();
    settle(&s);
    let during = slices_of(&s, "web");
    assert_eq!(during.len(), 1);
    assert_eq!(during[0]["endpoints"], before[0]["endpoints"]);
    assert!(s.get(r("", "endpoints"), "default", "web").is_ok());
    // A client may now write the slice's endpoints itself; the controller leaves them.
    let name = meta::name(&during[0]).to_string();
    s.modify(
        r("discovery.k8s.io", "endpointslices"),
        "default",
        &name,
        Sub::Main,
        |o| {
            o["endpoints"] = json!([]);
            Ok(())
        },
    )
    .unwrap();
    settle(&s);
    assert_eq!(slices_of(&s, "web")[0]["endpoints"], json!([]));
    // Selector back: managed again.
    s.modify(r("", "services"), "default", "web", Sub::Main, |o| {
        o["spec"]["selector"] = json!({"app": "web"});
        Ok(())
    })
    .unwrap();
    settle(&s);
    let after = slices_of(&s, "web");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["endpoints"].as_array().unwrap().len(), 1);
}

#[test]
fn no_slices_are_built_for_a_service_being_deleted() {
    let s = setup();
    let mut svc = json!({"metadata": {"name": "gone", "finalizers": ["example.com/hold"]},
        "spec": {"selector": {"app": "gone"}, "ports": [{"port": 80}]}});
    s.create(r("", "services"), "default", svc.clone(), false)
        .unwrap();
    s.delete(
        r("", "services"),
        "default",
        "gone",
        &DeleteOptions::default(),
    )
    .unwrap();
    settle(&s);
    assert!(slices_of(&s, "gone").is_empty());
    svc["metadata"]["name"] = json!("kept");
    s.create(r("", "services"), "default", svc, false).unwrap();
    settle(&s);
    assert_eq!(slices_of(&s, "kept").len(), 1);
}

#[test]
fn statefulset_ordinals_and_hostnames() {
    let s = setup();
    s.create(r("", "services"), "default", json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}), false).unwrap();
    let mut sts = deployment("db", 3);
    sts["spec"]["serviceName"] = json!("db");
    s.create(r("apps", "statefulsets"), "default", sts, false)
        .unwrap();
    settle(&s);
    let mut names: Vec<String> = s
        .list_all(pods(), Some("default"))
        .iter()
        .map(|p| meta::name(p).to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    let p = s.get(pods(), "default", "db-1").unwrap();
    assert_eq!(p["spec"]["hostname"], "db-1");
    assert_eq!(p["spec"]["subdomain"], "db");
    let slices = s.list_all(r("discovery.k8s.io", "endpointslices"), Some("default"));
    let db = slices
        .iter()
        .find(|x| meta::str_at(x, &["metadata", "labels", "kubernetes.io/service-name"]) == "db")
        .unwrap();
    let hosts: HashSet<&str> = db["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, HashSet::from(["db-0", "db-1", "db-2"]));
}

#[test]
fn namespace_termination_removes_content() {
    let s = setup();
    s.create(
        r("", "namespaces"),
        "",
        json!({"metadata": {"name": "tmp"}}),
        false,
    )
    .unwrap();
    s.create(
        r("", "configmaps"),
        "tmp",
        json!({"metadata": {"name": "c"}}),
        false,
    )
    .unwrap();
    s.create(r("apps", "deployments"), "tmp", deployment("w", 1), false)
        .unwrap();
    settle(&s);
    s.delete(r("", "namespaces"), "", "tmp", &DeleteOptions::default())
        .unwrap();
    let e = s
        .create(
            r("", "configmaps"),
            "tmp",
            json!({"metadata": {"name": "d"}}),
            false,
        )
        .unwrap_err();
    assert_eq!(e.code, 403);
    settle(&s);
    assert_eq!(s.get(r("", "namespaces"), "", "tmp").unwrap_err().code, 404);
    assert!(s.list_all(pods(), Some("tmp")).is_empty());
}

#[test]
fn orphan_and_foreground_propagation() {
    let s = setup();
    s.create(
        r("apps", "deployments"),
        "default",
        deployment("o", 1),
        false,
    )
    .unwrap();
    settle(&s);
    let opts = DeleteOptions {
        propagation_policy: Some("Orphan".into()),
        ..DeleteOptions::default()
    };
    s.delete(r("apps", "deployments"), "default", "o", &opts)
        .unwrap();
    settle(&s);
    assert_eq!(
        s.list_all(r("apps", "replicasets"), Some("default")).len(),
        1,
        "replica set kept"
    );
    assert_eq!(s.list_all(pods(), Some("default")).len(), 1);
    s.create(
        r("apps", "deployments"),
        "default",
        deployment("f", 1),
        false,
    )
    .unwrap();
    settle(&s);
    let opts = DeleteOptions {
        propagation_policy: Some("Foreground".into()),
        ..DeleteOptions::default()
    };
    s.delete(r("apps", "deployments"), "default", "f", &opts)
        .unwrap();
    settle(&s);
    assert_eq!(
        s.get(r("apps", "deployments"), "default", "f")
            .unwrap_err()
            .code,
        404
    );
}
