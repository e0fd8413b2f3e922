//! Tests of the records (pure), the hosts file and dnsmasq's command line and, where
//! dnsmasq and dig are installed, of dnsmasq, its supervisor and `run` against a fake API.

use std::collections::BTreeMap as Map;
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodIP, PodSpec, PodStatus, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use tokio::time::Instant;

use super::dnsmasq::{Dnsmasq, RESTART_BACKOFF_MIN, STOP_GRACE, TEMP_FILE_NAME, wait_child};
use super::records::{SERVICE_NAME_LABEL, TOLERATE_UNREADY_ANNOTATION};
use super::*;

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn cluster_ip_service(ns: &str, name: &str, ips: &[&str]) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: ips.first().map(|s| (*s).to_owned()),
            cluster_ips: Some(ips.iter().map(|s| (*s).to_owned()).collect()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn headless_service(ns: &str, name: &str, publish_not_ready: bool) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            cluster_ips: Some(vec!["None".to_owned()]),
            publish_not_ready_addresses: publish_not_ready.then_some(true),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// An endpoint: address, hostname, ready condition (`None` = unset).
type Ep<'a> = (&'a str, Option<&'a str>, Option<bool>);

fn slice(ns: &str, name: &str, service: &str, family: &str, eps: &[Ep<'_>]) -> EndpointSlice {
    let mut metadata = meta(ns, name);
    metadata.labels = Some(Map::from([(
        SERVICE_NAME_LABEL.to_owned(),
        service.to_owned(),
    )]));
    EndpointSlice {
        metadata,
        address_type: family.to_owned(),
        endpoints: eps
            .iter()
            .map(|(ip, host, ready)| Endpoint {
                addresses: vec![(*ip).to_owned()],
                hostname: host.map(str::to_owned),
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: None,
    }
}

fn pod(ns: &str, name: &str, ips: &[&str]) -> Pod {
    Pod {
        metadata: meta(ns, name),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: ips.first().map(|s| (*s).to_owned()),
            pod_ips: Some(
                ips.iter()
                    .map(|ip| PodIP {
                        ip: (*ip).to_owned(),
                    })
                    .collect(),
            ),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names_of<'a>(records: &'a Records, addr: &str) -> Vec<&'a str> {
    records
        .iter()
        .find(|(ip, _)| *ip == self::ip(addr))
        .map(|(_, names)| names.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn cluster_ip_services_in_several_namespaces() {
    let services = [
        cluster_ip_service("default", "kubernetes", &["10.96.0.1"]),
        cluster_ip_service("kube-system", "kube-dns", &["10.96.0.10"]),
        cluster_ip_service("shop", "web", &["10.96.5.5", "fd00:96::5"]),
    ];
    let got = records("cluster.local", &services, &[], &[]);
    assert_eq!(
        got,
        vec![
            (
                ip("10.96.0.1"),
                vec!["kubernetes.default.svc.cluster.local".to_owned()]
            ),
            (
                ip("10.96.0.10"),
                vec!["kube-dns.kube-system.svc.cluster.local".to_owned()]
            ),
            (
                ip("10.96.5.5"),
                vec!["web.shop.svc.cluster.local".to_owned()]
            ),
            (
                ip("fd00:96::5"),
                vec!["web.shop.svc.cluster.local".to_owned()]
            ),
        ]
    );
}

#[test]
fn headless_service_with_hostnames() {
    let services = [headless_service("default", "db", false)];
    let slices = [slice(
        "default",
        "db-abc",
        "db",
        "IPv4",
        &[
            ("10.244.1.5", Some("db-0"), Some(true)),
            ("10.244.2.7", Some("db-1"), None),
            ("10.244.3.9", None, Some(true)),
        ],
    )];
    let got = records("cluster.local.", &services, &slices, &[]);
    assert_eq!(
        names_of(&got, "10.244.1.5"),
        [
            "db-0.db.default.svc.cluster.local",
            "db.default.svc.cluster.local"
        ]
    );
    assert_eq!(
        names_of(&got, "10.244.2.7"),
        [
            "db-1.db.default.svc.cluster.local",
            "db.default.svc.cluster.local"
        ]
    );
    assert_eq!(
        names_of(&got, "10.244.3.9"),
        [
            "10-244-3-9.db.default.svc.cluster.local",
            "db.default.svc.cluster.local"
        ]
    );
    assert_eq!(got.len(), 3);
}

#[test]
fn not_ready_endpoints_are_left_out() {
    let services = [headless_service("default", "db", false)];
    let slices = [slice(
        "default",
        "db-abc",
        "db",
        "IPv4",
        &[
            ("10.244.1.5", Some("db-0"), Some(true)),
            ("10.244.1.6", Some("db-1"), Some(false)),
        ],
    )];
    let got = records("cluster.local", &services, &slices, &[]);
    assert_eq!(got.len(), 1);
    assert!(names_of(&got, "10.244.1.6").is_empty());
}

#[test]
fn publish_not_ready_addresses_includes_them() {
    let mut legacy = headless_service("default", "legacy", false);
    legacy.metadata.annotations = Some(Map::from([(
        TOLERATE_UNREADY_ANNOTATION.to_owned(),
        "true".to_owned(),
    )]));
    let services = [headless_service("default", "db", true), legacy];
    let slices = [
        slice(
            "default",
            "db-abc",
            "db",
            "IPv4",
            &[("10.244.1.6", Some("db-1"), Some(false))],
        ),
        slice(
            "default",
            "legacy-abc",
            "legacy",
            "IPv4",
            &[("10.244.1.7", None, Some(false))],
        ),
    ];
    let got = records("cluster.local", &services, &slices, &[]);
    assert_eq!(
        names_of(&got, "10.244.1.6"),
        [
            "db-1.db.default.svc.cluster.local",
            "db.default.svc.cluster.local"
        ]
    );
    assert_eq!(
        names_of(&got, "10.244.1.7"),
        [
            "10-244-1-7.legacy.default.svc.cluster.local",
            "legacy.default.svc.cluster.local"
        ]
    );
}

#[test]
fn slices_only_match_their_own_namespace_and_family() {
    let services = [
        headless_service("a", "db", false),
        headless_service("b", "db", false),
    ];
    let slices = [
        slice("a", "db-1", "db", "IPv4", &[("10.1.0.1", None, None)]),
        slice("b", "db-1", "db", "IPv6", &[("fd00::b", Some("x"), None)]),
        slice("b", "db-2", "db", "FQDN", &[("example.com", None, None)]),
        slice("c", "db-1", "db", "IPv4", &[("10.3.0.1", None, None)]),
    ];
    let got = records("cluster.local", &services, &slices, &[]);
    assert_eq!(
        names_of(&got, "10.1.0.1"),
        ["10-1-0-1.db.a.svc.cluster.local", "db.a.svc.cluster.local"]
    );
    assert_eq!(
        names_of(&got, "fd00::b"),
        ["x.db.b.svc.cluster.local", "db.b.svc.cluster.local"]
    );
    assert_eq!(got.len(), 2);
}

#[test]
fn pods_get_dashed_names() {
    let mut host_net = pod("kube-system", "node-agent", &["172.18.0.2"]);
    host_net.spec = Some(PodSpec {
        host_network: Some(true),
        ..PodSpec::default()
    });
    let mut finished = pod("default", "job-x", &["10.244.9.9"]);
    finished.status.as_mut().unwrap().phase = Some("Succeeded".to_owned());
    let pods = [
        pod("default", "web-1", &["10.244.1.5", "fd00:244::5"]),
        pod("shop", "cart-1", &["10.244.2.8"]),
        host_net,
        finished,
    ];
    let got = records("cluster.local", &[], &[], &pods);
    assert_eq!(
        got,
        vec![
            (
                ip("10.244.1.5"),
                vec!["10-244-1-5.default.pod.cluster.local".to_owned()]
            ),
            (
                ip("10.244.2.8"),
                vec!["10-244-2-8.shop.pod.cluster.local".to_owned()]
            ),
            (
                ip("fd00:244::5"),
                vec!["fd00-244--5.default.pod.cluster.local".to_owned()]
            ),
        ]
    );
}

#[test]
fn endpoint_names_come_before_pod_names_and_order_is_stable() {
    let services = [
        headless_service("default", "db", false),
        cluster_ip_service("default", "web", &["10.96.0.20"]),
    ];
    let slices = [slice(
        "default",
        "db-abc",
        "db",
        "IPv4",
        &[
            ("10.244.1.6", Some("db-1"), Some(true)),
            ("10.244.1.5", Some("db-0"), Some(true)),
        ],
    )];
    let pods = [
        pod("default", "db-1", &["10.244.1.6"]),
        pod("default", "db-0", &["10.244.1.5"]),
    ];
    let got = records("cluster.local", &services, &slices, &pods);
    assert_eq!(
        names_of(&got, "10.244.1.5"),
        [
            "db-0.db.default.svc.cluster.local",
            "db.default.svc.cluster.local",
            "10-244-1-5.default.pod.cluster.local"
        ]
    );
    let ips: Vec<IpAddr> = got.iter().map(|(ip, _)| *ip).collect();
    assert_eq!(ips, [ip("10.96.0.20"), ip("10.244.1.5"), ip("10.244.1.6")]);

    // Input order does not matter.
    let mut rev_services = services.clone();
    rev_services.reverse();
    let mut rev_pods = pods.clone();
    rev_pods.reverse();
    assert_eq!(
        records("cluster.local", &rev_services, &slices, &rev_pods),
        got
    );
}

#[test]
fn malformed_objects_are_skipped() {
    let mut external = cluster_ip_service("default", "ext", &[]);
    external.spec.as_mut().unwrap().type_ = Some("ExternalName".to_owned());
    external.spec.as_mut().unwrap().external_name = Some("example.com".to_owned());
    let mut no_ns = cluster_ip_service("x", "nons", &["10.96.0.30"]);
    no_ns.metadata.namespace = None;
    let services = [
        external,
        no_ns,
        cluster_ip_service("default", "bad ip", &["10.96.0.31"]),
        cluster_ip_service("default", "garbage", &["not-an-ip"]),
        cluster_ip_service("default", "pending", &[""]),
        Service::default(),
    ];
    let mut unlabeled = slice("default", "s", "x", "IPv4", &[("10.1.1.1", None, None)]);
    unlabeled.metadata.labels = None;
    let pods = [Pod::default(), pod("default", "p", &["nonsense"])];
    let got = records("cluster.local", &services, &[unlabeled], &pods);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn hosts_file_rendering() {
    let recs = vec![
        (
            ip("10.96.0.1"),
            vec!["kubernetes.default.svc.cluster.local".to_owned()],
        ),
        (
            ip("10.244.1.5"),
            vec![
                "a.x.svc.cluster.local".to_owned(),
                "b.x.svc.cluster.local".to_owned(),
            ],
        ),
        (ip("10.244.1.6"), vec![]),
    ];
    let text = render_hosts(&recs);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "10.96.0.1 kubernetes.default.svc.cluster.local",
            "10.244.1.5 a.x.svc.cluster.local b.x.svc.cluster.local"
        ]
    );
}

#[test]
fn writer_is_atomic_and_skips_identical_content() {
    let dir = temp_dir("writer");
    let mut writer = HostsWriter::new(&dir).unwrap();
    let recs = vec![(ip("10.96.0.1"), vec!["a.b.svc.cluster.local".to_owned()])];
    assert!(writer.write(&recs).unwrap());
    assert!(!writer.write(&recs).unwrap());
    let on_disk = fs::read_to_string(dir.join(HOSTS_FILE_NAME)).unwrap();
    assert!(on_disk.contains("10.96.0.1 a.b.svc.cluster.local\n"));
    assert!(!dir.join(TEMP_FILE_NAME).exists());

    // A new writer remembers the content already on disk.
    fs::write(dir.join(TEMP_FILE_NAME), "stale").unwrap();
    let mut again = HostsWriter::new(&dir).unwrap();
    assert!(!dir.join(TEMP_FILE_NAME).exists());
    assert!(!again.write(&recs).unwrap());
    assert!(again.write(&[]).unwrap());
    fs::remove_dir_all(&dir).unwrap();

    assert!(HostsWriter::new(&dir).is_err());
}

#[test]
fn dnsmasq_command_line() {
    let opts = ClusterDnsOptions {
        domain: "Cluster.Local.".to_owned(),
        hosts_dir: PathBuf::from("/run/dns"),
        port: 5353,
        listen: Some(ip("10.96.0.10")),
        ..ClusterDnsOptions::default()
    };
    let args: Vec<String> = dnsmasq_args(&opts)
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    for expected in [
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--hostsdir=/run/dns",
        "--local=/cluster.local/",
        "--port=5353",
        "--local-ttl=5",
        "--listen-address=10.96.0.10",
        "--bind-interfaces",
        "--txt-record=dns-version.cluster.local,1.1.0",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "{expected} missing: {args:?}"
        );
    }
    let all = dnsmasq_args(&ClusterDnsOptions::default());
    assert!(!all.iter().any(|a| a == "--bind-interfaces"));
}

/// A fresh directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kubelan-clusterdns-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn have(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `dig @127.0.0.1 -p PORT +short [args…]`, returning stdout, or the status
/// line (`NXDOMAIN`, `REFUSED`…) with `+short` left out when `status` is set.
async fn dig(port: u16, args: &[&str], status: bool) -> String {
    let mut cmd = tokio::process::Command::new("dig");
    cmd.arg("@127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(["+time=1", "+tries=2"]);
    if !status {
        cmd.arg("+short");
    }
    let out = cmd.args(args).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if status {
        text.split("status: ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or("")
            .to_owned()
    } else {
        text.trim().to_owned()
    }
}

/// Polls `dig` until it answers `want`, for at most `within`.
/// A loopback port free right now for UDP *and* TCP: dnsmasq binds both, and a port
/// picked for UDP alone was sometimes taken for TCP (CI failure: dnsmasq never came up).
fn free_dns_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port is free for both UDP and TCP");
}

async fn wait_answer(port: u16, args: &[&str], want: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let got = dig(port, args, false).await;
        if got == want || std::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dnsmasq_serves_and_follows_the_hosts_file() {
    if !have("dnsmasq", "--version") {
        println!("skipping: dnsmasq is not installed");
        return;
    }
    if !have("dig", "-v") {
        println!("skipping: dig is not installed");
        return;
    }
    let dir = temp_dir("dnsmasq");
    let mut writer = HostsWriter::new(&dir).unwrap();
    let services = [
        cluster_ip_service("default", "web", &["10.96.0.20"]),
        headless_service("default", "db", false),
    ];
    let slices = [slice(
        "default",
        "db-abc",
        "db",
        "IPv4",
        &[("10.244.1.5", Some("db-0"), Some(true))],
    )];
    writer
        .write(&records("cluster.local", &services, &slices, &[]))
        .unwrap();

    // A high port that is free right now; retried with another if dnsmasq
    // loses the race for it.
    let mut attempt = 0;
    let (mut sup, port) = loop {
        attempt += 1;
        let port = free_dns_port();
        let opts = ClusterDnsOptions {
            hosts_dir: dir.clone(),
            port,
            listen: Some(ip("127.0.0.1")),
            ..ClusterDnsOptions::default()
        };
        let mut sup = Dnsmasq::new(opts.dnsmasq.clone(), dnsmasq_args(&opts));
        sup.start().unwrap();
        let answer = wait_answer(
            port,
            &["web.default.svc.cluster.local"],
            "10.96.0.20",
            Duration::from_secs(3),
        )
        .await;
        if answer == "10.96.0.20" {
            break (sup, port);
        }
        sup.stop().await;
        assert!(attempt < 3, "dnsmasq did not answer: {answer:?}");
    };

    assert_eq!(
        dig(port, &["db-0.db.default.svc.cluster.local"], false).await,
        "10.244.1.5"
    );
    assert_eq!(
        dig(port, &["-x", "10.244.1.5"], false).await,
        "db-0.db.default.svc.cluster.local."
    );
    assert_eq!(
        dig(port, &["TXT", "dns-version.cluster.local"], false).await,
        "\"1.1.0\""
    );
    assert_eq!(
        dig(port, &["nope.default.svc.cluster.local"], true).await,
        "NXDOMAIN"
    );
    let outside = dig(port, &["example.com"], true).await;
    assert!(
        outside == "REFUSED" || outside == "NXDOMAIN",
        "outside name answered {outside:?}"
    );

    // Change the web service's IP and add a new one: visible within 2 s.
    let services = [
        cluster_ip_service("default", "web", &["10.96.0.21"]),
        cluster_ip_service("shop", "cart", &["10.96.0.22"]),
        headless_service("default", "db", false),
    ];
    let started = std::time::Instant::now();
    assert!(
        writer
            .write(&records("cluster.local", &services, &slices, &[]))
            .unwrap()
    );
    let web = wait_answer(
        port,
        &["web.default.svc.cluster.local"],
        "10.96.0.21",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(web, "10.96.0.21");
    assert_eq!(
        dig(port, &["cart.shop.svc.cluster.local"], false).await,
        "10.96.0.22"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        dig(port, &["-x", "10.96.0.20"], true).await,
        "NXDOMAIN",
        "the old address should be gone"
    );

    // Removing records takes effect as well.
    assert!(writer.write(&[]).unwrap());
    let gone = wait_answer(
        port,
        &["cart.shop.svc.cluster.local"],
        "",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(gone, "");

    sup.stop().await;
    assert!(sup.child.is_none());
    writer.remove_temp();
    fs::remove_dir_all(&dir).unwrap();
}

/// A minimal fake API server: lists with fixed content, and watches that
/// stay open; the Service watch streams whatever the test sends.
mod fake_api {
    use bytes::Bytes;
    use futures::StreamExt as _;
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use hyper::body::Frame;
    use serde_json::{Value, json};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    type Body = UnsyncBoxBody<Bytes, Infallible>;
    type Events = mpsc::UnboundedReceiver<Value>;

    /// The running fake: where it listens and how to feed Service events.
    pub(super) struct FakeApi {
        pub(super) addr: SocketAddr,
        pub(super) service_events: mpsc::UnboundedSender<Value>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeApi {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub(super) fn service(name: &str, ip: &str, version: u32) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": version.to_string()},
            "spec": {"clusterIP": ip, "clusterIPs": [ip]},
        })
    }

    fn pod(name: &str, ip: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        })
    }

    pub(super) async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (service_events, rx) = mpsc::unbounded_channel();
        let events = Arc::new(Mutex::new(Some(rx)));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let events = events.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let events = events.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &events)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApi {
            addr,
            service_events,
            task,
        }
    }

    fn answer(
        req: &http::Request<hyper::body::Incoming>,
        events: &Mutex<Option<Events>>,
    ) -> http::Response<Body> {
        let watch = req.uri().query().unwrap_or("").contains("watch=true");
        let (api_version, kind, items) = match req.uri().path() {
            "/api/v1/services" => (
                "v1",
                "ServiceList",
                vec![service("kubernetes", "10.96.0.1", 1)],
            ),
            "/api/v1/pods" => ("v1", "PodList", vec![pod("web-0", "10.244.0.5")]),
            "/apis/discovery.k8s.io/v1/endpointslices" => {
                ("discovery.k8s.io/v1", "EndpointSliceList", vec![])
            }
            _ => {
                let mut resp = http::Response::new(Full::new(Bytes::new()).boxed_unsync());
                *resp.status_mut() = http::StatusCode::NOT_FOUND;
                return resp;
            }
        };
        if !watch {
            let list = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"resourceVersion": "1"},
                "items": items,
            });
            return http::Response::new(Full::new(Bytes::from(list.to_string())).boxed_unsync());
        }
        let feed = if kind == "ServiceList" {
            events.lock().unwrap().take()
        } else {
            None
        };
        let stream = match feed {
            Some(rx) => futures::stream::unfold(rx, |mut rx| async move {
                let event = rx.recv().await?;
                let line = format!("{event}\n");
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx))
            })
            .boxed(),
            None => futures::stream::pending().boxed(),
        };
        http::Response::new(StreamBody::new(stream).boxed_unsync())
    }
}

