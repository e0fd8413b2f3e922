//! `kubelan_expose::run` against the API simulator, as a user holding exactly
//! `kubelan rbac expose`: the checks before anything is created. (Creating the Job needs
//! batch/v1 Jobs in the simulator; the end-to-end test on the lab covers the rest.)

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubelan_apisim::UserInfo;
use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_cluster::ClusterError;
use kubelan_cluster::rbac::{PLACEHOLDER_USER, RbacMode, user_rbac_in};
use kubelan_expose::{ExposeError, ExposeEvent, ExposeOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn grant(admin: &kube::Client, mode: RbacMode, user: &str) {
    let yaml = user_rbac_in(mode, "kubelan-system").replace(PLACEHOLDER_USER, user);
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
