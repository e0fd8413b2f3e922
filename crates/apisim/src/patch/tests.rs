use super::strategic::identity;
use super::*;
use serde_json::json;

fn smp(mut target: Value, patch: Value, kind: &str) -> Value {
    strategic_merge_patch(&mut target, &patch, kind)
        .unwrap_or_else(|e| panic!("patch {patch} failed: {e}"));
    target
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "nginx:1.25",
                         "env": [{"name": "A", "value": "1"}],
                         "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                        {"name": "sidecar", "image": "busybox:1.36"}
                    ],
                    "tolerations": [{"key": "a", "operator": "Exists"}]
                }
            }
        }
    })
}

fn containers(obj: &Value) -> &Vec<Value> {
    obj.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .expect("containers")
}

fn names(list: &[Value], key: &str) -> Vec<String> {
    list.iter()
        .map(|v| {
            v.get(key)
                .map(|k| identity(k).trim_matches('"').to_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn content_types() {
    use PatchKind::*;
    let cases = [
        ("application/json-patch+json", Some(Json)),
        ("application/merge-patch+json", Some(Merge)),
        (
            "application/strategic-merge-patch+json",
            Some(StrategicMerge),
        ),
        ("application/apply-patch+yaml", Some(Apply)),
        ("application/apply-patch+yaml; charset=utf-8", Some(Apply)),
        (" Application/Merge-Patch+JSON ;x=y", Some(Merge)),
        ("application/apply-patch+cbor", None),
        ("application/json", None),
        ("", None),
        (";", None),
    ];
    for (ct, want) in cases {
        assert_eq!(PatchKind::from_content_type(ct), want, "{ct:?}");
    }
    for kind in [Json, Merge, StrategicMerge, Apply] {
        assert_eq!(
            PatchKind::from_content_type(kind.content_type()),
            Some(kind)
        );
    }
}

#[test]
fn apply_adds_env_var_to_container() {
    // What client-side `kubectl apply` sends after adding B=2 to the app container.
    let patch = json!({
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{
                "name": "app",
                "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                "env": [{"name": "B", "value": "2"}]
            }]
        }}}
    });
    let out = smp(deployment(), patch, "Deployment");
    let app = &containers(&out)[0];
    assert_eq!(
        app["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(app["image"], "nginx:1.25");
    assert_eq!(names(containers(&out), "name"), ["app", "sidecar"]);
}

#[test]
fn image_change_in_named_container() {
    // `kubectl set image` / `kubectl patch` with a strategic merge patch.
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "busybox:1.37"}
    ]}}}});
    let out = smp(deployment(), patch, "Deployment");
    let list = containers(&out);
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["image"], "busybox:1.37");
    assert_eq!(list[0]["image"], "nginx:1.25");
    assert_eq!(list[0]["env"], json!([{"name": "A", "value": "1"}]));
}

#[test]
fn delete_container_with_directive() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [{"name": "sidecar", "$patch": "delete"}]
    }}}});
    let out = smp(deployment(), patch, "Deployment");
    assert_eq!(names(containers(&out), "name"), ["app"]);
}

#[test]
fn new_container_without_order_directive_goes_first() {
    // Kubernetes puts patch-only elements ahead of live-only ones it cannot place relative
    // to them; kubectl apply avoids this by sending $setElementOrder.
    let pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "x"}]}});
    let out = smp(
        pod.clone(),
        json!({"spec": {"containers": [{"name": "b", "image": "y"}]}}),
        "Pod",
    );
    assert_eq!(
        names(out["spec"]["containers"].as_array().unwrap(), "name"),
        ["b", "a"]
    );
    let out = smp(
        pod,
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "y"}]
        }}),
        "Pod",
    );
    assert_eq!(
        names(out["spec"]["containers"].as_array().unwrap(), "name"),
        ["a", "b"]
    );
}

#[test]
fn set_element_order_reorders() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]
    }}}});
    let out = smp(deployment(), patch, "Deployment");
    assert_eq!(names(containers(&out), "name"), ["sidecar", "app"]);

    // Elements the order list does not mention keep their live position.
    let live = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}
    ]}}}});
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "d"}, {"name": "b"}, {"name": "e"}],
        "containers": [{"name": "e", "image": "new"}]
    }}}});
    let out = smp(live, patch, "Deployment");
    // a and c come before d in the live list, so they stay ahead of it.
    assert_eq!(names(containers(&out), "name"), ["a", "c", "d", "b", "e"]);
}

