//! Pod Security admission: the namespace labels `pod-security.kubernetes.io/enforce` and
//! `/warn` (with `-version`) and the checks of the `baseline` and `restricted` Pod Security
//! Standards, with upstream's reasons and wording.
//!
//! Pure functions over JSON: [`policy`] reads a namespace's labels, [`violations`]
//! evaluates a pod spec at a level, [`forbidden_message`] and [`warning`] phrase the
//! result. The store enforces on pod creation (controllers' pods included); the HTTP layer
//! adds `Warning` headers for pods and pod templates.

use serde_json::Value;

use crate::meta;

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No restrictions.
    Privileged,
    /// Known privilege escalations are blocked.
    Baseline,
    /// Hardening best practices.
    Restricted,
}

impl Level {
    /// Parses a label value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// A level and the policy version it was asked for (`latest` or `v1.N`; the simulator
/// applies its one set of checks whatever the version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelVersion {
    /// The level.
    pub level: Level,
    /// The version as labelled.
    pub version: String,
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.version)
    }
}

/// A namespace's Pod Security policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Pods that violate this level are refused.
    pub enforce: LevelVersion,
    /// Pods (and pod templates) that violate this level get a warning.
    pub warn: LevelVersion,
}

const PREFIX: &str = "pod-security.kubernetes.io/";

/// The label keys the simulator reads.
pub const MODES: [&str; 2] = ["enforce", "warn"];

fn mode_of(labels: &Value, mode: &str) -> LevelVersion {
    let label = |k: &str| labels.get(k).and_then(Value::as_str).unwrap_or("");
    // An unparsable level counts as the strictest, as upstream does.
    let level = match label(&format!("{PREFIX}{mode}")) {
        "" => Level::Privileged,
        v => Level::parse(v).unwrap_or(Level::Restricted),
    };
    let version = match label(&format!("{PREFIX}{mode}-version")) {
        "" => "latest".to_string(),
        v => v.to_string(),
    };
    LevelVersion { level, version }
}

/// The policy of a namespace object (privileged everywhere without labels).
pub fn policy(namespace: &Value) -> Policy {
    let labels = meta::metadata(namespace)
        .get("labels")
        .cloned()
        .unwrap_or(Value::Null);
    Policy {
        enforce: mode_of(&labels, "enforce"),
        warn: mode_of(&labels, "warn"),
    }
}

/// Problems with the Pod Security labels of a namespace (bad level or version), as
/// `(label key, value, allowed)`.
pub fn label_errors(namespace: &Value) -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    let Some(labels) = meta::metadata(namespace)
        .get("labels")
        .and_then(Value::as_object)
    else {
        return out;
    };
    for (k, v) in labels {
        let Some(rest) = k.strip_prefix(PREFIX) else {
            continue;
        };
        let v = v.as_str().unwrap_or("");
        let (mode, is_version) = match rest.strip_suffix("-version") {
            Some(m) => (m, true),
            None => (rest, false),
        };
        if !["enforce", "warn", "audit"].contains(&mode) {
            continue;
        }
        if is_version {
            let ok = v == "latest"
                || v.strip_prefix("v1.")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                out.push((k.clone(), v.to_string(), "must be \"latest\" or \"v1.x\""));
            }
        } else if Level::parse(v).is_none() {
            out.push((
                k.clone(),
                v.to_string(),
                "must be one of privileged, baseline, restricted",
            ));
        }
    }
    out
}

fn pluralize(one: &'static str, many: &'static str, n: usize) -> &'static str {
    if n == 1 { one } else { many }
}

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect()
}

fn name(c: &Value) -> String {
    meta::str_at(c, &["name"]).to_string()
}

fn sc<'a>(c: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut v = c.get("securityContext")?;
    for p in path {
        v = v.get(*p)?;
    }
    Some(v)
}

fn containers_where(spec: &Value, f: impl Fn(&Value) -> bool) -> Vec<String> {
    containers(spec)
        .into_iter()
        .filter(|c| f(c))
        .map(name)
        .collect()
}

