//! nftables objects of one kubelan table, built as data (sans-IO): what the gateway and
//! `connect` install is decided here and tested as JSON, then handed to
//! [`create_table`](super::create_table) in one batch.

use std::borrow::Cow;
use std::collections::HashSet;

use ipnet::IpNet;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, Counter, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{self, Match, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// Priority of `dstnat` hooks (prerouting and output NAT).
pub const DSTNAT: i32 = -100;
/// Priority of `srcnat` hooks (postrouting NAT).
pub const SRCNAT: i32 = 100;

fn s(v: &str) -> Cow<'static, str> {
    Cow::Owned(v.to_string())
}

/// The address family of an IP header match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ip {
    /// IPv4 (`ip saddr`, `ip daddr`).
    V4,
    /// IPv6 (`ip6 saddr`, `ip6 daddr`).
    V6,
}

impl Ip {
    fn proto(self) -> &'static str {
        match self {
            Ip::V4 => "ip",
            Ip::V6 => "ip6",
        }
    }

    fn set_type(self) -> SetType {
        match self {
            Ip::V4 => SetType::Ipv4Addr,
            Ip::V6 => SetType::Ipv6Addr,
        }
    }

    /// Whether `net` is of this family.
    pub fn holds(self, net: &IpNet) -> bool {
        matches!((self, net), (Ip::V4, IpNet::V4(_)) | (Ip::V6, IpNet::V6(_)))
    }
}

/// Which address of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The source address.
    Saddr,
    /// The destination address.
    Daddr,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Saddr => "saddr",
            Field::Daddr => "daddr",
        }
    }
}

/// `ip daddr` (or `ip6 saddr`, …) as an expression.
pub fn addr(ip: Ip, field: Field) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: s(ip.proto()),
            field: s(field.name()),
        },
    )))
}

/// `ip daddr @set` (`in_set(.., true)`) or `ip daddr != @set`.
pub fn in_set(ip: Ip, field: Field, set: &str, member: bool) -> Statement<'static> {
    Statement::Match(Match {
        left: addr(ip, field),
        right: Expression::String(s(&format!("@{set}"))),
        op: if member { Operator::EQ } else { Operator::NEQ },
    })
}

/// `meta l4proto tcp`.
pub fn l4proto(proto: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::L4proto,
        })),
        right: Expression::String(s(proto)),
        op: Operator::EQ,
    })
}

/// `counter name NAME`.
pub fn count(name: &str) -> Statement<'static> {
    Statement::Counter(stmt::Counter::Named(s(name)))
}

/// `redirect to :PORT` (the packet goes to a local socket on `port`, the address being the
/// incoming interface's, or loopback for this host's own packets).
pub fn redirect(port: u16) -> Statement<'static> {
    Statement::Redirect(Some(NAT {
        addr: None,
        family: None,
        port: Some(Expression::Number(u32::from(port))),
        flags: None,
    }))
}

fn prefix(net: &IpNet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(s(&net.network().to_string()))),
        len: u32::from(net.prefix_len()),
    }))
}

/// One table's objects, all naming it.
#[derive(Debug, Clone)]
pub struct Table {
    family: NfFamily,
    name: String,
}

impl Table {
    /// Objects of table `family name`.
    pub fn new(family: NfFamily, name: &str) -> Table {
        Table {
            family,
            name: name.to_string(),
        }
    }

    /// A named counter.
    pub fn counter(&self, name: &str) -> NfListObject<'static> {
        NfListObject::Counter(Counter {
            family: self.family,
            table: s(&self.name),
            name: s(name),
            handle: None,
            packets: None,
            bytes: None,
        })
    }

    /// A constant set of the prefixes of `nets` that are of family `ip`.
    pub fn prefix_set(&self, name: &str, ip: Ip, nets: &[IpNet]) -> NfListObject<'static> {
        let elems: Vec<Expression<'static>> =
            nets.iter().filter(|n| ip.holds(n)).map(prefix).collect();
        self.set(
            name,
            ip,
            HashSet::from([SetFlag::Interval]),
            (!elems.is_empty()).then_some(Cow::Owned(elems)),
            None,
            None,
        )
    }

    /// A set the packet path fills, whose elements expire after `timeout` seconds.
    pub fn timeout_set(
        &self,
        name: &str,
        ip: Ip,
        size: u32,
        timeout: u32,
    ) -> NfListObject<'static> {
        // A set with timeouts can be updated from the packet path (nft 1.0.6's JSON parser
        // does not know the `dynamic` flag).
        self.set(
            name,
            ip,
            HashSet::from([SetFlag::Timeout]),
            None,
            Some(size),
            Some(timeout),
        )
    }

    fn set(
        &self,
        name: &str,
        ip: Ip,
        flags: HashSet<SetFlag>,
        elem: Option<Cow<'static, [Expression<'static>]>>,
        size: Option<u32>,
        timeout: Option<u32>,
    ) -> NfListObject<'static> {
        NfListObject::Set(Box::new(Set {
            family: self.family,
            table: s(&self.name),
            name: s(name),
            handle: None,
            set_type: SetTypeValue::Single(ip.set_type()),
            policy: None,
            flags: Some(flags),
            elem,
            timeout,
            gc_interval: None,
            size,
            comment: None,
        }))
    }

    /// A base chain with policy accept.
    pub fn chain(
        &self,
        name: &str,
        kind: NfChainType,
        hook: NfHook,
        prio: i32,
    ) -> NfListObject<'static> {
        NfListObject::Chain(Chain {
            family: self.family,
            table: s(&self.name),
            name: s(name),
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        })
    }

    /// A rule appended to `chain`.
    pub fn rule(
        &self,
        chain: &str,
        expr: Vec<Statement<'static>>,
        comment: &str,
    ) -> NfListObject<'static> {
        NfListObject::Rule(Rule {
            family: self.family,
            table: s(&self.name),
            chain: s(chain),
            expr: Cow::Owned(expr),
            handle: None,
            index: None,
            comment: Some(s(comment)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_sets_keep_their_family_only() {
        let t = Table::new(NfFamily::INet, "t");
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()];
        let v4 = serde_json::to_string(&t.prefix_set("c4", Ip::V4, &nets)).unwrap();
        let v6 = serde_json::to_string(&t.prefix_set("c6", Ip::V6, &nets)).unwrap();
        assert!(
            v4.contains(r#"{"prefix":{"addr":"10.0.0.0","len":8}}"#),
            "{v4}"
        );
        assert!(!v4.contains("fd00"), "{v4}");
        assert!(
            v6.contains(r#"{"prefix":{"addr":"fd00::","len":64}}"#),
            "{v6}"
        );
        assert!(v6.contains("ipv6_addr"), "{v6}");
        // An empty set has no element list (nft refuses an empty one).
        let none = serde_json::to_string(&t.prefix_set("e", Ip::V6, &nets[..1])).unwrap();
        assert!(!none.contains("elem"), "{none}");
    }

    #[test]
    fn redirect_and_matches_serialize_as_nft_reads_them() {
        let j = serde_json::to_string(&vec![
            l4proto("tcp"),
            in_set(Ip::V4, Field::Daddr, "skip", false),
            redirect(40123),
        ])
        .unwrap();
        assert!(j.contains(r#"{"meta":{"key":"l4proto"}}"#), "{j}");
        assert!(j.contains(r#""op":"!=""#), "{j}");
        assert!(j.contains(r#"{"redirect":{"port":40123}}"#), "{j}");
    }
}
