//! Permission checks before acting: one `SelfSubjectAccessReview` per verb and resource an
//! operation will use, so a user learns every missing permission at once, before anything is
//! half-created.
//!
//! The access lists here are also what `kubelan rbac` grants; tests keep them in step.

use futures::future::join_all;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

pub use crate::access::{Access, Missing, session_sentence};
use crate::error::ClusterError;
use crate::names::{AGENT, cluster_role_name};

/// Asks the API server, for each entry, whether the current user has it; returns those it
/// does not, in the order given. Reviews run concurrently.
///
/// # Errors
/// [`ClusterError::Api`] when a review itself cannot be created (every authenticated user
/// may create them, so this means the API is unreachable or the credentials are invalid).
pub async fn check(client: &kube::Client, wanted: &[Access]) -> Result<Vec<Missing>, ClusterError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let reviews = wanted.iter().map(|a| {
        let api = api.clone();
        async move {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(a.verb.clone()),
                        group: Some(a.group.clone()),
                        resource: Some(a.resource.clone()),
                        subresource: a.subresource.clone(),
                        name: a.name.clone(),
                        namespace: a.namespace.clone(),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            let out = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(crate::error::api(format!("check permission to {a}")))?;
            let status = out.status.unwrap_or_default();
            Ok::<_, ClusterError>((!status.allowed).then(|| Missing {
                access: a.clone(),
                reason: status.evaluation_error.filter(|e| !e.is_empty()),
            }))
        }
    });
    let mut missing = Vec::new();
    for r in join_all(reviews).await {
        if let Some(m) = r? {
            missing.push(m);
        }
    }
    Ok(missing)
}

/// Fails with [`ClusterError::Forbidden`] listing every missing permission, with `hint`.
///
/// # Errors
/// As [`check`], plus [`ClusterError::Forbidden`].
pub async fn require(
    client: &kube::Client,
    wanted: &[Access],
    hint: &str,
) -> Result<(), ClusterError> {
    let missing = check(client, wanted).await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::Forbidden {
            missing,
            hint: hint.into(),
        })
    }
}

/// Hint for install/uninstall permission errors.
pub const INSTALL_HINT: &str = "`kubelan rbac install` prints a ClusterRole with what install and uninstall need; ask a cluster admin to bind it to you (or to run `kubelan install` for you)";

/// Hint for permission errors of agent clients.
pub const AGENT_HINT: &str = "`kubelan rbac proxy` (or `kubelan rbac connect`, the same rules) prints a Role granting what using the agent needs; ask an admin of the agent's namespace to bind it to you";

/// Hint for permission errors of cluster discovery.
pub const DISCOVERY_HINT: &str = "`kubelan rbac discovery` prints a read-only ClusterRole granting what discovery reads; ask a cluster admin to bind it to you";

const RBAC: &str = "rbac.authorization.k8s.io";

/// The namespaced kinds install creates or updates with server-side apply.
const APPLIED: [(&str, &str); 3] = [
    ("", "serviceaccounts"),
    ("", "services"),
    ("apps", "deployments"),
];

/// What `kubelan install` into `namespace` uses. `create_namespace`: the namespace does not
/// exist yet.
pub fn install_access(namespace: &str, create_namespace: bool) -> Vec<Access> {
    let mut v = vec![Access::new("get", "", "namespaces").named(namespace)];
    if create_namespace {
        v.push(Access::new("create", "", "namespaces"));
    }
    for (group, resource) in APPLIED {
        for verb in ["get", "create", "patch"] {
            v.push(Access::new(verb, group, resource).in_namespace(namespace));
        }
    }
    // The Secret is created once and never modified.
    for verb in ["get", "create"] {
        v.push(Access::new(verb, "", "secrets").in_namespace(namespace));
    }
    for resource in ["clusterroles", "clusterrolebindings"] {
        v.push(Access::new("get", RBAC, resource).named(&cluster_role_name(namespace)));
        v.push(Access::new("create", RBAC, resource));
        v.push(Access::new("patch", RBAC, resource).named(&cluster_role_name(namespace)));
    }
    // Waiting for the rollout.
    v.push(Access::new("list", "", "pods").in_namespace(namespace));
    v
}

/// What `kubelan uninstall` from `namespace` uses (deleting the namespace itself is checked
/// separately, only when install created it).
pub fn uninstall_access(namespace: &str) -> Vec<Access> {
    let mut v = vec![Access::new("get", "", "namespaces").named(namespace)];
    for (group, resource) in APPLIED.into_iter().chain([("", "secrets")]) {
        for verb in ["list", "delete"] {
            v.push(Access::new(verb, group, resource).in_namespace(namespace));
        }
    }
    for resource in ["clusterroles", "clusterrolebindings"] {
        for verb in ["get", "delete"] {
            v.push(Access::new(verb, RBAC, resource).named(&cluster_role_name(namespace)));
        }
    }
    v.push(Access::new("list", "", "pods").in_namespace(namespace));
    v
}

/// What a client of the agent in `namespace` uses: carrier 1 is a port-forward through the
/// API server to the agent pod, carrier 2 a direct TLS connection whose client certificate
/// is in the Secret `kubelan-agent` (reading it is the permission to use the carrier).
pub fn agent_access(namespace: &str) -> Vec<Access> {
    vec![
        Access::new("get", "", "pods").in_namespace(namespace),
        Access::new("list", "", "pods").in_namespace(namespace),
        Access::new("create", "", "pods")
            .subresource("portforward")
            .in_namespace(namespace),
        Access::new("get", "", "secrets")
            .named(AGENT)
            .in_namespace(namespace),
        Access::new("get", "", "services")
            .named(AGENT)
            .in_namespace(namespace),
    ]
}

