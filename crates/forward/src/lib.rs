//! `kubelan forward`: agentless port-forwards through the Kubernetes API server that follow
//! pod restarts.
//!
//! Two modes:
//! - **single** ([`start`]): `svc/web 8080:80`, `pod/db-0 5432`, `deploy/api :http`, several
//!   at once, on `--address` (localhost by default). A Service is resolved to a ready pod
//!   through its EndpointSlices, with port names and `targetPort`s interpreted as kube-proxy
//!   and kubectl do; a watcher keeps the choice current, so new connections go to another
//!   ready pod when the current one goes away.
//! - **bulk** ([`start_bulk`]): every Service of some namespaces, each on its own loopback
//!   address (127.x.y.z, stable per Service, [`alloc`]) with all its TCP ports, and the
//!   hosts-file lines naming them ([`names`]) for the caller to publish in a kubelan-owned
//!   block (`kubelan_sys::hosts`). Services that appear or go away are followed.
//!
//! Where it sits in the data path:
//!
//! ```text
//! app ─ 127.0.0.1:8080 ─ listener ─ connection task ─ WebSocket (TLS) ─ API server ─ kubelet ─ pod:80
//!                                        ▲ pod choice (watch channel)
//!                        watcher task ◄── Service / EndpointSlice / Pod watches
//! ```
//!
//! **API connections.** The only transport kube-rs offers is the WebSocket port-forward
//! (`v4.channel.k8s.io`; the kubelet's handler speaks nothing newer): one stream pair per port
//! *listed at upgrade time*, every listed port dialled in the pod at once, and no per-stream
//! close in either direction ([`channel`]). Several local connections could share one
//! WebSocket only by pre-dialling the pod and by losing the server's close of each one, so
//! every local connection gets its own WebSocket, opened when it arrives: 100 local
//! connections cost 100 API connections (and nothing else: pod choices come from the
//! watches). SPDY/3.1 (and its WebSocket tunnel `SPDY/3.1+portforward.k8s.io`, Kubernetes
//! 1.30+) carries many streams with proper close on one connection; kube-rs does not speak
//! it. `docs/benchmarks.md` has the measurements.
//!
//! The sans-IO parts — [`spec`] (command line), [`resolve`] (objects → pod and port),
//! [`model`] (watch state and sticky choice), [`channel`] (the channel protocol), [`alloc`],
//! [`names`], [`report`] (events and the live table) — are tested without sockets;
//! [`tunnel`] and the engine do the IO.

pub mod access;
pub mod alloc;
pub use kubelan_session::portforward::channel;
mod engine;
pub mod error;
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
pub mod hosts_block;
pub mod model;
pub mod names;
pub mod open;
pub mod report;
pub mod request;
pub mod resolve;
pub mod spec;
pub mod tunnel;

pub use engine::{Counters, Events, Options, Registry, Running, start, start_bulk};
pub use error::ForwardError;
pub use hosts_block::{HostsBlock, HostsBlockError};
pub use open::{connect, start_request};
pub use report::{Event, Row, Totals, render_table};
pub use request::{Request, check_request};
pub use spec::{BindAddress, ForwardSpec, parse_addresses, parse_specs};
