use super::*;

#[test]
fn configmap_secret_serviceaccount_rows() {
    assert_eq!(names(&columns("ConfigMap", &[])), ["Name", "Data", "Age"]);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(cells("ConfigMap", cm), arr(json!(["settings", 3, "60m"])));

    assert_eq!(
        names(&columns("Secret", &[])),
        ["Name", "Type", "Data", "Age"]
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tls", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "...", "tls.key": "..."}});
    assert_eq!(
        cells("Secret", secret),
        arr(json!(["tls", "kubernetes.io/tls", 2, "60m"]))
    );
    assert_eq!(
        cells("Secret", json!({"metadata": {"name": "s"}}))[1..3],
        [json!("Opaque"), json!(0)]
    );

    assert_eq!(
        names(&columns("ServiceAccount", &[])),
        ["Name", "Secrets", "Age"]
    );
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "creationTimestamp": "2024-05-01T11:00:00Z"}});
    assert_eq!(
        cells("ServiceAccount", sa),
        arr(json!(["default", 0, "60m"]))
    );
    let sa = json!({"metadata": {"name": "ci"}, "secrets": [{"name": "ci-token"}]});
    assert_eq!(cells("ServiceAccount", sa)[1], 1);
}

#[test]
fn rbac_rows() {
    for kind in ["Role", "ClusterRole"] {
        let cols = columns(kind, &[]);
        assert_eq!(names(&cols), ["Name", "Created At"]);
        let table = to_table(kind, &[], NOW, IncludeObject::None, "");
        assert_eq!(table["columnDefinitions"][1]["type"], "date");
    }
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "admin", "creationTimestamp": "2024-04-30T14:03:07+02:00"},
        "rules": []});
    assert_eq!(
        cells("ClusterRole", role),
        arr(json!(["admin", "2024-04-30T12:03:07Z"]))
    );
    assert_eq!(
        cells("Role", json!({"metadata": {"name": "r"}}))[1],
        "0001-01-01T00:00:00Z"
    );

    for kind in ["RoleBinding", "ClusterRoleBinding"] {
        let cols = columns(kind, &[]);
        assert_eq!(
            names(&cols),
            ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
        );
        assert_eq!(wide_names(&cols), ["Users", "Groups", "ServiceAccounts"]);
    }
    let rb = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-admin", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [
            {"kind": "Group", "name": "system:masters"},
            {"kind": "User", "name": "alice"},
            {"kind": "User", "name": "bob"},
            {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}
        ]
    });
    assert_eq!(
        cells("ClusterRoleBinding", rb),
        arr(json!([
            "cluster-admin",
            "ClusterRole/cluster-admin",
            "60m",
            "alice, bob",
            "system:masters",
            "build/ci"
        ]))
    );
}

#[test]
fn lease_priorityclass_webhook_rows() {
    assert_eq!(names(&columns("Lease", &[])), ["Name", "Holder", "Age"]);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kube-scheduler", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "spec": {"holderIdentity": "cp-1_0f6e", "leaseDurationSeconds": 15}});
    assert_eq!(
        cells("Lease", lease),
        arr(json!(["kube-scheduler", "cp-1_0f6e", "60m"]))
    );
    assert_eq!(cells("Lease", json!({"metadata": {"name": "l"}}))[1], "");

    let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "system-node-critical", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "value": 2000001000});
    assert_eq!(
        cells("PriorityClass", pc),
        arr(json!([
            "system-node-critical",
            2000001000,
            false,
            "60m",
            "PreemptLowerPriority"
        ]))
    );

    let hook = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "policy", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "webhooks": [{"name": "a.example.com"}, {"name": "b.example.com"}]});
    assert_eq!(
        cells("ValidatingWebhookConfiguration", hook),
        arr(json!(["policy", 2, "60m"]))
    );
}
