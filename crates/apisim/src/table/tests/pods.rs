use super::*;

fn running_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d4b9c8f5-x2x9k",
            "namespace": "default",
            "creationTimestamp": "2024-05-01T07:00:00Z"
        },
        "spec": {
            "nodeName": "worker-1",
            "containers": [
                {"name": "web", "image": "nginx:1.25"},
                {"name": "log", "image": "busybox"}
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.5",
            "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True"}
            ],
            "containerStatuses": [
                {"name": "web", "ready": true, "restartCount": 2,
                 "state": {"running": {"startedAt": "2024-05-01T11:55:00Z"}},
                 "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                               "finishedAt": "2024-05-01T11:55:00Z"}}},
                {"name": "log", "ready": true, "restartCount": 1,
                 "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}},
                 "lastState": {"terminated": {"exitCode": 1,
                               "finishedAt": "2024-05-01T10:00:00Z"}}}
            ]
        }
    })
}

#[test]
fn pod_columns_and_running_row() {
    let cols = columns("Pod", &[]);
    assert_eq!(
        names(&cols),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    assert_eq!(
        wide_names(&cols),
        ["IP", "Node", "Nominated Node", "Readiness Gates"]
    );
    assert_eq!(
        cells("Pod", running_pod()),
        arr(json!([
            "web-7d4b9c8f5-x2x9k",
            "2/2",
            "Running",
            "3 (5m ago)",
            "5h",
            "10.244.1.5",
            "worker-1",
            "<none>",
            "<none>"
        ]))
    );
}

#[test]
fn pod_status_reasons() {
    // Waiting container: its reason wins and it is not ready.
    let mut pod = running_pod();
    pod["status"]["containerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}});
    pod["status"]["containerStatuses"][0]["ready"] = json!(false);
    let c = cells("Pod", pod);
    assert_eq!(c[1], "1/2");
    assert_eq!(c[2], "CrashLoopBackOff");

    // Freshly scheduled pod: no restarts, no IP yet.
    let pod = json!({
        "metadata": {"name": "p", "creationTimestamp": "2024-05-01T11:59:58Z"},
        "spec": {"nodeName": "worker-2", "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Pending", "containerStatuses": [
            {"name": "app", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}}
        ]}
    });
    let c = cells("Pod", pod);
    assert_eq!(
        c[1..6],
        arr(json!(["0/1", "ContainerCreating", "0", "2s", "<none>"]))[..]
    );

    // Terminated container with a reason, and a deletion in progress.
    let mut pod = running_pod();
    pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
    assert_eq!(cells("Pod", pod)[2], "Terminating");

    // A terminated container without reason reports its exit code.
    let mut pod = running_pod();
    pod["status"]["containerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 3}});
    assert_eq!(cells("Pod", pod)[2], "ExitCode:3");

    // Unknown when the node is lost.
    let mut pod = running_pod();
    pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
    pod["status"]["reason"] = json!("NodeLost");
    assert_eq!(cells("Pod", pod)[2], "Unknown");

    // Scheduling gates.
    let pod = json!({
        "metadata": {"name": "gated"},
        "spec": {"containers": [{"name": "a"}], "schedulingGates": [{"name": "x"}]},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
        ]}
    });
    let c = cells("Pod", pod);
    assert_eq!(c[2], "SchedulingGated");
    assert_eq!(c[4], "<unknown>");
}

#[test]
fn pod_completed_has_row_condition() {
    let pod = json!({
        "metadata": {"name": "job-abc", "creationTimestamp": "2024-04-30T12:00:00Z"},
        "spec": {"containers": [{"name": "main"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [
            {"name": "main", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]}
    });
    let table = to_table("Pod", &[pod], NOW, IncludeObject::None, "");
    let row = &table["rows"][0];
    assert_eq!(row["cells"][1], "0/1");
    assert_eq!(row["cells"][2], "Completed");
    assert_eq!(row["cells"][4], "24h");
    assert_eq!(row["conditions"][0]["type"], "Completed");
    assert_eq!(row["conditions"][0]["reason"], "Succeeded");
}

#[test]
fn pod_init_containers_and_sidecars() {
    // Second init container still waiting to start.
    let pod = json!({
        "metadata": {"name": "init", "creationTimestamp": "2024-05-01T11:59:00Z"},
        "spec": {
            "initContainers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "main"}]
        },
        "status": {"phase": "Pending",
            "initContainerStatuses": [
                {"name": "a", "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "b", "restartCount": 0,
                 "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
            "containerStatuses": [
                {"name": "main", "restartCount": 0,
                 "state": {"waiting": {"reason": "PodInitializing"}}}
            ]}
    });
    let c = cells("Pod", pod.clone());
    assert_eq!(c[1], "0/1");
    assert_eq!(c[2], "Init:1/2");

    // Failing init container.
    let mut failing = pod.clone();
    failing["status"]["initContainerStatuses"][1] = json!({
        "name": "b", "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:59:30Z"}}
    });
    let c = cells("Pod", failing);
    assert_eq!(c[2], "Init:CrashLoopBackOff");
    assert_eq!(c[3], "4 (30s ago)");

    let mut errored = pod;
    errored["status"]["initContainerStatuses"][1]["state"] =
        json!({"terminated": {"exitCode": 2, "reason": "Error"}});
    assert_eq!(cells("Pod", errored)[2], "Init:Error");

    // A started sidecar counts towards READY alongside the main container.
    let pod = json!({
        "metadata": {"name": "sidecar"},
        "spec": {
            "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "main"}]
        },
        "status": {"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [
                {"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                 "state": {"running": {}}}
            ],
            "containerStatuses": [
                {"name": "main", "ready": true, "restartCount": 0, "state": {"running": {}}}
            ]}
    });
    let c = cells("Pod", pod);
    assert_eq!(c[1], "2/2");
    assert_eq!(c[2], "Running");
    assert_eq!(c[3], "1");
}

#[test]
fn pod_readiness_gates_and_nominated_node() {
    let mut pod = running_pod();
    pod["spec"]["readinessGates"] =
        json!([{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]);
    pod["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "example.com/lb", "status": "True"}));
    pod["status"]["nominatedNodeName"] = json!("worker-9");
    let c = cells("Pod", pod);
    assert_eq!(c[7], "worker-9");
    assert_eq!(c[8], "1/2");
}
