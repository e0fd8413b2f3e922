//! Bearer-token authentication and RBAC authorization.
//!
//! Tokens are opaque random strings (a real cluster issues JWTs; nothing in kubelan looks
//! inside a token). Static tokens name lab users; service-account tokens are minted for
//! pods and stop working when the ServiceAccount (or the pod they were bound to) is gone.
//! Authorization evaluates the stored Roles, ClusterRoles and bindings the way the RBAC
//! authorizer does (plus the default rules every authenticated user holds); members of
//! `system:masters` may do everything. Escalation prevention on RBAC writes lives in
//! `escalation`.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use rand::Rng;
use serde_json::Value;

use crate::meta;
use crate::state::Inner;
use crate::store::Store;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`system:serviceaccount:<ns>:<name>` for service accounts).
    pub name: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with groups (adds `system:authenticated`).
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        g.push("system:authenticated".into());
        Self {
            name: name.into(),
            groups: g,
        }
    }

    fn service_account(ns: &str, name: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{ns}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }
    }

    /// Whether the user bypasses authorization.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

#[derive(Debug, Clone)]
struct SaToken {
    namespace: String,
    name: String,
    /// Pod (name, uid) the token is bound to.
    pod: Option<(String, String)>,
}

/// Token registry.
#[derive(Debug, Default)]
pub struct Authenticator {
    users: Mutex<HashMap<String, UserInfo>>,
    sa_tokens: Mutex<HashMap<String, SaToken>>,
}

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!(
        "{prefix}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl Authenticator {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a static token for a user.
    pub fn add_user_token(&self, token: &str, user: UserInfo) {
        lock(&self.users).insert(token.to_string(), user);
    }

    /// Creates a fresh token for a user and registers it.
    pub fn new_user_token(&self, user: UserInfo) -> String {
        let t = random_token("kubelan-user");
        self.add_user_token(&t, user);
        t
    }

    /// Mints a token for a ServiceAccount, optionally bound to a pod (name, uid).
    pub fn mint_service_account_token(
        &self,
        namespace: &str,
        name: &str,
        pod: Option<(&str, &str)>,
    ) -> String {
        let t = random_token("kubelan-sa");
        lock(&self.sa_tokens).insert(
            t.clone(),
            SaToken {
                namespace: namespace.into(),
                name: name.into(),
                pod: pod.map(|(n, u)| (n.to_string(), u.to_string())),
            },
        );
        t
    }

    /// Forgets every token bound to a pod UID (called when the pod is gone).
    pub fn revoke_pod_tokens(&self, pod_uid: &str) {
        lock(&self.sa_tokens).retain(|_, t| t.pod.as_ref().is_none_or(|(_, u)| u != pod_uid));
    }

    /// The user a bearer token belongs to. Service-account tokens are valid while their
    /// ServiceAccount (and bound pod) exist with the same identity.
    pub fn authenticate(&self, store: &Store, token: &str) -> Option<UserInfo> {
        if let Some(u) = lock(&self.users).get(token) {
            return Some(u.clone());
        }
        let sa = lock(&self.sa_tokens).get(token).cloned()?;
        let sa_res = crate::resources::find("", "v1", "serviceaccounts")?;
        store.get(sa_res, &sa.namespace, &sa.name).ok()?;
        if let Some((pod, uid)) = &sa.pod {
            let pods = crate::resources::find("", "v1", "pods")?;
            let p = store.get(pods, &sa.namespace, pod).ok()?;
            if meta::uid(&p) != uid {
                return None;
            }
        }
        Some(UserInfo::service_account(&sa.namespace, &sa.name))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a request wants to do, in RBAC terms.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    /// RBAC verb (`get`, `list`, `watch`, `create`, …).
    pub verb: String,
    /// API group (empty for core).
    pub group: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Namespace (empty for cluster scope).
    pub namespace: String,
    /// Object name (empty for collections).
    pub name: String,
    /// For non-resource requests: the URL path.
    pub path: Option<String>,
}

impl Attributes {
    /// `resource/subresource` as RBAC rules name it.
    pub fn resource_with_sub(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Whether `user` may perform `attrs`, with a reason.
pub fn authorize(store: &Store, user: &UserInfo, attrs: &Attributes) -> (bool, String) {
    if user.is_master() {
        return (true, "user is in group system:masters".into());
    }
    store.read(|inner| match allowed_by(inner, user, attrs) {
        Some(why) => (true, why),
        None => (false, String::new()),
    })
}

/// What the default ClusterRoles bound to `system:authenticated` allow every signed-in
/// user (`system:basic-user`, `system:discovery`, `system:public-info-viewer`): reviewing
/// one's own access, and reading discovery, OpenAPI, health and version. They are not
/// stored objects here, but count like bound rules everywhere (authorization, the
/// escalation check, SelfSubjectRulesReview), as upstream.
pub fn authenticated_rules() -> Vec<Value> {
    vec![
        serde_json::json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}),
        serde_json::json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
            "resources": ["selfsubjectreviews"]}),
        serde_json::json!({"verbs": ["get"], "nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
            "/openapi/*", "/readyz", "/version", "/version/"]}),
    ]
}

