//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test, one
//! per parser that takes untrusted input. Each must return normally for any input; a panic
//! is a bug.

use kubelan_apisim::patch::{self, PatchKind};
use kubelan_apisim::selector::{FieldSelector, LabelSelector};
use serde_json::json;

use crate::config::LabConfig;

/// Label and field selector parsers (query strings from any API client).
pub fn selectors(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = LabelSelector::from_json(&v);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = LabelSelector::parse(text) {
        // The canonical form parses back to the same selector.
        let again = LabelSelector::parse(&sel.to_string()).expect("canonical form parses");
        assert_eq!(again.to_string(), sel.to_string());
        let _ = sel.matches_object(&json!({"metadata": {"labels": {"app": "web", "tier": "a"}}}));
    }
    if let Ok(sel) = FieldSelector::parse(text) {
        let _ = sel.matches(&json!({"metadata": {"name": "x"}, "spec": {"nodeName": "node1"}}));
        let _ = sel.single_name();
        let _ = sel.exact_match("metadata.name");
    }
}

/// PATCH bodies: the first byte picks the patch type, the rest is the body, applied to
/// realistic objects of several kinds.
pub fn patch(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = match selector % 4 {
        0 => PatchKind::Json,
        1 => PatchKind::Merge,
        2 => PatchKind::StrategicMerge,
        _ => PatchKind::Apply,
    };
    let Ok(p) = patch::parse_body(kind, body) else {
        return;
    };
    for object_kind in ["Pod", "Deployment", "Service", "Unknown"] {
        let mut target = json!({
            "apiVersion": "apps/v1", "kind": object_kind,
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "ports": [{"port": 80}], "template": {"spec": {"containers": [
                {"name": "web", "image": "x", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]}
            ]}}},
        });
        let _ = match kind {
            PatchKind::Json => patch::json_patch(&mut target, &p),
            PatchKind::Merge => {
                patch::merge_patch(&mut target, &p);
                Ok(())
            }
            PatchKind::StrategicMerge => patch::strategic_merge_patch(&mut target, &p, object_kind),
            PatchKind::Apply => patch::apply_patch(&mut target, &p, object_kind),
        };
    }
}

/// The lab configuration file: parse, validate, round-trip, plan.
pub fn lab_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = LabConfig::from_toml_str(text) {
        let again = LabConfig::from_toml_str(&cfg.to_toml()).expect("a valid config round-trips");
        assert_eq!(again, cfg);
        let _ = crate::topology::plan(&cfg);
    }
}

/// The DNS answer parser the lab uses to check cluster DNS (the query id is taken from the
/// first two bytes, so matching answers are reachable).
pub fn dns_answer(data: &[u8]) {
    let id = u16::from_be_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    let _ = crate::daemon::parse_a_answers(data, id);
}

/// Protobuf request bodies (the few kinds kubectl sends as protobuf).
pub fn protobuf(data: &[u8]) {
    let _ = kubelan_apisim::protobuf::decode(data);
}

/// `/proc/<pid>/stat` lines, whose command name may hold spaces and parentheses, as
/// `lab exec` reads its own to tell whether a Ctrl-C came from its terminal.
pub fn proc_stat(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(fg) = crate::lifecycle::foreground_from_stat(&text) {
        // The verdict depends only on the fields after the command name.
        let rest = &text[text.rfind(')').expect("fields follow a name") + 1..];
        assert_eq!(
            crate::lifecycle::foreground_from_stat(&format!("1 (renamed) {rest}")),
            Some(fg)
        );
    }
}

/// Object bodies through admission: the first byte picks the kind (Pod, Job, Namespace,
/// ConfigMap, Deployment), the rest is the JSON body, created in a namespace that enforces
/// the restricted Pod Security level; the Pod Security checks also run on it directly.
pub fn admission(data: &[u8]) {
    use kubelan_apisim::podsecurity::{self, Level};
    use kubelan_apisim::{ClusterConfig, Store, resources};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(obj) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let (group, plural) = [
        ("", "pods"),
        ("batch", "jobs"),
        ("", "namespaces"),
        ("", "configmaps"),
        ("apps", "deployments"),
    ][usize::from(selector) % 5];
    let store = Store::new(ClusterConfig {
        service_cidr: "172.17.16.0/20".parse().expect("literal CIDR"),
        node_port_range: (30000, 32767),
        cluster_domain: "cluster.local".into(),
    });
    let ns = resources::find("", "v1", "namespaces").expect("namespaces");
    store
        .create(
            ns,
            "",
            json!({"metadata": {"name": "default", "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "baseline"}}}),
            false,
        )
        .expect("a valid namespace");
    let res = resources::find(group, "v1", plural).expect("a served resource");
    let _ = store.create(res, "default", obj.clone(), false);
    for level in [Level::Privileged, Level::Baseline, Level::Restricted] {
        let _ = podsecurity::violations(level, obj.get("spec").unwrap_or(&obj));
    }
    let policy = podsecurity::policy(&obj);
    let _ = podsecurity::label_errors(&obj);
    if let Some((spec, template)) = podsecurity::pod_spec_of(res.kind, &obj) {
        let _ = podsecurity::warning(&policy, spec, template);
        let _ = podsecurity::forbidden_message(&policy, "x", spec);
    }
}
