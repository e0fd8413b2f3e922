//! Ready-to-apply RBAC for kubelan's users, one set per mode, each with a short explanation
//! of why every rule is there (`kubelan rbac [MODE]`).
//!
//! The rules here and the access lists in [`crate::preflight`] describe the same needs; the
//! integration tests apply these roles to a simulated cluster and run the preflights and
//! `install` as a user holding only them.

use std::fmt::Write as _;

use crate::names::{AGENT, DEFAULT_NAMESPACE};

/// What the user wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RbacMode {
    /// `kubelan proxy`: use the installed agent.
    Proxy,
    /// `kubelan connect`: use the installed agent (same needs as proxy).
    Connect,
    /// `kubelan forward`: agentless port-forwards into chosen namespaces.
    Forward,
    /// `kubelan install` and `kubelan uninstall`.
    Install,
    /// Read-only cluster discovery (Pod and Service CIDRs).
    Discovery,
    /// `kubelan expose`: a new Service for local ports, served by a per-session relay pod.
    Expose,
    /// `kubelan replace`: an existing Service's traffic comes to this machine.
    Replace,
    /// `kubelan run`: a local program gets a cluster address (expose, plus Service ports
    /// that follow the program's listeners).
    Run,
}

impl RbacMode {
    /// Every mode, in the order `kubelan rbac` prints them.
    pub const ALL: [RbacMode; 8] = [
        Self::Proxy,
        Self::Connect,
        Self::Forward,
        Self::Install,
        Self::Discovery,
        Self::Expose,
        Self::Replace,
        Self::Run,
    ];
}

/// The example subject every binding names; the explanation says to replace it.
pub const PLACEHOLDER_USER: &str = "jane@example.com";

/// RBAC for `mode` with the agent in the default namespace (`kubelan-system`).
pub fn user_rbac(mode: RbacMode) -> String {
    user_rbac_in(mode, DEFAULT_NAMESPACE)
}

