//! What `connect` and `gateway` tell their user, as data: the binary renders each [`Event`]
//! as a line for people or a JSON object, so the library never decides where output goes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use kubelan_session::SessionState;
use serde::{Deserialize, Serialize};

/// Where a mode sends its events; called from the mode's tasks, so it is shared.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// The host DNS configuration `connect` made (also what `kubelan status` shows under `dns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfigured {
    /// Always `true` (the JSON form says so).
    pub configured: bool,
    /// The resolver backend that was changed (`systemd-resolved`, `resolv.conf`).
    pub backend: String,
    /// The cluster DNS address names are sent to.
    pub server: String,
    /// Domains routed to the cluster DNS.
    pub routing_domains: Vec<String>,
    /// Search domains added.
    pub search: Vec<String>,
    /// Where other names go.
    pub upstreams: Vec<String>,
}

/// Counters of a node gateway, shown as its running summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// LAN clients seen (by the forwarding rules or the DNS server).
    pub clients: usize,
    /// Forwarded flows.
    pub flows: u64,
    /// Bytes LAN → cluster.
    pub bytes_up: u64,
    /// Bytes cluster → LAN.
    pub bytes_down: u64,
    /// DNS queries answered by the cluster DNS.
    pub dns_cluster: u64,
    /// DNS queries sent to this host's resolvers.
    pub dns_other: u64,
    /// DNS queries from sources outside the LANs.
    pub dns_refused: u64,
    /// DNS queries that were not DNS.
    pub dns_malformed: u64,
}

/// One thing a running `connect` or `gateway` has to say.
#[derive(Debug, Clone)]
pub enum Event {
    /// A change a crashed earlier run left behind was undone.
    Cleanup {
        /// What was undone.
        message: String,
    },
    /// Cluster discovery started.
    Discovering,
    /// A fact the user should know (where a prefix came from, a default assumed).
    Note {
        /// The note.
        message: String,
    },
    /// Something works differently than the user may expect.
    Warning {
        /// The warning.
        message: String,
    },
    /// A node gateway does not forward this IPv6 prefix.
    Ipv6NotForwarded {
        /// The LAN or cluster prefix.
        prefix: IpNet,
    },
    /// TCP stays on the TUN path: the kernel redirection could not be set up.
    TcpOnStack {
        /// Why.
        reason: String,
    },
    /// IPv6 TCP stays on the TUN path: no IPv6 listener.
    Ipv6TcpOnStack {
        /// Why.
        error: String,
    },
    /// The crash watcher could not be started.
    NoCrashWatcher {
        /// Why.
        error: String,
    },
    /// Cluster routes were added into the TUN.
    Routes {
        /// The TUN device.
        tun: String,
        /// Each prefix and why it is routed.
        routes: Vec<(IpNet, String)>,
    },
    /// Split DNS was configured on this machine (`connect`).
    Dns {
        /// The cluster domain.
        domain: String,
        /// What was configured.
        config: DnsConfigured,
    },
    /// No cluster DNS address is known: DNS is not configured.
    NoClusterDns,
    /// No cluster DNS address is known: a node gateway serves no DNS.
    NoClusterDnsForLan,
    /// IPv4 forwarding is on.
    Forwarding {
        /// It was on before.
        already: bool,
    },
    /// A tunnel gateway serves DNS on the LAN.
    LanDns {
        /// The listening address.
        listen: SocketAddr,
        /// The cluster domain.
        domain: String,
        /// The LANs served.
        lans: Vec<IpNet>,
        /// Where other names go.
        upstreams: Vec<IpAddr>,
    },
    /// A node gateway serves DNS on the LAN.
    NodeDns {
        /// The listening address.
        listen: SocketAddr,
        /// The cluster domain.
        domain: String,
        /// The cluster DNS Service address.
        cluster_dns: IpAddr,
        /// Where other names go.
        upstreams: Vec<IpAddr>,
    },
    /// A node gateway's nftables table is in place.
    Nft {
        /// Table name (family `ip`).
        table: String,
        /// LAN traffic is masqueraded.
        snat: bool,
        /// The IPv4 LANs.
        lan: Vec<Ipv4Net>,
        /// The IPv4 cluster prefixes.
        cluster: Vec<Ipv4Net>,
    },
    /// TCP into the cluster is redirected to kubelan's listeners by nftables.
    Redirect {
        /// Table (`inet kubelan_connect`).
        table: String,
        /// The listeners.
        listen: Vec<String>,
    },
    /// A tunnel gateway is ready.
    TunnelReady,
    /// A node gateway is ready.
    NodeReady {
        /// Its DNS address (the office router's next hop too).
        listen: IpAddr,
        /// The cluster domain.
        domain: String,
    },
    /// The session to the agent changed state.
    Session(SessionState),
    /// `kubelan quit` asked to stop.
    Quitting,
    /// `connect` is stopping and restoring.
    Disconnecting,
    /// A node gateway is stopping and restoring.
    Stopping,
    /// A node gateway's counters changed (sent every 30 s at most).
    Summary(Summary),
    /// A node gateway's counters, refreshed in place (on a terminal, every 2 s).
    LiveSummary(Summary),
    /// The in-place summary ends.
    LiveSummaryEnd,
    /// One change was undone on exit.
    Restored {
        /// What happened to it.
        outcome: String,
    },
    /// Some changes could not be undone.
    RestoreIncomplete,
    /// `gateway --persist` installed and started its systemd unit.
    Persisted {
        /// The unit's name.
        unit: String,
        /// The unit file.
        path: std::path::PathBuf,
    },
}

impl Summary {
    /// The summary as one line.
    pub fn line(&self) -> String {
        format!(
            "clients {} · flows {} · ↑ {} ↓ {} · DNS {} cluster, {} other, {} refused, {} malformed",
            self.clients,
            self.flows,
            human_bytes(self.bytes_up),
            human_bytes(self.bytes_down),
            self.dns_cluster,
            self.dns_other,
            self.dns_refused,
            self.dns_malformed
        )
    }
}

/// Bytes in binary units with one decimal (`1.5 KiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