fn who(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// One failed check: its reason and detail, as upstream words them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Short reason (`allowPrivilegeEscalation != false`).
    pub reason: &'static str,
    /// What to change (`container "c" must set ...`), possibly empty.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            f.write_str(self.reason)
        } else {
            write!(f, "{} ({})", self.reason, self.detail)
        }
    }
}

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn baseline(spec: &Value, restricted: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    // capabilities_baseline
    let mut caps: Vec<String> = Vec::new();
    let adders = containers_where(spec, |c| {
        strs(sc(c, &["capabilities", "add"]))
            .iter()
            .any(|a| !BASELINE_CAPS.contains(&a.as_str()))
    });
    for c in containers(spec) {
        for a in strs(sc(c, &["capabilities", "add"])) {
            if !BASELINE_CAPS.contains(&a.as_str()) && !caps.contains(&a) {
                caps.push(a);
            }
        }
    }
    caps.sort();
    if !adders.is_empty() {
        out.push(Violation {
            reason: "non-default capabilities",
            detail: format!(
                "{} must not include {} in securityContext.capabilities.add",
                who(&adders),
                join_quote(&caps)
            ),
        });
    }
    // hostNamespaces
    let host: Vec<&str> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|k| spec.get(*k).and_then(Value::as_bool) == Some(true))
        .collect();
    if !host.is_empty() {
        out.push(Violation {
            reason: "host namespaces",
            detail: host
                .iter()
                .map(|k| format!("{k}=true"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    // hostPathVolumes (replaced by restrictedVolumes at restricted)
    let volumes: Vec<&Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let host_paths: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(|v| name(v))
        .collect();
    if !host_paths.is_empty() && !restricted {
        out.push(Violation {
            reason: "hostPath volumes",
            detail: format!(
                "{} {}",
                pluralize("volume", "volumes", host_paths.len()),
                join_quote(&host_paths)
            ),
        });
    }
    // hostPorts
    let mut ports: Vec<String> = Vec::new();
    let port_users = containers_where(spec, |c| {
        c.get("ports").and_then(Value::as_array).is_some_and(|ps| {
            ps.iter()
                .any(|p| p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0)
        })
    });
    for c in containers(spec) {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let hp = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if hp != 0 && !ports.contains(&hp.to_string()) {
                ports.push(hp.to_string());
            }
        }
    }
    if !port_users.is_empty() {
        out.push(Violation {
            reason: "hostPort",
            detail: format!(
                "{} {} {} {}",
                who(&port_users),
                pluralize("uses", "use", port_users.len()),
                pluralize("hostPort", "hostPorts", ports.len()),
                ports.join(", ")
            ),
        });
    }
    // privileged
    let privileged = containers_where(spec, |c| {
        sc(c, &["privileged"]).and_then(Value::as_bool) == Some(true)
    });
    if !privileged.is_empty() {
        out.push(Violation {
            reason: "privileged",
            detail: format!(
                "{} must not set securityContext.privileged=true",
                who(&privileged)
            ),
        });
    }
    // procMount
    let unmasked = containers_where(spec, |c| {
        sc(c, &["procMount"])
            .and_then(Value::as_str)
            .is_some_and(|p| p != "Default")
    });
    if !unmasked.is_empty() {
        out.push(Violation {
            reason: "procMount",
            detail: format!(
                "{} must not set securityContext.procMount to \"Unmasked\"",
                who(&unmasked)
            ),
        });
    }
    // seccompProfile_baseline (replaced by seccompProfile_restricted at restricted)
    if !restricted {
        let mut setters = Vec::new();
        if meta::str_at(spec, &["securityContext", "seccompProfile", "type"]) == "Unconfined" {
            setters.push("pod".to_string());
        }
        let bad = containers_where(spec, |c| {
            sc(c, &["seccompProfile", "type"]).and_then(Value::as_str) == Some("Unconfined")
        });
        if !bad.is_empty() {
            setters.push(who(&bad));
        }
        if !setters.is_empty() {
            out.push(Violation {
                reason: "seccompProfile",
                detail: format!(
                    "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                    setters.join(" and ")
                ),
            });
        }
    }
    // sysctls
    let sysctls: Vec<String> = spec
        .pointer("/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| meta::str_at(s, &["name"]).to_string())
        .filter(|n| !SAFE_SYSCTLS.contains(&n.as_str()))
        .collect();
    if !sysctls.is_empty() {
        out.push(Violation {
            reason: "forbidden sysctls",
            detail: sysctls.join(", "),
        });
    }
    out
}

fn restricted_checks(spec: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    // allowPrivilegeEscalation
    let escalating = containers_where(spec, |c| {
        sc(c, &["allowPrivilegeEscalation"]).and_then(Value::as_bool) != Some(false)
    });
    if !escalating.is_empty() {
        out.push(Violation {
            reason: "allowPrivilegeEscalation != false",
            detail: format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                who(&escalating)
            ),
        });
    }
    // capabilities_restricted
    let missing_drop = containers_where(spec, |c| {
        !strs(sc(c, &["capabilities", "drop"]))
            .iter()
            .any(|d| d == "ALL")
    });
    let adding = containers_where(spec, |c| {
        strs(sc(c, &["capabilities", "add"]))
            .iter()
            .any(|a| a != "NET_BIND_SERVICE")
    });
    let mut added: Vec<String> = containers(spec)
        .into_iter()
        .flat_map(|c| strs(sc(c, &["capabilities", "add"])))
        .filter(|a| a != "NET_BIND_SERVICE")
        .collect();
    added.sort();
    added.dedup();
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            who(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            who(&adding),
            join_quote(&added)
        ));
    }
    if !details.is_empty() {
        out.push(Violation {
            reason: "unrestricted capabilities",
            detail: details.join("; "),
        });
    }
    // restrictedVolumes
    let mut bad_volumes = Vec::new();
    let mut bad_types: Vec<String> = Vec::new();
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(o) = v.as_object() else { continue };
        let ty = o
            .iter()
            .find(|(k, x)| k.as_str() != "name" && !x.is_null())
            .map(|(k, _)| k.as_str())
            .unwrap_or("unknown");
        if !RESTRICTED_VOLUME_TYPES.contains(&ty) {
            bad_volumes.push(name(v));
            if !bad_types.iter().any(|t| t == ty) {
                bad_types.push(ty.to_string());
            }
        }
    }
    bad_types.sort();
    if !bad_volumes.is_empty() {
        out.push(Violation {
            reason: "restricted volume types",
            detail: format!(
                "{} {} {} {} {}",
                pluralize("volume", "volumes", bad_volumes.len()),
                join_quote(&bad_volumes),
                pluralize("uses", "use", bad_volumes.len()),
                pluralize(
                    "restricted volume type",
                    "restricted volume types",
                    bad_types.len()
                ),
                join_quote(&bad_types)
            ),
        });
    }
    // runAsNonRoot
    let pod_nonroot = spec
        .pointer("/securityContext/runAsNonRoot")
        .and_then(Value::as_bool);
    let mut setters = Vec::new();
    if pod_nonroot == Some(false) {
        setters.push("pod".to_string());
    }
    let explicit_bad = containers_where(spec, |c| {
        sc(c, &["runAsNonRoot"]).and_then(Value::as_bool) == Some(false)
    });
    let implicit_bad = containers_where(spec, |c| {
        sc(c, &["runAsNonRoot"]).and_then(Value::as_bool).is_none() && pod_nonroot != Some(true)
    });
    if !explicit_bad.is_empty() {
        setters.push(who(&explicit_bad));
    }
    if !setters.is_empty() {
        out.push(Violation {
            reason: "runAsNonRoot != true",
            detail: format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        });
    } else if !implicit_bad.is_empty() {
        out.push(Violation {
            reason: "runAsNonRoot != true",
            detail: format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                who(&implicit_bad)
            ),
        });
    }
    // runAsUser
    let mut root_setters = Vec::new();
    if spec
        .pointer("/securityContext/runAsUser")
        .and_then(Value::as_i64)
        == Some(0)
    {
        root_setters.push("pod".to_string());
    }
    let root = containers_where(spec, |c| {
        sc(c, &["runAsUser"]).and_then(Value::as_i64) == Some(0)
    });
    if !root.is_empty() {
        root_setters.push(who(&root));
    }
    if !root_setters.is_empty() {
        out.push(Violation {
            reason: "runAsUser=0",
            detail: format!("{} must not set runAsUser=0", root_setters.join(" and ")),
        });
    }
    // seccompProfile_restricted
    let valid = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let pod_type = spec
        .pointer("/securityContext/seccompProfile/type")
        .and_then(Value::as_str);
    let mut setters = Vec::new();
    let mut bad_values: Vec<String> = Vec::new();
    if let Some(t) = pod_type
        && !valid(t)
    {
        setters.push("pod".to_string());
        bad_values.push(t.to_string());
    }
    let pod_set = pod_type.is_some_and(valid);
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match sc(c, &["seccompProfile"]).filter(|v| !v.is_null()) {
            Some(p) => {
                let t = meta::str_at(p, &["type"]);
                if !valid(t) {
                    explicit.push(name(c));
                    if !bad_values.iter().any(|b| b == t) {
                        bad_values.push(t.to_string());
                    }
                }
            }
            None if !pod_set => implicit.push(name(c)),
            None => {}
        }
    }
    bad_values.sort();
    if !explicit.is_empty() {
        setters.push(who(&explicit));
    }
    if !setters.is_empty() {
        out.push(Violation {
            reason: "seccompProfile",
            detail: format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&bad_values)
            ),
        });
    } else if !implicit.is_empty() {
        out.push(Violation {
            reason: "seccompProfile",
            detail: format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                who(&implicit)
            ),
        });
    }
    out
}