/// RBAC for every mode, as one YAML stream.
pub fn all_user_rbac(namespace: &str) -> String {
    RbacMode::ALL
        .iter()
        .map(|m| user_rbac_in(*m, namespace))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// RBAC for `mode` with the agent in `namespace`: commented YAML (roles plus example
/// bindings to [`PLACEHOLDER_USER`]) for `kubectl apply -f -`.
pub fn user_rbac_in(mode: RbacMode, namespace: &str) -> String {
    let ns = namespace;
    let mut out = String::new();
    let binding_note = format!(
        "# Replace the subject ({PLACEHOLDER_USER}) with your user, or use `kind: Group` or\n\
         # `kind: ServiceAccount` (with `namespace:`) as needed.\n"
    );
    match mode {
        RbacMode::Proxy | RbacMode::Connect => {
            let name = if mode == RbacMode::Proxy {
                "proxy"
            } else {
                "connect"
            };
            let _ = write!(
                out,
                "# kubelan {name}: use the kubelan agent installed in namespace {ns}.\n\
                 #\n\
                 # - get secrets/{AGENT}: the agent's CA and client certificate. Reading this\n\
                 #   Secret IS the permission to use the direct TLS carrier (LoadBalancer,\n\
                 #   NodePort or pod IPs); grant it only to those who may use the agent.\n\
                 # - pods get/list/watch, pods/portforward create (get for API servers before\n\
                 #   1.31): the carrier through the API server, when the direct one is blocked.\n\
                 # - get services/{AGENT}: the Service's type, node port and load balancer.\n\
                 # - list nodes (cluster-wide, optional): node addresses for the NodePort;\n\
                 #   without it only load balancer and pod addresses are tried.\n\
                 {binding_note}"
            );
            if mode == RbacMode::Connect {
                out.push_str(
                    "# `kubelan connect` also discovers the cluster's Pod and Service networks;\n\
                     # `kubelan rbac discovery` prints that role. Every source is optional: a\n\
                     # missing verb becomes a note in `kubelan status` and the next source is tried.\n",
                );
            }
            out.push_str(&agent_user_yaml(ns));
        }
        RbacMode::Forward => {
            let _ = write!(
                out,
                "# kubelan forward: agentless port-forwards to Pods and Services that survive pod\n\
                 # restarts. A ClusterRole bound with a RoleBinding in each namespace you forward\n\
                 # into (the example binds it in `default`); a ClusterRoleBinding instead grants\n\
                 # it in every namespace.\n\
                 #\n\
                 # - pods/portforward create (get for API servers before 1.31): the tunnels.\n\
                 # - pods, services, endpointslices get/list/watch: resolve a Service to its\n\
                 #   ready pods and follow them as they are replaced.\n\
                 # - deployments get (apps): resolve deploy/NAME to its pods' selector.\n\
                 {binding_note}"
            );
            out.push_str(FORWARD_YAML);
        }
        RbacMode::Install => {
            let _ = write!(
                out,
                "# kubelan install / uninstall (agent namespace {ns}).\n\
                 #\n\
                 # - namespaces get/create/delete: create the agent's namespace (and delete it on\n\
                 #   uninstall, only if install created it).\n\
                 # - serviceaccounts, secrets, services, deployments: the agent's objects\n\
                 #   (server-side apply: get, create, patch; list and delete for uninstall).\n\
                 # - clusterroles, clusterrolebindings: the agent's read-only ClusterRole and its\n\
                 #   binding. Kubernetes only lets you create a role holding permissions you\n\
                 #   have yourself, so the agent's own read rules (services, pods, nodes,\n\
                 #   endpointslices, servicecidrs) are included.\n\
                 # - pods list/watch: wait for the agent to become ready.\n\
                 # This is a powerful role (it can write Secrets and RBAC objects cluster-wide);\n\
                 # bind it to administrators only, or have an administrator run the install.\n\
                 {binding_note}"
            );
            out.push_str(INSTALL_YAML);
        }
        RbacMode::Discovery => {
            let _ = write!(
                out,
                "# kubelan cluster discovery (read only): find the Pod and Service CIDRs and the\n\
                 # cluster DNS Service.\n\
                 #\n\
                 # - servicecidrs get/list: the Service CIDRs (Kubernetes 1.33+).\n\
                 # - pods get/list in kube-system: the API server's --service-cluster-ip-range\n\
                 #   flag, where no ServiceCIDR object exists.\n\
                 # - nodes get/list: the nodes' Pod CIDRs (spec.podCIDRs) and addresses.\n\
                 # - ippools (Calico) list, configmaps/kube-flannel-cfg get: the Pod CIDRs\n\
                 #   where nodes have none.\n\
                 # - services get/list: the cluster DNS Service, and ClusterIPs in use when\n\
                 #   nothing names the Service CIDR.\n\
                 # Not granted here, optional: `create services` (a dry run whose refusal\n\
                 # names the Service CIDR) and `list pods` in every namespace (pod IPs in use\n\
                 # when nothing names the Pod CIDR); without them discovery says so and asks\n\
                 # for --service-cidr / --pod-cidr.\n\
                 {binding_note}"
            );
            out.push_str(DISCOVERY_YAML);
        }
        RbacMode::Expose | RbacMode::Run => {
            let name = if mode == RbacMode::Expose {
                "expose"
            } else {
                "run"
            };
            let _ = write!(
                out,
                "# kubelan {name}: each session is a Job kubelan-<id> whose pod (`kubelan relay`,\n\
                 # Pod Security restricted, no service-account token) takes the connections of a\n\
                 # Service that points at it; everything the session creates is owned by the Job,\n\
                 # so Kubernetes deletes it when the session ends or its client disappears.\n\
                 # A ClusterRole bound with a RoleBinding in each namespace you expose in (the\n\
                 # example binds it in `default`).\n\
                 #\n\
                 # - jobs create/get/delete (batch): the session's Job; delete on Ctrl-C.\n\
                 # - services get/create: refuse a name that exists, create the session's Service.\n"
            );
            if mode == RbacMode::Run {
                out.push_str(
                    "# - services patch: add and remove the Service's ports as the program opens\n\
                     #   and closes listening sockets.\n",
                );
            }
            let _ = write!(
                out,
                "# - pods get/list/watch, pods/portforward create (get for API servers before\n\
                 #   1.31): wait for the relay pod and reach it through the API server.\n\
                 # - events list (optional): say why a relay pod does not start.\n\
                 # Nothing here deletes Services or pods: the garbage collector does.\n\
                 {binding_note}"
            );
            out.push_str(&session_yaml(mode));
        }
        RbacMode::Replace => {
            let _ = write!(
                out,
                "# kubelan replace: an existing Service's traffic comes to this machine until the\n\
                 # session ends. The session is a Job kubelan-<id> running `kubelan relay`; the\n\
                 # Service's selector is swapped to the relay's pod and put back on exit, by the\n\
                 # client or, if the client vanished, by the relay. A ClusterRole bound with a\n\
                 # RoleBinding in each namespace whose Services you replace (the example binds it\n\
                 # in `default`; add `resourceNames` to the services rule to allow only some).\n\
                 #\n\
                 # - jobs create/get/patch/delete (batch): the session's Job, created suspended\n\
                 #   and resumed (patch) once the relay's own account exists; delete on Ctrl-C.\n\
                 # - services get/patch: read the selector, swap it and put it back.\n\
                 # - leases get/create (coordination.k8s.io): the lock kubelan-replace-<svc> that\n\
                 #   keeps two sessions off one Service (it names who holds it).\n\
                 # - serviceaccounts, roles, rolebindings create: the relay's own account, allowed\n\
                 #   only get and patch on the one Service, so it can put the selector back.\n\
                 #   Kubernetes lets you grant that only because you hold it yourself.\n\
                 # - pods get/list/watch, pods/portforward create (get for API servers before\n\
                 #   1.31): wait for the relay pod and reach it through the API server.\n\
                 # - endpointslices list (discovery.k8s.io, optional): say \"replaced\" only once\n\
                 #   the Service's endpoints are the relay alone.\n\
                 # - events list (optional): say why a relay pod does not start.\n\
                 {binding_note}"
            );
            out.push_str(&session_yaml(mode));
        }
    }
    out
}

/// The ClusterRole and example RoleBinding of a way-back mode.
fn session_yaml(mode: RbacMode) -> String {
    let (name, extra) = match mode {
        RbacMode::Replace => (
            "kubelan-replace",
            "  - apiGroups: [\"\"]\n    resources: [\"services\"]\n    verbs: [\"get\", \"patch\"]\n\
             \x20 - apiGroups: [\"coordination.k8s.io\"]\n    resources: [\"leases\"]\n    verbs: [\"get\", \"create\"]\n\
             \x20 - apiGroups: [\"\"]\n    resources: [\"serviceaccounts\"]\n    verbs: [\"create\"]\n\
             \x20 - apiGroups: [\"rbac.authorization.k8s.io\"]\n    resources: [\"roles\", \"rolebindings\"]\n    verbs: [\"create\"]\n\
             \x20 - apiGroups: [\"discovery.k8s.io\"]\n    resources: [\"endpointslices\"]\n    verbs: [\"list\"]\n",
        ),
        RbacMode::Run => (
            "kubelan-run",
            "  - apiGroups: [\"\"]\n    resources: [\"services\"]\n    verbs: [\"get\", \"create\", \"patch\"]\n",
        ),
        _ => (
            "kubelan-expose",
            "  - apiGroups: [\"\"]\n    resources: [\"services\"]\n    verbs: [\"get\", \"create\"]\n",
        ),
    };
    let jobs = if mode == RbacMode::Replace {
        "[\"get\", \"create\", \"patch\", \"delete\"]"
    } else {
        "[\"get\", \"create\", \"delete\"]"
    };
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {name}\n\
         rules:\n\
         \x20 - apiGroups: [\"batch\"]\n    resources: [\"jobs\"]\n    verbs: {jobs}\n\
         {extra}\
         \x20 - apiGroups: [\"\"]\n    resources: [\"pods\"]\n    verbs: [\"get\", \"list\", \"watch\"]\n\
         \x20 - apiGroups: [\"\"]\n    resources: [\"pods/portforward\"]\n    verbs: [\"create\", \"get\"]\n\
         \x20 - apiGroups: [\"\"]\n    resources: [\"events\"]\n    verbs: [\"list\"]\n\
         ---\n{}",
        binding("RoleBinding", name, Some("default"), "ClusterRole"),
    )
}

fn binding(kind: &str, name: &str, namespace: Option<&str>, role_kind: &str) -> String {
    let ns = namespace
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n{ns}\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: {role_kind}\n  name: {name}\n\
         subjects:\n  - apiGroup: rbac.authorization.k8s.io\n    kind: User\n    name: {PLACEHOLDER_USER}\n"
    )
}

