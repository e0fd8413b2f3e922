//! DNS messages in, DNS messages out: [`answer`] turns a raw query into a reply built from
//! the [`ClusterNames`] cache, or tells the caller to relay it to the cluster DNS server.
//!
//! Sans-IO apart from [`forward_udp`], the small relay helper. Whoever owns the socket (the
//! in-cluster agent for queries that come through the tunnel, later the local DNS server of
//! `kubelan connect`) calls [`answer`] per datagram and acts on the [`Answer`].
//!
//! Replies to names we own are authoritative (AA set), echo the question, ID and RD flag,
//! and carry an SOA in the authority section when negative (NXDOMAIN or NODATA) so that
//! resolvers cache the negative answer for [`TTL`] seconds only. Everything the cache cannot
//! answer authoritatively is [`Answer::Forward`]: names outside the cluster domain, shapes
//! we do not model, other classes, zone transfers, and ExternalName aliases of outside names
//! (the cluster DNS server follows those).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record as WireRecord, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::names::{self, ClusterNames, Lookup, QueryType, Record, RecordData, TTL};
use crate::query::{HEADER_LEN, Screen, screen};

/// The UDP payload size we advertise and send at most (the DNS Flag Day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// The UDP reply size without EDNS (RFC 1035).
const PLAIN_UDP_LIMIT: usize = 512;

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this reply back to the client.
    Reply(Vec<u8>),
    /// Relay the query unchanged to the cluster DNS server and its reply to the client.
    Forward,
    /// Not a DNS query (too short for a header, or a response): send nothing.
    Drop,
}

/// Answers a query received over UDP: replies are cut to the client's EDNS payload size
/// (512 bytes without EDNS) with the TC flag set when the answer does not fit.
///
/// `domain` is the cluster domain (`cluster.local`); the cache itself holds no names, only
/// objects, so any domain can be served from it. Never panics, whatever the input.
pub fn answer(query: &[u8], names: &ClusterNames, domain: &str) -> Answer {
    respond(query, names, domain, false)
}

/// [`answer`] for a query received over TCP (without its two-byte length prefix): replies
/// are never truncated.
pub fn answer_tcp(query: &[u8], names: &ClusterNames, domain: &str) -> Answer {
    respond(query, names, domain, true)
}

fn respond(query: &[u8], names: &ClusterNames, domain: &str, tcp: bool) -> Answer {
    let (id, opcode) = match screen(query) {
        Screen::Query(q) => (q.id, q.opcode),
        Screen::FormErr(reply) => return Answer::Reply(reply),
        // Too short, or a response: answering it could start a loop between two servers.
        Screen::Drop => return Answer::Drop,
    };
    let rd = query[2] & 0x01 != 0;
    if opcode != 0 {
        return Answer::Reply(header_only(id, opcode, rd, ResponseCode::NotImp));
    }
    let Ok(request) = Message::from_vec(query) else {
        return Answer::Reply(header_only(id, opcode, rd, ResponseCode::FormErr));
    };
    let [question] = request.queries.as_slice() else {
        return Answer::Reply(header_only(id, opcode, rd, ResponseCode::FormErr));
    };

    let mut reply = Message::new(id, MessageType::Response, OpCode::Query);
    reply.metadata = Metadata::response_from_request(&request.metadata);
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let limit = if tcp {
        usize::from(u16::MAX)
    } else {
        request.edns.as_ref().map_or(PLAIN_UDP_LIMIT, |e| {
            usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD))
        })
    };
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(EDNS_PAYLOAD).set_version(0);
        reply.set_edns(ours);
        if edns.version() > 0 {
            reply.metadata.response_code = ResponseCode::BADVERS;
            return Answer::Reply(encode(reply, limit));
        }
    }

    if question.query_class != DNSClass::IN {
        return Answer::Forward;
    }
    match question.query_type {
        RecordType::OPT => {
            reply.metadata.response_code = ResponseCode::FormErr;
            return Answer::Reply(encode(reply, limit));
        }
        RecordType::AXFR | RecordType::IXFR => return Answer::Forward,
        _ => {}
    }
    let Some(qname) = name_text(&question.name) else {
        return Answer::Forward;
    };
    let domain = names::normalize_name(domain);
    let qtype = QueryType::from_u16(u16::from(question.query_type));
    match names.lookup_in(&domain, &qname, qtype) {
        Lookup::NotOurs | Lookup::Unknown => Answer::Forward,
        Lookup::Found(records) => {
            let alias_of_outside = !matches!(qtype, QueryType::Cname)
                && matches!(records.last(), Some(Record { data: RecordData::Cname(target), .. })
                    if !names::in_domain(target, &domain));
            if alias_of_outside {
                return Answer::Forward;
            }
            reply.metadata.authoritative = true;
            for record in &records {
                let owner = if record.name == qname {
                    Some(question.name.clone())
                } else {
                    fqdn(&record.name)
                };
                if let Some(wire) = owner.and_then(|owner| to_wire(owner, record)) {
                    reply.add_answer(wire);
                }
            }
            add_srv_addresses(&mut reply, &records, names, &domain);
            Answer::Reply(encode(reply, limit))
        }
        Lookup::NoData => {
            reply.metadata.authoritative = true;
            reply.add_authority(soa(zone_of(&qname, &domain), &domain));
            Answer::Reply(encode(reply, limit))
        }
        Lookup::NxDomain => {
            reply.metadata.authoritative = true;
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.add_authority(soa(zone_of(&qname, &domain), &domain));
            Answer::Reply(encode(reply, limit))
        }
    }
}