/// The checks a pod spec fails at `level`: baseline checks first, then restricted ones,
/// each group in upstream's order.
pub fn violations(level: Level, spec: &Value) -> Vec<Violation> {
    match level {
        Level::Privileged => Vec::new(),
        Level::Baseline => baseline(spec, false),
        Level::Restricted => {
            let mut v = baseline(spec, true);
            v.extend(restricted_checks(spec));
            v
        }
    }
}

fn joined(vs: &[Violation]) -> String {
    vs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The 403 message for a pod that the enforced level refuses, or `None` when it passes.
pub fn forbidden_message(policy: &Policy, pod_name: &str, spec: &Value) -> Option<String> {
    let vs = violations(policy.enforce.level, spec);
    (!vs.is_empty()).then(|| {
        format!(
            "pods \"{pod_name}\" is forbidden: violates PodSecurity \"{}\": {}",
            policy.enforce,
            joined(&vs)
        )
    })
}

/// The warnings for a pod (`template: false`: the `warn` level) or a workload's pod
/// template (`template: true`: the `enforce` and `warn` levels, since enforcement only
/// happens when its pods are created).
pub fn warning(policy: &Policy, spec: &Value, template: bool) -> Vec<String> {
    let mut levels = Vec::new();
    if template {
        levels.push(&policy.enforce);
    }
    if !levels
        .iter()
        .any(|l| l.level == policy.warn.level && l.version == policy.warn.version)
    {
        levels.push(&policy.warn);
    }
    levels
        .into_iter()
        .filter_map(|l| {
            let vs = violations(l.level, spec);
            (!vs.is_empty()).then(|| format!("would violate PodSecurity \"{l}\": {}", joined(&vs)))
        })
        .collect()
}

/// The pod spec inside an object of a workload kind (`Pod` itself, or a template), and
/// whether it is a template.
pub fn pod_spec_of<'a>(kind: &str, obj: &'a Value) -> Option<(&'a Value, bool)> {
    match kind {
        "Pod" => obj.get("spec").map(|s| (s, false)),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => obj.pointer("/spec/template/spec").map(|s| (s, true)),
        "CronJob" => obj
            .pointer("/spec/jobTemplate/spec/template/spec")
            .map(|s| (s, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(labels: Value) -> Value {
        json!({"metadata": {"name": "n", "labels": labels}})
    }

    fn hardened() -> Value {
        json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "relay", "image": "i",
                "ports": [{"containerPort": 8080}],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "x"}}]})
    }

    #[test]
    fn labels_make_the_policy() {
        let p = policy(&ns(json!({})));
        assert_eq!(p.enforce.level, Level::Privileged);
        let p = policy(&ns(
            json!({"pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "baseline", "pod-security.kubernetes.io/warn-version": "v1.30"}),
        ));
        assert_eq!(p.enforce.to_string(), "restricted:latest");
        assert_eq!(p.warn.to_string(), "baseline:v1.30");
        assert!(
            label_errors(&ns(
                json!({"pod-security.kubernetes.io/enforce": "restricted"})
            ))
            .is_empty()
        );
        let errs = label_errors(&ns(json!({"pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/warn-version": "1.30"})));
        assert_eq!(errs.len(), 2);
    }

    #[test]
    fn the_relay_pod_passes_restricted() {
        assert!(violations(Level::Restricted, &hardened()).is_empty());
        assert!(violations(Level::Baseline, &hardened()).is_empty());
    }

    #[test]
    fn a_plain_pod_fails_restricted_with_upstreams_message() {
        let spec = json!({"containers": [{"name": "c", "image": "i"}]});
        assert!(violations(Level::Baseline, &spec).is_empty());
        let p = policy(&ns(
            json!({"pod-security.kubernetes.io/enforce": "restricted"}),
        ));
        assert_eq!(
            forbidden_message(&p, "x", &spec).unwrap(),
            "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn each_restricted_rule_is_checked() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "/containers/0/securityContext/allowPrivilegeEscalation",
                json!(true),
                "allowPrivilegeEscalation != false",
            ),
            (
                "/containers/0/securityContext/capabilities/drop",
                json!(["NET_RAW"]),
                "unrestricted capabilities",
            ),
            (
                "/containers/0/securityContext/capabilities/add",
                json!(["SYS_ADMIN"]),
                "non-default capabilities",
            ),
            (
                "/containers/0/securityContext/capabilities/add",
                json!(["CHOWN"]),
                "unrestricted capabilities",
            ),
            (
                "/securityContext/runAsNonRoot",
                json!(false),
                "runAsNonRoot != true",
            ),
            ("/securityContext/runAsUser", json!(0), "runAsUser=0"),
            (
                "/securityContext/seccompProfile/type",
                json!("Unconfined"),
                "seccompProfile",
            ),
            ("/hostNetwork", json!(true), "host namespaces"),
            ("/hostPID", json!(true), "host namespaces"),
            ("/hostIPC", json!(true), "host namespaces"),
            (
                "/containers/0/securityContext/privileged",
                json!(true),
                "privileged",
            ),
            ("/containers/0/ports/0/hostPort", json!(80), "hostPort"),
            (
                "/volumes/0",
                json!({"name": "h", "hostPath": {"path": "/"}}),
                "restricted volume types",
            ),
            (
                "/containers/0/securityContext/procMount",
                json!("Unmasked"),
                "procMount",
            ),
            (
                "/securityContext/sysctls",
                json!([{"name": "net.core.somaxconn", "value": "1"}]),
                "forbidden sysctls",
            ),
        ];
        for (path, value, reason) in cases {
            let mut spec = hardened();
            set_path(&mut spec, path, value);
            let vs = violations(Level::Restricted, &spec);
            assert!(vs.iter().any(|v| v.reason == reason), "{path}: {vs:?}");
        }
    }

    /// Sets a JSON-pointer path, creating missing object members on the way.
    fn set_path(v: &mut Value, path: &str, value: Value) {
        let mut cur = v;
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            cur = match cur {
                Value::Array(a) => &mut a[seg.parse::<usize>().unwrap()],
                Value::Object(o) => {
                    o.entry(seg.to_string())
                        .or_insert(if last { Value::Null } else { json!({}) })
                }
                _ => unreachable!("{path}"),
            };
        }
        *cur = value;
    }

    #[test]
    fn baseline_allows_what_restricted_refuses_but_not_host_access() {
        let spec = json!({"containers": [{"name": "c", "image": "i",
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}]});
        let vs = violations(Level::Baseline, &spec);
        let text = joined(&vs);
        assert_eq!(
            text,
            "non-default capabilities (container \"c\" must not include \"NET_ADMIN\" in securityContext.capabilities.add), hostPath volumes (volume \"h\")"
        );
        let r = joined(&violations(Level::Restricted, &spec));
        assert!(
            r.contains(
                "restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")"
            ),
            "{r}"
        );
        assert!(
            !r.contains("hostPath volumes"),
            "overridden at restricted: {r}"
        );
    }

    #[test]
    fn templates_warn_for_enforce_and_warn_levels() {
        let spec = json!({"containers": [{"name": "c", "image": "i"}]});
        let p = policy(&ns(
            json!({"pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted"}),
        ));
        let w = warning(&p, &spec, true);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with(
            "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation"
        ));
        assert!(warning(&p, &hardened(), true).is_empty());
        // A pod gets only the warn level's warning (enforce refuses it instead).
        let p = policy(&ns(
            json!({"pod-security.kubernetes.io/warn": "restricted"}),
        ));
        assert_eq!(warning(&p, &spec, false).len(), 1);
        assert!(forbidden_message(&p, "x", &spec).is_none());
    }
}