/// Whether `user` is bound to `rule` and where from, as one callback per rule that applies
/// to `user` in `namespace` (cluster-wide bindings first, then the namespace's
/// RoleBindings when `namespace` is not empty). The callback returns `false` to stop.
fn visit_rules(
    inner: &Inner,
    user: &UserInfo,
    namespace: &str,
    f: &mut dyn FnMut(&dyn Fn() -> String, &Value) -> bool,
) {
    if user.groups.iter().any(|g| g == "system:authenticated") {
        for rule in authenticated_rules() {
            if !f(
                &|| "RBAC: allowed to every authenticated user".into(),
                &rule,
            ) {
                return;
            }
        }
    }
    for crb in inner.all_of("clusterrolebindings") {
        let Some(subjects) = crb.get("subjects").and_then(Value::as_array) else {
            continue;
        };
        if !subjects.iter().any(|s| subject_matches(s, user, "")) {
            continue;
        }
        let role = meta::str_at(crb, &["roleRef", "name"]);
        let why = || {
            format!(
                "RBAC: allowed by ClusterRoleBinding \"{}\" of ClusterRole \"{role}\"",
                meta::name(crb)
            )
        };
        for rule in rules_of(inner, "ClusterRole", role, "") {
            if !f(&why, rule) {
                return;
            }
        }
    }
    if namespace.is_empty() {
        return;
    }
    for rb in inner
        .all_of("rolebindings")
        .filter(|rb| meta::namespace(rb) == namespace)
    {
        let Some(subjects) = rb.get("subjects").and_then(Value::as_array) else {
            continue;
        };
        if !subjects.iter().any(|s| subject_matches(s, user, namespace)) {
            continue;
        }
        let kind = meta::str_at(rb, &["roleRef", "kind"]);
        let role = meta::str_at(rb, &["roleRef", "name"]);
        let why = || {
            format!(
                "RBAC: allowed by RoleBinding \"{namespace}/{}\" of {kind} \"{role}\"",
                meta::name(rb)
            )
        };
        for rule in rules_of(inner, kind, role, namespace) {
            if !f(&why, rule) {
                return;
            }
        }
    }
}

/// The rules bound to `user` in `namespace` (cluster-wide ones too), including
/// [`authenticated_rules`].
pub(crate) fn bound_rules(inner: &Inner, user: &UserInfo, namespace: &str) -> Vec<Value> {
    let mut out = Vec::new();
    visit_rules(inner, user, namespace, &mut |_, r| {
        out.push(r.clone());
        true
    });
    out
}

