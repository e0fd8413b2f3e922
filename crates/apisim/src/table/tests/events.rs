use super::*;

#[test]
fn event_rows() {
    let cols = columns("Event", &[]);
    assert_eq!(
        names(&cols),
        [
            "Last Seen",
            "Type",
            "Reason",
            "Object",
            "Subobject",
            "Source",
            "Message",
            "First Seen",
            "Count",
            "Name"
        ]
    );
    assert_eq!(
        wide_names(&cols),
        ["Subobject", "Source", "First Seen", "Count", "Name"]
    );
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web-1.17c2", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1",
                           "fieldPath": "spec.containers{web}"},
        "reason": "BackOff", "type": "Warning",
        "message": "Back-off restarting failed container web\n",
        "source": {"component": "kubelet", "host": "worker-1"},
        "firstTimestamp": "2024-05-01T11:00:00Z",
        "lastTimestamp": "2024-05-01T11:59:30Z",
        "count": 12
    });
    assert_eq!(
        cells("Event", ev),
        arr(json!([
            "30s",
            "Warning",
            "BackOff",
            "pod/web-1",
            "spec.containers{web}",
            "kubelet, worker-1",
            "Back-off restarting failed container web",
            "60m",
            12,
            "web-1.17c2"
        ]))
    );

    // events.k8s.io/v1 shape, with a series and no deprecated timestamps.
    let ev = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "sched.1"},
        "eventTime": "2024-05-01T11:49:59.123456Z",
        "series": {"count": 4, "lastObservedTime": "2024-05-01T11:58:00.000000Z"},
        "reportingController": "default-scheduler",
        "reportingInstance": "",
        "action": "Scheduling", "reason": "FailedScheduling", "type": "Warning",
        "regarding": {"kind": "Pod", "name": "web-2"},
        "note": "0/3 nodes are available"
    });
    let c = cells("Event", ev);
    assert_eq!(c[0], "2m");
    assert_eq!(c[3], "pod/web-2");
    assert_eq!(c[5], "default-scheduler");
    assert_eq!(c[6], "0/3 nodes are available");
    assert_eq!(c[7], "10m");
    assert_eq!(c[8], 4);

    // A singleton event without count or timestamps.
    let c = cells(
        "Event",
        json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"}}),
    );
    assert_eq!(c[0], "<unknown>");
    assert_eq!(c[3], "node");
    assert_eq!(c[8], 1);
}
