//! Legacy (unaggregated) discovery documents: `/api`, `/api/v1`, `/apis`, `/apis/<g>`,
//! `/apis/<g>/<v>`. Clients that ask for aggregated discovery see a plain JSON answer and
//! fall back to these, as they do with older API servers.

use serde_json::{Value, json};

use crate::resources::{self, RESOURCES, ResourceInfo};

/// Verbs of each subresource.
fn sub_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "status" | "scale" => &["get", "patch", "update"],
        "finalize" => &["update"],
        "portforward" | "exec" => &["create", "get"],
        "log" => &["get"],
        "binding" | "eviction" | "token" => &["create"],
        _ => &["get"],
    }
}

fn sub_kind(res: &ResourceInfo, sub: &str) -> (&'static str, &'static str, &'static str) {
    // (group, version, kind) of the subresource's object
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "portforward" => ("", "", "PodPortForwardOptions"),
        "exec" => ("", "", "PodExecOptions"),
        "log" => ("", "", "Pod"),
        "binding" => ("", "", "Binding"),
        "eviction" => ("policy", "v1", "Eviction"),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
        _ => ("", "", res.kind),
    }
}

/// `APIResourceList` for one group/version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let list: Vec<&ResourceInfo> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if list.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for r in list {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        out.push(entry);
        for sub in r.subresources {
            let (g, v, k) = sub_kind(r, sub);
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": sub_verbs(sub),
            });
            if !g.is_empty() {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            out.push(e);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": out,
    }))
}

/// `APIVersions` for `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `APIGroupList` for `/apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .map(|(g, v)| group_doc(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `APIGroup` for `/apis/<group>`.
pub fn group(group: &str) -> Option<Value> {
    let (g, v) = resources::groups().into_iter().find(|(g, _)| *g == group)?;
    let mut doc = group_doc(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_pods_and_subresources() {
        let l = resource_list("", "v1").unwrap();
        assert_eq!(l["groupVersion"], "v1");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/portforward"));
        assert!(resource_list("nope", "v1").is_none());
        assert!(group("apps").is_some());
        assert!(group_list()["groups"].as_array().unwrap().len() >= 5);
    }
}