#[test]
fn merged_list_order_without_directive() {
    let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
    // Patch elements follow the patch order; live-only ones keep their place.
    let out = smp(
        live.clone(),
        json!({"spec": {"containers": [{"name": "c", "x": 1}, {"name": "d"}]}}),
        "Pod",
    );
    assert_eq!(
        names(out["spec"]["containers"].as_array().unwrap(), "name"),
        ["a", "b", "c", "d"]
    );
    let out = smp(
        live,
        json!({"spec": {"containers": [{"name": "b"}, {"name": "a"}]}}),
        "Pod",
    );
    assert_eq!(
        names(out["spec"]["containers"].as_array().unwrap(), "name"),
        ["b", "a", "c"]
    );
}

#[test]
fn label_removal_with_null_and_scale() {
    // `kubectl label deploy web tier-` and `kubectl scale --replicas=5`.
    let out = smp(
        deployment(),
        json!({"metadata": {"labels": {"tier": null, "new": "x"}}, "spec": {"replicas": 5}}),
        "Deployment",
    );
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
    assert_eq!(out["spec"]["replicas"], 5);
    // A null for a key that does not exist is not stored.
    let out = smp(
        deployment(),
        json!({"metadata": {"annotations": {"a": null}}}),
        "Deployment",
    );
    assert_eq!(out["metadata"]["annotations"], json!({}));
}

#[test]
fn non_keyed_lists_are_replaced() {
    let patch = json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}});
    let out = smp(deployment(), patch, "Deployment");
    assert_eq!(
        out["spec"]["template"]["spec"]["tolerations"],
        json!([{"key": "b", "operator": "Exists"}])
    );
    // An empty keyed list in the patch changes nothing (Kubernetes semantics)...
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": []}}}}),
        "Deployment",
    );
    assert_eq!(containers(&out).len(), 2);
    // ...while `$patch: replace` replaces it.
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"}, {"name": "only", "image": "i"}
        ]}}}}),
        "Deployment",
    );
    assert_eq!(
        containers(&out),
        &vec![json!({"name": "only", "image": "i"})]
    );
}

#[test]
fn map_directives() {
    let live = json!({"spec": {"selector": {"a": "1", "b": "2"}, "other": {"x": 1}}});
    let out = smp(
        live.clone(),
        json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
        "Service",
    );
    assert_eq!(out["spec"]["selector"], json!({"c": "3"}));
    assert_eq!(out["spec"]["other"], json!({"x": 1}));
    let out = smp(
        live.clone(),
        json!({"spec": {"other": {"$patch": "delete"}}}),
        "Service",
    );
    assert_eq!(out["spec"]["other"], json!({}));
    let out = smp(
        live,
        json!({"spec": {"other": {"$patch": "merge", "y": 2}}}),
        "Service",
    );
    assert_eq!(out["spec"]["other"], json!({"x": 1, "y": 2}));
}

#[test]
fn retain_keys() {
    // A Deployment strategy switched from RollingUpdate to Recreate by `kubectl apply`.
    let live = json!({"spec": {"strategy": {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}
    }}});
    let out = smp(
        live.clone(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        "Deployment",
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    let err = strategic_merge_patch(
        &mut live.clone(),
        &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
        "Deployment",
    )
    .unwrap_err();
    assert!(err.to_string().contains("rollingUpdate"), "{err}");
}

#[test]
fn finalizers_union_and_delete_from_primitive_list() {
    let live = json!({"metadata": {"finalizers": ["a", "b"]}});
    let out = smp(
        live.clone(),
        json!({"metadata": {"finalizers": ["c", "a"]}}),
        "Pod",
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    let out = smp(
        live.clone(),
        json!({"metadata": {
            "$setElementOrder/finalizers": ["b", "c"],
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "finalizers": ["c"]
        }}),
        "Pod",
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    // Unknown kinds replace lists like a merge patch.
    let out = smp(live, json!({"metadata": {"finalizers": ["c"]}}), "Widget");
    assert_eq!(out["metadata"]["finalizers"], json!(["c"]));
}

#[test]
fn service_ports_and_node_status() {
    let svc = json!({"spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "https", "port": 443}
    ]}});
    let out = smp(
        svc,
        json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        "Service",
    );
    assert_eq!(
        out["spec"]["ports"][0],
        json!({"name": "http", "port": 80, "targetPort": 9090})
    );
    assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);

    let node = json!({"status": {
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
    }});
    let out = smp(
        node,
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
                          "addresses": [{"type": "Hostname", "address": "n1"}]}}),
        "Node",
    );
    assert_eq!(
        out["status"]["conditions"][0],
        json!({"type": "Ready", "status": "True"})
    );
    assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
    assert_eq!(out["status"]["addresses"].as_array().unwrap().len(), 2);
}

