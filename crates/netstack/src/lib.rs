//! kubelan's TUN device and userspace TCP/IP stack.
//!
//! `kubelan connect` is an L3 VPN: it creates a TUN device ([`open_tun`]), routes the
//! cluster's Pod and Service CIDRs into it (the caller does that with rtnetlink), and runs
//! this stack on it ([`run`]). The stack turns the packets applications send into flows
//! the caller carries over its tunnel session:
//!
//! * **TCP** connections, terminated by [smoltcp] (through `netstack-smoltcp`), become byte
//!   streams ([`TcpFlow`]);
//! * **UDP** datagrams become flows keyed by (source, destination) with a bounded queue and
//!   an idle timeout ([`UdpFlow`]); replies go back through a cloneable [`UdpReplier`];
//! * **ICMP echo requests** become [`EchoRequest`]s; the caller has a remote agent really
//!   ping and the stack writes the reply only when told so. Nothing is answered locally.
//!
//! Flows from any source address are accepted, so the same stack serves a LAN gateway.
//! The stack speaks IPv4 today; addresses are `IpAddr`/`SocketAddr` so that IPv6 can be
//! added without changing the API. IPv4 fragments (the kernel fragments UDP datagrams
//! larger than the MTU) are reassembled, with bounded memory and a 30 s timeout. IPv6,
//! broadcast and multicast, other protocols and ICMP other than echo requests are dropped
//! and counted in [`Stats::dropped`].
//!
//! Packet parsing and building (the private `wire` module) and the UDP flow table are
//! sans-IO and unit-tested, including malformed and random input; the integration tests
//! (`tests/tun.rs`) run the whole stack against the kernel in network namespaces. Packet
//! parsing, building and IPv4 reassembly are also fuzzed through `fuzz_entry` (feature
//! `fuzz`; `fuzz/fuzz_targets/netstack_packets.rs`).
//!
//! # Known limits of `netstack-smoltcp` and how they are handled
//!
//! * It opens a listening socket for every SYN, retransmissions included; the extra socket
//!   never connects and later takes over another connection to the same destination. The
//!   stack drops a SYN it has already passed on (same addresses and initial sequence
//!   number); smoltcp retransmits its SYN-ACK on its own.
//! * Its stream's `poll_shutdown` waits for the whole connection to close; [`TcpStream`]
//!   returns once the FIN is queued instead.
//!
//! [smoltcp]: https://docs.rs/smoltcp

mod egress;
mod error;
mod flow;
mod frag;
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
mod portmap;
mod stack;
mod stats;
mod tun;
mod udp;
mod wire;

pub use error::NetstackError;
pub use flow::{EchoRequest, Handler, TcpFlow, TcpStream};
pub use stack::{Stack, StackConfig, run};
pub use stats::{Stats, StatsSnapshot};
pub use tun::{Tun, TunConfig, open_tun};
pub use udp::{UdpFlow, UdpReplier};

/// Re-exported so that implementors of [`Handler`] name the same future type.
pub use futures::future::BoxFuture;