/// Why `user` may perform `attrs` (under the store lock), or `None`.
pub(crate) fn allowed_by(inner: &Inner, user: &UserInfo, a: &Attributes) -> Option<String> {
    if user.is_master() {
        return Some("user is in group system:masters".into());
    }
    let mut why = None;
    // Non-resource URLs are cluster-wide: only ClusterRoleBindings grant them.
    let ns = if a.path.is_some() { "" } else { &a.namespace };
    visit_rules(inner, user, ns, &mut |source, rule| {
        if rule_allows(rule, a) {
            why = Some(source());
            return false;
        }
        true
    });
    why
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let kind = meta::str_at(subject, &["kind"]);
    let name = meta::str_at(subject, &["name"]);
    match kind {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = meta::str_at(subject, &["namespace"]);
            let ns = if ns.is_empty() { binding_ns } else { ns };
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The rules of the Role (in `ns`) or ClusterRole a binding refers to; empty when it does
/// not exist.
pub(crate) fn rules_of<'a>(
    inner: &'a Inner,
    role_kind: &str,
    role_name: &str,
    ns: &str,
) -> Vec<&'a Value> {
    let (plural, want_ns) = if role_kind == "ClusterRole" {
        ("clusterroles", "")
    } else {
        ("roles", ns)
    };
    inner
        .all_of(plural)
        .filter(|r| meta::name(r) == role_name && meta::namespace(r) == want_ns)
        .flat_map(|r| {
            r.get("rules")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

fn strings<'a>(rule: &'a Value, field: &str) -> impl Iterator<Item = &'a str> {
    rule.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn list_has(rule: &Value, field: &str, want: &str) -> bool {
    strings(rule, field).any(|v| v == "*" || v == want)
}

/// Whether one PolicyRule allows the request, as upstream's `RuleAllows`: verb and group
/// match (or `*`); the resource is `*`, exactly `resource[/subresource]`, or `*/sub` for a
/// subresource (`pods/*` is not a pattern upstream: it matches nothing); with
/// `resourceNames`, the request's name must be one of them, so requests without a name
/// (create, deletecollection, list/watch without a `metadata.name` field selector) never
/// match such a rule.
fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if let Some(path) = &a.path {
        return list_has(rule, "verbs", &a.verb)
            && strings(rule, "nonResourceURLs").any(|u| {
                u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            });
    }
    if !list_has(rule, "verbs", &a.verb) || !list_has(rule, "apiGroups", &a.group) {
        return false;
    }
    let res = a.resource_with_sub();
    let res_ok = strings(rule, "resources").any(|r| {
        r == "*"
            || r == res
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
    });
    if !res_ok {
        return false;
    }
    let mut names = strings(rule, "resourceNames").peekable();
    names.peek().is_none() || names.any(|n| n == a.name)
}

/// The rules that apply to `user` in `namespace`, for a SelfSubjectRulesReview: resource
/// rules and non-resource rules, as upstream splits them.
pub fn rules_for(store: &Store, user: &UserInfo, namespace: &str) -> (Vec<Value>, Vec<Value>) {
    if user.is_master() {
        return (
            vec![serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})],
            vec![serde_json::json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
        );
    }
    let rules = store.read(|inner| bound_rules(inner, user, namespace));
    let mut resource = Vec::new();
    let mut non_resource = Vec::new();
    let list = |r: &Value, f: &str| Value::from(strings(r, f).collect::<Vec<_>>());
    for r in &rules {
        if strings(r, "resources").next().is_some() {
            let mut out = serde_json::json!({
                "verbs": list(r, "verbs"),
                "apiGroups": list(r, "apiGroups"),
                "resources": list(r, "resources"),
            });
            if strings(r, "resourceNames").next().is_some() {
                out["resourceNames"] = list(r, "resourceNames");
            }
            resource.push(out);
        }
        if strings(r, "nonResourceURLs").next().is_some() {
            non_resource.push(serde_json::json!({
                "verbs": list(r, "verbs"),
                "nonResourceURLs": list(r, "nonResourceURLs"),
            }));
        }
    }
    (resource, non_resource)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resources::find;
    use crate::store::ClusterConfig;
    use serde_json::json;
    use std::sync::Arc;

    /// A store with the namespaces `default` and `team` (shared with other modules' tests).
    pub(crate) fn store() -> Arc<Store> {
        let s = Store::new(ClusterConfig {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            node_port_range: (30000, 32767),
            cluster_domain: "cluster.local".into(),
        });
        for ns in ["default", "team"] {
            s.create(
                find("", "v1", "namespaces").unwrap(),
                "",
                json!({"metadata": {"name": ns}}),
                false,
            )
            .unwrap();
        }
        s
    }

    fn attrs(verb: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            path: None,
        }
    }

    #[test]
    fn rbac_role_binding() {
        let s = store();
        let dev = UserInfo::new("dev", &[]);
        assert!(
            !authorize(
                &s,
                &dev,
                &attrs("create", "pods", "portforward", "team", "p")
            )
            .0
        );
        s.create(
            find("rbac.authorization.k8s.io", "v1", "roles").unwrap(),
            "team",
            json!({"metadata": {"name": "pf"}, "rules": [
                {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"], "resourceNames": ["p"]}
            ]}),
            false,
        )
        .unwrap();
        s.create(
            find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap(),
            "team",
            json!({"metadata": {"name": "pf"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pf"},
                   "subjects": [{"kind": "User", "name": "dev"}]}),
            false,
        )
        .unwrap();
        assert!(
            authorize(
                &s,
                &dev,
                &attrs("create", "pods", "portforward", "team", "p")
            )
            .0
        );
        assert!(
            !authorize(
                &s,
                &dev,
                &attrs("create", "pods", "portforward", "default", "p")
            )
            .0
        );
        assert!(!authorize(&s, &dev, &attrs("get", "pods", "log", "team", "p")).0);
        assert!(authorize(&s, &dev, &attrs("get", "pods", "", "team", "p")).0);
        assert!(!authorize(&s, &dev, &attrs("get", "pods", "", "team", "q")).0);
        assert!(!authorize(&s, &dev, &attrs("list", "pods", "", "team", "")).0);
        let mut review = attrs("create", "selfsubjectaccessreviews", "", "", "");
        assert!(!authorize(&s, &dev, &review).0, "the group counts");
        review.group = "authorization.k8s.io".into();
        assert!(authorize(&s, &dev, &review).0);
    }

    fn grant(s: &Store, rules: Value) {
        s.create(
            find("rbac.authorization.k8s.io", "v1", "roles").unwrap(),
            "team",
            json!({"metadata": {"name": "r"}, "rules": rules}),
            false,
        )
        .unwrap();
        s.create(
            find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap(),
            "team",
            json!({"metadata": {"name": "r"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                   "subjects": [{"kind": "User", "name": "dev"}]}),
            false,
        )
        .unwrap();
    }

    #[test]
    fn resource_names_match_only_requests_that_carry_that_name() {
        let s = store();
        grant(
            &s,
            json!([{"apiGroups": [""], "resources": ["services"], "resourceNames": ["web"],
                    "verbs": ["get", "list", "watch", "patch", "delete", "create", "deletecollection"]}]),
        );
        let dev = UserInfo::new("dev", &[]);
        let can = |verb: &str, name: &str| {
            authorize(&s, &dev, &attrs(verb, "services", "", "team", name)).0
        };
        for verb in ["get", "patch", "delete"] {
            assert!(can(verb, "web"), "{verb}");
            assert!(!can(verb, "db"), "{verb}");
        }
        // A list or watch restricted by `fieldSelector=metadata.name=web` carries the name
        // (the server fills it in); without one it has none and is refused.
        assert!(can("list", "web") && can("watch", "web"));
        assert!(!can("list", "") && !can("watch", ""));
        // Create and deletecollection never carry a name.
        assert!(!can("create", "") && !can("deletecollection", ""));
    }

    #[test]
    fn subresource_patterns_are_upstreams() {
        let s = store();
        grant(
            &s,
            json!([{"apiGroups": ["*"], "resources": ["pods/*", "*/scale"], "verbs": ["*"]}]),
        );
        let dev = UserInfo::new("dev", &[]);
        let can =
            |res: &str, sub: &str| authorize(&s, &dev, &attrs("get", res, sub, "team", "x")).0;
        // `*/scale` is every resource's scale subresource.
        assert!(can("deployments", "scale") && can("statefulsets", "scale"));
        assert!(!can("deployments", "status"));
        // `pods/*` is no pattern upstream: it matches neither subresources nor pods.
        assert!(!can("pods", "log") && !can("pods", "exec") && !can("pods", ""));
        // `*` covers subresources too.
        s.create(
            find("rbac.authorization.k8s.io", "v1", "roles").unwrap(),
            "default",
            json!({"metadata": {"name": "all"}, "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]}),
            false,
        )
        .unwrap();
        s.create(
            find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap(),
            "default",
            json!({"metadata": {"name": "all"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "all"},
                   "subjects": [{"kind": "User", "name": "dev"}]}),
            false,
        )
        .unwrap();
        assert!(authorize(&s, &dev, &attrs("get", "pods", "log", "default", "x")).0);
    }

    #[test]
    fn non_resource_urls_and_rules_review() {
        let s = store();
        let dev = UserInfo::new("dev", &[]);
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: Some(p.into()),
            ..Attributes::default()
        };
        assert!(authorize(&s, &dev, &path("/apis/apps/v1")).0);
        assert!(authorize(&s, &dev, &path("/openapi/v3")).0);
        assert!(!authorize(&s, &dev, &path("/metrics")).0);
        grant(
            &s,
            json!([{"apiGroups": [""], "resources": ["services"], "resourceNames": ["web"], "verbs": ["get"]},
                   {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
        );
        // Non-resource rules count only from ClusterRoleBindings.
        assert!(!authorize(&s, &dev, &path("/metrics")).0);
        let (res, non_res) = rules_for(&s, &dev, "team");
        assert!(res.contains(&json!({"verbs": ["get"], "apiGroups": [""], "resources": ["services"], "resourceNames": ["web"]})), "{res:?}");
        assert!(
            res.iter()
                .any(|r| r["resources"][0] == "selfsubjectaccessreviews")
        );
        assert!(non_res.iter().any(|r| r["nonResourceURLs"][0] == "/api"));
        let (res, _) = rules_for(&s, &dev, "default");
        assert!(!res.iter().any(|r| r["resources"][0] == "services"));
    }

    #[test]
    fn service_account_tokens_follow_the_account() {
        let s = store();
        let a = Authenticator::new();
        let sa = find("", "v1", "serviceaccounts").unwrap();
        s.create(sa, "team", json!({"metadata": {"name": "agent"}}), false)
            .unwrap();
        let t = a.mint_service_account_token("team", "agent", None);
        let u = a.authenticate(&s, &t).unwrap();
        assert_eq!(u.name, "system:serviceaccount:team:agent");
        assert!(
            u.groups
                .contains(&"system:serviceaccounts:team".to_string())
        );
        s.delete(sa, "team", "agent", &Default::default()).unwrap();
        assert!(a.authenticate(&s, &t).is_none());
        assert!(a.authenticate(&s, "nonsense").is_none());
        let admin = a.new_user_token(UserInfo::new("admin", &["system:masters"]));
        assert!(a.authenticate(&s, &admin).unwrap().is_master());
    }

    #[test]
    fn cluster_role_binding_to_group() {
        let s = store();
        s.create(
            find("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap(),
            "",
            json!({"metadata": {"name": "view-pods"}, "rules": [{"apiGroups": ["*"], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}]}),
            false,
        )
        .unwrap();
        s.create(
            find("rbac.authorization.k8s.io", "v1", "clusterrolebindings").unwrap(),
            "",
            json!({"metadata": {"name": "view-pods"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view-pods"},
                   "subjects": [{"kind": "Group", "name": "viewers"}]}),
            false,
        )
        .unwrap();
        let v = UserInfo::new("v", &["viewers"]);
        assert!(authorize(&s, &v, &attrs("watch", "pods", "", "", "")).0);
        assert!(authorize(&s, &v, &attrs("get", "pods", "log", "team", "x")).0);
        assert!(!authorize(&s, &v, &attrs("delete", "pods", "", "team", "x")).0);
    }
}
