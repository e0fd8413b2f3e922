//! The lab's kube-dns: a real `dnsmasq` whose records follow the API.
//!
//! The `kube-system/kube-dns` pod runs [`run`] inside its network namespace.
//! It watches Services, EndpointSlices and Pods in all namespaces, turns them
//! into address records with the pure function [`records`], and writes them as
//! one hosts file into a directory that `dnsmasq --hostsdir` watches with
//! inotify. `dnsmasq` itself runs as a supervised child process.
//!
//! # Records
//!
//! Following the "Kubernetes DNS-Based Service Discovery" specification
//! (schema 1.1.0) and the behaviour of CoreDNS's `kubernetes` plugin:
//!
//! * a Service with a cluster IP: `<svc>.<ns>.svc.<domain>` → each of its
//!   cluster IPs (A and AAAA for dual-stack Services);
//! * a headless Service (`clusterIP: None`): `<svc>.<ns>.svc.<domain>` → every
//!   ready endpoint address of its EndpointSlices (found through the
//!   `kubernetes.io/service-name` label), plus `<hostname>.<svc>.<ns>.svc.<domain>`
//!   for endpoints that carry a hostname (StatefulSet pods), or
//!   `<dashed-ip>.<svc>.<ns>.svc.<domain>` for those without one (what CoreDNS
//!   answers, and what makes reverse lookups of headless endpoints work).
//!   An endpoint is ready when its `ready` condition is true or unset; with
//!   `publishNotReadyAddresses` (or the legacy
//!   `service.alpha.kubernetes.io/tolerate-unready-endpoints: "true"`
//!   annotation) every endpoint counts;
//! * every pod IP: `<dashed-ip>.<ns>.pod.<domain>` (`10-244-1-5.default.pod.cluster.local`;
//!   colons become dashes for IPv6). Host-network pods (which do not own their
//!   IP) and finished pods (whose IP may already belong to another pod) get no
//!   record;
//! * ExternalName Services are skipped: a CNAME to an outside name cannot be
//!   followed without an upstream resolver, and hosts files cannot hold CNAMEs;
//! * `dns-version.<domain>` TXT → the schema version (a static dnsmasq flag).
//!
//! Reverse (PTR) lookups answer the first name of an address, so names are
//! ordered by preference: Service names of cluster IPs, then endpoint
//! hostnames, then generated endpoint names, then headless Service names, then
//! pod names; ties are broken alphabetically. SRV records are not served.
//!
//! # dnsmasq
//!
//! The flags (see [`dnsmasq_args`]) were settled by experiment with dnsmasq
//! 2.90:
//!
//! * `--hostsdir` picks up a renamed-in file at once (inotify `IN_MOVED_TO`):
//!   a query sent right after the `rename` already sees the new records, and
//!   records that disappear from the file disappear from the answers. No
//!   signal is needed.
//! * The temporary file must start with a dot: dnsmasq reads *every* new file
//!   in the directory, except names starting with `.` (and a few editor
//!   patterns); a visible temporary file would be read as a second hosts
//!   file and its names would linger after the rename.
//! * `--cache-size` does not matter: hosts-file records are kept outside the
//!   answer cache. With the default (150) 5000 names were all served, and with
//!   `--cache-size=0` updates were seen just the same. The default is kept.
//! * `--local=/<domain>/` answers the cluster domain only from local data
//!   (unknown names get NXDOMAIN); everything else gets REFUSED because there
//!   is no upstream (`--no-resolv`).
//! * `--bogus-priv` answers reverse lookups of unknown private addresses with
//!   NXDOMAIN instead of REFUSED; known addresses still get their PTR.
//! * `--conf-file=/dev/null` keeps the machine's `/etc/dnsmasq.conf` (and
//!   whatever `conf-dir` it names) out of the lab.

mod dnsmasq;
mod records;
#[cfg(test)]
mod tests;
mod watch;

use std::net::IpAddr;
use std::path::PathBuf;

pub use dnsmasq::{HostsWriter, dnsmasq_args};
pub use records::{Records, records, render_hosts};
pub use watch::run;

/// The cluster domain used when none is configured.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The version of the Kubernetes DNS schema served at `dns-version.<domain>`.
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";

/// Name of the hosts file written into [`ClusterDnsOptions::hosts_dir`].
pub const HOSTS_FILE_NAME: &str = "cluster-dns.hosts";

/// Settings of [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDnsOptions {
    /// The cluster domain, `cluster.local` by default.
    pub domain: String,
    /// The directory dnsmasq watches; created if missing. The records are
    /// written to [`HOSTS_FILE_NAME`] in it.
    pub hosts_dir: PathBuf,
    /// The DNS port, 53 by default.
    pub port: u16,
    /// The address to listen on; `None` listens on every address of the
    /// network namespace.
    pub listen: Option<IpAddr>,
    /// The dnsmasq program, looked up in `PATH` when it has no slash.
    pub dnsmasq: PathBuf,
    /// The TTL of answers, in seconds.
    pub ttl: u32,
}

impl Default for ClusterDnsOptions {
    fn default() -> Self {
        Self {
            domain: DEFAULT_DOMAIN.to_owned(),
            hosts_dir: PathBuf::from("/run/kubelan/cluster-dns"),
            port: 53,
            listen: None,
            dnsmasq: PathBuf::from("dnsmasq"),
            ttl: 5,
        }
    }
}
