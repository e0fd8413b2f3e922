//! What `connect` and `gateway` tell their user, as data: each [`Event`] says its line for
//! people ([`fmt::Display`]) and its JSON object ([`Serialize`], with its `event` name); the
//! binary decides where each goes (stderr, stdout, a line refreshed in place).

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use kubelan_session::SessionState;
use kubelan_session::bootstrap::state_line;
use serde::{Deserialize, Serialize, Serializer};

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

/// One thing a running `connect` or `gateway` has to say. Its text ([`fmt::Display`]) is
/// its line for people (the routes event: a line per route); its JSON ([`Serialize`]) is
/// the object `--output json` prints. The events a user reads whatever the format (the
/// crash-watcher warning, the in-place summary and its end, an incomplete restore, the
/// persisted unit) have no JSON: serializing them fails.
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

/// `connect`'s and `gateway`'s JSON lines (`--output json`); the binary adds `time`.
impl kubelan_term::json::Document for Event {
    const TYPE: &'static str = "ConnectEvent";
}

/// `kubelan status --output json` while a connect runs (the type lives in `connect`).
impl kubelan_term::json::Document for crate::connect::Status {
    const TYPE: &'static str = "ConnectStatus";
}

/// `kubelan status --output json` without a running connect.
impl kubelan_term::json::Document for crate::connect::Preview {
    const TYPE: &'static str = "ConnectPreview";
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Cleanup { message } => write!(f, "• left by an earlier run: {message}"),
            Event::Discovering => f.write_str("… discovering the cluster"),
            Event::Note { message } => write!(f, "  note: {message}"),
            Event::Warning { message } => write!(f, "  warning: {message}"),
            Event::Ipv6NotForwarded { prefix } => write!(
                f,
                "  warning: {prefix}: IPv6 is not forwarded by node mode yet (use --mode tunnel)"
            ),
            Event::TcpOnStack { reason } => write!(
                f,
                "  warning: TCP goes through the userspace stack (slower): {reason}"
            ),
            Event::Ipv6TcpOnStack { error } => write!(
                f,
                "  warning: IPv6 TCP goes through the userspace stack (no IPv6 listener: {error})"
            ),
            Event::NoCrashWatcher { error } => write!(
                f,
                "  warning: {error}; if kubelan is killed, `sudo kubelan reset` restores the machine"
            ),
            Event::Routes { tun, routes } => {
                for (i, (dst, why)) in routes.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "\n" };
                    write!(f, "{sep}✓ route {dst} → {tun} ({why})")?;
                }
                Ok(())
            }
            Event::Dns { domain, config } => write!(
                f,
                "✓ DNS: *.{domain} → {} (through the tunnel), search {}; other names → {} ({})",
                config.server,
                config.search.join(" "),
                if config.upstreams.is_empty() {
                    "nowhere (the machine had no resolver)".to_string()
                } else {
                    config.upstreams.join(", ")
                },
                config.backend
            ),
            Event::NoClusterDns => write!(f, "  warning: {NO_CLUSTER_DNS}"),
            Event::NoClusterDnsForLan => write!(f, "  warning: {NO_CLUSTER_DNS_FOR_LAN}"),
            Event::Forwarding { already: false } => {
                f.write_str("✓ enabled IPv4 forwarding (net.ipv4.ip_forward = 1)")
            }
            Event::Forwarding { already: true } => f.write_str("✓ IPv4 forwarding was already on"),
            Event::LanDns {
                listen,
                domain,
                lans,
                upstreams,
            } => write!(
                f,
                "✓ DNS for {} on {listen}: *.{domain} through the tunnel; other names → {}",
                joined(lans, ", "),
                lan_upstreams(upstreams)
            ),
            Event::NodeDns {
                listen,
                domain,
                cluster_dns,
                upstreams,
            } => write!(
                f,
                "✓ DNS on {listen}: *.{domain} and the cluster's reverse zones → {cluster_dns}; other names → {}",
                lan_upstreams(upstreams)
            ),
            Event::Nft {
                table,
                snat,
                lan,
                cluster,
            } => write!(
                f,
                "✓ nftables table ip {table}: {} → {} {}",
                joined(lan, ", "),
                joined(cluster, ", "),
                if *snat {
                    "masqueraded to this host"
                } else {
                    "forwarded as is (--no-snat: pods see LAN addresses)"
                }
            ),
            Event::Redirect { table, listen } => write!(
                f,
                "✓ TCP into the cluster terminated by the kernel (nftables table {table} → {})",
                listen.join(", ")
            ),
            Event::TunnelReady => f.write_str(
                "gateway ready: route the cluster prefixes to this host on the office router (`kubelan routes` prints them)",
            ),
            Event::NodeReady { listen, domain } => write!(
                f,
                "gateway ready. On the office router: `kubelan routes --gateway {listen}` prints the routes; point the LAN's DNS (or a conditional forwarder for {domain}) at {listen}. Ctrl-C stops and undoes everything."
            ),
            Event::Session(state) => f.write_str(&state_line(state)),
            Event::Quitting => f.write_str("… `kubelan quit` asked to disconnect"),
            Event::Disconnecting => f.write_str("… disconnecting, restoring routes and DNS"),
            Event::Stopping => {
                f.write_str("… stopping, removing the firewall table and restoring forwarding")
            }
            Event::Summary(s) | Event::LiveSummary(s) => f.write_str(&s.line()),
            Event::LiveSummaryEnd => Ok(()),
            Event::Restored { outcome } => write!(f, "  {outcome}"),
            Event::RestoreIncomplete => {
                f.write_str("some changes could not be undone; `sudo kubelan reset` retries")
            }
            Event::Persisted { unit, path } => write!(
                f,
                "installed and started {unit} ({}); `systemctl status {unit}` shows it, `journalctl -u {unit}` its summary; `sudo kubelan reset` removes it",
                path.display()
            ),
        }
    }
}

