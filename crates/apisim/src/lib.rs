//! A Kubernetes API server simulator: the only simulated part of the kubelan lab.
//!
//! It serves the real Kubernetes REST API over TLS (discovery, list, watch, get, create,
//! update, patch, delete, selectors, `Status` errors, tables for kubectl, `pods/portforward`
//! over WebSocket) from an in-memory store, runs the controllers a cluster needs to turn
//! Deployments, StatefulSets and Services into Pods and EndpointSlices, and evaluates RBAC.
//! Everything that carries packets (pods, kube-proxy, DNS) is real and lives in the `lab`
//! crate; this crate never touches the network except for its own listening socket.
//!
//! Differences from a real kube-apiserver are listed in `docs/lab.md`.
//!
//! With the `testing` feature, the `testing` module starts the whole thing in-process (TLS
//! on loopback, PKI, an admin token, controllers, a stand-in kubelet) as a test cluster for
//! other crates' tests and benchmarks, and hands out kube-rs clients for it.

mod admission;
pub mod auth;
pub mod controllers;
pub mod discovery;
pub mod error;
mod escalation;
pub mod meta;
pub mod patch;
pub mod pki;
pub mod podsecurity;
pub mod protobuf;
pub mod resources;
pub mod selector;
pub mod server;
mod state;
pub mod store;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{Authenticator, UserInfo};
pub use error::{ApiError, ApiResult};
pub use server::{ApiServer, PodBackend, ServerInfo};
pub use store::{ClusterConfig, Store};