#[test]
fn nested_keyed_lists_and_owner_references() {
    let live = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]},
                      "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}],
                                               "volumeMounts": [{"mountPath": "/a", "name": "v"}]}]}});
    let out = smp(
        live,
        json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]},
               "spec": {"containers": [{"name": "c",
                    "ports": [{"containerPort": 80.0, "protocol": "TCP"}],
                    "volumeMounts": [{"mountPath": "/a", "$patch": "delete"}, {"mountPath": "/b", "name": "w"}]}]}}),
        "Pod",
    );
    assert_eq!(
        out["metadata"]["ownerReferences"].as_array().unwrap().len(),
        2
    );
    let c = &out["spec"]["containers"][0];
    // 80.0 and 80 are the same merge key value.
    let ports = c["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], "http");
    assert_eq!(ports[0]["protocol"], "TCP");
    assert_eq!(c["volumeMounts"], json!([{"mountPath": "/b", "name": "w"}]));
}

#[test]
fn new_subtrees_are_cleaned() {
    let out = smp(
        json!({}),
        json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}],
                                         "args": null}],
                        "nodeSelector": {"a": null, "b": "1"}}}),
        "Pod",
    );
    assert_eq!(
        out,
        json!({"spec": {"containers": [{"name": "a", "env": []}], "nodeSelector": {"b": "1"}}})
    );
}

#[test]
fn smp_errors() {
    let bad = [
        (
            json!({"spec": {"containers": [{"image": "x"}]}}),
            "missing merge key",
        ),
        (json!({"spec": {"containers": ["x"]}}), "element not object"),
        (
            json!({"spec": {"containers": [{"name": "a", "$patch": "bogus"}]}}),
            "bad element directive",
        ),
        (
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
            "delete without key",
        ),
        (json!({"spec": {"$patch": "nope"}}), "bad map directive"),
        (json!({"spec": {"$patch": 1}}), "non-string directive"),
        (
            json!({"spec": {"$retainKeys": "a"}}),
            "retainKeys not a list",
        ),
        (
            json!({"spec": {"$retainKeys": [1]}}),
            "retainKeys not strings",
        ),
        (
            json!({"spec": {"$setElementOrder/containers": {}}}),
            "order not a list",
        ),
        (
            json!({"spec": {"$setElementOrder/": []}}),
            "order without field",
        ),
        (
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            "delete list not a list",
        ),
        (json!({"spec": {"$bogus": 1}}), "unknown directive"),
    ];
    for (patch, why) in bad {
        let mut target = json!({"spec": {"containers": [{"name": "a"}]}});
        let before = target.clone();
        let result = strategic_merge_patch(&mut target, &patch, "Pod");
        let err = result.expect_err(why);
        assert_eq!(err.status_code(), 422, "{why}");
        assert_eq!(target, before, "{why}: target must be unchanged");
    }
    let err = strategic_merge_patch(&mut json!({}), &json!([1]), "Pod").unwrap_err();
    assert!(matches!(err, PatchError::WrongShape { .. }));
    let msg = strategic_merge_patch(
        &mut json!({}),
        &json!({"spec": {"containers": [{"image": "x"}]}}),
        "Pod",
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("spec.containers") && msg.contains("\"name\""),
        "{msg}"
    );
}

#[test]
fn apply_patch_is_strategic_merge() {
    let mut live = deployment();
    let applied = parse_body(
        PatchKind::Apply,
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n",
    )
    .unwrap();
    apply_patch(&mut live, &applied, "Deployment").unwrap();
    assert_eq!(live["spec"]["replicas"], 3);
    assert_eq!(containers(&live)[0]["image"], "nginx:1.27");
    // Not tracked: the sidecar the applied config omits is still there.
    assert_eq!(containers(&live).len(), 2);
    assert!(apply_patch(&mut live, &json!("x"), "Deployment").is_err());
}