const NO_CLUSTER_DNS: &str =
    "no cluster DNS Service found; DNS is not configured (pass --cluster-dns IP)";
const NO_CLUSTER_DNS_FOR_LAN: &str =
    "no cluster DNS Service found; not serving DNS (pass --cluster-dns IP)";

fn joined<T: ToString>(v: &[T], sep: &str) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(sep)
}

/// Where other names go, for a gateway's DNS line.
fn lan_upstreams(upstreams: &[IpAddr]) -> String {
    if upstreams.is_empty() {
        "nowhere (this host has no resolver): SERVFAIL".to_string()
    } else {
        joined(upstreams, ", ")
    }
}

/// An event's JSON object: `event` names the kind (several events share one, e.g. every
/// state change is a `state`); the fields are those the JSON output has always had.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Json<'a> {
    Cleanup {
        message: &'a str,
    },
    State {
        state: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Note {
        message: &'a str,
    },
    Warning {
        message: Cow<'a, str>,
    },
    Routes {
        tun: &'a str,
        routes: Vec<RouteJson<'a>>,
    },
    Dns(DnsJson<'a>),
    Forwarding {
        enabled: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        already: bool,
    },
    Nft {
        table: String,
        snat: bool,
        lan: &'a [Ipv4Net],
        cluster: &'a [Ipv4Net],
    },
    Redirect {
        table: &'a str,
        listen: &'a [String],
    },
    Ready {
        mode: &'static str,
    },
    Summary(&'a Summary),
    Restore {
        message: &'a str,
    },
    /// Events only ever shown as text.
    #[serde(skip_serializing)]
    TextOnly,
}

#[derive(Serialize)]
struct RouteJson<'a> {
    prefix: &'a IpNet,
    why: &'a str,
}

/// The three `dns` events' fields.
#[derive(Serialize)]
#[serde(untagged)]
enum DnsJson<'a> {
    Connect(&'a DnsConfigured),
    Lan {
        listen: &'a SocketAddr,
        domain: &'a str,
        upstreams: &'a [IpAddr],
    },
    Node {
        listen: &'a SocketAddr,
        domain: &'a str,
        cluster_dns: &'a IpAddr,
        upstreams: &'a [IpAddr],
    },
}

/// A session state's JSON name.
fn state_name(state: &SessionState) -> &'static str {
    match state {
        SessionState::Connecting => "connecting",
        SessionState::Connected { .. } => "connected",
        SessionState::Reconnecting { .. } => "reconnecting",
        SessionState::Failed(_) => "failed",
    }
}

impl Event {
    fn json(&self) -> Json<'_> {
        let state = |state| Json::State {
            state,
            detail: None,
        };
        let warning = |m: String| Json::Warning {
            message: Cow::Owned(m),
        };
        match self {
            Event::Cleanup { message } => Json::Cleanup { message },
            Event::Discovering => state("discovering"),
            Event::Note { message } => Json::Note { message },
            Event::Warning { message } => Json::Warning {
                message: Cow::Borrowed(message),
            },
            Event::Ipv6NotForwarded { prefix } => {
                warning(format!("{prefix}: IPv6 is not forwarded by node mode yet"))
            }
            Event::TcpOnStack { reason } => {
                warning(format!("TCP goes through the userspace stack: {reason}"))
            }
            Event::Ipv6TcpOnStack { error } => warning(format!(
                "IPv6 TCP goes through the userspace stack: {error}"
            )),
            Event::NoClusterDns => warning(NO_CLUSTER_DNS.into()),
            Event::NoClusterDnsForLan => warning(NO_CLUSTER_DNS_FOR_LAN.into()),
            Event::Routes { tun, routes } => Json::Routes {
                tun,
                routes: routes
                    .iter()
                    .map(|(prefix, why)| RouteJson { prefix, why })
                    .collect(),
            },
            Event::Dns { config, .. } => Json::Dns(DnsJson::Connect(config)),
            Event::LanDns {
                listen,
                domain,
                upstreams,
                ..
            } => Json::Dns(DnsJson::Lan {
                listen,
                domain,
                upstreams,
            }),
            Event::NodeDns {
                listen,
                domain,
                cluster_dns,
                upstreams,
            } => Json::Dns(DnsJson::Node {
                listen,
                domain,
                cluster_dns,
                upstreams,
            }),
            Event::Forwarding { already } => Json::Forwarding {
                enabled: true,
                already: *already,
            },
            Event::Nft {
                table,
                snat,
                lan,
                cluster,
            } => Json::Nft {
                table: format!("ip {table}"),
                snat: *snat,
                lan,
                cluster,
            },
            Event::Redirect { table, listen } => Json::Redirect { table, listen },
            Event::TunnelReady => Json::Ready { mode: "tunnel" },
            Event::NodeReady { .. } => Json::Ready { mode: "node" },
            Event::Session(s) => Json::State {
                state: state_name(s),
                detail: Some(s.to_string()),
            },
            Event::Quitting => state("quitting"),
            Event::Disconnecting => state("disconnecting"),
            Event::Stopping => state("stopping"),
            Event::Summary(s) => Json::Summary(s),
            Event::Restored { outcome } => Json::Restore { message: outcome },
            Event::NoCrashWatcher { .. }
            | Event::LiveSummary(_)
            | Event::LiveSummaryEnd
            | Event::RestoreIncomplete
            | Event::Persisted { .. } => Json::TextOnly,
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(s)
    }
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
