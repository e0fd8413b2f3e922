//! kubelan's session layer.
//!
//! A *carrier* is a byte stream to the in-cluster agent: an API-server port-forward
//! ([`carrier::PortForwardDialer`]) or direct mutual TLS ([`carrier::DirectDialer`]). Each
//! carrier runs kubelan's multiplexer ([`mux`]); its first stream is the control stream (hello, pings,
//! facts) and every flow gets a stream of its own, framed by [`kubelan_proto`].
//!
//! [`Session`] keeps one carrier per dialer alive: it pings every second, declares a
//! carrier dead after 3 s of silence, and redials with exponential backoff and jitter,
//! from the agent addresses it knows (the Kubernetes API is asked in parallel, not
//! first). A session on its fallback carrier (port-forward) probes the preferred one
//! (direct) and moves new flows to it when it answers; the old carrier closes once idle.
//! Flows on a dead carrier fail with [`kubelan_proto::ErrorKind::CarrierLost`]; new flows
//! wait (up to their open timeout) for a carrier to come back. The agent side uses the same
//! [`mux`] and [`flow`] pieces.

pub mod bootstrap;
pub mod carrier;
mod client;
pub mod flow;
mod flow_dialer;
pub mod mux;
pub mod portforward;
mod reconnect;
pub mod relay;
pub mod reverse;
#[cfg(test)]
mod testio;

pub use carrier::{CarrierDialer, CarrierError, CarrierKind, Dialed};
pub use client::{CarrierInfo, Session, SessionConfig, SessionState, SessionStats};
pub use flow::{FlowConn, FrameReader, ReadChunk, WriteChunk, write_frame};
pub use flow_dialer::FlowDialer;
pub use reverse::{AcceptLimits, Acceptor, FlowReport};
