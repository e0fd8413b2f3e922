//! Tests of the printers, one file per kind family beside the shared helpers.

mod config;
mod events;
mod network;
mod nodes;
mod pods;
mod workloads;

use serde_json::{Value, json};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::cells::D_NAME;

use super::*;

const NOW: OffsetDateTime = datetime!(2024-05-01 12:00:00 UTC);

/// Renders one object and checks the row is as wide as the column list.
fn cells(kind: &str, obj: Value) -> Vec<Value> {
    let table = to_table(kind, &[obj], NOW, IncludeObject::None, "");
    let columns = table["columnDefinitions"].as_array().unwrap().len();
    let cells = table["rows"][0]["cells"].as_array().unwrap().clone();
    assert_eq!(cells.len(), columns, "{kind}: cells vs columns");
    cells
}

/// Column names with their priority.
fn columns(kind: &str, items: &[Value]) -> Vec<(String, i64)> {
    let table = to_table(kind, items, NOW, IncludeObject::None, "");
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The elements of a JSON array literal.
fn arr(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => vec![other],
    }
}

fn names(cols: &[(String, i64)]) -> Vec<&str> {
    cols.iter().map(|(n, _)| n.as_str()).collect()
}

fn wide_names(cols: &[(String, i64)]) -> Vec<&str> {
    cols.iter()
        .filter(|(_, p)| *p == 1)
        .map(|(n, _)| n.as_str())
        .collect()
}

#[test]
fn human_duration_matches_reference_rules() {
    let ms = Duration::milliseconds;
    let s = Duration::seconds;
    let m = Duration::minutes;
    let h = Duration::hours;
    let d = Duration::days;
    let y = |n: i64| d(365 * n);
    let cases = [
        (s(-2), "<invalid>"),
        (s(-2) + Duration::nanoseconds(1), "0s"),
        (s(0), "0s"),
        (s(1) - ms(1), "0s"),
        (s(1), "1s"),
        (s(45), "45s"),
        (s(70), "70s"),
        (m(2) - ms(1), "119s"),
        (m(2), "2m"),
        (m(2) + s(1), "2m1s"),
        (s(182), "3m2s"),
        (s(190), "3m10s"),
        (m(10) - ms(1), "9m59s"),
        (m(10), "10m"),
        (m(10) + s(1), "10m"),
        (m(12), "12m"),
        (m(70), "70m"),
        (h(3) - ms(1), "179m"),
        (h(3), "3h"),
        (h(3) + m(1), "3h1m"),
        (h(5) + m(3), "5h3m"),
        (h(8) - ms(1), "7h59m"),
        (h(8), "8h"),
        (h(8) + m(59), "8h"),
        (h(47), "47h"),
        (d(2) - ms(1), "47h"),
        (d(2), "2d"),
        (h(49), "2d1h"),
        (d(2) + h(3), "2d3h"),
        (d(8) - ms(1), "7d23h"),
        (d(8), "8d"),
        (d(8) + h(23), "8d"),
        (d(367), "367d"),
        (y(2) - ms(1), "729d"),
        (y(2), "2y"),
        (y(2) + h(23) + m(59), "2y"),
        (y(2) + d(1), "2y1d"),
        (y(2) + d(45), "2y45d"),
        (y(8) - ms(1), "7y364d"),
        (y(8), "8y"),
        (y(8) + d(364), "8y"),
        (y(9), "9y"),
        (
            Duration::MAX,
            format!("{}y", Duration::MAX.whole_days() / 365).leak(),
        ),
        (Duration::MIN, "<invalid>"),
    ];
    for (duration, want) in cases {
        assert_eq!(human_duration(duration), want, "{duration}");
    }
}

#[test]
fn include_object_parsing() {
    assert_eq!(parse_include_object(None), IncludeObject::Metadata);
    assert_eq!(parse_include_object(Some("None")), IncludeObject::None);
    assert_eq!(
        parse_include_object(Some("Metadata")),
        IncludeObject::Metadata
    );
    assert_eq!(parse_include_object(Some("Object")), IncludeObject::Object);
    assert_eq!(parse_include_object(Some("bogus")), IncludeObject::Metadata);
    assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
}