fn agent_user_yaml(ns: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: kubelan-agent-user\n  namespace: {ns}\n\
         rules:\n\
         \x20 - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    resourceNames: [\"{AGENT}\"]\n    verbs: [\"get\"]\n\
         \x20 - apiGroups: [\"\"]\n    resources: [\"services\"]\n    resourceNames: [\"{AGENT}\"]\n    verbs: [\"get\"]\n\
         \x20 - apiGroups: [\"\"]\n    resources: [\"pods\"]\n    verbs: [\"get\", \"list\", \"watch\"]\n\
         \x20 - apiGroups: [\"\"]\n    resources: [\"pods/portforward\"]\n    verbs: [\"create\", \"get\"]\n\
         ---\n{}---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: kubelan-node-reader\n\
         rules:\n\
         \x20 - apiGroups: [\"\"]\n    resources: [\"nodes\"]\n    verbs: [\"get\", \"list\"]\n\
         ---\n{}",
        binding("RoleBinding", "kubelan-agent-user", Some(ns), "Role"),
        binding(
            "ClusterRoleBinding",
            "kubelan-node-reader",
            None,
            "ClusterRole"
        ),
    )
}

const FORWARD_YAML: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kubelan-forward
rules:
  - apiGroups: [""]
    resources: ["pods/portforward"]
    verbs: ["create", "get"]
  - apiGroups: [""]
    resources: ["pods", "services"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["apps"]
    resources: ["deployments"]
    verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: kubelan-forward
  namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kubelan-forward
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: jane@example.com
"#;

const INSTALL_YAML: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kubelan-installer
rules:
  - apiGroups: [""]
    resources: ["namespaces"]
    verbs: ["get", "create", "delete"]
  - apiGroups: [""]
    resources: ["serviceaccounts", "secrets", "services"]
    verbs: ["get", "list", "create", "patch", "delete"]
  - apiGroups: ["apps"]
    resources: ["deployments"]
    verbs: ["get", "list", "create", "patch", "delete"]
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["clusterroles", "clusterrolebindings"]
    verbs: ["get", "create", "patch", "delete"]
  # The agent's own rules (needed to create its ClusterRole), and waiting for its pods.
  - apiGroups: [""]
    resources: ["services", "pods", "nodes"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["networking.k8s.io"]
    resources: ["servicecidrs"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubelan-installer
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kubelan-installer
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: jane@example.com
"#;

const DISCOVERY_YAML: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kubelan-discovery
rules:
  - apiGroups: [""]
    resources: ["nodes", "services"]
    verbs: ["get", "list"]
  - apiGroups: ["networking.k8s.io"]
    resources: ["servicecidrs"]
    verbs: ["get", "list"]
  - apiGroups: ["crd.projectcalico.org"]
    resources: ["ippools"]
    verbs: ["list"]
  - apiGroups: [""]
    resources: ["configmaps"]
    resourceNames: ["kube-flannel-cfg"]
    verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubelan-discovery
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kubelan-discovery
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: jane@example.com
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: kubelan-discovery
  namespace: kube-system
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: kubelan-discovery
  namespace: kube-system
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: kubelan-discovery
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: jane@example.com
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

    /// Every document parses into its typed Kubernetes object, and every binding names a
    /// role defined in the same output.
    #[test]
    fn every_mode_is_valid_rbac() {
        let text = all_user_rbac("team-a");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
        assert_eq!(docs.len(), 22, "{text}");
        let mut roles = Vec::new();
        let mut refs = Vec::new();
        for d in docs {
            match d["kind"].as_str().unwrap() {
                "Role" => {
                    let r: Role = serde_json::from_value(d).unwrap();
                    roles.push(("Role", r.metadata.name.unwrap()));
                }
                "ClusterRole" => {
                    let r: ClusterRole = serde_json::from_value(d).unwrap();
                    assert!(!r.rules.unwrap().is_empty());
                    roles.push(("ClusterRole", r.metadata.name.unwrap()));
                }
                "RoleBinding" => {
                    let b: RoleBinding = serde_json::from_value(d).unwrap();
                    assert_eq!(b.subjects.unwrap()[0].name, PLACEHOLDER_USER);
                    refs.push(b.role_ref);
                }
                "ClusterRoleBinding" => {
                    let b: ClusterRoleBinding = serde_json::from_value(d).unwrap();
                    refs.push(b.role_ref);
                }
                k => panic!("unexpected kind {k}"),
            }
        }
        for r in refs {
            assert!(
                roles.iter().any(|(k, n)| *k == r.kind && *n == r.name),
                "{r:?} refers to a role that is not printed"
            );
        }
        assert!(text.contains("namespace: team-a"));
        assert!(user_rbac(RbacMode::Proxy).contains("namespace: kubelan-system"));
    }
}
