//! RBAC privilege-escalation prevention on writes of Roles, ClusterRoles and their bindings,
//! as the real API server's RBAC storage does it.
//!
//! - A Role or ClusterRole may be created or updated only by a user who already holds every
//!   permission in it, in its scope (the Role's namespace; cluster-wide for a ClusterRole),
//!   unless the user may `escalate` roles/clusterroles (for that name; a create has no name
//!   yet, so only an unrestricted `escalate` helps there). An `aggregationRule` needs every
//!   permission (`*` on everything).
//! - A RoleBinding or ClusterRoleBinding may be created or updated only by a user who holds
//!   every permission of the role it refers to, in the binding's scope, unless the user may
//!   `bind` that role (by its name: `resourceNames` count).
//! - Members of `system:masters` skip both checks; an update that only changes
//!   `ownerReferences` or `finalizers` (what the garbage collector writes) is not checked.
//!
//! "Holds" compares rules the way upstream's `Covers` does: every (group, resource, verb,
//! name) of the new rules must be matched by one rule the user is bound to, where an owner
//! rule without `resourceNames` covers every name, `*` covers everything of its field, and
//! `*/sub` covers that subresource of every resource.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::auth::{self, Attributes, UserInfo};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::meta;
use crate::resources::{self, ResourceInfo};
use crate::state::Inner;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// One RBAC PolicyRule with its lists as given (non-string entries are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PolicyRule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

impl PolicyRule {
    fn from_json(v: &Value) -> Self {
        let list = |f: &str| -> Vec<String> {
            v.get(f)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        };
        Self {
            verbs: list("verbs"),
            api_groups: list("apiGroups"),
            resources: list("resources"),
            resource_names: list("resourceNames"),
            non_resource_urls: list("nonResourceURLs"),
        }
    }

    /// Upstream's compact form for escalation messages, e.g.
    /// `{APIGroups:[""], Resources:["services"], ResourceNames:["web"], Verbs:["get" "patch"]}`.
    fn compact_string(&self) -> String {
        let parts: Vec<String> = [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ]
        .into_iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(k, l)| format!("{k}:{}", quote_list(l)))
        .collect();
        format!("{{{}}}", parts.join(", "))
    }
}

/// A string as Go's `%q` prints it (for the plain names RBAC deals in).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A list of strings as Go's `%q` prints a `[]string`: `["a" "b"]`.
fn quote_list(l: &[String]) -> String {
    let items: Vec<String> = l.iter().map(|s| quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// The rule split into rules of one group, resource, verb and name each (and one
/// non-resource URL and verb each).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| vec![s.clone()];
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    verbs: one(verb),
                    api_groups: one(group),
                    resources: one(resource),
                    ..PolicyRule::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for name in &rule.resource_names {
                        out.push(PolicyRule {
                            resource_names: one(name),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(set, w))
}

fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, "*") || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|w| {
        has(owner, w)
            || w.split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

fn urls_cover(owner: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| {
        owner.iter().any(|o| {
            o == w
                || o.strip_suffix('*')
                    .is_some_and(|p| w.starts_with(p.trim_end_matches('*')))
        })
    })
}

/// Whether `owner` covers `sub` (a rule from [`breakdown`]).
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs
        && groups
        && resources_cover(&owner.resources, &sub.resources)
        && urls_cover(&owner.non_resource_urls, &sub.non_resource_urls)
        && names
}

/// The parts of `wanted` that no rule of `owner` covers (empty: fully covered).
fn uncovered(owner: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect()
}

/// Merges rules of one group and one resource with nothing else but verbs, as upstream
/// does before listing what is missing.
fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let mut simple: BTreeMap<(String, String), PolicyRule> = BTreeMap::new();
    for r in rules {
        let is_simple = r.resource_names.is_empty()
            && r.non_resource_urls.is_empty()
            && r.api_groups.len() == 1
            && r.resources.len() == 1;
        if !is_simple {
            out.push(r);
            continue;
        }
        let key = (r.api_groups[0].clone(), r.resources[0].clone());
        match simple.get_mut(&key) {
            Some(existing) => existing.verbs.extend(r.verbs),
            None => {
                simple.insert(key, r);
            }
        }
    }
    out.extend(simple.into_values());
    out
}