/// A reply with only a header: the ID, opcode and RD of the query and `code`.
fn header_only(id: u16, opcode: u8, rd: bool, code: ResponseCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0x80 | (opcode << 3) | u8::from(rd));
    out.push(code.low());
    out.extend_from_slice(&[0; 8]);
    out
}

/// A question name as lowercase text, when every label is made of the characters cluster
/// names use (letters, digits, `-`, `_`, and `*` so wildcards can be recognised); `None`
/// otherwise (such names cannot be ours, the cluster DNS server gets them).
fn name_text(name: &Name) -> Option<String> {
    let mut text = String::new();
    for label in name.iter() {
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        for b in label {
            text.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(text)
}

/// A fully qualified wire name; `None` for names DNS cannot carry (over 255 bytes, long
/// labels).
fn fqdn(name: &str) -> Option<Name> {
    let mut n = Name::from_ascii(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn to_wire(owner: Name, record: &Record) -> Option<WireRecord> {
    let data = match &record.data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Cname(target) => RData::CNAME(CNAME(fqdn(target)?)),
        RecordData::Ptr(target) => RData::PTR(PTR(fqdn(target)?)),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, fqdn(target)?)),
        RecordData::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
    };
    Some(WireRecord::from_rdata(owner, record.ttl, data))
}

/// Adds the addresses of SRV targets to the additional section (specification 2.3.2/2.4.2).
fn add_srv_addresses(reply: &mut Message, records: &[Record], names: &ClusterNames, domain: &str) {
    let mut targets: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.data {
            RecordData::Srv { target, .. } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        for qtype in [QueryType::A, QueryType::Aaaa] {
            if let Lookup::Found(found) = names.lookup_in(domain, target, qtype) {
                for record in &found {
                    if let Some(wire) = fqdn(&record.name).and_then(|o| to_wire(o, record)) {
                        reply.add_additional(wire);
                    }
                }
            }
        }
    }
}

/// The zone a negative answer for `qname` comes from: a reverse zone or the cluster domain.
fn zone_of<'a>(qname: &str, domain: &'a str) -> &'a str {
    if qname.ends_with("in-addr.arpa") {
        "in-addr.arpa"
    } else if qname.ends_with("ip6.arpa") {
        "ip6.arpa"
    } else {
        domain
    }
}

/// The SOA of `zone` (the cluster domain or a reverse zone), for negative answers; its
/// minimum (and TTL) is [`TTL`], so negative answers are cached as briefly as positive ones.
/// The server names are those of the cluster domain, as CoreDNS gives them.
fn soa(zone: &str, domain: &str) -> WireRecord {
    let apex = fqdn(zone).unwrap_or_else(Name::root);
    let mname = fqdn(&format!("ns.dns.{domain}")).unwrap_or_else(Name::root);
    let rname = fqdn(&format!("hostmaster.{domain}")).unwrap_or_else(Name::root);
    let data = SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL);
    WireRecord::from_rdata(apex, TTL, RData::SOA(data))
}

