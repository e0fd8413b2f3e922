//! Loopback addresses for bulk mode: every Service gets its own 127.x.y.z, so all its ports
//! keep their numbers and its names can point at it.
//!
//! The address is derived from a hash of `namespace/name`, so a Service gets the same
//! address on every run (clients, browsers and `known_hosts`-like caches stay valid across
//! restarts). The space is 127.1.0.1–127.254.255.254 without host parts `.0` and `.255`
//! (16.5 million addresses; 127.0.0.0/16 stays free for the machine's own use). A collision
//! (with another Service, or with an address someone else already listens on) moves to the
//! next address of the sequence. Linux routes all of 127.0.0.0/8 to `lo`; other systems need
//! aliases on the loopback interface.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const HOSTS_PER_C: u32 = 254;
const HOSTS_PER_B: u32 = 256 * HOSTS_PER_C;
/// Number of addresses in the space.
pub const SPACE: u32 = 254 * HOSTS_PER_B;

/// FNV-1a, 64 bit: stable across runs, platforms and Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The `i`-th address of the space.
pub fn address(i: u32) -> Ipv4Addr {
    let i = i % SPACE;
    let b = 1 + i / HOSTS_PER_B;
    let rem = i % HOSTS_PER_B;
    let c = rem / HOSTS_PER_C;
    let d = 1 + rem % HOSTS_PER_C;
    Ipv4Addr::new(127, b as u8, c as u8, d as u8)
}

/// Where `key`'s sequence starts.
pub fn home(key: &str) -> u32 {
    (fnv1a(key.as_bytes()) % u64::from(SPACE)) as u32
}

/// Hands out addresses, one per key (`namespace/name`).
#[derive(Debug, Default, Clone)]
pub struct Allocator {
    by_key: BTreeMap<String, Ipv4Addr>,
    by_addr: BTreeMap<Ipv4Addr, String>,
}

impl Allocator {
    /// An empty allocator.
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// The address `key` holds, if any.
    pub fn get(&self, key: &str) -> Option<Ipv4Addr> {
        self.by_key.get(key).copied()
    }

    /// Candidate addresses for `key`, in order: its home address first, skipping addresses
    /// other keys hold. The caller takes the first one it can use ([`Allocator::take`]);
    /// the sequence is bounded to `limit` entries.
    pub fn candidates(&self, key: &str, limit: usize) -> Vec<Ipv4Addr> {
        let start = home(key);
        (0..SPACE)
            .map(|k| address(start.wrapping_add(k) % SPACE))
            .filter(|a| self.by_addr.get(a).is_none_or(|k| k == key))
            .take(limit)
            .collect()
    }

    /// Records that `key` uses `addr` (replacing an earlier address of `key`).
    pub fn take(&mut self, key: &str, addr: Ipv4Addr) {
        self.release(key);
        self.by_key.insert(key.to_string(), addr);
        self.by_addr.insert(addr, key.to_string());
    }

    /// Frees `key`'s address.
    pub fn release(&mut self, key: &str) -> Option<Ipv4Addr> {
        let addr = self.by_key.remove(key)?;
        self.by_addr.remove(&addr);
        Some(addr)
    }

    /// How many addresses are handed out.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The local port to try when binding `port` failed with "permission denied" (ports below
/// 1024 need root): `port + 10000` (80 → 10080), else `None` (then any free port).
pub fn unprivileged_port(port: u16) -> Option<u16> {
    (port < 1024).then(|| port + 10000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_bounds() {
        assert_eq!(address(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(address(253), Ipv4Addr::new(127, 1, 0, 254));
        assert_eq!(address(254), Ipv4Addr::new(127, 1, 1, 1));
        assert_eq!(address(SPACE - 1), Ipv4Addr::new(127, 254, 255, 254));
        assert_eq!(address(SPACE), address(0));
        for i in [0, 1, 253, 254, 65_000, 1_000_000, SPACE - 1] {
            let a = address(i).octets();
            assert_eq!(a[0], 127);
            assert!(a[1] >= 1 && a[1] <= 254, "{a:?}");
            assert!(a[3] != 0 && a[3] != 255, "{a:?}");
        }
    }

    #[test]
    fn stable_and_distinct() {
        let mut a = Allocator::new();
        let web = a.candidates("default/web", 1)[0];
        // Same on every run: pinned so a change of hash is a deliberate decision.
        assert_eq!(web, address(home("default/web")));
        assert_eq!(a.candidates("default/web", 1)[0], web);
        a.take("default/web", web);
        let mut seen = std::collections::HashSet::new();
        seen.insert(web);
        for i in 0..2000 {
            let key = format!("ns{}/svc{i}", i % 7);
            let c = a.candidates(&key, 3);
            assert_eq!(c.len(), 3);
            assert!(!c.contains(&web) || key == "default/web");
            a.take(&key, c[0]);
            assert!(seen.insert(c[0]), "{key} got a taken address");
        }
        assert_eq!(a.len(), 2001);
        // A key that collides is moved along; released addresses come back.
        let mut b = Allocator::new();
        let home_addr = address(home("x/y"));
        b.take("other/one", home_addr);
        assert_eq!(b.candidates("x/y", 1)[0], address(home("x/y") + 1));
        assert_eq!(b.release("other/one"), Some(home_addr));
        assert_eq!(b.candidates("x/y", 1)[0], home_addr);
        assert!(b.is_empty());
    }

    #[test]
    fn privileged_ports_move_up() {
        assert_eq!(unprivileged_port(80), Some(10080));
        assert_eq!(unprivileged_port(1023), Some(11023));
        assert_eq!(unprivileged_port(8080), None);
    }
}