/// `Ok` when `user` holds every permission of `rules` in `namespace` (`""`: cluster-wide
/// bindings only); otherwise upstream's sentence listing what is missing.
fn confirm_no_escalation(
    inner: &Inner,
    user: &UserInfo,
    namespace: &str,
    rules: &[PolicyRule],
) -> Result<(), String> {
    let owner: Vec<PolicyRule> = auth::bound_rules(inner, user, namespace)
        .iter()
        .map(PolicyRule::from_json)
        .collect();
    let missing = uncovered(&owner, rules);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: BTreeSet<String> = compact(missing)
        .iter()
        .map(PolicyRule::compact_string)
        .collect();
    Err(format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        quote(&user.name),
        quote_list(&user.groups),
        lines.into_iter().collect::<Vec<_>>().join("\n")
    ))
}

fn forbidden(res: &ResourceInfo, name: &str, why: &str) -> ApiError {
    let mut e = ApiError::forbidden_msg(format!(
        "{} \"{name}\" is forbidden: {why}",
        res.group_resource()
    ));
    e.details = Some(serde_json::json!({"name": name, "group": res.group, "kind": res.plural}));
    e
}

/// Whether the update changes nothing but what the garbage collector writes.
fn only_gc_fields_change(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "ownerReferences",
                "finalizers",
                "resourceVersion",
                "managedFields",
            ] {
                m.remove(f);
            }
        }
        v
    };
    strip(new) == strip(old)
}