/// What an `expose` session in `namespace` uses: its Job (created, read, deleted on
/// Ctrl-C), its Service (`get` to refuse a taken name, `create`), the relay pod (watched
/// until ready, reached by a port-forward). Events are optional and not checked.
pub fn expose_access(namespace: &str) -> Vec<Access> {
    let mut v = session_common(namespace);
    for verb in ["get", "create"] {
        v.push(Access::new(verb, "", "services").in_namespace(namespace));
    }
    v
}

/// What a `run` session in `namespace` uses: as [`expose_access`], plus `patch services`
/// (its Service's ports follow the program's listeners).
pub fn run_access(namespace: &str) -> Vec<Access> {
    let mut v = expose_access(namespace);
    v.push(Access::new("patch", "", "services").in_namespace(namespace));
    v
}

/// What `replace svc/<service>` in `namespace` uses: the Job and relay pod as for expose,
/// plus `patch jobs` (the Job is created suspended and resumed once the relay's account
/// exists); `get`/`patch` on the Service; the lock Lease (`get` names the holder); the
/// relay's ServiceAccount, Role and RoleBinding.
pub fn replace_access(namespace: &str, service: &str) -> Vec<Access> {
    let mut v = session_common(namespace);
    v.push(Access::new("patch", "batch", "jobs").in_namespace(namespace));
    for verb in ["get", "patch"] {
        v.push(
            Access::new(verb, "", "services")
                .named(service)
                .in_namespace(namespace),
        );
    }
    for verb in ["get", "create"] {
        v.push(Access::new(verb, "coordination.k8s.io", "leases").in_namespace(namespace));
    }
    v.push(Access::new("create", "", "serviceaccounts").in_namespace(namespace));
    for resource in ["roles", "rolebindings"] {
        v.push(Access::new("create", RBAC, resource).in_namespace(namespace));
    }
    v
}

fn session_common(namespace: &str) -> Vec<Access> {
    let mut v: Vec<Access> = ["create", "get", "delete"]
        .into_iter()
        .map(|verb| Access::new(verb, "batch", "jobs").in_namespace(namespace))
        .collect();
    for verb in ["get", "list", "watch"] {
        v.push(Access::new(verb, "", "pods").in_namespace(namespace));
    }
    v.push(
        Access::new("create", "", "pods")
            .subresource("portforward")
            .in_namespace(namespace),
    );
    v
}

/// Checks `wanted` (one of [`expose_access`], [`replace_access`], [`run_access`]) before a
/// `kubelan <mode>` session in `namespace` creates anything.
///
/// # Errors
/// As [`check`], plus [`ClusterError::SessionForbidden`] naming every missing permission.
pub async fn require_session(
    client: &kube::Client,
    mode: &str,
    namespace: &str,
    wanted: &[Access],
) -> Result<(), ClusterError> {
    let missing = check(client, wanted).await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::SessionForbidden {
            mode: mode.into(),
            namespace: namespace.into(),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_permissions_in_one_sentence() {
        let missing: Vec<Missing> = expose_access("team-a")
            .into_iter()
            .filter(|a| a.resource != "pods")
            .map(|access| Missing {
                access,
                reason: None,
            })
            .collect();
        assert_eq!(
            session_sentence("expose", "team-a", &missing),
            "kubelan expose in namespace team-a needs create jobs.batch, get jobs.batch, \
             delete jobs.batch, get services and create services, which you lack; `kubelan rbac \
             expose` prints a ClusterRole granting them: ask an admin of team-a to bind it to \
             you there with a RoleBinding"
        );
        let one = [Missing {
            access: replace_access("ns", "web")[6].clone(),
            reason: None,
        }];
        assert_eq!(
            session_sentence("replace", "ns", &one)
                .split(", which")
                .next()
                .unwrap(),
            "kubelan replace in namespace ns needs create pods/portforward"
        );
        assert!(
            replace_access("ns", "web")
                .iter()
                .any(|a| a.to_string() == "patch services/web in ns")
        );
        assert!(
            run_access("ns")
                .iter()
                .any(|a| a.to_string() == "patch services in ns")
        );
    }

    #[test]
    fn display_names_verb_resource_and_scope() {
        assert_eq!(
            Missing {
                access: Access::new("create", RBAC, "clusterrolebindings"),
                reason: None
            }
            .to_string(),
            "missing: create clusterrolebindings.rbac.authorization.k8s.io (cluster-wide)"
        );
        assert_eq!(
            Access::new("get", "", "secrets")
                .named("kubelan-agent")
                .in_namespace("ns")
                .to_string(),
            "get secrets/kubelan-agent in ns"
        );
        assert_eq!(
            Access::new("create", "", "pods")
                .subresource("portforward")
                .in_namespace("default")
                .to_string(),
            "create pods/portforward in default"
        );
        assert_eq!(
            Access::new("patch", "apps", "deployments")
                .in_namespace("x")
                .to_string(),
            "patch deployments.apps in x"
        );
    }

    #[test]
    fn install_checks_namespace_creation_only_when_needed() {
        let with = install_access("ns", true);
        let without = install_access("ns", false);
        let create_ns = Access::new("create", "", "namespaces");
        assert!(with.contains(&create_ns) && !without.contains(&create_ns));
        assert!(
            !with
                .iter()
                .any(|a| a.resource == "secrets" && a.verb == "patch")
        );
    }
}
