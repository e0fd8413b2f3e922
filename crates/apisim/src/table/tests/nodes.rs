use super::*;

#[test]
fn node_rows() {
    let cols = columns("Node", &[]);
    assert_eq!(
        names(&cols),
        [
            "Name",
            "Status",
            "Roles",
            "Age",
            "Version",
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime"
        ]
    );
    assert_eq!(wide_names(&cols).len(), 5);

    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "cp-1", "creationTimestamp": "2024-04-29T09:00:00Z",
            "labels": {"kubernetes.io/hostname": "cp-1",
                       "node-role.kubernetes.io/control-plane": "",
                       "node-role.kubernetes.io/etcd": "true",
                       "node-role.kubernetes.io/": ""}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady"}
            ],
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                          {"type": "Hostname", "address": "cp-1"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12",
                         "kernelVersion": "6.8.0-1", "containerRuntimeVersion": "containerd://2.0.0"}
        }
    });
    assert_eq!(
        cells("Node", node),
        arr(json!([
            "cp-1",
            "Ready",
            "control-plane,etcd",
            "2d3h",
            "v1.33.1",
            "172.18.0.2",
            "<none>",
            "Debian GNU/Linux 12",
            "6.8.0-1",
            "containerd://2.0.0"
        ]))
    );

    let node = json!({
        "metadata": {"name": "w-1", "labels": {"kubernetes.io/role": "worker"}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
    });
    let c = cells("Node", node);
    assert_eq!(c[1], "NotReady,SchedulingDisabled");
    assert_eq!(c[2], "worker");
    assert_eq!(c[4], "");
    assert_eq!(c[7], "<unknown>");

    let c = cells("Node", json!({"metadata": {"name": "bare"}}));
    assert_eq!(c[1], "Unknown");
    assert_eq!(c[2], "<none>");
}

#[test]
fn namespace_rows() {
    assert_eq!(names(&columns("Namespace", &[])), ["Name", "Status", "Age"]);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "kube-system", "creationTimestamp": "2024-05-01T11:58:05Z"},
        "status": {"phase": "Active"}});
    assert_eq!(
        cells("Namespace", ns),
        arr(json!(["kube-system", "Active", "115s"]))
    );
    let ns = json!({"metadata": {"name": "old", "deletionTimestamp": "2024-05-01T11:00:00Z"},
        "status": {"phase": "Terminating"}});
    assert_eq!(cells("Namespace", ns)[1], "Terminating");
}
