//! The session bootstrap against the in-process API simulator (loopback, no root): a
//! missing agent is an outcome the caller acts on, never a prompt or an error.

use std::time::Duration;

use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_cluster::KubeArgs;
use kubelan_session::SessionConfig;
use kubelan_session::bootstrap::{Bootstrap, BootstrapOptions, CarrierChoice, start};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_missing_agent_is_reported_as_not_installed() {
    let cluster = TestCluster::start(TestClusterOptions::default()).await;
    let dir = std::env::temp_dir().join(format!("kl-bootstrap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml(&cluster.admin_token)).unwrap();
    let opts = BootstrapOptions {
        kube: KubeArgs {
            kubeconfig: Some(kubeconfig),
            ..KubeArgs::default()
        },
        agent_namespace: "kubelan-system".into(),
        carrier: CarrierChoice::Auto,
        carriers: None,
        agent: None,
        credentials: None,
    };
    let shutdown = CancellationToken::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        start(
            &opts,
            SessionConfig::default(),
            shutdown.clone(),
            &[],
            &|n| panic!("no note expected: {n:?}"),
        ),
    )
    .await
    .expect("the bootstrap answers within 30 s")
    .expect("a missing agent is not an error");
    match outcome {
        Bootstrap::NotInstalled { namespace } => assert_eq!(namespace, "kubelan-system"),
        Bootstrap::Started(_) => panic!("started a session without an agent"),
    }
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
