//! The first look at every DNS query kubelan receives, shared by all its DNS front ends
//! (`connect`'s and the gateways' relay, the agent's DNS flows and cache).
//!
//! [`screen`] walks the raw bytes once, without allocating, and sorts a datagram into
//! a well-formed query with exactly one question ([`Screen::Query`], with a zero-copy
//! [`Question`] view), a malformed one that gets FORMERR at once ([`Screen::FormErr`]), or
//! something that deserves no answer ([`Screen::Drop`]). Nothing that fails the screen is
//! ever sent to another server: a client cannot make a front end wait on its upstream with
//! queries no server would answer (RFC 9619: more than one question is FORMERR).
//!
//! Sans-IO: bytes in, a decision out.

use std::fmt::Write as _;

/// The length of a DNS header.
pub const HEADER_LEN: usize = 12;

/// The longest name on the wire, length octets included (RFC 1035 3.1).
const MAX_NAME_LEN: usize = 255;

/// The OPT pseudo-record type (EDNS, RFC 6891).
const TYPE_OPT: u16 = 41;

/// What to do with one received datagram (or DNS-over-TCP message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen<'a> {
    /// A well-formed query with one question: route or answer it.
    Query(Question<'a>),
    /// Malformed, or not exactly one question: send this FORMERR reply (a header with the
    /// query's ID, opcode and RD) and ask nobody.
    FormErr(Vec<u8>),
    /// Shorter than a header, or a response: send nothing (answering a response could
    /// start a loop between two servers).
    Drop,
}

/// The one question of a screened query, borrowed from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question<'a> {
    /// The query's ID.
    pub id: u16,
    /// The query's opcode (0 is QUERY).
    pub opcode: u8,
    /// The question's type (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
    /// The question's class (1 = IN).
    pub qclass: u16,
    /// The name's wire form: length-prefixed labels ending with the root label, no
    /// compression.
    name: &'a [u8],
}

impl Question<'_> {
    /// The labels of the question's name, in order, without the root.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut rest = self.name;
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let len = usize::from(len);
            if len == 0 {
                return None;
            }
            let label = tail.get(..len)?;
            rest = &tail[len..];
            Some(label)
        })
    }

    /// The name as lower-case text without the trailing dot (`""` for the root). Bytes
    /// other than letters, digits, `-`, `_` and `*` are written `\DDD`, so a label holding
    /// a dot can never pass for two labels.
    pub fn name_text(&self) -> String {
        let mut text = String::with_capacity(self.name.len());
        for (i, label) in self.labels().enumerate() {
            if i > 0 {
                text.push('.');
            }
            for &b in label {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*') {
                    text.push(char::from(b.to_ascii_lowercase()));
                } else {
                    let _ = write!(text, "\\{b:03}");
                }
            }
        }
        text
    }
}

/// Screens one query. Never panics, whatever the input.
///
/// FORMERR is given to: a question count other than one, a question name that is
/// truncated, compressed (nothing precedes it to point at), longer than 255 bytes or uses
/// a reserved label type, a missing type or class, answer, authority or additional
/// records that run past the end, and more than one OPT record. Bytes after the last
/// record are ignored, as most servers do.
pub fn screen(query: &[u8]) -> Screen<'_> {
    let Some(header) = query.get(..HEADER_LEN) else {
        return Screen::Drop;
    };
    if header[2] & 0x80 != 0 {
        return Screen::Drop;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let formerr = || Screen::FormErr(formerr_reply(header));
    if count(4) != 1 {
        return formerr();
    }
    let Some(name_len) = plain_name_len(query, HEADER_LEN) else {
        return formerr();
    };
    let name_end = HEADER_LEN + name_len;
    let Some(fixed) = query.get(name_end..name_end + 4) else {
        return formerr();
    };
    let mut at = name_end + 4;
    let mut opts = 0;
    for section in [6, 8, 10] {
        for _ in 0..count(section) {
            let Some((next, rtype)) = skip_record(query, at) else {
                return formerr();
            };
            if section == 10 && rtype == TYPE_OPT {
                opts += 1;
            }
            at = next;
        }
    }
    if opts > 1 {
        return formerr();
    }
    Screen::Query(Question {
        id: u16::from_be_bytes([header[0], header[1]]),
        opcode: (header[2] >> 3) & 0x0f,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        name: &query[HEADER_LEN..name_end],
    })
}

/// A header-only FORMERR reply: the query's ID, QR set, its opcode and RD, RA set,
/// RCODE 1, every count zero. `header` is at least [`HEADER_LEN`] bytes.
fn formerr_reply(header: &[u8]) -> Vec<u8> {
    let mut reply = vec![0u8; HEADER_LEN];
    reply[..2].copy_from_slice(&header[..2]);
    // QR, then opcode and RD from the query (AA and TC cleared).
    reply[2] = 0x80 | (header[2] & 0x79);
    // RA, RCODE FORMERR.
    reply[3] = 0x81;
    reply
}

/// The FORMERR reply to a query whose header can be read, else `None` (too short, or a
/// response).
pub fn formerr(query: &[u8]) -> Option<Vec<u8>> {
    let header = query.get(..HEADER_LEN)?;
    (header[2] & 0x80 == 0).then(|| formerr_reply(header))
}

/// The length of an uncompressed name at `at`, root label included.
fn plain_name_len(msg: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    loop {
        let len = usize::from(*msg.get(i)?);
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
        if i - at > MAX_NAME_LEN {
            return None;
        }
        if len == 0 {
            return (i <= msg.len()).then_some(i - at);
        }
    }
}