#[tokio::test]
async fn run_follows_the_api() {
    if !have("dnsmasq", "--version") || !have("dig", "-v") {
        println!("skipping: dnsmasq or dig is not installed");
        return;
    }
    let api = fake_api::start().await;
    let config = kube::Config::new(format!("http://{}", api.addr).parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let dir = temp_dir("run");
    let port = free_dns_port();
    let opts = ClusterDnsOptions {
        hosts_dir: dir.clone(),
        port,
        listen: Some(ip("127.0.0.1")),
        ..ClusterDnsOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, client, async {
        let _ = stopped.await;
    }));

    let first = wait_answer(
        port,
        &["kubernetes.default.svc.cluster.local"],
        "10.96.0.1",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(first, "10.96.0.1");
    assert_eq!(
        dig(port, &["10-244-0-5.default.pod.cluster.local"], false).await,
        "10.244.0.5"
    );

    let steps = [
        (
            "ADDED",
            fake_api::service("web", "10.96.0.20", 2),
            "10.96.0.20",
        ),
        (
            "MODIFIED",
            fake_api::service("web", "10.96.0.21", 3),
            "10.96.0.21",
        ),
        ("DELETED", fake_api::service("web", "10.96.0.21", 4), ""),
    ];
    for (kind, object, want) in steps {
        let sent = std::time::Instant::now();
        api.service_events
            .send(serde_json::json!({"type": kind, "object": object}))
            .unwrap();
        let got = wait_answer(
            port,
            &["web.default.svc.cluster.local"],
            want,
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(got, want, "after {kind}");
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{kind} took too long"
        );
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run did not stop")
        .unwrap()
        .unwrap();
    assert!(!dir.join(TEMP_FILE_NAME).exists());
    assert_eq!(
        dig(port, &["kubernetes.default.svc.cluster.local"], true).await,
        ""
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn supervisor_restarts_with_backoff_and_stops() {
    // Any long-running program stands in for dnsmasq here.
    let mut sup = Dnsmasq::new(PathBuf::from("sleep"), vec!["30".into()]);
    sup.start().unwrap();
    sup.child.as_mut().unwrap().start_kill().unwrap();
    let status = wait_child(&mut sup.child).await;
    let before = Instant::now();
    sup.exited(status);
    assert!(sup.child.is_none());
    let first = sup.start_at.unwrap() - before;
    assert!(
        first <= RESTART_BACKOFF_MIN + Duration::from_millis(50),
        "{first:?}"
    );

    sup.start().unwrap();
    assert!(sup.start_at.is_none());
    sup.child.as_mut().unwrap().start_kill().unwrap();
    let status = wait_child(&mut sup.child).await;
    let before = Instant::now();
    sup.exited(status);
    let second = sup.start_at.unwrap() - before;
    assert!(second > first, "{second:?} should exceed {first:?}");

    sup.start().unwrap();
    let started = std::time::Instant::now();
    sup.stop().await;
    assert!(sup.child.is_none() && sup.start_at.is_none());
    assert!(
        started.elapsed() < STOP_GRACE,
        "SIGTERM should have sufficed"
    );
}

#[tokio::test]
async fn missing_dnsmasq_is_reported() {
    let mut sup = Dnsmasq::new(
        PathBuf::from("/nonexistent/kubelan-no-such-dnsmasq"),
        Vec::new(),
    );
    assert!(sup.start().is_err());
}
