//! kubelan's cluster side: everything that talks to the Kubernetes API on behalf of the
//! user, before any packet flows.
//!
//! - [`kubeconfig`]: a kube client the way kubectl would build it (`--kubeconfig`,
//!   `--context`, `-n`), with errors that say which flag or variable fixes them.
//! - [`install`](mod@install): the in-cluster agent's manifests (one Deployment running `kubelan agent`
//!   under Pod Security `restricted`, its Service, a read-only ClusterRole, and a Secret
//!   with a private CA and certificates), `kubelan install` / `uninstall`, `--dry-run` YAML.
//! - [`preflight`]: SelfSubjectAccessReviews that list every missing permission before an
//!   operation starts; [`rbac`]: the Roles that grant them, per mode (`kubelan rbac`).
//! - [`agent`]: finding a running agent, the addresses to dial for its direct carrier, and
//!   the client credentials; [`tls`]: the mutual-TLS configurations of that carrier.
//! - [`discovery`]: the cluster's Service and Pod CIDRs, cluster domain and DNS Service,
//!   each with its provenance, and the route plan checked against the host's routes.
//! - [`session_objects`]: every object one `expose` / `replace` / `run` session creates (a
//!   Job running `kubelan relay`, its Service, the replace lock and per-session RBAC, all
//!   owned by the Job), the selector swap and restore patches, and the GitOps check.
//! - [`replace`](mod@replace): the patches of `kubelan replace`, which swap a Service's selector
//!   to a session's relay and put it back.
//! - [`cli`]: the command-line arguments and output of `install`, `uninstall` and `rbac`;
//!   [`global_flags`]: kubectl's global flags (`--kubeconfig`, `--context`, `-n`, `-v`, `-o`).
//! - [`completion`]: shell completion's questions to the cluster (Services, namespaces)
//!   under a hard deadline, and the cluster flags of a partial command line.
//! - `fuzz_entry` (feature `fuzz`): the fuzz targets of discovery's parsers and prefix
//!   arithmetic.
//!
//! The data path itself (carriers, protocol, proxying) lives in other crates; they start
//! from [`agent::find_agent`], [`agent::direct_endpoints`] and [`agent::load_credentials`].

mod access;
pub mod agent;
pub mod cli;
pub mod completion;
pub mod credentials;
pub mod discovery;
pub mod error;
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
pub mod global_flags;
pub mod install;
pub mod kubeconfig;
pub mod names;
pub mod preflight;
pub mod rbac;
pub mod replace;
pub mod session_objects;
pub mod tls;
pub mod transport;

pub use agent::{
    AgentInfo, AgentPod, AgentService, NodeAddresses, direct_endpoints, find_agent,
    load_credentials,
};
pub use credentials::{AgentCredentials, Credentials};
pub use discovery::{ClusterFacts, DiscoveryOverrides, Fact, Source, discover, plan_routes};
pub use error::ClusterError;
pub use install::{
    InstallEvent, InstallOptions, InstallReport, ServiceType, UninstallReport, install, manifests,
    to_yaml, uninstall,
};
pub use kubeconfig::{ClusterClient, KubeArgs, KubeconfigArgs, connect};
pub use preflight::{Access, Missing, check};
pub use rbac::{RbacMode, user_rbac};