/// Skips a name at `at` that may end in a compression pointer; returns where it ends. The
/// pointer is not followed (nothing here needs the name), only checked to point before
/// itself.
fn skip_name(msg: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    loop {
        let len = *msg.get(i)?;
        match len & 0xc0 {
            0x00 => {
                i += 1 + usize::from(len);
                if i - at > MAX_NAME_LEN {
                    return None;
                }
                if len == 0 {
                    return (i <= msg.len()).then_some(i);
                }
            }
            0xc0 => {
                let target = usize::from(u16::from_be_bytes([len, *msg.get(i + 1)?]) & 0x3fff);
                return (target < i).then_some(i + 2);
            }
            _ => return None,
        }
    }
}

/// Skips one resource record at `at`; returns where it ends and its type.
fn skip_record(msg: &[u8], at: usize) -> Option<(usize, u16)> {
    let i = skip_name(msg, at)?;
    let fixed = msg.get(i..i + 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let end = i + 10 + rdlen;
    (end <= msg.len()).then_some((end, rtype))
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    fn query(names: &[&str]) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0xbeef;
        m.metadata.recursion_desired = true;
        for n in names {
            m.add_query(Query::query(Name::from_ascii(n).unwrap(), RecordType::A));
        }
        m.to_vec().unwrap()
    }

    fn is_formerr(s: &Screen<'_>, id: u16) -> bool {
        match s {
            Screen::FormErr(r) => {
                let m = Message::from_vec(r).unwrap();
                m.metadata.id == id
                    && m.metadata.response_code == ResponseCode::FormErr
                    && m.metadata.recursion_desired
                    && m.queries.is_empty()
            }
            _ => false,
        }
    }

    #[test]
    fn one_question_passes_with_its_name() {
        let q = query(&["Web.Default.svc.cluster.local."]);
        let Screen::Query(question) = screen(&q) else {
            panic!("{:?}", screen(&q))
        };
        assert_eq!(question.id, 0xbeef);
        assert_eq!(question.opcode, 0);
        assert_eq!((question.qtype, question.qclass), (1, 1));
        assert_eq!(question.name_text(), "web.default.svc.cluster.local");
        assert_eq!(question.labels().count(), 5);
        // With EDNS (one OPT record in the additional section).
        let mut m = Message::from_vec(&q).unwrap();
        m.set_edns(Edns::new());
        assert!(matches!(screen(&m.to_vec().unwrap()), Screen::Query(_)));
        // The root name.
        let root = query(&["."]);
        let Screen::Query(root) = screen(&root) else {
            panic!()
        };
        assert_eq!(root.name_text(), "");
    }

    #[test]
    fn several_or_no_questions_are_formerr() {
        let names: Vec<String> = (0..50).map(|i| format!("n{i}.example.")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert!(is_formerr(&screen(&query(&names)), 0xbeef));
        assert!(is_formerr(&screen(&query(&names[..2])), 0xbeef));
        assert!(is_formerr(&screen(&query(&[])), 0xbeef));
    }

    #[test]
    fn malformed_queries_are_formerr_and_non_queries_dropped() {
        let good = query(&["web.default.svc.cluster.local."]);
        // Every truncation inside the question.
        for cut in HEADER_LEN..good.len() {
            assert!(is_formerr(&screen(&good[..cut]), 0xbeef), "cut at {cut}");
        }
        // A compression pointer in the question.
        let mut ptr = good[..HEADER_LEN].to_vec();
        ptr.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert!(is_formerr(&screen(&ptr), 0xbeef));
        // A reserved label type.
        let mut ext = good[..HEADER_LEN].to_vec();
        ext.extend_from_slice(&[0x41, 0, 0, 1, 0, 1]);
        assert!(is_formerr(&screen(&ext), 0xbeef));
        // A name over 255 bytes.
        let mut long = good[..HEADER_LEN].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(is_formerr(&screen(&long), 0xbeef));
        // An additional record announced but missing, and two OPT records.
        let mut missing = good.clone();
        missing[11] = 1;
        assert!(is_formerr(&screen(&missing), 0xbeef));
        let opt = [0u8, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0];
        let mut two = good.clone();
        two[11] = 2;
        two.extend_from_slice(&opt);
        two.extend_from_slice(&opt);
        assert!(is_formerr(&screen(&two), 0xbeef));
        two[11] = 1;
        assert!(
            matches!(screen(&two), Screen::Query(_)),
            "trailing bytes pass"
        );
        // Not answered at all: too short for a header, or a response.
        assert_eq!(screen(&good[..11]), Screen::Drop);
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(screen(&response), Screen::Drop);
        assert_eq!(formerr(&response), None);
    }

    #[test]
    fn odd_bytes_in_names_are_escaped() {
        let mut q = query(&["x."])[..HEADER_LEN].to_vec();
        q.extend_from_slice(&[3, b'a', b'.', b'B', 5]);
        q.extend_from_slice(b"local");
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let Screen::Query(question) = screen(&q) else {
            panic!()
        };
        assert_eq!(question.name_text(), "a\\046b.local");
    }

    #[test]
    fn answer_records_may_be_compressed_backwards_only() {
        let mut q = query(&["web.example."]);
        q[7] = 1;
        // An answer whose name points at the question name (offset 12).
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(screen(&q), Screen::Query(_)));
        let at = q.len() - 16;
        q[at + 1] = u8::try_from(at).unwrap();
        assert!(is_formerr(&screen(&q), 0xbeef), "a pointer at itself");
    }
}
