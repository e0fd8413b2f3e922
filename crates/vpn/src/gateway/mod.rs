//! `kubelan gateway`: the cluster's Pod and Service networks and cluster DNS names for a
//! whole LAN, with nothing installed on the LAN's machines (one static route on the office
//! router, `kubelan routes` prints it).
//!
//! - `--mode node` (a host that already reaches pods, typically a cluster node): kernel
//!   forwarding, SNAT of LAN → cluster traffic in kubelan's own nftables table, and a DNS
//!   server on the LAN address (cluster names → the cluster DNS, the rest → this host's
//!   resolvers).
//! - `--mode tunnel` (any Linux host of the LAN): the TUN and session of `kubelan connect`,
//!   kernel forwarding of LAN traffic into the TUN, and the same DNS server (cluster names
//!   through the tunnel).
//!
//! Order of work, so that bad input changes nothing: flags → leftovers of a crashed run →
//! cluster discovery → LAN checks against the cluster prefixes and this host's addresses →
//! DNS sockets bound (port 53 taken is reported here) → host changes through the guard.

pub(crate) mod persist;
mod rules;

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ipnet::{IpNet, Ipv4Net};
use kubelan_cluster::discovery::{self, ClusterFacts, DiscoveryOverrides};
use kubelan_dns::SplitZones;
use kubelan_sys::journal::{HostGuard, StateDir};
use nftables::types::NfFamily;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Output;
use crate::connect::{self, ConnectArgs, Events};
use crate::dnsrelay::{self, ClusterPath, DnsRelay, DnsStats, LanDns};

pub(crate) use rules::TABLE;

/// Which kind of gateway.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Mode {
    /// This host already routes to pods (a cluster node, or a host with routes to them):
    /// kernel forwarding + SNAT.
    Node,
    /// Nothing here routes to pods: TUN + session to the agent, as `kubelan connect`.
    Tunnel,
}

/// `kubelan gateway` flags.
#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// `node`: this host reaches pods already; `tunnel`: reach them through the agent.
    #[arg(long, value_enum)]
    mode: Mode,
    /// A LAN to serve (repeatable), e.g. 172.16.0.0/18; other sources are neither
    /// forwarded by kubelan's rules nor answered by its DNS.
    #[arg(long, value_name = "CIDR", required = true)]
    lan: Vec<IpNet>,
    /// Node mode: do not masquerade; pods then see LAN clients' real addresses, which
    /// needs a route back to the LAN on every node (`kubelan doctor` checks it).
    #[arg(long)]
    no_snat: bool,
    /// Address to serve DNS on [default: this host's address towards the first --lan].
    #[arg(long, value_name = "IP")]
    dns_listen: Option<IpAddr>,
    /// DNS port (53 is what LAN clients and DNS servers expect).
    #[arg(long, value_name = "PORT", default_value_t = 53)]
    dns_port: u16,
    /// Install this gateway as the systemd unit `kubelan-gateway.service` (started now and
    /// at every boot, which restores forwarding and the nft table) instead of running it
    /// in the foreground. `kubelan reset` removes the unit.
    #[arg(long)]
    persist: bool,
    /// Everything `kubelan connect` takes (cluster, agent, prefixes, TUN); the TUN flags
    /// only apply to `--mode tunnel`.
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs the gateway until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if !kubelan_sys::is_root() {
        bail!(
            "kubelan gateway enables forwarding, adds firewall rules and serves DNS on port 53: run it with sudo"
        );
    }
    let lan = checked_lans(&args.lan)?;
    if args.persist {
        return persist::install(Path::new(persist::UNIT_DIR)).await;
    }
    if let Ok(local) = kubelan_sys::net::addresses().await
        && let Some(w) = same_subnet_warning(&lans_on_own_subnet(&lan, &local))
    {
        Events::new(args.connect.output == Output::Json).emit(
            "warning",
            json!({"message": w}),
            &format!("  warning: {w}"),
        );
    }
    match args.mode {
        Mode::Tunnel => {
            let listen = dns_listen(&args, &lan).await?;
            let sockets = if args.connect.no_dns {
                None
            } else {
                Some(dnsrelay::bind_lan(listen).await?)
            };
            let extra = connect::LanService {
                allowed: lan,
                dns: sockets.map(|s| (s, listen)),
            };
            connect::run(args.connect, Some(extra)).await
        }
        Mode::Node => node(args, lan).await,
    }
}

