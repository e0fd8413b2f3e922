//! kubelan's L3 modes as a library: `connect` (this machine reaches the cluster through a
//! TUN device and a userspace TCP/IP stack, with split DNS) and `gateway` (a whole LAN
//! reaches it: `node` mode with kernel forwarding and SNAT on a host that routes to pods,
//! `tunnel` mode with `connect`'s TUN and session on any LAN host).
//!
//! Each mode first decides its host changes in the sans-IO [`plan`] (routes, TUN, DNS,
//! sysctls, nftables tables, or a refusal that names the flag to pass), then makes them
//! through the journal's host guard, serves (the TUN handler, the DNS relay, the TCP
//! redirection, the control socket of `kubelan status` / `quit`) and restores. What a mode
//! has to say goes to the caller as [`Event`]s; the binary renders them.

pub mod connect;
pub mod dnsrelay;
pub mod event;
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
pub mod gateway;
pub mod plan;
pub mod watcher;

pub use connect::{ConnectOptions, StartSession, Stop};
pub use event::{Event, EventSink, Summary};
pub use gateway::{GatewayMode, GatewayOptions};
pub use plan::{HostPlan, PlanError, PlanInput, PlanMode, plan};