fn has_aggregation_rule(role: &Value) -> bool {
    role.pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn rules_in(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(PolicyRule::from_json)
        .collect()
}

/// The escalation check for a create (`old` is `None`) or update of `new` in `res`, by
/// `user`, on a request for `url_ns`/`url_name` (empty name for a create by POST). Returns
/// `Ok` at once for every other resource.
///
/// # Errors
/// 403 in upstream's words when the user would grant what they do not hold; 404 when a
/// binding refers to a role that does not exist (and the user may not `bind` it); 422 for
/// a binding whose `roleRef.kind` is not a role kind.
pub(crate) fn check(
    inner: &Inner,
    user: &UserInfo,
    res: &ResourceInfo,
    url_ns: &str,
    url_name: &str,
    new: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if res.group != RBAC_GROUP || user.is_master() {
        return Ok(());
    }
    let ns = if res.namespaced { url_ns } else { "" };
    let name = meta::name(new);
    match res.plural {
        "roles" | "clusterroles" => {
            if old.is_some_and(|o| only_gc_fields_change(new, o)) {
                return Ok(());
            }
            let escalate = Attributes {
                verb: "escalate".into(),
                group: RBAC_GROUP.into(),
                resource: res.plural.into(),
                namespace: ns.into(),
                name: url_name.into(),
                ..Attributes::default()
            };
            if auth::allowed_by(inner, user, &escalate).is_some() {
                return Ok(());
            }
            confirm_no_escalation(inner, user, ns, &rules_in(new))
                .map_err(|why| forbidden(res, name, &why))?;
            if res.plural == "clusterroles"
                && (has_aggregation_rule(new) || old.is_some_and(has_aggregation_rule))
            {
                let everything = [
                    PolicyRule::from_json(
                        &serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                    ),
                    PolicyRule::from_json(
                        &serde_json::json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
                    ),
                ];
                confirm_no_escalation(inner, user, "", &everything).map_err(|_| {
                    forbidden(
                        res,
                        name,
                        "must have cluster-admin privileges to use the aggregationRule",
                    )
                })?;
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            if old.is_some_and(|o| only_gc_fields_change(new, o)) {
                return Ok(());
            }
            let kind = meta::str_at(new, &["roleRef", "kind"]);
            let role = meta::str_at(new, &["roleRef", "name"]);
            let role_plural = match kind {
                "ClusterRole" => "clusterroles",
                "Role" if res.namespaced => "roles",
                _ => {
                    let supported = if res.namespaced {
                        "\"Role\", \"ClusterRole\""
                    } else {
                        "\"ClusterRole\""
                    };
                    return Err(ApiError::invalid(
                        res.kind,
                        name,
                        vec![FieldError::invalid(
                            "roleRef.kind",
                            format!("\"{kind}\""),
                            format!("supported values: {supported}"),
                        )],
                    ));
                }
            };
            let bind = Attributes {
                verb: "bind".into(),
                group: meta::str_at(new, &["roleRef", "apiGroup"]).into(),
                resource: role_plural.into(),
                namespace: ns.into(),
                name: role.into(),
                ..Attributes::default()
            };
            if auth::allowed_by(inner, user, &bind).is_some() {
                return Ok(());
            }
            let role_ns = if role_plural == "roles" { ns } else { "" };
            let exists = inner
                .all_of(role_plural)
                .any(|r| meta::name(r) == role && meta::namespace(r) == role_ns);
            if !exists {
                let role_res = resources::find(RBAC_GROUP, "v1", role_plural)
                    .ok_or_else(|| ApiError::bad_request("RBAC roles are not served"))?;
                return Err(ApiError::not_found(role_res, role));
            }
            let rules: Vec<PolicyRule> = auth::rules_of(inner, kind, role, ns)
                .into_iter()
                .map(PolicyRule::from_json)
                .collect();
            confirm_no_escalation(inner, user, ns, &rules).map_err(|why| forbidden(res, name, &why))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use crate::store::Store;
    use serde_json::json;

    fn rule(v: Value) -> PolicyRule {
        PolicyRule::from_json(&v)
    }

    #[test]
    fn covers_like_upstream() {
        let owner = [
            rule(json!({"apiGroups": [""], "resources": ["services"], "verbs": ["get", "patch"]})),
            rule(json!({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]})),
            rule(
                json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a", "b"], "verbs": ["get"]}),
            ),
            rule(json!({"nonResourceURLs": ["/healthz/*"], "verbs": ["get"]})),
        ];
        let ok = |w: Value| uncovered(&owner, &[rule(w)]).is_empty();
        // No resourceNames on the owner covers any names.
        assert!(ok(
            json!({"apiGroups": [""], "resources": ["services"], "resourceNames": ["web"], "verbs": ["get", "patch"]})
        ));
        assert!(!ok(
            json!({"apiGroups": [""], "resources": ["services"], "verbs": ["get", "delete"]})
        ));
        assert!(ok(
            json!({"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["update"]})
        ));
        assert!(!ok(
            json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["update"]})
        ));
        // Named owner rules cover only those names, never the whole resource.
        assert!(ok(
            json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["b"], "verbs": ["get"]})
        ));
        assert!(!ok(
            json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["c"], "verbs": ["get"]})
        ));
        assert!(!ok(
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
        ));
        // `*` wanted needs `*` held.
        assert!(!ok(
            json!({"apiGroups": [""], "resources": ["services"], "verbs": ["*"]})
        ));
        assert!(ok(
            json!({"nonResourceURLs": ["/healthz/etcd"], "verbs": ["get"]})
        ));
        assert!(!ok(
            json!({"nonResourceURLs": ["/metrics"], "verbs": ["get"]})
        ));
        let all = [rule(
            json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
        )];
        assert!(
            uncovered(
                &all,
                &[rule(
                    json!({"apiGroups": ["x"], "resources": ["y/z"], "verbs": ["*"]})
                )]
            )
            .is_empty()
        );
    }

    #[test]
    fn missing_rules_are_compacted_and_printed_like_upstream() {
        let missing = uncovered(
            &[],
            &[
                rule(
                    json!({"apiGroups": [""], "resources": ["services"], "verbs": ["get", "patch"]}),
                ),
                rule(
                    json!({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"], "verbs": ["get"]}),
                ),
            ],
        );
        let lines: Vec<String> = compact(missing)
            .iter()
            .map(PolicyRule::compact_string)
            .collect();
        assert_eq!(
            lines,
            [
                r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["p"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["services"], Verbs:["get" "patch"]}"#,
            ]
        );
        assert_eq!(quote("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\x01""#);
    }

    use crate::auth::tests::store;

    fn rbac(plural: &str) -> &'static ResourceInfo {
        find(RBAC_GROUP, "v1", plural).unwrap()
    }

    /// Grants `rules` to user `dev` in `ns` (a ClusterRole and a ClusterRoleBinding when `ns`
    /// is empty).
    fn grant(s: &Store, name: &str, ns: &str, rules: Value) {
        let (role, binding, kind) = if ns.is_empty() {
            ("clusterroles", "clusterrolebindings", "ClusterRole")
        } else {
            ("roles", "rolebindings", "Role")
        };
        s.create(
            rbac(role),
            ns,
            json!({"metadata": {"name": name}, "rules": rules}),
            false,
        )
        .unwrap();
        s.create(
            rbac(binding),
            ns,
            json!({"metadata": {"name": name},
                   "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": name},
                   "subjects": [{"kind": "User", "name": "dev"}]}),
            false,
        )
        .unwrap();
    }

    fn dev() -> UserInfo {
        UserInfo::new("dev", &["team-a"])
    }

    fn run(
        s: &Store,
        plural: &str,
        ns: &str,
        url_name: &str,
        new: Value,
        old: Option<Value>,
    ) -> ApiResult<()> {
        let res = rbac(plural);
        s.read(|inner| check(inner, &dev(), res, ns, url_name, &new, old.as_ref()))
    }

    fn role(name: &str, rules: Value) -> Value {
        json!({"metadata": {"name": name}, "rules": rules})
    }

    const SVC_GET_PATCH: &str = r#"[{"apiGroups": [""], "resources": ["services"], "resourceNames": ["web"], "verbs": ["get", "patch"]}]"#;

    #[test]
    fn a_role_needs_the_permissions_it_grants_in_its_namespace() {
        let s = store();
        let wanted: Value = serde_json::from_str(SVC_GET_PATCH).unwrap();
        let e = run(&s, "roles", "team", "", role("r", wanted.clone()), None).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "roles.rbac.authorization.k8s.io \"r\" is forbidden: user \"dev\" (groups=[\"team-a\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"services\"], ResourceNames:[\"web\"], Verbs:[\"get\"]}\n\
             {APIGroups:[\"\"], Resources:[\"services\"], ResourceNames:[\"web\"], Verbs:[\"patch\"]}"
        );
        // Holding one verb less is still not enough.
        grant(
            &s,
            "svc-get",
            "team",
            json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}]),
        );
        let e = run(&s, "roles", "team", "", role("r", wanted.clone()), None).unwrap_err();
        assert!(e.message.ends_with("Verbs:[\"patch\"]}"), "{}", e.message);
        grant(
            &s,
            "svc-patch",
            "team",
            json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]}]),
        );
        run(&s, "roles", "team", "", role("r", wanted.clone()), None).unwrap();
        // Held in `team` only: not in `default`, and not cluster-wide.
        assert_eq!(
            run(&s, "roles", "default", "", role("r", wanted.clone()), None)
                .unwrap_err()
                .code,
            403
        );
        assert_eq!(
            run(&s, "clusterroles", "", "", role("r", wanted), None)
                .unwrap_err()
                .code,
            403
        );
    }

    #[test]
    fn escalate_skips_the_check_and_honours_resource_names() {
        let s = store();
        let big = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
        grant(
            &s,
            "esc-named",
            "team",
            json!([{"apiGroups": [RBAC_GROUP], "resources": ["roles"], "resourceNames": ["r"], "verbs": ["escalate"]}]),
        );
        // A create has no name in the request: a named escalate does not apply.
        assert_eq!(
            run(&s, "roles", "team", "", role("r", big.clone()), None)
                .unwrap_err()
                .code,
            403
        );
        let old = role("r", json!([]));
        run(
            &s,
            "roles",
            "team",
            "r",
            role("r", big.clone()),
            Some(old.clone()),
        )
        .unwrap();
        assert_eq!(
            run(&s, "roles", "team", "q", role("q", big.clone()), Some(old))
                .unwrap_err()
                .code,
            403
        );
        grant(
            &s,
            "esc",
            "team",
            json!([{"apiGroups": [RBAC_GROUP], "resources": ["roles"], "verbs": ["escalate"]}]),
        );
        run(&s, "roles", "team", "", role("x", big), None).unwrap();
    }

    #[test]
    fn gc_only_updates_and_masters_are_not_checked() {
        let s = store();
        let big = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
        let old = json!({"metadata": {"name": "r", "resourceVersion": "5"}, "rules": big});
        let mut new = old.clone();
        new["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}]);
        new["metadata"]["finalizers"] = json!(["x"]);
        run(&s, "roles", "team", "r", new.clone(), Some(old.clone())).unwrap();
        new["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(
            run(&s, "roles", "team", "r", new.clone(), Some(old))
                .unwrap_err()
                .code,
            403
        );
        let admin = UserInfo::new("admin", &["system:masters"]);
        s.read(|inner| check(inner, &admin, rbac("roles"), "team", "", &new, None))
            .unwrap();
        // Other resources are never checked.
        s.read(|inner| {
            check(
                inner,
                &dev(),
                find("", "v1", "services").unwrap(),
                "team",
                "",
                &new,
                None,
            )
        })
        .unwrap();
    }

    #[test]
    fn aggregation_rules_need_everything() {
        let s = store();
        grant(
            &s,
            "esc",
            "",
            json!([{"apiGroups": [RBAC_GROUP], "resources": ["clusterroles"], "verbs": ["create"]},
                   {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
        );
        let mut agg = role("agg", json!([]));
        agg["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]});
        let e = run(&s, "clusterroles", "", "", agg, None).unwrap_err();
        assert!(
            e.message.ends_with(
                "is forbidden: must have cluster-admin privileges to use the aggregationRule"
            ),
            "{}",
            e.message
        );
        run(
            &s,
            "clusterroles",
            "",
            "",
            role(
                "plain",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            ),
            None,
        )
        .unwrap();
    }

    fn binding(name: &str, kind: &str, role: &str) -> Value {
        json!({"metadata": {"name": name},
               "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": "relay", "namespace": "team"}]})
    }

    #[test]
    fn a_binding_needs_the_roles_permissions_or_bind() {
        let s = store();
        let wanted: Value = serde_json::from_str(SVC_GET_PATCH).unwrap();
        s.create(rbac("roles"), "team", role("relay", wanted), false)
            .unwrap();
        // The role must exist (unless bind is allowed).
        let e = run(
            &s,
            "rolebindings",
            "team",
            "",
            binding("b", "Role", "nope"),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (404, "roles.rbac.authorization.k8s.io \"nope\" not found")
        );
        let e = run(
            &s,
            "rolebindings",
            "team",
            "",
            binding("b", "Role", "relay"),
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.message.starts_with(
                "rolebindings.rbac.authorization.k8s.io \"b\" is forbidden: user \"dev\""
            ),
            "{}",
            e.message
        );
        // `bind` on another role name does not help; on this one it does.
        grant(
            &s,
            "bind-other",
            "team",
            json!([{"apiGroups": [RBAC_GROUP], "resources": ["roles"], "resourceNames": ["other"], "verbs": ["bind"]}]),
        );
        assert_eq!(
            run(
                &s,
                "rolebindings",
                "team",
                "",
                binding("b", "Role", "relay"),
                None
            )
            .unwrap_err()
            .code,
            403
        );
        grant(
            &s,
            "bind-relay",
            "team",
            json!([{"apiGroups": [RBAC_GROUP], "resources": ["roles"], "resourceNames": ["relay"], "verbs": ["bind"]}]),
        );
        run(
            &s,
            "rolebindings",
            "team",
            "",
            binding("b", "Role", "relay"),
            None,
        )
        .unwrap();
    }

    #[test]
    fn holding_the_roles_permissions_is_enough_to_bind_it() {
        let s = store();
        let wanted: Value = serde_json::from_str(SVC_GET_PATCH).unwrap();
        s.create(rbac("roles"), "team", role("relay", wanted.clone()), false)
            .unwrap();
        s.create(rbac("clusterroles"), "", role("relay", wanted), false)
            .unwrap();
        grant(
            &s,
            "svc",
            "team",
            json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "patch"]}]),
        );
        run(
            &s,
            "rolebindings",
            "team",
            "",
            binding("b", "Role", "relay"),
            None,
        )
        .unwrap();
        run(
            &s,
            "rolebindings",
            "team",
            "",
            binding("b", "ClusterRole", "relay"),
            None,
        )
        .unwrap();
        // Held in `team` only, so not cluster-wide.
        assert_eq!(
            run(
                &s,
                "clusterrolebindings",
                "",
                "",
                binding("b", "ClusterRole", "relay"),
                None
            )
            .unwrap_err()
            .code,
            403
        );
        assert_eq!(
            run(
                &s,
                "clusterrolebindings",
                "",
                "",
                binding("b", "Role", "relay"),
                None
            )
            .unwrap_err()
            .code,
            422
        );
    }
}
