//! A real resolver client against `answer`: `dig` queries a UDP (and TCP) socket on
//! 127.0.0.1 served by `kubelan_dns::answer`/`answer_tcp`. Skipped when `dig` is missing.

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubelan_dns::{Answer, ClusterNames};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};

const DOMAIN: &str = "cluster.local";

fn cache() -> ClusterNames {
    let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).unwrap() };
    let endpoints: Vec<serde_json::Value> = (0..60)
        .map(|i| json!({"addresses": [format!("10.244.3.{i}")], "hostname": format!("m-{i}")}))
        .collect();
    let slices: Vec<EndpointSlice> = [
        json!({"metadata": {"name": "db-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "db-0"}, {"addresses": ["10.244.1.6"], "hostname": "db-1"}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}),
        json!({"metadata": {"name": "big-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "big"}},
            "addressType": "IPv4", "endpoints": endpoints}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let mut names = ClusterNames::new(DOMAIN);
    names.replace_all(
        &[
            svc(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                    "ports": [{"name": "http", "port": 80}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {"clusterIP": "None"}})),
            svc(json!({"metadata": {"name": "big", "namespace": "default"}, "spec": {"clusterIP": "None"}})),
        ],
        &slices,
        &[],
    );
    names
}

/// Serves `answer` on UDP and `answer_tcp` on TCP, on the same loopback port.
async fn serve(names: Arc<ClusterNames>) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).await.unwrap();
    let udp_names = names.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            if let Answer::Reply(reply) = kubelan_dns::answer(&buf[..n], &udp_names, DOMAIN) {
                let _ = udp.send_to(&reply, from).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let names = names.clone();
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 2];
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if stream.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    let Answer::Reply(reply) = kubelan_dns::answer_tcp(&query, &names, DOMAIN)
                    else {
                        return;
                    };
                    let mut framed = u16::try_from(reply.len()).unwrap().to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn dig_gets_answers() {
    if std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("skipped: `dig` is not installed (apt-get install bind9-dnsutils)");
        return;
    }
    let addr = serve(Arc::new(cache())).await;

    assert_eq!(
        dig(addr, &["+short", "web.default.svc.cluster.local"]).await,
        "10.96.0.10\n"
    );
    assert_eq!(
        dig(addr, &["+short", "AAAA", "WEB.default.svc.cluster.local."]).await,
        "fd00::10\n"
    );
    assert_eq!(
        dig(addr, &["+short", "db-1.db.default.svc.cluster.local"]).await,
        "10.244.1.6\n"
    );
    assert_eq!(
        dig(
            addr,
            &["+short", "SRV", "_http._tcp.web.default.svc.cluster.local"]
        )
        .await,
        "0 100 80 web.default.svc.cluster.local.\n"
    );
    assert_eq!(
        dig(addr, &["+short", "-x", "10.96.0.10"]).await,
        "web.default.svc.cluster.local.\n"
    );
    assert_eq!(
        dig(addr, &["+short", "TXT", "dns-version.cluster.local"]).await,
        "\"1.1.0\"\n"
    );

    let full = dig(addr, &["nope.default.svc.cluster.local"]).await;
    assert!(full.contains("status: NXDOMAIN"), "{full}");
    assert!(full.contains("flags: qr aa rd ra"), "{full}");
    assert!(
        full.contains("IN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local."),
        "{full}"
    );
    // dig sends EDNS with a cookie; the reply carries an OPT record.
    assert!(full.contains("OPT PSEUDOSECTION"), "{full}");

    let nodata = dig(addr, &["AAAA", "db.default.svc.cluster.local"]).await;
    assert!(nodata.contains("status: NOERROR"), "{nodata}");
    assert!(nodata.contains("ANSWER: 0"), "{nodata}");

    // 60 addresses do not fit 512 bytes: TC over UDP, then dig retries over TCP.
    let big = dig(addr, &["+noedns", "big.default.svc.cluster.local"]).await;
    assert!(big.contains("Truncated, retrying in TCP mode"), "{big}");
    assert!(big.contains("ANSWER: 60"), "{big}");
}
