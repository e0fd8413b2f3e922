use super::*;

#[test]
fn deployment_rows() {
    let cols = columns("Deployment", &[]);
    assert_eq!(
        names(&cols),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(wide_names(&cols), ["Containers", "Images", "Selector"]);
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system",
                     "creationTimestamp": "2024-05-01T06:57:00Z"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"k8s-app": "kube-dns"},
                         "matchExpressions": [
                             {"key": "tier", "operator": "In", "values": ["b", "a"]},
                             {"key": "canary", "operator": "DoesNotExist"}]},
            "template": {"spec": {"containers": [
                {"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.0"},
                {"name": "sidecar", "image": "busybox"}]}}
        },
        "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1,
                   "availableReplicas": 1}
    });
    assert_eq!(
        cells("Deployment", deploy),
        arr(json!([
            "coredns",
            "1/2",
            2,
            1,
            "5h3m",
            "coredns,sidecar",
            "registry.k8s.io/coredns/coredns:v1.12.0,busybox",
            "!canary,k8s-app=kube-dns,tier in (a,b)"
        ]))
    );
    let bad = json!({"metadata": {"name": "bad"},
        "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}});
    let c = cells("Deployment", bad);
    assert_eq!(c[1], "0/1");
    assert_eq!(c[7], "<invalid>");
}

#[test]
fn replicaset_rows() {
    let cols = columns("ReplicaSet", &[]);
    assert_eq!(
        names(&cols),
        [
            "Name",
            "Desired",
            "Current",
            "Ready",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(wide_names(&cols), ["Containers", "Images", "Selector"]);
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-7d4b9c8f5", "creationTimestamp": "2024-05-01T11:48:00Z"},
        "spec": {"replicas": 3,
                 "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9c8f5"}},
                 "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
        "status": {"replicas": 3, "readyReplicas": 2}
    });
    assert_eq!(
        cells("ReplicaSet", rs),
        arr(json!([
            "web-7d4b9c8f5",
            3,
            3,
            2,
            "12m",
            "web",
            "nginx",
            "app=web,pod-template-hash=7d4b9c8f5"
        ]))
    );
    let c = cells(
        "ReplicaSet",
        json!({"metadata": {"name": "x"}, "spec": {"replicas": 0}}),
    );
    assert_eq!(c[1..4], [json!(0), json!(0), json!(0)]);
    assert_eq!(c[7], "<none>");
}

#[test]
fn statefulset_rows() {
    let cols = columns("StatefulSet", &[]);
    assert_eq!(
        names(&cols),
        ["Name", "Ready", "Age", "Containers", "Images"]
    );
    assert_eq!(wide_names(&cols), ["Containers", "Images"]);
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "creationTimestamp": "2024-05-01T11:59:15Z"},
        "spec": {"replicas": 3, "serviceName": "db",
                 "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}}},
        "status": {"replicas": 2, "readyReplicas": 2}
    });
    assert_eq!(
        cells("StatefulSet", sts),
        arr(json!(["db", "2/3", "45s", "pg", "postgres:16"]))
    );
}

#[test]
fn daemonset_rows() {
    let cols = columns("DaemonSet", &[]);
    assert_eq!(
        names(&cols),
        [
            "Name",
            "Desired",
            "Current",
            "Ready",
            "Up-to-date",
            "Available",
            "Node Selector",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "creationTimestamp": "2024-05-01T02:00:00Z"},
        "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                 "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                       "containers": [{"name": "kube-proxy",
                                                       "image": "registry.k8s.io/kube-proxy:v1.33.1"}]}}},
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                   "updatedNumberScheduled": 3, "numberAvailable": 2}
    });
    assert_eq!(
        cells("DaemonSet", ds),
        arr(json!([
            "kube-proxy",
            3,
            3,
            2,
            3,
            2,
            "kubernetes.io/os=linux",
            "10h",
            "kube-proxy",
            "registry.k8s.io/kube-proxy:v1.33.1",
            "k8s-app=kube-proxy"
        ]))
    );
}

#[test]
fn job_and_cronjob_rows() {
    assert_eq!(
        names(&columns("Job", &[])),
        [
            "Name",
            "Status",
            "Completions",
            "Duration",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "creationTimestamp": "2024-05-01T11:50:00Z"},
        "spec": {"completions": 1, "parallelism": 1,
                 "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}},
                 "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 1, "startTime": "2024-05-01T11:50:00Z",
                   "completionTime": "2024-05-01T11:50:42Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}
    });
    assert_eq!(
        cells("Job", job),
        arr(json!([
            "pi",
            "Complete",
            "1/1",
            "42s",
            "10m",
            "pi",
            "perl",
            "batch.kubernetes.io/controller-uid=abc"
        ]))
    );
    let running = json!({"metadata": {"name": "work"},
        "spec": {"parallelism": 3}, "status": {"startTime": "2024-05-01T11:00:00Z"}});
    let c = cells("Job", running);
    assert_eq!(c[1..4], [json!("Running"), json!("0/1 of 3"), json!("60m")]);

    assert_eq!(
        names(&columns("CronJob", &[])),
        [
            "Name",
            "Schedule",
            "Timezone",
            "Suspend",
            "Active",
            "Last Schedule",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let cj = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "backup", "creationTimestamp": "2024-04-01T00:00:00Z"},
        "spec": {"schedule": "*/5 * * * *", "suspend": false,
                 "jobTemplate": {"spec": {"template": {"spec": {"containers": [
                     {"name": "backup", "image": "restic"}]}}}}},
        "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2024-05-01T11:55:00Z"}
    });
    assert_eq!(
        cells("CronJob", cj),
        arr(json!([
            "backup",
            "*/5 * * * *",
            "<none>",
            "False",
            1,
            "5m",
            "30d",
            "backup",
            "restic",
            "<none>"
        ]))
    );
}

#[test]
fn controllerrevision_and_pdb_rows() {
    let cr = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "db-5f6d", "creationTimestamp": "2024-05-01T11:00:00Z",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                 "name": "db", "controller": true}]},
        "revision": 2
    });
    assert_eq!(
        cells("ControllerRevision", cr),
        arr(json!(["db-5f6d", "statefulset.apps/db", 2, "60m"]))
    );
    assert_eq!(
        cells("ControllerRevision", json!({"metadata": {"name": "x"}}))[1],
        "<none>"
    );

    let pdb = json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "spec": {"minAvailable": "50%"},
        "status": {"disruptionsAllowed": 1}
    });
    assert_eq!(
        cells("PodDisruptionBudget", pdb),
        arr(json!(["web", "50%", "N/A", 1, "60m"]))
    );
}
