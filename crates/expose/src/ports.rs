//! Which TCP ports a process tree listens on, from `/proc`: for `kubelan run` without
//! `--expose`, whose program's ports are exposed as they appear.
//!
//! A socket belongs to the program when one of the tree's processes holds it: the inode
//! of a `socket:[N]` link in `/proc/<pid>/fd` matches a row of `/proc/<pid>/net/tcp` or
//! `tcp6` in state `LISTEN`. The parsing and the matching are pure ([`parse_net_tcp`],
//! [`socket_inode`], [`listening`], [`PortWatch`]); [`scan`] reads `/proc` and
//! [`children`] walks the tree, both bounded.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;
/// At most this many processes of a tree are read per scan.
pub const MAX_PROCESSES: usize = 256;
/// At most this many descriptors per process are read per scan.
pub const MAX_FDS: usize = 4096;

/// One row of `/proc/<pid>/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    /// The local address and port.
    pub local: SocketAddr,
    /// The TCP state (`0x0A`: listening).
    pub state: u8,
    /// The socket's inode.
    pub inode: u64,
}

/// An address as the kernel prints it: the 32-bit words of the network-order address,
/// each read as a native-endian integer and printed as 8 hex digits.
fn hex_words(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(8) || !text.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 2);
    for i in (0..text.len()).step_by(8) {
        let w = u32::from_str_radix(text.get(i..i + 8)?, 16).ok()?;
        out.extend_from_slice(&w.to_ne_bytes());
    }
    Some(out)
}