/// The `--lan` prefixes, refused when they overlap each other.
fn checked_lans(lans: &[IpNet]) -> anyhow::Result<Vec<IpNet>> {
    let lans: Vec<IpNet> = lans.iter().map(IpNet::trunc).collect();
    for (i, a) in lans.iter().enumerate() {
        for b in &lans[i + 1..] {
            if a.contains(b) || b.contains(a) {
                bail!(
                    "--lan {a} and --lan {b} overlap; give each LAN once (the larger prefix covers the smaller). Nothing was changed."
                );
            }
        }
    }
    Ok(lans)
}

/// The DNS address: `--dns-listen` (must be this host's), else this host's source address
/// towards the first LAN.
async fn dns_listen(args: &GatewayArgs, lans: &[IpNet]) -> anyhow::Result<SocketAddr> {
    let local: Vec<IpAddr> = kubelan_sys::net::addresses()
        .await
        .context("reading this host's addresses")?
        .into_iter()
        .map(|a| a.net.addr())
        .collect();
    let ip = match args.dns_listen {
        Some(ip) => {
            if !local.contains(&ip) {
                bail!(
                    "--dns-listen {ip} is not an address of this host (it has {}). Nothing was changed.",
                    local
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            ip
        }
        None => {
            let first = lans.first().context("no --lan given")?;
            let probe = first.hosts().next().unwrap_or(first.addr());
            let path = kubelan_sys::net::route_get(probe)
                .await
                .with_context(|| format!("this host has no route to the LAN {first}"))?;
            match path.source {
                Some(src) if local.contains(&src) && !src.is_loopback() => src,
                _ => bail!(
                    "cannot tell which address of this host the LAN {first} reaches; pass --dns-listen IP"
                ),
            }
        }
    };
    Ok(SocketAddr::new(ip, args.dns_port))
}

/// The `--lan` prefixes this host has an address in, with the interface and its subnet:
/// clients there share a subnet with the gateway.
fn lans_on_own_subnet(
    lans: &[IpNet],
    local: &[kubelan_sys::net::AddrEntry],
) -> Vec<(IpNet, String, IpNet)> {
    let mut out = Vec::new();
    for a in local {
        let subnet = a.net.trunc();
        // A host address (/32, /128) has no neighbours to redirect.
        if a.net.addr().is_loopback() || subnet.prefix_len() == subnet.max_prefix_len() {
            continue;
        }
        for lan in lans {
            if lan.contains(&subnet.network()) || subnet.contains(&lan.network()) {
                out.push((*lan, a.link.clone(), subnet));
            }
        }
    }
    out
}

/// The warning for LAN clients on the gateway's own subnet: the office router forwards
/// their packets back out the interface they came in on, so it sends them ICMP redirects,
/// and the PCs then use this host directly and keep it as next hop for minutes, also
/// after the router has been pointed at another gateway.
fn same_subnet_warning(found: &[(IpNet, String, IpNet)]) -> Option<String> {
    let first = found.first()?;
    let (lan, link, subnet) = first;
    Some(format!(
        "this gateway serves clients on its own subnet (--lan {lan}, {subnet} on {link}): the office router sends their cluster traffic back out the interface it came in on, so it also sends them ICMP redirects, and the PCs then send straight to this host and keep doing so for minutes after the router is pointed at another gateway (failover, maintenance). Fix one of: send_redirects=0 on the router's LAN interface (Linux: net.ipv4.conf.all.send_redirects=0 and net.ipv4.conf.<LAN interface>.send_redirects=0; Cisco IOS: `no ip redirects` on the interface; H3C: `undo ip redirects enable`; Huawei: `undo icmp redirect send`), a separate segment for the gateway, or a route to the cluster prefixes via this host on the PCs. `kubelan doctor --via GATEWAY` on a PC names a cached redirect."
    ))
}

fn v4_only(nets: impl Iterator<Item = IpNet>) -> (Vec<Ipv4Net>, Vec<IpNet>) {
    let mut v4 = Vec::new();
    let mut other = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(_) => other.push(n),
        }
    }
    (v4, other)
}

