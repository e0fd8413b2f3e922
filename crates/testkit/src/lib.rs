//! Helpers shared by kubelan's integration and end-to-end test suites, so that each suite
//! states what it checks and nothing about how to set a machine up for it.
//!
//! - [`skip`]: whether a root-only test can run here; it says why not and skips, or fails
//!   when CI sets `KUBELAN_E2E_REQUIRED=1`.
//! - [`cmd`]: run a command, require success, wait for a condition (always bounded).
//! - [`snapshot`]: the root network namespace as text, to check that a test left it as
//!   found.
//! - [`netns`] and [`tempdir`]: a private network namespace and a temporary directory,
//!   each removed when its guard is dropped (also on failure and panic).
//! - [`lab`]: the lab fixture for end-to-end tests of the `kubelan` binary: labs with
//!   unique names brought down by a guard, background commands on lab hosts stopped by
//!   PID, and the lab's API through kube-rs.
//! - [`rbac`]: applying printed RBAC to a cluster.
//! - [`golden`]: expected output kept in files, rewritten on request.
//!
//! Only ever a dev-dependency: nothing here is part of kubelan's product.

pub mod cmd;
pub mod golden;
pub mod lab;
pub mod netns;
pub mod rbac;
pub mod skip;
pub mod snapshot;
pub mod tempdir;

pub use cmd::{kubectl, ok, run, signal, text, wait_for};
pub use lab::{
    Background, Cluster, Lab, client_pod, crash_watcher_of, curl, host_snapshot, http_code,
    kill_9_and_time, kubectl_ok, kubelan, kubelan_bin, lab_available, leftovers, namespace_count,
    netns, on_host, pods_of, refused, session_objects, unique_name,
};
pub use netns::{Netns, exec_in, in_netns, ip_in};
pub use rbac::apply_rbac;
pub use skip::{root_available, root_or_skip};
pub use snapshot::root_snapshot;
pub use tempdir::TempDir;
