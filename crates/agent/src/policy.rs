//! Destination policy: which addresses the agent dials for clients.
//!
//! Allowed: the cluster's Pod and Service prefixes, the cluster DNS server, addresses the
//! watch cache knows as cluster addresses (ClusterIPs, endpoint and pod IPs), and any
//! `--allow` prefix. Never allowed, whatever the flags: loopback (the agent's own ports),
//! link-local (cloud metadata at 169.254.169.254 and fe80::/10), the AWS IPv6 metadata
//! address, unspecified, multicast and broadcast addresses.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use kubelan_proto::{Cidr, ErrorKind, FlowError};

/// Extra "is this a cluster address?" knowledge (the DNS watch cache).
pub type KnownAddrs = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// The destination policy.
#[derive(Clone)]
pub struct Policy {
    /// Pod and Service prefixes (from flags and the cluster), updated by discovery.
    cluster: Arc<RwLock<Vec<Cidr>>>,
    /// `--allow` prefixes.
    extra: Vec<Cidr>,
    /// The cluster DNS server.
    dns: Option<IpAddr>,
    known: Option<KnownAddrs>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("cluster", &self.cluster)
            .field("extra", &self.extra)
            .field("dns", &self.dns)
            .finish()
    }
}

const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            if a.is_loopback() {
                Some("a loopback address (the agent's own ports)")
            } else if a.is_link_local() {
                Some("link-local (cloud metadata lives there)")
            } else if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            if a.is_loopback() {
                Some("a loopback address (the agent's own ports)")
            } else if a.is_unicast_link_local() || a == AWS_METADATA_V6 {
                Some("link-local or cloud metadata")
            } else if a.is_unspecified() || a.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
    }
}

impl Policy {
    /// A policy allowing `cluster` prefixes, `extra` (`--allow`) and the DNS server.
    pub fn new(cluster: Vec<Cidr>, extra: Vec<Cidr>, dns: Option<IpAddr>) -> Policy {
        Policy {
            cluster: Arc::new(RwLock::new(cluster)),
            extra,
            dns,
            known: None,
        }
    }

    /// Also allows addresses `known` recognises as the cluster's.
    pub fn with_known(mut self, known: KnownAddrs) -> Policy {
        self.known = Some(known);
        self
    }

    /// Replaces the cluster prefixes (after discovery).
    pub fn set_cluster(&self, cidrs: Vec<Cidr>) {
        *self.cluster.write().expect("policy lock") = cidrs;
    }

    /// The cluster prefixes now in force.
    pub fn cluster(&self) -> Vec<Cidr> {
        self.cluster.read().expect("policy lock").clone()
    }

    /// Checks one destination.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Policy`] with the reason and the flag that widens the policy.
    pub fn check(&self, ip: IpAddr) -> Result<(), FlowError> {
        if let Some(why) = forbidden(ip) {
            return Err(FlowError::new(
                ErrorKind::Policy,
                format!("{ip} is {why}; the agent never dials it"),
            ));
        }
        let allowed = Some(ip) == self.dns
            || self.extra.iter().any(|c| c.contains(ip))
            || self
                .cluster
                .read()
                .expect("policy lock")
                .iter()
                .any(|c| c.contains(ip))
            || self.known.as_ref().is_some_and(|k| k(ip));
        if allowed {
            Ok(())
        } else {
            Err(FlowError::new(
                ErrorKind::Policy,
                format!(
                    "{ip} is outside the cluster's Pod and Service networks; an admin can widen the agent's policy with `--allow CIDR`"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Policy {
        Policy::new(
            vec![
                "172.17.32.0/19".parse().unwrap(),
                "172.17.16.0/20".parse().unwrap(),
            ],
            vec!["192.0.2.0/24".parse().unwrap()],
            Some("172.17.16.10".parse().unwrap()),
        )
    }

    #[test]
    fn cluster_prefixes_dns_and_allow_pass() {
        let p = p();
        for ip in ["172.17.32.5", "172.17.16.1", "172.17.16.10", "192.0.2.9"] {
            assert!(p.check(ip.parse().unwrap()).is_ok(), "{ip}");
        }
    }

    #[test]
    fn everything_else_is_refused_with_the_flag_to_use() {
        let e = p().check("10.4.7.2".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Policy);
        assert!(e.message.contains("--allow"), "{e}");
    }

    #[test]
    fn metadata_and_loopback_are_never_allowed_even_with_allow() {
        let p = Policy::new(
            vec![],
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            None,
        );
        for ip in [
            "169.254.169.254",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "0.0.0.0",
        ] {
            assert_eq!(
                p.check(ip.parse().unwrap()).unwrap_err().kind,
                ErrorKind::Policy,
                "{ip}"
            );
        }
        assert!(p.check("8.8.8.8".parse().unwrap()).is_ok());
    }

    #[test]
    fn known_cluster_addresses_pass() {
        let p = Policy::new(vec![], vec![], None)
            .with_known(Arc::new(|ip| ip == "10.96.0.7".parse::<IpAddr>().unwrap()));
        assert!(p.check("10.96.0.7".parse().unwrap()).is_ok());
        assert!(p.check("10.96.0.8".parse().unwrap()).is_err());
    }
}
