//! What a running `connect` reports on its control socket (`kubelan status`), as a typed
//! document: the connect serialises it, `kubelan status` reads it back and prints its text
//! (or passes it on as JSON).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::DnsConfigured;

/// A running connect's state. Its text is what `kubelan status` prints (a line each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Its process.
    pub pid: u32,
    /// When it started (RFC 3339).
    pub since: String,
    /// The session's state (`connected`, `reconnecting`, …).
    pub state: String,
    /// The session's state in one line.
    pub detail: String,
    /// The carriers up, one line each.
    pub carriers: Vec<String>,
    /// The TUN device.
    pub tun: TunStatus,
    /// The cluster routes into the TUN.
    pub routes: Vec<RouteStatus>,
    /// Addresses kept outside the tunnel (API server, agent).
    pub pinned: Vec<String>,
    /// The cluster's facts, as discovery serialises them.
    pub facts: serde_json::Value,
    /// Split DNS on this machine.
    pub dns: DnsStatus,
    /// The kernel redirection of TCP, or why TCP goes through the userspace stack.
    pub redirect: RedirectStatus,
    /// Flows, bytes and DNS queries so far.
    pub counters: Counters,
    /// The userspace stack's counters.
    pub stack: StackCounters,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kubelan connect (pid {}), since {}",
            self.pid, self.since
        )?;
        writeln!(f, "  state:    {}", self.detail)?;
        writeln!(f, "  tun:      {} (mtu {})", self.tun.name, self.tun.mtu)?;
        writeln!(f, "  routes:")?;
        for r in &self.routes {
            writeln!(f, "    {:<20} {}", r.prefix, r.why)?;
        }
        for p in &self.pinned {
            writeln!(
                f,
                "    {p:<20} kept outside the tunnel (API server or agent address)"
            )?;
        }
        match &self.dns {
            DnsStatus::Configured(d) => writeln!(
                f,
                "  dns:      {} via {}; search {}; other names → {}",
                d.routing_domains.join(" "),
                d.backend,
                d.search.join(" "),
                d.upstreams.join(", ")
            )?,
            DnsStatus::NotConfigured { .. } => writeln!(f, "  dns:      not configured")?,
        }
        let r = &self.redirect;
        if r.active {
            writeln!(
                f,
                "  tcp:      redirected by nftables table {} to {} (kernel TCP)",
                r.table.as_deref().unwrap_or_default(),
                r.listen.as_deref().unwrap_or_default().join(", ")
            )?;
        } else {
            let reason = r.reason.as_deref().unwrap_or_default();
            writeln!(f, "  tcp:      through the userspace stack ({reason})")?;
        }
        let c = &self.counters;
        writeln!(
            f,
            "  flows:    {} TCP ({} open, {} failed, {} refused), {} UDP, {} pings ({} answered); {} B up, {} B down",
            c.tcp_flows,
            c.tcp_open,
            c.tcp_failed,
            c.tcp_refused,
            c.udp_flows,
            c.pings,
            c.pongs,
            c.bytes_up,
            c.bytes_down
        )?;
        writeln!(
            f,
            "  dns:      {} cluster queries, {} other, {} failed",
            c.dns_cluster, c.dns_upstream, c.dns_failed
        )
    }
}

/// The TUN device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunStatus {
    /// Its name.
    pub name: String,
    /// Its MTU.
    pub mtu: u16,
}

impl From<&kubelan_cluster::discovery::PlannedRoute> for RouteStatus {
    fn from(r: &kubelan_cluster::discovery::PlannedRoute) -> Self {
        RouteStatus {
            prefix: r.dst.to_string(),
            why: r.why.clone(),
        }
    }
}

/// One route into the tunnel and why it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// The prefix.
    pub prefix: String,
    /// Why it is routed (the fact's source).
    pub why: String,
}

/// Split DNS: what was configured, or that nothing was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DnsStatus {
    /// Configured.
    Configured(DnsConfigured),
    /// Not configured (`--no-dns`, or no cluster DNS known).
    NotConfigured {
        /// Always `false`.
        configured: bool,
    },
}