#[test]
fn json_patch_operations() {
    let mut doc =
        json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1, "list": [1, 2]}});
    json_patch(
        &mut doc,
        &json!([
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "copy", "from": "/spec/list", "path": "/spec/copy"},
            {"op": "move", "from": "/spec/copy", "path": "/spec/moved"}
        ]),
    )
    .unwrap();
    assert_eq!(
        doc,
        json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3, "list": [1, 2, 3], "moved": [1, 2, 3]}})
    );
}

#[test]
fn json_patch_failures_leave_target_unchanged() {
    let original = json!({"spec": {"replicas": 1}});
    let cases = [
        (
            json!([{"op": "replace", "path": "/spec/replicas", "value": 2},
                {"op": "test", "path": "/spec/replicas", "value": 1}]),
            "failed",
        ),
        (json!([{"op": "remove", "path": "/spec/missing"}]), "failed"),
        (json!([{"op": "frobnicate", "path": "/a"}]), "invalid"),
        (json!([{"op": "add", "value": 1}]), "invalid"),
        (
            json!([{"op": "add", "path": "no-slash", "value": 1}]),
            "invalid",
        ),
        (json!(["add"]), "invalid"),
        (json!({"op": "add"}), "shape"),
    ];
    for (patch, what) in cases {
        let mut doc = original.clone();
        let err = json_patch(&mut doc, &patch).expect_err(what);
        assert_eq!(doc, original);
        let matches = match what {
            "failed" => matches!(err, PatchError::JsonPatchFailed { .. }),
            "invalid" => matches!(err, PatchError::InvalidJsonPatch { .. }),
            _ => matches!(err, PatchError::WrongShape { .. }),
        };
        assert!(matches, "{patch}: {err:?}");
    }
    let mut doc = original.clone();
    let err = json_patch(
        &mut doc,
        &json!([{"op": "test", "path": "/spec/replicas", "value": 7}]),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("test") && msg.contains("/spec/replicas"),
        "{msg}"
    );
}

#[test]
fn json_patch_copy_amplification_is_bounded() {
    // Each copy doubles /c; without the limit 40 of them would need terabytes.
    let mut doc = json!({"c": ["x".repeat(1024)]});
    let ops: Vec<Value> = (0..40)
        .map(|_| json!({"op": "copy", "from": "/c", "path": "/c/-"}))
        .collect();
    let err = json_patch(&mut doc, &Value::Array(ops)).unwrap_err();
    assert!(matches!(err, PatchError::JsonPatchTooBig { .. }), "{err:?}");
    let many = Value::Array(vec![
        json!({"op": "test", "path": "", "value": null});
        MAX_JSON_PATCH_OPERATIONS + 1
    ]);
    assert!(matches!(
        json_patch(&mut doc, &many),
        Err(PatchError::JsonPatchTooBig { .. })
    ));
}

#[test]
fn merge_patch_nulls() {
    let mut doc = json!({"a": {"b": 1, "c": 2}, "list": [1, 2], "keep": true});
    merge_patch(
        &mut doc,
        &json!({"a": {"b": null, "d": {"e": null, "f": 1}}, "list": [3], "gone": null}),
    );
    assert_eq!(
        doc,
        json!({"a": {"c": 2, "d": {"f": 1}}, "list": [3], "keep": true})
    );
    merge_patch(&mut doc, &json!({"keep": null}));
    assert_eq!(doc.get("keep"), None);
}

