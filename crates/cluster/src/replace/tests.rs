use kubelan_apisim::patch::json_patch;
use serde_json::{Value, json};

use super::*;

fn who() -> Replacer {
    Replacer {
        session: "b7x2kq9d".into(),
        user: "jane@example.com".into(),
        host: "laptop-3".into(),
    }
}

/// A Service as the API server stores it.
fn web(annotations: Option<Value>) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1",
                     "resourceVersion": "42", "labels": {"app": "web"}},
        "spec": {
            "type": "ClusterIP", "clusterIP": "172.17.16.20", "clusterIPs": ["172.17.16.20"],
            "selector": {"app": "web", "tier": "front"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
            ],
            "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    });
    if let Some(a) = annotations {
        v["metadata"]["annotations"] = a;
    }
    v
}

fn typed(v: &Value) -> Service {
    serde_json::from_value(v.clone()).unwrap()
}

/// Applies `patch` as the API server would (all or nothing) and bumps resourceVersion.
fn apply(obj: &Value, patch: &Value) -> Result<Value, String> {
    let mut out = obj.clone();
    json_patch(&mut out, patch).map_err(|e| e.to_string())?;
    let rv: u64 = out["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    out["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
    Ok(out)
}

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    v["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    v
}

#[test]
fn the_swap_patch_is_exactly_this() {
    let s = swap(&typed(&web(None)), &who()).unwrap();
    let golden = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
        {"op": "test", "path": "/spec/selector", "value": {"app": "web", "tier": "front"}},
        {"op": "add", "path": "/metadata/annotations", "value": {
            "kubelan.io/original": r#"{"session":"b7x2kq9d","selector":{"app":"web","tier":"front"}}"#,
            "kubelan.io/replaced-by": "kubelan session b7x2kq9d of jane@example.com on laptop-3; the selector before is in kubelan.io/original",
        }},
        {"op": "replace", "path": "/spec/selector", "value": {"kubelan.io/session": "b7x2kq9d"}},
    ]);
    assert_eq!(s.patch, golden);
    assert_eq!(
        s.original,
        Selector::from([
            ("app".into(), "web".into()),
            ("tier".into(), "front".into())
        ])
    );
    assert_eq!(
        s.ports,
        vec![
            ReplacedPort {
                name: Some("http".into()),
                port: 80,
                protocol: "TCP".into(),
                target: TargetPort::Number(8080)
            },
            ReplacedPort {
                name: Some("metrics".into()),
                port: 9090,
                protocol: "TCP".into(),
                target: TargetPort::Name("metrics".into())
            },
            ReplacedPort {
                name: Some("dns".into()),
                port: 53,
                protocol: "UDP".into(),
                target: TargetPort::Number(5353)
            },
        ]
    );
    assert!(s.warnings.is_empty());
}

#[test]
fn the_swap_adds_keys_to_existing_annotations() {
    let s = swap(&typed(&web(Some(json!({"team": "a/b~c"})))), &who()).unwrap();
    let paths: Vec<&str> = s.patch.as_array().unwrap()[2..4]
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations/kubelan.io~1replaced-by",
            "/metadata/annotations/kubelan.io~1original"
        ]
    );
}

#[test]
fn the_restore_patch_is_exactly_this() {
    let before = web(None);
    let swapped = apply(&before, &swap(&typed(&before), &who()).unwrap().patch).unwrap();
    let r = restore(&typed(&swapped), "b7x2kq9d", None);
    let annotations = swapped["metadata"]["annotations"].clone();
    assert_eq!(
        r.patch.unwrap(),
        json!([
            {"op": "test", "path": "/spec/selector", "value": {"kubelan.io/session": "b7x2kq9d"}},
            {"op": "replace", "path": "/spec/selector", "value": {"app": "web", "tier": "front"}},
            {"op": "test", "path": "/metadata/annotations", "value": annotations},
            {"op": "remove", "path": "/metadata/annotations"},
        ])
    );
}