/// `--mode node`.
async fn node(args: GatewayArgs, lans: Vec<IpNet>) -> anyhow::Result<()> {
    let events = Events::new(args.connect.output == Output::Json);
    let state = StateDir::from_env();
    state
        .ensure()
        .with_context(|| format!("state directory {}", state.path().display()))?;
    let leftovers = kubelan_sys::journal::reset(&state, false).await;
    for line in leftovers
        .lines()
        .into_iter()
        .filter(|_| !leftovers.nothing_to_do())
    {
        events.emit(
            "cleanup",
            json!({"message": line}),
            &format!("• left by an earlier run: {line}"),
        );
    }
    events.emit(
        "state",
        json!({"state": "discovering"}),
        "… discovering the cluster",
    );
    let overrides = args.connect.overrides();
    let everything_given = !overrides.service_cidrs.is_empty()
        && !overrides.pod_cidrs.is_empty()
        && overrides.dns_server.is_some();
    let mut facts = if everything_given {
        // A gateway host without a kubeconfig.
        discovery::from_flags(&overrides)
    } else {
        let cc = kubelan_cluster::connect(&args.connect.tunnel.kube).await?;
        discovery::discover(&cc, &overrides).await?
    };
    if facts.cluster_domain.source == kubelan_cluster::Source::Default {
        // No agent in node mode to confirm it.
        facts.notes.retain(|n| !n.starts_with("cluster domain:"));
        facts.notes.push(format!(
            "cluster domain: assuming {}; pass --cluster-domain if the cluster uses another",
            facts.cluster_domain.value
        ));
    }
    for note in &facts.notes {
        events.emit("note", json!({"message": note}), &format!("  note: {note}"));
    }
    connect::check_lan_vs_cluster(&lans, &facts)?;
    let (lan4, lan_other) = v4_only(lans.iter().copied());
    let (cluster4, cluster_other) = v4_only(facts.prefixes().map(|(_, f)| f.value));
    for n in lan_other.iter().chain(&cluster_other) {
        events.emit(
            "warning",
            json!({"message": format!("{n}: IPv6 is not forwarded by node mode yet")}),
            &format!("  warning: {n}: IPv6 is not forwarded by node mode yet (use --mode tunnel)"),
        );
    }
    if lan4.is_empty() || cluster4.is_empty() {
        bail!("node mode needs IPv4 LAN and cluster prefixes; nothing was changed");
    }
    let dns_ip = facts.dns_server.as_ref().map(|f| f.value);
    let listen = dns_listen(&args, &lans).await?;
    let sockets = if args.connect.no_dns {
        None
    } else if dns_ip.is_none() {
        events.emit(
            "warning",
            json!({"message": "no cluster DNS Service found; not serving DNS (pass --cluster-dns IP)"}),
            "  warning: no cluster DNS Service found; not serving DNS (pass --cluster-dns IP)",
        );
        None
    } else {
        Some(dnsrelay::bind_lan(listen).await?)
    };

    // Host changes, each journalled first.
    let mut guard = HostGuard::begin(&state, "gateway")?;
    // Undoes the changes below if this process dies without doing so (kill -9, OOM).
    let _watcher = crate::watcher::start(&guard);
    let result = serve_node(
        &args, events, &mut guard, &facts, lan4, cluster4, lans, sockets, listen,
    )
    .await;
    connect::restore(guard, events).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve_node(
    args: &GatewayArgs,
    events: Events,
    guard: &mut HostGuard,
    facts: &ClusterFacts,
    lan4: Vec<Ipv4Net>,
    cluster4: Vec<Ipv4Net>,
    lans: Vec<IpNet>,
    sockets: Option<dnsrelay::LanSockets>,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    if kubelan_sys::sysctl::set(guard, "net.ipv4.ip_forward", "1")? {
        events.emit(
            "forwarding",
            json!({"enabled": true}),
            "✓ enabled IPv4 forwarding (net.ipv4.ip_forward = 1)",
        );
    } else {
        events.emit(
            "forwarding",
            json!({"enabled": true, "already": true}),
            "✓ IPv4 forwarding was already on",
        );
    }
    let rules = rules::GatewayRules {
        lan: lan4.clone(),
        cluster: cluster4.clone(),
        snat: !args.no_snat,
    };
    kubelan_sys::nft::create_table(guard, NfFamily::IP, TABLE, rules.objects()).await?;
    let joined = |v: &[Ipv4Net]| {
        v.iter()
            .map(Ipv4Net::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    events.emit(
        "nft",
        json!({"table": format!("ip {TABLE}"), "snat": !args.no_snat, "lan": lan4, "cluster": cluster4}),
        &format!(
            "✓ nftables table ip {TABLE}: {} → {} {}",
            joined(&lan4),
            joined(&cluster4),
            if args.no_snat {
                "forwarded as is (--no-snat: pods see LAN addresses)"
            } else {
                "masqueraded to this host"
            }
        ),
    );

    let dns_stats = Arc::new(DnsStats::default());
    let mut dns_task = None;
    let mut lan_dns = None;
    if let (Some(sockets), Some(dns_ip)) = (sockets, facts.dns_server.as_ref().map(|f| f.value)) {
        let domain = facts.cluster_domain.value.trim_matches('.').to_string();
        let upstreams = dnsrelay::host_resolvers(
            Path::new(kubelan_sys::dns::DEFAULT_RESOLV_CONF),
            &[listen.ip()],
        )?;
        let relay = Arc::new(DnsRelay {
            zones: SplitZones::new(
                &domain,
                facts
                    .prefixes()
                    .map(|(_, f)| (f.value.addr(), f.value.prefix_len())),
            ),
            cluster: ClusterPath::Direct,
            cluster_dns: SocketAddr::new(dns_ip, 53),
            upstreams: upstreams.iter().map(|u| SocketAddr::new(*u, 53)).collect(),
            stats: dns_stats.clone(),
            failures: Default::default(),
        });
        // The LANs, and this host itself (its tools and `kubelan doctor` ask too).
        let mut allowed = lans.clone();
        allowed.push(IpNet::from(listen.ip()));
        allowed.push("127.0.0.0/8".parse().unwrap_or(IpNet::from(listen.ip())));
        let lan = Arc::new(LanDns::new(relay, allowed));
        dns_task = Some(dnsrelay::serve_lan(sockets, lan.clone(), shutdown.clone()));
        lan_dns = Some(lan);
        events.emit(
            "dns",
            json!({"listen": listen.to_string(), "domain": domain, "cluster_dns": dns_ip.to_string(), "upstreams": upstreams}),
            &format!(
                "✓ DNS on {listen}: *.{domain} and the cluster's reverse zones → {dns_ip}; other names → {}",
                if upstreams.is_empty() {
                    "nowhere (this host has no resolver): SERVFAIL".to_string()
                } else {
                    upstreams.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
                }
            ),
        );
    }
    events.emit(
        "ready",
        json!({"mode": "node"}),
        &format!(
            "gateway ready. On the office router: `kubelan routes --gateway {}` prints the routes; point the LAN's DNS (or a conditional forwarder for {}) at {}. Ctrl-C stops and undoes everything.",
            listen.ip(),
            facts.cluster_domain.value,
            listen.ip()
        ),
    );

    let summary = tokio::spawn(summarise(events, dns_stats, lan_dns, shutdown.clone()));
    crate::shutdown_signal().await;
    shutdown.cancel();
    let _ = summary.await;
    if let Some(t) = dns_task {
        let _ = t.await;
    }
    events.emit(
        "state",
        json!({"state": "stopping"}),
        "… stopping, removing the firewall table and restoring forwarding",
    );
    Ok(())
}

/// Counters of a node gateway.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Summary {
    clients: usize,
    flows: u64,
    bytes_up: u64,
    bytes_down: u64,
    dns_cluster: u64,
    dns_other: u64,
    dns_refused: u64,
    dns_malformed: u64,
}

impl Summary {
    fn line(&self) -> String {
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

fn human_bytes(b: u64) -> String {
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

async fn read_summary(dns: &DnsStats, lan: Option<&LanDns>) -> Summary {
    let counters = kubelan_sys::nft::counters(NfFamily::IP, TABLE)
        .await
        .unwrap_or_default();
    let get = |name: &str| counters.get(name).copied().unwrap_or((0, 0));
    let nft_clients = kubelan_sys::nft::set_len(NfFamily::IP, TABLE, rules::CLIENTS)
        .await
        .unwrap_or(0);
    Summary {
        clients: nft_clients.max(lan.map_or(0, LanDns::clients_seen)),
        flows: get(rules::FLOWS).0,
        bytes_up: get(rules::UP).1,
        bytes_down: get(rules::DOWN).1,
        dns_cluster: dns.cluster.load(Ordering::Relaxed),
        dns_other: dns.upstream.load(Ordering::Relaxed),
        dns_refused: lan.map_or(0, |l| l.refused.load(Ordering::Relaxed)),
        dns_malformed: dns.malformed.load(Ordering::Relaxed),
    }
}

/// The live summary: refreshed in place on a terminal every 2 s; otherwise a line (or JSON
/// event) every 30 s when something changed.
async fn summarise(
    events: Events,
    dns: Arc<DnsStats>,
    lan: Option<Arc<LanDns>>,
    shutdown: CancellationToken,
) {
    let tty = !events.json() && std::io::stderr().is_terminal();
    let period = if tty {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(30)
    };
    let mut last = Summary::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(period) => {}
        }
        let now = read_summary(&dns, lan.as_deref()).await;
        if tty {
            eprint!("\r\x1b[2K{}", now.line());
        } else if now != last {
            events.emit(
                "summary",
                json!({"clients": now.clients, "flows": now.flows, "bytes_up": now.bytes_up, "bytes_down": now.bytes_down, "dns_cluster": now.dns_cluster, "dns_other": now.dns_other, "dns_refused": now.dns_refused, "dns_malformed": now.dns_malformed}),
                &now.line(),
            );
        }
        last = now;
    }
    if tty {
        eprintln!();
    }
}

impl ConnectArgs {
    /// The discovery overrides these flags give.
    pub(crate) fn overrides(&self) -> DiscoveryOverrides {
        DiscoveryOverrides {
            service_cidrs: self.service_cidr.clone(),
            pod_cidrs: self.pod_cidr.clone(),
            cluster_domain: self.cluster_domain.clone(),
            dns_server: self.cluster_dns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_lans_are_refused() {
        let nets = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpNet>>();
        assert!(checked_lans(&nets(&["172.16.0.0/18", "172.16.1.0/24"])).is_err());
        assert!(checked_lans(&nets(&["172.16.1.0/24", "172.16.0.0/18"])).is_err());
        assert!(checked_lans(&nets(&["172.16.0.0/18", "172.16.0.0/18"])).is_err());
        let ok = checked_lans(&nets(&["172.16.0.5/18", "192.168.1.0/24"])).unwrap();
        assert_eq!(ok[0].to_string(), "172.16.0.0/18");
    }

    #[test]
    fn clients_on_the_gateways_own_subnet_get_the_redirect_warning() {
        use kubelan_sys::net::AddrEntry;
        let addr = |link: &str, net: &str| AddrEntry {
            link: link.into(),
            net: net.parse().unwrap(),
        };
        let local = [
            addr("lo", "127.0.0.1/8"),
            addr("eth0", "172.16.1.12/18"),
            addr("kubelan0", "10.250.0.1/32"),
        ];
        let lan = |s: &str| vec![s.parse::<IpNet>().unwrap()];
        // The README's setup: the gateway is a PC of the LAN it serves.
        let found = lans_on_own_subnet(&lan("172.16.0.0/18"), &local);
        assert_eq!(found.len(), 1);
        let w = same_subnet_warning(&found).unwrap();
        assert!(
            w.starts_with(
                "this gateway serves clients on its own subnet (--lan 172.16.0.0/18, 172.16.0.0/18 on eth0): the office router"
            ),
            "{w}"
        );
        for fix in ["send_redirects=0", "separate segment", "on the PCs"] {
            assert!(w.contains(fix), "{fix}: {w}");
        }
        // A smaller or larger --lan around the same subnet is the same situation.
        assert_eq!(lans_on_own_subnet(&lan("172.16.1.0/24"), &local).len(), 1);
        assert_eq!(lans_on_own_subnet(&lan("172.16.0.0/12"), &local).len(), 1);
        // A gateway on another segment (a node, or a DMZ) is not warned about.
        assert!(lans_on_own_subnet(&lan("192.168.10.0/24"), &local).is_empty());
        assert!(lans_on_own_subnet(&lan("10.250.0.0/24"), &local).is_empty());
        assert!(same_subnet_warning(&[]).is_none());
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
