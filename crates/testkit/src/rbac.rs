//! Applying printed RBAC (roles and bindings as YAML) to a cluster.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};

/// Applies printed RBAC (server-side apply) with its example subject `placeholder`
/// replaced by `user`; fails the test on anything that is not a role or binding.
pub async fn apply_rbac(c: &kube::Client, yaml: &str, placeholder: &str, user: &str) {
    let yaml = yaml.replace(placeholder, user);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let pp = PatchParams::apply("test");
    for d in docs.into_iter().filter(|d| !d.is_null()) {
        let name = d["metadata"]["name"].as_str().unwrap().to_string();
        let ns = d["metadata"]["namespace"].as_str().map(String::from);
        match d["kind"].as_str().unwrap() {
            "ClusterRole" => {
                Api::<ClusterRole>::all(c.clone())
                    .patch(&name, &pp, &Patch::Apply(&d))
                    .await
                    .unwrap();
            }
            "ClusterRoleBinding" => {
                Api::<ClusterRoleBinding>::all(c.clone())
                    .patch(&name, &pp, &Patch::Apply(&d))
                    .await
                    .unwrap();
            }
            "Role" => {
                Api::<Role>::namespaced(c.clone(), &ns.unwrap())
                    .patch(&name, &pp, &Patch::Apply(&d))
                    .await
                    .unwrap();
            }
            "RoleBinding" => {
                Api::<RoleBinding>::namespaced(c.clone(), &ns.unwrap())
                    .patch(&name, &pp, &Patch::Apply(&d))
                    .await
                    .unwrap();
            }
            k => panic!("unexpected kind {k}"),
        }
    }
}
