//! The permissions `kubelan forward` uses, checked with SelfSubjectAccessReviews before
//! anything listens (`kubelan_cluster::preflight`), and granted by `kubelan rbac forward`.

use kubelan_cluster::Access;

use crate::spec::{ForwardSpec, Kind};

/// What to tell a user who lacks some of them.
pub const RBAC_HINT: &str = "`kubelan rbac forward` prints a ClusterRole granting exactly these; ask an admin to bind it to you with a RoleBinding in each namespace you forward from";

fn portforward(namespace: &str) -> Access {
    Access::new("create", "", "pods")
        .subresource("portforward")
        .in_namespace(namespace)
}

fn list_watch(out: &mut Vec<Access>, group: &str, resource: &str, namespace: &str) {
    for verb in ["list", "watch"] {
        out.push(Access::new(verb, group, resource).in_namespace(namespace));
    }
}

/// What forwarding `specs` in `namespace` uses: the port-forward itself, and reading and
/// following each kind of target.
pub fn single_access(namespace: &str, specs: &[ForwardSpec]) -> Vec<Access> {
    let mut out = vec![portforward(namespace)];
    let kinds: std::collections::BTreeSet<Kind> = specs.iter().map(|s| s.target.kind).collect();
    for kind in kinds {
        match kind {
            Kind::Service => {
                out.push(Access::new("get", "", "services").in_namespace(namespace));
                list_watch(&mut out, "", "services", namespace);
                list_watch(&mut out, "discovery.k8s.io", "endpointslices", namespace);
            }
            Kind::Pod => {
                out.push(Access::new("get", "", "pods").in_namespace(namespace));
                list_watch(&mut out, "", "pods", namespace);
            }
            Kind::Deployment => {
                out.push(Access::new("get", "apps", "deployments").in_namespace(namespace));
                list_watch(&mut out, "", "pods", namespace);
            }
        }
    }
    out.dedup();
    out
}

/// What bulk mode uses in each of `namespaces`.
pub fn bulk_access(namespaces: &[String]) -> Vec<Access> {
    let mut out = Vec::new();
    for ns in namespaces {
        out.push(portforward(ns));
        list_watch(&mut out, "", "services", ns);
        list_watch(&mut out, "discovery.k8s.io", "endpointslices", ns);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_specs;

    #[test]
    fn lists_what_each_kind_uses() {
        let specs = parse_specs(&["svc/web", "80", "deploy/api", "8080"]).unwrap();
        let a: Vec<String> = single_access("team", &specs)
            .iter()
            .map(ToString::to_string)
            .collect();
        for want in [
            "create pods/portforward in team",
            "watch endpointslices.discovery.k8s.io in team",
            "get deployments.apps in team",
            "list pods in team",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        assert!(!a.iter().any(|x| x.starts_with("get pods")), "{a:?}");
        let b = bulk_access(&["a".into(), "b".into()]);
        assert_eq!(b.len(), 10);
    }
}