fn local_address(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let bytes = hex_words(addr)?;
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The rows of a `/proc/<pid>/net/tcp` or `tcp6` file; the header and lines that do not
/// parse are skipped.
pub fn parse_net_tcp(text: &str) -> Vec<TcpRow> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || !f[0].ends_with(':') {
                return None;
            }
            Some(TcpRow {
                local: local_address(f[1])?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// The inode of a `/proc/<pid>/fd/N` link's target when it is a socket (`socket:[N]`).
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The listening sockets among `rows` that the tree holds (`inodes`): port → the address
/// it is bound to. A port bound twice (IPv4 and IPv6) keeps the IPv4 wildcard or
/// loopback, which a connection to 127.0.0.1 reaches.
pub fn listening(rows: &[TcpRow], inodes: &HashSet<u64>) -> BTreeMap<u16, IpAddr> {
    let mut out: BTreeMap<u16, IpAddr> = BTreeMap::new();
    for r in rows {
        if r.state != TCP_LISTEN || r.inode == 0 || !inodes.contains(&r.inode) {
            continue;
        }
        let ip = r.local.ip();
        out.entry(r.local.port())
            .and_modify(|have| {
                if ip.is_ipv4() && !have.is_ipv4() {
                    *have = ip;
                }
            })
            .or_insert(ip);
    }
    out
}

/// Where the client dials a port bound to `bound`: loopback of the family for a wildcard
/// bind, else the address itself.
pub fn dial_address(bound: IpAddr) -> IpAddr {
    match bound {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        a => a,
    }
}

/// The ports seen so far: each scan reports the ports that are new. A port that goes
/// away stays exposed (a restarting server comes back to the same port).
#[derive(Debug, Default)]
pub struct PortWatch {
    seen: BTreeSet<u16>,
    /// Ports never to report (the relay's own, ports given with `--expose`).
    ignore: BTreeSet<u16>,
}

impl PortWatch {
    /// A watch that never reports `ignore`.
    pub fn new(ignore: impl IntoIterator<Item = u16>) -> PortWatch {
        PortWatch {
            seen: BTreeSet::new(),
            ignore: ignore.into_iter().collect(),
        }
    }

    /// The ports of `now` not reported before, in port order, with the address to dial.
    pub fn update(&mut self, now: &BTreeMap<u16, IpAddr>) -> Vec<SocketAddr> {
        let mut new = Vec::new();
        for (&port, &ip) in now {
            if self.ignore.contains(&port) || !self.seen.insert(port) {
                continue;
            }
            new.push(SocketAddr::new(dial_address(ip), port));
        }
        new
    }
}

/// The process tree under `root` (itself first), at most [`MAX_PROCESSES`], from
/// `/proc/<pid>/task/<tid>/children`.
pub fn children(root: u32) -> Vec<u32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() && tree.len() < MAX_PROCESSES {
        let pid = tree[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("children");
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            for c in text
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if tree.len() < MAX_PROCESSES && !tree.contains(&c) {
                    tree.push(c);
                }
            }
        }
    }
    tree
}

/// The TCP ports the tree under `root` listens on now (port → bound address). Processes
/// that vanish during the scan are skipped.
pub fn scan(root: u32) -> BTreeMap<u16, IpAddr> {
    let tree = children(root);
    let mut inodes = HashSet::new();
    for pid in &tree {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten().take(MAX_FDS) {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = target.to_str().and_then(socket_inode)
            {
                inodes.insert(inode);
            }
        }
    }
    let mut rows = Vec::new();
    // Every process of the tree normally shares one network namespace: read the first
    // that answers.
    for pid in &tree {
        let v4 = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"));
        let v6 = std::fs::read_to_string(format!("/proc/{pid}/net/tcp6"));
        if v4.is_err() && v6.is_err() {
            continue;
        }
        rows.extend(parse_net_tcp(&v4.unwrap_or_default()));
        rows.extend(parse_net_tcp(&v6.unwrap_or_default()));
        break;
    }
    listening(&rows, &inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on x86-64 (little-endian): python3 -m http.server 8080 --bind 127.0.0.1,
    // a listener on [::]:9000, one established connection.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4711 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4712 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5000 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5001 1 0000000000000000 100 0 0 10 0
";

    #[cfg(target_endian = "little")]
    #[test]
    fn rows_parse_as_the_kernel_prints_them() {
        let rows = parse_net_tcp(TCP);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((rows[0].state, rows[0].inode), (0x0A, 4711));
        assert_eq!(rows[1].state, 0x01);
        let rows6 = parse_net_tcp(TCP6);
        assert_eq!(rows6[0].local, "[::]:9000".parse().unwrap());
        assert_eq!(rows6[1].local, "[::1]:80".parse().unwrap());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn only_the_trees_listening_sockets_count() {
        let mut rows = parse_net_tcp(TCP);
        rows.extend(parse_net_tcp(TCP6));
        // The tree holds the 8080 listener, its connection, and the [::]:9000 listener;
        // port 22 (inode 999) and [::1]:80 belong to other processes.
        let inodes: HashSet<u64> = [4711, 4712, 5000].into();
        let ports = listening(&rows, &inodes);
        let got: Vec<(u16, String)> = ports.iter().map(|(p, a)| (*p, a.to_string())).collect();
        assert_eq!(
            got,
            [(8080, "127.0.0.1".to_string()), (9000, "::".to_string())]
        );
        let mut w = PortWatch::new([9000]);
        assert_eq!(
            w.update(&ports),
            ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert!(w.update(&ports).is_empty(), "reported once");
        let mut w = PortWatch::new([]);
        assert_eq!(w.update(&ports)[1], "[::1]:9000".parse().unwrap());
    }

    #[test]
    fn a_port_on_both_families_is_dialled_on_ipv4() {
        let rows = [
            TcpRow {
                local: "[::]:8080".parse().unwrap(),
                state: TCP_LISTEN,
                inode: 1,
            },
            TcpRow {
                local: "0.0.0.0:8080".parse().unwrap(),
                state: TCP_LISTEN,
                inode: 2,
            },
        ];
        let ports = listening(&rows, &[1, 2].into());
        assert_eq!(
            PortWatch::new([]).update(&ports),
            ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn socket_links_and_bad_rows() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        for bad in [
            "0: 0100007F:1F9 00000000:0000 0A a b c d e 1",
            "0: 0100007:1F90 00000000:0000 0A a b c d e 1",
            "0: 0100007F:1F90 00000000:0000 ZZ a b c d e 1",
            "0: 0100007F:1F90 00000000:0000 0A a b c d e x",
            "0: 0100007F1F90 00000000:0000 0A a b c d e 1",
            "0: é100007F:1F90 00000000:0000 0A a b c d e 1",
            "0: 0100007F:1F90",
        ] {
            assert!(parse_net_tcp(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn this_process_sees_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ports = scan(std::process::id());
        assert_eq!(
            ports.get(&port),
            Some(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{ports:?}"
        );
    }
}
