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

/// The resources of one group/version that Kubernetes `1.<minor>` serves, or `None` when
/// it serves none.
fn group_version(group: &str, version: &str, minor: u32) -> Option<Vec<&'static ResourceInfo>> {
    let list: Vec<&ResourceInfo> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version && r.served_in(minor))
        .collect();
    (!list.is_empty()).then_some(list)
}

/// `APIResourceList` for one group/version, as Kubernetes `1.<minor>` serves it.
pub fn resource_list(group: &str, version: &str, minor: u32) -> Option<Value> {
    let list = group_version(group, version, minor)?;
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

/// `APIGroupList` for `/apis`, as Kubernetes `1.<minor>` serves it.
pub fn group_list(minor: u32) -> Value {
    let groups: Vec<Value> = resources::groups_in(minor)
        .into_iter()
        .map(|(g, v)| group_doc(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `APIGroup` for `/apis/<group>`, as Kubernetes `1.<minor>` serves it.
pub fn group(group: &str, minor: u32) -> Option<Value> {
    let (g, v) = resources::groups_in(minor)
        .into_iter()
        .find(|(g, _)| *g == group)?;
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
        let l = resource_list("", "v1", 33).unwrap();
        assert_eq!(l["groupVersion"], "v1");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/portforward"));
        assert!(resource_list("nope", "v1", 33).is_none());
        assert!(group("apps", 33).is_some());
        assert!(group_list(33)["groups"].as_array().unwrap().len() >= 5);
        // ServiceCIDRs (GA in 1.33) are not served by older versions.
        assert!(resource_list("networking.k8s.io", "v1", 33).is_some());
        assert!(resource_list("networking.k8s.io", "v1", 32).is_none());
        assert!(group("networking.k8s.io", 32).is_none());
    }
}

/// `/openapi/v3`: one entry per group/version Kubernetes `1.<minor>` serves, pointing at
/// its document.
pub fn openapi_v3_root(minor: u32) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(resources::groups_in(minor));
    for (g, v) in gvs {
        let key = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", crate::meta::short_hash(&json!(key)))}),
        );
    }
    json!({"paths": paths})
}

/// Content type of the OpenAPI v2 document in protobuf, which kubectl before 1.27 asks for.
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The OpenAPI v2 document (`/openapi/v2`): a title and a version, no paths and no
/// definitions. kubectl up to 1.26 fetches it for client-side validation before `apply` or
/// `create`, and skips validation of a kind the document does not describe, leaving it to
/// the server, as it does with the v3 documents here. A 404 would instead fail every
/// `kubectl apply` of those versions (Debian 12 ships kubectl 1.20).
pub fn openapi_v2_json(minor: u32) -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{minor}.0")},
        "paths": {},
        "definitions": {},
    })
}

/// [`openapi_v2_json`] as the protobuf message `openapi.v2.Document` (gnostic): field 1
/// `swagger` and field 2 `info` (`title` = 1, `version` = 2); empty repeated fields are
/// absent on the wire.
pub fn openapi_v2_protobuf(minor: u32) -> Vec<u8> {
    fn string(field: u8, s: &[u8], out: &mut Vec<u8>) {
        // Every string here is shorter than 128 bytes: its length is a one-byte varint.
        out.push(field << 3 | 2);
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }
    let mut info = Vec::new();
    string(1, b"Kubernetes", &mut info);
    string(2, format!("v1.{minor}.0").as_bytes(), &mut info);
    let mut doc = Vec::new();
    string(1, b"2.0", &mut doc);
    string(2, &info, &mut doc);
    doc
}

/// The OpenAPI v3 document of one group/version, as far as the simulator describes it:
/// every resource path with its operations and query parameters (clients such as kubectl
/// look here to learn that PATCH accepts `fieldValidation`, and then leave validation to
/// the server). Object schemas are not published.
pub fn openapi_v3_doc(group: &str, version: &str, minor: u32) -> Option<Value> {
    let list = group_version(group, version, minor)?;
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let q = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true});
    let write_params = || json!([q("dryRun"), q("fieldManager"), q("fieldValidation")]);
    let mut paths = serde_json::Map::new();
    for r in list {
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let op = |action: &str, params: Value| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {"description": "OK"}}});
        let (collection, item) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{base}/{}", r.plural),
                format!("{base}/{}/{{name}}", r.plural),
            )
        };
        let mut coll = serde_json::Map::new();
        coll.insert("post".into(), op("post", write_params()));
        if r.is_stored() {
            coll.insert(
                "get".into(),
                op(
                    "list",
                    json!([
                        q("labelSelector"),
                        q("fieldSelector"),
                        q("resourceVersion"),
                        q("watch"),
                        q("limit")
                    ]),
                ),
            );
            coll.insert(
                "delete".into(),
                op(
                    "deletecollection",
                    json!([q("labelSelector"), q("fieldSelector"), q("dryRun")]),
                ),
            );
            let mut patch_params = write_params();
            if let Some(a) = patch_params.as_array_mut() {
                a.push(q("force"));
            }
            paths.insert(
                item,
                json!({
                    "get": op("get", json!([])),
                    "put": op("put", write_params()),
                    "patch": op("patch", patch_params),
                    "delete": op("delete", json!([q("dryRun"), q("gracePeriodSeconds"), q("propagationPolicy")])),
                }),
            );
        }
        paths.insert(collection, Value::Object(coll));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kubelan lab simulator)", "version": format!("{group}/{version}")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod openapi_tests {
    use super::*;

    #[test]
    fn patch_declares_field_validation() {
        let root = openapi_v3_root(33);
        assert!(
            root["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        let doc = openapi_v3_doc("apps", "v1", 33).unwrap();
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            p["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "fieldValidation")
        );
        assert!(openapi_v3_doc("nope", "v1", 33).is_none());
    }

    #[test]
    fn openapi_v2_protobuf_is_the_json_document_on_the_wire() {
        let json = openapi_v2_json(20);
        assert_eq!(json["info"]["version"], "v1.20.0");
        let mut want = vec![0x0a, 3];
        want.extend_from_slice(b"2.0");
        want.extend_from_slice(&[0x12, 21, 0x0a, 10]);
        want.extend_from_slice(b"Kubernetes");
        want.extend_from_slice(&[0x12, 7]);
        want.extend_from_slice(b"v1.20.0");
        assert_eq!(openapi_v2_protobuf(20), want);
    }
}
