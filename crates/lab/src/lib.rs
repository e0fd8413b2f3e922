//! The kubelan lab: a simulated Kubernetes cluster made of Linux network namespaces,
//! real processes and real kernel networking, with `kubelan-apisim` as its API server.
//!
//! Layout: [`config`] describes the topology; [`topology`] builds the namespaces, links and
//! routes; [`daemon`] runs the API server, controllers, one [`kubelet`] and one
//! [`kubeproxy`] per node; pods are [`sandbox`]es running real processes; [`clusterdns`] is
//! the kube-dns pod's program (a real dnsmasq fed from the API); [`serve`] holds the default
//! workloads' servers. [`state`] keeps the crash journal that `lab down` replays.

pub mod cli;
pub mod clusterdns;
pub mod config;
pub mod daemon;
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
pub mod ipam;
pub mod kubelet;
pub mod kubeproxy;
pub mod lifecycle;
pub mod netops;
pub mod runtime;
pub mod sandbox;
pub mod serve;
pub mod state;
pub mod topology;
pub mod workloads;
