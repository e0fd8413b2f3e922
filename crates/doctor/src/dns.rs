//! DNS: does the server this host (or the LAN) uses answer a cluster name with the right
//! ClusterIP, and names outside the cluster at all?

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kubelan_cluster::discovery::ClusterFacts;

use crate::{Report, Verdict};

/// This host's first resolver in `/etc/resolv.conf`.
pub(crate) fn first_resolver() -> Option<IpAddr> {
    let bytes = std::fs::read(kubelan_sys::dns::DEFAULT_RESOLV_CONF).ok()?;
    kubelan_sys::dns::ResolvConf::parse_bytes(&bytes)
        .nameservers
        .into_iter()
        .next()
}

fn dns_query(name: &str, ty: RecordType) -> Option<Vec<u8>> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).ok()?, ty));
    m.to_vec().ok()
}

async fn ask(server: IpAddr, name: &str, timeout: Duration) -> Result<Message, String> {
    let q = dns_query(name, RecordType::A).ok_or("cannot build the query")?;
    let reply = kubelan_dns::forward_udp(&q, SocketAddr::new(server, 53), timeout)
        .await
        .map_err(|e| e.to_string())?;
    Message::from_vec(&reply).map_err(|e| e.to_string())
}

pub(crate) async fn check_dns(
    r: &mut Report<'_>,
    cc: &kubelan_cluster::ClusterClient,
    facts: &ClusterFacts,
    server: Option<IpAddr>,
    timeout: Duration,
) {
    let Some(server) = server else {
        r.add(
            "dns",
            Verdict::Skip,
            "no DNS server to check (pass --dns or --via)".into(),
            None,
        );
        return;
    };
    let domain = facts.cluster_domain.value.trim_matches('.');
    let name = format!("kubernetes.default.svc.{domain}.");
    let expected: Option<IpAddr> = Api::<Service>::namespaced(cc.client.clone(), "default")
        .get("kubernetes")
        .await
        .ok()
        .and_then(|s| s.spec?.cluster_ip?.parse().ok());
    let answer = ask(server, &name, timeout).await;
    let (verdict, what, fix) = cluster_name_finding(server, &name, domain, expected, &answer);
    r.add("dns", verdict, what, fix);
    // A name outside the cluster: any answer but SERVFAIL proves the upstream path.
    let answer = ask(server, "kubelan-doctor.example.", timeout).await;
    let (verdict, what, fix) = outside_name_finding(server, &answer);
    r.add("dns", verdict, what, fix);
}

/// A line of the DNS step: verdict, what, fix.
type Finding = (Verdict, String, Option<String>);