#[test]
fn table_envelope_and_row_objects() {
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": "default", "uid": "u1",
                     "resourceVersion": "42", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "data": {"ca.crt": "..."}
    });
    let items = [cm.clone()];

    let table = to_table("ConfigMap", &items, NOW, IncludeObject::Metadata, "1234");
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(table["metadata"], json!({"resourceVersion": "1234"}));
    assert_eq!(
        table["columnDefinitions"][0],
        json!({"name": "Name", "type": "string", "format": "name",
               "description": D_NAME, "priority": 0})
    );
    let row = &table["rows"][0];
    assert_eq!(row["cells"], json!(["kube-root-ca.crt", 1, "60m"]));
    assert!(row.get("conditions").is_none());
    assert_eq!(
        row["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
               "metadata": cm["metadata"]})
    );

    let table = to_table("ConfigMap", &items, NOW, IncludeObject::Object, "");
    assert_eq!(table["metadata"], json!({}));
    assert_eq!(table["rows"][0]["object"], cm);

    let table = to_table("ConfigMap", &items, NOW, IncludeObject::None, "");
    assert_eq!(table["rows"][0]["object"], Value::Null);

    let table = to_table("ConfigMap", &[], NOW, IncludeObject::Metadata, "7");
    assert_eq!(table["rows"], json!([]));
    assert_eq!(table["columnDefinitions"].as_array().unwrap().len(), 3);
}

#[test]
fn other_kinds_use_the_generic_columns() {
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com", "creationTimestamp": "2024-05-01T11:00:00Z"}});
    assert_eq!(
        names(&columns(
            "CustomResourceDefinition",
            std::slice::from_ref(&crd)
        )),
        ["Name", "Created At"]
    );
    assert_eq!(
        cells("CustomResourceDefinition", crd),
        arr(json!(["widgets.example.com", "2024-05-01T11:00:00Z"]))
    );

    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1", "creationTimestamp": "2024-05-01T11:00:00Z"}});
    let cols = columns("Widget", std::slice::from_ref(&widget));
    assert_eq!(names(&cols), ["Name", "Age"]);
    assert_eq!(cells("Widget", widget), arr(json!(["w1", "60m"])));
    assert_eq!(
        cells("Widget", json!({"metadata": {"name": "w2"}}))[1],
        Value::Null
    );
    assert_eq!(names(&columns("Widget", &[])), ["Name", "Age"]);
}

#[test]
fn missing_and_malformed_fields_do_not_panic() {
    let kinds = [
        "Pod",
        "Service",
        "Node",
        "Namespace",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
        "ControllerRevision",
        "Endpoints",
        "EndpointSlice",
        "Ingress",
        "IngressClass",
        "NetworkPolicy",
        "ServiceCIDR",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "Lease",
        "Event",
        "PriorityClass",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Widget",
        "",
    ];
    let weird = [
        json!(null),
        json!({}),
        json!([]),
        json!("pod"),
        json!(17),
        json!({"metadata": null, "spec": null, "status": null}),
        json!({"metadata": 5, "spec": "x", "status": [1, 2], "apiVersion": 3}),
        json!({
            "metadata": {"name": 7, "creationTimestamp": "yesterday", "labels": [],
                         "deletionTimestamp": {}, "ownerReferences": {}},
            "spec": {"containers": {}, "initContainers": [null, 3, {"name": null}],
                     "ports": [null, {"port": "80", "nodePort": -1}], "replicas": "3",
                     "selector": {"matchLabels": [], "matchExpressions": [null, {}]},
                     "readinessGates": [{}], "cidrs": [1, null], "rules": [null],
                     "parameters": {}, "podSelector": 4, "externalIPs": "x"},
            "status": {"containerStatuses": [null, {"state": {"terminated": {}}},
                           {"restartCount": 9223372036854775807_i64,
                            "lastState": {"terminated": {"finishedAt": "9999-12-31T23:59:59Z"}}},
                           {"restartCount": 9223372036854775807_i64}],
                       "initContainerStatuses": [{"state": null}],
                       "conditions": "ready", "podIPs": [null],
                       "loadBalancer": {"ingress": [{}]}},
            "subsets": [{"addresses": [{}], "ports": [{}]}, null],
            "endpoints": [{"addresses": [null]}],
            "subjects": [null, {"kind": "ServiceAccount"}],
            "roleRef": 1, "data": "x", "webhooks": {}, "series": {},
            "count": 1e300, "value": -1.5
        }),
    ];
    for kind in kinds {
        let table = to_table(kind, &weird, NOW, IncludeObject::Metadata, "1");
        let columns = table["columnDefinitions"].as_array().unwrap().len();
        let rows = table["rows"].as_array().unwrap();
        assert_eq!(rows.len(), weird.len(), "{kind}");
        for row in rows {
            assert_eq!(row["cells"].as_array().unwrap().len(), columns, "{kind}");
            assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
            assert!(row["object"]["metadata"].is_object());
        }
        // Extreme clocks must not panic either.
        for now in [
            datetime!(-9999-01-01 0:00 UTC),
            datetime!(+9999-12-31 23:59:59 UTC),
        ] {
            let _ = to_table(kind, &weird, now, IncludeObject::Object, "");
        }
    }
}