/// Encodes a reply within `limit` bytes: without the additional section if needed, else as
/// an empty truncated reply (TC set) so the client retries over TCP. SERVFAIL if it cannot
/// be encoded at all.
fn encode(mut reply: Message, limit: usize) -> Vec<u8> {
    let fits = |m: &Message| m.to_vec().ok().filter(|b| b.len() <= limit);
    if let Some(bytes) = fits(&reply) {
        return bytes;
    }
    reply.additionals.clear();
    if let Some(bytes) = fits(&reply) {
        return bytes;
    }
    reply.answers.clear();
    reply.authorities.clear();
    reply.metadata.truncation = true;
    if let Some(bytes) = fits(&reply) {
        return bytes;
    }
    let opcode = u8::from(reply.metadata.op_code);
    header_only(
        reply.metadata.id,
        opcode,
        reply.metadata.recursion_desired,
        ResponseCode::ServFail,
    )
}

/// A query relayed over UDP and not answered within this long is sent again (the same
/// datagram, from the same socket, so a late reply to the first still counts), until the
/// caller's deadline: a datagram lost between us and the cluster's DNS would otherwise cost
/// the client its whole lookup, as stub resolvers wait seconds before they ask again.
pub const RESEND_AFTER: Duration = Duration::from_millis(700);

/// Relays `query` to `server` over UDP and returns its reply: the datagram is sent, again
/// every [`RESEND_AFTER`] while no reply came, and replies are read until one carries the
/// query's ID, for at most `timeout` in all. A
/// truncated reply (TC) is retried over TCP within the same time; if that fails the
/// truncated reply is returned, and the client retries over TCP itself.
///
/// # Errors
///
/// `InvalidInput` when `query` is shorter than a DNS header, `TimedOut` when no matching
/// reply came in time, and the socket's error when it cannot be bound, connected or used
/// (`ConnectionRefused` when nothing listens on `server`).
pub async fn forward_udp(
    query: &[u8],
    server: SocketAddr,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    if query.len() < HEADER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a DNS query is at least 12 bytes long",
        ));
    }
    let id = [query[0], query[1]];
    let deadline = Instant::now() + timeout;
    let reply = tokio::time::timeout_at(deadline, udp_exchange(query, id, server))
        .await
        .map_err(|_| timed_out(server))??;
    if reply[2] & 0x02 != 0
        && let Ok(Ok(full)) =
            tokio::time::timeout_at(deadline, tcp_exchange(query, id, server)).await
    {
        return Ok(full);
    }
    Ok(reply)
}

fn timed_out(server: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no reply from the DNS server {server} in time"),
    )
}

/// Whether `reply` is a response to the query with ID `id`.
fn is_reply(reply: &[u8], id: [u8; 2]) -> bool {
    reply.len() >= HEADER_LEN && reply[..2] == id && reply[2] & 0x80 != 0
}

async fn udp_exchange(query: &[u8], id: [u8; 2], server: SocketAddr) -> io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: datagrams from anyone but `server` are discarded by the kernel.
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    let mut resend = Instant::now() + RESEND_AFTER;
    loop {
        tokio::select! {
            // `recv` is cancel-safe: a datagram is either returned or left queued.
            got = socket.recv(&mut buf) => {
                let n = got?;
                if is_reply(&buf[..n], id) {
                    buf.truncate(n);
                    return Ok(buf);
                }
            }
            () = tokio::time::sleep_until(resend) => {
                socket.send(query).await?;
                resend += RESEND_AFTER;
            }
        }
    }
}

async fn tcp_exchange(query: &[u8], id: [u8; 2], server: SocketAddr) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long for TCP"))?;
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await?;
        if is_reply(&reply, id) {
            return Ok(reply);
        }
    }
}

#[cfg(test)]
mod tests;