#[test]
fn parse_bodies() {
    assert_eq!(
        parse_body(PatchKind::Merge, br#"{"a": 1}"#).unwrap(),
        json!({"a": 1})
    );
    assert!(parse_body(PatchKind::Json, br#"[{"op":"remove","path":"/a"}]"#).is_ok());
    let apply_json = parse_body(PatchKind::Apply, br#"{"kind": "Pod"}"#).unwrap();
    assert_eq!(apply_json, json!({"kind": "Pod"}));
    let yaml = parse_body(
        PatchKind::Apply,
        b"kind: Pod\nmetadata:\n  labels:\n    app: web\nspec:\n  containers:\n  - name: a\n    ports:\n    - containerPort: 80\n",
    )
    .unwrap();
    assert_eq!(
        yaml["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    assert_eq!(yaml["metadata"]["labels"]["app"], "web");
}

#[test]
fn bad_bodies_are_errors() {
    use PatchKind::*;
    let cases: Vec<(PatchKind, Vec<u8>)> = vec![
        (Merge, b"".to_vec()),
        (Merge, b"   \n".to_vec()),
        (Merge, b"{".to_vec()),
        (Merge, b"[1]".to_vec()),
        (Merge, b"null".to_vec()),
        (StrategicMerge, b"\"x\"".to_vec()),
        (StrategicMerge, b"{\"a\":1} trailing".to_vec()),
        (StrategicMerge, vec![0xff, 0xfe, 0x00]),
        (Json, b"{}".to_vec()),
        (Json, b"[".to_vec()),
        (Apply, b"- a\n- b\n".to_vec()),
        (Apply, b"a: [1, 2\n".to_vec()),
        (Apply, b"just a string".to_vec()),
        (Apply, b"a: 1\n---\nb: 2\n".to_vec()),
        (Apply, b"a: *missing\n".to_vec()),
        (Apply, vec![b'a', b':', b' ', 0xff]),
        (Apply, "[".repeat(10_000).into_bytes()),
        (Merge, "[".repeat(10_000).into_bytes()),
        (Apply, "a:\n".repeat(2).into_bytes()),
    ];
    for (kind, body) in cases {
        let result = parse_body(kind, &body);
        // Some inputs are valid YAML whose top level is not an object; all must be errors.
        let err = result.expect_err(&format!("{kind:?} {:?}", String::from_utf8_lossy(&body)));
        assert_eq!(err.status_code(), 400, "{err}");
    }
    let big = vec![b' '; MAX_PATCH_BYTES + 1];
    let err = parse_body(Merge, &big).unwrap_err();
    assert!(matches!(err, PatchError::TooLarge { .. }));
    assert_eq!(err.status_code(), 413);
    assert!(err.to_string().contains("limit"));
    let yaml_err = parse_body(Apply, b"a: [\n").unwrap_err().to_string();
    assert!(!yaml_err.contains('\n'), "{yaml_err}");
    assert!(yaml_err.contains("line 1"), "{yaml_err}");
}

#[test]
fn deep_yaml_is_rejected_not_overflowing() {
    let mut deep = String::new();
    for i in 0..5000 {
        deep.push_str(&" ".repeat(i));
        deep.push_str("a:\n");
    }
    assert!(parse_body(PatchKind::Apply, deep.as_bytes()).is_err());
    let anchors = b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    // Either rejected by the alias budget or parsed; it must not hang or panic.
    let _ = parse_body(PatchKind::Apply, anchors);
}

#[test]
fn odd_targets_and_patches_never_panic() {
    let patches = [
        json!({"spec": {"containers": [{"name": "a", "$patch": "merge", "x": 1}]}}),
        json!({"spec": {"containers": {"not": "a list"}}}),
        json!({"spec": {"containers": "scalar"}}),
        json!({"spec": {"$setElementOrder/containers": [1, "x", {"other": 1}]}}),
        json!({"spec": {"$setElementOrder/containers": [], "containers": null}}),
        json!({"metadata": {"finalizers": [{"$patch": "delete"}, [1], {"a": 1}]}}),
        json!({"$patch": "delete"}),
        json!({"$patch": "replace", "kind": "Pod"}),
    ];
    let targets = [
        json!(null),
        json!([1, 2]),
        json!({"spec": {"containers": [1, "x", {"noname": 1}, {"name": "a"}, {"name": "a"}]}}),
        json!({"spec": {"containers": {"a": 1}}}),
        json!({"metadata": {"finalizers": "x"}}),
    ];
    for kind in ["Pod", "Deployment", "Widget", ""] {
        for t in &targets {
            for p in &patches {
                let mut target = t.clone();
                let _ = strategic_merge_patch(&mut target, p, kind);
                let mut target = t.clone();
                merge_patch(&mut target, p);
                let mut target = t.clone();
                let _ = json_patch(&mut target, p);
            }
        }
    }
    let out = smp(json!({"a": 1}), json!({"$patch": "delete"}), "Pod");
    assert_eq!(out, json!({}));
}
