//! The nftables table of `kubelan gateway --mode node` (`table ip kubelan`), built as data.
//!
//! ```text
//! table ip kubelan {
//!   counter flows {}  counter up {}  counter down {}  counter snat {}
//!   set lan      { type ipv4_addr; flags interval; elements = { <--lan> } }
//!   set cluster  { type ipv4_addr; flags interval; elements = { <Pod and Service CIDRs> } }
//!   set clients  { type ipv4_addr; size 65536; flags timeout; timeout 1h }
//!   chain forward { type filter hook forward priority 0; policy accept;
//!     ip saddr @lan ip daddr @cluster ct state new counter name flows update @clients { ip saddr }
//!     ip saddr @lan ip daddr @cluster counter name up
//!     ip saddr @cluster ip daddr @lan counter name down }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr @lan ip daddr @cluster counter name snat masquerade }   # not with --no-snat
//! }
//! ```
//!
//! The forward chain only counts (policy accept, no verdicts), so it never changes what
//! other tables decide. The LAN set never overlaps the cluster set (checked before), so
//! pod-to-pod traffic through the node is never masqueraded.

use ipnet::{IpNet, Ipv4Net};
use kubelan_sys::nft::build::{self, Field, Ip, SRCNAT, Table, count, in_set};
use nftables::expr::{CT, Expression, NamedExpression};
use nftables::schema::NfListObject;
use nftables::stmt::{self, Match, Operator, SetOp, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};

/// The table's name (family `ip`).
pub const TABLE: &str = "kubelan";
/// Counter of new LAN → cluster connections.
pub(crate) const FLOWS: &str = "flows";
/// Counter of LAN → cluster packets and bytes.
pub(crate) const UP: &str = "up";
/// Counter of cluster → LAN packets and bytes.
pub(crate) const DOWN: &str = "down";
/// Counter of masqueraded connections (first packets).
pub(crate) const SNAT: &str = "snat";
/// Set of LAN clients seen recently.
pub(crate) const CLIENTS: &str = "clients";

/// What the table does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GatewayRules {
    /// Who is served.
    pub lan: Vec<Ipv4Net>,
    /// Where to: the cluster's IPv4 Pod and Service prefixes.
    pub cluster: Vec<Ipv4Net>,
    /// Masquerade LAN → cluster traffic to this host's address.
    pub snat: bool,
}

fn nets(v: &[Ipv4Net]) -> Vec<IpNet> {
    v.iter().copied().map(IpNet::V4).collect()
}

impl GatewayRules {
    /// The table's objects (the table itself is added by `kubelan_sys::nft::create_table`).
    pub(crate) fn objects(&self) -> Vec<NfListObject<'static>> {
        let t = Table::new(NfFamily::IP, TABLE);
        let mut out: Vec<NfListObject<'static>> = [FLOWS, UP, DOWN, SNAT]
            .iter()
            .map(|c| t.counter(c))
            .collect();
        out.push(t.prefix_set("lan", Ip::V4, &nets(&self.lan)));
        out.push(t.prefix_set("cluster", Ip::V4, &nets(&self.cluster)));
        out.push(t.timeout_set(CLIENTS, Ip::V4, 65_536, 3_600));
        out.push(t.chain("forward", NfChainType::Filter, NfHook::Forward, 0));
        let lan_to_cluster = || {
            vec![
                in_set(Ip::V4, Field::Saddr, "lan", true),
                in_set(Ip::V4, Field::Daddr, "cluster", true),
            ]
        };
        let mut new_flow = lan_to_cluster();
        new_flow.push(Statement::Match(Match {
            left: Expression::Named(NamedExpression::CT(CT {
                key: "state".into(),
                family: None,
                dir: None,
            })),
            right: Expression::String("new".into()),
            op: Operator::IN,
        }));
        new_flow.push(count(FLOWS));
        new_flow.push(Statement::Set(stmt::Set {
            op: SetOp::Update,
            elem: build::addr(Ip::V4, Field::Saddr),
            set: format!("@{CLIENTS}").into(),
        }));
        out.push(t.rule(
            "forward",
            new_flow,
            "kubelan: new LAN flows into the cluster",
        ));
        let mut up = lan_to_cluster();
        up.push(count(UP));
        out.push(t.rule("forward", up, "kubelan: LAN to cluster traffic"));
        out.push(t.rule(
            "forward",
            vec![
                in_set(Ip::V4, Field::Saddr, "cluster", true),
                in_set(Ip::V4, Field::Daddr, "lan", true),
                count(DOWN),
            ],
            "kubelan: cluster to LAN traffic",
        ));
        if self.snat {
            out.push(t.chain("postrouting", NfChainType::NAT, NfHook::Postrouting, SRCNAT));
            let mut snat = lan_to_cluster();
            snat.push(count(SNAT));
            snat.push(Statement::Masquerade(None));
            out.push(t.rule(
                "postrouting",
                snat,
                "kubelan: LAN clients appear as this host to pods, so replies come back here",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(snat: bool) -> GatewayRules {
        GatewayRules {
            lan: vec!["172.16.0.0/18".parse().unwrap()],
            cluster: vec![
                "172.17.16.0/20".parse().unwrap(),
                "172.17.32.0/24".parse().unwrap(),
            ],
            snat,
        }
    }

    #[test]
    fn snat_rule_only_when_asked() {
        let json = |r: &GatewayRules| serde_json::to_string(&r.objects()).unwrap();
        assert!(json(&rules(true)).contains("masquerade"));
        assert!(!json(&rules(false)).contains("masquerade"));
        assert!(!json(&rules(false)).contains("postrouting"));
    }

    #[test]
    fn sets_hold_the_prefixes() {
        let json = serde_json::to_string(&rules(true).objects()).unwrap();
        assert!(
            json.contains(r#"{"prefix":{"addr":"172.16.0.0","len":18}}"#),
            "{json}"
        );
        assert!(
            json.contains(r#"{"prefix":{"addr":"172.17.32.0","len":24}}"#),
            "{json}"
        );
        assert!(json.contains(r#""@clients""#), "{json}");
    }
}
