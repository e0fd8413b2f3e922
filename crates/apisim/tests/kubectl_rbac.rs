//! The machine's real kubectl, as an unprivileged user, against the simulator's RBAC:
//! `resourceNames` for get and for list/watch by `metadata.name` field selector,
//! `kubectl auth can-i` (SelfSubjectAccessReview), and privilege-escalation prevention when
//! creating Roles and RoleBindings — the steps `kubelan replace` takes with the role
//! `kubelan rbac replace` prints. Skipped when kubectl is not installed. No root.

use std::process::Command;

use kubelan_apisim::UserInfo;
use kubelan_apisim::resources::find;
use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_testkit::kubectl;
use serde_json::json;

/// `kubectl create -f -` with a manifest (kubectl sends it as JSON; its `create role`
/// generators send protobuf, which the simulator does not decode for RBAC kinds).
fn role(name: &str, verbs: &str, names: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {name}\nrules:\n- apiGroups: [\"\"]\n  resources: [services]\n  verbs: [{verbs}]\n  resourceNames: [{names}]\n"
    )
}

fn binding(name: &str, kind: &str, role: &str, subject: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: {kind}\n  name: {role}\nsubjects:\n- {subject}\n"
    )
}

const RBAC: &str = "rbac.authorization.k8s.io";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_meets_upstream_rbac() {
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
        kubelet: None,
        ..TestClusterOptions::default()
    })
    .await;
    let s = &cluster.store;
    s.create(
        find("", "v1", "services").unwrap(),
        "default",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        false,
    )
    .unwrap();
    s.create(
        find("", "v1", "configmaps").unwrap(),
        "default",
        json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}}),
        false,
    )
    .unwrap();
    // What `kubelan rbac replace` grants (services get/patch, leases, serviceaccounts, roles
    // and rolebindings create), plus read access to one ConfigMap by name.
    s.create(
        find(RBAC, "v1", "clusterroles").unwrap(),
        "",
        json!({"metadata": {"name": "replace"}, "rules": [
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "patch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create"]},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["create"]},
            {"apiGroups": [RBAC], "resources": ["roles", "rolebindings"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get", "list", "watch"]},
        ]}),
        false,
    )
    .unwrap();
    s.create(
        find(RBAC, "v1", "rolebindings").unwrap(),
        "default",
        json!({"metadata": {"name": "replace"},
               "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "replace"},
               "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "developer"}]}),
        false,
    )
    .unwrap();
    let token = cluster.auth.new_user_token(UserInfo::new("developer", &[]));
    let dir = std::env::temp_dir().join(format!("apisim-kubectl-rbac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("config");
    std::fs::write(&kc, cluster.kubeconfig_yaml(&token)).unwrap();
    let kc2 = kc.clone();
    tokio::task::spawn_blocking(move || {
        let k = |args: &[&str]| kubectl(&kc2, args, None);
        let create = |manifest: &str| kubectl(&kc2, &["create", "-f", "-"], Some(manifest));

        // resourceNames: get by name, list/watch only with metadata.name field selector.
        let (ok, out) = k(&["get", "configmap", "cfg", "-o", "name"]);
        assert!(ok && out.contains("configmap/cfg"), "{out}");
        let (ok, out) = k(&[
            "get",
            "configmaps",
            "--field-selector",
            "metadata.name=cfg",
            "-o",
            "name",
        ]);
        assert!(ok && out.contains("configmap/cfg"), "{out}");
        let (ok, out) = k(&["get", "configmaps"]);
        assert!(
            !ok && out.contains(
                "User \"developer\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
            ),
            "{out}"
        );
        let (ok, out) = k(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dcfg&watch=true&timeoutSeconds=1",
        ]);
        assert!(ok && out.contains("\"ADDED\""), "{out}");
        let (ok, out) = k(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
        ]);
        assert!(!ok && out.contains("Forbidden"), "{out}");
        // SelfSubjectAccessReview with a name.
        let (ok, out) = k(&["auth", "can-i", "list", "configmaps/cfg"]);
        assert!(ok && out.trim() == "yes", "{out}");
        let (ok, out) = k(&["auth", "can-i", "list", "configmaps"]);
        assert!(!ok && out.trim() == "no", "{out}");
        let (_, out) = k(&["auth", "can-i", "get", "pods/log"]);
        assert_eq!(out.trim(), "no");

        // What `replace` creates for its relay: allowed, because the user holds it all.
        let (ok, out) = create("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: relay\n");
        assert!(ok, "{out}");
        let (ok, out) = create(&role("relay", "get, patch", "web"));
        assert!(ok && out.contains("role.rbac.authorization.k8s.io/relay created"), "{out}");
        let (ok, out) = create(&binding(
            "relay",
            "Role",
            "relay",
            "{kind: ServiceAccount, name: relay, namespace: default}",
        ));
        assert!(ok && out.contains("rolebinding.rbac.authorization.k8s.io/relay created"), "{out}");

        // Granting more than one holds is refused, in upstream's words.
        let (ok, out) = create(&role("wider", "get, delete", "web, db"));
        assert!(!ok, "{out}");
        assert!(
            out.contains(
                "roles.rbac.authorization.k8s.io \"wider\" is forbidden: user \"developer\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
                 {APIGroups:[\"\"], Resources:[\"services\"], ResourceNames:[\"db\"], Verbs:[\"delete\"]}\n\
                 {APIGroups:[\"\"], Resources:[\"services\"], ResourceNames:[\"web\"], Verbs:[\"delete\"]}"
            ),
            "{out}"
        );
        let (ok, out) = create(&binding(
            "me-admin",
            "ClusterRole",
            "admin",
            "{kind: User, name: developer, apiGroup: rbac.authorization.k8s.io}",
        ));
        assert!(
            !ok && out.contains("rolebindings.rbac.authorization.k8s.io \"me-admin\" is forbidden")
                && out.contains("is attempting to grant RBAC permissions not currently held"),
            "{out}"
        );
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
