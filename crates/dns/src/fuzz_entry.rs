//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/dns_query.rs`,
//! `dns_screen.rs`) and the corpus replay test. Each must return normally for any input; a panic is a bug.

use std::sync::OnceLock;

use hickory_proto::op::Message;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::names::{ClusterNames, QueryType};
use crate::server::{Answer, answer, answer_tcp};

/// A small cache with one object of every shape the server answers for.
fn cache() -> &'static ClusterNames {
    static CACHE: OnceLock<ClusterNames> = OnceLock::new();
    CACHE.get_or_init(|| {
        let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).expect("valid Service") };
        let services = [
            svc(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                    "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}})),
            svc(json!({"metadata": {"name": "alias", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})),
        ];
        let slices: [EndpointSlice; 1] = [serde_json::from_value(json!({
            "metadata": {"name": "db-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.1.6"], "conditions": {"ready": true}},
                {"addresses": ["10.244.1.7"], "hostname": "db-2", "conditions": {"ready": false}}
            ],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
        }))
        .expect("valid EndpointSlice")];
        let pods: [Pod; 1] = [serde_json::from_value(json!({
            "metadata": {"name": "db-0", "namespace": "default"},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}
        }))
        .expect("valid Pod")];
        let mut names = ClusterNames::new("cluster.local");
        names.replace_all(&services, &slices, &pods);
        names
    })
}

/// DNS queries from clients: [`answer`] and [`answer_tcp`] on arbitrary bytes. Every reply
/// must parse back as a DNS message with the query's ID; UDP replies must fit 512 bytes
/// unless the query advertised a larger EDNS payload. The bytes are also tried as a name.
pub fn dns_query(data: &[u8]) {
    let names = cache();
    for (tcp, result) in [
        (false, answer(data, names, "cluster.local")),
        (true, answer_tcp(data, names, "cluster.local")),
    ] {
        match result {
            Answer::Reply(reply) => {
                let parsed = Message::from_vec(&reply).expect("a reply parses back");
                assert_eq!(parsed.metadata.id.to_be_bytes(), data[..2], "reply ID");
                assert!(
                    tcp || reply.len() <= 1232,
                    "UDP reply of {} bytes",
                    reply.len()
                );
            }
            Answer::Forward | Answer::Drop => {}
        }
    }
    // The split-DNS router of `connect`/`gateway` and its error replies.
    let zones = crate::split::SplitZones::new("cluster.local", [([10, 244, 0, 0].into(), 16)]);
    let route = zones.route(data);
    for reply in [crate::split::servfail(data), crate::split::formerr(data)]
        .into_iter()
        .flatten()
    {
        assert_eq!(reply[..2], data[..2], "error reply ID");
    }
    if route != crate::split::Route::Invalid {
        assert!(
            crate::split::servfail(data).is_some(),
            "a routable query gets SERVFAIL"
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = zones.is_cluster_name(text);
        let _ = names.lookup(text, QueryType::A);
        let _ = names.lookup(text, QueryType::Ptr);
        let _ = names.resolve_host(text, Some("default"));
    }
}

/// The query screen every DNS front end runs first ([`crate::query::screen`]): never
/// panics; drops exactly what is too short or a response; a FORMERR reply is a 12-byte
/// header with the query's ID that parses back as FORMERR; a passed query has one question
/// whose name and type agree with a full parse when hickory can parse it; and the split
/// router calls invalid exactly what the screen does not pass.
pub fn dns_screen(data: &[u8]) {
    use crate::query::{Screen, screen};
    let screened = screen(data);
    let not_a_query = data.len() < 12 || data[2] & 0x80 != 0;
    match &screened {
        Screen::Drop => assert!(not_a_query, "dropped a query"),
        Screen::FormErr(reply) => {
            assert!(!not_a_query);
            assert_eq!(reply.len(), 12);
            assert_eq!(reply[..2], data[..2], "FORMERR ID");
            let parsed = Message::from_vec(reply).expect("FORMERR parses");
            assert_eq!(
                parsed.metadata.response_code,
                hickory_proto::op::ResponseCode::FormErr
            );
        }
        Screen::Query(q) => {
            assert!(!not_a_query);
            assert_eq!(u16::from_be_bytes([data[4], data[5]]), 1, "one question");
            let text = q.name_text();
            assert!(text.len() <= 4 * 255);
            assert!(q.labels().all(|l| !l.is_empty() && l.len() <= 63));
            if let Ok(m) = Message::from_vec(data) {
                assert_eq!(m.queries.len(), 1);
                assert_eq!(u16::from(m.queries[0].query_type()), q.qtype);
                let theirs = m.queries[0].name().to_ascii().to_ascii_lowercase();
                if text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    assert_eq!(theirs.trim_end_matches('.'), text, "question name");
                }
            }
        }
    }
    let zones = crate::split::SplitZones::new("cluster.local", [([10, 244, 0, 0].into(), 16)]);
    assert_eq!(
        zones.route(data) == crate::split::Route::Invalid,
        !matches!(screened, Screen::Query(_)),
        "the router and the screen agree"
    );
}
