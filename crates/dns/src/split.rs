//! Split DNS for `kubelan connect` and `kubelan gateway`: which queries belong to the
//! cluster and which go to the resolvers the machine already had.
//!
//! Sans-IO. The caller owns the sockets: it asks [`SplitZones::route`] per query, sends
//! [`Route::Cluster`] queries through the tunnel (the agent answers them from its cache or
//! its cluster DNS server) and relays [`Route::Upstream`] ones unchanged to the original
//! resolvers, so nothing outside the cluster domain is hijacked. When neither path
//! answers, [`servfail`] gives the client a prompt failure instead of a timeout.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, ResponseCode};

use crate::query::{Question, Screen, screen};

/// Where one query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A name in the cluster domain, or a reverse lookup of a cluster address.
    Cluster,
    /// Anything else: the machine's own resolvers.
    Upstream,
    /// Not a query we can route (it fails [`screen`]: malformed, not exactly one question,
    /// a response): answer FORMERR with [`formerr`] or drop it.
    Invalid,
}

/// The names and reverse zones that belong to the cluster.
#[derive(Debug, Clone)]
pub struct SplitZones {
    domain: String,
    prefixes: Vec<(IpAddr, u8)>,
}

impl SplitZones {
    /// The cluster domain (`cluster.local`) and the cluster's Pod and Service prefixes
    /// (address, prefix length) whose reverse names the cluster answers.
    pub fn new(domain: &str, prefixes: impl IntoIterator<Item = (IpAddr, u8)>) -> SplitZones {
        SplitZones {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            prefixes: prefixes.into_iter().collect(),
        }
    }

    /// The cluster domain, lower case, without dots at either end.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Routes one raw query: [`Route::Invalid`] for anything that does not pass
    /// [`screen`] (malformed, not one question, a response). Never panics, whatever the
    /// input.
    pub fn route(&self, query: &[u8]) -> Route {
        match screen(query) {
            Screen::Query(question) => self.route_question(&question),
            Screen::FormErr(_) | Screen::Drop => Route::Invalid,
        }
    }

    /// Routes the question of a query that passed [`screen`].
    pub fn route_question(&self, question: &Question<'_>) -> Route {
        if self.is_cluster_name(&question.name_text()) {
            Route::Cluster
        } else {
            Route::Upstream
        }
    }

    /// Whether `name` (no trailing dot) is in the cluster domain or is the reverse name
    /// of an address inside a cluster prefix.
    pub fn is_cluster_name(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        if !self.domain.is_empty()
            && (name == self.domain
                || name
                    .strip_suffix(&self.domain)
                    .is_some_and(|head| head.ends_with('.')))
        {
            return true;
        }
        match reverse_address(name) {
            Some(ip) => self
                .prefixes
                .iter()
                .any(|&(net, len)| contains(net, len, ip)),
            None => false,
        }
    }
}

/// The address of a full reverse name (`4.32.17.172.in-addr.arpa`, or the 32 nibbles of
/// an `ip6.arpa` name); `None` for anything else (including partial zones).
fn reverse_address(name: &str) -> Option<IpAddr> {
    if let Some(head) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let parts: Vec<&str> = head.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        for (i, p) in parts.iter().rev().enumerate() {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            octets[i] = p.parse().ok()?;
        }
        return Some(IpAddr::from(octets));
    }
    let head = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = head.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, n) in nibbles.iter().rev().enumerate() {
        if n.len() != 1 {
            return None;
        }
        let v = u8::from_str_radix(n, 16).ok()?;
        bytes[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
    }
    Some(IpAddr::from(bytes))
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// A SERVFAIL reply to `query` (same ID, question and RD flag), for when no resolver
/// answered; `None` when `query` is not a parseable query.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    error_reply(query, ResponseCode::ServFail)
}

/// A REFUSED reply to `query` (a client this server does not serve); `None` when `query`
/// is not a parseable query.
pub fn refused(query: &[u8]) -> Option<Vec<u8>> {
    error_reply(query, ResponseCode::Refused)
}

/// A FORMERR reply to `query` when its header can be read at all (see
/// [`crate::query::formerr`]).
pub fn formerr(query: &[u8]) -> Option<Vec<u8>> {
    crate::query::formerr(query)
}

fn error_reply(query: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(msg.metadata.id, msg.metadata.op_code);
    reply.metadata.recursion_desired = msg.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.queries = msg.queries.clone();
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    fn query(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    fn zones() -> SplitZones {
        SplitZones::new(
            "cluster.local.",
            [
                ("172.17.32.0".parse().unwrap(), 19),
                ("172.17.16.0".parse().unwrap(), 20),
                ("fd00:10::".parse().unwrap(), 64),
            ],
        )
    }

    #[test]
    fn routes_cluster_names_and_reverse_zones() {
        let z = zones();
        for (name, want) in [
            ("web.default.svc.cluster.local.", Route::Cluster),
            ("WEB.Default.SVC.Cluster.Local.", Route::Cluster),
            ("cluster.local.", Route::Cluster),
            ("db-2.db.default.svc.cluster.local", Route::Cluster),
            ("notcluster.local.", Route::Upstream),
            ("www.wan.example.", Route::Upstream),
            ("web.default.", Route::Upstream),
            ("4.32.17.172.in-addr.arpa.", Route::Cluster),
            ("10.16.17.172.in-addr.arpa.", Route::Cluster),
            ("1.0.16.172.in-addr.arpa.", Route::Upstream),
            ("17.172.in-addr.arpa.", Route::Upstream),
            ("300.32.17.172.in-addr.arpa.", Route::Upstream),
        ] {
            assert_eq!(z.route(&query(name, RecordType::A)), want, "{name}");
        }
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(z.route(&query(v6, RecordType::PTR)), Route::Cluster);
    }

    #[test]
    fn bad_input_is_invalid_and_never_panics() {
        let z = zones();
        assert_eq!(z.route(&[]), Route::Invalid);
        assert_eq!(z.route(&[0; 11]), Route::Invalid);
        let mut response = query("web.default.svc.cluster.local.", RecordType::A);
        response[2] |= 0x80;
        assert_eq!(z.route(&response), Route::Invalid);
        assert!(servfail(&response).is_none());
        let mut state = 0x1234_5678_u32;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state >> 16) as u8
                })
                .collect();
            let _ = z.route(&buf);
            let _ = servfail(&buf);
            let _ = formerr(&buf);
        }
    }

    #[test]
    fn error_replies_echo_the_query() {
        let q = query("www.wan.example.", RecordType::AAAA);
        let r = Message::from_vec(&servfail(&q).unwrap()).unwrap();
        assert_eq!(r.metadata.id, 0x4242);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(r.queries, Message::from_vec(&q).unwrap().queries);
        let f = formerr(&q).unwrap();
        assert_eq!(&f[..2], &[0x42, 0x42]);
        assert_eq!(f[3] & 0x0f, 1);
        assert!(f[2] & 0x80 != 0);
    }
}
