//! What `expose`, `replace` and `run` say: one sample of every event, each event's line for
//! people (and for `expose`'s events their JSON object), compared byte for byte with
//! `tests/golden/`. The texts are those the binary printed before it moved them here; which
//! events `kubelan run` leaves out is the binary's choice and its own test.
//! `UPDATE_GOLDEN=1 cargo test -p kubelan-expose --test render` rewrites the files; review
//! them by hand when they change.

use std::path::PathBuf;

use kubelan_expose::ExposeEvent;
use kubelan_expose::run::{RunEvent, Sig};
use kubelan_term::json::Document;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    kubelan_testkit::golden::check(&path, actual, "cargo test -p kubelan-expose --test render");
}

/// One event of each kind.
fn samples() -> Vec<ExposeEvent> {
    let closed = |error: Option<&str>| ExposeEvent::ConnectionClosed {
        listener: 0,
        peer: "172.17.32.5:4000".into(),
        to_local: 1,
        from_local: 2,
        error: error.map(str::to_string),
    };
    vec![
        ExposeEvent::Preflight {
            namespace: "team".into(),
        },
        ExposeEvent::Created {
            kind: "Job".into(),
            name: "kubelan-b7x2kq9d".into(),
        },
        ExposeEvent::Waiting {
            status: "pod kubelan-b7x2kq9d-x4z: ContainerCreating".into(),
        },
        ExposeEvent::RelayReady {
            pod: "kubelan-b7x2kq9d-x4z".into(),
            ip: "172.17.32.9".into(),
        },
        ExposeEvent::Serving {
            service: "dev.team.svc".into(),
            ports: vec![
                "80/tcp → 127.0.0.1:8080".into(),
                "53/udp → 127.0.0.1:53".into(),
            ],
        },
        ExposeEvent::Serving {
            service: "dev.team.svc".into(),
            ports: vec![],
        },
        ExposeEvent::Carrier {
            up: true,
            state: "connected via port-forward".into(),
        },
        ExposeEvent::Carrier {
            up: false,
            state: "reconnecting: the API server closed the stream".into(),
        },
        ExposeEvent::ConnectionOpened {
            listener: 0,
            peer: "172.17.32.5:4000".into(),
            local: "127.0.0.1:8080".into(),
        },
        closed(None),
        closed(Some("refused")),
        ExposeEvent::Stopping {
            job: "kubelan-b7x2kq9d".into(),
        },
        ExposeEvent::Warning {
            message: "Service web is managed by Argo CD".into(),
        },
        ExposeEvent::Moving {
            service: "web".into(),
            status: "the relay listed, 2 old endpoints still listed".into(),
        },
        ExposeEvent::Replaced {
            service: "web".into(),
            original: "app=web".into(),
        },
        ExposeEvent::Restored {
            service: "web".into(),
            outcome: "the selector is back".into(),
        },
    ]
}

/// Every event's line and JSON object.
#[test]
fn every_expose_event_says_its_golden_line_and_json() {
    let text: String = samples()
        .iter()
        .map(|e| format!("{e}\n{}\n", e.to_document().unwrap()))
        .collect();
    golden("events.txt", &text);
}

/// Every `kubelan run` event's line (the session's events included).
#[test]
fn every_run_event_says_its_golden_line() {
    let events = samples().into_iter().map(RunEvent::Session).chain([
        RunEvent::Started {
            pid: 4242,
            program: "java -jar orders.jar".into(),
            env: vec![
                ("KUBELAN_CLUSTER_IP".into(), "172.17.16.77".into()),
                (
                    "KUBELAN_CLUSTER_HOST".into(),
                    "orders.team.svc.cluster.local".into(),
                ),
            ],
        },
        RunEvent::Signal {
            signal: Sig::Int,
            forwarded: true,
        },
        RunEvent::Signal {
            signal: Sig::Term,
            forwarded: false,
        },
        RunEvent::PortExposed {
            local: "127.0.0.1:8080".into(),
            service_port: 8080,
        },
        RunEvent::PortFailed {
            local: "127.0.0.1:9090".into(),
            error: "port in use".into(),
        },
        RunEvent::Exited { code: 3 },
    ]);
    golden(
        "run.txt",
        &events.map(|e| format!("{e}\n")).collect::<String>(),
    );
}
