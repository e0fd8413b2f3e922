//! The machine's real kubectl against the simulator's batch/v1 Jobs: create, get (table),
//! wait, describe (events), delete (cascading). Skipped when kubectl is not installed. No
//! root or namespaces: the simulator listens on loopback and a stand-in kubelet runs pods
//! (a pod runs for a moment, then exits 0).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kubelan_apisim::meta;
use kubelan_apisim::resources::find;
use kubelan_apisim::testing::{PodIps, TestCluster, TestClusterOptions, ready_once};
use kubelan_testkit::kubectl;
use serde_json::{Value, json};

/// Runs first like `ready_once`, then exits 0 on the next kubelet pass.
fn run_then_exit(pod: &Value, ips: &mut PodIps) -> Option<Value> {
    if pod.pointer("/status/podIP").is_none() {
        return ready_once(pod, ips);
    }
    if meta::str_at(pod, &["status", "phase"]) != "Running" {
        return None;
    }
    let mut s = pod["status"].clone();
    s["phase"] = json!("Succeeded");
    s["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
    s["containerStatuses"] = json!([{"name": "c", "ready": false, "restartCount": 0,
        "image": "i", "imageID": "", "started": false,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]);
    Some(s)
}

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: registry.example/once:1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_describes_and_deletes_a_job() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl is not installed; skipping");
        return;
    }
    let cluster = TestCluster::start(TestClusterOptions {
        kubelet: Some(Arc::new(run_then_exit)),
        ..TestClusterOptions::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("apisim-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("config");
    std::fs::write(&kc, cluster.kubeconfig_yaml(&cluster.admin_token)).unwrap();
    let store = cluster.store.clone();
    let kc2 = kc.clone();
    tokio::task::spawn_blocking(move || {
        let kc = kc2.as_path();
        let (ok, out) = kubectl(kc, &["create", "-f", "-"], Some(JOB));
        assert!(ok, "{out}");
        assert!(out.contains("job.batch/once created"), "{out}");
        let (ok, out) = kubectl(
            kc,
            &[
                "wait",
                "--for=condition=complete",
                "job/once",
                "--timeout=20s",
            ],
            None,
        );
        assert!(ok, "{out}");
        let (ok, out) = kubectl(kc, &["get", "jobs"], None);
        assert!(ok, "{out}");
        let row = out.lines().find(|l| l.starts_with("once")).unwrap_or("");
        assert!(row.contains("Complete") && row.contains("1/1"), "{out}");
        let (ok, out) = kubectl(kc, &["describe", "job", "once"], None);
        assert!(ok, "{out}");
        for want in [
            "Pods Statuses:",
            "1 Succeeded",
            "SuccessfulCreate",
            "Completed",
        ] {
            assert!(out.contains(want), "describe lacks {want:?}:\n{out}");
        }
        let (ok, out) = kubectl(kc, &["get", "pods", "-l", "job-name=once"], None);
        assert!(ok && out.contains("once-"), "{out}");
        // kubectl deletes with background propagation: the pod goes too.
        let (ok, out) = kubectl(kc, &["delete", "job", "once"], None);
        assert!(ok && out.contains("job.batch \"once\" deleted"), "{out}");
    })
    .await
    .unwrap();
    let pods = find("", "v1", "pods").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !store.list_all(pods, Some("default")).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Job's pod was not collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_pod_security_refusals_and_warnings() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl is not installed; skipping");
        return;
    }
    let cluster = TestCluster::start(TestClusterOptions::default()).await;
    let dir = std::env::temp_dir().join(format!("apisim-kubectl-psa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("config");
    std::fs::write(&kc, cluster.kubeconfig_yaml(&cluster.admin_token)).unwrap();
    tokio::task::spawn_blocking(move || {
        let kc = kc.as_path();
        let (ok, out) = kubectl(
            kc,
            &[
                "label",
                "namespace",
                "default",
                "pod-security.kubernetes.io/enforce=restricted",
            ],
            None,
        );
        assert!(ok, "{out}");
        // A workload's template only warns (its pods are refused later).
        let (ok, out) = kubectl(kc, &["create", "-f", "-"], Some(JOB));
        assert!(ok, "{out}");
        assert!(
            out.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"),
            "{out}"
        );
        // A pod is refused.
        let (ok, out) = kubectl(
            kc,
            &["run", "plain", "--image=registry.example/plain:1", "--restart=Never"],
            None,
        );
        assert!(!ok, "{out}");
        assert!(
            out.contains("pods \"plain\" is forbidden: violates PodSecurity \"restricted:latest\""),
            "{out}"
        );
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
