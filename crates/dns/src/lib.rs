//! Cluster DNS for kubelan: answers for the Kubernetes DNS schema (`<svc>.<ns>.svc.<domain>`,
//! headless endpoint hostnames, SRV, ExternalName CNAMEs, pod names, PTR) from a local watch
//! cache instead of the cluster's DNS server.
//!
//! Three layers:
//!
//! * [`names`]: [`ClusterNames`], the sans-IO cache. Fed Services, EndpointSlices and Pods; answers
//!   [`lookup`](ClusterNames::lookup) (records, NODATA, NXDOMAIN, or "ask the cluster DNS
//!   server") and [`resolve_host`](ClusterNames::resolve_host) for flow targets.
//! * [`server`]: [`answer`], raw DNS query in, raw reply (or "forward it") out, plus
//!   [`forward_udp`] to relay what the cache cannot answer.
//! * [`watch`]: [`run_watchers`], the task that keeps a shared cache current from the API.
//!
//! Every DNS front end of kubelan (the relay of `connect` and the gateways, the agent's DNS
//! flows and [`answer`]) first passes each query through [`query::screen`]: malformed
//! queries and queries with more than one question get FORMERR at once and are never
//! relayed. [`throttle::Tally`] keeps the logging of repeated upstream failures to one line
//! per interval.
//!
//! In the data path: the in-cluster agent answers DNS queries that clients send through the
//! tunnel with [`answer`], relaying [`Answer::Forward`] to the cluster DNS server, and resolves
//! `Target::Name` hosts of TCP/UDP flows with [`ClusterNames::resolve_host`]. The local DNS
//! server of `kubelan connect` splits queries with [`split`]: cluster names go through the
//! tunnel to the agent, everything else to the machine's own resolvers.

#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
pub mod names;
pub mod query;
pub mod server;
pub mod split;
pub mod throttle;
pub mod watch;

pub use names::{
    AddressKind, ClusterNames, DEFAULT_DOMAIN, Lookup, QueryType, Record, RecordData, TTL,
};
pub use query::{Question, Screen, screen};
pub use server::{Answer, RESEND_AFTER, answer, answer_tcp, forward_udp};
pub use split::{Route, SplitZones};
pub use watch::{WatchError, run_watchers};
