//! `kubelan_expose::run` against the API simulator, as a user holding exactly
//! `kubelan rbac expose`: the checks before anything is created. (Creating the Job needs
//! batch/v1 Jobs in the simulator; the end-to-end test on the lab covers the rest.)

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubelan_apisim::UserInfo;
use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_cluster::ClusterError;
use kubelan_cluster::rbac::{PLACEHOLDER_USER, RbacMode, user_rbac_in};
use kubelan_expose::{ExposeError, ExposeEvent, ExposeOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn grant(admin: &kube::Client, mode: RbacMode, user: &str) {
    grant_yaml(admin, &user_rbac_in(mode, "kubelan-system"), user).await;
}

/// Applies printed RBAC `yaml` for `user`.
async fn grant_yaml(admin: &kube::Client, yaml: &str, user: &str) {
    let yaml = yaml.replace(PLACEHOLDER_USER, user);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let pp = PatchParams::apply("test");
    for d in docs.into_iter().filter(|d| !d.is_null()) {
        let name = d["metadata"]["name"].as_str().unwrap().to_string();
        match d["kind"].as_str().unwrap() {
            "ClusterRole" => {
                Api::<ClusterRole>::all(admin.clone())
                    .patch(&name, &pp, &Patch::Apply(&d))
                    .await
                    .unwrap();
            }
            "RoleBinding" => {
                let ns = d["metadata"]["namespace"].as_str().unwrap().to_string();
                Api::<RoleBinding>::namespaced(admin.clone(), &ns)
                    .patch(&name, &pp, &Patch::Apply(&d))
                    .await
                    .unwrap();
            }
            k => panic!("unexpected kind {k}"),
        }
    }
}

fn options(client: kube::Client, namespace: &str) -> ExposeOptions {
    ExposeOptions {
        client,
        namespace: namespace.into(),
        agent_namespace: "kubelan-system".into(),
        image: None,
        ready_timeout: Duration::from_secs(5),
        client_host: "laptop-3".into(),
        command: "kubelan expose 8080 --name dev-api".into(),
        outer: None,
        mode: kubelan_cluster::session_objects::Mode::Expose,
        on_serving: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_taken_name_and_missing_permissions_before_creating_anything() {
    let cluster = TestCluster::start(TestClusterOptions::default()).await;
    let admin = cluster.client(&cluster.admin_token).await;
    grant(&admin, RbacMode::Expose, "erin").await;
    let erin = cluster
        .client(&cluster.auth.new_user_token(UserInfo::new("erin", &[])))
        .await;
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "dev-api"},
                "spec": {"selector": {"app": "dev"}, "ports": [{"port": 80}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let plan = kubelan_expose::plan(&["8080".into()], &[], Some("dev-api")).unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let e = kubelan_expose::run(
        &plan,
        &options(erin.clone(), "default"),
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ExposeError::NameTaken { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "Service dev-api already exists in namespace default; pick another --name, or use `kubelan replace svc/dev-api ...` to take over its traffic"
    );
    assert_eq!(
        rx.recv().await,
        Some(ExposeEvent::Preflight {
            namespace: "default".into()
        })
    );
    assert_eq!(rx.recv().await, None, "nothing was created");

    // Where the role is not bound, the preflight names every missing verb in one sentence.
    let (tx, _rx) = mpsc::unbounded_channel();
    let e = kubelan_expose::run(
        &plan,
        &options(erin, "team-a"),
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let ExposeError::Cluster(ClusterError::SessionForbidden { missing, .. }) = &e else {
        panic!("{e}")
    };
    assert_eq!(missing.len(), 9);
    assert!(
        e.to_string().starts_with(
            "kubelan expose in namespace team-a needs create jobs.batch, get jobs.batch, delete jobs.batch, get pods"
        ),
        "{e}"
    );
}

fn web_service() -> Service {
    serde_json::from_value(
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .unwrap()
}

/// The Service as compared: without `resourceVersion` and `managedFields`.
fn comparable(s: &Service) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap();
    let m = v["metadata"].as_object_mut().unwrap();
    m.remove("resourceVersion");
    m.remove("managedFields");
    v
}

/// The ready addresses of Service `service`'s EndpointSlices in `default`.
async fn ready_endpoints(client: &kube::Client, service: &str) -> Vec<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap();
    list.items
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.clone())
        .collect()
}

/// Ctrl-C for a session running in `running`: it must end cleanly within 30 s.
async fn stop_session(
    stop: &CancellationToken,
    running: tokio::task::JoinHandle<Result<(), ExposeError>>,
) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn replace_request(service: &str) -> kubelan_expose::ReplaceRequest {
    kubelan_expose::ReplaceRequest {
        service: service.into(),
        ports: vec![kubelan_expose::replace_plan::parse_port_arg("8080:80").unwrap()],
    }
}

/// `kubelan replace` as a user with exactly `kubelan rbac replace`, on the simulator (its
/// stand-in kubelet makes the relay pod ready; nothing dials it): a swap left by a session
/// whose Job is gone is put back first, saying so; the Service is swapped to the new
/// session; on shutdown it is put back byte for byte and the Job deleted. A held lock and
/// a Service without selector are refused before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_puts_back_a_stale_swap_swaps_and_restores() {
    use k8s_openapi::api::batch::v1::Job;
    use kubelan_cluster::replace::{self, Replacer};

    let cluster = TestCluster::start(TestClusterOptions::default()).await;
    let admin = cluster.client(&cluster.admin_token).await;
    grant(&admin, RbacMode::Replace, "rita").await;
    let rita = cluster
        .client(&cluster.auth.new_user_token(UserInfo::new("rita", &[])))
        .await;
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(admin.clone(), "default");
    let before = services
        .create(&PostParams::default(), &web_service())
        .await
        .unwrap();
    // A session zzzzzzzz swapped web and vanished with its relay.
    let stale = Replacer {
        session: "zzzzzzzz".into(),
        user: "sam".into(),
        host: "old-laptop".into(),
    };
    let patch = replace::swap(&before, &stale).unwrap().patch;
    kubelan_cluster::replace::restorer::send_json_patch(&services, "web", "test", &patch)
        .await
        .unwrap();

    // An old pod's address the endpoint controller has not dropped yet (a slice it does
    // not manage, so it stays until the test deletes it).
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");
    let lagging: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-lagging", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.17.33.99"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap();
    slices
        .create(&PostParams::default(), &lagging)
        .await
        .unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let mut o = options(rita.clone(), "default");
    o.command = "kubelan replace svc/web 8080:80".into();
    let running = {
        let (o, stop) = (o.clone(), stop.clone());
        tokio::spawn(async move {
            kubelan_expose::run_replace(&replace_request("web"), &o, tx, stop).await
        })
    };
    let mut seen = Vec::new();
    let session = loop {
        let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("replace swaps within 30 s")
            .expect("events until the swap");
        seen.push(e.clone());
        if let ExposeEvent::Moving { status, .. } = &e
            && status == "the relay listed, 1 old endpoint still listed"
        {
            slices
                .delete("web-lagging", &Default::default())
                .await
                .unwrap();
        }
        if let ExposeEvent::Replaced { original, .. } = &e {
            assert_eq!(original, "app=web");
            // Said once the Service's endpoints are the relay alone, not before.
            assert!(
                seen.iter().any(|e| matches!(e, ExposeEvent::Moving { .. })),
                "{seen:?}"
            );
            let relay = seen
                .iter()
                .find_map(|e| match e {
                    ExposeEvent::RelayReady { ip, .. } => Some(ip.clone()),
                    _ => None,
                })
                .expect("the relay was ready before the swap");
            assert_eq!(ready_endpoints(&admin, "web").await, vec![relay]);
            let now = services.get("web").await.unwrap();
            break replace::selected_session(&now).unwrap().to_string();
        }
    };
    assert!(
        seen.iter()
            .any(|e| matches!(e, ExposeEvent::Warning { message }
            if message.contains("still pointed at session zzzzzzzz, whose Job is gone"))),
        "{seen:?}"
    );
    assert_ne!(session, "zzzzzzzz");
    // A second replace is refused, naming the holder, before creating anything.
    let (tx2, _rx2) = mpsc::unbounded_channel();
    let e = kubelan_expose::run_replace(&replace_request("web"), &o, tx2, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(e, ExposeError::Locked { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!(
            "already replaced by session {session} of rita on laptop-3 (kubelan replace svc/web 8080:80)"
        )),
        "{e}"
    );
    assert_eq!(jobs.list(&Default::default()).await.unwrap().items.len(), 1);

    stop_session(&stop, running).await;
    let mut rest = Vec::new();
    while let Ok(e) = rx.try_recv() {
        rest.push(e);
    }
    assert!(
        rest.iter()
            .any(|e| matches!(e, ExposeEvent::Restored { outcome, .. }
            if outcome.contains("put back to app=web"))),
        "{rest:?}"
    );
    let after = services.get("web").await.unwrap();
    assert_eq!(comparable(&after), comparable(&before), "byte-identical");
    // The Job is deleted (foreground: it may linger while its pod terminates).
    let deleting = jobs.list(&Default::default()).await.unwrap().items;
    assert!(
        deleting
            .iter()
            .all(|j| j.metadata.deletion_timestamp.is_some()),
        "{deleting:?}"
    );

    // No selector: refused before anything is created.
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "manual"},
                "spec": {"ports": [{"port": 80}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let (tx3, _rx3) = mpsc::unbounded_channel();
    let e = kubelan_expose::run_replace(
        &replace_request("manual"),
        &o,
        tx3,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("has no selector"), "{e}");
}

/// Without the optional `endpointslices list`, `replace` cannot see the Service's traffic
/// move: it says so, names the fix, and serves anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_without_endpointslices_warns_and_serves() {
    let cluster = TestCluster::start(TestClusterOptions::default()).await;
    let admin = cluster.client(&cluster.admin_token).await;
    let rule = "  - apiGroups: [\"discovery.k8s.io\"]\n    resources: [\"endpointslices\"]\n    verbs: [\"list\"]\n";
    let full = user_rbac_in(RbacMode::Replace, "kubelan-system");
    let less = full.replacen(rule, "", 1);
    assert_ne!(less, full, "the printed role has endpointslices list");
    grant_yaml(&admin, &less, "rita").await;
    let rita = cluster
        .client(&cluster.auth.new_user_token(UserInfo::new("rita", &[])))
        .await;
    Api::<Service>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &web_service())
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let o = options(rita, "default");
    let running = {
        let stop = stop.clone();
        tokio::spawn(async move {
            kubelan_expose::run_replace(&replace_request("web"), &o, tx, stop).await
        })
    };
    let mut warned = false;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("replace swaps within 30 s")
            .expect("events until the swap");
        if let ExposeEvent::Warning { message } = &e {
            warned |= message.contains("cannot list EndpointSlices in default")
                && message.contains("kubelan rbac replace");
        }
        if matches!(e, ExposeEvent::Replaced { .. }) {
            break;
        }
    }
    assert!(warned, "warned before replaced");
    stop_session(&stop, running).await;
}