/// TCP into the cluster: redirected by nftables to kubelan's listeners (`active`), or
/// through the userspace stack and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectStatus {
    /// The redirection is in place.
    pub active: bool,
    /// Its nftables table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The listeners redirected TCP reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Vec<String>>,
    /// Why TCP goes through the userspace stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A running connect's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// TCP flows opened (kernel-terminated and stack).
    pub tcp_flows: u64,
    /// TCP flows the agent could not open.
    pub tcp_failed: u64,
    /// Redirected TCP connections refused (not into the cluster).
    pub tcp_refused: u64,
    /// TCP flows open now.
    pub tcp_open: u64,
    /// UDP flows.
    pub udp_flows: u64,
    /// Bytes into the cluster.
    pub bytes_up: u64,
    /// Bytes from the cluster.
    pub bytes_down: u64,
    /// ICMP echo requests.
    pub pings: u64,
    /// ICMP echo replies.
    pub pongs: u64,
    /// DNS queries for the cluster domain.
    pub dns_cluster: u64,
    /// DNS queries for other names.
    pub dns_upstream: u64,
    /// DNS queries that failed.
    pub dns_failed: u64,
    /// DNS queries that were not DNS.
    pub dns_malformed: u64,
    /// Flows the session opened.
    pub session_flows_opened: u64,
    /// Flows the session failed to open.
    pub session_flows_failed: u64,
    /// Carriers that came up.
    pub carriers_up: u64,
}

/// The userspace stack's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackCounters {
    /// Packets read from the TUN.
    pub packets_in: u64,
    /// Packets written to the TUN.
    pub packets_out: u64,
    /// TCP flows.
    pub tcp_flows: u64,
    /// TCP flows open now.
    pub tcp_open: u64,
    /// UDP flows.
    pub udp_flows: u64,
    /// UDP datagrams dropped.
    pub udp_dropped: u64,
    /// ICMP echo requests.
    pub icmp_requests: u64,
    /// ICMP echo replies.
    pub icmp_replies: u64,
    /// Packets dropped.
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document as a connect before the types sent it: the types read it and write
    /// it back unchanged (`kubelan status --output json` passes it on).
    #[test]
    fn the_control_socket_document_round_trips() {
        let doc = serde_json::json!({
            "pid": 4242, "since": "2026-01-02T03:04:05Z", "state": "connected",
            "detail": "connected via port-forward", "carriers": ["port-forward to kubelan-system/a"],
            "tun": {"name": "kubelan0", "mtu": 1400},
            "routes": [{"prefix": "172.17.16.0/20", "why": "services: flag"}],
            "pinned": ["10.4.7.11/32"],
            "facts": {"cluster_domain": {"value": "cluster.local"}},
            "dns": {"configured": false},
            "redirect": {"active": false, "reason": "nft: command not found"},
            "counters": Counters { tcp_flows: 3, ..Counters::default() },
            "stack": StackCounters { packets_in: 9, ..StackCounters::default() },
        });
        let st: Status = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(
            st.redirect.reason.as_deref(),
            Some("nft: command not found")
        );
        assert!(matches!(
            st.dns,
            DnsStatus::NotConfigured { configured: false }
        ));
        assert_eq!(serde_json::to_value(&st).unwrap(), doc);
        let mut active = doc;
        active["redirect"] = serde_json::json!({"active": true, "table": "inet kubelan_connect", "listen": ["127.0.0.1:40001"]});
        active["dns"] = serde_json::json!({"configured": true, "backend": "resolv.conf", "server": "172.17.16.10", "routing_domains": ["cluster.local"], "search": [], "upstreams": ["9.9.9.9"]});
        let st: Status = serde_json::from_value(active.clone()).unwrap();
        assert!(matches!(&st.dns, DnsStatus::Configured(d) if d.upstreams == ["9.9.9.9"]));
        assert_eq!(serde_json::to_value(&st).unwrap(), active);
    }
}
