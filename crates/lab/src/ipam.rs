//! Pod IP allocation from a node's Pod CIDR, like the CNI `host-local` plugin: the first
//! address is the node's gateway on the bridge, and allocation rotates through the range
//! so a replaced pod gets a new address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Allocator for one node's Pod CIDR.
#[derive(Debug)]
pub struct Ipam {
    net: Ipv4Net,
    used: BTreeSet<Ipv4Addr>,
    last: u32,
}

impl Ipam {
    /// An allocator for `net` (the node's Pod CIDR).
    pub fn new(net: Ipv4Net) -> Self {
        Self {
            net,
            used: BTreeSet::new(),
            last: 1,
        }
    }

    /// The node's address on the pod bridge (first host address).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net.network()) + 1)
    }

    /// The next free address after the last one handed out, or `None` when full.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let base = u32::from(self.net.network());
        let size = 1u32
            .checked_shl(32 - u32::from(self.net.prefix_len()))
            .unwrap_or(0);
        if size < 4 {
            return None;
        }
        // Host offsets 2 ..= size-2 (0 is the network, 1 the gateway, size-1 broadcast).
        let span = size - 3;
        for i in 1..=span {
            let off = 2 + (self.last + i - 2) % span;
            let a = Ipv4Addr::from(base + off);
            if !self.used.contains(&a) {
                self.used.insert(a);
                self.last = off;
                return Some(a);
            }
        }
        None
    }

    /// Marks an address as used (for pods found at start-up).
    pub fn reserve(&mut self, a: Ipv4Addr) {
        if self.net.contains(&a) {
            self.used.insert(a);
        }
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, a: Ipv4Addr) {
        self.used.remove(&a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_fills() {
        let mut ipam = Ipam::new("172.17.32.0/29".parse().unwrap());
        assert_eq!(ipam.gateway(), Ipv4Addr::new(172, 17, 32, 1));
        let a = ipam.allocate().unwrap();
        assert_eq!(a, Ipv4Addr::new(172, 17, 32, 2));
        ipam.release(a);
        // A released address is not reused at once.
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(172, 17, 32, 3));
        let rest: Vec<_> = std::iter::from_fn(|| ipam.allocate()).collect();
        assert_eq!(rest.len(), 4, "{rest:?}");
        assert!(
            !rest.contains(&Ipv4Addr::new(172, 17, 32, 7)),
            "never the broadcast address"
        );
        assert!(ipam.allocate().is_none());
    }
}