/// The verdict on `server`'s answer for the cluster name `name` (the `kubernetes`
/// Service), whose ClusterIP the API says is `expected`.
fn cluster_name_finding(
    server: IpAddr,
    name: &str,
    domain: &str,
    expected: Option<IpAddr>,
    answer: &Result<Message, String>,
) -> Finding {
    match answer {
        Ok(m) if m.metadata.response_code == ResponseCode::NoError => {
            let got: Vec<IpAddr> = m
                .answers
                .iter()
                .filter_map(|a| match &a.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect();
            match expected {
                Some(e) if !got.contains(&e) => (
                    Verdict::Fail,
                    format!("{server} answers {name} with {got:?}, but its ClusterIP is {e}"),
                    Some("the DNS server answers from another cluster or a stale cache; point the cluster domain at the gateway".into()),
                ),
                _ => (
                    Verdict::Pass,
                    format!("{server} answers {name} → {got:?}"),
                    None,
                ),
            }
        }
        Ok(m) if m.metadata.response_code == ResponseCode::Refused => (
            Verdict::Fail,
            format!("{server} refused {name}"),
            Some(
                "the gateway serves only its --lan networks: add this host's network with --lan"
                    .into(),
            ),
        ),
        Ok(m) => (
            Verdict::Fail,
            format!("{server} answers {name} with {}", m.metadata.response_code),
            Some(format!(
                "forward the zone {domain} to the kubelan gateway (`kubelan routes --format dnsmasq` and others print how)"
            )),
        ),
        Err(e) => (
            Verdict::Fail,
            format!("no DNS answer from {server} for {name}: {e}"),
            Some("is `kubelan gateway` running and is UDP/TCP 53 open to this host?".into()),
        ),
    }
}

/// The verdict on `server`'s answer for a name outside the cluster.
fn outside_name_finding(server: IpAddr, answer: &Result<Message, String>) -> Finding {
    match answer {
        Ok(m) if m.metadata.response_code == ResponseCode::Refused => (
            Verdict::Warn,
            format!("{server} answers names outside the cluster with REFUSED"),
            Some("the resolvers in the gateway host's /etc/resolv.conf do not resolve other names for it; give it a resolver that does".into()),
        ),
        Ok(m) if m.metadata.response_code != ResponseCode::ServFail => (
            Verdict::Pass,
            format!(
                "{server} answers names outside the cluster ({} for kubelan-doctor.example)",
                m.metadata.response_code
            ),
            None,
        ),
        Ok(_) => (
            Verdict::Warn,
            format!("{server} fails names outside the cluster (SERVFAIL)"),
            Some("the gateway's host has no working resolver in /etc/resolv.conf".into()),
        ),
        Err(e) => (
            Verdict::Warn,
            format!("{server} does not answer names outside the cluster: {e}"),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::A;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn reply(code: ResponseCode, answers: &[&str]) -> Result<Message, String> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = code;
        for a in answers {
            let IpAddr::V4(v4) = ip(a) else { panic!() };
            m.add_answer(Record::from_rdata(
                Name::from_ascii("kubernetes.default.svc.cluster.local.").unwrap(),
                30,
                RData::A(A(v4)),
            ));
        }
        Ok(m)
    }

    const NAME: &str = "kubernetes.default.svc.cluster.local.";

    #[test]
    fn the_cluster_name_must_answer_the_apis_cluster_ip() {
        let server = ip("10.4.7.11");
        let expected = Some(ip("172.17.16.1"));
        let ok = cluster_name_finding(
            server,
            NAME,
            "cluster.local",
            expected,
            &reply(ResponseCode::NoError, &["172.17.16.1"]),
        );
        assert_eq!(
            ok,
            (
                Verdict::Pass,
                "10.4.7.11 answers kubernetes.default.svc.cluster.local. → [172.17.16.1]"
                    .to_string(),
                None
            )
        );
        let stale = cluster_name_finding(
            server,
            NAME,
            "cluster.local",
            expected,
            &reply(ResponseCode::NoError, &["10.96.0.1"]),
        );
        assert_eq!(stale.0, Verdict::Fail);
        assert_eq!(
            stale.1,
            "10.4.7.11 answers kubernetes.default.svc.cluster.local. with [10.96.0.1], but its ClusterIP is 172.17.16.1"
        );
        let refused = cluster_name_finding(
            server,
            NAME,
            "cluster.local",
            expected,
            &reply(ResponseCode::Refused, &[]),
        );
        assert_eq!(refused.0, Verdict::Fail);
        assert!(refused.2.unwrap().contains("--lan"));
        let nx = cluster_name_finding(
            server,
            NAME,
            "cluster.local",
            expected,
            &reply(ResponseCode::NXDomain, &[]),
        );
        assert!(nx.2.unwrap().starts_with("forward the zone cluster.local"));
        let none = cluster_name_finding(
            server,
            NAME,
            "cluster.local",
            expected,
            &Err("timed out".into()),
        );
        assert_eq!(
            none.1,
            "no DNS answer from 10.4.7.11 for kubernetes.default.svc.cluster.local.: timed out"
        );
    }

    #[test]
    fn other_names_pass_unless_refused_or_failed() {
        let server = ip("10.4.7.11");
        let nx = outside_name_finding(server, &reply(ResponseCode::NXDomain, &[]));
        assert_eq!(nx.0, Verdict::Pass);
        assert!(
            nx.1.contains("(Non-Existent Domain for kubelan-doctor.example)")
                || nx.1.contains("for kubelan-doctor.example)"),
            "{}",
            nx.1
        );
        assert_eq!(
            outside_name_finding(server, &reply(ResponseCode::Refused, &[])).0,
            Verdict::Warn
        );
        let sf = outside_name_finding(server, &reply(ResponseCode::ServFail, &[]));
        assert_eq!(
            (sf.0, sf.1.as_str()),
            (
                Verdict::Warn,
                "10.4.7.11 fails names outside the cluster (SERVFAIL)"
            )
        );
        assert_eq!(outside_name_finding(server, &Err("x".into())).2, None);
    }
}
