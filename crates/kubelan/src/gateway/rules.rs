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

use std::borrow::Cow;
use std::collections::HashSet;

use ipnet::Ipv4Net;
use nftables::expr::{CT, Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, Counter, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{self, Match, Operator, SetOp, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// The table's name (family `ip`).
pub(crate) const TABLE: &str = "kubelan";
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

fn s(v: &str) -> Cow<'static, str> {
    Cow::Owned(v.to_string())
}

fn addr_field(field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: s("ip"),
            field: s(field),
        },
    )))
}

fn in_set(field: &str, set: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: addr_field(field),
        right: Expression::String(s(&format!("@{set}"))),
        op: Operator::EQ,
    })
}

fn counter(name: &str) -> Statement<'static> {
    Statement::Counter(stmt::Counter::Named(s(name)))
}

fn prefix(net: &Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(s(&net.network().to_string()))),
        len: u32::from(net.prefix_len()),
    }))
}

fn set(name: &str, nets: Option<&[Ipv4Net]>) -> NfListObject<'static> {
    let mut flags = HashSet::new();
    let (elem, size, timeout) = match nets {
        Some(nets) => {
            flags.insert(SetFlag::Interval);
            let elems: Vec<Expression<'static>> = nets.iter().map(prefix).collect();
            (Some(Cow::Owned(elems)), None, None)
        }
        None => {
            // A set with timeouts can be updated from the packet path (nft 1.0.6's JSON
            // parser does not know the `dynamic` flag).
            flags.insert(SetFlag::Timeout);
            (None, Some(65_536), Some(3_600))
        }
    };
    NfListObject::Set(Box::new(Set {
        family: NfFamily::IP,
        table: s(TABLE),
        name: s(name),
        handle: None,
        set_type: SetTypeValue::Single(SetType::Ipv4Addr),
        policy: None,
        flags: Some(flags),
        elem,
        timeout,
        gc_interval: None,
        size,
        comment: None,
    }))
}

fn chain(name: &str, kind: NfChainType, hook: NfHook, prio: i32) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: s(TABLE),
        name: s(name),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

fn rule(chain: &str, expr: Vec<Statement<'static>>, comment: &str) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: s(TABLE),
        chain: s(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some(s(comment)),
    })
}

fn named_counter(name: &str) -> NfListObject<'static> {
    NfListObject::Counter(Counter {
        family: NfFamily::IP,
        table: s(TABLE),
        name: s(name),
        handle: None,
        packets: None,
        bytes: None,
    })
}

impl GatewayRules {
    /// The table's objects (the table itself is added by `kubelan_sys::nft::create_table`).
    pub(crate) fn objects(&self) -> Vec<NfListObject<'static>> {
        let mut out: Vec<NfListObject<'static>> = [FLOWS, UP, DOWN, SNAT]
            .iter()
            .map(|c| named_counter(c))
            .collect();
        out.push(set("lan", Some(&self.lan)));
        out.push(set("cluster", Some(&self.cluster)));
        out.push(set(CLIENTS, None));
        out.push(chain("forward", NfChainType::Filter, NfHook::Forward, 0));
        let lan_to_cluster = || vec![in_set("saddr", "lan"), in_set("daddr", "cluster")];
        let mut new_flow = lan_to_cluster();
        new_flow.push(Statement::Match(Match {
            left: Expression::Named(NamedExpression::CT(CT {
                key: s("state"),
                family: None,
                dir: None,
            })),
            right: Expression::String(s("new")),
            op: Operator::IN,
        }));
        new_flow.push(counter(FLOWS));
        new_flow.push(Statement::Set(stmt::Set {
            op: SetOp::Update,
            elem: addr_field("saddr"),
            set: s(&format!("@{CLIENTS}")),
        }));
        out.push(rule(
            "forward",
            new_flow,
            "kubelan: new LAN flows into the cluster",
        ));
        let mut up = lan_to_cluster();
        up.push(counter(UP));
        out.push(rule("forward", up, "kubelan: LAN to cluster traffic"));
        out.push(rule(
            "forward",
            vec![
                in_set("saddr", "cluster"),
                in_set("daddr", "lan"),
                counter(DOWN),
            ],
            "kubelan: cluster to LAN traffic",
        ));
        if self.snat {
            // srcnat = 100.
            out.push(chain(
                "postrouting",
                NfChainType::NAT,
                NfHook::Postrouting,
                100,
            ));
            let mut snat = lan_to_cluster();
            snat.push(counter(SNAT));
            snat.push(Statement::Masquerade(None));
            out.push(rule(
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