#[test]
fn swap_then_restore_gives_back_the_same_object() {
    for annotations in [
        None,
        Some(json!({"team": "payments", "a/b~c": "x"})),
        Some(json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"})),
    ] {
        let before = web(annotations.clone());
        let swapped = apply(&before, &swap(&typed(&before), &who()).unwrap().patch).unwrap();
        assert_eq!(
            swapped["spec"]["selector"],
            json!({"kubelan.io/session": "b7x2kq9d"})
        );
        assert_eq!(
            Original::parse(
                swapped["metadata"]["annotations"][ANNOTATION_ORIGINAL]
                    .as_str()
                    .unwrap()
            )
            .unwrap()
            .selector,
            swap(&typed(&before), &who()).unwrap().original
        );
        // From the annotation (no --restore-selector) and from the flag: same result.
        for known in [None, Some(&swap(&typed(&before), &who()).unwrap().original)] {
            let r = restore(&typed(&swapped), "b7x2kq9d", known);
            assert!(matches!(r.decision, RestoreDecision::Restore { .. }));
            let after = apply(&swapped, &r.patch.unwrap()).unwrap();
            assert_eq!(without_rv(&after), without_rv(&before), "{annotations:?}");
            // Idempotent: a second restore finds nothing to do.
            let again = restore(&typed(&after), "b7x2kq9d", known);
            assert_eq!(again.patch, None);
            let expected = if known.is_some() {
                RestoreDecision::AlreadyRestored
            } else {
                RestoreDecision::NotOurs {
                    selector: Some(swap(&typed(&before), &who()).unwrap().original),
                }
            };
            assert_eq!(again.decision, expected);
        }
    }
}

#[test]
fn a_swap_of_a_changed_service_is_refused_by_the_server() {
    let before = web(None);
    let s = swap(&typed(&before), &who()).unwrap();
    // Someone edits the selector after the read.
    let mut edited = before.clone();
    edited["spec"]["selector"] = json!({"app": "web2"});
    assert!(apply(&edited, &s.patch).is_err());
    // Someone edits anything else: the resourceVersion test catches it too.
    let mut edited = before.clone();
    edited["metadata"]["resourceVersion"] = json!("43");
    edited["metadata"]["annotations"] = json!({"new": "1"});
    assert!(apply(&edited, &s.patch).is_err());
}

#[test]
fn a_selector_changed_by_someone_else_is_left_alone() {
    let before = web(Some(json!({"team": "payments"})));
    let swapped = apply(&before, &swap(&typed(&before), &who()).unwrap().patch).unwrap();
    let mut edited = swapped.clone();
    edited["spec"]["selector"] = json!({"app": "web-v2"});
    let r = restore(&typed(&edited), "b7x2kq9d", None);
    assert_eq!(
        r.decision,
        RestoreDecision::ChangedByOthers {
            selector: Some(Selector::from([("app".into(), "web-v2".into())]))
        }
    );
    // Only the session's own annotations go; the selector stays.
    let after = apply(&edited, &r.patch.unwrap()).unwrap();
    assert_eq!(after["spec"]["selector"], json!({"app": "web-v2"}));
    assert_eq!(
        after["metadata"]["annotations"],
        json!({"team": "payments"})
    );
    assert!(
        r.decision
            .describe("default/web", "b7x2kq9d")
            .contains("changed by someone else")
    );
}

#[test]
fn a_restore_decided_before_a_concurrent_edit_is_refused_by_the_server() {
    let before = web(None);
    let swapped = apply(&before, &swap(&typed(&before), &who()).unwrap().patch).unwrap();
    let r = restore(&typed(&swapped), "b7x2kq9d", None);
    // Between the read and the patch, someone points the Service elsewhere...
    let mut edited = swapped.clone();
    edited["spec"]["selector"] = json!({"app": "other"});
    assert!(apply(&edited, r.patch.as_ref().unwrap()).is_err());
    // ... or adds an annotation: the whole-map removal must not take it along.
    let mut edited = swapped.clone();
    edited["metadata"]["annotations"]["new"] = json!("keep me");
    assert!(apply(&edited, r.patch.as_ref().unwrap()).is_err());
    let again = restore(&typed(&edited), "b7x2kq9d", None);
    let after = apply(&edited, &again.patch.unwrap()).unwrap();
    assert_eq!(after["metadata"]["annotations"], json!({"new": "keep me"}));
    assert_eq!(after["spec"]["selector"], before["spec"]["selector"]);
}

#[test]
fn another_sessions_swap_is_not_restored() {
    let before = web(None);
    let other = Replacer {
        session: "zzzz0000".into(),
        ..who()
    };
    let swapped = apply(&before, &swap(&typed(&before), &other).unwrap().patch).unwrap();
    let r = restore(&typed(&swapped), "b7x2kq9d", None);
    assert_eq!(r.patch, None);
    assert!(matches!(r.decision, RestoreDecision::NotOurs { .. }));
}

#[test]
fn without_any_original_nothing_is_guessed() {
    let before = web(None);
    let mut swapped = apply(&before, &swap(&typed(&before), &who()).unwrap().patch).unwrap();
    swapped["metadata"]["annotations"][ANNOTATION_ORIGINAL] = json!("{not json");
    let r = restore(&typed(&swapped), "b7x2kq9d", None);
    assert_eq!(r.patch, None);
    let RestoreDecision::NoOriginal { why } = &r.decision else {
        panic!("{:?}", r.decision)
    };
    assert!(why.contains("not the JSON"), "{why}");
    // The relay's flag still restores it; the unreadable annotation is not ours to judge,
    // so it stays.
    let known = Selector::from([("app".into(), "web".into())]);
    let r = restore(&typed(&swapped), "b7x2kq9d", Some(&known));
    let after = apply(&swapped, &r.patch.unwrap()).unwrap();
    assert_eq!(after["spec"]["selector"], json!({"app": "web"}));
}

#[test]
fn services_that_cannot_be_replaced_say_why() {
    let refuse = |f: &dyn Fn(&mut Value)| {
        let mut v = web(None);
        f(&mut v);
        swap(&typed(&v), &who()).unwrap_err()
    };
    let e = refuse(&|v| {
        v["spec"].as_object_mut().unwrap().remove("selector");
    });
    assert!(matches!(e, NotReplaceable::NoSelector { .. }));
    assert!(e.to_string().contains("kubelan expose"), "{e}");
    let e = refuse(&|v| v["spec"]["selector"] = json!({}));
    assert!(matches!(e, NotReplaceable::NoSelector { .. }));
    let e = refuse(&|v| {
        v["spec"] = json!({"type": "ExternalName", "externalName": "example.com"});
    });
    assert!(matches!(e, NotReplaceable::ExternalName { .. }), "{e}");
    let e = refuse(&|v| v["spec"]["ports"][1]["protocol"] = json!("SCTP"));
    assert!(e.to_string().contains("SCTP"), "{e}");
    let e = refuse(&|v| v["spec"]["ports"] = json!([]));
    assert!(matches!(e, NotReplaceable::NoPorts { .. }), "{e}");
    let e = refuse(&|v| v["spec"]["ports"][0]["targetPort"] = json!(70000));
    assert!(
        matches!(e, NotReplaceable::TargetPort { target: 70000, .. }),
        "{e}"
    );
    let e = refuse(&|v| v["spec"]["selector"] = json!({"kubelan.io/session": "abc"}));
    assert_eq!(
        e,
        NotReplaceable::AlreadyReplaced {
            service: "web".into(),
            session: "abc".into()
        }
    );
    assert!(e.to_string().contains("kubelan-abc"), "{e}");
}

#[test]
fn headless_and_node_local_services_are_replaced_with_a_warning() {
    let mut v = web(None);
    v["spec"]["clusterIP"] = json!("None");
    v["spec"]["internalTrafficPolicy"] = json!("Local");
    let s = swap(&typed(&v), &who()).unwrap();
    assert_eq!(
        s.warnings,
        [
            ReplaceWarning::Headless,
            ReplaceWarning::InternalTrafficLocal
        ]
    );
    assert!(s.warnings[0].to_string().contains("per-pod names"));
}

#[test]
fn an_absent_target_port_is_the_port() {
    let mut v = web(None);
    v["spec"]["ports"] = json!([{"port": 8080}]);
    let s = swap(&typed(&v), &who()).unwrap();
    assert_eq!(
        s.ports,
        [ReplacedPort {
            name: None,
            port: 8080,
            protocol: "TCP".into(),
            target: TargetPort::Number(8080)
        }]
    );
}

#[test]
fn originals_and_selectors_parse_strictly() {
    let o = Original {
        session: "b7x2kq9d".into(),
        selector: Selector::from([("app".into(), "web".into())]),
    };
    assert_eq!(Original::parse(&o.to_annotation()), Ok(o));
    assert!(matches!(
        Original::parse(r#"{"session":"b7x2kq9d","selector":{}}"#),
        Err(OriginalError::EmptySelector)
    ));
    assert!(matches!(
        Original::parse(r#"{"session":"B7/x","selector":{"a":"b"}}"#),
        Err(OriginalError::Session(_))
    ));
    assert!(matches!(
        Original::parse(r#"{"session":"ab","selector":{"a":1}}"#),
        Err(OriginalError::Json(_))
    ));
    assert!(matches!(
        Original::parse(&"x".repeat(MAX_ORIGINAL_BYTES + 1)),
        Err(OriginalError::TooLong(_))
    ));
    assert_eq!(
        parse_selector(r#"{"app":"web"}"#),
        Ok(Selector::from([("app".into(), "web".into())]))
    );
    assert!(parse_selector("{}").is_err());
    assert!(parse_selector("[]").is_err());
    assert!(parse_selector("app=web").is_err());
}

#[test]
fn the_fuzz_entry_accepts_its_seeds() {
    for seed in [
        &br#"{"session":"b7x2kq9d","selector":{"app":"web","tier":"front"}}"#[..],
        br#"{"app":"web"}"#,
        b"",
        b"\xff{",
    ] {
        fuzz_entry(seed);
    }
}

/// An EndpointSlice of `family` whose endpoints are (address, ready condition).
fn slice(family: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(a, ready)| match ready {
            Some(r) => json!({"addresses": [a], "conditions": {"ready": r}}),
            None => json!({"addresses": [a]}),
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "labels": {crate::names::LABEL_SERVICE_NAME: "web"}},
        "addressType": family,
        "endpoints": endpoints,
    }))
    .unwrap()
}

#[test]
fn traffic_has_moved_when_the_relay_is_the_only_ready_endpoint_of_its_family() {
    let relay: std::net::IpAddr = "172.17.33.6".parse().unwrap();
    let old = slice(
        "IPv4",
        &[("172.17.33.4", Some(true)), ("172.17.33.5", None)],
    );
    assert_eq!(
        endpoints_state(std::slice::from_ref(&old), relay),
        EndpointsState::Pending {
            relay_listed: false,
            others: 2
        }
    );
    assert_eq!(
        endpoints_state(&[], relay).to_string(),
        "the relay not listed yet, 0 old endpoints still listed"
    );
    // The controller may list the relay before it drops the old pods (two slices).
    let new = slice("IPv4", &[("172.17.33.6", Some(true))]);
    let both = [new.clone(), slice("IPv4", &[("172.17.33.4", None)])];
    assert_eq!(
        endpoints_state(&both, relay).to_string(),
        "the relay listed, 1 old endpoint still listed"
    );
    assert_eq!(
        endpoints_state(std::slice::from_ref(&new), relay),
        EndpointsState::Moved
    );
    // Not-ready old pods (terminating) and the other family's slice do not hold it back;
    // neither does the relay itself listed not ready, but then it is not moved.
    let moved = [
        new.clone(),
        slice("IPv4", &[("172.17.33.4", Some(false))]),
        slice("IPv6", &[("fd00::4", Some(true))]),
        slice("FQDN", &[("web.example.com", Some(true))]),
    ];
    assert_eq!(endpoints_state(&moved, relay), EndpointsState::Moved);
    let unready = slice("IPv4", &[("172.17.33.6", Some(false))]);
    assert!(matches!(
        endpoints_state(&[unready], relay),
        EndpointsState::Pending {
            relay_listed: false,
            ..
        }
    ));
    // IPv6 compares as addresses, not text.
    let v6: std::net::IpAddr = "fd00::6".parse().unwrap();
    let listed = slice("IPv6", &[("fd00:0::6", None)]);
    assert_eq!(endpoints_state(&[listed], v6), EndpointsState::Moved);
}
